//! `dimmer lint`: validate flag files offline and list every problem with file and path.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::FileArg;
use crate::files;

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Flag files (JSON or YAML).
    #[arg(required = true)]
    files: Vec<FileArg>,
}

pub fn run(args: LintArgs) -> Result<ExitCode> {
    let mut failed = false;
    for file in &args.files {
        match files::load_flag_set(file) {
            Ok(set) => failed |= super::report(file, &dimmer_engine::validate(&set)),
            Err(err) => {
                eprintln!("error: {err:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
