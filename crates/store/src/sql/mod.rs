//! The store, written once for SQLite and PostgreSQL over sqlx's `Any` driver; what differs
//! between the two lives in [`crate::dialect`]. Queries use `$N` placeholders (SQLite accepts
//! them too) and portable SQL: `NOT archived` rather than `archived = 0`, booleans bound rather
//! than written as literals, `CAST(.. AS ..)` rather than `::`.
//!
//! Every write is one transaction that changes the data, appends an audit entry and, for
//! configuration changes, bumps the revision of every environment and records it in the change
//! feed; the new revisions are published after the commit. Every time the store writes comes
//! from the injected clock.

mod flags;
mod metrics;
mod releases;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use dimmer_domain::Clock;
use dimmer_domain::outcomes::{MetricRow, Retention, RollupStats};
use dimmer_domain::release::{PlanState, RestorePoint, Status, Template};
use dimmer_engine::policy::HistoryFacts;
use dimmer_engine::{Flag, Segment};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};
use tokio::sync::broadcast;

use crate::dialect::Dialect;
use crate::{
    AuditBounds, AuditEntry, AuditFilter, AuditPage, Change, ChangeMeta, ChangedItem, Environment, FlagRecord,
    PlanRecord, ReleaseOutcome, ReleaseWrite, Scope, SegmentRecord, Snapshot, StandingGuards, Store, StoreError,
    StoreResult, TokenRecord, flag_json, metric_row, single_changed_environment,
};

/// The change feed keeps this many revisions per environment for stream resumption.
const FEED_KEEP: i64 = 10_000;

/// The columns of a flag, in the order [`flag_from`] reads them.
const FLAG_COLUMNS: &str = "key, definition, version, archived, created_at, updated_at";
/// The columns of a segment, in the order [`segment_from`] reads them.
const SEGMENT_COLUMNS: &str = "key, definition, version, created_at, updated_at";

/// A store on SQLite or PostgreSQL.
pub struct SqlStore {
    pool: AnyPool,
    /// Telemetry's connections (the same pool on SQLite, whose writers a mutex serializes).
    telemetry: AnyPool,
    dialect: Dialect,
    clock: Arc<dyn Clock>,
    changes: broadcast::Sender<Change>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore").field("dialect", &self.dialect).finish_non_exhaustive()
    }
}

/// What one write changes, to be recorded in the audit log.
struct Audit<'a> {
    action: &'a str,
    environment: Option<&'a str>,
    flag: Option<&'a str>,
    segment: Option<&'a str>,
    before: Option<Value>,
    after: Option<Value>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

impl SqlStore {
    /// Opens (creating if needed) the SQLite file at `path` and brings its schema up to date.
    pub async fn open(path: &Path, clock: Arc<dyn Clock>) -> StoreResult<Self> {
        let (pool, dialect) = Dialect::open_sqlite(path).await?;
        let (changes, _) = broadcast::channel(1024);
        Ok(Self { telemetry: pool.clone(), pool, dialect, clock, changes })
    }

    /// Connects to PostgreSQL and brings the schema up to date.
    pub async fn connect(url: &str, clock: Arc<dyn Clock>) -> StoreResult<Self> {
        Self::connect_postgres(url, None, clock).await
    }

    /// Connects to PostgreSQL using (and creating if needed) one schema: several Dimmer
    /// installations, or test runs, can share a database.
    pub async fn connect_with_schema(url: &str, schema: &str, clock: Arc<dyn Clock>) -> StoreResult<Self> {
        Self::connect_postgres(url, Some(schema), clock).await
    }

    async fn connect_postgres(url: &str, schema: Option<&str>, clock: Arc<dyn Clock>) -> StoreResult<Self> {
        let (changes, _) = broadcast::channel(1024);
        let (pool, telemetry, dialect) = Dialect::connect_postgres(url, schema, &changes).await?;
        Ok(Self { pool, telemetry, dialect, clock, changes })
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Bumps every environment's revision and records `kind`/`key` in the feed.
    async fn bump_all(&self, conn: &mut AnyConnection, kind: &str, key: &str) -> StoreResult<Vec<Change>> {
        self.bump(conn, None, kind, key).await
    }

    /// Bumps the revision of each environment in `only` (every environment when `None`) and
    /// records `kind`/`key` in their feeds. Each environment has its own revision sequence: a
    /// change that concerns one environment wakes only that environment's streams.
    async fn bump(
        &self,
        conn: &mut AnyConnection,
        only: Option<&BTreeSet<String>>,
        kind: &str,
        key: &str,
    ) -> StoreResult<Vec<Change>> {
        let lock = self.dialect.row_lock();
        if !lock.is_empty() {
            // Lock the revision rows in one order in every writer, so concurrent writers queue
            // instead of deadlocking.
            sqlx::query(&format!("SELECT name FROM environments ORDER BY name{lock}")).execute(&mut *conn).await?;
        }
        let rows = match only {
            None => {
                sqlx::query("UPDATE environments SET revision = revision + 1 RETURNING name, revision")
                    .fetch_all(&mut *conn)
                    .await?
            }
            Some(names) => {
                let mut rows = Vec::with_capacity(names.len());
                for name in names {
                    rows.extend(
                        sqlx::query(
                            "UPDATE environments SET revision = revision + 1 WHERE name = $1 RETURNING name, revision",
                        )
                        .bind(name)
                        .fetch_optional(&mut *conn)
                        .await?,
                    );
                }
                rows
            }
        };
        // RETURNING comes in storage order; announce in name order, the same on every commit.
        let mut bumped = rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<StoreResult<Vec<_>>>()?;
        bumped.sort();
        let mut changes = Vec::with_capacity(bumped.len());
        for (environment, revision) in bumped {
            sqlx::query("INSERT INTO changes (environment, revision, kind, key) VALUES ($1, $2, $3, $4)")
                .bind(&environment)
                .bind(revision)
                .bind(kind)
                .bind(key)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM changes WHERE environment = $1 AND revision <= $2")
                .bind(&environment)
                .bind(revision - FEED_KEEP)
                .execute(&mut *conn)
                .await?;
            let change = Change { environment, revision };
            self.dialect.bumped(conn, &change).await?;
            changes.push(change);
        }
        Ok(changes)
    }

    async fn audit_entry(&self, conn: &mut AnyConnection, meta: &ChangeMeta, a: Audit<'_>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit (at, actor, action, environment, flag, segment, before, after, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(self.now())
        .bind(&meta.actor)
        .bind(a.action)
        .bind(a.environment)
        .bind(a.flag)
        .bind(a.segment)
        .bind(a.before.map(|v| v.to_string()))
        .bind(a.after.map(|v| v.to_string()))
        .bind(&meta.reason)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    fn publish(&self, changes: Vec<Change>) {
        for change in changes {
            // No subscriber is fine: nobody is streaming yet.
            let _ = self.changes.send(change);
        }
    }

    /// A flag, locked for the rest of the transaction when `lock` (on PostgreSQL).
    async fn flag_in(&self, conn: &mut AnyConnection, key: &str, lock: bool) -> StoreResult<Option<FlagRecord>> {
        let lock = if lock { self.dialect.row_lock() } else { "" };
        let sql = format!("SELECT {FLAG_COLUMNS} FROM flags WHERE key = $1{lock}");
        let row = sqlx::query(&sql).bind(key).fetch_optional(&mut *conn).await?;
        row.map(|r| flag_from(&r)).transpose()
    }

    /// The flag about to change, locked, if it is still at `expected` version (when given).
    async fn flag_at(&self, conn: &mut AnyConnection, key: &str, expected: Option<i64>) -> StoreResult<FlagRecord> {
        let before = self
            .flag_in(conn, key, true)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: "flag", key: key.into() })?;
        match expected {
            Some(expected) if before.version != expected => {
                Err(StoreError::VersionMismatch { expected, current: before.version })
            }
            _ => Ok(before),
        }
    }

    /// A segment, locked for the rest of the transaction when `lock` (on PostgreSQL).
    async fn segment_in(&self, conn: &mut AnyConnection, key: &str, lock: bool) -> StoreResult<Option<SegmentRecord>> {
        let lock = if lock { self.dialect.row_lock() } else { "" };
        let sql = format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE key = $1{lock}");
        let row = sqlx::query(&sql).bind(key).fetch_optional(&mut *conn).await?;
        row.map(|r| segment_from(&r)).transpose()
    }

    /// Stores a flag's new state, audits it and bumps revisions, in the caller's transaction.
    async fn save_flag(
        &self,
        conn: &mut AnyConnection,
        before: &FlagRecord,
        flag: &Flag,
        archived: bool,
        action: &str,
        meta: &ChangeMeta,
    ) -> StoreResult<(FlagRecord, Vec<Change>)> {
        let (after, changes) = self.store_flag(conn, before, flag, archived).await?;
        let environment = single_changed_environment(&before.flag, flag);
        let entry = Audit {
            action,
            environment: environment.as_deref(),
            flag: Some(&before.key),
            segment: None,
            before: Some(flag_json(before)),
            after: Some(flag_json(&after)),
        };
        self.audit_entry(conn, meta, entry).await?;
        Ok((after, changes))
    }

    /// Stores a flag's new state and bumps revisions (no audit entry), in the caller's
    /// transaction.
    async fn store_flag(
        &self,
        conn: &mut AnyConnection,
        before: &FlagRecord,
        flag: &Flag,
        archived: bool,
    ) -> StoreResult<(FlagRecord, Vec<Change>)> {
        let now = self.now();
        let definition = serde_json::to_string(flag).map_err(|e| corrupt("flag", e))?;
        // The lifecycle's facts move with the definition, in the same transaction.
        let stored: Option<String> = sqlx::query("SELECT facts FROM flags WHERE key = $1")
            .bind(&before.key)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| r.try_get::<Option<String>, _>(0))
            .transpose()?
            .flatten();
        let mut history = match stored.and_then(|t| serde_json::from_str::<Kept>(&t).ok()) {
            Some(kept) => kept.history,
            None => flags::replayed_facts(conn, &before.key).await?,
        };
        history.step(now, flag);
        sqlx::query(
            "UPDATE flags SET definition = $1, version = version + 1, archived = $2, updated_at = $3, facts = $5 \
             WHERE key = $4",
        )
        .bind(&definition)
        .bind(archived)
        .bind(now)
        .bind(&before.key)
        .bind(Kept::json(flag, history))
        .execute(&mut *conn)
        .await?;
        let after =
            FlagRecord { flag: flag.clone(), version: before.version + 1, archived, updated_at: now, ..before.clone() };
        // A change to one environment's configuration concerns that environment only; anything
        // else (variants, description, archiving) is in every environment's view.
        let only = single_changed_environment(&before.flag, flag).map(|env| BTreeSet::from([env]));
        let changes = self.bump(conn, only.as_ref(), "flag", &before.key).await?;
        Ok((after, changes))
    }
}

/// A boolean column. PostgreSQL has booleans; SQLite stores 0 and 1, which the `Any` driver
/// hands over as integers.
fn bool_at(r: &AnyRow, i: usize) -> StoreResult<bool> {
    match r.try_get::<bool, _>(i) {
        Ok(b) => Ok(b),
        Err(_) => Ok(r.try_get::<i64, _>(i)? != 0),
    }
}

/// A JSON text column.
fn json_at<T: serde::de::DeserializeOwned>(r: &AnyRow, i: usize, what: impl std::fmt::Display) -> StoreResult<T> {
    let text: String = r.try_get(i)?;
    serde_json::from_str(&text).map_err(|e| corrupt(&what.to_string(), e))
}

/// An optional JSON text column (audit `before`/`after`); unparsable text reads as absent.
/// What the `facts` column keeps of a flag for its lifecycle (migration 0005): the two fields
/// of the definition the lifecycle shows, and the history facts, so that the lifecycle of every
/// flag reads neither the definitions nor the audit log.
#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    #[serde(default)]
    kind: dimmer_engine::FlagKind,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    history: HistoryFacts,
}

impl Kept {
    /// The column's text for `flag` with `history` (serializing plain data cannot fail).
    fn json(flag: &Flag, history: HistoryFacts) -> String {
        serde_json::to_string(&Kept { kind: flag.kind, owner: flag.owner.clone(), history }).unwrap_or_default()
    }
}

fn json_column(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn flag_from(r: &AnyRow) -> StoreResult<FlagRecord> {
    let key: String = r.try_get(0)?;
    let flag = json_at(r, 1, format_args!("flag {key}"))?;
    Ok(FlagRecord {
        flag,
        version: r.try_get(2)?,
        archived: bool_at(r, 3)?,
        created_at: r.try_get(4)?,
        updated_at: r.try_get(5)?,
        key,
    })
}

fn segment_from(r: &AnyRow) -> StoreResult<SegmentRecord> {
    let key: String = r.try_get(0)?;
    let segment = json_at(r, 1, format_args!("segment {key}"))?;
    Ok(SegmentRecord { segment, version: r.try_get(2)?, created_at: r.try_get(3)?, updated_at: r.try_get(4)?, key })
}

fn token_from(r: &AnyRow) -> StoreResult<TokenRecord> {
    let scope: String = r.try_get(1)?;
    Ok(TokenRecord {
        name: r.try_get(0)?,
        scope: Scope::parse(&scope).ok_or_else(|| corrupt("token scope", &scope))?,
        environment: r.try_get(2)?,
        hash: r.try_get(3)?,
        created_at: r.try_get(4)?,
        revoked: bool_at(r, 5)?,
        origins: json_at(r, 6, "token origins")?,
    })
}

fn plan_from(r: &AnyRow) -> StoreResult<PlanRecord> {
    let flag: String = r.try_get(0)?;
    let plan = json_at(r, 2, format_args!("plan on {flag}"))?;
    let stage: i64 = r.try_get(3)?;
    let status: String = r.try_get(5)?;
    let state = PlanState {
        stage: usize::try_from(stage).map_err(|e| corrupt("plan stage", e))?,
        entered_at_ms: r.try_get(4)?,
        status: Status::parse(&status).ok_or_else(|| corrupt("plan status", &status))?,
    };
    Ok(PlanRecord {
        flag,
        environment: r.try_get(1)?,
        plan,
        state,
        revision: r.try_get(6)?,
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
    })
}

/// A metric row from the columns starting at `at`: flag, variant, bucket, width, the three
/// counts, latency, events.
fn metric_from(r: &AnyRow, at: usize) -> StoreResult<MetricRow> {
    metric_row(
        r.try_get(at)?,
        r.try_get(at + 1)?,
        r.try_get(at + 2)?,
        r.try_get(at + 3)?,
        [r.try_get(at + 4)?, r.try_get(at + 5)?, r.try_get(at + 6)?],
        &r.try_get::<String, _>(at + 7)?,
        &r.try_get::<String, _>(at + 8)?,
    )
}

#[async_trait]
impl Store for SqlStore {
    async fn ensure_environments(&self, names: &[&str]) -> StoreResult<()> {
        flags::ensure_environments(self, names).await
    }

    async fn list_environments(&self) -> StoreResult<Vec<Environment>> {
        flags::list_environments(self).await
    }

    async fn create_environment(&self, name: &str, meta: &ChangeMeta) -> StoreResult<Environment> {
        flags::create_environment(self, name, meta).await
    }

    async fn list_flags(&self, include_archived: bool) -> StoreResult<Vec<FlagRecord>> {
        flags::list_flags(self, include_archived).await
    }

    async fn get_flag(&self, key: &str) -> StoreResult<Option<FlagRecord>> {
        let mut conn = self.pool.acquire().await?;
        self.flag_in(&mut conn, key, false).await
    }

    async fn create_flag(&self, key: &str, flag: &Flag, meta: &ChangeMeta) -> StoreResult<FlagRecord> {
        flags::create_flag(self, key, flag, meta).await
    }

    async fn update_flag(
        &self,
        key: &str,
        flag: &Flag,
        expected_version: i64,
        meta: &ChangeMeta,
    ) -> StoreResult<FlagRecord> {
        flags::update_flag(self, key, flag, expected_version, meta).await
    }

    async fn set_flag_archived(
        &self,
        key: &str,
        archived: bool,
        expected_version: Option<i64>,
        meta: &ChangeMeta,
    ) -> StoreResult<FlagRecord> {
        flags::set_flag_archived(self, key, archived, expected_version, meta).await
    }

    async fn list_segments(&self) -> StoreResult<Vec<SegmentRecord>> {
        flags::list_segments(self).await
    }

    async fn get_segment(&self, key: &str) -> StoreResult<Option<SegmentRecord>> {
        let mut conn = self.pool.acquire().await?;
        self.segment_in(&mut conn, key, false).await
    }

    async fn create_segment(&self, key: &str, segment: &Segment, meta: &ChangeMeta) -> StoreResult<SegmentRecord> {
        flags::create_segment(self, key, segment, meta).await
    }

    async fn update_segment(
        &self,
        key: &str,
        segment: &Segment,
        expected_version: i64,
        meta: &ChangeMeta,
    ) -> StoreResult<SegmentRecord> {
        flags::update_segment(self, key, segment, expected_version, meta).await
    }

    async fn delete_segment(&self, key: &str, expected_version: i64, meta: &ChangeMeta) -> StoreResult<()> {
        flags::delete_segment(self, key, expected_version, meta).await
    }

    async fn snapshot(&self, environment: &str) -> StoreResult<Snapshot> {
        flags::snapshot(self, environment).await
    }

    async fn changes_since(&self, environment: &str, revision: i64) -> StoreResult<Option<Vec<ChangedItem>>> {
        flags::changes_since(self, environment, revision).await
    }

    async fn audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        flags::audit(self, filter).await
    }

    async fn audit_page(&self, filter: &AuditFilter, bounds: &AuditBounds) -> StoreResult<AuditPage> {
        flags::audit_page(self, filter, bounds).await
    }

    async fn flag_summaries(&self) -> StoreResult<Vec<crate::FlagSummary>> {
        flags::flag_summaries(self).await
    }

    async fn get_audit_entry(&self, id: i64) -> StoreResult<Option<AuditEntry>> {
        flags::get_audit_entry(self, id).await
    }

    async fn create_token(&self, token: &TokenRecord, meta: &ChangeMeta) -> StoreResult<()> {
        flags::create_token(self, token, meta).await
    }

    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        flags::token_by_hash(self, hash).await
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        flags::list_tokens(self).await
    }

    async fn revoke_token(&self, name: &str, meta: &ChangeMeta) -> StoreResult<()> {
        flags::revoke_token(self, name, meta).await
    }

    async fn record_metrics(&self, environment: &str, rows: &[MetricRow]) -> StoreResult<()> {
        metrics::record_metrics(self, environment, rows).await
    }

    async fn metric_rows(
        &self,
        environment: &str,
        flag: &str,
        from_ms: i64,
        until_ms: i64,
    ) -> StoreResult<Vec<MetricRow>> {
        metrics::metric_rows(self, environment, flag, from_ms, until_ms).await
    }

    async fn roll_up_metrics(&self, now_ms: i64, retention: &Retention) -> StoreResult<RollupStats> {
        metrics::roll_up_metrics(self, now_ms, retention).await
    }

    async fn last_evaluations(&self, environment: &str) -> StoreResult<HashMap<String, i64>> {
        metrics::last_evaluations(self, environment).await
    }

    async fn list_standing_guards(&self) -> StoreResult<Vec<StandingGuards>> {
        releases::list_standing_guards(self).await
    }

    async fn put_standing_guards(&self, guards: &StandingGuards, meta: &ChangeMeta) -> StoreResult<()> {
        releases::put_standing_guards(self, guards, meta).await
    }

    async fn guard_event_once(
        &self,
        flag: &str,
        environment: &str,
        key: &str,
        action: &str,
        details: &Value,
        meta: &ChangeMeta,
    ) -> StoreResult<bool> {
        releases::guard_event_once(self, flag, environment, key, action, details, meta).await
    }

    async fn get_plan(&self, flag: &str, environment: &str) -> StoreResult<Option<PlanRecord>> {
        releases::get_plan(self, flag, environment).await
    }

    async fn list_plans(&self) -> StoreResult<Vec<PlanRecord>> {
        releases::list_plans(self).await
    }

    async fn list_running_plans(&self) -> StoreResult<Vec<PlanRecord>> {
        releases::list_running_plans(self).await
    }

    async fn restore_point(&self, flag: &str, environment: &str) -> StoreResult<Option<RestorePoint>> {
        releases::restore_point(self, flag, environment).await
    }

    async fn release_write(&self, write: &ReleaseWrite, meta: &ChangeMeta) -> StoreResult<ReleaseOutcome> {
        releases::release_write(self, write, meta).await
    }

    async fn list_templates(&self) -> StoreResult<Vec<Template>> {
        releases::list_templates(self).await
    }

    async fn put_template(&self, template: &Template, meta: &ChangeMeta) -> StoreResult<()> {
        releases::put_template(self, template, meta).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}
