//! The one API error shape, `{"error": {"code", "message", "details"}}`, from one table of codes.
//!
//! Every failure the API reports goes through [`ApiError`]; malformed JSON too (through the
//! [`Json`] extractor below). A 500 never shows internals: the cause is logged once, here.

use axum::Json as AxumJson;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

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
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::Conflict => StatusCode::CONFLICT,
            Code::VersionMismatch => StatusCode::PRECONDITION_FAILED,
            Code::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
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
    /// Structured details (field paths, the current version, …).
    pub details: Value,
}

impl ApiError {
    /// An error with no details.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: Value::Null }
    }

    /// Adds details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
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
            .with_details(json!({"expected": expected, "current": current})),
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message, "details": self.details}});
        let mut response = (self.code.status(), AxumJson(body)).into_response();
        if let StatusCode::PRECONDITION_FAILED = self.code.status()
            && let Some(current) = self.details.get("current").and_then(Value::as_i64)
            && let Ok(etag) = HeaderValue::from_str(&format!("\"{current}\""))
        {
            response.headers_mut().insert(header::ETAG, etag);
        }
        response
    }
}

/// JSON body extractor whose rejections use the API error shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match AxumJson::<T>::from_request(req, state).await {
            Ok(AxumJson(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // serde's message names the field path ("flags.x.kind: unknown variant ...").
            let detail = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_else(|| e.body_text());
            ApiError::new(Code::MalformedRequest, detail)
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::new(Code::MalformedRequest, e.body_text()),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(Code::MalformedRequest, "expected a body with Content-Type: application/json")
        }
        JsonRejection::BytesRejection(_) => {
            ApiError::new(Code::PayloadTooLarge, "the request body is too large or could not be read")
        }
        other => ApiError::new(Code::MalformedRequest, other.body_text()),
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        AxumJson(self.0).into_response()
    }
}
