//! Prometheus metrics in the text exposition format: requests and latency by route, SSE
//! connections, and each environment's revision. Held in the server state, not a global
//! registry, so that tests can run several servers in one process.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use dimmer_domain::outcomes::MetricRow;

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// Open SSE connections.
    pub sse_connections: AtomicI64,
    revisions: Mutex<BTreeMap<String, i64>>,
    outcomes: Mutex<BTreeMap<(String, String, String), OutcomeSeries>>,
    outcome_series_dropped: AtomicU64,
    metric_batches: Mutex<BTreeMap<&'static str, u64>>,
    guard_events: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

/// The most flag × variant × environment series kept: an SDK reporting made-up flag keys must
/// not grow the scrape without bound.
pub const MAX_OUTCOME_SERIES: usize = 10_000;

/// One flag, variant and environment's outcome counters since the process started.
#[derive(Debug, Default, Clone)]
struct OutcomeSeries {
    evaluations: u64,
    successes: u64,
    errors: u64,
    latency: Histogram,
    events: BTreeMap<String, u64>,
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((method.to_owned(), route.to_owned(), status)).or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry(route.to_owned()).or_default();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += seconds;
        }
    }

    /// Records an environment's current revision.
    pub fn set_revision(&self, environment: &str, revision: i64) {
        if let Ok(mut r) = self.revisions.lock() {
            r.insert(environment.to_owned(), revision);
        }
    }

    /// Adds one accepted metrics batch's rows to the per-flag series.
    pub fn record_outcomes(&self, environment: &str, rows: &[MetricRow]) {
        let Ok(mut series) = self.outcomes.lock() else { return };
        for row in rows {
            let key = (row.flag.clone(), row.variant.clone(), environment.to_owned());
            if !series.contains_key(&key) && series.len() >= MAX_OUTCOME_SERIES {
                self.outcome_series_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let s = series.entry(key).or_default();
            let a = &row.aggregate;
            s.evaluations = s.evaluations.saturating_add(a.evaluations);
            s.successes = s.successes.saturating_add(a.successes);
            s.errors = s.errors.saturating_add(a.errors);
            for (name, stat) in &a.events {
                let slot = s.events.entry(name.clone()).or_default();
                *slot = slot.saturating_add(stat.count);
            }
            // The sketch's buckets land in the histogram's: each bucket's representative value
            // (within 1% of its members) decides.
            let mut add = |seconds: f64, count: u64| {
                for (i, bound) in BUCKETS.iter().enumerate() {
                    if seconds <= *bound {
                        s.latency.counts[i] += count;
                    }
                }
                s.latency.count += count;
            };
            add(0.0, a.latency.zero);
            for &(index, count) in &a.latency.bins {
                add(dimmer_protocol::bucket_value(index) / 1000.0, count);
            }
            s.latency.sum += a.latency.sum / 1000.0;
        }
    }

    /// Counts a metrics batch by outcome (`accepted`, `rejected`).
    pub fn metric_batch(&self, outcome: &'static str) {
        if let Ok(mut b) = self.metric_batches.lock() {
            *b.entry(outcome).or_default() += 1;
        }
    }

    /// Counts a guard event (`regression`, `sample_ratio`, `no_data`, `action_failed`) by action.
    pub fn guard_event(&self, kind: &'static str, action: &'static str) {
        if let Ok(mut g) = self.guard_events.lock() {
            *g.entry((kind, action)).or_default() += 1;
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP dimmer_http_requests_total HTTP requests by method, route and status.\n");
        out.push_str("# TYPE dimmer_http_requests_total counter\n");
        if let Ok(r) = self.requests.lock() {
            for ((method, route, status), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "dimmer_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        out.push_str("# HELP dimmer_http_request_duration_seconds HTTP request latency by route.\n");
        out.push_str("# TYPE dimmer_http_request_duration_seconds histogram\n");
        if let Ok(l) = self.latency.lock() {
            for (route, h) in l.iter() {
                let route = escape(route);
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "dimmer_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "dimmer_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "dimmer_http_request_duration_seconds_sum{{route=\"{route}\"}} {}", h.sum);
                let _ = writeln!(out, "dimmer_http_request_duration_seconds_count{{route=\"{route}\"}} {}", h.count);
            }
        }
        out.push_str("# HELP dimmer_sse_connections Open SDK streaming connections.\n");
        out.push_str("# TYPE dimmer_sse_connections gauge\n");
        let _ = writeln!(out, "dimmer_sse_connections {}", self.sse_connections.load(Ordering::Relaxed));
        out.push_str("# HELP dimmer_environment_revision Current configuration revision per environment.\n");
        out.push_str("# TYPE dimmer_environment_revision gauge\n");
        if let Ok(r) = self.revisions.lock() {
            for (env, rev) in r.iter() {
                let _ = writeln!(out, "dimmer_environment_revision{{environment=\"{}\"}} {rev}", escape(env));
            }
        }
        self.render_outcomes(&mut out);
        out
    }

    fn render_outcomes(&self, out: &mut String) {
        let Ok(series) = self.outcomes.lock() else { return };
        let label = |(flag, variant, env): &(String, String, String)| {
            format!("flag=\"{}\",variant=\"{}\",environment=\"{}\"", escape(flag), escape(variant), escape(env))
        };
        out.push_str(
            "# HELP dimmer_flag_evaluations_total Evaluations reported by SDKs, by flag, variant and environment.\n",
        );
        out.push_str("# TYPE dimmer_flag_evaluations_total counter\n");
        for (key, s) in series.iter() {
            let _ = writeln!(out, "dimmer_flag_evaluations_total{{{}}} {}", label(key), s.evaluations);
        }
        out.push_str("# HELP dimmer_flag_outcomes_total Outcomes reported by SDKs (error or success), by flag, variant and environment.\n");
        out.push_str("# TYPE dimmer_flag_outcomes_total counter\n");
        for (key, s) in series.iter() {
            let l = label(key);
            let _ = writeln!(out, "dimmer_flag_outcomes_total{{{l},outcome=\"error\"}} {}", s.errors);
            let _ = writeln!(out, "dimmer_flag_outcomes_total{{{l},outcome=\"success\"}} {}", s.successes);
        }
        out.push_str("# HELP dimmer_flag_events_total Custom events reported by SDKs, by flag, variant, environment and event.\n");
        out.push_str("# TYPE dimmer_flag_events_total counter\n");
        for (key, s) in series.iter() {
            let l = label(key);
            for (name, n) in &s.events {
                let _ = writeln!(out, "dimmer_flag_events_total{{{l},event=\"{}\"}} {n}", escape(name));
            }
        }
        out.push_str("# HELP dimmer_flag_outcome_duration_seconds Outcome latency reported by SDKs, by flag, variant and environment.\n");
        out.push_str("# TYPE dimmer_flag_outcome_duration_seconds histogram\n");
        for (key, s) in series.iter() {
            let l = label(key);
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "dimmer_flag_outcome_duration_seconds_bucket{{{l},le=\"{bound}\"}} {}",
                    s.latency.counts[i]
                );
            }
            let _ = writeln!(out, "dimmer_flag_outcome_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}", s.latency.count);
            let _ = writeln!(out, "dimmer_flag_outcome_duration_seconds_sum{{{l}}} {}", s.latency.sum);
            let _ = writeln!(out, "dimmer_flag_outcome_duration_seconds_count{{{l}}} {}", s.latency.count);
        }
        drop(series);
        out.push_str("# HELP dimmer_flag_outcome_series_dropped_total Outcome series not kept (over the cap).\n");
        out.push_str("# TYPE dimmer_flag_outcome_series_dropped_total counter\n");
        let _ = writeln!(
            out,
            "dimmer_flag_outcome_series_dropped_total {}",
            self.outcome_series_dropped.load(Ordering::Relaxed)
        );
        out.push_str("# HELP dimmer_sdk_metric_batches_total Metrics batches received from SDKs, by outcome.\n");
        out.push_str("# TYPE dimmer_sdk_metric_batches_total counter\n");
        if let Ok(b) = self.metric_batches.lock() {
            for outcome in ["accepted", "rejected"] {
                let _ = writeln!(
                    out,
                    "dimmer_sdk_metric_batches_total{{outcome=\"{outcome}\"}} {}",
                    b.get(outcome).copied().unwrap_or(0)
                );
            }
        }
        out.push_str("# HELP dimmer_guard_events_total Guard events acted on (regressions, sample-ratio mismatches, missing data), by kind and action.\n");
        out.push_str("# TYPE dimmer_guard_events_total counter\n");
        if let Ok(g) = self.guard_events.lock() {
            for ((kind, action), n) in g.iter() {
                let _ = writeln!(out, "dimmer_guard_events_total{{kind=\"{kind}\",action=\"{action}\"}} {n}");
            }
        }
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
