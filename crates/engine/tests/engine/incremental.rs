//! Incremental compilation equals a full compile: after any sequence of flag upserts, removals
//! and segment changes, every flag evaluates exactly as in `compile` of the same set, for a
//! spread of contexts (prerequisites, cycles, missing flags and segments included).

use dimmer_engine::incremental::Incremental;
use dimmer_engine::{CompiledFlags, Context, Flag, FlagSet, Segment, compile, evaluate};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::{Value, json};

const ENV: &str = "production";
const KEYS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const VARIANTS: [&str; 3] = ["on", "off", "x"];

fn config() -> ProptestConfig {
    let base = ProptestConfig::default();
    let rng_seed = match base.rng_seed {
        RngSeed::Random => RngSeed::Fixed(0x0016_0016),
        chosen => chosen,
    };
    ProptestConfig { rng_seed, failure_persistence: None, cases: 256, ..base }
}

#[derive(Debug, Clone)]
enum Edit {
    Upsert(usize, Value),
    Remove(usize),
    Segments(bool),
}

/// A small flag: some variants (sometimes missing the one a rule serves), prerequisites on
/// other keys (sometimes itself, sometimes an unknown variant), a rule using a segment that
/// may not exist, and the environment sometimes absent.
fn flag() -> impl Strategy<Value = Value> {
    (
        prop::sample::subsequence(VARIANTS.to_vec(), 1..=3),
        prop::collection::vec((0..KEYS.len(), 0..VARIANTS.len()), 0..3),
        0..VARIANTS.len(),
        0..VARIANTS.len(),
        any::<bool>(),
        0..3usize,
        0..4usize,
    )
        .prop_map(|(variants, prereqs, rule_serve, default, enabled, segment, shape)| {
            let variants: serde_json::Map<String, Value> =
                variants.iter().enumerate().map(|(i, v)| ((*v).to_owned(), json!(i))).collect();
            let prerequisites: Vec<Value> =
                prereqs.iter().map(|(k, v)| json!({"flag": KEYS[*k], "variant": VARIANTS[*v]})).collect();
            let segment = ["beta", "gone", "beta"][segment];
            let env = json!({
                "enabled": enabled,
                "prerequisites": prerequisites,
                "rules": [
                    {"clauses": [{"attribute": "country", "op": "in", "values": ["de"]}],
                     "serve": {"variant": VARIANTS[rule_serve]}},
                    {"clauses": [{"op": "in_segment", "values": [segment]}], "serve": {"variant": VARIANTS[default]}}
                ],
                "default": {"variant": VARIANTS[default]}
            });
            match shape {
                0 => json!({"variants": variants}),
                _ => json!({"variants": variants, "environments": {ENV: env}}),
            }
        })
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        6 => (0..KEYS.len(), flag()).prop_map(|(k, f)| Edit::Upsert(k, f)),
        2 => (0..KEYS.len()).prop_map(Edit::Remove),
        1 => any::<bool>().prop_map(Edit::Segments),
    ]
}

fn segments(with_beta: bool) -> indexmap::IndexMap<String, Segment> {
    let mut segments = indexmap::IndexMap::new();
    if with_beta {
        let beta: Segment =
            serde_json::from_value(json!({"included": ["u1"]})).unwrap_or_else(|e| panic!("segment: {e}"));
        segments.insert("beta".to_owned(), beta);
    }
    segments
}

fn contexts() -> Vec<Context> {
    vec![
        Context::with_key("u1"),
        Context::with_key("u2").attr("country", "de"),
        Context::with_key("u3").attr("country", "fr"),
    ]
}

/// The two compiled forms agree on the keys, their order and every evaluation.
fn assert_same(incremental: &CompiledFlags, full: &CompiledFlags) {
    assert_eq!(incremental.keys().collect::<Vec<_>>(), full.keys().collect::<Vec<_>>());
    for key in full.keys().chain(["missing"]) {
        assert_eq!(incremental.off_variant(key), full.off_variant(key), "off variant of {key}");
        for ctx in contexts() {
            assert_eq!(evaluate(incremental, key, &ctx), evaluate(full, key, &ctx), "{key} for {ctx:?}");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn incremental_equals_full_compile(
        initial in prop::collection::vec((0..KEYS.len(), flag()), 0..6),
        edits in prop::collection::vec(edit(), 1..12),
    ) {
        let mut set = FlagSet { segments: segments(true), ..FlagSet::default() };
        for (k, f) in initial {
            let flag: Flag = serde_json::from_value(f).expect("flag");
            set.flags.insert(KEYS[k].to_owned(), flag);
        }
        let (mut state, _) = Incremental::new(set, ENV);
        for edit in edits {
            match edit {
                Edit::Upsert(k, f) => state.upsert(KEYS[k], serde_json::from_value(f).expect("flag")),
                Edit::Remove(k) => state.remove(KEYS[k]),
                Edit::Segments(beta) => state.replace_segments(segments(beta)),
            }
            let (full, _) = compile(state.set(), ENV);
            assert_same(&state.compiled(), &full);
        }
    }
}

/// A cycle made by one edit and broken by the next: the flags on it are broken, then whole again.
#[test]
fn a_cycle_made_and_broken_incrementally() {
    let flag = |prereq: Option<&str>| -> Flag {
        let prerequisites: Vec<Value> = prereq.iter().map(|p| json!({"flag": p, "variant": "on"})).collect();
        serde_json::from_value(json!({"environments": {ENV: {"enabled": true, "prerequisites": prerequisites}}}))
            .expect("flag")
    };
    let mut set = FlagSet::default();
    set.flags.insert("a".into(), flag(Some("b")));
    set.flags.insert("b".into(), flag(None));
    let (mut state, diags) = Incremental::new(set, ENV);
    assert!(diags.is_empty(), "{diags:?}");
    state.upsert("b", flag(Some("a")));
    let compiled = state.compiled();
    let ctx = Context::with_key("u");
    assert!(evaluate(&compiled, "a", &ctx).error.is_some());
    assert!(evaluate(&compiled, "b", &ctx).error.is_some());
    state.upsert("b", flag(None));
    let compiled = state.compiled();
    assert_eq!(evaluate(&compiled, "a", &ctx).variant, Some("on"));
    assert_same(&compiled, &compile(state.set(), ENV).0);
}
