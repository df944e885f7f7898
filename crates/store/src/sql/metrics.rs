//! Outcome metrics: batches appended as SDKs send them, the rollup that merges and coarsens
//! buckets and expires old rows, and the reads of the guards and the flag views.

use std::collections::HashMap;

use dimmer_domain::outcomes::{BUCKET_MS, COARSE_BUCKET_MS, MetricRow, Retention, RollupStats, merge_rows};
use sqlx::AnyConnection;
use sqlx::Row;

use super::{SqlStore, metric_from};
use crate::{StoreResult, db_count, metric_columns};

const METRIC_COLUMNS: &str = "flag, variant, bucket_ms, width_ms, evaluations, successes, errors, latency, events";

pub(super) async fn record_metrics(s: &SqlStore, environment: &str, rows: &[MetricRow]) -> StoreResult<()> {
    let mut tx = s.dialect.begin_telemetry_write(&s.telemetry).await?;
    for row in rows {
        insert_metric_row(&mut tx, environment, row, false).await?;
    }
    tx.commit().await
}

pub(super) async fn metric_rows(
    s: &SqlStore,
    environment: &str,
    flag: &str,
    from_ms: i64,
    until_ms: i64,
) -> StoreResult<Vec<MetricRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {METRIC_COLUMNS} FROM metric_rows \
         WHERE environment = $1 AND flag = $2 AND bucket_ms >= $3 AND bucket_ms < $4 ORDER BY bucket_ms"
    ))
    .bind(environment)
    .bind(flag)
    .bind(from_ms)
    .bind(until_ms)
    .fetch_all(&s.pool)
    .await?;
    rows.iter().map(|r| metric_from(r, 0)).collect()
}

/// Flags (with their environment) whose rows one rollup transaction handles: the transaction
/// stays short, so a release write waiting for the writer waits for one chunk, not the pass.
const ROLLUP_CHUNK: usize = 32;

pub(super) async fn roll_up_metrics(s: &SqlStore, now_ms: i64, retention: &Retention) -> StoreResult<RollupStats> {
    let mut stats = RollupStats::default();
    let merge_before = now_ms - retention.merge_after_ms;
    let coarsen_before = now_ms - retention.coarsen_after_ms;
    // Which flags have rows to merge or coarsen, read outside any write transaction. Rows that
    // arrive after this read wait for the next pass, as they would have before.
    let groups: Vec<(String, String)> = sqlx::query(
        "SELECT DISTINCT environment, flag FROM metric_rows \
         WHERE (compacted = $1 AND bucket_ms < $2) OR (width_ms = $3 AND bucket_ms < $4) ORDER BY environment, flag",
    )
    .bind(false)
    .bind(merge_before)
    .bind(BUCKET_MS)
    .bind(coarsen_before)
    .fetch_all(&s.telemetry)
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<StoreResult<_>>()?;
    // `compacted = $3` with `false` bound, not `NOT compacted`: an equality keeps the rollup
    // index usable on both backends.
    let fresh_sql = format!(
        "DELETE FROM metric_rows WHERE environment = $1 AND flag = $2 AND compacted = $3 AND bucket_ms < $4 \
         RETURNING {METRIC_COLUMNS}"
    );
    let old_sql = format!(
        "DELETE FROM metric_rows WHERE environment = $1 AND flag = $2 AND width_ms = $3 AND bucket_ms < $4 \
         RETURNING {METRIC_COLUMNS}"
    );
    for chunk in groups.chunks(ROLLUP_CHUNK) {
        let mut tx = s.dialect.begin_telemetry_write(&s.telemetry).await?;
        for (environment, flag) in chunk {
            // Closed buckets' fresh rows, merged into one row per bucket; then old fine
            // buckets, coarsened.
            let fresh = sqlx::query(&fresh_sql).bind(environment).bind(flag).bind(false).bind(merge_before);
            let old = sqlx::query(&old_sql).bind(environment).bind(flag).bind(BUCKET_MS).bind(coarsen_before);
            for (query, width) in [(fresh, BUCKET_MS), (old, COARSE_BUCKET_MS)] {
                let taken = query.fetch_all(&mut *tx).await?;
                let rows = taken.iter().map(|r| metric_from(r, 0)).collect::<StoreResult<Vec<_>>>()?;
                stats.merged += rows.len() as u64;
                for row in merge_rows(&rows, width) {
                    insert_metric_row(&mut tx, environment, &row, true).await?;
                    stats.written += 1;
                }
            }
        }
        tx.commit().await?;
    }
    let mut tx = s.dialect.begin_telemetry_write(&s.telemetry).await?;
    let expired = sqlx::query("DELETE FROM metric_rows WHERE bucket_ms < $1")
        .bind(now_ms - retention.keep_ms)
        .execute(&mut *tx)
        .await?;
    stats.expired = expired.rows_affected();
    tx.commit().await?;
    Ok(stats)
}

pub(super) async fn last_evaluations(s: &SqlStore, environment: &str) -> StoreResult<HashMap<String, i64>> {
    let rows = sqlx::query(
        "SELECT flag, MAX(bucket_ms) FROM metric_rows WHERE environment = $1 AND evaluations > 0 GROUP BY flag",
    )
    .bind(environment)
    .fetch_all(&s.pool)
    .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

async fn insert_metric_row(
    conn: &mut AnyConnection,
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
    .await?;
    Ok(())
}
