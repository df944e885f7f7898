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
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::schemas as doc;
use crate::api::AppState;
use crate::api::auth::Principal;
use crate::api::error::{ApiError, Json};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/ofrep/v1/evaluate/flags/{key}", post(single)).route("/ofrep/v1/evaluate/flags", post(bulk))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EnvQuery {
    /// The environment, for admin, writer and reader tokens (an sdk token evaluates its own).
    env: Option<String>,
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
pub(crate) struct OfrepBulkEvaluationSuccess {
    /// One entry per flag.
    pub flags: Vec<OfrepBulkItem>,
    /// Where the answer comes from.
    pub metadata: OfrepBulkMetadata,
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
        (status = 400, description = "`TARGETING_KEY_MISSING`, `INVALID_CONTEXT`, `PARSE_ERROR` or `GENERAL` (OFREP's shape), or a non-sdk token without `?env=` (`ErrorBody`)",
            body = OfrepFailureOrError),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token asking for another environment", body = doc::ErrorBody),
        (status = 404, description = "`FLAG_NOT_FOUND` (OFREP's shape), or no such environment (`ErrorBody`)",
            body = OfrepFailureOrError),
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
        EnvQuery,
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of the evaluation held: 304 if the configuration is unchanged"),
    ),
    request_body(content = ref("#/components/schemas/OfrepEvaluationRequest"), description = "Optional: the evaluation context; an empty body is an empty context"),
    responses(
        (status = 200, description = "Every flag evaluated; failures are listed with their `errorCode`", body = OfrepBulkEvaluationSuccess,
            headers(("ETag" = String, description = "Names the environment's revision"))),
        (status = 304, description = "`If-None-Match` names the current configuration",
            headers(("ETag" = String, description = "Names the environment's revision"))),
        (status = 400, description = "`INVALID_CONTEXT` (OFREP's shape), or a non-sdk token without `?env=` (`ErrorBody`)",
            body = OfrepBulkFailureOrError),
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
            let failure =
                OfrepBulkEvaluationFailure { error_code: OfrepErrorCode::InvalidContext, error_details: details };
            return Ok(json_response(StatusCode::BAD_REQUEST, failure));
        }
    };
    let snap = state.hub.current(&env).await?;
    let etag = HeaderValue::from_str(&snap.etag).map_err(|e| ApiError::internal(&e))?;
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == snap.etag.as_bytes()) {
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
    let body = OfrepBulkEvaluationSuccess { flags, metadata: OfrepBulkMetadata { environment: env, revision } };
    let mut response = json_response(StatusCode::OK, body);
    response.headers_mut().insert(header::ETAG, etag);
    Ok(response)
}

/// An OFREP failure, or an error of the API's own shape (authentication, environment).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "documentation only: described in the OpenAPI document, never built")]
pub(crate) enum OfrepFailureOrError {
    /// OFREP's failure.
    Ofrep(OfrepEvaluationFailure),
    /// The API's error.
    Api(doc::ErrorBody),
}

/// A bulk OFREP failure, or an error of the API's own shape (authentication, environment).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "documentation only: described in the OpenAPI document, never built")]
pub(crate) enum OfrepBulkFailureOrError {
    /// OFREP's failure.
    Ofrep(OfrepBulkEvaluationFailure),
    /// The API's error.
    Api(doc::ErrorBody),
}
