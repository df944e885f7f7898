//! Outcome metrics and guards API: SDKs' metric batches in, per-variant views out, standing
//! guards on a flag, and the Prometheus Alertmanager receiver that dials flags down. Handlers
//! only translate HTTP; the statistics are in `dimmer_domain::guard`, the loop in `crate::service::guardian`.

use std::collections::BTreeMap;

use crate::api::extract::{Path, Query};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dimmer_protocol::{Limits, MetricsBatch};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::environment_of;
use super::schemas as doc;
use crate::api::AppState;
use crate::api::auth::Principal;
use crate::api::error::{ApiError, Code, Json};
use crate::service::guardian::{Guardian, Period};
use crate::service::releases::{Outcome, ReleaseError};
use dimmer_domain::guard::{self, Assessment, Guard};
use dimmer_domain::outcomes::{Aggregate, BUCKET_MS, COARSE_BUCKET_MS, bucket_of, totals};
use dimmer_domain::release::{Status, parse_duration};
use dimmer_store::StandingGuards;

/// The longest window a view may ask for: the default retention.
const MAX_WINDOW_MS: i64 = 30 * 24 * 3_600_000;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sdk/metrics", post(ingest))
        .route("/api/v1/flags/{key}/metrics", get(view))
        .route("/api/v1/flags/{key}/environments/{env}/guards", get(read_guards).put(put_guards))
        .route("/api/v1/alertmanager", post(alertmanager))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EnvQuery {
    /// The environment, for admin and writer tokens (an sdk token reports for its own).
    env: Option<String>,
}

/// `POST /api/v1/sdk/metrics`: what became of a batch's entries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct IngestAnswer {
    /// Entries stored.
    accepted: usize,
    /// Entries for flags the environment does not have, or for variants their flag does not
    /// have, dropped.
    ignored: usize,
}

/// Takes a batch of outcome metrics from an SDK: per flag and variant, evaluations, errors and
/// successes, a latency sketch and custom events. Accepted whole or refused whole; entries for
/// flags the environment does not have, or variants their flag does not have, are ignored (and
/// counted in the answer).
#[utoipa::path(
    post,
    path = "/api/v1/sdk/metrics",
    tag = "sdk",
    operation_id = "postSdkMetrics",
    params(EnvQuery),
    request_body(content = MetricsBatch, description = "A metrics batch (see docs/guards.md and the dimmer-protocol crate)"),
    responses(
        (status = 202, description = "Stored", body = IngestAnswer),
        (status = 400, description = "Not JSON, or a field of the wrong type (the path is named)", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader token, or an sdk token of another environment", body = doc::ErrorBody),
        (status = 413, description = "Larger than 1 MiB", body = doc::ErrorBody),
        (status = 422, description = "Out of bounds (too many entries, a bad sketch, …; the path is named)", body = doc::ErrorBody),
    )
)]
async fn ingest(
    principal: Principal,
    State(state): State<AppState>,
    Query(query): Query<EnvQuery>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if principal.scope == dimmer_store::Scope::Reader {
        return Err(ApiError::new(Code::Forbidden, "a reader token cannot report metrics"));
    }
    let env = environment_of(&principal, query.env)?;
    let refuse = |e: ApiError| {
        state.metrics.metric_batch("rejected");
        e
    };
    let batch: MetricsBatch = crate::api::error::read_json(&body).map_err(|problem| {
        refuse(match problem.path {
            Some(path) => ApiError::new(Code::MalformedRequest, format!("{path}: {}", problem.message)).with_path(path),
            None => ApiError::new(Code::MalformedRequest, problem.message),
        })
    })?;
    batch
        .check(&Limits::default())
        .map_err(|e| refuse(ApiError::new(Code::ValidationFailed, e.to_string()).with_path(e.path)))?;
    // Only the environment's flags and their variants are kept: made-up names are refused by the
    // service, before they can take a row or a Prometheus series.
    let recorded = state.outcomes.record(&env, &batch.metrics).await.map_err(|e| refuse(e.into()))?;
    state.metrics.metric_batch("accepted");
    let answer = IngestAnswer { accepted: recorded.accepted, ignored: recorded.ignored };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ViewQuery {
    /// The environment.
    env: String,
    /// How far back: `15m`, `1h` (the default), `24h`, `7d`.
    window: Option<String>,
}

/// `GET /api/v1/flags/{key}/metrics`: a flag's outcome metrics in one environment over a window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MetricsView {
    /// The flag key.
    flag: String,
    /// The environment.
    environment: String,
    /// The window's start, Unix milliseconds (a bucket boundary).
    from_ms: i64,
    /// The window's end (exclusive), Unix milliseconds.
    until_ms: i64,
    /// The width of each point of `series`, in milliseconds.
    step_ms: i64,
    /// The control variant: the environment's off variant (`off` by default).
    control: String,
    /// Totals per variant over the window, by variant name.
    variants: Vec<VariantTotals>,
    /// The window in steps of `step_ms`; steps without data are left out.
    series: Vec<SeriesPoint>,
    /// What the guards say now.
    guards: GuardAssessments,
}

/// One variant's totals over a window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct VariantTotals {
    /// The variant.
    variant: String,
    /// Evaluations that served it.
    evaluations: u64,
    /// Outcomes recorded as a success.
    successes: u64,
    /// Outcomes recorded as an error.
    errors: u64,
    /// Errors over outcomes; null without outcomes.
    error_rate: Option<f64>,
    /// Outcome latency, in milliseconds.
    latency_ms: LatencySummary,
    /// Custom events by name: the 32 most frequent over the window.
    events: BTreeMap<String, EventTotals>,
}

/// A latency sketch, summarized; every figure is null without samples.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LatencySummary {
    /// Samples.
    count: u64,
    /// The mean.
    mean: Option<f64>,
    /// The median.
    p50: Option<f64>,
    /// The 90th percentile.
    p90: Option<f64>,
    /// The 95th percentile.
    p95: Option<f64>,
    /// The 99th percentile.
    p99: Option<f64>,
}

/// One custom event's totals.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EventTotals {
    /// How many times it happened.
    count: u64,
    /// The sum of the values it came with.
    sum: f64,
    /// Its count per evaluation; null without evaluations.
    per_evaluation: Option<f64>,
    /// The mean of its values (what an `event_mean:NAME` guard compares); null without events.
    mean: Option<f64>,
    /// The standard deviation of its values; null when unknown (batches from SDKs that send no
    /// sum of squares) or without events.
    std_dev: Option<f64>,
}

/// One step of a metrics series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SeriesPoint {
    /// The step's start, Unix milliseconds.
    start_ms: i64,
    /// Per variant with data in the step, by variant name.
    variants: BTreeMap<String, SeriesVariant>,
}

/// One variant in one step of a series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SeriesVariant {
    /// Evaluations that served it.
    evaluations: u64,
    /// Outcomes recorded as an error.
    errors: u64,
    /// Outcomes recorded as a success.
    successes: u64,
    /// Errors over outcomes; null without outcomes.
    error_rate: Option<f64>,
    /// The 95th percentile of outcome latency, in milliseconds; null without samples.
    latency_p95_ms: Option<f64>,
}

/// What the guards on a flag in an environment say now; each part only when it applies.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(crate) struct GuardAssessments {
    /// The running plan's guards, over its current stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<GuardAssessment>,
    /// The standing guards.
    #[serde(skip_serializing_if = "Option::is_none")]
    standing: Option<GuardAssessment>,
}

/// One set of guards' assessment over the period they judge.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct GuardAssessment {
    /// The period, for people: "stage 2 of 6" or "standing guards".
    window: String,
    /// The period's start, Unix milliseconds.
    since_ms: i64,
    /// The findings and the verdict.
    assessment: Assessment,
}

impl GuardAssessment {
    fn of(period: Period, assessment: Assessment) -> Self {
        Self { window: period.label, since_ms: period.since_ms, assessment }
    }
}

/// A flag's outcome metrics per variant over a window: totals (exposures, error rate, latency
/// quantiles, event rates), a time series, and what its guards say now.
#[utoipa::path(
    get,
    path = "/api/v1/flags/{key}/metrics",
    tag = "guards",
    operation_id = "getFlagMetrics",
    params(("key" = String, Path, description = "The flag key"), ViewQuery),
    responses(
        (status = 200, description = "Per-variant totals, a series and the guards' assessment", body = MetricsView),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such flag", body = doc::ErrorBody),
        (status = 422, description = "A bad window", body = doc::ErrorBody),
    )
)]
async fn view(
    principal: Principal,
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(query): Query<ViewQuery>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    let record = state.store.get_flag(&key).await?.ok_or_else(|| ApiError::not_found("flag", &key))?;
    let window_ms = match query.window.as_deref() {
        None => 3_600_000,
        Some(w) => parse_duration(w)
            .ok()
            .filter(|ms| (BUCKET_MS..=MAX_WINDOW_MS).contains(ms))
            .ok_or_else(|| invalid("window", "a duration from 10s to 30d, such as 15m, 1h or 7d"))?,
    };
    let now = state.releases.clock().now_ms();
    let until = bucket_of(now, BUCKET_MS) + BUCKET_MS;
    let from = until - window_ms;
    let rows = state.store.metric_rows(&query.env, &key, bucket_of(from, COARSE_BUCKET_MS), until).await?;
    let variants = totals(&rows, from, until);
    // About 30 points, on bucket boundaries.
    let step = ((window_ms / 30).max(BUCKET_MS) + BUCKET_MS - 1) / BUCKET_MS * BUCKET_MS;
    let mut series: BTreeMap<i64, BTreeMap<String, Aggregate>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.bucket_ms >= from) {
        series
            .entry(bucket_of(row.bucket_ms - from, step) + from)
            .or_default()
            .entry(row.variant.clone())
            .or_default()
            .add(&row.aggregate);
    }
    let control = record
        .flag
        .environments
        .get(&query.env)
        .and_then(|c| c.off_variant.clone())
        .unwrap_or_else(|| dimmer_engine::model::OFF.to_owned());
    let guards = guard_assessments(&state, &record, &query.env).await?;
    let series = series
        .into_iter()
        .map(|(start_ms, variants)| SeriesPoint {
            start_ms,
            variants: variants
                .into_iter()
                .map(|(name, a)| {
                    let point = SeriesVariant {
                        evaluations: a.evaluations,
                        errors: a.errors,
                        successes: a.successes,
                        error_rate: a.error_rate(),
                        latency_p95_ms: a.latency.quantile(0.95),
                    };
                    (name, point)
                })
                .collect(),
        })
        .collect();
    Ok(Json(MetricsView {
        flag: key,
        environment: query.env,
        from_ms: from,
        until_ms: until,
        step_ms: step,
        control,
        variants: variants.iter().map(|(name, a)| variant_totals(name, a)).collect(),
        series,
        guards,
    })
    .into_response())
}

fn variant_totals(name: &str, a: &Aggregate) -> VariantTotals {
    // A long window unites many rows' event names: the view lists the most frequent, as many as
    // one row keeps.
    let mut bounded = a.clone();
    bounded.bound_events(dimmer_protocol::MAX_EVENTS_PER_ENTRY);
    let a = &bounded;
    VariantTotals {
        variant: name.to_owned(),
        evaluations: a.evaluations,
        successes: a.successes,
        errors: a.errors,
        error_rate: a.error_rate(),
        latency_ms: LatencySummary {
            count: a.latency.count(),
            mean: a.latency.mean(),
            p50: a.latency.quantile(0.5),
            p90: a.latency.quantile(0.9),
            p95: a.latency.quantile(0.95),
            p99: a.latency.quantile(0.99),
        },
        events: a
            .events
            .iter()
            .map(|(event, s)| {
                let totals = EventTotals {
                    count: s.count,
                    sum: s.sum,
                    per_evaluation: a.event_rate(event),
                    mean: s.mean(),
                    std_dev: s.variance().map(f64::sqrt),
                };
                (event.clone(), totals)
            })
            .collect(),
    }
}

/// What the plan's guards (while it runs) and the standing guards say now.
async fn guard_assessments(
    state: &AppState,
    record: &dimmer_store::FlagRecord,
    env: &str,
) -> Result<GuardAssessments, ApiError> {
    let mut out = GuardAssessments::default();
    if let Some(plan) = state.store.get_plan(&record.key, env).await?
        && plan.state.status == Status::Running
        && !plan.plan.guards.is_empty()
    {
        let period = Guardian::plan_period(&plan);
        let a = state.guardian.assess(record, env, &plan.plan.guards, &period).await?;
        out.plan = Some(GuardAssessment::of(period, a));
    }
    if let Some(standing) =
        state.store.list_standing_guards().await?.into_iter().find(|s| s.flag == record.key && s.environment == env)
    {
        let period = Guardian::standing_period(record, &standing);
        let a = state.guardian.assess(record, env, &standing.guards, &period).await?;
        out.standing = Some(GuardAssessment::of(period, a));
    }
    Ok(out)
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::new(Code::ValidationFailed, format!("{field}: {message}")).with_path(field)
}

/// The guards standing on a flag in an environment (`GET` and `PUT .../guards`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StandingGuardsView {
    /// The flag key.
    flag: String,
    /// The environment.
    environment: String,
    /// The guards (empty when none stand).
    guards: Vec<Guard>,
}

/// The guards standing on a flag in an environment, outside any plan.
#[utoipa::path(
    get,
    path = "/api/v1/flags/{key}/environments/{env}/guards",
    tag = "guards",
    operation_id = "getStandingGuards",
    params(("key" = String, Path, description = "The flag key"), ("env" = String, Path, description = "The environment")),
    responses(
        (status = 200, description = "The guards standing there (none: an empty list)", body = StandingGuardsView),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token", body = doc::ErrorBody),
    )
)]
async fn read_guards(
    principal: Principal,
    State(state): State<AppState>,
    Path((key, env)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    let standing =
        state.store.list_standing_guards().await?.into_iter().find(|s| s.flag == key && s.environment == env);
    let guards = standing.map(|s| s.guards).unwrap_or_default();
    Ok(Json(StandingGuardsView { flag: key, environment: env, guards }).into_response())
}

/// Standing guards: the body of `PUT .../guards`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutGuards {
    /// The guards (an empty list removes them).
    guards: Vec<Guard>,
    /// Why, for the audit log.
    #[serde(default)]
    reason: Option<String>,
}

/// Sets the guards standing on a flag in an environment: they judge the flag continuously
/// (treatment against control while it is partly exposed, thresholds always) and apply their
/// action on a regression. Audited.
#[utoipa::path(
    put,
    path = "/api/v1/flags/{key}/environments/{env}/guards",
    tag = "guards",
    operation_id = "putStandingGuards",
    params(("key" = String, Path, description = "The flag key"), ("env" = String, Path, description = "The environment")),
    request_body(content = PutGuards),
    responses(
        (status = 200, description = "The guards now standing", body = StandingGuardsView),
        (status = 400, description = "Not JSON, or unknown fields", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such flag or environment", body = doc::ErrorBody),
        (status = 422, description = "A bad guard (its index and field are named)", body = doc::ErrorBody),
    )
)]
async fn put_guards(
    principal: Principal,
    State(state): State<AppState>,
    Path((key, env)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<PutGuards>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    guard::validate(&body.guards).map_err(|e| invalid(&format!("guards[{}].{}", e.index, e.field), &e.reason))?;
    if state.store.get_flag(&key).await?.is_none() {
        return Err(ApiError::not_found("flag", &key));
    }
    if !state.store.list_environments().await?.iter().any(|e| e.name == env) {
        return Err(ApiError::not_found("environment", &env));
    }
    let meta = principal.meta(super::reason(&headers, body.reason.as_deref()));
    let standing =
        StandingGuards { flag: key.clone(), environment: env.clone(), guards: body.guards, updated_at_ms: 0 };
    state.store.put_standing_guards(&standing, &meta).await?;
    Ok(Json(StandingGuardsView { flag: key, environment: env, guards: standing.guards }).into_response())
}

/// The answer to Alertmanager: per alert, what was done or why nothing was.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(crate) struct AlertmanagerAnswer {
    /// Firing alerts acted on.
    applied: Vec<AppliedAlert>,
    /// Alerts that changed nothing, and why.
    ignored: Vec<IgnoredAlert>,
}

/// A firing alert acted on.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AppliedAlert {
    /// The alert's name (`alertname`, else its position).
    alert: String,
    /// The flag it named.
    flag: String,
    /// The environment it named.
    environment: String,
    /// What was done.
    action: AlertAction,
    /// What changed.
    outcome: Outcome,
}

/// What an alert does to its flag.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AlertAction {
    /// Switched off (`dimmer_action: kill`).
    Kill,
    /// Exposure cut to `dimmer_to` percent (0 by default).
    DialDown,
}

/// An alert that changed nothing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct IgnoredAlert {
    /// The alert's name (`alertname`, else its position).
    alert: String,
    /// Why it changed nothing.
    why: String,
}

/// Receives Prometheus Alertmanager's webhook and dials down (or kills) the flag each firing
/// alert names in its labels (`flag`, and `environment` or `env`; optionally `dimmer_action`
/// = `kill` and `dimmer_to` = a percentage). Resolved alerts change nothing: restoring is a
/// person's decision.
#[utoipa::path(
    post,
    path = "/api/v1/alertmanager",
    tag = "guards",
    operation_id = "alertmanagerWebhook",
    request_body(content = doc::AlertmanagerPayload, description = "Alertmanager's webhook payload (version 4)"),
    responses(
        (status = 200, description = "What was applied and what was ignored, per alert", body = AlertmanagerAnswer),
        (status = 400, description = "Not JSON, or no `alerts` list", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
    )
)]
async fn alertmanager(
    principal: Principal,
    State(state): State<AppState>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let alerts = body
        .get("alerts")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::new(Code::MalformedRequest, "alerts: expected Alertmanager's list of alerts"))?;
    // Refused whole, before anything is applied: a payload that is not Alertmanager's.
    if let Some(i) = alerts.iter().position(|a| !a.is_object()) {
        return Err(ApiError::new(Code::MalformedRequest, format!("alerts[{i}]: expected an alert object"))
            .with_errors(vec![crate::api::error::FieldError::new(
                format!("alerts[{i}]"),
                "expected an alert object",
            )]));
    }
    let mut answer = AlertmanagerAnswer::default();
    let mut changed = false;
    for (i, alert) in alerts.iter().enumerate() {
        let label = |names: &[&str]| {
            names.iter().find_map(|n| alert.pointer(&format!("/labels/{n}")).and_then(Value::as_str)).map(str::to_owned)
        };
        let name = label(&["alertname"]).unwrap_or_else(|| format!("alerts[{i}]"));
        if alert.get("status").and_then(Value::as_str) != Some("firing") {
            answer
                .ignored
                .push(IgnoredAlert { alert: name, why: "not firing (resolved alerts change nothing)".into() });
            continue;
        }
        let (Some(flag), Some(env)) =
            (label(&["flag", "dimmer_flag"]), label(&["environment", "env", "dimmer_environment"]))
        else {
            answer.ignored.push(IgnoredAlert { alert: name, why: "no flag and environment labels".into() });
            continue;
        };
        let summary = ["summary", "description"]
            .iter()
            .find_map(|k| alert.pointer(&format!("/annotations/{k}")).and_then(Value::as_str))
            .unwrap_or("");
        let reason = format!(
            "Alertmanager alert {name} fired{}",
            if summary.is_empty() { String::new() } else { format!(": {summary}") }
        );
        let meta = principal.meta(Some(reason));
        let action = if label(&["dimmer_action"]).as_deref() == Some("kill") {
            AlertAction::Kill
        } else {
            AlertAction::DialDown
        };
        let to = match label(&["dimmer_to"]).map(|t| t.trim_end_matches('%').parse::<f64>()) {
            None => 0,
            Some(Ok(p)) if (0.0..=100.0).contains(&p) => (p * 1000.0).round() as u32,
            Some(_) => {
                answer
                    .ignored
                    .push(IgnoredAlert { alert: name, why: "dimmer_to: not a percentage from 0 to 100".into() });
                continue;
            }
        };
        let outcome = match action {
            AlertAction::Kill => state.releases.kill(&flag, &env, &meta).await,
            AlertAction::DialDown => state.releases.dial_down(&flag, &env, to, &meta).await,
        };
        match outcome {
            Ok(outcome) => {
                changed |= outcome.changed;
                answer.applied.push(AppliedAlert { alert: name, flag, environment: env, action, outcome });
            }
            Err(e @ (ReleaseError::NotFound { .. } | ReleaseError::Invalid { .. } | ReleaseError::Conflict(_))) => {
                answer.ignored.push(IgnoredAlert { alert: name, why: e.to_string() });
            }
            Err(e) => return Err(e.into()),
        }
    }
    if changed {
        super::publish(&state).await;
    }
    Ok(Json(answer).into_response())
}
