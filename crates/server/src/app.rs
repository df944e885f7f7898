//! The composition root: builds the state, starts the background tasks it owns (snapshot
//! refresher, release-plan loop, webhook delivery), serves HTTP until the shutdown signal, then
//! stops everything in order (streams are closed cleanly).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::AppState;
use crate::service::guardian::Guardian;
use crate::service::hub::Hub;
use crate::service::limits::{Limiters, RateLimits};
use crate::service::metrics::Metrics;
use crate::service::releases::Releases;
use crate::service::tokens::TokenCache;
use crate::service::webhooks::{Notifier, Target, Worker};
use dimmer_domain::outcomes::Retention;
use dimmer_domain::{Clock, SystemClock};
use dimmer_store::Store;

/// What the server is run with beyond its store.
#[derive(Clone)]
pub struct Options {
    /// Where time comes from (a manual clock in tests and `dimmer demo`).
    pub clock: Arc<dyn Clock>,
    /// Receivers of release events.
    pub webhooks: Vec<Target>,
    /// How often the guard and release-plan loop judges guards and looks for plans to advance.
    pub plan_interval: Duration,
    /// How long outcome metrics are kept, and when they are merged.
    pub retention: Retention,
    /// How often outcome metrics are rolled up.
    pub rollup_interval: Duration,
    /// The flag policy enforced on writes and shown at `GET /api/v1/policy`.
    pub policy: crate::service::policy::ServerPolicy,
    /// Rate limits per token and per client address (refilled by `clock`).
    pub rate_limits: RateLimits,
    /// How long a request may take before it is answered 408 (`None`: no limit; streams are
    /// never cut).
    pub request_timeout: Option<Duration>,
    /// Whether `/metrics` needs a token.
    pub metrics_token_required: bool,
    /// The web origins allowed to call the OFREP and SDK APIs from a browser (CORS).
    pub cors_origins: crate::config::CorsOrigins,
    /// The span kinds whose spans count as outcomes for OTLP (OTLP's numbers; server and
    /// consumer by default, so that one request counts once).
    pub otlp_span_kinds: Vec<i32>,
    /// The Prometheus-compatible server `promql:` guards query (`None`: they report `no_data`).
    pub prometheus_url: Option<String>,
}

pub use crate::config::REQUEST_TIMEOUT;

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            webhooks: Vec::new(),
            plan_interval: Duration::from_secs(1),
            retention: Retention::default(),
            rollup_interval: Duration::from_secs(60),
            policy: crate::service::policy::ServerPolicy::default(),
            rate_limits: RateLimits::default(),
            request_timeout: Some(REQUEST_TIMEOUT),
            metrics_token_required: false,
            cors_origins: crate::config::CorsOrigins::default(),
            otlp_span_kinds: vec![dimmer_protocol::otlp::kind::SERVER, dimmer_protocol::otlp::kind::CONSUMER],
            prometheus_url: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("webhooks", &self.webhooks.len())
            .field("plan_interval", &self.plan_interval)
            .field("policy", &self.policy.source)
            .field("rate_limits", &self.rate_limits)
            .field("request_timeout", &self.request_timeout)
            .field("metrics_token_required", &self.metrics_token_required)
            .field("cors_origins", &self.cors_origins)
            .finish_non_exhaustive()
    }
}

/// Prepares a store for serving: the default environments and, on the very first start, an
/// empty `internal` segment for the canary stage of the built-in plan templates.
pub async fn first_start(store: &dyn Store) -> dimmer_store::StoreResult<()> {
    let fresh = store.list_environments().await?.is_empty();
    store.ensure_environments(&dimmer_store::DEFAULT_ENVIRONMENTS).await?;
    // Keys stored before the key rule existed keep working; say which ones clients may fail on.
    let flags = store.list_flags(true).await?;
    let segments = store.list_segments().await?;
    let bad = dimmer_engine::keys::bad_keys("flag", flags.iter().map(|f| f.key.as_str()))
        .into_iter()
        .chain(dimmer_engine::keys::bad_keys("segment", segments.iter().map(|s| s.key.as_str())));
    for problem in bad {
        tracing::warn!("{problem}");
    }
    if fresh && store.get_segment("internal").await?.is_none() {
        let segment = dimmer_engine::Segment {
            description: "Your organisation's own users, exposed first by the standard release plans: add their \
                          keys to `included`, or a rule such as `email ends_with @example.com`."
                .into(),
            ..dimmer_engine::Segment::default()
        };
        let meta = dimmer_store::ChangeMeta { actor: "system".into(), reason: Some("first start".into()) };
        store.create_segment("internal", &segment, &meta).await?;
    }
    Ok(())
}

/// The router for `store`, its state, and the webhook worker to run; the shutdown receiver ends
/// SSE streams when it flips.
pub fn app(store: Arc<dyn Store>, options: &Options, shutdown: watch::Receiver<bool>) -> (Router, AppState, Worker) {
    let (notifier, worker) = Notifier::new(options.webhooks.clone());
    let releases = Arc::new(Releases::new(store.clone(), options.clock.clone(), notifier.clone()));
    let metrics = Arc::new(Metrics::default());
    let guardian = Arc::new(
        Guardian::new(store.clone(), releases.clone(), notifier.clone(), metrics.clone())
            .with_prometheus(options.prometheus_url.as_deref()),
    );
    let hub = Arc::new(Hub::new(store.clone()));
    let outcomes = Arc::new(crate::service::outcomes::Outcomes::new(
        store.clone(),
        hub.clone(),
        metrics.clone(),
        options.clock.clone(),
        options.otlp_span_kinds.clone(),
    ));
    let state = AppState {
        hub,
        outcomes,
        releases,
        guardian,
        notifier,
        store,
        tokens: Arc::new(TokenCache::new(options.clock.clone())),
        metrics,
        policy: options.policy.clone(),
        clock: options.clock.clone(),
        shutdown,
        limiters: Arc::new(Limiters::new(options.rate_limits, options.clock.clone())),
        request_timeout: options.request_timeout,
        metrics_token_required: options.metrics_token_required,
    };
    // The web console (under `/`) beside the API (under `/api` and `/ofrep`).
    let router = crate::api::router(state.clone(), &options.cors_origins).merge(crate::console::router(state.clone()));
    (router, state, worker)
}

/// Serves the API on `listener` with default options until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with(listener, store, Options::default(), shutdown).await
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn run_with(
    listener: TcpListener,
    store: Arc<dyn Store>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (router, state, worker) = app(store.clone(), &options, stop_rx.clone());
    let refresher = tokio::spawn(state.hub.clone().run_refresher(store.subscribe(), stop_rx.clone()));
    let guards = tokio::spawn(state.guardian.clone().run_loop(options.plan_interval, stop_rx.clone()));
    let rollup = tokio::spawn(Guardian::run_rollup(
        store.clone(),
        options.clock.clone(),
        options.retention,
        options.rollup_interval,
        stop_rx.clone(),
    ));
    let webhooks = tokio::spawn(worker.run(stop_rx));
    let served = serve(listener, router, shutdown, stop_tx).await;
    let _ = refresher.await;
    let _ = guards.await;
    let _ = rollup.await;
    let _ = webhooks.await;
    served
}

/// Request heads larger than this are refused (hyper answers 431): a connection's read buffer
/// never grows past it. hyper's floor is 8 KiB, its default about 400 KiB.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long a connection may wait for a request's head, or take to send it: a keep-alive
/// connection idle this long is closed, and a slow client cannot hold a connection and its
/// buffer (hyper's default; `axum::serve` set no timer, so it had no such limit).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until `shutdown` completes, then flips `stop` (every SSE stream and
/// background loop ends), lets each connection finish its request in flight and waits for all
/// of them.
///
/// Not `axum::serve`: an idle SSE subscriber is a connection, and its memory is set here
/// (`docs/benchmarks.md`). An event stream's `GET` is served by [`crate::sse_connection`],
/// holding no HTTP buffers while it streams; every other connection by hyper's HTTP/1.1
/// connection directly (no protocol sniffing, a bounded head, bodies written from their shared
/// bytes without a copy through a connection buffer: `writev`). At shutdown a stream sends its
/// last event and ends; a client still sending a stream request's head holds the shutdown for
/// at most [`HEAD_TIMEOUT`].
async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stop: watch::Sender<bool>,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .writev(true)
        .keep_alive(true);
    let http = Arc::new(http);
    // Each connection holds a receiver; `closed()` resolves when the last one has gone.
    let (open_tx, open_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or memory, or a connection reset before it was
                    // accepted: the listener itself is fine; wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // SSE frames are written whole, so small segments are not a concern; latency is.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let http = Arc::clone(&http);
        let mut stopping = stop.subscribe();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let _open = &open;
            // An event stream's `GET` is served on a lean path of its own (a subscriber then holds
            // no hyper buffers); it ends with the stream, which ends at shutdown.
            if crate::sse_connection::is_stream_request(&stream, HEAD_TIMEOUT).await {
                let served = crate::sse_connection::serve(stream, peer, router, MAX_HEAD_BYTES, HEAD_TIMEOUT);
                if let Err(e) = served.await {
                    tracing::debug!(error = %e, "event-stream connection ended with an error");
                }
                return;
            }
            // With each request, the connection's peer address: the per-address rate limit and
            // sign-in warnings read it as `ConnectInfo`.
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                // A `Router` is always ready (its `poll_ready` returns `Ready` unconditionally), so
                // it is called without waiting for readiness, as a fresh clone per request.
                tower_service::Service::call(&mut router.clone(), request)
            });
            let mut connection = std::pin::pin!(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                // `stop` flipped (or its sender is gone): finish the request in flight, then close.
                _ = stopping.wait_for(|stop| *stop) => connection.as_mut().graceful_shutdown(),
            }
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: closing streams");
    // Ends every SSE stream, the refresher, the plan loop and webhook delivery (after a grace
    // period for deliveries in flight); in-flight requests finish.
    stop.send_replace(true);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}
