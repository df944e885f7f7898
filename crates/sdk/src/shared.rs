//! What the client, its getters and its background tasks share: the configuration being
//! served, the status, the change listeners and the metrics.
//!
//! It sits below both the client and the synchronizer, so that the synchronizer can update what
//! the client serves without knowing the client.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::metrics::Metrics;
use crate::state::{self, Loaded, Snapshot, Source};

/// What the client serves and whether it hears from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Where the configuration being served came from.
    pub source: Source,
    /// Its revision, when there is one.
    pub revision: Option<i64>,
    /// Whether the stream (or the last poll) reaches the server.
    pub connected: bool,
}

/// A configuration change, as listeners see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeEvent {
    /// The new revision.
    pub revision: i64,
    /// Where it came from.
    pub source: Source,
    /// The flags whose answers may have changed.
    pub flags_changed: Vec<String>,
}

/// Names a listener, to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

type Listener = Arc<dyn Fn(&ChangeEvent) + Send + Sync>;

/// Numbers clients, for the per-thread cache of the current configuration.
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// What the client, its getters and its background tasks share.
pub(crate) struct Shared {
    pub(crate) current: ArcSwapOption<Loaded>,
    /// Bumped after every swap of `current`; getters compare it with their thread's copy.
    generation: AtomicU64,
    id: u64,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) status: watch::Sender<Status>,
    changes: broadcast::Sender<ChangeEvent>,
    listeners: Mutex<Vec<(ListenerId, Listener)>>,
    next_listener: AtomicU64,
    shards: usize,
    pub(crate) cache_path: Option<PathBuf>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("status", &*self.status.borrow()).finish_non_exhaustive()
    }
}

impl Shared {
    /// Nothing served yet; `shards` sizes the counter tables of every configuration installed.
    pub(crate) fn new(metrics: Arc<Metrics>, shards: usize, cache_path: Option<PathBuf>) -> Shared {
        let (status, _) = watch::channel(Status { source: Source::Nothing, revision: None, connected: false });
        let (changes, _) = broadcast::channel(64);
        Shared {
            current: ArcSwapOption::empty(),
            id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            metrics,
            status,
            changes,
            listeners: Mutex::new(Vec::new()),
            next_listener: AtomicU64::new(1),
            shards,
            cache_path,
        }
    }

    /// Tells this client's state from another's in a per-thread cache.
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Changes after every swap of `current`; Acquire pairs with the Release in `install`, so a
    /// thread that sees the new generation also sees the new configuration.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn add_listener(&self, listener: impl Fn(&ChangeEvent) + Send + Sync + 'static) -> ListenerId {
        let id = ListenerId(self.next_listener.fetch_add(1, Ordering::Relaxed));
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.push((id, Arc::new(listener)));
        }
        id
    }

    pub(crate) fn remove_listener(&self, id: ListenerId) {
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.retain(|(l, _)| *l != id);
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.changes.subscribe()
    }

    /// Compiles and serves `snapshot`, then tells the listeners. Returns the new configuration.
    pub(crate) fn install(&self, snapshot: Snapshot, source: Source) -> Arc<Loaded> {
        let old = self.current.load_full();
        let flags_changed = state::changed_flags(old.as_ref().map(|l| &l.snapshot), &snapshot);
        let loaded = Arc::new(Loaded::new(snapshot, self.shards));
        if self.metrics.enabled {
            // Only the flusher retires tables: without it they would pile up.
            self.metrics.register(loaded.counters.clone());
        }
        self.current.store(Some(loaded.clone()));
        self.generation.fetch_add(1, Ordering::Release);
        let revision = loaded.revision();
        // Listeners first, status second: whoever wakes on the status (say `wait_ready`) and
        // subscribes then must not receive the event of the change it already sees.
        self.notify(ChangeEvent { revision, source, flags_changed });
        self.status.send_modify(|s| {
            s.source = source;
            s.revision = Some(revision);
        });
        loaded
    }

    /// Marks what is served as confirmed by the server (a 304, or a resumed stream with
    /// nothing missed).
    pub(crate) fn confirm(&self) {
        self.status.send_if_modified(|s| {
            let changed = s.source != Source::Server && s.revision.is_some();
            if changed {
                s.source = Source::Server;
            }
            changed
        });
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.status.send_if_modified(|s| std::mem::replace(&mut s.connected, connected) != connected);
    }

    fn notify(&self, event: ChangeEvent) {
        let listeners: Vec<Listener> = match self.listeners.lock() {
            Ok(l) => l.iter().map(|(_, f)| f.clone()).collect(),
            Err(poisoned) => poisoned.into_inner().iter().map(|(_, f)| f.clone()).collect(),
        };
        for listener in listeners {
            // A listener that panics must not stop updates for everyone else.
            if std::panic::catch_unwind(AssertUnwindSafe(|| listener(&event))).is_err() {
                tracing::warn!("a change listener panicked");
            }
        }
        let _ = self.changes.send(event);
    }
}
