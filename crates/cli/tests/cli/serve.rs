//! `dimmer serve` as a real process: it prints where it listens and the admin token, the client
//! verbs talk to it, and `kill -9` in the middle of writes loses no acknowledged change.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

/// A `dimmer serve` process on a data directory, with its address and (first start) token.
pub(crate) struct Served {
    child: Child,
    pub(crate) base: String,
    pub(crate) token: Option<String>,
}

impl Served {
    /// Starts with a policy file that has no rule (tests of other things create flags without
    /// owners and switch them on in production).
    pub(crate) fn start(data_dir: &Path) -> Served {
        Served::start_with(data_dir, &[])
    }

    /// Starts with more arguments for `dimmer serve` (e.g. `--policy FILE`); without
    /// `--policy`, with a policy file that has no rule.
    pub(crate) fn start_with(data_dir: &Path, extra: &[&str]) -> Served {
        if extra.contains(&"--policy") {
            return Served::spawn(data_dir, extra);
        }
        let permissive = permissive_policy(data_dir);
        let mut args = vec!["--policy", permissive.to_str().expect("a UTF-8 path")];
        args.extend_from_slice(extra);
        Served::spawn(data_dir, &args)
    }

    /// Starts as a newcomer would: no policy file, so the recommended policy applies.
    pub(crate) fn start_out_of_the_box(data_dir: &Path) -> Served {
        Served::spawn(data_dir, &[])
    }

    fn spawn(data_dir: &Path, extra: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dimmer"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env_remove("DIMMER_POLICY")
            .env_remove("DIMMER_ADMIN_TOKEN")
            .env_remove("DIMMER_DATABASE_URL")
            .env_remove("DIMMER_CORS_ORIGINS")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dimmer serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("a first line").expect("readable");
        let base = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_owned();
        // The token line follows at once on a first start; later starts print none.
        let saved = data_dir.join(".admin-token");
        let token = if saved.exists() {
            None
        } else {
            let line = lines.next().expect("a token line").expect("readable");
            let token = line.rsplit(' ').next().expect("token").to_owned();
            std::fs::write(&saved, &token).expect("save token");
            Some(token)
        };
        // Then the web console's address, on every start.
        let console = lines.next().expect("a console line").expect("readable");
        assert!(console.starts_with(&format!("web console: {base}/ ")), "console address: {console:?}");
        std::thread::spawn(move || for _ in lines {});
        Served { child, base, token }
    }

    pub(crate) fn kill(mut self) {
        // SIGKILL: no shutdown path runs.
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }
}

pub(crate) fn scratch(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("dimmer-serve-{}-{name}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A policy file that relaxes every rule (`version: 1` and nothing else), beside `data_dir`.
pub(crate) fn permissive_policy(data_dir: &Path) -> std::path::PathBuf {
    let file = data_dir.with_extension("permissive-policy.yaml");
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).expect("policy dir");
    }
    std::fs::write(&file, "# No naming, required-field or release-plan rule.\nversion: 1\n").expect("write the policy");
    file
}

pub(crate) fn dimmer(base: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dimmer"))
        .args(["--server", base, "--token", token])
        .args(args)
        .output()
        .expect("dimmer runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_prints_its_address_and_token_and_the_client_verbs_work() {
    let dir = scratch("verbs");
    let served = Served::start(&dir);
    let admin = served.token.clone().expect("a first start prints the admin token");
    assert!(admin.starts_with("dmr_"));

    let (ok, out, err) = dimmer(
        &served.base,
        &admin,
        &[
            "flag",
            "create",
            "new-checkout",
            "--kind",
            "release",
            "--owner",
            "team-pay",
            "--description",
            "New checkout",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("created new-checkout"), "{out}");
    let (ok, out, err) =
        dimmer(&served.base, &admin, &["--json", "token", "create", "web", "--scope", "sdk", "--env", "production"]);
    assert!(ok, "{err}");
    let sdk: Value = serde_json::from_str(&out).expect("json");
    let sdk = sdk["token"].as_str().expect("token").to_owned();
    let (ok, _, err) =
        dimmer(&served.base, &admin, &["toggle", "new-checkout", "--env", "production", "on", "--reason", "launch"]);
    assert!(ok, "{err}");
    let (ok, out, _) = dimmer(&served.base, &admin, &["flag", "list"]);
    assert!(ok && out.contains("new-checkout") && out.contains("production"), "{out}");
    let (ok, out, _) = dimmer(&served.base, &admin, &["--json", "audit", "--flag", "new-checkout"]);
    assert!(ok);
    let audit: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(audit["entries"][0]["reason"], "launch", "{audit}");

    // The sdk token evaluates, and is refused on admin routes.
    let (ok, _, err) = dimmer(&served.base, &sdk, &["flag", "list"]);
    assert!(!ok && err.contains("forbidden"), "{err}");
    let (ok, out, _) = dimmer(&served.base, &admin, &["token", "list"]);
    assert!(ok && out.contains("web") && !out.contains(&sdk), "{out}");
    served.kill();
}

#[test]
fn a_client_token_from_the_cli_evaluates_from_a_page_of_a_cors_origin_and_nothing_else() {
    let dir = scratch("client");
    let page = "http://127.0.0.1:5173";
    let served = Served::start_with(&dir, &["--cors-origin", page]);
    let admin = served.token.clone().expect("a first start prints the admin token");
    let (ok, out, err) =
        dimmer(&served.base, &admin, &["--json", "token", "create", "web", "--scope", "client", "--env", "production"]);
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(created["scope"], "client", "{created}");
    let client = created["token"].as_str().expect("token").to_owned();

    let http = reqwest::blocking::Client::new();
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{}/ofrep/v1/evaluate/flags", served.base))
        .header("origin", page)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .expect("preflight");
    assert_eq!(preflight.status(), reqwest::StatusCode::NO_CONTENT);
    assert_eq!(preflight.headers()["access-control-allow-origin"], page);
    let bulk = http
        .post(format!("{}/ofrep/v1/evaluate/flags", served.base))
        .header("origin", page)
        .bearer_auth(&client)
        .json(&json!({"context": {"targetingKey": "u1"}}))
        .send()
        .expect("bulk");
    assert_eq!(bulk.status(), reqwest::StatusCode::OK);
    assert_eq!(bulk.headers()["access-control-expose-headers"], "ETag");
    // The admin API is not for client tokens, and not for pages.
    let (ok, _, err) = dimmer(&served.base, &client, &["flag", "list"]);
    assert!(!ok && err.contains("forbidden"), "{err}");

    // A token with origins of its own: its pages (and the server's) may use it, no other.
    let shop = "https://shop.example";
    let (ok, out, err) = dimmer(
        &served.base,
        &admin,
        &[
            "--json",
            "token",
            "create",
            "shop",
            "--scope",
            "client",
            "--env",
            "production",
            "--origin",
            "HTTPS://Shop.example:443",
        ],
    );
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(created["origins"], json!([shop]), "normalised: {created}");
    let shop_token = created["token"].as_str().expect("token").to_owned();
    let from = |origin: &str| {
        http.post(format!("{}/ofrep/v1/evaluate/flags", served.base))
            .header("origin", origin)
            .bearer_auth(&shop_token)
            .json(&json!({"context": {"targetingKey": "u1"}}))
            .send()
            .expect("bulk")
    };
    let ok_shop = from(shop);
    assert_eq!(ok_shop.status(), reqwest::StatusCode::OK);
    assert_eq!(ok_shop.headers()["access-control-allow-origin"], shop);
    assert_eq!(from(page).status(), reqwest::StatusCode::OK, "the server-wide origin too");
    let refused = from("https://evil.example");
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    let (ok, out, _) = dimmer(&served.base, &admin, &["token", "list"]);
    assert!(ok && out.contains("ORIGINS") && out.contains(shop), "{out}");
    let (ok, _, err) = dimmer(
        &served.base,
        &admin,
        &["token", "create", "bad", "--scope", "client", "--env", "production", "--origin", "https://shop.example/app"],
    );
    assert!(!ok && err.contains("origins[0]"), "{err}");
    served.kill();

    // A bad origin stops the server at start, naming the setting.
    let out = Command::new(env!("CARGO_BIN_EXE_dimmer"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .args(["--cors-origin", "app.example.com/"])
        .env_remove("DIMMER_CORS_ORIGINS")
        .output()
        .expect("dimmer serve runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cors_origins"), "{err}");
}

#[test]
fn release_verbs_start_a_plan_dial_down_kill_and_restore() {
    let dir = scratch("release");
    let served = Served::start(&dir);
    let admin = served.token.clone().expect("token");
    let run = |args: &[&str]| {
        let (ok, out, err) = dimmer(&served.base, &admin, args);
        assert!(ok, "dimmer {args:?} failed: {err}");
        out
    };
    run(&["flag", "create", "new-checkout", "--owner", "team-pay"]);
    let out = run(&["template", "list"]);
    assert!(out.contains("standard") && out.contains("internal@1h"), "{out}");
    let out = run(&[
        "plan",
        "start",
        "new-checkout",
        "--env",
        "production",
        "--stages",
        "internal,5%,25%,100%",
        "--dwell",
        "30m",
    ]);
    assert!(out.contains("running at stage 1/4 (internal)"), "{out}");
    let out = run(&["plan", "advance", "new-checkout", "--env", "production", "--reason", "canary fine"]);
    assert!(out.contains("exposure 5%") && out.contains("stage 2"), "{out}");
    let out = run(&["dial-down", "new-checkout", "--env", "production", "--to", "1", "--reason", "p99 up"]);
    assert!(out.contains("exposure 1%") && out.contains("plan paused"), "{out}");
    let out = run(&["kill", "new-checkout", "--env", "production", "--reason", "errors"]);
    assert!(out.contains("killed new-checkout in production: off"), "{out}");
    let out = run(&["kill", "new-checkout", "--env", "production", "--reason", "errors"]);
    assert!(out.contains("(nothing to change)"), "{out}");
    let out = run(&["restore", "new-checkout", "--env", "production"]);
    assert!(out.contains("exposure 5%"), "{out}");
    let out = run(&["plan", "status", "new-checkout", "--env", "production"]);
    assert!(out.contains("paused at stage 2/4 (internal + 5%)"), "{out}");
    let status: Value =
        serde_json::from_str(&run(&["--json", "plan", "status", "new-checkout", "--env", "production"])).expect("json");
    assert_eq!(status["stages"].as_array().map(Vec::len), Some(4));

    // A reason is required for the fast path; clap says so before anything is sent.
    let (ok, _, err) = dimmer(&served.base, &admin, &["kill", "new-checkout", "--env", "production"]);
    assert!(!ok && err.contains("--reason"), "{err}");
    let (ok, _, err) =
        dimmer(&served.base, &admin, &["plan", "start", "new-checkout", "--env", "staging", "--stages", "5%,1%"]);
    assert!(!ok && err.contains("stages[1]"), "{err}");
    let audit: Value = serde_json::from_str(&run(&["--json", "audit", "--flag", "new-checkout"])).expect("json");
    let actions: Vec<&str> =
        audit["entries"].as_array().expect("entries").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        ["release.restore", "release.kill", "release.dial_down", "plan.advance", "plan.start", "flag.create"]
    );
    served.kill();
}

#[test]
fn kill_9_in_the_middle_of_writes_loses_no_acknowledged_change() {
    let dir = scratch("kill9");
    let served = Served::start(&dir);
    let token = served.token.clone().expect("token");
    let base = served.base.clone();

    // A writer creates flags as fast as it can; the server is killed while it writes.
    let writer = std::thread::spawn(move || {
        let http = reqwest::blocking::Client::new();
        let mut acknowledged = Vec::new();
        for i in 0..100_000 {
            let key = format!("flag-{i}");
            let sent = http.post(format!("{base}/api/v1/flags")).bearer_auth(&token).json(&json!({"key": key})).send();
            match sent {
                Ok(resp) if resp.status().as_u16() == 201 => acknowledged.push(key),
                _ => break,
            }
        }
        acknowledged
    });
    std::thread::sleep(std::time::Duration::from_millis(700));
    served.kill();
    let acknowledged = writer.join().expect("writer");
    assert!(acknowledged.len() > 5, "the writer should have been acknowledged a few times before the kill");

    let restarted = Served::start(&dir);
    let token = Served::token_of(&dir);
    let (ok, out, err) = dimmer(&restarted.base, &token, &["--json", "flag", "list"]);
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).expect("json");
    let stored: std::collections::HashSet<&str> =
        list["flags"].as_array().expect("flags").iter().filter_map(|f| f["key"].as_str()).collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|k| !stored.contains(k.as_str())).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged flags lost after kill -9: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    restarted.kill();
}

impl Served {
    /// The admin token saved by the first start of this data directory.
    fn token_of(dir: &Path) -> String {
        std::fs::read_to_string(dir.join(".admin-token")).expect("saved token")
    }
}
