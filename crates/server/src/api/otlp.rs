//! OTLP/HTTP receiver: `POST /v1/traces` and `POST /v1/logs`, as an OpenTelemetry SDK or a
//! Collector's `otlphttp` exporter sends them (protobuf or JSON, optionally gzip), authenticated
//! with an sdk token (`Authorization: Bearer …` or `X-API-Key`). Handlers only translate HTTP:
//! decoding and the mapping to outcomes are in `dimmer_protocol::otlp`, storage in
//! `crate::service::outcomes`.
//!
//! Responses follow the OTLP/HTTP specification rather than Dimmer's JSON error shape, because
//! OTLP exporters parse them: a success is `200` with an `Export…ServiceResponse` (its
//! `partial_success` when some spans were refused), a failure a `google.rpc.Status`, both in the
//! request's encoding. These routes are not in the OpenAPI document (docs/guards.md and
//! docs/api.md describe them).

use std::io::Read as _;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use dimmer_protocol::otlp::{self, Encoding, wire};
use prost::Message as _;

use crate::api::AppState;
use crate::api::auth::{Principal, environment_of};
use crate::api::error::ApiError;
use crate::service::outcomes::OtlpRecorded;

/// The largest body taken, as sent (compressed or not).
pub const MAX_OTLP_BODY_BYTES: usize = 4 << 20;
/// The largest body after gzip: a small compressed body cannot expand past this.
pub const MAX_OTLP_DECOMPRESSED_BYTES: usize = 16 << 20;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/traces", post(traces)).route("/v1/logs", post(logs))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Traces,
    Logs,
}

/// An OTLP failure: status and message, written as a `google.rpc.Status`.
struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Failure { status, message: message.into() }
    }

    fn from_api(e: &ApiError) -> Self {
        let status = e.code.status();
        Failure { status, message: e.message.clone() }
    }

    fn respond(self, encoding: Encoding) -> Response {
        // gRPC codes for the body, as OTLP/HTTP maps them from the HTTP status.
        let code = match self.status {
            StatusCode::BAD_REQUEST => 3,
            StatusCode::UNAUTHORIZED => 16,
            StatusCode::FORBIDDEN => 7,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => 8,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => 3,
            _ => 13,
        };
        let body = wire::RpcStatus { code, message: self.message };
        encoded(self.status, encoding, body.encode_to_vec(), || serde_json::to_vec(&body))
    }
}

fn encoded(
    status: StatusCode,
    encoding: Encoding,
    proto: Vec<u8>,
    json: impl FnOnce() -> serde_json::Result<Vec<u8>>,
) -> Response {
    let (bytes, content_type) = match encoding {
        Encoding::Protobuf => (proto, "application/x-protobuf"),
        // Serialising these plain structs cannot fail; an empty object is still a valid answer.
        Encoding::Json => (json().unwrap_or_else(|_| b"{}".to_vec()), "application/json"),
    };
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn traces(
    principal: Result<Principal, ApiError>,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive(Signal::Traces, principal, state, headers, body).await
}

async fn logs(
    principal: Result<Principal, ApiError>,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive(Signal::Logs, principal, state, headers, body).await
}

async fn receive(
    signal: Signal,
    principal: Result<Principal, ApiError>,
    state: AppState,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let name = match signal {
        Signal::Traces => "traces",
        Signal::Logs => "logs",
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let encoding = match content_type.split(';').next().map(str::trim) {
        Some("application/x-protobuf") => Encoding::Protobuf,
        Some("application/json") => Encoding::Json,
        _ => {
            let message =
                format!("Content-Type {content_type:?}: OTLP/HTTP takes application/x-protobuf or application/json");
            return Failure::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message).respond(Encoding::Json);
        }
    };
    let fail = |f: Failure| {
        state.metrics.otlp_request_refused(name);
        f.respond(encoding)
    };
    let principal = match principal {
        Ok(p) => p,
        Err(e) => return fail(Failure::from_api(&e)),
    };
    if matches!(principal.scope, dimmer_store::Scope::Reader | dimmer_store::Scope::Client) {
        let message = format!("a {} token cannot send telemetry: use an sdk token", principal.scope.as_str());
        return fail(Failure::new(StatusCode::FORBIDDEN, message));
    }
    // An sdk token's own environment; admin and writer tokens are refused here too, as OTLP
    // exporters cannot add `?env=` to every request.
    let env = match environment_of(&principal, None) {
        Ok(env) => env,
        Err(e) => return fail(Failure::from_api(&e)),
    };
    let raw = match axum::body::to_bytes(body, MAX_OTLP_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            let message = format!("the body is larger than {MAX_OTLP_BODY_BYTES} bytes: send smaller batches");
            return fail(Failure::new(StatusCode::PAYLOAD_TOO_LARGE, message));
        }
    };
    let gzip = match headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(str::trim) {
        None | Some("" | "identity") => false,
        Some("gzip") => true,
        Some(other) => {
            let message = format!("Content-Encoding {other:?}: gzip or none");
            return fail(Failure::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message));
        }
    };
    let bytes = if gzip {
        match gunzip(&raw) {
            Ok(b) => std::borrow::Cow::Owned(b),
            Err(f) => return fail(f),
        }
    } else {
        std::borrow::Cow::Borrowed(raw.as_ref())
    };
    let result = match signal {
        Signal::Traces => match otlp::decode_traces(&bytes, encoding) {
            Ok(request) => state.outcomes.traces(&env, &request).await,
            Err(e) => return fail(Failure::new(StatusCode::BAD_REQUEST, e.0)),
        },
        Signal::Logs => match otlp::decode_logs(&bytes, encoding) {
            Ok(request) => state.outcomes.logs(&env, &request).await,
            Err(e) => return fail(Failure::new(StatusCode::BAD_REQUEST, e.0)),
        },
    };
    match result {
        Ok(recorded) => success(signal, encoding, &recorded),
        Err(e) => {
            let api: ApiError = e.into();
            // A store failure is worth a retry: 503 is one of OTLP's retryable codes.
            let status =
                if api.code.status().is_server_error() { StatusCode::SERVICE_UNAVAILABLE } else { api.code.status() };
            fail(Failure::new(status, api.message))
        }
    }
}

fn gunzip(raw: &[u8]) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    let limit = MAX_OTLP_DECOMPRESSED_BYTES as u64 + 1;
    flate2::read::GzDecoder::new(raw)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, format!("the gzip body does not decompress: {e}")))?;
    if out.len() > MAX_OTLP_DECOMPRESSED_BYTES {
        let message = format!("the body decompresses to more than {MAX_OTLP_DECOMPRESSED_BYTES} bytes");
        return Err(Failure::new(StatusCode::PAYLOAD_TOO_LARGE, message));
    }
    Ok(out)
}

fn success(signal: Signal, encoding: Encoding, recorded: &OtlpRecorded) -> Response {
    let x = &recorded.extracted;
    let partial = (x.rejected > 0).then(|| wire::PartialSuccess {
        rejected: i64::try_from(x.rejected).unwrap_or(i64::MAX),
        error_message: x.reason.clone().unwrap_or_default(),
    });
    let json = || {
        let field = match signal {
            Signal::Traces => "rejectedSpans",
            Signal::Logs => "rejectedLogRecords",
        };
        let body = match &partial {
            // int64 is a string in OTLP/JSON.
            Some(p) => {
                serde_json::json!({"partialSuccess": {field: p.rejected.to_string(), "errorMessage": p.error_message}})
            }
            None => serde_json::json!({}),
        };
        serde_json::to_vec(&body)
    };
    let response = wire::ExportResponse { partial_success: partial.clone() };
    encoded(StatusCode::OK, encoding, response.encode_to_vec(), json)
}
