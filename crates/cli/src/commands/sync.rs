//! Flags as code: `dimmer export` writes the server's flags and segments as a flags file, and
//! `dimmer apply` makes the server match a flags file — showing the diff first, and writing
//! each changed flag or segment only if it is still at the version the diff was computed from.
//!
//! `apply` changes what the file says and nothing else: it never archives or deletes, and an
//! environment the file does not list for a flag is left as it is on the server (so a file
//! exported with `--env production` manages production only). A plan saved with
//! `apply --dry-run --json > plan.json` can be applied later with `apply --plan plan.json`:
//! if anything it touches changed in between, that write is refused as a conflict.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use dimmer_engine::{Flag, FlagSet, Segment};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::remote::{Remote, runtime};
use crate::client::{Client, segment};
use crate::files;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only this environment's configuration of each flag.
    #[arg(long)]
    env: Option<String>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The flags file to apply (JSON or YAML; `-` for standard input).
    #[arg(short = 'f', long = "file", required_unless_present = "plan", conflicts_with = "plan")]
    file: Option<PathBuf>,
    /// Apply a plan saved from `apply --dry-run --json` instead.
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Show the diff and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Why (recorded in the audit log of each change).
    #[arg(long)]
    reason: Option<String>,
}

/// The server's flags (not archived) and segments as a flag set, with their versions.
struct ServerFlags {
    set: FlagSet,
    flag_versions: std::collections::HashMap<String, i64>,
    segment_versions: std::collections::HashMap<String, i64>,
}

/// The model's fields of an API view (which adds key, version and bookkeeping).
fn model<T: serde::de::DeserializeOwned>(mut view: Value) -> Result<T> {
    if let Value::Object(map) = &mut view {
        for field in ["key", "version", "archived", "created_at", "updated_at"] {
            map.remove(field);
        }
    }
    serde_json::from_value(view).context("the server sent a definition this dimmer cannot read")
}

async fn fetch(client: &Client) -> Result<ServerFlags> {
    let mut out = ServerFlags {
        set: FlagSet::default(),
        flag_versions: Default::default(),
        segment_versions: Default::default(),
    };
    let flags = client.send(Method::GET, "/api/v1/flags", None, &[]).await?;
    for f in flags["flags"].as_array().into_iter().flatten() {
        let key = f["key"].as_str().unwrap_or_default().to_owned();
        out.flag_versions.insert(key.clone(), f["version"].as_i64().unwrap_or(0));
        out.set.flags.insert(key, model::<Flag>(f.clone())?);
    }
    let segments = client.send(Method::GET, "/api/v1/segments", None, &[]).await?;
    for s in segments["segments"].as_array().into_iter().flatten() {
        let key = s["key"].as_str().unwrap_or_default().to_owned();
        out.segment_versions.insert(key.clone(), s["version"].as_i64().unwrap_or(0));
        out.set.segments.insert(key, model::<Segment>(s.clone())?);
    }
    Ok(out)
}

pub fn export(remote: &Remote, args: ExportArgs) -> Result<ExitCode> {
    let client = Client::new(&remote.server, remote.token.clone())?;
    let mut set = runtime()?.block_on(fetch(&client))?.set;
    if let Some(env) = &args.env {
        for flag in set.flags.values_mut() {
            flag.environments.retain(|name, _| name == env);
        }
    }
    if remote.json {
        println!("{}", serde_json::to_string_pretty(&set)?);
    } else {
        print!("{}", serde_yaml_ng::to_string(&set)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// One write of a plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Change {
    /// `flag` or `segment`.
    kind: String,
    key: String,
    /// `create` or `update`.
    action: String,
    /// The version the diff was computed from (updates only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    /// The changed fields: `path: before → after`.
    diff: Vec<String>,
    /// The definition to write.
    definition: Value,
}

/// A reviewed set of writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Plan {
    changes: Vec<Change>,
}

/// Field-level differences between two JSON documents, as `path: before → after` lines.
fn diff(path: &str, before: &Value, after: &Value, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                diff(&p, va, b.get(k).unwrap_or(&Value::Null), out);
            }
            for (k, vb) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                diff(&p, &Value::Null, vb, out);
            }
        }
        (a, b) if a != b => out.push(format!("{path}: {a} → {b}")),
        _ => {}
    }
}

/// The writes that make the server match `wanted` (environments not listed for a flag are
/// kept from the server).
fn plan(server: &ServerFlags, wanted: &FlagSet) -> Result<Plan> {
    let mut plan = Plan::default();
    // Segments first: flags may use them.
    for (key, seg) in &wanted.segments {
        let after = serde_json::to_value(seg)?;
        match server.set.segments.get(key) {
            None => plan.changes.push(Change {
                kind: "segment".into(),
                key: key.clone(),
                action: "create".into(),
                version: None,
                diff: Vec::new(),
                definition: after,
            }),
            Some(current) => {
                let mut d = Vec::new();
                diff("", &serde_json::to_value(current)?, &after, &mut d);
                if !d.is_empty() {
                    plan.changes.push(Change {
                        kind: "segment".into(),
                        key: key.clone(),
                        action: "update".into(),
                        version: server.segment_versions.get(key).copied(),
                        diff: d,
                        definition: after,
                    });
                }
            }
        }
    }
    for (key, flag) in &wanted.flags {
        match server.set.flags.get(key) {
            None => plan.changes.push(Change {
                kind: "flag".into(),
                key: key.clone(),
                action: "create".into(),
                version: None,
                diff: Vec::new(),
                definition: serde_json::to_value(flag)?,
            }),
            Some(current) => {
                let mut merged = flag.clone();
                for (env, config) in &current.environments {
                    if !merged.environments.contains_key(env) {
                        merged.environments.insert(env.clone(), config.clone());
                    }
                }
                let after = serde_json::to_value(&merged)?;
                let mut d = Vec::new();
                diff("", &serde_json::to_value(current)?, &after, &mut d);
                if !d.is_empty() {
                    plan.changes.push(Change {
                        kind: "flag".into(),
                        key: key.clone(),
                        action: "update".into(),
                        version: server.flag_versions.get(key).copied(),
                        diff: d,
                        definition: after,
                    });
                }
            }
        }
    }
    Ok(plan)
}

/// The created flags and segments whose keys break the key rule, as `flags.KEY: reason`. The
/// server refuses them, so `apply` names them all before writing anything; updates of flags
/// stored before the rule are left alone.
fn bad_new_keys(plan: &Plan) -> Vec<String> {
    plan.changes
        .iter()
        .filter(|c| c.action == "create")
        .filter_map(|c| {
            let map = if c.kind == "segment" { "segments" } else { "flags" };
            dimmer_engine::keys::check_key(&c.key)
                .err()
                .map(|e| format!("{map}{}: {e}", dimmer_engine::compile::path_key(&c.key)))
        })
        .collect()
}

fn show(plan: &Plan) {
    if plan.changes.is_empty() {
        println!("no changes: the server matches the file");
        return;
    }
    for c in &plan.changes {
        match c.action.as_str() {
            "create" => println!("+ create {} {}", c.kind, c.key),
            _ => println!("~ update {} {} (version {})", c.kind, c.key, c.version.unwrap_or(0)),
        }
        for line in &c.diff {
            println!("    {line}");
        }
    }
}

/// Writes one change; `Ok(None)` when written, `Ok(Some(why))` when refused.
async fn write(client: &Client, c: &Change, reason: &[(&str, String)]) -> Result<Option<String>> {
    let base = if c.kind == "segment" { "/api/v1/segments" } else { "/api/v1/flags" };
    let mut body = c.definition.clone();
    if let Value::Object(map) = &mut body {
        map.insert("key".into(), json!(c.key));
    }
    let result = match (c.action.as_str(), c.version) {
        ("create", _) => client.send(Method::POST, base, Some(&body), reason).await,
        (_, Some(version)) => {
            let mut headers = reason.to_vec();
            headers.push(("if-match", format!("\"{version}\"")));
            let path = format!("{base}/{}", segment(&c.key));
            client.send(Method::PUT, &path, Some(&body), &headers).await
        }
        _ => bail!("{} {}: an update without the version it is based on", c.kind, c.key),
    };
    Ok(result.err().map(|e| format!("{e:#}")))
}

pub fn apply(remote: &Remote, args: ApplyArgs) -> Result<ExitCode> {
    let client = Client::new(&remote.server, remote.token.clone())?;
    let rt = runtime()?;
    let plan = match (&args.file, &args.plan) {
        (Some(file), _) => {
            let wanted = files::load_flag_set(file)?;
            let server = rt.block_on(fetch(&client))?;
            plan(&server, &wanted)?
        }
        (None, Some(saved)) => {
            let text = files::read_text(saved)?;
            serde_json::from_str::<Plan>(&text).with_context(|| format!("{}: not a saved plan", saved.display()))?
        }
        (None, None) => bail!("give a flags file (-f FILE) or a saved plan (--plan FILE)"),
    };
    let bad = bad_new_keys(&plan);
    if !bad.is_empty() {
        for line in &bad {
            eprintln!("error: {line}");
        }
        bail!("{} new key(s) break the key rule (docs/flags.md#keys); nothing was written", bad.len());
    }
    if args.dry_run {
        if remote.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            show(&plan);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !remote.json {
        show(&plan);
    }
    let reason: Vec<(&str, String)> = args.reason.iter().map(|r| ("x-dimmer-reason", r.clone())).collect();
    let mut results = Vec::new();
    let mut failed = false;
    for c in &plan.changes {
        let refused = rt.block_on(write(&client, c, &reason))?;
        if !remote.json {
            match &refused {
                None => println!("{}d {} {}", c.action, c.kind, c.key),
                Some(why) => eprintln!("refused: {} {}: {why}", c.kind, c.key),
            }
        }
        failed |= refused.is_some();
        results.push(
            json!({"kind": c.kind, "key": c.key, "action": c.action, "applied": refused.is_none(), "error": refused}),
        );
    }
    if remote.json {
        println!("{}", serde_json::to_string_pretty(&json!({"results": results}))?);
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn diff_names_each_changed_field_by_path() {
        let mut d = Vec::new();
        diff(
            "",
            &json!({"owner": "a", "environments": {"production": {"enabled": false}}}),
            &json!({"owner": "b", "environments": {"production": {"enabled": true}}, "tags": ["x"]}),
            &mut d,
        );
        assert_eq!(
            d,
            ["owner: \"a\" → \"b\"", "environments.production.enabled: false → true", "tags: null → [\"x\"]"]
        );
    }
}
