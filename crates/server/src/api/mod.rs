//! The HTTP API: one router per area (admin, SDK, OFREP, system), composed in [`router`].

pub(crate) mod admin;
pub mod auth;
mod cors;
pub mod error;
pub(crate) mod extract;
mod fallback;
pub(crate) mod flags;
mod guards;
mod limits;
mod ofrep;
mod openapi;
mod otlp;
mod policy;
pub(crate) mod release;
mod schemas;
mod sdk;
mod system;

pub use admin::{AUDIT_BODY_BYTES, AUDIT_PAGE_BYTES};

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;

use std::sync::Arc;

use dimmer_store::Store;
use tokio::sync::watch;

use crate::api::error::{ApiError, Code, FieldError};
use crate::service::guardian::Guardian;
use crate::service::hub::Hub;
use crate::service::limits::Limiters;
use crate::service::metrics::Metrics;
use crate::service::policy::ServerPolicy;
use crate::service::releases::Releases;
use crate::service::tokens::TokenCache;
use crate::service::webhooks::Notifier;

/// Everything request handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Durable storage.
    pub store: Arc<dyn Store>,
    /// Current compiled snapshots per environment.
    pub hub: Arc<Hub>,
    /// Token lookups.
    pub tokens: Arc<TokenCache>,
    /// Prometheus counters and gauges.
    pub metrics: Arc<Metrics>,
    /// Release plans, kills, dial-downs and restores.
    pub releases: Arc<Releases>,
    /// The guard loop's service: assessments for views, verdicts applied in its loop.
    pub guardian: Arc<Guardian>,
    /// Outcome metrics in: SDK batches and OTLP.
    pub outcomes: Arc<crate::service::outcomes::Outcomes>,
    /// Release-event webhooks (its counters feed `/metrics`).
    pub notifier: Arc<Notifier>,
    /// The flag policy enforced on writes.
    pub policy: ServerPolicy,
    /// Where time comes from (lifecycle ages; a manual clock in tests).
    pub clock: Arc<dyn dimmer_domain::Clock>,
    /// Flips to true at shutdown: streams end cleanly.
    pub shutdown: watch::Receiver<bool>,
    /// Rate limits per token and per client address.
    pub limiters: Arc<Limiters>,
    /// How long a request may take before it is answered 408 (`None`: no limit).
    pub request_timeout: Option<std::time::Duration>,
    /// Whether `/metrics` needs a token (reader and up).
    pub metrics_token_required: bool,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The whole API; pages of `cors_origins` (and of tokens' own origins) may call OFREP and the SDK
/// API (never the rest).
pub fn router(state: AppState, cors_origins: &crate::config::CorsOrigins) -> Router {
    Router::new()
        .merge(flags::router())
        .merge(admin::router())
        .merge(release::router())
        .merge(guards::router())
        .merge(otlp::router())
        .merge(cors::allow(
            sdk::router().method_not_allowed_fallback(fallback::method_not_allowed),
            state.clone(),
            cors_origins,
        ))
        .merge(cors::allow(
            ofrep::router().method_not_allowed_fallback(fallback::method_not_allowed),
            state.clone(),
            cors_origins,
        ))
        .merge(system::router())
        .merge(openapi::router())
        .merge(policy::router())
        .fallback(fallback::not_found)
        .method_not_allowed_fallback(fallback::method_not_allowed)
        // Innermost first: the time limit around the handler, the rate limits before it (a
        // refused request costs no work), and `observe` outside both so 408s and 429s are
        // counted too.
        .layer(middleware::from_fn_with_state(state.clone(), limits::time_limit))
        .layer(middleware::from_fn_with_state(state.clone(), limits::rate_limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(fallback::ofrep_errors))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Counts and times every request by its route template (never by raw path: keys would explode
/// the label space).
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.observe(&method, &route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// The change reason: the `X-Dimmer-Reason` header, else a body field.
pub(crate) fn reason(headers: &HeaderMap, body: Option<&str>) -> Option<String> {
    headers
        .get("x-dimmer-reason")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| body.map(str::to_owned))
        .filter(|r| !r.trim().is_empty())
}

/// The revision a reconnecting event-stream client last received (`Last-Event-ID`), if it sent
/// a number.
pub(crate) fn last_event_id(headers: &HeaderMap) -> Option<i64> {
    headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok())
}

/// The version named by `If-Match` (`"3"`, `3` or `W/"3"`).
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(axum::http::header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or_default().trim();
    let unquoted = text.strip_prefix("W/").unwrap_or(text);
    let unquoted = unquoted.strip_prefix('"').unwrap_or(unquoted);
    let text = unquoted.strip_suffix('"').unwrap_or(unquoted);
    // Digits only, as the OpenAPI document's pattern says (`parse` would also take `+3`).
    let digits = !text.is_empty() && text.len() <= 18 && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse::<i64>().ok()).flatten().map(Some).ok_or_else(|| {
        ApiError::new(Code::MalformedRequest, format!("If-Match: expected a flag version such as \"3\", got {text:?}"))
    })
}

/// Like [`if_match`], but the header is required.
pub(crate) fn require_if_match(headers: &HeaderMap) -> Result<i64, ApiError> {
    if_match(headers)?.ok_or_else(|| {
        ApiError::new(
            Code::PreconditionRequired,
            "send If-Match with the version you read (GET returns it in ETag): lost updates are refused",
        )
    })
}

/// After a write: make this server's snapshots current before the answer goes out.
pub(crate) async fn publish(state: &AppState) {
    if let Err(e) = state.hub.sync().await {
        tracing::warn!(error = %e, "snapshot refresh after a write failed; the refresher will retry");
    }
}

/// Splits a request body into a model document and the fields the API adds around it (`key`,
/// `reason`); a structural error names the field path.
pub(crate) fn split_document<T: serde::de::DeserializeOwned>(
    body: serde_json::Value,
) -> Result<(Option<String>, Option<String>, T), ApiError> {
    let serde_json::Value::Object(mut map) = body else {
        return Err(ApiError::new(Code::MalformedRequest, "expected a JSON object"));
    };
    // `reason` may be null (the OpenAPI document says so); `key` is a string when present.
    let mut take = |field: &str, nullable: bool| match map.remove(field) {
        None => Ok(None),
        Some(serde_json::Value::Null) if nullable => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::new(Code::MalformedRequest, format!("{field}: expected a string"))
            .with_errors(vec![FieldError::new(field, "expected a string")])),
    };
    let key = take("key", false)?;
    let reason = take("reason", true)?;
    let document = serde_path_to_error::deserialize::<_, T>(serde_json::Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        ApiError::new(Code::MalformedRequest, format!("{path}: {message}"))
            .with_errors(vec![FieldError::new(path, message)])
    })?;
    Ok((key, reason, document))
}

/// A JSON response carrying a resource's version as its ETag.
pub(crate) fn versioned(status: axum::http::StatusCode, body: impl serde::Serialize, version: i64) -> Response {
    use axum::response::IntoResponse;
    let mut response = (status, crate::api::error::Json(body)).into_response();
    if let Ok(etag) = axum::http::HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(axum::http::header::ETAG, etag);
    }
    response
}
