//! The snapshot hub: each environment's current configuration, compiled and encoded once per
//! revision and handed to SDK requests, OFREP and SSE subscribers.
//!
//! A revision costs what it changes: the hub keeps each environment's flags compiled
//! ([`Incremental`]) with every flag's JSON, reads only the changed flags from the store, and
//! recompiles only them and the flags that depend on them. The work runs off the async runtime
//! (`spawn_blocking`), and refreshes of one environment coalesce: one runs at a time and a waiter
//! finds the revision it wanted already reached, or catches up to the newest in one step. What
//! is published is immutable (`Arc<EnvSnapshot>`): the snapshot's JSON and its SSE frame are
//! encoded on first use and shared (reference-counted bytes) by every request and subscriber.
//! A segment change, or a flag change that touches segments, reloads the environment in full.
//!
//! The hub's refresher is a background task with an owner (the server's composition root) and a
//! shutdown path (the watch channel passed to [`Hub::run_refresher`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use dimmer_engine::incremental::Incremental;
use dimmer_engine::model::{EnvironmentConfig, Operator};
use dimmer_engine::{CompiledFlags, Flag};
use dimmer_store::{ChangedItem, Snapshot, Store, StoreError};
use tokio::sync::{Mutex, broadcast, watch};

/// A refresh reading more changed flags than this reloads the environment in full instead.
const MAX_INCREMENTAL: usize = 1_000;

/// One revision's changes, serialized once for every subscriber: the stream's `patch` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchEvent {
    /// The revision (the event's id).
    pub revision: i64,
    /// The [`dimmer_protocol::sdk::Patch`] as JSON (the event's data).
    pub data: String,
    /// The whole SSE frame (`event: patch`, `id:`, `data:`), shared by every subscriber.
    pub frame: Bytes,
}

impl PatchEvent {
    fn new(revision: i64, data: String) -> Self {
        let frame = sse_frame("patch", Some(revision), &data);
        Self { revision, data, frame }
    }
}

/// An SSE frame: `event:`, `id:` (when given) and one `data:` line. The data is compact JSON,
/// which has no line breaks.
pub fn sse_frame(event: &str, id: Option<i64>, data: &str) -> Bytes {
    let mut frame = String::with_capacity(data.len() + event.len() + 32);
    frame.push_str("event: ");
    frame.push_str(event);
    if let Some(id) = id {
        frame.push_str("\nid: ");
        frame.push_str(&id.to_string());
    }
    frame.push_str("\ndata: ");
    frame.push_str(data);
    frame.push_str("\n\n");
    Bytes::from(frame)
}

/// A JSON string literal of `text`.
fn json_string(text: &str) -> String {
    // Serializing a string cannot fail.
    serde_json::to_string(text).unwrap_or_default()
}

/// Builds one patch per revision from the change feed's items, with the definitions as of
/// `snap` (null once archived or deleted, or for a segment the environment does not use).
pub fn patches(snap: &EnvSnapshot, items: Vec<ChangedItem>) -> Vec<PatchEvent> {
    // Per revision: the flags and segments it changed, in the feed's order, once each.
    let mut by_revision: BTreeMap<i64, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for item in items.into_iter().filter(|i| i.revision <= snap.revision) {
        let (flags, segments) = by_revision.entry(item.revision).or_default();
        let list = if item.kind == "segment" { segments } else { flags };
        if !list.contains(&item.key) {
            list.push(item.key);
        }
    }
    // A revision with no recorded item still advances the client's position.
    if by_revision.last_key_value().is_none_or(|(rev, _)| *rev < snap.revision) {
        by_revision.insert(snap.revision, Default::default());
    }
    by_revision
        .into_iter()
        .map(|(revision, (flags, segments))| {
            let mut data = format!("{{\"revision\":{revision},\"flags\":{{");
            for (i, key) in flags.iter().enumerate() {
                if i > 0 {
                    data.push(',');
                }
                data.push_str(&json_string(key));
                data.push(':');
                data.push_str(snap.flag_json(key).unwrap_or("null"));
            }
            data.push_str("},\"segments\":{");
            for (i, key) in segments.iter().enumerate() {
                if i > 0 {
                    data.push(',');
                }
                data.push_str(&json_string(key));
                data.push(':');
                data.push_str(snap.segments.get(key.as_str()).map_or("null", |s| s.as_ref()));
            }
            data.push_str("}}");
            PatchEvent::new(revision, data)
        })
        .collect()
}

/// One environment at one revision, ready to serve. Immutable once published.
#[derive(Debug)]
pub struct EnvSnapshot {
    /// The patches from the previous snapshot the hub held (its revision) to this one, computed
    /// once for every subscriber that was up to date.
    pub patches_from: Option<(i64, Arc<[PatchEvent]>)>,
    environment: String,
    revision: i64,
    /// Every flag's JSON, by key (sorted): a persistent map, so a revision shares all but its
    /// changes with the revisions before and after (publishing copies nothing).
    flags: FlagJson,
    /// The segments the environment uses, as JSON, by key.
    segments: Arc<BTreeMap<String, Arc<str>>>,
    /// About how many bytes [`EnvSnapshot::json`] is, known without encoding it.
    size: usize,
    /// Its ETag (`"<environment>-<revision>"`).
    pub etag: String,
    /// The flags compiled for evaluation.
    pub compiled: CompiledFlags,
    json: OnceLock<Bytes>,
    frame: OnceLock<Bytes>,
}

impl EnvSnapshot {
    /// The revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The environment.
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// A flag's definition as JSON, if the flag is live.
    pub fn flag_json(&self, key: &str) -> Option<&str> {
        self.flags.get(key).map(AsRef::as_ref)
    }

    /// About how many bytes the snapshot's JSON is (within a few hundred), without encoding it:
    /// what a subscriber catching up compares its patches with.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The snapshot's JSON (a [`Snapshot`]), encoded on first use and then shared.
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            let mut out = String::with_capacity(self.size);
            out.push_str("{\"environment\":");
            out.push_str(&json_string(&self.environment));
            out.push_str(&format!(",\"revision\":{},\"flags\":{{\"flags\":{{", self.revision));
            for (i, (key, flag)) in self.flags.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&json_string(key));
                out.push(':');
                out.push_str(flag);
            }
            out.push('}');
            // As `FlagSet` serializes: no `segments` when there are none.
            if !self.segments.is_empty() {
                out.push_str(",\"segments\":{");
                for (i, (key, segment)) in self.segments.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&json_string(key));
                    out.push(':');
                    out.push_str(segment);
                }
                out.push('}');
            }
            out.push_str("}}");
            Bytes::from(out)
        })
    }

    /// The stream's `snapshot` frame, encoded once and shared by every subscriber.
    pub fn snapshot_frame(&self) -> &Bytes {
        self.frame.get_or_init(|| {
            // The JSON is built from strings: valid UTF-8.
            let json = std::str::from_utf8(self.json()).unwrap_or_default();
            sse_frame("snapshot", Some(self.revision), json)
        })
    }
}

/// What the hub keeps of one environment between revisions (behind its refresh lock).
#[derive(Debug)]
struct EnvState {
    revision: i64,
    compiler: Incremental,
    flags: FlagJson,
    /// What [`EnvSnapshot::size`] reports, kept up to date with `flags`.
    size: usize,
    segments: Arc<BTreeMap<String, Arc<str>>>,
}

/// Flag key → the flag's JSON.
type FlagJson = imbl::OrdMap<Arc<str>, Arc<str>>;

/// What one entry adds to a snapshot's JSON: the key's quotes, colon and comma.
fn entry_size(key: &str, json: &str) -> usize {
    key.len() + json.len() + 4
}

fn to_json<T: serde::Serialize>(value: &T) -> Arc<str> {
    // Serializing plain data into a string cannot fail.
    Arc::from(serde_json::to_string(value).unwrap_or_default())
}

/// Whether a configuration names segments (then a change to it may change which segments the
/// environment's snapshot carries).
fn uses_segments(cfg: Option<&EnvironmentConfig>) -> bool {
    cfg.is_some_and(|c| {
        c.exposure.as_ref().is_some_and(|e| !e.segments.is_empty())
            || c.rules.iter().any(|r| r.clauses.iter().any(|cl| cl.op == Operator::InSegment))
    })
}

impl EnvState {
    /// A full load: compile everything, encode every flag.
    fn load(snapshot: Snapshot) -> Self {
        let set = snapshot.flags.for_environment(&snapshot.environment);
        let flags: FlagJson = set.flags.iter().map(|(k, f)| (Arc::from(k.as_str()), to_json(f))).collect();
        let segments: Arc<BTreeMap<String, Arc<str>>> =
            Arc::new(set.segments.iter().map(|(k, s)| (k.clone(), to_json(s))).collect());
        let size = 256
            + flags.iter().map(|(k, v)| entry_size(k, v)).sum::<usize>()
            + segments.iter().map(|(k, v)| entry_size(k, v)).sum::<usize>();
        let (compiler, _diagnostics) = Incremental::new(set, &snapshot.environment);
        Self { revision: snapshot.revision, compiler, flags, size, segments }
    }

    /// Applies changed flags (`None`: archived or gone), already reduced to this environment.
    fn apply(&mut self, revision: i64, changed: Vec<(String, Option<Flag>)>) {
        for (key, flag) in changed {
            match flag {
                Some(flag) => {
                    let json = to_json(&flag);
                    self.size += entry_size(&key, &json);
                    if let Some(old) = self.flags.insert(Arc::from(key.as_str()), json) {
                        self.size = self.size.saturating_sub(entry_size(&key, &old));
                    }
                    self.compiler.upsert(&key, flag);
                }
                None => {
                    if let Some(old) = self.flags.remove(key.as_str()) {
                        self.size = self.size.saturating_sub(entry_size(&key, &old));
                    }
                    self.compiler.remove(&key);
                }
            }
        }
        self.revision = revision;
    }

    fn publish(&self) -> EnvSnapshot {
        let environment = self.compiler.environment().to_owned();
        EnvSnapshot {
            patches_from: None,
            etag: format!("\"{}-{}\"", environment, self.revision),
            revision: self.revision,
            flags: self.flags.clone(),
            size: self.size,
            segments: self.segments.clone(),
            compiled: self.compiler.compiled(),
            json: OnceLock::new(),
            frame: OnceLock::new(),
            environment,
        }
    }
}

/// An environment the hub serves: the published snapshot and the state it is built from.
#[derive(Debug)]
struct Env {
    tx: watch::Sender<Arc<EnvSnapshot>>,
    state: Mutex<Option<EnvState>>,
}

/// The current snapshot of every environment that has been asked for, with a watch channel per
/// environment so that streams always see the latest (a slow reader skips to it rather than
/// buffering every intermediate revision).
#[derive(Debug)]
pub struct Hub {
    store: Arc<dyn Store>,
    envs: RwLock<HashMap<String, Arc<Env>>>,
}

/// Runs CPU work off the async runtime's workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| StoreError::Corrupt(format!("snapshot build failed: {e}")))
}

impl Hub {
    /// A hub over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, envs: RwLock::new(HashMap::new()) }
    }

    fn env(&self, env: &str) -> Option<Arc<Env>> {
        self.envs.read().ok()?.get(env).cloned()
    }

    /// The current snapshot of `env`, loading it on first use.
    pub async fn current(&self, env: &str) -> Result<Arc<EnvSnapshot>, StoreError> {
        if let Some(e) = self.env(env) {
            return Ok(e.tx.borrow().clone());
        }
        let snapshot = self.store.snapshot(env).await?;
        let (state, published) = blocking(move || {
            let state = EnvState::load(snapshot);
            let published = Arc::new(state.publish());
            (state, published)
        })
        .await?;
        let (tx, _rx) = watch::channel(published.clone());
        let fresh = Arc::new(Env { tx, state: Mutex::new(Some(state)) });
        if let Ok(mut envs) = self.envs.write() {
            let e = envs.entry(env.to_owned()).or_insert(fresh);
            return Ok(e.tx.borrow().clone());
        }
        Ok(published)
    }

    /// A receiver that sees every newer snapshot of `env`.
    pub async fn watch(&self, env: &str) -> Result<watch::Receiver<Arc<EnvSnapshot>>, StoreError> {
        self.current(env).await?;
        self.env(env)
            .map(|e| e.tx.subscribe())
            .ok_or_else(|| StoreError::NotFound { kind: "environment", key: env.into() })
    }

    /// Brings `env` up to `revision` or newer, if the hub holds an older one. One refresh of an
    /// environment runs at a time; those that queue behind it usually find their revision
    /// reached.
    pub async fn refresh(&self, env: &str, revision: i64) -> Result<(), StoreError> {
        let Some(e) = self.env(env) else { return Ok(()) };
        if e.tx.borrow().revision() >= revision {
            return Ok(());
        }
        let mut slot = e.state.lock().await;
        if e.tx.borrow().revision() >= revision {
            return Ok(());
        }
        let previous = e.tx.borrow().revision();
        // Taken out while it is worked on; a failure below reloads in full next time.
        let state = slot.take();
        let (state, published) = match self.changed_flags(env, previous, state.as_ref()).await? {
            Some((to, changed, items)) => {
                let mut state = state.ok_or_else(|| StoreError::Corrupt("no snapshot state".into()))?;
                blocking(move || {
                    state.apply(to, changed);
                    let mut published = state.publish();
                    published.patches_from = Some((previous, patches(&published, items).into()));
                    (state, published)
                })
                .await?
            }
            None => {
                let snapshot = self.store.snapshot(env).await?;
                let items = self.store.changes_since(env, previous).await?;
                blocking(move || {
                    let state = EnvState::load(snapshot);
                    let mut published = state.publish();
                    if let Some(items) = items {
                        published.patches_from = Some((previous, patches(&published, items).into()));
                    }
                    (state, published)
                })
                .await?
            }
        };
        let published = Arc::new(published);
        e.tx.send_if_modified(|current| {
            if published.revision() > current.revision() {
                *current = published;
                true
            } else {
                false
            }
        });
        *slot = Some(state);
        Ok(())
    }

    /// The flags changed in `env` since `previous`, reduced to the environment, with the revision
    /// they bring it to and the feed's items; `None` when a full reload is due (no state, the
    /// feed does not reach back, a segment changed, a change touches segments, or too many).
    #[allow(clippy::type_complexity, reason = "a private helper's one result")]
    async fn changed_flags(
        &self,
        env: &str,
        previous: i64,
        state: Option<&EnvState>,
    ) -> Result<Option<(i64, Vec<(String, Option<Flag>)>, Vec<ChangedItem>)>, StoreError> {
        let Some(state) = state else { return Ok(None) };
        let Some(items) = self.store.changes_since(env, previous).await? else { return Ok(None) };
        if items.iter().any(|i| i.kind != "flag") {
            return Ok(None);
        }
        let keys: BTreeSet<&str> = items.iter().map(|i| i.key.as_str()).collect();
        if keys.len() > MAX_INCREMENTAL {
            return Ok(None);
        }
        let to = items.iter().map(|i| i.revision).max().unwrap_or(previous);
        let mut changed = Vec::with_capacity(keys.len());
        for key in keys {
            let flag = self.store.get_flag(key).await?.filter(|r| !r.archived).map(|mut r| {
                r.flag.environments.retain(|name, _| name == env);
                r.flag
            });
            let before = state.compiler.set().flags.get(key);
            if uses_segments(before.and_then(|f| f.environments.get(env)))
                || uses_segments(flag.as_ref().and_then(|f| f.environments.get(env)))
            {
                return Ok(None);
            }
            changed.push((key.to_owned(), flag));
        }
        Ok(Some((to, changed, items)))
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
