//! `dimmer eval`: evaluate one flag from a flags file for a context, as JSON.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use dimmer_engine::{Context, Explain, Reason, compile, evaluate_traced};
use serde_json::{Value, json};

use super::FileArg;
use crate::files;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The flags file (JSON or YAML; `-` for standard input).
    #[arg(long)]
    file: FileArg,
    /// The flag key.
    #[arg(long)]
    flag: String,
    /// The environment; may be left out when the file has one.
    #[arg(long)]
    env: Option<String>,
    /// The evaluation context as a JSON object, or `@path` to a JSON file.
    #[arg(long, default_value = "{}")]
    context: String,
    /// A random number for rollouts that bucket by `$random`.
    #[arg(long)]
    random: Option<u32>,
    /// Also say which target, rule, clause or bucket decided.
    #[arg(long)]
    explain: bool,
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let set = files::load_flag_set(&args.file)?;
    let envs: BTreeSet<&str> = set.flags.values().flat_map(|f| f.environments.keys().map(String::as_str)).collect();
    let env = match (&args.env, envs.len()) {
        (Some(env), _) if envs.contains(env.as_str()) || envs.is_empty() => env.clone(),
        (Some(env), _) => {
            bail!("unknown environment \"{env}\" (the file has: {})", envs.into_iter().collect::<Vec<_>>().join(", "))
        }
        (None, 0) => "default".to_owned(),
        (None, 1) => envs.iter().next().map(|e| (*e).to_owned()).unwrap_or_default(),
        (None, _) => bail!(
            "the file has several environments ({}): choose one with --env",
            envs.into_iter().collect::<Vec<_>>().join(", ")
        ),
    };
    let (flags, diagnostics) = compile(&set, &env);
    if super::report(&args.file, &diagnostics) {
        bail!("{} is invalid: fix the errors above", args.file.display());
    }
    let context = parse_context(&args.context)?;
    let context = match args.random {
        Some(r) => context.with_random(r),
        None => context,
    };
    let mut trace = Explain::default();
    let eval = evaluate_traced(&flags, &args.flag, &context, &mut trace);
    let mut out = json!({
        "flag": args.flag,
        "value": eval.value,
        "variant": eval.variant,
        "reason": eval.reason.as_str(),
    });
    if let Some(code) = eval.error {
        out["errorCode"] = json!(code.as_str());
        out["errorMessage"] = json!(eval.error_message);
    }
    if args.explain {
        out["environment"] = json!(env);
        out["rule"] = json!(eval.rule);
        if let Some(id) = eval.rule_id {
            out["ruleId"] = json!(id);
        }
        out["explanation"] = json!(trace.0);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if eval.reason == Reason::Error { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn parse_context(arg: &str) -> Result<Context> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading context file {path}"))?,
        None => arg.to_owned(),
    };
    let value: Value = serde_json::from_str(&text).context("--context: not valid JSON")?;
    match value {
        Value::Object(map) => Ok(Context::from_map(map)),
        other => bail!("--context: expected a JSON object, found {}", dimmer_engine::ops::kind_of(&other)),
    }
}
