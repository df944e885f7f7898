//! Evidence for the guards by simulation: seeded rollouts through the real decision function
//! (`dimmer_domain::guard::assess`), judged every 10 seconds as the loop sees SDK flushes.
//!
//! A/A: no real difference, so every dial-down is a false alarm. Regression: the treatment's
//! error rate doubles (1% → 2%) or its latency grows by half, at 5% exposure; how often and how
//! fast the guard dials down.
//!
//! Run: `cargo bench -p dimmer-server --bench guard_simulation` (add `-- --runs 200` for a
//! quick look). Prints markdown tables for docs/guards.md.

use std::collections::BTreeMap;

use dimmer_domain::guard::{Action, Compare, Guard, Verdict, Window, assess};
use dimmer_domain::outcomes::Aggregate;
use dimmer_domain::simulate::Rng;
use dimmer_protocol::SketchBuilder;

#[derive(Clone, Copy)]
struct Arm {
    error_rate: f64,
    /// Latency is log-normal: this median (ms) and a log-sd of 0.5.
    median_ms: f64,
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    control: Arm,
    treatment: Arm,
    /// Requests per second across all users.
    rps: u64,
    /// Exposure at each stage, and how long each stage runs.
    stages: &'static [f64],
    stage_secs: u64,
}

const TICK_SECS: u64 = 10;

/// One rollout: returns when (seconds from the start) the guard dialed down, if it did, and
/// whether a sample-ratio mismatch was reported.
fn rollout(s: &Scenario, guards: &[Guard], latency: bool, rng: &mut Rng) -> (Option<u64>, bool) {
    let mut srm = false;
    for (i, exposure) in s.stages.iter().enumerate() {
        let mut variants: BTreeMap<String, Aggregate> = BTreeMap::new();
        let no_queries = dimmer_domain::guard::QueryResults::new();
        let mut sketches = [SketchBuilder::default(), SketchBuilder::default()];
        for tick in 1..=s.stage_secs / TICK_SECS {
            let n = s.rps * TICK_SECS;
            let treated = rng.binomial(n, *exposure);
            for (k, (name, arm, count)) in
                [("on", s.treatment, treated), ("off", s.control, n - treated)].into_iter().enumerate()
            {
                let errors = rng.binomial(count, arm.error_rate);
                let a = variants.entry(name.to_owned()).or_default();
                a.evaluations += count;
                a.errors += errors;
                a.successes += count - errors;
                if latency {
                    for _ in 0..count {
                        sketches[k].record(arm.median_ms * (0.5 * rng.normal()).exp());
                    }
                    a.latency = sketches[k].build();
                }
            }
            let window = Window {
                variants: &variants,
                control: "off",
                age_ms: (tick * TICK_SECS * 1000) as i64,
                expected_treatment_share: Some(*exposure),
                queries: &no_queries,
            };
            let a = assess(&window, guards);
            srm |= a.sample_ratio.as_ref().is_some_and(|r| r.mismatch);
            if let Verdict::Regression { action: Action::DialDown, .. } = a.verdict {
                return (Some(i as u64 * s.stage_secs + tick * TICK_SECS), srm);
            }
        }
    }
    (None, srm)
}

fn guard(metric: &str, max: f64) -> Guard {
    Guard {
        name: metric.into(),
        metric: metric.into(),
        compare: Compare::Relative,
        max,
        min_sample: 200,
        action: Action::DialDown,
        alpha: 0.01,
        data_deadline: None,
    }
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn minutes(secs: u64) -> String {
    format!("{:.1} min", secs as f64 / 60.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: u64 = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(1000);
    let base = Arm { error_rate: 0.01, median_ms: 50.0 };
    let full: &[f64] = &[0.01, 0.05, 0.25, 0.5];
    let five: &[f64] = &[0.05];
    let errors = [guard("error_rate", 0.25)];
    let p95 = [guard("latency_p95", 0.2)];
    let cases: Vec<(Scenario, &[Guard], bool)> = vec![
        (
            Scenario {
                name: "A/A, error rate, whole plan (1%, 5%, 25%, 50%; 1 h each)",
                control: base,
                treatment: base,
                rps: 50,
                stages: full,
                stage_secs: 3600,
            },
            &errors,
            false,
        ),
        (
            Scenario {
                name: "A/A, latency p95, whole plan",
                control: base,
                treatment: base,
                rps: 20,
                stages: full,
                stage_secs: 3600,
            },
            &p95,
            true,
        ),
        (
            Scenario {
                name: "errors 1% → 2% at 5%, 20 req/s",
                control: base,
                treatment: Arm { error_rate: 0.02, ..base },
                rps: 20,
                stages: five,
                stage_secs: 3600,
            },
            &errors,
            false,
        ),
        (
            Scenario {
                name: "errors 1% → 2% at 5%, 50 req/s",
                control: base,
                treatment: Arm { error_rate: 0.02, ..base },
                rps: 50,
                stages: five,
                stage_secs: 3600,
            },
            &errors,
            false,
        ),
        (
            Scenario {
                name: "errors 1% → 2% at 5%, 200 req/s",
                control: base,
                treatment: Arm { error_rate: 0.02, ..base },
                rps: 200,
                stages: five,
                stage_secs: 3600,
            },
            &errors,
            false,
        ),
        (
            Scenario {
                name: "latency +50% at 5%, 20 req/s",
                control: base,
                treatment: Arm { median_ms: 75.0, ..base },
                rps: 20,
                stages: five,
                stage_secs: 3600,
            },
            &p95,
            true,
        ),
        (
            Scenario {
                name: "latency +50% at 5%, 50 req/s",
                control: base,
                treatment: Arm { median_ms: 75.0, ..base },
                rps: 50,
                stages: five,
                stage_secs: 3600,
            },
            &p95,
            true,
        ),
    ];
    println!("| scenario | guard | runs | dialed down | rate | median time | p95 time | SRM alerts |");
    println!("|---|---|---|---|---|---|---|---|");
    for (case, (scenario, guards, latency)) in cases.iter().enumerate() {
        let mut rng = Rng::new(0xD1_77E5 + case as u64);
        let mut times = Vec::new();
        let mut srm_alerts = 0;
        for _ in 0..runs {
            let (t, srm) = rollout(scenario, guards, *latency, &mut rng);
            times.extend(t);
            srm_alerts += u64::from(srm);
        }
        times.sort_unstable();
        let g = &guards[0];
        println!(
            "| {} | {} relative ≤ +{:.0}%, α = {} | {runs} | {} | {:.1}% | {} | {} | {srm_alerts} |",
            scenario.name,
            g.metric,
            g.max * 100.0,
            g.alpha,
            times.len(),
            100.0 * times.len() as f64 / runs as f64,
            if times.is_empty() { "–".into() } else { minutes(percentile(&times, 0.5)) },
            if times.is_empty() { "–".into() } else { minutes(percentile(&times, 0.95)) },
        );
    }
}
