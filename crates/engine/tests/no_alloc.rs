//! Evaluation makes no heap allocation once flags are compiled, for contexts without JSON
//! object or array values. Its own test binary with a single test, because the counting
//! allocator replaces the global allocator of whatever binary links it.

use std::hint::black_box;

use dimmer_engine::{CompiledFlags, Context, FlagSet, Reason, compile, evaluate_with_random};
use serde_json::{Value, json};

const SEGMENT_SIZE: usize = 10_000;

fn flag_set() -> Value {
    let members: Vec<String> = (0..SEGMENT_SIZE).map(|i| format!("member-{i}")).collect();
    json!({
        "segments": {"big": {"included": members}},
        "flags": {
            "plain": {"environments": {"production": {"enabled": true}}},
            "disabled": {"environments": {"production": {"enabled": false}}},
            "rules": {
                "variants": {"off": "none", "r0": "pro", "r1": "admin", "r2": "modern", "on": "default"},
                "environments": {"production": {
                    "enabled": true,
                    "rules": [
                        {"id": "paying", "clauses": [
                            {"attribute": "plan", "op": "in", "values": ["pro", "team"]},
                            {"attribute": "email", "op": "ends_with", "values": ["@example.com"]}
                        ], "serve": {"variant": "r0"}},
                        {"id": "small-admins", "clauses": [
                            {"attribute": "name", "op": "starts_with", "values": ["adm"]},
                            {"attribute": "seats", "op": "lt", "values": [10]}
                        ], "serve": {"variant": "r1"}},
                        {"id": "modern-app", "clauses": [
                            {"attribute": "version", "op": "semver_gte", "values": ["2.0.0"]},
                            {"attribute": "email", "op": "regex", "values": ["^[a-z]+@[a-z]+\\.org$"]}
                        ], "serve": {"variant": "r2"}}
                    ],
                    "default": {"variant": "on"}
                }}
            },
            "split": {"environments": {"production": {
                "enabled": true,
                "rules": [{"clauses": [{"attribute": "country", "op": "in", "values": ["fr", "de"]}],
                           "serve": {"rollout": {"variants": [{"variant": "on", "weight": 50000}, {"variant": "off", "weight": 50000}]}}}],
                "default": {"variant": "off"}
            }}},
            "by-number": {"environments": {"production": {
                "enabled": true,
                "default": {"rollout": {"bucket_by": ["accountId", "$random"], "variants": [{"variant": "on", "weight": 50000}, {"variant": "off", "weight": 50000}]}}
            }}},
            "members": {"environments": {"production": {
                "enabled": true,
                "targets": {"on": ["vip-1", "vip-2"], "off": ["banned"]},
                "rules": [{"clauses": [{"op": "in_segment", "values": ["big"]}], "serve": {"variant": "on"}}],
                "default": {"variant": "off"}
            }}},
            "gated-child": {"environments": {"production": {
                "enabled": true,
                "prerequisites": [{"flag": "plain", "variant": "on"}],
                "rules": [{"gate": {"weight": 30000}, "serve": {"variant": "on"}}],
                "default": {"variant": "off"}
            }}},
            "more-operators": {"environments": {"production": {
                "enabled": true,
                "rules": [
                    {"clauses": [
                        {"attribute": "email", "op": "ends_with", "values": ["@Example.COM"], "case_insensitive": true},
                        {"attribute": "country", "op": "in", "values": ["FR", "DE"], "case_insensitive": true}
                    ], "serve": {"variant": "on"}},
                    {"clauses": [
                        {"attribute": "ip", "op": "cidr", "values": ["10.0.0.0/8", "2001:db8::/32"]},
                        {"attribute": "signup", "op": "after", "values": ["2024-01-01T00:00:00Z"]},
                        {"attribute": "address.country", "op": "not_in", "values": ["us"]},
                        {"attribute": "tags", "op": "contains", "values": ["beta"]},
                        {"attribute": "version", "op": "semver_lt", "values": ["3.0.0-rc.1"]},
                        {"attribute": "plan", "op": "exists"}
                    ], "serve": {"variant": "on"}}
                ],
                "default": {"variant": "off"}
            }}},
            "broken": {"environments": {"production": {
                "enabled": true,
                "rules": [{"clauses": [{"attribute": "plan", "op": "eq", "values": ["pro"]}], "serve": {"variant": "on"}}]
            }}}
        }
    })
}

/// One evaluation to measure.
struct Case {
    what: &'static str,
    flag: &'static str,
    context: Context,
    /// The variant it must serve, so the measured path is the one intended and not an early exit.
    want: Option<&'static str>,
    /// Whether the evaluation reaches a regex clause.
    regex: bool,
    /// The caller's random number, as the SDK passes one per evaluation.
    random: Option<u32>,
}

fn case(what: &'static str, flag: &'static str, context: Context, want: Option<&'static str>) -> Case {
    Case { what, flag, context, want, regex: false, random: None }
}

fn cases() -> Vec<Case> {
    let rule_2 = Context::with_key("u-4").attr("version", "2.3.1").attr("email", "cat@dimmer.org").attr("seats", 40);
    let loose_version =
        Context::with_key("u-6").attr("version", "v2.4").attr("email", "eve@dimmer.org").attr("seats", 40);
    let no_rule = Context::with_key("u-5").attr("version", "1.9.9").attr("email", "dan@dimmer.org").attr("name", "dan");
    vec![
        case("boolean flag without rules", "plain", Context::with_key("u-1"), Some("on")),
        case("boolean flag without a context", "plain", Context::new(), Some("on")),
        case("disabled flag", "disabled", Context::with_key("u-1"), Some("off")),
        case(
            "rule 0 (in, ends_with)",
            "rules",
            Context::with_key("u-2").attr("plan", "pro").attr("email", "ann@example.com"),
            Some("r0"),
        ),
        case(
            "rule 1 (starts_with, lt) after rule 0 fails",
            "rules",
            Context::with_key("u-3").attr("plan", "free").attr("name", "admin-bob").attr("seats", 4),
            Some("r1"),
        ),
        Case { regex: true, ..case("rule 2 (semver, regex) after rules 0 and 1 fail", "rules", rule_2, Some("r2")) },
        Case { regex: true, ..case("rule 2 with a loose version (v2.4)", "rules", loose_version, Some("r2")) },
        Case { regex: true, ..case("no rule matches: default", "rules", no_rule, Some("on")) },
        case("50% rollout behind an in clause", "split", Context::with_key("user-1").attr("country", "fr"), None),
        case("50% rollout behind an in clause", "split", Context::with_key("user-2").attr("country", "de"), None),
        case("in clause not holding", "split", Context::with_key("user-3").attr("country", "us"), Some("off")),
        case("rollout without a bucketing value", "split", Context::new().attr("country", "fr"), Some("off")),
        case("numeric bucketing value", "by-number", Context::with_key("u").attr("accountId", 12_345), None),
        case("float bucketing value", "by-number", Context::with_key("u").attr("accountId", 12.5), None),
        case("$random bucketing", "by-number", Context::with_key("u").with_random(987_654), None),
        Case { random: Some(42), ..case("the caller's random number", "by-number", Context::with_key("u"), None) },
        case("individual target", "members", Context::with_key("vip-2"), Some("on")),
        case("individual target to off", "members", Context::with_key("banned"), Some("off")),
        case("member of a 10,000-key segment", "members", Context::with_key("member-9876"), Some("on")),
        case("not a member of a 10,000-key segment", "members", Context::with_key("stranger"), Some("off")),
        case("prerequisite and gate", "gated-child", Context::with_key("user-4"), None),
        case(
            "case-insensitive ASCII ends_with and in",
            "more-operators",
            Context::with_key("u").attr("email", "eve@EXAMPLE.com").attr("country", "fr"),
            Some("on"),
        ),
        case(
            "cidr, date, nested not_in, contains over an array, semver with pre-release, exists",
            "more-operators",
            Context::with_key("u")
                .attr("ip", "10.20.30.40")
                .attr("signup", "2025-03-01T12:00:00+01:00")
                .attr("address", json!({"country": "fr"}))
                .attr("tags", json!(["alpha", "beta-2"]))
                .attr("version", "3.0.0-beta.4")
                .attr("plan", "free"),
            Some("on"),
        ),
        case("broken flag", "broken", Context::with_key("u"), Some("off")),
        case("unknown flag", "unknown", Context::with_key("u"), None),
    ]
}

fn compile_flags() -> CompiledFlags {
    let set: FlagSet = serde_json::from_value(flag_set()).unwrap_or_else(|e| panic!("{e}"));
    let (flags, diagnostics) = compile(&set, "production");
    assert_eq!(diagnostics.len(), 1, "only the deliberately broken flag: {diagnostics:#?}");
    flags
}

fn allocations(flags: &CompiledFlags, case: &Case) -> Option<String> {
    let info = allocation_counter::measure(|| {
        for _ in 0..3 {
            black_box(evaluate_with_random(
                black_box(flags),
                black_box(case.flag),
                black_box(&case.context),
                black_box(case.random),
            ));
        }
    });
    (info.count_total != 0)
        .then(|| format!("{} ({}): {} allocations, {} bytes", case.what, case.flag, info.count_total, info.bytes_total))
}

#[test]
fn evaluation_makes_no_heap_allocation() {
    // Proves the counter is live in this binary, so that zero below means zero.
    let probe = allocation_counter::measure(|| {
        black_box(Box::new(black_box(1_u64)));
    });
    assert_eq!(probe.count_total, 1, "the counting allocator is not installed");

    let flags = compile_flags();
    let cases = cases();
    // Cold: nothing but a regex may set anything up lazily on the first evaluation.
    let mut allocating: Vec<String> =
        cases.iter().filter(|c| !c.regex).filter_map(|c| allocations(&flags, c)).collect();
    assert!(allocating.is_empty(), "a first evaluation allocated:\n{}", allocating.join("\n"));

    for case in &cases {
        // The first search of a regex on a thread builds that thread's search cache (the regex
        // crate's pool), reused by every later search: warm it so the measurement sees the
        // steady state.
        let eval = evaluate_with_random(&flags, case.flag, &case.context, case.random);
        if case.want.is_some() {
            assert_eq!(eval.variant, case.want, "{}: {eval:?}", case.what);
        }
        let expected_error = matches!(case.flag, "broken" | "unknown") || case.context.targeting_key().is_none();
        assert!(eval.reason != Reason::Error || expected_error, "{}: {eval:?}", case.what);
    }
    allocating = cases.iter().filter_map(|c| allocations(&flags, c)).collect();
    assert!(allocating.is_empty(), "evaluation allocated:\n{}", allocating.join("\n"));
}
