//! Outcome metrics in: the one path by which per-variant outcomes reach storage and the
//! Prometheus series, whether they come from an SDK's batch or from OpenTelemetry traces and log
//! events (mapped by `dimmer_protocol::otlp`). Only the environment's flags and variants are
//! kept; made-up names are dropped and counted before they take a row or a series.

use std::sync::{Arc, Mutex};

use dimmer_domain::Clock;
use dimmer_domain::outcomes::{Aggregate, BUCKET_MS, MetricRow, bucket_of, merge_rows};
use dimmer_protocol::otlp::{Bounds, Correlator, ExportLogsServiceRequest, ExportTraceServiceRequest, Extracted};
use dimmer_protocol::{FlagMetrics, Limits, MetricsBatch};
use dimmer_store::{Store, StoreError};

use crate::service::hub::Hub;
use crate::service::metrics::Metrics;

/// What became of a set of entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Entries stored.
    pub accepted: usize,
    /// Entries for flags the environment does not have, or variants their flag lacks: dropped.
    pub ignored: usize,
}

/// What an OTLP request gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OtlpRecorded {
    /// The mapping's counts (items, rejected, outcomes, waiting).
    pub extracted: Extracted,
    /// The per-variant entries stored and ignored.
    pub recorded: Recorded,
}

/// The outcome-metrics intake.
pub struct Outcomes {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// One per environment would let one tenant's traces evict another's; spans are keyed by
    /// trace and span id, which do not collide across environments in practice, so one table
    /// with one bound serves all.
    correlator: Mutex<Correlator>,
}

impl std::fmt::Debug for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcomes").finish_non_exhaustive()
    }
}

impl Outcomes {
    /// The intake, counting spans of `counted_kinds` (OTLP's numbers) from OTLP.
    pub fn new(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        counted_kinds: Vec<i32>,
    ) -> Self {
        let correlator = Mutex::new(Correlator::new(Bounds::default(), counted_kinds));
        Outcomes { store, hub, metrics, clock, correlator }
    }

    /// Stores per-variant entries for `env`, stamped with the server's time, all or nothing.
    /// The caller has checked them against [`Limits`].
    pub async fn record(&self, env: &str, entries: &[FlagMetrics]) -> Result<Recorded, StoreError> {
        let snap = self.hub.current(env).await?;
        let (known, unknown): (Vec<_>, Vec<_>) = entries
            .iter()
            .partition(|m| snap.compiled.variants(&m.flag).is_some_and(|mut v| v.any(|(name, _)| name == m.variant)));
        let bucket = bucket_of(self.clock.now_ms(), BUCKET_MS);
        let rows: Vec<MetricRow> = known
            .iter()
            .map(|m| MetricRow {
                flag: m.flag.clone(),
                variant: m.variant.clone(),
                bucket_ms: bucket,
                width_ms: BUCKET_MS,
                aggregate: Aggregate::of(m),
            })
            .collect();
        // One row per flag and variant, however the sender split them.
        let rows = merge_rows(&rows, BUCKET_MS);
        if !rows.is_empty() {
            self.store.record_metrics(env, &rows).await?;
            self.metrics.record_outcomes(env, &rows);
        }
        Ok(Recorded { accepted: known.len(), ignored: unknown.len() })
    }

    /// Maps and stores an OTLP traces request for `env`.
    pub async fn traces(&self, env: &str, request: &ExportTraceServiceRequest) -> Result<OtlpRecorded, StoreError> {
        let extracted = self.correlate(|c, now| c.traces(request, now));
        self.store_extracted(env, extracted, "traces").await
    }

    /// Maps and stores an OTLP logs request for `env`.
    pub async fn logs(&self, env: &str, request: &ExportLogsServiceRequest) -> Result<OtlpRecorded, StoreError> {
        let extracted = self.correlate(|c, now| c.logs(request, now));
        self.store_extracted(env, extracted, "logs").await
    }

    fn correlate(&self, f: impl FnOnce(&mut Correlator, i64) -> Extracted) -> Extracted {
        let now = self.clock.now_ms();
        // A panic while mapping leaves a table of plain values behind: still usable.
        let mut c = self.correlator.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c, now)
    }

    async fn store_extracted(
        &self,
        env: &str,
        mut extracted: Extracted,
        signal: &str,
    ) -> Result<OtlpRecorded, StoreError> {
        // The mapping keeps the batch bounds by construction; checked anyway, so that a bug there
        // can never store what an SDK could not.
        let batch = MetricsBatch { sdk: None, metrics: std::mem::take(&mut extracted.metrics) };
        let checked = batch.check(&Limits::default());
        extracted.metrics = batch.metrics;
        if let Err(e) = checked {
            tracing::error!(signal, "OTLP mapping produced an out-of-bounds entry, dropped: {e}");
            self.metrics.otlp_items(signal, "rejected", extracted.items);
            return Ok(OtlpRecorded {
                extracted: Extracted { rejected: extracted.items, ..extracted },
                recorded: Recorded::default(),
            });
        }
        let recorded = self.record(env, &extracted.metrics).await?;
        self.metrics.otlp_items(signal, "accepted", extracted.items - extracted.rejected);
        self.metrics.otlp_items(signal, "rejected", extracted.rejected);
        Ok(OtlpRecorded { extracted, recorded })
    }
}
