//! `dimmer refs`: find flag keys in source code and report references to keys that do not
//! exist, to archived flags and to stale flags, each with `file:line`.
//!
//! The heuristic, documented in docs/POLICY.md: a reference to a known flag is a string literal
//! (in `"…"`, `'…'` or `` `…` ``) equal to its key; an unknown key is a string literal passed
//! first to an evaluation call (`bool_value("…"`, `is_enabled("…"`, `variation("…"`,
//! `getBooleanValue("…"` and the like; more with `--call`) that no flag has. Files are walked
//! as git would see them: `.gitignore`, `.ignore` and hidden files are skipped, as are binary
//! files and files over 1 MiB.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};

use super::remote::{Remote, runtime};
use crate::client::Client;
use crate::files;

/// Evaluation calls whose first string argument is a flag key, across the common SDKs
/// (Dimmer, OpenFeature, LaunchDarkly, Unleash, Flagsmith, Split). Matched without regard to case
/// or underscores, so each style of a name is listed once.
const CALLS: &[&str] = &[
    "bool_value",
    "string_value",
    "number_value",
    "int_value",
    "float_value",
    "json_value",
    "object_value",
    "is_enabled",
    "enabled",
    "variation",
    "variation_detail",
    "bool_variation",
    "string_variation",
    "int_variation",
    "float_variation",
    "json_variation",
    "get_variant",
    "get_boolean_value",
    "get_string_value",
    "get_number_value",
    "get_integer_value",
    "get_float_value",
    "get_object_value",
    "get_boolean_details",
    "has_feature",
    "get_treatment",
];

/// What makes `refs` exit with 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finding {
    /// A key in an evaluation call that no flag has.
    Unknown,
    /// A reference to an archived flag.
    Archived,
    /// A reference to a stale flag.
    Stale,
}

#[derive(Debug, Args)]
pub struct RefsArgs {
    /// The directory to scan.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Take the known keys from a flags file instead of the server (then archived and stale
    /// flags are not known: only unknown keys are reported).
    #[arg(long)]
    flags: Option<PathBuf>,
    /// Another evaluation call whose first string argument is a flag key (repeatable).
    #[arg(long = "call")]
    calls: Vec<String>,
    /// Exit with 1 when any of these is found (comma-separated: unknown, archived, stale).
    #[arg(long, value_enum, value_delimiter = ',')]
    fail_on: Vec<Finding>,
}

/// What is known about a key.
#[derive(Debug, Clone)]
enum Known {
    Live,
    Archived,
    Stale { owner: Option<String>, reasons: String },
}

/// One line that names a flag.
#[derive(Debug, Clone, Serialize)]
struct Reference {
    file: String,
    line: usize,
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    finding: Option<Finding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The string literals on a line, with what precedes each (to recognise calls). A literal ends
/// at the same quote on the same line; backslash escapes are skipped.
fn literals(line: &str) -> Vec<(usize, &str)> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let q = bytes[i];
        if q == b'"' || q == b'\'' || q == b'`' {
            let start = i + 1;
            let mut j = start;
            while j < bytes.len() && bytes[j] != q {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            if j >= bytes.len() {
                break;
            }
            // Quotes are ASCII, so both ends are character boundaries.
            if let Some(text) = line.get(start..j) {
                out.push((i, text));
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

/// Whether the text before a literal ends with `name(` for one of the calls (allowing spaces,
/// and a receiver such as `client.` or `client::`).
fn in_call(before: &str, calls: &[String]) -> bool {
    let before = before.trim_end();
    let Some(before) = before.strip_suffix('(') else { return false };
    let before = before.trim_end();
    // Generic arguments, as in `get_variant::<T>("key")` or `getValue<bool>("key")`.
    let before = if before.ends_with('>') { before.rsplit_once('<').map_or(before, |(b, _)| b) } else { before };
    let before = before.trim_end_matches(':');
    let name_start = before.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
    let name = normalise(&before[name_start..]);
    !name.is_empty() && calls.iter().any(|c| normalise(c) == name)
}

/// A call name without case or underscores: `bool_variation`, `boolVariation` and
/// `BoolVariation` are one name.
fn normalise(name: &str) -> String {
    name.chars().filter(|c| *c != '_').map(|c| c.to_ascii_lowercase()).collect()
}

/// Scans one file's text.
fn scan_text(file: &str, text: &str, known: &HashMap<String, Known>, calls: &[String], out: &mut Vec<Reference>) {
    for (n, line) in text.lines().enumerate() {
        for (at, lit) in literals(line) {
            let finding = match known.get(lit) {
                Some(Known::Live) => (None, None, None),
                Some(Known::Archived) => (Some(Finding::Archived), None, Some("archived".to_owned())),
                Some(Known::Stale { owner, reasons }) => (Some(Finding::Stale), owner.clone(), Some(reasons.clone())),
                None if !lit.is_empty() && in_call(&line[..at], calls) => (Some(Finding::Unknown), None, None),
                None => continue,
            };
            out.push(Reference {
                file: file.to_owned(),
                line: n + 1,
                key: lit.to_owned(),
                finding: finding.0,
                owner: finding.1,
                reason: finding.2,
            });
        }
    }
}

/// Walks `dir` as git would (ignore files honoured even outside a repository).
fn scan(dir: &Path, known: &HashMap<String, Known>, calls: &[String]) -> Result<(usize, Vec<Reference>)> {
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let mut refs = Vec::new();
    let mut scanned = 0;
    for entry in ignore::WalkBuilder::new(dir).require_git(false).build() {
        let entry = entry.with_context(|| format!("walking {}", dir.display()))?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        if entry.metadata().is_ok_and(|m| m.len() > 1 << 20) {
            continue;
        }
        let Ok(bytes) = std::fs::read(path) else { continue };
        // Binary files (a NUL early on) name no flags worth reporting.
        if bytes.iter().take(8192).any(|b| *b == 0) {
            continue;
        }
        scanned += 1;
        let text = String::from_utf8_lossy(&bytes);
        let shown = path.strip_prefix(dir).unwrap_or(path).display().to_string();
        scan_text(&shown, &text, known, calls, &mut refs);
    }
    refs.sort_by(|a, b| (&a.file, a.line, &a.key).cmp(&(&b.file, b.line, &b.key)));
    Ok((scanned, refs))
}

/// The known keys, from a flags file or from the server (with archived and stale flags).
fn known_keys(remote: &Remote, flags: Option<&Path>) -> Result<HashMap<String, Known>> {
    if let Some(path) = flags {
        let set = files::load_flag_set(path)?;
        return Ok(set.flags.keys().map(|k| (k.clone(), Known::Live)).collect());
    }
    let client = Client::new(&remote.server, remote.token.clone())?;
    let lifecycle = runtime()?.block_on(super::stale::lifecycle(&client, None))?;
    let mut known = HashMap::new();
    for f in lifecycle["flags"].as_array().into_iter().flatten() {
        let Some(key) = f["key"].as_str() else { continue };
        let status = match f["state"].as_str() {
            Some("archived") => Known::Archived,
            Some("stale") => Known::Stale {
                owner: f["owner"].as_str().map(str::to_owned),
                reasons: f["reasons"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["message"].as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            },
            _ => Known::Live,
        };
        known.insert(key.to_owned(), status);
    }
    Ok(known)
}

pub fn run(remote: &Remote, args: RefsArgs) -> Result<ExitCode> {
    let known = known_keys(remote, args.flags.as_deref())?;
    let calls: Vec<String> = CALLS.iter().map(|c| (*c).to_owned()).chain(args.calls.iter().cloned()).collect();
    let (scanned, refs) = scan(&args.dir, &known, &calls)?;
    let findings: Vec<&Reference> = refs.iter().filter(|r| r.finding.is_some()).collect();
    let mut per_flag: BTreeMap<&str, usize> = BTreeMap::new();
    for r in refs.iter().filter(|r| r.finding != Some(Finding::Unknown)) {
        *per_flag.entry(&r.key).or_default() += 1;
    }
    if remote.json {
        let value: Value = json!({
            "files_scanned": scanned,
            "references": refs.iter().filter(|r| r.finding != Some(Finding::Unknown)).collect::<Vec<_>>(),
            "findings": findings,
            "unreferenced": known.iter().filter(|(k, s)| !matches!(s, Known::Archived) && !per_flag.contains_key(k.as_str()))
                .map(|(k, _)| k.as_str()).collect::<std::collections::BTreeSet<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        for r in &findings {
            let what = match r.finding {
                Some(Finding::Unknown) => format!("unknown flag \"{}\": no flag has this key", r.key),
                Some(Finding::Archived) => format!("archived flag \"{}\" is still referenced", r.key),
                Some(Finding::Stale) => format!(
                    "stale flag \"{}\" (owner {}): {}",
                    r.key,
                    r.owner.as_deref().unwrap_or("-"),
                    r.reason.as_deref().unwrap_or("")
                ),
                None => continue,
            };
            println!("{}:{}: {what}", r.file, r.line);
        }
        let count = |f: Finding| findings.iter().filter(|r| r.finding == Some(f)).count();
        println!(
            "{} file{} scanned; {} references to {} flags; {} unknown, {} archived, {} stale",
            scanned,
            if scanned == 1 { "" } else { "s" },
            per_flag.values().sum::<usize>(),
            per_flag.len(),
            count(Finding::Unknown),
            count(Finding::Archived),
            count(Finding::Stale)
        );
    }
    let fail = findings.iter().any(|r| r.finding.is_some_and(|f| args.fail_on.contains(&f)));
    Ok(if fail { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn calls() -> Vec<String> {
        CALLS.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn literals_are_found_in_every_quote_style_with_escapes_skipped() {
        let l = literals(r#"a("x") + 'y' + `z` + "q\"r" + "unterminated"#);
        let texts: Vec<&str> = l.iter().map(|(_, t)| *t).collect();
        assert_eq!(texts, ["x", "y", "z", r#"q\"r"#]);
    }

    #[test]
    fn evaluation_calls_are_recognised_across_sdks() {
        let c = calls();
        for before in [
            "client.bool_value(",
            "if ld.variation( ",
            "unleash.isEnabled(",
            "client.getBooleanValue(",
            "flags::is_enabled(",
            "client.BoolVariation(",
            "client.get_variant::<String>(",
        ] {
            assert!(in_call(before, &c), "{before}");
        }
        for before in ["println!(", "let x = ", "log.info(", "variations("] {
            assert!(!in_call(before, &c), "{before}");
        }
    }

    #[test]
    fn a_known_key_anywhere_is_a_reference_and_an_unknown_one_only_in_a_call() {
        let known: HashMap<String, Known> = [
            ("checkout".to_owned(), Known::Live),
            ("old-banner".to_owned(), Known::Archived),
            ("done".to_owned(), Known::Stale { owner: Some("team-pay".into()), reasons: "old".into() }),
        ]
        .into();
        let text = "const K = \"checkout\";\nif client.bool_value(\"chekout\", false) {}\nshow('old-banner')\nlog(\"not a flag\")\nx = is_enabled(\"done\")\n";
        let mut out = Vec::new();
        scan_text("a.rs", text, &known, &calls(), &mut out);
        let seen: Vec<(usize, &str, Option<Finding>)> =
            out.iter().map(|r| (r.line, r.key.as_str(), r.finding)).collect();
        assert_eq!(
            seen,
            [
                (1, "checkout", None),
                (2, "chekout", Some(Finding::Unknown)),
                (3, "old-banner", Some(Finding::Archived)),
                (5, "done", Some(Finding::Stale)),
            ]
        );
    }
}
