//! The client's background tasks: the synchronizer (initial snapshot, then the SSE stream with
//! reconnection and `Last-Event-ID` resume, or ETag polling when streaming is unavailable) and
//! the metrics flusher. Both are owned by the client and stop when its shutdown signal flips.
//!
//! They take what they need from the client's options as [`Connection`] and [`SyncOptions`],
//! and update the client through [`Shared`], so that this module does not depend on the client.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{ACCEPT, ETAG, IF_NONE_MATCH};
use reqwest::{StatusCode, Url};
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::disk;
use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::sse::{SseItem, SseParser};
use crate::state::{Snapshot, Source};
use dimmer_protocol::sdk::Patch;

/// How a stream attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum StreamEnd {
    /// The client is closing.
    Shutdown,
    /// The connection was open; `healthy` when it carried something (an event, a heartbeat)
    /// or lasted, rather than being cut at once (as some proxies do with event streams).
    Dropped { healthy: bool },
    /// The server refused the stream (an HTTP status other than 200).
    Refused(StatusCode),
    /// No connection.
    Unreachable,
}

/// A stream open this long was not refused, even if nothing came through it (a client that is
/// current gets nothing until the next change or heartbeat).
const HEALTHY_STREAM: Duration = Duration::from_secs(1);

/// After falling back to polling, try the stream again every this many polls.
const POLLS_BEFORE_STREAM_RETRY: u32 = 10;

/// How to reach the server; the synchronizer and the metrics sender share it.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub(crate) http: reqwest::Client,
    pub(crate) base: Url,
    pub(crate) token: String,
    /// For a snapshot poll, a metrics post, and opening the stream.
    pub(crate) request_timeout: Duration,
}

/// How the synchronizer keeps current (the builder's streaming options).
#[derive(Debug, Clone)]
pub(crate) struct SyncOptions {
    pub(crate) streaming: bool,
    pub(crate) poll_interval: Duration,
    /// The reconnection delay's bounds: `(min, max)`.
    pub(crate) backoff: (Duration, Duration),
    pub(crate) idle_timeout: Duration,
    pub(crate) failures_before_polling: u32,
}

/// Keeps the client's configuration current.
#[derive(Debug)]
pub(crate) struct Synchronizer {
    http: reqwest::Client,
    config_url: Url,
    stream_url: Url,
    token: String,
    request_timeout: Duration,
    streaming: bool,
    poll_interval: Duration,
    backoff: Backoff,
    idle_timeout: Duration,
    failures_before_polling: u32,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    etag: Option<String>,
}

fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

impl Synchronizer {
    pub(crate) fn new(
        connection: &Connection,
        options: SyncOptions,
        shared: Arc<Shared>,
        shutdown: watch::Receiver<bool>,
    ) -> Synchronizer {
        Synchronizer {
            http: connection.http.clone(),
            config_url: endpoint(&connection.base, "/api/v1/sdk/config"),
            stream_url: endpoint(&connection.base, "/api/v1/sdk/stream"),
            token: connection.token.clone(),
            request_timeout: connection.request_timeout,
            streaming: options.streaming,
            poll_interval: options.poll_interval,
            backoff: Backoff::new(options.backoff.0, options.backoff.1),
            idle_timeout: options.idle_timeout,
            failures_before_polling: options.failures_before_polling,
            shared,
            shutdown,
            etag: None,
        }
    }

    /// Runs until shutdown.
    pub(crate) async fn run(mut self) {
        // The initial snapshot comes from a plain request (quick, and it works where streams do
        // not); the stream then resumes from its revision.
        let _ = self.poll().await;
        let mut stream_failures = 0u32;
        let mut polls = 0u32;
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            let delay = if self.streaming && stream_failures < self.failures_before_polling {
                match self.stream_once().await {
                    StreamEnd::Shutdown => return,
                    StreamEnd::Dropped { healthy: true } => {
                        stream_failures = 0;
                        self.backoff.reset();
                    }
                    StreamEnd::Dropped { healthy: false } | StreamEnd::Refused(_) => stream_failures += 1,
                    // The server is away: keep knocking at the stream, it is what comes back.
                    StreamEnd::Unreachable => {}
                }
                self.shared.set_connected(false);
                if stream_failures >= self.failures_before_polling {
                    tracing::info!("streaming unavailable; polling instead");
                    polls = 0;
                    Duration::ZERO
                } else {
                    self.backoff.next()
                }
            } else {
                let ok = self.poll().await;
                polls += 1;
                if self.streaming && ok && polls >= POLLS_BEFORE_STREAM_RETRY {
                    stream_failures = 0;
                }
                self.poll_interval
            };
            if self.sleep(delay).await {
                return;
            }
        }
    }

    /// Sleeps for `delay`; true when shutdown came first.
    async fn sleep(&mut self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = self.shutdown.wait_for(|s| *s) => true,
        }
    }

    /// One `GET /api/v1/sdk/config` with `If-None-Match`; true when the server answered.
    async fn poll(&mut self) -> bool {
        let mut request = self.http.get(self.config_url.clone()).bearer_auth(&self.token).timeout(self.request_timeout);
        if let Some(etag) = &self.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "snapshot request failed");
                self.shared.set_connected(false);
                return false;
            }
        };
        let status = response.status();
        let etag = response.headers().get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
        if status == StatusCode::NOT_MODIFIED {
            self.shared.set_connected(true);
            self.shared.confirm();
            return true;
        }
        if !status.is_success() {
            tracing::warn!(%status, "the server refused the snapshot request");
            self.shared.set_connected(false);
            return false;
        }
        let snapshot = match response.bytes().await.map(|b| serde_json::from_slice::<Snapshot>(&b)) {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "unexpected snapshot payload");
                return false;
            }
            Err(e) => {
                tracing::debug!(error = %e, "snapshot body failed");
                self.shared.set_connected(false);
                return false;
            }
        };
        self.etag = etag;
        self.shared.set_connected(true);
        self.take_snapshot(snapshot).await;
        true
    }

    /// Serves a snapshot from the server (unless it is exactly what is served already).
    async fn take_snapshot(&self, snapshot: Snapshot) {
        let same = self.shared.current.load().as_deref().is_some_and(|l| l.snapshot == snapshot);
        if same {
            self.shared.confirm();
            return;
        }
        self.shared.install(snapshot.clone(), Source::Server);
        self.save(snapshot).await;
    }

    async fn save(&self, snapshot: Snapshot) {
        let Some(path) = self.shared.cache_path.clone() else { return };
        let written = tokio::task::spawn_blocking(move || disk::write_cache(&path, &snapshot)).await;
        match written {
            Ok(Err(e)) => tracing::warn!(error = %e, "could not write the flag cache"),
            Err(e) => tracing::warn!(error = %e, "the flag cache writer failed"),
            Ok(Ok(())) => {}
        }
    }

    /// One stream connection, read until it ends.
    async fn stream_once(&mut self) -> StreamEnd {
        let mut request =
            self.http.get(self.stream_url.clone()).bearer_auth(&self.token).header(ACCEPT, "text/event-stream");
        // Resume only from what the server itself sent (now or in an earlier run): a bootstrap
        // file's revision means nothing to it.
        let resume = {
            let status = self.shared.status.borrow();
            status.revision.filter(|_| matches!(status.source, Source::Server | Source::Cache))
        };
        if let Some(revision) = resume {
            request = request.header("Last-Event-ID", revision.to_string());
        }
        let response = tokio::select! {
            r = tokio::time::timeout(self.request_timeout, request.send()) => r,
            _ = self.shutdown.wait_for(|s| *s) => return StreamEnd::Shutdown,
        };
        let response = match response {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "stream connection failed");
                return StreamEnd::Unreachable;
            }
            Err(_) => return StreamEnd::Unreachable,
        };
        if response.status() != StatusCode::OK {
            tracing::warn!(status = %response.status(), "the server refused the stream");
            return StreamEnd::Refused(response.status());
        }
        self.shared.set_connected(true);
        if resume.is_some() {
            // The server sends nothing on connect when we are current, and the missed patches
            // otherwise; either way what we serve is now the server's word.
            self.shared.confirm();
        }
        let mut body = response.bytes_stream();
        let mut parser = SseParser::new();
        let opened = tokio::time::Instant::now();
        let mut got_bytes = false;
        let healthy = |got_bytes: bool| got_bytes || opened.elapsed() >= HEALTHY_STREAM;
        loop {
            let chunk = tokio::select! {
                c = tokio::time::timeout(self.idle_timeout, body.next()) => c,
                _ = self.shutdown.wait_for(|s| *s) => return StreamEnd::Shutdown,
            };
            let bytes = match chunk {
                Ok(Some(Ok(bytes))) => bytes,
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "stream broke");
                    return StreamEnd::Dropped { healthy: healthy(got_bytes) };
                }
                Ok(None) => return StreamEnd::Dropped { healthy: healthy(got_bytes) },
                Err(_) => {
                    tracing::info!("stream silent for too long; reconnecting");
                    return StreamEnd::Dropped { healthy: true };
                }
            };
            got_bytes |= !bytes.is_empty();
            for item in parser.feed(&bytes) {
                let SseItem::Event(event) = item else { continue };
                match event.event.as_str() {
                    "snapshot" => match serde_json::from_str::<Snapshot>(&event.data) {
                        Ok(snapshot) => self.take_snapshot(snapshot).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "unexpected snapshot event");
                            return StreamEnd::Dropped { healthy: false };
                        }
                    },
                    // Without a base to apply it to, start over from a snapshot.
                    "patch" if !self.take_patch(&event.data).await => return StreamEnd::Dropped { healthy: false },
                    "shutdown" => return StreamEnd::Dropped { healthy: true },
                    _ => {}
                }
            }
        }
    }

    /// Applies a patch event; false when it cannot be applied.
    async fn take_patch(&self, data: &str) -> bool {
        let patch: Patch = match serde_json::from_str(data) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "unexpected patch event");
                return false;
            }
        };
        let base = self.shared.current.load_full();
        let Some(base) = base.filter(|_| matches!(self.shared.status.borrow().source, Source::Server | Source::Cache))
        else {
            return false;
        };
        if patch.revision <= base.revision() {
            return true;
        }
        let next = patch.apply(&base.snapshot);
        self.shared.install(next.clone(), Source::Server);
        self.save(next).await;
        true
    }
}

/// Posts metric batches to the server.
#[derive(Debug, Clone)]
pub(crate) struct MetricsSender {
    http: reqwest::Client,
    url: Url,
    token: String,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl MetricsSender {
    pub(crate) fn new(connection: &Connection, metrics: Arc<Metrics>) -> Self {
        MetricsSender {
            http: connection.http.clone(),
            url: endpoint(&connection.base, "/api/v1/sdk/metrics"),
            token: connection.token.clone(),
            timeout: connection.request_timeout,
            metrics,
        }
    }

    /// Collects what was counted and sends it. A batch the server refuses as bad is dropped
    /// (and counted); one it cannot take now goes back into the pending aggregate.
    pub(crate) async fn flush(&self) {
        self.metrics.collect();
        let mut batches = self.metrics.take_batches().into_iter();
        while let Some(batch) = batches.next() {
            let sent = self
                .http
                .post(self.url.clone())
                .bearer_auth(&self.token)
                .timeout(self.timeout)
                .json(&batch)
                .send()
                .await;
            match sent.map(|r| r.status()) {
                Ok(status) if status.is_success() => self.metrics.sent(&batch),
                // Retrying will not make a refused batch acceptable.
                Ok(status) if status.is_client_error() && !matches!(status.as_u16(), 408 | 429) => {
                    tracing::warn!(%status, "the server refused a metrics batch; dropped");
                    self.metrics.rejected(&batch);
                }
                other => {
                    if let Err(e) = &other {
                        tracing::debug!(error = %e, "metrics not sent; kept for the next flush");
                    }
                    self.metrics.restore(batch);
                    for rest in batches {
                        self.metrics.restore(rest);
                    }
                    return;
                }
            }
        }
    }
}

/// Sends metrics every interval, and once more at shutdown.
#[derive(Debug)]
pub(crate) struct MetricsFlusher {
    sender: MetricsSender,
    interval: Duration,
    shutdown: watch::Receiver<bool>,
}

impl MetricsFlusher {
    pub(crate) fn new(sender: MetricsSender, interval: Duration, shutdown: watch::Receiver<bool>) -> Self {
        MetricsFlusher { sender, interval, shutdown }
    }

    pub(crate) async fn run(mut self) {
        loop {
            let stop = tokio::select! {
                _ = tokio::time::sleep(self.interval) => false,
                _ = self.shutdown.wait_for(|s| *s) => true,
            };
            self.sender.flush().await;
            if stop {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_a_base_path() {
        let base = Url::parse("http://h:1/dimmer").unwrap();
        assert_eq!(endpoint(&base, "/api/v1/sdk/config").as_str(), "http://h:1/dimmer/api/v1/sdk/config");
        let base = Url::parse("http://h:1").unwrap();
        assert_eq!(endpoint(&base, "/api/v1/sdk/stream").as_str(), "http://h:1/api/v1/sdk/stream");
    }
}
