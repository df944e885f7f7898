//! Write cost against the size of the flag set: create, update, kill (and restore) and
//! `GET /api/v1/lifecycle` on a server holding N flags (default 10,000), with SSE subscribers of
//! every environment connected so that each write also rebuilds what streams are sent.
//!
//! `cargo bench -p dimmer-server --bench write_scale -- [FLAGS] [SAMPLES] [FLOOD]`
//!
//! `FLOOD` (default 0) is a number of concurrent SDK metric posters that run during a second
//! series of kills ("kill under a metrics flood"): each posts outcome batches as fast as the
//! server answers.
//!
//! Two processes, as in `kill_fanout`: the binary starts itself again with
//! `WRITE_SCALE_ROLE=server`; that process seeds N flags through the store (not the API: seeding
//! is not what is measured), prints its address and serves until its stdin closes. The parent is
//! the client. Times are round trips over loopback measured by the client, an upper bound on the
//! server's time (the client's share is a few tens of microseconds).

#![allow(clippy::expect_used, reason = "a benchmark whose set-up fails must stop and say why")]

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const ADMIN: &str = "dmr_bench_admin_token_0123456789";
const ROLE: &str = "WRITE_SCALE_ROLE";
const FLAGS: &str = "WRITE_SCALE_FLAGS";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A flag like those of a real installation: a rule with clauses, a rollout, three environments.
fn flag_body(i: usize) -> Value {
    let env = |enabled: bool| {
        json!({
            "enabled": enabled,
            "rules": [
                {"clauses": [{"attribute": "country", "op": "in", "values": ["de", "fr", "nl"]},
                             {"attribute": "plan", "op": "equals", "values": ["pro"]}],
                 "serve": {"variant": "on"}},
                {"clauses": [{"attribute": "email", "op": "ends_with", "values": ["@example.com"]}],
                 "serve": {"rollout": {"variants": [{"variant": "on", "weight": 20_000}, {"variant": "off", "weight": 80_000}]}}}
            ],
            "default": {"variant": "off"}
        })
    };
    json!({
        "kind": "release",
        "description": format!("bench flag {i}"),
        "variants": {"on": true, "off": false},
        "environments": {"development": env(true), "staging": env(true), "production": env(i.is_multiple_of(2))}
    })
}

#[tokio::main]
async fn main() {
    if std::env::var(ROLE).as_deref() == Ok("server") {
        serve().await;
    } else {
        drive().await;
    }
}

/// The server process: seeds the flags, prints its address, serves until stdin closes.
async fn serve() {
    let n: usize = std::env::var(FLAGS).ok().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("dimmer-write-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = dimmer_store::open(None, &dir, Arc::new(dimmer_domain::SystemClock)).await.expect("store");
    dimmer_server::app::first_start(store.as_ref()).await.expect("first start");
    dimmer_server::service::tokens::bootstrap_admin(store.as_ref(), Some(ADMIN)).await.expect("admin");
    let meta = dimmer_store::ChangeMeta { actor: "bench".into(), reason: Some("seed".into()) };
    let started = Instant::now();
    for i in 0..n {
        let flag: dimmer_engine::Flag = serde_json::from_value(flag_body(i)).expect("flag");
        store.create_flag(&format!("seed-{i:05}"), &flag, &meta).await.expect("seed flag");
    }
    eprintln!("seeded {n} flags in {:.1} s", started.elapsed().as_secs_f64());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("http://{}", listener.local_addr().expect("addr"));
    let stop = async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    };
    let options = dimmer_server::app::Options {
        rate_limits: dimmer_server::service::limits::RateLimits::off(),
        ..dimmer_server::app::Options::default()
    };
    dimmer_server::app::run_with(listener, store, options, stop).await.expect("serve");
    let _ = std::fs::remove_dir_all(&dir);
}

struct Series {
    name: &'static str,
    times: Vec<Duration>,
}

impl Series {
    fn print(&mut self, n: usize) {
        self.times.sort();
        println!(
            "flags {n:>6}  {:<28} n {:>4}  p50 {:>9.2} ms  p99 {:>9.2} ms  max {:>9.2} ms",
            self.name,
            self.times.len(),
            ms(percentile(&self.times, 50.0)),
            ms(percentile(&self.times, 99.0)),
            ms(self.times.last().copied().unwrap_or_default())
        );
    }
}

async fn timed(request: reqwest::RequestBuilder, expect: u16) -> (Duration, Value) {
    let started = Instant::now();
    let resp = request.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.expect("body");
    let took = started.elapsed();
    assert_eq!(status, expect, "{}", String::from_utf8_lossy(&body));
    (took, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn drive() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let samples: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let flood: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);

    let mut child = tokio::process::Command::new(std::env::current_exe().expect("own path"))
        .env(ROLE, "server")
        .env(FLAGS, n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server process");
    let mut lines = BufReader::new(child.stdout.take().expect("server stdout")).lines();
    let base = lines.next_line().await.expect("server address").expect("the server printed no address");
    let http = reqwest::Client::builder().no_proxy().build().expect("client");

    // One subscriber per environment keeps every environment's snapshot loaded, as in production.
    for env in ["development", "staging", "production"] {
        let resp =
            http.get(format!("{base}/api/v1/sdk/stream?env={env}")).bearer_auth(ADMIN).send().await.expect("stream");
        assert!(resp.status().is_success());
        tokio::spawn(async move {
            let mut resp = resp;
            while let Ok(Some(_)) = resp.chunk().await {}
        });
    }

    let reason = |r: reqwest::RequestBuilder| r.bearer_auth(ADMIN).header("X-Dimmer-Reason", "bench");
    let mut create = Series { name: "create", times: Vec::new() };
    let mut update = Series { name: "update (PUT)", times: Vec::new() };
    let mut kill = Series { name: "kill", times: Vec::new() };
    let mut restore = Series { name: "restore", times: Vec::new() };
    let mut lifecycle = Series { name: "GET /api/v1/lifecycle", times: Vec::new() };
    for i in 0..samples {
        let key = format!("new-{i:05}");
        let mut body = flag_body(i);
        body["key"] = json!(key);
        let (t, _) = timed(reason(http.post(format!("{base}/api/v1/flags"))).json(&body), 201).await;
        create.times.push(t);
        let target = format!("seed-{:05}", (i * 7919) % n.max(1));
        let (_, current) = timed(reason(http.get(format!("{base}/api/v1/flags/{target}"))), 200).await;
        let version = current["version"].as_i64().expect("version");
        let mut changed = flag_body(i + 1);
        changed["description"] = json!(format!("updated {i}"));
        // On in production, so that the kill below has something to switch off.
        changed["environments"]["production"]["enabled"] = json!(true);
        let put = reason(http.put(format!("{base}/api/v1/flags/{target}"))).header("If-Match", version.to_string());
        let (t, _) = timed(put.json(&changed), 200).await;
        update.times.push(t);
        let url = format!("{base}/api/v1/flags/{target}/environments/production");
        let (t, answer) = timed(reason(http.post(format!("{url}/kill"))), 200).await;
        assert_eq!(answer["changed"], json!(true), "{answer}");
        kill.times.push(t);
        let (t, _) = timed(reason(http.post(format!("{url}/restore"))), 200).await;
        restore.times.push(t);
    }
    for _ in 0..samples.min(5) {
        let (t, _) = timed(reason(http.get(format!("{base}/api/v1/lifecycle"))), 200).await;
        lifecycle.times.push(t);
    }
    for s in [&mut create, &mut update, &mut kill, &mut restore, &mut lifecycle] {
        s.print(n);
    }

    if flood > 0 {
        let token: Value = http
            .post(format!("{base}/api/v1/tokens"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "flood", "scope": "sdk", "environment": "production"}))
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("token json");
        let sdk = token["token"].as_str().expect("sdk token").to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let posted = Arc::new(AtomicU64::new(0));
        let mut posters = Vec::new();
        for p in 0..flood {
            let (http, base, sdk, stop, posted) =
                (http.clone(), base.clone(), sdk.clone(), stop.clone(), posted.clone());
            posters.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let metrics: Vec<Value> = (0..20)
                        .map(|f| {
                            let key = format!("seed-{:05}", (p * 131 + f * 17 + i as usize) % n.max(1));
                            json!({"flag": key, "variant": "on", "evaluations": 100, "successes": 99, "errors": 1})
                        })
                        .collect();
                    let batch = json!({"sdk": "bench/0", "metrics": metrics});
                    let ok = http
                        .post(format!("{base}/api/v1/sdk/metrics"))
                        .bearer_auth(&sdk)
                        .json(&batch)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        posted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = posted.load(Ordering::Relaxed);
        let started = Instant::now();
        let mut flooded = Series { name: "kill under metrics flood", times: Vec::new() };
        for i in 0..samples {
            let target = format!("seed-{:05}", (i * 104_729) % n.max(1));
            let url = format!("{base}/api/v1/flags/{target}/environments/production");
            let (t, _) = timed(reason(http.post(format!("{url}/kill"))), 200).await;
            flooded.times.push(t);
            timed(reason(http.post(format!("{url}/restore"))), 200).await;
        }
        let rate = (posted.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for p in posters {
            let _ = p.await;
        }
        flooded.print(n);
        println!("metric batches accepted during the flooded kills: {rate:.0}/s from {flood} posters");
    }

    drop(child.stdin.take());
    if tokio::time::timeout(Duration::from_secs(30), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
