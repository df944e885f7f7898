//! The offline commands end to end (eval, lint, import, schema): real process, real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn dimmer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dimmer")).args(args).output().expect("the dimmer binary runs")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A scratch directory unique to one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dimmer-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}

const FLAGS: &str = r#"
flags:
  checkout:
    environments:
      production:
        enabled: true
        targets: {on: [vip-1]}
        rules:
          - id: french-pros
            clauses:
              - {attribute: country, op: in, values: [fr]}
              - {attribute: plan, op: in, values: [pro]}
            serve: {variant: on}
        default: {rollout: {variants: [{variant: on, weight: 0}, {variant: off, weight: 100000}]}}
"#;

#[test]
fn eval_prints_flag_value_variant_and_reason() {
    let dir = scratch("eval");
    let file = write(&dir, "flags.yaml", FLAGS);
    let out = dimmer(&[
        "eval",
        "--file",
        &file,
        "--flag",
        "checkout",
        "--context",
        r#"{"targetingKey":"u1","country":"fr","plan":"pro"}"#,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = stdout_json(&out);
    assert_eq!(
        json,
        serde_json::json!({"flag": "checkout", "value": true, "variant": "on", "reason": "TARGETING_MATCH"})
    );
}

#[test]
fn eval_explain_names_the_rule_and_clauses_that_decided() {
    let dir = scratch("explain");
    let file = write(&dir, "flags.yaml", FLAGS);
    let out = dimmer(&[
        "eval",
        "--file",
        &file,
        "--flag",
        "checkout",
        "--context",
        r#"{"targetingKey":"u1","country":"fr","plan":"free"}"#,
        "--explain",
    ]);
    let json = stdout_json(&out);
    assert_eq!(json["reason"], "SPLIT");
    assert_eq!(json["variant"], "off");
    let steps: Vec<String> = serde_json::from_value(json["explanation"].clone()).unwrap();
    assert!(
        steps.iter().any(|s| s.contains("french-pros") && s.contains("clause[1]") && s.contains("does not hold")),
        "{steps:#?}"
    );
    assert!(steps.iter().any(|s| s.starts_with("bucket ") && s.contains("\"off\"")), "{steps:#?}");

    let out = dimmer(&[
        "eval",
        "--file",
        &file,
        "--flag",
        "checkout",
        "--context",
        r#"{"targetingKey":"vip-1"}"#,
        "--explain",
    ]);
    let json = stdout_json(&out);
    assert_eq!(json["reason"], "TARGETING_MATCH");
    assert!(json["explanation"][0].as_str().unwrap().contains("individually targeted"));
}

#[test]
fn eval_needs_env_only_when_the_file_has_several() {
    let dir = scratch("envs");
    let two = FLAGS.replace("      production:", "      staging: {enabled: false}\n      production:");
    let file = write(&dir, "flags.yaml", &two);
    let out = dimmer(&["eval", "--file", &file, "--flag", "checkout"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("choose one with --env"));
    let out = dimmer(&["eval", "--file", &file, "--flag", "checkout", "--env", "staging"]);
    assert_eq!(stdout_json(&out)["reason"], "DISABLED");
    let out = dimmer(&["eval", "--file", &file, "--flag", "checkout", "--env", "nowhere"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown environment \"nowhere\""));
}

#[test]
fn eval_of_an_unknown_flag_says_so_and_fails() {
    let dir = scratch("unknown");
    let file = write(&dir, "flags.yaml", FLAGS);
    let out = dimmer(&["eval", "--file", &file, "--flag", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout_json(&out)["errorCode"], "FLAG_NOT_FOUND");
}

#[test]
fn eval_takes_several_flags_and_contexts_in_one_run() {
    let dir = scratch("batch");
    let file = write(
        &dir,
        "flags.yaml",
        &format!("{FLAGS}  plain:\n    environments:\n      production: {{enabled: true}}\n"),
    );
    let contexts = r#"[{"targetingKey":"vip-1"}, {"targetingKey":"u2","country":"fr","plan":"pro"}]"#;
    let out = dimmer(&["eval", "--file", &file, "--flag", "checkout", "--flag", "nope", "--context", contexts]);
    assert_eq!(out.status.code(), Some(1), "an unknown flag is an error, in a list as alone");
    let got: Vec<(Value, Value, Value)> = stdout_json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["context"].clone(), r["flag"].clone(), r["reason"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (json!(0), json!("checkout"), json!("TARGETING_MATCH")),
            (json!(0), json!("nope"), json!("ERROR")),
            (json!(1), json!("checkout"), json!("TARGETING_MATCH")),
            (json!(1), json!("nope"), json!("ERROR")),
        ]
    );
    // --all: every flag in file order, as a list even for one context.
    let out = dimmer(&["eval", "--file", &file, "--all", "--context", r#"{"targetingKey":"vip-1"}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout_json(&out),
        json!([
            {"flag": "checkout", "value": true, "variant": "on", "reason": "TARGETING_MATCH"},
            {"flag": "plain", "value": true, "variant": "on", "reason": "STATIC"}
        ])
    );
    let out = dimmer(&["eval", "--file", &file, "--all", "--context", r#"[{}, 3]"#]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--context[1]: expected a JSON object, found a number"));
    let out = dimmer(&["eval", "--file", &file]);
    assert!(!out.status.success(), "a flag or --all is required");
}

#[test]
fn eval_draws_a_random_number_per_evaluation_unless_one_is_given() {
    let dir = scratch("random");
    let file = write(
        &dir,
        "flags.yaml",
        "flags:\n  coin:\n    environments:\n      production:\n        enabled: true\n        default: {rollout: {bucket_by: $random, variants: [{variant: on, weight: 50000}, {variant: off, weight: 50000}]}}\n",
    );
    let anonymous = json!(vec![json!({}); 400]).to_string();
    let heads = |extra: &[&str]| {
        let mut args = vec!["eval", "--file", file.as_str(), "--flag", "coin", "--context", anonymous.as_str()];
        args.extend_from_slice(extra);
        let out = dimmer(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        stdout_json(&out).as_array().unwrap().iter().filter(|r| r["variant"] == "on").count()
    };
    // Binomial(400, 0.5): 200 ± 10; 120..280 is 8 standard deviations.
    let drawn = heads(&[]);
    assert!((120..=280).contains(&drawn), "{drawn} of 400 anonymous evaluations got on");
    let pinned = heads(&["--random", "7"]);
    assert!(pinned == 0 || pinned == 400, "--random pins every evaluation: {pinned}");
}

#[test]
fn keys_that_break_the_key_rule_fail_lint_and_still_evaluate() {
    let dir = scratch("keys");
    let file = write(
        &dir,
        "flags.yaml",
        "flags:\n  \"a?b\":\n    environments:\n      production: {enabled: true}\nsegments:\n  \"..\": {included: [u]}\n",
    );
    let out = dimmer(&["lint", &file]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "error: flags[\"a?b\"]: '?' at position 2 is not allowed (it starts a URL's query)",
        "error: segments[\"..\"]: a key cannot start or end with '.'",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    let out = dimmer(&["eval", "--file", &file, "--flag", "a?b"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout_json(&out)["value"], true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: flags[\"a?b\"]"));
}

#[test]
fn lint_lists_every_problem_with_its_path_and_fails() {
    let dir = scratch("lint");
    let bad = FLAGS
        .replace("op: in, values: [fr]", "op: eq, values: [fr]")
        .replace("serve: {variant: on}", "serve: {variant: maybe}")
        .replace("weight: 100000", "weight: 90000");
    let file = write(&dir, "flags.yaml", &bad);
    let out = dimmer(&["lint", &file]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "flags.checkout.environments.production.rules[0].clauses[0].op: unknown operator \"eq\"",
        "flags.checkout.environments.production.rules[0].serve.variant: unknown variant \"maybe\"",
        "flags.checkout.environments.production.default.rollout.variants: weights sum to 90000, not 100000",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    let out = dimmer(&["lint", &write(&dir, "ok.yaml", FLAGS)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn malformed_files_get_a_path_and_a_reason_never_a_panic() {
    let dir = scratch("malformed");
    let cases = [
        (
            "a.yaml",
            "flags:\n  x:\n    environments:\n      prod:\n        rules: 5\n",
            "flags.x.environments.prod.rules: invalid type",
        ),
        ("b.json", r#"{"flags": {"x": {"kind": "nope"}}}"#, "flags.x.kind: unknown variant `nope`"),
        ("c.json", r#"{"flags": {"x": {"environmnts": {}}}}"#, "unknown field `environmnts`"),
        ("d.json", "{not json", "key must be a string"),
        ("e.yaml", "\u{0}\u{1}binary", ""),
    ];
    for (name, text, expected) in cases {
        let file = write(&dir, name, text);
        for args in [vec!["lint", file.as_str()], vec!["eval", "--file", file.as_str(), "--flag", "x"]] {
            let out = dimmer(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{name} {args:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{name}: {stderr}");
            assert!(stderr.contains(expected), "{name}: expected {expected:?} in {stderr}");
        }
    }
}

#[test]
fn import_unleash_writes_native_flags_that_eval_reads() {
    let dir = scratch("import");
    let payload = r#"{"version": 1, "features": [
        {"name": "rollout.half", "enabled": true, "strategies": [
            {"name": "flexibleRollout", "parameters": {"rollout": "50", "stickiness": "userId", "groupId": "g"},
             "constraints": [{"contextName": "country", "operator": "IN", "values": ["fr"]}]}]}
    ]}"#;
    let input = write(&dir, "unleash.json", payload);
    let out = dimmer(&["import", "unleash", &input]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let native = write(&dir, "native.json", &String::from_utf8_lossy(&out.stdout));
    // The exact buckets are pinned by the conformance suite; here, the imported gate behaves as a 50% gate.
    let contexts: Vec<Value> = (0..200).map(|user| json!({"userId": user.to_string(), "country": "fr"})).collect();
    let out = dimmer(&["eval", "--file", &native, "--flag", "rollout.half", "--context", &json!(contexts).to_string()]);
    let results = stdout_json(&out);
    let on = results.as_array().unwrap().iter().filter(|r| r["value"] == true).count();
    assert!((60..140).contains(&on), "about half of 200 users should be on, got {on}");
    let out = dimmer(&["import", "unleash", &write(&dir, "not.json", r#"{"hello": 1}"#)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a `features` or `events` field"));
}

#[test]
fn schema_is_a_json_schema_for_flag_files() {
    let out = dimmer(&["schema"]);
    assert!(out.status.success());
    let schema = stdout_json(&out);
    assert!(schema["$schema"].as_str().unwrap_or_default().contains("json-schema.org"));
    assert!(schema.to_string().contains("\"kill-switch\""));
}
