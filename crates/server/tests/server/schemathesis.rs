//! The OpenAPI document against the server it describes: schemathesis (from PyPI, version pinned
//! by `.ci/run`) generates requests from `/api/v1/openapi.json`, valid and invalid, and runs all
//! its checks on the answers: no 5xx, every status and body one the document describes, invalid
//! data refused, unsupported methods answered 405 with `Allow`, tokens not ignored.
//!
//! The tool's location comes from `DIMMER_SCHEMATHESIS` (default
//! `~/.cache/dimmer/schemathesis-4.32.5/bin/st`, where `.ci/run` installs it). A missing one is
//! a loud warning outside CI and a failure in CI.

use std::io::Write as _;
use std::path::PathBuf;

use crate::support::{ADMIN, TestServer};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `st` executable, or `None` (outside CI) when it is not installed.
fn schemathesis() -> Option<PathBuf> {
    let path = std::env::var_os("DIMMER_SCHEMATHESIS").map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/dimmer/schemathesis-4.32.5/bin/st"))
    })?;
    if path.is_file() {
        return Some(path);
    }
    let message = format!(
        "the OpenAPI conformance test needs schemathesis at {} (DIMMER_SCHEMATHESIS; .ci/run installs it)",
        path.display()
    );
    let in_ci = std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"));
    assert!(!in_ci, "{message}");
    let banner = "!".repeat(88);
    let _ = writeln!(
        std::io::stderr(),
        "\n{banner}\n!!! SKIPPED the schemathesis test: {message}\n!!! In CI this is a failure.\n{banner}\n"
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_one_the_document_describes() {
    let Some(st) = schemathesis() else { return };
    let server = TestServer::start().await;
    // Something for generated requests to find, besides what they create themselves.
    let (status, body) = server
        .admin(
            reqwest::Method::POST,
            "/api/v1/flags",
            Some(serde_json::json!({"key": "new-checkout", "description": "d", "owner": "team-pay"})),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let sdk = server.token("schemathesis-sdk", "sdk", Some("production")).await;

    let base = server.base.clone();
    let config = workspace().join("tests/schemathesis/schemathesis.toml");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&st)
            .arg("--config-file")
            .arg(&config)
            .args(["run", &format!("{base}/api/v1/openapi.json"), "--url", &base, "--checks", "all"])
            .args(["--workers", "2", "--no-color"])
            .env("DIMMER_ST_ADMIN", ADMIN)
            .env("DIMMER_ST_SDK", &sdk)
            // No report files or caches left in the checkout.
            .current_dir(std::env::temp_dir())
            .output()
    })
    .await
    .expect("join")
    .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "schemathesis found problems:\n{stdout}\n{stderr}");
    // It ran operations: a typo in the config or a document it cannot read ends it early.
    assert!(stdout.contains("passed"), "schemathesis ran nothing:\n{stdout}\n{stderr}");
    server.stop().await;
}
