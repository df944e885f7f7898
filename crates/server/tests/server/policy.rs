//! The flag policy end to end: writes that break it are refused with 422 naming each rule and
//! change nothing; the plan-required rule; `GET /api/v1/policy`; lifecycle from facts, with a
//! manual clock standing in for the weeks a flag lives.

use std::sync::Arc;

use dimmer_domain::ManualClock;
use dimmer_server::app::Options;
use dimmer_server::service::policy::ServerPolicy;
use dimmer_store::Store;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN, TempDir, TestServer};

const DAY: i64 = 86_400_000;

const STRICT: &str = r#"
naming:
  pattern: "[a-z][a-z0-9]*(-[a-z0-9]+)*"
required: [owner, description]
release_plans:
  - environments: [production]
    above_percent: 5
kinds:
  release: {template: quick}
"#;

/// Where the tests' manual clock starts: any fixed time will do, since the store stamps rows with
/// the same clock as the lifecycle reads (2027-01-15).
const T0: i64 = 1_800_000_000_000;

async fn server(policy: Option<&str>, clock: Arc<ManualClock>) -> TestServer {
    let dir = TempDir::new("policy");
    let store = dimmer_store::open(None, &dir.0, clock.clone()).await.expect("sqlite");
    server_on(store, dir, policy, clock).await
}

async fn server_on(store: Arc<dyn Store>, dir: TempDir, policy: Option<&str>, clock: Arc<ManualClock>) -> TestServer {
    let policy = match policy {
        Some(text) => ServerPolicy {
            policy: Arc::new(dimmer_server::service::policy::parse(text).expect("test policy")),
            source: Some("dimmer-policy.yaml".into()),
        },
        None => ServerPolicy::default(),
    };
    TestServer::start_with_options(store, dir, Options { policy, clock, ..crate::support::options() }).await
}

fn rules(body: &Value) -> Vec<String> {
    body["error"]["details"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["rule"].as_str().map(str::to_owned))
        .collect()
}

async fn put_env(server: &TestServer, key: &str, env: &str, config: Value) -> (StatusCode, Value) {
    let (s, f) = server.admin(Method::GET, &format!("/api/v1/flags/{key}"), None).await;
    assert_eq!(s, StatusCode::OK, "{f}");
    let version = f["version"].to_string();
    let (s, _, v) = server
        .call(
            Method::PUT,
            &format!("/api/v1/flags/{key}/environments/{env}"),
            Some(ADMIN),
            Some(config),
            &[("if-match", version.as_str())],
        )
        .await;
    (s, v)
}

#[tokio::test]
async fn a_badly_named_flag_without_owner_is_refused_with_422_naming_each_rule_and_nothing_is_created() {
    let server = server(Some(STRICT), Arc::new(ManualClock::new(T0))).await;
    let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "New_Checkout"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "validation_failed");
    assert_eq!(rules(&v), ["key_pattern", "owner_required", "description_required"]);
    let errors = &v["error"]["details"]["errors"];
    assert_eq!(errors[0]["path"], "key");
    assert_eq!(errors[1]["path"], "owner");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("[key_pattern]") && message.contains("[owner_required]"), "{message}");
    let (s, _) = server.admin(Method::GET, "/api/v1/flags/New_Checkout", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Policy and engine problems come back together.
    let bad = json!({"key": "bad_too", "environments": {"production": {"default": {"variant": "nope"}}}});
    let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let paths: Vec<&str> =
        v["error"]["details"]["errors"].as_array().unwrap().iter().filter_map(|e| e["path"].as_str()).collect();
    assert!(paths.contains(&"key") && paths.iter().any(|p| p.starts_with("environments.production")), "{paths:?}");
}

#[tokio::test]
async fn an_update_that_drops_the_owner_is_refused_and_the_flag_keeps_its_version() {
    let server = server(Some(STRICT), Arc::new(ManualClock::new(T0))).await;
    let good = json!({"key": "new-checkout", "owner": "team-pay", "description": "One-page checkout"});
    let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(good)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _, v) = server
        .call(
            Method::PUT,
            "/api/v1/flags/new-checkout",
            Some(ADMIN),
            Some(json!({"description": "One-page checkout"})),
            &[("if-match", "1")],
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(rules(&v), ["owner_required"]);
    let (_, f) = server.admin(Method::GET, "/api/v1/flags/new-checkout", None).await;
    assert_eq!((f["version"].as_i64(), f["owner"].as_str()), (Some(1), Some("team-pay")));
}

#[tokio::test]
async fn raising_production_exposure_past_the_threshold_needs_a_running_guarded_plan_and_switching_off_never_does() {
    let server = server(Some(STRICT), Arc::new(ManualClock::new(T0))).await;
    let flag = json!({"key": "search-v2", "owner": "team-search", "description": "New ranking"});
    assert_eq!(server.admin(Method::POST, "/api/v1/flags", Some(flag)).await.0, StatusCode::CREATED);

    // On for everyone in production at once: refused, whichever way it is asked.
    let toggle = "/api/v1/flags/search-v2/environments/production/toggle";
    let (s, v) = server.admin(Method::POST, toggle, Some(json!({"enabled": true}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(rules(&v), ["plan_required_above"]);
    assert_eq!(v["error"]["details"]["errors"][0]["path"], "environments.production");
    let (s, v) = put_env(&server, "search-v2", "production", json!({"enabled": true})).await;
    assert_eq!((s, rules(&v)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["plan_required_above".to_owned()]));

    // Up to the threshold by hand is fine; so is anything in an environment the rule does not list.
    let (s, v) =
        put_env(&server, "search-v2", "production", json!({"enabled": true, "exposure": {"weight": 5000}})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let staging = "/api/v1/flags/search-v2/environments/staging/toggle";
    assert_eq!(server.admin(Method::POST, staging, Some(json!({"enabled": true}))).await.0, StatusCode::OK);

    // A plan going past the threshold must carry guards; with a guarded running plan the same
    // change goes through, and the policy's template for the kind is used.
    let plan = "/api/v1/flags/search-v2/environments/production/plan";
    let (s, v) = server.admin(Method::POST, plan, Some(json!({}))).await;
    assert_eq!((s, rules(&v)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["plan_required_above".to_owned()]));
    assert_eq!(v["error"]["details"]["errors"][0]["path"], "guards");
    let guards = json!([{"name": "errors", "metric": "error_rate", "compare": "relative", "max": 0.25}]);
    let (s, p) = server.admin(Method::POST, plan, Some(json!({"guards": guards}))).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["plan"]["template"], "quick", "{p}");
    let (s, v) =
        put_env(&server, "search-v2", "production", json!({"enabled": true, "exposure": {"weight": 50000}})).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Switching off and dialling down are never refused.
    let off = "/api/v1/flags/search-v2/environments/production/toggle";
    assert_eq!(server.admin(Method::POST, off, Some(json!({"enabled": false}))).await.0, StatusCode::OK);
}

#[tokio::test]
async fn get_policy_shows_the_effective_policy_to_any_token_and_the_default_when_none_is_given() {
    let strict = server(Some(STRICT), Arc::new(ManualClock::new(T0))).await;
    let sdk = strict.token("sdk-prod", "sdk", Some("production")).await;
    let (s, _, v) = strict.call(Method::GET, "/api/v1/policy", Some(&sdk), None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["default"], false);
    assert_eq!(v["policy"]["required"], json!(["owner", "description"]));
    assert_eq!(v["policy"]["release_plans"][0]["above_percent"], 5.0);
    assert_eq!(v["policy"]["kinds"]["release"], json!({"lifetime_days": 40, "template": "quick"}));
    let (s, _, _) = strict.call(Method::GET, "/api/v1/policy", None, None, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let default = server(None, Arc::new(ManualClock::new(T0))).await;
    let (s, v) = default.admin(Method::GET, "/api/v1/policy", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["default"], true);
    assert_eq!(v["policy"]["required"], json!([]));
    assert_eq!(v["policy"]["kinds"]["operational"]["lifetime_days"], 7);
    assert_eq!(v["policy"]["kinds"]["kill-switch"]["lifetime_days"], "permanent");
    // The default policy refuses nothing that was accepted before.
    let (s, v) = default.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "Legacy_Flag"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

async fn lifecycle(server: &TestServer, query: &str) -> Vec<(String, String, Vec<String>)> {
    let (s, v) = server.admin(Method::GET, &format!("/api/v1/lifecycle{query}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let reasons = f["reasons"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap().to_owned());
            (f["key"].as_str().unwrap().to_owned(), f["state"].as_str().unwrap().to_owned(), reasons.collect())
        })
        .collect()
}

fn entry(key: &str, state: &str, reasons: &[&str]) -> (String, String, Vec<String>) {
    (key.to_owned(), state.to_owned(), reasons.iter().map(|r| (*r).to_owned()).collect())
}

#[tokio::test]
async fn lifecycle_follows_exposure_and_age_and_names_why_a_flag_is_stale_on_sqlite() {
    let clock = Arc::new(ManualClock::new(T0));
    lifecycle_scenario(server(None, clock.clone()).await, &clock).await;
}

#[tokio::test]
async fn lifecycle_follows_exposure_and_age_and_names_why_a_flag_is_stale_on_postgres() {
    let Some(pg) = dimmer_store::testing::PgSchema::new() else { return };
    let clock = Arc::new(ManualClock::new(T0));
    let server = server_on(
        pg.store_with(clock.clone()).await.expect("postgres store"),
        TempDir::new("policy-pg"),
        None,
        clock.clone(),
    )
    .await;
    lifecycle_scenario(server, &clock).await;
    pg.drop_schema().await;
}

async fn lifecycle_scenario(server: TestServer, clock: &ManualClock) {
    for (key, kind, env) in [
        ("fresh", "release", json!({})),
        ("ramping", "release", json!({"staging": {"enabled": true, "exposure": {"weight": 10000}}})),
        ("done", "release", json!({"staging": {"enabled": true}, "production": {"enabled": true}})),
        ("panic-button", "kill-switch", json!({"production": {"enabled": true}})),
        ("gone", "release", json!({})),
    ] {
        let body = json!({"key": key, "kind": kind, "environments": env});
        assert_eq!(server.admin(Method::POST, "/api/v1/flags", Some(body)).await.0, StatusCode::CREATED);
    }
    let archive = server.admin(Method::POST, "/api/v1/flags/gone/archive", None).await;
    assert_eq!(archive.0, StatusCode::OK);
    // A flag rolled back after exposure is not new again.
    let (s, v) = put_env(&server, "fresh", "staging", json!({"enabled": true})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = put_env(&server, "fresh", "staging", json!({"enabled": false})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let never = json!({"key": "never-on", "kind": "operational"});
    assert_eq!(server.admin(Method::POST, "/api/v1/flags", Some(never)).await.0, StatusCode::CREATED);
    // Released by a plan: exposure set by release operations, recorded as summaries in the audit log.
    let planned = json!({"key": "planned", "environments": {"staging": {}}});
    assert_eq!(server.admin(Method::POST, "/api/v1/flags", Some(planned)).await.0, StatusCode::CREATED);
    let plan = "/api/v1/flags/planned/environments/staging/plan";
    let (s, v) = server.admin(Method::POST, plan, Some(json!({"stages": "100%"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let mut today = lifecycle(&server, "").await;
    today.sort();
    assert_eq!(
        today,
        [
            entry("done", "released", &[]),
            entry("fresh", "rolling-out", &[]),
            entry("gone", "archived", &[]),
            entry("never-on", "new", &[]),
            entry("panic-button", "released", &[]),
            entry("planned", "released", &[]),
            entry("ramping", "rolling-out", &[]),
        ]
    );
    // In one environment only: `done` is judged by staging alone; `panic-button` is off there.
    let staging = lifecycle(&server, "?env=staging").await;
    assert!(staging.contains(&entry("panic-button", "new", &[])), "{staging:?}");

    // Eight days on: the operational flag is past its week.
    clock.advance_ms(8 * DAY);
    assert_eq!(lifecycle(&server, "?state=stale").await, [entry("never-on", "stale", &["past_lifetime"])]);

    // Fifteen days: released and untouched for more than 14 days.
    clock.advance_ms(7 * DAY);
    let stale = lifecycle(&server, "?state=stale").await;
    assert!(stale.contains(&entry("done", "stale", &["released_untouched"])), "{stale:?}");
    assert!(stale.contains(&entry("planned", "stale", &["released_untouched"])), "{stale:?}");

    // Forty-one days: every release flag is past its lifetime; the kill switch is permanent.
    clock.advance_ms(26 * DAY);
    let mut later = lifecycle(&server, "").await;
    later.sort();
    assert_eq!(
        later,
        [
            entry("done", "stale", &["past_lifetime", "released_untouched"]),
            entry("fresh", "stale", &["past_lifetime"]),
            entry("gone", "archived", &[]),
            entry("never-on", "stale", &["past_lifetime"]),
            entry("panic-button", "released", &[]),
            entry("planned", "stale", &["past_lifetime", "released_untouched"]),
            entry("ramping", "stale", &["past_lifetime"]),
        ]
    );

    let (s, v) = server.admin(Method::GET, "/api/v1/lifecycle?state=old", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = server.admin(Method::GET, "/api/v1/lifecycle?env=nowhere", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    server.stop().await;
}
