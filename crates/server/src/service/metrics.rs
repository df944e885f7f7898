//! Prometheus metrics in the text exposition format: requests and latency by route, SSE
//! connections, and each environment's revision. Held in the server state, not a global
//! registry, so that tests can run several servers in one process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    outcomes: Mutex<Outcomes>,
    outcome_series_dropped: AtomicU64,
    events_dropped: AtomicU64,
    metric_batches: Mutex<BTreeMap<&'static str, u64>>,
    otlp_items: Mutex<BTreeMap<(String, &'static str), u64>>,
    guard_events: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

/// The most flag × variant × environment series kept. Entries for flags or variants the
/// environment does not have are refused before they get here, so made-up names never take a
/// slot; this cap holds even for an environment with that many real flags and variants.
pub const MAX_OUTCOME_SERIES: usize = 10_000;
/// The most flag × variant × environment × event series kept (`dimmer_flag_events_total`): a
/// budget of its own, so that event names can never take the place of a flag's series.
pub const MAX_EVENT_SERIES: usize = 10_000;
/// The most distinct event names kept per flag and environment (across its variants), first
/// come first kept: SDKs reporting made-up event names fill this flag's allowance only.
pub const MAX_EVENT_NAMES_PER_FLAG: usize = 32;
/// Lines one outcome series renders: evaluations, two outcomes, and the histogram (a line per
/// bucket, `+Inf`, sum and count).
pub const LINES_PER_OUTCOME_SERIES: usize = 3 + BUCKETS.len() + 3;

/// The outcome series and the event names admitted per flag and environment.
#[derive(Debug, Default)]
struct Outcomes {
    series: BTreeMap<(String, String, String), OutcomeSeries>,
    /// By (environment, flag): the event names admitted, at most [`MAX_EVENT_NAMES_PER_FLAG`].
    event_names: HashMap<(String, String), BTreeSet<String>>,
    /// Event series held, across every outcome series.
    event_series: usize,
}

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

    /// Adds one accepted metrics batch's rows to the per-flag series. A new series over
    /// [`MAX_OUTCOME_SERIES`] is dropped, and so is a new event name over
    /// [`MAX_EVENT_NAMES_PER_FLAG`] for its flag or over [`MAX_EVENT_SERIES`] in all (each
    /// counted): what is already kept is never pushed out.
    pub fn record_outcomes(&self, environment: &str, rows: &[MetricRow]) {
        let Ok(mut outcomes) = self.outcomes.lock() else { return };
        let Outcomes { series, event_names, event_series } = &mut *outcomes;
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
                if !s.events.contains_key(name) {
                    let names = event_names.entry((environment.to_owned(), row.flag.clone())).or_default();
                    let known = names.contains(name);
                    if (!known && names.len() >= MAX_EVENT_NAMES_PER_FLAG) || *event_series >= MAX_EVENT_SERIES {
                        self.events_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if !known {
                        names.insert(name.clone());
                    }
                    *event_series += 1;
                }
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

    /// Counts OTLP spans or log records (`signal`: `traces`, `logs`) by outcome (`accepted`,
    /// `rejected`). Only the two signal names the API uses ever reach it.
    pub fn otlp_items(&self, signal: &str, outcome: &'static str, n: u64) {
        if let Ok(mut b) = self.otlp_items.lock() {
            *b.entry((signal.to_owned(), outcome)).or_default() += n;
        }
    }

    /// Counts an OTLP request refused whole (unauthenticated, malformed, too large).
    pub fn otlp_request_refused(&self, signal: &str) {
        if let Ok(mut b) = self.otlp_items.lock() {
            *b.entry((signal.to_owned(), "refused_requests")).or_default() += 1;
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
        let Ok(outcomes) = self.outcomes.lock() else { return };
        let series = &outcomes.series;
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
        drop(outcomes);
        out.push_str("# HELP dimmer_flag_outcome_series_dropped_total Outcome series not kept (over the cap).\n");
        out.push_str("# TYPE dimmer_flag_outcome_series_dropped_total counter\n");
        let _ = writeln!(
            out,
            "dimmer_flag_outcome_series_dropped_total {}",
            self.outcome_series_dropped.load(Ordering::Relaxed)
        );
        out.push_str("# HELP dimmer_flag_events_dropped_total Event names not kept (over the cap per flag and environment, or over the event series cap).\n");
        out.push_str("# TYPE dimmer_flag_events_dropped_total counter\n");
        let _ = writeln!(out, "dimmer_flag_events_dropped_total {}", self.events_dropped.load(Ordering::Relaxed));
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
        out.push_str("# HELP dimmer_otlp_items_total OTLP spans and log records received, by signal and outcome (accepted, rejected inside an accepted request), and requests refused whole (refused_requests).\n");
        out.push_str("# TYPE dimmer_otlp_items_total counter\n");
        if let Ok(b) = self.otlp_items.lock() {
            for signal in ["traces", "logs"] {
                for outcome in ["accepted", "rejected", "refused_requests"] {
                    let n = b.get(&(signal.to_owned(), outcome)).copied().unwrap_or(0);
                    let _ = writeln!(out, "dimmer_otlp_items_total{{signal=\"{signal}\",outcome=\"{outcome}\"}} {n}");
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use dimmer_domain::outcomes::{Aggregate, BUCKET_MS};
    use dimmer_protocol::EventStat;

    fn row(flag: &str, variant: &str, events: &[&str]) -> MetricRow {
        let events = events.iter().map(|n| ((*n).to_owned(), EventStat::one(None))).collect();
        MetricRow {
            flag: flag.into(),
            variant: variant.into(),
            bucket_ms: 0,
            width_ms: BUCKET_MS,
            aggregate: Aggregate { evaluations: 1, events, ..Aggregate::default() },
        }
    }

    fn count_lines(text: &str, prefix: &str) -> usize {
        text.lines().filter(|l| l.starts_with(prefix)).count()
    }

    fn counter(text: &str, name: &str) -> u64 {
        text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap()
    }

    #[test]
    fn event_names_per_flag_are_capped_first_come_and_never_displace_what_is_kept() {
        let m = Metrics::default();
        m.record_outcomes("production", &[row("checkout", "on", &["purchase"])]);
        let junk: Vec<String> = (0..100).map(|i| format!("junk-{i}")).collect();
        for chunk in junk.chunks(10) {
            let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
            m.record_outcomes("production", &[row("checkout", "on", &names), row("checkout", "off", &names)]);
        }
        m.record_outcomes("production", &[row("checkout", "on", &["purchase"])]);
        let text = m.render();
        assert!(text.contains(
            "dimmer_flag_events_total{flag=\"checkout\",variant=\"on\",environment=\"production\",event=\"purchase\"} 2"
        ));
        // 32 names for the flag in this environment, each under both variants at most.
        let names: BTreeSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("dimmer_flag_events_total{"))
            .filter_map(|l| l.split("event=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(names.len(), MAX_EVENT_NAMES_PER_FLAG);
        assert_eq!(counter(&text, "dimmer_flag_events_dropped_total"), 2 * (100 - 31));
        // Another flag has an allowance of its own.
        m.record_outcomes("production", &[row("search", "on", &["query"])]);
        assert!(m.render().contains("event=\"query\"} 1"));
    }

    #[test]
    fn the_series_caps_hold_and_bound_the_scrape() {
        let m = Metrics::default();
        let rows: Vec<MetricRow> = (0..MAX_OUTCOME_SERIES + 500)
            .map(|i| {
                let names: Vec<String> = (0..3).map(|e| format!("e{e}")).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                row(&format!("flag-{i}"), "on", &names)
            })
            .collect();
        m.record_outcomes("production", &rows);
        let text = m.render();
        assert_eq!(count_lines(&text, "dimmer_flag_evaluations_total{"), MAX_OUTCOME_SERIES);
        assert_eq!(count_lines(&text, "dimmer_flag_events_total{"), MAX_EVENT_SERIES);
        assert_eq!(counter(&text, "dimmer_flag_outcome_series_dropped_total"), 500);
        let outcome_lines = text.lines().filter(|l| l.starts_with("dimmer_flag_")).count();
        assert!(outcome_lines <= MAX_OUTCOME_SERIES * LINES_PER_OUTCOME_SERIES + MAX_EVENT_SERIES + 2);
        // Every line is short: the documented bound is 1 KiB a line.
        assert!(text.lines().all(|l| l.len() <= 1024));
    }
}
