//! `dimmer demo` end to end, as a real process: an embedded server, simulated users through the
//! Rust SDK reporting outcomes, and the guard. In the regression scenario the injected
//! regression must be dialed down by the guard and the alert must reach a local HTTP listener;
//! in the healthy scenario the plan must run to 100%. Also the verbs that read outcome metrics and
//! set standing guards, against a real `dimmer serve`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::serve::scratch;

/// A minimal HTTP listener on a thread: answers 200 to every POST and keeps the JSON bodies.
fn listener() -> (String, Arc<Mutex<Vec<Value>>>) {
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", socket.local_addr().expect("address"));
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in socket.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(json) = serde_json::from_slice::<Value>(&body)
            {
                sink.lock().expect("lock").push(json);
            }
            let mut stream = reader.into_inner();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// One demo at a time: each drives thousands of simulated requests a second, and the healthy
/// one must finish its plan within the demo's minute even on a busy two-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn demo(scenario: &str, extra: &[&str]) -> (Value, std::path::PathBuf) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = scratch(&format!("demo-{scenario}"));
    let chart = dir.join("chart.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_dimmer"))
        .args(["demo", "--scenario", scenario, "--seed", "11", "--json", "--chart"])
        .arg(&chart)
        .args(extra)
        .output()
        .expect("dimmer demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (summary, chart)
}

#[test]
fn the_regression_demo_is_dialed_down_by_the_guard_and_the_alert_reaches_a_local_listener() {
    let (hook, got) = listener();
    let (summary, chart) = demo("regression", &["--webhook", &hook]);
    assert_eq!(summary["scenario"], "regression");
    assert_eq!(summary["dialed_down"], true, "{summary:#}");
    assert_eq!(summary["final_percent"], 0.0);
    assert!(summary["detected_after_seconds"].as_f64().is_some_and(|s| s > 0.0), "{summary:#}");
    assert!(summary["evaluations"].as_u64().is_some_and(|n| n > 1000));
    let reason = summary["guard"]["reason"].as_str().expect("the guard's audit entry");
    assert!(reason.starts_with("guard errors saw a regression"), "{reason}");
    let findings = &summary["guard"]["details"]["findings"];
    assert!(findings[0]["log_likelihood_ratio"].as_f64() >= findings[0]["log_threshold"].as_f64(), "{summary:#}");
    let svg = std::fs::read_to_string(&chart).expect("the chart");
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");

    let events = got.lock().expect("lock").clone();
    let alert = events.iter().find(|e| e["event"] == "guard.regression").unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(alert["flag"], "new-checkout");
    assert_eq!(alert["details"]["guards"][0], "errors");
    assert!(events.iter().any(|e| e["event"] == "release.dial_down" && e["actor"] == "guard"), "{events:#?}");
}

#[test]
fn the_latency_demo_is_dialed_down_by_the_latency_guard() {
    let (summary, _) = demo("latency", &[]);
    assert_eq!(summary["dialed_down"], true, "{summary:#}");
    let reason = summary["guard"]["reason"].as_str().expect("the guard's audit entry");
    assert!(reason.starts_with("guard latency saw a regression"), "{reason}");
}

#[test]
fn the_healthy_demo_runs_the_standard_plan_to_full_exposure() {
    let (summary, _) = demo("healthy", &[]);
    assert_eq!(summary["dialed_down"], false, "{summary:#}");
    assert_eq!(summary["released"], true, "{summary:#}");
    assert_eq!(summary["final_percent"], 100.0);
}

#[test]
fn guards_and_metrics_verbs_against_a_real_server() {
    use crate::serve::{Served, dimmer};
    let dir = scratch("guards-verbs");
    let served = Served::start(&dir);
    let admin = served.token.clone().expect("first start prints the admin token");
    let create =
        ["flag", "create", "checkout", "--kind", "release", "--owner", "team-pay", "--description", "Checkout"];
    let (ok, _, err) = dimmer(&served.base, &admin, &create);
    assert!(ok, "{err}");

    let set = ["guards", "set", "checkout", "--env", "production", "--guard", "error_rate:threshold:2%:alert"];
    let (ok, out, err) = dimmer(&served.base, &admin, &[&set[..], &["--reason", "errors under 2%"]].concat());
    assert!(ok, "{err}");
    assert!(out.contains("error_rate: error_rate threshold 0.02 -> alert"), "{out}");
    let (ok, out, err) = dimmer(&served.base, &admin, &["--json", "guards", "show", "checkout", "--env", "production"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["guards"][0]["max"], 0.02);
    assert_eq!(v["guards"][0]["action"], "alert");
    // A bad shorthand is refused before anything is sent; a bad guard by the server, naming the field.
    let (ok, _, err) =
        dimmer(&served.base, &admin, &["guards", "set", "checkout", "--env", "production", "--guard", "error_rate"]);
    assert!(!ok && err.contains("METRIC:COMPARE:MAX"), "{err}");
    let bad = ["guards", "set", "checkout", "--env", "production", "--guard", "latency_p100:relative:0.2"];
    let (ok, _, err) = dimmer(&served.base, &admin, &bad);
    assert!(!ok && err.contains("guards[0].metric"), "{err}");

    let (ok, out, err) = dimmer(&served.base, &admin, &["metrics", "checkout", "--env", "production"]);
    assert!(ok, "{err}");
    assert!(out.contains("no outcome metrics yet"), "{out}");
    let (ok, _, err) =
        dimmer(&served.base, &admin, &["metrics", "checkout", "--env", "production", "--window", "forever"]);
    assert!(!ok && err.contains("window"), "{err}");
    served.kill();
}
