//! The SDK's errors. Getters never return one (they serve the caller's default with a reason);
//! these come from building the client, waiting for readiness and reading files.

use std::path::PathBuf;
use std::time::Duration;

use crate::Source;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server URL cannot be parsed or cannot have a path.
    #[error("invalid server url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The client starts background tasks, so it must be built inside a Tokio runtime (or
    /// offline).
    #[error("no Tokio runtime: build the client inside one, or build it offline")]
    NoRuntime,
    /// The HTTP client could not be built or a request failed.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with an unexpected status.
    #[error("the server answered {status}")]
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// The server sent a payload that is not what the SDK API promises.
    #[error("unexpected payload from the server: {0}")]
    Payload(#[source] serde_json::Error),
    /// A bootstrap or cache file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A bootstrap or cache file is not a snapshot or a flags file.
    #[error("{}: not a snapshot or flags file: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// No configuration arrived from the server in time; the client keeps serving what it has.
    #[error("no configuration from the server after {waited:?} (serving: {serving:?})")]
    NotReady {
        /// How long the caller waited.
        waited: Duration,
        /// What the client serves meanwhile.
        serving: Source,
    },
}
