//! `dimmer serve`: the flag server on embedded SQLite (default) or PostgreSQL.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use dimmer_server::config::{self, Layer, LogFormat};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080; env DIMMER_LISTEN].
    #[arg(long)]
    listen: Option<String>,
    /// Directory of the embedded SQLite database [default: ./dimmer-data; env DIMMER_DATA_DIR].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://…) instead of SQLite [env DIMMER_DATABASE_URL].
    #[arg(long)]
    database_url: Option<String>,
    /// A JSON configuration file (listen, data_dir, database_url, admin_token, log_format,
    /// webhooks, policy, request_timeout, rate_limit_token, rate_limit_address,
    /// metrics_token_required, cors_origins; docs/api.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A receiver of release events (repeatable): URL for generic JSON, slack=URL for a
    /// Slack-compatible payload [env DIMMER_WEBHOOKS, comma-separated].
    #[arg(long = "webhook")]
    webhooks: Vec<String>,
    /// A flag policy file (dimmer-policy.yaml; docs/POLICY.md) enforced on flag writes, in place
    /// of the recommended policy (kebab-case keys, owner and description required, production
    /// above 5% only through a guarded plan); a file with `version: 1` alone relaxes every rule
    /// [env DIMMER_POLICY].
    #[arg(long)]
    policy: Option<PathBuf>,
    /// A web origin whose pages may call OFREP and the SDK API (repeatable), such as
    /// https://app.example.com, or * for any (unsafe with sdk tokens: give pages client tokens)
    /// [env DIMMER_CORS_ORIGINS, comma-separated].
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let flags = Layer {
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url,
        webhooks: (!args.webhooks.is_empty()).then_some(args.webhooks),
        policy: args.policy,
        cors_origins: (!args.cors_origins.is_empty()).then_some(args.cors_origins),
        ..Layer::default()
    };
    // The one place the server's settings are read from the environment.
    let env = Layer::from_env(|name| std::env::var(name).ok());
    let config = config::load(args.config.as_deref(), env, flags)?;
    init_logging(config.log_format);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(config))?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat) {
    // Logs go to stderr: stdout carries the address and the one-time token, for scripts.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_target(false)
        .with_writer(std::io::stderr);
    // A second initialisation (in tests) is harmless: keep the first.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn serve(config: config::Config) -> Result<()> {
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    }
    let store = dimmer_store::open(
        config.database_url.as_deref(),
        &config.data_dir,
        std::sync::Arc::new(dimmer_domain::SystemClock),
    )
    .await
    .context("opening storage")?;
    dimmer_server::app::first_start(store.as_ref()).await.context("creating the default environments")?;
    let generated = dimmer_server::service::tokens::bootstrap_admin(store.as_ref(), config.admin_token.as_deref())
        .await
        .context("bootstrapping the admin token")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let storage = match &config.database_url {
        Some(_) => "PostgreSQL".to_owned(),
        None => format!("SQLite in {}", config.data_dir.display()),
    };
    println!("dimmer listening on http://{addr} (storage: {storage})");
    if let Some(token) = generated {
        // Printed once, on standard output only: it is stored hashed and never logged.
        println!("admin token (shown once, keep it safe): {token}");
    }
    println!("web console: http://{addr}/ (sign in with an admin, writer or reader token)");
    tracing::info!(%addr, "serving");
    let options = dimmer_server::app::Options {
        webhooks: config.webhooks.clone(),
        policy: config.policy.clone(),
        rate_limits: config.rate_limits,
        request_timeout: config.request_timeout,
        metrics_token_required: config.metrics_token_required,
        cors_origins: config.cors_origins.clone(),
        otlp_span_kinds: config.otlp_span_kinds.clone(),
        prometheus_url: config.prometheus_url.clone(),
        ..Default::default()
    };
    dimmer_server::app::run_with(listener, store, options, shutdown_signal()).await.context("serving HTTP")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
