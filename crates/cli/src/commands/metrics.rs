//! `dimmer metrics`: a flag's outcome metrics per variant, and what its guards say;
//! `dimmer guards`: the guards standing on a flag; and the `--guard` shorthand they and
//! `plan start` take.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::remote::{Remote, print, runtime};
use crate::client::{Client, segment};

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// The flag key.
    key: String,
    /// The environment.
    #[arg(long)]
    env: String,
    /// How far back: 15m, 1h, 24h, 7d.
    #[arg(long, default_value = "1h")]
    window: String,
}

pub fn run(remote: &Remote, args: MetricsArgs) -> Result<ExitCode> {
    let client = Client::new(&remote.server, remote.token.clone())?;
    runtime()?.block_on(async {
        let path = format!(
            "/api/v1/flags/{}/metrics?env={}&window={}",
            segment(&args.key),
            segment(&args.env),
            segment(&args.window)
        );
        let v = client.send(Method::GET, &path, None, &[]).await?;
        print(remote, &v, text)
    })
}

#[derive(Debug, Subcommand)]
pub enum GuardsCommand {
    /// Show the guards standing on a flag in an environment.
    Show {
        /// The flag key.
        key: String,
        /// The environment.
        #[arg(long)]
        env: String,
    },
    /// Replace them: METRIC:COMPARE:MAX[:ACTION[:MIN_SAMPLE]] (repeatable; none removes them).
    Set {
        /// The flag key.
        key: String,
        /// The environment.
        #[arg(long)]
        env: String,
        /// A guard, e.g. error_rate:threshold:0.02:alert.
        #[arg(long = "guard")]
        guards: Vec<String>,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
}

pub fn guards(remote: &Remote, command: GuardsCommand) -> Result<ExitCode> {
    let client = Client::new(&remote.server, remote.token.clone())?;
    runtime()?.block_on(async {
        let (method, key, env, body) = match command {
            GuardsCommand::Show { key, env } => (Method::GET, key, env, None),
            GuardsCommand::Set { key, env, guards, reason } => {
                let guards = guards.iter().map(|g| parse_guard(g)).collect::<Result<Vec<_>>>()?;
                (Method::PUT, key, env, Some(json!({"guards": guards, "reason": reason})))
            }
        };
        let path = format!("/api/v1/flags/{}/environments/{}/guards", segment(&key), segment(&env));
        let v = client.send(method, &path, body.as_ref(), &[]).await?;
        print(remote, &v, |v| {
            let list: Vec<String> = v["guards"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| {
                    format!(
                        "  {}: {} {} {} -> {}",
                        g["name"].as_str().unwrap_or_default(),
                        g["metric"].as_str().unwrap_or_default(),
                        g["compare"].as_str().unwrap_or_default(),
                        g["max"],
                        g["action"].as_str().unwrap_or("dial_down")
                    )
                })
                .collect();
            if list.is_empty() {
                format!("no guards stand on {key} in {env}")
            } else {
                format!("guards standing on {key} in {env}:\n{}", list.join("\n"))
            }
        })
    })
}

/// The view as a table, then the guards' findings.
fn text(v: &Value) -> String {
    let mut out = format!(
        "{} in {} over the last {} (control: {})\n",
        v["flag"].as_str().unwrap_or_default(),
        v["environment"].as_str().unwrap_or_default(),
        window_text(v),
        v["control"].as_str().unwrap_or_default()
    );
    let empty = Vec::new();
    let variants = v["variants"].as_array().unwrap_or(&empty);
    if variants.is_empty() {
        out.push_str("no outcome metrics yet: is an SDK reporting for this environment?\n");
    } else {
        out.push_str(&format!(
            "{:<12} {:>12} {:>9} {:>10} {:>10} {:>10}  events\n",
            "VARIANT", "EVALUATIONS", "ERRORS", "ERROR %", "P50 MS", "P95 MS"
        ));
        for row in variants {
            let events: Vec<String> = row["events"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, e)| {
                            let rate = e["per_evaluation"].as_f64().unwrap_or(0.0);
                            // Events that carry values (ratings, amounts) show their mean too.
                            match e["mean"].as_f64().filter(|_| e["sum"].as_f64().is_some_and(|s| s != 0.0)) {
                                Some(mean) => format!("{k}={} ({rate:.2}/eval, mean {mean:.3})", e["count"]),
                                None => format!("{k}={} ({rate:.2}/eval)", e["count"]),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "{:<12} {:>12} {:>9} {:>10} {:>10} {:>10}  {}\n",
                row["variant"].as_str().unwrap_or_default(),
                row["evaluations"],
                row["errors"],
                percent(&row["error_rate"]),
                number(&row["latency_ms"]["p50"]),
                number(&row["latency_ms"]["p95"]),
                events.join(", ")
            ));
        }
    }
    for (kind, g) in v["guards"].as_object().into_iter().flatten() {
        let a = &g["assessment"];
        out.push_str(&format!(
            "\n{kind} guards ({}): {}\n",
            g["window"].as_str().unwrap_or_default(),
            a["verdict"]["verdict"].as_str().unwrap_or_default()
        ));
        for f in a["findings"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {:<16} {:<10} {:<12} treatment {} vs control {} (limit {}), n = {} / {}, log LR {:.2} of {:.2}\n",
                f["guard"].as_str().unwrap_or_default(),
                f["variant"].as_str().unwrap_or_default(),
                f["status"].as_str().unwrap_or_default(),
                number(&f["treatment"]),
                number(&f["control"]),
                number(&f["limit"]),
                f["treatment_n"],
                f["control_n"],
                f["log_likelihood_ratio"].as_f64().unwrap_or(0.0),
                f["log_threshold"].as_f64().unwrap_or(0.0),
            ));
        }
        if let Some(srm) = a["sample_ratio"].as_object() {
            out.push_str(&format!(
                "  sample ratio: {:.2}% on treatment, {:.2}% expected, p = {:.3e}{}\n",
                srm["observed"].as_f64().unwrap_or(0.0) * 100.0,
                srm["expected"].as_f64().unwrap_or(0.0) * 100.0,
                srm["p_value"].as_f64().unwrap_or(1.0),
                if srm["mismatch"] == true { "  MISMATCH" } else { "" }
            ));
        }
    }
    out.trim_end().to_owned()
}

fn window_text(v: &Value) -> String {
    let ms = v["until_ms"].as_i64().unwrap_or(0) - v["from_ms"].as_i64().unwrap_or(0);
    if ms % 3_600_000 == 0 { format!("{}h", ms / 3_600_000) } else { format!("{}m", ms / 60_000) }
}

fn percent(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |r| format!("{:.2}%", r * 100.0))
}

fn number(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| if x.abs() < 1.0 { format!("{x:.4}") } else { format!("{x:.1}") })
}

/// `METRIC:COMPARE:MAX[:ACTION[:MIN_SAMPLE]]`, e.g. `error_rate:relative:0.25` or
/// `latency_p95:threshold:300:rollback`, as the API's guard object.
pub fn parse_guard(spec: &str) -> Result<Value> {
    let parts: Vec<&str> = spec.split(':').collect();
    // `event:NAME` and `event_mean:NAME` carry a colon of their own.
    let (metric, rest) = match parts.as_slice() {
        [kind @ ("event" | "event_mean"), name, rest @ ..] => (format!("{kind}:{name}"), rest),
        [metric, rest @ ..] => ((*metric).to_owned(), rest),
        [] => bail!("--guard: empty"),
    };
    let [compare, max, tail @ ..] = rest else {
        bail!("--guard {spec:?}: expected METRIC:COMPARE:MAX[:ACTION[:MIN_SAMPLE]], e.g. error_rate:relative:0.25")
    };
    let max: f64 = max
        .trim_end_matches('%')
        .parse()
        .map_err(|_| anyhow::anyhow!("--guard {spec:?}: MAX {max:?} is not a number"))?;
    let max = if rest[1].ends_with('%') { max / 100.0 } else { max };
    let mut guard = json!({"name": metric.replace(':', "-"), "metric": metric, "compare": compare, "max": max});
    if let Some(action) = tail.first() {
        guard["action"] = json!(action);
    }
    if let Some(min) = tail.get(1) {
        guard["min_sample"] = json!(
            min.parse::<u64>().map_err(|_| anyhow::anyhow!("--guard {spec:?}: MIN_SAMPLE {min:?} is not a count"))?
        );
    }
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_shorthand() {
        assert_eq!(
            parse_guard("error_rate:relative:25%").unwrap(),
            json!({"name": "error_rate", "metric": "error_rate", "compare": "relative", "max": 0.25})
        );
        assert_eq!(
            parse_guard("event:checkout:relative:0.1:alert:500").unwrap(),
            json!({"name": "event-checkout", "metric": "event:checkout", "compare": "relative", "max": 0.1,
                "action": "alert", "min_sample": 500})
        );
        assert_eq!(
            parse_guard("event_mean:csat:absolute:0.2").unwrap(),
            json!({"name": "event_mean-csat", "metric": "event_mean:csat", "compare": "absolute", "max": 0.2})
        );
        assert!(parse_guard("error_rate").is_err());
        assert!(parse_guard("error_rate:relative:x").is_err());
    }
}
