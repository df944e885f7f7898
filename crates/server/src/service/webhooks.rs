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
///
/// Its URL is a secret (Slack's carry the credential in the path): it is never logged nor
/// shown by `Debug`; logs name a target by [`Target::label`], its scheme, host and port.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// Where to POST.
    pub url: String,
    /// The payload format.
    pub format: Format,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("url", &self.label()).field("format", &self.format).finish()
    }
}

impl Target {
    /// Parses `URL` (generic) or `slack=URL`; the error says what is wrong without repeating
    /// the URL (it may hold a secret, and errors are printed).
    pub fn parse(text: &str) -> Result<Target, String> {
        let (format, url) = match text.split_once('=') {
            Some(("slack", url)) => (Format::Slack, url),
            Some(("generic", url)) => (Format::Generic, url),
            _ => (Format::Generic, text),
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) || reqwest::Url::parse(url).is_err() {
            return Err("not an http(s) URL, optionally prefixed with slack= or generic= (the value is not \
                        repeated: webhook URLs often hold a secret)"
                .to_owned());
        }
        Ok(Target { url: url.to_owned(), format })
    }

    /// What logs call this target: `scheme://host[:port]/…`, never the path, query or
    /// credentials.
    pub fn label(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(url) => {
                let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
                format!("{}://{}{port}/…", url.scheme(), url.host_str().unwrap_or("?"))
            }
            Err(_) => "<webhook>".to_owned(),
        }
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
        let worker = Worker { rx, targets: targets.clone(), counters: counters.clone(), first_backoff: FIRST_BACKOFF };
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
    /// The wait before the first retry (shorter in tests, which must not wait out the real one).
    first_backoff: Duration,
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
                        let delivery = deliver(
                            client.clone(),
                            target.clone(),
                            event.clone(),
                            self.counters.clone(),
                            self.first_backoff,
                        );
                        inflight.spawn(delivery);
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

async fn deliver(
    client: reqwest::Client,
    target: Target,
    event: Event,
    counters: Arc<Counters>,
    first_backoff: Duration,
) {
    let body = payload(&target, &event);
    // Logs name the target by its label only: the URL is a secret.
    let label = target.label();
    let mut backoff = first_backoff;
    for attempt in 1..=ATTEMPTS {
        let outcome = client.post(&target.url).json(&body).send().await;
        match outcome {
            Ok(r) if r.status().is_success() => {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // A 4xx other than 408/429 will not change by retrying.
            Ok(r) if r.status().is_client_error() && !matches!(r.status().as_u16(), 408 | 429) => {
                tracing::warn!(webhook = %label, status = %r.status(), event = %event.event, "webhook refused");
                break;
            }
            Ok(r) => tracing::debug!(webhook = %label, status = %r.status(), attempt, "webhook attempt failed"),
            // reqwest's errors quote the URL: without it.
            Err(e) => tracing::debug!(webhook = %label, error = %e.without_url(), attempt, "webhook attempt failed"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    counters.failed.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(webhook = %label, event = %event.event, "webhook delivery failed after retries");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_an_optional_format() {
        assert_eq!(Target::parse("http://x/h").unwrap().format, Format::Generic);
        let slack = Target::parse("slack=https://hooks.slack.com/services/T/B/C").unwrap();
        assert_eq!((slack.format, slack.url.as_str()), (Format::Slack, "https://hooks.slack.com/services/T/B/C"));
        assert!(!Target::parse("ftp://secret-x").unwrap_err().contains("secret-x"));
        assert_eq!(slack.label(), "https://hooks.slack.com/…");
        assert!(!format!("{slack:?}").contains("/T/B/C"));
        let with_port = Target::parse("http://user:pw@127.0.0.1:8080/hook?key=s3cret").unwrap();
        assert_eq!(with_port.label(), "http://127.0.0.1:8080/…");
        assert!(Target::parse("slack=nowhere").is_err());
    }

    /// A log sink for one test: what the subscriber writes, kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn event() -> Event {
        Event {
            event: "release.kill".into(),
            flag: "checkout".into(),
            environment: "production".into(),
            actor: "alice".into(),
            reason: None,
            at: 0,
            exposure_before: 100.0,
            exposure_after: 0.0,
            plan: None,
            message: "checkout killed".into(),
            details: None,
        }
    }

    // One thread: the subscriber set for this test sees every delivery it awaits.
    #[tokio::test(flavor = "current_thread")]
    async fn failed_deliveries_are_logged_without_the_url() {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        // A receiver that refuses (400) or fails (500) by path, and a port nobody listens on.
        let app = axum::Router::new()
            .route("/refuse/{secret}", axum::routing::post(|| async { axum::http::StatusCode::BAD_REQUEST }))
            .route("/fail/{secret}", axum::routing::post(|| async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();

        let targets = [
            format!("slack={base}/refuse/T000-s3cr3t-refused"),
            format!("{base}/fail/s3cr3t-failing?token=s3cr3t-query"),
            format!("http://hook-user:s3cr3t-password@{closed}/services/s3cr3t-unreachable"),
        ];
        let counters = Arc::new(Counters::default());
        let client = reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build().unwrap();
        for text in &targets {
            let target = Target::parse(text).unwrap();
            deliver(client.clone(), target, event(), counters.clone(), Duration::from_millis(1)).await;
        }
        assert_eq!(counters.failed.load(Ordering::Relaxed), 3);

        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("webhook refused"), "{text}");
        assert!(text.contains("webhook attempt failed"), "{text}");
        assert_eq!(text.matches("webhook delivery failed after retries").count(), 3, "{text}");
        assert!(text.contains(&format!("{base}/…")), "targets are named by scheme, host and port: {text}");
        assert!(!text.contains("s3cr3t"), "a webhook URL leaked into the logs:\n{text}");
    }
}
