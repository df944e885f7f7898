//! The composition root: builds the state, starts the background tasks it owns, serves HTTP
//! until the shutdown signal, then stops everything in order (streams are closed cleanly).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::TokenCache;
use crate::metrics::Metrics;
use crate::state::{AppState, Hub};
use crate::store::Store;

/// The router for `store`, with a shutdown receiver that ends SSE streams when it flips.
pub fn app(store: Arc<dyn Store>, shutdown: watch::Receiver<bool>) -> (Router, AppState) {
    let state = AppState {
        hub: Arc::new(Hub::new(store.clone())),
        store,
        tokens: Arc::new(TokenCache::default()),
        metrics: Arc::new(Metrics::default()),
        shutdown,
    };
    (crate::api::router(state.clone()), state)
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (router, state) = app(store.clone(), stop_rx.clone());
    let refresher = tokio::spawn(state.hub.clone().run_refresher(store.subscribe(), stop_rx));
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: closing streams");
            // Ends every SSE stream and the refresher; in-flight requests finish.
            let _ = stop_tx.send(true);
        })
        .await;
    let _ = refresher.await;
    served
}
