//! Dimmer's Rust SDK: evaluate feature flags locally, from a configuration the server streams
//! to the client, and report what happened to the users of each variant.
//!
//! - **Local evaluation.** Getters run the engine on the configuration held in memory: no
//!   network, no await, no lock. Each evaluation draws a fresh random number for rollouts that
//!   bucket by `$random` (a number set with `Context::with_random` wins). When nothing is known they serve the caller's default, with a
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
mod disk;
mod error;
pub mod metrics;
#[cfg(feature = "openfeature")]
pub mod openfeature;
mod random;
mod shared;
pub mod sse;
mod state;
mod sync;

pub use client::{Client, ClientBuilder, Details};
pub use dimmer_engine::{Context, Reason};
pub use error::{Error, ErrorCode};
pub use metrics::{MetricsStats, Outcome, OutcomeTimer};
pub use shared::{ChangeEvent, ListenerId, Status};
pub use state::{FlagInfo, Snapshot, Source};
