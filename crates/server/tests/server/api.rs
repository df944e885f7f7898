//! The admin API over real HTTP: flags with optimistic concurrency, validation with field paths,
//! the error shape, token scopes and the audit log.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{ADMIN, TestServer};

#[tokio::test]
async fn a_new_flag_is_off_everywhere_and_turning_it_on_serves_on() {
    let server = TestServer::start().await;
    let (s, v) = server
        .admin(
            Method::POST,
            "/api/v1/flags",
            Some(json!({"key": "new-checkout", "owner": "team-pay", "description": "d"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["version"], 1);
    let sdk = server.token("web", "sdk", Some("production")).await;
    let eval = |ctx: serde_json::Value| {
        let server = &server;
        let sdk = sdk.clone();
        async move {
            server
                .call(
                    Method::POST,
                    "/ofrep/v1/evaluate/flags/new-checkout",
                    Some(&sdk),
                    Some(json!({"context": ctx})),
                    &[],
                )
                .await
        }
    };
    let (s, _, v) = eval(json!({"targetingKey": "u1"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["value"].clone(), v["reason"].clone()), (json!(false), json!("DISABLED")));

    let (s, v) = server
        .admin(
            Method::POST,
            "/api/v1/flags/new-checkout/environments/production/toggle",
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, _, v) = eval(json!({"targetingKey": "u1"})).await;
    assert_eq!(
        (v["value"].clone(), v["variant"].clone(), v["reason"].clone()),
        (json!(true), json!("on"), json!("STATIC"))
    );
    server.stop().await;
}

#[tokio::test]
async fn writes_need_the_current_version_and_stale_ones_get_412_with_it() {
    let server = TestServer::start().await;
    server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "f"}))).await;
    let body = json!({"description": "changed"});

    let (s, _, v) = server.call(Method::PUT, "/api/v1/flags/f", Some(ADMIN), Some(body.clone()), &[]).await;
    assert_eq!(s, StatusCode::PRECONDITION_REQUIRED, "{v}");
    assert_eq!(v["error"]["code"], "precondition_required");

    let (s, h, v) =
        server.call(Method::PUT, "/api/v1/flags/f", Some(ADMIN), Some(body.clone()), &[("if-match", "\"1\"")]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 2);
    assert_eq!(h["etag"], "\"2\"");

    // A second writer still holding version 1 loses, and learns the current version.
    let (s, h, v) = server
        .call(
            Method::PUT,
            "/api/v1/flags/f",
            Some(ADMIN),
            Some(json!({"description": "mine"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{v}");
    assert_eq!(v["error"]["code"], "version_mismatch");
    assert_eq!(v["error"]["details"]["current"], 2);
    assert_eq!(h["etag"], "\"2\"");
    let (_, v) = server.admin(Method::GET, "/api/v1/flags/f", None).await;
    assert_eq!(v["description"], "changed");
    server.stop().await;
}

#[tokio::test]
async fn invalid_flags_get_422_naming_every_field_and_change_nothing() {
    let server = TestServer::start().await;
    let bad = json!({"key": "checkout", "environments": {"production": {"enabled": true, "rules": [
        {"clauses": [{"attribute": "country", "op": "eq", "values": ["fr"]}], "serve": {"variant": "maybe"}}
    ]}, "nowhere": {}}});
    let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "validation_failed");
    let paths: Vec<&str> =
        v["error"]["details"]["errors"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"environments.production.rules[0].clauses[0].op"), "{paths:?}");
    assert!(paths.contains(&"environments.production.rules[0].serve.variant"), "{paths:?}");
    assert!(paths.contains(&"environments.nowhere"), "{paths:?}");
    let (s, _) = server.admin(Method::GET, "/api/v1/flags/checkout", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Malformed JSON gets the same error shape.
    let resp = server
        .http
        .post(format!("{}/api/v1/flags", server.base))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "malformed_request");
    let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "k", "kind": "nope"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("kind"), "{v}");
    server.stop().await;
}

#[tokio::test]
async fn tokens_are_scoped_and_an_sdk_token_never_reaches_admin_routes() {
    let server = TestServer::start().await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let reader = server.token("ro", "reader", None).await;
    let writer = server.token("dev", "writer", None).await;

    let (s, _, v) = server.call(Method::GET, "/api/v1/flags", Some(&sdk), None, &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "forbidden");
    let (s, _, _) = server.call(Method::GET, "/api/v1/flags", None, None, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = server.call(Method::GET, "/api/v1/flags", Some("dmr_not_a_token"), None, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = server.call(Method::GET, "/api/v1/flags", Some(&reader), None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = server.call(Method::POST, "/api/v1/flags", Some(&reader), Some(json!({"key": "x"})), &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = server.call(Method::POST, "/api/v1/flags", Some(&writer), Some(json!({"key": "x"})), &[]).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, _) = server
        .call(Method::POST, "/api/v1/tokens", Some(&writer), Some(json!({"name": "n", "scope": "admin"})), &[])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The sdk token reads its own environment only.
    let (s, _, _) = server.call(Method::GET, "/api/v1/sdk/config", Some(&sdk), None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = server.call(Method::GET, "/api/v1/sdk/config?env=staging", Some(&sdk), None, &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Revoked tokens stop working at once; tokens are never listed with their secret.
    let (s, _, _) = server.call(Method::DELETE, "/api/v1/tokens/ro", Some(ADMIN), None, &[]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = server.call(Method::GET, "/api/v1/flags", Some(&reader), None, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, v) = server.admin(Method::GET, "/api/v1/tokens", None).await;
    assert!(!v.to_string().contains(&sdk) && !v.to_string().contains("hash"), "{v}");
    server.stop().await;
}

#[tokio::test]
async fn every_change_is_audited_with_actor_reason_and_diff() {
    let server = TestServer::start().await;
    let writer = server.token("alice", "writer", None).await;
    server
        .call(Method::POST, "/api/v1/flags", Some(&writer), Some(json!({"key": "f", "reason": "launch prep"})), &[])
        .await;
    server
        .call(
            Method::POST,
            "/api/v1/flags/f/environments/staging/toggle",
            Some(&writer),
            Some(json!({"enabled": true})),
            &[("x-dimmer-reason", "QA sign-off")],
        )
        .await;
    let (s, v) = server.admin(Method::GET, "/api/v1/audit?flag=f", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{v}");
    assert_eq!(entries[0]["actor"], "alice");
    assert_eq!(entries[0]["reason"], "QA sign-off");
    assert_ne!(entries[0]["before"]["environments"]["staging"]["enabled"], true);
    assert_eq!(entries[0]["after"]["environments"]["staging"]["enabled"], true);
    assert_eq!(entries[1]["action"], "flag.create");
    assert_eq!(entries[1]["reason"], "launch prep");
    server.stop().await;
}

#[tokio::test]
async fn sdk_config_is_the_environment_snapshot_with_etag_and_304() {
    let server = TestServer::start().await;
    server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "f"}))).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let (s, h, v) = server.call(Method::GET, "/api/v1/sdk/config", Some(&sdk), None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["flags"]["flags"]["f"].is_object(), "{v}");
    let etag = h["etag"].to_str().unwrap().to_owned();
    let (s, _, _) = server.call(Method::GET, "/api/v1/sdk/config", Some(&sdk), None, &[("if-none-match", &etag)]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    server.admin(Method::POST, "/api/v1/flags/f/environments/production/toggle", Some(json!({"enabled": true}))).await;
    // The hub reloads on the store's notification; poll briefly for the new revision.
    let mut changed = false;
    for _ in 0..50 {
        let (s, _, _) =
            server.call(Method::GET, "/api/v1/sdk/config", Some(&sdk), None, &[("if-none-match", &etag)]).await;
        if s == StatusCode::OK {
            changed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(changed, "the snapshot never changed after a toggle");
    server.stop().await;
}

#[tokio::test]
async fn health_readiness_and_prometheus_metrics_answer_without_a_token() {
    let server = TestServer::start().await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    server.call(Method::GET, "/api/v1/sdk/config", Some(&sdk), None, &[]).await;
    let (s, _, v) = server.call(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, _, v) = server.call(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ready")));
    let text = server.http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    assert!(
        text.contains(r#"dimmer_http_requests_total{method="GET",route="/api/v1/sdk/config",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains("dimmer_http_request_duration_seconds_bucket{route=\"/api/v1/sdk/config\",le=\"+Inf\"} 1"));
    assert!(text.contains("dimmer_sse_connections 0"));
    assert!(text.contains("dimmer_environment_revision{environment=\"production\"}"));
    server.stop().await;
}

#[tokio::test]
async fn one_environments_targeting_is_replaced_with_if_match_and_oversized_bodies_get_413() {
    let server = TestServer::start().await;
    server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "f"}))).await;
    let config = json!({"enabled": true, "targets": {"on": ["vip"]}, "default": {"variant": "off"},
                        "reason": "beta for vip"});
    let (s, _, v) = server
        .call(
            Method::PUT,
            "/api/v1/flags/f/environments/staging",
            Some(ADMIN),
            Some(config.clone()),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["environments"]["staging"]["targets"]["on"], json!(["vip"]));
    assert!(v["environments"]["production"].is_null(), "other environments are untouched");
    let (s, _, v) = server
        .call(Method::PUT, "/api/v1/flags/f/environments/staging", Some(ADMIN), Some(config), &[("if-match", "\"1\"")])
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{v}");
    let (_, v) = server.admin(Method::GET, "/api/v1/audit?flag=f&env=staging", None).await;
    assert_eq!(v["entries"][0]["environment"], "staging");
    assert_eq!(v["entries"][0]["reason"], "beta for vip");

    let huge = json!({"key": "big", "description": "x".repeat(2 << 20)});
    let (s, _, v) = server.call(Method::POST, "/api/v1/flags", Some(ADMIN), Some(huge), &[]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large");
    server.stop().await;
}

#[tokio::test]
async fn keys_that_would_not_survive_a_url_or_a_terminal_are_refused_naming_the_key() {
    let server = TestServer::start().await;
    for key in ["a?b", "a#b", "a%2Fb", "..", "evil\u{202E}gnp", "zero\u{200B}width"] {
        let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": key}))).await;
        assert_eq!(s.as_u16(), 422, "flag {key:?}: {v}");
        assert_eq!(v["error"]["details"]["errors"][0]["path"], "key", "{v}");
        let (s, v) = server.admin(Method::POST, "/api/v1/segments", Some(json!({"key": key}))).await;
        assert_eq!(s.as_u16(), 422, "segment {key:?}: {v}");
    }
    let (s, v) = server.admin(Method::GET, "/api/v1/flags", None).await;
    assert_eq!(s.as_u16(), 200);
    assert_eq!(v["flags"].as_array().map(Vec::len), Some(0), "nothing was created: {v}");
    let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "checkout.v2_new-ui"}))).await;
    assert_eq!(s.as_u16(), 201, "{v}");
    server.stop().await;
}

/// Creates segment `key` with about `bytes` of included keys and edits it `edits` times.
async fn edit_segment(server: &TestServer, key: &str, bytes: usize, edits: usize) {
    let members = |round: usize| -> Vec<String> { (0..bytes / 16).map(|i| format!("u{round:03}-{i:09}")).collect() };
    let (s, v) =
        server.admin(Method::POST, "/api/v1/segments", Some(json!({"key": key, "included": members(0)}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    for round in 1..=edits {
        let (s, _, v) = server
            .call(
                Method::PUT,
                &format!("/api/v1/segments/{key}"),
                Some(ADMIN),
                Some(json!({"included": members(round)})),
                &[("if-match", &format!("\"{round}\""))],
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
}

#[tokio::test]
async fn the_audit_log_pages_by_size_summarises_large_bodies_and_serves_each_entry_whole() {
    use dimmer_server::api::{AUDIT_BODY_BYTES, AUDIT_PAGE_BYTES};
    let server = TestServer::start().await;
    // Bodies of 900 KB, summarised in lists; and of 12 KB, listed whole, that fill pages by size.
    edit_segment(&server, "big", 900_000, 12).await;
    edit_segment(&server, "mid", 12_000, 90).await;

    let mut seen = Vec::new();
    let mut cut_by_size = 0;
    let mut path = "/api/v1/audit?limit=1000".to_owned();
    loop {
        let resp = server.http.get(format!("{}{path}", server.base)).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let text = resp.text().await.unwrap();
        // A page ends with the entry that reaches the budget: at most one listed entry over it.
        let listed_entry_max = 2 * AUDIT_BODY_BYTES as usize + 4096;
        assert!(text.len() <= AUDIT_PAGE_BYTES as usize + listed_entry_max, "a page of {} bytes", text.len());
        let page: serde_json::Value = serde_json::from_str(&text).unwrap();
        let entries = page["entries"].as_array().unwrap();
        assert!(!entries.is_empty());
        for e in entries {
            seen.push(e["id"].as_i64().unwrap());
            if e["truncated"] == true {
                let bytes = e["after"]["bytes"].as_u64().unwrap();
                assert!(bytes > AUDIT_BODY_BYTES, "{e}");
                assert_eq!(e["after"]["truncated"], true);
                // The whole entry, on request.
                let href = e["href"].as_str().unwrap();
                let (s, whole) = server.admin(Method::GET, href, None).await;
                assert_eq!(s, StatusCode::OK);
                assert_eq!(whole["id"], e["id"]);
                assert_eq!(serde_json::to_string(&whole["after"]).unwrap().len() as u64, bytes);
                assert!(whole["after"]["included"].as_array().unwrap().len() > 50_000);
                assert!(whole.get("truncated").is_none() && whole.get("href").is_none());
            } else {
                assert!(e.get("href").is_none());
                assert!(e["after"].is_null() || e["after"].get("truncated").is_none(), "{e}");
            }
        }
        match page["next"].as_i64() {
            Some(next) => {
                assert_eq!(next, *seen.last().unwrap());
                cut_by_size += usize::from(entries.len() < 1000);
                path = format!("/api/v1/audit?limit=1000&before={next}");
            }
            None => break,
        }
    }
    assert!(cut_by_size >= 2, "the 12 KB edits fill more than two pages of 1 MiB");
    // Every entry is reachable, once, in order.
    let all: Vec<i64> = server
        .store
        .audit(&dimmer_store::AuditFilter { limit: 1000, ..Default::default() })
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(seen, all);
    assert!(seen.len() > 100);

    // A count limit still cuts the page, with a cursor; an unknown entry is a 404 in the error shape.
    let (_, v) = server.admin(Method::GET, "/api/v1/audit?limit=2", None).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    assert_eq!(v["next"], v["entries"][1]["id"]);
    let (s, v) = server.admin(Method::GET, "/api/v1/audit/999999", None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let (s, _, _) = server.call(Method::GET, &format!("/api/v1/audit/{}", all[0]), Some(&sdk), None, &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    server.stop().await;
}
