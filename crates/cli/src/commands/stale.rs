//! `dimmer stale`: the flags the server finds stale (past their kind's lifetime, released and
//! untouched, or no longer evaluated), with the reason and the owner; a non-zero exit for CI on
//! request.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};

use super::remote::{Remote, runtime};
use crate::client::{Client, segment};

/// What makes `stale` exit with 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Any stale flag.
    Stale,
}

#[derive(Debug, Args)]
pub struct StaleArgs {
    /// Judge exposure in this environment only (default: every environment).
    #[arg(long)]
    env: Option<String>,
    /// Exit with 1 when a stale flag is found (for CI).
    #[arg(long, value_enum)]
    fail_on: Option<FailOn>,
}

/// The server's lifecycle of every flag (`GET /api/v1/lifecycle`).
pub(crate) async fn lifecycle(client: &Client, env: Option<&str>) -> Result<Value> {
    let path = match env {
        Some(env) => format!("/api/v1/lifecycle?env={}", segment(env)),
        None => "/api/v1/lifecycle".to_owned(),
    };
    client.send(Method::GET, &path, None, &[]).await
}

pub fn run(remote: &Remote, args: StaleArgs) -> Result<ExitCode> {
    let client = Client::new(&remote.server, remote.token.clone())?;
    let all = runtime()?.block_on(lifecycle(&client, args.env.as_deref()))?;
    let stale: Vec<&Value> = all["flags"].as_array().into_iter().flatten().filter(|f| f["state"] == "stale").collect();
    if remote.json {
        println!("{}", serde_json::to_string_pretty(&json!({"stale": stale}))?);
    } else if stale.is_empty() {
        println!("no stale flags");
    } else {
        println!("{:<32} {:<12} {:<16} {:<12} REASON", "KEY", "KIND", "OWNER", "PHASE");
        for f in &stale {
            let reasons: Vec<String> = f["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("{} ({})", r["message"].as_str().unwrap_or(""), r["rule"].as_str().unwrap_or("")))
                .collect();
            println!(
                "{:<32} {:<12} {:<16} {:<12} {}",
                f["key"].as_str().unwrap_or(""),
                f["kind"].as_str().unwrap_or(""),
                f["owner"].as_str().unwrap_or("-"),
                f["phase"].as_str().unwrap_or(""),
                reasons.join("; ")
            );
        }
    }
    Ok(if args.fail_on == Some(FailOn::Stale) && !stale.is_empty() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
