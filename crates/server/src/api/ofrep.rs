//! OFREP, the OpenFeature Remote Evaluation Protocol 0.3.0 (`tests/vectors/ofrep/openapi.yaml`,
//! `tests/vectors/ofrep/event-streams.yaml`): single-flag and bulk evaluation through the engine,
//! authenticated by sdk or client tokens (bearer or `X-API-Key`), and the change-event stream a
//! bulk answer advertises in `eventStreams`.
//!
//! Real providers are stricter than the spec in places, so every answer is JSON with a string
//! `key` and `errorCode` on failures, and a 200 always carries a `value`.
//!
//! The bulk `ETag` names the configuration *and* the context (`"<env>-<revision>-<context hash>"`):
//! a 304 tells a client that what it holds is still the answer for what it asks now, so a
//! context that changed (same `targetingKey`, another plan) is evaluated again.
//!
//! The event stream (`GET /api/v1/ofrep/events`) sends `refetchEvaluation` with the
//! configuration's ETag whenever the environment's revision moves, heartbeats while idle, and
//! ends cleanly at shutdown. Browsers' `EventSource` sends no headers, so the advertised URL
//! carries a ticket (`service::tokens`) that opens this stream only. Rollouts bucketed by
//! `$random` get a random number drawn here, per request: the engine has no randomness.

use std::cell::Cell;
use std::convert::Infallible;
use std::time::Duration;

use crate::api::extract::{Path, Query};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dimmer_engine::{CompiledFlags, Context, ErrorCode, Reason, evaluate};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::schemas as doc;
use crate::api::AppState;
use crate::api::auth::{Principal, evaluation_environment_of};
use crate::api::error::{ApiError, Code, Json};
use crate::service::hub::EnvSnapshot;

/// Where the change events of an environment are served (OFREP leaves the URL to the vendor);
/// the route below spells it out, as the OpenAPI tests read routes from the sources.
pub const EVENTS_PATH: &str = "/api/v1/ofrep/events";
/// Seconds a hidden page keeps its event stream open (OFREP's default, advertised explicitly).
pub const INACTIVITY_DELAY_SEC: u32 = 120;
/// The reconnection delay suggested to event-stream clients.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(single))
        .route("/ofrep/v1/evaluate/flags", post(bulk))
        .route("/api/v1/ofrep/events", get(events))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EnvQuery {
    /// The environment, for admin, writer and reader tokens (an sdk or client token evaluates
    /// its own).
    env: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct BulkQuery {
    /// The environment, for admin, writer and reader tokens (an sdk or client token evaluates
    /// its own).
    env: Option<String>,
    /// The `etag` of the change event that prompted this request: if it names a newer revision
    /// than this server holds, the server catches up before answering.
    #[serde(rename = "flagConfigEtag")]
    #[param(rename = "flagConfigEtag")]
    flag_config_etag: Option<String>,
    /// Accepted for OFREP's sake; Dimmer's events carry the `etag` instead.
    #[serde(rename = "flagConfigLastModified")]
    #[param(rename = "flagConfigLastModified")]
    #[allow(dead_code, reason = "accepted and documented; the etag says more")]
    flag_config_last_modified: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// The environment whose changes to follow.
    env: Option<String>,
    /// The ticket from the bulk answer's `eventStreams` (it opens this stream only).
    ticket: Option<String>,
}

/// A successful OFREP evaluation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OfrepEvaluationSuccess {
    /// The flag key.
    pub key: String,
    /// The value served (of the flag's kind).
    #[schema(value_type = Value)]
    pub value: Value,
    /// OpenFeature's reason (`TARGETING_MATCH`, `SPLIT`, `DEFAULT`, `DISABLED`, `STATIC`, …);
    /// a failed prerequisite reads as `DISABLED`.
    pub reason: &'static str,
    /// The variant served, when the flag has variants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Where the answer comes from.
    pub metadata: OfrepFlagMetadata,
}

/// The metadata of one OFREP evaluation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OfrepFlagMetadata {
    /// The environment evaluated.
    pub environment: String,
    /// The id of the rule that matched, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `PREREQUISITE_FAILED` when a failed prerequisite is reported as `DISABLED`.
    #[serde(rename = "dimmerReason", skip_serializing_if = "Option::is_none")]
    pub dimmer_reason: Option<&'static str>,
}

/// OFREP's error codes.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum OfrepErrorCode {
    /// No such flag (404).
    FlagNotFound,
    /// The flag could not be evaluated as defined (400).
    ParseError,
    /// The flag needs a `targetingKey` (400).
    TargetingKeyMissing,
    /// The context is not an object, or the body not JSON (400).
    InvalidContext,
    /// Anything else, e.g. an off flag without an off variant (400).
    General,
}

/// A failed OFREP evaluation of one flag.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OfrepEvaluationFailure {
    /// The flag key.
    pub key: String,
    /// Why it failed.
    pub error_code: OfrepErrorCode,
    /// In words.
    pub error_details: String,
}

/// One flag of a bulk evaluation: a success or a failure.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum OfrepBulkItem {
    /// Evaluated.
    Success(OfrepEvaluationSuccess),
    /// Not evaluated.
    Failure(OfrepEvaluationFailure),
}

/// A bulk OFREP evaluation: every flag of the environment.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OfrepBulkEvaluationSuccess {
    /// One entry per flag.
    pub flags: Vec<OfrepBulkItem>,
    /// Where the answer comes from.
    pub metadata: OfrepBulkMetadata,
    /// Where to hear of changes instead of polling (OFREP 0.3.0).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub event_streams: Vec<OfrepEventStream>,
}

/// A change-event connection (OFREP's `eventStream`): server-sent events at `endpoint`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OfrepEventStream {
    /// Always `sse`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where to connect, relative to the OFREP base URL's origin (the server does not know the
    /// origin its clients reach it by behind a proxy).
    pub endpoint: OfrepEventStreamEndpoint,
    /// Seconds of client inactivity (a hidden tab) after which the connection should close; on
    /// resuming, the client reconnects and fetches again without `If-None-Match`.
    pub inactivity_delay_sec: u32,
}

/// OFREP's `eventStreamEndpoint`, without `origin`: the provider's base URL origin is used.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OfrepEventStreamEndpoint {
    /// Path and query, starting with `/`; the query carries a ticket, so it must not be logged.
    pub request_uri: String,
}

/// The metadata of a bulk evaluation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OfrepBulkMetadata {
    /// The environment evaluated.
    pub environment: String,
    /// Its revision (the `ETag` names it too).
    pub revision: i64,
}

/// A bulk OFREP evaluation that could not start.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OfrepBulkEvaluationFailure {
    /// Why.
    pub error_code: OfrepErrorCode,
    /// In words.
    pub error_details: String,
}

fn json_response(status: StatusCode, body: impl Serialize) -> Response {
    (status, Json(body)).into_response()
}

/// Reads `{"context": {...}}`; any other shape is `INVALID_CONTEXT`. The context comes with its
/// JSON object (empty when none was sent), for the bulk `ETag`.
fn parse_context(body: &Bytes) -> Result<(Context, serde_json::Map<String, Value>), String> {
    if body.is_empty() {
        return Ok((Context::new(), serde_json::Map::new()));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let map = match value {
        Value::Object(mut body) => match body.remove("context") {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => return Err("context: expected a JSON object".to_owned()),
        },
        _ => return Err("expected a JSON object {\"context\": {...}}".to_owned()),
    };
    Ok((with_random(Context::from_map(map.clone())), map))
}

/// Supplies the number `$random` bucketing uses, which a JSON context cannot carry: a fresh draw
/// per request from a thread-local generator seeded from the operating system.
fn with_random(context: Context) -> Context {
    if context.random().is_some() {
        return context;
    }
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    // SplitMix64: fast, and statistically good enough to spread users over buckets; nothing
    // secret depends on it.
    let next = STATE.with(|state| {
        let mut z = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    });
    // The high half of the draw; the truncation is the point.
    #[allow(clippy::cast_possible_truncation)]
    context.with_random((next >> 32) as u32)
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS random source: std's per-thread hash keys are the next best seed (they come
        // from the same source when it works, and differ per thread and process otherwise).
        use std::hash::{BuildHasher, Hasher};
        return std::collections::hash_map::RandomState::new().build_hasher().finish();
    }
    u64::from_le_bytes(bytes)
}

/// The bulk `ETag`: the configuration's (environment and revision) and a hash of the context in
/// canonical JSON (object keys sorted), so that a 304 is only ever answered for the same
/// configuration and the same context.
fn bulk_etag(snap: &EnvSnapshot, context: &serde_json::Map<String, Value>) -> String {
    let mut canonical = String::new();
    write_canonical(&mut canonical, &Value::Object(context.clone()));
    let mut hash = Sha256::new();
    hash.update(snap.etag.as_bytes());
    hash.update([0]);
    hash.update(canonical.as_bytes());
    let digest = hash.finalize();
    format!("\"{}-{}-{}\"", snap.environment(), snap.revision(), hex::encode(&digest[..12]))
}

/// JSON with object keys in order, so that equal contexts hash equally however they were sent.
fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(out, value);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Whether `If-None-Match` names `etag` (a list, weak or strong, or `*`).
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |candidate| {
            let candidate = candidate.trim();
            candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
        },
    )
}

/// The revision a change event's `etag` (`"<env>-<revision>"`) names, if it is about `env`.
fn event_revision(etag: &str, env: &str) -> Option<i64> {
    let text = etag.trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    let (named, revision) = text.rsplit_once('-')?;
    (named == env).then(|| revision.parse().ok()).flatten()
}

/// One evaluation in OFREP's terms: a success, or a failure with its status.
fn evaluate_one(
    flags: &CompiledFlags,
    key: &str,
    ctx: &Context,
) -> Result<OfrepEvaluationSuccess, (StatusCode, OfrepEvaluationFailure)> {
    let eval = evaluate(flags, key, ctx);
    let failure = |status: StatusCode, error_code: OfrepErrorCode, details: &str| {
        (status, OfrepEvaluationFailure { key: key.to_owned(), error_code, error_details: details.to_owned() })
    };
    if let Some(code) = eval.error {
        let details = eval.error_message.unwrap_or("evaluation failed");
        return Err(match code {
            ErrorCode::FlagNotFound => {
                failure(StatusCode::NOT_FOUND, OfrepErrorCode::FlagNotFound, &format!("flag \"{key}\" was not found"))
            }
            ErrorCode::ParseError => failure(StatusCode::BAD_REQUEST, OfrepErrorCode::ParseError, details),
            ErrorCode::TargetingKeyMissing => {
                failure(StatusCode::BAD_REQUEST, OfrepErrorCode::TargetingKeyMissing, details)
            }
            ErrorCode::InvalidContext => failure(StatusCode::BAD_REQUEST, OfrepErrorCode::InvalidContext, details),
            ErrorCode::TypeMismatch | ErrorCode::General => {
                failure(StatusCode::BAD_REQUEST, OfrepErrorCode::General, details)
            }
        });
    }
    let Some(value) = eval.value else {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            OfrepErrorCode::General,
            "the flag is off and has no off variant to serve",
        ));
    };
    // OFREP's reasons are OpenFeature's; a failed prerequisite reads as DISABLED for this context.
    let (reason, dimmer_reason) = match eval.reason {
        Reason::PrerequisiteFailed => ("DISABLED", Some("PREREQUISITE_FAILED")),
        other => (other.as_str(), None),
    };
    Ok(OfrepEvaluationSuccess {
        key: key.to_owned(),
        value: value.clone(),
        reason,
        variant: eval.variant.map(str::to_owned),
        metadata: OfrepFlagMetadata {
            environment: flags.environment().to_owned(),
            rule: eval.rule_id.map(str::to_owned),
            dimmer_reason,
        },
    })
}

/// Evaluates one flag for a context (OFREP `evaluateFlag`).
#[utoipa::path(
    post,
    path = "/ofrep/v1/evaluate/flags/{key}",
    tag = "ofrep",
    operation_id = "evaluateFlag",
    params(
        ("key" = String, Path, description = "The flag key (may be percent-encoded)"),
        EnvQuery,
    ),
    request_body(content = ref("#/components/schemas/OfrepEvaluationRequest"), description = "Optional: the evaluation context; an empty body is an empty context"),
    responses(
        (status = 200, description = "Evaluated", body = OfrepEvaluationSuccess),
        (status = 400, description = "`TARGETING_KEY_MISSING`, `INVALID_CONTEXT`, `PARSE_ERROR` or `GENERAL` ; or an admin, writer or reader token without `?env=` (`GENERAL`)",
            body = doc::OfrepError),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::OfrepError),
        (status = 403, description = "An sdk or client token asking for another environment", body = doc::OfrepError),
        (status = 404, description = "`FLAG_NOT_FOUND` , or no such environment (`GENERAL`)",
            body = doc::OfrepError),
    )
)]
async fn single(
    principal: Principal,
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<EnvQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let env = evaluation_environment_of(&principal, q.env)?;
    let ctx = match parse_context(&body) {
        Ok((ctx, _)) => ctx,
        Err(details) => {
            let failure =
                OfrepEvaluationFailure { key, error_code: OfrepErrorCode::InvalidContext, error_details: details };
            return Ok(json_response(StatusCode::BAD_REQUEST, failure));
        }
    };
    let snap = state.hub.current(&env).await?;
    Ok(match evaluate_one(&snap.compiled, &key, &ctx) {
        Ok(success) => json_response(StatusCode::OK, success),
        Err((status, failure)) => json_response(status, failure),
    })
}

/// Evaluates every flag of the environment for a context (OFREP `evaluateFlagsBulk`).
#[utoipa::path(
    post,
    path = "/ofrep/v1/evaluate/flags",
    tag = "ofrep",
    operation_id = "evaluateFlagsBulk",
    params(
        BulkQuery,
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of the evaluation held: 304 if the configuration and the context are unchanged"),
    ),
    request_body(content = ref("#/components/schemas/OfrepEvaluationRequest"), description = "Optional: the evaluation context; an empty body is an empty context"),
    responses(
        (status = 200, description = "Every flag evaluated; failures are listed with their `errorCode`; `eventStreams` says where to hear of changes", body = OfrepBulkEvaluationSuccess,
            headers(("ETag" = String, description = "Names the environment's revision and the context"))),
        (status = 304, description = "`If-None-Match` names the current configuration and this context",
            headers(("ETag" = String, description = "Names the environment's revision and the context"))),
        (status = 400, description = "`INVALID_CONTEXT` ; or an admin, writer or reader token without `?env=` (`GENERAL`)",
            body = doc::OfrepError),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::OfrepError),
        (status = 403, description = "An sdk or client token asking for another environment", body = doc::OfrepError),
        (status = 404, description = "No such environment", body = doc::OfrepError),
    )
)]
async fn bulk(
    principal: Principal,
    State(state): State<AppState>,
    Query(q): Query<BulkQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let env = evaluation_environment_of(&principal, q.env)?;
    let (ctx, context_json) = match parse_context(&body) {
        Ok(parsed) => parsed,
        Err(details) => {
            let failure =
                OfrepBulkEvaluationFailure { error_code: OfrepErrorCode::InvalidContext, error_details: details };
            return Ok(json_response(StatusCode::BAD_REQUEST, failure));
        }
    };
    let mut snap = state.hub.current(&env).await?;
    if let Some(revision) = q.flag_config_etag.as_deref().and_then(|etag| event_revision(etag, &env))
        && revision > snap.revision()
    {
        // The event came from a replica that is ahead of this one: catch up first, or the
        // client would be told "unchanged". Only the store's word counts, so a made-up etag
        // costs one cheap read, never a reload.
        let stored = state.store.list_environments().await?.into_iter().find(|e| e.name == env);
        if let Some(stored) = stored.filter(|e| e.revision > snap.revision()) {
            state.hub.refresh(&env, stored.revision).await?;
            snap = state.hub.current(&env).await?;
        }
    }
    let etag_text = bulk_etag(&snap, &context_json);
    let etag = HeaderValue::from_str(&etag_text).map_err(|e| ApiError::internal(&e))?;
    if none_match(&headers, &etag_text) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let flags = snap
        .compiled
        .keys()
        .map(|key| match evaluate_one(&snap.compiled, key, &ctx) {
            Ok(success) => OfrepBulkItem::Success(success),
            Err((_, failure)) => OfrepBulkItem::Failure(failure),
        })
        .collect();
    let revision = snap.revision();
    let event_streams = principal
        .stream_ticket(&env)
        .map(|ticket| OfrepEventStream {
            kind: "sse",
            endpoint: OfrepEventStreamEndpoint { request_uri: format!("{EVENTS_PATH}?env={env}&ticket={ticket}") },
            inactivity_delay_sec: INACTIVITY_DELAY_SEC,
        })
        .into_iter()
        .collect();
    let body =
        OfrepBulkEvaluationSuccess { flags, metadata: OfrepBulkMetadata { environment: env, revision }, event_streams };
    let mut response = json_response(StatusCode::OK, body);
    response.headers_mut().insert(header::ETAG, etag);
    Ok(response)
}

/// One `refetchEvaluation` event: the configuration's ETag in `data` (a provider sends it back
/// as `flagConfigEtag`), the revision as `id` (for `Last-Event-ID`).
fn refetch_event(snap: &EnvSnapshot) -> Event {
    let data = serde_json::json!({"type": "refetchEvaluation", "etag": snap.etag});
    Event::default().event("message").id(snap.revision().to_string()).data(data.to_string())
}

/// The environment's configuration changes as OFREP change events (server-sent events).
///
/// Opened with the URL a bulk answer advertises in `eventStreams` (its `ticket` stands for the
/// token, which `EventSource` cannot send). Every event is `event: message`, `id:` the revision,
/// `data: {"type": "refetchEvaluation", "etag": "\"<env>-<revision>\""}`: evaluate again, with
/// `flagConfigEtag` set to that `etag`. On connect one such event names the current
/// configuration, unless `Last-Event-ID` already does, so that a change between the bulk answer
/// and the connection is never lost (a client that is current gets a 304). Then one event per
/// new revision; a heartbeat comment every 15 s; at shutdown the stream ends and the client
/// reconnects after `retry` (1 s).
#[utoipa::path(
    get,
    path = "/api/v1/ofrep/events",
    tag = "ofrep",
    operation_id = "streamOfrepEvents",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The last revision received: an event only if there is a newer one"),
    ),
    responses(
        (status = 200, description = "An endless `text/event-stream` of `refetchEvaluation` events",
            content_type = "text/event-stream", body = String),
        (status = 401, description = "No ticket, or one that is not signed by a live token for this environment", body = doc::ErrorBody),
        (status = 404, description = "No such environment", body = doc::ErrorBody),
    )
)]
async fn events(
    State(state): State<AppState>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let unauthorized = || ApiError::new(Code::Unauthorized, "missing or invalid event-stream ticket");
    let (Some(env), Some(ticket)) = (q.env, q.ticket) else { return Err(unauthorized()) };
    state.tokens.authenticate_ticket(state.store.as_ref(), &env, &ticket).await?.ok_or_else(unauthorized)?;
    let mut rx = state.hub.watch(&env).await?;
    let resume_from = super::last_event_id(&headers);
    let mut shutdown = state.shutdown.clone();
    let stream = async_stream::stream! {
        let first = rx.borrow_and_update().clone();
        let mut sent = first.revision();
        if resume_from == Some(sent) {
            yield Ok(Event::default().retry(RECONNECT_AFTER));
        } else {
            yield Ok(refetch_event(&first).retry(RECONNECT_AFTER));
        }
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() { break; }
                    let snap = rx.borrow_and_update().clone();
                    if snap.revision() <= sent { continue; }
                    yield Ok(refetch_event(&snap));
                    sent = snap.revision();
                }
                // Shutdown: the stream ends cleanly; clients reconnect after `retry`.
                _ = shutdown.changed() => break,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(super::sdk::HEARTBEAT).text("heartbeat")))
}
