//! Dimmer's storage: the [`Store`] trait, the records it speaks, migrations per backend, and its
//! one SQL implementation on SQLite or PostgreSQL ([`sql`], with the differences in a small
//! dialect). The only crate that knows SQL; it knows nothing of HTTP.
//!
//! Every write is one transaction that changes the data, appends an audit entry, bumps the
//! revision of every environment it affects and records those revisions in the change feed, so
//! that an acknowledged change is never lost and an SSE subscriber can resume from a revision.
//! After the commit the store publishes the new revisions on [`Store::subscribe`]; the
//! PostgreSQL store also relays other replicas' commits (LISTEN/NOTIFY).

mod dialect;
pub mod history;
pub mod sql;
pub mod testing;

pub use sql::SqlStore;

/// The store on SQLite ([`SqlStore::open`]).
pub type SqliteStore = SqlStore;
/// The store on PostgreSQL ([`SqlStore::connect`], [`SqlStore::connect_with_schema`]).
pub type PostgresStore = SqlStore;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use dimmer_domain::Clock;
use dimmer_engine::{Flag, Segment};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use dimmer_domain::guard::Guard;
use dimmer_domain::outcomes::{Aggregate, MetricRow, Retention, RollupStats};
use dimmer_domain::release::{Plan, PlanState, RestorePoint, Status, Template};

/// The environments created on first start.
pub const DEFAULT_ENVIRONMENTS: [&str; 3] = ["development", "staging", "production"];

/// What can go wrong in storage. Constraint violations map to the same variants on both
/// backends, so the API answers alike whichever is configured.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such flag, segment, environment or token.
    #[error("{kind} \"{key}\" not found")]
    NotFound {
        /// `flag`, `segment`, `environment` or `token`.
        kind: &'static str,
        /// Its key or name.
        key: String,
    },
    /// A flag, segment, environment or token with that key or name already exists.
    #[error("{kind} \"{key}\" already exists")]
    AlreadyExists {
        /// `flag`, `segment`, `environment` or `token`.
        kind: &'static str,
        /// Its key or name.
        key: String,
    },
    /// Optimistic concurrency: the caller's version is stale.
    #[error("version mismatch: expected {expected}, current {current}")]
    VersionMismatch {
        /// The version the caller based its change on.
        expected: i64,
        /// The version stored now.
        current: i64,
    },
    /// A release write carried a guard event whose key is recorded already: another replica (or
    /// an earlier pass) acted on that verdict, and nothing was written.
    #[error("guard event \"{key}\" is already recorded")]
    AlreadyRecorded {
        /// The guard event's key.
        key: String,
    },
    /// A stored document no longer parses (should never happen; reported, not hidden).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

/// Who changed something and why: recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeMeta {
    /// The token name that made the change (`system` for the server itself).
    pub actor: String,
    /// Why, when the caller said (`X-Dimmer-Reason` or a body field).
    pub reason: Option<String>,
}

/// A stored flag: the engine's model plus bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagRecord {
    /// The flag key.
    pub key: String,
    /// The definition (every environment's configuration included).
    pub flag: Flag,
    /// Bumped on every change; writes must name the version they are based on.
    pub version: i64,
    /// Archived flags are left out of SDK snapshots.
    pub archived: bool,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Last change, Unix milliseconds.
    pub updated_at: i64,
}

/// What the lifecycle of every flag reads: a flag's bookkeeping, the two fields of its definition
/// it shows, and its history facts; no whole definition is parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagSummary {
    /// The flag key.
    pub key: String,
    /// Its kind.
    pub kind: dimmer_engine::model::FlagKind,
    /// Its owner.
    pub owner: Option<String>,
    /// Whether it is archived.
    pub archived: bool,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Last change, Unix milliseconds.
    pub updated_at: i64,
    /// What its history says.
    pub history: dimmer_engine::policy::HistoryFacts,
}

/// A stored segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// The segment key.
    pub key: String,
    /// The definition.
    pub segment: Segment,
    /// Bumped on every change.
    pub version: i64,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Last change, Unix milliseconds.
    pub updated_at: i64,
}

/// An environment and its revision (bumped by every change that affects it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Environment {
    /// The environment name.
    pub name: String,
    /// The revision of its configuration.
    pub revision: i64,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
}

/// A complete configuration of one environment at one revision: what SDKs evaluate. The store
/// builds it; its type is the wire's (`dimmer_protocol::sdk::Snapshot`), so the server sends
/// exactly what SDKs parse.
pub use dimmer_protocol::sdk::Snapshot;

/// An environment's revision moved: published after every commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The environment.
    pub environment: String,
    /// Its new revision.
    pub revision: i64,
}

/// What one revision changed, for resuming a stream without a full snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedItem {
    /// The revision that changed it.
    pub revision: i64,
    /// `flag` or `segment`.
    pub kind: String,
    /// Its key.
    pub key: String,
}

/// One audit-log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Increasing id.
    pub id: i64,
    /// When, Unix milliseconds.
    pub at: i64,
    /// Who (token name).
    pub actor: String,
    /// What, e.g. `flag.create`, `flag.update`, `flag.archive`, `token.create`.
    pub action: String,
    /// The environment concerned, when one is.
    pub environment: Option<String>,
    /// The flag concerned, when one is.
    pub flag: Option<String>,
    /// The segment concerned, when one is.
    pub segment: Option<String>,
    /// The state before (absent for creations).
    pub before: Option<Value>,
    /// The state after (absent for deletions).
    pub after: Option<Value>,
    /// Why.
    pub reason: Option<String>,
    /// In a page of the log: `before` or `after` was too large to list and reads
    /// `{"truncated": true, "bytes": N}` (N: its size as stored), or `reason` was cut; the entry
    /// by its id has them whole.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// How far a page of the audit log may grow beyond its count of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditBounds {
    /// A `before`, `after` or `reason` larger than this many bytes is summarised in the page.
    pub body_bytes: u64,
    /// The page ends with the entry that brings it to this many bytes (so it holds at least one).
    pub page_bytes: u64,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// When more entries match: the id to list before for the next page.
    pub next: Option<i64>,
}

/// Which audit entries to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Only entries about this flag.
    pub flag: Option<String>,
    /// Only entries about this environment.
    pub environment: Option<String>,
    /// Only entries by this actor.
    pub actor: Option<String>,
    /// Only entries with an id below this (for paging).
    pub before_id: Option<i64>,
    /// At most this many (the store caps it at 1000).
    pub limit: u32,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything.
    Admin,
    /// Flags and segments.
    Writer,
    /// Read-only admin API.
    Reader,
    /// One environment's SDK API: snapshot, stream, metrics, OFREP.
    Sdk,
    /// One environment's OFREP evaluations and their change events, nothing else: no rules,
    /// segments or user keys (the SDK snapshot carries those), no metrics, no admin API. Safe to
    /// embed in a web page.
    Client,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Writer => "writer",
            Scope::Reader => "reader",
            Scope::Sdk => "sdk",
            Scope::Client => "client",
        }
    }

    /// Parses a scope name.
    pub fn parse(s: &str) -> Option<Scope> {
        [Scope::Admin, Scope::Writer, Scope::Reader, Scope::Sdk, Scope::Client].into_iter().find(|x| x.as_str() == s)
    }
}

/// A stored token: never the token itself, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRecord {
    /// A unique name, used as the actor in the audit log.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// For `sdk` and `client` tokens, the one environment they read.
    pub environment: Option<String>,
    /// SHA-256 of the token, hex.
    #[serde(skip_serializing)]
    pub hash: String,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Revoked tokens authenticate nothing.
    pub revoked: bool,
    /// The browser origins (`scheme://host[:port]`) whose pages may use this token, beside the
    /// server-wide CORS origins; empty: the server-wide setting alone decides. The server
    /// validates them; the store keeps them as given.
    #[serde(default)]
    pub origins: Vec<String>,
}

/// The guards standing on a flag in an environment, outside any plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandingGuards {
    /// The flag.
    pub flag: String,
    /// The environment.
    pub environment: String,
    /// The guards.
    pub guards: Vec<Guard>,
    /// When they were last set, Unix milliseconds.
    #[serde(default)]
    pub updated_at_ms: i64,
}

/// The JSON columns of a metric row: the latency sketch and the events.
pub(crate) fn metric_columns(a: &Aggregate) -> StoreResult<(String, String)> {
    let latency = serde_json::to_string(&a.latency).map_err(|e| StoreError::Corrupt(format!("latency: {e}")))?;
    let events = serde_json::to_string(&a.events).map_err(|e| StoreError::Corrupt(format!("events: {e}")))?;
    Ok((latency, events))
}

/// A metric row back from its columns.
#[allow(clippy::too_many_arguments, reason = "one argument per column")]
pub(crate) fn metric_row(
    flag: String,
    variant: String,
    bucket_ms: i64,
    width_ms: i64,
    counts: [i64; 3],
    latency: &str,
    events: &str,
) -> StoreResult<MetricRow> {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(MetricRow {
        aggregate: Aggregate {
            evaluations: count(counts[0]),
            successes: count(counts[1]),
            errors: count(counts[2]),
            latency: serde_json::from_str(latency)
                .map_err(|e| StoreError::Corrupt(format!("latency of {flag}/{variant}: {e}")))?,
            events: serde_json::from_str(events)
                .map_err(|e| StoreError::Corrupt(format!("events of {flag}/{variant}: {e}")))?,
        },
        flag,
        variant,
        bucket_ms,
        width_ms,
    })
}

/// A count as the databases store it (BIGINT): saturated, since the protocol caps counts far
/// below this.
pub(crate) fn db_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A release plan and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    /// The flag released.
    pub flag: String,
    /// The environment it is released in.
    pub environment: String,
    /// The stages.
    pub plan: Plan,
    /// The current stage and status.
    pub state: PlanState,
    /// Bumped by every change to the plan; a change names the revision it is based on.
    pub revision: i64,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Last change, Unix milliseconds.
    pub updated_at: i64,
}

/// One release operation (plan start or step, kill, dial-down, restore), written atomically:
/// the flag's new definition, the plan's new state, the restore point, the guard event that
/// caused it if any, and their audit entries commit together or not at all.
#[derive(Debug, Clone)]
pub struct ReleaseWrite {
    /// The flag.
    pub flag: String,
    /// The environment.
    pub environment: String,
    /// The audit action, e.g. `release.kill` or `plan.advance`.
    pub action: String,
    /// The flag's new definition and the version it is based on.
    pub flag_update: Option<(Flag, i64)>,
    /// The plan's new content and state, and the revision it is based on (0: no plan yet, or
    /// one that is replaced).
    pub plan: Option<(Plan, PlanState, i64)>,
    /// What to do with the restore point.
    pub restore: RestoreWrite,
    /// The audit entry's `before` and `after` (a summary: enabled, exposure, plan stage).
    pub before: Value,
    /// See `before`.
    pub after: Value,
    /// The guard verdict that causes this write, when one does: recorded under its key in the
    /// same transaction, so that of several replicas acting on one verdict exactly one writes.
    pub guard_event: Option<GuardEvent>,
}

/// A guard verdict acted on, recorded once per key (per flag and environment) with an audit
/// entry of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardEvent {
    /// Identifies the verdict, e.g. the guard and the window it judged.
    pub key: String,
    /// The audit action of the verdict, e.g. `guard.regression`.
    pub action: String,
    /// The audit entry's `after`: what the guard saw.
    pub details: Value,
}

/// What a release write does to the restore point of its flag and environment.
#[derive(Debug, Clone)]
pub enum RestoreWrite {
    /// Leave it.
    Keep,
    /// Record it unless one is recorded already (the first dial-down of an incident is what
    /// `restore` goes back to).
    SetIfAbsent(RestorePoint),
    /// Forget it (after a restore).
    Clear,
}

/// What a release write stored.
#[derive(Debug, Clone)]
pub struct ReleaseOutcome {
    /// The flag after the write.
    pub flag: FlagRecord,
    /// The plan after the write, if it wrote one.
    pub plan: Option<PlanRecord>,
}

/// Result alias for storage operations.
pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    /// The stores check keys and names explicitly inside their transactions, so both backends
    /// answer alike; this catches the unique violations no check can name in advance (a second
    /// token with the same hash), on either backend, as `AlreadyExists` rather than a 500.
    fn from(e: sqlx::Error) -> Self {
        let Some(db) = e.as_database_error().filter(|d| d.is_unique_violation()) else {
            return StoreError::Database(e);
        };
        // PostgreSQL names the table; SQLite only says "UNIQUE constraint failed: table.column".
        let message = db.message();
        let target = message.rsplit_once(": ").map(|(_, t)| t).unwrap_or_default();
        let table = db.table().or_else(|| target.split_once('.').map(|(t, _)| t)).unwrap_or_default();
        let kind = match table {
            "flags" => "flag",
            "segments" => "segment",
            "environments" => "environment",
            "tokens" => "token",
            _ => "record",
        };
        let key = db.constraint().unwrap_or(target).to_owned();
        StoreError::AlreadyExists { kind, key }
    }
}

/// Durable storage for the server. One implementation, [`SqlStore`], on SQLite or PostgreSQL;
/// the contract tests run against both.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates the named environments that do not exist yet (revision 0). Used at first start.
    async fn ensure_environments(&self, names: &[&str]) -> StoreResult<()>;
    /// Every environment, by name.
    async fn list_environments(&self) -> StoreResult<Vec<Environment>>;
    /// Adds an environment; audited.
    async fn create_environment(&self, name: &str, meta: &ChangeMeta) -> StoreResult<Environment>;

    /// Flags by key; archived ones only when asked.
    async fn list_flags(&self, include_archived: bool) -> StoreResult<Vec<FlagRecord>>;
    /// One flag, archived or not.
    async fn get_flag(&self, key: &str) -> StoreResult<Option<FlagRecord>>;
    /// Creates a flag at version 1; `AlreadyExists` if the key is taken (archived flags too).
    async fn create_flag(&self, key: &str, flag: &Flag, meta: &ChangeMeta) -> StoreResult<FlagRecord>;
    /// Replaces a flag's definition if its version is still `expected_version`.
    async fn update_flag(
        &self,
        key: &str,
        flag: &Flag,
        expected_version: i64,
        meta: &ChangeMeta,
    ) -> StoreResult<FlagRecord>;
    /// Archives or restores a flag; `expected_version` is checked when given.
    async fn set_flag_archived(
        &self,
        key: &str,
        archived: bool,
        expected_version: Option<i64>,
        meta: &ChangeMeta,
    ) -> StoreResult<FlagRecord>;

    /// Segments by key.
    async fn list_segments(&self) -> StoreResult<Vec<SegmentRecord>>;
    /// One segment.
    async fn get_segment(&self, key: &str) -> StoreResult<Option<SegmentRecord>>;
    /// Creates a segment at version 1.
    async fn create_segment(&self, key: &str, segment: &Segment, meta: &ChangeMeta) -> StoreResult<SegmentRecord>;
    /// Replaces a segment if its version is still `expected_version`.
    async fn update_segment(
        &self,
        key: &str,
        segment: &Segment,
        expected_version: i64,
        meta: &ChangeMeta,
    ) -> StoreResult<SegmentRecord>;
    /// Deletes a segment if its version is still `expected_version`.
    async fn delete_segment(&self, key: &str, expected_version: i64, meta: &ChangeMeta) -> StoreResult<()>;

    /// The environment's complete configuration, read in one transaction.
    async fn snapshot(&self, environment: &str) -> StoreResult<Snapshot>;
    /// What changed in `environment` after `revision`, oldest first; `None` when the feed no
    /// longer reaches back that far (the caller then sends a snapshot).
    async fn changes_since(&self, environment: &str, revision: i64) -> StoreResult<Option<Vec<ChangedItem>>>;

    /// Audit entries matching the filter, newest first, whole.
    async fn audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>>;

    /// A page of the audit entries matching the filter, newest first, bounded in bytes as well as
    /// in count: large bodies are summarised (never read whole) and the page ends at
    /// `bounds.page_bytes`.
    async fn audit_page(&self, filter: &AuditFilter, bounds: &AuditBounds) -> StoreResult<AuditPage>;

    /// One audit entry, whole.
    async fn get_audit_entry(&self, id: i64) -> StoreResult<Option<AuditEntry>>;

    /// Every flag (archived included) by key, summarised for its lifecycle. The history facts
    /// are kept up to date by every definition write, and replayed from the audit log for a
    /// flag written before the store kept them.
    async fn flag_summaries(&self) -> StoreResult<Vec<FlagSummary>>;

    /// Stores a token's hash, created now by the store's clock; audited (without the token).
    async fn create_token(&self, token: &TokenRecord, meta: &ChangeMeta) -> StoreResult<()>;
    /// The token with this hash, revoked or not.
    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>>;
    /// Every token, by name.
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;
    /// Revokes a token by name; audited.
    async fn revoke_token(&self, name: &str, meta: &ChangeMeta) -> StoreResult<()>;

    /// Appends the rows of one metrics batch, in one transaction: all or none.
    async fn record_metrics(&self, environment: &str, rows: &[MetricRow]) -> StoreResult<()>;
    /// A flag's rows whose buckets start in `[from_ms, until_ms)`, any width.
    async fn metric_rows(
        &self,
        environment: &str,
        flag: &str,
        from_ms: i64,
        until_ms: i64,
    ) -> StoreResult<Vec<MetricRow>>;
    /// One rollup pass: merges closed buckets' fresh rows, coarsens old buckets, expires rows
    /// past retention. Safe to run on several replicas at once.
    async fn roll_up_metrics(&self, now_ms: i64, retention: &Retention) -> StoreResult<RollupStats>;
    /// When each flag was last evaluated in an environment: the start of its latest bucket with
    /// evaluations, Unix milliseconds.
    async fn last_evaluations(&self, environment: &str) -> StoreResult<HashMap<String, i64>>;
    /// Every flag's standing guards, by flag and environment.
    async fn list_standing_guards(&self) -> StoreResult<Vec<StandingGuards>>;
    /// Replaces the standing guards on a flag in an environment (none removes them); audited.
    async fn put_standing_guards(&self, guards: &StandingGuards, meta: &ChangeMeta) -> StoreResult<()>;
    /// Records a guard event under `key` unless it is already recorded, with an audit entry
    /// (`action`, `details` as its `after`) in the same transaction. True when this call
    /// recorded it: of several replicas seeing the same verdict, exactly one acts.
    async fn guard_event_once(
        &self,
        flag: &str,
        environment: &str,
        key: &str,
        action: &str,
        details: &Value,
        meta: &ChangeMeta,
    ) -> StoreResult<bool>;

    /// The release plan on a flag in an environment.
    async fn get_plan(&self, flag: &str, environment: &str) -> StoreResult<Option<PlanRecord>>;
    /// Every release plan, finished ones included.
    async fn list_plans(&self) -> StoreResult<Vec<PlanRecord>>;
    /// The running plans only (what the guard loop judges and advances), from the status index.
    async fn list_running_plans(&self) -> StoreResult<Vec<PlanRecord>> {
        let mut plans = self.list_plans().await?;
        plans.retain(|p| p.state.status == Status::Running);
        Ok(plans)
    }
    /// The restore point left by a kill or dial-down, if there is one.
    async fn restore_point(&self, flag: &str, environment: &str) -> StoreResult<Option<RestorePoint>>;
    /// Writes a release operation in one transaction. `VersionMismatch` when the flag's version
    /// or the plan's revision is no longer the one the write is based on: of several replicas
    /// deciding the same step, exactly one commits it. With a guard event, `AlreadyRecorded`
    /// when its key is recorded already; either way nothing is written.
    async fn release_write(&self, write: &ReleaseWrite, meta: &ChangeMeta) -> StoreResult<ReleaseOutcome>;
    /// Stored plan templates by name (the built-in ones are not stored).
    async fn list_templates(&self) -> StoreResult<Vec<Template>>;
    /// Creates or replaces a template; audited.
    async fn put_template(&self, template: &Template, meta: &ChangeMeta) -> StoreResult<()>;

    /// Revision changes committed from now on (by this process or, on PostgreSQL, any replica).
    fn subscribe(&self) -> broadcast::Receiver<Change>;
}

/// The environment a change is about, when it changes exactly one environment's configuration
/// and nothing else (a toggle, a targeting change); `None` for flag-wide changes.
pub(crate) fn single_changed_environment(before: &Flag, after: &Flag) -> Option<String> {
    let mut a = before.clone();
    let mut b = after.clone();
    let envs: std::collections::BTreeSet<&String> =
        before.environments.keys().chain(after.environments.keys()).collect();
    let changed: Vec<&String> =
        envs.into_iter().filter(|e| before.environments.get(*e) != after.environments.get(*e)).collect();
    a.environments.clear();
    b.environments.clear();
    match changed.as_slice() {
        [one] if a == b => Some((*one).clone()),
        _ => None,
    }
}

pub(crate) fn flag_json(r: &FlagRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(&r.flag).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut v {
        map.insert("archived".into(), serde_json::Value::Bool(r.archived));
        map.insert("version".into(), serde_json::Value::from(r.version));
    }
    v
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// Opens the configured store: PostgreSQL for a `postgres://` URL, else SQLite in `data_dir`;
/// every time it writes comes from `clock`.
pub async fn open(database_url: Option<&str>, data_dir: &Path, clock: Arc<dyn Clock>) -> StoreResult<Arc<dyn Store>> {
    match database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Arc::new(SqlStore::connect(url, clock).await?))
        }
        _ => Ok(Arc::new(SqlStore::open(&data_dir.join("dimmer.db"), clock).await?)),
    }
}
