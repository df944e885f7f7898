//! A mergeable latency sketch with bounded relative error (the DDSketch idea: logarithmic
//! buckets, so every quantile it reports is within 1% of a value that was recorded).
//!
//! SDKs record into it on the request path; the server merges the SDKs' sketches into its
//! time buckets and merges buckets into windows. Merging is adding counts, so it is exact,
//! associative and commutative: the order batches arrive in cannot change a quantile.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The relative accuracy of every quantile: a reported value `v` for a true value `x` has
/// `|v - x| <= RELATIVE_ACCURACY * x` (for values inside the tracked range).
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// Values at or below this (milliseconds) count as zero: one microsecond.
pub const MIN_TRACKED_MS: f64 = 0.001;
/// Values above this (milliseconds) are clamped to it: about 2.8 hours.
pub const MAX_TRACKED_MS: f64 = 1.0e7;

/// `(1 + a) / (1 - a)`: the ratio between neighbouring bucket bounds.
fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

fn index_of(ms: f64) -> i32 {
    // The clamp keeps the cast in range; ceil(log_gamma(x)) for x in [1e-3, 1e7] is in about
    // [-346, 806].
    (ms.clamp(MIN_TRACKED_MS, MAX_TRACKED_MS).ln() / gamma().ln()).ceil() as i32
}

/// The lowest and highest bucket index a valid sketch may hold.
pub fn index_range() -> (i32, i32) {
    (index_of(MIN_TRACKED_MS), index_of(MAX_TRACKED_MS))
}

/// The value a bucket stands for: within the relative accuracy of every value in it.
pub fn bucket_value(index: i32) -> f64 {
    let g = gamma();
    2.0 * g.powi(index) / (g + 1.0)
}

/// The smallest value that falls in a bucket above `index`: values `> upper_bound(index)` are
/// in later buckets.
pub fn upper_bound(index: i32) -> f64 {
    gamma().powi(index)
}

/// Recorded latencies, in milliseconds.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySketch {
    /// How many values were at or below [`MIN_TRACKED_MS`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub zero: u64,
    /// `[index, count]` pairs in increasing index order; bucket `i` holds values in
    /// `(gamma^(i-1), gamma^i]`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = bins_schema))]
    pub bins: Vec<(i32, u64)>,
    /// The sum of the recorded values, for the mean.
    #[serde(default)]
    pub sum: f64,
}

/// `bins` in the OpenAPI document: pairs of a bucket index and a count.
#[cfg(feature = "openapi")]
fn bins_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ArrayItems, ObjectBuilder, Type};
    let index = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(i64::from(i32::MIN)))
        .maximum(Some(i64::from(i32::MAX)))
        .build();
    let count = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).maximum(Some(u64::MAX)).build();
    let pair =
        ArrayBuilder::new().prefix_items([index, count]).items(ArrayItems::False).min_items(Some(2)).max_items(Some(2));
    ArrayBuilder::new().items(pair).description(Some("`[index, count]` pairs in increasing index order")).build()
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A sketch being recorded into: a map, so that recording is one lookup.
#[derive(Debug, Clone, Default)]
pub struct SketchBuilder {
    zero: u64,
    bins: BTreeMap<i32, u64>,
    sum: f64,
}

impl SketchBuilder {
    /// Records one latency, in milliseconds. NaN and negative values are recorded as zero.
    pub fn record(&mut self, ms: f64) {
        if ms.is_nan() || ms <= MIN_TRACKED_MS {
            self.zero += 1;
            return;
        }
        *self.bins.entry(index_of(ms)).or_insert(0) += 1;
        self.sum += ms.min(MAX_TRACKED_MS);
    }

    /// Adds a whole sketch.
    pub fn merge(&mut self, other: &LatencySketch) {
        self.zero = self.zero.saturating_add(other.zero);
        for &(index, count) in &other.bins {
            let slot = self.bins.entry(index).or_insert(0);
            *slot = slot.saturating_add(count);
        }
        self.sum += other.sum;
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.bins.values().fold(self.zero, |a, b| a.saturating_add(*b))
    }

    /// The sketch in its wire form.
    pub fn build(&self) -> LatencySketch {
        LatencySketch { zero: self.zero, bins: self.bins.iter().map(|(i, c)| (*i, *c)).collect(), sum: self.sum }
    }
}

impl LatencySketch {
    /// A sketch of the given values (convenient for tests and simulations).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut builder = SketchBuilder::default();
        values.into_iter().for_each(|v| builder.record(v));
        builder.build()
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.bins.iter().fold(self.zero, |a, (_, c)| a.saturating_add(*c))
    }

    /// The mean, or `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum / n as f64)
    }

    /// Merges two sketches.
    pub fn merged(&self, other: &LatencySketch) -> LatencySketch {
        let mut builder = self.to_builder();
        builder.merge(other);
        builder.build()
    }

    /// The sketch as a builder, to record or merge more into.
    pub fn to_builder(&self) -> SketchBuilder {
        let mut builder = SketchBuilder::default();
        builder.merge(self);
        builder
    }

    /// The `q`-quantile (`0 <= q <= 1`), within [`RELATIVE_ACCURACY`]; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        // The rank of the value wanted, 0-based: the lower of the two middle values for even
        // counts, like DDSketch.
        let rank = (q.clamp(0.0, 1.0) * (n - 1) as f64).floor() as u64;
        if rank < self.zero {
            return Some(0.0);
        }
        let mut seen = self.zero;
        for &(index, count) in &self.bins {
            seen = seen.saturating_add(count);
            if seen > rank {
                return Some(bucket_value(index));
            }
        }
        self.bins.last().map(|(i, _)| bucket_value(*i))
    }

    /// How many recorded values were above `ms`, counting whole buckets: a bucket counts when
    /// its lower bound is at or above `ms`'s own bucket's upper bound. Two sketches asked with
    /// the same `ms` are therefore compared on exactly the same bucket boundary.
    pub fn count_above(&self, ms: f64) -> u64 {
        if ms.is_nan() || ms < MIN_TRACKED_MS {
            return self.count() - self.zero;
        }
        let boundary = index_of(ms);
        self.bins.iter().filter(|(i, _)| *i > boundary).fold(0u64, |a, (_, c)| a.saturating_add(*c))
    }

    /// Checks that the sketch is well formed: indices in range and strictly increasing, no
    /// empty bins, a finite non-negative sum. Returns the reason it is not.
    pub fn check(&self) -> Result<(), String> {
        let (low, high) = index_range();
        let mut previous = None;
        for (position, &(index, count)) in self.bins.iter().enumerate() {
            if index < low || index > high {
                return Err(format!("bins[{position}]: index {index} is outside {low}..={high}"));
            }
            if previous.is_some_and(|p| index <= p) {
                return Err(format!("bins[{position}]: indices must be strictly increasing"));
            }
            if count == 0 {
                return Err(format!("bins[{position}]: a bin's count must be at least 1"));
            }
            previous = Some(index);
        }
        if !self.sum.is_finite() || self.sum < 0.0 {
            return Err("sum: must be a finite number >= 0".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantiles_are_within_the_relative_accuracy() {
        let values: Vec<f64> = (1..=10_000).map(|i| i as f64 * 0.37).collect();
        let sketch = LatencySketch::of(values.iter().copied());
        for q in [0.0, 0.1, 0.5, 0.9, 0.95, 0.99, 1.0] {
            let exact = values[(q * (values.len() - 1) as f64).floor() as usize];
            let got = sketch.quantile(q).unwrap();
            assert!((got - exact).abs() <= RELATIVE_ACCURACY * exact + 1e-9, "q={q}: {got} vs {exact}");
        }
        assert_eq!(sketch.count(), 10_000);
    }

    #[test]
    fn zero_and_garbage_values_count_as_zero() {
        let sketch = LatencySketch::of([0.0, -5.0, f64::NAN, 10.0]);
        assert_eq!(sketch.zero, 3);
        assert_eq!(sketch.count(), 4);
        assert_eq!(sketch.quantile(0.5), Some(0.0));
    }

    #[test]
    fn a_sketch_out_of_range_or_out_of_order_is_refused() {
        let bad = LatencySketch { zero: 0, bins: vec![(5, 1), (4, 1)], sum: 1.0 };
        assert!(bad.check().unwrap_err().contains("strictly increasing"));
        let bad = LatencySketch { zero: 0, bins: vec![(100_000, 1)], sum: 1.0 };
        assert!(bad.check().unwrap_err().contains("outside"));
        let bad = LatencySketch { zero: 0, bins: vec![(1, 0)], sum: 1.0 };
        assert!(bad.check().unwrap_err().contains("at least 1"));
    }

    #[test]
    fn the_wire_form_is_compact_pairs() {
        let json = serde_json::to_string(&LatencySketch::of([1.0, 1.0, 250.0])).unwrap();
        assert_eq!(json, r#"{"bins":[[0,2],[277,1]],"sum":252.0}"#);
    }

    proptest! {
        #[test]
        fn merging_is_the_same_as_recording_everything_once(
            a in proptest::collection::vec(0.0f64..5000.0, 0..200),
            b in proptest::collection::vec(0.0f64..5000.0, 0..200),
        ) {
            let merged = LatencySketch::of(a.iter().copied()).merged(&LatencySketch::of(b.iter().copied()));
            let once = LatencySketch::of(a.iter().chain(b.iter()).copied());
            prop_assert_eq!(&merged.bins, &once.bins);
            prop_assert_eq!(merged.zero, once.zero);
            prop_assert!((merged.sum - once.sum).abs() < 1e-6 * (1.0 + once.sum));
            prop_assert!(merged.check().is_ok());
        }

        #[test]
        fn count_above_agrees_with_the_values_up_to_one_bucket(
            values in proptest::collection::vec(0.01f64..5000.0, 1..300),
            threshold in 0.01f64..5000.0,
        ) {
            let sketch = LatencySketch::of(values.iter().copied());
            let above = sketch.count_above(threshold) as usize;
            let strictly = values.iter().filter(|v| **v > threshold * (1.0 + 2.0 * RELATIVE_ACCURACY)).count();
            let loosely = values.iter().filter(|v| **v > threshold / (1.0 + 2.0 * RELATIVE_ACCURACY)).count();
            prop_assert!(strictly <= above && above <= loosely);
        }
    }
}
