//! A small axum service that gates a route on a flag and reports outcomes through the SDK.
//!
//! ```sh
//! dimmer serve &                                   # prints the admin token
//! dimmer flag create new-checkout && dimmer toggle new-checkout --env production on --reason demo
//! dimmer token create shop --scope sdk --env production
//! DIMMER_URL=http://127.0.0.1:8080 DIMMER_SDK_TOKEN=dmr_... cargo run -p dimmer-sdk --example axum_service
//! curl 'http://127.0.0.1:3000/checkout?user=user-42'
//! ```
//!
//! `GET /checkout` serves the new or the old checkout according to `new-checkout` for that user;
//! the new one's outcome (an error one time in ten, here) and latency are recorded against the
//! variant served, so that a release guard can compare it with the old one.

#![allow(clippy::expect_used, reason = "an example: a failed start-up should stop it with a message")]

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use dimmer_sdk::{Client, Context};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct Who {
    user: String,
}

async fn checkout(State(flags): State<Client>, Query(who): Query<Who>) -> Result<Json<Value>, StatusCode> {
    let ctx = Context::with_key(who.user.clone());
    // Local evaluation: no network on this path.
    let flag = flags.bool_details("new-checkout", &ctx, false);
    if !flag.value {
        return Ok(Json(json!({"checkout": "classic", "reason": flag.reason.as_str()})));
    }
    // The outcome and latency of the new code path, attributed to the variant served.
    let result = flags.measure_async(&flag, new_checkout(&who.user)).await;
    match result {
        Ok(order) => {
            flags.track(&flag, "order-placed", Some(order));
            Ok(Json(json!({"checkout": "new", "total": order})))
        }
        Err(()) => Err(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// The new code being released: fails for one user in ten.
async fn new_checkout(user: &str) -> Result<f64, ()> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    if user.bytes().map(u32::from).sum::<u32>() % 10 == 0 { Err(()) } else { Ok(42.0) }
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DIMMER_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let token = std::env::var("DIMMER_SDK_TOKEN").expect("DIMMER_SDK_TOKEN: an sdk token");
    let flags = Client::builder(url, token)
        .cache_path(std::env::temp_dir().join("dimmer-example-flags.json"))
        .build()
        .expect("the client builds");
    if let Err(e) = flags.wait_ready(Duration::from_secs(3)).await {
        // Not fatal: the client serves the cache (or defaults) and keeps trying.
        eprintln!("{e}");
    }
    let app = Router::new().route("/checkout", get(checkout)).with_state(flags.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.expect("port 3000 is free");
    println!("listening on http://127.0.0.1:3000/checkout?user=user-42");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("the server runs");
    // Sends the metrics counted since the last flush.
    flags.close().await;
}
