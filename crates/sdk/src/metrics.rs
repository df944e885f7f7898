//! Outcome metrics for guards: evaluations counted per flag and variant, outcomes (success or
//! error, with latency) and named events recorded against the variant the user got, aggregated
//! and sent to `POST /api/v1/sdk/metrics` in batches.
//!
//! The evaluation counter is on every getter's path, so it takes no lock: each configuration
//! carries a table of counters, one copy per shard, and a thread adds to its own shard's cache
//! lines without a locked instruction (threads beyond the owned shards share one, atomically).
//! Outcomes and events are rarer (once per request, not per evaluation)
//! and go through a small sharded map under uncontended mutexes. The flusher drains both into
//! one bounded pending aggregate; a batch the server could not take is merged back into it
//! rather than queued, so an outage costs memory for distinct flag/variant pairs only.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dimmer_engine::CompiledFlags;
use dimmer_protocol::{EventStat, FlagMetrics, Limits, MetricsBatch, SketchBuilder};
use foldhash::fast::FixedState;
use serde::Serialize;

/// The SDK name and version sent with every batch.
pub const SDK_NAME: &str = concat!("dimmer-rust/", env!("CARGO_PKG_VERSION"));

/// Eight counters: one cache line, so that two shards never share one.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Line([AtomicU64; 8]);

/// The calling thread's index: unique among live threads, and handed to a new thread once its
/// owner has exited. A thread whose index is below a table's shard count owns that shard
/// alone, which lets it count without a locked instruction.
fn thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());

    struct Index(usize);
    impl Drop for Index {
        fn drop(&mut self) {
            lock(&FREE).push(self.0);
        }
    }
    thread_local! {
        static INDEX: Index = Index(lock(&FREE).pop().unwrap_or_else(|| NEXT.fetch_add(1, Ordering::Relaxed)));
    }
    // During thread teardown the index may be gone: count in the shared shard then.
    INDEX.try_with(|i| i.0).unwrap_or(usize::MAX)
}

/// Entries in a thread's slot memo.
const MEMO: usize = 64;

/// A thread's memo of counter slots by variant-key address, for one configuration, with the
/// thread's index. Address 0 is never a key's, so the empty entries never match.
#[derive(Debug)]
pub(crate) struct SlotMemo {
    entries: [(usize, u32); MEMO],
    index: usize,
}

impl SlotMemo {
    pub(crate) fn new() -> SlotMemo {
        SlotMemo { entries: [(0, 0); MEMO], index: thread_index() }
    }
}

/// Flag → its variants and their slots.
type ByName = HashMap<Box<str>, Vec<(Box<str>, u32)>, FixedState>;

/// Evaluation counters for one compiled configuration: a slot per (flag, variant), one copy of
/// the slots per shard. Shard `i` belongs to the thread with index `i` alone, which adds with a
/// plain load and store; threads beyond the owned shards share the last one with atomic adds.
/// Counters only grow: the flusher reads them and subtracts what it read last time, so that it
/// never races an owner's store.
#[derive(Debug)]
pub(crate) struct CounterTable {
    names: Vec<(Box<str>, Box<str>)>,
    /// The address of a variant key inside the compiled flags → its slot. Evaluation hands back
    /// that very `&str`, so the lookup hashes an integer instead of two strings.
    by_address: HashMap<usize, u32, FixedState>,
    /// The slow path, by flag then variant, for addresses that are not unique (e.g. empty keys).
    by_name: ByName,
    shards: Box<[Box<[Line]>]>,
    /// Per slot, the total the flusher has already taken.
    taken: Mutex<Vec<u64>>,
}

impl CounterTable {
    /// A table for every flag and variant of `compiled`, with `owned` shards for the first
    /// threads and one shared shard.
    pub(crate) fn new(compiled: &CompiledFlags, owned: usize) -> CounterTable {
        let mut names = Vec::new();
        let mut by_address: HashMap<usize, u32, FixedState> = HashMap::default();
        let mut ambiguous = Vec::new();
        let mut by_name = ByName::default();
        for key in compiled.keys() {
            for (variant, _) in compiled.variants(key).into_iter().flatten() {
                let Ok(slot) = u32::try_from(names.len()) else { break };
                names.push((Box::from(key), Box::from(variant)));
                by_name.entry(Box::from(key)).or_default().push((Box::from(variant), slot));
                if by_address.insert(variant.as_ptr() as usize, slot).is_some() {
                    ambiguous.push(variant.as_ptr() as usize);
                }
            }
        }
        for address in ambiguous {
            by_address.remove(&address);
        }
        let lines = names.len().div_ceil(8);
        let shards = (0..=owned).map(|_| (0..lines).map(|_| Line::default()).collect()).collect();
        let taken = Mutex::new(vec![0; names.len()]);
        CounterTable { names, by_address, by_name, shards, taken }
    }

    /// Counts one evaluation of `flag` that served `variant`: the variant key as the engine
    /// returned it, borrowed from the compiled flags this table was built from, so that its
    /// address alone names the flag and variant.
    #[inline]
    pub(crate) fn count(&self, flag: &str, variant: &str) {
        match self.by_address.get(&(variant.as_ptr() as usize)) {
            Some(&slot) => self.add(slot),
            None => self.count_named(flag, variant),
        }
    }

    /// Counts by name: for addresses shared by several keys (empty ones), or foreign strings.
    #[cold]
    pub(crate) fn count_named(&self, flag: &str, variant: &str) {
        if let Some(&(_, slot)) = self.by_name.get(flag).and_then(|vs| vs.iter().find(|(v, _)| **v == *variant)) {
            self.add(slot);
        }
    }

    /// [`count`](Self::count) through a thread's memo of slots by address (which must belong to
    /// this table's configuration): a hit costs one load and one comparison instead of a hash
    /// lookup, and the memo carries the thread's index.
    #[inline]
    pub(crate) fn count_memo(&self, flag: &str, variant: &str, memo: &mut SlotMemo) {
        let address = variant.as_ptr() as usize;
        let entry = &mut memo.entries[((address >> 4) ^ (address >> 10)) % MEMO];
        let slot = if entry.0 == address {
            entry.1
        } else {
            match self.by_address.get(&address) {
                Some(&slot) => {
                    *entry = (address, slot);
                    slot
                }
                None => return self.count_named(flag, variant),
            }
        };
        self.add_for(slot, memo.index);
    }

    #[inline]
    fn add(&self, slot: u32) {
        self.add_for(slot, thread_index());
    }

    #[inline]
    fn add_for(&self, slot: u32, index: usize) {
        let (line, word) = (slot as usize / 8, slot as usize % 8);
        let owned = self.shards.len() - 1;
        if index < owned {
            if let Some(counter) = self.shards[index].get(line).map(|l| &l.0[word]) {
                // This thread is the shard's only writer: no read-modify-write can interleave.
                counter.store(counter.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
            }
        } else if let Some(counter) = self.shards[owned].get(line).map(|l| &l.0[word]) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the counts added since the last call: `(flag, variant, evaluations)` for each slot
    /// that grew.
    fn drain(&self, mut each: impl FnMut(&str, &str, u64)) {
        let mut taken = lock(&self.taken);
        for (slot, (flag, variant)) in self.names.iter().enumerate() {
            let total = self
                .shards
                .iter()
                .filter_map(|shard| shard.get(slot / 8))
                .fold(0u64, |sum, line| sum.wrapping_add(line.0[slot % 8].load(Ordering::Relaxed)));
            let Some(before) = taken.get_mut(slot) else { continue };
            let added = total.wrapping_sub(*before);
            *before = total;
            if added > 0 {
                each(flag, variant, added);
            }
        }
    }
}

/// Whether the work behind an evaluation went well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// It failed.
    Error,
}

/// What has been recorded for one flag and variant.
#[derive(Debug, Default, Clone)]
struct Accum {
    evaluations: u64,
    successes: u64,
    errors: u64,
    latency: SketchBuilder,
    events: BTreeMap<String, EventStat>,
}

impl Accum {
    fn merge(&mut self, other: Accum, limits: &Limits, dropped: &AtomicU64) {
        self.evaluations = self.evaluations.saturating_add(other.evaluations);
        self.successes = self.successes.saturating_add(other.successes);
        self.errors = self.errors.saturating_add(other.errors);
        if other.latency.count() > 0 {
            self.latency.merge(&other.latency.build());
        }
        for (name, stat) in other.events {
            add_event(&mut self.events, name, stat, limits, dropped);
        }
    }

    fn into_wire(self, flag: String, variant: String) -> FlagMetrics {
        let latency = (self.latency.count() > 0).then(|| self.latency.build());
        FlagMetrics {
            flag,
            variant,
            evaluations: self.evaluations,
            successes: self.successes,
            errors: self.errors,
            latency,
            events: self.events,
        }
    }

    fn from_wire(entry: FlagMetrics) -> (String, String, Accum) {
        let mut latency = SketchBuilder::default();
        if let Some(sketch) = &entry.latency {
            latency.merge(sketch);
        }
        let accum = Accum {
            evaluations: entry.evaluations,
            successes: entry.successes,
            errors: entry.errors,
            latency,
            events: entry.events,
        };
        (entry.flag, entry.variant, accum)
    }
}

fn add_event(
    events: &mut BTreeMap<String, EventStat>,
    name: String,
    stat: EventStat,
    limits: &Limits,
    dropped: &AtomicU64,
) {
    if let Some(have) = events.get_mut(&name) {
        have.add(&stat);
    } else if events.len() < limits.max_events {
        events.insert(name, stat);
    } else {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
}

type Key = (String, String);

/// Outcomes and events recorded by the threads of one shard, by flag then variant (so that a
/// lookup borrows the caller's strings).
#[derive(Debug, Default)]
struct OutcomeShard {
    entries: HashMap<String, HashMap<String, Accum>>,
    len: usize,
}

/// Counters about the metrics pipeline itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MetricsStats {
    /// Batches the server accepted.
    pub batches_sent: u64,
    /// Entries (flag × variant) in those batches.
    pub entries_sent: u64,
    /// Batches the server refused as malformed or unauthorised (not retried).
    pub batches_rejected: u64,
    /// Attempts that failed on the network or with a server error (kept and retried).
    pub send_failures: u64,
    /// Entries, events or recordings dropped: over a bound, refused by the server, or invalid.
    pub dropped: u64,
    /// Entries waiting for the next flush.
    pub pending_entries: u64,
}

/// The metrics shared by the client, its getters and the flusher.
#[derive(Debug)]
pub(crate) struct Metrics {
    tables: Mutex<Vec<Arc<CounterTable>>>,
    outcomes: Box<[Mutex<OutcomeShard>]>,
    pending: Mutex<BTreeMap<Key, Accum>>,
    limits: Limits,
    max_pending: usize,
    pub(crate) enabled: bool,
    batches_sent: AtomicU64,
    entries_sent: AtomicU64,
    batches_rejected: AtomicU64,
    send_failures: AtomicU64,
    dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain counters behind: still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Metrics {
    pub(crate) fn new(shards: usize, max_pending: usize, enabled: bool) -> Metrics {
        let shards = shards.max(1).next_power_of_two();
        Metrics {
            tables: Mutex::new(Vec::new()),
            outcomes: (0..shards).map(|_| Mutex::new(OutcomeShard::default())).collect(),
            pending: Mutex::new(BTreeMap::new()),
            limits: Limits::default(),
            max_pending: max_pending.max(1),
            enabled,
            batches_sent: AtomicU64::new(0),
            entries_sent: AtomicU64::new(0),
            batches_rejected: AtomicU64::new(0),
            send_failures: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Registers a new configuration's counters, so that the flusher drains them.
    pub(crate) fn register(&self, table: Arc<CounterTable>) {
        lock(&self.tables).push(table);
    }

    fn valid_name(&self, name: &str) -> bool {
        !name.is_empty() && name.len() <= self.limits.max_name_len
    }

    /// Records an outcome, with its latency when known, for the variant a user was served.
    pub(crate) fn record(&self, flag: &str, variant: &str, outcome: Outcome, latency: Option<Duration>) {
        self.with_entry(flag, variant, |a| {
            match outcome {
                Outcome::Success => a.successes = a.successes.saturating_add(1),
                Outcome::Error => a.errors = a.errors.saturating_add(1),
            }
            if let Some(latency) = latency {
                a.latency.record(latency.as_secs_f64() * 1000.0);
            }
        });
    }

    /// Records a named event (with an optional value, summed) for the variant a user was served.
    pub(crate) fn track(&self, flag: &str, variant: &str, event: &str, value: Option<f64>) {
        if !self.valid_name(event) || value.is_some_and(|v| !v.is_finite()) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let limits = self.limits;
        let dropped = &self.dropped;
        self.with_entry(flag, variant, |a| {
            let stat = EventStat::one(value);
            add_event(&mut a.events, event.to_owned(), stat, &limits, dropped);
        });
    }

    fn with_entry(&self, flag: &str, variant: &str, f: impl FnOnce(&mut Accum)) {
        if !self.enabled {
            return;
        }
        if !self.valid_name(flag) || !self.valid_name(variant) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut shard = lock(&self.outcomes[thread_index() % self.outcomes.len()]);
        // The lookup borrows; only a first recording for a pair allocates its key.
        if let Some(entry) = shard.entries.get_mut(flag).and_then(|vs| vs.get_mut(variant)) {
            f(entry);
        } else if shard.len < self.max_pending {
            shard.len += 1;
            f(shard.entries.entry(flag.to_owned()).or_default().entry(variant.to_owned()).or_default());
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves everything counted so far into the pending aggregate (bounded: pairs beyond the
    /// bound are dropped and counted).
    pub(crate) fn collect(&self) {
        let mut fresh: Vec<(Key, Accum)> = Vec::new();
        {
            let mut tables = lock(&self.tables);
            tables.retain(|table| {
                // Only the registry holds a table whose configuration is gone: nothing can count
                // into it any more, so this is its last drain.
                let retired = Arc::strong_count(table) == 1;
                table.drain(|flag, variant, n| {
                    let accum = Accum { evaluations: n, ..Accum::default() };
                    fresh.push(((flag.to_owned(), variant.to_owned()), accum));
                });
                !retired
            });
        }
        for shard in self.outcomes.iter() {
            let taken = std::mem::take(&mut *lock(shard));
            for (flag, variants) in taken.entries {
                fresh.extend(variants.into_iter().map(|(variant, accum)| ((flag.clone(), variant), accum)));
            }
        }
        let mut pending = lock(&self.pending);
        for (key, accum) in fresh {
            self.merge_into(&mut pending, key, accum);
        }
    }

    fn merge_into(&self, pending: &mut BTreeMap<Key, Accum>, key: Key, accum: Accum) {
        if let Some(have) = pending.get_mut(&key) {
            have.merge(accum, &self.limits, &self.dropped);
        } else if pending.len() < self.max_pending {
            pending.insert(key, accum);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the pending aggregate as batches of at most the server's entry limit.
    pub(crate) fn take_batches(&self) -> Vec<MetricsBatch> {
        let pending = std::mem::take(&mut *lock(&self.pending));
        let mut batches = Vec::new();
        let mut current = Vec::new();
        for ((flag, variant), accum) in pending {
            current.push(accum.into_wire(flag, variant));
            if current.len() == self.limits.max_entries {
                batches.push(MetricsBatch { sdk: Some(SDK_NAME.to_owned()), metrics: std::mem::take(&mut current) });
            }
        }
        if !current.is_empty() {
            batches.push(MetricsBatch { sdk: Some(SDK_NAME.to_owned()), metrics: current });
        }
        batches
    }

    /// Puts back a batch the server could not take now, to be sent with the next flush.
    pub(crate) fn restore(&self, batch: MetricsBatch) {
        self.send_failures.fetch_add(1, Ordering::Relaxed);
        let mut pending = lock(&self.pending);
        for entry in batch.metrics {
            let (flag, variant, accum) = Accum::from_wire(entry);
            self.merge_into(&mut pending, (flag, variant), accum);
        }
    }

    pub(crate) fn sent(&self, batch: &MetricsBatch) {
        self.batches_sent.fetch_add(1, Ordering::Relaxed);
        self.entries_sent.fetch_add(batch.metrics.len() as u64, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self, batch: &MetricsBatch) {
        self.batches_rejected.fetch_add(1, Ordering::Relaxed);
        self.dropped.fetch_add(batch.metrics.len() as u64, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> MetricsStats {
        MetricsStats {
            batches_sent: self.batches_sent.load(Ordering::Relaxed),
            entries_sent: self.entries_sent.load(Ordering::Relaxed),
            batches_rejected: self.batches_rejected.load(Ordering::Relaxed),
            send_failures: self.send_failures.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            pending_entries: lock(&self.pending).len() as u64,
        }
    }
}

/// Times the work done for one evaluation and records its outcome against the variant served.
///
/// Finish it with [`success`](OutcomeTimer::success) or [`error`](OutcomeTimer::error). A timer
/// dropped unfinished (an early return with `?`, a panic) records an error: work that did not say
/// it succeeded is not counted as a success.
#[derive(Debug)]
#[must_use = "a timer records when finished; dropped at once it records an error"]
pub struct OutcomeTimer {
    metrics: Option<Arc<Metrics>>,
    flag: String,
    variant: String,
    started: Instant,
}

impl OutcomeTimer {
    pub(crate) fn start(metrics: Option<Arc<Metrics>>, flag: &str, variant: Option<&str>) -> OutcomeTimer {
        let metrics = metrics.filter(|_| variant.is_some());
        OutcomeTimer {
            metrics,
            flag: flag.to_owned(),
            variant: variant.unwrap_or_default().to_owned(),
            started: Instant::now(),
        }
    }

    /// Records a success and the time since the timer started.
    pub fn success(mut self) {
        self.finish(Outcome::Success);
    }

    /// Records an error and the time since the timer started.
    pub fn error(mut self) {
        self.finish(Outcome::Error);
    }

    /// Records `outcome` and the time since the timer started.
    pub fn finish_with(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(metrics) = self.metrics.take() {
            metrics.record(&self.flag, &self.variant, outcome, Some(self.started.elapsed()));
        }
    }
}

impl Drop for OutcomeTimer {
    fn drop(&mut self) {
        self.finish(Outcome::Error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled() -> CompiledFlags {
        let set: dimmer_engine::FlagSet = serde_json::from_str(
            r#"{"flags":{"a":{"environments":{"production":{"enabled":true}}},"b":{"variants":{"x":1,"y":2,"z":3}}}}"#,
        )
        .unwrap();
        dimmer_engine::compile(&set, "production").0
    }

    fn pending(m: &Metrics) -> BTreeMap<Key, Accum> {
        m.collect();
        lock(&m.pending).clone()
    }

    #[test]
    fn evaluations_from_many_threads_are_counted_per_flag_and_variant() {
        let flags = compiled();
        let m = Arc::new(Metrics::new(4, 100, true));
        let table = Arc::new(CounterTable::new(&flags, 4));
        m.register(table.clone());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let ctx = dimmer_engine::Context::with_key("u");
                    for _ in 0..1000 {
                        let e = dimmer_engine::evaluate(&flags, "a", &ctx);
                        table.count("a", e.variant.unwrap());
                    }
                });
            }
        });
        // A variant string that did not come from the table still counts, by name.
        table.count_named("b", &String::from("y"));
        let p = pending(&m);
        assert_eq!(p[&("a".to_owned(), "on".to_owned())].evaluations, 4000);
        assert_eq!(p[&("b".to_owned(), "y".to_owned())].evaluations, 1);
        // Drained: the next collection adds nothing.
        assert_eq!(pending(&m)[&("a".to_owned(), "on".to_owned())].evaluations, 4000);
    }

    #[test]
    fn threads_beyond_the_owned_shards_share_one_and_nothing_is_lost() {
        let flags = compiled();
        let m = Metrics::new(1, 100, true);
        let table = Arc::new(CounterTable::new(&flags, 1));
        m.register(table.clone());
        let variant = flags.variants("b").unwrap().nth(1).unwrap().0;
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| (0..1000).for_each(|_| table.count("b", variant)));
            }
        });
        assert_eq!(pending(&m)[&("b".to_owned(), "y".to_owned())].evaluations, 8000);
        table.count("b", variant);
        m.collect();
        assert_eq!(lock(&m.pending)[&("b".to_owned(), "y".to_owned())].evaluations, 8001, "only the increase is taken");
    }

    #[test]
    fn the_slot_memo_counts_like_the_table() {
        let flags = compiled();
        let m = Metrics::new(1, 100, true);
        let table = Arc::new(CounterTable::new(&flags, 4));
        m.register(table.clone());
        let mut memo = SlotMemo::new();
        for (variant, _) in flags.variants("b").unwrap().chain(flags.variants("b").unwrap()) {
            table.count_memo("b", variant, &mut memo);
        }
        table.count_memo("b", &String::from("z"), &mut memo);
        let p = pending(&m);
        let counts: Vec<u64> =
            ["x", "y", "z"].iter().map(|v| p[&("b".to_owned(), (*v).to_owned())].evaluations).collect();
        assert_eq!(counts, [2, 2, 3]);
    }

    #[test]
    fn outcomes_latency_and_events_merge_into_one_entry() {
        let m = Arc::new(Metrics::new(2, 100, true));
        m.record("a", "on", Outcome::Success, Some(Duration::from_millis(10)));
        m.record("a", "on", Outcome::Error, Some(Duration::from_millis(30)));
        m.track("a", "on", "conversion", Some(2.5));
        m.track("a", "on", "conversion", None);
        OutcomeTimer::start(Some(m.clone()), "a", Some("on")).success();
        drop(OutcomeTimer::start(Some(m.clone()), "a", Some("on")));
        let batch = m.take_batches();
        assert!(batch.is_empty(), "nothing is batched before a collection");
        m.collect();
        let batches = m.take_batches();
        assert_eq!(batches.len(), 1);
        let e = &batches[0].metrics[0];
        assert_eq!((e.successes, e.errors), (2, 2));
        assert_eq!(e.latency.as_ref().map(|l| l.count()), Some(4));
        assert_eq!(e.events["conversion"], EventStat { count: 2, sum: 2.5, sum_sq: Some(6.25) });
        assert_eq!(batches[0].check(&Limits::default()), Ok(()));
    }

    #[test]
    fn a_failed_batch_is_merged_back_and_the_bound_drops_new_pairs() {
        let m = Metrics::new(1, 2, true);
        m.record("a", "on", Outcome::Success, None);
        m.record("b", "on", Outcome::Success, None);
        m.collect();
        let batch = m.take_batches().remove(0);
        m.record("a", "on", Outcome::Success, None);
        m.record("c", "on", Outcome::Success, None);
        m.collect();
        m.restore(batch);
        let stats = m.stats();
        assert_eq!(stats.pending_entries, 2);
        assert_eq!(stats.dropped, 1, "b no longer fits beside a and c");
        assert_eq!(stats.send_failures, 1);
        let p = lock(&m.pending).clone();
        assert_eq!(p[&("a".to_owned(), "on".to_owned())].successes, 2);
    }

    #[test]
    fn big_aggregates_are_split_into_batches_the_server_accepts() {
        let m = Metrics::new(1, 5000, true);
        for i in 0..2500 {
            m.record(&format!("f{i}"), "on", Outcome::Success, None);
        }
        m.collect();
        let sizes: Vec<usize> = m.take_batches().iter().map(|b| b.metrics.len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
    }

    #[test]
    fn invalid_names_and_values_are_dropped_not_sent() {
        let m = Metrics::new(1, 10, true);
        m.track("a", "on", "", None);
        m.track("a", "on", "x", Some(f64::NAN));
        m.record("", "on", Outcome::Success, None);
        assert_eq!(m.stats().dropped, 3);
        m.collect();
        assert!(m.take_batches().is_empty());
    }
}
