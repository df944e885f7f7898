//! OFREP through an independent client (the `open-feature-ofrep` provider) and over raw HTTP for
//! what real providers are strict about: JSON on every answer, `key` and `errorCode` on
//! failures, a `value` on every 200, percent-encoded keys, ETag/304 on bulk.

use open_feature::EvaluationContext;
use open_feature::EvaluationErrorCode;
use open_feature::provider::FeatureProvider;
use open_feature_ofrep::{OfrepOptions, OfrepProvider};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::TestServer;

async fn seed(server: &TestServer) {
    let flags = [
        json!({"key": "new-checkout", "environments": {"production": {"enabled": true, "rules": [
            {"clauses": [{"attribute": "country", "op": "in", "values": ["fr"]}], "serve": {"variant": "on"}}
        ], "default": {"variant": "off"}}}}),
        json!({"key": "banner-copy", "variants": {"control": "Buy now", "bold": "BUY NOW"},
               "environments": {"production": {"enabled": true, "default": {"variant": "bold"}, "off_variant": "control"}}}),
        json!({"key": "checkout.v2_b", "environments": {"production": {"enabled": true}}}),
        json!({"key": "half", "environments": {"production": {"enabled": true,
               "default": {"rollout": {"variants": [{"variant": "on", "weight": 50000}, {"variant": "off", "weight": 50000}]}}}}}),
    ];
    for flag in flags {
        let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(flag)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
}

#[tokio::test]
async fn the_open_feature_ofrep_provider_evaluates_through_the_server() {
    let server = TestServer::start().await;
    seed(&server).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {sdk}")).unwrap());
    let provider = OfrepProvider::new(OfrepOptions { base_url: server.base.clone(), headers, ..Default::default() })
        .await
        .expect("provider");

    let fr = EvaluationContext::default().with_targeting_key("u1").with_custom_field("country", "fr");
    let de = EvaluationContext::default().with_targeting_key("u1").with_custom_field("country", "de");
    assert!(provider.resolve_bool_value("new-checkout", &fr).await.unwrap().value);
    let off = provider.resolve_bool_value("new-checkout", &de).await.unwrap();
    assert!(!off.value);
    assert_eq!(off.variant.as_deref(), Some("off"));
    let copy = provider.resolve_string_value("banner-copy", &fr).await.unwrap();
    assert_eq!((copy.value.as_str(), copy.variant.as_deref()), ("BUY NOW", Some("bold")));
    let missing = provider.resolve_bool_value("no-such-flag", &fr).await.unwrap_err();
    assert_eq!(missing.code, EvaluationErrorCode::FlagNotFound);
    // A rollout without a targeting key is an evaluation failure (400), not a value.
    let anonymous = EvaluationContext::default();
    assert!(provider.resolve_bool_value("half", &anonymous).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn ofrep_answers_are_json_with_key_and_error_code_and_keys_may_be_percent_encoded() {
    let server = TestServer::start().await;
    seed(&server).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let post = |path: String, body: serde_json::Value, auth: Option<(&'static str, String)>| {
        let mut req = server.http.post(format!("{}{path}", server.base)).json(&body);
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        req.send()
    };
    let bearer = Some(("authorization", format!("Bearer {sdk}")));

    let resp =
        post("/ofrep/v1/evaluate/flags/no-such-flag".into(), json!({"context": {}}), bearer.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!((v["key"].as_str(), v["errorCode"].as_str()), (Some("no-such-flag"), Some("FLAG_NOT_FOUND")));

    let resp = post("/ofrep/v1/evaluate/flags/half".into(), json!({"context": {}}), bearer.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["errorCode"], "TARGETING_KEY_MISSING");

    let resp = post("/ofrep/v1/evaluate/flags/half".into(), json!({"context": "nope"}), bearer.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!((v["key"].as_str(), v["errorCode"].as_str()), (Some("half"), Some("INVALID_CONTEXT")));

    // X-API-Key works like a bearer token; a percent-encoded key is decoded.
    let resp = post(
        "/ofrep/v1/evaluate/flags/checkout.v2%5Fb".into(),
        json!({"context": {"targetingKey": "u"}}),
        Some(("x-api-key", sdk.clone())),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!((v["key"].as_str(), v["value"].as_bool()), (Some("checkout.v2_b"), Some(true)));

    let resp = post("/ofrep/v1/evaluate/flags/half".into(), json!({"context": {}}), None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    server.stop().await;
}

#[tokio::test]
async fn bulk_evaluation_lists_every_flag_with_an_etag() {
    let server = TestServer::start().await;
    seed(&server).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let (s, h, v) = server
        .call(
            Method::POST,
            "/ofrep/v1/evaluate/flags",
            Some(&sdk),
            Some(json!({"context": {"targetingKey": "u1", "country": "fr"}})),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let flags = v["flags"].as_array().unwrap();
    let by_key = |k: &str| flags.iter().find(|f| f["key"] == k).cloned().unwrap_or_default();
    assert_eq!(by_key("new-checkout")["value"], true);
    assert_eq!(by_key("banner-copy")["value"], "BUY NOW");
    let etag = h["etag"].to_str().unwrap().to_owned();
    let (s, _, _) = server
        .call(
            Method::POST,
            "/ofrep/v1/evaluate/flags",
            Some(&sdk),
            Some(json!({"context": {"targetingKey": "u1"}})),
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    server.stop().await;
}
