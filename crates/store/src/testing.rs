//! Helpers for tests of the store and of the server over it: a throw-away directory for SQLite
//! files and a fresh PostgreSQL schema per test, so that tests never share state.

use std::path::PathBuf;
use std::sync::Arc;

use dimmer_domain::{Clock, SystemClock};

use crate::{DEFAULT_ENVIRONMENTS, SqlStore, Store, StoreResult};

/// A directory removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new, empty directory under the system's temporary directory.
    pub fn new(name: &str) -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("dimmer-{name}-{}-{nanos}", std::process::id()));
        // A test cannot go on without its directory; failing loudly is the point.
        #[allow(clippy::expect_used)]
        std::fs::create_dir_all(&dir).expect("creating a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh schema on the test database, dropped by [`PgSchema::drop_schema`].
#[derive(Debug)]
pub struct PgSchema {
    /// The database.
    pub url: String,
    /// The schema, unique to one test.
    pub schema: String,
}

impl PgSchema {
    /// A schema on `DIMMER_TEST_DATABASE_URL`; `None` (after a loud warning) when it is not
    /// set outside CI. In CI a missing database is a failure, never a silent skip.
    #[allow(clippy::panic, reason = "a test helper: CI without PostgreSQL must fail")]
    pub fn new() -> Option<PgSchema> {
        let Ok(url) = std::env::var("DIMMER_TEST_DATABASE_URL") else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "DIMMER_TEST_DATABASE_URL is not set: CI must run the PostgreSQL contract tests (.ci/run sets it)"
                );
            }
            eprintln!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !! PostgreSQL tests NOT RUN: set DIMMER_TEST_DATABASE_URL, for example\n\
                 !!   DIMMER_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            return None;
        };
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        Some(PgSchema { url, schema: format!("dimmer_test_{}_{nanos}", std::process::id()) })
    }

    /// A store on this schema, with the default environments, on the system clock.
    pub async fn store(&self) -> StoreResult<Arc<dyn Store>> {
        self.store_with(Arc::new(SystemClock)).await
    }

    /// A store on this schema, with the default environments, stamping with `clock`.
    pub async fn store_with(&self, clock: Arc<dyn Clock>) -> StoreResult<Arc<dyn Store>> {
        let store = SqlStore::connect_with_schema(&self.url, &self.schema, clock).await?;
        store.ensure_environments(&DEFAULT_ENVIRONMENTS).await?;
        Ok(Arc::new(store))
    }

    /// Drops the schema and everything in it (best effort).
    pub async fn drop_schema(&self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.url).await {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)).execute(&mut conn).await;
        }
    }
}
