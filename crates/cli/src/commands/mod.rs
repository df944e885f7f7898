//! The command line: one subcommand per module, each a thin layer over the engine.

mod demo;
mod eval;
mod import;
mod lint;
mod metrics;
mod refs;
mod release;
mod remote;
mod serve;
mod stale;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Dimmer: feature flags, gradual release and instant dial-down.
#[derive(Debug, Parser)]
#[command(name = "dimmer", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    remote: remote::Remote,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Evaluate flags from a flags file for a context (or several).
    Eval(eval::EvalArgs),
    /// Convert another tool's flags into Dimmer flags (JSON on standard output).
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Check flag files against the engine and the flag policy; list every problem with its path
    /// and rule.
    Lint(lint::LintArgs),
    /// Print the JSON Schema of a flags file.
    Schema,
    /// Run the flag server (embedded SQLite by default).
    Serve(serve::ServeArgs),
    /// Create, list or revoke API tokens.
    #[command(subcommand)]
    Token(remote::TokenCommand),
    /// Create, list, show, archive or restore flags.
    #[command(subcommand)]
    Flag(remote::FlagCommand),
    /// Turn a flag on or off in one environment.
    Toggle(remote::ToggleArgs),
    /// Show the audit log.
    Audit(remote::AuditArgs),
    /// Release plans: start, status, list, advance, pause, resume, rollback.
    #[command(subcommand)]
    Plan(release::PlanCommand),
    /// Switch a flag off in one environment at once (everyone gets the off variant).
    Kill(release::KillArgs),
    /// Cut a flag's exposure to a percentage at once; nobody new is exposed.
    DialDown(release::DialDownArgs),
    /// Undo the kills and dial-downs since the last restore.
    Restore(release::RestoreArgs),
    /// A guarded release in under a minute: embedded server, simulated users, the guard at work.
    Demo(demo::DemoArgs),
    /// Show or set the guards standing on a flag in an environment.
    #[command(subcommand)]
    Guards(metrics::GuardsCommand),
    /// A flag's outcome metrics per variant and what its guards say.
    Metrics(metrics::MetricsArgs),
    /// List or create release-plan templates.
    #[command(subcommand)]
    Template(release::TemplateCommand),
    /// List stale flags with the reason and the owner (exit 1 with --fail-on stale).
    Stale(stale::StaleArgs),
    /// Find flag keys in source code: unknown keys, archived and stale flags, with file:line.
    Refs(refs::RefsArgs),
    /// Print the server's flags and segments as a flags file (YAML; JSON with --json).
    Export(sync::ExportArgs),
    /// Make the server match a flags file: show the diff, then write what changed.
    Apply(sync::ApplyArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Eval(args) => eval::run(args),
        Command::Import(cmd) => import::run(cmd),
        Command::Lint(args) => lint::run(args, cli.remote.json),
        Command::Serve(args) => serve::run(args),
        Command::Token(cmd) => remote::token(&cli.remote, cmd),
        Command::Flag(cmd) => remote::flag(&cli.remote, cmd),
        Command::Toggle(args) => remote::toggle(&cli.remote, args),
        Command::Audit(args) => remote::audit(&cli.remote, args),
        Command::Plan(cmd) => release::plan(&cli.remote, cmd),
        Command::Kill(args) => release::kill(&cli.remote, args),
        Command::DialDown(args) => release::dial_down(&cli.remote, args),
        Command::Restore(args) => release::restore(&cli.remote, args),
        Command::Template(cmd) => release::template(&cli.remote, cmd),
        Command::Metrics(args) => metrics::run(&cli.remote, args),
        Command::Guards(cmd) => metrics::guards(&cli.remote, cmd),
        Command::Demo(args) => demo::run(args),
        Command::Stale(args) => stale::run(&cli.remote, args),
        Command::Refs(args) => refs::run(&cli.remote, args),
        Command::Export(args) => sync::export(&cli.remote, args),
        Command::Apply(args) => sync::apply(&cli.remote, args),
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&dimmer_engine::model::flag_set_schema())?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints diagnostics for one file; returns whether any was an error.
pub(crate) fn report(file: &std::path::Path, diagnostics: &[dimmer_engine::Diagnostic]) -> bool {
    for d in diagnostics {
        eprintln!("{}: {d}", file.display());
    }
    diagnostics.iter().any(|d| d.severity == dimmer_engine::Severity::Error)
}

/// A path argument, `-` meaning standard input.
pub(crate) type FileArg = PathBuf;
