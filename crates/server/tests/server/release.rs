//! Release plans and the dial-down path end to end: a real server with a manual clock (the
//! plan loop runs for real; only time is faked), real HTTP, real SSE, a real webhook receiver,
//! SQLite restarts and two PostgreSQL replicas.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dimmer_domain::ManualClock;
use dimmer_server::app::Options;
use dimmer_server::service::webhooks::Target;
use dimmer_store::{AuditFilter, Store};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{SseClient, TempDir, TestServer};
use dimmer_store::testing::PgSchema;

const MIN: i64 = 60_000;
const PATH: &str = "/api/v1/flags/checkout/environments/production";

fn options(clock: &Arc<ManualClock>, webhooks: Vec<Target>) -> Options {
    // The loop looks often, so that tests wait milliseconds for it; the dwell is what matters.
    Options { clock: clock.clone(), webhooks, plan_interval: Duration::from_millis(10), ..crate::support::options() }
}

pub(crate) async fn server(clock: &Arc<ManualClock>, webhooks: Vec<Target>) -> TestServer {
    let dir = TempDir::new("release");
    let store = dimmer_store::open(None, &dir.0, clock.clone()).await.expect("sqlite");
    TestServer::start_with_options(store, dir, options(clock, webhooks)).await
}

pub(crate) async fn create_flag(server: &TestServer) {
    let (s, v) = server
        .admin(
            Method::POST,
            "/api/v1/flags",
            Some(json!({"key": "checkout", "owner": "team-pay", "environments": {"production": {"default": {"variant": "off"}}}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

async fn post(server: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    server.admin(Method::POST, &format!("{PATH}{path}"), Some(body)).await
}

pub(crate) async fn plan(server: &TestServer) -> Value {
    let (s, v) = server.admin(Method::GET, &format!("{PATH}/plan"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// Waits (a few seconds at most) until the plan is at `stage` with `status`.
async fn until_stage(server: &TestServer, stage: u64, status: &str) -> Value {
    for _ in 0..500 {
        let p = plan(server).await;
        if p["stage"] == stage && p["status"] == status {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the plan never reached stage {stage} ({status}): {}", plan(server).await);
}

pub(crate) async fn production(server: &TestServer) -> Value {
    let (_, v) = server.admin(Method::GET, "/api/v1/flags/checkout", None).await;
    v["environments"]["production"].clone()
}

async fn actions(store: &Arc<dyn Store>) -> Vec<String> {
    let filter = AuditFilter { flag: Some("checkout".into()), ..AuditFilter::default() };
    let mut entries: Vec<String> = store.audit(&filter).await.unwrap().into_iter().map(|e| e.action).collect();
    entries.reverse();
    entries
}

#[tokio::test]
async fn a_plan_is_driven_through_every_stage_by_the_loop_on_a_fake_clock() {
    let clock = Arc::new(ManualClock::new(1_000 * MIN));
    let server = server(&clock, Vec::new()).await;
    create_flag(&server).await;
    let (s, v) =
        post(&server, "/plan", json!({"stages": "internal,1%,5%,25%,50%,100%", "dwell": "30m", "reason": "ship"}))
            .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["changed"].clone(), v["enabled"].clone(), v["exposure_percent"].clone()),
        (json!(true), json!(true), json!(0.0))
    );
    let env = production(&server).await;
    assert_eq!(env["default"], json!({"variant": "on"}), "the plan serves the change");
    assert_eq!(env["exposure"], json!({"weight": 0, "segments": ["internal"]}));

    // Nothing moves before the dwell has passed, however long the loop looks.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(plan(&server).await["stage"], 0);
    let expected = [1_000, 5_000, 25_000, 50_000];
    for (stage, weight) in (1..=4).zip(expected) {
        clock.advance_ms(30 * MIN);
        until_stage(&server, stage, "running").await;
        assert_eq!(production(&server).await["exposure"]["weight"], weight);
    }
    clock.advance_ms(30 * MIN);
    let done = until_stage(&server, 5, "released").await;
    assert_eq!(done["advances_after"], Value::Null);
    assert_eq!(production(&server).await.get("exposure"), None, "no ceiling once released");
    let advances = actions(&server.store).await.iter().filter(|a| *a == "plan.advance").count();
    assert_eq!(advances, 5, "each stage entered once");

    let text = server.http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("dimmer_flag_exposure_percent{flag=\"checkout\",environment=\"production\"} 100"), "{text}");
    assert!(text.contains("dimmer_release_events_total{action=\"plan.advance\"} 5"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn pause_resume_and_rollback_over_http() {
    let clock = Arc::new(ManualClock::new(0));
    let server = server(&clock, Vec::new()).await;
    create_flag(&server).await;
    // Neither a template nor stages: the default template for a release flag (`standard`).
    let (s, v) = post(&server, "/plan", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["plan"]["template"], "standard");
    let (s, v) = post(&server, "/plan", json!({})).await;
    assert_eq!((s, v["error"]["code"].clone()), (StatusCode::CONFLICT, json!("conflict")), "one plan at a time");

    assert_eq!(post(&server, "/plan/advance", json!({})).await.1["plan"]["stage"], 1);
    let (_, v) = post(&server, "/plan/pause", json!({"reason": "looking at graphs"})).await;
    assert_eq!(v["plan"]["status"], "paused");
    assert_eq!(post(&server, "/plan/pause", json!({})).await.1["changed"], false, "idempotent");
    clock.advance_ms(24 * 60 * MIN);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(plan(&server).await["stage"], 1, "a paused plan does not move");
    let (_, v) = post(&server, "/plan/resume", json!({})).await;
    assert_eq!(
        (v["plan"]["status"].clone(), v["plan"]["entered_at"].clone()),
        (json!("running"), json!(24 * 60 * MIN))
    );
    assert_eq!(post(&server, "/plan/resume", json!({})).await.0, StatusCode::CONFLICT);

    assert_eq!(post(&server, "/plan/advance", json!({})).await.1["exposure_percent"], 5.0);
    let (_, v) = post(&server, "/plan/rollback", json!({})).await;
    assert_eq!(
        (v["plan"]["stage"].clone(), v["plan"]["status"].clone(), v["exposure_percent"].clone()),
        (json!(1), json!("paused"), json!(1.0))
    );
    let (_, v) = post(&server, "/plan/rollback", json!({"to_zero": true})).await;
    assert_eq!((v["plan"]["status"].clone(), v["exposure_percent"].clone()), (json!("rolled-back"), json!(0.0)));
    assert_eq!(production(&server).await["exposure"], json!({"weight": 0}), "no one exposed, canaries included");
    assert_eq!(post(&server, "/plan/advance", json!({})).await.0, StatusCode::CONFLICT, "the plan is over");

    // Bad requests name the field and change nothing.
    let before = actions(&server.store).await.len();
    let (s, v) = post(&server, "/plan", json!({"stages": "5%,1%"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["message"], "stages[1]: 1% is lower than the stage before it; stages only widen exposure");
    let (s, v) = post(&server, "/plan", json!({"stages": "beta,5%"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("unknown segment \"beta\""), "{v}");
    let (s, _) = post(&server, "/plan", json!({"template": "nope"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(actions(&server.store).await.len(), before);
    let expected = [
        "flag.create",
        "plan.start",
        "plan.advance",
        "plan.pause",
        "plan.resume",
        "plan.advance",
        "plan.rollback",
        "plan.rollback_to_zero",
    ];
    assert_eq!(actions(&server.store).await, expected);
    server.stop().await;
}

/// A local HTTP listener that records what it is sent; it fails the first request to prove retries.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    use axum::routing::post;
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let failed_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let record = |name: &'static str| {
        let got = got.clone();
        let failed_once = failed_once.clone();
        post(move |axum::Json(body): axum::Json<Value>| async move {
            if name == "generic" && !failed_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            got.lock().unwrap().push((name.to_owned(), body));
            StatusCode::OK
        })
    };
    let app = axum::Router::new().route("/generic", record("generic")).route("/slack", record("slack"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, got)
}

async fn received(got: &Arc<Mutex<Vec<(String, Value)>>>, n: usize) -> Vec<(String, Value)> {
    for _ in 0..1000 {
        if got.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    got.lock().unwrap().clone()
}

#[tokio::test]
async fn kill_dial_down_and_restore_are_audited_pause_the_plan_stream_and_reach_webhooks() {
    let (hooks, got) = receiver().await;
    let targets = vec![
        Target::parse(&format!("{hooks}/generic")).unwrap(),
        Target::parse(&format!("slack={hooks}/slack")).unwrap(),
    ];
    let clock = Arc::new(ManualClock::new(0));
    let server = server(&clock, targets).await;
    create_flag(&server).await;
    post(&server, "/plan", json!({"stages": "10%,50%,100%"})).await;
    let sdk = server.token("sdk-prod", "sdk", Some("production")).await;
    let mut stream = SseClient::connect(&server, &sdk, None).await;
    assert_eq!(stream.next(5).await.unwrap().event, "snapshot");

    // Every fast-path operation needs a reason and refuses bad input without changing anything.
    let (s, v) = post(&server, "/kill", json!({})).await;
    assert_eq!(
        (s, v["error"]["message"].as_str().unwrap().starts_with("reason: required")),
        (StatusCode::UNPROCESSABLE_ENTITY, true)
    );
    let (s, v) = post(&server, "/dial-down", json!({"to": 120, "reason": "x"})).await;
    assert_eq!(
        (s, v["error"]["details"]["errors"][0]["path"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("to"))
    );
    let (s, _) = server
        .admin(Method::POST, "/api/v1/flags/checkout/environments/nowhere/kill", Some(json!({"reason": "x"})))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, v) = post(&server, "/dial-down", json!({"to": 1, "reason": "error rate up"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["exposure_percent"].clone(), v["plan"]["status"].clone()), (json!(1.0), json!("paused")));
    // The stream hears of it: the patch carries the new exposure.
    let patch = stream.next(5).await.unwrap();
    let data: Value = serde_json::from_str(&patch.data).unwrap();
    assert_eq!(data["flags"]["checkout"]["environments"]["production"]["exposure"]["weight"], 1_000, "{data}");

    let (_, v) = post(&server, "/kill", json!({"reason": "still bad"})).await;
    assert_eq!(
        (v["changed"].clone(), v["enabled"].clone(), v["exposure_percent"].clone()),
        (json!(true), json!(false), json!(0.0))
    );
    let patch: Value = serde_json::from_str(&stream.next(5).await.unwrap().data).unwrap();
    assert_eq!(patch["flags"]["checkout"]["environments"]["production"]["enabled"], false);
    assert_eq!(post(&server, "/kill", json!({"reason": "again"})).await.1["changed"], false, "idempotent");
    assert_eq!(
        post(&server, "/dial-down", json!({"to": 5, "reason": "wider?"})).await.1["changed"],
        false,
        "never widens"
    );

    // Restore goes back to before the first dial-down: on, at the plan's 10%, plan still paused.
    let (_, v) = post(&server, "/restore", json!({"reason": "fixed"})).await;
    assert_eq!(
        (v["enabled"].clone(), v["exposure_percent"].clone(), v["plan"]["status"].clone()),
        (json!(true), json!(10.0), json!("paused"))
    );
    assert_eq!(post(&server, "/restore", json!({})).await.1["changed"], false, "nothing left to restore");

    let filter = AuditFilter { flag: Some("checkout".into()), ..AuditFilter::default() };
    let entries = server.store.audit(&filter).await.unwrap();
    let fast: Vec<(&str, Option<&str>, &str)> = entries
        .iter()
        .filter(|e| e.action.starts_with("release."))
        .map(|e| (e.action.as_str(), e.reason.as_deref(), e.actor.as_str()))
        .collect();
    assert_eq!(
        fast,
        [
            ("release.restore", Some("fixed"), "admin"),
            ("release.kill", Some("still bad"), "admin"),
            ("release.dial_down", Some("error rate up"), "admin")
        ]
    );
    assert_eq!(entries[1].after.as_ref().unwrap()["enabled"], false);

    // Four events (plan.start, dial-down, kill, restore) reach both receivers; the generic one
    // refused its first delivery and got it on a retry.
    let got = received(&got, 8).await;
    let generic: Vec<&str> =
        got.iter().filter(|(n, _)| n == "generic").map(|(_, b)| b["event"].as_str().unwrap()).collect();
    let mut sorted = generic.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["plan.start", "release.dial_down", "release.kill", "release.restore"], "{got:?}");
    let kill = got.iter().find(|(n, b)| n == "generic" && b["event"] == "release.kill").unwrap();
    assert_eq!(
        (kill.1["reason"].clone(), kill.1["exposure_before"].clone(), kill.1["exposure_after"].clone()),
        (json!("still bad"), json!(1.0), json!(0.0))
    );
    let slack = got.iter().find(|(n, b)| n == "slack" && b["text"].as_str().unwrap().contains("killed")).unwrap();
    assert_eq!(
        slack.1["text"],
        "checkout in production killed by admin (exposure 1% → 0%); plan stage 1/3 (10%), paused: still bad"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_plan_resumes_without_skipping_or_repeating_a_stage() {
    let clock = Arc::new(ManualClock::new(0));
    let dir = TempDir::new("release-restart");
    let path = dir.0.clone();
    // The first server gets a throwaway directory to own: the database outlives it.
    let first = TestServer::start_with_options(
        dimmer_store::open(None, &path, clock.clone()).await.unwrap(),
        TempDir::new("unused"),
        options(&clock, vec![]),
    )
    .await;
    create_flag(&first).await;
    post(&first, "/plan", json!({"stages": "1%,5%,25%,100%", "dwell": "10m"})).await;
    clock.advance_ms(10 * MIN);
    until_stage(&first, 1, "running").await;
    // Stop between stages; time passes while the server is down.
    first.stop().await;
    clock.advance_ms(15 * MIN);

    let second = TestServer::start_with_options(
        dimmer_store::open(None, &path, clock.clone()).await.unwrap(),
        dir,
        options(&clock, vec![]),
    )
    .await;
    let resumed = until_stage(&second, 2, "running").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(plan(&second).await["stage"], 2, "one stage per dwell, not one per missed dwell");
    assert_eq!(resumed["entered_at"], 25 * MIN);
    let stages: Vec<i64> = second
        .store
        .audit(&AuditFilter { flag: Some("checkout".into()), ..AuditFilter::default() })
        .await
        .unwrap()
        .iter()
        .rev()
        .filter(|e| e.action == "plan.advance")
        .map(|e| e.after.as_ref().unwrap()["plan"]["stage"].as_i64().unwrap())
        .collect();
    assert_eq!(stages, [1, 2]);
    second.stop().await;
}

#[tokio::test]
async fn two_postgres_replicas_advance_a_plan_exactly_once() {
    let Some(pg) = PgSchema::new() else { return };
    let outcome = tokio::spawn({
        let (url, schema) = (pg.url.clone(), pg.schema.clone());
        async move {
            let clock = Arc::new(ManualClock::new(0));
            let connect = || async {
                let s = dimmer_store::SqlStore::connect_with_schema(&url, &schema, clock.clone()).await.unwrap();
                Arc::new(s) as Arc<dyn Store>
            };
            let fast = |clock: &Arc<ManualClock>| Options {
                plan_interval: Duration::from_millis(2),
                ..options(clock, vec![])
            };
            let a = TestServer::start_with_options(connect().await, TempDir::new("pg-a"), fast(&clock)).await;
            let b = TestServer::start_with_options(connect().await, TempDir::new("pg-b"), fast(&clock)).await;
            create_flag(&a).await;
            post(&a, "/plan", json!({"stages": "1%,5%,25%,100%", "dwell": "10m"})).await;
            for stage in 1..=3 {
                clock.advance_ms(10 * MIN);
                until_stage(
                    if stage % 2 == 0 { &a } else { &b },
                    stage,
                    if stage == 3 { "released" } else { "running" },
                )
                .await;
                // Both loops keep looking; give them every chance to advance twice.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let all = actions(&a.store).await;
            assert_eq!(all.iter().filter(|x| *x == "plan.advance").count(), 3, "{all:?}");
            let (_, flag) = a.admin(Method::GET, "/api/v1/flags/checkout", None).await;
            assert_eq!(flag["version"], 5, "created, started, and three advances: {flag}");
            a.stop().await;
            b.stop().await;
        }
    })
    .await;
    pg.drop_schema().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The exposed users of `checkout` among `users`, read from the SDK snapshot and evaluated by
/// the engine as an SDK would.
async fn exposed(server: &TestServer, sdk: &str, users: &[String]) -> Vec<bool> {
    let (s, _, snapshot) = server.call(Method::GET, "/api/v1/sdk/config", Some(sdk), None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let set: dimmer_engine::FlagSet = serde_json::from_value(snapshot["flags"].clone()).unwrap();
    let (flags, _) = dimmer_engine::compile(&set, "production");
    users
        .iter()
        .map(|u| {
            dimmer_engine::evaluate(&flags, "checkout", &dimmer_engine::Context::with_key(u.as_str())).variant
                == Some("on")
        })
        .collect()
}

#[tokio::test]
async fn the_ramp_property_holds_end_to_end() {
    let clock = Arc::new(ManualClock::new(0));
    let server = server(&clock, Vec::new()).await;
    create_flag(&server).await;
    let sdk = server.token("sdk", "sdk", Some("production")).await;
    let users: Vec<String> = (0..4_000).map(|i| format!("user-{i}")).collect();
    post(&server, "/plan", json!({"stages": "5%,25%,100%"})).await;
    let at5 = exposed(&server, &sdk, &users).await;
    post(&server, "/plan/advance", json!({})).await;
    let at25 = exposed(&server, &sdk, &users).await;
    post(&server, "/dial-down", json!({"to": 1, "reason": "regression"})).await;
    let at1 = exposed(&server, &sdk, &users).await;
    let count = |v: &[bool]| v.iter().filter(|x| **x).count();
    assert!((150..250).contains(&count(&at5)), "5% of 4000: {}", count(&at5));
    assert!((900..1100).contains(&count(&at25)), "25% of 4000: {}", count(&at25));
    assert!((20..70).contains(&count(&at1)), "1% of 4000: {}", count(&at1));
    for i in 0..users.len() {
        assert!(!at5[i] || at25[i], "{} was exposed at 5% but not at 25%", users[i]);
        assert!(!at1[i] || at25[i], "{} was exposed by the dial-down to 1% but not before", users[i]);
        assert!(!at1[i] || at5[i], "{} is exposed at 1% but was not at 5%", users[i]);
    }
    server.stop().await;
}

/// Outcome rows for `flags` flags, two batches each into a bucket closed long enough ago to be
/// merged by the next rollup.
async fn closed_bucket_rows(store: &dyn Store, flags: usize, bucket: i64) {
    use dimmer_domain::outcomes::{Aggregate, BUCKET_MS, MetricRow};
    for batch in 0..2 {
        let rows: Vec<MetricRow> = (0..flags)
            .map(|f| MetricRow {
                flag: format!("busy-{f}"),
                variant: "on".into(),
                bucket_ms: bucket,
                width_ms: BUCKET_MS,
                aggregate: Aggregate { evaluations: 10, successes: 9, errors: 1 + batch, ..Aggregate::default() },
            })
            .collect();
        store.record_metrics("production", &rows).await.expect("metrics");
    }
}

/// A kill issued while the metrics rollup runs (on the same store) is applied and audited, and
/// the rollup loses nothing.
async fn a_kill_during_a_rollup_is_applied_and_audited(server: TestServer, now: i64) {
    let (s, v) = server
        .admin(
            Method::POST,
            "/api/v1/flags",
            Some(json!({"key": "checkout", "environments": {"production": {"enabled": true}}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let flags = 300;
    let bucket = (now - 10 * MIN) / 10_000 * 10_000;
    closed_bucket_rows(server.store.as_ref(), flags, bucket).await;

    let store = server.store.clone();
    let rollup =
        tokio::spawn(async move { store.roll_up_metrics(now, &dimmer_domain::outcomes::Retention::default()).await });
    let (s, _, v) = server
        .call(
            Method::POST,
            &format!("{PATH}/kill"),
            Some(crate::support::ADMIN),
            None,
            &[("X-Dimmer-Reason", "incident 16")],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["changed"], true, "{v}");
    assert_eq!(v["enabled"], false, "{v}");
    let stats = rollup.await.expect("rollup task").expect("rollup");
    assert_eq!(stats.merged, 2 * flags as u64, "{stats:?}");
    assert_eq!(stats.written, flags as u64, "{stats:?}");

    let entries = server
        .store
        .audit(&AuditFilter { flag: Some("checkout".into()), limit: 10, ..AuditFilter::default() })
        .await
        .expect("audit");
    let kill = entries.iter().find(|e| e.action == "release.kill").expect("the kill is audited");
    assert_eq!(kill.reason.as_deref(), Some("incident 16"));
    assert_eq!(kill.environment.as_deref(), Some("production"));
    let (_, flag) = server.admin(Method::GET, "/api/v1/flags/checkout", None).await;
    assert_eq!(flag["environments"]["production"]["enabled"], false, "{flag}");
    let rows = server.store.metric_rows("production", "busy-7", 0, i64::MAX).await.expect("rows");
    assert_eq!(rows.len(), 1, "merged into one row");
    assert_eq!(rows[0].aggregate.errors, 3);
    server.stop().await;
}

#[tokio::test]
async fn a_kill_during_a_rollup_is_applied_and_audited_on_sqlite() {
    use dimmer_domain::Clock as _;
    let clock = Arc::new(ManualClock::new(1_000 * 24 * 60 * MIN));
    let now = clock.now_ms();
    a_kill_during_a_rollup_is_applied_and_audited(server(&clock, Vec::new()).await, now).await;
}

#[tokio::test]
async fn a_kill_during_a_rollup_is_applied_and_audited_on_postgres() {
    use dimmer_domain::Clock as _;
    let Some(pg) = PgSchema::new() else { return };
    let clock = Arc::new(ManualClock::new(1_000 * 24 * 60 * MIN));
    let now = clock.now_ms();
    let store = pg.store_with(clock.clone()).await.expect("postgres");
    let server = TestServer::start_with_options(store, TempDir::new("rollup-pg"), options(&clock, Vec::new())).await;
    a_kill_during_a_rollup_is_applied_and_audited(server, now).await;
    pg.drop_schema().await;
}
