//! Evaluation speed: Dimmer's engine against `unleash-yggdrasil` and LaunchDarkly's evaluation
//! engine, engine against engine, the same four scenarios in one criterion run (see
//! `docs/benchmarks.md`). Each engine holds 1,000 flags and the users rotate. `dimmer` and
//! `yggdrasil-is_enabled` include the flag lookup by key; `yggdrasil` and `launchdarkly` call the
//! measured flag's precompiled rule (looked up once), which favours them.

#![allow(clippy::expect_used, reason = "a benchmark whose setup fails must stop and say why")]

mod peers;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use dimmer_engine::{CompiledFlags, Context, FlagSet, compile, evaluate};
use peers::{FLAG_KEY, FLAGS, SEGMENT_KEY, Scenario, USERS, filler_key, segment_keys, user};
use serde_json::{Value, json};

/// Dimmer's side of the comparison: a compiled flag set and prebuilt contexts.
struct DimmerBench {
    flags: CompiledFlags,
    contexts: Vec<Context>,
}

impl DimmerBench {
    fn new(scenario: Scenario) -> Self {
        let in_clause = |attribute: &str, values: Value| json!({"attribute": attribute, "op": "in", "values": values});
        let measured = match scenario {
            Scenario::Simple => json!({"enabled": true}),
            Scenario::Rules => json!({"enabled": true, "default": {"variant": "off"}, "rules": [
                {"clauses": [in_clause("country", json!(["fr", "de"])), in_clause("plan", json!(["enterprise"]))], "serve": {"variant": "on"}},
                {"clauses": [{"attribute": "email", "op": "ends_with", "values": ["@example.com"]}, in_clause("beta", json!([true]))], "serve": {"variant": "on"}},
                {"clauses": [in_clause("country", json!(["us", "ca"])), in_clause("plan", json!(["pro", "team"]))], "serve": {"variant": "on"}},
            ]}),
            Scenario::RolloutIn => json!({"enabled": true, "default": {"variant": "off"}, "rules": [
                {"clauses": [in_clause("country", json!(["us", "ca", "fr"]))],
                 "serve": {"rollout": {"variants": [{"variant": "on", "weight": 50_000}, {"variant": "off", "weight": 50_000}]}}},
            ]}),
            Scenario::Segment => json!({"enabled": true, "default": {"variant": "off"}, "rules": [
                {"clauses": [{"op": "in_segment", "values": [SEGMENT_KEY]}], "serve": {"variant": "on"}},
            ]}),
        };
        let mut flags = serde_json::Map::new();
        for i in 0..FLAGS - 1 {
            flags.insert(filler_key(i), json!({"environments": {"production": {"enabled": true}}}));
        }
        flags.insert(FLAG_KEY.to_owned(), json!({"environments": {"production": measured}}));
        let segments = json!({SEGMENT_KEY: {"included": segment_keys().collect::<Vec<_>>()}});
        let set: FlagSet =
            serde_json::from_value(json!({"flags": flags, "segments": segments})).expect("bench flag set parses");
        let (flags, diagnostics) = compile(&set, "production");
        assert!(diagnostics.is_empty(), "bench flags compile cleanly: {diagnostics:?}");
        let contexts = (0..USERS)
            .map(|i| {
                let u = user(i);
                Context::with_key(u.key)
                    .attr("country", u.country)
                    .attr("plan", u.plan)
                    .attr("email", u.email)
                    .attr("beta", u.beta)
            })
            .collect();
        Self { flags, contexts }
    }

    fn eval(&self, i: usize) -> bool {
        evaluate(&self.flags, FLAG_KEY, &self.contexts[i % USERS]).value == Some(&Value::Bool(true))
    }
}

fn engines(c: &mut Criterion) {
    for scenario in Scenario::ALL {
        let dimmer = DimmerBench::new(scenario);
        let ygg = peers::yggdrasil::YggBench::new(scenario);
        let ld = peers::launchdarkly::LdBench::new(scenario);
        peers::verify("dimmer", scenario, |i| dimmer.eval(i));
        peers::verify("yggdrasil", scenario, |i| ygg.eval(i));
        peers::verify("launchdarkly", scenario, |i| ld.eval(i));

        let mut group = c.benchmark_group(scenario.name());
        let mut i = 0usize;
        group.bench_function("dimmer", |b| {
            b.iter(|| {
                i = (i + 1) % USERS;
                black_box(dimmer.eval(black_box(i)))
            })
        });
        group.bench_function("yggdrasil", |b| {
            b.iter(|| {
                i = (i + 1) % USERS;
                black_box(ygg.eval(black_box(i)))
            })
        });
        group.bench_function("yggdrasil-is_enabled", |b| {
            b.iter(|| {
                i = (i + 1) % USERS;
                black_box(ygg.eval_engine(black_box(i)))
            })
        });
        group.bench_function("launchdarkly", |b| {
            b.iter(|| {
                i = (i + 1) % USERS;
                black_box(ld.eval(black_box(i)))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, engines);
criterion_main!(benches);
