//! The PostgreSQL store, for several replicas on one database. Writes take row locks (the
//! environments' revision rows serialize them across replicas); every commit also sends a
//! notification (`dimmer_changes`, or a per-schema channel), and a listener task owned by the
//! store relays other replicas' changes to this process's subscribers.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use dimmer_engine::{Flag, FlagSet, Segment};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::{
    AuditEntry, AuditFilter, Change, ChangeMeta, ChangedItem, Environment, FlagRecord, PlanRecord, ReleaseOutcome,
    ReleaseWrite, RestoreWrite, Scope, SegmentRecord, Snapshot, StandingGuards, Store, StoreError, StoreResult,
    TokenRecord, db_count, flag_json, metric_columns, metric_row, now_ms, single_changed_environment,
};
use dimmer_domain::outcomes::{BUCKET_MS, COARSE_BUCKET_MS, MetricRow, Retention, RollupStats, merge_rows};
use dimmer_domain::release::{PlanState, RestorePoint, Status, Template};

/// The notification channel shared by every replica of an installation in the `public`
/// schema; other schemas get their own (see [`channel_for`]).
const CHANNEL: &str = "dimmer_changes";
/// PostgreSQL's longest identifier, in bytes; a longer channel name is an error in `pg_notify`.
const MAX_IDENTIFIER: usize = 63;
/// The change feed keeps this many revisions per environment for stream resumption.
const FEED_KEEP: i64 = 10_000;

/// A store on a PostgreSQL database (optionally in one schema).
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    changes: broadcast::Sender<Change>,
    /// Where this installation's commits are announced.
    channel: String,
    listener: JoinHandle<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // The listener task belongs to the store: it ends with it.
        self.listener.abort();
    }
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::from(e)
}

/// The notification channel of the installation in `schema`. NOTIFY is database-wide, so
/// installations (and test runs) in different schemas of one database must not share a channel:
/// each would take the others' revisions for its own.
fn channel_for(schema: &str) -> String {
    if schema == "public" {
        return CHANNEL.to_owned();
    }
    let named = format!("{CHANNEL}_{schema}");
    if named.len() <= MAX_IDENTIFIER {
        return named;
    }
    let digest = hex::encode(Sha256::digest(schema.as_bytes()));
    format!("{CHANNEL}_{}", &digest[..32])
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

struct Audit<'a> {
    action: &'a str,
    environment: Option<&'a str>,
    flag: Option<&'a str>,
    segment: Option<&'a str>,
    before: Option<Value>,
    after: Option<Value>,
}

impl PostgresStore {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url).map_err(db)?;
        Self::connect_with(options).await
    }

    /// Connects using (and creating if needed) one schema: several Dimmer installations, or
    /// test runs, can share a database.
    pub async fn connect_with_schema(url: &str, schema: &str) -> StoreResult<Self> {
        if schema.is_empty() || !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::Corrupt(format!("invalid schema name \"{schema}\"")));
        }
        let options = PgConnectOptions::from_str(url).map_err(db)?;
        let mut conn = PgConnection::connect_with(&options).await.map_err(db)?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).execute(&mut conn).await.map_err(db)?;
        conn.close().await.map_err(db)?;
        Self::connect_with(options.options([("search_path", schema)])).await
    }

    async fn connect_with(options: PgConnectOptions) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(db)?;
        sqlx::migrate!("migrations/postgres").run(&pool).await.map_err(|e| corrupt("migrations", e))?;
        let schema: String = sqlx::query("SELECT current_schema()").fetch_one(&pool).await.map_err(db)?.get(0);
        let channel = channel_for(&schema);
        // LISTEN before returning: a commit by another replica right after `connect` returns
        // must reach this store's subscribers.
        let mut listener = PgListener::connect_with(&pool).await.map_err(db)?;
        listener.listen(&channel).await.map_err(db)?;
        let (changes, _) = broadcast::channel(1024);
        let listener = tokio::spawn(listen(listener, pool.clone(), channel.clone(), changes.clone()));
        Ok(Self { pool, changes, channel, listener })
    }

    async fn bump_all(&self, conn: &mut PgConnection, kind: &str, key: &str) -> StoreResult<Vec<Change>> {
        // Lock the revision rows in one order in every writer, so concurrent writers queue
        // instead of deadlocking.
        sqlx::query("SELECT name FROM environments ORDER BY name FOR UPDATE").execute(&mut *conn).await.map_err(db)?;
        let rows = sqlx::query("UPDATE environments SET revision = revision + 1 RETURNING name, revision")
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        // RETURNING comes in storage order; announce in name order, the same on every commit.
        let mut bumped: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        bumped.sort();
        let mut changes = Vec::with_capacity(bumped.len());
        for (environment, revision) in bumped {
            sqlx::query("INSERT INTO changes (environment, revision, kind, key) VALUES ($1, $2, $3, $4)")
                .bind(&environment)
                .bind(revision)
                .bind(kind)
                .bind(key)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            sqlx::query("DELETE FROM changes WHERE environment = $1 AND revision <= $2")
                .bind(&environment)
                .bind(revision - FEED_KEEP)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            // Delivered to the other replicas when (and only if) the transaction commits.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&self.channel)
                .bind(format!("{environment}:{revision}"))
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            changes.push(Change { environment, revision });
        }
        Ok(changes)
    }

    async fn audit(conn: &mut PgConnection, meta: &ChangeMeta, a: Audit<'_>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit (at, actor, action, environment, flag, segment, before, after, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(now_ms())
        .bind(&meta.actor)
        .bind(a.action)
        .bind(a.environment)
        .bind(a.flag)
        .bind(a.segment)
        .bind(a.before.map(|v| v.to_string()))
        .bind(a.after.map(|v| v.to_string()))
        .bind(&meta.reason)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        Ok(())
    }

    fn publish(&self, changes: Vec<Change>) {
        for change in changes {
            let _ = self.changes.send(change);
        }
    }

    async fn flag_in(conn: &mut PgConnection, key: &str, lock: bool) -> StoreResult<Option<FlagRecord>> {
        let sql = if lock {
            "SELECT key, definition, version, archived, created_at, updated_at FROM flags WHERE key = $1 FOR UPDATE"
        } else {
            "SELECT key, definition, version, archived, created_at, updated_at FROM flags WHERE key = $1"
        };
        let row = sqlx::query(sql).bind(key).fetch_optional(&mut *conn).await.map_err(db)?;
        row.map(|r| flag_from(&r)).transpose()
    }

    async fn segment_in(conn: &mut PgConnection, key: &str, lock: bool) -> StoreResult<Option<SegmentRecord>> {
        let sql = if lock {
            "SELECT key, definition, version, created_at, updated_at FROM segments WHERE key = $1 FOR UPDATE"
        } else {
            "SELECT key, definition, version, created_at, updated_at FROM segments WHERE key = $1"
        };
        let row = sqlx::query(sql).bind(key).fetch_optional(&mut *conn).await.map_err(db)?;
        row.map(|r| segment_from(&r)).transpose()
    }

    /// Stores a flag's new state, audits it and bumps revisions, in the caller's transaction.
    async fn save_flag(
        &self,
        conn: &mut PgConnection,
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
        Self::audit(conn, meta, entry).await?;
        Ok((after, changes))
    }

    /// Stores a flag's new state and bumps revisions (no audit entry), in the caller's
    /// transaction.
    async fn store_flag(
        &self,
        conn: &mut PgConnection,
        before: &FlagRecord,
        flag: &Flag,
        archived: bool,
    ) -> StoreResult<(FlagRecord, Vec<Change>)> {
        let now = now_ms();
        let definition = serde_json::to_string(flag).map_err(|e| corrupt("flag", e))?;
        sqlx::query(
            "UPDATE flags SET definition = $1, version = version + 1, archived = $2, updated_at = $3 WHERE key = $4",
        )
        .bind(&definition)
        .bind(archived)
        .bind(now)
        .bind(&before.key)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        let after =
            FlagRecord { flag: flag.clone(), version: before.version + 1, archived, updated_at: now, ..before.clone() };
        let changes = self.bump_all(conn, "flag", &before.key).await?;
        Ok((after, changes))
    }
}

/// Relays every replica's commits (this one's included; subscribers dedupe by revision) until
/// the store is dropped (which aborts this task), reconnecting after errors.
async fn listen(mut listener: PgListener, pool: PgPool, channel: String, changes: broadcast::Sender<Change>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                // `environment:revision`; environment names may hold a colon, revisions not.
                if let Some((environment, revision)) = n.payload().rsplit_once(':')
                    && let Ok(revision) = revision.parse::<i64>()
                {
                    let _ = changes.send(Change { environment: environment.to_owned(), revision });
                }
            }
            // The connection dropped and the listener reconnected: whatever was announced in
            // between is lost, so announce the current revisions instead.
            Ok(None) => catch_up(&pool, &changes).await,
            Err(e) => {
                tracing::warn!(error = %e, "change listener failed; reconnecting");
                listener = reconnect(&pool, &channel).await;
                catch_up(&pool, &changes).await;
            }
        }
    }
}

/// A fresh listener on `channel`, retrying every second until the database answers.
async fn reconnect(pool: &PgPool, channel: &str) -> PgListener {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match PgListener::connect_with(pool).await {
            Ok(mut listener) => match listener.listen(channel).await {
                Ok(()) => return listener,
                Err(e) => tracing::warn!(error = %e, "LISTEN failed; retrying"),
            },
            Err(e) => tracing::warn!(error = %e, "change listener cannot connect; retrying"),
        }
    }
}

/// Publishes every environment's current revision, covering notifications missed while the
/// listener was away (subscribers ignore revisions they already have).
async fn catch_up(pool: &PgPool, changes: &broadcast::Sender<Change>) {
    match sqlx::query("SELECT name, revision FROM environments ORDER BY name").fetch_all(pool).await {
        Ok(rows) => {
            for row in rows {
                let _ = changes.send(Change { environment: row.get(0), revision: row.get(1) });
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read revisions after reconnecting"),
    }
}

fn flag_from(r: &PgRow) -> StoreResult<FlagRecord> {
    let key: String = r.get(0);
    let definition: String = r.get(1);
    let flag = serde_json::from_str(&definition).map_err(|e| corrupt(&format!("flag {key}"), e))?;
    Ok(FlagRecord { key, flag, version: r.get(2), archived: r.get(3), created_at: r.get(4), updated_at: r.get(5) })
}

fn segment_from(r: &PgRow) -> StoreResult<SegmentRecord> {
    let key: String = r.get(0);
    let definition: String = r.get(1);
    let segment = serde_json::from_str(&definition).map_err(|e| corrupt(&format!("segment {key}"), e))?;
    Ok(SegmentRecord { key, segment, version: r.get(2), created_at: r.get(3), updated_at: r.get(4) })
}

fn token_from(r: &PgRow) -> StoreResult<TokenRecord> {
    let scope: String = r.get(1);
    Ok(TokenRecord {
        name: r.get(0),
        scope: Scope::parse(&scope).ok_or_else(|| corrupt("token scope", &scope))?,
        environment: r.get(2),
        hash: r.get(3),
        created_at: r.get(4),
        revoked: r.get(5),
    })
}

fn json_column(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

#[async_trait]
impl Store for PostgresStore {
    async fn ensure_environments(&self, names: &[&str]) -> StoreResult<()> {
        for name in names {
            sqlx::query("INSERT INTO environments (name, revision, created_at) VALUES ($1, 0, $2) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .bind(now_ms())
                .execute(&self.pool)
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    async fn list_environments(&self) -> StoreResult<Vec<Environment>> {
        let rows = sqlx::query("SELECT name, revision, created_at FROM environments ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| Environment { name: r.get(0), revision: r.get(1), created_at: r.get(2) }).collect())
    }

    async fn create_environment(&self, name: &str, meta: &ChangeMeta) -> StoreResult<Environment> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let env = Environment { name: name.into(), revision: 0, created_at: now_ms() };
        let inserted = sqlx::query(
            "INSERT INTO environments (name, revision, created_at) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(env.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists { kind: "environment", key: name.into() });
        }
        let after = serde_json::to_value(&env).ok();
        let entry = Audit {
            action: "environment.create",
            environment: Some(name),
            flag: None,
            segment: None,
            before: None,
            after,
        };
        Self::audit(&mut tx, meta, entry).await?;
        tx.commit().await.map_err(db)?;
        Ok(env)
    }

    async fn list_flags(&self, include_archived: bool) -> StoreResult<Vec<FlagRecord>> {
        let rows = sqlx::query(
            "SELECT key, definition, version, archived, created_at, updated_at FROM flags \
             WHERE $1 OR NOT archived ORDER BY key",
        )
        .bind(include_archived)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(flag_from).collect()
    }

    async fn get_flag(&self, key: &str) -> StoreResult<Option<FlagRecord>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        Self::flag_in(&mut conn, key, false).await
    }

    async fn create_flag(&self, key: &str, flag: &Flag, meta: &ChangeMeta) -> StoreResult<FlagRecord> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let now = now_ms();
        let definition = serde_json::to_string(flag).map_err(|e| corrupt("flag", e))?;
        let inserted = sqlx::query(
            "INSERT INTO flags (key, definition, version, archived, created_at, updated_at) \
             VALUES ($1, $2, 1, FALSE, $3, $3) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(&definition)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists { kind: "flag", key: key.into() });
        }
        let record = FlagRecord {
            key: key.into(),
            flag: flag.clone(),
            version: 1,
            archived: false,
            created_at: now,
            updated_at: now,
        };
        let entry = Audit {
            action: "flag.create",
            environment: None,
            flag: Some(key),
            segment: None,
            before: None,
            after: Some(flag_json(&record)),
        };
        Self::audit(&mut tx, meta, entry).await?;
        let changes = self.bump_all(&mut tx, "flag", key).await?;
        tx.commit().await.map_err(db)?;
        self.publish(changes);
        Ok(record)
    }

    async fn update_flag(
        &self,
        key: &str,
        flag: &Flag,
        expected_version: i64,
        meta: &ChangeMeta,
    ) -> StoreResult<FlagRecord> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let before = Self::flag_in(&mut tx, key, true)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: "flag", key: key.into() })?;
        if before.version != expected_version {
            return Err(StoreError::VersionMismatch { expected: expected_version, current: before.version });
        }
        let (after, changes) = self.save_flag(&mut tx, &before, flag, before.archived, "flag.update", meta).await?;
        tx.commit().await.map_err(db)?;
        self.publish(changes);
        Ok(after)
    }

    async fn set_flag_archived(
        &self,
        key: &str,
        archived: bool,
        expected_version: Option<i64>,
        meta: &ChangeMeta,
    ) -> StoreResult<FlagRecord> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let before = Self::flag_in(&mut tx, key, true)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: "flag", key: key.into() })?;
        if let Some(expected) = expected_version
            && before.version != expected
        {
            return Err(StoreError::VersionMismatch { expected, current: before.version });
        }
        if before.archived == archived {
            return Ok(before);
        }
        let action = if archived { "flag.archive" } else { "flag.restore" };
        let flag = before.flag.clone();
        let (after, changes) = self.save_flag(&mut tx, &before, &flag, archived, action, meta).await?;
        tx.commit().await.map_err(db)?;
        self.publish(changes);
        Ok(after)
    }

    async fn list_segments(&self) -> StoreResult<Vec<SegmentRecord>> {
        let rows = sqlx::query("SELECT key, definition, version, created_at, updated_at FROM segments ORDER BY key")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(segment_from).collect()
    }

    async fn get_segment(&self, key: &str) -> StoreResult<Option<SegmentRecord>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        Self::segment_in(&mut conn, key, false).await
    }

    async fn create_segment(&self, key: &str, segment: &Segment, meta: &ChangeMeta) -> StoreResult<SegmentRecord> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let now = now_ms();
        let definition = serde_json::to_string(segment).map_err(|e| corrupt("segment", e))?;
        let inserted = sqlx::query(
            "INSERT INTO segments (key, definition, version, created_at, updated_at) VALUES ($1, $2, 1, $3, $3) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(&definition)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists { kind: "segment", key: key.into() });
        }
        let after = serde_json::to_value(segment).ok();
        let entry =
            Audit { action: "segment.create", environment: None, flag: None, segment: Some(key), before: None, after };
        Self::audit(&mut tx, meta, entry).await?;
        let changes = self.bump_all(&mut tx, "segment", key).await?;
        tx.commit().await.map_err(db)?;
        self.publish(changes);
        Ok(SegmentRecord { key: key.into(), segment: segment.clone(), version: 1, created_at: now, updated_at: now })
    }

    async fn update_segment(
        &self,
        key: &str,
        segment: &Segment,
        expected_version: i64,
        meta: &ChangeMeta,
    ) -> StoreResult<SegmentRecord> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let before = Self::segment_in(&mut tx, key, true)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: "segment", key: key.into() })?;
        if before.version != expected_version {
            return Err(StoreError::VersionMismatch { expected: expected_version, current: before.version });
        }
        let now = now_ms();
        let definition = serde_json::to_string(segment).map_err(|e| corrupt("segment", e))?;
        sqlx::query("UPDATE segments SET definition = $1, version = version + 1, updated_at = $2 WHERE key = $3")
            .bind(&definition)
            .bind(now)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let entry = Audit {
            action: "segment.update",
            environment: None,
            flag: None,
            segment: Some(key),
            before: serde_json::to_value(&before.segment).ok(),
            after: serde_json::to_value(segment).ok(),
        };
        Self::audit(&mut tx, meta, entry).await?;
        let changes = self.bump_all(&mut tx, "segment", key).await?;
        tx.commit().await.map_err(db)?;
        self.publish(changes);
        Ok(SegmentRecord { segment: segment.clone(), version: before.version + 1, updated_at: now, ..before })
    }

    async fn delete_segment(&self, key: &str, expected_version: i64, meta: &ChangeMeta) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let before = Self::segment_in(&mut tx, key, true)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: "segment", key: key.into() })?;
        if before.version != expected_version {
            return Err(StoreError::VersionMismatch { expected: expected_version, current: before.version });
        }
        sqlx::query("DELETE FROM segments WHERE key = $1").bind(key).execute(&mut *tx).await.map_err(db)?;
        let entry = Audit {
            action: "segment.delete",
            environment: None,
            flag: None,
            segment: Some(key),
            before: serde_json::to_value(&before.segment).ok(),
            after: None,
        };
        Self::audit(&mut tx, meta, entry).await?;
        let changes = self.bump_all(&mut tx, "segment", key).await?;
        tx.commit().await.map_err(db)?;
        self.publish(changes);
        Ok(())
    }

    async fn snapshot(&self, environment: &str) -> StoreResult<Snapshot> {
        // REPEATABLE READ: the revision and the rows are of the same moment.
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await.map_err(db)?;
        let revision: i64 = sqlx::query("SELECT revision FROM environments WHERE name = $1")
            .bind(environment)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .map(|r| r.get(0))
            .ok_or_else(|| StoreError::NotFound { kind: "environment", key: environment.into() })?;
        let flag_rows = sqlx::query(
            "SELECT key, definition, version, archived, created_at, updated_at FROM flags WHERE NOT archived ORDER BY key",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let segment_rows =
            sqlx::query("SELECT key, definition, version, created_at, updated_at FROM segments ORDER BY key")
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let mut flags = FlagSet::default();
        for row in &flag_rows {
            let r = flag_from(row)?;
            flags.flags.insert(r.key, r.flag);
        }
        for row in &segment_rows {
            let r = segment_from(row)?;
            flags.segments.insert(r.key, r.segment);
        }
        Ok(Snapshot { environment: environment.into(), revision, flags })
    }

    async fn changes_since(&self, environment: &str, revision: i64) -> StoreResult<Option<Vec<ChangedItem>>> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await.map_err(db)?;
        let current: i64 = sqlx::query("SELECT revision FROM environments WHERE name = $1")
            .bind(environment)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .map(|r| r.get(0))
            .ok_or_else(|| StoreError::NotFound { kind: "environment", key: environment.into() })?;
        if revision > current || revision < 0 {
            return Ok(None);
        }
        if revision == current {
            return Ok(Some(Vec::new()));
        }
        let oldest: Option<i64> = sqlx::query("SELECT MIN(revision) FROM changes WHERE environment = $1")
            .bind(environment)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .get(0);
        if oldest.is_none_or(|o| o > revision + 1) {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT revision, kind, key FROM changes WHERE environment = $1 AND revision > $2 ORDER BY revision, kind, key",
        )
        .bind(environment)
        .bind(revision)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Some(rows.iter().map(|r| ChangedItem { revision: r.get(0), kind: r.get(1), key: r.get(2) }).collect()))
    }

    async fn audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        let limit = if filter.limit == 0 { 100 } else { filter.limit.min(1000) };
        let rows = sqlx::query(
            "SELECT id, at, actor, action, environment, flag, segment, before, after, reason FROM audit \
             WHERE ($1::TEXT IS NULL OR flag = $1) \
             AND ($2::TEXT IS NULL OR environment = $2 OR (environment IS NULL AND flag IS NOT NULL)) \
             AND ($3::TEXT IS NULL OR actor = $3) AND ($4::BIGINT IS NULL OR id < $4) ORDER BY id DESC LIMIT $5",
        )
        .bind(&filter.flag)
        .bind(&filter.environment)
        .bind(&filter.actor)
        .bind(filter.before_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get(0),
                at: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                environment: r.get(4),
                flag: r.get(5),
                segment: r.get(6),
                before: json_column(r.get(7)),
                after: json_column(r.get(8)),
                reason: r.get(9),
            })
            .collect())
    }

    async fn create_token(&self, token: &TokenRecord, meta: &ChangeMeta) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let inserted = sqlx::query(
            "INSERT INTO tokens (name, scope, environment, hash, created_at, revoked) VALUES ($1, $2, $3, $4, $5, FALSE) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&token.name)
        .bind(token.scope.as_str())
        .bind(&token.environment)
        .bind(&token.hash)
        .bind(token.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists { kind: "token", key: token.name.clone() });
        }
        let after =
            Some(serde_json::json!({"name": token.name, "scope": token.scope, "environment": token.environment}));
        let entry = Audit {
            action: "token.create",
            environment: token.environment.as_deref(),
            flag: None,
            segment: None,
            before: None,
            after,
        };
        Self::audit(&mut tx, meta, entry).await?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        let row = sqlx::query("SELECT name, scope, environment, hash, created_at, revoked FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| token_from(&r)).transpose()
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT name, scope, environment, hash, created_at, revoked FROM tokens ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(token_from).collect()
    }

    async fn revoke_token(&self, name: &str, meta: &ChangeMeta) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let done = sqlx::query("UPDATE tokens SET revoked = TRUE WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { kind: "token", key: name.into() });
        }
        let after = Some(serde_json::json!({"name": name, "revoked": true}));
        let entry = Audit { action: "token.revoke", environment: None, flag: None, segment: None, before: None, after };
        Self::audit(&mut tx, meta, entry).await?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn get_plan(&self, flag: &str, environment: &str) -> StoreResult<Option<PlanRecord>> {
        let row = sqlx::query("SELECT flag, environment, definition, stage, entered_at, status, revision, created_at, updated_at FROM release_plans WHERE flag = $1 AND environment = $2")
            .bind(flag)
            .bind(environment)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| plan_from(&r)).transpose()
    }

    async fn list_plans(&self) -> StoreResult<Vec<PlanRecord>> {
        let rows = sqlx::query("SELECT flag, environment, definition, stage, entered_at, status, revision, created_at, updated_at FROM release_plans ORDER BY flag, environment")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(plan_from).collect()
    }

    async fn restore_point(&self, flag: &str, environment: &str) -> StoreResult<Option<RestorePoint>> {
        let row = sqlx::query("SELECT definition FROM restore_points WHERE flag = $1 AND environment = $2")
            .bind(flag)
            .bind(environment)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| serde_json::from_str(&r.get::<String, _>(0)).map_err(|e| corrupt("restore point", e))).transpose()
    }

    async fn release_write(&self, w: &ReleaseWrite, meta: &ChangeMeta) -> StoreResult<ReleaseOutcome> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The flag's row first, then the plan's: every release write locks in this order.
        let before = Self::flag_in(&mut tx, &w.flag, true)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: "flag", key: w.flag.clone() })?;
        let mut flag = before.clone();
        let mut changes = Vec::new();
        if let Some((definition, expected)) = &w.flag_update {
            if before.version != *expected {
                return Err(StoreError::VersionMismatch { expected: *expected, current: before.version });
            }
            let flag_def = definition;
            let (after, bumped) = self.store_flag(&mut tx, &before, flag_def, before.archived).await?;
            flag = after;
            changes = bumped;
        }
        let mut plan = None;
        if let Some((definition, state, expected)) = &w.plan {
            let current = sqlx::query(
                "SELECT revision, created_at FROM release_plans WHERE flag = $1 AND environment = $2 FOR UPDATE",
            )
            .bind(&w.flag)
            .bind(&w.environment)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            let (revision, created_at): (i64, Option<i64>) = current.map_or((0, None), |r| (r.get(0), Some(r.get(1))));
            if revision != *expected {
                return Err(StoreError::VersionMismatch { expected: *expected, current: revision });
            }
            let now = now_ms();
            let record = PlanRecord {
                flag: w.flag.clone(),
                environment: w.environment.clone(),
                plan: definition.clone(),
                state: *state,
                revision: revision + 1,
                created_at: created_at.unwrap_or(now),
                updated_at: now,
            };
            let text = serde_json::to_string(definition).map_err(|e| corrupt("plan", e))?;
            sqlx::query(
                "INSERT INTO release_plans (flag, environment, definition, stage, entered_at, status, revision, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (flag, environment) DO UPDATE SET definition = excluded.definition, stage = excluded.stage, entered_at = excluded.entered_at, status = excluded.status, revision = excluded.revision, updated_at = excluded.updated_at",
            )
            .bind(&record.flag)
            .bind(&record.environment)
            .bind(&text)
            .bind(i64::try_from(state.stage).unwrap_or(i64::MAX))
            .bind(state.entered_at_ms)
            .bind(state.status.as_str())
            .bind(record.revision)
            .bind(record.created_at)
            .bind(record.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            plan = Some(record);
        }
        match &w.restore {
            RestoreWrite::Keep => {}
            RestoreWrite::SetIfAbsent(point) => {
                let text = serde_json::to_string(point).map_err(|e| corrupt("restore point", e))?;
                sqlx::query(
                    "INSERT INTO restore_points (flag, environment, definition) VALUES ($1, $2, $3) ON CONFLICT (flag, environment) DO NOTHING",
                )
                .bind(&w.flag)
                .bind(&w.environment)
                .bind(&text)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            RestoreWrite::Clear => {
                sqlx::query("DELETE FROM restore_points WHERE flag = $1 AND environment = $2")
                    .bind(&w.flag)
                    .bind(&w.environment)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
        }
        let entry = Audit {
            action: &w.action,
            environment: Some(&w.environment),
            flag: Some(&w.flag),
            segment: None,
            before: Some(w.before.clone()),
            after: Some(w.after.clone()),
        };
        Self::audit(&mut tx, meta, entry).await?;
        tx.commit().await.map_err(db)?;
        self.publish(changes);
        Ok(ReleaseOutcome { flag, plan })
    }

    async fn list_templates(&self) -> StoreResult<Vec<Template>> {
        let rows = sqlx::query("SELECT name, definition FROM templates ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let name: String = r.get(0);
                serde_json::from_str(&r.get::<String, _>(1)).map_err(|e| corrupt(&format!("template {name}"), e))
            })
            .collect()
    }

    async fn put_template(&self, template: &Template, meta: &ChangeMeta) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let before = sqlx::query("SELECT definition FROM templates WHERE name = $1 FOR UPDATE")
            .bind(&template.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .and_then(|r| json_column(r.get(0)));
        let text = serde_json::to_string(template).map_err(|e| corrupt("template", e))?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO templates (name, definition, created_at, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at",
        )
        .bind(&template.name)
        .bind(&text)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let entry = Audit {
            action: "template.put",
            environment: None,
            flag: None,
            segment: None,
            before,
            after: serde_json::to_value(template).ok(),
        };
        Self::audit(&mut tx, meta, entry).await?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn record_metrics(&self, environment: &str, rows: &[MetricRow]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        for row in rows {
            insert_metric_row(&mut tx, environment, row, false).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn metric_rows(
        &self,
        environment: &str,
        flag: &str,
        from_ms: i64,
        until_ms: i64,
    ) -> StoreResult<Vec<MetricRow>> {
        let rows = sqlx::query(
            "SELECT flag, variant, bucket_ms, width_ms, evaluations, successes, errors, latency, events \
             FROM metric_rows WHERE environment = $1 AND flag = $2 AND bucket_ms >= $3 AND bucket_ms < $4 ORDER BY bucket_ms",
        )
        .bind(environment)
        .bind(flag)
        .bind(from_ms)
        .bind(until_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| metric_from(r, 0)).collect()
    }

    async fn roll_up_metrics(&self, now_ms: i64, retention: &Retention) -> StoreResult<RollupStats> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut stats = RollupStats::default();
        let passes = [
            // Closed buckets' fresh rows, merged into one row per bucket.
            ("compacted = false AND bucket_ms < $1", now_ms - retention.merge_after_ms, BUCKET_MS),
            // Old fine buckets, coarsened.
            ("width_ms = $1 AND bucket_ms < $2", now_ms - retention.coarsen_after_ms, COARSE_BUCKET_MS),
        ];
        for (pass, (condition, cutoff, width)) in passes.into_iter().enumerate() {
            let sql = format!(
                "DELETE FROM metric_rows WHERE {condition} RETURNING environment, flag, variant, bucket_ms, width_ms, \
                 evaluations, successes, errors, latency, events"
            );
            let mut query = sqlx::query(&sql);
            if pass == 1 {
                query = query.bind(BUCKET_MS);
            }
            let taken = query.bind(cutoff).fetch_all(&mut *tx).await.map_err(db)?;
            let mut by_environment: BTreeMap<String, Vec<MetricRow>> = BTreeMap::new();
            for r in &taken {
                by_environment.entry(r.get(0)).or_default().push(metric_from(r, 1)?);
            }
            stats.merged += taken.len() as u64;
            for (environment, rows) in by_environment {
                for row in merge_rows(&rows, width) {
                    insert_metric_row(&mut tx, &environment, &row, true).await?;
                    stats.written += 1;
                }
            }
        }
        let expired = sqlx::query("DELETE FROM metric_rows WHERE bucket_ms < $1")
            .bind(now_ms - retention.keep_ms)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        stats.expired = expired.rows_affected();
        tx.commit().await.map_err(db)?;
        Ok(stats)
    }

    async fn last_evaluations(&self, environment: &str) -> StoreResult<HashMap<String, i64>> {
        let rows = sqlx::query(
            "SELECT flag, MAX(bucket_ms) FROM metric_rows WHERE environment = $1 AND evaluations > 0 GROUP BY flag",
        )
        .bind(environment)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn list_standing_guards(&self) -> StoreResult<Vec<StandingGuards>> {
        let rows = sqlx::query(
            "SELECT flag, environment, definition, updated_at FROM standing_guards ORDER BY flag, environment",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let flag: String = r.get(0);
                Ok(StandingGuards {
                    guards: serde_json::from_str(&r.get::<String, _>(2))
                        .map_err(|e| corrupt(&format!("guards on {flag}"), e))?,
                    flag,
                    environment: r.get(1),
                    updated_at_ms: r.get(3),
                })
            })
            .collect()
    }

    async fn put_standing_guards(&self, guards: &StandingGuards, meta: &ChangeMeta) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let before = sqlx::query("SELECT definition FROM standing_guards WHERE flag = $1 AND environment = $2")
            .bind(&guards.flag)
            .bind(&guards.environment)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .and_then(|r| json_column(r.get(0)));
        if guards.guards.is_empty() {
            sqlx::query("DELETE FROM standing_guards WHERE flag = $1 AND environment = $2")
                .bind(&guards.flag)
                .bind(&guards.environment)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        } else {
            let text = serde_json::to_string(&guards.guards).map_err(|e| corrupt("guards", e))?;
            sqlx::query(
                "INSERT INTO standing_guards (flag, environment, definition, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (flag, environment) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at",
            )
            .bind(&guards.flag)
            .bind(&guards.environment)
            .bind(&text)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        let entry = Audit {
            action: "guards.put",
            environment: Some(&guards.environment),
            flag: Some(&guards.flag),
            segment: None,
            before,
            after: serde_json::to_value(&guards.guards).ok(),
        };
        Self::audit(&mut tx, meta, entry).await?;
        tx.commit().await.map_err(db)?;
        Ok(())
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        let inserted = sqlx::query(
            "INSERT INTO guard_events (flag, environment, event_key, at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(flag)
        .bind(environment)
        .bind(key)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        let entry = Audit {
            action,
            environment: Some(environment),
            flag: Some(flag),
            segment: None,
            before: None,
            after: Some(details.clone()),
        };
        Self::audit(&mut tx, meta, entry).await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

fn plan_from(r: &PgRow) -> StoreResult<PlanRecord> {
    let flag: String = r.get(0);
    let definition: String = r.get(2);
    let plan = serde_json::from_str(&definition).map_err(|e| corrupt(&format!("plan on {flag}"), e))?;
    let stage: i64 = r.get(3);
    let state = PlanState {
        stage: usize::try_from(stage).map_err(|e| corrupt("plan stage", e))?,
        entered_at_ms: r.get(4),
        status: {
            let text: String = r.get(5);
            Status::parse(&text).ok_or_else(|| corrupt("plan status", &text))?
        },
    };
    Ok(PlanRecord {
        flag,
        environment: r.get(1),
        plan,
        state,
        revision: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
    })
}

async fn insert_metric_row(
    conn: &mut PgConnection,
    environment: &str,
    row: &MetricRow,
    compacted: bool,
) -> StoreResult<()> {
    let (latency, events) = metric_columns(&row.aggregate)?;
    sqlx::query(
        "INSERT INTO metric_rows (environment, flag, variant, bucket_ms, width_ms, compacted, evaluations, successes, \
         errors, latency, events) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(environment)
    .bind(&row.flag)
    .bind(&row.variant)
    .bind(row.bucket_ms)
    .bind(row.width_ms)
    .bind(compacted)
    .bind(db_count(row.aggregate.evaluations))
    .bind(db_count(row.aggregate.successes))
    .bind(db_count(row.aggregate.errors))
    .bind(latency)
    .bind(events)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// A metric row from the columns starting at `at`: flag, variant, bucket, width, the three
/// counts, latency, events.
fn metric_from(r: &PgRow, at: usize) -> StoreResult<MetricRow> {
    metric_row(
        r.get(at),
        r.get(at + 1),
        r.get(at + 2),
        r.get(at + 3),
        [r.get(at + 4), r.get(at + 5), r.get(at + 6)],
        &r.get::<String, _>(at + 7),
        &r.get::<String, _>(at + 8),
    )
}
