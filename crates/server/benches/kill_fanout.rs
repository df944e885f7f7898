//! Kill to subscriber: N SSE subscribers (default 10,000) on one server, K kill/restore rounds
//! (default 5). For every subscriber, the time from the kill's acknowledgement (the 200 reaching
//! the writer) to its receipt of the `patch` that shows the flag off. Prints p50/p99/max over all
//! receipts and the server's memory per subscriber (see `docs/benchmarks.md`).
//!
//! `cargo bench -p dimmer-server --bench kill_fanout -- [SUBSCRIBERS] [ROUNDS]`
//!
//! Two processes: the binary starts itself again with `KILL_FANOUT_ROLE=server` to run the server
//! (embedded SQLite in a temporary directory), which prints its address on stdout and stops when
//! its stdin closes. The parent runs the writer and the subscribers, so the server's resident
//! memory (`/proc/<pid>/status`) holds no client connections.

#![allow(clippy::expect_used, reason = "a benchmark whose set-up fails must stop and say why")]

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::{Semaphore, mpsc};

const ADMIN: &str = "dmr_bench_admin_token_0123456789";
const ROLE: &str = "KILL_FANOUT_ROLE";
/// The open files the server process needs, set by the parent.
const FILES: &str = "KILL_FANOUT_FILES";
const FLAG: &str = "checkout";
/// Connections being opened at once, well under the listener's backlog.
const CONNECTING: usize = 500;
/// reqwest clients the subscriptions are spread over (one connection per subscription each).
const CLIENTS: usize = 16;
/// How long every subscriber has to receive one change before the run is declared failed.
const DEADLINE: Duration = Duration::from_secs(60);

/// One receipt: which subscriber, when its chunk arrived, and the state of the flag it showed.
struct Receipt {
    subscriber: usize,
    at: Instant,
    enabled: bool,
}

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

/// Resident memory of a process in KiB (`VmRSS` in `/proc/<pid>/status`).
fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}

/// Raises the soft open-files limit to what is needed, up to the hard limit.
fn raise_nofile(needed: u64) {
    match rlimit::increase_nofile_limit(needed) {
        Ok(got) if got < needed => eprintln!(
            "warning: open-files limit is {got}, below the {needed} needed: raise the hard limit (ulimit -Hn)"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: could not raise the open-files limit: {e}"),
    }
}

/// `checkout`'s `enabled` in production, in a patch (`flags.checkout`) or a snapshot
/// (`flags.flags.checkout`).
fn checkout_enabled(data: &Value) -> Option<bool> {
    let flags = &data["flags"];
    let flag = if flags[FLAG].is_object() { &flags[FLAG] } else { &flags["flags"][FLAG] };
    flag["environments"]["production"]["enabled"].as_bool()
}

/// The `data:` of one SSE block, its lines joined.
fn block_data(block: &str) -> String {
    block.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d)).collect()
}

#[tokio::main]
async fn main() {
    if std::env::var(ROLE).as_deref() == Ok("server") {
        serve().await;
    } else {
        drive().await;
    }
}

/// The server process: prints its address, serves until stdin closes.
async fn serve() {
    let connections: u64 = std::env::var(FILES).ok().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    raise_nofile(connections);
    let dir = std::env::temp_dir().join(format!("dimmer-kill-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = dimmer_store::open(None, &dir, Arc::new(dimmer_domain::SystemClock)).await.expect("store");
    dimmer_server::app::first_start(store.as_ref()).await.expect("first start");
    dimmer_server::service::tokens::bootstrap_admin(store.as_ref(), Some(ADMIN)).await.expect("admin");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("http://{}", listener.local_addr().expect("addr"));
    // The parent closes our stdin to stop us (and so does its death).
    let stop = async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    };
    // Ten thousand subscribers from one address and token: the rate limits are not what is
    // measured.
    let options = dimmer_server::app::Options {
        rate_limits: dimmer_server::service::limits::RateLimits::off(),
        ..dimmer_server::app::Options::default()
    };
    dimmer_server::app::run_with(listener, store, options, stop).await.expect("serve");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until every subscriber has shown `enabled`; returns the receipt times.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Receipt>,
    subscribers: usize,
    enabled: bool,
    what: &str,
) -> Vec<Instant> {
    let mut seen = vec![false; subscribers];
    let mut times = Vec::with_capacity(subscribers);
    while times.len() < subscribers {
        match tokio::time::timeout(DEADLINE, rx.recv()).await {
            Ok(Some(r)) if r.enabled == enabled && !seen[r.subscriber] => {
                seen[r.subscriber] = true;
                times.push(r.at);
            }
            Ok(Some(r)) => panic!("subscriber {} showed enabled={} during the {what}", r.subscriber, r.enabled),
            _ => panic!("only {} of {subscribers} subscribers received the {what}", times.len()),
        }
    }
    times
}

/// The writer and the subscribers; the server runs in a child process.
async fn drive() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let subscribers: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let files = subscribers as u64 + 1_000;
    raise_nofile(files);

    let mut child = tokio::process::Command::new(std::env::current_exe().expect("own path"))
        .env(ROLE, "server")
        .env(FILES, files.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server process");
    let pid = child.id().expect("server pid").to_string();
    let mut lines = BufReader::new(child.stdout.take().expect("server stdout")).lines();
    let base = lines.next_line().await.expect("server address").expect("the server printed no address");

    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let created = http
        .post(format!("{base}/api/v1/flags"))
        .bearer_auth(ADMIN)
        .json(&json!({"key": FLAG, "environments": {"production": {"enabled": true}}}))
        .send()
        .await
        .expect("create flag");
    assert_eq!(created.status().as_u16(), 201, "create flag: {}", created.text().await.unwrap_or_default());
    let token: Value = http
        .post(format!("{base}/api/v1/tokens"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "bench", "scope": "sdk", "environment": "production"}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let sdk = token["token"].as_str().expect("sdk token").to_owned();
    let server_before = rss_kib(&pid);
    let client_before = rss_kib("self");

    // Subscribers: each its own connection; at most CONNECTING of them opening at once.
    let clients: Vec<reqwest::Client> = (0..CLIENTS)
        .map(|_| reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().expect("client"))
        .collect();
    let (tx, mut rx) = mpsc::unbounded_channel::<Receipt>();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
    let (snapshots_tx, mut snapshots_rx) = mpsc::unbounded_channel::<()>();
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let url = format!("{base}/api/v1/sdk/stream");
    let connect_started = Instant::now();
    for subscriber in 0..subscribers {
        let client = clients[subscriber % CLIENTS].clone();
        let (tx, ready_tx, snapshots_tx) = (tx.clone(), ready_tx.clone(), snapshots_tx.clone());
        let (connecting, url, sdk) = (connecting.clone(), url.clone(), sdk.clone());
        tokio::spawn(async move {
            let permit = connecting.acquire_owned().await.expect("semaphore");
            let resp = client.get(url).bearer_auth(sdk).send().await.expect("open stream");
            assert!(resp.status().is_success(), "stream: {}", resp.status());
            let mut body = resp.bytes_stream();
            let mut buffer = String::new();
            let mut permit = Some(permit);
            while let Some(Ok(chunk)) = body.next().await {
                // Timed when the bytes arrive, before any parsing.
                let at = Instant::now();
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let is_patch = block.contains("event: patch");
                    let is_snapshot = block.contains("event: snapshot");
                    if is_snapshot && permit.is_some() {
                        drop(permit.take());
                        let _ = ready_tx.send(());
                        continue;
                    }
                    if is_snapshot {
                        // Fell behind and was resynchronised: counts, but is reported.
                        let _ = snapshots_tx.send(());
                    }
                    if (is_patch || is_snapshot)
                        && let Ok(data) = serde_json::from_str::<Value>(&block_data(&block))
                        && let Some(enabled) = checkout_enabled(&data)
                    {
                        let _ = tx.send(Receipt { subscriber, at, enabled });
                    }
                }
            }
        });
    }
    drop((tx, ready_tx, snapshots_tx));
    for connected in 0..subscribers {
        if tokio::time::timeout(DEADLINE, ready_rx.recv()).await.ok().flatten().is_none() {
            panic!("only {connected} of {subscribers} subscribers got their snapshot");
        }
    }
    let connect_time = connect_started.elapsed();
    // Let the server settle (tasks parked, buffers returned) before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_after = rss_kib(&pid);
    let client_after = rss_kib("self");

    let reason = [("X-Dimmer-Reason", "bench")];
    let mut kills = Vec::with_capacity(subscribers * rounds);
    let mut from_request = Vec::with_capacity(subscribers * rounds);
    let mut restores = Vec::with_capacity(subscribers * rounds);
    let mut early = 0usize;
    let mut first_early = 0usize;
    let mut round_p99 = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let post = |action: &str| {
            let request =
                http.post(format!("{base}/api/v1/flags/{FLAG}/environments/production/{action}")).bearer_auth(ADMIN);
            reason.iter().fold(request, |r, (k, v)| r.header(*k, *v)).send()
        };
        let sent = Instant::now();
        let resp = post("kill").await.expect("kill");
        let acked = Instant::now();
        assert_eq!(resp.status().as_u16(), 200, "kill");
        let answer: Value = resp.json().await.expect("kill json");
        assert_eq!(answer["changed"], json!(true), "kill changed nothing: {answer}");
        let times = collect(&mut rx, subscribers, false, &format!("kill of round {round}")).await;
        if times.iter().min().is_some_and(|first| *first < acked) {
            first_early += 1;
        }
        let mut this_round: Vec<Duration> = times.iter().map(|at| at.saturating_duration_since(acked)).collect();
        early += times.iter().filter(|at| **at < acked).count();
        from_request.extend(times.iter().map(|at| at.saturating_duration_since(sent)));
        kills.extend_from_slice(&this_round);
        this_round.sort();
        round_p99.push(percentile(&this_round, 99.0));

        let resp = post("restore").await.expect("restore");
        let acked = Instant::now();
        assert_eq!(resp.status().as_u16(), 200, "restore");
        let times = collect(&mut rx, subscribers, true, &format!("restore of round {round}")).await;
        restores.extend(times.iter().map(|at| at.saturating_duration_since(acked)));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut resyncs = 0usize;
    while snapshots_rx.try_recv().is_ok() {
        resyncs += 1;
    }
    kills.sort();
    from_request.sort();
    restores.sort();

    println!(
        "subscribers: {subscribers}, rounds: {rounds}, kill receipts: {}, connected in {:.1} s",
        kills.len(),
        connect_time.as_secs_f64()
    );
    for (name, values) in
        [("kill ack→receipt", &kills), ("kill request→receipt", &from_request), ("restore ack→receipt", &restores)]
    {
        println!(
            "{name:<22} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(percentile(values, 50.0)),
            ms(percentile(values, 99.0)),
            ms(values.last().copied().unwrap_or_default())
        );
    }
    let per_round: Vec<String> = round_p99.iter().map(|d| format!("{:.1}", ms(*d))).collect();
    println!("kill ack→receipt p99 per round (ms): {}", per_round.join(", "));
    println!("kill receipts before the writer saw its ack: {early} of {} (counted as 0 ms)", kills.len());
    println!("rounds whose first receipt preceded the ack: {first_early} of {rounds}");
    println!("snapshots instead of patches after connecting: {resyncs}");
    let per = |before: u64, after: u64| after.saturating_sub(before) as f64 / subscribers.max(1) as f64;
    println!(
        "server RSS: {:.1} MiB before subscribers, {:.1} MiB with {subscribers} connected: {:.1} KiB per subscriber",
        server_before as f64 / 1024.0,
        server_after as f64 / 1024.0,
        per(server_before, server_after)
    );
    println!(
        "client RSS (this process, not the server): {:.1} MiB → {:.1} MiB: {:.1} KiB per subscription",
        client_before as f64 / 1024.0,
        client_after as f64 / 1024.0,
        per(client_before, client_after)
    );

    // Stop the server: closing its stdin ends it gracefully (streams get `shutdown`).
    drop(child.stdin.take());
    if tokio::time::timeout(Duration::from_secs(30), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
