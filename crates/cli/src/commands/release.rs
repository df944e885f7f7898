//! The release verbs: `plan`, `kill`, `dial-down`, `restore` and `template`, through the
//! server's release API.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::remote::{Remote, print, runtime};
use crate::client::{Client, segment};

#[derive(Debug, Args)]
pub struct Target {
    /// The flag key.
    key: String,
    /// The environment.
    #[arg(long)]
    env: String,
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Start a release plan: the flag turns on and serves the change to the first stage.
    Start {
        #[command(flatten)]
        target: Target,
        /// A template (standard, careful, quick, or a stored one); default: the one for the
        /// flag's kind.
        #[arg(long, conflicts_with = "stages")]
        template: Option<String>,
        /// Stages, e.g. "internal,1%,5%,25%,50%,100%" (a stage may carry its dwell: 5%@2h).
        #[arg(long)]
        stages: Option<String>,
        /// The minimum time in each stage, e.g. 30m (with --stages; default 1h).
        #[arg(long, requires = "stages")]
        dwell: Option<String>,
        /// A guard on every stage: METRIC:COMPARE:MAX[:ACTION[:MIN_SAMPLE]], e.g.
        /// error_rate:relative:25% or latency_p95:threshold:300:rollback (repeatable).
        #[arg(long = "guard")]
        guards: Vec<String>,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show a flag's plan.
    Status(Target),
    /// List every plan.
    List,
    /// Enter the next stage now.
    Advance(Step),
    /// Hold the plan.
    Pause(Step),
    /// Let a paused plan move on (the current stage's exposure is applied again).
    Resume(Step),
    /// Go back one stage (and pause), or to 0% with --to-zero (ending the plan).
    Rollback {
        #[command(flatten)]
        step: Step,
        /// Back to no exposure at all.
        #[arg(long)]
        to_zero: bool,
    },
}

#[derive(Debug, Args)]
pub struct Step {
    #[command(flatten)]
    target: Target,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    #[command(flatten)]
    target: Target,
    /// Why (required; recorded in the audit log and sent to webhooks).
    #[arg(long)]
    reason: String,
}

#[derive(Debug, Args)]
pub struct DialDownArgs {
    #[command(flatten)]
    target: Target,
    /// The exposure to cut to, in percent (e.g. 5 or 0.5).
    #[arg(long)]
    to: f64,
    /// Why (required; recorded in the audit log and sent to webhooks).
    #[arg(long)]
    reason: String,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    target: Target,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// List plan templates.
    List,
    /// Create or replace a template (admin).
    Create {
        /// Its name.
        name: String,
        /// Stages, e.g. "internal,1%,10%,100%".
        #[arg(long)]
        stages: String,
        /// The minimum time in each stage (default 1h).
        #[arg(long)]
        dwell: Option<String>,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Flag kinds for which it is the default (repeatable).
        #[arg(long = "default-for")]
        default_for: Vec<String>,
    },
}

fn base(t: &Target) -> String {
    format!("/api/v1/flags/{}/environments/{}", segment(&t.key), segment(&t.env))
}

fn plan_text(p: &Value) -> String {
    let mut out = format!(
        "{} in {}: {} at stage {}/{} ({}){}",
        p["flag"].as_str().unwrap_or(""),
        p["environment"].as_str().unwrap_or(""),
        p["status"].as_str().unwrap_or(""),
        p["stage"].as_u64().map_or(0, |s| s + 1),
        p["stages"].as_array().map_or(0, Vec::len),
        p["stage_label"].as_str().unwrap_or(""),
        p["template"].as_str().map(|t| format!(", template {t}")).unwrap_or_default(),
    );
    for (i, s) in p["stages"].as_array().into_iter().flatten().enumerate() {
        let here = if p["stage"].as_u64() == Some(i as u64) { "▶" } else { " " };
        let dwell = s["min_dwell_ms"].as_i64().unwrap_or(0);
        out.push_str(&format!(
            "\n {here} {:>2}. {:<24} dwell {}",
            i + 1,
            s["label"].as_str().unwrap_or(""),
            human(dwell)
        ));
    }
    let now_ms = dimmer_domain::Clock::now_ms(&dimmer_domain::SystemClock);
    if let Some(at) = p["entered_at"].as_i64() {
        out.push_str(&format!("\nin this stage since {} ({} ago)", date(at), human_span(now_ms.saturating_sub(at))));
    }
    if let Some(at) = p["advances_after"].as_i64() {
        let left = at.saturating_sub(now_ms);
        let when = if left > 0 { format!("in {}", human_span(left)) } else { "now".to_owned() };
        out.push_str(&format!("\nmay advance at {} ({when}) if its guards are healthy", date(at)));
    }
    out
}

/// A Unix-millisecond time as people read it: UTC, to the second (RFC 3339).
fn date(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} (Unix ms)"))
}

/// A duration as people say it, to the two largest units: `2h 5m`, `29m 58s`, `12s`.
fn human_span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m, sec) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m"), (sec, "s")]
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if parts.is_empty() { "0s".to_owned() } else { parts.join(" ") }
}

fn human(ms: i64) -> String {
    match ms {
        d if d % 86_400_000 == 0 && d > 0 => format!("{}d", d / 86_400_000),
        h if h % 3_600_000 == 0 && h > 0 => format!("{}h", h / 3_600_000),
        m if m % 60_000 == 0 && m > 0 => format!("{}m", m / 60_000),
        s if s % 1000 == 0 => format!("{}s", s / 1000),
        ms => format!("{ms}ms"),
    }
}

fn outcome_text(what: &str, t: &Target, v: &Value) -> String {
    let state = if v["enabled"] == true {
        format!("on, exposure {}%", v["exposure_percent"].as_f64().unwrap_or(0.0))
    } else {
        "off (everyone gets the off variant)".to_owned()
    };
    let changed = if v["changed"] == true { "" } else { " (nothing to change)" };
    let plan = v["plan"]
        .as_object()
        .map(|_| {
            format!(
                "; plan {} at stage {}",
                v["plan"]["status"].as_str().unwrap_or(""),
                v["plan"]["stage"].as_u64().map_or(0, |s| s + 1)
            )
        })
        .unwrap_or_default();
    format!("{what} {} in {}{changed}: {state}{plan}", t.key, t.env)
}

pub fn plan(remote: &Remote, cmd: PlanCommand) -> Result<ExitCode> {
    let client = Client::new(&remote.server, remote.token.clone())?;
    runtime()?.block_on(async {
        let (target, path, body, what) = match cmd {
            PlanCommand::List => {
                let list = client.send(Method::GET, "/api/v1/plans", None, &[]).await?;
                return print(remote, &list, |v| {
                    let plans: Vec<String> = v["plans"].as_array().into_iter().flatten().map(plan_text).collect();
                    if plans.is_empty() { "no plans".to_owned() } else { plans.join("\n\n") }
                });
            }
            PlanCommand::Status(t) => {
                let p = client.send(Method::GET, &format!("{}/plan", base(&t)), None, &[]).await?;
                return print(remote, &p, plan_text);
            }
            PlanCommand::Start { target, template, stages, dwell, guards, reason } => {
                let guards = guards.iter().map(|g| super::metrics::parse_guard(g)).collect::<Result<Vec<_>>>()?;
                let body =
                    json!({"template": template, "stages": stages, "dwell": dwell, "guards": guards, "reason": reason});
                let path = format!("{}/plan", base(&target));
                let v = client.send(Method::POST, &path, Some(&body), &[]).await?;
                return print(remote, &v, |v| {
                    format!("{}\n{}", outcome_text("started a plan on", &target, v), plan_text(&v["plan"]))
                });
            }
            PlanCommand::Advance(s) => (s.target, "advance", json!({"reason": s.reason}), "advanced"),
            PlanCommand::Pause(s) => (s.target, "pause", json!({"reason": s.reason}), "paused the plan of"),
            PlanCommand::Resume(s) => (s.target, "resume", json!({"reason": s.reason}), "resumed the plan of"),
            PlanCommand::Rollback { step, to_zero } => {
                (step.target, "rollback", json!({"reason": step.reason, "to_zero": to_zero}), "rolled back")
            }
        };
        let v = client.send(Method::POST, &format!("{}/plan/{path}", base(&target)), Some(&body), &[]).await?;
        print(remote, &v, |v| outcome_text(what, &target, v))
    })
}

pub fn kill(remote: &Remote, args: KillArgs) -> Result<ExitCode> {
    let client = Client::new(&remote.server, remote.token.clone())?;
    runtime()?.block_on(async {
        let body = json!({"reason": args.reason});
        let v = client.send(Method::POST, &format!("{}/kill", base(&args.target)), Some(&body), &[]).await?;
        print(remote, &v, |v| outcome_text("killed", &args.target, v))
    })
}

pub fn dial_down(remote: &Remote, args: DialDownArgs) -> Result<ExitCode> {
    let client = Client::new(&remote.server, remote.token.clone())?;
    runtime()?.block_on(async {
        let body = json!({"to": args.to, "reason": args.reason});
        let v = client.send(Method::POST, &format!("{}/dial-down", base(&args.target)), Some(&body), &[]).await?;
        print(remote, &v, |v| outcome_text("dialed down", &args.target, v))
    })
}

pub fn restore(remote: &Remote, args: RestoreArgs) -> Result<ExitCode> {
    let client = Client::new(&remote.server, remote.token.clone())?;
    runtime()?.block_on(async {
        let body = json!({"reason": args.reason});
        let v = client.send(Method::POST, &format!("{}/restore", base(&args.target)), Some(&body), &[]).await?;
        print(remote, &v, |v| outcome_text("restored", &args.target, v))
    })
}

pub fn template(remote: &Remote, cmd: TemplateCommand) -> Result<ExitCode> {
    let client = Client::new(&remote.server, remote.token.clone())?;
    runtime()?.block_on(async {
        match cmd {
            TemplateCommand::List => {
                let list = client.send(Method::GET, "/api/v1/templates", None, &[]).await?;
                print(remote, &list, |v| {
                    let mut out = format!("{:<16} {:<24} {:<52} {}", "NAME", "DEFAULT FOR", "STAGES", "DESCRIPTION");
                    for t in v["templates"].as_array().into_iter().flatten() {
                        let stages: Vec<String> = t["stages"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|s| format!("{}@{}", s["label"].as_str().unwrap_or(""), human(s["min_dwell_ms"].as_i64().unwrap_or(0))))
                            .collect();
                        let kinds: Vec<&str> = t["default_for"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                        out.push_str(&format!(
                            "\n{:<16} {:<24} {:<52} {}",
                            t["name"].as_str().unwrap_or(""),
                            if kinds.is_empty() { "-".to_owned() } else { kinds.join(",") },
                            stages.join(", "),
                            t["description"].as_str().unwrap_or("")
                        ));
                    }
                    out
                })
            }
            TemplateCommand::Create { name, stages, dwell, description, default_for } => {
                let body = json!({"name": name, "stages": stages, "dwell": dwell, "description": description, "default_for": default_for});
                let t = client.send(Method::POST, "/api/v1/templates", Some(&body), &[]).await?;
                print(remote, &t, |t| format!("stored template {}", t["name"].as_str().unwrap_or("")))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_times_read_as_dates_and_durations() {
        assert_eq!(date(1_800_000_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(human_span(30 * 60_000 - 2_000), "29m 58s");
        assert_eq!(human_span(2 * 3_600_000 + 5 * 60_000 + 7_000), "2h 5m");
        assert_eq!(human_span(12_000), "12s");
        assert_eq!(human_span(-5), "0s");
    }
}
