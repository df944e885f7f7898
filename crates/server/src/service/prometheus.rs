//! The Prometheus query client behind `promql:` guards: one instant query per guard and variant
//! each guard pass, through Prometheus's HTTP API (`GET /api/v1/query`). Every failure (the
//! server down, a bad query, an empty result, NaN) comes back as a reason, which the pure
//! decision turns into a `no_data` finding: a query never dials a flag down by failing.

use std::time::Duration;

use serde_json::Value;

/// How long one query may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of a query's answer read.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A Prometheus-compatible server (Prometheus, Thanos, Mimir, VictoriaMetrics).
#[derive(Debug, Clone)]
pub struct PromClient {
    http: reqwest::Client,
    base: String,
}

impl PromClient {
    /// A client for the server at `base` (e.g. `http://prometheus:9090`).
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(QUERY_TIMEOUT)
            .build()
            // Building a client without custom TLS roots cannot fail; fall back to the default.
            .unwrap_or_default();
        PromClient { http, base: base.trim_end_matches('/').to_owned() }
    }

    /// Runs an instant query at Prometheus's current time: the first sample's value, or why
    /// there is none.
    pub async fn query(&self, query: &str) -> Result<f64, String> {
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", query)])
            .send()
            .await
            // The URL is configuration, not a secret, but the error names no more than needed.
            .map_err(|e| {
                format!("Prometheus unreachable: {}", if e.is_timeout() { "timed out" } else { "connection failed" })
            })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|_| "Prometheus answer cut short".to_owned())?;
        if bytes.len() > MAX_ANSWER_BYTES {
            return Err(format!("Prometheus answered more than {MAX_ANSWER_BYTES} bytes"));
        }
        let body: Value =
            serde_json::from_slice(&bytes).map_err(|_| format!("Prometheus answered {status} without JSON"))?;
        if body["status"] != "success" {
            let error: String = body["error"].as_str().unwrap_or("unknown error").chars().take(200).collect();
            return Err(format!("Prometheus refused the query: {error}"));
        }
        value_of(&body["data"])
    }
}

/// The value of an instant query's `data`: a scalar, or the first sample of a vector.
fn value_of(data: &Value) -> Result<f64, String> {
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => match data["result"].as_array().and_then(|r| r.first()) {
            Some(series) => &series["value"],
            None => return Err("the query returned no series".into()),
        },
        other => return Err(format!("the query returned a {}, not a number", other.unwrap_or("nothing"))),
    };
    let value = sample[1].as_str().and_then(|v| v.parse::<f64>().ok()).ok_or("a sample without a value")?;
    if value.is_finite() { Ok(value) } else { Err(format!("the query returned {value}")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_read_or_explained() {
        let vector = json!({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "0.25"]}]});
        assert_eq!(value_of(&vector), Ok(0.25));
        assert_eq!(value_of(&json!({"resultType": "scalar", "result": [1.0, "3"]})), Ok(3.0));
        assert!(value_of(&json!({"resultType": "vector", "result": []})).unwrap_err().contains("no series"));
        assert!(value_of(&json!({"resultType": "scalar", "result": [1.0, "NaN"]})).unwrap_err().contains("NaN"));
        assert!(value_of(&json!({"resultType": "matrix", "result": []})).is_err());
    }
}
