//! Outcome metrics as the server keeps them: per-variant aggregates in time buckets, merged
//! into windows for the views, the Prometheus series and the guards. Pure: the store reads and
//! writes the rows; nothing here touches a clock or a database.
//!
//! Rows are appended as batches arrive (so several replicas never contend on a row), then a
//! rollup merges each closed bucket's rows into one, coarsens old buckets, and drops rows past
//! retention. Merging is adding counts and sketches, so any order gives the same totals.

use std::collections::BTreeMap;

use dimmer_protocol::{EventStat, FlagMetrics, LatencySketch, MAX_EVENTS_PER_ENTRY};
use serde::{Deserialize, Serialize};

/// The width of a fresh bucket: batches are stamped with the server's receive time, rounded
/// down to this.
pub const BUCKET_MS: i64 = 10_000;
/// The width of a bucket after coarsening.
pub const COARSE_BUCKET_MS: i64 = 300_000;

/// What a variant's users did over some period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Evaluations that served the variant.
    pub evaluations: u64,
    /// Outcomes recorded as a success.
    pub successes: u64,
    /// Outcomes recorded as an error.
    pub errors: u64,
    /// Outcome latency, in milliseconds.
    pub latency: LatencySketch,
    /// Custom events by name.
    pub events: BTreeMap<String, EventStat>,
}

impl Aggregate {
    /// The aggregate of one batch entry.
    pub fn of(entry: &FlagMetrics) -> Self {
        Self {
            evaluations: entry.evaluations,
            successes: entry.successes,
            errors: entry.errors,
            latency: entry.latency.clone().unwrap_or_default(),
            events: entry.events.clone(),
        }
    }

    /// Adds another aggregate into this one.
    pub fn add(&mut self, other: &Aggregate) {
        self.evaluations = self.evaluations.saturating_add(other.evaluations);
        self.successes = self.successes.saturating_add(other.successes);
        self.errors = self.errors.saturating_add(other.errors);
        if !other.latency.bins.is_empty() || other.latency.zero > 0 {
            self.latency = self.latency.merged(&other.latency);
        }
        for (name, stat) in &other.events {
            self.events.entry(name.clone()).or_default().add(stat);
        }
    }

    /// Keeps at most `max` event names: those with the largest counts (ties by name, so any
    /// merge order keeps the same ones). Merged rows and window totals are bounded by this, so
    /// made-up event names cannot grow a stored row or a view past the batch bound.
    pub fn bound_events(&mut self, max: usize) {
        if self.events.len() <= max {
            return;
        }
        let mut ranked: Vec<(&String, u64)> = self.events.iter().map(|(name, stat)| (name, stat.count)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let keep: std::collections::BTreeSet<String> = ranked.into_iter().take(max).map(|(n, _)| n.clone()).collect();
        self.events.retain(|name, _| keep.contains(name));
    }

    /// Outcomes recorded (errors and successes).
    pub fn outcomes(&self) -> u64 {
        self.errors.saturating_add(self.successes)
    }

    /// The share of outcomes that were errors, `None` without outcomes.
    pub fn error_rate(&self) -> Option<f64> {
        let n = self.outcomes();
        (n > 0).then(|| self.errors as f64 / n as f64)
    }

    /// A named event's mean value, `None` without such events.
    pub fn event_mean(&self, name: &str) -> Option<f64> {
        self.events.get(name).and_then(EventStat::mean)
    }

    /// A named event's count per evaluation, `None` without evaluations.
    pub fn event_rate(&self, name: &str) -> Option<f64> {
        (self.evaluations > 0).then(|| self.events.get(name).map_or(0, |e| e.count) as f64 / self.evaluations as f64)
    }
}

/// One stored row: a variant's aggregate over one bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// The flag.
    pub flag: String,
    /// The variant.
    pub variant: String,
    /// The bucket's start, Unix milliseconds (a multiple of `width_ms`).
    pub bucket_ms: i64,
    /// The bucket's width.
    pub width_ms: i64,
    /// What happened in it.
    pub aggregate: Aggregate,
}

/// How long rows are kept and when they are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Fresh rows of a bucket that closed this long ago are merged into one.
    pub merge_after_ms: i64,
    /// Buckets older than this are coarsened to [`COARSE_BUCKET_MS`].
    pub coarsen_after_ms: i64,
    /// Rows older than this are deleted.
    pub keep_ms: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Self { merge_after_ms: 30_000, coarsen_after_ms: 24 * 3_600_000, keep_ms: 30 * 24 * 3_600_000 }
    }
}

/// What a rollup pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RollupStats {
    /// Rows read and merged.
    pub merged: u64,
    /// Rows written in their place.
    pub written: u64,
    /// Rows deleted as past retention.
    pub expired: u64,
}

/// The bucket a time falls in.
pub fn bucket_of(at_ms: i64, width_ms: i64) -> i64 {
    at_ms.div_euclid(width_ms) * width_ms
}

/// Merges rows into one per flag, variant and bucket of `width_ms`; each keeps at most
/// [`MAX_EVENTS_PER_ENTRY`] event names (see [`Aggregate::bound_events`]).
pub fn merge_rows(rows: &[MetricRow], width_ms: i64) -> Vec<MetricRow> {
    let mut merged: BTreeMap<(&str, &str, i64), Aggregate> = BTreeMap::new();
    for row in rows {
        merged.entry((&row.flag, &row.variant, bucket_of(row.bucket_ms, width_ms))).or_default().add(&row.aggregate);
    }
    merged
        .into_iter()
        .map(|((flag, variant, bucket_ms), mut aggregate)| {
            aggregate.bound_events(MAX_EVENTS_PER_ENTRY);
            MetricRow { flag: flag.to_owned(), variant: variant.to_owned(), bucket_ms, width_ms, aggregate }
        })
        .collect()
}

/// Per-variant totals over the rows whose buckets start in `[from_ms, until_ms)`. Event names are
/// not cut here (a guard on `event:NAME` must see its event): each row holds at most
/// [`MAX_EVENTS_PER_ENTRY`], so the union is bounded by the rows read.
pub fn totals(rows: &[MetricRow], from_ms: i64, until_ms: i64) -> BTreeMap<String, Aggregate> {
    let mut out: BTreeMap<String, Aggregate> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.bucket_ms >= from_ms && r.bucket_ms < until_ms) {
        out.entry(row.variant.clone()).or_default().add(&row.aggregate);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(variant: &str, bucket_ms: i64, errors: u64, successes: u64, latency: &[f64]) -> MetricRow {
        MetricRow {
            flag: "f".into(),
            variant: variant.into(),
            bucket_ms,
            width_ms: BUCKET_MS,
            aggregate: Aggregate {
                evaluations: errors + successes,
                errors,
                successes,
                latency: LatencySketch::of(latency.iter().copied()),
                events: BTreeMap::from([("click".into(), EventStat { count: 1, sum: 2.0, sum_sq: Some(4.0) })]),
            },
        }
    }

    #[test]
    fn merging_rows_keeps_every_count() {
        let rows = vec![
            row("on", 0, 1, 9, &[10.0]),
            row("on", 0, 2, 8, &[20.0]),
            row("on", 10_000, 0, 5, &[30.0]),
            row("off", 0, 0, 10, &[5.0]),
        ];
        let merged = merge_rows(&rows, BUCKET_MS);
        assert_eq!(merged.len(), 3);
        let on0 = merged.iter().find(|r| r.variant == "on" && r.bucket_ms == 0).unwrap();
        assert_eq!((on0.aggregate.errors, on0.aggregate.successes, on0.aggregate.latency.count()), (3, 17, 2));
        assert_eq!(on0.aggregate.events["click"], EventStat { count: 2, sum: 4.0, sum_sq: Some(8.0) });

        let coarse = merge_rows(&rows, COARSE_BUCKET_MS);
        assert_eq!(coarse.len(), 2);
        assert_eq!(totals(&rows, 0, 20_000), totals(&coarse, 0, 20_000));
    }

    #[test]
    fn merged_rows_keep_the_most_frequent_event_names_whatever_the_order() {
        let with_events = |names: &[(&str, u64)]| {
            let mut r = row("on", 0, 0, 1, &[]);
            r.aggregate.events =
                names.iter().map(|(n, c)| ((*n).to_owned(), EventStat { count: *c, sum: 0.0, sum_sq: None })).collect();
            r
        };
        let junk: Vec<(String, u64)> = (0..100).map(|i| (format!("junk-{i:03}"), 1)).collect();
        let junk: Vec<(&str, u64)> = junk.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        let real = with_events(&[("checkout", 500)]);
        for rows in [vec![real.clone(), with_events(&junk)], vec![with_events(&junk), real.clone()]] {
            let merged = merge_rows(&rows, BUCKET_MS);
            let events = &merged[0].aggregate.events;
            assert_eq!(events.len(), MAX_EVENTS_PER_ENTRY);
            assert_eq!(events["checkout"].count, 500);
            assert!(events.contains_key("junk-000") && !events.contains_key("junk-099"), "ties go by name");
        }
    }

    #[test]
    fn rates_are_absent_without_data() {
        let empty = Aggregate::default();
        assert_eq!(empty.error_rate(), None);
        assert_eq!(empty.event_rate("click"), None);
        let a = row("on", 0, 1, 3, &[]).aggregate;
        assert_eq!(a.error_rate(), Some(0.25));
        assert_eq!(a.event_rate("click"), Some(0.25));
        assert_eq!(a.event_rate("other"), Some(0.0));
    }

    #[test]
    fn buckets_round_down_even_before_the_epoch() {
        assert_eq!(bucket_of(19_999, BUCKET_MS), 10_000);
        assert_eq!(bucket_of(-1, BUCKET_MS), -10_000);
    }
}
