//! The committed JSON Schema is the one the model generates, and a JSON flags file compiles cleanly.

use std::path::PathBuf;

use dimmer_engine::model::{Operator, flag_set_schema};
use dimmer_engine::{FlagSet, compile};
use serde_json::Value;

const REGENERATE: &str = "cargo run -p dimmer-cli -- schema > docs/flags.schema.json";

#[test]
fn committed_schema_matches_the_model() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/flags.schema.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; generate it with `{REGENERATE}`", path.display()));
    let committed: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: {e}; regenerate it with `{REGENERATE}`", path.display()));
    // Compared as JSON values: key order depends on serde_json's `preserve_order` feature.
    assert!(
        committed == flag_set_schema(),
        "{} is out of date with crates/engine/src/model.rs: regenerate it with `{REGENERATE}`",
        path.display()
    );

    // Operators are listed by name, and the catch-all for unknown names is not among them.
    let names: Vec<&str> = committed["$defs"]["Operator"]["oneOf"]
        .as_array()
        .map(|alts| alts.iter().filter_map(|alt| alt["const"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, Operator::ALL.iter().map(Operator::name).collect::<Vec<_>>());
}

#[test]
fn a_json_flags_file_compiles_without_diagnostics() {
    let set: FlagSet = serde_json::from_str(
        r#"{
          "segments": {
            "staff": {"included": ["alice"], "rules": [
              {"clauses": [{"attribute": "email", "op": "ends_with", "values": ["@dimmer.dev"], "case_insensitive": true}]}
            ]}
          },
          "flags": {
            "new-checkout": {"kind": "release", "environments": {"production": {
              "enabled": true,
              "rules": [
                {"clauses": [{"op": "in_segment", "values": ["staff"]}], "serve": {"variant": "on"}},
                {"clauses": [{"attribute": "country", "op": "in", "values": ["fr", "de"]}],
                 "serve": {"rollout": {"variants": [{"variant": "on", "weight": 25000}, {"variant": "off", "weight": 75000}]}}}
              ],
              "default": {"variant": "off"}
            }}},
            "button-copy": {"kind": "experiment", "variants": {"control": "Pay now", "short": "Pay"},
              "environments": {"production": {
                "enabled": true, "off_variant": "control",
                "prerequisites": [{"flag": "new-checkout", "variant": "on"}],
                "rules": [{"clauses": [{"attribute": "app.version", "op": "semver_gte", "values": ["2.4.0"]}],
                           "serve": {"variant": "short"}}],
                "default": {"variant": "control"}
            }}}
          }
        }"#,
    )
    .expect("the flags file parses");
    let (flags, diagnostics) = compile(&set, "production");
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    assert_eq!(flags.keys().collect::<Vec<_>>(), ["new-checkout", "button-copy"]);
}
