//! The flag model: what people write in flag files and send to the API (serde + JSON Schema).
//!
//! These types are deliberately permissive where a mistake is likely (operator names, variant
//! references, weights): they accept what they can so that [`crate::compile`] can report *every*
//! problem with its path at once, instead of serde stopping at the first.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The variant served by a boolean flag that is on.
pub const ON: &str = "on";
/// The variant served by a boolean flag that is off.
pub const OFF: &str = "off";
/// One hundred percent, in the rollout resolution of 1/1000 of a percent.
pub const FULL_WEIGHT: u32 = 100_000;

/// A set of flags and the segments they use: the content of a flags file, or of one project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagSet {
    /// Flags by key.
    #[serde(default)]
    #[schemars(extend("propertyNames" = {"pattern": crate::keys::KEY_PATTERN}))]
    pub flags: IndexMap<String, Flag>,
    /// Reusable user groups by key.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(extend("propertyNames" = {"pattern": crate::keys::KEY_PATTERN}))]
    pub segments: IndexMap<String, Segment>,
}

/// What a flag is for; it decides the flag's expected lifetime under the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FlagKind {
    /// A change being released gradually; removed once fully released.
    #[default]
    Release,
    /// An A/B or multivariate experiment.
    Experiment,
    /// An operational switch (e.g. a degraded mode).
    Operational,
    /// A permanent switch that turns a capability off in an emergency.
    KillSwitch,
    /// A permanent entitlement (plans, beta programs).
    Permission,
}

/// One feature flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Flag {
    /// What the flag is for.
    #[serde(default)]
    pub kind: FlagKind,
    /// What the flag does, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The team or person answerable for the flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Variant key → value (bool, string, number or JSON). Left out, the flag is boolean:
    /// `on` = true and `off` = false.
    #[serde(default = "boolean_variants")]
    pub variants: IndexMap<String, Value>,
    /// Configuration per environment; an environment not listed serves the off variant.
    #[serde(default)]
    pub environments: IndexMap<String, EnvironmentConfig>,
}

impl Default for Flag {
    fn default() -> Self {
        Self {
            kind: FlagKind::default(),
            description: String::new(),
            owner: None,
            tags: Vec::new(),
            variants: boolean_variants(),
            environments: IndexMap::new(),
        }
    }
}

/// The variants of a boolean flag: `on` = true, `off` = false.
pub fn boolean_variants() -> IndexMap<String, Value> {
    IndexMap::from([(ON.to_owned(), Value::Bool(true)), (OFF.to_owned(), Value::Bool(false))])
}

/// How a flag behaves in one environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// When false everyone gets the off variant: this is the kill switch.
    #[serde(default)]
    pub enabled: bool,
    /// Individual targets: variant key → targeting keys that always get it.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub targets: IndexMap<String, Vec<String>>,
    /// Flags that must serve given variants (for the same context) before this one is evaluated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<Prerequisite>,
    /// Rules, tried in order; the first that matches decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// What is served when no target or rule matches. Left out: the `on` variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Serve>,
    /// What is served when the flag is disabled or a prerequisite fails. Left out: `off`.
    /// It is also the control variant that an [`Exposure`] holds users back on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_variant: Option<String>,
    /// A ceiling on who may be served anything but the control variant: set by release plans
    /// and dial-downs. Left out: no ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Exposure>,
}

/// The share of users who may be served a non-control variant (the control variant is the
/// environment's off variant). It applies after rules and default, so a multi-variant split keeps
/// its proportions and is scaled as a whole; individual targets are not held back.
///
/// A user is exposed when they are in one of `segments`, or when their bucket
/// (`murmur3("{salt}:{value}", seed) % total`) is below `weight`. Lowering the weight only
/// removes users and raising it only adds them (the ramp property), because the bucket does not
/// depend on the weight.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exposure {
    /// The share of everyone else exposed, out of `total` (100000 = 100%).
    pub weight: u32,
    /// Segments whose members are exposed whatever the weight (canaries: internal users, beta
    /// customers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
    /// Left out: 100000 (1/1000 of a percent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u32>,
    /// The attribute whose value is hashed. Left out: `targetingKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_by: Option<BucketBy>,
    /// Hashed before the value. Left out: `"{flag key}:exposure"`, apart from every rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// The murmur3 seed. Left out: 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seed: u32,
}

/// A prerequisite: another flag must serve one of the given variants.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prerequisite {
    /// The key of the flag this one depends on.
    pub flag: String,
    /// The variant it must serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Or any of these variants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<String>,
}

/// A targeting rule: when every clause holds (and the gate lets the user in), it serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A stable name for the rule, shown in explanations and audit entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What the rule is for, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Conditions that must all hold; none means everyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clauses: Vec<Clause>,
    /// Optionally, only a deterministic share of the matching users match the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// What the rule serves.
    pub serve: Serve,
}

/// What to serve: one fixed variant, or a rollout. Exactly one of the two is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Serve {
    /// A fixed variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// A split between variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

impl Serve {
    /// Serves one fixed variant.
    pub fn variant(key: impl Into<String>) -> Self {
        Self { variant: Some(key.into()), rollout: None }
    }
}

/// Where a bucketing value comes from: an attribute path, or a list tried in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum BucketBy {
    /// One attribute path.
    One(String),
    /// Attribute paths tried in order; the first present decides.
    Many(Vec<String>),
}

impl BucketBy {
    /// The attribute paths in order.
    pub fn paths(&self) -> &[String] {
        match self {
            BucketBy::One(p) => std::slice::from_ref(p),
            BucketBy::Many(ps) => ps,
        }
    }
}

/// A deterministic percentage split between variants.
///
/// A user's bucket is `murmur3_x86_32("{salt}:{value}", seed) % total`; variants own consecutive
/// ranges of buckets in the order listed, so raising the weight of a variant at the expense of
/// the variants after it only adds users to it (the ramp property).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// The variants and their weights, in bucket order.
    pub variants: Vec<WeightedVariant>,
    /// What the weights must sum to. Left out: 100000 (weights are in 1/1000 of a percent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u32>,
    /// The attribute whose value is hashed. Left out: `targetingKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_by: Option<BucketBy>,
    /// Hashed before the value. Left out: the flag key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// The murmur3 seed. Left out: 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seed: u32,
}

/// A variant and its share of a rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightedVariant {
    /// The variant key.
    pub variant: String,
    /// Its weight, out of the rollout's total.
    pub weight: u32,
}

/// A deterministic percentage gate on a rule: the rule matches only users whose bucket is below
/// `weight` (out of `total`). Raising the weight only lets more users in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// The share let in, out of `total`.
    pub weight: u32,
    /// Left out: 100000 (1/1000 of a percent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u32>,
    /// The attribute whose value is hashed. Left out: `targetingKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_by: Option<BucketBy>,
    /// Hashed before the value. Left out: the flag key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// The murmur3 seed. Left out: 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seed: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One condition of a rule or segment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Clause {
    /// The context attribute, by path (`plan`, `address.country`). Not used by `in_segment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// The operator.
    pub op: Operator,
    /// The values to compare with; the clause holds when any of them matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Value>,
    /// Inverts the clause.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub negate: bool,
    /// Compare strings without regard to case.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub case_insensitive: bool,
}

/// Clause operators. An unknown name is kept so that compile can report it with its path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// The attribute equals one of the values.
    #[default]
    In,
    /// The attribute equals none of the values.
    NotIn,
    /// The attribute equals the single value.
    Equals,
    /// String prefix.
    StartsWith,
    /// String suffix.
    EndsWith,
    /// Substring.
    Contains,
    /// Regular expression (size-bounded).
    Regex,
    /// Number equal.
    NumEq,
    /// Number less than.
    Lt,
    /// Number less than or equal.
    Lte,
    /// Number greater than.
    Gt,
    /// Number greater than or equal.
    Gte,
    /// Semantic version equal.
    SemverEq,
    /// Semantic version less than.
    SemverLt,
    /// Semantic version less than or equal.
    SemverLte,
    /// Semantic version greater than.
    SemverGt,
    /// Semantic version greater than or equal.
    SemverGte,
    /// Date before (RFC 3339 or epoch milliseconds).
    Before,
    /// Date after (RFC 3339 or epoch milliseconds).
    After,
    /// IP address inside one of the CIDR ranges (or equal to one of the addresses).
    Cidr,
    /// The attribute is present.
    Exists,
    /// The attribute is absent.
    Absent,
    /// The context is a member of one of the segments named in `values`.
    InSegment,
    /// An operator Dimmer does not know (reported by compile).
    #[schemars(skip)]
    Unknown(String),
}

impl Operator {
    /// Every known operator, in documentation order.
    pub const ALL: [Operator; 23] = [
        Operator::In,
        Operator::NotIn,
        Operator::Equals,
        Operator::StartsWith,
        Operator::EndsWith,
        Operator::Contains,
        Operator::Regex,
        Operator::NumEq,
        Operator::Lt,
        Operator::Lte,
        Operator::Gt,
        Operator::Gte,
        Operator::SemverEq,
        Operator::SemverLt,
        Operator::SemverLte,
        Operator::SemverGt,
        Operator::SemverGte,
        Operator::Before,
        Operator::After,
        Operator::Cidr,
        Operator::Exists,
        Operator::Absent,
        Operator::InSegment,
    ];

    /// The operator's name in flag files.
    pub fn name(&self) -> &str {
        match self {
            Operator::In => "in",
            Operator::NotIn => "not_in",
            Operator::Equals => "equals",
            Operator::StartsWith => "starts_with",
            Operator::EndsWith => "ends_with",
            Operator::Contains => "contains",
            Operator::Regex => "regex",
            Operator::NumEq => "num_eq",
            Operator::Lt => "lt",
            Operator::Lte => "lte",
            Operator::Gt => "gt",
            Operator::Gte => "gte",
            Operator::SemverEq => "semver_eq",
            Operator::SemverLt => "semver_lt",
            Operator::SemverLte => "semver_lte",
            Operator::SemverGt => "semver_gt",
            Operator::SemverGte => "semver_gte",
            Operator::Before => "before",
            Operator::After => "after",
            Operator::Cidr => "cidr",
            Operator::Exists => "exists",
            Operator::Absent => "absent",
            Operator::InSegment => "in_segment",
            Operator::Unknown(name) => name,
        }
    }

    /// Parses an operator name; unknown names are kept as [`Operator::Unknown`].
    pub fn parse(name: &str) -> Operator {
        Operator::ALL.iter().find(|op| op.name() == name).cloned().unwrap_or_else(|| Operator::Unknown(name.to_owned()))
    }
}

impl Serialize for Operator {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Operator {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(Operator::parse(&name))
    }
}

/// A reusable group of users: explicit keys and rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// What the segment is, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Targeting keys that are always members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included: Vec<String>,
    /// Targeting keys that are never members (checked before the rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
    /// A context is a member when any rule holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<SegmentRule>,
}

/// A segment rule: all clauses must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentRule {
    /// Conditions that must all hold.
    #[serde(default)]
    pub clauses: Vec<Clause>,
}

/// The JSON Schema of a flags file, generated from these types.
pub fn flag_set_schema() -> Value {
    let schema = schemars::schema_for!(FlagSet);
    // A schema is plain data; serializing it cannot fail.
    serde_json::to_value(schema).unwrap_or(Value::Null)
}
