//! The configuration on disk: bootstrap files the application ships and the last-known-good
//! cache the client keeps, read at start and written atomically on every change.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use dimmer_engine::FlagSet;

use crate::error::Error;
use crate::state::Snapshot;

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
