//! OFREP, the OpenFeature Remote Evaluation Protocol (`tests/vectors/ofrep/openapi.yaml`):
//! single-flag and bulk evaluation through the engine, authenticated by sdk tokens (bearer or
//! `X-API-Key`).
//!
//! Real providers are stricter than the spec in places, so every answer is JSON with a string
//! `key` and `errorCode` on failures, and a 200 always carries a `value`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use dimmer_engine::{CompiledFlags, Context, ErrorCode, Reason, evaluate};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::schemas as doc;
use crate::api::AppState;
use crate::api::auth::Principal;
use crate::api::error::ApiError;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/ofrep/v1/evaluate/flags/{key}", post(single)).route("/ofrep/v1/evaluate/flags", post(bulk))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EnvQuery {
    /// The environment, for admin, writer and reader tokens (an sdk token evaluates its own).
    env: Option<String>,
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_string()).into_response()
}

/// Reads `{"context": {...}}`; any other shape is `INVALID_CONTEXT`.
fn parse_context(body: &Bytes) -> Result<Context, String> {
    if body.is_empty() {
        return Ok(Context::new());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    match value.get("context") {
        None | Some(Value::Null) => Ok(Context::new()),
        Some(Value::Object(map)) => Ok(Context::from_map(map.clone())),
        Some(_) => Err("context: expected a JSON object".to_owned()),
    }
}

/// One evaluation in OFREP's terms: `Ok` is an evaluationSuccess, `Err` a failure with its status.
fn evaluate_one(flags: &CompiledFlags, key: &str, ctx: &Context) -> Result<Value, (StatusCode, Value)> {
    let eval = evaluate(flags, key, ctx);
    let failure = |status: StatusCode, code: &str, details: &str| {
        (status, json!({"key": key, "errorCode": code, "errorDetails": details}))
    };
    if let Some(code) = eval.error {
        let details = eval.error_message.unwrap_or("evaluation failed");
        return Err(match code {
            ErrorCode::FlagNotFound => {
                failure(StatusCode::NOT_FOUND, "FLAG_NOT_FOUND", &format!("flag \"{key}\" was not found"))
            }
            ErrorCode::ParseError => failure(StatusCode::BAD_REQUEST, "PARSE_ERROR", details),
            ErrorCode::TargetingKeyMissing => failure(StatusCode::BAD_REQUEST, "TARGETING_KEY_MISSING", details),
            ErrorCode::InvalidContext => failure(StatusCode::BAD_REQUEST, "INVALID_CONTEXT", details),
            ErrorCode::TypeMismatch | ErrorCode::General => failure(StatusCode::BAD_REQUEST, "GENERAL", details),
        });
    }
    let Some(value) = eval.value else {
        return Err(failure(StatusCode::BAD_REQUEST, "GENERAL", "the flag is off and has no off variant to serve"));
    };
    // OFREP's reasons are OpenFeature's; a failed prerequisite reads as DISABLED for this context.
    let reason = match eval.reason {
        Reason::PrerequisiteFailed => "DISABLED",
        other => other.as_str(),
    };
    let mut out = Map::new();
    out.insert("key".into(), json!(key));
    out.insert("value".into(), value.clone());
    out.insert("reason".into(), json!(reason));
    if let Some(variant) = eval.variant {
        out.insert("variant".into(), json!(variant));
    }
    let mut metadata = Map::new();
    metadata.insert("environment".into(), json!(flags.environment()));
    if let Some(rule) = eval.rule_id {
        metadata.insert("rule".into(), json!(rule));
    }
    if eval.reason == Reason::PrerequisiteFailed {
        metadata.insert("dimmerReason".into(), json!("PREREQUISITE_FAILED"));
    }
    out.insert("metadata".into(), Value::Object(metadata));
    Ok(Value::Object(out))
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
        (status = 200, description = "Evaluated", body = doc::OfrepEvaluationSuccess),
        (status = 400, description = "`TARGETING_KEY_MISSING`, `INVALID_CONTEXT`, `PARSE_ERROR` or `GENERAL` (OFREP's shape), or a non-sdk token without `?env=` (`ErrorBody`)",
            body = doc::OfrepFailureOrError),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token asking for another environment", body = doc::ErrorBody),
        (status = 404, description = "`FLAG_NOT_FOUND` (OFREP's shape), or no such environment (`ErrorBody`)",
            body = doc::OfrepFailureOrError),
    )
)]
async fn single(
    principal: Principal,
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<EnvQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let env = super::auth::environment_of(&principal, q.env)?;
    let ctx = match parse_context(&body) {
        Ok(ctx) => ctx,
        Err(details) => {
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                &json!({"key": key, "errorCode": "INVALID_CONTEXT", "errorDetails": details}),
            ));
        }
    };
    let snap = state.hub.current(&env).await?;
    Ok(match evaluate_one(&snap.compiled, &key, &ctx) {
        Ok(success) => json_response(StatusCode::OK, &success),
        Err((status, failure)) => json_response(status, &failure),
    })
}

/// Evaluates every flag of the environment for a context (OFREP `evaluateFlagsBulk`).
#[utoipa::path(
    post,
    path = "/ofrep/v1/evaluate/flags",
    tag = "ofrep",
    operation_id = "evaluateFlagsBulk",
    params(
        EnvQuery,
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of the evaluation held: 304 if the configuration is unchanged"),
    ),
    request_body(content = ref("#/components/schemas/OfrepEvaluationRequest"), description = "Optional: the evaluation context; an empty body is an empty context"),
    responses(
        (status = 200, description = "Every flag evaluated; failures are listed with their `errorCode`", body = doc::OfrepBulkEvaluationSuccess,
            headers(("ETag" = String, description = "Names the environment's revision"))),
        (status = 304, description = "`If-None-Match` names the current configuration",
            headers(("ETag" = String, description = "Names the environment's revision"))),
        (status = 400, description = "`INVALID_CONTEXT` (OFREP's shape), or a non-sdk token without `?env=` (`ErrorBody`)",
            body = doc::OfrepBulkFailureOrError),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token asking for another environment", body = doc::ErrorBody),
        (status = 404, description = "No such environment", body = doc::ErrorBody),
    )
)]
async fn bulk(
    principal: Principal,
    State(state): State<AppState>,
    Query(q): Query<EnvQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let env = super::auth::environment_of(&principal, q.env)?;
    let ctx = match parse_context(&body) {
        Ok(ctx) => ctx,
        Err(details) => {
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                &json!({"errorCode": "INVALID_CONTEXT", "errorDetails": details}),
            ));
        }
    };
    let snap = state.hub.current(&env).await?;
    let etag = HeaderValue::from_str(&snap.etag).map_err(|e| ApiError::internal(&e))?;
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == snap.etag.as_bytes()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let flags: Vec<Value> = snap
        .compiled
        .keys()
        .map(|key| match evaluate_one(&snap.compiled, key, &ctx) {
            Ok(v) => v,
            Err((_, failure)) => failure,
        })
        .collect();
    let body = json!({"flags": flags, "metadata": {"environment": env, "revision": snap.revision()}});
    let mut response = json_response(StatusCode::OK, &body);
    response.headers_mut().insert(header::ETAG, etag);
    Ok(response)
}
