//! Policy as code end to end: `lint` against the example policy, `serve --policy`, `stale` and
//! `refs` on a sample project against a real `dimmer serve` (its database aged by 50 days), and
//! `export` → `apply` with a dry-run diff and a refused stale write.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::serve::{Served, dimmer, scratch};

const DAY_MS: i64 = 86_400_000;

fn example_policy() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dimmer-policy.yaml").display().to_string()
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dimmer")).args(args).env_remove("DIMMER_POLICY").output().expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lint_rejects_a_badly_named_flag_and_a_flag_without_owner_naming_each_rule() {
    let dir = scratch("lint-policy");
    let file = dir.join("flags.yaml");
    std::fs::write(
        &file,
        "flags:\n  New_Checkout:\n    owner: team-pay\n    description: One-page checkout\n  search-v2:\n    description: New ranking\n  payments.refunds:\n    owner: team-pay\n    description: Self-service refunds\n",
    )
    .expect("write");
    let file = file.display().to_string();
    let policy = example_policy();
    let (code, _, err) = run(&["lint", &file, "--policy", &policy]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("{file}: error: flags.New_Checkout: \"New_Checkout\" does not match")), "{err}");
    assert!(err.contains("[key_pattern]"), "{err}");
    assert!(err.contains(&format!("{file}: error: flags.search-v2.owner: required by the policy")), "{err}");
    assert!(err.contains("[owner_required]"), "{err}");
    assert!(!err.contains("payments.refunds"), "a team prefix is allowed: {err}");

    let (code, out, _) = run(&["--json", "lint", &file, "--policy", &policy]);
    assert_eq!(code, Some(1));
    let report: Value = serde_json::from_str(&out).expect("json");
    let rules: Vec<&str> = report["problems"].as_array().unwrap().iter().filter_map(|p| p["rule"].as_str()).collect();
    assert_eq!(rules, ["key_pattern", "owner_required"]);

    // Without a policy the same file is fine (the default policy has no naming rules); a broken
    // policy is an error naming its field.
    assert_eq!(run(&["lint", &file]).0, Some(0));
    let bad = dir.join("bad-policy.yaml");
    std::fs::write(&bad, "required: [owner, colour]\n").expect("write");
    let (code, _, err) = run(&["lint", &file, "--policy", &bad.display().to_string()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("required[1]"), "{err}");
}

#[test]
fn serve_refuses_a_bad_policy_at_start_and_enforces_a_good_one_with_422() {
    let dir = scratch("serve-policy");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "naming:\n  pattern: \"([a-z\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_dimmer"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--policy")
        .arg(&bad)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("policy:") && err.contains("naming.pattern"), "{err}");

    let served = Served::start_with(&dir.join("data"), &["--policy", &example_policy()]);
    let admin = served.token.clone().expect("token");
    let (ok, _, err) = dimmer(&served.base, &admin, &["flag", "create", "New_Checkout"]);
    assert!(!ok);
    assert!(err.contains("key_pattern") && err.contains("owner_required") && err.contains("HTTP 422"), "{err}");
    served.kill();
}

/// Moves a flag's creation, last change and history `days` into the past, server stopped.
fn age(data_dir: &Path, key: &str, days: i64) {
    let url = format!("sqlite://{}", data_dir.join("dimmer.db").display());
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(async {
        use sqlx::Connection as _;
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open the database");
        let shift = days * DAY_MS;
        sqlx::query("UPDATE flags SET created_at = created_at - ?, updated_at = updated_at - ? WHERE key = ?")
            .bind(shift)
            .bind(shift)
            .bind(key)
            .execute(&mut conn)
            .await
            .expect("age the flag");
        sqlx::query("UPDATE audit SET at = at - ? WHERE flag = ?")
            .bind(shift)
            .bind(key)
            .execute(&mut conn)
            .await
            .expect("age its history");
        // The row keeps its history facts (with their times) since migration 0005: forget them,
        // as for a flag written before it, so that they are replayed from the aged history.
        sqlx::query("UPDATE flags SET facts = NULL WHERE key = ?")
            .bind(key)
            .execute(&mut conn)
            .await
            .expect("forget its kept facts");
    });
}

#[test]
fn stale_and_refs_report_on_a_sample_project_against_a_real_server() {
    let dir = scratch("stale-refs");
    let data = dir.join("data");
    let served = Served::start(&data);
    let admin = served.token.clone().expect("token");
    let ok = |args: &[&str]| {
        let (ok, out, err) = dimmer(&served.base, &admin, args);
        assert!(ok, "{args:?}: {err}");
        out
    };
    ok(&["flag", "create", "checkout", "--owner", "team-pay"]);
    ok(&["flag", "create", "old-banner", "--owner", "team-web"]);
    ok(&["flag", "archive", "old-banner"]);
    ok(&["flag", "create", "dark-mode", "--owner", "team-ui"]);
    ok(&["toggle", "dark-mode", "--env", "staging", "on"]);
    served.kill();
    age(&data, "dark-mode", 50);
    let served = Served::start(&data);
    let base = served.base.clone();
    let remote = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dimmer"))
            .args(["--server", &base, "--token", &admin])
            .args(args)
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // stale: the reason and the owner; a failing exit only when asked.
    let (code, out, err) = remote(&["stale"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("dark-mode") && out.contains("team-ui") && out.contains("past_lifetime"), "{out}");
    assert!(out.contains("released_untouched"), "{out}");
    assert!(!out.contains("checkout"), "{out}");
    assert_eq!(remote(&["stale", "--fail-on", "stale"]).0, Some(1));
    let (_, out, _) = remote(&["--json", "stale"]);
    let stale: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(stale["stale"][0]["key"], "dark-mode");

    // A sample project: references in code, one in an ignored directory.
    let project = dir.join("project");
    std::fs::create_dir_all(project.join("src")).expect("mkdir");
    std::fs::create_dir_all(project.join("build")).expect("mkdir");
    std::fs::write(project.join(".gitignore"), "build/\n").expect("write");
    std::fs::write(
        project.join("src/checkout.rs"),
        "fn render(client: &Client) {\n    if client.bool_value(\"checkout\", false) {}\n    if client.bool_value(\"chekout\", false) {}\n}\n",
    )
    .expect("write");
    std::fs::write(
        project.join("src/app.ts"),
        "const banner = client.getBooleanValue('old-banner', false);\nconst theme = flags.isEnabled(`dark-mode`);\nlog(\"not-a-flag\");\n",
    )
    .expect("write");
    std::fs::write(project.join("build/generated.js"), "client.isEnabled('ghost-flag');\n").expect("write");
    let project_arg = project.display().to_string();
    let (code, out, err) = remote(&["refs", &project_arg]);
    assert_eq!(code, Some(0), "{err}");
    for expected in [
        "src/checkout.rs:3: unknown flag \"chekout\"",
        "src/app.ts:1: archived flag \"old-banner\" is still referenced",
        "src/app.ts:2: stale flag \"dark-mode\" (owner team-ui)",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("ghost-flag") && !out.contains("not-a-flag"), "{out}");
    assert_eq!(remote(&["refs", &project_arg, "--fail-on", "unknown"]).0, Some(1));
    assert_eq!(remote(&["refs", &project_arg, "--fail-on", "archived,stale"]).0, Some(1));
    let (_, out, _) = remote(&["--json", "refs", &project_arg]);
    let refs: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(refs["findings"].as_array().map(Vec::len), Some(3), "{refs}");
    assert_eq!(refs["references"][0]["file"], "src/app.ts");

    // Against a flags file: only unknown keys can be told.
    let flags_file = dir.join("flags.yaml");
    std::fs::write(&flags_file, "flags:\n  checkout: {}\n  old-banner: {}\n  dark-mode: {}\n").expect("write");
    let (code, out, _) =
        remote(&["refs", &project_arg, "--flags", &flags_file.display().to_string(), "--fail-on", "unknown"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("chekout") && !out.contains("archived flag"), "{out}");
    let (code, _, _) =
        remote(&["refs", &project_arg, "--flags", &flags_file.display().to_string(), "--fail-on", "archived,stale"]);
    assert_eq!(code, Some(0));
    served.kill();
}

#[test]
fn export_then_apply_round_trips_with_a_dry_run_diff_and_refuses_a_stale_version() {
    let dir = scratch("export-apply");
    let served = Served::start(&dir.join("data"));
    let admin = served.token.clone().expect("token");
    let remote = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dimmer"))
            .args(["--server", &served.base, "--token", &admin])
            .args(args)
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(remote(&["flag", "create", "checkout", "--owner", "team-pay"]).0, Some(0));
    assert_eq!(remote(&["toggle", "checkout", "--env", "staging", "on"]).0, Some(0));

    let (code, exported, err) = remote(&["export", "--env", "production"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(exported.contains("checkout:") && !exported.contains("staging"), "{exported}");
    let file = dir.join("flags.yaml");
    let edited = exported.replace("owner: team-pay", "owner: team-payments\n    description: One-page checkout");
    assert_ne!(edited, exported);
    std::fs::write(&file, &edited).expect("write");
    let file_arg = file.display().to_string();

    // Dry run: the diff, nothing written.
    let (code, out, err) = remote(&["apply", "-f", &file_arg, "--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("~ update flag checkout (version 2)"), "{out}");
    assert!(out.contains("owner: \"team-pay\" → \"team-payments\""), "{out}");
    let (_, out, _) = remote(&["--json", "flag", "get", "checkout"]);
    let flag: Value = serde_json::from_str(&out).expect("json");
    assert_eq!((flag["version"].as_i64(), flag["owner"].as_str()), (Some(2), Some("team-pay")));

    // A plan reviewed, then the flag changes underneath: the write is refused, nothing lost.
    let (_, plan, _) = remote(&["--json", "apply", "-f", &file_arg, "--dry-run"]);
    let plan_file = dir.join("plan.json");
    std::fs::write(&plan_file, &plan).expect("write");
    assert_eq!(remote(&["toggle", "checkout", "--env", "development", "on"]).0, Some(0));
    let (code, _, err) = remote(&["apply", "--plan", &plan_file.display().to_string()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("refused: flag checkout") && err.contains("version 2 is stale"), "{err}");
    let (_, out, _) = remote(&["--json", "flag", "get", "checkout"]);
    let flag: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(flag["owner"], "team-pay");

    // Applied from the file: the other environments are kept, and the export matches the file.
    let (code, out, err) = remote(&["apply", "-f", &file_arg, "--reason", "flags as code"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (_, out, _) = remote(&["--json", "flag", "get", "checkout"]);
    let flag: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(flag["owner"], "team-payments");
    assert_eq!(flag["environments"]["staging"]["enabled"], true);
    assert_eq!(flag["environments"]["development"]["enabled"], true);
    let (_, again, _) = remote(&["export", "--env", "production"]);
    let yaml = |text: &str| serde_yaml_ng::from_str::<Value>(text).expect("yaml");
    assert_eq!(yaml(&again), yaml(&edited));
    let (code, out, _) = remote(&["apply", "-f", &file_arg, "--dry-run"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("no changes"), "{out}");

    // New keys that break the key rule are named, and nothing is written, not even the rest.
    let bad_file = dir.join("bad-keys.yaml");
    std::fs::write(
        &bad_file,
        "flags:\n  \"a?b\": {}\n  fine-new-flag: {}\nsegments:\n  \"beta testers\": {}\n  ok-segment: {}\n",
    )
    .expect("write");
    let file_arg = bad_file.display().to_string();
    let (code, _, err) = remote(&["apply", "-f", &file_arg]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("error: flags[\"a?b\"]: '?' at position 2 is not allowed"), "{err}");
    assert!(err.contains("error: segments[\"beta testers\"]: U+0020 at position 5"), "{err}");
    assert!(err.contains("2 new key(s) break the key rule"), "{err}");
    let (_, out, _) = remote(&["export"]);
    assert!(!out.contains("ok-segment") && !out.contains("fine-new-flag"), "{out}");
    served.kill();
}

#[test]
fn out_of_the_box_serve_enforces_the_recommended_policy_and_a_file_relaxes_it() {
    let dir = scratch("default-policy");
    let served = Served::start_out_of_the_box(&dir.join("data"));
    let admin = served.token.clone().expect("token");
    let client = |args: &[&str]| dimmer(&served.base, &admin, args);
    // The first flag a newcomer creates meets the policy: each rule named.
    let (ok, _, err) = client(&["flag", "create", "New_Checkout"]);
    assert!(!ok);
    for rule in ["key_pattern", "owner_required", "description_required"] {
        assert!(err.contains(rule), "{rule}: {err}");
    }
    let (ok, _, err) =
        client(&["flag", "create", "new-checkout", "--owner", "team-pay", "--description", "The new checkout"]);
    assert!(ok, "{err}");
    // Switched on by hand outside production; in production only through a guarded plan.
    let (ok, _, err) = client(&["toggle", "new-checkout", "--env", "staging", "on"]);
    assert!(ok, "{err}");
    let (ok, _, err) = client(&["toggle", "new-checkout", "--env", "production", "on"]);
    assert!(!ok && err.contains("plan_required_above"), "{err}");
    // The server says which policy it enforces: the default one, with those rules.
    let http = reqwest::blocking::Client::new();
    let policy: Value = http
        .get(format!("{}/api/v1/policy", served.base))
        .bearer_auth(&admin)
        .send()
        .expect("policy")
        .json()
        .expect("json");
    assert_eq!(policy["default"], true, "{policy}");
    assert_eq!(policy["policy"]["required"], serde_json::json!(["owner", "description"]), "{policy}");
    served.kill();

    // A policy file replaces it whole: `version: 1` alone relaxes every rule.
    let relaxed = dir.join("relaxed.yaml");
    std::fs::write(&relaxed, "version: 1\n").expect("write");
    let served = Served::start_with(&dir.join("data2"), &["--policy", relaxed.to_str().expect("utf-8")]);
    let admin = served.token.clone().expect("token");
    let (ok, _, err) = dimmer(&served.base, &admin, &["flag", "create", "quick_test"]);
    assert!(ok, "{err}");
    let (ok, _, err) = dimmer(&served.base, &admin, &["toggle", "quick_test", "--env", "production", "on"]);
    assert!(ok, "{err}");
    served.kill();
}
