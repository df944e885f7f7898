//! The console with a large catalogue: 10,000 flags and 100,000 audit entries (defaults) in a
//! SQLite store, served by the real server on a loopback port. Measures, per request and over
//! several rounds, the time from sending a request to the last byte of the page (an upper bound
//! on the server's time: loopback and HTTP parsing are included) for the flag list (first page,
//! a text search, a filter by kind and state, a sort by last change, the first page after a flag
//! changed) and a flag's page (any flag, and the one flag holding half the audit log); the first
//! list request after start; and the bytes of a first load of the list (the page, its stylesheet
//! and its script). Each figure is the median over the rounds, with its range. See
//! `docs/benchmarks.md`.
//!
//! `cargo bench -p dimmer-server --bench console_pages -- [FLAGS] [AUDIT_ENTRIES] [REQUESTS] [ROUNDS]`

#![allow(clippy::expect_used, reason = "a benchmark whose set-up fails must stop and say why")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dimmer_engine::Flag;
use dimmer_engine::model::{EnvironmentConfig, FlagKind, Serve};
use dimmer_store::ChangeMeta;

const ADMIN: &str = "dmr_bench_admin_token_0123456789";
const KINDS: [FlagKind; 3] = [FlagKind::Release, FlagKind::Experiment, FlagKind::Operational];

fn arg(n: usize, default: usize) -> usize {
    std::env::args().skip(1).filter(|a| !a.starts_with('-')).nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn flag(i: usize, revision: usize) -> Flag {
    let mut flag = Flag {
        kind: KINDS[i % KINDS.len()],
        description: format!("Flag number {i}: what it does, for people (revision {revision})"),
        owner: Some(format!("team-{}", i % 40)),
        tags: vec![format!("area-{}", i % 12), "bench".into()],
        ..Flag::default()
    };
    for env in ["development", "staging", "production"] {
        let cfg = EnvironmentConfig {
            enabled: !(i + revision).is_multiple_of(3),
            default: Some(Serve::variant(if i.is_multiple_of(2) { "on" } else { "off" })),
            ..EnvironmentConfig::default()
        };
        flag.environments.insert(env.to_owned(), cfg);
    }
    flag
}

/// The path of the `i`th request of a case.
type PathOf = Box<dyn Fn(usize) -> String>;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "ranks")]
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn meta_of(reason: &str) -> ChangeMeta {
    ChangeMeta { actor: "seed".into(), reason: Some(reason.into()) }
}

#[tokio::main]
async fn main() {
    let flags = arg(0, 10_000);
    let audit_entries = arg(1, 100_000);
    let requests = arg(2, 200);
    let rounds = arg(3, 5);
    let dir = std::env::temp_dir().join(format!("dimmer-console-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let store = dimmer_store::open(None, &dir, Arc::new(dimmer_domain::SystemClock)).await.expect("open SQLite store");
    dimmer_server::app::first_start(store.as_ref()).await.expect("environments");
    dimmer_server::service::tokens::bootstrap_admin(store.as_ref(), Some(ADMIN)).await.expect("admin token");

    // The catalogue, written through the store (every write audited): creations, then updates
    // until the audit log holds the entries asked for, half of them spread over the flags and
    // half on one flag (`flag-00000`, the flag page with the longest history).
    let seeding = Instant::now();
    let meta = meta_of("benchmark catalogue");
    for i in 0..flags {
        store.create_flag(&format!("flag-{i:05}"), &flag(i, 0), &meta).await.expect("create");
    }
    let updates = audit_entries.saturating_sub(flags);
    let spread_until = flags + updates - updates / 2;
    let mut written = flags;
    let mut revision = 1;
    while written < spread_until {
        for i in 0..flags {
            if written >= spread_until {
                break;
            }
            let key = format!("flag-{i:05}");
            store
                .update_flag(&key, &flag(i, revision), i64::try_from(revision).expect("small"), &meta)
                .await
                .expect("update");
            written += 1;
        }
        revision += 1;
    }
    let mut version = store.get_flag("flag-00000").await.expect("read").expect("seeded").version;
    for revision in 0..updates / 2 {
        store.update_flag("flag-00000", &flag(0, revision + 1000), version, &meta).await.expect("update");
        version += 1;
        written += 1;
    }
    eprintln!("seeded {flags} flags and {written} audit entries in {:.0} s", seeding.elapsed().as_secs_f64());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dimmer_server::app::run_with(
        listener,
        store.clone(),
        // Rate limits off: the benchmark measures pages, not the limiter.
        dimmer_server::app::Options {
            rate_limits: dimmer_server::service::limits::RateLimits::off(),
            ..dimmer_server::app::Options::default()
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let signed = http.post(format!("{base}/sign-in")).form(&[("token", ADMIN)]).send().await.expect("sign in");
    let cookie = signed
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned();

    let get = |path: String| {
        let http = http.clone();
        let cookie = cookie.clone();
        let url = format!("{base}{path}");
        async move {
            let started = Instant::now();
            let resp = http.get(&url).header("cookie", cookie).send().await.expect("request");
            assert!(resp.status().is_success(), "{url}: {}", resp.status());
            let bytes = resp.bytes().await.expect("body").len();
            (started.elapsed(), bytes)
        }
    };

    // The first list request after start builds the catalogue from every flag.
    let (cold, first_page) = get("/flags".into()).await;
    println!("first list request after start (reads every flag once): {:.1} ms", cold.as_secs_f64() * 1e3);
    let css = get("/assets/console.css".into()).await.1;
    let js = get("/assets/console.js".into()).await.1;
    println!(
        "first load of the list: page {first_page} B + stylesheet {css} B + script {js} B = {} B (uncompressed)",
        first_page + css + js
    );

    let cases: Vec<(&str, PathOf)> = vec![
        ("list, first page", Box::new(|_| "/flags".to_owned())),
        ("list, search (key/description/owner/tag)", Box::new(|i| format!("/flags?q=team-{}", i % 40))),
        (
            "list, filter kind + on in production",
            Box::new(|_| "/flags?kind=experiment&env=production&state=on".to_owned()),
        ),
        ("list, sorted by last change, page 20", Box::new(|_| "/flags?sort=updated&page=20".to_owned())),
        ("flag page (production)", Box::new(move |i| format!("/flags/flag-{:05}?env=production", (i * 7919) % flags))),
        ("flag page, the flag with half the audit log", Box::new(|_| "/flags/flag-00000?env=production".to_owned())),
    ];
    // Before each request of this case one flag changes (untimed): the list reads that flag again.
    let changed = "list, first page, one flag changed before each request";
    println!("| request | p50 ms (median of {rounds} rounds, range) | p99 ms (median, range) |");
    println!("|---|---:|---:|");
    let mut toggles = 0_usize;
    let mut change_one = || {
        toggles += 1;
        let store = store.clone();
        async move {
            let key = format!("flag-{:05}", (toggles * 31) % flags);
            let mut record = store.get_flag(&key).await.expect("read").expect("seeded");
            if let Some(cfg) = record.flag.environments.get_mut("production") {
                cfg.enabled = !cfg.enabled;
            }
            store.update_flag(&key, &record.flag, record.version, &meta_of("toggle")).await.expect("toggle");
        }
    };
    let cases: Vec<(&str, PathOf)> =
        cases.into_iter().chain(std::iter::once((changed, Box::new(|_| "/flags".to_owned()) as PathOf))).collect();
    for (name, path) in &cases {
        for i in 0..20 {
            get(path(i)).await;
        }
        let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let mut times = Vec::with_capacity(requests);
            for i in 0..requests {
                if *name == changed {
                    change_one().await;
                }
                times.push(get(path(i)).await.0);
            }
            times.sort();
            p50s.push(percentile(&times, 50.0));
            p99s.push(percentile(&times, 99.0));
        }
        let range = |v: &[f64]| {
            let (lo, hi) = v.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            format!("{lo:.1}–{hi:.1}")
        };
        println!(
            "| {name} | {:.1} ({}) | {:.1} ({}) |",
            median(p50s.clone()),
            range(&p50s),
            median(p99s.clone()),
            range(&p99s)
        );
    }
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
}
