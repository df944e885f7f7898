//! Unleash client-API payloads (`{version, features, segments}`, or delta-API events) imported
//! as native flags, so that every user lands in the bucket and variant they had in Unleash.
//!
//! Unleash is mapped onto the native model, never evaluated by separate code:
//! - a strategy becomes a rule: constraints and segments become clauses, the strategy's own
//!   condition (user ids, IPs, host names) becomes a clause, and its percentage becomes a rule
//!   `gate` hashed like Unleash (`murmur3("{groupId}:{stickiness}", seed 0) % 100`);
//! - variants become a rollout with Unleash's variant seed (86028157) and its total weight;
//! - feature variant overrides become rules placed before the strategy's rule;
//! - dependencies become prerequisites.
//!
//! Where Unleash evaluates something to "not enabled" rather than failing (unknown strategies
//! or operators, invalid regexes, missing segments or parents, transitive dependencies), the
//! importer writes that outcome natively and reports a warning, so imported flags compile cleanly.

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::context::{Context, RANDOM};
use crate::model::{
    BucketBy, Clause, EnvironmentConfig, Flag, FlagKind, FlagSet, Gate, Operator, Prerequisite, Rollout, Rule, Segment,
    SegmentRule, Serve, WeightedVariant, boolean_variants,
};
use crate::ops;

/// The seed Unleash uses when hashing for variants.
pub const VARIANT_SEED: u32 = 86_028_157;
/// The native variant standing for "the feature is disabled" in imported flags with variants
/// (Unleash calls it `disabled` too).
pub const DISABLED_VARIANT: &str = "disabled";
/// The native variant standing for "enabled, but no variant applies" in imported flags with
/// variants; Unleash reports it as the `disabled` variant with `feature_enabled: true`.
pub const ENABLED_VARIANT: &str = "enabled";

/// Why a payload could not be read at all.
#[derive(Debug, Error)]
pub enum ImportError {
    /// The payload is not an Unleash client-features document.
    #[error("not an Unleash client-features payload: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The document parsed but holds neither `features` nor `events`.
    #[error("not an Unleash client-features payload: expected a `features` or `events` field")]
    NoFeatures,
}

/// The result of an import: native flags, and what could not be carried over as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The native flags, with one environment.
    pub flags: FlagSet,
    /// Notes on behaviour that Unleash treats as "never enabled" and was imported as such.
    pub warnings: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Payload {
    #[serde(default)]
    features: Vec<Feature>,
    #[serde(default)]
    segments: Vec<USegment>,
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Event {
    Hydration {
        #[serde(default)]
        features: Vec<Feature>,
        #[serde(default)]
        segments: Vec<USegment>,
    },
    FeatureUpdated {
        feature: Feature,
    },
    #[serde(rename_all = "camelCase")]
    FeatureRemoved {
        feature_name: String,
    },
    SegmentUpdated {
        segment: USegment,
    },
    #[serde(rename_all = "camelCase")]
    SegmentRemoved {
        segment_id: i64,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Feature {
    name: String,
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    strategies: Vec<Strategy>,
    #[serde(default, deserialize_with = "null_as_default")]
    variants: Vec<Variant>,
    #[serde(default, deserialize_with = "null_as_default")]
    dependencies: Vec<Dependency>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Strategy {
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    parameters: Map<String, Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    constraints: Vec<Constraint>,
    #[serde(default, deserialize_with = "null_as_default")]
    segments: Vec<i64>,
    #[serde(default, deserialize_with = "null_as_default")]
    variants: Vec<Variant>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Constraint {
    context_name: String,
    operator: String,
    #[serde(default, deserialize_with = "null_as_default")]
    values: Vec<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    inverted: bool,
    #[serde(default)]
    case_insensitive: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct Variant {
    name: String,
    #[serde(default)]
    weight: u32,
    #[serde(default)]
    stickiness: Option<String>,
    #[serde(default)]
    payload: Option<UPayload>,
    #[serde(default, deserialize_with = "null_as_default")]
    overrides: Vec<Override>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
struct UPayload {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Override {
    context_name: String,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Dependency {
    feature: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "null_as_default")]
    variants: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct USegment {
    id: i64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    constraints: Vec<Constraint>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The native segment key for an Unleash segment id.
pub fn segment_key(id: i64) -> String {
    format!("unleash-segment-{id}")
}

/// Converts an Unleash variant payload into a native variant value: `string` and `csv` stay
/// strings, `number` becomes a number and `json` parsed JSON when they parse; no payload is `true`.
pub fn payload_value(kind: Option<&str>, value: Option<&str>) -> Value {
    match (kind, value) {
        (Some("number"), Some(v)) => serde_json::from_str::<serde_json::Number>(v.trim())
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(v.to_owned())),
        (Some("json"), Some(v)) => serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned())),
        (_, Some(v)) => Value::String(v.to_owned()),
        (_, None) => Value::Bool(true),
    }
}

/// Imports an Unleash client-API payload (or a delta-API event list) into native flags for
/// `environment`.
pub fn import(json: &str, environment: &str) -> Result<Imported, ImportError> {
    import_value(serde_json::from_str(json)?, environment)
}

/// Imports an already parsed payload.
pub fn import_value(json: Value, environment: &str) -> Result<Imported, ImportError> {
    if json.get("features").is_none() && json.get("events").is_none() {
        return Err(ImportError::NoFeatures);
    }
    let payload: Payload = serde_json::from_value(json)?;
    Ok(import_payload(payload, environment))
}

fn import_payload(payload: Payload, environment: &str) -> Imported {
    let (features, segments) = replay(payload);
    let mut warnings = Vec::new();
    let mut set = FlagSet::default();

    let mut segment_ok = HashSet::new();
    for segment in &segments {
        let key = segment_key(segment.id);
        let mut clauses = Vec::new();
        let mut valid = true;
        for c in &segment.constraints {
            match constraint_clause(c) {
                Ok(clause) => clauses.push(clause),
                Err(why) => {
                    warnings.push(format!("segment {}: {why}; the segment never matches", segment.id));
                    valid = false;
                }
            }
        }
        if valid {
            segment_ok.insert(segment.id);
        }
        let rules = if valid { vec![SegmentRule { clauses }] } else { Vec::new() };
        set.segments.insert(
            key,
            Segment { description: segment.name.clone().unwrap_or_default(), rules, ..Segment::default() },
        );
    }

    let shapes: HashMap<&str, Shape> = features.iter().map(|f| (f.name.as_str(), Shape::of(f))).collect();
    let with_dependencies: HashSet<&str> =
        features.iter().filter(|f| !f.dependencies.is_empty()).map(|f| f.name.as_str()).collect();
    for feature in &features {
        let Some(shape) = shapes.get(feature.name.as_str()) else { continue };
        let mut cx = FeatureCx {
            feature,
            with_dependencies: &with_dependencies,
            shape,
            segment_ok: &segment_ok,
            warnings: &mut warnings,
        };
        let config = cx.config(&shapes);
        let kind = match feature.kind.as_deref() {
            Some("experiment") => FlagKind::Experiment,
            Some("operational") => FlagKind::Operational,
            Some("kill-switch") => FlagKind::KillSwitch,
            Some("permission") => FlagKind::Permission,
            _ => FlagKind::Release,
        };
        let flag = Flag {
            kind,
            description: feature.description.clone().unwrap_or_default(),
            owner: None,
            tags: vec!["imported:unleash".to_owned()],
            variants: shape.variants.clone(),
            environments: IndexMap::from([(environment.to_owned(), config)]),
        };
        set.flags.insert(feature.name.clone(), flag);
    }
    Imported { flags: set, warnings }
}

/// Applies delta-API events in order on top of the plain payload.
fn replay(payload: Payload) -> (Vec<Feature>, Vec<USegment>) {
    let mut features: IndexMap<String, Feature> = payload.features.into_iter().map(|f| (f.name.clone(), f)).collect();
    let mut segments: IndexMap<i64, USegment> = payload.segments.into_iter().map(|s| (s.id, s)).collect();
    for event in payload.events {
        match event {
            Event::Hydration { features: fs, segments: ss } => {
                features = fs.into_iter().map(|f| (f.name.clone(), f)).collect();
                segments = ss.into_iter().map(|s| (s.id, s)).collect();
            }
            Event::FeatureUpdated { feature } => {
                features.insert(feature.name.clone(), feature);
            }
            Event::FeatureRemoved { feature_name } => {
                features.shift_remove(&feature_name);
            }
            Event::SegmentUpdated { segment } => {
                segments.insert(segment.id, segment);
            }
            Event::SegmentRemoved { segment_id } => {
                segments.shift_remove(&segment_id);
            }
            Event::Other => {}
        }
    }
    (features.into_values().collect(), segments.into_values().collect())
}

/// The native variants of a feature and how Unleash names map onto them.
struct Shape {
    variants: IndexMap<String, Value>,
    /// The variant served when disabled.
    off: String,
    /// The variant served when enabled without an Unleash variant.
    enabled: String,
    /// Whether the feature has Unleash variants (feature- or strategy-level).
    has_variants: bool,
}

impl Shape {
    fn of(feature: &Feature) -> Self {
        let all: Vec<&Variant> =
            feature.variants.iter().chain(feature.strategies.iter().flat_map(|s| s.variants.iter())).collect();
        if all.is_empty() {
            return Shape {
                variants: boolean_variants(),
                off: "off".into(),
                enabled: "on".into(),
                has_variants: false,
            };
        }
        let names: HashSet<&str> = all.iter().map(|v| v.name.as_str()).collect();
        let unique = |base: &str| {
            let mut name = base.to_owned();
            while names.contains(name.as_str()) {
                name.push('_');
            }
            name
        };
        let off = unique(DISABLED_VARIANT);
        let enabled = unique(ENABLED_VARIANT);
        let mut variants = IndexMap::new();
        variants.insert(off.clone(), Value::Bool(false));
        variants.insert(enabled.clone(), Value::Bool(true));
        for v in all {
            let value = payload_value(
                v.payload.as_ref().map(|p| p.kind.as_str()),
                v.payload.as_ref().map(|p| p.value.as_str()),
            );
            variants.entry(v.name.clone()).or_insert(value);
        }
        Shape { variants, off, enabled, has_variants: true }
    }

    /// The native variants that Unleash would name `name` for an enabled feature.
    fn enabled_variant_named(&self, name: &str) -> Option<String> {
        if name == DISABLED_VARIANT {
            // Unleash reports "enabled without a variant" under the name `disabled`.
            Some(self.enabled.clone())
        } else if self.has_variants && name != self.off && name != self.enabled && self.variants.contains_key(name) {
            Some(name.to_owned())
        } else {
            None
        }
    }
}

struct FeatureCx<'a> {
    feature: &'a Feature,
    with_dependencies: &'a HashSet<&'a str>,
    shape: &'a Shape,
    segment_ok: &'a HashSet<i64>,
    warnings: &'a mut Vec<String>,
}

impl FeatureCx<'_> {
    fn warn(&mut self, message: String) {
        self.warnings.push(format!("feature \"{}\": {message}", self.feature.name));
    }

    fn disabled(&self) -> EnvironmentConfig {
        EnvironmentConfig {
            enabled: false,
            off_variant: Some(self.shape.off.clone()),
            default: Some(Serve::variant(self.shape.off.clone())),
            ..EnvironmentConfig::default()
        }
    }

    fn config(&mut self, shapes: &HashMap<&str, Shape>) -> EnvironmentConfig {
        let feature = self.feature;
        let mut prerequisites = Vec::new();
        for dep in &feature.dependencies {
            let Some(parent_shape) = shapes.get(dep.feature.as_str()) else {
                self.warn(format!("depends on unknown feature \"{}\"; Unleash keeps it disabled", dep.feature));
                return EnvironmentConfig { enabled: feature.enabled, ..self.disabled() };
            };
            // Unleash evaluates one level of dependencies only: a parent with parents of its own
            // leaves the child disabled.
            if self.with_dependencies.contains(dep.feature.as_str()) {
                self.warn(format!(
                    "depends on \"{}\", which has dependencies itself; Unleash keeps it disabled",
                    dep.feature
                ));
                return EnvironmentConfig { enabled: feature.enabled, ..self.disabled() };
            }
            let variants: Vec<String> = if dep.enabled == Some(false) {
                vec![parent_shape.off.clone()]
            } else if dep.variants.is_empty() {
                parent_shape.variants.keys().filter(|k| **k != parent_shape.off).cloned().collect()
            } else {
                dep.variants.iter().filter_map(|n| parent_shape.enabled_variant_named(n)).collect()
            };
            if variants.is_empty() {
                self.warn(format!("no variant of \"{}\" can satisfy its dependency; it stays disabled", dep.feature));
                return EnvironmentConfig { enabled: feature.enabled, ..self.disabled() };
            }
            prerequisites.push(Prerequisite { flag: dep.feature.clone(), variant: None, variants });
        }

        let enabled_serve = self.feature_variants_serve();
        let mut rules = Vec::new();
        for (i, strategy) in feature.strategies.iter().enumerate() {
            match self.strategy_rules(i, strategy, &enabled_serve) {
                Ok(mut r) => rules.append(&mut r),
                Err(why) => self.warn(format!("strategy {i} ({}): {why}; it never matches", strategy.name)),
            }
        }
        // With no strategies at all, Unleash enables the feature for everyone (variant
        // overrides still apply first).
        let default = if feature.strategies.is_empty() {
            rules = enabled_serve
                .iter()
                .filter_map(|(clause, serve)| {
                    clause.as_ref().map(|c| Rule {
                        id: Some("variant override".into()),
                        description: None,
                        clauses: vec![c.clone()],
                        gate: None,
                        serve: serve.clone(),
                    })
                })
                .collect();
            enabled_serve.into_iter().last().map(|(_, s)| s)
        } else {
            Some(Serve::variant(self.shape.off.clone()))
        };
        EnvironmentConfig {
            enabled: feature.enabled,
            targets: IndexMap::new(),
            prerequisites,
            rules,
            default,
            off_variant: Some(self.shape.off.clone()),
            exposure: None,
        }
    }

    /// What the feature serves when enabled and the strategy has no variants of its own:
    /// override rules (clauses, variant) then the feature-variant rollout.
    fn feature_variants_serve(&self) -> Vec<(Option<Clause>, Serve)> {
        let variants = &self.feature.variants;
        if variants.is_empty() || variants.iter().all(|v| v.weight == 0) {
            return vec![(None, Serve::variant(self.shape.enabled.clone()))];
        }
        let mut out = Vec::new();
        for v in variants {
            for o in &v.overrides {
                let clause = Clause {
                    attribute: Some(o.context_name.clone()),
                    op: Operator::In,
                    values: o.values.iter().cloned().map(Value::String).collect(),
                    ..Clause::default()
                };
                out.push((Some(clause), Serve::variant(v.name.clone())));
            }
        }
        let stickiness = variants.first().and_then(|v| v.stickiness.as_deref()).unwrap_or("default");
        out.push((None, variant_rollout(variants, &self.feature.name, stickiness)));
        out
    }

    fn strategy_rules(
        &self,
        index: usize,
        strategy: &Strategy,
        enabled_serve: &[(Option<Clause>, Serve)],
    ) -> Result<Vec<Rule>, String> {
        let feature = &self.feature.name;
        let param = |name: &str| -> Option<String> {
            match strategy.parameters.get(name)? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let group_id = param("groupId").filter(|g| !g.is_empty()).unwrap_or_else(|| feature.clone());
        let percentage = |name: &str| -> u32 {
            param(name).and_then(|p| p.trim().parse::<f64>().ok()).map_or(0, |p| p.clamp(0.0, 100.0) as u32)
        };
        let gate = |weight: u32, bucket_by: BucketBy, salt: String| Gate {
            weight,
            total: Some(100),
            bucket_by: Some(bucket_by),
            salt: Some(salt),
            seed: 0,
        };
        let list = |name: &str| -> Vec<String> {
            param(name)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };

        let mut clauses = Vec::new();
        let mut rule_gate = None;
        match strategy.name.as_str() {
            "default" => {}
            "userWithId" => clauses.push(in_clause("userId", list("userIds"))),
            "gradualRolloutUserId" => {
                rule_gate = Some(gate(percentage("percentage"), BucketBy::One("userId".into()), group_id.clone()));
            }
            "gradualRolloutSessionId" => {
                rule_gate = Some(gate(percentage("percentage"), BucketBy::One("sessionId".into()), group_id.clone()));
            }
            "gradualRolloutRandom" => {
                rule_gate = Some(gate(percentage("percentage"), BucketBy::One(RANDOM.into()), group_id.clone()));
            }
            "flexibleRollout" => {
                let stickiness = param("stickiness").unwrap_or_else(|| "default".into());
                let bucket_by = match stickiness.as_str() {
                    "default" | "" => BucketBy::Many(vec!["userId".into(), "sessionId".into(), RANDOM.into()]),
                    "random" => BucketBy::One(RANDOM.into()),
                    other => BucketBy::One(other.to_owned()),
                };
                rule_gate = Some(gate(percentage("rollout"), bucket_by, group_id.clone()));
            }
            "remoteAddress" => {
                let ips: Vec<String> = list("IPs").into_iter().filter(|ip| ops::parse_net(ip).is_some()).collect();
                if ips.is_empty() {
                    return Err("no valid IP address or range".into());
                }
                clauses.push(Clause {
                    attribute: Some("remoteAddress".into()),
                    op: Operator::Cidr,
                    values: ips.into_iter().map(Value::String).collect(),
                    ..Clause::default()
                });
            }
            "applicationHostname" => {
                let mut c = in_clause("hostname", list("hostNames").into_iter().map(|h| h.to_lowercase()).collect());
                c.case_insensitive = true;
                clauses.push(c);
            }
            other => return Err(format!("unknown strategy \"{other}\"")),
        }
        for c in &strategy.constraints {
            clauses.push(constraint_clause(c)?);
        }
        for id in &strategy.segments {
            if !self.segment_ok.contains(id) {
                return Err(format!("segment {id} does not exist or is invalid"));
            }
            clauses.push(Clause {
                op: Operator::InSegment,
                values: vec![Value::String(segment_key(*id))],
                ..Clause::default()
            });
        }

        let rule = |suffix: &str, extra: Option<Clause>, serve: Serve| {
            let mut all = clauses.clone();
            all.extend(extra);
            Rule {
                id: Some(format!("strategy[{index}] {}{suffix}", strategy.name)),
                description: None,
                clauses: all,
                gate: rule_gate.clone(),
                serve,
            }
        };
        if strategy.variants.iter().any(|v| v.weight > 0) {
            let stickiness = param("stickiness").unwrap_or_else(|| "default".into());
            return Ok(vec![rule("", None, variant_rollout(&strategy.variants, &group_id, &stickiness))]);
        }
        Ok(enabled_serve
            .iter()
            .map(|(extra, serve)| {
                let suffix = if extra.is_some() { " (variant override)" } else { "" };
                rule(suffix, extra.clone(), serve.clone())
            })
            .collect())
    }
}

fn in_clause(attribute: &str, values: Vec<String>) -> Clause {
    Clause {
        attribute: Some(attribute.to_owned()),
        op: Operator::In,
        values: values.into_iter().map(Value::String).collect(),
        ..Clause::default()
    }
}

/// A rollout over Unleash variants, hashed as Unleash does for variants.
fn variant_rollout(variants: &[Variant], group_id: &str, stickiness: &str) -> Serve {
    let bucket_by = match stickiness {
        "default" | "" => vec!["userId".to_owned(), "sessionId".to_owned(), RANDOM.to_owned()],
        "random" => vec![RANDOM.to_owned()],
        other => vec![other.to_owned(), RANDOM.to_owned()],
    };
    let total: u32 = variants.iter().map(|v| v.weight).sum();
    Serve {
        variant: None,
        rollout: Some(Rollout {
            variants: variants.iter().map(|v| WeightedVariant { variant: v.name.clone(), weight: v.weight }).collect(),
            total: Some(total),
            bucket_by: Some(BucketBy::Many(bucket_by)),
            salt: Some(group_id.to_owned()),
            seed: VARIANT_SEED,
        }),
    }
}

/// Maps an Unleash constraint to a clause, or says why Unleash would never match it.
fn constraint_clause(c: &Constraint) -> Result<Clause, String> {
    let (op, case_applies) = match c.operator.as_str() {
        "IN" => (Operator::In, false),
        "NOT_IN" => (Operator::NotIn, false),
        "STR_STARTS_WITH" => (Operator::StartsWith, true),
        "STR_ENDS_WITH" => (Operator::EndsWith, true),
        "STR_CONTAINS" => (Operator::Contains, true),
        "NUM_EQ" => (Operator::NumEq, false),
        "NUM_GT" => (Operator::Gt, false),
        "NUM_GTE" => (Operator::Gte, false),
        "NUM_LT" => (Operator::Lt, false),
        "NUM_LTE" => (Operator::Lte, false),
        "DATE_AFTER" => (Operator::After, false),
        "DATE_BEFORE" => (Operator::Before, false),
        "SEMVER_EQ" => (Operator::SemverEq, false),
        "SEMVER_GT" => (Operator::SemverGt, false),
        "SEMVER_GTE" => (Operator::SemverGte, false),
        "SEMVER_LT" => (Operator::SemverLt, false),
        "SEMVER_LTE" => (Operator::SemverLte, false),
        "REGEX" => (Operator::Regex, true),
        "IN_CIDR" => (Operator::Cidr, false),
        other => return Err(format!("unknown operator \"{other}\"")),
    };
    let mut values: Vec<String> =
        if c.values.is_empty() { c.value.iter().cloned().collect() } else { c.values.clone() };
    if op == Operator::Cidr {
        // Unleash skips entries that are not addresses or ranges.
        values.retain(|v| ops::parse_net(v).is_some());
    }
    let values: Vec<Value> = values.into_iter().map(Value::String).collect();
    let case_insensitive = case_applies && c.case_insensitive;
    if !matches!(op, Operator::In | Operator::NotIn) {
        ops::validate(&op, &values, case_insensitive)
            .map_err(|e| format!("constraint on \"{}\": {}", c.context_name, e.message))?;
    }
    if matches!(
        op,
        Operator::SemverEq | Operator::SemverGt | Operator::SemverGte | Operator::SemverLt | Operator::SemverLte
    ) && let Some(loose) =
        values.iter().filter_map(Value::as_str).find(|v| crate::semver::Version::parse(v).is_none())
    {
        // Dimmer reads versions loosely on both sides (as LaunchDarkly does); Unleash holds the
        // constraint's own value to strict semver and never matches otherwise (its client
        // specification: `SEMVER_EQ v2.0.0` is false even for `v2.0.0`).
        return Err(format!("constraint on \"{}\": \"{loose}\" is not a strict semantic version", c.context_name));
    }
    Ok(Clause { attribute: Some(c.context_name.clone()), op, values, negate: c.inverted, case_insensitive })
}

/// Maps an Unleash context (`userId`, `sessionId`, `remoteAddress`, `environment`, `appName`,
/// `currentTime`, `properties`) to a Dimmer context: standard fields stay attributes and
/// `properties.*` are lifted to top-level attributes. Nulls are left out.
pub fn context(unleash: &Value) -> Context {
    let mut attributes = Map::new();
    if let Value::Object(map) = unleash {
        for (k, v) in map {
            match (k.as_str(), v) {
                (_, Value::Null) => {}
                ("properties", Value::Object(props)) => {
                    for (pk, pv) in props {
                        if !pv.is_null() {
                            attributes.insert(pk.clone(), pv.clone());
                        }
                    }
                }
                _ => {
                    attributes.insert(k.clone(), v.clone());
                }
            }
        }
    }
    Context::from_map(attributes)
}
