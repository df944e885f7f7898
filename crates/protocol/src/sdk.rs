//! What the server sends an SDK about an environment's configuration: the snapshot
//! (`GET /api/v1/sdk/config` and the stream's `snapshot` event) and the stream's `patch` event.
//!
//! The server serializes these types and the SDK parses them: one definition, so the two ends
//! cannot drift apart. Flags and segments are the engine's model, unchanged.

use dimmer_engine::{Flag, FlagSet, Segment};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// One environment at one revision: every non-archived flag and the segments they use.
///
/// On the wire: `{"environment", "revision", "flags": {"flags": {…}, "segments": {…}}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The environment.
    pub environment: String,
    /// Its revision.
    pub revision: i64,
    /// Every non-archived flag and the segments they use.
    pub flags: FlagSet,
}

/// What one revision changed, as the stream's `patch` event carries it:
/// `{"revision", "flags": {key: flag or null}, "segments": {key: segment or null}}`, where `null`
/// means archived or deleted.
///
/// The maps keep the order of the change feed (an `IndexMap`), so a patch is written in the
/// order its changes were made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Patch {
    /// The revision this patch brings a client to.
    pub revision: i64,
    /// Flags added or redefined (their definition) and removed (`null`).
    #[serde(default)]
    pub flags: IndexMap<String, Option<Flag>>,
    /// Segments added or redefined (their definition) and removed (`null`).
    #[serde(default)]
    pub segments: IndexMap<String, Option<Segment>>,
}

impl Patch {
    /// An empty patch: it only moves a client to `revision`.
    pub fn new(revision: i64) -> Self {
        Self { revision, ..Self::default() }
    }

    /// Applies this patch to `base`: the snapshot at the patch's revision.
    pub fn apply(self, base: &Snapshot) -> Snapshot {
        let mut next = base.clone();
        next.revision = self.revision;
        for (key, flag) in self.flags {
            match flag {
                Some(flag) => {
                    next.flags.flags.insert(key, flag);
                }
                None => {
                    next.flags.flags.shift_remove(&key);
                }
            }
        }
        for (key, segment) in self.segments {
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
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn a_snapshot_reads_and_writes_the_documented_shape() {
        let text = r#"{"environment":"production","revision":3,"flags":{"flags":{"a":{}},"segments":{"s":{}}}}"#;
        let snapshot: Snapshot = serde_json::from_str(text).unwrap();
        assert_eq!((snapshot.environment.as_str(), snapshot.revision), ("production", 3));
        let back: serde_json::Value = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(back["revision"], 3);
        assert!(back["flags"]["flags"]["a"].is_object());
        assert!(back["flags"]["segments"]["s"].is_object());
    }

    #[test]
    fn a_patch_is_written_in_field_and_change_order_with_null_for_removals() {
        let mut patch = Patch::new(7);
        patch.flags.insert("zeta".into(), None);
        patch.flags.insert("alpha".into(), Some(serde_json::from_str("{}").unwrap()));
        let text = serde_json::to_string(&patch).unwrap();
        assert!(text.starts_with(r#"{"revision":7,"flags":{"zeta":null,"alpha":{"#), "{text}");
        assert!(text.ends_with(r#""segments":{}}"#), "{text}");
        assert_eq!(serde_json::from_str::<Patch>(&text).unwrap(), patch);
    }

    #[test]
    fn missing_maps_read_as_empty() {
        let patch: Patch = serde_json::from_str(r#"{"revision":4}"#).unwrap();
        assert_eq!(patch, Patch::new(4));
    }

    #[test]
    fn applying_a_patch_adds_replaces_and_removes() {
        let base: Snapshot = serde_json::from_str(
            r#"{"environment":"production","revision":3,"flags":{"flags":{"a":{},"b":{}},"segments":{"s":{}}}}"#,
        )
        .unwrap();
        let patch: Patch = serde_json::from_str(
            r#"{"revision":4,"flags":{"a":null,"c":{"kind":"experiment"}},"segments":{"s":null}}"#,
        )
        .unwrap();
        let next = patch.apply(&base);
        assert_eq!(next.revision, 4);
        assert_eq!(next.flags.flags.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert!(next.flags.segments.is_empty());
    }
}
