//! Adapter for LaunchDarkly's Rust evaluation engine (`launchdarkly-server-sdk-evaluation`).
//!
//! Flags and the segment are written as LaunchDarkly server-side flag JSON and
//! deserialized into the crate's `Flag` and `Segment`; a minimal in-memory
//! [`Store`] holds them. [`LdBench::eval`] calls `evaluate` with the measured
//! flag looked up once at setup. Segments, however, can only be reached
//! through `Store::segment`, which returns an owned `Segment`: every
//! `segmentMatch` clause clones the whole segment (10,000 keys in
//! [`Scenario::Segment`]) and then scans its `included` list linearly.

use launchdarkly_server_sdk_evaluation::{Context, ContextBuilder, Flag, FlagValue, Segment, Store, evaluate};
use serde_json::{Value, json};
use std::collections::HashMap;

use super::{FLAG_KEY, FLAGS, SEGMENT_KEY, Scenario, USERS, UserSpec, filler_key, segment_keys, user};

/// Index of the `false` variation in every flag.
const FALSE: u32 = 0;
/// Index of the `true` variation in every flag.
const TRUE: u32 = 1;

/// In-memory flag and segment store.
#[derive(Default)]
pub struct MemoryStore {
    flags: HashMap<String, Flag>,
    segments: HashMap<String, Segment>,
}

impl Store for MemoryStore {
    fn flag(&self, flag_key: &str) -> Option<Flag> {
        self.flags.get(flag_key).cloned()
    }

    fn segment(&self, segment_key: &str) -> Option<Segment> {
        self.segments.get(segment_key).cloned()
    }
}

/// One scenario loaded into the LaunchDarkly evaluator, with its users' contexts prebuilt.
pub struct LdBench {
    store: MemoryStore,
    flag: Flag,
    contexts: Vec<Context>,
}

impl LdBench {
    /// Loads the 1,000 flags (and segment) of `scenario` and prebuilds [`USERS`] contexts.
    pub fn new(scenario: Scenario) -> Self {
        let mut store = MemoryStore::default();
        let mut add_flag = |json: Value| {
            let flag: Flag = serde_json::from_value(json).expect("the flag follows LaunchDarkly's schema");
            store.flags.insert(flag.key.clone(), flag);
        };
        add_flag(measured_flag(scenario));
        for i in 1..FLAGS {
            add_flag(boolean_flag(&filler_key(i), &[]));
        }
        if scenario == Scenario::Segment {
            let keys: Vec<String> = segment_keys().collect();
            let segment: Segment = serde_json::from_value(json!({
                "key": SEGMENT_KEY,
                "version": 1,
                "included": keys,
                "excluded": [],
                "rules": [],
                "salt": "segment-salt",
            }))
            .expect("the segment follows LaunchDarkly's schema");
            store.segments.insert(SEGMENT_KEY.to_owned(), segment);
        }

        let flag = store.flag(FLAG_KEY).expect("the measured flag was just inserted");
        let contexts = (0..USERS).map(|i| context(&user(i))).collect();
        LdBench { store, flag, contexts }
    }

    /// Evaluates the measured flag for user `i % USERS`; false on any evaluation error.
    #[inline]
    pub fn eval(&self, i: usize) -> bool {
        let detail = evaluate(&self.store, &self.flag, &self.contexts[i % USERS], None);
        matches!(detail.value, Some(FlagValue::Bool(true)))
    }
}

/// The LaunchDarkly user context of a benchmark user.
fn context(u: &UserSpec) -> Context {
    ContextBuilder::new(u.key.as_str())
        .set_string("country", u.country)
        .set_string("plan", u.plan)
        .set_string("email", u.email.as_str())
        .set_bool("beta", u.beta)
        .build()
        .expect("a user context with a non-empty key is valid")
}

fn clause(attribute: &str, op: &str, values: &Value) -> Value {
    json!({
        "contextKind": "user",
        "attribute": attribute,
        "op": op,
        "values": values,
        "negate": false,
    })
}

fn rule(id: &str, clauses: &[Value], serve: &Value) -> Value {
    let mut rule = json!({ "id": id, "clauses": clauses, "trackEvents": false });
    if let (Some(rule), Some(serve)) = (rule.as_object_mut(), serve.as_object()) {
        rule.extend(serve.clone());
    }
    rule
}

/// An on boolean flag with variations `[false, true]` serving true by default.
fn boolean_flag(key: &str, rules: &[Value]) -> Value {
    let fallthrough = if rules.is_empty() { TRUE } else { FALSE };
    json!({
        "key": key,
        "version": 1,
        "on": true,
        "targets": [],
        "contextTargets": [],
        "rules": rules,
        "prerequisites": [],
        "fallthrough": { "variation": fallthrough },
        "offVariation": FALSE,
        "variations": [false, true],
        "clientSideAvailability": { "usingMobileKey": false, "usingEnvironmentId": false },
        "salt": format!("{key}-salt"),
        "trackEvents": false,
        "trackEventsFallthrough": false,
    })
}

/// The measured flag of `scenario`; it falls through to false whenever it has rules.
fn measured_flag(scenario: Scenario) -> Value {
    let serve_true = json!({ "variation": TRUE });
    let rules = match scenario {
        Scenario::Simple => vec![],
        Scenario::Rules => vec![
            rule(
                "rule-1",
                &[clause("country", "in", &json!(["fr", "de"])), clause("plan", "in", &json!(["enterprise"]))],
                &serve_true,
            ),
            rule(
                "rule-2",
                &[clause("email", "endsWith", &json!(["@example.com"])), clause("beta", "in", &json!([true]))],
                &serve_true,
            ),
            rule(
                "rule-3",
                &[clause("country", "in", &json!(["us", "ca"])), clause("plan", "in", &json!(["pro", "team"]))],
                &serve_true,
            ),
        ],
        Scenario::RolloutIn => vec![rule(
            "rollout",
            &[clause("country", "in", &json!(["us", "ca", "fr"]))],
            // No bucketBy: LaunchDarkly buckets by the context key.
            &json!({ "rollout": { "variations": [
                { "variation": TRUE, "weight": 50_000 },
                { "variation": FALSE, "weight": 50_000 },
            ] } }),
        )],
        Scenario::Segment => vec![rule("segment", &[clause("", "segmentMatch", &json!([SEGMENT_KEY]))], &serve_true)],
    };
    boolean_flag(FLAG_KEY, &rules)
}
