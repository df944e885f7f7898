//! Compile once per change: validate a [`FlagSet`] for one environment, report every problem
//! with its path, and turn it into the pre-resolved form that [`crate::evaluate`] walks.
//!
//! A flag that fails to compile is kept as "broken": it serves its off variant with reason
//! `ERROR` while every other flag keeps working.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use foldhash::fast::RandomState;
use serde::Serialize;
use serde_json::Value;

use crate::context::{AttributePath, RANDOM, TARGETING_KEY};
use crate::model::{
    BucketBy, Clause, EnvironmentConfig, Exposure, FULL_WEIGHT, Flag, FlagSet, Gate, OFF, ON, Operator, Rollout, Serve,
};
use crate::ops::{self, Matcher};

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look; the flag still works as written.
    Warning,
    /// The flag (or segment) cannot be evaluated as written.
    Error,
}

/// One problem found while compiling, named by its path in the flags file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where: `flags.checkout.environments.production.rules[2].clauses[0].op`.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}: {}", self.path, self.message)
    }
}

/// Formats a map key as a diagnostic path segment (`.key`, or `["odd key"]` when a dot or other
/// character would make the path ambiguous). The quoted form escapes everything but printable
/// ASCII, so a path printed in a terminal shows the key as it is, not as a bidirectional or
/// invisible character would make it look.
pub fn path_key(key: &str) -> String {
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        format!(".{key}")
    } else {
        format!("[{}]", crate::keys::quote(key))
    }
}

/// Where a bucketing value comes from.
#[derive(Debug, Clone)]
pub(crate) enum BucketSource {
    Attribute(AttributePath),
    Random,
}

/// How users are hashed into buckets.
#[derive(Debug, Clone)]
pub(crate) struct Bucketing {
    pub(crate) sources: Box<[BucketSource]>,
    pub(crate) salt: Box<str>,
    pub(crate) seed: u32,
    pub(crate) total: u32,
    /// The hash state after `"{salt}:"`, so evaluation hashes only the user's value.
    pub(crate) prefix: crate::hash::Murmur3,
}

#[derive(Debug, Clone)]
pub(crate) enum CompiledServe {
    Variant(usize),
    /// Each range is (exclusive upper bucket, variant index), in bucket order.
    Rollout {
        bucketing: Bucketing,
        ranges: Box<[(u32, usize)]>,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum CompiledClause {
    Attribute { path: AttributePath, op: Operator, matcher: Matcher, negate: bool },
    Segment { segments: Box<[usize]>, negate: bool },
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledGate {
    pub(crate) bucketing: Bucketing,
    pub(crate) weight: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledExposure {
    pub(crate) gate: CompiledGate,
    pub(crate) segments: Box<[usize]>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub(crate) id: Option<Box<str>>,
    pub(crate) clauses: Box<[CompiledClause]>,
    pub(crate) gate: Option<CompiledGate>,
    pub(crate) serve: CompiledServe,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledPrerequisite {
    pub(crate) flag: usize,
    pub(crate) variants: Box<[usize]>,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) enabled: bool,
    pub(crate) off: Option<usize>,
    pub(crate) targets: HashMap<Box<str>, usize, RandomState>,
    pub(crate) prerequisites: Box<[CompiledPrerequisite]>,
    pub(crate) rules: Box<[CompiledRule]>,
    pub(crate) default: CompiledServe,
    /// Boxed: most configurations have none, and the hot `Config` stays small.
    pub(crate) exposure: Option<Box<CompiledExposure>>,
    /// No targets, prerequisites or rules: the default is served statically.
    pub(crate) is_static: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum Body {
    Ready(Config),
    Broken { fallback: Option<usize>, message: Box<str> },
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledFlag {
    pub(crate) key: Box<str>,
    pub(crate) variants: Box<[(Box<str>, Value)]>,
    pub(crate) body: Body,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledSegment {
    pub(crate) included: HashSet<Box<str>, RandomState>,
    pub(crate) excluded: HashSet<Box<str>, RandomState>,
    pub(crate) rules: Box<[Box<[CompiledClause]>]>,
}

/// Flags of one environment, validated and ready to evaluate. Cheap to share behind an `Arc`,
/// and cheap to clone (a reference count per flag).
#[derive(Debug, Clone)]
pub struct CompiledFlags {
    pub(crate) environment: Box<str>,
    /// Shared between the revisions of an environment until a flag is added or removed; keys are
    /// `Arc`s so that the copy an addition makes copies no string.
    pub(crate) index: Arc<HashMap<Arc<str>, usize, RandomState>>,
    /// One `Arc` per flag: a revision that changes one flag shares every other with the last
    /// (see [`crate::incremental`]).
    pub(crate) flags: Box<[Arc<CompiledFlag>]>,
    pub(crate) segments: Arc<[CompiledSegment]>,
}

impl CompiledFlags {
    /// The environment these flags were compiled for.
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// Flag keys, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.flags.iter().map(|f| f.key.as_ref())
    }

    /// Whether a flag exists.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// The number of flags.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// Whether there are no flags.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// A flag's variants, in declaration order.
    pub fn variants(&self, key: &str) -> Option<impl Iterator<Item = (&str, &Value)>> {
        let flag = &self.flags[*self.index.get(key)?];
        Some(flag.variants.iter().map(|(k, v)| (k.as_ref(), v)))
    }

    /// The off variant of a flag in this environment, when it has one.
    pub fn off_variant(&self, key: &str) -> Option<&str> {
        let flag = &self.flags[*self.index.get(key)?];
        let off = match &flag.body {
            Body::Ready(c) => c.off,
            Body::Broken { fallback, .. } => *fallback,
        };
        off.map(|i| flag.variants[i].0.as_ref())
    }
}

/// Compiles `set` for `environment`. Diagnostics cover the flag-level fields, that environment's
/// configurations and every segment; a flag with an error is compiled as broken.
///
/// A flag or segment key that breaks the [key rule](crate::keys) is a warning here, not an
/// error: data stored before the rule, or imported from a tool that allows such keys (Unleash
/// allows any UTF-8 name in its clients), keeps evaluating and can still be changed, killed or
/// dialed down. New keys are refused where they are made: [`validate`] (`dimmer lint`) reports
/// them as errors, and the server checks [`crate::keys::check_key`] on create. Keys that could
/// never be evaluated (empty, over 256 bytes, or with control characters) stay errors that
/// break the flag, as they always were.
pub fn compile(set: &FlagSet, environment: &str) -> (CompiledFlags, Vec<Diagnostic>) {
    compile_with(set, environment, Severity::Warning)
}

/// [`compile`], with `key_severity` for keys that break the key rule.
fn compile_with(set: &FlagSet, environment: &str, key_severity: Severity) -> (CompiledFlags, Vec<Diagnostic>) {
    let full = compile_full(set, environment, key_severity);
    (full.compiled, full.diags)
}

/// A full compile with what [`crate::incremental`] keeps besides the result.
pub(crate) struct Full {
    pub(crate) compiled: CompiledFlags,
    pub(crate) diags: Vec<Diagnostic>,
    /// The prerequisite graph's edges, by flag index.
    pub(crate) edges: Vec<Vec<usize>>,
    /// Which flags the graph's faults broke.
    pub(crate) faulty: Vec<bool>,
    pub(crate) broken_segments: HashSet<usize>,
}

pub(crate) fn compile_full(set: &FlagSet, environment: &str, key_severity: Severity) -> Full {
    let mut diags = Vec::new();
    let segment_index: HashMap<&str, usize> = set.segments.keys().enumerate().map(|(i, k)| (k.as_str(), i)).collect();

    for key in set.segments.keys() {
        if let Err(e) = crate::keys::check_key(key) {
            diags.push(Diagnostic {
                severity: key_severity,
                path: format!("segments{}", path_key(key)),
                message: e.to_string(),
            });
        }
    }
    let (segments, broken_segments) = compile_segments(set, &segment_index, &mut diags);

    let mut flags = Vec::with_capacity(set.flags.len());
    let mut prereq_edges: Vec<Vec<usize>> = Vec::with_capacity(set.flags.len());
    let cx = SetCx { set, environment, segment_index: &segment_index, broken_segments: &broken_segments, key_severity };
    for (key, flag) in &set.flags {
        let (compiled, edges, mut errors) = cx.flag(key, flag);
        diags.append(&mut errors);
        prereq_edges.push(edges);
        flags.push(Arc::new(compiled));
    }

    // A prerequisite cycle would make evaluation recurse forever, and a prerequisite shared by
    // many paths would be evaluated once per path: both are refused here, so that evaluation
    // needs neither a memo (an allocation) nor a timeout.
    let mut faulty = vec![false; flags.len()];
    for (i, message) in graph_faults(&prereq_edges).into_iter().enumerate() {
        if let Some(message) = message {
            faulty[i] = true;
            diags.push(break_for_graph(&mut flags[i], set, i, environment, message));
        }
    }

    let index = set.flags.keys().enumerate().map(|(i, k)| (Arc::from(k.as_str()), i)).collect();
    let compiled = CompiledFlags {
        environment: environment.into(),
        index: Arc::new(index),
        flags: flags.into(),
        segments: segments.into(),
    };
    Full { compiled, diags, edges: prereq_edges, faulty, broken_segments }
}

/// What compiling one flag needs besides the flag: the set it refers to (prerequisites) and
/// the compiled segments.
pub(crate) struct SetCx<'a> {
    pub(crate) set: &'a FlagSet,
    pub(crate) environment: &'a str,
    pub(crate) segment_index: &'a HashMap<&'a str, usize>,
    pub(crate) broken_segments: &'a HashSet<usize>,
    pub(crate) key_severity: Severity,
}

impl SetCx<'_> {
    /// Compiles one flag for the environment: the compiled flag, its prerequisites' indexes (the
    /// edges of the prerequisite graph) and its diagnostics.
    pub(crate) fn flag(&self, key: &str, flag: &Flag) -> (CompiledFlag, Vec<usize>, Vec<Diagnostic>) {
        let base = format!("flags{}", path_key(key));
        let mut errors = Vec::new();
        let mut cx = FlagCx {
            key,
            flag,
            set: self.set,
            segment_index: self.segment_index,
            broken_segments: self.broken_segments,
            key_severity: self.key_severity,
            diags: &mut errors,
        };
        cx.check_flag_fields(&base);
        let config = flag.environments.get(self.environment);
        let env_base = format!("{base}.environments{}", path_key(self.environment));
        let compiled = match config {
            Some(cfg) => cx.config(cfg, &env_base),
            None => Some(Config {
                enabled: false,
                off: flag.variants.get_index_of(OFF),
                targets: HashMap::default(),
                prerequisites: Box::default(),
                rules: Box::default(),
                default: CompiledServe::Variant(0),
                exposure: None,
                is_static: true,
            }),
        };
        let edges = compiled.as_ref().map(|c| c.prerequisites.iter().map(|p| p.flag).collect()).unwrap_or_default();
        let first_error = errors.iter().find(|d| d.severity == Severity::Error).cloned();
        let fallback = config
            .and_then(|c| c.off_variant.as_deref())
            .and_then(|off| flag.variants.get_index_of(off))
            .or_else(|| flag.variants.get_index_of(OFF));
        let body = match (compiled, first_error) {
            (Some(cfg), None) => Body::Ready(cfg),
            (_, Some(d)) => Body::Broken { fallback, message: format!("{}: {}", d.path, d.message).into() },
            (None, None) => Body::Broken { fallback, message: "flag failed to compile".into() },
        };
        let compiled = CompiledFlag {
            key: key.into(),
            variants: flag.variants.iter().map(|(k, v)| (Box::from(k.as_str()), v.clone())).collect(),
            body,
        };
        (compiled, edges, errors)
    }
}

/// For each flag of the prerequisite graph `edges`: why it cannot be evaluated as a whole (on
/// or reaching a cycle, or too costly), or `None`.
pub(crate) fn graph_faults(edges: &[Vec<usize>]) -> Vec<Option<String>> {
    let cycles = find_cycles(edges);
    let costs = evaluation_costs(edges, &cycles);
    (0..edges.len())
        .map(|i| {
            if cycles[i] {
                Some("prerequisites form a cycle (or depend on flags that do)".to_owned())
            } else if costs[i] > MAX_EVALUATION_COST {
                Some(format!(
                    "evaluating this flag would evaluate prerequisites {} times (limit {MAX_EVALUATION_COST}): \
                     flatten the chain or share fewer prerequisites",
                    costs[i]
                ))
            } else {
                None
            }
        })
        .collect()
}

/// Breaks flag `i` for a fault of the prerequisite graph; the diagnostic saying so.
pub(crate) fn break_for_graph(
    flag: &mut Arc<CompiledFlag>,
    set: &FlagSet,
    i: usize,
    environment: &str,
    message: String,
) -> Diagnostic {
    let key = set.flags.get_index(i).map(|(k, _)| k.as_str()).unwrap_or_default();
    let path = format!("flags{}.environments{}.prerequisites", path_key(key), path_key(environment));
    let flag = Arc::make_mut(flag);
    let fallback = match &flag.body {
        Body::Ready(c) => c.off,
        Body::Broken { fallback, .. } => *fallback,
    };
    flag.body = Body::Broken { fallback, message: format!("{path}: {message}").into() };
    Diagnostic { severity: Severity::Error, path, message }
}

/// Validates every environment of every flag (and every segment): what `dimmer lint` checks.
/// Unlike [`compile`], a key that breaks the [key rule](crate::keys) is an error: a file being
/// checked is about to be written, and the server refuses such keys for new flags and segments.
pub fn validate(set: &FlagSet) -> Vec<Diagnostic> {
    let mut envs: Vec<&str> = set.flags.values().flat_map(|f| f.environments.keys().map(String::as_str)).collect();
    envs.sort_unstable();
    envs.dedup();
    if envs.is_empty() {
        envs.push("default");
    }
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    for env in envs {
        for d in compile_with(set, env, Severity::Error).1 {
            if seen.insert(d.clone()) {
                all.push(d);
            }
        }
    }
    all
}

/// The most nested evaluations (prerequisite flags, or segments within segments) one
/// evaluation may cause; beyond it the flag or segment is refused at compile time.
pub const MAX_EVALUATION_COST: u64 = 1_000;

/// For each node of an acyclic part of a graph: how many nodes an unmemoized walk visits,
/// counting a node once per path that reaches it. Nodes on or reaching a cycle get `u64::MAX`.
fn evaluation_costs(edges: &[Vec<usize>], cyclic: &[bool]) -> Vec<u64> {
    fn cost(n: usize, edges: &[Vec<usize>], cyclic: &[bool], memo: &mut [Option<u64>]) -> u64 {
        if cyclic[n] {
            return u64::MAX;
        }
        if let Some(c) = memo[n] {
            return c;
        }
        let mut total: u64 = 1;
        for &m in &edges[n] {
            let c = if m < memo.len() { cost(m, edges, cyclic, memo) } else { 0 };
            total = total.saturating_add(c);
        }
        memo[n] = Some(total);
        total
    }
    let mut memo = vec![None; edges.len()];
    (0..edges.len()).map(|n| cost(n, edges, cyclic, &mut memo)).collect()
}

/// Marks every node that lies on a cycle, or reaches one, of a directed graph.
fn find_cycles(edges: &[Vec<usize>]) -> Vec<bool> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done(bool),
    }
    fn visit(n: usize, edges: &[Vec<usize>], marks: &mut [Mark]) -> bool {
        match marks[n] {
            Mark::Done(bad) => return bad,
            Mark::Active => return true,
            Mark::New => {}
        }
        marks[n] = Mark::Active;
        let mut bad = false;
        for &m in &edges[n] {
            if m < marks.len() && visit(m, edges, marks) {
                bad = true;
            }
        }
        marks[n] = Mark::Done(bad);
        bad
    }
    let mut marks = vec![Mark::New; edges.len()];
    (0..edges.len()).map(|n| visit(n, edges, &mut marks)).collect()
}

pub(crate) fn compile_segments(
    set: &FlagSet,
    segment_index: &HashMap<&str, usize>,
    diags: &mut Vec<Diagnostic>,
) -> (Vec<CompiledSegment>, HashSet<usize>) {
    let mut broken = HashSet::new();
    let mut edges = Vec::with_capacity(set.segments.len());
    let mut compiled = Vec::with_capacity(set.segments.len());
    for (i, (key, segment)) in set.segments.iter().enumerate() {
        let base = format!("segments{}", path_key(key));
        let mut refs = Vec::new();
        let mut rules = Vec::new();
        for (r, rule) in segment.rules.iter().enumerate() {
            let mut clauses = Vec::new();
            for (c, clause) in rule.clauses.iter().enumerate() {
                let path = format!("{base}.rules[{r}].clauses[{c}]");
                match compile_clause(clause, &path, segment_index, None) {
                    Ok(cc) => {
                        if let CompiledClause::Segment { segments, .. } = &cc {
                            refs.extend(segments.iter().copied());
                        }
                        clauses.push(cc);
                    }
                    Err(d) => {
                        broken.insert(i);
                        diags.push(d);
                    }
                }
            }
            rules.push(clauses.into_boxed_slice());
        }
        edges.push(refs);
        compiled.push(CompiledSegment {
            included: segment.included.iter().map(|k| Box::from(k.as_str())).collect(),
            excluded: segment.excluded.iter().map(|k| Box::from(k.as_str())).collect(),
            rules: rules.into(),
        });
    }
    let cycles = find_cycles(&edges);
    for (i, cost) in evaluation_costs(&edges, &cycles).into_iter().enumerate() {
        if !cycles[i] && cost > MAX_EVALUATION_COST {
            broken.insert(i);
            let key = set.segments.get_index(i).map(|(k, _)| k.as_str()).unwrap_or_default();
            diags.push(Diagnostic {
                severity: Severity::Error,
                path: format!("segments{}.rules", path_key(key)),
                message: format!(
                    "checking membership would check nested segments {cost} times (limit {MAX_EVALUATION_COST})"
                ),
            });
        }
    }
    for (i, on_cycle) in cycles.into_iter().enumerate() {
        if on_cycle {
            broken.insert(i);
            let key = set.segments.get_index(i).map(|(k, _)| k.as_str()).unwrap_or_default();
            diags.push(Diagnostic {
                severity: Severity::Error,
                path: format!("segments{}.rules", path_key(key)),
                message: "segment membership is recursive: the segment includes itself through in_segment, or uses one that does".into(),
            });
        }
    }
    // A segment that uses a broken segment is broken too.
    loop {
        let before = broken.len();
        for (i, refs) in edges.iter().enumerate() {
            if refs.iter().any(|r| broken.contains(r)) {
                broken.insert(i);
            }
        }
        if broken.len() == before {
            break;
        }
    }
    (compiled, broken)
}

/// Compiles one clause; `broken_segments`, when given, refuses references to broken segments.
fn compile_clause(
    clause: &Clause,
    path: &str,
    segment_index: &HashMap<&str, usize>,
    broken_segments: Option<&HashSet<usize>>,
) -> Result<CompiledClause, Diagnostic> {
    let error = |field: &str, message: String| Diagnostic {
        severity: Severity::Error,
        path: if field.is_empty() { path.to_owned() } else { format!("{path}.{field}") },
        message,
    };
    if clause.op == Operator::InSegment {
        if clause.values.is_empty() {
            return Err(error("values", "in_segment needs at least one segment key".into()));
        }
        let mut segments = Vec::with_capacity(clause.values.len());
        for (i, v) in clause.values.iter().enumerate() {
            let Some(name) = v.as_str() else {
                return Err(error(
                    &format!("values[{i}]"),
                    format!("expected a segment key, found {}", ops::kind_of(v)),
                ));
            };
            let Some(&idx) = segment_index.get(name) else {
                return Err(error(&format!("values[{i}]"), format!("unknown segment \"{name}\"")));
            };
            if broken_segments.is_some_and(|b| b.contains(&idx)) {
                return Err(error(&format!("values[{i}]"), format!("segment \"{name}\" is invalid")));
            }
            segments.push(idx);
        }
        return Ok(CompiledClause::Segment { segments: segments.into(), negate: clause.negate });
    }
    let attribute = match clause.attribute.as_deref() {
        Some(a) if !a.is_empty() => a,
        _ if matches!(clause.op, Operator::Unknown(_)) => "",
        _ => return Err(error("attribute", format!("operator \"{}\" needs an attribute", clause.op.name()))),
    };
    match ops::compile_matcher(&clause.op, &clause.values, clause.case_insensitive) {
        Ok(matcher) => Ok(CompiledClause::Attribute {
            path: AttributePath::new(attribute),
            op: clause.op.clone(),
            matcher,
            // `not_in` is `in` inverted, so that an absent attribute is "not in" any list.
            negate: clause.negate != (clause.op == Operator::NotIn),
        }),
        Err(e) => {
            let field = match (&clause.op, e.index) {
                (Operator::Unknown(_), _) => "op".to_owned(),
                (_, Some(i)) => format!("values[{i}]"),
                (_, None) if e.message.contains("value") => "values".to_owned(),
                _ => "op".to_owned(),
            };
            Err(error(&field, e.message))
        }
    }
}

struct FlagCx<'a> {
    key: &'a str,
    flag: &'a Flag,
    set: &'a FlagSet,
    segment_index: &'a HashMap<&'a str, usize>,
    broken_segments: &'a HashSet<usize>,
    /// How a key that breaks the key rule (but can be evaluated) is reported.
    key_severity: Severity,
    diags: &'a mut Vec<Diagnostic>,
}

impl FlagCx<'_> {
    fn error(&mut self, path: String, message: impl Into<String>) {
        self.diags.push(Diagnostic { severity: Severity::Error, path, message: message.into() });
    }

    fn warn(&mut self, path: String, message: impl Into<String>) {
        self.diags.push(Diagnostic { severity: Severity::Warning, path, message: message.into() });
    }

    fn check_flag_fields(&mut self, base: &str) {
        if let Err(e) = crate::keys::check_key(self.key) {
            // These keys could never be evaluated, and broke their flag before the key rule.
            let unusable = self.key.is_empty()
                || self.key.len() > crate::keys::MAX_KEY_LEN
                || self.key.chars().any(char::is_control);
            let severity = if unusable { Severity::Error } else { self.key_severity };
            self.diags.push(Diagnostic { severity, path: base.to_owned(), message: e.to_string() });
        }
        if self.flag.variants.is_empty() {
            self.error(format!("{base}.variants"), "a flag needs at least one variant");
        }
        for (name, value) in &self.flag.variants {
            let path = format!("{base}.variants{}", path_key(name));
            if name.is_empty() {
                self.error(path.clone(), "a variant key cannot be empty");
            }
            if value.is_null() {
                self.error(path, "a variant value must be a boolean, string, number or JSON object/array, not null");
            }
        }
    }

    fn variant(&mut self, name: &str, path: String) -> Option<usize> {
        let found = self.flag.variants.get_index_of(name);
        if found.is_none() {
            let known: Vec<&str> = self.flag.variants.keys().map(String::as_str).collect();
            self.error(path, format!("unknown variant \"{name}\" (the flag has: {})", known.join(", ")));
        }
        found
    }

    fn config(&mut self, cfg: &EnvironmentConfig, base: &str) -> Option<Config> {
        let errors_before = self.error_count();
        let off = match cfg.off_variant.as_deref() {
            Some(name) => self.variant(name, format!("{base}.off_variant")),
            None => {
                let off = self.flag.variants.get_index_of(OFF);
                if off.is_none() {
                    self.error(format!("{base}.off_variant"), "required when the flag has no \"off\" variant");
                }
                off
            }
        };
        let mut targets = HashMap::default();
        for (variant, keys) in &cfg.targets {
            let path = format!("{base}.targets{}", path_key(variant));
            let Some(v) = self.variant(variant, path.clone()) else { continue };
            for (i, k) in keys.iter().enumerate() {
                if let Some(prev) = targets.insert(Box::from(k.as_str()), v)
                    && prev != v
                {
                    self.warn(
                        format!("{path}[{i}]"),
                        format!("\"{k}\" is targeted by two variants; the last one wins"),
                    );
                }
            }
        }
        let mut prerequisites = Vec::new();
        for (i, p) in cfg.prerequisites.iter().enumerate() {
            let path = format!("{base}.prerequisites[{i}]");
            let Some((flag, _, parent)) = self.set.flags.get_full(p.flag.as_str()) else {
                self.error(format!("{path}.flag"), format!("unknown flag \"{}\"", p.flag));
                continue;
            };
            if p.flag == self.key {
                self.error(format!("{path}.flag"), "a flag cannot be its own prerequisite");
                continue;
            }
            let names: Vec<&String> = p.variant.iter().chain(p.variants.iter()).collect();
            if names.is_empty() {
                self.error(format!("{path}.variant"), "name the variant (or variants) the prerequisite must serve");
                continue;
            }
            let mut variants = Vec::new();
            for name in names {
                match parent.variants.get_index_of(name.as_str()) {
                    Some(v) => variants.push(v),
                    None => {
                        self.error(format!("{path}.variant"), format!("flag \"{}\" has no variant \"{name}\"", p.flag))
                    }
                }
            }
            prerequisites.push(CompiledPrerequisite { flag, variants: variants.into() });
        }
        let mut rules = Vec::new();
        for (i, rule) in cfg.rules.iter().enumerate() {
            let path = format!("{base}.rules[{i}]");
            let mut clauses = Vec::new();
            for (c, clause) in rule.clauses.iter().enumerate() {
                match compile_clause(
                    clause,
                    &format!("{path}.clauses[{c}]"),
                    self.segment_index,
                    Some(self.broken_segments),
                ) {
                    Ok(cc) => clauses.push(cc),
                    Err(d) => self.diags.push(d),
                }
            }
            let gate = rule.gate.as_ref().and_then(|g| self.gate(g, &format!("{path}.gate")));
            let serve = self.serve(&rule.serve, &format!("{path}.serve"));
            if let Some(serve) = serve {
                rules.push(CompiledRule {
                    id: rule.id.as_deref().map(Box::from),
                    clauses: clauses.into(),
                    gate,
                    serve,
                });
            }
        }
        let default = match &cfg.default {
            Some(serve) => self.serve(serve, &format!("{base}.default")),
            None => match self.flag.variants.get_index_of(ON) {
                Some(on) => Some(CompiledServe::Variant(on)),
                None => {
                    self.error(format!("{base}.default"), "required when the flag has no \"on\" variant");
                    None
                }
            },
        };
        let exposure = cfg.exposure.as_ref().and_then(|e| self.exposure(e, &format!("{base}.exposure"))).map(Box::new);
        if self.error_count() > errors_before {
            return None;
        }
        let is_static = targets.is_empty() && prerequisites.is_empty() && rules.is_empty() && exposure.is_none();
        Some(Config {
            enabled: cfg.enabled,
            off,
            targets,
            prerequisites: prerequisites.into(),
            rules: rules.into(),
            default: default?,
            exposure,
            is_static,
        })
    }

    fn error_count(&self) -> usize {
        self.diags.iter().filter(|d| d.severity == Severity::Error).count()
    }

    fn bucketing(
        &mut self,
        bucket_by: Option<&BucketBy>,
        salt: Option<&str>,
        default_salt: &str,
        seed: u32,
        total: Option<u32>,
        base: &str,
    ) -> Option<Bucketing> {
        let total = total.unwrap_or(FULL_WEIGHT);
        if total == 0 {
            self.error(format!("{base}.total"), "must be positive");
            return None;
        }
        let paths: Vec<&str> = match bucket_by {
            Some(b) => b.paths().iter().map(String::as_str).collect(),
            None => vec![TARGETING_KEY],
        };
        if paths.is_empty() || paths.iter().any(|p| p.is_empty()) {
            self.error(format!("{base}.bucket_by"), "attribute paths cannot be empty");
            return None;
        }
        let sources = paths
            .iter()
            .map(|p| if *p == RANDOM { BucketSource::Random } else { BucketSource::Attribute(AttributePath::new(p)) })
            .collect();
        let salt = salt.unwrap_or(default_salt);
        Some(Bucketing { sources, salt: salt.into(), seed, total, prefix: crate::hash::salted(salt, seed) })
    }

    fn gate(&mut self, gate: &Gate, base: &str) -> Option<CompiledGate> {
        // A gate hashes apart from the rollout it guards: with one salt, a 50% gate in front of a
        // 50/50 rollout would admit exactly the users of the first variant.
        let default_salt = format!("{}:gate", self.key);
        let bucketing =
            self.bucketing(gate.bucket_by.as_ref(), gate.salt.as_deref(), &default_salt, gate.seed, gate.total, base)?;
        if gate.weight > bucketing.total {
            self.error(format!("{base}.weight"), format!("{} is more than the total {}", gate.weight, bucketing.total));
            return None;
        }
        Some(CompiledGate { bucketing, weight: gate.weight })
    }

    fn exposure(&mut self, exposure: &Exposure, base: &str) -> Option<CompiledExposure> {
        let gate = Gate {
            weight: exposure.weight,
            total: exposure.total,
            bucket_by: exposure.bucket_by.clone(),
            salt: Some(exposure.salt.clone().unwrap_or_else(|| format!("{}:exposure", self.key))),
            seed: exposure.seed,
        };
        let gate = self.gate(&gate, base);
        let mut segments = Vec::with_capacity(exposure.segments.len());
        for (i, name) in exposure.segments.iter().enumerate() {
            let path = format!("{base}.segments[{i}]");
            match self.segment_index.get(name.as_str()) {
                None => self.error(path, format!("unknown segment \"{name}\"")),
                Some(idx) if self.broken_segments.contains(idx) => {
                    self.error(path, format!("segment \"{name}\" is invalid"))
                }
                Some(&idx) => segments.push(idx),
            }
        }
        Some(CompiledExposure { gate: gate?, segments: segments.into() })
    }

    fn serve(&mut self, serve: &Serve, base: &str) -> Option<CompiledServe> {
        match (&serve.variant, &serve.rollout) {
            (Some(v), None) => self.variant(v, format!("{base}.variant")).map(CompiledServe::Variant),
            (None, Some(r)) => self.rollout(r, &format!("{base}.rollout")),
            (Some(_), Some(_)) => {
                self.error(base.to_owned(), "set either \"variant\" or \"rollout\", not both");
                None
            }
            (None, None) => {
                self.error(base.to_owned(), "set \"variant\" or \"rollout\"");
                None
            }
        }
    }

    fn rollout(&mut self, rollout: &Rollout, base: &str) -> Option<CompiledServe> {
        let key = self.key;
        let bucketing = self.bucketing(
            rollout.bucket_by.as_ref(),
            rollout.salt.as_deref(),
            key,
            rollout.seed,
            rollout.total,
            base,
        )?;
        if rollout.variants.is_empty() {
            self.error(format!("{base}.variants"), "a rollout needs at least one variant");
            return None;
        }
        let mut ranges = Vec::with_capacity(rollout.variants.len());
        let mut upper: u64 = 0;
        let mut seen = HashSet::new();
        let mut ok = true;
        for (i, wv) in rollout.variants.iter().enumerate() {
            let path = format!("{base}.variants[{i}]");
            if !seen.insert(wv.variant.as_str()) {
                self.error(format!("{path}.variant"), format!("variant \"{}\" is listed twice", wv.variant));
                ok = false;
            }
            let Some(v) = self.variant(&wv.variant, format!("{path}.variant")) else {
                ok = false;
                continue;
            };
            upper += u64::from(wv.weight);
            ranges.push((u32::try_from(upper).unwrap_or(u32::MAX), v));
        }
        if upper != u64::from(bucketing.total) {
            let unit = if bucketing.total == FULL_WEIGHT { " (weights are in 1/1000 of a percent)" } else { "" };
            self.error(format!("{base}.variants"), format!("weights sum to {upper}, not {}{unit}", bucketing.total));
            ok = false;
        }
        ok.then(|| CompiledServe::Rollout { bucketing, ranges: ranges.into() })
    }
}
