//! A guarded service that is not Rust: `examples/node-service/` runs as a real `node` process
//! (OpenFeature's server SDK with its OFREP provider, OpenFeature's `SpanEventHook`, and the
//! OpenTelemetry SDK exporting protobuf traces to the server's OTLP receiver with an sdk token).
//! Traffic through it with a regression on the new variant is dialed down by the real guard
//! loop (on a manual clock) from OTLP data alone; a healthy rollout reaches 100%.
//!
//! The components come from the environment `.ci/run` sets: `DIMMER_NODE` (default `node` on the
//! `PATH`) and `DIMMER_NODE_SERVICE_MODULES` (default `examples/node-service/node_modules`, from
//! `npm ci --ignore-scripts` there). A missing one is a loud warning outside CI and a failure in
//! CI (`CI` set).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use dimmer_domain::ManualClock;
use dimmer_store::AuditFilter;
use futures::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

use crate::release::server;
use crate::support::{NodeComponents, NodeExample, TempDir, TestServer, node_components, workspace};

const FLAG: &str = "new-checkout";
const PATH: &str = "/api/v1/flags/new-checkout/environments/production";

/// `node` and this example's packages, or `None` (outside CI) when one is missing.
fn components() -> Option<NodeComponents> {
    node_components(&NodeExample {
        test: "the guarded Node service test",
        example: "node-service",
        modules_var: "DIMMER_NODE_SERVICE_MODULES",
        probe: "@openfeature/open-telemetry-hooks/package.json",
    })
}

/// The example service, running; killed when dropped.
struct Service {
    base: String,
    _child: tokio::process::Child,
    _dir: TempDir,
}

/// Starts `examples/node-service/server.mjs` against `server` on a free port; `failures` are the
/// shares of `on` and `off` requests it fails with 500.
async fn start_service(parts: &NodeComponents, server: &TestServer, token: &str, failures: (&str, &str)) -> Service {
    // The script as shipped, beside a link to the packages: Node resolves an ES module's imports
    // from the script's own folder, wherever `npm ci` put them.
    let dir = TempDir::new("node-service");
    let script = dir.0.join("server.mjs");
    std::fs::copy(workspace().join("examples/node-service/server.mjs"), &script).expect("copy the script");
    std::os::unix::fs::symlink(&parts.node_modules, dir.0.join("node_modules")).expect("link node_modules");
    let mut child = tokio::process::Command::new(&parts.node)
        .arg(&script)
        .env("DIMMER_URL", &server.base)
        .env("DIMMER_SDK_TOKEN", token)
        .env("PORT", "0")
        .env("CHECKOUT_ON_FAILURE_SHARE", failures.0)
        .env("CHECKOUT_OFF_FAILURE_SHARE", failures.1)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = lines.next_line().await.expect("read the service's output").expect("the service prints its port");
    let port = serde_json::from_str::<Value>(&first).expect("a JSON line")["listening"].as_u64().expect("a port");
    Service { base: format!("http://127.0.0.1:{port}"), _child: child, _dir: dir }
}

async fn create_flag(server: &TestServer) {
    let flag =
        json!({"key": FLAG, "owner": "team-pay", "environments": {"production": {"default": {"variant": "off"}}}});
    let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(flag)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

async fn start_plan(server: &TestServer, plan: Value) {
    let (s, v) = server.admin(Method::POST, &format!("{PATH}/plan"), Some(plan)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn plan(server: &TestServer) -> Value {
    let (s, v) = server.admin(Method::GET, &format!("{PATH}/plan"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn weight(server: &TestServer) -> Value {
    let (_, v) = server.admin(Method::GET, &format!("/api/v1/flags/{FLAG}"), None).await;
    v["environments"]["production"]["exposure"]["weight"].clone()
}

async fn view(server: &TestServer) -> Value {
    let path = format!("/api/v1/flags/{FLAG}/metrics?env=production&window=1h");
    let (s, v) = server.admin(Method::GET, &path, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// `(outcomes, errors)` of `name` in the metrics view: what the OTLP spans reported.
fn outcomes(view: &Value, name: &str) -> (u64, u64) {
    let v = view["variants"].as_array().and_then(|vs| vs.iter().find(|v| v["variant"] == name));
    let n = |f: &str| v.and_then(|v| v[f].as_u64()).unwrap_or(0);
    (n("errors") + n("successes"), n("errors"))
}

#[derive(Debug, Default, PartialEq)]
struct Tally {
    on: u64,
    on_errors: u64,
    off: u64,
    off_errors: u64,
}

/// `GET /checkout` for `users` distinct users, a few at a time; what the service answered.
async fn traffic(http: &reqwest::Client, service: &Service, users: std::ops::Range<u32>) -> Tally {
    let answers: Vec<(StatusCode, Value)> = futures::stream::iter(users)
        .map(|i| {
            let url = format!("{}/checkout?user=user-{i}", service.base);
            async move {
                let r = http.get(url).send().await.expect("the service answers");
                let status = r.status();
                (status, r.json::<Value>().await.expect("JSON"))
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut t = Tally::default();
    for (status, body) in answers {
        let failed = status == StatusCode::INTERNAL_SERVER_ERROR;
        assert!(failed || status == StatusCode::OK, "{status} {body}");
        match body["variant"].as_str() {
            Some("on") => (t.on, t.on_errors) = (t.on + 1, t.on_errors + u64::from(failed)),
            Some("off") => (t.off, t.off_errors) = (t.off + 1, t.off_errors + u64::from(failed)),
            other => panic!("unexpected variant {other:?}: {body}"),
        }
    }
    t
}

/// Polls the metrics API (a bounded number of times) until it holds every outcome of `sent`.
async fn until_outcomes(server: &TestServer, sent: &Tally) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        last = view(server).await;
        let got = Tally {
            on: outcomes(&last, "on").0,
            on_errors: outcomes(&last, "on").1,
            off: outcomes(&last, "off").0,
            off_errors: outcomes(&last, "off").1,
        };
        if got == *sent {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the OTLP outcomes never matched the traffic {sent:?}: {last}");
}

#[tokio::test]
async fn a_node_service_regression_is_dialed_down_from_its_opentelemetry_traces_alone() {
    let Some(parts) = components() else { return };
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let server = server(&clock, Vec::new()).await;
    create_flag(&server).await;
    let sdk = server.token("node-service", "sdk", Some("production")).await;
    let guards = json!([{"name": "errors", "metric": "error_rate", "compare": "relative", "max": 0.5,
        "min_sample": 100, "action": "dial_down"}]);
    start_plan(&server, json!({"stages": "25%,50%,100%", "dwell": "10m", "guards": guards})).await;
    assert_eq!(weight(&server).await, 25_000, "the first stage: 25% of 100,000");

    // One in ten `on` requests fails, one in fifty `off` requests. Nothing reaches Dimmer but the
    // OFREP evaluations and the service's spans.
    let service = start_service(&parts, &server, &sdk, ("0.1", "0.02")).await;
    let sent = traffic(&server.http, &service, 0..1_200).await;
    assert!(sent.on >= 100 && sent.off >= 600, "the 25% stage split the users: {sent:?}");
    assert_eq!((sent.on_errors, sent.off_errors), (sent.on / 10, sent.off / 50), "{sent:?}");
    let v = until_outcomes(&server, &sent).await;
    // Every span carried its evaluation: as many outcomes per variant as requests answered.
    assert_eq!(outcomes(&v, "on"), (sent.on, sent.on_errors), "{v}");

    // The guard's next pass (a moment later on the manual clock) sees the regression.
    clock.advance_ms(10_000);
    let mut dialed = false;
    for _ in 0..500 {
        if weight(&server).await == 0 {
            dialed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(dialed, "the guard never dialed the flag down: {}", view(&server).await);
    let p = plan(&server).await;
    assert_eq!(p["status"], "paused", "{p}");

    let audit = server
        .store
        .audit(&AuditFilter { flag: Some(FLAG.into()), limit: 50, ..AuditFilter::default() })
        .await
        .unwrap();
    let entry = audit.iter().find(|a| a.action == "guard.regression").expect("the guard's finding is audited");
    assert_eq!(entry.actor, "guard");
    assert!(entry.reason.as_deref().unwrap_or_default().contains("errors on on"), "{entry:?}");
    assert!(audit.iter().any(|a| a.action == "release.dial_down" && a.actor == "guard"), "{audit:?}");

    // Dialed down, every user is on `off` again, and the service answers 200.
    let after = traffic(&server.http, &service, 2_000..2_100).await;
    assert_eq!((after.on, after.off), (0, 100), "{after:?}");
    drop(service);
    server.stop().await;
}

#[tokio::test]
async fn a_healthy_node_service_rollout_reaches_100_percent_from_its_traces() {
    let Some(parts) = components() else { return };
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let server = server(&clock, Vec::new()).await;
    create_flag(&server).await;
    let sdk = server.token("node-service", "sdk", Some("production")).await;
    let guards = json!([{"name": "errors", "metric": "error_rate", "compare": "relative", "max": 0.5,
        "min_sample": 200, "action": "dial_down"}]);
    start_plan(&server, json!({"stages": "50%,100%", "dwell": "1m", "guards": guards})).await;
    // Past the dwell without data, the stage waits for the guard's sample.
    clock.advance_ms(120_000);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(plan(&server).await["stage"], 0, "no data yet: the stage waits past its dwell");

    // The same baseline on both variants: one request in fifty fails.
    let service = start_service(&parts, &server, &sdk, ("0.02", "0.02")).await;
    let sent = traffic(&server.http, &service, 0..800).await;
    assert!(sent.on >= 200 && sent.off >= 200, "the 50% stage split the users: {sent:?}");
    assert_eq!((sent.on_errors, sent.off_errors), (sent.on / 50, sent.off / 50), "{sent:?}");
    until_outcomes(&server, &sent).await;

    clock.advance_ms(10_000);
    let mut released = false;
    for _ in 0..500 {
        if plan(&server).await["status"] == "released" {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(released, "the rollout never reached 100%: {} {}", plan(&server).await, view(&server).await);
    // Released: every user gets the new checkout.
    let after = traffic(&server.http, &service, 2_000..2_100).await;
    assert_eq!((after.on, after.off), (100, 0), "{after:?}");
    drop(service);
    server.stop().await;
}
