//! The server's side of the flag policy: loading `dimmer-policy.yaml` once at start, and
//! gathering the facts the engine's pure [`lifecycle`] decides from (a flag's history, replayed
//! from the audit log; when it was last evaluated).
//!
//! The rules themselves live in `dimmer_engine::policy`, so the CLI's offline `lint` and the
//! server refuse exactly the same flags.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use dimmer_engine::policy::{Current, Facts, Lifecycle, Policy, PolicyFile, lifecycle_of};

use dimmer_store::{FlagSummary, Store, StoreResult};

/// The policy a server enforces, with where it came from. Compared by content, so that
/// the server configuration stays comparable.
#[derive(Debug, Clone)]
pub struct ServerPolicy {
    /// The validated policy.
    pub policy: Arc<Policy>,
    /// The file it was read from; `None` for the default policy.
    pub source: Option<std::path::PathBuf>,
}

impl Default for ServerPolicy {
    /// No rule at all (the engine's base policy): what embedded servers and tests start from.
    /// `dimmer serve` without `--policy` enforces [`ServerPolicy::recommended`] instead.
    fn default() -> Self {
        Self { policy: Arc::new(Policy::default()), source: None }
    }
}

/// The policy `docs/POLICY.md` recommends, and `dimmer serve` enforces when given no policy file:
/// kebab-case keys (after an optional team prefix), an owner and a description on every flag,
/// and in production exposure above 5% only through a guarded release plan. The same text as
/// `examples/dimmer-policy.yaml` (a test holds them equal), so the documented default and the
/// example to copy never drift apart.
pub const RECOMMENDED: &str = r#"version: 1
naming:
  pattern: "[a-z][a-z0-9]*(-[a-z0-9]+)*"
  team_prefix: optional
  separator: "."
  teams: []
required: [owner, description]
kinds:
  release: {lifetime_days: 40, template: standard}
  experiment: {lifetime_days: 40, template: standard}
  operational: {lifetime_days: 7, template: quick}
  kill-switch: {lifetime_days: permanent, template: careful}
  permission: {lifetime_days: permanent, template: careful}
release_plans:
  - environments: [production]
    above_percent: 5
    require_guards: true
stale:
  released_untouched_days: 14
  no_evaluations_days: 30
"#;

impl ServerPolicy {
    /// The recommended policy ([`RECOMMENDED`]), with no file behind it.
    pub fn recommended() -> Self {
        // A constant parsed by the test below: it cannot fail, and if an edit ever broke it the
        // server would start with no rule rather than not at all.
        let policy = parse(RECOMMENDED).unwrap_or_default();
        Self { policy: Arc::new(policy), source: None }
    }
}

impl PartialEq for ServerPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.policy.to_file() == other.policy.to_file()
    }
}

// Validation keeps the only float (a percentage) in 0..100, never NaN, so equality is total.
impl Eq for ServerPolicy {}

/// Parses and validates policy text (YAML, or JSON, which YAML includes). The error names the
/// field: `naming.pattern: not a valid regular expression …`; every problem is listed.
pub fn parse(text: &str) -> Result<Policy, String> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let file: PolicyFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        if path.is_empty() || path == "." { inner } else { format!("{path}: {inner}") }
    })?;
    Policy::from_file(&file).map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
}

/// Reads and validates a policy file at start: a bad file stops the server with the field named.
/// The error names the file and the problem.
pub fn load(path: &Path) -> Result<ServerPolicy, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let policy = parse(&text).map_err(|message| format!("{}: {message}", path.display()))?;
    Ok(ServerPolicy { policy: Arc::new(policy), source: Some(path.to_owned()) })
}

/// When each flag was last evaluated in any environment, from the SDKs' outcome metrics
/// (Unix milliseconds). A flag no SDK has reported on is absent: the lifecycle reads that as
/// "no data", never as "not evaluated", so a server without reporting SDKs marks nothing stale
/// for want of evaluations.
pub async fn last_evaluations(store: &dyn Store) -> StoreResult<HashMap<String, i64>> {
    let mut last: HashMap<String, i64> = HashMap::new();
    for environment in store.list_environments().await? {
        for (flag, at) in store.last_evaluations(&environment.name).await? {
            let slot = last.entry(flag).or_insert(at);
            *slot = (*slot).max(at);
        }
    }
    Ok(last)
}

/// The lifecycle of every flag (archived included), from the store's summaries (history facts
/// kept by every write) and outcome metrics: two reads, no replay of the audit log and no whole
/// definition parsed. With `environment`, only that environment's configuration counts.
pub async fn lifecycles(
    store: &dyn Store,
    policy: &Policy,
    now: i64,
    environment: Option<&str>,
) -> StoreResult<Vec<(FlagSummary, Lifecycle)>> {
    let last_evaluated = last_evaluations(store).await?;
    let summaries = store.flag_summaries().await?;
    let mut out = Vec::with_capacity(summaries.len());
    for summary in summaries {
        let (ever_exposed, released_since) = summary.history.get(environment);
        let facts = Facts {
            created_at: summary.created_at,
            updated_at: summary.updated_at,
            archived: summary.archived,
            ever_exposed,
            released_since,
            last_evaluated: last_evaluated.get(&summary.key).copied(),
        };
        let current = Current::from_history(summary.kind, &summary.history, environment);
        let l = lifecycle_of(current, &facts, policy, now);
        out.push((summary, l));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bad_policy_names_the_field() {
        let e = parse("naming:\n  patern: x\n").unwrap_err();
        assert!(e.starts_with("naming"), "{e}");
        let e = parse("required: [owner, colour]\n").unwrap_err();
        assert!(e.starts_with("required[1]:"), "{e}");
        assert!(parse("required: [owner]\nkinds:\n  release: {lifetime_days: 30}\n").is_ok());
        assert!(parse("").is_ok(), "an empty file is the default policy");
    }

    #[test]
    fn the_recommended_policy_is_the_example_file_and_has_the_documented_rules() {
        let recommended = parse(RECOMMENDED).unwrap();
        let example =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/dimmer-policy.yaml")).unwrap();
        assert_eq!(recommended.to_file(), parse(&example).unwrap().to_file());
        assert_eq!(ServerPolicy::recommended().policy.to_file(), recommended.to_file());
        let file = serde_json::to_value(recommended.to_file()).unwrap();
        assert_eq!(file["required"], json!(["owner", "description"]), "{file}");
        assert_eq!(file["release_plans"][0]["environments"], json!(["production"]), "{file}");
        assert!(file["naming"]["pattern"].is_string(), "{file}");
        // And a file relaxes it: what a file leaves out has no rule.
        let relaxed = serde_json::to_value(parse("version: 1\n").unwrap().to_file()).unwrap();
        assert_eq!(relaxed["required"], json!([]), "{relaxed}");
    }
}
