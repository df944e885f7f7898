//! `dimmer lint`: check flag files offline against the engine's validation and the flag policy,
//! and list every problem with file, path and (for policy rules) the rule's id.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use dimmer_engine::compile::path_key;
use dimmer_engine::policy::{Policy, declares_kind};
use serde_json::{Value, json};

use super::FileArg;
use crate::files;

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Flag files (JSON or YAML).
    #[arg(required = true)]
    files: Vec<FileArg>,
    /// A policy file (dimmer-policy.yaml; docs/POLICY.md) to check the flags against
    /// [default: the default policy, which has no naming or required-field rules].
    #[arg(long, env = "DIMMER_POLICY")]
    policy: Option<std::path::PathBuf>,
}

/// Reads and validates a policy file, naming the field of any problem.
pub(crate) fn load_policy(path: Option<&Path>) -> Result<Policy> {
    let Some(path) = path else { return Ok(Policy::default()) };
    let text = files::read_text(path)?;
    dimmer_server::service::policy::parse(&text).map_err(|message| anyhow::anyhow!("{}: {message}", path.display()))
}

/// One problem: where, what, and the policy rule when it is one.
struct Problem {
    severity: &'static str,
    path: String,
    rule: Option<&'static str>,
    message: String,
}

/// The problems of one flag set: the engine's diagnostics, then the policy's violations of each
/// flag (key and required fields; the plan-required rule needs the server's plans and is
/// checked there). `document` is the file as parsed, to see whether `kind` was written out.
fn problems(set: &dimmer_engine::FlagSet, document: &Value, policy: &Policy) -> Vec<Problem> {
    let mut out: Vec<Problem> = dimmer_engine::validate(set)
        .into_iter()
        .map(|d| Problem {
            severity: match d.severity {
                dimmer_engine::Severity::Error => "error",
                dimmer_engine::Severity::Warning => "warning",
            },
            path: d.path,
            rule: None,
            message: d.message,
        })
        .collect();
    for (key, flag) in &set.flags {
        let kind_declared = document.get("flags").and_then(|f| f.get(key)).is_some_and(declares_kind);
        for v in policy.check_new_flag(key, flag, kind_declared) {
            let base = format!("flags{}", path_key(key));
            let path = if v.path == "key" { base } else { format!("{base}.{}", v.path) };
            out.push(Problem { severity: "error", path, rule: Some(v.rule), message: v.message });
        }
    }
    out
}

pub fn run(args: LintArgs, json_output: bool) -> Result<ExitCode> {
    let policy = load_policy(args.policy.as_deref()).context("reading the policy")?;
    let mut failed = false;
    let mut report = Vec::new();
    for file in &args.files {
        let loaded = files::read_text(file).and_then(|text| {
            let format = files::Format::detect(file, &text);
            let set = files::parse::<dimmer_engine::FlagSet>(&text, format).map_err(anyhow::Error::msg)?;
            let document = files::parse::<Value>(&text, format).unwrap_or(Value::Null);
            Ok((set, document))
        });
        let found = match loaded {
            Ok((set, document)) => problems(&set, &document, &policy),
            Err(err) => {
                vec![Problem { severity: "error", path: String::new(), rule: None, message: format!("{err:#}") }]
            }
        };
        failed |= found.iter().any(|p| p.severity == "error");
        for p in &found {
            if json_output {
                report.push(json!({"file": file.display().to_string(), "severity": p.severity, "path": p.path,
                    "rule": p.rule, "message": p.message}));
            } else {
                let rule = p.rule.map(|r| format!(" [{r}]")).unwrap_or_default();
                let path = if p.path.is_empty() { String::new() } else { format!("{}: ", p.path) };
                eprintln!("{}: {}: {path}{}{rule}", file.display(), p.severity, p.message);
            }
        }
    }
    if json_output {
        println!("{}", serde_json::to_string_pretty(&json!({"ok": !failed, "problems": report}))?);
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
