//! Outcome metrics and guards end to end: metric batches over real HTTP with an sdk token, the
//! per-variant view and Prometheus series, a guarded plan dialed down by the real loop (on a
//! manual clock) with the alert received by a local HTTP listener, standing guards, and the
//! Alertmanager receiver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dimmer_domain::ManualClock;
use dimmer_protocol::LatencySketch;
use dimmer_server::service::webhooks::Target;
use dimmer_store::AuditFilter;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::release::{create_flag, plan, production, server};
use crate::support::TestServer;

const PATH: &str = "/api/v1/flags/checkout/environments/production";

/// One SDK flush: `(variant, evaluations, errors, latency values)` per entry.
fn batch(entries: &[(&str, u64, u64, &[f64])]) -> Value {
    json!({
        "sdk": "test/1",
        "metrics": entries.iter().map(|(variant, n, errors, latency)| json!({
            "flag": "checkout", "variant": variant, "evaluations": n, "errors": errors, "successes": n - errors,
            "latency": LatencySketch::of(latency.iter().copied()),
        })).collect::<Vec<_>>(),
    })
}

async fn send(server: &TestServer, token: &str, body: Value) -> (StatusCode, Value) {
    let (s, _, v) = server.call(Method::POST, "/api/v1/sdk/metrics", Some(token), Some(body), &[]).await;
    (s, v)
}

async fn view(server: &TestServer) -> Value {
    let (s, v) = server.admin(Method::GET, "/api/v1/flags/checkout/metrics?env=production&window=1h", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn variant<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["variants"].as_array().unwrap().iter().find(|v| v["variant"] == name).unwrap_or(&Value::Null)
}

#[tokio::test]
async fn batches_are_stored_whole_or_refused_whole_and_show_in_the_view_and_prometheus() {
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let server = server(&clock, Vec::new()).await;
    create_flag(&server).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;

    let (s, v) = send(&server, &sdk, batch(&[("on", 100, 3, &[10.0, 20.0, 30.0]), ("off", 900, 9, &[12.0])])).await;
    assert_eq!((s, v), (StatusCode::ACCEPTED, json!({"accepted": 2, "ignored": 0})));
    // The same variant twice in one batch is added up; a flag the environment lacks is ignored.
    let mut b = batch(&[("on", 10, 1, &[]), ("on", 10, 0, &[])]);
    b["metrics"].as_array_mut().unwrap().push(json!({"flag": "no-such-flag", "variant": "x", "evaluations": 5}));
    let (s, v) = send(&server, &sdk, b).await;
    assert_eq!((s, v), (StatusCode::ACCEPTED, json!({"accepted": 2, "ignored": 1})));

    // Refused whole, naming the field: a bad sketch in the second entry stores nothing.
    let mut bad = batch(&[("on", 1000, 1000, &[])]);
    bad["metrics"]
        .as_array_mut()
        .unwrap()
        .push(json!({"flag": "checkout", "variant": "off", "latency": {"bins": [[5, 1], [4, 1]], "sum": 1.0}}));
    let (s, v) = send(&server, &sdk, bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["details"]["path"], "metrics[1].latency");
    let (s, v) =
        send(&server, &sdk, json!({"metrics": [{"flag": "checkout", "variant": "on", "evaluations": -1}]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("metrics[0].evaluations"), "{v}");
    // An sdk token reports for its own environment only; a reader token not at all.
    let (s, _, _) =
        server.call(Method::POST, "/api/v1/sdk/metrics?env=staging", Some(&sdk), Some(batch(&[])), &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let reader = server.token("dash", "reader", None).await;
    let (s, _, _) =
        server.call(Method::POST, "/api/v1/sdk/metrics?env=production", Some(&reader), Some(batch(&[])), &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let v = view(&server).await;
    let on = variant(&v, "on");
    assert_eq!((on["evaluations"].clone(), on["errors"].clone()), (json!(120), json!(4)), "{v}");
    assert_eq!(on["latency_ms"]["count"], 3);
    let p50 = on["latency_ms"]["p50"].as_f64().unwrap();
    assert!((p50 - 20.0).abs() <= 0.2, "p50 {p50}");
    assert_eq!(variant(&v, "off")["error_rate"], json!(0.01));
    assert_eq!(v["control"], "off");
    assert!(!v["series"].as_array().unwrap().is_empty());

    let text = server.http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    let labels = "flag=\"checkout\",variant=\"on\",environment=\"production\"";
    assert!(text.contains(&format!("dimmer_flag_evaluations_total{{{labels}}} 120")), "{text}");
    assert!(text.contains(&format!("dimmer_flag_outcomes_total{{{labels},outcome=\"error\"}} 4")), "{text}");
    assert!(text.contains(&format!("dimmer_flag_outcome_duration_seconds_count{{{labels}}} 3")), "{text}");
    assert!(text.contains("dimmer_sdk_metric_batches_total{outcome=\"rejected\"} 2"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn a_flood_of_made_up_names_stays_within_the_documented_bounds_and_real_series_stay() {
    use dimmer_server::service::metrics::{LINES_PER_OUTCOME_SERIES, MAX_EVENT_NAMES_PER_FLAG};
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let server = server(&clock, Vec::new()).await;
    create_flag(&server).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let real = |evaluations: u64| {
        json!({"metrics": [
            {"flag": "checkout", "variant": "on", "evaluations": evaluations, "events": {"purchase": {"count": 2}}},
            {"flag": "checkout", "variant": "off", "evaluations": evaluations},
        ]})
    };
    assert_eq!(send(&server, &sdk, real(10)).await.0, StatusCode::ACCEPTED);

    // 150,000 made-up variants of the real flag, and made-up flags: ignored, nothing kept.
    for b in 0..150 {
        let entries: Vec<Value> = (0..1000)
            .map(|i| {
                let flag = if i % 2 == 0 { "checkout".to_owned() } else { format!("junk-flag-{b}-{i}") };
                json!({"flag": flag, "variant": format!("junk-{b}-{i}"), "evaluations": 1})
            })
            .collect();
        let (s, v) = send(&server, &sdk, json!({"metrics": entries})).await;
        assert_eq!((s, v), (StatusCode::ACCEPTED, json!({"accepted": 0, "ignored": 1000})));
    }
    // 150,000 made-up event names on a real variant: accepted, but only the flag's allowance of
    // names becomes series, and a stored row keeps as many names as one batch entry may carry.
    for b in 0..5 {
        let entries: Vec<Value> = (0..1000)
            .map(|i| {
                let events: serde_json::Map<String, Value> =
                    (0..30).map(|e| (format!("e{}", (b * 1000 + i) * 30 + e), json!({"count": 1}))).collect();
                json!({"flag": "checkout", "variant": "on", "evaluations": 1, "events": events})
            })
            .collect();
        let (s, v) = send(&server, &sdk, json!({"metrics": entries})).await;
        assert_eq!((s, v), (StatusCode::ACCEPTED, json!({"accepted": 1000, "ignored": 0})));
    }
    assert_eq!(send(&server, &sdk, real(5)).await.0, StatusCode::ACCEPTED);

    let text = server.http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    let lines = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    // The real flag's two series, nothing else, and they kept counting through the flood.
    assert_eq!(lines("dimmer_flag_evaluations_total{"), 2, "{text}");
    let on = "flag=\"checkout\",variant=\"on\",environment=\"production\"";
    assert!(text.contains(&format!("dimmer_flag_evaluations_total{{{on}}} 5015")), "{text}");
    assert!(text.contains(&format!("dimmer_flag_events_total{{{on},event=\"purchase\"}} 4")), "{text}");
    assert!(lines("dimmer_flag_events_total{") <= MAX_EVENT_NAMES_PER_FLAG);
    assert!(!text.contains("junk"));
    let outcome_lines = lines("dimmer_flag_evaluations_total{")
        + lines("dimmer_flag_outcomes_total{")
        + lines("dimmer_flag_outcome_duration_seconds");
    assert_eq!(outcome_lines, 2 * LINES_PER_OUTCOME_SERIES);
    // Every line is within the documented 1 KiB, so the whole scrape stays small (it was 31 MB).
    assert!(text.lines().all(|l| l.len() <= 1024));
    assert!(text.len() < 64 * 1024, "{} bytes", text.len());

    // The store keeps at most one batch entry's worth of event names per row, the real one among
    // them, and the view lists no more.
    let rows = server.store.metric_rows("production", "checkout", 0, i64::MAX).await.unwrap();
    assert!(rows.iter().all(|r| r.aggregate.events.len() <= dimmer_protocol::MAX_EVENTS_PER_ENTRY));
    let v = view(&server).await;
    let events = variant(&v, "on")["events"].as_object().unwrap().clone();
    assert!(events.len() <= dimmer_protocol::MAX_EVENTS_PER_ENTRY);
    assert_eq!(events["purchase"]["count"], 4);
    server.stop().await;
}

/// A local HTTP listener that records the webhooks it is sent.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, got)
}

async fn until<F: Fn() -> bool>(what: &str, check: F) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn a_regression_at_five_percent_is_dialed_down_by_the_guard_with_an_alert_and_an_audit_entry() {
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let (hook, got) = receiver().await;
    let server = server(&clock, vec![Target::parse(&hook).unwrap()]).await;
    create_flag(&server).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let guards = json!([{"name": "errors", "metric": "error_rate", "compare": "relative", "max": 0.5,
        "min_sample": 500, "action": "dial_down"}]);
    let (s, v) = server
        .admin(
            Method::POST,
            &format!("{PATH}/plan"),
            Some(json!({"stages": "5%,50%,100%", "dwell": "10m", "guards": guards})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(production(&server).await["exposure"]["weight"], 5_000);

    // Before any data the guard waits: the dwell passes but the stage does not advance.
    clock.advance_ms(10_000);
    let (_, v) = server.admin(Method::GET, "/api/v1/flags/checkout/metrics?env=production", None).await;
    assert_eq!(v["guards"]["plan"]["assessment"]["verdict"]["verdict"], "waiting", "{v}");

    // Traffic: control at 1% errors, treatment at 4%; ten-second flushes as an SDK would.
    let mut dialed = false;
    for _ in 0..30 {
        clock.advance_ms(10_000);
        let (s, _) = send(&server, &sdk, batch(&[("on", 500, 20, &[]), ("off", 9_500, 95, &[])])).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        tokio::time::sleep(Duration::from_millis(30)).await;
        if production(&server).await["exposure"]["weight"] == 0 {
            dialed = true;
            break;
        }
    }
    assert!(dialed, "the guard never dialed the flag down: {}", view(&server).await);
    let p = plan(&server).await;
    assert_eq!(p["status"], "paused", "{p}");

    until("the guard's webhook", || got.lock().unwrap().iter().any(|e| e["event"] == "guard.regression")).await;
    let events = got.lock().unwrap().clone();
    let alert = events.iter().find(|e| e["event"] == "guard.regression").unwrap();
    assert_eq!(alert["details"]["guards"], json!(["errors"]));
    let finding = &alert["details"]["findings"][0];
    assert!(finding["log_likelihood_ratio"].as_f64().unwrap() >= finding["log_threshold"].as_f64().unwrap(), "{alert}");
    assert!(events.iter().any(|e| e["event"] == "release.dial_down" && e["actor"] == "guard"), "{events:?}");

    let audit = server
        .store
        .audit(&AuditFilter { flag: Some("checkout".into()), limit: 50, ..AuditFilter::default() })
        .await
        .unwrap();
    let entry = audit.iter().find(|a| a.action == "guard.regression").expect("audited");
    assert_eq!(entry.actor, "guard");
    assert!(entry.reason.as_deref().unwrap().contains("errors on on: 4.00% vs control 1.00%"), "{entry:?}");
    assert!(audit.iter().any(|a| a.action == "release.dial_down" && a.actor == "guard"));

    // It acts once per stage window, however many passes see the regression.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = server
        .store
        .audit(&AuditFilter { flag: Some("checkout".into()), limit: 50, ..AuditFilter::default() })
        .await
        .unwrap();
    assert_eq!(again.iter().filter(|a| a.action == "guard.regression").count(), 1);
    let text = server.http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("dimmer_guard_events_total{kind=\"regression\",action=\"dial_down\"} 1"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn a_healthy_guarded_plan_advances_once_the_guard_has_its_sample() {
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let server = server(&clock, Vec::new()).await;
    create_flag(&server).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let guards = json!([{"name": "errors", "metric": "error_rate", "compare": "relative", "max": 0.5, "min_sample": 300},
        {"name": "p95", "metric": "latency_p95", "compare": "relative", "max": 0.25, "min_sample": 300, "action": "rollback"}]);
    let (s, v) = server
        .admin(
            Method::POST,
            &format!("{PATH}/plan"),
            Some(json!({"stages": "10%,100%", "dwell": "1m", "guards": guards})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    clock.advance_ms(120_000);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(plan(&server).await["stage"], 0, "no data yet: the stage waits past its dwell");
    let latency: Vec<f64> = (0..400).map(|i| 20.0 + f64::from(i % 40)).collect();
    let (s, _) = send(&server, &sdk, batch(&[("on", 400, 4, &latency), ("off", 3_600, 36, &latency)])).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    clock.advance_ms(10_000);
    for _ in 0..500 {
        if plan(&server).await["status"] == "released" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(plan(&server).await["status"], "released", "{}", view(&server).await);
    server.stop().await;
}

#[tokio::test]
async fn standing_guards_alert_without_acting_and_bad_guards_are_named() {
    // A standing guard's window starts when the flag or its guards last changed, stamped by the
    // store's own clock: start the manual clock at the real time.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let clock = Arc::new(ManualClock::new(now));
    let (hook, got) = receiver().await;
    let server = server(&clock, vec![Target::parse(&hook).unwrap()]).await;
    let flag = json!({"key": "checkout", "owner": "team-pay",
        "environments": {"production": {"enabled": true, "default": {"variant": "on"}}}});
    let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(flag)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let bad = json!({"guards": [{"name": "e", "metric": "error_rate", "compare": "threshold", "max": 3.0}]});
    let (s, v) = server.admin(Method::PUT, &format!("{PATH}/guards"), Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["details"]["path"], "guards[0].max");

    let guards = json!({"guards": [{"name": "ceiling", "metric": "error_rate", "compare": "threshold", "max": 0.02,
        "min_sample": 200, "action": "alert"}], "reason": "errors must stay under 2%"});
    let (s, v) = server.admin(Method::PUT, &format!("{PATH}/guards"), Some(guards)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = server.admin(Method::GET, &format!("{PATH}/guards"), None).await;
    assert_eq!(v["guards"][0]["name"], "ceiling");

    let sdk = server.token("svc", "sdk", Some("production")).await;
    clock.advance_ms(20_000);
    for _ in 0..5 {
        send(&server, &sdk, batch(&[("on", 1_000, 100, &[])])).await;
    }
    until("the standing guard's alert", || got.lock().unwrap().iter().any(|e| e["event"] == "guard.regression")).await;
    assert_eq!(production(&server).await["enabled"], true, "alert only: nothing changes");
    assert_eq!(production(&server).await.get("exposure"), None);
    server.stop().await;
}

#[tokio::test]
async fn alertmanager_alerts_dial_down_the_flag_their_labels_name() {
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let server = server(&clock, Vec::new()).await;
    create_flag(&server).await;
    let (s, _) = server.admin(Method::POST, &format!("{PATH}/plan"), Some(json!({"stages": "25%,100%"}))).await;
    assert_eq!(s, StatusCode::OK);
    let payload = json!({
        "version": "4", "status": "firing", "receiver": "dimmer", "groupKey": "{}:{}",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "CheckoutErrors", "flag": "checkout", "environment": "production"},
             "annotations": {"summary": "5xx above 2% for 5m"}},
            {"status": "resolved", "labels": {"alertname": "Old", "flag": "checkout", "environment": "production"}},
            {"status": "firing", "labels": {"alertname": "Unrelated"}},
        ]
    });
    let reader = server.token("dash", "reader", None).await;
    let (s, _, _) = server.call(Method::POST, "/api/v1/alertmanager", Some(&reader), Some(payload.clone()), &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let writer = server.token("alertmanager", "writer", None).await;
    let (s, _, v) = server.call(Method::POST, "/api/v1/alertmanager", Some(&writer), Some(payload), &[]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["applied"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["ignored"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(production(&server).await["exposure"]["weight"], 0);
    assert_eq!(plan(&server).await["status"], "paused");
    let audit = server
        .store
        .audit(&AuditFilter { flag: Some("checkout".into()), limit: 10, ..AuditFilter::default() })
        .await
        .unwrap();
    let entry = audit.iter().find(|a| a.action == "release.dial_down").unwrap();
    assert_eq!(entry.actor, "alertmanager");
    assert_eq!(entry.reason.as_deref(), Some("Alertmanager alert CheckoutErrors fired: 5xx above 2% for 5m"));
    server.stop().await;
}

#[tokio::test]
async fn two_postgres_replicas_see_the_same_regression_and_exactly_one_acts() {
    use crate::support::TempDir;
    use dimmer_server::app::Options;
    use dimmer_store::Store;
    use dimmer_store::testing::PgSchema;

    let Some(pg) = PgSchema::new() else { return };
    let outcome = tokio::spawn({
        let (url, schema) = (pg.url.clone(), pg.schema.clone());
        async move {
            let clock = Arc::new(ManualClock::new(1_000_000_000));
            let (hook, got) = receiver().await;
            let connect = || async {
                let s = dimmer_store::SqlStore::connect_with_schema(&url, &schema, clock.clone()).await.unwrap();
                Arc::new(s) as Arc<dyn Store>
            };
            let options = || Options {
                clock: clock.clone(),
                webhooks: vec![Target::parse(&hook).unwrap()],
                plan_interval: Duration::from_millis(2),
                ..crate::support::options()
            };
            let a = TestServer::start_with_options(connect().await, TempDir::new("pg-guard-a"), options()).await;
            let b = TestServer::start_with_options(connect().await, TempDir::new("pg-guard-b"), options()).await;
            create_flag(&a).await;
            let sdk = a.token("svc", "sdk", Some("production")).await;
            let guards = json!([{"name": "errors", "metric": "error_rate", "compare": "relative", "max": 0.5,
                "min_sample": 500}]);
            let (s, v) = a
                .admin(
                    Method::POST,
                    &format!("{PATH}/plan"),
                    Some(json!({"stages": "5%,100%", "dwell": "10m", "guards": guards})),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            for i in 0..30 {
                clock.advance_ms(10_000);
                // Batches arrive at both replicas, as behind a load balancer.
                let replica = if i % 2 == 0 { &a } else { &b };
                send(replica, &sdk, batch(&[("on", 500, 20, &[]), ("off", 9_500, 95, &[])])).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                if production(&a).await["exposure"]["weight"] == 0 {
                    break;
                }
            }
            assert_eq!(production(&b).await["exposure"]["weight"], 0, "the guard never acted");
            // Both loops keep looking; give them every chance to act twice.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let audit = a
                .store
                .audit(&AuditFilter { flag: Some("checkout".into()), limit: 50, ..AuditFilter::default() })
                .await
                .unwrap();
            let count = |action: &str| audit.iter().filter(|e| e.action == action && e.actor == "guard").count();
            assert_eq!((count("guard.regression"), count("release.dial_down")), (1, 1), "{audit:#?}");
            until("the alert", || got.lock().unwrap().iter().any(|e| e["event"] == "guard.regression")).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let alerts = got.lock().unwrap().iter().filter(|e| e["event"] == "guard.regression").count();
            assert_eq!(alerts, 1, "one replica alerts");
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

/// One SDK flush with ratings: `(variant, evaluations, ratings)` per entry, the ratings sent as
/// an SDK sends them (count, sum and sum of squares).
fn rated_batch(entries: &[(&str, u64, &[f64])]) -> Value {
    json!({
        "sdk": "test/1",
        "metrics": entries.iter().map(|(variant, n, ratings)| {
            let sum: f64 = ratings.iter().sum();
            let sum_sq: f64 = ratings.iter().map(|r| r * r).sum();
            json!({"flag": "checkout", "variant": variant, "evaluations": n, "successes": n,
                "events": {"csat": {"count": ratings.len(), "sum": sum, "sum_sq": sum_sq}}})
        }).collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn a_mean_based_guard_dials_down_a_satisfaction_drop_and_the_view_shows_the_means() {
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let server = server(&clock, Vec::new()).await;
    create_flag(&server).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let guards = json!([{"name": "csat", "metric": "event_mean:csat", "compare": "relative", "max": 0.05,
        "min_sample": 200, "action": "dial_down"}]);
    let (s, v) = server
        .admin(
            Method::POST,
            &format!("{PATH}/plan"),
            Some(json!({"stages": "10%,100%", "dwell": "10m", "guards": guards})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Control rates 4.0 on average, treatment 3.4: 15% lower, three times the tolerance. The
    // error rate and the event count per evaluation are the same on both sides.
    let good: Vec<f64> = [5.0, 4.0, 3.0, 4.0, 5.0, 3.0, 4.0, 4.0].repeat(25);
    let worse: Vec<f64> = [4.0, 3.0, 2.0, 4.0, 4.0, 3.0, 4.0, 3.2].repeat(25);
    let mut dialed = false;
    for _ in 0..30 {
        clock.advance_ms(10_000);
        let (s, v) = send(&server, &sdk, rated_batch(&[("on", 400, &worse), ("off", 3_600, &good.repeat(9))])).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        tokio::time::sleep(Duration::from_millis(30)).await;
        if production(&server).await["exposure"]["weight"] == 0 {
            dialed = true;
            break;
        }
    }
    let v = view(&server).await;
    assert!(dialed, "the guard never dialed the flag down: {v}");
    let on = &variant(&v, "on")["events"]["csat"];
    let off = &variant(&v, "off")["events"]["csat"];
    assert!((on["mean"].as_f64().unwrap() - 3.4).abs() < 1e-9, "{on}");
    assert!((off["mean"].as_f64().unwrap() - 4.0).abs() < 1e-9, "{off}");
    assert!((off["std_dev"].as_f64().unwrap() - 0.5f64.sqrt()).abs() < 1e-9, "{off}");
    let audit = server
        .store
        .audit(&AuditFilter { flag: Some("checkout".into()), limit: 50, ..AuditFilter::default() })
        .await
        .unwrap();
    assert!(audit.iter().any(|a| a.action == "guard.regression"), "{audit:?}");

    // A bad sum of squares is refused by name, and nothing is stored.
    let mut bad = rated_batch(&[("on", 1, &[3.0])]);
    bad["metrics"][0]["events"]["csat"]["sum_sq"] = json!(-1.0);
    let (s, v) = send(&server, &sdk, bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["details"]["path"], "metrics[0].events.csat");
    server.stop().await;
}
