//! Kill to subscriber: N SSE subscribers (default 10,000) on one server, K kill/restore rounds
//! (default 5). For every subscriber, the time from the kill's acknowledgement (the 200 reaching
//! the writer) to its receipt of the `patch` that shows the flag off. Prints p50/p99/max over all
//! receipts and the server's memory per subscriber (see `docs/benchmarks.md`).
//!
//! `cargo bench -p dimmer-server --bench kill_fanout -- [SUBSCRIBERS] [ROUNDS]`
//!
//! Several processes, all this binary, told their role by `KILL_FANOUT_ROLE`: the server
//! (embedded SQLite in a temporary directory), which prints its address on stdout; subscriber
//! processes of at most 15,000 subscriptions each, each connecting from an address of its own
//! (127.0.0.2, 127.0.0.3, …: one address has some 28,000 ephemeral ports towards the server's
//! one port); and the parent, which writes and collects the receipts the subscriber processes
//! print. Every child stops when its stdin closes. So the server's resident memory
//! (`/proc/<pid>/status`) holds no client connection, and 100,000 subscribers need no process
//! with more than 100,000 open files but the server (each raises its soft open-files limit to
//! what it needs; the hard limit, `ulimit -Hn`, must allow it). Receipt and acknowledgement
//! times are wall-clock microseconds, one clock for all processes on the machine.

#![allow(clippy::expect_used, reason = "a benchmark whose set-up fails must stop and say why")]

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Semaphore, mpsc};

const ADMIN: &str = "dmr_bench_admin_token_0123456789";
const ROLE: &str = "KILL_FANOUT_ROLE";
/// The open files a child process needs, set by the parent.
const FILES: &str = "KILL_FANOUT_FILES";
/// A subscriber process's share: the server's URL, the sdk token, its first subscriber's number,
/// how many it opens and the address it connects from.
const URL: &str = "KILL_FANOUT_URL";
const TOKEN: &str = "KILL_FANOUT_TOKEN";
const FIRST: &str = "KILL_FANOUT_FIRST";
const COUNT: &str = "KILL_FANOUT_COUNT";
const ADDRESS: &str = "KILL_FANOUT_ADDRESS";
const FLAG: &str = "checkout";
/// Subscriptions per subscriber process: under a common open-files hard limit (20,000) and the
/// ephemeral ports of one client address (about 28,000).
const PER_PROCESS: usize = 15_000;
/// Connections being opened at once by all subscriber processes together, well under the
/// listener's backlog.
const CONNECTING: usize = 600;
/// reqwest clients a process spreads its subscriptions over (one connection per subscription).
const CLIENTS: usize = 8;
/// How long every subscriber has to receive one change before the run is declared failed.
const DEADLINE: Duration = Duration::from_secs(120);

/// One receipt: which subscriber, when its chunk arrived (µs since the epoch), and the state of
/// the flag it showed.
struct Receipt {
    subscriber: usize,
    at: u64,
    enabled: bool,
}

/// Wall-clock microseconds: comparable between the processes of one machine.
fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
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

fn since(at: u64, from: u64) -> Duration {
    Duration::from_micros(at.saturating_sub(from))
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

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

#[tokio::main]
async fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("server") => serve().await,
        Ok("subscribers") => subscribe().await,
        _ => drive().await,
    }
}

/// Resolves when the parent closes our stdin (or dies).
async fn parent_gone() {
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
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
    // Subscriber processes connect to it from addresses of their own (127.0.0.2, …).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("http://{}", listener.local_addr().expect("addr"));
    // Ten thousand subscribers with one token: the rate limits are not what is measured.
    let options = dimmer_server::app::Options {
        rate_limits: dimmer_server::service::limits::RateLimits::off(),
        ..dimmer_server::app::Options::default()
    };
    dimmer_server::app::run_with(listener, store, options, parent_gone()).await.expect("serve");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A subscriber process: opens its share of subscriptions, prints `ready` once each has its
/// snapshot, then one line per receipt (`r SUBSCRIBER ENABLED MICROS`) and per resynchronising
/// snapshot (`s`), until stdin closes.
async fn subscribe() {
    let url = env(URL);
    let sdk = env(TOKEN);
    let first: usize = env(FIRST).parse().expect("first subscriber");
    let count: usize = env(COUNT).parse().expect("subscriber count");
    let address: IpAddr = env(ADDRESS).parse().expect("client address");
    let connecting: usize = std::env::var("KILL_FANOUT_CONNECTING").ok().and_then(|n| n.parse().ok()).unwrap_or(100);
    raise_nofile(count as u64 + 200);
    let clients: Vec<reqwest::Client> = (0..CLIENTS)
        .map(|_| {
            reqwest::Client::builder()
                .no_proxy()
                .local_address(address)
                .pool_max_idle_per_host(0)
                .build()
                .expect("client")
        })
        .collect();
    let (out, mut lines) = mpsc::unbounded_channel::<String>();
    let ready = Arc::new(AtomicUsize::new(0));
    let connecting = Arc::new(Semaphore::new(connecting));
    for subscriber in first..first + count {
        let client = clients[subscriber % CLIENTS].clone();
        let (out, ready, connecting, url, sdk) =
            (out.clone(), ready.clone(), connecting.clone(), url.clone(), sdk.clone());
        tokio::spawn(async move {
            let permit = connecting.acquire_owned().await.expect("semaphore");
            let resp = client.get(url).bearer_auth(sdk).send().await.expect("open stream");
            assert!(resp.status().is_success(), "stream: {}", resp.status());
            let mut body = resp.bytes_stream();
            let mut buffer = String::new();
            let mut permit = Some(permit);
            while let Some(Ok(chunk)) = body.next().await {
                // Timed when the bytes arrive, before any parsing.
                let at = now_us();
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let is_patch = block.contains("event: patch");
                    let is_snapshot = block.contains("event: snapshot");
                    if is_snapshot && permit.is_some() {
                        drop(permit.take());
                        if ready.fetch_add(1, Ordering::Relaxed) + 1 == count {
                            let _ = out.send("ready".to_owned());
                        }
                        continue;
                    }
                    if is_snapshot {
                        // Fell behind and was resynchronised: counts, but is reported.
                        let _ = out.send("s".to_owned());
                    }
                    if (is_patch || is_snapshot)
                        && let Ok(data) = serde_json::from_str::<Value>(&block_data(&block))
                        && let Some(enabled) = checkout_enabled(&data)
                    {
                        let _ = out.send(format!("r {subscriber} {} {at}", u8::from(enabled)));
                    }
                }
            }
        });
    }
    drop(out);
    let mut stdout = tokio::io::stdout();
    let write = async {
        while let Some(mut line) = lines.recv().await {
            line.push('\n');
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = write => {}
        () = parent_gone() => {}
    }
}

/// Waits until every subscriber has shown `enabled`; returns the receipt times (µs).
async fn collect(rx: &mut mpsc::UnboundedReceiver<Receipt>, subscribers: usize, enabled: bool, what: &str) -> Vec<u64> {
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

/// The writer; the server and the subscribers run in child processes.
async fn drive() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let subscribers: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let own = std::env::current_exe().expect("own path");

    let mut server = tokio::process::Command::new(&own)
        .env(ROLE, "server")
        .env(FILES, (subscribers as u64 + 1_000).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server process");
    let pid = server.id().expect("server pid").to_string();
    let mut lines = BufReader::new(server.stdout.take().expect("server stdout")).lines();
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

    // Subscriber processes, each from an address of its own, reporting over their stdout.
    let (tx, mut rx) = mpsc::unbounded_channel::<Receipt>();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
    let resyncs = Arc::new(AtomicUsize::new(0));
    let processes = subscribers.div_ceil(PER_PROCESS).max(1);
    let mut children = Vec::with_capacity(processes);
    let connect_started = Instant::now();
    for process in 0..processes {
        let first = process * PER_PROCESS;
        let count = PER_PROCESS.min(subscribers - first);
        let address = Ipv4Addr::new(127, 0, 0, u8::try_from(process + 2).expect("at most 250 subscriber processes"));
        let mut child = tokio::process::Command::new(&own)
            .env(ROLE, "subscribers")
            .env(URL, format!("{base}/api/v1/sdk/stream"))
            .env(TOKEN, &sdk)
            .env(FIRST, first.to_string())
            .env(COUNT, count.to_string())
            .env(ADDRESS, address.to_string())
            .env("KILL_FANOUT_CONNECTING", (CONNECTING / processes).max(1).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start a subscriber process");
        let mut lines = BufReader::new(child.stdout.take().expect("subscriber stdout")).lines();
        let (tx, ready_tx, resyncs) = (tx.clone(), ready_tx.clone(), resyncs.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut fields = line.split(' ');
                match (fields.next(), fields.next(), fields.next(), fields.next()) {
                    (Some("ready"), ..) => {
                        let _ = ready_tx.send(());
                    }
                    (Some("s"), ..) => {
                        resyncs.fetch_add(1, Ordering::Relaxed);
                    }
                    (Some("r"), Some(subscriber), Some(enabled), Some(at)) => {
                        let (Ok(subscriber), Ok(at)) = (subscriber.parse(), at.parse()) else { continue };
                        let _ = tx.send(Receipt { subscriber, at, enabled: enabled == "1" });
                    }
                    _ => eprintln!("subscriber process said: {line}"),
                }
            }
        });
        children.push(child);
    }
    drop((tx, ready_tx));
    for connected in 0..processes {
        if tokio::time::timeout(DEADLINE * 5, ready_rx.recv()).await.ok().flatten().is_none() {
            panic!("only {connected} of {processes} subscriber processes had all their snapshots");
        }
    }
    let connect_time = connect_started.elapsed();
    // Let the server settle (tasks parked, buffers returned) before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_after = rss_kib(&pid);
    let clients_rss: u64 = children.iter().filter_map(|c| c.id()).map(|pid| rss_kib(&pid.to_string())).sum();

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
        let sent = now_us();
        let resp = post("kill").await.expect("kill");
        let acked = now_us();
        assert_eq!(resp.status().as_u16(), 200, "kill");
        let answer: Value = resp.json().await.expect("kill json");
        assert_eq!(answer["changed"], json!(true), "kill changed nothing: {answer}");
        let times = collect(&mut rx, subscribers, false, &format!("kill of round {round}")).await;
        if times.iter().min().is_some_and(|first| *first < acked) {
            first_early += 1;
        }
        let mut this_round: Vec<Duration> = times.iter().map(|at| since(*at, acked)).collect();
        early += times.iter().filter(|at| **at < acked).count();
        from_request.extend(times.iter().map(|at| since(*at, sent)));
        kills.extend_from_slice(&this_round);
        this_round.sort();
        round_p99.push(percentile(&this_round, 99.0));

        let resp = post("restore").await.expect("restore");
        let acked = now_us();
        assert_eq!(resp.status().as_u16(), 200, "restore");
        let times = collect(&mut rx, subscribers, true, &format!("restore of round {round}")).await;
        restores.extend(times.iter().map(|at| since(*at, acked)));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kills.sort();
    from_request.sort();
    restores.sort();

    println!(
        "subscribers: {subscribers} from {processes} processes, rounds: {rounds}, kill receipts: {}, connected in {:.1} s",
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
    println!("snapshots instead of patches after connecting: {}", resyncs.load(Ordering::Relaxed));
    let per = |kib: u64| kib as f64 / subscribers.max(1) as f64;
    println!(
        "server RSS: {:.1} MiB before subscribers, {:.1} MiB with {subscribers} connected: {:.1} KiB per subscriber",
        server_before as f64 / 1024.0,
        server_after as f64 / 1024.0,
        per(server_after.saturating_sub(server_before))
    );
    println!(
        "subscriber processes' RSS (not the server): {:.1} MiB in all, {:.1} KiB per subscription",
        clients_rss as f64 / 1024.0,
        per(clients_rss)
    );

    // Stop: closing the server's stdin ends it gracefully (streams get `shutdown`), then the
    // subscriber processes'.
    drop(server.stdin.take());
    if tokio::time::timeout(Duration::from_secs(60), server.wait()).await.is_err() {
        let _ = server.kill().await;
    }
    for mut child in children {
        drop(child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}
