//! The wire between Dimmer SDKs and the server: the configuration the server sends (the snapshot
//! and the stream's patches, [`sdk`]), what an SDK posts to `POST /api/v1/sdk/metrics` and the
//! latency sketch that both ends record into and merge; and [`otlp`], OpenTelemetry's traces and
//! log events decoded and mapped to the same per-variant metrics.
//!
//! It is its own crate because both the SDK and the server must agree on it byte for byte, and
//! neither should depend on the other: the SDK must not pull in a database driver, nor the
//! server an HTTP client's retry logic. It depends on the engine only for the flag model the
//! snapshot carries (the engine depends on nothing of Dimmer's).

mod metrics;
pub mod otlp;
pub mod sdk;
mod sketch;

pub use metrics::{BatchError, EventStat, FlagMetrics, Limits, MAX_EVENTS_PER_ENTRY, MetricsBatch};
pub use sketch::{
    LatencySketch, MAX_TRACKED_MS, MIN_TRACKED_MS, RELATIVE_ACCURACY, SketchBuilder, bucket_value, index_range,
    upper_bound,
};
