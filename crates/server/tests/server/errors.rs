//! One error shape everywhere: bad query strings and paths, unknown routes and methods answer the
//! documented JSON naming what is wrong; under `/ofrep/` every error also carries OFREP's `key`
//! and `errorCode`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN, TestServer};

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not the API's error shape: {body}"))
}

#[tokio::test]
async fn a_bad_query_parameter_is_named_in_json() {
    let server = TestServer::start().await;
    let (status, headers, body) = server.call(Method::GET, "/api/v1/audit?limit=ten", Some(ADMIN), None, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(headers[reqwest::header::CONTENT_TYPE].to_str().unwrap().starts_with("application/json"));
    assert_eq!(error_code(&body), "malformed_request");
    assert_eq!(body["error"]["details"], json!({"parameter": "limit", "in": "query"}));
    assert!(body["error"]["message"].as_str().unwrap().contains("limit"), "{body}");

    let (status, _, body) = server.call(Method::GET, "/api/v1/audit?limit=5000", Some(ADMIN), None, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["details"]["parameter"], "limit");
    server.stop().await;
}

#[tokio::test]
async fn a_bad_path_parameter_is_named_in_json() {
    let server = TestServer::start().await;
    // %FF decodes to a byte that is not UTF-8.
    let (status, _, body) = server.call(Method::GET, "/api/v1/flags/%FF", Some(ADMIN), None, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "malformed_request");
    assert_eq!(body["error"]["details"], json!({"parameter": "key", "in": "path"}));
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let server = TestServer::start().await;
    let (status, _, body) = server.call(Method::GET, "/api/v1/no-such-thing", Some(ADMIN), None, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), "not_found");

    let (status, headers, body) = server.call(Method::PATCH, "/api/v1/flags", Some(ADMIN), None, &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(error_code(&body), "method_not_allowed");
    let allow = headers[reqwest::header::ALLOW].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "Allow: {allow}");
    server.stop().await;
}

#[tokio::test]
async fn every_ofrep_error_carries_key_and_error_code() {
    let server = TestServer::start().await;
    let sdk = server.token("web", "sdk", Some("production")).await;

    // No token: the API's 401, with OFREP's fields beside it.
    let (status, _, body) = server.call(Method::POST, "/ofrep/v1/evaluate/flags/checkout", None, None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!((body["key"].as_str(), body["errorCode"].as_str()), (Some("checkout"), Some("GENERAL")), "{body}");
    assert!(body["errorDetails"].is_string(), "{body}");
    assert_eq!(error_code(&body), "unauthorized");

    // An unknown flag: OFREP's 404, with the API's error object beside it.
    let (status, _, body) = server.call(Method::POST, "/ofrep/v1/evaluate/flags/missing", Some(&sdk), None, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!((body["key"].as_str(), body["errorCode"].as_str()), (Some("missing"), Some("FLAG_NOT_FOUND")));
    assert_eq!(error_code(&body), "not_found");

    // A key with a `/` cannot exist; the route does not match, the answer is still OFREP's.
    let (status, _, body) = server.call(Method::POST, "/ofrep/v1/evaluate/flags/a/b", Some(&sdk), None, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!((body["key"].as_str(), body["errorCode"].as_str()), (Some("a/b"), Some("FLAG_NOT_FOUND")));

    // A query-string error on a single-flag evaluation.
    let (status, _, body) =
        server.call(Method::POST, "/ofrep/v1/evaluate/flags/checkout?env=a&env=b", Some(ADMIN), None, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!((body["key"].as_str(), body["errorCode"].as_str()), (Some("checkout"), Some("INVALID_CONTEXT")));
    assert_eq!(body["error"]["details"]["parameter"], "env", "{body}");

    // The bulk evaluation has no key, but the code and the error object.
    let (status, _, body) = server.call(Method::GET, "/ofrep/v1/evaluate/flags", Some(&sdk), None, &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(body["errorCode"], "GENERAL", "{body}");
    assert!(body.get("key").is_none(), "{body}");
    assert_eq!(error_code(&body), "method_not_allowed");
    server.stop().await;
}

#[tokio::test]
async fn integral_numbers_with_a_fraction_are_read_as_integers() {
    let server = TestServer::start().await;
    let (status, body) = server
        .admin(Method::POST, "/api/v1/flags", Some(json!({"key": "checkout", "owner": "team-pay", "description": "d"})))
        .await;
    assert!(status.is_success(), "{body}");
    let sdk = server.token("svc", "sdk", Some("production")).await;
    // JSON Schema counts 12.0 as an integer; so does the server.
    let batch = json!({"metrics": [{"flag": "checkout", "variant": "on", "evaluations": 12.0, "successes": 11.0, "errors": 1}]});
    let (status, _, body) = server.call(Method::POST, "/api/v1/sdk/metrics", Some(&sdk), Some(batch), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");

    // A real fraction is still refused, naming the field.
    let batch = json!({"metrics": [{"flag": "checkout", "variant": "on", "evaluations": 12.5}]});
    let (status, _, body) = server.call(Method::POST, "/api/v1/sdk/metrics", Some(&sdk), Some(batch), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["details"]["path"], "metrics[0].evaluations", "{body}");
    server.stop().await;
}
