//! The outcome-metrics batch: what an SDK counted since its last flush, per flag and variant.
//!
//! Outcomes are attributed to the variant the user was served, by the SDK, so that the server
//! can compare treatment with control over the same period. The server stamps a batch with its
//! own receive time, not the SDK's clock, so clock skew cannot move data between buckets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::LatencySketch;

/// `POST /api/v1/sdk/metrics`: one batch from one SDK instance.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsBatch {
    /// The SDK and its version, e.g. `dimmer-rust/0.1.0` (for the server's counters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk: Option<String>,
    /// One entry per flag and variant (a flag and variant should appear once per batch; the
    /// server adds repeated entries together).
    pub metrics: Vec<FlagMetrics>,
}

/// What happened to the users served one variant of one flag.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagMetrics {
    /// The flag's key.
    pub flag: String,
    /// The variant served.
    pub variant: String,
    /// How many evaluations served it.
    #[serde(default)]
    pub evaluations: u64,
    /// Outcomes recorded as a success.
    #[serde(default)]
    pub successes: u64,
    /// Outcomes recorded as an error.
    #[serde(default)]
    pub errors: u64,
    /// The latency of the outcomes, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySketch>,
    /// Named custom events (engagement, conversion), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub events: BTreeMap<String, EventStat>,
}

/// A named event's count and the sum of its optional values.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventStat {
    /// How many times it happened.
    pub count: u64,
    /// The sum of the values it came with (0 when it carries none).
    #[serde(default)]
    pub sum: f64,
    /// The sum of the squares of those values, for the variance behind a mean-based guard
    /// (`event_mean:NAME`). Optional on the wire so that batches from SDKs that do not send it
    /// stay valid; absent means "unknown", and a stat merged with an unknown one stays unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum_sq: Option<f64>,
}

impl EventStat {
    /// One event with an optional value (no value counts as 0 in the sum and the mean).
    pub fn one(value: Option<f64>) -> Self {
        let v = value.unwrap_or(0.0);
        EventStat { count: 1, sum: v, sum_sq: Some(v * v) }
    }

    /// Adds another stat into this one. The sum of squares survives only if both sides know it
    /// (a side with no events knows it trivially).
    pub fn add(&mut self, other: &EventStat) {
        self.sum_sq = match (self.sum_sq, other.sum_sq) {
            (Some(a), Some(b)) => Some(a + b),
            (None, Some(b)) if self.count == 0 => Some(b),
            (Some(a), None) if other.count == 0 => Some(a),
            _ => None,
        };
        self.count = self.count.saturating_add(other.count);
        self.sum += other.sum;
    }

    /// The mean value, `None` without events.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// The (population) variance of the values, `None` without events or without a sum of
    /// squares. Floored at 0 against rounding.
    pub fn variance(&self) -> Option<f64> {
        let mean = self.mean()?;
        let sq = self.sum_sq?;
        Some((sq / self.count as f64 - mean * mean).max(0.0))
    }
}

/// Named events per batch entry: also the most event names the server keeps in one stored row
/// or one view's totals (a merge of entries keeps the names with the largest counts).
pub const MAX_EVENTS_PER_ENTRY: usize = 32;

/// The bounds a batch must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries per batch.
    pub max_entries: usize,
    /// Named events per entry.
    pub max_events: usize,
    /// The length of a flag key, variant or event name.
    pub max_name_len: usize,
    /// Any one count.
    pub max_count: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_entries: 1000, max_events: MAX_EVENTS_PER_ENTRY, max_name_len: 128, max_count: 1_000_000_000_000 }
    }
}

/// Why a batch was refused: the path of the offending field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct BatchError {
    /// The JSON path of the field, e.g. `metrics[3].latency.bins[0]`.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl MetricsBatch {
    /// Checks the whole batch against `limits`; a batch is accepted whole or not at all.
    pub fn check(&self, limits: &Limits) -> Result<(), BatchError> {
        let fail = |path: String, reason: String| Err(BatchError { path, reason });
        if self.metrics.len() > limits.max_entries {
            return fail(
                "metrics".into(),
                format!("{} entries, at most {} per batch", self.metrics.len(), limits.max_entries),
            );
        }
        if let Some(sdk) = &self.sdk
            && sdk.len() > limits.max_name_len
        {
            return fail("sdk".into(), format!("longer than {} bytes", limits.max_name_len));
        }
        for (i, entry) in self.metrics.iter().enumerate() {
            let at = |field: &str| format!("metrics[{i}].{field}");
            for (field, name) in [("flag", &entry.flag), ("variant", &entry.variant)] {
                if name.is_empty() {
                    return fail(at(field), "must not be empty".into());
                }
                if name.len() > limits.max_name_len {
                    return fail(at(field), format!("longer than {} bytes", limits.max_name_len));
                }
            }
            for (field, count) in
                [("evaluations", entry.evaluations), ("successes", entry.successes), ("errors", entry.errors)]
            {
                if count > limits.max_count {
                    return fail(at(field), format!("{count} is more than {}", limits.max_count));
                }
            }
            if let Some(latency) = &entry.latency {
                latency.check().map_err(|reason| BatchError { path: at("latency"), reason })?;
                if latency.count() > limits.max_count {
                    return fail(at("latency"), format!("more than {} values", limits.max_count));
                }
            }
            if entry.events.len() > limits.max_events {
                return fail(
                    at("events"),
                    format!("{} events, at most {} per entry", entry.events.len(), limits.max_events),
                );
            }
            for (name, stat) in &entry.events {
                let path = at(&format!("events.{name}"));
                if name.is_empty() || name.len() > limits.max_name_len {
                    return fail(path, format!("an event name has 1 to {} bytes", limits.max_name_len));
                }
                if stat.count > limits.max_count {
                    return fail(path, format!("count {} is more than {}", stat.count, limits.max_count));
                }
                if !stat.sum.is_finite() {
                    return fail(path, "sum must be a finite number".into());
                }
                if let Some(sq) = stat.sum_sq
                    && !(sq.is_finite() && sq >= 0.0)
                {
                    return fail(path, "sum_sq must be a finite number >= 0".into());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> FlagMetrics {
        FlagMetrics {
            flag: "checkout".into(),
            variant: "on".into(),
            evaluations: 10,
            successes: 9,
            errors: 1,
            latency: Some(LatencySketch::of([12.0, 30.0])),
            events: BTreeMap::from([("conversion".into(), EventStat { count: 2, sum: 59.5, sum_sq: Some(1770.25) })]),
        }
    }

    #[test]
    fn a_well_formed_batch_round_trips_and_passes() {
        let batch = MetricsBatch { sdk: Some("dimmer-rust/0.1.0".into()), metrics: vec![entry()] };
        let json = serde_json::to_string(&batch).unwrap();
        let back: MetricsBatch = serde_json::from_str(&json).unwrap();
        assert_eq!(back, batch);
        assert_eq!(back.check(&Limits::default()), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        let limits = Limits::default();
        let mut bad = entry();
        bad.variant.clear();
        let err = MetricsBatch { sdk: None, metrics: vec![entry(), bad] }.check(&limits).unwrap_err();
        assert_eq!(err.path, "metrics[1].variant");

        let mut bad = entry();
        bad.events.insert("x".into(), EventStat { count: 1, sum: f64::INFINITY, sum_sq: None });
        let err = MetricsBatch { sdk: None, metrics: vec![bad] }.check(&limits).unwrap_err();
        assert_eq!(err.path, "metrics[0].events.x");

        let mut bad = entry();
        bad.latency = Some(LatencySketch { zero: 0, bins: vec![(3, 1), (2, 1)], sum: 2.0 });
        let err = MetricsBatch { sdk: None, metrics: vec![bad] }.check(&limits).unwrap_err();
        assert_eq!(err.path, "metrics[0].latency");

        let many = MetricsBatch { sdk: None, metrics: vec![entry(); 1001] };
        assert_eq!(many.check(&limits).unwrap_err().path, "metrics");
    }

    #[test]
    fn event_stats_merge_their_squares_only_when_both_sides_know_them() {
        let mut a = EventStat::one(Some(4.0));
        a.add(&EventStat::one(Some(2.0)));
        assert_eq!(a, EventStat { count: 2, sum: 6.0, sum_sq: Some(20.0) });
        assert_eq!((a.mean(), a.variance()), (Some(3.0), Some(1.0)));
        let old = EventStat { count: 3, sum: 9.0, sum_sq: None };
        let mut merged = a;
        merged.add(&old);
        assert_eq!((merged.count, merged.sum_sq, merged.variance()), (5, None, None));
        let mut fresh = EventStat::default();
        fresh.add(&a);
        assert_eq!(fresh, a);
        // A batch from an SDK that sends no squares still parses.
        let old: EventStat = serde_json::from_str(r#"{"count":2,"sum":3.5}"#).unwrap();
        assert_eq!(old.sum_sq, None);
        let mut bad = entry();
        bad.events.insert("x".into(), EventStat { count: 1, sum: 1.0, sum_sq: Some(-1.0) });
        let err = MetricsBatch { sdk: None, metrics: vec![bad] }.check(&Limits::default()).unwrap_err();
        assert_eq!(err.path, "metrics[0].events.x");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<MetricsBatch>(r#"{"metrics":[],"extra":1}"#).unwrap_err();
        assert!(err.to_string().contains("extra"));
    }
}
