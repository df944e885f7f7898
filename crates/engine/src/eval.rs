//! Evaluation: walk a compiled flag for one context. Pure and allocation-free on the normal path
//! (the answer borrows from the compiled flags); an optional tracer records why, for `--explain`.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::compile::{
    Body, BucketSource, Bucketing, CompiledClause, CompiledExposure, CompiledFlags, CompiledServe, Config,
};
use crate::context::Context;
use crate::hash;

/// Prerequisite chains deeper than this are refused (compile already rejects cycles).
const MAX_PREREQUISITE_DEPTH: usize = 64;

/// Why a value was served (OpenFeature's reasons, plus `PREREQUISITE_FAILED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The flag has no targeting: everyone gets the same variant.
    Static,
    /// An individual target or a rule with a fixed variant matched.
    TargetingMatch,
    /// A percentage rollout placed the context.
    Split,
    /// No target or rule matched; the default was served.
    Default,
    /// The flag is off in this environment.
    Disabled,
    /// A prerequisite flag did not serve the required variant.
    PrerequisiteFailed,
    /// Evaluation failed; see the error code.
    Error,
}

impl Reason {
    /// The reason as OpenFeature spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Default => "DEFAULT",
            Reason::Disabled => "DISABLED",
            Reason::PrerequisiteFailed => "PREREQUISITE_FAILED",
            Reason::Error => "ERROR",
        }
    }
}

/// What went wrong (OpenFeature's error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No flag with that key.
    FlagNotFound,
    /// The value is not of the requested type (raised by typed getters, not the engine).
    TypeMismatch,
    /// The flag's definition is invalid.
    ParseError,
    /// A rollout needed a bucketing value the context does not have.
    TargetingKeyMissing,
    /// The context cannot be used.
    InvalidContext,
    /// Anything else.
    General,
}

impl ErrorCode {
    /// The code as OpenFeature spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::General => "GENERAL",
        }
    }
}

/// The result of evaluating one flag; it borrows from the compiled flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation<'a> {
    /// The served value; `None` when nothing can be served (unknown flag, no off variant), in
    /// which case the caller's default applies.
    pub value: Option<&'a Value>,
    /// The served variant's key.
    pub variant: Option<&'a str>,
    /// Why.
    pub reason: Reason,
    /// The index of the rule that decided, if one did.
    pub rule: Option<usize>,
    /// That rule's id, if it has one.
    pub rule_id: Option<&'a str>,
    /// What went wrong, with reason `ERROR`.
    pub error: Option<ErrorCode>,
    /// A message for the error.
    pub error_message: Option<&'a str>,
}

/// Receives the steps of an evaluation, for explanations. The no-op tracer costs nothing.
pub trait Tracer {
    /// Records a step; the closure only runs when the tracer wants it.
    fn step(&mut self, describe: impl FnOnce() -> String);
}

/// A tracer that records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTrace;

impl Tracer for NoTrace {
    #[inline(always)]
    fn step(&mut self, _describe: impl FnOnce() -> String) {}
}

/// A tracer that collects each step as a sentence.
#[derive(Debug, Default, Clone)]
pub struct Explain(pub Vec<String>);

impl Tracer for Explain {
    fn step(&mut self, describe: impl FnOnce() -> String) {
        self.0.push(describe());
    }
}

/// Internal result: indexes, resolved to borrowed values at the end.
#[derive(Clone, Copy)]
struct Outcome<'a> {
    variant: Option<usize>,
    reason: Reason,
    rule: Option<usize>,
    error: Option<(ErrorCode, &'a str)>,
}

impl<'a> Outcome<'a> {
    fn served(variant: usize, reason: Reason, rule: Option<usize>) -> Self {
        Self { variant: Some(variant), reason, rule, error: None }
    }
    fn failed(variant: Option<usize>, code: ErrorCode, message: &'a str) -> Self {
        Self { variant, reason: Reason::Error, rule: None, error: Some((code, message)) }
    }
}

/// What one evaluation reads: the context, and the random number for `$random` (the
/// context's own, or the caller's).
#[derive(Clone, Copy)]
struct Input<'c> {
    context: &'c Context,
    random: Option<u32>,
}

/// Evaluates flag `key` for `context`.
///
/// `$random` bucketing uses the number the context carries ([`Context::with_random`]); without
/// one it is skipped. Callers that serve real traffic use [`evaluate_with_random`] instead.
pub fn evaluate<'a>(flags: &'a CompiledFlags, key: &str, context: &Context) -> Evaluation<'a> {
    evaluate_traced_with_random(flags, key, context, None, &mut NoTrace)
}

/// Evaluates flag `key` for `context`, with `random` standing in for `$random` when the context
/// carries no number of its own (the context's wins, so a caller can pin it).
///
/// The engine reads no random source; every caller that evaluates for real traffic (the SDK,
/// `dimmer eval`, the server's OFREP endpoints) draws a fresh number per evaluation and passes it
/// here. Without one, a rollout bucketing by `$random` (Unleash's `random` stickiness, and its
/// `default` stickiness for a context with neither `userId` nor `sessionId`) places nobody.
/// `None` means the caller has no random source: `$random` is skipped, as in [`evaluate`].
#[inline]
pub fn evaluate_with_random<'a>(
    flags: &'a CompiledFlags,
    key: &str,
    context: &Context,
    random: Option<u32>,
) -> Evaluation<'a> {
    evaluate_traced_with_random(flags, key, context, random, &mut NoTrace)
}

/// Evaluates flag `key` for `context`, reporting each step to `tracer`.
pub fn evaluate_traced<'a, T: Tracer>(
    flags: &'a CompiledFlags,
    key: &str,
    context: &Context,
    tracer: &mut T,
) -> Evaluation<'a> {
    evaluate_traced_with_random(flags, key, context, None, tracer)
}

/// [`evaluate_with_random`], reporting each step to `tracer`.
pub fn evaluate_traced_with_random<'a, T: Tracer>(
    flags: &'a CompiledFlags,
    key: &str,
    context: &Context,
    random: Option<u32>,
    tracer: &mut T,
) -> Evaluation<'a> {
    let input = Input { context, random: context.random().or(random) };
    let Some(&index) = flags.index.get(key) else {
        tracer.step(|| format!("no flag \"{key}\" in environment \"{}\"", flags.environment));
        return Evaluation {
            value: None,
            variant: None,
            reason: Reason::Error,
            rule: None,
            rule_id: None,
            error: Some(ErrorCode::FlagNotFound),
            error_message: Some("flag not found"),
        };
    };
    let outcome = evaluate_index(flags, index, input, tracer, 0);
    let flag = &flags.flags[index];
    let served = outcome.variant.and_then(|v| flag.variants.get(v));
    let rule_id = match (&flag.body, outcome.rule) {
        (Body::Ready(cfg), Some(r)) => cfg.rules.get(r).and_then(|r| r.id.as_deref()),
        _ => None,
    };
    Evaluation {
        value: served.map(|(_, v)| v),
        variant: served.map(|(k, _)| k.as_ref()),
        reason: outcome.reason,
        rule: outcome.rule,
        rule_id,
        error: outcome.error.map(|(c, _)| c),
        error_message: outcome.error.map(|(_, m)| m),
    }
}

fn evaluate_index<'a, T: Tracer>(
    flags: &'a CompiledFlags,
    index: usize,
    input: Input<'_>,
    tracer: &mut T,
    depth: usize,
) -> Outcome<'a> {
    let context = input.context;
    let flag = &flags.flags[index];
    let cfg = match &flag.body {
        Body::Ready(cfg) => cfg,
        Body::Broken { fallback, message } => {
            tracer.step(|| format!("flag \"{}\" is invalid: {message}", flag.key));
            return Outcome::failed(*fallback, ErrorCode::ParseError, message);
        }
    };
    if !cfg.enabled {
        tracer.step(|| format!("flag \"{}\" is off in this environment: serving the off variant", flag.key));
        return Outcome { variant: cfg.off, reason: Reason::Disabled, rule: None, error: None };
    }
    for prereq in cfg.prerequisites.iter() {
        if depth >= MAX_PREREQUISITE_DEPTH {
            return Outcome::failed(cfg.off, ErrorCode::General, "prerequisite chain too deep");
        }
        let parent = &flags.flags[prereq.flag];
        tracer.step(|| format!("evaluating prerequisite \"{}\":", parent.key));
        let got = evaluate_index(flags, prereq.flag, input, tracer, depth + 1);
        if let Some((ErrorCode::General, message)) = got.error {
            // Too deep a chain is the caller's problem, not a failed prerequisite.
            return Outcome::failed(cfg.off, ErrorCode::General, message);
        }
        let passed = got.error.is_none() && got.variant.is_some_and(|v| prereq.variants.contains(&v));
        tracer.step(|| {
            let served = got.variant.and_then(|v| parent.variants.get(v)).map_or("nothing", |(k, _)| k.as_ref());
            format!("prerequisite \"{}\" served {served}: {}", parent.key, if passed { "satisfied" } else { "failed" })
        });
        if !passed {
            return Outcome { variant: cfg.off, reason: Reason::PrerequisiteFailed, rule: None, error: None };
        }
    }
    if !cfg.targets.is_empty()
        && let Some(&variant) = context.targeting_key().and_then(|k| cfg.targets.get(k))
    {
        {
            tracer.step(|| format!("targeting key is individually targeted: variant \"{}\"", flag.variants[variant].0));
            return Outcome::served(variant, Reason::TargetingMatch, None);
        }
    }
    let outcome = rules_and_default(flags, index, cfg, input, tracer);
    match &cfg.exposure {
        Some(exposure) if outcome.error.is_none() && outcome.variant.is_some() && outcome.variant != cfg.off => {
            held_back(flags, exposure, cfg, input, tracer).unwrap_or(outcome)
        }
        _ => outcome,
    }
}

/// The exposure ceiling: `Some(control)` when the context is neither in an exposed segment nor
/// below the exposure weight, `None` when it is exposed.
fn held_back<'a, T: Tracer>(
    flags: &'a CompiledFlags,
    exposure: &CompiledExposure,
    cfg: &Config,
    input: Input<'_>,
    tracer: &mut T,
) -> Option<Outcome<'a>> {
    let context = input.context;
    let gate = &exposure.gate;
    let bucket = if gate.weight == 0 { None } else { bucket_of(&gate.bucketing, input) };
    match bucket {
        Some(b) if b < gate.weight => {
            tracer
                .step(|| format!("exposure bucket {b} of {} is below {}: exposed", gate.bucketing.total, gate.weight));
            None
        }
        _ if exposure.segments.iter().any(|&s| in_segment(flags, s, context, 0)) => {
            tracer.step(|| "in an exposed segment: exposed".to_owned());
            None
        }
        _ => {
            tracer.step(|| {
                let why = bucket.map_or("no bucket".to_owned(), |b| format!("bucket {b}"));
                format!(
                    "exposure ceiling {} of {} ({why}): held back on the control variant",
                    gate.weight, gate.bucketing.total
                )
            });
            Some(Outcome { variant: cfg.off, reason: Reason::Split, rule: None, error: None })
        }
    }
}

fn rules_and_default<'a, T: Tracer>(
    flags: &'a CompiledFlags,
    index: usize,
    cfg: &Config,
    input: Input<'_>,
    tracer: &mut T,
) -> Outcome<'a> {
    let context = input.context;
    for (r, rule) in cfg.rules.iter().enumerate() {
        let label = || rule.id.as_deref().map_or(format!("rule[{r}]"), |id| format!("rule[{r}] \"{id}\""));
        if !clauses_hold(flags, &rule.clauses, context, tracer, &label) {
            continue;
        }
        if let Some(gate) = &rule.gate {
            // Even a 100% gate needs a bucketing value: a context without one is in no rollout.
            let admitted = if gate.weight == 0 {
                false
            } else {
                match bucket_of(&gate.bucketing, input) {
                    Some(b) => {
                        tracer.step(|| {
                            format!(
                                "{}: gate bucket {b} of {} (admits below {})",
                                label(),
                                gate.bucketing.total,
                                gate.weight
                            )
                        });
                        b < gate.weight
                    }
                    None => {
                        tracer.step(|| format!("{}: no bucketing value for the gate", label()));
                        false
                    }
                }
            };
            if !admitted {
                tracer.step(|| format!("{}: not admitted by the gate", label()));
                continue;
            }
        }
        tracer.step(|| format!("{} matched", label()));
        return serve(&rule.serve, cfg, input, Reason::TargetingMatch, Some(r), tracer, flag_variants(flags, index));
    }
    let reason = if cfg.is_static { Reason::Static } else { Reason::Default };
    tracer.step(|| "no rule matched: serving the default".to_owned());
    serve(&cfg.default, cfg, input, reason, None, tracer, flag_variants(flags, index))
}

fn flag_variants(flags: &CompiledFlags, index: usize) -> &[(Box<str>, Value)] {
    &flags.flags[index].variants
}

fn serve<'a, T: Tracer>(
    serve: &CompiledServe,
    cfg: &Config,
    input: Input<'_>,
    fixed_reason: Reason,
    rule: Option<usize>,
    tracer: &mut T,
    variants: &[(Box<str>, Value)],
) -> Outcome<'a> {
    match serve {
        CompiledServe::Variant(v) => Outcome::served(*v, fixed_reason, rule),
        CompiledServe::Rollout { bucketing, ranges } => {
            let Some(b) = bucket_of(bucketing, input) else {
                tracer.step(|| "the rollout has no bucketing value in the context".to_owned());
                return Outcome {
                    rule,
                    ..Outcome::failed(cfg.off, ErrorCode::TargetingKeyMissing, "no value to bucket by")
                };
            };
            // Ranges are ascending and the last ends at the total, so one always contains `b`.
            let variant = ranges.iter().find(|(upper, _)| b < *upper).or(ranges.last()).map(|(_, v)| *v);
            tracer.step(|| {
                let name = variant.and_then(|v| variants.get(v)).map_or("?", |(k, _)| k.as_ref());
                format!(
                    "bucket {b} of {} (salt \"{}\", seed {}) falls in variant \"{name}\"",
                    bucketing.total, bucketing.salt, bucketing.seed
                )
            });
            match variant {
                Some(v) => Outcome::served(v, Reason::Split, rule),
                None => Outcome::failed(cfg.off, ErrorCode::General, "empty rollout"),
            }
        }
    }
}

fn clauses_hold<T: Tracer>(
    flags: &CompiledFlags,
    clauses: &[CompiledClause],
    context: &Context,
    tracer: &mut T,
    label: &dyn Fn() -> String,
) -> bool {
    for (c, clause) in clauses.iter().enumerate() {
        let holds = clause_holds(flags, clause, context, 0);
        tracer.step(|| {
            let what = match clause {
                CompiledClause::Attribute { path, op, matcher, negate } => format!(
                    "{}{} {} {}",
                    if *negate != (*op == crate::model::Operator::NotIn) { "not " } else { "" },
                    path.as_str(),
                    op.name(),
                    matcher.describe_values()
                ),
                CompiledClause::Segment { negate, .. } => format!("{}in segment", if *negate { "not " } else { "" }),
            };
            format!("{} clause[{c}] ({what}): {}", label(), if holds { "holds" } else { "does not hold" })
        });
        if !holds {
            return false;
        }
    }
    true
}

#[inline]
fn clause_holds(flags: &CompiledFlags, clause: &CompiledClause, context: &Context, depth: usize) -> bool {
    match clause {
        CompiledClause::Attribute { path, matcher, negate, .. } => matcher.matches(context.lookup(path)) != *negate,
        CompiledClause::Segment { segments, negate } => {
            let member = segments.iter().any(|&s| in_segment(flags, s, context, depth + 1));
            member != *negate
        }
    }
}

fn in_segment(flags: &CompiledFlags, index: usize, context: &Context, depth: usize) -> bool {
    // Compile rejects recursive segments; the depth bound is a second line of defence.
    if depth > MAX_PREREQUISITE_DEPTH {
        return false;
    }
    let segment = &flags.segments[index];
    if let Some(key) = context.targeting_key() {
        if segment.included.contains(key) {
            return true;
        }
        if segment.excluded.contains(key) {
            return false;
        }
    }
    segment.rules.iter().any(|clauses| clauses.iter().all(|c| clause_holds(flags, c, context, depth)))
}

/// The context's bucket, or `None` when no bucketing source has a usable value.
#[inline]
fn bucket_of(bucketing: &Bucketing, input: Input<'_>) -> Option<u32> {
    for source in bucketing.sources.iter() {
        let found = match source {
            BucketSource::Random => input.random.map(|r| with_text(&Value::from(r), |bytes| bucket(bucketing, bytes))),
            BucketSource::Attribute(path) => match input.context.lookup(path) {
                // An empty string identifies nobody: bucketing it would put every anonymous
                // user in the same bucket.
                Some(Value::String(s)) if !s.is_empty() => Some(bucket(bucketing, s.as_bytes())),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(with_text(v, |bytes| bucket(bucketing, bytes))),
                _ => None,
            },
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

fn bucket(bucketing: &Bucketing, value: &[u8]) -> u32 {
    hash::bucket_salted(&bucketing.prefix, value, bucketing.total)
}

/// Formats a number or boolean on the stack and hands its text to `f`.
fn with_text<R>(value: &Value, f: impl FnOnce(&[u8]) -> R) -> R {
    struct Buf {
        bytes: [u8; 64],
        len: usize,
    }
    impl std::fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let end = self.len + s.len();
            if end > self.bytes.len() {
                return Err(std::fmt::Error);
            }
            self.bytes[self.len..end].copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    let mut buf = Buf { bytes: [0; 64], len: 0 };
    // A JSON number or boolean prints in well under 64 bytes.
    let _ = match value {
        Value::Number(n) => write!(buf, "{n}"),
        Value::Bool(b) => write!(buf, "{b}"),
        _ => Ok(()),
    };
    f(&buf.bytes[..buf.len])
}
