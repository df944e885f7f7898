//! Change-to-subscriber latency: N SSE subscribers on one server, one toggle at a time; for each
//! subscriber, the time from the write's acknowledgement to its receipt of the patch. Prints
//! p50/p99/max over all receipts (see `docs/benchmarks.md`).
//!
//! `cargo bench -p dimmer-server --bench sse_fanout -- [SUBSCRIBERS] [TOGGLES]`

#![allow(clippy::expect_used, reason = "a benchmark whose set-up fails must stop and say why")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dimmer_store::{self, DEFAULT_ENVIRONMENTS};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::{Barrier, mpsc};

const ADMIN: &str = "dmr_bench_admin_token_0123456789";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let subscribers: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let toggles: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);

    let dir = std::env::temp_dir().join(format!("dimmer-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = dimmer_store::open(None, &dir, Arc::new(dimmer_domain::SystemClock)).await.expect("store");
    store.ensure_environments(&DEFAULT_ENVIRONMENTS).await.expect("environments");
    dimmer_server::service::tokens::bootstrap_admin(store.as_ref(), Some(ADMIN)).await.expect("admin");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // A thousand subscribers from one address and token: the rate limits are not what is measured.
    let options = dimmer_server::app::Options {
        rate_limits: dimmer_server::service::limits::RateLimits::off(),
        ..dimmer_server::app::Options::default()
    };
    let server = tokio::spawn(dimmer_server::app::run_with(listener, store.clone(), options, async move {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let created = http
        .post(format!("{base}/api/v1/flags"))
        .bearer_auth(ADMIN)
        .json(&json!({"key": "kill-me"}))
        .send()
        .await
        .expect("create flag");
    assert_eq!(created.status().as_u16(), 201);
    let token: serde_json::Value = http
        .post(format!("{base}/api/v1/tokens"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "bench", "scope": "sdk", "environment": "production"}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let sdk = token["token"].as_str().expect("token").to_owned();

    // Every subscriber reports the instant it saw each patch.
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let ready = Arc::new(Barrier::new(subscribers + 1));
    for _ in 0..subscribers {
        let (tx, ready, base, sdk) = (tx.clone(), ready.clone(), base.clone(), sdk.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let resp = client.get(format!("{base}/api/v1/sdk/stream")).bearer_auth(&sdk).send().await.expect("stream");
            let mut body = resp.bytes_stream();
            let mut buffer = String::new();
            let mut snapshot_seen = false;
            while let Some(Ok(chunk)) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    if block.contains("event: snapshot") && !snapshot_seen {
                        snapshot_seen = true;
                        ready.wait().await;
                    } else if block.contains("event: patch") {
                        let _ = tx.send(Instant::now());
                    }
                }
            }
        });
    }
    drop(tx);
    ready.wait().await;
    let rss_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0);

    let mut latencies = Vec::with_capacity(subscribers * toggles);
    let mut from_request = Vec::with_capacity(subscribers * toggles);
    let mut early = 0usize;
    for i in 0..toggles {
        let enabled = i % 2 == 0;
        let sent = Instant::now();
        let resp = http
            .post(format!("{base}/api/v1/flags/kill-me/environments/production/toggle"))
            .bearer_auth(ADMIN)
            .json(&json!({"enabled": enabled}))
            .send()
            .await
            .expect("toggle");
        let acked = Instant::now();
        assert!(resp.status().is_success());
        let mut received = 0;
        while received < subscribers {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(at)) => {
                    // The server publishes before it acknowledges, so a receipt can precede the
                    // ack: it counts as 0 from the ack, and is also measured from the request.
                    if at < acked {
                        early += 1;
                    }
                    latencies.push(at.saturating_duration_since(acked));
                    from_request.push(at.saturating_duration_since(sent));
                    received += 1;
                }
                _ => panic!("only {received} of {subscribers} subscribers received toggle {i}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    latencies.sort();
    from_request.sort();
    println!("subscribers: {subscribers}, toggles: {toggles}, receipts: {}", latencies.len());
    for (name, values) in [("ack→receipt", &latencies), ("request→receipt", &from_request)] {
        println!(
            "{name:<16} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            percentile(values, 50.0).as_secs_f64() * 1e3,
            percentile(values, 99.0).as_secs_f64() * 1e3,
            values.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
    }
    println!("receipts before the writer saw its ack: {early} of {}", latencies.len());
    println!("process RSS with all subscribers connected (server and clients): {} MiB", rss_kb / 1024);
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
}
