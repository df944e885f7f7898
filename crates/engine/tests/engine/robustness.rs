//! Fuzz-style properties: arbitrary JSON and mutated flag sets go through deserialize, compile and
//! evaluate without panicking, and a flag that compiles without errors never evaluates to a
//! parse error.

use dimmer_engine::{
    CompiledFlags, Context, Diagnostic, ErrorCode, Explain, FlagSet, Reason, Severity, compile, evaluate,
    evaluate_traced, validate,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::{Map, Value, json};

const ENVIRONMENTS: [&str; 3] = ["production", "staging", "default"];

/// A fixed seed unless `PROPTEST_RNG_SEED` names another: CI must not flake, and people can
/// still explore other inputs locally.
fn config(cases: u32) -> ProptestConfig {
    let base = ProptestConfig::default();
    let rng_seed = match base.rng_seed {
        RngSeed::Random => RngSeed::Fixed(0x00d1_33e2),
        chosen => chosen,
    };
    // With a fixed seed a failure reproduces by itself: no regression files in the source tree.
    ProptestConfig { cases, rng_seed, failure_persistence: None, ..base }
}

/// Names the flag model and the seed set use, so that random JSON often lands on a real field,
/// operator, variant, flag or segment instead of being refused at the first unknown key.
const VOCABULARY: &[&str] = &[
    "flags",
    "segments",
    "environments",
    "production",
    "staging",
    "enabled",
    "targets",
    "prerequisites",
    "rules",
    "clauses",
    "attribute",
    "op",
    "values",
    "negate",
    "case_insensitive",
    "serve",
    "variant",
    "variants",
    "rollout",
    "weight",
    "total",
    "bucket_by",
    "salt",
    "seed",
    "gate",
    "default",
    "off_variant",
    "flag",
    "included",
    "excluded",
    "id",
    "kind",
    "description",
    "on",
    "off",
    "gold",
    "silver",
    "checkout",
    "beta",
    "staff",
    "parent",
    "child",
    "split",
    "in",
    "not_in",
    "equals",
    "starts_with",
    "ends_with",
    "contains",
    "regex",
    "num_eq",
    "lt",
    "lte",
    "gt",
    "gte",
    "semver_eq",
    "semver_lt",
    "semver_lte",
    "semver_gt",
    "semver_gte",
    "before",
    "after",
    "cidr",
    "exists",
    "absent",
    "in_segment",
    "eq",
    "targetingKey",
    "$random",
    "country",
    "plan",
    "email",
    "version",
    "ip",
    "address.country",
    "fr",
    "1.2.3",
    "2.0.0-rc.1",
    "10.0.0.0/8",
    "::1",
    "2024-01-01T00:00:00Z",
    "^a.*$",
    "(",
    "",
    ".",
    "a.b",
];

fn vocabulary_word() -> impl Strategy<Value = String> {
    prop::sample::select(VOCABULARY).prop_map(str::to_owned)
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => vocabulary_word(), 1 => ".{0,8}"]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(0_i64),
            Just(1),
            Just(-1),
            Just(50_000),
            Just(100_000),
            Just(100_001),
            Just(i64::from(u32::MAX)),
            Just(i64::from(u32::MAX) + 1),
            any::<i64>(),
        ]
        .prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        vocabulary_word().prop_map(Value::String),
        ".{0,12}".prop_map(Value::String),
    ]
}

/// Arbitrary JSON, up to four levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6).prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// A valid flag set that uses every feature, the starting point for mutations.
fn seed_set() -> Value {
    json!({
        "segments": {
            "beta": {
                "included": ["alice"],
                "excluded": ["mallory"],
                "rules": [{"clauses": [{"attribute": "email", "op": "ends_with", "values": ["@example.com"], "case_insensitive": true}]}]
            },
            "staff": {"rules": [
                {"clauses": [{"op": "in_segment", "values": ["beta"]}]},
                {"clauses": [{"attribute": "ip", "op": "cidr", "values": ["10.0.0.0/8", "::1"]}]}
            ]}
        },
        "flags": {
            "parent": {"environments": {
                "production": {"enabled": true, "rules": [{"clauses": [{"attribute": "country", "op": "in", "values": ["fr", "de"]}], "serve": {"variant": "on"}}], "default": {"variant": "off"}},
                "staging": {"enabled": false}
            }},
            "checkout": {
                "kind": "experiment",
                "variants": {"off": "classic", "gold": {"layout": "gold"}, "silver": 2, "on": true},
                "environments": {
                    "production": {
                        "enabled": true,
                        "targets": {"gold": ["alice", "bob"]},
                        "prerequisites": [{"flag": "parent", "variants": ["on"]}],
                        "rules": [
                            {"id": "new-app", "clauses": [
                                {"attribute": "version", "op": "semver_gte", "values": ["2.0.0"]},
                                {"attribute": "email", "op": "regex", "values": ["^[a-z]+@"]}
                            ], "serve": {"variant": "gold"}},
                            {"clauses": [
                                {"attribute": "seats", "op": "lt", "values": [10, "20"]},
                                {"attribute": "signup", "op": "after", "values": ["2024-01-01T00:00:00Z", 0]},
                                {"attribute": "plan", "op": "not_in", "values": ["free", 3, true], "negate": true}
                            ], "gate": {"weight": 50000, "bucket_by": ["accountId", "targetingKey"]}, "serve": {"variant": "silver"}},
                            {"clauses": [{"op": "in_segment", "values": ["staff"]}, {"attribute": "address.country", "op": "exists"}],
                             "serve": {"rollout": {"variants": [{"variant": "gold", "weight": 1}, {"variant": "silver", "weight": 2}], "total": 3, "salt": "s", "seed": 9}}}
                        ],
                        "default": {"rollout": {"bucket_by": "$random", "variants": [{"variant": "on", "weight": 25000}, {"variant": "off", "weight": 75000}]}},
                        "off_variant": "off"
                    },
                    "staging": {"enabled": true, "default": {"variant": "silver"}}
                }
            },
            "child": {"environments": {"production": {
                "enabled": true,
                "prerequisites": [{"flag": "checkout", "variant": "gold"}],
                "rules": [{"clauses": [{"attribute": "name", "op": "starts_with", "values": ["a"]}, {"attribute": "name", "op": "contains", "values": ["x"]}], "serve": {"variant": "on"}}]
            }}}
        }
    })
}

/// Every node of `value`, as a path of object keys and array indexes.
fn paths(value: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                here.push(Step::Key(k.clone()));
                paths(v, here, out);
                here.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                here.push(Step::Index(i));
                paths(v, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn node_mut<'a>(mut value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    for step in path {
        value = match (step, value) {
            (Step::Key(k), Value::Object(map)) => map.get_mut(k)?,
            (Step::Index(i), Value::Array(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the node with another value of the same JSON type, which keeps the document
    /// deserializable far more often and so reaches compile and evaluate.
    Tweak(prop::sample::Index, String, Value, bool),
    /// Replace the node with another value.
    Replace(prop::sample::Index, Value),
    /// Remove the node from its object or array, dropping a required field or a list entry.
    Remove(prop::sample::Index),
    /// Add a field to an object or an entry to an array.
    Insert(prop::sample::Index, String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let replacement = prop_oneof![3 => leaf(), 1 => json_value()];
    let number = prop_oneof![leaf().prop_filter("a number", Value::is_number), (0..=100_001_u32).prop_map(Value::from)];
    prop_oneof![
        6 => (any::<prop::sample::Index>(), key(), number, any::<bool>())
            .prop_map(|(i, s, n, b)| Mutation::Tweak(i, s, n, b)),
        3 => (any::<prop::sample::Index>(), replacement.clone()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
        1 => (any::<prop::sample::Index>(), key(), replacement).prop_map(|(i, k, v)| Mutation::Insert(i, k, v)),
    ]
}

fn mutate(mut value: Value, mutations: &[Mutation]) -> Value {
    for m in mutations {
        let mut all = Vec::new();
        paths(&value, &mut Vec::new(), &mut all);
        match m {
            Mutation::Tweak(at, text, number, flag) => {
                if let Some(node) = node_mut(&mut value, &all[at.index(all.len())]) {
                    match node {
                        Value::String(s) => *s = text.clone(),
                        Value::Number(_) => *node = number.clone(),
                        Value::Bool(b) => *b = *flag,
                        Value::Array(items) => items.reverse(),
                        Value::Object(map) => {
                            // Renaming one key to a vocabulary word tries another field name.
                            if let Some(k) = map.keys().next().cloned()
                                && let Some(v) = map.remove(&k)
                            {
                                map.insert(text.clone(), v);
                            }
                        }
                        Value::Null => *node = Value::Bool(*flag),
                    }
                }
            }
            Mutation::Replace(at, replacement) => {
                let path = &all[at.index(all.len())];
                if let Some(node) = node_mut(&mut value, path) {
                    *node = replacement.clone();
                }
            }
            Mutation::Remove(at) => {
                let path = &all[at.index(all.len())];
                let Some((last, parent)) = path.split_last() else {
                    continue;
                };
                match (node_mut(&mut value, parent), last) {
                    (Some(Value::Object(map)), Step::Key(k)) => {
                        map.remove(k);
                    }
                    (Some(Value::Array(items)), Step::Index(i)) if *i < items.len() => {
                        items.remove(*i);
                    }
                    _ => {}
                }
            }
            Mutation::Insert(at, k, v) => match node_mut(&mut value, &all[at.index(all.len())]) {
                Some(Value::Object(map)) => {
                    map.insert(k.clone(), v.clone());
                }
                Some(Value::Array(items)) => items.push(v.clone()),
                _ => {}
            },
        }
    }
    value
}

fn context() -> impl Strategy<Value = Context> {
    let attribute = prop_oneof![
        3 => prop::sample::select(&["targetingKey", "country", "plan", "email", "version", "ip", "address",
            "address.country", "seats", "signup", "accountId", "name", "$random"][..]).prop_map(str::to_owned),
        1 => ".{0,8}",
    ];
    let likely_value = prop_oneof![
        prop::sample::select(
            &[
                "alice",
                "bob",
                "mallory",
                "fr",
                "de",
                "alice@example.com",
                "2.1.0",
                "10.1.2.3",
                "::1",
                "2025-06-01T00:00:00Z",
                "free",
                "ax"
            ][..]
        )
        .prop_map(Value::from),
        json_value(),
    ];
    (prop::collection::vec((attribute, likely_value), 0..8), prop::option::of(any::<u32>())).prop_map(
        |(pairs, random)| {
            let ctx = Context::from_map(pairs.into_iter().collect::<Map<String, Value>>());
            match random {
                Some(r) => ctx.with_random(r),
                None => ctx,
            }
        },
    )
}

/// The path prefix compile uses for a flag key (mirrors how diagnostics quote keys).
fn flag_prefix(key: &str) -> String {
    format!("flags{}", dimmer_engine::compile::path_key(key))
}

fn has_error_for(diagnostics: &[Diagnostic], key: &str) -> bool {
    let prefix = flag_prefix(key);
    diagnostics.iter().any(|d| {
        d.severity == Severity::Error
            && d.path.strip_prefix(&prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    })
}

fn check_flag(
    flags: &CompiledFlags,
    diagnostics: &[Diagnostic],
    key: &str,
    ctx: &Context,
) -> Result<(), TestCaseError> {
    let eval = evaluate(flags, key, ctx);
    let mut explain = Explain::default();
    prop_assert_eq!(evaluate_traced(flags, key, ctx, &mut explain), eval, "tracing changed the answer");
    prop_assert_eq!(eval.value.is_some(), eval.variant.is_some(), "{:?}", eval);
    prop_assert_eq!(eval.reason == Reason::Error, eval.error.is_some(), "{:?}", eval);
    if let Some(variant) = eval.variant {
        let known = flags.variants(key).is_some_and(|mut vs| vs.any(|(k, v)| k == variant && Some(v) == eval.value));
        prop_assert!(known, "served a variant the flag does not have: {:?}", eval);
    }
    if matches!(eval.reason, Reason::Disabled | Reason::PrerequisiteFailed) {
        prop_assert_eq!(eval.variant, flags.off_variant(key), "{:?}", eval);
    }
    if !has_error_for(diagnostics, key) {
        prop_assert!(
            eval.error != Some(ErrorCode::ParseError),
            "flag {:?} compiled without errors but evaluates to a parse error: {:?}\n{:#?}",
            key,
            eval,
            diagnostics
        );
    }
    Ok(())
}

/// The whole pipeline on one document; only a panic or a broken invariant fails it.
fn exercise(document: Value, contexts: &[Context]) -> Result<(), TestCaseError> {
    let Ok(set) = serde_json::from_value::<FlagSet>(document) else {
        return Ok(());
    };
    let _ = validate(&set);
    for env in ENVIRONMENTS {
        let (flags, diagnostics) = compile(&set, env);
        prop_assert_eq!(flags.len(), set.flags.len(), "compile dropped or invented flags");
        for key in set.flags.keys() {
            for ctx in contexts {
                check_flag(&flags, &diagnostics, key, ctx)?;
            }
        }
        for ctx in contexts {
            prop_assert_eq!(evaluate(&flags, "no such flag", ctx).error, Some(ErrorCode::FlagNotFound));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_json_never_panics(document in json_value(), contexts in prop::collection::vec(context(), 1..4)) {
        exercise(document, &contexts)?;
    }

    #[test]
    fn arbitrary_flags_object_never_panics(
        flags in prop::collection::vec((key(), json_value()), 0..4),
        contexts in prop::collection::vec(context(), 1..4),
    ) {
        let document = json!({"flags": Value::Object(flags.into_iter().collect())});
        exercise(document, &contexts)?;
    }
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn mutated_flag_sets_never_panic_and_clean_flags_never_fail_to_parse(
        mutations in prop::collection::vec(mutation(), 1..6),
        contexts in prop::collection::vec(context(), 1..4),
    ) {
        exercise(mutate(seed_set(), &mutations), &contexts)?;
    }
}

#[test]
fn the_unmutated_seed_set_compiles_cleanly_in_every_environment() {
    // Mutations only find something when they start from a set that works.
    let set: FlagSet = serde_json::from_value(seed_set()).unwrap_or_else(|e| panic!("{e}"));
    assert!(validate(&set).is_empty(), "{:#?}", validate(&set));
    let (flags, _) = compile(&set, "production");
    let ctx = Context::with_key("alice").attr("country", "fr").with_random(1);
    assert_eq!(evaluate(&flags, "checkout", &ctx).variant, Some("gold"));
}
