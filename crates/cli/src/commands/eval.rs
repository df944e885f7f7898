//! `dimmer eval`: evaluate flags from a flags file for one context or several, as JSON.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use dimmer_engine::{
    CompiledFlags, Context, Evaluation, Explain, NoTrace, Reason, compile, evaluate_traced_with_random,
};
use serde_json::{Value, json};

use super::FileArg;
use crate::files;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The flags file (JSON or YAML; `-` for standard input).
    #[arg(long)]
    file: FileArg,
    /// The flag key; repeat it to evaluate several flags.
    #[arg(long, required_unless_present = "all")]
    flag: Vec<String>,
    /// Evaluate every flag of the file, in file order.
    #[arg(long, conflicts_with = "flag")]
    all: bool,
    /// The environment; may be left out when the file has one.
    #[arg(long)]
    env: Option<String>,
    /// The evaluation context as a JSON object, or a JSON array of contexts to evaluate each
    /// flag for; or `@path` to a JSON file holding either.
    #[arg(long, default_value = "{}")]
    context: String,
    /// The random number for rollouts that bucket by `$random` [default: a fresh one per
    /// evaluation].
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
    let (contexts, several_contexts) = parse_contexts(&args.context)?;
    let keys: Vec<String> = if args.all { flags.keys().map(str::to_owned).collect() } else { args.flag.clone() };

    let mut results = Vec::with_capacity(contexts.len() * keys.len());
    let mut failed = false;
    for (i, context) in contexts.iter().enumerate() {
        for key in &keys {
            let mut out = evaluate_one(&flags, key, context, &env, &args);
            failed |= out["reason"] == Reason::Error.as_str();
            if several_contexts {
                out["context"] = json!(i);
            }
            results.push(out);
        }
    }
    // One flag for one context prints one object, as it always has; anything else a list.
    let printed = match results.pop() {
        Some(only) if results.is_empty() && !several_contexts && !args.all => only,
        last => {
            results.extend(last);
            Value::Array(results)
        }
    };
    println!("{}", serde_json::to_string_pretty(&printed)?);
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// One evaluation as printed: `{flag, value, variant, reason}`, the error, and with `--explain`
/// the environment, the deciding rule and the steps.
fn evaluate_one(flags: &CompiledFlags, key: &str, context: &Context, env: &str, args: &EvalArgs) -> Value {
    // The engine has no random source: each evaluation gets a fresh number for `$random`, as in
    // the SDK, unless --random pins it. Without a working OS source `$random` is skipped, which
    // only matters to rollouts that bucket by it.
    let random = args.random.or_else(|| getrandom::u32().ok());
    let mut trace = Explain::default();
    let eval: Evaluation<'_> = if args.explain {
        evaluate_traced_with_random(flags, key, context, random, &mut trace)
    } else {
        evaluate_traced_with_random(flags, key, context, random, &mut NoTrace)
    };
    let mut out = json!({
        "flag": key,
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
    out
}

/// The `--context` argument: one object, or an array of objects (`true` in the second place).
fn parse_contexts(arg: &str) -> Result<(Vec<Context>, bool)> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading context file {path}"))?,
        None => arg.to_owned(),
    };
    let value: Value = serde_json::from_str(&text).context("--context: not valid JSON")?;
    match value {
        Value::Object(map) => Ok((vec![Context::from_map(map)], false)),
        Value::Array(items) => {
            let contexts = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Object(map) => Ok(Context::from_map(map)),
                    other => {
                        bail!("--context[{i}]: expected a JSON object, found {}", dimmer_engine::ops::kind_of(&other))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((contexts, true))
        }
        other => bail!(
            "--context: expected a JSON object or an array of objects, found {}",
            dimmer_engine::ops::kind_of(&other)
        ),
    }
}
