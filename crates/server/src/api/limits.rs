//! Request bounds at the HTTP edge: rate limits per client address and per token (429 with
//! `Retry-After`) and a time limit on every request (408), both in the one error shape.
//!
//! Streams are not cut by the time limit: it bounds how long a handler takes to answer, and an
//! SSE handler answers (with headers) at once; the stream that follows is its body, which the
//! limit does not cover. The buckets themselves live in `service::limits`, refilled by the
//! injected clock.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::http::header::RETRY_AFTER;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::AppState;
use crate::api::auth::presented_token;
use crate::api::error::{ApiError, Code};
use crate::service::limits::Limited;
use crate::service::tokens::hash_token;

/// Admits a request under the address's and the token's rate limits, or answers 429.
pub(super) async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let address = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    // Keyed by the hash: the limiter's table never holds a token.
    let hash = presented_token(request.headers()).map(hash_token);
    match state.limiters.admit(address, hash.as_deref()) {
        Ok(()) => next.run(request).await,
        Err(retry) => {
            let whose = match retry.limit {
                Limited::Token => "this token",
                Limited::Address => "this address",
            };
            let message = format!("too many requests from {whose}: retry after {} s", retry.seconds);
            let mut response = ApiError::new(Code::RateLimited, message).into_response();
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry.seconds));
            response
        }
    }
}

/// Answers 408 when the handler has not answered within the configured time.
pub(super) async fn time_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(limit) = state.request_timeout else { return next.run(request).await };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        // The handler is dropped mid-way: an open transaction rolls back, one that committed
        // stays (hence "may or may not").
        Err(_) => ApiError::new(
            Code::RequestTimeout,
            format!(
                "the request did not complete within {} s (a slow body or slow work); it may or may not have taken effect",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
}
