//! Unleash's client specification, run through the importer and the native engine: every
//! `isEnabled` and `getVariant` check must give what Unleash gives.

use std::path::PathBuf;

use dimmer_engine::import::unleash::{self, DISABLED_VARIANT, ENABLED_VARIANT};
use dimmer_engine::model::ON;
use dimmer_engine::{Severity, compile, evaluate_with_random};
use serde_json::Value;

/// The specification ships in the repository (`tests/vectors/`); a missing one is a bug.
fn spec_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/vectors/unleash-client-specification/specifications");
    assert!(
        dir.join("index.json").is_file(),
        "Unleash client specification not found at {} (it ships in tests/vectors/)",
        dir.display()
    );
    dir
}

fn read_json(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What Unleash's `getVariant` returns, rebuilt from a native evaluation.
fn unleash_variant(variant: Option<&str>, value: Option<&Value>, off: Option<&str>) -> Value {
    match variant {
        Some(v) if Some(v) != off && v != ENABLED_VARIANT && v != ON => {
            serde_json::json!({"name": v, "value": value, "enabled": true, "feature_enabled": true})
        }
        Some(v) if Some(v) != off => {
            serde_json::json!({"name": DISABLED_VARIANT, "enabled": false, "feature_enabled": true})
        }
        _ => serde_json::json!({"name": DISABLED_VARIANT, "enabled": false, "feature_enabled": false}),
    }
}

#[test]
fn unleash_client_specification_passes_in_full() {
    let dir = spec_dir();
    let index: Vec<String> =
        serde_json::from_value(read_json(&dir.join("index.json"))).expect("index.json lists files");
    let (mut passed, mut failures) = (0usize, Vec::new());
    for file in &index {
        let spec = read_json(&dir.join(file));
        let imported = unleash::import_value(spec["state"].clone(), "default")
            .unwrap_or_else(|e| panic!("{file}: import failed: {e}"));
        let (flags, diagnostics) = compile(&imported.flags, "default");
        // Warnings are allowed: Unleash's UTF-8 flag names (18-utf8-flag-names.json) break
        // Dimmer's key rule and are reported, but evaluate.
        let errors: Vec<_> = diagnostics.iter().filter(|d| d.severity == Severity::Error).collect();
        assert!(errors.is_empty(), "{file}: imported flags do not compile cleanly: {errors:#?}");

        let empty = Vec::new();
        for test in spec["tests"].as_array().unwrap_or(&empty) {
            let name = test["toggleName"].as_str().unwrap_or_default();
            // Unleash's random stickiness: any number will do, the specification only uses 0% and 100%.
            let ctx = unleash::context(&test["context"]);
            let eval = evaluate_with_random(&flags, name, &ctx, Some(7));
            let enabled = eval.error.is_none() && eval.variant.is_some() && eval.variant != flags.off_variant(name);
            if Value::Bool(enabled) == test["expectedResult"] {
                passed += 1;
            } else {
                failures.push(format!("{file}: {} (isEnabled gave {enabled})", test["description"]));
            }
        }
        for test in spec["variantTests"].as_array().unwrap_or(&empty) {
            let name = test["toggleName"].as_str().unwrap_or_default();
            let ctx = unleash::context(&test["context"]);
            let eval = evaluate_with_random(&flags, name, &ctx, Some(7));
            let got = unleash_variant(eval.variant, eval.value, flags.off_variant(name));
            let want = &test["expectedResult"];
            let payload = &want["payload"];
            let want_value = if payload.is_object() {
                Some(unleash::payload_value(payload["type"].as_str(), payload["value"].as_str()))
            } else {
                None
            };
            let same = got["name"] == want["name"]
                && got["enabled"] == want["enabled"]
                && (want.get("feature_enabled").is_none() || got["feature_enabled"] == want["feature_enabled"])
                && (want_value.is_none() || got.get("value") == want_value.as_ref());
            if same {
                passed += 1;
            } else {
                failures.push(format!("{file}: {} (getVariant gave {got}, want {want})", test["description"]));
            }
        }
    }
    let total = passed + failures.len();
    println!("Unleash client specification: {passed}/{total} checks passed");
    assert!(failures.is_empty(), "{} of {total} checks failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(total, 279, "the specification should hold 279 checks");
}
