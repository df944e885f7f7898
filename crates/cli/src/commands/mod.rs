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
#[command(name = "dimmer", version, about, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    remote: remote::Remote,
}

/// `dimmer --help`: what the commands are for, grouped as people use them.
const LONG_ABOUT: &str = "\
Dimmer: feature flags, gradual release and instant dial-down.

Run a server:      dimmer serve prints its address, the admin token (first start) and the web
                   console's address (sign in there with a token). Without --policy it enforces
                   the recommended flag policy (docs/POLICY.md).
Change flags:      token, flag, toggle, audit; export and apply (flags as code); lint (offline).
Release safely:    plan (staged rollouts with guards), kill, dial-down, restore, template,
                   guards and metrics (per-variant outcomes and what the guards conclude).
Keep flags tidy:   stale (flags to retire, with owner and reason), refs (flag keys in code).
Evaluate offline:  eval (a flags file and a context), import unleash, schema.
Try it:            demo (a guarded release in under a minute, on a simulated clock).

Client commands talk to --server (DIMMER_SERVER) with --token (DIMMER_TOKEN).
Docs: README.md, docs/api.md, docs/console.md, docs/POLICY.md, docs/releasing.md.";

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
