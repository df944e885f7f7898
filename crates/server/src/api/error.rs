//! The one API error shape, `{"error": {"code", "message", "details"}}`, from one table of codes.
//!
//! Every failure the API reports goes through [`ApiError`]; malformed JSON too (through the
//! [`Json`] extractor below). A 500 never shows internals: the cause is logged once, here.

use axum::Json as AxumJson;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use dimmer_store::StoreError;

use crate::service::tokens::TokenError;

/// Stable, snake_case error codes. The table: code → HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The body is not valid JSON or not of the expected shape.
    MalformedRequest,
    /// The request is well-formed but names something invalid (a field path says what).
    ValidationFailed,
    /// No or unknown credentials.
    Unauthorized,
    /// The token's scope does not allow this.
    Forbidden,
    /// No such resource.
    NotFound,
    /// The route exists, but not for this method (`Allow` lists those it has).
    MethodNotAllowed,
    /// The resource already exists.
    AlreadyExists,
    /// The operation does not fit the resource's state (e.g. a plan is already running).
    Conflict,
    /// `If-Match` names a stale version.
    VersionMismatch,
    /// A write without `If-Match`.
    PreconditionRequired,
    /// The body is too large.
    PayloadTooLarge,
    /// The request did not complete in time (a slow body, or slow work); it may or may not have
    /// taken effect.
    RequestTimeout,
    /// Too many requests from this token or address; `Retry-After` says when to try again.
    RateLimited,
    /// The server failed; details are in its log.
    Internal,
}

impl Code {
    /// The HTTP status of this code.
    pub fn status(self) -> StatusCode {
        match self {
            Code::MalformedRequest => StatusCode::BAD_REQUEST,
            Code::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::Conflict => StatusCode::CONFLICT,
            Code::VersionMismatch => StatusCode::PRECONDITION_FAILED,
            Code::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An API error: a code, a message for people, and structured details.
#[derive(Debug)]
pub struct ApiError {
    /// The code (decides the status).
    pub code: Code,
    /// What went wrong, in words.
    pub message: String,
    /// Structured details (field paths, the current version, …), or none (`null` on the wire).
    pub details: Option<Details>,
}

/// The structured `details` of an error: one of a few fixed shapes, so that clients (the CLI
/// among them) can rely on them and the ETag of a 412 is taken from a type, not a JSON lookup.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Details {
    /// Every invalid field, for validation failures and malformed documents.
    Errors {
        /// One entry per problem, in the order found.
        errors: Vec<FieldError>,
    },
    /// The one field at fault (metric batches, guards, windows).
    Path {
        /// The field's path, such as `metrics[1].latency` or `guards[0].max`.
        path: String,
    },
    /// A stale `If-Match`: the version named and the current one (also sent as `ETag`).
    Version {
        /// The version the request named.
        expected: i64,
        /// The current version.
        current: i64,
    },
    /// The path or query-string parameter at fault.
    Parameter {
        /// Its name, such as `limit` or `key`.
        parameter: String,
        /// Where it is: `path` or `query`.
        #[serde(rename = "in")]
        #[schema(rename = "in")]
        location: &'static str,
    },
    /// The flags that still use a segment being deleted.
    Flags {
        /// Their keys.
        flags: Vec<String>,
    },
}

/// One entry of `details.errors`: where a request is wrong and what is wrong there.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field's path in the request, such as `key` or `environments.production.rules[0]`.
    pub path: String,
    /// The flag-policy rule violated (docs/POLICY.md); only on policy violations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A problem at `path` that no policy rule names.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), rule: None, message: message.into() }
    }

    /// An entry of [`crate::service::validation::engine_errors`], which the service hands over
    /// as `{path, message}` JSON (it knows nothing of the API's types). A missing field reads as
    /// empty rather than dropping the entry: a validation error must never get lost.
    pub fn from_engine(entry: &serde_json::Value) -> Self {
        let text = |field: &str| entry.get(field).and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
        Self::new(text("path"), text("message"))
    }
}

impl ApiError {
    /// An error with no details.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: None }
    }

    /// Adds details.
    pub fn with_details(mut self, details: Details) -> Self {
        self.details = Some(details);
        self
    }

    /// Adds `details.errors`.
    pub fn with_errors(self, errors: Vec<FieldError>) -> Self {
        self.with_details(Details::Errors { errors })
    }

    /// Adds `details.path`.
    pub fn with_path(self, path: impl Into<String>) -> Self {
        self.with_details(Details::Path { path: path.into() })
    }

    /// 404 for a kind and key.
    pub fn not_found(kind: &str, key: &str) -> Self {
        Self::new(Code::NotFound, format!("{kind} \"{key}\" not found"))
    }

    /// 500, logging the cause (never shown to the caller).
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        let mut chain = cause.to_string();
        let mut source = cause.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(error = %chain, "internal error");
        Self::new(Code::Internal, "internal error; see the server log")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound { .. } => Self::new(Code::NotFound, e.to_string()),
            StoreError::AlreadyExists { .. } => Self::new(Code::AlreadyExists, e.to_string()),
            StoreError::VersionMismatch { expected, current } => Self::new(
                Code::VersionMismatch,
                format!("version {expected} is stale: the current version is {current}"),
            )
            .with_details(Details::Version { expected: *expected, current: *current }),
            StoreError::AlreadyRecorded { .. } => Self::new(Code::Conflict, e.to_string()),
            StoreError::Corrupt(_) | StoreError::Database(_) => Self::internal(&e),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Store(e) => e.into(),
            TokenError::Random(_) => Self::internal(&e),
        }
    }
}

/// Every error of the admin and SDK APIs (not OFREP's evaluation failures).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// An error: a stable code, a message for people, structured details.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorObject {
    /// Stable, snake_case; decides the HTTP status.
    pub code: Code,
    /// What went wrong, in words.
    pub message: String,
    /// Structured details, or null: `errors` (`[{path, message}]`, policy violations with their
    /// `rule`) for validation failures, `path` for a metric batch or guard, `expected` and
    /// `current` for a version mismatch, `flags` for a segment in use.
    #[schema(required = true)]
    pub details: Option<Details>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A stale version: the current one goes out as the ETag too, ready for the retry.
        let etag = match (self.code, &self.details) {
            (Code::VersionMismatch, Some(Details::Version { current, .. })) => {
                HeaderValue::from_str(&format!("\"{current}\"")).ok()
            }
            _ => None,
        };
        let body = ErrorBody { error: ErrorObject { code: self.code, message: self.message, details: self.details } };
        let mut response = (self.code.status(), AxumJson(body)).into_response();
        if let Some(etag) = etag {
            response.headers_mut().insert(header::ETAG, etag);
        }
        response
    }
}

/// JSON body extractor whose rejections use the API error shape, naming the field at fault.
///
/// Numbers written with a zero fraction (`200.0`) are read as the integers they are: JSON Schema
/// (and so the OpenAPI document) counts them as integers, and clients generated from it send them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(Code::MalformedRequest, "expected a body with Content-Type: application/json"));
        }
        let body = axum::body::Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(Code::PayloadTooLarge, "the request body is too large")
            } else {
                ApiError::new(
                    Code::MalformedRequest,
                    format!("the request body could not be read: {}", rejection.body_text()),
                )
            }
        })?;
        from_json_bytes(&body).map(Json)
    }
}

/// What is wrong with a JSON body: where (for a field of the wrong shape) and what.
#[derive(Debug)]
pub(crate) struct JsonProblem {
    /// The field's path (`guards[2].max`), or `None` for a syntax error or the whole body.
    pub path: Option<String>,
    /// In words.
    pub message: String,
}

impl JsonProblem {
    /// The `400 malformed_request` for it, with `details.errors` naming the field.
    pub(crate) fn into_api_error(self) -> ApiError {
        match self.path {
            None => ApiError::new(Code::MalformedRequest, self.message),
            Some(path) => ApiError::new(Code::MalformedRequest, format!("{path}: {}", self.message))
                .with_errors(vec![FieldError::new(path, self.message)]),
        }
    }
}

/// Parses a JSON body into `T` as [`Json`] does (integral numbers read as integers).
pub(crate) fn read_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, JsonProblem> {
    let mut value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| JsonProblem { path: None, message: format!("the body is not valid JSON: {e}") })?;
    integral_numbers(&mut value);
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        JsonProblem { path: (path != "." && !path.is_empty()).then_some(path), message }
    })
}

/// Parses a JSON body into `T` (see [`Json`]): a syntax error or a field of the wrong shape is a
/// `400 malformed_request`, the latter naming the field's path.
pub(crate) fn from_json_bytes<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    read_json(body).map_err(JsonProblem::into_api_error)
}

/// An optional body: empty (or whitespace) is `T::default()`; anything else must be a JSON
/// object of `T`'s shape.
pub(crate) fn optional_json_object<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let trimmed = body.iter().position(|b| !b.is_ascii_whitespace()).map_or(&body[..0], |start| &body[start..]);
    if !trimmed.starts_with(b"{") {
        return Err(ApiError::new(Code::MalformedRequest, "the body, when sent, must be a JSON object"));
    }
    from_json_bytes(body)
}

/// 2^63 and 2^64, exactly (powers of two are exact in an f64).
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// Rewrites every float with a zero fraction that fits an `i64` (or a `u64`) as that integer.
fn integral_numbers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else { return };
            if f.fract() != 0.0 {
                return;
            }
            // An integral f64 is an exact integer; within these bounds the casts are exact.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "integral and in range, checked"
            )]
            if (-TWO_POW_63..TWO_POW_63).contains(&f) {
                *n = serde_json::Number::from(f as i64);
            } else if (0.0..TWO_POW_64).contains(&f) {
                *n = serde_json::Number::from(f as u64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// `application/json` or any `+json` type, as axum's own extractor accepts.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        AxumJson(self.0).into_response()
    }
}
