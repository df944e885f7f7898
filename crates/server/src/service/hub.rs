//! The snapshot hub: each environment's current configuration, compiled once per revision and
//! handed to SDK requests, OFREP and SSE subscribers.
//!
//! The hub's refresher is a background task with an owner (the server's composition root) and a
//! shutdown path (the watch channel passed to [`Hub::run_refresher`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use dimmer_engine::CompiledFlags;
use dimmer_protocol::sdk::Patch;
use dimmer_store::{ChangedItem, Snapshot, Store, StoreError};
use tokio::sync::{broadcast, watch};

/// One revision's changes, serialized once for every subscriber: the stream's `patch` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchEvent {
    /// The revision (the event's id).
    pub revision: i64,
    /// The [`Patch`] as JSON (the event's data).
    pub data: String,
}

/// Builds one patch per revision from the change feed's items, with the definitions as of
/// `snapshot` (null once archived or deleted).
pub fn patches(snapshot: &Snapshot, items: Vec<ChangedItem>) -> Vec<PatchEvent> {
    let mut by_revision: BTreeMap<i64, Patch> = BTreeMap::new();
    for item in items.into_iter().filter(|i| i.revision <= snapshot.revision) {
        let patch = by_revision.entry(item.revision).or_insert_with(|| Patch::new(item.revision));
        if item.kind == "segment" {
            patch.segments.insert(item.key.clone(), snapshot.flags.segments.get(&item.key).cloned());
        } else {
            patch.flags.insert(item.key.clone(), snapshot.flags.flags.get(&item.key).cloned());
        }
    }
    // A revision with no recorded item still advances the client's position.
    if by_revision.last_key_value().is_none_or(|(rev, _)| *rev < snapshot.revision) {
        by_revision.insert(snapshot.revision, Patch::new(snapshot.revision));
    }
    by_revision
        .into_values()
        .map(|patch| PatchEvent {
            revision: patch.revision,
            // Serializing plain data into a string cannot fail.
            data: serde_json::to_string(&patch).unwrap_or_default(),
        })
        .collect()
}

/// One environment at one revision, ready to serve.
#[derive(Debug)]
pub struct EnvSnapshot {
    /// The patches from the previous snapshot the hub held (its revision) to this one, computed
    /// once for every subscriber that was up to date.
    pub patches_from: Option<(i64, Arc<[PatchEvent]>)>,
    /// The snapshot as stored.
    pub snapshot: Snapshot,
    /// Its JSON, serialized once.
    pub json: String,
    /// Its ETag (`"<environment>-<revision>"`).
    pub etag: String,
    /// The flags compiled for evaluation.
    pub compiled: CompiledFlags,
}

impl EnvSnapshot {
    fn build(mut snapshot: Snapshot) -> Self {
        // What clients of this environment may see: its own configuration and the segments it
        // uses, never another environment's targeting.
        snapshot.flags = snapshot.flags.for_environment(&snapshot.environment);
        let (compiled, _diagnostics) = dimmer_engine::compile(&snapshot.flags, &snapshot.environment);
        // Serializing plain data into a string cannot fail.
        let json = serde_json::to_string(&snapshot).unwrap_or_default();
        let etag = format!("\"{}-{}\"", snapshot.environment, snapshot.revision);
        Self { patches_from: None, snapshot, json, etag, compiled }
    }

    /// The revision.
    pub fn revision(&self) -> i64 {
        self.snapshot.revision
    }
}

/// The current snapshot of every environment that has been asked for, with a watch channel per
/// environment so that streams always see the latest (a slow reader skips to it rather than
/// buffering every intermediate revision).
#[derive(Debug)]
pub struct Hub {
    store: Arc<dyn Store>,
    envs: RwLock<HashMap<String, watch::Sender<Arc<EnvSnapshot>>>>,
}

impl Hub {
    /// A hub over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, envs: RwLock::new(HashMap::new()) }
    }

    fn sender(&self, env: &str) -> Option<watch::Sender<Arc<EnvSnapshot>>> {
        self.envs.read().ok()?.get(env).cloned()
    }

    /// The current snapshot of `env`, loading it on first use.
    pub async fn current(&self, env: &str) -> Result<Arc<EnvSnapshot>, StoreError> {
        if let Some(tx) = self.sender(env) {
            return Ok(tx.borrow().clone());
        }
        let loaded = Arc::new(EnvSnapshot::build(self.store.snapshot(env).await?));
        let (tx, _rx) = watch::channel(loaded.clone());
        if let Ok(mut envs) = self.envs.write() {
            let tx = envs.entry(env.to_owned()).or_insert(tx);
            return Ok(tx.borrow().clone());
        }
        Ok(loaded)
    }

    /// A receiver that sees every newer snapshot of `env`.
    pub async fn watch(&self, env: &str) -> Result<watch::Receiver<Arc<EnvSnapshot>>, StoreError> {
        self.current(env).await?;
        self.sender(env)
            .map(|tx| tx.subscribe())
            .ok_or_else(|| StoreError::NotFound { kind: "environment", key: env.into() })
    }

    /// Reloads `env` if `revision` is newer than what the hub holds.
    pub async fn refresh(&self, env: &str, revision: i64) -> Result<(), StoreError> {
        let Some(tx) = self.sender(env) else { return Ok(()) };
        if tx.borrow().revision() >= revision {
            return Ok(());
        }
        let previous = tx.borrow().revision();
        let mut fresh = EnvSnapshot::build(self.store.snapshot(env).await?);
        if let Some(items) = self.store.changes_since(env, previous).await? {
            fresh.patches_from = Some((previous, patches(&fresh.snapshot, items).into()));
        }
        let fresh = Arc::new(fresh);
        tx.send_if_modified(|current| {
            if fresh.revision() > current.revision() {
                *current = fresh;
                true
            } else {
                false
            }
        });
        Ok(())
    }

    /// Brings every loaded environment up to the store's current revision. Write handlers call
    /// it before answering, so that a client reads its own writes on this server and streams
    /// hear of a change no later than its author.
    pub async fn sync(&self) -> Result<(), StoreError> {
        for env in self.store.list_environments().await? {
            self.refresh(&env.name, env.revision).await?;
        }
        Ok(())
    }

    /// Follows the store's change notifications until `shutdown` flips, reloading snapshots.
    pub async fn run_refresher(
        self: Arc<Self>,
        mut changes: broadcast::Receiver<dimmer_store::Change>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                change = changes.recv() => match change {
                    Ok(change) => {
                        if let Err(e) = self.refresh(&change.environment, change.revision).await {
                            tracing::warn!(environment = %change.environment, error = %e, "snapshot reload failed");
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Missed notifications: reload everything we hold.
                        let envs: Vec<String> = self.envs.read().map(|e| e.keys().cloned().collect()).unwrap_or_default();
                        for env in envs {
                            if let Err(e) = self.refresh(&env, i64::MAX).await {
                                tracing::warn!(environment = %env, error = %e, "snapshot reload failed");
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}
