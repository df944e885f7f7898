//! What answers when no handler does (unknown paths, unsupported methods), and the OFREP form of
//! every error under `/ofrep/`: one JSON shape for every 4xx and 5xx, whoever produced it.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::api::error::{ApiError, Code};

/// Where OFREP's single-flag evaluation lives; what follows is the flag key.
const OFREP_FLAG_PREFIX: &str = "/ofrep/v1/evaluate/flags/";
/// Error bodies are small; anything larger is passed through untouched.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// `404 not_found` for a path no route has.
pub(super) async fn not_found(request: Request) -> ApiError {
    ApiError::new(Code::NotFound, format!("no such endpoint: {} (see /api/v1/openapi.json)", request.uri().path()))
}

/// `405 method_not_allowed` on a route that exists for other methods (axum adds `Allow`).
pub(super) async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        Code::MethodNotAllowed,
        format!("{} is not supported on {}; the Allow header lists what is", request.method(), request.uri().path()),
    )
}

/// Under `/ofrep/`, makes every error answer both shapes at once: OFREP's (`key` for a single
/// flag, `errorCode`, `errorDetails`), which OpenFeature providers read, and the API's `error`
/// object. A 401 from the token check, a 429 from the rate limiter and a 404 for a flag thus
/// all carry what either kind of client looks for.
pub(super) async fn ofrep_errors(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if !path.starts_with("/ofrep/") || !(response.status().is_client_error() || response.status().is_server_error()) {
        return response;
    }
    let status = response.status();
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_ERROR_BODY).await else {
        return ApiError::new(Code::Internal, "internal error; see the server log").into_response();
    };
    let mut object = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(object)) => object,
        _ => Map::new(),
    };
    complete_ofrep_error(&mut object, status, flag_key(&path).as_deref());
    let Ok(body) = serde_json::to_vec(&object) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// Adds whichever of the two shapes is missing.
fn complete_ofrep_error(object: &mut Map<String, Value>, status: StatusCode, key: Option<&str>) {
    let api_message = object.get("error").and_then(|e| e.get("message")).and_then(Value::as_str).map(str::to_owned);
    let ofrep_details = object.get("errorDetails").and_then(Value::as_str).map(str::to_owned);
    let message = api_message
        .clone()
        .or(ofrep_details)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_lowercase());
    if let Some(key) = key {
        object.entry("key").or_insert_with(|| Value::String(key.to_owned()));
    }
    object.entry("errorCode").or_insert_with(|| Value::String(ofrep_code(status, key.is_some()).to_owned()));
    object.entry("errorDetails").or_insert_with(|| Value::String(message.clone()));
    if !object.contains_key("error") {
        let code = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::BAD_REQUEST => "malformed_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            s if s.is_server_error() => "internal",
            _ => "malformed_request",
        };
        let error = serde_json::json!({"code": code, "message": message, "details": null});
        object.insert("error".to_owned(), error);
    }
}

/// OFREP's error code for an error the API produced (the evaluator sets its own): a 404 about a
/// flag path is `FLAG_NOT_FOUND` (a key with `/` in it cannot exist), a bad request is
/// `INVALID_CONTEXT`, everything else `GENERAL`.
fn ofrep_code(status: StatusCode, about_a_flag: bool) -> &'static str {
    match status {
        StatusCode::NOT_FOUND if about_a_flag => "FLAG_NOT_FOUND",
        StatusCode::BAD_REQUEST => "INVALID_CONTEXT",
        _ => "GENERAL",
    }
}

/// The flag key of a single-flag OFREP path, percent-decoded.
fn flag_key(path: &str) -> Option<String> {
    let raw = path.strip_prefix(OFREP_FLAG_PREFIX)?;
    if raw.is_empty() {
        return None;
    }
    Some(percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_gains_ofrep_fields() {
        let mut object = serde_json::from_value::<Map<String, Value>>(serde_json::json!({
            "error": {"code": "unauthorized", "message": "no token", "details": null}
        }))
        .unwrap();
        complete_ofrep_error(&mut object, StatusCode::UNAUTHORIZED, Some("new-checkout"));
        assert_eq!(object["key"], "new-checkout");
        assert_eq!(object["errorCode"], "GENERAL");
        assert_eq!(object["errorDetails"], "no token");
        assert_eq!(object["error"]["code"], "unauthorized");
    }

    #[test]
    fn an_ofrep_failure_gains_the_error_object() {
        let mut object = serde_json::from_value::<Map<String, Value>>(serde_json::json!({
            "key": "missing", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "flag \"missing\" was not found"
        }))
        .unwrap();
        complete_ofrep_error(&mut object, StatusCode::NOT_FOUND, Some("missing"));
        assert_eq!(object["errorCode"], "FLAG_NOT_FOUND");
        assert_eq!(object["error"]["code"], "not_found");
        assert_eq!(object["error"]["message"], "flag \"missing\" was not found");
    }

    #[test]
    fn keys_are_decoded_from_the_path() {
        assert_eq!(flag_key("/ofrep/v1/evaluate/flags/a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(flag_key("/ofrep/v1/evaluate/flags"), None);
        assert_eq!(flag_key("/ofrep/v1/evaluate/flags/"), None);
    }
}
