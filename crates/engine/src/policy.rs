//! Flag policy as code: the rules an organisation sets for its flags (naming, required fields,
//! kinds and lifetimes, where a release plan is required), checked against flags, and the
//! lifecycle of a flag (new, rolling out, released, stale, archived) decided from facts.
//!
//! Everything here is pure: the policy arrives as a parsed [`PolicyFile`], the facts about a flag
//! (its history, when it was last evaluated) and the current time arrive as arguments. The server
//! and the CLI read files, ask the store and read the clock; they call these functions to decide.
//!
//! Rule ids ([`rules`]) are stable snake_case strings: they appear in CLI output, in the
//! `details` of a 422, and in `docs/POLICY.md`.

use indexmap::IndexMap;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::model::{EnvironmentConfig, FULL_WEIGHT, Flag, FlagKind, OFF, ON, Serve};

/// Milliseconds in a day: lifetimes are written in days, times are Unix milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// The stable ids of the policy's rules and of the lifecycle's stale reasons.
pub mod rules {
    /// The key (or its name part, after a team prefix) must match `naming.pattern`.
    pub const KEY_PATTERN: &str = "key_pattern";
    /// `naming.team_prefix: required` and the key has no `team<separator>` prefix.
    pub const TEAM_PREFIX_REQUIRED: &str = "team_prefix_required";
    /// The key's team prefix is not one of `naming.teams`.
    pub const TEAM_UNKNOWN: &str = "team_unknown";
    /// `required` lists `owner` and the flag has none.
    pub const OWNER_REQUIRED: &str = "owner_required";
    /// `required` lists `description` and the flag has none.
    pub const DESCRIPTION_REQUIRED: &str = "description_required";
    /// `required` lists `kind` and the flag does not say it (the model defaults it to release).
    pub const KIND_REQUIRED: &str = "kind_required";
    /// `required` lists `tags` and the flag has none.
    pub const TAGS_REQUIRED: &str = "tags_required";
    /// Exposure raised above `release_plans[].above_percent` in a listed environment without a
    /// running release plan.
    pub const PLAN_REQUIRED_ABOVE: &str = "plan_required_above";
    /// Stale: older than its kind's lifetime.
    pub const PAST_LIFETIME: &str = "past_lifetime";
    /// Stale: released everywhere it is on and unchanged for `stale.released_untouched_days`.
    pub const RELEASED_UNTOUCHED: &str = "released_untouched";
    /// Stale: not evaluated for `stale.no_evaluations_days`.
    pub const NO_EVALUATIONS: &str = "no_evaluations";
}

/// Every kind, in documentation order.
pub const KINDS: [FlagKind; 5] =
    [FlagKind::Release, FlagKind::Experiment, FlagKind::Operational, FlagKind::KillSwitch, FlagKind::Permission];

/// A kind's name as written in flag and policy files.
pub fn kind_name(kind: FlagKind) -> &'static str {
    match kind {
        FlagKind::Release => "release",
        FlagKind::Experiment => "experiment",
        FlagKind::Operational => "operational",
        FlagKind::KillSwitch => "kill-switch",
        FlagKind::Permission => "permission",
    }
}

fn parse_kind(name: &str) -> Option<FlagKind> {
    KINDS.into_iter().find(|k| kind_name(*k) == name)
}

// ---------------------------------------------------------------------------------------------
// The file

/// A policy file (`dimmer-policy.yaml`) as written. Every section is optional; what is left out
/// keeps the default. [`Policy::from_file`] validates it; [`Policy::to_file`] writes the
/// effective policy back in the same shape (that is what `GET /api/v1/policy` shows).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// The version of the format: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// How flag keys are formed.
    #[serde(default)]
    pub naming: NamingFile,
    /// Fields every flag must have: any of `owner`, `description`, `kind`, `tags`.
    #[serde(default)]
    pub required: Vec<String>,
    /// Per kind (`release`, `experiment`, `operational`, `kill-switch`, `permission`): its
    /// expected lifetime and default release-plan template.
    #[serde(default)]
    pub kinds: IndexMap<String, KindFile>,
    /// Environments where exposure above a percentage needs a running release plan.
    #[serde(default)]
    pub release_plans: Vec<PlanRuleFile>,
    /// When a flag counts as stale beyond its lifetime.
    #[serde(default)]
    pub stale: StaleFile,
}

/// `naming:` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamingFile {
    /// A regular expression the key (after any team prefix) must match in full. Left out: any
    /// key the server accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// `none` (default), `optional` or `required`: a `team<separator>` prefix on keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_prefix: Option<String>,
    /// What ends the team prefix. Left out: `.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    /// The teams a prefix may name. Left out or empty: any team.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
}

/// `kinds.<kind>:` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindFile {
    /// Days before a flag of this kind is stale, or `permanent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_days: Option<Lifetime>,
    /// The release-plan template `plan start` uses for this kind when none is named. Left out:
    /// the template whose `default_for` lists the kind (built in: `standard` for release and
    /// experiment, `quick` for operational, `careful` for kill-switch and permission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// A lifetime as written: a number of days or the word `permanent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Lifetime {
    /// Days.
    Days(u32),
    /// `permanent` (anything else is refused by validation).
    Word(String),
}

/// `release_plans[]:` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRuleFile {
    /// The environments the rule applies to.
    pub environments: Vec<String>,
    /// Exposure above this percentage (0 to 100) needs a running plan.
    pub above_percent: f64,
    /// Whether that plan must carry guards (default: yes). A plan without guards is then
    /// refused at start when one of its stages goes above the percentage.
    #[serde(default = "yes")]
    pub require_guards: bool,
}

fn yes() -> bool {
    true
}

/// `stale:` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaleFile {
    /// A released flag unchanged for this many days is stale. Left out: 14.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_untouched_days: Option<u32>,
    /// A flag not evaluated for this many days is stale (needs evaluation metrics). Left out: 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_evaluations_days: Option<u32>,
}

// ---------------------------------------------------------------------------------------------
// The validated policy

/// A problem in a policy file, named by its path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PolicyError {
    /// Where: `naming.pattern`, `kinds.release.lifetime_days`, `release_plans[0].above_percent`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Whether keys carry a team prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TeamPrefix {
    /// No prefix is expected; the whole key is matched against the pattern.
    #[default]
    None,
    /// A key may start with `team<separator>`.
    Optional,
    /// Every key starts with `team<separator>`.
    Required,
}

/// The fields a policy may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequiredField {
    /// `owner`.
    Owner,
    /// `description`.
    Description,
    /// `kind`, written out.
    Kind,
    /// At least one tag.
    Tags,
}

impl RequiredField {
    fn name(self) -> &'static str {
        match self {
            RequiredField::Owner => "owner",
            RequiredField::Description => "description",
            RequiredField::Kind => "kind",
            RequiredField::Tags => "tags",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [RequiredField::Owner, RequiredField::Description, RequiredField::Kind, RequiredField::Tags]
            .into_iter()
            .find(|f| f.name() == name)
    }
}

/// One kind's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindPolicy {
    /// Days before stale; `None` for permanent kinds.
    pub lifetime_days: Option<u32>,
    /// The default release-plan template, when the policy names one (otherwise the server's
    /// templates decide through their `default_for`).
    pub template: Option<String>,
}

/// Where a release plan is required.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRule {
    /// The environments.
    pub environments: Vec<String>,
    /// The percentage as written.
    pub above_percent: f64,
    /// The same, as a weight out of [`FULL_WEIGHT`].
    pub above_weight: u32,
    /// Whether the plan must carry guards.
    pub require_guards: bool,
}

/// A validated policy: regexes compiled, kinds resolved, defaults filled in.
#[derive(Debug, Clone)]
pub struct Policy {
    pattern: Option<(String, Regex)>,
    team_prefix: TeamPrefix,
    separator: String,
    teams: Vec<String>,
    required: Vec<RequiredField>,
    kinds: IndexMap<FlagKind, KindPolicy>,
    plan_rules: Vec<PlanRule>,
    released_untouched_days: u32,
    no_evaluations_days: u32,
}

impl Default for Policy {
    /// The policy when none is given: lifetimes of 40 days for release and experiment flags, 7
    /// for operational ones, kill-switch and permission flags permanent; the templates' own
    /// `default_for` per kind;
    /// stale after 14 days released and untouched or 30 days without evaluations — and no
    /// naming, required-field or release-plan rule, so that adopting Dimmer (or upgrading it)
    /// never starts refusing flags that were accepted before. Those rules are opted into with a
    /// policy file.
    fn default() -> Self {
        let kinds = KINDS
            .into_iter()
            .map(|kind| {
                let lifetime_days = match kind {
                    FlagKind::Release | FlagKind::Experiment => Some(40),
                    FlagKind::Operational => Some(7),
                    FlagKind::KillSwitch | FlagKind::Permission => None,
                };
                (kind, KindPolicy { lifetime_days, template: None })
            })
            .collect();
        Self {
            pattern: None,
            team_prefix: TeamPrefix::None,
            separator: ".".to_owned(),
            teams: Vec::new(),
            required: Vec::new(),
            kinds,
            plan_rules: Vec::new(),
            released_untouched_days: 14,
            no_evaluations_days: 30,
        }
    }
}

/// A problem with a flag under the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Where, relative to the flag document: `key`, `owner`, `environments.production.exposure`.
    pub path: String,
    /// The rule's id (see [`rules`]).
    pub rule: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} [{}]", self.path, self.message, self.rule)
    }
}

fn err(path: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError { path: path.into(), message: message.into() }
}

impl Policy {
    /// Validates a policy file; every problem is returned, each with its path.
    pub fn from_file(file: &PolicyFile) -> Result<Policy, Vec<PolicyError>> {
        let mut errors = Vec::new();
        let mut policy = Policy::default();
        if let Some(v) = file.version
            && v != 1
        {
            errors.push(err("version", format!("{v} is not a known version (1)")));
        }
        if let Some(pattern) = &file.naming.pattern {
            // Anchored: the pattern describes the whole name, not a part of it.
            match regex::RegexBuilder::new(&format!("^(?:{pattern})$")).size_limit(1 << 20).build() {
                Ok(re) => policy.pattern = Some((pattern.clone(), re)),
                Err(e) => errors.push(err("naming.pattern", format!("not a valid regular expression: {e}"))),
            }
        }
        match file.naming.team_prefix.as_deref() {
            None | Some("none") => {}
            Some("optional") => policy.team_prefix = TeamPrefix::Optional,
            Some("required") => policy.team_prefix = TeamPrefix::Required,
            Some(other) => {
                errors.push(err("naming.team_prefix", format!("\"{other}\" is not none, optional or required")))
            }
        }
        if let Some(sep) = &file.naming.separator {
            if sep.is_empty() || sep.chars().any(|c| c.is_whitespace() || c == '/') {
                errors.push(err("naming.separator", "must be non-empty, without spaces or '/'"));
            } else {
                policy.separator = sep.clone();
            }
        }
        for (i, team) in file.naming.teams.iter().enumerate() {
            if team.is_empty() || team.contains(policy.separator.as_str()) {
                errors.push(err(format!("naming.teams[{i}]"), "a team is non-empty and has no separator in it"));
            }
        }
        policy.teams = file.naming.teams.clone();
        for (i, name) in file.required.iter().enumerate() {
            match RequiredField::parse(name) {
                Some(f) if !policy.required.contains(&f) => policy.required.push(f),
                Some(_) => {}
                None => errors
                    .push(err(format!("required[{i}]"), format!("\"{name}\" is not owner, description, kind or tags"))),
            }
        }
        for (name, k) in &file.kinds {
            let Some(kind) = parse_kind(name) else {
                errors.push(err(
                    format!("kinds.{name}"),
                    "not a kind: release, experiment, operational, kill-switch or permission",
                ));
                continue;
            };
            let Some(entry) = policy.kinds.get_mut(&kind) else { continue };
            match &k.lifetime_days {
                None => {}
                Some(Lifetime::Days(0)) => {
                    errors.push(err(format!("kinds.{name}.lifetime_days"), "must be at least 1 (or permanent)"))
                }
                Some(Lifetime::Days(d)) => entry.lifetime_days = Some(*d),
                Some(Lifetime::Word(w)) if w == "permanent" => entry.lifetime_days = None,
                Some(Lifetime::Word(w)) => errors.push(err(
                    format!("kinds.{name}.lifetime_days"),
                    format!("\"{w}\" is not a number of days or permanent"),
                )),
            }
            if let Some(t) = &k.template {
                if t.trim().is_empty() {
                    errors.push(err(format!("kinds.{name}.template"), "must name a template"));
                } else {
                    entry.template = Some(t.clone());
                }
            }
        }
        for (i, rule) in file.release_plans.iter().enumerate() {
            if rule.environments.is_empty() {
                errors.push(err(format!("release_plans[{i}].environments"), "list at least one environment"));
            }
            let p = rule.above_percent;
            if !(0.0..100.0).contains(&p) {
                errors.push(err(format!("release_plans[{i}].above_percent"), "must be at least 0 and below 100"));
                continue;
            }
            // Rounded to the model's resolution of 1/1000 of a percent; in range, so it fits.
            let above_weight = (p * 1000.0).round() as u32;
            policy.plan_rules.push(PlanRule {
                environments: rule.environments.clone(),
                above_percent: p,
                above_weight,
                require_guards: rule.require_guards,
            });
        }
        for (field, value, slot) in [
            ("released_untouched_days", file.stale.released_untouched_days, &mut policy.released_untouched_days),
            ("no_evaluations_days", file.stale.no_evaluations_days, &mut policy.no_evaluations_days),
        ] {
            match value {
                Some(0) => errors.push(err(format!("stale.{field}"), "must be at least 1")),
                Some(d) => *slot = d,
                None => {}
            }
        }
        if errors.is_empty() { Ok(policy) } else { Err(errors) }
    }

    /// The effective policy written out as a file (defaults filled in); it parses back to the
    /// same policy.
    pub fn to_file(&self) -> PolicyFile {
        PolicyFile {
            version: Some(1),
            naming: NamingFile {
                pattern: self.pattern.as_ref().map(|(p, _)| p.clone()),
                team_prefix: Some(
                    match self.team_prefix {
                        TeamPrefix::None => "none",
                        TeamPrefix::Optional => "optional",
                        TeamPrefix::Required => "required",
                    }
                    .to_owned(),
                ),
                separator: Some(self.separator.clone()),
                teams: self.teams.clone(),
            },
            required: self.required.iter().map(|f| f.name().to_owned()).collect(),
            kinds: self
                .kinds
                .iter()
                .map(|(kind, k)| {
                    let lifetime = match k.lifetime_days {
                        Some(d) => Lifetime::Days(d),
                        None => Lifetime::Word("permanent".into()),
                    };
                    (
                        kind_name(*kind).to_owned(),
                        KindFile { lifetime_days: Some(lifetime), template: k.template.clone() },
                    )
                })
                .collect(),
            release_plans: self
                .plan_rules
                .iter()
                .map(|r| PlanRuleFile {
                    environments: r.environments.clone(),
                    above_percent: r.above_percent,
                    require_guards: r.require_guards,
                })
                .collect(),
            stale: StaleFile {
                released_untouched_days: Some(self.released_untouched_days),
                no_evaluations_days: Some(self.no_evaluations_days),
            },
        }
    }

    /// A kind's rules.
    pub fn kind(&self, kind: FlagKind) -> KindPolicy {
        // Every kind is filled in by `default()` and never removed; the fallback is unreachable.
        self.kinds.get(&kind).cloned().unwrap_or(KindPolicy { lifetime_days: None, template: None })
    }

    /// The release-plan rules.
    pub fn plan_rules(&self) -> &[PlanRule] {
        &self.plan_rules
    }

    /// Checks a flag key against the naming rules. Paths are `key`.
    pub fn check_key(&self, key: &str) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut name = key;
        if self.team_prefix != TeamPrefix::None {
            match key.split_once(self.separator.as_str()) {
                Some((team, rest)) if !team.is_empty() => {
                    if !self.teams.is_empty() && !self.teams.iter().any(|t| t == team) {
                        out.push(Violation {
                            path: "key".into(),
                            rule: rules::TEAM_UNKNOWN,
                            message: format!(
                                "team prefix \"{team}\" is not one of the policy's teams ({})",
                                self.teams.join(", ")
                            ),
                        });
                    }
                    name = rest;
                }
                _ if self.team_prefix == TeamPrefix::Required => out.push(Violation {
                    path: "key".into(),
                    rule: rules::TEAM_PREFIX_REQUIRED,
                    message: format!("\"{key}\" must start with a team prefix: team{}name", self.separator),
                }),
                _ => {}
            }
        }
        if let Some((pattern, re)) = &self.pattern
            && !re.is_match(name)
        {
            let what = if name.len() == key.len() { String::new() } else { " (after the team prefix)".to_owned() };
            out.push(Violation {
                path: "key".into(),
                rule: rules::KEY_PATTERN,
                message: format!("\"{name}\"{what} does not match the naming pattern {pattern}"),
            });
        }
        out
    }

    /// Checks a flag's fields against the required-field rules. `kind_declared` says whether
    /// the document wrote `kind` out (the model fills in `release` otherwise).
    pub fn check_fields(&self, flag: &Flag, kind_declared: bool) -> Vec<Violation> {
        let mut out = Vec::new();
        for field in &self.required {
            let (missing, rule, hint) = match field {
                RequiredField::Owner => (
                    flag.owner.as_deref().is_none_or(|o| o.trim().is_empty()),
                    rules::OWNER_REQUIRED,
                    "the team or person answerable for the flag",
                ),
                RequiredField::Description => {
                    (flag.description.trim().is_empty(), rules::DESCRIPTION_REQUIRED, "what the flag does and why")
                }
                RequiredField::Kind => (
                    !kind_declared,
                    rules::KIND_REQUIRED,
                    "release, experiment, operational, kill-switch or permission",
                ),
                RequiredField::Tags => (flag.tags.is_empty(), rules::TAGS_REQUIRED, "at least one tag"),
            };
            if missing {
                out.push(Violation {
                    path: field.name().to_owned(),
                    rule,
                    message: format!("required by the policy: {hint}"),
                });
            }
        }
        out
    }

    /// Checks a flag being created: key and fields.
    pub fn check_new_flag(&self, key: &str, flag: &Flag, kind_declared: bool) -> Vec<Violation> {
        let mut out = self.check_key(key);
        out.extend(self.check_fields(flag, kind_declared));
        out
    }

    /// Checks a change of exposure: in an environment a plan rule lists, raising exposure
    /// above its percentage needs a running release plan there (`has_plan(env)`). Lowering
    /// exposure, or keeping it, is always allowed (dialling down must never be refused).
    pub fn check_exposure(
        &self,
        before: Option<&Flag>,
        after: &Flag,
        has_plan: impl Fn(&str) -> bool,
    ) -> Vec<Violation> {
        let mut out = Vec::new();
        for rule in &self.plan_rules {
            for env in &rule.environments {
                let Some(config) = after.environments.get(env) else { continue };
                let now = exposure_weight(config);
                let was = before.and_then(|f| f.environments.get(env)).map_or(0, exposure_weight);
                if now > rule.above_weight && now > was && !has_plan(env) {
                    out.push(Violation {
                        path: format!("environments{}", crate::compile::path_key(env)),
                        rule: rules::PLAN_REQUIRED_ABOVE,
                        message: format!(
                            "exposure in {env} would be {} (above {}%) without a running release plan: start one \
                             (`dimmer plan start KEY --env {env}`) and let it raise exposure",
                            percent(now),
                            rule.above_percent
                        ),
                    });
                }
            }
        }
        out
    }
}

impl Policy {
    /// Checks a release plan about to start in `environment`: where a plan rule requires
    /// guards, a plan whose stages go above its percentage must carry at least one.
    pub fn check_plan(&self, environment: &str, highest_weight: u32, has_guards: bool) -> Vec<Violation> {
        self.plan_rules
            .iter()
            .filter(|r| r.require_guards && !has_guards && highest_weight > r.above_weight)
            .filter(|r| r.environments.iter().any(|e| e == environment))
            .map(|r| Violation {
                path: "guards".into(),
                rule: rules::PLAN_REQUIRED_ABOVE,
                message: format!(
                    "a release plan in {environment} that goes above {}% needs guards (--guard error_rate:relative:25%)",
                    r.above_percent
                ),
            })
            .collect()
    }
}

fn percent(weight: u32) -> String {
    let p = f64::from(weight) / 1000.0;
    format!("{p}%")
}

/// Whether a document (the JSON of a flag) writes `kind` out.
pub fn declares_kind(document: &serde_json::Value) -> bool {
    document.get("kind").is_some_and(|k| !k.is_null())
}

/// The share of everyone (out of [`FULL_WEIGHT`]) served a non-control variant in one
/// environment: 0 when off; otherwise the widest of the default serve and the rules without
/// clauses (which match everyone), capped by the exposure ceiling. Targeted rules (with
/// clauses), individual targets and exposure segments do not count: they reach named users, not
/// a share of everyone.
pub fn exposure_weight(config: &EnvironmentConfig) -> u32 {
    if !config.enabled {
        return 0;
    }
    let control = config.off_variant.as_deref().unwrap_or(OFF);
    let scale = |w: u64, total: u32| -> u32 {
        let total = u64::from(total.max(1));
        // min() bounds the result by FULL_WEIGHT, which fits in u32.
        u32::try_from((w * u64::from(FULL_WEIGHT) / total).min(u64::from(FULL_WEIGHT))).unwrap_or(FULL_WEIGHT)
    };
    let share = |serve: &Serve| -> u32 {
        match (&serve.rollout, serve.variant.as_deref()) {
            (Some(r), _) => scale(
                r.variants.iter().filter(|v| v.variant != control).map(|v| u64::from(v.weight)).sum(),
                r.total.unwrap_or(FULL_WEIGHT),
            ),
            (None, v) => {
                if v.unwrap_or(ON) == control {
                    0
                } else {
                    FULL_WEIGHT
                }
            }
        }
    };
    let mut widest = config.default.as_ref().map_or_else(|| if control == ON { 0 } else { FULL_WEIGHT }, share);
    for rule in config.rules.iter().filter(|r| r.clauses.is_empty()) {
        let mut s = share(&rule.serve);
        if let Some(g) = &rule.gate {
            s = scale(u64::from(s) * u64::from(g.weight) / u64::from(FULL_WEIGHT), g.total.unwrap_or(FULL_WEIGHT));
        }
        widest = widest.max(s);
    }
    if let Some(e) = &config.exposure {
        widest = widest.min(scale(u64::from(e.weight), e.total.unwrap_or(FULL_WEIGHT)));
    }
    widest
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

/// Where a flag is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Never exposed to anyone.
    New,
    /// Exposed somewhere, and not at 100% everywhere it is on.
    RollingOut,
    /// At 100% wherever it is on.
    Released,
    /// Due for removal: see the reasons.
    Stale,
    /// Archived: out of SDK snapshots.
    Archived,
}

impl State {
    /// The state's name (`rolling-out`).
    pub fn name(self) -> &'static str {
        match self {
            State::New => "new",
            State::RollingOut => "rolling-out",
            State::Released => "released",
            State::Stale => "stale",
            State::Archived => "archived",
        }
    }
}

/// What is known about a flag beyond its definition. Times are Unix milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// When it was created.
    pub created_at: i64,
    /// When its definition last changed.
    pub updated_at: i64,
    /// Whether it is archived.
    pub archived: bool,
    /// Whether it was ever exposed (see [`history_facts`]).
    pub ever_exposed: bool,
    /// Since when it has been at 100% wherever it is on, if it is (see [`history_facts`]).
    pub released_since: Option<i64>,
    /// When it was last evaluated, if evaluation metrics know it; `None` leaves the
    /// no-evaluations rule out (no data is not evidence of no use).
    pub last_evaluated: Option<i64>,
}

/// Why a flag is stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// The rule (`past_lifetime`, `released_untouched`, `no_evaluations`).
    pub rule: &'static str,
    /// In words, with the numbers.
    pub message: String,
}

/// A flag's lifecycle: its state, why it is stale (when it is), and what it was before that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lifecycle {
    /// The state.
    pub state: State,
    /// The state apart from staleness (`new`, `rolling-out`, `released` or `archived`).
    pub phase: State,
    /// Why it is stale; empty otherwise.
    pub reasons: Vec<Reason>,
    /// Since when it has been released, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_since: Option<i64>,
    /// Whole days since creation.
    pub age_days: i64,
}

/// Whether every environment where the flag is on serves 100% (and it is on somewhere).
pub fn fully_released(flag: &Flag) -> bool {
    let on: Vec<u32> = flag.environments.values().filter(|c| c.enabled).map(exposure_weight).collect();
    !on.is_empty() && on.iter().all(|w| *w >= FULL_WEIGHT)
}

/// Whether the flag serves a non-control variant to a share of everyone anywhere.
pub fn exposed(flag: &Flag) -> bool {
    flag.environments.values().any(|c| exposure_weight(c) > 0)
}

/// From a flag's history (its definitions over time, oldest first, each with the time it took
/// effect): whether it was ever exposed, and since when it has been fully released without a
/// break (if the last definition is fully released).
pub fn history_facts<'a>(history: impl DoubleEndedIterator<Item = (i64, &'a Flag)> + Clone) -> (bool, Option<i64>) {
    let ever_exposed = history.clone().any(|(_, f)| exposed(f));
    let mut released_since = None;
    for (at, flag) in history.rev() {
        if !fully_released(flag) {
            break;
        }
        released_since = Some(at);
    }
    (ever_exposed, released_since)
}

/// What a flag's history says, kept up to date one definition at a time instead of replayed:
/// whether it was ever exposed and since when it has been fully released without a break, for
/// the whole flag and for each environment it has ever configured (an environment it never
/// configured has neither). Folding a history with [`HistoryFacts::step`] gives what
/// [`history_facts`] gives for it, for the flag and for every environment alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryFacts {
    /// Whether any definition so far exposed the flag anywhere.
    #[serde(default)]
    pub ever_exposed: bool,
    /// Since when every definition has been fully released, if the latest is.
    #[serde(default)]
    pub released_since: Option<i64>,
    /// The same, per environment, with only that environment's configuration counting.
    #[serde(default)]
    pub environments: std::collections::BTreeMap<String, EnvironmentFacts>,
}

/// [`HistoryFacts`] of one environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentFacts {
    /// Whether this environment ever exposed the flag.
    #[serde(default)]
    pub ever_exposed: bool,
    /// Since when this environment has been fully released without a break, if it is.
    #[serde(default)]
    pub released_since: Option<i64>,
}

impl HistoryFacts {
    /// The facts of a history, oldest definition first.
    pub fn of<'a>(history: impl IntoIterator<Item = (i64, &'a Flag)>) -> Self {
        let mut facts = Self::default();
        for (at, flag) in history {
            facts.step(at, flag);
        }
        facts
    }

    /// Takes in the definition that took effect at `at`.
    pub fn step(&mut self, at: i64, flag: &Flag) {
        self.ever_exposed |= exposed(flag);
        self.released_since = fully_released(flag).then(|| self.released_since.unwrap_or(at));
        for name in flag.environments.keys() {
            self.environments.entry(name.clone()).or_default();
        }
        for (name, facts) in &mut self.environments {
            // What `fully_released` and `exposed` say of the flag reduced to this environment.
            let config = flag.environments.get(name);
            facts.ever_exposed |= config.is_some_and(|c| exposure_weight(c) > 0);
            let released = config.is_some_and(|c| c.enabled && exposure_weight(c) >= FULL_WEIGHT);
            facts.released_since = released.then(|| facts.released_since.unwrap_or(at));
        }
    }

    /// `(ever_exposed, released_since)` for the whole flag, or for one environment alone.
    pub fn get(&self, environment: Option<&str>) -> (bool, Option<i64>) {
        match environment {
            None => (self.ever_exposed, self.released_since),
            Some(env) => self.environments.get(env).map_or((false, None), |f| (f.ever_exposed, f.released_since)),
        }
    }
}

/// What the lifecycle reads of a flag's current definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    /// Its kind.
    pub kind: FlagKind,
    /// Whether it is fully released ([`fully_released`]).
    pub released: bool,
    /// Whether it is exposed ([`exposed`]).
    pub exposed: bool,
}

impl Current {
    /// What a definition says.
    pub fn of(flag: &Flag) -> Self {
        Self { kind: flag.kind, released: fully_released(flag), exposed: exposed(flag) }
    }

    /// What [`HistoryFacts`] say of the definition they last took in (for the flag, or one
    /// environment alone): it is released exactly when it has been since some time, and its
    /// being exposed is within having ever been.
    pub fn from_history(kind: FlagKind, history: &HistoryFacts, environment: Option<&str>) -> Self {
        let (ever_exposed, released_since) = history.get(environment);
        Self { kind, released: released_since.is_some(), exposed: ever_exposed }
    }
}

/// Decides a flag's lifecycle from its definition, the facts and the time.
pub fn lifecycle(flag: &Flag, facts: &Facts, policy: &Policy, now: i64) -> Lifecycle {
    lifecycle_of(Current::of(flag), facts, policy, now)
}

/// Decides a flag's lifecycle from what it is now, the facts and the time.
pub fn lifecycle_of(current: Current, facts: &Facts, policy: &Policy, now: i64) -> Lifecycle {
    let age_days = (now - facts.created_at).max(0) / DAY_MS;
    let released = current.released;
    let phase = if facts.archived {
        State::Archived
    } else if released {
        State::Released
    } else if facts.ever_exposed || current.exposed {
        State::RollingOut
    } else {
        State::New
    };
    let released_since = if released { Some(facts.released_since.unwrap_or(facts.updated_at)) } else { None };
    let mut reasons = Vec::new();
    if phase != State::Archived {
        let kind = policy.kind(current.kind);
        if let Some(days) = kind.lifetime_days
            && now - facts.created_at >= i64::from(days) * DAY_MS
        {
            reasons.push(Reason {
                rule: rules::PAST_LIFETIME,
                message: format!(
                    "{age_days} days old; a {} flag is expected to live {days} days",
                    kind_name(current.kind)
                ),
            });
        }
        // Permanent kinds are meant to stay released: only the other rules apply to them.
        let untouched = i64::from(policy.released_untouched_days);
        if kind.lifetime_days.is_some()
            && let Some(since) = released_since
            && now - since.max(facts.updated_at) >= untouched * DAY_MS
        {
            reasons.push(Reason {
                rule: rules::RELEASED_UNTOUCHED,
                message: format!(
                    "released for {} days and unchanged for {} days (limit {untouched}): remove it from the code \
                     and archive it",
                    (now - since) / DAY_MS,
                    (now - facts.updated_at) / DAY_MS
                ),
            });
        }
        let quiet = i64::from(policy.no_evaluations_days);
        if let Some(last) = facts.last_evaluated
            && now - last >= quiet * DAY_MS
        {
            reasons.push(Reason {
                rule: rules::NO_EVALUATIONS,
                message: format!("not evaluated for {} days (limit {quiet})", (now - last) / DAY_MS),
            });
        }
    }
    let state = if reasons.is_empty() { phase } else { State::Stale };
    Lifecycle { state, phase, reasons, released_since, age_days }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::model::{Exposure, Rollout, Rule, WeightedVariant};

    fn policy(yaml_like_json: serde_json::Value) -> Result<Policy, Vec<PolicyError>> {
        Policy::from_file(&serde_json::from_value(yaml_like_json).unwrap())
    }

    fn strict() -> Policy {
        policy(serde_json::json!({
            "naming": {"pattern": "[a-z][a-z0-9]*(-[a-z0-9]+)*", "team_prefix": "optional", "teams": ["payments"]},
            "required": ["owner", "description"],
            "release_plans": [{"environments": ["production"], "above_percent": 5}],
        }))
        .unwrap()
    }

    fn on(weight: Option<u32>) -> EnvironmentConfig {
        EnvironmentConfig {
            enabled: true,
            exposure: weight.map(|w| Exposure { weight: w, ..Exposure::default() }),
            ..EnvironmentConfig::default()
        }
    }

    proptest::proptest! {
        /// Folding definitions one at a time gives what replaying the whole history gives, for
        /// the flag and for each environment alone (including environments that come and go).
        #[test]
        fn history_facts_folded_equal_history_facts_replayed(
            steps in proptest::collection::vec(
                (1i64..1_000, proptest::collection::vec(
                    proptest::option::of((proptest::bool::ANY, proptest::option::of(0u32..=FULL_WEIGHT))), 3)),
                0..12,
            )
        ) {
            let names = ["development", "staging", "production"];
            let mut at = 0;
            let mut history = Vec::new();
            for (gap, envs) in steps {
                at += gap;
                let mut flag = Flag::default();
                for (name, env) in names.iter().zip(envs) {
                    if let Some((enabled, weight)) = env {
                        flag.environments.insert((*name).to_owned(), EnvironmentConfig { enabled, ..on(weight) });
                    }
                }
                history.push((at, flag));
            }
            let folded = HistoryFacts::of(history.iter().map(|(at, f)| (*at, f)));
            proptest::prop_assert_eq!(folded.get(None), history_facts(history.iter().map(|(at, f)| (*at, f))));
            for name in names {
                let alone: Vec<(i64, Flag)> = history
                    .iter()
                    .map(|(at, f)| {
                        let mut f = f.clone();
                        f.environments.retain(|n, _| n == name);
                        (*at, f)
                    })
                    .collect();
                proptest::prop_assert_eq!(
                    folded.get(Some(name)),
                    history_facts(alone.iter().map(|(at, f)| (*at, f))),
                    "environment {}", name
                );
            }
        }
    }

    fn flag_with(env: &str, config: EnvironmentConfig) -> Flag {
        let mut f = Flag::default();
        f.environments.insert(env.into(), config);
        f
    }

    #[test]
    fn the_default_policy_has_the_documented_lifetimes_and_refuses_nothing() {
        let p = Policy::default();
        assert_eq!(p.kind(FlagKind::Release).lifetime_days, Some(40));
        assert_eq!(p.kind(FlagKind::Experiment).lifetime_days, Some(40));
        assert_eq!(p.kind(FlagKind::Operational).lifetime_days, Some(7));
        assert_eq!(p.kind(FlagKind::KillSwitch).lifetime_days, None);
        assert_eq!(p.kind(FlagKind::Permission).lifetime_days, None);
        assert!(p.check_new_flag("Any_Key.at all", &Flag::default(), false).is_empty());
        let full = flag_with("production", on(None));
        assert!(p.check_exposure(None, &full, |_| false).is_empty());
    }

    #[test]
    fn a_policy_written_out_parses_back_to_the_same_policy() {
        let p = strict();
        let text = serde_json::to_string(&p.to_file()).unwrap();
        let again = Policy::from_file(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(again.to_file(), p.to_file());
    }

    #[test]
    fn every_problem_in_a_policy_file_is_named_by_its_path() {
        let errors = policy(serde_json::json!({
            "version": 2,
            "naming": {"pattern": "([a-z", "team_prefix": "sometimes"},
            "required": ["owner", "colour"],
            "kinds": {"feature": {}, "release": {"lifetime_days": "forever"}, "operational": {"lifetime_days": 0}},
            "release_plans": [{"environments": [], "above_percent": 120}],
            "stale": {"no_evaluations_days": 0},
        }))
        .unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for expected in [
            "version",
            "naming.pattern",
            "naming.team_prefix",
            "required[1]",
            "kinds.feature",
            "kinds.release.lifetime_days",
            "kinds.operational.lifetime_days",
            "release_plans[0].environments",
            "release_plans[0].above_percent",
            "stale.no_evaluations_days",
        ] {
            assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
        }
    }

    #[test]
    fn overrides_replace_lifetimes_and_templates_per_kind() {
        let p = policy(serde_json::json!({"kinds": {
            "release": {"lifetime_days": 90, "template": "careful"},
            "operational": {"lifetime_days": "permanent"},
        }}))
        .unwrap();
        assert_eq!(p.kind(FlagKind::Release), KindPolicy { lifetime_days: Some(90), template: Some("careful".into()) });
        assert_eq!(p.kind(FlagKind::Operational).lifetime_days, None);
        assert_eq!(p.kind(FlagKind::Experiment).lifetime_days, Some(40));
    }

    #[test]
    fn a_badly_named_flag_without_owner_gets_one_violation_per_rule() {
        let v = strict().check_new_flag("New_Checkout", &Flag::default(), false);
        let rules: Vec<&str> = v.iter().map(|v| v.rule).collect();
        assert_eq!(rules, [rules::KEY_PATTERN, rules::OWNER_REQUIRED, rules::DESCRIPTION_REQUIRED]);
        assert_eq!(v[0].path, "key");
        assert_eq!(v[1].path, "owner");
    }

    #[test]
    fn team_prefixes_are_checked_against_the_teams_and_the_rest_against_the_pattern() {
        let p = strict();
        assert!(p.check_key("payments.new-checkout").is_empty());
        assert!(p.check_key("new-checkout").is_empty(), "optional prefix");
        let v = p.check_key("search.new-ranking");
        assert_eq!(v.iter().map(|v| v.rule).collect::<Vec<_>>(), [rules::TEAM_UNKNOWN]);
        let v = p.check_key("payments.New");
        assert_eq!(v.iter().map(|v| v.rule).collect::<Vec<_>>(), [rules::KEY_PATTERN]);
        let required = policy(serde_json::json!({"naming": {"team_prefix": "required", "separator": "/x"}}));
        assert_eq!(required.unwrap_err()[0].path, "naming.separator");
        let required = policy(serde_json::json!({"naming": {"team_prefix": "required"}})).unwrap();
        assert_eq!(required.check_key("checkout")[0].rule, rules::TEAM_PREFIX_REQUIRED);
        assert!(required.check_key("web.checkout").is_empty());
    }

    #[test]
    fn kind_is_required_only_when_written_out() {
        let p = policy(serde_json::json!({"required": ["kind", "tags"]})).unwrap();
        let v = p.check_fields(&Flag::default(), false);
        assert_eq!(v.iter().map(|v| v.rule).collect::<Vec<_>>(), [rules::KIND_REQUIRED, rules::TAGS_REQUIRED]);
        let tagged = Flag { tags: vec!["web".into()], ..Flag::default() };
        assert!(p.check_fields(&tagged, true).is_empty());
        assert!(declares_kind(&serde_json::json!({"kind": "release"})));
        assert!(!declares_kind(&serde_json::json!({"owner": "x"})));
    }

    #[test]
    fn raising_exposure_above_the_threshold_needs_a_plan_but_lowering_never_does() {
        let p = strict();
        let low = flag_with("production", on(Some(5_000)));
        let high = flag_with("production", on(Some(25_000)));
        assert!(p.check_exposure(None, &low, |_| false).is_empty(), "5% is not above 5%");
        let v = p.check_exposure(Some(&low), &high, |_| false);
        assert_eq!(v[0].rule, rules::PLAN_REQUIRED_ABOVE);
        assert_eq!(v[0].path, "environments.production");
        assert!(p.check_exposure(Some(&low), &high, |env| env == "production").is_empty());
        assert!(p.check_exposure(Some(&high), &low, |_| false).is_empty(), "dial-down");
        assert!(p.check_exposure(Some(&high), &high, |_| false).is_empty(), "unchanged");
        let staging = flag_with("staging", on(None));
        assert!(p.check_exposure(None, &staging, |_| false).is_empty(), "unlisted environment");
    }

    #[test]
    fn exposure_weight_counts_everyone_not_targeted_users() {
        assert_eq!(exposure_weight(&EnvironmentConfig::default()), 0);
        assert_eq!(exposure_weight(&on(None)), FULL_WEIGHT);
        assert_eq!(exposure_weight(&on(Some(25_000))), 25_000);
        let off_default = EnvironmentConfig { default: Some(Serve::variant("off")), ..on(None) };
        assert_eq!(exposure_weight(&off_default), 0);
        let targeted = EnvironmentConfig {
            rules: vec![Rule {
                clauses: vec![crate::model::Clause::default()],
                serve: Serve::variant("on"),
                ..Rule::default()
            }],
            ..off_default.clone()
        };
        assert_eq!(exposure_weight(&targeted), 0);
        let split = EnvironmentConfig {
            default: Some(Serve {
                variant: None,
                rollout: Some(Rollout {
                    variants: vec![
                        WeightedVariant { variant: "on".into(), weight: 30_000 },
                        WeightedVariant { variant: "off".into(), weight: 70_000 },
                    ],
                    ..Rollout::default()
                }),
            }),
            ..on(None)
        };
        assert_eq!(exposure_weight(&split), 30_000);
        let everyone =
            EnvironmentConfig { rules: vec![Rule { serve: Serve::variant("on"), ..Rule::default() }], ..off_default };
        assert_eq!(exposure_weight(&everyone), FULL_WEIGHT);
    }

    fn facts(created_days_ago: i64, updated_days_ago: i64, now: i64) -> Facts {
        Facts {
            created_at: now - created_days_ago * DAY_MS,
            updated_at: now - updated_days_ago * DAY_MS,
            ..Facts::default()
        }
    }

    #[test]
    fn lifecycle_table() {
        let p = Policy::default();
        let now = 1_000 * DAY_MS;
        let off = Flag::default();
        let ramping = flag_with("production", on(Some(10_000)));
        let full = flag_with("production", on(None));
        let kill = Flag { kind: FlagKind::KillSwitch, ..full.clone() };
        let ops = Flag { kind: FlagKind::Operational, ..off.clone() };
        let seen = |f: Facts| Facts { ever_exposed: true, ..f };
        let cases: Vec<(&str, &Flag, Facts, State, Vec<&str>)> = vec![
            ("never exposed, young", &off, facts(3, 3, now), State::New, vec![]),
            ("never exposed, past lifetime", &off, facts(41, 41, now), State::Stale, vec![rules::PAST_LIFETIME]),
            ("ramping", &ramping, facts(3, 1, now), State::RollingOut, vec![]),
            ("rolled back to off after exposure", &off, seen(facts(3, 1, now)), State::RollingOut, vec![]),
            ("just released", &full, facts(10, 1, now), State::Released, vec![]),
            ("released and untouched", &full, facts(30, 15, now), State::Stale, vec![rules::RELEASED_UNTOUCHED]),
            (
                "released, untouched, old",
                &full,
                facts(50, 20, now),
                State::Stale,
                vec![rules::PAST_LIFETIME, rules::RELEASED_UNTOUCHED],
            ),
            ("a kill switch stays released for years", &kill, facts(900, 800, now), State::Released, vec![]),
            ("operational past a week", &ops, facts(8, 8, now), State::Stale, vec![rules::PAST_LIFETIME]),
            (
                "unevaluated for a month",
                &kill,
                Facts { last_evaluated: Some(now - 31 * DAY_MS), ..facts(100, 100, now) },
                State::Stale,
                vec![rules::NO_EVALUATIONS],
            ),
            (
                "evaluated yesterday",
                &ramping,
                Facts { last_evaluated: Some(now - DAY_MS), ..facts(3, 3, now) },
                State::RollingOut,
                vec![],
            ),
            ("archived wins", &full, Facts { archived: true, ..facts(500, 400, now) }, State::Archived, vec![]),
        ];
        for (name, flag, facts, state, reasons) in cases {
            let l = lifecycle(flag, &facts, &p, now);
            assert_eq!(l.state, state, "{name}");
            assert_eq!(l.reasons.iter().map(|r| r.rule).collect::<Vec<_>>(), reasons, "{name}");
        }
    }

    #[test]
    fn history_gives_first_exposure_and_the_start_of_the_current_release() {
        let off = Flag::default();
        let ramp = flag_with("production", on(Some(50_000)));
        let full = flag_with("production", on(None));
        let full_with_tag = Flag { tags: vec!["x".into()], ..full.clone() };
        let h = [(1, &off), (2, &ramp), (3, &full), (4, &ramp), (5, &full), (6, &full_with_tag)];
        assert_eq!(history_facts(h.iter().copied()), (true, Some(5)));
        assert_eq!(history_facts(h[..2].iter().copied()), (true, None));
        assert_eq!(history_facts(h[..1].iter().copied()), (false, None));
    }
}
