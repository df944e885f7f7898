//! OFREP through an independent client (the `open-feature-ofrep` provider) and over raw HTTP for
//! what real providers are strict about: JSON on every answer, `key` and `errorCode` on
//! failures, a `value` on every 200, percent-encoded keys, ETag/304 on bulk (per configuration
//! and context); OFREP 0.3.0's change events over real SSE; `$random` supplied per request.

use open_feature::EvaluationContext;
use open_feature::EvaluationErrorCode;
use open_feature::provider::FeatureProvider;
use open_feature_ofrep::{OfrepOptions, OfrepProvider};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{SseClient, TempDir, TestServer};

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
async fn bulk_evaluation_lists_every_flag_with_an_etag_of_the_configuration_and_the_context() {
    let server = TestServer::start().await;
    seed(&server).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let bulk = |context: serde_json::Value, if_none_match: Option<String>| {
        let sdk = sdk.clone();
        let server = &server;
        async move {
            let headers: Vec<(&str, &str)> =
                if_none_match.as_deref().map(|e| vec![("if-none-match", e)]).unwrap_or_default();
            server
                .call(Method::POST, "/ofrep/v1/evaluate/flags", Some(&sdk), Some(json!({"context": context})), &headers)
                .await
        }
    };
    let fr = json!({"targetingKey": "u1", "country": "fr"});
    let (s, h, v) = bulk(fr.clone(), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let flags = v["flags"].as_array().unwrap();
    let by_key = |k: &str| flags.iter().find(|f| f["key"] == k).cloned().unwrap_or_default();
    assert_eq!(by_key("new-checkout")["value"], true);
    assert_eq!(by_key("banner-copy")["value"], "BUY NOW");
    let etag = h["etag"].to_str().unwrap().to_owned();

    // The same context, its keys in another order: still current.
    let (s, h, _) = bulk(json!({"country": "fr", "targetingKey": "u1"}), Some(etag.clone())).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert_eq!(h["etag"].to_str().unwrap(), etag);

    // The same targeting key in another country is another answer, never a 304.
    let (s, h, v) = bulk(json!({"targetingKey": "u1", "country": "de"}), Some(etag.clone())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_ne!(h["etag"].to_str().unwrap(), etag);
    let new_checkout = v["flags"].as_array().unwrap().iter().find(|f| f["key"] == "new-checkout").cloned().unwrap();
    assert_eq!(new_checkout["value"], false);

    // A change of configuration: the same context is evaluated again.
    let (s, _) = server
        .admin(
            Method::POST,
            "/api/v1/flags/new-checkout/environments/production/toggle",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, h, v) = bulk(fr, Some(etag.clone())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_ne!(h["etag"].to_str().unwrap(), etag);
    server.stop().await;
}

/// The `eventStreams` entry of a bulk answer, checked against OFREP 0.3.0's `eventStream`.
fn event_stream_of(bulk: &serde_json::Value) -> String {
    let streams = bulk["eventStreams"].as_array().expect("eventStreams");
    assert_eq!(streams.len(), 1, "{bulk}");
    let stream = &streams[0];
    assert_eq!(stream["type"], "sse");
    assert!(stream.get("url").is_none(), "exactly one of url and endpoint: {stream}");
    assert!(stream["endpoint"].get("origin").is_none(), "the base URL's origin is used: {stream}");
    assert_eq!(stream["inactivityDelaySec"], 120);
    let uri = stream["endpoint"]["requestUri"].as_str().expect("requestUri").to_owned();
    assert!(uri.starts_with('/'), "{uri}");
    uri
}

#[tokio::test]
async fn the_bulk_answer_advertises_an_event_stream_that_says_when_to_evaluate_again() {
    let server = TestServer::start().await;
    seed(&server).await;
    let client = server.token("web", "client", Some("production")).await;
    let context = json!({"context": {"targetingKey": "u1", "country": "fr"}});
    let (s, h, v) =
        server.call(Method::POST, "/ofrep/v1/evaluate/flags", Some(&client), Some(context.clone()), &[]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let held = h["etag"].to_str().unwrap().to_owned();
    let uri = event_stream_of(&v);
    assert!(!uri.contains(&client), "the token itself is never in the URL: {uri}");
    let revision = v["metadata"]["revision"].as_i64().unwrap();

    // As a browser's EventSource: no token, the advertised URL only.
    let mut events = SseClient::open(&server, &uri, &[]).await;
    // On connect: one event naming the current configuration, in OFREP's shape.
    let first = events.next(5).await.expect("an event on connect");
    assert_eq!(first.event, "message");
    assert_eq!(first.id.as_deref(), Some(revision.to_string().as_str()));
    let data: serde_json::Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(data, json!({"type": "refetchEvaluation", "etag": format!("\"production-{revision}\"")}));
    // Re-fetching as a provider does (the event's etag as flagConfigEtag): nothing changed.
    let path = format!("/ofrep/v1/evaluate/flags?flagConfigEtag={}", urlencode(data["etag"].as_str().unwrap()));
    let (s, _, _) =
        server.call(Method::POST, &path, Some(&client), Some(context.clone()), &[("if-none-match", &held)]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);

    // A kill: one event with the new revision; the re-fetch gets the new value.
    let (s, _) = server
        .admin(
            Method::POST,
            "/api/v1/flags/new-checkout/environments/production/kill",
            Some(json!({"reason": "errors"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let change = events.next(5).await.expect("an event after the kill");
    let data: serde_json::Value = serde_json::from_str(&change.data).unwrap();
    assert_eq!(data["type"], "refetchEvaluation");
    let new_revision: i64 = change.id.as_deref().unwrap().parse().unwrap();
    assert!(new_revision > revision);
    assert_eq!(data["etag"], format!("\"production-{new_revision}\""));
    let path = format!("/ofrep/v1/evaluate/flags?flagConfigEtag={}", urlencode(data["etag"].as_str().unwrap()));
    let (s, _, v) = server.call(Method::POST, &path, Some(&client), Some(context), &[("if-none-match", &held)]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let killed = v["flags"].as_array().unwrap().iter().find(|f| f["key"] == "new-checkout").cloned().unwrap();
    assert_eq!(killed["value"], false, "{killed}");
    assert_eq!(event_stream_of(&v), uri, "the same stream: a provider keeps its connection");

    // Resuming at the current revision sends nothing until the next change, which comes next.
    let mut resumed = SseClient::open(&server, &uri, &[("last-event-id", &new_revision.to_string())]).await;
    // Resuming from an older revision: the missed change is announced at once.
    let mut behind = SseClient::open(&server, &uri, &[("last-event-id", &revision.to_string())]).await;
    let missed = behind.next(5).await.expect("the missed change");
    assert_eq!(missed.id.as_deref(), Some(new_revision.to_string().as_str()));
    server
        .admin(
            Method::POST,
            "/api/v1/flags/banner-copy/environments/production/toggle",
            Some(json!({"enabled": false})),
        )
        .await;
    let next = resumed.next(5).await.expect("the next change");
    let next_revision: i64 = next.id.as_deref().unwrap().parse().unwrap();
    assert!(next_revision > new_revision, "{next:?}");
    assert_eq!(events.next(5).await.and_then(|e| e.id), Some(next_revision.to_string()));

    // Shutdown ends every stream cleanly.
    let stopping = tokio::spawn(server.stop());
    assert!(events.ends_within(10).await, "the stream ends at shutdown");
    assert!(resumed.ends_within(10).await, "the stream ends at shutdown");
    stopping.await.unwrap();
}

#[tokio::test]
async fn an_event_stream_needs_a_ticket_signed_by_a_live_token_for_its_environment() {
    let server = TestServer::start().await;
    seed(&server).await;
    let client = server.token("web", "client", Some("production")).await;
    let (_, _, v) = server
        .call(
            Method::POST,
            "/ofrep/v1/evaluate/flags",
            Some(&client),
            Some(json!({"context": {"targetingKey": "u"}})),
            &[],
        )
        .await;
    let uri = event_stream_of(&v);
    let get = |path: String| {
        let server = &server;
        async move {
            let resp = server.http.get(format!("{}{path}", server.base)).send().await.unwrap();
            let status = resp.status();
            // A stream that opened is endless: only refusals have a body to read.
            let body: serde_json::Value =
                if status.is_success() { serde_json::Value::Null } else { resp.json().await.unwrap_or_default() };
            (status, body)
        }
    };
    let ticket = uri.split("ticket=").nth(1).unwrap().to_owned();
    // Another environment, a forged signature, no ticket, the token itself: refused.
    for path in [
        format!("/api/v1/ofrep/events?env=staging&ticket={ticket}"),
        // A forged signature: the last hex digit changed (to 1 if it was 0 already).
        format!(
            "/api/v1/ofrep/events?env=production&ticket={}{}",
            &ticket[..ticket.len() - 1],
            if ticket.ends_with('0') { '1' } else { '0' }
        ),
        "/api/v1/ofrep/events?env=production".to_owned(),
        format!("/api/v1/ofrep/events?env=production&ticket={client}"),
    ] {
        let (status, body) = get(path.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    assert_eq!(get(uri.clone()).await.0, StatusCode::OK);
    // Revoking the token revokes its tickets.
    let (s, _) = server.admin(Method::DELETE, "/api/v1/tokens/web", None).await;
    assert!(s.is_success(), "{s}");
    assert_eq!(get(uri).await.0, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn rollouts_by_random_get_a_fresh_number_per_evaluation() {
    let server = TestServer::start().await;
    let flag = json!({"key": "coin", "environments": {"production": {"enabled": true, "default": {"rollout": {
        "bucket_by": ["$random"],
        "variants": [{"variant": "on", "weight": 50000}, {"variant": "off", "weight": 50000}]}}}}});
    let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(flag)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let mut seen = std::collections::BTreeSet::new();
    // Without a number the rollout could place nobody (TARGETING_KEY_MISSING); with one drawn per
    // request, the same context lands on both sides (all 64 alike: a chance of 2^-63).
    for _ in 0..64 {
        let (s, _, v) = server
            .call(Method::POST, "/ofrep/v1/evaluate/flags/coin", Some(&sdk), Some(json!({"context": {}})), &[])
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["reason"], "SPLIT", "{v}");
        seen.insert(v["variant"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["off", "on"]);
    server.stop().await;
}

#[tokio::test]
async fn a_refetch_prompted_by_another_replicas_event_catches_up_before_answering() {
    // Two servers on one SQLite file: replicas that never hear of each other's writes (SQLite's
    // change notifications stay in the process), as a load balancer may pair an event stream on
    // one replica with a re-fetch on another.
    let open = |path: std::path::PathBuf| async move {
        dimmer_store::open(None, &path, std::sync::Arc::new(dimmer_domain::SystemClock)).await.expect("open SQLite")
    };
    let dir = TempDir::new("replica-a");
    let path = dir.0.clone();
    let a = TestServer::start_with(open(path.clone()).await, dir).await;
    seed(&a).await;
    let b = TestServer::start_with(open(path).await, TempDir::new("replica-b")).await;
    let client = a.token("web", "client", Some("production")).await;
    async fn bulk(
        server: &TestServer,
        token: &str,
        path: String,
        etag: Option<String>,
    ) -> (StatusCode, reqwest::header::HeaderMap, serde_json::Value) {
        let headers: Vec<(&str, &str)> = etag.as_deref().map(|e| vec![("if-none-match", e)]).unwrap_or_default();
        let context = json!({"context": {"targetingKey": "u1", "country": "fr"}});
        server.call(Method::POST, &path, Some(token), Some(context), &headers).await
    }
    let (s, h, _) = bulk(&b, &client, "/ofrep/v1/evaluate/flags".into(), None).await;
    assert_eq!(s, StatusCode::OK);
    let held = h["etag"].to_str().unwrap().to_owned();

    let (s, _) = a
        .admin(Method::POST, "/api/v1/flags/new-checkout/environments/production/kill", Some(json!({"reason": "x"})))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, v) = bulk(&a, &client, "/ofrep/v1/evaluate/flags".into(), None).await;
    let event_etag = format!("\"production-{}\"", v["metadata"]["revision"]);
    // Replica B has not heard: asked plainly, it still says "unchanged".
    let (s, _, _) = bulk(&b, &client, "/ofrep/v1/evaluate/flags".into(), Some(held.clone())).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    // Asked with the event's etag, it catches up from the store first.
    let path = format!("/ofrep/v1/evaluate/flags?flagConfigEtag={}", urlencode(&event_etag));
    let (s, _, v) = bulk(&b, &client, path, Some(held)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let killed = v["flags"].as_array().unwrap().iter().find(|f| f["key"] == "new-checkout").cloned().unwrap();
    assert_eq!(killed["value"], false, "{killed}");
    // An etag from the future costs a read, not a reload, and changes nothing.
    let (s, _, _) = bulk(
        &b,
        &client,
        format!("/ofrep/v1/evaluate/flags?flagConfigEtag={}", urlencode("\"production-999999\"")),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    b.stop().await;
    a.stop().await;
}

/// Percent-encodes a query value.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
