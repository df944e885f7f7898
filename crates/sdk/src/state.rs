//! The configuration the client serves: the server's snapshot and patch payloads, the compiled
//! form evaluation reads, and the last-known-good cache file on disk.
//!
//! A [`Loaded`] configuration is immutable; a change builds a new one (apply, compile once) and
//! swaps it in whole, so evaluation never sees half a change and never takes a lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use dimmer_engine::model::Flag;
use dimmer_engine::{CompiledFlags, FlagSet, Segment};
use serde::{Deserialize, Serialize};

use crate::error::Error;
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The environment.
    pub environment: String,
    /// Its revision.
    pub revision: i64,
    /// Every non-archived flag and every segment.
    pub flags: FlagSet,
}

/// The stream's `patch` event: what one revision changed (`null`: archived or deleted).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Patch {
    pub(crate) revision: i64,
    #[serde(default)]
    pub(crate) flags: BTreeMap<String, Option<Flag>>,
    #[serde(default)]
    pub(crate) segments: BTreeMap<String, Option<Segment>>,
}

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

/// Applies a patch to a snapshot: the next revision's snapshot.
pub(crate) fn apply_patch(base: &Snapshot, patch: Patch) -> Snapshot {
    let mut next = base.clone();
    next.revision = patch.revision;
    for (key, flag) in patch.flags {
        match flag {
            Some(flag) => {
                next.flags.flags.insert(key, flag);
            }
            None => {
                next.flags.flags.shift_remove(&key);
            }
        }
    }
    for (key, segment) in patch.segments {
        match segment {
            Some(segment) => {
                next.flags.segments.insert(key, segment);
            }
            None => {
                next.flags.segments.shift_remove(&key);
            }
        }
    }
    next
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

/// Reads a bootstrap or cache file: a snapshot (`{"environment", "revision", "flags"}`) or a
/// plain flags file, served for `environment` at revision 0.
pub(crate) fn read_file(path: &Path, environment: Option<&str>) -> Result<Snapshot, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    parse_file(&bytes, environment).map_err(|source| Error::File { path: path.to_owned(), source })
}

fn parse_file(bytes: &[u8], environment: Option<&str>) -> Result<Snapshot, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_slice(bytes)?;
    if value.get("revision").is_some() {
        return serde_json::from_value(value);
    }
    let flags: FlagSet = serde_json::from_value(value)?;
    Ok(Snapshot { environment: environment.unwrap_or("production").to_owned(), revision: 0, flags })
}

/// Writes `snapshot` to `path` atomically: a temporary file beside it, flushed, then renamed
/// over it, so that a crash mid-write leaves the previous good file, never half of one.
pub(crate) fn write_cache(path: &Path, snapshot: &Snapshot) -> Result<(), Error> {
    let io = |source| Error::Io { path: path.to_owned(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = temp_path(path);
    let json = serde_json::to_vec(snapshot).map_err(|source| Error::File { path: path.to_owned(), source })?;
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(json: &str) -> Snapshot {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_patch_adds_replaces_and_removes_flags() {
        let base =
            snapshot(r#"{"environment":"production","revision":3,"flags":{"flags":{"a":{},"b":{}},"segments":{}}}"#);
        let patch: Patch =
            serde_json::from_str(r#"{"revision":4,"flags":{"a":null,"c":{"kind":"experiment"}},"segments":{}}"#)
                .unwrap();
        let next = apply_patch(&base, patch);
        assert_eq!(next.revision, 4);
        assert_eq!(next.flags.flags.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(changed_flags(Some(&base), &next), ["a", "c"]);
    }

    #[test]
    fn a_plain_flags_file_is_a_snapshot_at_revision_zero() {
        let s = parse_file(br#"{"flags":{"x":{}}}"#, Some("staging")).unwrap();
        assert_eq!((s.environment.as_str(), s.revision), ("staging", 0));
    }

    #[test]
    fn the_cache_round_trips_through_an_atomic_write() {
        let dir = std::env::temp_dir().join(format!("dimmer-sdk-cache-{}", std::process::id()));
        let path = dir.join("nested").join("cache.json");
        let s = snapshot(r#"{"environment":"production","revision":9,"flags":{"flags":{"a":{}}}}"#);
        write_cache(&path, &s).unwrap();
        assert_eq!(read_file(&path, None).unwrap(), s);
        assert!(!temp_path(&path).exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
