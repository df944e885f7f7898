//! Releases: plans and their restore points, the atomic release write, plan templates, and the
//! guards (standing guards and the guard events that make each verdict act once).

use dimmer_domain::release::{RestorePoint, Status, Template};
use serde_json::Value;
use sqlx::AnyConnection;
use sqlx::Row;

use super::{Audit, SqlStore, corrupt, json_at, json_column, plan_from};
use crate::{
    ChangeMeta, GuardEvent, PlanRecord, ReleaseOutcome, ReleaseWrite, RestoreWrite, StandingGuards, StoreError,
    StoreResult,
};

const PLAN_COLUMNS: &str = "flag, environment, definition, stage, entered_at, status, revision, created_at, updated_at";

pub(super) async fn get_plan(s: &SqlStore, flag: &str, environment: &str) -> StoreResult<Option<PlanRecord>> {
    let row = sqlx::query(&format!("SELECT {PLAN_COLUMNS} FROM release_plans WHERE flag = $1 AND environment = $2"))
        .bind(flag)
        .bind(environment)
        .fetch_optional(&s.pool)
        .await?;
    row.map(|r| plan_from(&r)).transpose()
}

pub(super) async fn list_plans(s: &SqlStore) -> StoreResult<Vec<PlanRecord>> {
    let rows = sqlx::query(&format!("SELECT {PLAN_COLUMNS} FROM release_plans ORDER BY flag, environment"))
        .fetch_all(&s.pool)
        .await?;
    rows.iter().map(plan_from).collect()
}

pub(super) async fn list_running_plans(s: &SqlStore) -> StoreResult<Vec<PlanRecord>> {
    let sql = format!("SELECT {PLAN_COLUMNS} FROM release_plans WHERE status = $1 ORDER BY flag, environment");
    let rows = sqlx::query(&sql).bind(Status::Running.as_str()).fetch_all(&s.pool).await?;
    rows.iter().map(plan_from).collect()
}

pub(super) async fn restore_point(s: &SqlStore, flag: &str, environment: &str) -> StoreResult<Option<RestorePoint>> {
    let row = sqlx::query("SELECT definition FROM restore_points WHERE flag = $1 AND environment = $2")
        .bind(flag)
        .bind(environment)
        .fetch_optional(&s.pool)
        .await?;
    row.map(|r| json_at(&r, 0, "restore point")).transpose()
}

/// Records a guard event under its key in the caller's transaction; false when the key is
/// recorded already (the primary key makes the action happen once, whichever replica sees the
/// verdict first; on PostgreSQL a concurrent insert of the same key waits for the first
/// transaction and then finds the row).
async fn insert_guard_event(
    s: &SqlStore,
    conn: &mut AnyConnection,
    flag: &str,
    environment: &str,
    key: &str,
) -> StoreResult<bool> {
    let inserted = sqlx::query(
        "INSERT INTO guard_events (flag, environment, event_key, at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(flag)
    .bind(environment)
    .bind(key)
    .bind(s.now())
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

pub(super) async fn release_write(s: &SqlStore, w: &ReleaseWrite, meta: &ChangeMeta) -> StoreResult<ReleaseOutcome> {
    let mut tx = s.dialect.begin_write(&s.pool).await?;
    // The guard event first: a key already recorded abandons the whole write, and a write that
    // fails later (a stale version) rolls the event row back with everything else.
    if let Some(GuardEvent { key, .. }) = &w.guard_event
        && !insert_guard_event(s, &mut tx, &w.flag, &w.environment, key).await?
    {
        return Err(StoreError::AlreadyRecorded { key: key.clone() });
    }
    // Then the flag's row, then the plan's: every release write locks in this order.
    let before = s.flag_at(&mut tx, &w.flag, w.flag_update.as_ref().map(|(_, expected)| *expected)).await?;
    let mut flag = before.clone();
    let mut changes = Vec::new();
    if let Some((definition, _)) = &w.flag_update {
        let (after, bumped) = s.store_flag(&mut tx, &before, definition, before.archived).await?;
        flag = after;
        changes = bumped;
    }
    let mut plan = None;
    if let Some((definition, state, expected)) = &w.plan {
        let lock = s.dialect.row_lock();
        let current = sqlx::query(&format!(
            "SELECT revision, created_at FROM release_plans WHERE flag = $1 AND environment = $2{lock}"
        ))
        .bind(&w.flag)
        .bind(&w.environment)
        .fetch_optional(&mut *tx)
        .await?;
        let (revision, created_at): (i64, Option<i64>) = match current {
            Some(r) => (r.try_get(0)?, Some(r.try_get(1)?)),
            None => (0, None),
        };
        if revision != *expected {
            return Err(StoreError::VersionMismatch { expected: *expected, current: revision });
        }
        let now = s.now();
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
            "INSERT INTO release_plans (flag, environment, definition, stage, entered_at, status, revision, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (flag, environment) \
             DO UPDATE SET definition = excluded.definition, stage = excluded.stage, entered_at = excluded.entered_at, \
             status = excluded.status, revision = excluded.revision, updated_at = excluded.updated_at",
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
        .await?;
        plan = Some(record);
    }
    match &w.restore {
        RestoreWrite::Keep => {}
        RestoreWrite::SetIfAbsent(point) => {
            let text = serde_json::to_string(point).map_err(|e| corrupt("restore point", e))?;
            sqlx::query(
                "INSERT INTO restore_points (flag, environment, definition) VALUES ($1, $2, $3) \
                 ON CONFLICT (flag, environment) DO NOTHING",
            )
            .bind(&w.flag)
            .bind(&w.environment)
            .bind(&text)
            .execute(&mut *tx)
            .await?;
        }
        RestoreWrite::Clear => {
            sqlx::query("DELETE FROM restore_points WHERE flag = $1 AND environment = $2")
                .bind(&w.flag)
                .bind(&w.environment)
                .execute(&mut *tx)
                .await?;
        }
    }
    // The verdict's entry before the action it caused, as when they were two writes.
    if let Some(event) = &w.guard_event {
        let entry = Audit {
            action: &event.action,
            environment: Some(&w.environment),
            flag: Some(&w.flag),
            segment: None,
            before: None,
            after: Some(event.details.clone()),
        };
        s.audit_entry(&mut tx, meta, entry).await?;
    }
    let entry = Audit {
        action: &w.action,
        environment: Some(&w.environment),
        flag: Some(&w.flag),
        segment: None,
        before: Some(w.before.clone()),
        after: Some(w.after.clone()),
    };
    s.audit_entry(&mut tx, meta, entry).await?;
    tx.commit().await?;
    s.publish(changes);
    Ok(ReleaseOutcome { flag, plan })
}

pub(super) async fn list_templates(s: &SqlStore) -> StoreResult<Vec<Template>> {
    let rows = sqlx::query("SELECT name, definition FROM templates ORDER BY name").fetch_all(&s.pool).await?;
    rows.iter()
        .map(|r| {
            let name: String = r.try_get(0)?;
            json_at(r, 1, format_args!("template {name}"))
        })
        .collect()
}

pub(super) async fn put_template(s: &SqlStore, template: &Template, meta: &ChangeMeta) -> StoreResult<()> {
    let mut tx = s.dialect.begin_write(&s.pool).await?;
    let lock = s.dialect.row_lock();
    let before = sqlx::query(&format!("SELECT definition FROM templates WHERE name = $1{lock}"))
        .bind(&template.name)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .and_then(json_column);
    let text = serde_json::to_string(template).map_err(|e| corrupt("template", e))?;
    let now = s.now();
    sqlx::query(
        "INSERT INTO templates (name, definition, created_at, updated_at) VALUES ($1, $2, $3, $3) \
         ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at",
    )
    .bind(&template.name)
    .bind(&text)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let entry = Audit {
        action: "template.put",
        environment: None,
        flag: None,
        segment: None,
        before,
        after: serde_json::to_value(template).ok(),
    };
    s.audit_entry(&mut tx, meta, entry).await?;
    tx.commit().await
}

pub(super) async fn list_standing_guards(s: &SqlStore) -> StoreResult<Vec<StandingGuards>> {
    let rows =
        sqlx::query("SELECT flag, environment, definition, updated_at FROM standing_guards ORDER BY flag, environment")
            .fetch_all(&s.pool)
            .await?;
    rows.iter()
        .map(|r| {
            let flag: String = r.try_get(0)?;
            Ok(StandingGuards {
                guards: json_at(r, 2, format_args!("guards on {flag}"))?,
                flag,
                environment: r.try_get(1)?,
                updated_at_ms: r.try_get(3)?,
            })
        })
        .collect()
}

pub(super) async fn put_standing_guards(s: &SqlStore, guards: &StandingGuards, meta: &ChangeMeta) -> StoreResult<()> {
    let mut tx = s.dialect.begin_write(&s.pool).await?;
    let before = sqlx::query("SELECT definition FROM standing_guards WHERE flag = $1 AND environment = $2")
        .bind(&guards.flag)
        .bind(&guards.environment)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .and_then(json_column);
    if guards.guards.is_empty() {
        sqlx::query("DELETE FROM standing_guards WHERE flag = $1 AND environment = $2")
            .bind(&guards.flag)
            .bind(&guards.environment)
            .execute(&mut *tx)
            .await?;
    } else {
        let text = serde_json::to_string(&guards.guards).map_err(|e| corrupt("guards", e))?;
        sqlx::query(
            "INSERT INTO standing_guards (flag, environment, definition, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (flag, environment) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at",
        )
        .bind(&guards.flag)
        .bind(&guards.environment)
        .bind(&text)
        .bind(s.now())
        .execute(&mut *tx)
        .await?;
    }
    let entry = Audit {
        action: "guards.put",
        environment: Some(&guards.environment),
        flag: Some(&guards.flag),
        segment: None,
        before,
        after: serde_json::to_value(&guards.guards).ok(),
    };
    s.audit_entry(&mut tx, meta, entry).await?;
    tx.commit().await
}

pub(super) async fn guard_event_once(
    s: &SqlStore,
    flag: &str,
    environment: &str,
    key: &str,
    action: &str,
    details: &Value,
    meta: &ChangeMeta,
) -> StoreResult<bool> {
    let mut tx = s.dialect.begin_write(&s.pool).await?;
    if !insert_guard_event(s, &mut tx, flag, environment, key).await? {
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
    s.audit_entry(&mut tx, meta, entry).await?;
    tx.commit().await?;
    Ok(true)
}
