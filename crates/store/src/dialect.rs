//! What truly differs between the two backends, and nothing else: opening the database, how a
//! write transaction starts, row locks, what a bumped revision also does inside the transaction,
//! snapshot reads, and PostgreSQL's listener that relays other replicas' commits. The queries
//! themselves are written once, in [`crate::sql`].
//!
//! SQLite is one file in WAL mode with `synchronous = FULL`, so that a change acknowledged to a
//! client survives `kill -9` and power loss. Writers are serialized by a mutex (SQLite has one
//! writer at a time anyway; waiting here instead of on the file lock means callers never see
//! `SQLITE_BUSY`). Reads run in parallel.
//!
//! PostgreSQL serves several replicas on one database. Writes take row locks (the environments'
//! revision rows serialize them across replicas); every commit also sends a notification
//! (`dimmer_changes`, or a per-schema channel), and a listener task owned by the store relays
//! other replicas' changes to this process's subscribers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::any::AnyPoolOptions;
use sqlx::postgres::PgListener;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Row, Transaction};
use tokio::sync::{Mutex, MutexGuard, broadcast};
use tokio::task::JoinHandle;

use crate::{Change, StoreError, StoreResult};

/// The notification channel shared by every replica of an installation in the `public`
/// schema; other schemas get their own (see [`channel_for`]).
const CHANNEL: &str = "dimmer_changes";
/// PostgreSQL's longest identifier, in bytes; a longer channel name is an error in `pg_notify`.
const MAX_IDENTIFIER: usize = 63;

/// Set on every SQLite connection. WAL and `synchronous = FULL` make an acknowledged commit
/// durable; foreign keys are off by default in SQLite; the busy timeout covers a second store
/// (or process) on the same file, since the writer mutex only serializes writers of one store.
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                              PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;";

/// The backend a store runs on, with what it needs at run time.
#[derive(Debug)]
pub(crate) enum Dialect {
    /// One SQLite file.
    Sqlite {
        /// Serializes this store's writers (see [`Dialect::begin_write`]).
        writer: Mutex<()>,
        /// Lets one telemetry write at a time queue for the writer (see
        /// [`Dialect::begin_telemetry_write`]).
        telemetry: Mutex<()>,
    },
    /// A PostgreSQL database, optionally one schema of it.
    Postgres {
        /// Where this installation's commits are announced.
        channel: String,
        /// Relays other replicas' commits; aborted when the store (and so this) is dropped.
        _listener: Listener,
    },
}

/// The listener task; it belongs to the store and ends with it.
#[derive(Debug)]
pub(crate) struct Listener(JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A write transaction, holding SQLite's writer mutex (when there is one) until it commits or
/// is dropped (which rolls it back).
#[derive(Debug)]
pub(crate) struct Write<'a> {
    tx: Transaction<'static, Any>,
    _writer: Option<MutexGuard<'a, ()>>,
    _telemetry: Option<MutexGuard<'a, ()>>,
}

impl Write<'_> {
    /// Commits, then lets the next writer in.
    pub(crate) async fn commit(self) -> StoreResult<()> {
        let Write { tx, _writer, _telemetry } = self;
        tx.commit().await?;
        Ok(())
    }
}

impl std::ops::Deref for Write<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for Write<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

/// The `Any` driver chooses SQLite or PostgreSQL by URL; its drivers must be installed once per
/// process before the first connection (idempotent).
fn install_drivers() {
    sqlx::any::install_default_drivers();
}

/// A `sqlite://` URL naming exactly `path`. SQLite's URL parser percent-decodes the path, so
/// the characters that would end the path or start an escape are escaped; the path is made
/// absolute first, since a URL's first path segment would otherwise read as a host.
fn sqlite_url(path: &Path) -> StoreResult<String> {
    let io = |e| StoreError::Database(sqlx::Error::Io(e));
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| StoreError::Corrupt(format!("no file name in {}", path.display())))?;
    let absolute: PathBuf = std::fs::canonicalize(dir).map_err(io)?.join(name);
    let text = absolute
        .to_str()
        .ok_or_else(|| StoreError::Corrupt(format!("the database path {} is not UTF-8", absolute.display())))?;
    let escaped = text.replace('%', "%25").replace('?', "%3F").replace('#', "%23");
    Ok(format!("sqlite://{escaped}?mode=rwc"))
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

impl Dialect {
    /// Opens (creating if needed) the SQLite file and brings its schema up to date.
    pub(crate) async fn open_sqlite(path: &Path) -> StoreResult<(AnyPool, Dialect)> {
        install_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(SQLITE_PRAGMAS).await?;
                    Ok(())
                })
            })
            .connect(&sqlite_url(path)?)
            .await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Corrupt(format!("migrations: {e}")))?;
        Ok((pool, Dialect::Sqlite { writer: Mutex::new(()), telemetry: Mutex::new(()) }))
    }

    /// Connects to PostgreSQL (in `schema`, created if needed, when one is given), brings the
    /// schema up to date and starts the listener that relays commits to `changes`.
    pub(crate) async fn connect_postgres(
        url: &str,
        schema: Option<&str>,
        changes: &broadcast::Sender<Change>,
    ) -> StoreResult<(AnyPool, AnyPool, Dialect)> {
        install_drivers();
        let search_path = match schema {
            Some(schema) => {
                // Interpolated into SQL below: only plain identifiers.
                if schema.is_empty() || !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(StoreError::Corrupt(format!("invalid schema name \"{schema}\"")));
                }
                let mut conn = AnyConnection::connect(url).await?;
                conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str()).await?;
                conn.close().await?;
                Some(format!("SET search_path TO {schema}"))
            }
            None => None,
        };
        let options = |connections: u32| {
            let search_path = search_path.clone();
            AnyPoolOptions::new().max_connections(connections).acquire_timeout(Duration::from_secs(10)).after_connect(
                move |conn, _| {
                    let search_path = search_path.clone();
                    Box::pin(async move {
                        if let Some(sql) = search_path {
                            conn.execute(sql.as_str()).await?;
                        }
                        Ok(())
                    })
                },
            )
        };
        let pool = options(16).connect(url).await?;
        // Telemetry's own connections: a flood of metric batches waits here, never for the
        // connections release writes use.
        let telemetry = options(4).connect_lazy(url)?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Corrupt(format!("migrations: {e}")))?;
        // `current_schema()` is of type `name`, which the Any driver does not decode.
        let schema: String = sqlx::query("SELECT CAST(current_schema() AS TEXT)").fetch_one(&pool).await?.try_get(0)?;
        let channel = channel_for(&schema);
        // LISTEN before returning: a commit by another replica right after `connect` returns
        // must reach this store's subscribers.
        let mut listener = PgListener::connect(url).await?;
        listener.listen(&channel).await?;
        let task = tokio::spawn(listen(listener, url.to_owned(), pool.clone(), channel.clone(), changes.clone()));
        Ok((pool, telemetry, Dialect::Postgres { channel, _listener: Listener(task) }))
    }

    /// Starts a write transaction.
    ///
    /// SQLite: the store's writer mutex first, then `BEGIN IMMEDIATE`, which takes the write
    /// lock up front: a deferred transaction that reads and then writes fails with
    /// `SQLITE_BUSY_SNAPSHOT` (which no busy timeout retries) when another connection to the
    /// file committed in between, e.g. a second store opened on the same file. Holding the
    /// mutex first means that in one store the lock is always free.
    ///
    /// PostgreSQL: a plain transaction; writes serialize on the row locks they take.
    pub(crate) async fn begin_write(&self, pool: &AnyPool) -> StoreResult<Write<'_>> {
        match self {
            Dialect::Sqlite { writer, .. } => {
                let guard = writer.lock().await;
                let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                Ok(Write { tx, _writer: Some(guard), _telemetry: None })
            }
            Dialect::Postgres { .. } => Ok(Write { tx: pool.begin().await?, _writer: None, _telemetry: None }),
        }
    }

    /// Starts a write of telemetry (outcome metrics, their rollup), which must never hold up a
    /// release write for long.
    ///
    /// SQLite: telemetry writers first queue among themselves, so at most one of them waits
    /// for (or holds) the writer mutex at a time: a kill queues behind at most one short
    /// telemetry transaction, however many SDKs are posting. (The writer mutex is fair, so
    /// without this gate a kill would wait behind every batch queued before it.)
    ///
    /// PostgreSQL: telemetry never takes the locks release writes take; `pool` is the store's
    /// separate telemetry pool, so a flood of batches cannot take every connection either.
    pub(crate) async fn begin_telemetry_write(&self, pool: &AnyPool) -> StoreResult<Write<'_>> {
        match self {
            Dialect::Sqlite { writer, telemetry } => {
                let gate = telemetry.lock().await;
                let guard = writer.lock().await;
                let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                Ok(Write { tx, _writer: Some(guard), _telemetry: Some(gate) })
            }
            Dialect::Postgres { .. } => Ok(Write { tx: pool.begin().await?, _writer: None, _telemetry: None }),
        }
    }

    /// Starts a read-only transaction whose reads are all of one moment. SQLite in WAL mode
    /// reads one snapshot per transaction anyway; PostgreSQL needs REPEATABLE READ for that.
    pub(crate) async fn begin_snapshot(&self, pool: &AnyPool) -> StoreResult<Transaction<'static, Any>> {
        Ok(match self {
            Dialect::Sqlite { .. } => pool.begin().await?,
            Dialect::Postgres { .. } => pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?,
        })
    }

    /// Appended to a SELECT whose rows the transaction is about to change: a row lock on
    /// PostgreSQL; nothing on SQLite, where the write transaction holds the whole file.
    pub(crate) fn row_lock(&self) -> &'static str {
        match self {
            Dialect::Sqlite { .. } => "",
            Dialect::Postgres { .. } => " FOR UPDATE",
        }
    }

    /// Called for every revision a write bumps, inside its transaction. PostgreSQL announces it
    /// to the other replicas, delivered when (and only if) the transaction commits; SQLite has
    /// no other replicas.
    pub(crate) async fn bumped(&self, conn: &mut AnyConnection, change: &Change) -> StoreResult<()> {
        if let Dialect::Postgres { channel, .. } = self {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(format!("{}:{}", change.environment, change.revision))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

/// Relays every replica's commits (this one's included; subscribers dedupe by revision) until
/// the store is dropped (which aborts this task), reconnecting after errors.
async fn listen(
    mut listener: PgListener,
    url: String,
    pool: AnyPool,
    channel: String,
    changes: broadcast::Sender<Change>,
) {
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
                listener = reconnect(&url, &channel).await;
                catch_up(&pool, &changes).await;
            }
        }
    }
}

/// A fresh listener on `channel`, retrying every second until the database answers.
async fn reconnect(url: &str, channel: &str) -> PgListener {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match PgListener::connect(url).await {
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
async fn catch_up(pool: &AnyPool, changes: &broadcast::Sender<Change>) {
    let rows = match sqlx::query("SELECT name, revision FROM environments ORDER BY name").fetch_all(pool).await {
        Ok(rows) => rows,
        Err(e) => return tracing::warn!(error = %e, "cannot read revisions after reconnecting"),
    };
    for row in rows {
        match (row.try_get(0), row.try_get(1)) {
            (Ok(environment), Ok(revision)) => {
                let _ = changes.send(Change { environment, revision });
            }
            (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "unreadable revision after reconnecting"),
        }
    }
}
