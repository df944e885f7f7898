//! The SDK's errors, and the codes that say why a getter served the caller's default. Getters
//! never return an [`Error`] (they serve the default with an [`ErrorCode`]); errors come from
//! building the client, waiting for readiness and reading files.

use std::path::PathBuf;
use std::time::Duration;

use crate::state::Source;

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

/// Why a getter served the caller's default (OpenFeature's error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No configuration is known yet (nothing cached, nothing from the server).
    ProviderNotReady,
    /// No flag with that key.
    FlagNotFound,
    /// The flag serves a value of another type.
    TypeMismatch,
    /// The flag's definition is invalid.
    ParseError,
    /// A rollout needed a bucketing value the context does not have.
    TargetingKeyMissing,
    /// The context cannot be used.
    InvalidContext,
    /// Anything else.
    General,
}

impl ErrorCode {
    /// The code as OpenFeature spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ProviderNotReady => "PROVIDER_NOT_READY",
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::General => "GENERAL",
        }
    }
}

impl From<dimmer_engine::ErrorCode> for ErrorCode {
    fn from(code: dimmer_engine::ErrorCode) -> Self {
        use dimmer_engine::ErrorCode as E;
        match code {
            E::FlagNotFound => ErrorCode::FlagNotFound,
            E::TypeMismatch => ErrorCode::TypeMismatch,
            E::ParseError => ErrorCode::ParseError,
            E::TargetingKeyMissing => ErrorCode::TargetingKeyMissing,
            E::InvalidContext => ErrorCode::InvalidContext,
            E::General => ErrorCode::General,
        }
    }
}
