//! Operations endpoints: liveness, readiness (the store answers) and Prometheus metrics.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::schemas as doc;
use crate::api::AppState;
use crate::api::auth::Principal;
use crate::api::error::{ApiError, Json};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

/// `GET /healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// `ok`.
    status: &'static str,
}

/// `GET /readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Readiness {
    /// `ready` or `unavailable`.
    status: &'static str,
    /// When unavailable: `storage` (absent when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "system",
    operation_id = "healthz",
    responses((status = 200, description = "Alive", body = Health, example = json!({"status": "ok"})))
)]
async fn healthz() -> Response {
    Json(Health { status: "ok" }).into_response()
}

/// Readiness: the storage answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "system",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready", body = Readiness, example = json!({"status": "ready"})),
        (status = 503, description = "The storage does not answer", body = Readiness,
            example = json!({"status": "unavailable", "reason": "storage"})),
    )
)]
async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.list_environments().await {
        Ok(_) => Json(Readiness { status: "ready", reason: None }).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: storage does not answer");
            let body = Readiness { status: "unavailable", reason: Some("storage") };
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// Prometheus metrics: requests by route and status, durations, SSE connections, revisions.
/// Open by default; with `metrics_token_required`, a reader (or writer, admin) token is needed.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4",
            content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 401, description = "With `metrics_token_required`: no token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "With `metrics_token_required`: an sdk token", body = doc::ErrorBody),
    )
)]
async fn metrics(State(state): State<AppState>, principal: Result<Principal, ApiError>) -> Response {
    if state.metrics_token_required
        && let Err(e) = principal.and_then(|p| p.require_read())
    {
        return e.into_response();
    }
    let mut text = state.metrics.render();
    release_metrics(&state, &mut text).await;
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], text)
        .into_response()
}

/// Exposure per flag and environment (read from the store at scrape time, so every replica
/// reports the same), release events and webhook deliveries.
async fn release_metrics(state: &AppState, out: &mut String) {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering;
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    out.push_str("# HELP dimmer_flag_exposure_percent The exposure ceiling per flag and environment: 0 when off, 100 with no ceiling.\n");
    out.push_str("# TYPE dimmer_flag_exposure_percent gauge\n");
    match (state.store.list_flags(false).await, state.store.list_environments().await) {
        (Ok(flags), Ok(envs)) => {
            for record in &flags {
                for env in &envs {
                    let weight = dimmer_domain::release::exposure_weight(record.flag.environments.get(&env.name));
                    let _ = writeln!(
                        out,
                        "dimmer_flag_exposure_percent{{flag=\"{}\",environment=\"{}\"}} {}",
                        escape(&record.key),
                        escape(&env.name),
                        dimmer_domain::release::weight_percent(weight)
                    );
                }
            }
        }
        _ => tracing::warn!("metrics: cannot read flags for the exposure gauge"),
    }
    let counters = &state.notifier.counters;
    out.push_str(
        "# HELP dimmer_release_events_total Release events (plan steps, kills, dial-downs, restores) by action.\n",
    );
    out.push_str("# TYPE dimmer_release_events_total counter\n");
    if let Ok(events) = counters.events.lock() {
        for (action, n) in events.iter() {
            let _ = writeln!(out, "dimmer_release_events_total{{action=\"{}\"}} {n}", escape(action));
        }
    }
    out.push_str("# HELP dimmer_webhook_deliveries_total Webhook deliveries by outcome.\n");
    out.push_str("# TYPE dimmer_webhook_deliveries_total counter\n");
    for (outcome, n) in
        [("delivered", &counters.delivered), ("failed", &counters.failed), ("dropped", &counters.dropped)]
    {
        let _ = writeln!(out, "dimmer_webhook_deliveries_total{{outcome=\"{outcome}\"}} {}", n.load(Ordering::Relaxed));
    }
}
