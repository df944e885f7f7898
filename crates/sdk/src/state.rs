//! The configuration the client serves: the server's snapshot (its type and the patch's are
//! `dimmer_protocol::sdk`'s) and the compiled form evaluation reads (reading and writing it on
//! disk is `disk`'s business).
//!
//! A [`Loaded`] configuration is immutable; a change builds a new one (apply, compile once) and
//! swaps it in whole, so evaluation never sees half a change and never takes a lock.

use std::collections::{BTreeSet, HashMap};

use dimmer_engine::CompiledFlags;
use dimmer_engine::model::Flag;
use serde::Serialize;

use crate::metrics::CounterTable;

/// Where the configuration being served came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Nothing is known yet: every getter serves the caller's default.
    Nothing,
    /// A bootstrap file or value given to the builder.
    Bootstrap,
    /// The last-known-good cache on disk, from an earlier run.
    Cache,
    /// The server, this run.
    Server,
}

/// `GET /api/v1/sdk/config` and the stream's `snapshot` event: one environment at one revision.
/// The server writes the same type (`dimmer_protocol`), so the two ends read one definition.
pub use dimmer_protocol::sdk::Snapshot;

/// What the provider reports as a flag's metadata, taken from its definition.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct FlagInfo {
    /// The flag's kind (`release`, `experiment`, ...).
    pub kind: &'static str,
    /// Its owner, when it has one.
    pub owner: Option<String>,
}

/// A configuration ready to serve: the snapshot, its compiled flags and its metric counters.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) snapshot: Snapshot,
    pub(crate) compiled: CompiledFlags,
    pub(crate) info: HashMap<String, FlagInfo>,
    /// Evaluation counters for this configuration's flags and variants (see `metrics`).
    pub(crate) counters: std::sync::Arc<CounterTable>,
}

impl Loaded {
    /// Compiles `snapshot`. Diagnostics are not the client's business: a broken flag serves its
    /// off variant with reason `ERROR`, as on the server.
    pub(crate) fn new(snapshot: Snapshot, shards: usize) -> Loaded {
        let (compiled, _diagnostics) = dimmer_engine::compile(&snapshot.flags, &snapshot.environment);
        let info = snapshot
            .flags
            .flags
            .iter()
            .map(|(key, flag)| (key.clone(), FlagInfo { kind: kind_name(flag), owner: flag.owner.clone() }))
            .collect();
        let counters = std::sync::Arc::new(CounterTable::new(&compiled, shards));
        Loaded { snapshot, compiled, info, counters }
    }

    pub(crate) fn revision(&self) -> i64 {
        self.snapshot.revision
    }
}

fn kind_name(flag: &Flag) -> &'static str {
    use dimmer_engine::FlagKind;
    match flag.kind {
        FlagKind::Release => "release",
        FlagKind::Experiment => "experiment",
        FlagKind::Operational => "operational",
        FlagKind::KillSwitch => "kill-switch",
        FlagKind::Permission => "permission",
    }
}

/// The flags whose answers may differ between two configurations: those added, removed or
/// redefined, and every flag when a segment changed (rules may name it).
pub(crate) fn changed_flags(old: Option<&Snapshot>, new: &Snapshot) -> Vec<String> {
    let Some(old) = old else { return new.flags.flags.keys().cloned().collect() };
    if old.flags.segments != new.flags.segments || old.environment != new.environment {
        let all: BTreeSet<&String> = old.flags.flags.keys().chain(new.flags.flags.keys()).collect();
        return all.into_iter().cloned().collect();
    }
    let mut changed: BTreeSet<&String> = BTreeSet::new();
    for (key, flag) in &new.flags.flags {
        if old.flags.flags.get(key) != Some(flag) {
            changed.insert(key);
        }
    }
    for key in old.flags.flags.keys() {
        if !new.flags.flags.contains_key(key) {
            changed.insert(key);
        }
    }
    changed.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(json: &str) -> Snapshot {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_patch_changes_the_flags_it_names() {
        let base =
            snapshot(r#"{"environment":"production","revision":3,"flags":{"flags":{"a":{},"b":{}},"segments":{}}}"#);
        let patch: dimmer_protocol::sdk::Patch =
            serde_json::from_str(r#"{"revision":4,"flags":{"a":null,"c":{"kind":"experiment"}},"segments":{}}"#)
                .unwrap();
        let next = patch.apply(&base);
        assert_eq!(next.revision, 4);
        assert_eq!(next.flags.flags.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(changed_flags(Some(&base), &next), ["a", "c"]);
    }
}
