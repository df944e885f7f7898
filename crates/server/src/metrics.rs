//! Prometheus metrics in the text exposition format: requests and latency by route, SSE
//! connections, and each environment's revision. Held in the server state, not a global
//! registry, so that tests can run several servers in one process.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

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
        out
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
