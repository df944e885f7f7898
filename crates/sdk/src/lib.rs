//! Dimmer's Rust SDK: evaluate feature flags locally, from a configuration the server streams
//! to the client, and report what happened to the users of each variant.
//!
//! - **Local evaluation.** Getters run the engine on the configuration held in memory: no
//!   network, no await, no lock. When nothing is known they serve the caller's default, with a
//!   reason (`ERROR` / `PROVIDER_NOT_READY` or `FLAG_NOT_FOUND`).
//! - **Kept current.** A snapshot at start, then server-sent events (reconnecting with
//!   exponential backoff and jitter, resuming with `Last-Event-ID`), or ETag polling when the
//!   stream is unavailable.
//! - **Offline resilience.** A last-known-good cache on disk and bootstrap files, so that a cold
//!   start with the server down still serves the last configuration.
//! - **Outcome metrics.** Evaluations per flag and variant, outcomes and latency, named events:
//!   batched and sent to the server for release guards.
//! - **OpenFeature.** [`openfeature::DimmerProvider`] (feature `openfeature`, on by default).
//!
//! ```no_run
//! # async fn run() -> Result<(), dimmer_sdk::Error> {
//! use std::time::Duration;
//! use dimmer_sdk::{Client, Context};
//!
//! let client = Client::builder("http://localhost:8080", "dmr_sdk_...")
//!     .cache_path("/var/cache/myapp/flags.json")
//!     .build()?;
//! let _ = client.wait_ready(Duration::from_secs(2)).await; // serves the cache meanwhile
//! let ctx = Context::with_key("user-42").attr("country", "fr");
//! let checkout = client.bool_details("new-checkout", &ctx, false);
//! if checkout.value {
//!     let timer = client.start_timer(&checkout);
//!     // ... the new checkout ...
//!     timer.success();
//! }
//! client.close().await; // sends the last metrics
//! # Ok(()) }
//! ```

mod backoff;
mod client;
mod error;
pub mod metrics;
#[cfg(feature = "openfeature")]
pub mod openfeature;
pub mod sse;
mod state;
mod sync;

pub use client::{ChangeEvent, Client, ClientBuilder, Details, ListenerId, Status};
pub use dimmer_engine::{Context, Reason};
pub use error::Error;
pub use metrics::{MetricsStats, Outcome, OutcomeTimer};
pub use state::{FlagInfo, Snapshot, Source};

/// Why a getter served the caller's default (OpenFeature's error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No configuration is known yet (nothing cached, nothing from the server).
    ProviderNotReady,
    /// No flag with that key.
    FlagNotFound,
    /// The flag serves a value of another type.
    TypeMismatch,
    /// The flag's definition is invalid.
    ParseError,
    /// A rollout needed a bucketing value the context does not have.
    TargetingKeyMissing,
    /// The context cannot be used.
    InvalidContext,
    /// Anything else.
    General,
}

impl ErrorCode {
    /// The code as OpenFeature spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ProviderNotReady => "PROVIDER_NOT_READY",
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::General => "GENERAL",
        }
    }
}

impl From<dimmer_engine::ErrorCode> for ErrorCode {
    fn from(code: dimmer_engine::ErrorCode) -> Self {
        use dimmer_engine::ErrorCode as E;
        match code {
            E::FlagNotFound => ErrorCode::FlagNotFound,
            E::TypeMismatch => ErrorCode::TypeMismatch,
            E::ParseError => ErrorCode::ParseError,
            E::TargetingKeyMissing => ErrorCode::TargetingKeyMissing,
            E::InvalidContext => ErrorCode::InvalidContext,
            E::General => ErrorCode::General,
        }
    }
}
