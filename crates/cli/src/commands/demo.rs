//! `dimmer demo`: a guarded release, start to finish, in under a minute. An embedded server on
//! a temporary data dir, a flag released with the standard plan and guards, simulated users
//! evaluating it through the Rust SDK and reporting outcomes, and (in the regression and latency
//! scenarios) the guard dialing the flag down. Time on the server runs 450 times faster than
//! the wall clock, so each one-hour stage lasts eight seconds.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use dimmer_domain::Clock;
use dimmer_domain::simulate::Rng;
use dimmer_engine::model::EnvironmentConfig;
use dimmer_sdk::{Client, Context, Outcome};
use dimmer_server::app::Options;
use dimmer_store::{ChangeMeta, Scope};
use serde_json::{Value, json};

/// Simulated time per real second.
const SPEED: i64 = 450;
/// Requests per real second across all simulated users.
const REQUESTS_PER_SECOND: u64 = 4_000;
/// The demo gives up after this long (real time).
const DEADLINE: Duration = Duration::from_secs(55);
const FLAG: &str = "new-checkout";
const ENV: &str = "production";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// No real difference: the plan runs to 100%.
    Healthy,
    /// The new checkout fails four times as often: the error-rate guard dials it down.
    Regression,
    /// The new checkout is 60% slower: the latency guard dials it down.
    Latency,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// What the new code does to users.
    #[arg(long, value_enum, default_value = "regression")]
    scenario: Scenario,
    /// Seeds the simulated users (the same seed gives the same users and outcomes).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Print a JSON summary on standard output (progress goes to standard error).
    #[arg(long)]
    json: bool,
    /// Where to write the SVG chart of exposure and per-variant error rate over time.
    #[arg(long, default_value = "dimmer-demo.svg")]
    chart: PathBuf,
    /// Send the release and guard events to this webhook too (`URL` or `slack=URL`; repeatable).
    #[arg(long)]
    webhook: Vec<String>,
}

/// Server time, running [`SPEED`] times faster than the wall clock from the demo's start.
#[derive(Debug)]
struct FastClock {
    started: Instant,
    origin_ms: i64,
}

impl Clock for FastClock {
    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX / SPEED);
        self.origin_ms + elapsed * SPEED
    }
}

/// One point of the chart and the progress line.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Point {
    simulated_seconds: f64,
    exposure_percent: f64,
    treatment_error_rate: Option<f64>,
    control_error_rate: Option<f64>,
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> Result<ExitCode> {
    let say = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let dir = std::env::temp_dir().join(format!("dimmer-demo-{}-{}", std::process::id(), args.seed));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let outcome = run_demo(&args, &dir, &say).await;
    // The data dir is scratch: remove it whatever happened.
    let _ = std::fs::remove_dir_all(&dir);
    let summary = outcome?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        say(format!(
            "\n{}: {} evaluations; final exposure {}%{}. Chart: {}",
            summary["scenario"].as_str().unwrap_or_default(),
            summary["evaluations"],
            summary["final_percent"],
            if summary["dialed_down"] == true {
                format!(", dialed down by the guard after {} simulated seconds", summary["detected_after_seconds"])
            } else {
                String::new()
            },
            args.chart.display()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_demo(args: &DemoArgs, dir: &std::path::Path, say: &dyn Fn(String)) -> Result<Value> {
    let real_start = Instant::now();
    let origin_ms = dimmer_domain::SystemClock.now_ms();
    let clock: Arc<dyn Clock> = Arc::new(FastClock { started: real_start, origin_ms });
    let store = dimmer_store::open(None, dir, clock.clone()).await.context("opening the demo's SQLite store")?;
    dimmer_server::app::first_start(store.as_ref()).await?;
    let admin = dimmer_server::service::tokens::generate_token().context("generating a token")?;
    dimmer_server::service::tokens::bootstrap_admin(store.as_ref(), Some(&admin)).await?;
    let meta = ChangeMeta { actor: "demo".into(), reason: Some("dimmer demo".into()) };
    let sdk_token =
        dimmer_server::service::tokens::create_token(store.as_ref(), "demo-sdk", Scope::Sdk, Some(ENV.into()), &meta)
            .await
            .context("creating the sdk token")?;
    // The canary stage exposes the `internal` segment: give it the simulated staff.
    let internal = store.get_segment("internal").await?.context("the internal segment")?;
    let mut segment = internal.segment.clone();
    segment.included = (0..50).map(|i| format!("staff-{i}")).collect();
    store.update_segment("internal", &segment, internal.version, &meta).await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let webhooks = args
        .webhook
        .iter()
        .map(|w| dimmer_server::service::webhooks::Target::parse(w).map_err(|e| anyhow::anyhow!("--webhook {w}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let options = Options {
        clock: clock.clone(),
        webhooks,
        plan_interval: Duration::from_millis(200),
        // One person's demo on their own machine: nothing to protect it from.
        rate_limits: dimmer_server::service::limits::RateLimits::off(),
        ..Options::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dimmer_server::app::run_with(listener, store.clone(), options, async move {
        let _ = stop_rx.await;
    }));
    say(format!(
        "dimmer demo ({:?}, seed {}): server on {base}, time x{SPEED} (a 1h stage lasts 8s)",
        args.scenario, args.seed
    ));

    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String, body: Value| {
        let request = http.request(method, format!("{base}{path}")).bearer_auth(&admin).json(&body);
        async move {
            let response = request.send().await?;
            let status = response.status();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("{status}: {value}");
            }
            Ok::<Value, anyhow::Error>(value)
        }
    };
    call(
        reqwest::Method::POST,
        "/api/v1/flags".into(),
        json!({"key": FLAG, "kind": "release", "owner": "team-checkout",
            "description": "The new checkout flow", "environments": {ENV: {"default": {"variant": "off"}}}}),
    )
    .await
    .context("creating the flag")?;
    let guards = json!([
        {"name": "errors", "metric": "error_rate", "compare": "relative", "max": 0.25, "min_sample": 200,
         "action": "dial_down", "data_deadline": "30m"},
        {"name": "latency", "metric": "latency_p95", "compare": "relative", "max": 0.2, "min_sample": 200,
         "action": "dial_down", "data_deadline": "30m"},
    ]);
    call(
        reqwest::Method::POST,
        format!("/api/v1/flags/{FLAG}/environments/{ENV}/plan"),
        json!({"template": "standard", "guards": guards, "reason": "dimmer demo"}),
    )
    .await
    .context("starting the plan")?;
    say(format!(
        "flag {FLAG}: standard plan (internal, 1%, 5%, 25%, 50%, 100%; 1h each) with guards errors (+25%) and latency p95 (+20%)"
    ));

    let client = Client::builder(&base, &sdk_token)
        .metrics_flush_interval(Duration::from_millis(100))
        .build()
        .context("building the SDK client")?;
    client.wait_ready(Duration::from_secs(5)).await.context("the SDK never became ready")?;

    let (t_errors, t_latency) = match args.scenario {
        Scenario::Healthy => (0.01, 1.0),
        Scenario::Regression => (0.04, 1.0),
        Scenario::Latency => (0.01, 1.6),
    };
    let mut rng = Rng::new(args.seed);
    let mut evaluations: u64 = 0;
    let mut points: Vec<Point> = Vec::new();
    let mut last_report = Instant::now();
    let mut samples: u64 = 0;
    let mut dialed_down_at: Option<f64> = None;
    let mut released = false;
    let plan_started = clock.now_ms();
    let tick = Duration::from_millis(10);
    let per_tick = REQUESTS_PER_SECOND / 100;
    while real_start.elapsed() < DEADLINE {
        for _ in 0..per_tick {
            let user = if rng.uniform() < 0.02 {
                format!("staff-{}", rng.next_u64() % 50)
            } else {
                format!("user-{}", rng.next_u64() % 1_000_000)
            };
            let details = client.bool_details(FLAG, &Context::with_key(user), false);
            evaluations += 1;
            let on = details.value;
            let (p, scale) = if on { (t_errors, t_latency) } else { (0.01, 1.0) };
            let latency_ms = 50.0 * scale * (0.5 * rng.normal()).exp();
            let outcome = if rng.uniform() < p { Outcome::Error } else { Outcome::Success };
            client.record_outcome(&details, outcome, Some(Duration::from_secs_f64(latency_ms / 1000.0)));
        }
        tokio::time::sleep(tick).await;
        // A chart point four times a second; a progress line every second.
        if last_report.elapsed() < Duration::from_millis(250) {
            continue;
        }
        last_report = Instant::now();
        samples += 1;
        let view = call(reqwest::Method::GET, format!("/api/v1/flags/{FLAG}/metrics?env={ENV}&window=1h"), Value::Null)
            .await
            .unwrap_or(Value::Null);
        let plan = call(reqwest::Method::GET, format!("/api/v1/flags/{FLAG}/environments/{ENV}/plan"), Value::Null)
            .await
            .unwrap_or(Value::Null);
        let flag =
            call(reqwest::Method::GET, format!("/api/v1/flags/{FLAG}"), Value::Null).await.unwrap_or(Value::Null);
        let exposure = exposure_percent(&flag["environments"][ENV]);
        let rate = |variant: &str| {
            view["variants"]
                .as_array()
                .and_then(|vs| vs.iter().find(|v| v["variant"] == variant))
                .and_then(|v| v["error_rate"].as_f64())
        };
        let simulated = (clock.now_ms() - plan_started) as f64 / 1000.0;
        let point = Point {
            simulated_seconds: simulated,
            exposure_percent: exposure,
            treatment_error_rate: rate("on"),
            control_error_rate: rate("off"),
        };
        points.push(point);
        let finished = plan["status"] == "released" || (plan["status"] == "paused" && exposure == 0.0);
        if samples.is_multiple_of(4) || finished {
            let canary = flag["environments"][ENV]["exposure"]["segments"].as_array().is_some_and(|s| !s.is_empty());
            say(format!(
                "  t={:>5.1}h  stage {}/{} {:<8}  exposure {:>5.1}%{}  evaluations {:>7}  errors on {} / off {}  p95 on {} / off {}",
                simulated / 3600.0,
                plan["stage"].as_u64().unwrap_or(0) + 1,
                plan["stages"].as_array().map_or(6, Vec::len),
                plan["status"].as_str().unwrap_or("?"),
                exposure,
                if canary { " + internal" } else { "           " },
                evaluations,
                percent(point.treatment_error_rate),
                percent(point.control_error_rate),
                millis(&view, "on"),
                millis(&view, "off"),
            ));
        }
        if plan["status"] == "released" {
            released = true;
            break;
        }
        if plan["status"] == "paused" && exposure == 0.0 && dialed_down_at.is_none() {
            dialed_down_at = Some(simulated);
            say("  the guard dialed the flag down: everyone is back on the control variant".into());
            // A little longer, so the chart shows the flat line after the dial-down.
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                tokio::time::sleep(tick).await;
            }
            break;
        }
    }
    client.close().await;
    let audit = call(reqwest::Method::GET, format!("/api/v1/audit?flag={FLAG}&limit=50"), Value::Null)
        .await
        .unwrap_or(Value::Null);
    let regression = audit
        .as_array()
        .or_else(|| audit["entries"].as_array())
        .and_then(|entries| entries.iter().find(|e| e["action"] == "guard.regression"))
        .cloned();
    let flag = call(reqwest::Method::GET, format!("/api/v1/flags/{FLAG}"), Value::Null).await.unwrap_or(Value::Null);
    let final_percent = exposure_percent(&flag["environments"][ENV]);
    let view = call(reqwest::Method::GET, format!("/api/v1/flags/{FLAG}/metrics?env={ENV}&window=30d"), Value::Null)
        .await
        .unwrap_or(Value::Null);
    let _ = stop_tx.send(());
    let _ = server.await;
    std::fs::write(&args.chart, chart(&points, args.scenario))
        .with_context(|| format!("writing the chart to {}", args.chart.display()))?;
    if !released && dialed_down_at.is_none() && args.scenario == Scenario::Healthy {
        say("  the demo's minute ran out before the plan finished".into());
    }
    Ok(json!({
        "scenario": format!("{:?}", args.scenario).to_lowercase(),
        "seed": args.seed,
        "final_percent": final_percent,
        "released": released,
        "dialed_down": dialed_down_at.is_some(),
        "detected_after_seconds": dialed_down_at.map(|s| s.round()),
        "evaluations": evaluations,
        "real_seconds": (real_start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "guard": regression.as_ref().map(|e| json!({"reason": e["reason"], "details": e["after"]})),
        "variants": view["variants"],
        "chart": args.chart.display().to_string(),
        "points": points,
    }))
}

/// The exposure the server's own release code reports for an environment's configuration.
fn exposure_percent(cfg: &Value) -> f64 {
    let cfg = serde_json::from_value::<EnvironmentConfig>(cfg.clone()).ok();
    dimmer_domain::release::weight_percent(dimmer_domain::release::exposure_weight(cfg.as_ref()))
}

fn millis(view: &Value, variant: &str) -> String {
    view["variants"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["variant"] == variant))
        .and_then(|v| v["latency_ms"]["p95"].as_f64())
        .map_or("  -  ".into(), |ms| format!("{ms:>3.0} ms"))
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or("   -  ".into(), |r| format!("{:>5.2}%", r * 100.0))
}

/// Exposure (left axis, 0–100%) and each variant's cumulative error rate (right axis) over
/// simulated hours, as a self-contained SVG.
fn chart(points: &[Point], scenario: Scenario) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 360.0, 60.0, 60.0, 40.0, 40.0);
    let max_t = points.iter().map(|p| p.simulated_seconds).fold(1.0, f64::max);
    let max_rate =
        points.iter().flat_map(|p| [p.treatment_error_rate, p.control_error_rate]).flatten().fold(0.02, f64::max) * 1.2;
    let x = |t: f64| left + (w - left - right) * t / max_t;
    let y = |fraction: f64| top + (h - top - bottom) * (1.0 - fraction);
    let line = |values: Vec<(f64, f64)>, color: &str, dash: &str| {
        let path: Vec<String> = values.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
        format!(
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}" points="{}"/>"#,
            path.join(" ")
        )
    };
    let exposure =
        line(points.iter().map(|p| (p.simulated_seconds, p.exposure_percent / 100.0)).collect(), "#2b6cb0", "");
    let treatment = line(
        points.iter().filter_map(|p| p.treatment_error_rate.map(|r| (p.simulated_seconds, r / max_rate))).collect(),
        "#c53030",
        "",
    );
    let control = line(
        points.iter().filter_map(|p| p.control_error_rate.map(|r| (p.simulated_seconds, r / max_rate))).collect(),
        "#718096",
        "6 4",
    );
    let mut ticks = String::new();
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        ticks.push_str(&format!(
            r##"<text x="{:.0}" y="{:.0}" text-anchor="end" font-size="11">{:.0}%</text><text x="{:.0}" y="{:.0}" font-size="11">{:.1}%</text><line x1="{left}" x2="{:.0}" y1="{:.0}" y2="{:.0}" stroke="#e2e8f0"/>"##,
            left - 6.0,
            y(f) + 4.0,
            f * 100.0,
            w - right + 6.0,
            y(f) + 4.0,
            f * max_rate * 100.0,
            w - right,
            y(f),
            y(f)
        ));
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="24" font-size="15">dimmer demo ({scenario:?}): exposure and error rate per variant over {:.1} simulated hours</text>
{ticks}
{exposure}
{treatment}
{control}
<text x="{left}" y="{:.0}" font-size="11" fill="#2b6cb0">exposure (left axis)</text>
<text x="{:.0}" y="{:.0}" font-size="11" fill="#c53030">error rate, new variant (right axis)</text>
<text x="{:.0}" y="{:.0}" font-size="11" fill="#718096">error rate, control (dashed)</text>
</svg>
"##,
        max_t / 3600.0,
        h - 12.0,
        left + 160.0,
        h - 12.0,
        left + 400.0,
        h - 12.0,
    )
}
