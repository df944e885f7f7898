//! Evaluation through the client against the bare engine (see `docs/benchmarks.md`, "Rust SDK"):
//! the same 1,000 flags and rotating users as the engine's benchmark, scenarios (a) simple and
//! (c) rollout + `in`. The client is connected to a stand-in server's stream (snapshot, then an
//! open connection) with metrics on, so every evaluation is counted. Then the client from 1, 2
//! and 4 threads at once: with no global lock, the time per evaluation on each thread should
//! stay flat up to the number of cores.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a benchmark whose setup fails must stop")]

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use dimmer_engine::{CompiledFlags, Context, FlagSet, compile, evaluate};
use dimmer_sdk::Client;
use futures::StreamExt as _;
use serde_json::{Value, json};

const FLAGS: usize = 1_000;
const USERS: usize = 1_024;
const KEY: &str = "measured-flag";

fn flag_set(rollout: bool) -> Value {
    let measured = if rollout {
        json!({"enabled": true, "default": {"variant": "off"}, "rules": [
            {"clauses": [{"attribute": "country", "op": "in", "values": ["us", "ca", "fr"]}],
             "serve": {"rollout": {"variants": [{"variant": "on", "weight": 50_000}, {"variant": "off", "weight": 50_000}]}}},
        ]})
    } else {
        json!({"enabled": true})
    };
    let mut flags = serde_json::Map::new();
    for i in 0..FLAGS - 1 {
        flags.insert(format!("filler-{i:04}"), json!({"environments": {"production": {"enabled": true}}}));
    }
    flags.insert(KEY.to_owned(), json!({"environments": {"production": measured}}));
    json!({"flags": flags})
}

fn contexts() -> Vec<Context> {
    let countries = ["us", "de", "fr", "jp", "ca"];
    (0..USERS).map(|i| Context::with_key(format!("user-{i}")).attr("country", countries[i % countries.len()])).collect()
}

/// A stand-in for the server's SDK API: the snapshot, and a stream that stays open.
async fn serve(flags: Value) -> String {
    let snapshot = json!({"environment": "production", "revision": 1, "flags": flags}).to_string();
    let config = snapshot.clone();
    let app = Router::new()
        .route("/api/v1/sdk/config", get(move || async move { ([(header::ETAG, "\"production-1\"")], config) }))
        .route(
            "/api/v1/sdk/stream",
            get(move || async move {
                let body = futures::stream::once(async { Ok::<_, Infallible>(": connected\n\n".to_owned()) })
                    .chain(futures::stream::pending());
                ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(body)).into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

struct Setup {
    engine: CompiledFlags,
    client: Client,
    /// The same, with outcome metrics off: what counting costs.
    quiet: Client,
    contexts: Vec<Context>,
    _runtime: tokio::runtime::Runtime,
}

fn setup(rollout: bool) -> Setup {
    let flags = flag_set(rollout);
    let set: FlagSet = serde_json::from_value(flags.clone()).unwrap();
    let (engine, diagnostics) = compile(&set, "production");
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let connect = |metrics: bool| runtime.block_on(connected(flags.clone(), metrics));
    let (client, quiet) = (connect(true), connect(false));
    Setup { engine, client, quiet, contexts: contexts(), _runtime: runtime }
}

async fn connected(flags: Value, metrics: bool) -> Client {
    {
        let base = serve(flags).await;
        let client = Client::builder(base, "bench")
            .metrics(metrics)
            .metrics_flush_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        client.wait_ready(Duration::from_secs(10)).await.expect("the client connects");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !client.status().connected {
            assert!(Instant::now() < deadline, "the stream connects");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        client
    }
}

fn engine_vs_client(c: &mut Criterion) {
    for (name, rollout) in [("a-simple", false), ("c-rollout-in", true)] {
        let s = setup(rollout);
        // Same answers, both ways.
        for ctx in &s.contexts {
            let engine = evaluate(&s.engine, KEY, ctx).value == Some(&Value::Bool(true));
            assert_eq!(engine, s.client.bool_value(KEY, ctx, false));
        }
        let mut group = c.benchmark_group(format!("sdk/{name}"));
        let mut i = 0usize;
        group.bench_function("engine", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(evaluate(&s.engine, KEY, &s.contexts[i % USERS]).value == Some(&Value::Bool(true)))
            })
        });
        group.bench_function("client", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(s.client.bool_value(KEY, &s.contexts[i % USERS], false))
            })
        });
        group.bench_function("client-metrics-off", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(s.quiet.bool_value(KEY, &s.contexts[i % USERS], false))
            })
        });
        group.finish();
    }
}

fn threads(c: &mut Criterion) {
    let s = setup(true);
    let mut group = c.benchmark_group("sdk/threads");
    // Each of `n` threads does `iters` evaluations at once; the wall time is the time per
    // evaluation on one thread: flat means linear scaling. The bare engine, which shares nothing
    // mutable, shows what the machine allows; the client should track it.
    fn parallel(n: usize, iters: u64, eval: &(dyn Fn(usize) -> bool + Sync)) -> Duration {
        let start = Instant::now();
        std::thread::scope(|scope| {
            for t in 0..n {
                scope.spawn(move || {
                    for i in 0..iters as usize {
                        black_box(eval(i + t * 97));
                    }
                });
            }
        });
        start.elapsed()
    }
    let engine = |i: usize| evaluate(&s.engine, KEY, &s.contexts[i % USERS]).value == Some(&Value::Bool(true));
    let client = |i: usize| s.client.bool_value(KEY, &s.contexts[i % USERS], false);
    for n in [1usize, 2, 4] {
        group.bench_function(format!("engine-{n}"), |b| b.iter_custom(|iters| parallel(n, iters, &engine)));
        group.bench_function(format!("client-{n}"), |b| b.iter_custom(|iters| parallel(n, iters, &client)));
    }
    group.finish();
}

criterion_group!(benches, engine_vs_client, threads);
criterion_main!(benches);
