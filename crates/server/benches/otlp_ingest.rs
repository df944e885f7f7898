//! OTLP ingest throughput: protobuf `ExportTraceServiceRequest`s of 512 server spans, each with
//! one `feature_flag.evaluation` event, posted to `POST /v1/traces` of a real server (SQLite,
//! system clock) by concurrent clients; spans per second into outcomes, and the process's CPU
//! time per 10,000 spans (server and load generator together: an upper bound on the server's).
//! Then the decoder and mapping alone, on one thread, without HTTP or storage.
//!
//! `cargo bench -p dimmer-server --bench otlp_ingest -- [BATCHES_PER_RUN] [CLIENTS] [RUNS]`

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a benchmark whose set-up fails must stop and say why")]

use std::sync::Arc;
use std::time::Instant;

use dimmer_protocol::otlp::{self, Encoding, wire};
use dimmer_store::DEFAULT_ENVIRONMENTS;
use prost::Message as _;
use serde_json::json;

const ADMIN: &str = "dmr_bench_admin_token_0123456789";
const SPANS: usize = 512;

/// The process's user + system CPU time, seconds (Linux `/proc/self/stat`, in clock ticks of
/// 1/100 s, the value on every Linux this runs on).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("ticks");
    (ticks(11) + ticks(12)) / 100.0
}

fn batch(n: u64) -> Vec<u8> {
    let kv = |k: &str, v: &str| wire::KeyValue {
        key: k.into(),
        value: Some(wire::AnyValue { value: Some(wire::Value::String(v.into())) }),
    };
    let spans = (0..SPANS as u64)
        .map(|i| {
            let id = n * SPANS as u64 + i;
            let mut trace = [0u8; 16];
            trace[..8].copy_from_slice(&id.to_be_bytes());
            trace[8] = 1;
            wire::Span {
                trace_id: trace.to_vec(),
                span_id: (id + 1).to_be_bytes().to_vec(),
                parent_span_id: Vec::new(),
                kind: otlp::kind::SERVER,
                start_time_unix_nano: 1_700_000_000_000_000_000,
                end_time_unix_nano: 1_700_000_000_000_000_000 + (5 + i % 50) * 1_000_000,
                attributes: vec![kv("http.route", "/checkout"), kv("http.request.method", "GET")],
                events: vec![wire::Event {
                    name: "feature_flag.evaluation".into(),
                    attributes: vec![
                        kv("feature_flag.key", "checkout"),
                        kv("feature_flag.result.variant", if i % 10 == 0 { "on" } else { "off" }),
                        kv("feature_flag.provider.name", "ofrep"),
                    ],
                }],
                status: (i % 50 == 0).then_some(wire::Status { code: wire::STATUS_ERROR }),
            }
        })
        .collect();
    wire::ExportTraceServiceRequest {
        resource_spans: vec![wire::ResourceSpans { scope_spans: vec![wire::ScopeSpans { spans }] }],
    }
    .encode_to_vec()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let per_run: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(400);
    let clients: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);

    let dir = std::env::temp_dir().join(format!("dimmer-otlp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = dimmer_store::open(None, &dir, Arc::new(dimmer_domain::SystemClock)).await.expect("store");
    store.ensure_environments(&DEFAULT_ENVIRONMENTS).await.expect("environments");
    dimmer_server::service::tokens::bootstrap_admin(store.as_ref(), Some(ADMIN)).await.expect("admin");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = dimmer_server::app::Options {
        rate_limits: dimmer_server::service::limits::RateLimits::off(),
        ..dimmer_server::app::Options::default()
    };
    let server = tokio::spawn(dimmer_server::app::run_with(listener, store.clone(), options, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{base}/api/v1/flags"))
        .bearer_auth(ADMIN)
        .json(&json!({"key": "checkout", "environments": {"production": {"default": {"variant": "off"}}}}))
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

    // Distinct ids in every batch of every run, encoded before the clock starts.
    let total = per_run * (runs as u64 + 1);
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..total).map(batch).collect());
    println!("batch: {SPANS} spans, {} bytes of protobuf", bodies[0].len());

    let mut rates = Vec::new();
    let mut cpus = Vec::new();
    for run in 0..=runs {
        let started = Instant::now();
        let cpu0 = cpu_seconds();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (http, base, sdk, bodies) = (http.clone(), base.clone(), sdk.clone(), bodies.clone());
            let offset = run as u64 * per_run;
            tasks.push(tokio::spawn(async move {
                let mut i = c;
                while i < per_run {
                    let body = bodies[(offset + i) as usize].clone();
                    let resp = http
                        .post(format!("{base}/v1/traces"))
                        .bearer_auth(&sdk)
                        .header("content-type", "application/x-protobuf")
                        .body(body)
                        .send()
                        .await
                        .expect("post");
                    assert_eq!(resp.status().as_u16(), 200);
                    let answer = wire::ExportResponse::decode(resp.bytes().await.expect("body")).expect("answer");
                    assert_eq!(answer.partial_success, None);
                    i += clients;
                }
            }));
        }
        for t in tasks {
            t.await.expect("client");
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let spans = (per_run as usize * SPANS) as f64;
        // The first run warms up connections and the span table.
        if run > 0 {
            rates.push(spans / secs);
            cpus.push(cpu / spans * 10_000.0 * 1000.0);
        }
        println!(
            "run {run}: {spans} spans in {secs:.3} s = {:.0} spans/s, CPU {:.1} ms per 10,000 spans{}",
            spans / secs,
            cpu / spans * 10_000.0 * 1000.0,
            if run == 0 { " (warm-up, not counted)" } else { "" }
        );
    }
    let (lo, hi) = (rates.iter().copied().fold(f64::MAX, f64::min), rates.iter().copied().fold(0.0, f64::max));
    println!(
        "HTTP ingest, {clients} clients: median {:.0} spans/s (range {lo:.0}..{hi:.0}), median CPU {:.1} ms per 10,000 spans",
        median(&mut rates),
        median(&mut cpus)
    );

    // The decoder and the mapping alone.
    let mut correlator = otlp::Correlator::new(otlp::Bounds::default(), vec![otlp::kind::SERVER]);
    let mut pure = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        for (i, body) in bodies.iter().take(per_run as usize).enumerate() {
            let request = otlp::decode_traces(body, Encoding::Protobuf).expect("decode");
            let x = correlator.traces(&request, i as i64);
            assert_eq!(x.outcomes, SPANS as u64);
        }
        pure.push((per_run as usize * SPANS) as f64 / started.elapsed().as_secs_f64());
    }
    println!("decode + map alone, one thread: median {:.0} spans/s", median(&mut pure));

    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
}
