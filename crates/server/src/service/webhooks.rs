//! Outgoing webhooks for release events (generic JSON or a Slack-compatible incoming-webhook
//! payload), delivered off the request path with retries and exponential backoff.
//!
//! The notifier's queue is bounded: when receivers are down for long, new events are dropped and
//! counted rather than growing memory. Its worker is a background task owned by the server's
//! composition root, stopped through the shutdown channel (in-flight deliveries get a grace
//! period).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Events waiting for delivery beyond this are dropped (and counted).
const QUEUE: usize = 1024;
/// Attempts per delivery, the first included.
const ATTEMPTS: u32 = 6;
/// The first retry waits this long; each next one twice as long (0.5 s, 1 s, 2 s, 4 s, 8 s).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long deliveries in flight may finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a receiver expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The [`Event`] as JSON.
    Generic,
    /// `{"text": "..."}`, as Slack (and Mattermost, Teams' Slack-compatible hooks) accept.
    Slack,
}

/// A receiver of release events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where to POST.
    pub url: String,
    /// The payload format.
    pub format: Format,
}

impl Target {
    /// Parses `URL` (generic) or `slack=URL`; the error names what is wrong.
    pub fn parse(text: &str) -> Result<Target, String> {
        let (format, url) = match text.split_once('=') {
            Some(("slack", url)) => (Format::Slack, url),
            Some(("generic", url)) => (Format::Generic, url),
            _ => (Format::Generic, text),
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) || reqwest::Url::parse(url).is_err() {
            return Err(format!("\"{text}\" is not an http(s) URL, optionally prefixed with slack= or generic="));
        }
        Ok(Target { url: url.to_owned(), format })
    }
}

/// Where a plan stands, in audit entries and release events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PlanPosition {
    /// The current stage's index.
    pub stage: usize,
    /// How many stages the plan has (absent in audit summaries written before it was recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<usize>,
    /// `running`, `paused`, `released` or `rolled-back`.
    pub status: &'static str,
}

/// A release event: a stage change, a kill, a dial-down or a restore.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// `release.kill`, `release.dial_down`, `release.restore`, `plan.start`, `plan.advance`, ….
    pub event: String,
    /// The flag.
    pub flag: String,
    /// The environment.
    pub environment: String,
    /// Who (a token name, or `system` for automatic progression).
    pub actor: String,
    /// Why, when given.
    pub reason: Option<String>,
    /// When, Unix milliseconds.
    pub at: i64,
    /// The exposure before, in percent.
    pub exposure_before: f64,
    /// The exposure after, in percent.
    pub exposure_after: f64,
    /// The plan's stage (0-based) and status after the event, if the flag has a plan.
    pub plan: Option<PlanPosition>,
    /// One line for people.
    pub message: String,
    /// The numbers behind a guard's event (findings, test statistics), when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// Delivery counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Delivered (2xx).
    pub delivered: AtomicU64,
    /// Given up after every attempt.
    pub failed: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Release events by action, delivered to webhooks or not.
    pub events: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

/// Sends events to every configured target.
#[derive(Debug)]
pub struct Notifier {
    targets: Vec<Target>,
    queue: mpsc::Sender<Event>,
    /// Delivery counters.
    pub counters: Arc<Counters>,
}

impl Notifier {
    /// A notifier and its worker; run the worker (it ends at shutdown).
    pub fn new(targets: Vec<Target>) -> (Arc<Notifier>, Worker) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let worker = Worker { rx, targets: targets.clone(), counters: counters.clone() };
        (Arc::new(Notifier { targets, queue, counters }), worker)
    }

    /// Queues an event for every target; never waits.
    pub fn notify(&self, event: Event) {
        if let Ok(mut events) = self.counters.events.lock() {
            *events.entry(event.event.clone()).or_default() += 1;
        }
        if self.targets.is_empty() {
            return;
        }
        if self.queue.try_send(event).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("webhook queue full: an event was dropped");
        }
    }
}

/// The delivery loop.
#[derive(Debug)]
pub struct Worker {
    rx: mpsc::Receiver<Event>,
    targets: Vec<Target>,
    counters: Arc<Counters>,
}

impl Worker {
    /// Delivers events until `shutdown` flips, then lets deliveries in flight finish for a while.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let client = reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build().unwrap_or_default();
        let mut inflight = JoinSet::new();
        loop {
            tokio::select! {
                event = self.rx.recv() => {
                    let Some(event) = event else { break };
                    for target in &self.targets {
                        inflight.spawn(deliver(client.clone(), target.clone(), event.clone(), self.counters.clone()));
                    }
                }
                Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
            }
        }
        let drain = async { while inflight.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("webhook deliveries still in flight at shutdown were abandoned");
        }
    }
}

fn payload(target: &Target, event: &Event) -> serde_json::Value {
    match target.format {
        Format::Generic => serde_json::to_value(event).unwrap_or_default(),
        Format::Slack => serde_json::json!({ "text": event.message }),
    }
}

async fn deliver(client: reqwest::Client, target: Target, event: Event, counters: Arc<Counters>) {
    let body = payload(&target, &event);
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let outcome = client.post(&target.url).json(&body).send().await;
        match outcome {
            Ok(r) if r.status().is_success() => {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // A 4xx other than 408/429 will not change by retrying.
            Ok(r) if r.status().is_client_error() && !matches!(r.status().as_u16(), 408 | 429) => {
                tracing::warn!(url = %target.url, status = %r.status(), event = %event.event, "webhook refused");
                break;
            }
            Ok(r) => tracing::debug!(url = %target.url, status = %r.status(), attempt, "webhook attempt failed"),
            Err(e) => tracing::debug!(url = %target.url, error = %e, attempt, "webhook attempt failed"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    counters.failed.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(url = %target.url, event = %event.event, "webhook delivery failed after retries");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_an_optional_format() {
        assert_eq!(Target::parse("http://x/h").unwrap().format, Format::Generic);
        let slack = Target::parse("slack=https://hooks.slack.com/services/T/B/C").unwrap();
        assert_eq!((slack.format, slack.url.as_str()), (Format::Slack, "https://hooks.slack.com/services/T/B/C"));
        assert!(Target::parse("ftp://x").unwrap_err().contains("ftp://x"));
        assert!(Target::parse("slack=nowhere").is_err());
    }
}
