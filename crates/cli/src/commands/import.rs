//! `dimmer import unleash FILE`: Unleash client-API features to native flags (JSON on stdout).

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use dimmer_engine::import::unleash;

use super::FileArg;
use crate::files;

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import an Unleash client-API payload (`/api/client/features`, or delta-API events).
    Unleash(UnleashArgs),
}

#[derive(Debug, Args)]
pub struct UnleashArgs {
    /// The payload file (`-` for standard input).
    file: FileArg,
    /// The environment the imported configuration is stored under.
    #[arg(long, default_value = "default")]
    env: String,
}

pub fn run(cmd: ImportCommand) -> Result<ExitCode> {
    match cmd {
        ImportCommand::Unleash(args) => {
            let text = files::read_text(&args.file)?;
            let imported = unleash::import(&text, &args.env).with_context(|| format!("{}", args.file.display()))?;
            for warning in &imported.warnings {
                eprintln!("warning: {warning}");
            }
            let (_, diagnostics) = dimmer_engine::compile(&imported.flags, &args.env);
            super::report(&args.file, &diagnostics);
            println!("{}", serde_json::to_string_pretty(&imported.flags)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
