//! Configuration: environments, flags, segments, the snapshots SDKs read and the change feed
//! they resume from; and the admin side: the audit log and tokens.
//!
//! Creations insert with `ON CONFLICT DO NOTHING` and report `AlreadyExists` when nothing was
//! inserted, rather than checking first: on PostgreSQL a concurrent creator of the same key then
//! waits for the first to commit instead of both passing the check.

use dimmer_engine::policy::HistoryFacts;
use dimmer_engine::{Flag, FlagSet, Segment};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{
    Audit, FLAG_COLUMNS, Kept, SEGMENT_COLUMNS, SqlStore, corrupt, flag_from, json_column, segment_from, token_from,
};
use crate::{
    AuditBounds, AuditEntry, AuditFilter, AuditPage, ChangeMeta, ChangedItem, Environment, FlagRecord, FlagSummary,
    SegmentRecord, Snapshot, StoreError, StoreResult, TokenRecord, flag_json,
};

const TOKEN_COLUMNS: &str = "name, scope, environment, hash, created_at, revoked, origins";

pub(super) async fn ensure_environments(s: &SqlStore, names: &[&str]) -> StoreResult<()> {
    let mut tx = s.dialect.begin_write(&s.pool).await?;
    let now = s.now();
    for name in names {
        sqlx::query(
            "INSERT INTO environments (name, revision, created_at) VALUES ($1, 0, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

pub(super) async fn list_environments(s: &SqlStore) -> StoreResult<Vec<Environment>> {
    let rows =
        sqlx::query("SELECT name, revision, created_at FROM environments ORDER BY name").fetch_all(&s.pool).await?;
    rows.iter()
        .map(|r| Ok(Environment { name: r.try_get(0)?, revision: r.try_get(1)?, created_at: r.try_get(2)? }))
        .collect()
}

pub(super) async fn create_environment(s: &SqlStore, name: &str, meta: &ChangeMeta) -> StoreResult<Environment> {
    let mut tx = s.dialect.begin_write(&s.pool).await?;
    let env = Environment { name: name.into(), revision: 0, created_at: s.now() };
    let inserted = sqlx::query(
        "INSERT INTO environments (name, revision, created_at) VALUES ($1, 0, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(env.created_at)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::AlreadyExists { kind: "environment", key: name.into() });
    }
    let after = serde_json::to_value(&env).ok();
    let entry =
        Audit { action: "environment.create", environment: Some(name), flag: None, segment: None, before: None, after };
    s.audit_entry(&mut tx, meta, entry).await?;
    tx.commit().await?;
    Ok(env)
}

pub(super) async fn list_flags(s: &SqlStore, include_archived: bool) -> StoreResult<Vec<FlagRecord>> {
    let sql = format!("SELECT {FLAG_COLUMNS} FROM flags WHERE $1 OR NOT archived ORDER BY key");
    let rows = sqlx::query(&sql).bind(include_archived).fetch_all(&s.pool).await?;
    rows.iter().map(flag_from).collect()
}

pub(super) async fn create_flag(s: &SqlStore, key: &str, flag: &Flag, meta: &ChangeMeta) -> StoreResult<FlagRecord> {
    let mut tx = s.dialect.begin_write(&s.pool).await?;
    let now = s.now();
    let definition = serde_json::to_string(flag).map_err(|e| corrupt("flag", e))?;
    // The key is taken by archived flags too: the conflict is on the key alone.
    let inserted = sqlx::query(
        "INSERT INTO flags (key, definition, version, archived, created_at, updated_at, facts) \
         VALUES ($1, $2, 1, $3, $4, $4, $5) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(&definition)
    .bind(false)
    .bind(now)
    .bind(Kept::json(flag, HistoryFacts::of([(now, flag)])))
    .execute(&mut *tx)
    .await?;
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
    s.audit_entry(&mut tx, meta, entry).await?;
    let changes = s.bump_all(&mut tx, "flag", key).await?;
    tx.commit().await?;
    s.publish(changes);
    Ok(record)
}

pub(super) async fn update_flag(
    s: &SqlStore,
    key: &str,
    flag: &Flag,
    expected_version: i64,
    meta: &ChangeMeta,
) -> StoreResult<FlagRecord> {
    let mut tx = s.dialect.begin_write(&s.pool).await?;
    let before = s.flag_at(&mut tx, key, Some(expected_version)).await?;
    let (after, changes) = s.save_flag(&mut tx, &before, flag, before.archived, "flag.update", meta).await?;
    tx.commit().await?;
    s.publish(changes);
    Ok(after)
}

pub(super) async fn set_flag_archived(
    s: &SqlStore,
    key: &str,
    archived: bool,
    expected_version: Option<i64>,
    meta: &ChangeMeta,
) -> StoreResult<FlagRecord> {
    let mut tx = s.dialect.begin_write(&s.pool).await?;
    let before = s.flag_at(&mut tx, key, expected_version).await?;
    if before.archived == archived {
        return Ok(before);
    }
    let action = if archived { "flag.archive" } else { "flag.restore" };
    let flag = before.flag.clone();
    let (after, changes) = s.save_flag(&mut tx, &before, &flag, archived, action, meta).await?;
    tx.commit().await?;
    s.publish(changes);
    Ok(after)
}

pub(super) async fn list_segments(s: &SqlStore) -> StoreResult<Vec<SegmentRecord>> {
    let rows = sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM segments ORDER BY key")).fetch_all(&s.pool).await?;
    rows.iter().map(segment_from).collect()
}

pub(super) async fn create_segment(
    s: &SqlStore,
    key: &str,
    segment: &Segment,
    meta: &ChangeMeta,
) -> StoreResult<SegmentRecord> {
    let mut tx = s.dialect.begin_write(&s.pool).await?;
    let now = s.now();
    let definition = serde_json::to_string(segment).map_err(|e| corrupt("segment", e))?;
    let inserted = sqlx::query(
        "INSERT INTO segments (key, definition, version, created_at, updated_at) VALUES ($1, $2, 1, $3, $3) \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(&definition)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::AlreadyExists { kind: "segment", key: key.into() });
    }
    let after = serde_json::to_value(segment).ok();
    let entry =
        Audit { action: "segment.create", environment: None, flag: None, segment: Some(key), before: None, after };
    s.audit_entry(&mut tx, meta, entry).await?;
    let changes = bump_segment_users(s, &mut tx, key).await?;
    tx.commit().await?;
    s.publish(changes);
    Ok(SegmentRecord { key: key.into(), segment: segment.clone(), version: 1, created_at: now, updated_at: now })
}

pub(super) async fn update_segment(
    s: &SqlStore,
    key: &str,
    segment: &Segment,
    expected_version: i64,
    meta: &ChangeMeta,
) -> StoreResult<SegmentRecord> {
    let mut tx = s.dialect.begin_write(&s.pool).await?;
    let before = segment_at(s, &mut tx, key, expected_version).await?;
    let now = s.now();
    let definition = serde_json::to_string(segment).map_err(|e| corrupt("segment", e))?;
    sqlx::query("UPDATE segments SET definition = $1, version = version + 1, updated_at = $2 WHERE key = $3")
        .bind(&definition)
        .bind(now)
        .bind(key)
        .execute(&mut *tx)
        .await?;
    let entry = Audit {
        action: "segment.update",
        environment: None,
        flag: None,
        segment: Some(key),
        before: serde_json::to_value(&before.segment).ok(),
        after: serde_json::to_value(segment).ok(),
    };
    s.audit_entry(&mut tx, meta, entry).await?;
    let changes = bump_segment_users(s, &mut tx, key).await?;
    tx.commit().await?;
    s.publish(changes);
    Ok(SegmentRecord { segment: segment.clone(), version: before.version + 1, updated_at: now, ..before })
}

pub(super) async fn delete_segment(
    s: &SqlStore,
    key: &str,
    expected_version: i64,
    meta: &ChangeMeta,
) -> StoreResult<()> {
    let mut tx = s.dialect.begin_write(&s.pool).await?;
    let before = segment_at(s, &mut tx, key, expected_version).await?;
    // The environments that saw the segment, decided before it goes.
    let users = flag_set_in(&mut tx).await?.environments_using_segment(key);
    sqlx::query("DELETE FROM segments WHERE key = $1").bind(key).execute(&mut *tx).await?;
    let entry = Audit {
        action: "segment.delete",
        environment: None,
        flag: None,
        segment: Some(key),
        before: serde_json::to_value(&before.segment).ok(),
        after: None,
    };
    s.audit_entry(&mut tx, meta, entry).await?;
    let changes = s.bump(&mut tx, Some(&users), "segment", key).await?;
    tx.commit().await?;
    s.publish(changes);
    Ok(())
}

/// The segment about to change, locked, if it is still at `expected` version.
async fn segment_at(s: &SqlStore, conn: &mut AnyConnection, key: &str, expected: i64) -> StoreResult<SegmentRecord> {
    let before = s
        .segment_in(conn, key, true)
        .await?
        .ok_or_else(|| StoreError::NotFound { kind: "segment", key: key.into() })?;
    if before.version != expected {
        return Err(StoreError::VersionMismatch { expected, current: before.version });
    }
    Ok(before)
}

pub(super) async fn snapshot(s: &SqlStore, environment: &str) -> StoreResult<Snapshot> {
    // One snapshot transaction: the revision and the rows are of the same moment.
    let mut tx = s.dialect.begin_snapshot(&s.pool).await?;
    let revision: i64 = sqlx::query("SELECT revision FROM environments WHERE name = $1")
        .bind(environment)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound { kind: "environment", key: environment.into() })?
        .try_get(0)?;
    let flags = flag_set_in(&mut tx).await?;
    tx.commit().await?;
    Ok(Snapshot { environment: environment.into(), revision, flags })
}

/// Every non-archived flag and every segment, read in the caller's transaction.
async fn flag_set_in(conn: &mut AnyConnection) -> StoreResult<FlagSet> {
    let flag_rows = sqlx::query(&format!("SELECT {FLAG_COLUMNS} FROM flags WHERE NOT archived ORDER BY key"))
        .fetch_all(&mut *conn)
        .await?;
    let segment_rows =
        sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM segments ORDER BY key")).fetch_all(&mut *conn).await?;
    let mut flags = FlagSet::default();
    for row in &flag_rows {
        let r = flag_from(row)?;
        flags.flags.insert(r.key, r.flag);
    }
    for row in &segment_rows {
        let r = segment_from(row)?;
        flags.segments.insert(r.key, r.segment);
    }
    Ok(flags)
}

/// Bumps the environments whose view includes the segment `key` as it now stands: a segment
/// change concerns only the environments whose flags use it (directly or through another
/// segment); others' streams are not woken and their clients never see it.
async fn bump_segment_users(s: &SqlStore, conn: &mut AnyConnection, key: &str) -> StoreResult<Vec<super::Change>> {
    let users = flag_set_in(conn).await?.environments_using_segment(key);
    s.bump(conn, Some(&users), "segment", key).await
}

pub(super) async fn changes_since(
    s: &SqlStore,
    environment: &str,
    revision: i64,
) -> StoreResult<Option<Vec<ChangedItem>>> {
    let mut tx = s.dialect.begin_snapshot(&s.pool).await?;
    let current: i64 = sqlx::query("SELECT revision FROM environments WHERE name = $1")
        .bind(environment)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound { kind: "environment", key: environment.into() })?
        .try_get(0)?;
    if revision > current || revision < 0 {
        return Ok(None);
    }
    if revision == current {
        return Ok(Some(Vec::new()));
    }
    let oldest: Option<i64> = sqlx::query("SELECT MIN(revision) FROM changes WHERE environment = $1")
        .bind(environment)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    // The feed must hold every revision after `revision`, or a snapshot is due.
    if oldest.is_none_or(|o| o > revision + 1) {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT revision, kind, key FROM changes WHERE environment = $1 AND revision > $2 ORDER BY revision, kind, key",
    )
    .bind(environment)
    .bind(revision)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let items = rows
        .iter()
        .map(|r| Ok(ChangedItem { revision: r.try_get(0)?, kind: r.try_get(1)?, key: r.try_get(2)? }))
        .collect::<StoreResult<_>>()?;
    Ok(Some(items))
}

/// The audit filter's conditions, `$1` to `$4` (`ORDER BY id DESC LIMIT $5` follows). Each
/// parameter is always referenced (PostgreSQL must know every parameter's type), but only the
/// conditions asked for touch a column: `CAST($1 AS TEXT) IS NULL OR flag = $1` would keep the
/// planners from the `(flag, id)` index and scan the whole log for every flag's history.
fn audit_where(filter: &AuditFilter) -> String {
    let flag = if filter.flag.is_some() { "flag = $1" } else { "CAST($1 AS TEXT) IS NULL" };
    let environment = if filter.environment.is_some() {
        "(environment = $2 OR (environment IS NULL AND flag IS NOT NULL))"
    } else {
        "CAST($2 AS TEXT) IS NULL"
    };
    let actor = if filter.actor.is_some() { "actor = $3" } else { "CAST($3 AS TEXT) IS NULL" };
    let before = if filter.before_id.is_some() { "id < $4" } else { "CAST($4 AS BIGINT) IS NULL" };
    format!("WHERE {flag} AND {environment} AND {actor} AND {before}")
}

const AUDIT_COLUMNS: &str = "id, at, actor, action, environment, flag, segment, before, after, reason";

/// A listed reason larger than the page's body bound keeps this many characters.
const REASON_KEPT_CHARS: i64 = 1000;

fn audit_limit(filter: &AuditFilter) -> u32 {
    if filter.limit == 0 { 100 } else { filter.limit.min(1000) }
}

fn audit_from(r: &AnyRow) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: r.try_get(0)?,
        at: r.try_get(1)?,
        actor: r.try_get(2)?,
        action: r.try_get(3)?,
        environment: r.try_get(4)?,
        flag: r.try_get(5)?,
        segment: r.try_get(6)?,
        before: json_column(r.try_get(7)?),
        after: json_column(r.try_get(8)?),
        reason: r.try_get(9)?,
        truncated: false,
    })
}

pub(super) async fn audit(s: &SqlStore, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
    let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit {} ORDER BY id DESC LIMIT $5", audit_where(filter));
    let rows = sqlx::query(&sql)
        .bind(&filter.flag)
        .bind(&filter.environment)
        .bind(&filter.actor)
        .bind(filter.before_id)
        .bind(i64::from(audit_limit(filter)))
        .fetch_all(&s.pool)
        .await?;
    rows.iter().map(audit_from).collect()
}

/// A page of the log. Bodies over the bound never leave the database (their size does), rows
/// are read one at a time and reading stops with the page, so neither the page nor the memory
/// behind it grows with the size of what was audited.
pub(super) async fn audit_page(s: &SqlStore, filter: &AuditFilter, bounds: &AuditBounds) -> StoreResult<AuditPage> {
    use futures::TryStreamExt as _;
    let limit = audit_limit(filter);
    let body_bytes = i64::try_from(bounds.body_bytes).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT id, at, actor, action, environment, flag, segment, \
         CASE WHEN CAST(OCTET_LENGTH(before) AS BIGINT) > $6 THEN NULL ELSE before END, \
         CASE WHEN CAST(OCTET_LENGTH(after) AS BIGINT) > $6 THEN NULL ELSE after END, \
         CASE WHEN CAST(OCTET_LENGTH(reason) AS BIGINT) > $6 THEN SUBSTR(reason, 1, {REASON_KEPT_CHARS}) ELSE reason END, \
         CAST(OCTET_LENGTH(before) AS BIGINT), CAST(OCTET_LENGTH(after) AS BIGINT), \
         CAST(OCTET_LENGTH(reason) AS BIGINT) \
         FROM audit {} ORDER BY id DESC LIMIT $5",
        audit_where(filter)
    );
    let mut rows = sqlx::query(&sql)
        .bind(&filter.flag)
        .bind(&filter.environment)
        .bind(&filter.actor)
        .bind(filter.before_id)
        // One more than the page: whether it exists decides `next`.
        .bind(i64::from(limit) + 1)
        .bind(body_bytes)
        .fetch(&s.pool);
    let mut page = AuditPage::default();
    let mut bytes: u64 = 0;
    while let Some(r) = rows.try_next().await? {
        if page.entries.len() >= limit as usize || bytes >= bounds.page_bytes {
            page.next = page.entries.last().map(|e| e.id);
            break;
        }
        let mut entry = audit_from(&r)?;
        let sizes: [Option<i64>; 3] = [r.try_get(10)?, r.try_get(11)?, r.try_get(12)?];
        let summary = |size: i64| serde_json::json!({"truncated": true, "bytes": size});
        for (body, size) in [(&mut entry.before, sizes[0]), (&mut entry.after, sizes[1])] {
            if let Some(size) = size.filter(|n| *n > body_bytes) {
                *body = Some(summary(size));
                entry.truncated = true;
            }
        }
        if sizes[2].is_some_and(|n| n > body_bytes) {
            if let Some(reason) = entry.reason.as_mut() {
                reason.push('…');
            }
            entry.truncated = true;
        }
        bytes = bytes.saturating_add(listed_bytes(&entry));
        page.entries.push(entry);
    }
    Ok(page)
}

/// About how many bytes an entry takes in a listing: its text and a little for the JSON around.
fn listed_bytes(e: &AuditEntry) -> u64 {
    let text = [Some(&e.actor), Some(&e.action), e.environment.as_ref(), e.flag.as_ref(), e.segment.as_ref()]
        .into_iter()
        .flatten()
        .map(String::len)
        .sum::<usize>();
    let json = [&e.before, &e.after].into_iter().flatten().map(|v| v.to_string().len()).sum::<usize>();
    (200 + text + json + e.reason.as_ref().map_or(0, String::len)) as u64
}

/// Every flag's audited definitions (`after`), oldest first, the newest `per_flag` of each, in
/// one indexed scan of the log's flag entries.
pub(super) async fn flag_summaries(s: &SqlStore) -> StoreResult<Vec<FlagSummary>> {
    // The definition only where the kept summary is missing (a flag not written since 0005).
    let rows = sqlx::query(
        "SELECT key, archived, created_at, updated_at, facts, CASE WHEN facts IS NULL THEN definition END \
         FROM flags ORDER BY key",
    )
    .fetch_all(&s.pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut missing = Vec::new();
    for r in &rows {
        let key: String = r.try_get(0)?;
        let kept: Option<Kept> = r.try_get::<Option<String>, _>(4)?.and_then(|t| serde_json::from_str(&t).ok());
        let kept = match kept {
            Some(kept) => kept,
            None => {
                missing.push(out.len());
                let definition: Option<String> = r.try_get(5)?;
                let flag: Flag = match definition {
                    Some(text) => serde_json::from_str(&text).map_err(|e| corrupt(&format!("flag {key}"), e))?,
                    // Kept but unreadable: read the definition on its own.
                    None => flag_definition(s, &key).await?,
                };
                Kept { kind: flag.kind, owner: flag.owner, history: HistoryFacts::default() }
            }
        };
        out.push(FlagSummary {
            key,
            kind: kept.kind,
            owner: kept.owner,
            archived: super::bool_at(r, 1)?,
            created_at: r.try_get(2)?,
            updated_at: r.try_get(3)?,
            history: kept.history,
        });
    }
    if !missing.is_empty() {
        let mut conn = s.pool.acquire().await?;
        for at in missing {
            out[at].history = replayed_facts(&mut conn, &out[at].key).await?;
        }
    }
    Ok(out)
}

async fn flag_definition(s: &SqlStore, key: &str) -> StoreResult<Flag> {
    let row = sqlx::query("SELECT definition FROM flags WHERE key = $1").bind(key).fetch_one(&s.pool).await?;
    let text: String = row.try_get(0)?;
    serde_json::from_str(&text).map_err(|e| corrupt(&format!("flag {key}"), e))
}

/// A flag's history facts replayed from its audit entries: for a flag written before the store
/// kept them (migration 0005), or whose stored copy does not parse.
pub(super) async fn replayed_facts(conn: &mut AnyConnection, key: &str) -> StoreResult<HistoryFacts> {
    let rows = sqlx::query("SELECT at, environment, after FROM audit WHERE flag = $1 ORDER BY id")
        .bind(key)
        .fetch_all(&mut *conn)
        .await?;
    let mut entries = Vec::with_capacity(rows.len());
    for r in &rows {
        if let Some(after) = json_column(r.try_get(2)?) {
            entries.push((r.try_get(0)?, r.try_get(1)?, after));
        }
    }
    let history = crate::history::replay(entries);
    Ok(HistoryFacts::of(history.iter().map(|(at, f)| (*at, f))))
}

pub(super) async fn get_audit_entry(s: &SqlStore, id: i64) -> StoreResult<Option<AuditEntry>> {
    let row = sqlx::query(&format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE id = $1"))
        .bind(id)
        .fetch_optional(&s.pool)
        .await?;
    row.map(|r| audit_from(&r)).transpose()
}

/// Stores a token, stamped with the store's clock (the record's `created_at` is not used).
pub(super) async fn create_token(s: &SqlStore, token: &TokenRecord, meta: &ChangeMeta) -> StoreResult<()> {
    let mut tx = s.dialect.begin_write(&s.pool).await?;
    // A second token with the same hash is a unique violation, mapped to `AlreadyExists`.
    let inserted = sqlx::query(
        "INSERT INTO tokens (name, scope, environment, hash, created_at, revoked, origins) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&token.name)
    .bind(token.scope.as_str())
    .bind(&token.environment)
    .bind(&token.hash)
    .bind(s.now())
    .bind(false)
    .bind(serde_json::Value::from(token.origins.clone()).to_string())
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::AlreadyExists { kind: "token", key: token.name.clone() });
    }
    let after = Some(serde_json::json!({
        "name": token.name, "scope": token.scope, "environment": token.environment, "origins": token.origins
    }));
    let entry = Audit {
        action: "token.create",
        environment: token.environment.as_deref(),
        flag: None,
        segment: None,
        before: None,
        after,
    };
    s.audit_entry(&mut tx, meta, entry).await?;
    tx.commit().await
}

pub(super) async fn token_by_hash(s: &SqlStore, hash: &str) -> StoreResult<Option<TokenRecord>> {
    let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"))
        .bind(hash)
        .fetch_optional(&s.pool)
        .await?;
    row.map(|r| token_from(&r)).transpose()
}

pub(super) async fn list_tokens(s: &SqlStore) -> StoreResult<Vec<TokenRecord>> {
    let rows = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name")).fetch_all(&s.pool).await?;
    rows.iter().map(token_from).collect()
}

pub(super) async fn revoke_token(s: &SqlStore, name: &str, meta: &ChangeMeta) -> StoreResult<()> {
    let mut tx = s.dialect.begin_write(&s.pool).await?;
    let done =
        sqlx::query("UPDATE tokens SET revoked = $1 WHERE name = $2").bind(true).bind(name).execute(&mut *tx).await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound { kind: "token", key: name.into() });
    }
    let after = Some(serde_json::json!({"name": name, "revoked": true}));
    let entry = Audit { action: "token.revoke", environment: None, flag: None, segment: None, before: None, after };
    s.audit_entry(&mut tx, meta, entry).await?;
    tx.commit().await
}
