//! Clause operators: validated and precompiled once (regexes, versions, CIDRs, value sets), then
//! matched against context values without allocating.

use std::collections::HashSet;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use regex::{Regex, RegexBuilder};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::model::Operator;
use crate::semver::{OwnedVersion, Version};

/// The longest regular expression accepted, in bytes.
pub const MAX_REGEX_LEN: usize = 4096;
/// The most memory one compiled regular expression may take.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Value lists longer than this are matched through a hash set rather than a scan.
const SET_THRESHOLD: usize = 8;

/// Why a clause's operator or values were refused; `index` names the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// The index in `values`, when one value is at fault.
    pub index: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl OpError {
    fn whole(message: impl Into<String>) -> Self {
        Self { index: None, message: message.into() }
    }
    fn at(index: usize, message: impl Into<String>) -> Self {
        Self { index: Some(index), message: message.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl Cmp {
    fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Cmp::Eq => ord == Equal,
            Cmp::Lt => ord == Less,
            Cmp::Lte => ord != Greater,
            Cmp::Gt => ord == Greater,
            Cmp::Gte => ord != Less,
        }
    }
}

/// A set of strings, scanned when small and hashed when large.
#[derive(Debug, Clone)]
pub(crate) enum StrSet {
    Small(Box<[Box<str>]>),
    Large(HashSet<Box<str>, foldhash::fast::RandomState>),
}

impl StrSet {
    fn new(items: Vec<Box<str>>) -> Self {
        if items.len() <= SET_THRESHOLD {
            StrSet::Small(items.into_boxed_slice())
        } else {
            StrSet::Large(items.into_iter().collect())
        }
    }
    fn contains(&self, s: &str) -> bool {
        match self {
            StrSet::Small(items) => items.iter().any(|i| bytes_eq(i.as_bytes(), s.as_bytes())),
            StrSet::Large(set) => set.contains(s),
        }
    }
    fn sample(&self, n: usize) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            StrSet::Small(items) => Box::new(items.iter().take(n).map(AsRef::as_ref)),
            StrSet::Large(set) => Box::new(set.iter().take(n).map(AsRef::as_ref)),
        }
    }
    pub(crate) fn len(&self) -> usize {
        match self {
            StrSet::Small(items) => items.len(),
            StrSet::Large(set) => set.len(),
        }
    }
}

/// Byte equality without a `memcmp` call for short strings (attribute names, country codes,
/// plan names): the call costs more than the comparison. Up to 16 bytes are compared as two
/// overlapping words.
#[inline]
pub(crate) fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => a.first_chunk::<4>() == b.first_chunk::<4>() && a.last_chunk::<4>() == b.last_chunk::<4>(),
        8..=16 => a.first_chunk::<8>() == b.first_chunk::<8>() && a.last_chunk::<8>() == b.last_chunk::<8>(),
        _ => a == b,
    }
}

/// A compiled operator with its values.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    In { strings: StrSet, numbers: Box<[f64]>, bools: [bool; 2], case_insensitive: bool },
    StartsWith { values: Box<[Box<str>]>, case_insensitive: bool },
    EndsWith { values: Box<[Box<str>]>, case_insensitive: bool },
    Contains { values: Box<[Box<str>]>, case_insensitive: bool },
    Regex(Box<[Regex]>),
    Number(Cmp, Box<[f64]>),
    Semver(Cmp, Box<[(Box<str>, OwnedVersion)]>),
    Date(Cmp, Box<[i128]>),
    Cidr(Box<[IpNet]>),
    Exists,
    Absent,
}

impl Matcher {
    /// Whether the attribute value satisfies the operator (before any negation). An absent or
    /// null attribute satisfies only `absent`; an array satisfies when any element does.
    #[inline]
    pub(crate) fn matches(&self, value: Option<&Value>) -> bool {
        let value = match value {
            None | Some(Value::Null) => return matches!(self, Matcher::Absent),
            Some(v) => v,
        };
        match self {
            Matcher::Exists => true,
            Matcher::Absent => false,
            _ => match value {
                Value::Array(items) => items.iter().any(|item| self.matches_scalar(item)),
                scalar => self.matches_scalar(scalar),
            },
        }
    }

    fn matches_scalar(&self, value: &Value) -> bool {
        match self {
            Matcher::In { strings, numbers, bools, case_insensitive } => match value {
                Value::String(s) if *case_insensitive => with_lowercase(s, |l| strings.contains(l)),
                Value::String(s) => strings.contains(s),
                Value::Number(n) => n.as_f64().is_some_and(|n| numbers.contains(&n)),
                Value::Bool(b) => bools[usize::from(*b)],
                _ => false,
            },
            Matcher::StartsWith { values, case_insensitive } => {
                string_op(value, values, *case_insensitive, |s, v| s.starts_with(v))
            }
            Matcher::EndsWith { values, case_insensitive } => {
                string_op(value, values, *case_insensitive, |s, v| s.ends_with(v))
            }
            Matcher::Contains { values, case_insensitive } => {
                string_op(value, values, *case_insensitive, |s, v| s.contains(v))
            }
            Matcher::Regex(regexes) => value.as_str().is_some_and(|s| regexes.iter().any(|r| r.is_match(s))),
            Matcher::Number(cmp, numbers) => number_of(value)
                .is_some_and(|n| numbers.iter().any(|v| n.partial_cmp(v).is_some_and(|ord| cmp.holds(ord)))),
            Matcher::Semver(cmp, versions) => value
                .as_str()
                .and_then(Version::parse_loose)
                .is_some_and(|actual| versions.iter().any(|(_, v)| cmp.holds(actual.cmp(&v.view())))),
            Matcher::Date(cmp, dates) => date_of(value).is_some_and(|t| dates.iter().any(|d| cmp.holds(t.cmp(d)))),
            Matcher::Cidr(nets) => value
                .as_str()
                .and_then(|s| IpAddr::from_str(s.trim()).ok())
                .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
            Matcher::Exists | Matcher::Absent => false,
        }
    }

    /// A short description for explanations.
    pub(crate) fn describe_values(&self) -> String {
        match self {
            Matcher::In { strings, numbers, bools, .. } => {
                let mut shown: Vec<String> = strings.sample(5).map(|s| format!("{s:?}")).collect();
                shown.extend(numbers.iter().take(5).map(ToString::to_string));
                shown.extend([false, true].into_iter().filter(|b| bools[usize::from(*b)]).map(|b| b.to_string()));
                let total = strings.len() + numbers.len() + bools.iter().filter(|b| **b).count();
                if total > shown.len() {
                    format!("[{}, … {} values in all]", shown.join(", "), total)
                } else {
                    format!("[{}]", shown.join(", "))
                }
            }
            Matcher::StartsWith { values, .. }
            | Matcher::EndsWith { values, .. }
            | Matcher::Contains { values, .. } => format!("{values:?}"),
            Matcher::Regex(r) => format!("{:?}", r.iter().map(Regex::as_str).collect::<Vec<_>>()),
            Matcher::Number(_, n) => format!("{n:?}"),
            Matcher::Semver(_, v) => format!("{:?}", v.iter().map(|(text, _)| text.as_ref()).collect::<Vec<_>>()),
            Matcher::Date(_, d) => format!("{d:?} (ns since epoch)"),
            Matcher::Cidr(n) => format!("{:?}", n.iter().map(ToString::to_string).collect::<Vec<_>>()),
            Matcher::Exists | Matcher::Absent => String::new(),
        }
    }
}

fn string_op(value: &Value, values: &[Box<str>], ci: bool, op: impl Fn(&str, &str) -> bool) -> bool {
    let Value::String(s) = value else { return false };
    if ci { with_lowercase(s, |l| values.iter().any(|v| op(l, v))) } else { values.iter().any(|v| op(s, v)) }
}

/// Runs `f` on the lowercase form of `s`, on the stack for short ASCII strings.
fn with_lowercase<R>(s: &str, f: impl FnOnce(&str) -> R) -> R {
    const STACK: usize = 128;
    if s.is_ascii() && s.len() <= STACK {
        let mut buf = [0u8; STACK];
        let lower = &mut buf[..s.len()];
        lower.copy_from_slice(s.as_bytes());
        lower.make_ascii_lowercase();
        // Lowercasing ASCII bytes keeps them ASCII, hence valid UTF-8.
        match std::str::from_utf8(lower) {
            Ok(l) => f(l),
            Err(_) => f(&s.to_lowercase()),
        }
    } else {
        f(&s.to_lowercase())
    }
}

fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

/// A date as nanoseconds since the epoch: an RFC 3339 string, or epoch milliseconds.
fn date_of(value: &Value) -> Option<i128> {
    match value {
        Value::Number(n) => n.as_i64().map(|ms| i128::from(ms) * 1_000_000),
        Value::String(s) => parse_date(s),
        _ => None,
    }
}

fn parse_date(s: &str) -> Option<i128> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().ok().map(|ms| i128::from(ms) * 1_000_000);
    }
    OffsetDateTime::parse(s, &Rfc3339).ok().map(OffsetDateTime::unix_timestamp_nanos)
}

fn strings(values: &[Value], what: &str) -> Result<Vec<Box<str>>, OpError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(Box::from(s.as_str())),
            other => Err(OpError::at(i, format!("expected {what}, found {}", kind_of(other)))),
        })
        .collect()
}

/// The JSON type of a value, for messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn non_empty(values: &[Value], op: &Operator) -> Result<(), OpError> {
    if values.is_empty() {
        Err(OpError::whole(format!("operator \"{}\" needs at least one value", op.name())))
    } else {
        Ok(())
    }
}

/// Validates an operator and its values and compiles them. `in_segment` is resolved by the
/// caller, which knows the segments.
pub(crate) fn compile_matcher(op: &Operator, values: &[Value], case_insensitive: bool) -> Result<Matcher, OpError> {
    let lower = |s: Box<str>| -> Box<str> { if case_insensitive { s.to_lowercase().into() } else { s } };
    match op {
        Operator::In | Operator::NotIn | Operator::Equals => {
            if *op == Operator::Equals && values.len() != 1 {
                return Err(OpError::whole(format!(
                    "operator \"equals\" takes exactly one value, found {}",
                    values.len()
                )));
            }
            let mut strs = Vec::new();
            let mut numbers = Vec::new();
            let mut bools = [false; 2];
            for (i, v) in values.iter().enumerate() {
                match v {
                    Value::String(s) => strs.push(lower(s.as_str().into())),
                    Value::Number(n) => numbers.push(n.as_f64().ok_or_else(|| OpError::at(i, "number out of range"))?),
                    Value::Bool(b) => bools[usize::from(*b)] = true,
                    other => {
                        return Err(OpError::at(
                            i,
                            format!("expected a string, number or boolean, found {}", kind_of(other)),
                        ));
                    }
                }
            }
            Ok(Matcher::In { strings: StrSet::new(strs), numbers: numbers.into(), bools, case_insensitive })
        }
        Operator::StartsWith | Operator::EndsWith | Operator::Contains => {
            non_empty(values, op)?;
            let values: Box<[Box<str>]> = strings(values, "a string")?.into_iter().map(lower).collect();
            Ok(match op {
                Operator::StartsWith => Matcher::StartsWith { values, case_insensitive },
                Operator::EndsWith => Matcher::EndsWith { values, case_insensitive },
                _ => Matcher::Contains { values, case_insensitive },
            })
        }
        Operator::Regex => {
            non_empty(values, op)?;
            let patterns = strings(values, "a regular expression string")?;
            let mut regexes = Vec::with_capacity(patterns.len());
            for (i, p) in patterns.iter().enumerate() {
                if p.len() > MAX_REGEX_LEN {
                    return Err(OpError::at(i, format!("regular expression longer than {MAX_REGEX_LEN} bytes")));
                }
                let re = RegexBuilder::new(p)
                    .case_insensitive(case_insensitive)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        OpError::at(i, format!("invalid regular expression: {}", first_line(&e.to_string())))
                    })?;
                regexes.push(re);
            }
            Ok(Matcher::Regex(regexes.into()))
        }
        Operator::NumEq | Operator::Lt | Operator::Lte | Operator::Gt | Operator::Gte => {
            non_empty(values, op)?;
            let numbers = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    number_of(v).ok_or_else(|| OpError::at(i, format!("expected a number, found {}", describe(v))))
                })
                .collect::<Result<Box<[f64]>, _>>()?;
            Ok(Matcher::Number(cmp_of(op), numbers))
        }
        Operator::SemverEq | Operator::SemverLt | Operator::SemverLte | Operator::SemverGt | Operator::SemverGte => {
            non_empty(values, op)?;
            let mut versions = Vec::new();
            for (i, s) in strings(values, "a semantic version string")?.into_iter().enumerate() {
                // Loose like the attribute it is compared with, as LaunchDarkly reads both sides.
                let parsed = Version::parse_loose(&s).map(|v| v.to_owned_version()).ok_or_else(|| {
                    OpError::at(
                        i,
                        format!("\"{s}\" is not a semantic version ([v]MAJOR[.MINOR[.PATCH]][-PRE][+BUILD])"),
                    )
                })?;
                versions.push((s, parsed));
            }
            Ok(Matcher::Semver(cmp_of(op), versions.into()))
        }
        Operator::Before | Operator::After => {
            non_empty(values, op)?;
            let dates = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    date_of(v).ok_or_else(|| {
                        OpError::at(
                            i,
                            format!("expected an RFC 3339 date or epoch milliseconds, found {}", describe(v)),
                        )
                    })
                })
                .collect::<Result<Box<[i128]>, _>>()?;
            Ok(Matcher::Date(if *op == Operator::Before { Cmp::Lt } else { Cmp::Gt }, dates))
        }
        Operator::Cidr => {
            non_empty(values, op)?;
            let mut nets = Vec::new();
            for (i, s) in strings(values, "a CIDR range or IP address")?.into_iter().enumerate() {
                nets.push(
                    parse_net(&s)
                        .ok_or_else(|| OpError::at(i, format!("\"{s}\" is not a CIDR range or IP address")))?,
                );
            }
            Ok(Matcher::Cidr(nets.into()))
        }
        Operator::Exists | Operator::Absent => {
            if values.is_empty() {
                Ok(if *op == Operator::Exists { Matcher::Exists } else { Matcher::Absent })
            } else {
                Err(OpError::whole(format!("operator \"{}\" takes no values", op.name())))
            }
        }
        Operator::InSegment => Err(OpError::whole("in_segment is resolved against segments")),
        Operator::Unknown(name) => Err(OpError::whole(format!("unknown operator \"{name}\""))),
    }
}

/// Parses a CIDR range, or a single address as its host range.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    IpNet::from_str(s).ok().or_else(|| IpAddr::from_str(s).ok().map(IpNet::from))
}

fn cmp_of(op: &Operator) -> Cmp {
    match op {
        Operator::Lt | Operator::SemverLt => Cmp::Lt,
        Operator::Lte | Operator::SemverLte => Cmp::Lte,
        Operator::Gt | Operator::SemverGt => Cmp::Gt,
        Operator::Gte | Operator::SemverGte => Cmp::Gte,
        _ => Cmp::Eq,
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => kind_of(other).to_owned(),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// Whether `op` can be compiled with `values`: lets importers keep Unleash's "an invalid
/// constraint never matches" without producing flags that fail to compile.
pub fn validate(op: &Operator, values: &[Value], case_insensitive: bool) -> Result<(), OpError> {
    match op {
        Operator::InSegment => Ok(()),
        _ => compile_matcher(op, values, case_insensitive).map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(op: &str, values: Value) -> Matcher {
        let values: Vec<Value> = serde_json::from_value(values).unwrap();
        compile_matcher(&Operator::parse(op), &values, false).unwrap()
    }

    #[test]
    fn operators_match_as_documented() {
        let cases: &[(&str, Value, Value, bool)] = &[
            ("in", json!(["a", "b"]), json!("b"), true),
            ("in", json!(["a", "b"]), json!("B"), false),
            ("in", json!([1, 2]), json!(2.0), true),
            ("in", json!([true]), json!(true), true),
            ("in", json!(["a"]), json!(["x", "a"]), true),
            ("in", json!((0..100).map(|i| format!("k{i}")).collect::<Vec<_>>()), json!("k42"), true),
            ("starts_with", json!(["ab"]), json!("abc"), true),
            ("ends_with", json!(["bc"]), json!("abc"), true),
            ("contains", json!(["b"]), json!("abc"), true),
            ("contains", json!(["b"]), json!(12), false),
            ("regex", json!(["^a.c$"]), json!("abc"), true),
            ("regex", json!(["^a.c$"]), json!("abcd"), false),
            ("lt", json!([10]), json!(9.5), true),
            ("lt", json!([10]), json!("9"), true),
            ("lte", json!([10]), json!(10), true),
            ("gt", json!([10]), json!(10), false),
            ("gte", json!(["10"]), json!(10), true),
            ("num_eq", json!([12]), json!("12.0"), true),
            ("semver_gt", json!(["1.2.2"]), json!("1.10.0"), true),
            ("semver_lt", json!(["2.0.0-alpha.3"]), json!("2.0.0-alpha.1"), true),
            ("semver_eq", json!(["1.0.0"]), json!("v1.0.0"), true),
            ("semver_eq", json!(["2.0.0"]), json!("2"), true),
            ("semver_eq", json!(["2.1.0"]), json!("2.1"), true),
            ("semver_eq", json!(["2"]), json!("2.0.0"), true),
            ("semver_gte", json!(["v2.1"]), json!("2.1.0"), true),
            ("semver_lt", json!(["2.1"]), json!("v2.0.9"), true),
            ("semver_lt", json!(["2.0.0"]), json!("2-rc.1"), true),
            ("semver_eq", json!(["1.0.0"]), json!("01.0.0"), false),
            ("semver_eq", json!(["1.0.0"]), json!("1.0.0.0"), false),
            ("semver_eq", json!(["1.0.0"]), json!(" 1.0.0"), false),
            ("semver_eq", json!(["1.0.0"]), json!(1), false),
            ("semver_lte", json!(["1.0.0"]), json!("1.0.0"), true),
            ("semver_gte", json!(["1.0.0"]), json!("0.9.9"), false),
            ("before", json!(["2022-01-29T13:00:00Z"]), json!("2022-01-28T13:00:00.000Z"), true),
            ("after", json!(["2022-01-22T13:00:00.000+02:00"]), json!("2022-01-22T11:30:00.000Z"), true),
            ("after", json!([1_000]), json!(1_001), true),
            ("after", json!(["1970-01-01T00:00:01Z"]), json!("1001"), true),
            ("cidr", json!(["10.0.0.0/8", "192.168.1.1"]), json!("10.2.3.4"), true),
            ("cidr", json!(["10.0.0.0/8", "192.168.1.1"]), json!("192.168.1.1"), true),
            ("cidr", json!(["10.0.0.0/8"]), json!("11.0.0.1"), false),
            ("cidr", json!(["2001:db8::/32"]), json!("2001:db8::1"), true),
            ("cidr", json!(["10.0.0.0/8"]), json!("not an ip"), false),
            ("exists", json!([]), json!(false), true),
        ];
        for (op, values, attr, want) in cases {
            assert_eq!(m(op, values.clone()).matches(Some(attr)), *want, "{op} {values} against {attr}");
        }
    }

    #[test]
    fn absent_and_null_attributes_match_only_absent() {
        for op in ["in", "starts_with", "lt", "exists"] {
            let values = if op == "exists" { json!([]) } else { json!(["1"]) };
            assert!(!m(op, values.clone()).matches(None), "{op}");
            assert!(!m(op, values).matches(Some(&Value::Null)), "{op}");
        }
        assert!(m("absent", json!([])).matches(None));
        assert!(m("absent", json!([])).matches(Some(&Value::Null)));
        assert!(!m("absent", json!([])).matches(Some(&json!(""))));
    }

    #[test]
    fn case_insensitive_matching_lowercases_both_sides() {
        let values = vec![json!("Some-Email.com")];
        let ends = compile_matcher(&Operator::EndsWith, &values, true).unwrap();
        assert!(ends.matches(Some(&json!("test@SOME-EMAIL.COM"))));
        let inn = compile_matcher(&Operator::In, &[json!("ÉCOLE")], true).unwrap();
        assert!(inn.matches(Some(&json!("école"))));
        let re = compile_matcher(&Operator::Regex, &[json!("^abc")], true).unwrap();
        assert!(re.matches(Some(&json!("ABCD"))));
    }

    #[test]
    fn bad_values_are_refused_with_their_index() {
        let cases: &[(&str, Value, Option<usize>, &str)] = &[
            ("eq", json!(["a"]), None, "unknown operator \"eq\""),
            ("regex", json!(["ok", "("]), Some(1), "invalid regular expression"),
            ("semver_gt", json!(["1.0", "1.0.0.0"]), Some(1), "not a semantic version"),
            ("semver_gt", json!(["01.0"]), Some(0), "not a semantic version"),
            ("lt", json!([1, "x"]), Some(1), "expected a number"),
            ("after", json!(["yesterday"]), Some(0), "RFC 3339"),
            ("cidr", json!(["10.0.0.0/33"]), Some(0), "not a CIDR"),
            ("in", json!([{"a": 1}]), Some(0), "found an object"),
            ("equals", json!(["a", "b"]), None, "exactly one value"),
            ("exists", json!(["a"]), None, "takes no values"),
            ("starts_with", json!([]), None, "at least one value"),
        ];
        for (op, values, index, text) in cases {
            let values: Vec<Value> = serde_json::from_value(values.clone()).unwrap();
            let err = compile_matcher(&Operator::parse(op), &values, false).unwrap_err();
            assert_eq!(err.index, *index, "{op}: {err:?}");
            assert!(err.message.contains(text), "{op}: {}", err.message);
        }
    }

    #[test]
    fn bytes_eq_agrees_with_slice_equality() {
        let words = [
            "",
            "a",
            "b",
            "ab",
            "ba",
            "abc",
            "abd",
            "xbc",
            "abcd",
            "abce",
            "abcdefg",
            "abcdefh",
            "bbcdefg",
            "abcdefgh",
            "abcdefgi",
            "abcdefghijklmnop",
            "abcdefghijklmnoq",
            "bbcdefghijklmnop",
            "abcdefghijklmnopq",
            "abcdefghijklmnopr",
        ];
        for x in words {
            for y in words {
                assert_eq!(bytes_eq(x.as_bytes(), y.as_bytes()), x == y, "{x:?} {y:?}");
            }
        }
    }

    #[test]
    fn oversized_regexes_are_refused() {
        let long = "a".repeat(MAX_REGEX_LEN + 1);
        assert!(compile_matcher(&Operator::Regex, &[json!(long)], false).is_err());
        let huge = "(a{1000}){1000}";
        assert!(compile_matcher(&Operator::Regex, &[json!(huge)], false).is_err());
    }
}
