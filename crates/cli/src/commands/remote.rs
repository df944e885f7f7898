//! The client verbs: tokens, flags, toggles and the audit log, through the server's admin API.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, segment};

/// Where the server is and how to authenticate; shared by every client verb.
#[derive(Debug, Args, Clone)]
pub struct Remote {
    /// The server's URL.
    #[arg(long, global = true, env = "DIMMER_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// An API token.
    #[arg(long, global = true, env = "DIMMER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (the only time it is shown).
    Create {
        /// A unique name (it appears in the audit log).
        name: String,
        /// admin, writer, reader, sdk, or client (OFREP evaluation only: for browsers).
        #[arg(long)]
        scope: String,
        /// The environment of an sdk or client token.
        #[arg(long)]
        env: Option<String>,
        /// A browser origin (https://app.example.com) whose pages may use this sdk or client
        /// token, beside the server's --cors-origin list; repeat for several. Pages of other
        /// origins are refused this token.
        #[arg(long = "origin", value_name = "ORIGIN")]
        origins: Vec<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token.
    Revoke {
        /// The token's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum FlagCommand {
    /// Create a flag (boolean, off in every environment).
    Create {
        /// The flag key.
        key: String,
        /// release, experiment, operational, kill-switch or permission.
        #[arg(long, default_value = "release")]
        kind: String,
        /// The owning team or person.
        #[arg(long)]
        owner: Option<String>,
        /// What the flag does.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List flags.
    List {
        /// Include archived flags.
        #[arg(long)]
        archived: bool,
    },
    /// Show one flag.
    Get {
        /// The flag key.
        key: String,
    },
    /// Archive a flag (it leaves SDK snapshots).
    Archive {
        /// The flag key.
        key: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Restore an archived flag.
    Restore {
        /// The flag key.
        key: String,
    },
}

#[derive(Debug, Args)]
pub struct ToggleArgs {
    /// The flag key.
    key: String,
    /// The environment.
    #[arg(long)]
    env: String,
    /// on or off.
    state: String,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this flag.
    #[arg(long)]
    flag: Option<String>,
    /// Only this environment.
    #[arg(long)]
    env: Option<String>,
    /// At most this many entries.
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

pub(crate) fn print(remote: &Remote, value: &Value, text: impl FnOnce(&Value) -> String) -> Result<ExitCode> {
    if remote.json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", text(value));
    }
    Ok(ExitCode::SUCCESS)
}

fn reason_header(reason: &Option<String>) -> Vec<(&'static str, String)> {
    reason.iter().map(|r| ("x-dimmer-reason", r.clone())).collect()
}

pub fn token(remote: &Remote, cmd: TokenCommand) -> Result<ExitCode> {
    let client = Client::new(&remote.server, remote.token.clone())?;
    runtime()?.block_on(async {
        match cmd {
            TokenCommand::Create { name, scope, env, origins } => {
                let body = json!({"name": name, "scope": scope, "environment": env, "origins": origins});
                let created = client.send(Method::POST, "/api/v1/tokens", Some(&body), &[]).await?;
                let token = created["token"].clone();
                let shown = json!({
                    "token": token, "name": created["name"], "scope": created["scope"], "origins": created["origins"]
                });
                print(remote, &shown, |_| token.as_str().unwrap_or_default().to_owned())
            }
            TokenCommand::List => {
                let list = client.send(Method::GET, "/api/v1/tokens", None, &[]).await?;
                print(remote, &list, |v| {
                    let mut out =
                        format!("{:<24} {:<8} {:<14} {:<8} {}", "NAME", "SCOPE", "ENVIRONMENT", "REVOKED", "ORIGINS");
                    for t in v["tokens"].as_array().into_iter().flatten() {
                        let origins: Vec<&str> =
                            t["origins"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                        out.push_str(&format!(
                            "\n{:<24} {:<8} {:<14} {:<8} {}",
                            t["name"].as_str().unwrap_or(""),
                            t["scope"].as_str().unwrap_or(""),
                            t["environment"].as_str().unwrap_or("-"),
                            t["revoked"],
                            if origins.is_empty() { "-".to_owned() } else { origins.join(",") }
                        ));
                    }
                    out
                })
            }
            TokenCommand::Revoke { name } => {
                client.send(Method::DELETE, &format!("/api/v1/tokens/{}", segment(&name)), None, &[]).await?;
                print(remote, &json!({"revoked": name}), |_| format!("revoked {name}"))
            }
        }
    })
}

pub fn flag(remote: &Remote, cmd: FlagCommand) -> Result<ExitCode> {
    let client = Client::new(&remote.server, remote.token.clone())?;
    runtime()?.block_on(async {
        match cmd {
            FlagCommand::Create { key, kind, owner, description } => {
                let body = json!({"key": key, "kind": kind, "owner": owner, "description": description});
                let flag = client.send(Method::POST, "/api/v1/flags", Some(&body), &[]).await?;
                print(remote, &flag, |f| {
                    format!("created {} (version {})", f["key"].as_str().unwrap_or(""), f["version"])
                })
            }
            FlagCommand::List { archived } => {
                let path = if archived { "/api/v1/flags?archived=true" } else { "/api/v1/flags" };
                let list = client.send(Method::GET, path, None, &[]).await?;
                print(remote, &list, |v| {
                    let mut out = format!("{:<32} {:<12} {:<16} {:<8} {}", "KEY", "KIND", "OWNER", "VERSION", "ON IN");
                    for f in v["flags"].as_array().into_iter().flatten() {
                        let on: Vec<&str> = f["environments"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(_, c)| c["enabled"] == true)
                            .map(|(e, _)| e.as_str())
                            .collect();
                        out.push_str(&format!(
                            "\n{:<32} {:<12} {:<16} {:<8} {}{}",
                            f["key"].as_str().unwrap_or(""),
                            f["kind"].as_str().unwrap_or(""),
                            f["owner"].as_str().unwrap_or("-"),
                            f["version"],
                            if on.is_empty() { "-".to_owned() } else { on.join(",") },
                            if f["archived"] == true { " (archived)" } else { "" }
                        ));
                    }
                    out
                })
            }
            FlagCommand::Get { key } => {
                let flag = client.send(Method::GET, &format!("/api/v1/flags/{}", segment(&key)), None, &[]).await?;
                print(remote, &flag, |f| serde_json::to_string_pretty(f).unwrap_or_default())
            }
            FlagCommand::Archive { key, reason } => {
                let path = format!("/api/v1/flags/{}/archive", segment(&key));
                let flag = client.send(Method::POST, &path, None, &reason_header(&reason)).await?;
                print(remote, &flag, |_| format!("archived {key}"))
            }
            FlagCommand::Restore { key } => {
                let path = format!("/api/v1/flags/{}/restore", segment(&key));
                let flag = client.send(Method::POST, &path, None, &[]).await?;
                print(remote, &flag, |_| format!("restored {key}"))
            }
        }
    })
}

pub fn toggle(remote: &Remote, args: ToggleArgs) -> Result<ExitCode> {
    let enabled = match args.state.as_str() {
        "on" => true,
        "off" => false,
        other => bail!("state: expected on or off, got \"{other}\""),
    };
    let client = Client::new(&remote.server, remote.token.clone())?;
    runtime()?.block_on(async {
        let path = format!("/api/v1/flags/{}/environments/{}/toggle", segment(&args.key), segment(&args.env));
        let body = json!({"enabled": enabled, "reason": args.reason});
        let flag = client.send(Method::POST, &path, Some(&body), &[]).await?;
        print(remote, &flag, |f| format!("{} is {} in {} (version {})", args.key, args.state, args.env, f["version"]))
    })
}

pub fn audit(remote: &Remote, args: AuditArgs) -> Result<ExitCode> {
    let client = Client::new(&remote.server, remote.token.clone())?;
    runtime()?.block_on(async {
        let mut path = format!("/api/v1/audit?limit={}", args.limit);
        if let Some(flag) = &args.flag {
            path.push_str(&format!("&flag={}", segment(flag)));
        }
        if let Some(env) = &args.env {
            path.push_str(&format!("&env={}", segment(env)));
        }
        let entries = client.send(Method::GET, &path, None, &[]).await?;
        print(remote, &entries, |v| {
            let mut out =
                format!("{:<6} {:<14} {:<16} {:<18} {:<24} {}", "ID", "AT (ms)", "ACTOR", "ACTION", "FLAG", "REASON");
            for e in v["entries"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "\n{:<6} {:<14} {:<16} {:<18} {:<24} {}",
                    e["id"],
                    e["at"],
                    e["actor"].as_str().unwrap_or(""),
                    e["action"].as_str().unwrap_or(""),
                    e["flag"].as_str().unwrap_or("-"),
                    e["reason"].as_str().unwrap_or("")
                ));
            }
            out
        })
    })
}
