//! Evaluation semantics, one behaviour per test: reasons, targets, rule order, clauses, segments,
//! prerequisites, rollouts and gates, broken flags, compile diagnostics and explanations.

use dimmer_engine::hash::bucket;
use dimmer_engine::{
    CompiledFlags, Context, Diagnostic, ErrorCode, Evaluation, Explain, FlagSet, Reason, Severity, compile, evaluate,
    evaluate_traced, evaluate_traced_with_random, evaluate_with_random, validate,
};
use serde_json::{Value, json};

const PROD: &str = "production";

fn flag_set(value: Value) -> FlagSet {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("the test's flag set does not deserialize: {e}"))
}

/// Compiles for production and insists on a clean compile, so that a test about evaluation
/// cannot pass by accident on a flag that compile quietly broke.
fn compile_clean(value: Value) -> CompiledFlags {
    let (flags, diagnostics) = compile(&flag_set(value), PROD);
    assert!(diagnostics.is_empty(), "unexpected diagnostics: {diagnostics:#?}");
    flags
}

fn compile_with_diagnostics(value: Value) -> (CompiledFlags, Vec<Diagnostic>) {
    compile(&flag_set(value), PROD)
}

fn errors(diagnostics: &[Diagnostic]) -> Vec<(&str, &str)> {
    diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| (d.path.as_str(), d.message.as_str()))
        .collect()
}

fn user(key: &str) -> Context {
    Context::with_key(key)
}

/// What a default rollout (salt = flag key, seed 0, total 100000) gives `key`.
fn native_bucket(salt: &str, key: &str) -> u32 {
    bucket(salt, key.as_bytes(), 0, 100_000)
}

fn assert_served(eval: &Evaluation<'_>, variant: &str, value: Value, reason: Reason) {
    assert_eq!(eval.variant, Some(variant), "{eval:?}");
    assert_eq!(eval.value, Some(&value), "{eval:?}");
    assert_eq!(eval.reason, reason, "{eval:?}");
    assert_eq!(eval.error, None, "{eval:?}");
}

fn layouts() -> Value {
    json!({
        "off": "classic",
        "gold": "gold-layout",
        "silver": "silver-layout",
        "on": "new-layout"
    })
}

#[test]
fn disabled_flag_serves_its_off_variant_with_reason_disabled() {
    let flags = compile_clean(json!({"flags": {
        "checkout": {
            "variants": layouts(),
            "environments": {"production": {
                "enabled": false,
                "targets": {"gold": ["alice"]},
                "rules": [{"clauses": [], "serve": {"variant": "silver"}}],
                "default": {"variant": "on"}
            }}
        },
        "custom-off": {
            "variants": layouts(),
            "environments": {"production": {"enabled": false, "off_variant": "silver"}}
        }
    }}));
    // The kill switch must beat individual targets and rules alike.
    let eval = evaluate(&flags, "checkout", &user("alice"));
    assert_served(&eval, "off", json!("classic"), Reason::Disabled);
    assert_eq!(eval.rule, None);
    let eval = evaluate(&flags, "custom-off", &user("bob"));
    assert_served(&eval, "silver", json!("silver-layout"), Reason::Disabled);
}

#[test]
fn environment_not_configured_serves_the_off_variant_as_disabled() {
    let flags = compile_clean(json!({"flags": {
        "checkout": {"environments": {"staging": {"enabled": true}}}
    }}));
    let eval = evaluate(&flags, "checkout", &user("alice"));
    assert_served(&eval, "off", json!(false), Reason::Disabled);
}

#[test]
fn flag_without_targeting_is_static_and_unmatched_targeting_falls_to_default() {
    let flags = compile_clean(json!({"flags": {
        "plain": {"environments": {"production": {"enabled": true}}},
        "plain-default": {
            "variants": layouts(),
            "environments": {"production": {"enabled": true, "default": {"variant": "gold"}}}
        },
        "targeted": {"environments": {"production": {
            "enabled": true,
            "targets": {"off": ["mallory"]},
            "default": {"variant": "on"}
        }}},
        "ruled": {"environments": {"production": {
            "enabled": true,
            "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "serve": {"variant": "off"}}],
            "default": {"variant": "on"}
        }}}
    }}));
    // With no default written, a boolean flag that is on serves `on`.
    assert_served(&evaluate(&flags, "plain", &user("alice")), "on", json!(true), Reason::Static);
    assert_served(&evaluate(&flags, "plain", &Context::new()), "on", json!(true), Reason::Static);
    assert_served(&evaluate(&flags, "plain-default", &user("alice")), "gold", json!("gold-layout"), Reason::Static);
    // Same value, but targeting was consulted: DEFAULT, not STATIC, so callers can cache STATIC.
    assert_served(&evaluate(&flags, "targeted", &user("alice")), "on", json!(true), Reason::Default);
    assert_served(&evaluate(&flags, "ruled", &user("alice")), "on", json!(true), Reason::Default);
}

#[test]
fn individual_targets_win_over_rules_with_targeting_match() {
    let flags = compile_clean(json!({"flags": {"checkout": {
        "variants": layouts(),
        "environments": {"production": {
            "enabled": true,
            "targets": {"gold": ["alice", "bob"], "off": ["mallory"]},
            "rules": [{"clauses": [], "serve": {"variant": "silver"}}],
            "default": {"variant": "on"}
        }}
    }}}));
    let eval = evaluate(&flags, "checkout", &user("bob"));
    assert_served(&eval, "gold", json!("gold-layout"), Reason::TargetingMatch);
    assert_eq!(eval.rule, None, "a target is not a rule");
    assert_served(&evaluate(&flags, "checkout", &user("mallory")), "off", json!("classic"), Reason::TargetingMatch);
    let eval = evaluate(&flags, "checkout", &user("carol"));
    assert_served(&eval, "silver", json!("silver-layout"), Reason::TargetingMatch);
    assert_eq!(eval.rule, Some(0));
    // Targets are matched on the targeting key only, never on another attribute of that value.
    let eval = evaluate(&flags, "checkout", &Context::new().attr("name", "alice"));
    assert_eq!(eval.variant, Some("silver"));
}

#[test]
fn rules_are_tried_in_order_and_the_first_match_wins() {
    let flags = compile_clean(json!({"flags": {"checkout": {
        "variants": layouts(),
        "environments": {"production": {
            "enabled": true,
            "rules": [
                {"id": "pro-plan", "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "serve": {"variant": "gold"}},
                {"id": "france", "clauses": [{"attribute": "country", "op": "in", "values": ["fr"]}], "serve": {"variant": "silver"}},
                {"clauses": [{"attribute": "country", "op": "in", "values": ["fr", "de"]}], "serve": {"variant": "off"}}
            ],
            "default": {"variant": "on"}
        }}
    }}}));
    let both = user("u1").attr("plan", "pro").attr("country", "fr");
    let eval = evaluate(&flags, "checkout", &both);
    assert_served(&eval, "gold", json!("gold-layout"), Reason::TargetingMatch);
    assert_eq!((eval.rule, eval.rule_id), (Some(0), Some("pro-plan")));

    let french = user("u2").attr("plan", "free").attr("country", "fr");
    let eval = evaluate(&flags, "checkout", &french);
    assert_served(&eval, "silver", json!("silver-layout"), Reason::TargetingMatch);
    assert_eq!((eval.rule, eval.rule_id), (Some(1), Some("france")));

    let german = user("u3").attr("country", "de");
    let eval = evaluate(&flags, "checkout", &german);
    assert_served(&eval, "off", json!("classic"), Reason::TargetingMatch);
    assert_eq!((eval.rule, eval.rule_id), (Some(2), None), "a rule without an id has none");

    let eval = evaluate(&flags, "checkout", &user("u4").attr("country", "us"));
    assert_served(&eval, "on", json!("new-layout"), Reason::Default);
    assert_eq!((eval.rule, eval.rule_id), (None, None));
}

#[test]
fn every_clause_of_a_rule_must_hold() {
    let flags = compile_clean(json!({"flags": {"f": {"environments": {"production": {
        "enabled": true,
        "rules": [{"clauses": [
            {"attribute": "plan", "op": "in", "values": ["pro"]},
            {"attribute": "seats", "op": "gte", "values": [10]}
        ], "serve": {"variant": "on"}}],
        "default": {"variant": "off"}
    }}}}}));
    assert_eq!(evaluate(&flags, "f", &user("a").attr("plan", "pro").attr("seats", 12)).variant, Some("on"));
    assert_eq!(evaluate(&flags, "f", &user("a").attr("plan", "pro").attr("seats", 3)).variant, Some("off"));
    assert_eq!(evaluate(&flags, "f", &user("a").attr("seats", 12)).variant, Some("off"));
}

#[test]
fn negated_clause_inverts_the_match_and_absent_attributes_are_not_in_any_list() {
    let flags = compile_clean(json!({"flags": {
        "not-french": {"environments": {"production": {
            "enabled": true,
            "rules": [{"clauses": [{"attribute": "country", "op": "in", "values": ["fr"], "negate": true}], "serve": {"variant": "on"}}],
            "default": {"variant": "off"}
        }}},
        "not-in": {"environments": {"production": {
            "enabled": true,
            "rules": [{"clauses": [{"attribute": "country", "op": "not_in", "values": ["fr"]}], "serve": {"variant": "on"}}],
            "default": {"variant": "off"}
        }}},
        "double-negative": {"environments": {"production": {
            "enabled": true,
            "rules": [{"clauses": [{"attribute": "country", "op": "not_in", "values": ["fr"], "negate": true}], "serve": {"variant": "on"}}],
            "default": {"variant": "off"}
        }}}
    }}));
    let fr = user("a").attr("country", "fr");
    let de = user("a").attr("country", "de");
    let nowhere = user("a");
    for key in ["not-french", "not-in"] {
        assert_eq!(evaluate(&flags, key, &fr).variant, Some("off"), "{key}");
        assert_eq!(evaluate(&flags, key, &de).variant, Some("on"), "{key}");
        assert_eq!(evaluate(&flags, key, &nowhere).variant, Some("on"), "{key}: absent is not in [fr]");
    }
    assert_eq!(evaluate(&flags, "double-negative", &fr).variant, Some("on"));
    assert_eq!(evaluate(&flags, "double-negative", &de).variant, Some("off"));
    assert_eq!(evaluate(&flags, "double-negative", &nowhere).variant, Some("off"));
}

#[test]
fn nested_attribute_paths_reach_into_objects_and_arrays() {
    let flags = compile_clean(json!({"flags": {
        "by-country": {"environments": {"production": {
            "enabled": true,
            "rules": [{"clauses": [{"attribute": "address.country", "op": "in", "values": ["fr"]}], "serve": {"variant": "on"}}],
            "default": {"variant": "off"}
        }}},
        "first-role": {"environments": {"production": {
            "enabled": true,
            "rules": [{"clauses": [{"attribute": "roles.0", "op": "in", "values": ["admin"]}], "serve": {"variant": "on"}}],
            "default": {"variant": "off"}
        }}}
    }}));
    let nested: Context = serde_json::from_value(json!({
        "targetingKey": "u1",
        "address": {"country": "fr", "city": "Lyon"},
        "roles": ["admin", "dev"]
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(evaluate(&flags, "by-country", &nested).variant, Some("on"));
    assert_eq!(evaluate(&flags, "first-role", &nested).variant, Some("on"));
    let elsewhere = user("u2").attr("address", json!({"country": "de"})).attr("roles", json!(["dev", "admin"]));
    assert_eq!(evaluate(&flags, "by-country", &elsewhere).variant, Some("off"));
    assert_eq!(evaluate(&flags, "first-role", &elsewhere).variant, Some("off"));
    // An attribute whose own name contains the dot wins over the nested lookup.
    let dotted = user("u3").attr("address.country", "fr").attr("address", json!({"country": "de"}));
    assert_eq!(evaluate(&flags, "by-country", &dotted).variant, Some("on"));
    // A path through a scalar finds nothing rather than failing.
    let scalar = user("u4").attr("address", "1 rue de la Paix");
    let eval = evaluate(&flags, "by-country", &scalar);
    assert_eq!((eval.variant, eval.error), (Some("off"), None));
}

fn segment_flags() -> CompiledFlags {
    compile_clean(json!({
        "segments": {
            "beta": {
                "included": ["alice"],
                "excluded": ["mallory"],
                "rules": [{"clauses": [{"attribute": "email", "op": "ends_with", "values": ["@example.com"]}]}]
            },
            "staff-or-beta": {"rules": [
                {"clauses": [{"op": "in_segment", "values": ["beta"]}]},
                {"clauses": [{"attribute": "role", "op": "in", "values": ["staff"]}]}
            ]}
        },
        "flags": {
            "beta-ui": {"environments": {"production": {
                "enabled": true,
                "rules": [{"clauses": [{"op": "in_segment", "values": ["beta"]}], "serve": {"variant": "on"}}],
                "default": {"variant": "off"}
            }}},
            "wide": {"environments": {"production": {
                "enabled": true,
                "rules": [{"clauses": [{"op": "in_segment", "values": ["staff-or-beta"]}], "serve": {"variant": "on"}}],
                "default": {"variant": "off"}
            }}},
            "outsiders": {"environments": {"production": {
                "enabled": true,
                "rules": [{"clauses": [{"op": "in_segment", "values": ["beta"], "negate": true}], "serve": {"variant": "on"}}],
                "default": {"variant": "off"}
            }}}
        }
    }))
}

#[test]
fn segment_included_keys_are_members_whatever_their_attributes() {
    let flags = segment_flags();
    let eval = evaluate(&flags, "beta-ui", &user("alice"));
    assert_served(&eval, "on", json!(true), Reason::TargetingMatch);
    assert_eq!(evaluate(&flags, "outsiders", &user("alice")).variant, Some("off"));
}

#[test]
fn segment_rules_admit_matching_contexts() {
    let flags = segment_flags();
    let bob = user("bob").attr("email", "bob@example.com");
    assert_eq!(evaluate(&flags, "beta-ui", &bob).variant, Some("on"));
    let eve = user("eve").attr("email", "eve@elsewhere.org");
    assert_eq!(evaluate(&flags, "beta-ui", &eve).variant, Some("off"));
    assert_eq!(evaluate(&flags, "outsiders", &eve).variant, Some("on"));
    // Without a targeting key, membership still follows the rules.
    let anonymous = Context::new().attr("email", "anon@example.com");
    assert_eq!(evaluate(&flags, "beta-ui", &anonymous).variant, Some("on"));
}

#[test]
fn segment_excluded_key_beats_the_segment_rules() {
    let flags = segment_flags();
    let mallory = user("mallory").attr("email", "mallory@example.com");
    assert_eq!(evaluate(&flags, "beta-ui", &mallory).variant, Some("off"));
    assert_eq!(evaluate(&flags, "outsiders", &mallory).variant, Some("on"));
}

#[test]
fn segment_referencing_another_segment_includes_its_members() {
    let flags = segment_flags();
    assert_eq!(evaluate(&flags, "wide", &user("alice")).variant, Some("on"), "included in beta");
    let bob = user("bob").attr("email", "bob@example.com");
    assert_eq!(evaluate(&flags, "wide", &bob).variant, Some("on"), "beta by rule");
    let carol = user("carol").attr("role", "staff");
    assert_eq!(evaluate(&flags, "wide", &carol).variant, Some("on"), "staff rule");
    assert_eq!(evaluate(&flags, "beta-ui", &carol).variant, Some("off"), "staff is not beta");
    // Exclusion from the inner segment does not exclude from the outer one's other rules.
    let mallory = user("mallory").attr("email", "m@example.com");
    assert_eq!(evaluate(&flags, "wide", &mallory).variant, Some("off"));
    let staff_mallory = user("mallory").attr("email", "m@example.com").attr("role", "staff");
    assert_eq!(evaluate(&flags, "wide", &staff_mallory).variant, Some("on"));
}

fn prerequisite_flags() -> (CompiledFlags, Vec<Diagnostic>) {
    compile_with_diagnostics(json!({"flags": {
        "parent": {"environments": {"production": {
            "enabled": true,
            "rules": [{"clauses": [{"attribute": "country", "op": "in", "values": ["fr"]}], "serve": {"variant": "on"}}],
            "default": {"variant": "off"}
        }}},
        "child": {
            "variants": layouts(),
            "environments": {"production": {
                "enabled": true,
                "prerequisites": [{"flag": "parent", "variant": "on"}],
                "default": {"variant": "gold"},
                "off_variant": "silver"
            }}
        },
        "either": {"environments": {"production": {
            "enabled": true,
            "prerequisites": [{"flag": "parent", "variants": ["on", "off"]}]
        }}},
        "broken-parent": {"environments": {"production": {
            "enabled": true,
            "rules": [{"clauses": [{"attribute": "plan", "op": "eq", "values": ["pro"]}], "serve": {"variant": "on"}}]
        }}},
        "orphan": {"environments": {"production": {
            "enabled": true,
            "prerequisites": [{"flag": "broken-parent", "variant": "off"}]
        }}}
    }}))
}

#[test]
fn satisfied_prerequisite_lets_the_flag_evaluate_its_own_targeting() {
    let (flags, _) = prerequisite_flags();
    let eval = evaluate(&flags, "child", &user("a").attr("country", "fr"));
    assert_served(&eval, "gold", json!("gold-layout"), Reason::Default);
    // Any of several listed variants satisfies the prerequisite.
    assert_eq!(evaluate(&flags, "either", &user("a").attr("country", "fr")).variant, Some("on"));
    assert_eq!(evaluate(&flags, "either", &user("a").attr("country", "de")).variant, Some("on"));
}

#[test]
fn failed_prerequisite_serves_the_off_variant_with_prerequisite_failed() {
    let (flags, _) = prerequisite_flags();
    let eval = evaluate(&flags, "child", &user("a").attr("country", "de"));
    assert_served(&eval, "silver", json!("silver-layout"), Reason::PrerequisiteFailed);
    assert_eq!(eval.rule, None);
}

#[test]
fn prerequisite_on_a_broken_flag_fails_instead_of_passing_its_fallback_along() {
    let (flags, diagnostics) = prerequisite_flags();
    assert_eq!(
        errors(&diagnostics),
        [("flags.broken-parent.environments.production.rules[0].clauses[0].op", "unknown operator \"eq\"")]
    );
    // The broken parent serves `off` as a fallback; that must not satisfy a prerequisite on `off`.
    let parent = evaluate(&flags, "broken-parent", &user("a"));
    assert_eq!((parent.variant, parent.reason), (Some("off"), Reason::Error));
    let eval = evaluate(&flags, "orphan", &user("a"));
    assert_served(&eval, "off", json!(false), Reason::PrerequisiteFailed);
}

fn rollout_flags() -> CompiledFlags {
    compile_clean(json!({"flags": {
        "split": {
            "variants": {"off": "none", "a": "A", "b": "B"},
            "environments": {"production": {
                "enabled": true,
                "default": {"rollout": {"variants": [{"variant": "a", "weight": 25000}, {"variant": "b", "weight": 75000}]}}
            }}
        },
        "gated": {"environments": {"production": {
            "enabled": true,
            "rules": [
                {"id": "half-of-france", "clauses": [{"attribute": "country", "op": "in", "values": ["fr"]}], "gate": {"weight": 50000}, "serve": {"variant": "on"}}
            ],
            "default": {"variant": "off"}
        }}},
        "salted": {"environments": {"production": {
            "enabled": true,
            "rules": [{"gate": {"weight": 300, "total": 1000, "salt": "shared", "seed": 7}, "serve": {"variant": "on"}}],
            "default": {"variant": "off"}
        }}},
        "in-rule": {"environments": {"production": {
            "enabled": true,
            "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}],
                       "serve": {"rollout": {"variants": [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 1}], "total": 2, "salt": "s"}}}],
            "default": {"variant": "off"}
        }}}
    }}))
}

#[test]
fn rollout_splits_users_by_their_bucket_with_reason_split() {
    let flags = rollout_flags();
    let mut seen = [0; 2];
    for i in 0..200 {
        let key = format!("user-{i}");
        let eval = evaluate(&flags, "split", &user(&key));
        let want = if native_bucket("split", &key) < 25_000 { ("a", "A") } else { ("b", "B") };
        assert_served(&eval, want.0, json!(want.1), Reason::Split);
        assert_eq!(eval.rule, None);
        seen[usize::from(want.0 == "b")] += 1;
    }
    assert!(seen[0] > 0 && seen[1] > 0, "200 users should land in both variants: {seen:?}");

    for i in 0..50 {
        let key = format!("pro-{i}");
        let eval = evaluate(&flags, "in-rule", &user(&key).attr("plan", "pro"));
        let want = if bucket("s", key.as_bytes(), 0, 2) < 1 { "on" } else { "off" };
        assert_eq!((eval.variant, eval.reason, eval.rule), (Some(want), Reason::Split, Some(0)));
    }
}

#[test]
fn rule_gate_admits_only_users_below_its_weight_and_others_fall_through() {
    let flags = rollout_flags();
    let (mut admitted, mut refused) = (0, 0);
    for i in 0..200 {
        let key = format!("user-{i}");
        let eval = evaluate(&flags, "gated", &user(&key).attr("country", "fr"));
        if native_bucket("gated:gate", &key) < 50_000 {
            assert_served(&eval, "on", json!(true), Reason::TargetingMatch);
            assert_eq!(eval.rule_id, Some("half-of-france"));
            admitted += 1;
        } else {
            assert_served(&eval, "off", json!(false), Reason::Default);
            refused += 1;
        }
        // The gate only applies after the clauses hold.
        assert_eq!(evaluate(&flags, "gated", &user(&key).attr("country", "de")).variant, Some("off"));

        let want = if bucket("shared", key.as_bytes(), 7, 1000) < 300 { "on" } else { "off" };
        assert_eq!(evaluate(&flags, "salted", &user(&key)).variant, Some(want), "{key}");
    }
    assert!(admitted > 0 && refused > 0, "{admitted} admitted, {refused} refused");
    // A gate needs a bucketing value; without one the rule is skipped, not an error.
    let eval = evaluate(&flags, "gated", &Context::new().attr("country", "fr"));
    assert_served(&eval, "off", json!(false), Reason::Default);
}

#[test]
fn gate_and_the_rollout_behind_it_hash_independently() {
    let flags = compile_clean(json!({"flags": {"both": {
        "variants": {"off": 0, "a": 1, "b": 2},
        "environments": {"production": {
            "enabled": true,
            "rules": [{"gate": {"weight": 50000},
                       "serve": {"rollout": {"variants": [{"variant": "a", "weight": 50000}, {"variant": "b", "weight": 50000}]}}}],
            "default": {"variant": "off"}
        }}
    }}}));
    let mut served = std::collections::BTreeMap::new();
    for i in 0..400 {
        let key = format!("user-{i}");
        let eval = evaluate(&flags, "both", &user(&key));
        *served.entry(eval.variant.unwrap_or_default()).or_insert(0) += 1;
        let admitted = native_bucket("both:gate", &key) < 50_000;
        let want = match (admitted, native_bucket("both", &key) < 50_000) {
            (false, _) => "off",
            (true, true) => "a",
            (true, false) => "b",
        };
        assert_eq!(eval.variant, Some(want), "{key}");
    }
    // With one shared salt the gate would admit exactly the users of `a`, and `b` would be empty.
    assert_eq!(served.keys().copied().collect::<Vec<_>>(), ["a", "b", "off"], "{served:?}");
}

#[test]
fn empty_targeting_key_is_not_bucketed() {
    let flags = compile_clean(json!({"flags": {
        "split": {"environments": {"production": {
            "enabled": true,
            "default": {"rollout": {"variants": [{"variant": "on", "weight": 50000}, {"variant": "off", "weight": 50000}]}}
        }}},
        "fallback": {"environments": {"production": {
            "enabled": true,
            "default": {"rollout": {"bucket_by": ["targetingKey", "$random"], "variants": [{"variant": "on", "weight": 50000}, {"variant": "off", "weight": 50000}]}}
        }}},
        "gated": {"environments": {"production": {
            "enabled": true,
            "rules": [{"gate": {"weight": 100000}, "serve": {"variant": "on"}}],
            "default": {"variant": "off"}
        }}}
    }}));
    // Hashing "" would put every anonymous visitor in one bucket, so one variant for all of them.
    let eval = evaluate(&flags, "split", &user(""));
    assert_eq!(
        (eval.reason, eval.error, eval.variant),
        (Reason::Error, Some(ErrorCode::TargetingKeyMissing), Some("off"))
    );
    let eval = evaluate(&flags, "fallback", &user("").with_random(5));
    let want = if bucket("fallback", b"5", 0, 100_000) < 50_000 { "on" } else { "off" };
    assert_eq!((eval.reason, eval.variant), (Reason::Split, Some(want)));
    assert_served(&evaluate(&flags, "gated", &user("")), "off", json!(false), Reason::Default);
}

#[test]
fn gate_of_zero_admits_nobody_and_full_gate_admits_everyone_with_a_key() {
    let flags = compile_clean(json!({"flags": {
        "closed": {"environments": {"production": {
            "enabled": true,
            "rules": [{"gate": {"weight": 0}, "serve": {"variant": "on"}}],
            "default": {"variant": "off"}
        }}},
        "open": {"environments": {"production": {
            "enabled": true,
            "rules": [{"gate": {"weight": 100_000}, "serve": {"variant": "on"}}],
            "default": {"variant": "off"}
        }}}
    }}));
    for i in 0..100 {
        let ctx = user(&format!("user-{i}"));
        assert_eq!(evaluate(&flags, "closed", &ctx).variant, Some("off"));
        assert_eq!(evaluate(&flags, "open", &ctx).variant, Some("on"));
    }
    assert_eq!(evaluate(&flags, "open", &Context::new()).variant, Some("off"));
}

#[test]
fn rollout_without_a_bucketing_value_errors_with_targeting_key_missing_and_serves_off() {
    let flags = rollout_flags();
    let eval = evaluate(&flags, "split", &Context::new().attr("country", "fr"));
    assert_eq!(eval.reason, Reason::Error);
    assert_eq!(eval.error, Some(ErrorCode::TargetingKeyMissing));
    assert_eq!((eval.variant, eval.value), (Some("off"), Some(&json!("none"))));
    assert!(eval.error_message.is_some());
    // A targeting key that is not a string or number cannot be hashed either.
    let eval = evaluate(&flags, "split", &Context::new().attr("targetingKey", json!({"id": 1})));
    assert_eq!(eval.error, Some(ErrorCode::TargetingKeyMissing));
    // Inside a rule the error still names the rule that chose the rollout.
    let eval = evaluate(&flags, "in-rule", &Context::new().attr("plan", "pro"));
    assert_eq!((eval.reason, eval.error, eval.rule), (Reason::Error, Some(ErrorCode::TargetingKeyMissing), Some(0)));
    assert_eq!(eval.variant, Some("off"));
}

#[test]
fn numeric_bucketing_values_hash_as_their_decimal_text() {
    let flags = compile_clean(json!({"flags": {"by-account": {"environments": {"production": {
        "enabled": true,
        "default": {"rollout": {"bucket_by": "accountId", "variants": [{"variant": "on", "weight": 50000}, {"variant": "off", "weight": 50000}]}}
    }}}}}));
    for id in [0_u64, 7, 42, 1234, 99_999, 4_294_967_296] {
        let by_number = evaluate(&flags, "by-account", &user("x").attr("accountId", id));
        let by_text = evaluate(&flags, "by-account", &user("x").attr("accountId", id.to_string()));
        assert_eq!(by_number.variant, by_text.variant, "accountId {id}");
        let want = if bucket("by-account", id.to_string().as_bytes(), 0, 100_000) < 50_000 { "on" } else { "off" };
        assert_eq!(by_number.variant, Some(want), "accountId {id}");
    }
}

#[test]
fn random_bucketing_uses_the_callers_random_number() {
    let flags = compile_clean(json!({"flags": {
        "coin": {"environments": {"production": {
            "enabled": true,
            "default": {"rollout": {"bucket_by": "$random", "variants": [{"variant": "on", "weight": 50000}, {"variant": "off", "weight": 50000}]}}
        }}},
        "sticky-first": {"environments": {"production": {
            "enabled": true,
            "default": {"rollout": {"bucket_by": ["sessionId", "$random"], "variants": [{"variant": "on", "weight": 50000}, {"variant": "off", "weight": 50000}]}}
        }}}
    }}));
    let mut seen = [false; 2];
    for r in 0..64_u32 {
        let eval = evaluate(&flags, "coin", &user("same-user").with_random(r));
        let want = if bucket("coin", r.to_string().as_bytes(), 0, 100_000) < 50_000 { "on" } else { "off" };
        assert_eq!((eval.variant, eval.reason), (Some(want), Reason::Split), "random {r}");
        seen[usize::from(want == "on")] = true;
        // The same random number always lands in the same place: the engine adds no randomness.
        assert_eq!(evaluate(&flags, "coin", &Context::new().with_random(r)).variant, eval.variant);
    }
    assert_eq!(seen, [true, true], "one user should see both variants across random numbers");
    // `$random` ignores the targeting key: without a random number there is nothing to hash.
    let eval = evaluate(&flags, "coin", &user("someone"));
    assert_eq!((eval.reason, eval.error), (Reason::Error, Some(ErrorCode::TargetingKeyMissing)));
    // In a list of sources the first present one decides.
    for r in 0..16_u32 {
        let with_session = evaluate(&flags, "sticky-first", &Context::new().attr("sessionId", "s-1").with_random(r));
        let want = if native_bucket("sticky-first", "s-1") < 50_000 { "on" } else { "off" };
        assert_eq!(with_session.variant, Some(want));
        let without = evaluate(&flags, "sticky-first", &Context::new().with_random(r));
        let want = if bucket("sticky-first", r.to_string().as_bytes(), 0, 100_000) < 50_000 { "on" } else { "off" };
        assert_eq!(without.variant, Some(want));
    }
}

#[test]
fn a_callers_random_number_stands_in_for_random_when_the_context_has_none() {
    // Unleash's flexibleRollout with `default` stickiness, as imported: userId, sessionId, then
    // $random, behind a 100% gate.
    let flags = compile_clean(json!({"flags": {
        "anonymous-ok": {"environments": {"production": {
            "enabled": true,
            "rules": [{"gate": {"weight": 100, "total": 100, "bucket_by": ["userId", "sessionId", "$random"]}, "serve": {"variant": "on"}}],
            "default": {"variant": "off"}
        }}},
        "coin": {"environments": {"production": {
            "enabled": true,
            "default": {"rollout": {"bucket_by": "$random", "variants": [{"variant": "on", "weight": 50000}, {"variant": "off", "weight": 50000}]}}
        }}}
    }}));
    let anonymous = Context::new();
    assert_eq!(evaluate(&flags, "anonymous-ok", &anonymous).variant, Some("off"), "no random number: nobody is placed");
    assert_eq!(evaluate_with_random(&flags, "anonymous-ok", &anonymous, None).variant, Some("off"));
    let eval = evaluate_with_random(&flags, "anonymous-ok", &anonymous, Some(12_345));
    assert_eq!((eval.variant, eval.reason), (Some("on"), Reason::TargetingMatch));
    for r in [0, 1, 7, 49_999, u32::MAX] {
        // The caller's number buckets exactly as the same number carried by the context would...
        let drawn = evaluate_with_random(&flags, "coin", &anonymous, Some(r));
        assert_eq!(drawn, evaluate(&flags, "coin", &Context::new().with_random(r)), "random {r}");
        // ...and a number the context carries wins, so a caller can pin it.
        let pinned = Context::new().with_random(r);
        assert_eq!(evaluate_with_random(&flags, "coin", &pinned, Some(r.wrapping_add(1))), drawn, "random {r}");
        let mut trace = Explain::default();
        assert_eq!(evaluate_traced_with_random(&flags, "coin", &anonymous, Some(r), &mut trace), drawn);
        assert!(trace.0.iter().any(|step| step.contains("bucket")), "{trace:?}");
    }
}

#[test]
fn keys_that_break_the_key_rule_warn_at_compile_and_fail_validation() {
    let set = flag_set(json!({
        "segments": {"a#b": {"included": ["u"]}, "ok-segment": {}},
        "flags": {
            "a?b": {"environments": {"production": {"enabled": true}}},
            "..": {"environments": {"production": {"enabled": true}}},
            "new.checkout_v2-b": {"environments": {"production": {"enabled": true}}}
        }
    }));
    let (flags, diagnostics) = compile(&set, PROD);
    // Sorted: the order of a JSON object's keys depends on serde_json's features in the build.
    let mut shown: Vec<(Severity, &str)> = diagnostics.iter().map(|d| (d.severity, d.path.as_str())).collect();
    shown.sort();
    assert_eq!(
        shown,
        [
            (Severity::Warning, "flags[\"..\"]"),
            (Severity::Warning, "flags[\"a?b\"]"),
            (Severity::Warning, "segments[\"a#b\"]"),
        ],
        "{diagnostics:#?}"
    );
    let query = diagnostics.iter().find(|d| d.path == "flags[\"a?b\"]").expect("the a?b diagnostic");
    assert!(query.message.contains("'?' at position 2 is not allowed (it starts a URL's query)"));
    // Stored data keeps working: a warning breaks nothing.
    assert_served(&evaluate(&flags, "a?b", &user("u")), "on", json!(true), Reason::Static);
    assert_served(&evaluate(&flags, "..", &user("u")), "on", json!(true), Reason::Static);
    // What is about to be written is refused.
    let validated = validate(&set);
    assert_eq!(validated.len(), 3, "{validated:#?}");
    assert!(validated.iter().all(|d| d.severity == Severity::Error), "{validated:#?}");
}

#[test]
fn keys_that_could_never_be_evaluated_still_break_their_flag() {
    let (flags, diagnostics) = compile_with_diagnostics(json!({"flags": {
        "bell\u{7}": {"environments": {"production": {"enabled": true}}},
        "fine": {"environments": {"production": {"enabled": true}}}
    }}));
    assert_eq!(
        errors(&diagnostics),
        [(
            "flags[\"bell\\u0007\"]",
            "U+0007 at position 5 is not allowed (a control character): keys are ASCII letters, digits, '-', '_' and '.'"
        )]
    );
    assert_eq!(evaluate(&flags, "bell\u{7}", &user("u")).error, Some(ErrorCode::ParseError));
    assert_eq!(evaluate(&flags, "fine", &user("u")).error, None);
}

#[test]
fn diagnostic_paths_escape_invisible_and_bidirectional_characters() {
    let (_, diagnostics) = compile_with_diagnostics(json!({"flags": {
        "pay\u{202E}latot": {"environments": {"production": {"enabled": true}}}
    }}));
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    assert_eq!(diagnostics[0].path, "flags[\"pay\\u202elatot\"]");
    assert!(diagnostics[0].to_string().is_ascii(), "{}", diagnostics[0]);
}

#[test]
fn semantic_version_clauses_match_the_loose_versions_clients_send() {
    let flags = compile_clean(json!({"flags": {"modern": {"environments": {"production": {
        "enabled": true,
        "rules": [{"clauses": [{"attribute": "app", "op": "semver_gte", "values": ["v2.1"]}], "serve": {"variant": "on"}}],
        "default": {"variant": "off"}
    }}}}}));
    for (version, want) in [
        ("2.1.0", "on"),
        ("2.1", "on"),
        ("v2.1.3", "on"),
        ("3", "on"),
        ("2", "off"),
        ("v2.0.9", "off"),
        ("2.1-rc.1", "off"),
        ("02.1", "off"),
        ("version 3", "off"),
    ] {
        let eval = evaluate(&flags, "modern", &user("u").attr("app", version));
        assert_eq!(eval.variant, Some(want), "{version}");
    }
}

#[test]
fn unknown_flag_is_flag_not_found_with_no_value() {
    let flags = compile_clean(json!({"flags": {"known": {"environments": {"production": {"enabled": true}}}}}));
    let eval = evaluate(&flags, "unknown", &user("a"));
    assert_eq!(eval.reason, Reason::Error);
    assert_eq!(eval.error, Some(ErrorCode::FlagNotFound));
    assert_eq!((eval.value, eval.variant, eval.rule), (None, None, None));
    assert!(!flags.contains("unknown"));
}

#[test]
fn broken_flag_serves_off_with_parse_error_while_other_flags_keep_working() {
    let (flags, diagnostics) = compile_with_diagnostics(json!({"flags": {
        "healthy": {"environments": {"production": {
            "enabled": true,
            "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "serve": {"variant": "off"}}]
        }}},
        "checkout": {
            "variants": layouts(),
            "environments": {"production": {
                "enabled": true,
                "rules": [{"clauses": [{"attribute": "plan", "op": "eq", "values": ["pro"]}], "serve": {"variant": "gold"}}],
                "default": {"variant": "on"}
            }}
        },
        "also-healthy": {"variants": {"off": 0, "on": 1}, "environments": {"production": {"enabled": true}}}
    }}));
    assert_eq!(errors(&diagnostics).len(), 1, "{diagnostics:#?}");
    assert_eq!(flags.len(), 3, "a broken flag is kept, not dropped");
    let eval = evaluate(&flags, "checkout", &user("a").attr("plan", "pro"));
    assert_eq!(eval.reason, Reason::Error);
    assert_eq!(eval.error, Some(ErrorCode::ParseError));
    assert_eq!((eval.variant, eval.value), (Some("off"), Some(&json!("classic"))));
    let message = eval.error_message.unwrap_or_default();
    assert!(message.contains("rules[0].clauses[0].op") && message.contains("unknown operator"), "{message}");

    assert_served(
        &evaluate(&flags, "healthy", &user("a").attr("plan", "pro")),
        "off",
        json!(false),
        Reason::TargetingMatch,
    );
    assert_served(&evaluate(&flags, "healthy", &user("a")), "on", json!(true), Reason::Default);
    assert_served(&evaluate(&flags, "also-healthy", &user("a")), "on", json!(1), Reason::Static);
}

#[test]
fn broken_flag_with_a_custom_off_variant_falls_back_to_it() {
    let (flags, diagnostics) = compile_with_diagnostics(json!({"flags": {"checkout": {
        "variants": layouts(),
        "environments": {"production": {
            "enabled": true,
            "off_variant": "silver",
            "default": {"variant": "platinum"}
        }}
    }}}));
    assert_eq!(errors(&diagnostics).len(), 1, "{diagnostics:#?}");
    let eval = evaluate(&flags, "checkout", &user("a"));
    assert_eq!((eval.reason, eval.error), (Reason::Error, Some(ErrorCode::ParseError)));
    assert_eq!(eval.variant, Some("silver"));
}

#[test]
fn prerequisite_cycle_is_reported_with_paths_and_breaks_only_the_flags_involved() {
    let (flags, diagnostics) = compile_with_diagnostics(json!({"flags": {
        "a": {"environments": {"production": {"enabled": true, "prerequisites": [{"flag": "b", "variant": "on"}]}}},
        "b": {"environments": {"production": {"enabled": true, "prerequisites": [{"flag": "a", "variant": "on"}]}}},
        "downstream": {"environments": {"production": {"enabled": true, "prerequisites": [{"flag": "a", "variant": "on"}]}}},
        "independent": {"environments": {"production": {"enabled": true}}},
        "uses-independent": {"environments": {"production": {"enabled": true, "prerequisites": [{"flag": "independent", "variant": "on"}]}}}
    }}));
    let mut found = errors(&diagnostics);
    found.sort_unstable();
    let paths: Vec<&str> = found.iter().map(|(path, _)| *path).collect();
    // A flag that only leads into the cycle is broken too: evaluating it would walk the cycle.
    assert_eq!(
        paths,
        [
            "flags.a.environments.production.prerequisites",
            "flags.b.environments.production.prerequisites",
            "flags.downstream.environments.production.prerequisites",
        ]
    );
    assert!(found.iter().all(|(_, m)| m.starts_with("prerequisites form a cycle")), "{found:#?}");
    for key in ["a", "b", "downstream"] {
        let eval = evaluate(&flags, key, &user("u"));
        assert_eq!(
            (eval.reason, eval.error, eval.variant),
            (Reason::Error, Some(ErrorCode::ParseError), Some("off")),
            "{key}"
        );
    }
    assert_served(&evaluate(&flags, "independent", &user("u")), "on", json!(true), Reason::Static);
    assert_served(&evaluate(&flags, "uses-independent", &user("u")), "on", json!(true), Reason::Default);
}

/// A chain of `len` flags, each needing the next one `on`.
fn prerequisite_chain(len: usize) -> CompiledFlags {
    let mut flags = serde_json::Map::new();
    for i in 0..len {
        let prerequisites =
            if i + 1 < len { json!([{"flag": format!("f{}", i + 1), "variant": "on"}]) } else { json!([]) };
        flags.insert(
            format!("f{i}"),
            json!({"environments": {"production": {"enabled": true, "prerequisites": prerequisites}}}),
        );
    }
    compile_clean(json!({ "flags": flags }))
}

#[test]
fn prerequisite_chains_are_followed_64_deep_and_deeper_ones_are_an_error() {
    // f0 -> f1 -> ... -> f64: 64 prerequisites to follow, the most allowed.
    let flags = prerequisite_chain(65);
    assert_served(&evaluate(&flags, "f0", &user("u")), "on", json!(true), Reason::Default);
    // One more link: the flag at depth 64 would need a 65th.
    let flags = prerequisite_chain(66);
    let eval = evaluate(&flags, "f0", &user("u"));
    assert_eq!((eval.reason, eval.error, eval.variant), (Reason::Error, Some(ErrorCode::General), Some("off")));
    assert_served(&evaluate(&flags, "f1", &user("u")), "on", json!(true), Reason::Default);
}

#[test]
fn recursive_segments_are_reported_and_break_only_the_flags_that_use_them() {
    let (flags, diagnostics) = compile_with_diagnostics(json!({
        "segments": {
            "ping": {"rules": [{"clauses": [{"op": "in_segment", "values": ["pong"]}]}]},
            "pong": {"rules": [{"clauses": [{"op": "in_segment", "values": ["ping"]}]}]},
            "selfish": {"included": ["alice"], "rules": [{"clauses": [{"op": "in_segment", "values": ["selfish"]}]}]},
            "fine": {"included": ["alice"]}
        },
        "flags": {
            "uses-ping": {"environments": {"production": {
                "enabled": true,
                "rules": [{"clauses": [{"op": "in_segment", "values": ["ping"]}], "serve": {"variant": "on"}}],
                "default": {"variant": "off"}
            }}},
            "uses-selfish": {"environments": {"production": {
                "enabled": true,
                "rules": [{"clauses": [{"op": "in_segment", "values": ["fine", "selfish"]}], "serve": {"variant": "on"}}],
                "default": {"variant": "off"}
            }}},
            "uses-fine": {"environments": {"production": {
                "enabled": true,
                "rules": [{"clauses": [{"op": "in_segment", "values": ["fine"]}], "serve": {"variant": "on"}}],
                "default": {"variant": "off"}
            }}}
        }
    }));
    let found = errors(&diagnostics);
    for segment in ["ping", "pong", "selfish"] {
        let path = format!("segments.{segment}.rules");
        assert!(
            found.iter().any(|(p, m)| *p == path && m.contains("recursive")),
            "no recursion reported at {path}: {found:#?}"
        );
    }
    assert!(found.contains(&(
        "flags.uses-ping.environments.production.rules[0].clauses[0].values[0]",
        "segment \"ping\" is invalid"
    )));
    assert!(found.contains(&(
        "flags.uses-selfish.environments.production.rules[0].clauses[0].values[1]",
        "segment \"selfish\" is invalid"
    )));
    assert!(!found.iter().any(|(p, _)| p.contains("fine")), "{found:#?}");
    for key in ["uses-ping", "uses-selfish"] {
        let eval = evaluate(&flags, key, &user("alice"));
        assert_eq!(
            (eval.reason, eval.error, eval.variant),
            (Reason::Error, Some(ErrorCode::ParseError), Some("off")),
            "{key}"
        );
    }
    assert_served(&evaluate(&flags, "uses-fine", &user("alice")), "on", json!(true), Reason::TargetingMatch);
}

#[test]
fn diagnostic_path_names_the_exact_field_at_fault() {
    let (_, diagnostics) = compile_with_diagnostics(json!({"flags": {"checkout": {
        "variants": layouts(),
        "environments": {"production": {
            "enabled": true,
            "rules": [
                {"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "serve": {"variant": "gold"}},
                {"clauses": [{"attribute": "country", "op": "in", "values": ["fr"]}], "serve": {"variant": "silver"}},
                {"clauses": [{"attribute": "plan", "op": "eq", "values": ["team"]}], "serve": {"variant": "gold"}}
            ]
        }}
    }}}));
    assert_eq!(
        diagnostics,
        [Diagnostic {
            severity: Severity::Error,
            path: "flags.checkout.environments.production.rules[2].clauses[0].op".into(),
            message: "unknown operator \"eq\"".into(),
        }]
    );
    assert_eq!(
        diagnostics[0].to_string(),
        "error: flags.checkout.environments.production.rules[2].clauses[0].op: unknown operator \"eq\""
    );
}

#[test]
fn diagnostic_path_quotes_keys_that_are_not_plain_identifiers() {
    let (_, diagnostics) = compile(
        &flag_set(json!({"flags": {"new.checkout": {"environments": {"prod eu": {
            "enabled": true,
            "default": {"variant": "maybe"}
        }}}}})),
        "prod eu",
    );
    assert_eq!(
        errors(&diagnostics),
        [(
            "flags[\"new.checkout\"].environments[\"prod eu\"].default.variant",
            "unknown variant \"maybe\" (the flag has: on, off)"
        )]
    );
}

#[test]
fn every_problem_is_reported_at_once_not_just_the_first() {
    let (flags, diagnostics) = compile_with_diagnostics(json!({
        "segments": {"bad-segment": {"rules": [{"clauses": [{"attribute": "ip", "op": "cidr", "values": ["10.0.0.0/33"]}]}]}},
        "flags": {
            "checkout": {
                "variants": layouts(),
                "environments": {"production": {
                    "enabled": true,
                    "targets": {"platinum": ["alice"]},
                    "prerequisites": [{"flag": "nope", "variant": "on"}],
                    "rules": [
                        {"clauses": [{"attribute": "email", "op": "regex", "values": ["(unclosed"]}], "serve": {"variant": "gold"}},
                        {"clauses": [{"op": "in_segment", "values": ["missing"]}], "serve": {"variant": "gold"}},
                        {"clauses": [], "serve": {"rollout": {"variants": [{"variant": "gold", "weight": 60000}, {"variant": "silver", "weight": 30000}]}}}
                    ],
                    "default": {"variant": "bronze"}
                }}
            },
            "second": {"variants": {}, "environments": {"production": {"enabled": true, "off_variant": "off", "default": {"variant": "on"}}}}
        }
    }));
    let paths: Vec<&str> = errors(&diagnostics).into_iter().map(|(path, _)| path).collect();
    let base = "flags.checkout.environments.production";
    let want = [
        "segments.bad-segment.rules[0].clauses[0].values[0]".to_owned(),
        format!("{base}.targets.platinum"),
        format!("{base}.prerequisites[0].flag"),
        format!("{base}.rules[0].clauses[0].values[0]"),
        format!("{base}.rules[1].clauses[0].values[0]"),
        format!("{base}.rules[2].serve.rollout.variants"),
        format!("{base}.default.variant"),
        "flags.second.variants".to_owned(),
    ];
    for path in &want {
        assert!(paths.contains(&path.as_str()), "missing {path} in {paths:#?}");
    }
    let messages: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    assert!(messages.iter().any(|m| m.contains("weights sum to 90000, not 100000")), "{messages:#?}");
    assert!(messages.iter().any(|m| m.contains("unknown flag \"nope\"")), "{messages:#?}");
    assert!(messages.iter().any(|m| m.contains("unknown segment \"missing\"")), "{messages:#?}");
    assert_eq!(evaluate(&flags, "checkout", &user("alice")).error, Some(ErrorCode::ParseError));
}

#[test]
fn warnings_do_not_break_a_flag() {
    let (flags, diagnostics) = compile_with_diagnostics(json!({"flags": {"checkout": {
        "variants": layouts(),
        "environments": {"production": {"enabled": true, "targets": {"gold": ["alice"], "silver": ["alice"]}}}
    }}}));
    assert!(errors(&diagnostics).is_empty());
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].severity, Severity::Warning);
    assert_eq!(diagnostics[0].path, "flags.checkout.environments.production.targets.silver[0]");
    let eval = evaluate(&flags, "checkout", &user("alice"));
    assert_served(&eval, "silver", json!("silver-layout"), Reason::TargetingMatch);
}

#[test]
fn validate_covers_every_environment_not_only_one() {
    let set = flag_set(json!({"flags": {
        "checkout": {"environments": {
            "production": {"enabled": true},
            "staging": {"enabled": true, "rules": [{"clauses": [{"attribute": "plan", "op": "eq", "values": ["pro"]}], "serve": {"variant": "on"}}]}
        }},
        "search": {"environments": {"dev": {"enabled": true, "default": {"variant": "maybe"}}}}
    }}));
    let (_, production_only) = compile(&set, PROD);
    assert!(production_only.is_empty(), "{production_only:#?}");
    let all = validate(&set);
    let paths: Vec<&str> = all.iter().map(|d| d.path.as_str()).collect();
    assert!(paths.contains(&"flags.checkout.environments.staging.rules[0].clauses[0].op"), "{paths:#?}");
    assert!(paths.contains(&"flags.search.environments.dev.default.variant"), "{paths:#?}");
    assert_eq!(all.len(), 2, "each problem once, however many environments: {all:#?}");
}

#[test]
fn validate_reports_flag_and_segment_problems_even_without_environments() {
    let set = flag_set(json!({
        "segments": {"bad": {"rules": [{"clauses": [{"attribute": "v", "op": "semver_gt", "values": ["1.0.0.0"]}]}]}},
        "flags": {"empty": {"variants": {"on": null, "off": false}}}
    }));
    let paths: Vec<String> = validate(&set).into_iter().map(|d| d.path).collect();
    assert!(paths.contains(&"segments.bad.rules[0].clauses[0].values[0]".to_owned()), "{paths:#?}");
    assert!(paths.contains(&"flags.empty.variants.on".to_owned()), "{paths:#?}");
}

#[test]
fn explain_names_the_rule_and_clause_that_decided() {
    let flags = compile_clean(json!({"flags": {"checkout": {
        "variants": layouts(),
        "environments": {"production": {
            "enabled": true,
            "rules": [
                {"id": "pro-plan", "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "serve": {"variant": "gold"}},
                {"id": "france", "clauses": [{"attribute": "country", "op": "in", "values": ["fr"]}], "serve": {"variant": "silver"}}
            ],
            "default": {"variant": "on"}
        }}
    }}}));
    let mut explain = Explain::default();
    let ctx = user("u").attr("plan", "free").attr("country", "fr");
    let eval = evaluate_traced(&flags, "checkout", &ctx, &mut explain);
    // Tracing must never change the answer.
    assert_eq!(eval, evaluate(&flags, "checkout", &ctx));
    let steps = &explain.0;
    let step = |needle: &[&str]| steps.iter().any(|s| needle.iter().all(|n| s.contains(n)));
    assert!(step(&["rule[0] \"pro-plan\"", "clause[0]", "plan", "does not hold"]), "{steps:#?}");
    assert!(step(&["rule[1] \"france\"", "clause[0]", "country", "holds"]), "{steps:#?}");
    assert!(step(&["rule[1] \"france\" matched"]), "{steps:#?}");
    assert!(!step(&["no rule matched"]), "{steps:#?}");
}

#[test]
fn explain_names_the_bucket_and_the_gate_that_decided() {
    let flags = rollout_flags();
    let key = "user-7";
    let b = native_bucket("split", key);
    let mut explain = Explain::default();
    let eval = evaluate_traced(&flags, "split", &user(key), &mut explain);
    let variant = eval.variant.unwrap_or_default();
    assert!(
        explain.0.iter().any(|s| s.contains(&format!("bucket {b} of 100000"))
            && s.contains("salt \"split\"")
            && s.contains(&format!("variant \"{variant}\""))),
        "{:#?}",
        explain.0
    );

    let g = native_bucket("gated:gate", key);
    let mut explain = Explain::default();
    evaluate_traced(&flags, "gated", &user(key).attr("country", "fr"), &mut explain);
    assert!(
        explain.0.iter().any(|s| s.contains("\"half-of-france\"") && s.contains(&format!("gate bucket {g} of 100000"))),
        "{:#?}",
        explain.0
    );
}

#[test]
fn explain_names_the_prerequisite_disabled_flag_and_broken_flag() {
    let (flags, _) = prerequisite_flags();
    let mut explain = Explain::default();
    evaluate_traced(&flags, "child", &user("a").attr("country", "de"), &mut explain);
    assert!(explain.0.iter().any(|s| s.contains("prerequisite \"parent\" served off: failed")), "{:#?}", explain.0);

    let mut explain = Explain::default();
    evaluate_traced(&flags, "broken-parent", &user("a"), &mut explain);
    assert!(explain.0.iter().any(|s| s.contains("unknown operator \"eq\"")), "{:#?}", explain.0);

    let mut explain = Explain::default();
    evaluate_traced(&flags, "no-such-flag", &user("a"), &mut explain);
    assert!(explain.0.iter().any(|s| s.contains("no-such-flag") && s.contains(PROD)), "{:#?}", explain.0);
}

/// f0 needs f1 twice, f1 needs f2 twice, …: acyclic, but an unmemoized walk doubles per level.
fn doubled_chain(depth: usize) -> Value {
    let mut flags = serde_json::Map::new();
    for i in 0..depth {
        let next = format!("f{}", i + 1);
        let prerequisites = if i + 1 < depth {
            json!([{"flag": next, "variant": "on"}, {"flag": next, "variant": "on"}])
        } else {
            json!([])
        };
        flags.insert(
            format!("f{i}"),
            json!({"environments": {"production": {"enabled": true, "prerequisites": prerequisites}}}),
        );
    }
    json!({"flags": flags})
}

#[test]
fn prerequisite_graphs_too_costly_to_evaluate_are_refused_at_compile_time() {
    // 2^12 nested evaluations for f0: over the limit, so f0 (and the levels near it) are broken
    // with a diagnostic, while the cheap tail of the chain keeps working.
    let set: FlagSet = serde_json::from_value(doubled_chain(12)).unwrap();
    let (flags, diagnostics) = compile(&set, "production");
    let f0 = diagnostics
        .iter()
        .find(|d| d.path == "flags.f0.environments.production.prerequisites")
        .unwrap_or_else(|| panic!("no diagnostic for f0: {diagnostics:#?}"));
    assert!(f0.message.contains("limit 1000"), "{f0}");
    assert_eq!(evaluate(&flags, "f0", &user("u")).reason, Reason::Error);
    assert_eq!(evaluate(&flags, "f11", &user("u")).variant, Some("on"));

    // Within the limit, the work is bounded by the cost compile computed (counted, not timed).
    let flags = compile_clean(doubled_chain(8));
    let mut explain = Explain::default();
    let eval = evaluate_traced(&flags, "f0", &user("u"), &mut explain);
    assert_eq!(eval.variant, Some("on"));
    let checks = explain.0.iter().filter(|s| s.starts_with("prerequisite ")).count();
    assert!(checks < 1000, "{checks} prerequisite checks");
}

#[test]
fn nested_segments_too_costly_to_check_are_refused_at_compile_time() {
    // s0 uses s1 in two rules, s1 uses s2 in two rules, …: 2^12 membership checks for s0.
    let mut segments = serde_json::Map::new();
    for i in 0..12 {
        let rules = if i < 11 {
            let clause = json!({"op": "in_segment", "values": [format!("s{}", i + 1)]});
            json!([{"clauses": [clause.clone()]}, {"clauses": [clause]}])
        } else {
            json!([{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}]}])
        };
        segments.insert(format!("s{i}"), json!({"rules": rules}));
    }
    let set: FlagSet = serde_json::from_value(json!({
        "segments": segments,
        "flags": {
            "top": {"environments": {"production": {"enabled": true, "default": {"variant": "off"},
                "rules": [{"clauses": [{"op": "in_segment", "values": ["s0"]}], "serve": {"variant": "on"}}]}}},
            "leaf": {"environments": {"production": {"enabled": true, "default": {"variant": "off"},
                "rules": [{"clauses": [{"op": "in_segment", "values": ["s11"]}], "serve": {"variant": "on"}}]}}}
        }
    }))
    .unwrap();
    let (flags, diagnostics) = compile(&set, "production");
    assert!(
        diagnostics.iter().any(|d| d.path == "segments.s0.rules" && d.message.contains("limit 1000")),
        "{diagnostics:#?}"
    );
    assert_eq!(evaluate(&flags, "top", &user("u")).reason, Reason::Error);
    let ctx = user("u").attr("plan", "pro");
    assert_eq!(evaluate(&flags, "leaf", &ctx).variant, Some("on"));
}

fn exposed_layouts(exposure: Value) -> CompiledFlags {
    compile_clean(json!({
        "flags": {"layout": {
            "variants": layouts(),
            "environments": {"production": {
                "enabled": true,
                "targets": {"gold": ["vip"]},
                "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["free"]}], "serve": {"variant": "off"}}],
                "default": {"rollout": {"variants": [
                    {"variant": "gold", "weight": 25_000},
                    {"variant": "silver", "weight": 75_000}
                ]}},
                "exposure": exposure
            }}
        }},
        "segments": {"internal": {"included": ["alice"]}}
    }))
}

#[test]
fn exposure_holds_unexposed_users_on_the_control_variant_with_reason_split() {
    let none = exposed_layouts(json!({"weight": 0, "segments": ["internal"]}));
    let bob = evaluate(&none, "layout", &user("bob"));
    assert_served(&bob, "off", json!("classic"), Reason::Split);
    assert_eq!(bob.rule, None);
    // Canary segments are exposed whatever the weight; individual targets are never held back.
    assert!(matches!(evaluate(&none, "layout", &user("alice")).variant, Some("gold" | "silver")));
    assert_served(&evaluate(&none, "layout", &user("vip")), "gold", json!("gold-layout"), Reason::TargetingMatch);
    // A rule that serves the control variant is untouched.
    let free = user("bob").attr("plan", "free");
    assert_served(&evaluate(&none, "layout", &free), "off", json!("classic"), Reason::TargetingMatch);

    let all = exposed_layouts(json!({"weight": 100_000}));
    assert!(matches!(evaluate(&all, "layout", &user("bob")).variant, Some("gold" | "silver")));
    let mut explain = Explain::default();
    evaluate_traced(&none, "layout", &user("bob"), &mut explain);
    assert!(explain.0.iter().any(|s| s.contains("held back on the control variant")), "{:?}", explain.0);
}

#[test]
fn exposure_is_its_own_bucket_and_scales_every_non_control_variant_in_proportion() {
    let flags = exposed_layouts(json!({"weight": 20_000}));
    let (mut gold, mut silver, mut off) = (0, 0, 0);
    for i in 0..40_000 {
        let key = format!("user-{i}");
        let eval = evaluate(&flags, "layout", &user(&key));
        let exposed = native_bucket("layout:exposure", &key) < 20_000;
        match eval.variant {
            Some("off") => {
                assert!(!exposed, "{key} is below the exposure weight yet held back");
                off += 1;
            }
            Some(v) => {
                assert!(exposed, "{key} is above the exposure weight yet served {v}");
                if v == "gold" { gold += 1 } else { silver += 1 }
            }
            None => panic!("nothing served to {key}"),
        }
    }
    // 20% exposed, split 1:3 as the rollout says: about 2000 gold, 6000 silver, 32000 off.
    assert!((1_800..2_200).contains(&gold), "gold {gold}");
    assert!((5_600..6_400).contains(&silver), "silver {silver}");
    assert!((31_300..32_700).contains(&off), "off {off}");
}

#[test]
fn exposure_problems_are_reported_with_their_paths() {
    let (_, diagnostics) = compile_with_diagnostics(json!({"flags": {"f": {"environments": {"production": {
        "enabled": true,
        "exposure": {"weight": 200_000, "segments": ["nobody"]}
    }}}}}));
    assert_eq!(
        errors(&diagnostics),
        [
            ("flags.f.environments.production.exposure.weight", "200000 is more than the total 100000"),
            ("flags.f.environments.production.exposure.segments[0]", "unknown segment \"nobody\""),
        ]
    );
}
