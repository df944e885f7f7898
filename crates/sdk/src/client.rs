//! The client: its builder, the typed getters (local evaluation, no network, no await, no
//! lock), readiness, change listeners and the outcome-metrics API.
//!
//! The current configuration sits in an `ArcSwapOption` (in `shared`): a getter loads it without
//! a lock and evaluates through the engine; the synchronizer swaps in a new one when a change
//! arrives.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dimmer_engine::{Context, Evaluation, Reason, evaluate_with_random};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::disk;
use crate::error::{Error, ErrorCode};
use crate::metrics::{Metrics, MetricsStats, Outcome, OutcomeTimer, SlotMemo};
use crate::shared::{ChangeEvent, ListenerId, Shared, Status};
use crate::state::{FlagInfo, Loaded, Snapshot, Source};
use crate::sync::{Connection, MetricsFlusher, MetricsSender, SyncOptions, Synchronizer};

/// Options for a [`Client`]; start with [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) streaming: bool,
    pub(crate) poll_interval: Duration,
    pub(crate) backoff: (Duration, Duration),
    pub(crate) stream_idle_timeout: Duration,
    pub(crate) stream_failures_before_polling: u32,
    pub(crate) cache_path: Option<PathBuf>,
    pub(crate) bootstrap_file: Option<PathBuf>,
    pub(crate) bootstrap: Option<Snapshot>,
    pub(crate) environment: Option<String>,
    pub(crate) metrics: bool,
    pub(crate) flush_interval: Duration,
    pub(crate) max_pending_metrics: usize,
    pub(crate) offline: bool,
}

impl ClientBuilder {
    /// How long to wait for a TCP (and TLS) connection. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a snapshot poll or a metrics post may take. Default 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Whether to stream changes (the default) or only poll.
    pub fn streaming(mut self, on: bool) -> Self {
        self.streaming = on;
        self
    }

    /// How often to poll when not streaming. Default 30 s.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The reconnection delay: from `min`, doubling per failure up to `max`, with jitter.
    /// Default 500 ms to 30 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max);
        self
    }

    /// A stream silent for this long (the server sends a heartbeat every 15 s) is treated as
    /// dead and reconnected. Default 45 s.
    pub fn stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.stream_idle_timeout = timeout;
        self
    }

    /// After this many stream attempts in a row are refused or end without an event, poll
    /// instead (trying the stream again now and then). Default 3.
    pub fn stream_failures_before_polling(mut self, failures: u32) -> Self {
        self.stream_failures_before_polling = failures.max(1);
        self
    }

    /// Where to keep the last-known-good configuration, so that a cold start with the server
    /// down still serves it. Written atomically on every change.
    pub fn cache_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.cache_path = Some(path.into());
        self
    }

    /// A snapshot or flags file to serve until the server answers (when there is no cache).
    pub fn bootstrap_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.bootstrap_file = Some(path.into());
        self
    }

    /// A configuration to serve until the server answers (when there is no cache).
    pub fn bootstrap(mut self, snapshot: Snapshot) -> Self {
        self.bootstrap = Some(snapshot);
        self
    }

    /// The environment a plain flags file is evaluated for. Default `production`.
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// Whether to record and send outcome metrics. Default on (off when offline).
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// How often metrics are sent. Default 10 s; they are also sent by [`Client::close`].
    pub fn metrics_flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// The most flag/variant pairs held while the server cannot take them; more are dropped
    /// and counted. Default 10,000.
    pub fn max_pending_metrics(mut self, entries: usize) -> Self {
        self.max_pending_metrics = entries;
        self
    }

    /// No network at all: serve the bootstrap (or cache) only. Useful in tests.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Builds the client: loads the cache or bootstrap, then (unless offline) starts the
    /// synchronizer and the metrics flusher on the current Tokio runtime. It does not wait for
    /// the server; see [`Client::wait_ready`].
    pub fn build(self) -> Result<Client, Error> {
        let runtime = if self.offline {
            None
        } else {
            Some(tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?)
        };
        let base = reqwest::Url::parse(self.base.trim_end_matches('/'))
            .map_err(|e| Error::InvalidUrl { url: self.base.clone(), reason: e.to_string() })?;
        if base.cannot_be_a_base() {
            return Err(Error::InvalidUrl { url: self.base.clone(), reason: "cannot have a path".into() });
        }
        // Threads that evaluate get a counter shard of their own up to this many (then share one):
        // room for a runtime's workers plus a few more threads per core.
        let shards = std::thread::available_parallelism().map(|n| n.get() * 2).unwrap_or(8).clamp(4, 64);
        let metrics = Arc::new(Metrics::new(shards, self.max_pending_metrics, self.metrics && !self.offline));
        let shared = Arc::new(Shared::new(metrics, shards, self.cache_path.clone()));

        // Last-known-good from the server first, then what the application shipped.
        let cached = self.cache_path.as_deref().and_then(|path| match disk::read_file(path, None) {
            Ok(snapshot) => Some(snapshot),
            Err(e) => {
                if path.exists() {
                    tracing::warn!(error = %e, "ignoring the flag cache");
                }
                None
            }
        });
        let initial = match (cached, self.bootstrap.clone(), self.bootstrap_file.as_deref()) {
            (Some(snapshot), _, _) => Some((snapshot, Source::Cache)),
            (None, Some(snapshot), _) => Some((snapshot, Source::Bootstrap)),
            (None, None, Some(path)) => Some((disk::read_file(path, self.environment.as_deref())?, Source::Bootstrap)),
            (None, None, None) => None,
        };
        if let Some((snapshot, source)) = initial {
            shared.install(snapshot, source);
        }

        let (shutdown, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut sender = None;
        if let Some(runtime) = runtime {
            let http = reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .user_agent(crate::metrics::SDK_NAME)
                .build()?;
            let connection =
                Connection { http, base, token: self.token.clone(), request_timeout: self.request_timeout };
            let options = SyncOptions {
                streaming: self.streaming,
                poll_interval: self.poll_interval,
                backoff: self.backoff,
                idle_timeout: self.stream_idle_timeout,
                failures_before_polling: self.stream_failures_before_polling,
            };
            let sync = Synchronizer::new(&connection, options, shared.clone(), shutdown.subscribe());
            tasks.push(runtime.spawn(sync.run()));
            if shared.metrics.enabled {
                let metrics_sender = MetricsSender::new(&connection, shared.metrics.clone());
                let flusher = MetricsFlusher::new(metrics_sender.clone(), self.flush_interval, shutdown.subscribe());
                tasks.push(runtime.spawn(flusher.run()));
                sender = Some(metrics_sender);
            }
        }
        Ok(Client { inner: Arc::new(Inner { shared, shutdown, tasks: Mutex::new(tasks), sender }) })
    }
}

/// A thread's copy of one client's current configuration, valid while the client's generation
/// is unchanged. It saves a getter the shared load (a write to a debt slot and a re-check) on
/// every call: checking the generation reads one rarely written word. A thread that evaluates
/// for several clients in turn reloads on every switch, which is still correct.
struct Cached {
    client: u64,
    generation: u64,
    loaded: Option<Arc<Loaded>>,
    /// Counter slots already found for this configuration.
    memo: SlotMemo,
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Cached>> = const { std::cell::RefCell::new(None) };
}

/// Owns the background tasks; dropping the last client stops them.
#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    sender: Option<MetricsSender>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Tasks see the signal and end on their own; nothing here can panic or block.
        self.shutdown.send_replace(true);
    }
}

/// A Dimmer client: evaluates flags locally from a configuration kept current in the
/// background. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// An evaluation with the reason behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Details<T> {
    /// The flag's key.
    pub flag_key: String,
    /// The value served: the flag's, or the caller's default.
    pub value: T,
    /// The variant served, when a variant was.
    pub variant: Option<String>,
    /// Why.
    pub reason: Reason,
    /// What went wrong, with reason `ERROR`.
    pub error_code: Option<ErrorCode>,
    /// A message for the error.
    pub error_message: Option<String>,
    /// The id of the rule that decided, if it has one.
    pub rule_id: Option<String>,
    /// The revision of the configuration that answered.
    pub revision: Option<i64>,
    /// The environment of that configuration.
    pub environment: Option<String>,
    /// The flag's kind and owner, when the flag is known.
    pub flag_info: Option<FlagInfo>,
}

impl<T> Details<T> {
    fn fallback(key: &str, value: T, code: ErrorCode, message: &str) -> Details<T> {
        Details {
            flag_key: key.to_owned(),
            value,
            variant: None,
            reason: Reason::Error,
            error_code: Some(code),
            error_message: Some(message.to_owned()),
            rule_id: None,
            revision: None,
            environment: None,
            flag_info: None,
        }
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    v.as_bool()
}
fn as_string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}
fn as_f64(v: &Value) -> Option<f64> {
    v.as_f64()
}
fn as_i64(v: &Value) -> Option<i64> {
    v.as_i64()
}
fn as_json(v: &Value) -> Option<Value> {
    Some(v.clone())
}

impl Client {
    /// A builder for a client of the server at `base_url` (e.g. `http://localhost:8080`) with an
    /// sdk token.
    pub fn builder(base_url: impl Into<String>, sdk_token: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: base_url.into(),
            token: sdk_token.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            streaming: true,
            poll_interval: Duration::from_secs(30),
            backoff: (Duration::from_millis(500), Duration::from_secs(30)),
            stream_idle_timeout: Duration::from_secs(45),
            stream_failures_before_polling: 3,
            cache_path: None,
            bootstrap_file: None,
            bootstrap: None,
            environment: None,
            metrics: true,
            flush_interval: Duration::from_secs(10),
            max_pending_metrics: 10_000,
            offline: false,
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Evaluates `key` and hands the engine's answer to `f`, counting the evaluation when `f`
    /// says a variant was served. No network, no await, no lock.
    #[inline]
    fn with_evaluation<R>(
        &self,
        key: &str,
        context: &Context,
        f: impl FnOnce(Option<(&Loaded, &Evaluation<'_>)>) -> (R, bool),
    ) -> R {
        let shared = self.shared();
        let run = |loaded: Option<&Loaded>, memo: Option<&mut SlotMemo>| {
            let Some(loaded) = loaded else { return f(None).0 };
            // A fresh number per evaluation for `$random` (the engine has no random source).
            let eval = evaluate_with_random(&loaded.compiled, key, context, Some(crate::random::next_u32()));
            let (out, served) = f(Some((loaded, &eval)));
            if served
                && shared.metrics.enabled
                && let Some(variant) = eval.variant
            {
                match memo {
                    Some(memo) => loaded.counters.count_memo(key, variant, memo),
                    None => loaded.counters.count(key, variant),
                }
            }
            out
        };
        let generation = shared.generation();
        CURRENT.with(|cell| match cell.try_borrow_mut() {
            Ok(mut cached) => {
                let fresh = cached.as_ref().is_some_and(|c| c.client == shared.id() && c.generation == generation);
                if !fresh {
                    let loaded = shared.current.load_full();
                    *cached = Some(Cached { client: shared.id(), generation, loaded, memo: SlotMemo::new() });
                }
                match cached.as_mut() {
                    Some(Cached { loaded, memo, .. }) => run(loaded.as_deref(), Some(memo)),
                    None => run(None, None),
                }
            }
            // Not reachable (nothing evaluates inside an evaluation), but never worth a panic.
            Err(_) => run(shared.current.load().as_deref(), None),
        })
    }

    fn value<T>(&self, key: &str, context: &Context, default: T, convert: fn(&Value) -> Option<T>) -> T {
        self.with_evaluation(key, context, |answer| match answer.and_then(|(_, e)| e.value).and_then(convert) {
            Some(v) => (v, true),
            None => (default, false),
        })
    }

    /// Evaluates into details; `convert` says whether the served value has the wanted type.
    pub(crate) fn details<T>(
        &self,
        key: &str,
        context: &Context,
        default: T,
        convert: impl FnOnce(&Value) -> Option<T>,
    ) -> Details<T> {
        self.with_evaluation(key, context, |answer| {
            let Some((loaded, eval)) = answer else {
                let d = Details::fallback(key, default, ErrorCode::ProviderNotReady, "no configuration yet");
                return (d, false);
            };
            let mut d = Details {
                flag_key: key.to_owned(),
                value: default,
                variant: None,
                reason: eval.reason,
                error_code: eval.error.map(ErrorCode::from),
                error_message: eval.error_message.map(str::to_owned),
                rule_id: eval.rule_id.map(str::to_owned),
                revision: Some(loaded.revision()),
                environment: Some(loaded.snapshot.environment.clone()),
                flag_info: loaded.info.get(key).cloned(),
            };
            if eval.error == Some(dimmer_engine::ErrorCode::FlagNotFound) {
                d.error_message = Some(format!("flag \"{key}\" was not found"));
            }
            let Some(value) = eval.value else { return (d, false) };
            match convert(value) {
                Some(v) => {
                    d.value = v;
                    d.variant = eval.variant.map(str::to_owned);
                    (d, true)
                }
                None => {
                    d.reason = Reason::Error;
                    d.error_code = Some(ErrorCode::TypeMismatch);
                    d.error_message = Some(format!("flag \"{key}\" does not serve this type: {value}"));
                    d.rule_id = None;
                    (d, false)
                }
            }
        })
    }

    /// A boolean flag's value, or `default` when it cannot be served as a boolean.
    pub fn bool_value(&self, key: &str, context: &Context, default: bool) -> bool {
        self.value(key, context, default, as_bool)
    }

    /// A string flag's value, or `default`.
    pub fn string_value(&self, key: &str, context: &Context, default: &str) -> String {
        self.with_evaluation(key, context, |answer| match answer.and_then(|(_, e)| e.value).and_then(Value::as_str) {
            Some(v) => (v.to_owned(), true),
            None => (default.to_owned(), false),
        })
    }

    /// A number flag's value, or `default`.
    pub fn number_value(&self, key: &str, context: &Context, default: f64) -> f64 {
        self.value(key, context, default, as_f64)
    }

    /// An integer flag's value, or `default` (a number with a fraction is a type mismatch).
    pub fn int_value(&self, key: &str, context: &Context, default: i64) -> i64 {
        self.value(key, context, default, as_i64)
    }

    /// Any flag's value as JSON, or `default`.
    pub fn json_value(&self, key: &str, context: &Context, default: Value) -> Value {
        self.value(key, context, default, as_json)
    }

    /// [`bool_value`](Self::bool_value) with the variant, reason and error.
    pub fn bool_details(&self, key: &str, context: &Context, default: bool) -> Details<bool> {
        self.details(key, context, default, as_bool)
    }

    /// [`string_value`](Self::string_value) with the variant, reason and error.
    pub fn string_details(&self, key: &str, context: &Context, default: &str) -> Details<String> {
        self.details(key, context, default.to_owned(), as_string)
    }

    /// [`number_value`](Self::number_value) with the variant, reason and error.
    pub fn number_details(&self, key: &str, context: &Context, default: f64) -> Details<f64> {
        self.details(key, context, default, as_f64)
    }

    /// [`int_value`](Self::int_value) with the variant, reason and error.
    pub fn int_details(&self, key: &str, context: &Context, default: i64) -> Details<i64> {
        self.details(key, context, default, as_i64)
    }

    /// [`json_value`](Self::json_value) with the variant, reason and error.
    pub fn json_details(&self, key: &str, context: &Context, default: Value) -> Details<Value> {
        self.details(key, context, default, as_json)
    }

    /// What the client serves and whether it reaches the server.
    pub fn status(&self) -> Status {
        *self.shared().status.borrow()
    }

    /// The keys of the flags in the configuration being served.
    pub fn flag_keys(&self) -> Vec<String> {
        self.shared()
            .current
            .load()
            .as_deref()
            .map(|l| l.compiled.keys().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Waits until the server has delivered (or confirmed) a configuration, at most `timeout`.
    /// On timeout the client keeps serving what it has (cache, bootstrap, or defaults) and keeps
    /// trying in the background; the error says what it serves.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.shared().status.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|s| s.source == Source::Server)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::NotReady { waited: timeout, serving: self.status().source }),
        }
    }

    /// Calls `listener` after every configuration change, on the synchronizer's task (keep it
    /// short; a panic in it is caught and logged).
    pub fn on_change(&self, listener: impl Fn(&ChangeEvent) + Send + Sync + 'static) -> ListenerId {
        self.shared().add_listener(listener)
    }

    /// Removes a listener.
    pub fn remove_listener(&self, id: ListenerId) {
        self.shared().remove_listener(id);
    }

    /// Configuration changes as a channel (bounded: a receiver that falls behind skips events
    /// and is told how many).
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.shared().subscribe()
    }

    /// Starts timing the work done for the user served `details`; finish it with
    /// [`OutcomeTimer::success`] or [`OutcomeTimer::error`].
    pub fn start_timer<T>(&self, details: &Details<T>) -> OutcomeTimer {
        OutcomeTimer::start(self.metrics_if_enabled(), &details.flag_key, details.variant.as_deref())
    }

    /// Runs `work`, recording its outcome (`Ok` or `Err`) and latency against the variant in
    /// `details`.
    pub fn measure<T, R, E>(&self, details: &Details<T>, work: impl FnOnce() -> Result<R, E>) -> Result<R, E> {
        let timer = self.start_timer(details);
        let result = work();
        timer.finish_with(if result.is_ok() { Outcome::Success } else { Outcome::Error });
        result
    }

    /// [`measure`](Self::measure) for async work.
    pub async fn measure_async<T, R, E>(
        &self,
        details: &Details<T>,
        work: impl Future<Output = Result<R, E>>,
    ) -> Result<R, E> {
        let timer = self.start_timer(details);
        let result = work.await;
        timer.finish_with(if result.is_ok() { Outcome::Success } else { Outcome::Error });
        result
    }

    /// Records an outcome (and its latency, when known) against the variant in `details`.
    pub fn record_outcome<T>(&self, details: &Details<T>, outcome: Outcome, latency: Option<Duration>) {
        if let (Some(metrics), Some(variant)) = (self.metrics_if_enabled(), details.variant.as_deref()) {
            metrics.record(&details.flag_key, variant, outcome, latency);
        }
    }

    /// Records a named event (engagement, conversion), with an optional value that is summed,
    /// against the variant in `details`.
    pub fn track<T>(&self, details: &Details<T>, event: &str, value: Option<f64>) {
        if let (Some(metrics), Some(variant)) = (self.metrics_if_enabled(), details.variant.as_deref()) {
            metrics.track(&details.flag_key, variant, event, value);
        }
    }

    fn metrics_if_enabled(&self) -> Option<Arc<Metrics>> {
        Some(self.shared().metrics.clone()).filter(|m| m.enabled)
    }

    /// Sends the metrics counted so far now, rather than at the next interval.
    pub async fn flush_metrics(&self) {
        if let Some(sender) = &self.inner.sender {
            sender.flush().await;
        }
    }

    /// Counters about metric delivery: sent, rejected, dropped, pending.
    pub fn metrics_stats(&self) -> MetricsStats {
        self.shared().metrics.stats()
    }

    /// Stops the background tasks, sending the metrics counted so far first. Getters keep
    /// serving the last configuration afterwards.
    pub async fn close(&self) {
        self.inner.shutdown.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = match self.inner.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for task in tasks {
            let _ = task.await;
        }
    }
}
