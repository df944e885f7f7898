//! A small stand-in for the server's SDK API (snapshot with ETag, SSE stream, metrics intake),
//! whose behaviour a test can change: refuse the stream, answer metrics with a given status,
//! publish a change.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dimmer_protocol::MetricsBatch;
use serde_json::{Value, json};
use tokio::sync::broadcast;

#[derive(Debug)]
pub struct Fake {
    pub base: String,
    pub state: Arc<FakeState>,
}

#[derive(Debug)]
pub struct FakeState {
    /// The snapshot served: `{"environment", "revision", "flags"}`.
    snapshot: Mutex<Value>,
    events: broadcast::Sender<String>,
    pub stream_enabled: AtomicBool,
    pub polls: AtomicUsize,
    pub not_modified: AtomicUsize,
    pub streams: AtomicUsize,
    pub last_event_ids: Mutex<Vec<Option<String>>>,
    pub metric_statuses: Mutex<VecDeque<u16>>,
    pub batches: Mutex<Vec<MetricsBatch>>,
}

impl Fake {
    pub async fn start(flags: Value) -> Fake {
        let (events, _) = broadcast::channel(16);
        let state = Arc::new(FakeState {
            snapshot: Mutex::new(json!({"environment": "production", "revision": 1, "flags": flags})),
            events,
            stream_enabled: AtomicBool::new(true),
            polls: AtomicUsize::new(0),
            not_modified: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
            last_event_ids: Mutex::new(Vec::new()),
            metric_statuses: Mutex::new(VecDeque::new()),
            batches: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/api/v1/sdk/config", get(config))
            .route("/api/v1/sdk/stream", get(stream))
            .route("/api/v1/sdk/metrics", post(metrics))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Fake { base, state }
    }

    /// Publishes a new revision in which `flag` is defined as `definition` (`null`: removed).
    pub fn change(&self, flag: &str, definition: Value) {
        let mut snap = self.state.snapshot.lock().unwrap();
        let revision = snap["revision"].as_i64().unwrap() + 1;
        snap["revision"] = json!(revision);
        if definition.is_null() {
            snap["flags"]["flags"].as_object_mut().unwrap().remove(flag);
        } else {
            snap["flags"]["flags"][flag] = definition.clone();
        }
        let data = json!({"revision": revision, "flags": {flag: definition}, "segments": {}});
        let _ = self.state.events.send(format!("event: patch\nid: {revision}\ndata: {data}\n\n"));
    }
}

fn etag(snapshot: &Value) -> String {
    format!("\"production-{}\"", snapshot["revision"])
}

async fn config(State(s): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    s.polls.fetch_add(1, Ordering::Relaxed);
    let snap = s.snapshot.lock().unwrap().clone();
    let tag = etag(&snap);
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == tag.as_bytes()) {
        s.not_modified.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
    }
    (StatusCode::OK, [(header::ETAG, tag)], snap.to_string()).into_response()
}

async fn stream(State(s): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    if !s.stream_enabled.load(Ordering::Relaxed) {
        return StatusCode::NOT_FOUND.into_response();
    }
    s.streams.fetch_add(1, Ordering::Relaxed);
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    s.last_event_ids.lock().unwrap().push(last.clone());
    let snap = s.snapshot.lock().unwrap().clone();
    let first = if last.as_deref() == Some(snap["revision"].to_string().as_str()) {
        // Current: nothing to send on connect, as the real server does.
        ": hello\n\n".to_owned()
    } else {
        format!("event: snapshot\nid: {}\ndata: {}\n\n", snap["revision"], snap)
    };
    let rx = s.events.subscribe();
    let body = futures::stream::unfold((Some(first), rx), |(first, mut rx)| async move {
        if let Some(first) = first {
            return Some((Ok::<_, Infallible>(first), (None, rx)));
        }
        match rx.recv().await {
            Ok(event) => Some((Ok(event), (None, rx))),
            Err(_) => None,
        }
    });
    ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(body)).into_response()
}

async fn metrics(State(s): State<Arc<FakeState>>, body: String) -> Response {
    let status = s.metric_statuses.lock().unwrap().pop_front().unwrap_or(202);
    let batch: MetricsBatch = serde_json::from_str(&body).unwrap();
    let entries = batch.metrics.len();
    if status == 202 {
        s.batches.lock().unwrap().push(batch);
    }
    let status = StatusCode::from_u16(status).unwrap();
    (status, json!({"accepted": entries}).to_string()).into_response()
}

/// Waits until `check` holds, polling every 10 ms, at most 10 s.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
