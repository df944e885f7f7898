//! Adapter for Unleash's Rust evaluation engine (`unleash-yggdrasil`).
//!
//! The 1,000-flag client-features payload is built in memory as Unleash API
//! JSON and deserialized into `unleash_types::client_features::ClientFeatures`.
//! [`YggBench::eval`] runs the measured toggle's compiled strategy closure
//! directly (looked up once at setup, which is what "bare engine" means here);
//! [`YggBench::eval_engine`] goes through the public `EngineState::is_enabled`,
//! which adds an `ArcSwap` load and a name lookup among the 1,000 toggles.

use serde_json::{Value, json};
use std::collections::HashMap;
use unleash_types::client_features::{ClientFeatures, Context};
use unleash_yggdrasil::state::EnrichedContext;
use unleash_yggdrasil::{CompiledToggle, EngineState, UpdateMessage, compile_state};

use super::{FLAG_KEY, FLAGS, Scenario, USERS, UserSpec, filler_key, segment_keys, user};

/// Id of the segment of [`Scenario::Segment`].
const SEGMENT_ID: i32 = 1;

/// One scenario loaded into Yggdrasil, with its users' contexts prebuilt.
pub struct YggBench {
    engine: EngineState,
    toggle: CompiledToggle,
    contexts: Vec<Context>,
}

impl YggBench {
    /// Loads the 1,000 flags of `scenario` and prebuilds [`USERS`] contexts.
    pub fn new(scenario: Scenario) -> Self {
        let features = client_features(scenario);

        let engine = EngineState::default();
        // `take_state` reports flags that failed to compile (they then evaluate
        // to false) as warnings instead of an error: insist on there being none.
        let warnings = engine.take_state(UpdateMessage::FullResponse(features.clone()));
        assert!(warnings.is_none(), "yggdrasil rejected the flags: {warnings:?}");

        let (mut compiled, warnings) = compile_state(&features);
        assert!(warnings.is_empty(), "yggdrasil rejected the flags: {warnings:?}");
        let toggle = compiled.remove(FLAG_KEY).expect("the measured flag is part of the payload");

        let contexts = (0..USERS).map(|i| context(&user(i))).collect();
        YggBench { engine, toggle, contexts }
    }

    /// Evaluates the measured flag for user `i % USERS` with its precompiled rule.
    /// Equivalent to `EngineState::is_enabled` for a toggle without dependencies.
    #[inline]
    pub fn eval(&self, i: usize) -> bool {
        let ctx = EnrichedContext::from(&self.contexts[i % USERS], FLAG_KEY, None);
        self.toggle.enabled && (self.toggle.compiled_strategy)(&ctx)
    }

    /// Evaluates the measured flag for user `i % USERS` through the public
    /// `EngineState::is_enabled` API, flag name lookup included.
    #[inline]
    pub fn eval_engine(&self, i: usize) -> bool {
        self.engine.is_enabled(FLAG_KEY, &self.contexts[i % USERS], &None)
    }
}

/// The Unleash context of a benchmark user: `userId` plus custom properties.
fn context(u: &UserSpec) -> Context {
    let properties = HashMap::from([
        ("country".to_owned(), u.country.to_owned()),
        ("plan".to_owned(), u.plan.to_owned()),
        ("email".to_owned(), u.email.clone()),
        ("beta".to_owned(), u.beta.to_string()),
    ]);
    Context { user_id: Some(u.key.clone()), properties: Some(properties), ..Context::default() }
}

fn constraint(context_name: &str, operator: &str, values: &[&str]) -> Value {
    json!({
        "contextName": context_name,
        "operator": operator,
        "values": values,
        "caseInsensitive": false,
        "inverted": false,
    })
}

/// A `flexibleRollout` strategy at `rollout` percent, sticky on `userId`,
/// grouped by the measured flag's name.
fn flexible_rollout(rollout: u32, constraints: &[Value], segments: &[i32]) -> Value {
    json!({
        "name": "flexibleRollout",
        "parameters": {
            "rollout": rollout.to_string(),
            "stickiness": "userId",
            "groupId": FLAG_KEY,
        },
        "constraints": constraints,
        "segments": segments,
    })
}

fn feature(name: &str, strategies: &[Value]) -> Value {
    json!({
        "name": name,
        "type": "release",
        "enabled": true,
        "project": "default",
        "strategies": strategies,
    })
}

fn default_strategy() -> Value {
    default_with(&[], &[])
}

/// A `default` strategy (on for everyone it admits) behind `constraints` and `segments`: the
/// fastest equivalent of a rule that serves one value to everyone who matches, since it hashes
/// nobody (a `flexibleRollout` at 100% hashes the user before its constraints).
fn default_with(constraints: &[Value], segments: &[i32]) -> Value {
    json!({ "name": "default", "parameters": {}, "constraints": constraints, "segments": segments })
}

/// The whole client-features payload of `scenario`.
fn client_features(scenario: Scenario) -> ClientFeatures {
    let strategies = match scenario {
        Scenario::Simple => vec![default_strategy()],
        // Rules that serve one value to everyone they match: `default` strategies behind
        // constraints, yggdrasil's fastest equivalent (no hashing).
        Scenario::Rules => vec![
            default_with(&[constraint("country", "IN", &["fr", "de"]), constraint("plan", "IN", &["enterprise"])], &[]),
            default_with(
                &[constraint("email", "STR_ENDS_WITH", &["@example.com"]), constraint("beta", "IN", &["true"])],
                &[],
            ),
            default_with(
                &[constraint("country", "IN", &["us", "ca"]), constraint("plan", "IN", &["pro", "team"])],
                &[],
            ),
        ],
        Scenario::RolloutIn => vec![flexible_rollout(50, &[constraint("country", "IN", &["us", "ca", "fr"])], &[])],
        Scenario::Segment => vec![default_with(&[], &[SEGMENT_ID])],
    };

    let mut features = vec![feature(FLAG_KEY, &strategies)];
    features.extend((1..FLAGS).map(|i| feature(&filler_key(i), &[default_strategy()])));

    let segments = if scenario == Scenario::Segment {
        let keys: Vec<String> = segment_keys().collect();
        json!([{
            "id": SEGMENT_ID,
            "constraints": [{
                "contextName": "userId",
                "operator": "IN",
                "values": keys,
                "caseInsensitive": false,
                "inverted": false,
            }],
        }])
    } else {
        json!([])
    };

    serde_json::from_value(json!({
        "version": 2,
        "features": features,
        "segments": segments,
    }))
    .expect("the payload follows the Unleash client API schema")
}
