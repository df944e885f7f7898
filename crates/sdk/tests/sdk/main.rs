//! The SDK without a server: OpenFeature behaviour from the shared contract, bootstrap and
//! cache files, listeners, and metric delivery to a local receiver. Tests against the real
//! `dimmer serve` binary live in `crates/cli/tests/cli/sdk.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod client;
mod fake;
mod metrics;
mod openfeature;
mod stream;

use std::path::PathBuf;

use dimmer_sdk::Client;

/// The flags of `tests/vectors/openfeature/test-flags.json`, in Dimmer's model: a
/// `contextEvaluator` is a rule with id `contract-rule`; a disabled flag has no configuration in
/// the environment (off, serving its `off` variant if it has one, the caller's default if not).
pub fn contract_flags() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/data/openfeature-flags.json")
}

/// A client serving the contract flags, with no network.
pub fn offline_client() -> Client {
    Client::builder("http://127.0.0.1:9", "unused").offline(true).bootstrap_file(contract_flags()).build().unwrap()
}

/// A scratch directory of its own for a test.
pub fn scratch(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("dimmer-sdk-{}-{name}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
