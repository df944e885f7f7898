//! `promql:` guards against a real Prometheus (Debian's `prometheus` package, found through
//! `DIMMER_PROMETHEUS`, else `/usr/bin/prometheus`): the test serves a scrape target with
//! per-variant error ratios, starts Prometheus on a free loopback port scraping it, and runs a
//! guarded plan on the server. A regression Prometheus holds dials the flag down; with
//! Prometheus gone the guard reports `no_data` and alerts, and nothing is dialed down.
//! Outside CI a missing Prometheus fails loudly with how to install it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dimmer_domain::ManualClock;
use dimmer_server::app::Options;
use dimmer_server::service::webhooks::Target;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::release::{create_flag, plan, production};
use crate::support::{TempDir, TestServer};

const PATH: &str = "/api/v1/flags/checkout/environments/production";

fn prometheus_binary() -> PathBuf {
    let path =
        std::env::var_os("DIMMER_PROMETHEUS").map_or_else(|| PathBuf::from("/usr/bin/prometheus"), PathBuf::from);
    assert!(
        path.exists(),
        "Prometheus not found at {} (set DIMMER_PROMETHEUS, or `apt-get install prometheus`; .ci/run installs it)",
        path.display()
    );
    path
}

/// A scrape target whose per-variant error ratios the test sets.
async fn target(ratios: Arc<Mutex<Vec<(&'static str, f64)>>>) -> String {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let ratios = ratios.clone();
            async move {
                let mut out = String::from("# TYPE app_error_ratio gauge\n");
                for (variant, r) in ratios.lock().unwrap().iter() {
                    out.push_str(&format!(
                        "app_error_ratio{{flag=\"checkout\",variant=\"{variant}\",env=\"production\"}} {r}\n"
                    ));
                }
                out
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Prometheus {
    child: Child,
    base: String,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_prometheus(target: &str) -> Prometheus {
    let binary = prometheus_binary();
    let dir = TempDir::new("prometheus");
    let config = dir.0.join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .unwrap();
    // A free port: bind, read it, release it for Prometheus.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    // Owned at once, so that a failure below still kills and reaps it.
    let prometheus = Prometheus { child, base: format!("http://127.0.0.1:{port}"), _dir: dir };
    // Wait until Prometheus has scraped the target once (it is a separate process starting up).
    let http = reqwest::Client::new();
    for _ in 0..600 {
        let answer =
            http.get(format!("{}/api/v1/query", prometheus.base)).query(&[("query", "app_error_ratio")]).send().await;
        if let Ok(r) = answer
            && let Ok(v) = r.json::<Value>().await
            && v["data"]["result"].as_array().is_some_and(|a| a.len() == 2)
        {
            return prometheus;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Prometheus never scraped the target");
}

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

async fn server(clock: &Arc<ManualClock>, prometheus: &str, hook: &str) -> TestServer {
    let dir = TempDir::new("promguard");
    let store = dimmer_store::open(None, &dir.0, clock.clone()).await.expect("sqlite");
    let options = Options {
        clock: clock.clone(),
        plan_interval: Duration::from_millis(20),
        prometheus_url: Some(prometheus.to_owned()),
        webhooks: vec![Target::parse(hook).unwrap()],
        ..crate::support::options()
    };
    TestServer::start_with_options(store, dir, options).await
}

fn guard() -> Value {
    json!([{"name": "errors", "compare": "relative", "max": 0.5, "action": "dial_down",
        "metric": "promql:max(app_error_ratio{flag=\"{{flag}}\",variant=\"{{variant}}\",env=\"{{environment}}\"})"}])
}

#[tokio::test]
async fn a_prometheus_guard_dials_down_a_regression_prometheus_holds() {
    let ratios = Arc::new(Mutex::new(vec![("on", 0.08), ("off", 0.01)]));
    let prometheus = start_prometheus(&target(ratios).await).await;
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let (hook, _) = receiver().await;
    let server = server(&clock, &prometheus.base, &hook).await;
    create_flag(&server).await;
    let (s, v) = server
        .admin(
            Method::POST,
            &format!("{PATH}/plan"),
            Some(json!({"stages": "10%,100%", "dwell": "10m", "guards": guard()})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut dialed = false;
    for _ in 0..500 {
        if production(&server).await["exposure"]["weight"] == 0 {
            dialed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dialed, "never dialed down: {}", plan(&server).await);
    let audit = server
        .store
        .audit(&dimmer_store::AuditFilter { flag: Some("checkout".into()), limit: 50, ..Default::default() })
        .await
        .unwrap();
    let entry = audit.iter().find(|a| a.action == "guard.regression").expect("audited");
    assert!(entry.reason.as_deref().unwrap().contains("errors on on: 0.0800 vs control 0.0100"), "{entry:?}");
    server.stop().await;
}

#[tokio::test]
async fn with_prometheus_down_the_guard_reports_no_data_and_acts_on_nothing() {
    let ratios = Arc::new(Mutex::new(vec![("on", 0.08), ("off", 0.01)]));
    let prometheus = start_prometheus(&target(ratios).await).await;
    let base = prometheus.base.clone();
    drop(prometheus);
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let (hook, got) = receiver().await;
    let server = server(&clock, &base, &hook).await;
    create_flag(&server).await;
    let (s, v) = server
        .admin(
            Method::POST,
            &format!("{PATH}/plan"),
            Some(json!({"stages": "10%,100%", "dwell": "1m", "guards": guard()})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    clock.advance_ms(120_000);
    let mut alerted = false;
    for _ in 0..500 {
        if got.lock().unwrap().iter().any(|e| e["event"] == "guard.no_data") {
            alerted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(alerted, "no no_data alert: {:?}", got.lock().unwrap());
    let (_, v) = server.admin(Method::GET, "/api/v1/flags/checkout/metrics?env=production", None).await;
    let finding = &v["guards"]["plan"]["assessment"]["findings"][0];
    assert_eq!(finding["status"], "no_data", "{v}");
    assert_eq!(v["guards"]["plan"]["assessment"]["verdict"]["verdict"], "waiting", "{v}");
    // Nothing was dialed down, and the stage did not advance past its dwell without data.
    assert_eq!(production(&server).await["exposure"]["weight"], 10_000);
    assert_eq!(plan(&server).await["stage"], 0);
    let no_data = got.lock().unwrap().iter().filter(|e| e["event"] == "guard.no_data").count();
    assert_eq!(no_data, 1, "alerted once per window");
    server.stop().await;
}
