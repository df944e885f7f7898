//! Unleash's client specification through the command line, as real processes: each file's
//! state through `dimmer import unleash`, then all of its checks in one `dimmer eval --all`
//! over the list of contexts. Every `isEnabled` and `getVariant` check must give what Unleash
//! gives, the random-stickiness ones included (they need the random number `dimmer eval` draws).

use std::path::{Path, PathBuf};
use std::process::Command;

use dimmer_engine::import::unleash::{self, DISABLED_VARIANT, ENABLED_VARIANT};
use serde_json::{Value, json};

/// The specification ships in the repository (`tests/vectors/`).
fn spec_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/unleash-client-specification/specifications")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `dimmer ARGS` and returns its standard output as JSON, whatever the exit status (an
/// evaluation with reason ERROR exits 1 and is still a result to compare).
fn dimmer_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_dimmer")).args(args).output().expect("the dimmer binary runs");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "dimmer {args:?}: stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// What Unleash's `getVariant` returns, rebuilt from one printed evaluation.
fn unleash_variant(result: &Value, off: &str) -> Value {
    let variant = if result.get("errorCode").is_some() { None } else { result["variant"].as_str() };
    match variant {
        Some(v) if v != off && v != ENABLED_VARIANT && v != "on" => {
            json!({"name": v, "value": result["value"], "enabled": true, "feature_enabled": true})
        }
        Some(v) if v != off => json!({"name": DISABLED_VARIANT, "enabled": false, "feature_enabled": true}),
        _ => json!({"name": DISABLED_VARIANT, "enabled": false, "feature_enabled": false}),
    }
}

#[test]
fn unleash_client_specification_passes_through_import_and_eval() {
    let dir = spec_dir();
    let scratch = std::env::temp_dir().join(format!("dimmer-cli-{}-unleash-spec", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("temp dir");
    let index: Vec<String> =
        serde_json::from_value(read_json(&dir.join("index.json"))).expect("index.json lists files");
    let (mut enabled_passed, mut enabled_total, mut variant_passed, mut variant_total) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for file in &index {
        let spec = read_json(&dir.join(file));
        let state = scratch.join(file);
        std::fs::write(&state, spec["state"].to_string()).expect("write state");
        let imported = dimmer_json(&["import", "unleash", &state.display().to_string()]);
        let flags_file = scratch.join(format!("flags-{file}"));
        std::fs::write(&flags_file, imported.to_string()).expect("write flags");

        let empty = Vec::new();
        let checks: Vec<(&str, &Value)> = spec["tests"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|t| ("isEnabled", t))
            .chain(spec["variantTests"].as_array().unwrap_or(&empty).iter().map(|t| ("getVariant", t)))
            .collect();
        if checks.is_empty() {
            continue;
        }
        // Every flag for every check's context, in one process.
        let contexts: Vec<Value> = checks
            .iter()
            .map(|(_, t)| serde_json::to_value(unleash::context(&t["context"])).expect("a context serializes"))
            .collect();
        let results = dimmer_json(&[
            "eval",
            "--file",
            &flags_file.display().to_string(),
            "--all",
            "--context",
            &Value::Array(contexts).to_string(),
        ]);
        let results = results.as_array().expect("eval --all prints a list");

        for (i, (kind, test)) in checks.iter().enumerate() {
            let name = test["toggleName"].as_str().unwrap_or_default();
            let result = results
                .iter()
                .find(|r| r["context"] == json!(i) && r["flag"] == json!(name))
                .cloned()
                .unwrap_or_else(|| json!({"flag": name, "errorCode": "FLAG_NOT_FOUND"}));
            let off = imported["flags"][name]["environments"]["default"]["off_variant"].as_str().unwrap_or("off");
            let want = &test["expectedResult"];
            if *kind == "isEnabled" {
                enabled_total += 1;
                let enabled = result.get("errorCode").is_none() && result["variant"].as_str().is_some_and(|v| v != off);
                if json!(enabled) == *want {
                    enabled_passed += 1;
                } else {
                    failures.push(format!("{file}: {} (isEnabled gave {enabled}: {result})", test["description"]));
                }
            } else {
                variant_total += 1;
                let got = unleash_variant(&result, off);
                let payload = &want["payload"];
                let want_value = payload
                    .is_object()
                    .then(|| unleash::payload_value(payload["type"].as_str(), payload["value"].as_str()));
                let same = got["name"] == want["name"]
                    && got["enabled"] == want["enabled"]
                    && (want.get("feature_enabled").is_none() || got["feature_enabled"] == want["feature_enabled"])
                    && (want_value.is_none() || got.get("value") == want_value.as_ref());
                if same {
                    variant_passed += 1;
                } else {
                    failures.push(format!("{file}: {} (getVariant gave {got}, want {want})", test["description"]));
                }
            }
        }
    }
    println!(
        "Unleash client specification through the CLI: isEnabled {enabled_passed}/{enabled_total}, \
         getVariant {variant_passed}/{variant_total}"
    );
    assert!(failures.is_empty(), "{} checks failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!((enabled_total, variant_total), (227, 52), "the specification should hold 227 + 52 checks");
    let _ = std::fs::remove_dir_all(&scratch);
}
