//! The SDK API: the environment's snapshot (`GET /api/v1/sdk/config`, with ETag/304) and the
//! change stream (`GET /api/v1/sdk/stream`, server-sent events).
//!
//! The stream sends a `snapshot` event on connect, then one `patch` event per revision with the
//! revision as the event id. `Last-Event-ID` resumes with only the missed revisions, or a
//! snapshot when the change feed no longer reaches back that far. A subscriber that falls
//! behind is not buffered for: it reads the latest snapshot from a watch channel and catches up
//! from its own revision.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::api::extract::Query;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;

use super::schemas as doc;
use crate::api::AppState;
use crate::api::auth::Principal;
use crate::api::auth::environment_of;
use crate::api::error::ApiError;
use crate::service::hub::{EnvSnapshot, PatchEvent, patches};

/// How often an idle stream sends a comment, so that proxies and clients see it alive.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// A subscriber more revisions behind than this gets a snapshot instead of the patches.
const MAX_PATCH_BACKLOG: i64 = 100;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/sdk/config", get(config)).route("/api/v1/sdk/stream", get(stream))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EnvQuery {
    /// The environment, for admin, writer and reader tokens (an sdk token reads its own).
    env: Option<String>,
}

/// The environment's snapshot: every non-archived flag and every segment at one revision.
///
/// An sdk token reads its own environment; admin, writer and reader tokens name one with `?env=`.
#[utoipa::path(
    get,
    path = "/api/v1/sdk/config",
    tag = "sdk",
    operation_id = "getSdkConfig",
    params(
        EnvQuery,
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of the snapshot held: 304 if it is still current"),
    ),
    responses(
        (status = 200, description = "The snapshot", body = doc::Snapshot,
            headers(("ETag" = String, description = "Names the environment's revision"))),
        (status = 304, description = "`If-None-Match` names the current snapshot",
            headers(("ETag" = String, description = "Names the environment's revision"))),
        (status = 400, description = "A non-sdk token without `?env=`", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token asking for another environment, or a client token (OFREP only)", body = doc::ErrorBody),
        (status = 404, description = "No such environment", body = doc::ErrorBody),
    )
)]
async fn config(
    principal: Principal,
    State(state): State<AppState>,
    Query(q): Query<EnvQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let env = environment_of(&principal, q.env)?;
    let snap = state.hub.current(&env).await?;
    state.metrics.set_revision(&env, snap.revision());
    let etag = HeaderValue::from_str(&snap.etag).map_err(|e| ApiError::internal(&e))?;
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == snap.etag.as_bytes()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        StatusCode::OK,
        [(header::ETAG, etag), (header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        Body::from(snap.json().clone()),
    )
        .into_response())
}

/// Patch frames from `from` (exclusive) to the snapshot's revision, one per revision; `None`
/// when the feed cannot say what changed, or when the patches would weigh more than the snapshot
/// (then a snapshot is due). Subscribers that were up to date share the hub's precomputed
/// frames; only those behind query the feed.
async fn patch_frames(state: &AppState, snap: &EnvSnapshot, from: i64) -> Option<Vec<Bytes>> {
    let to_frames = |patches: &[PatchEvent]| {
        // Replaying more than the snapshot itself would cost both ends more than starting over.
        let replay: usize = patches.iter().map(|p| p.data.len()).sum();
        (replay <= snap.size()).then(|| patches.iter().map(|p| p.frame.clone()).collect())
    };
    if let Some((previous, patches)) = &snap.patches_from
        && *previous == from
    {
        return to_frames(patches);
    }
    let items = state.store.changes_since(snap.environment(), from).await.ok()??;
    to_frames(&patches(snap, items))
}

/// Decrements the connection gauge when the stream ends, however it ends.
struct ConnectionGuard(Arc<crate::service::metrics::Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.sse_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The environment's changes as server-sent events.
///
/// On connect, `event: snapshot` (`id:` the revision, `data:` a `Snapshot`). Then one
/// `event: patch` per revision, `id:` the revision, `data: {"revision", "flags": {key: flag or
/// null}, "segments": {key: segment or null}}` (null: archived or deleted). `Last-Event-ID: N`
/// resumes with only what changed after N, or a snapshot when the change feed no longer reaches
/// back. Heartbeat comments every 15 s; `event: shutdown` when the server stops.
#[utoipa::path(
    get,
    path = "/api/v1/sdk/stream",
    tag = "sdk",
    operation_id = "streamSdkChanges",
    params(
        EnvQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The last revision received: resume after it"),
    ),
    responses(
        (status = 200, description = "An endless `text/event-stream` of `snapshot`, `patch` and `shutdown` events",
            content_type = "text/event-stream", body = String),
        (status = 400, description = "A non-sdk token without `?env=`", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token asking for another environment, or a client token (OFREP only)", body = doc::ErrorBody),
        (status = 404, description = "No such environment", body = doc::ErrorBody),
    )
)]
async fn stream(
    principal: Principal,
    State(state): State<AppState>,
    Query(q): Query<EnvQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let env = environment_of(&principal, q.env)?;
    let mut rx = state.hub.watch(&env).await?;
    let resume_from = super::last_event_id(&headers);
    state.metrics.sse_connections.fetch_add(1, Ordering::Relaxed);
    let guard = ConnectionGuard(state.metrics.clone());
    let shutdown = state.shutdown.clone();

    // Frames are the hub's, shared by every subscriber: a stream copies no snapshot and encodes
    // nothing of its own but the heartbeat.
    let stream = async_stream::stream! {
        let _guard = guard;
        let mut shutdown = shutdown;
        let first = rx.borrow_and_update().clone();
        let mut sent = match resume_from {
            Some(from) if from == first.revision() => from,
            Some(from) if from < first.revision() => {
                match patch_frames(&state, &first, from).await {
                    Some(frames) => { for f in frames { yield Ok::<Bytes, Infallible>(f); } }
                    None => yield Ok(first.snapshot_frame().clone()),
                }
                first.revision()
            }
            _ => {
                yield Ok(first.snapshot_frame().clone());
                first.revision()
            }
        };
        drop(first);
        let heartbeat = tokio::time::sleep(HEARTBEAT);
        tokio::pin!(heartbeat);
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() { break; }
                    let snap = rx.borrow_and_update().clone();
                    if snap.revision() <= sent { continue; }
                    // A consumer that fell far behind gets one fresh snapshot, not a backlog.
                    let frames = if snap.revision() - sent > MAX_PATCH_BACKLOG {
                        None
                    } else {
                        patch_frames(&state, &snap, sent).await
                    };
                    match frames {
                        Some(frames) => { for f in frames { yield Ok(f); } }
                        None => yield Ok(snap.snapshot_frame().clone()),
                    }
                    sent = snap.revision();
                    heartbeat.as_mut().reset(tokio::time::Instant::now() + HEARTBEAT);
                }
                () = &mut heartbeat => {
                    yield Ok(Bytes::from_static(b":heartbeat\n\n"));
                    heartbeat.as_mut().reset(tokio::time::Instant::now() + HEARTBEAT);
                }
                _ = shutdown.changed() => {
                    // Graceful shutdown: tell the client, then end the stream cleanly.
                    yield Ok(Bytes::from_static(b"event: shutdown\ndata: {}\n\n"));
                    break;
                }
            }
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
