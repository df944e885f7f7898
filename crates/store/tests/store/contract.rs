//! The storage contract, written once and run against SQLite and PostgreSQL. PostgreSQL comes
//! from `DIMMER_TEST_DATABASE_URL` (set by `.ci/run`); each test uses a fresh schema, dropped
//! afterwards even when the test fails. Without the variable the PostgreSQL half fails in CI and
//! warns loudly elsewhere. A few backend-specific tests follow the generic suite.

use std::sync::Arc;
use std::time::Duration;

use dimmer_domain::guard::{Action, Compare, Guard};
use dimmer_domain::outcomes::{Aggregate, BUCKET_MS, COARSE_BUCKET_MS, MetricRow, Retention, totals};
use dimmer_domain::release::{Plan, PlanState, RestorePoint, Status, Template, parse_stages};
use dimmer_domain::{Clock, ManualClock, SystemClock};
use dimmer_engine::{Flag, Segment};
use dimmer_protocol::{EventStat, LatencySketch};
use dimmer_store::SqlStore;
use dimmer_store::StandingGuards;
use dimmer_store::{
    AuditBounds, AuditFilter, Change, ChangeMeta, DEFAULT_ENVIRONMENTS, GuardEvent, ReleaseWrite, RestoreWrite, Scope,
    Store, StoreError, TokenRecord,
};
use serde_json::json;

use dimmer_store::testing::{PgSchema, TempDir};

fn meta(actor: &str, reason: Option<&str>) -> ChangeMeta {
    ChangeMeta { actor: actor.into(), reason: reason.map(str::to_owned) }
}

fn flag(description: &str) -> Flag {
    Flag { description: description.into(), ..Flag::default() }
}

fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

async fn sqlite(clock: Arc<dyn Clock>) -> (Arc<dyn Store>, Database, TempDir) {
    let dir = TempDir::new("contract");
    let path = dir.0.join("dimmer.db");
    let store = SqlStore::open(&path, clock).await.expect("sqlite");
    store.ensure_environments(&DEFAULT_ENVIRONMENTS).await.expect("environments");
    (Arc::new(store), Database::Sqlite(path), dir)
}

/// Where a test's store keeps its data, for the few checks no `Store` method can make.
#[derive(Debug, Clone)]
enum Database {
    Sqlite(std::path::PathBuf),
    Postgres { url: String, schema: String },
}

impl Database {
    /// A connection of its own to the test's database, behind the store's back.
    async fn connect(&self) -> sqlx::AnyConnection {
        use sqlx::{Connection, Executor};
        sqlx::any::install_default_drivers();
        let url = match self {
            Database::Sqlite(path) => format!("sqlite://{}", path.display()),
            Database::Postgres { url, .. } => url.clone(),
        };
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        if let Database::Postgres { schema, .. } = self {
            conn.execute(format!("SET search_path TO {schema}").as_str()).await.unwrap();
        }
        conn
    }

    /// The integers one query returns, read behind the store's back.
    async fn integers(&self, sql: &str) -> Vec<i64> {
        use sqlx::Row;
        let rows = sqlx::query(sql).fetch_all(&mut self.connect().await).await.unwrap();
        rows.iter().map(|r| r.get::<i64, _>(0)).collect()
    }

    /// Runs one statement behind the store's back (what a database of an older version holds).
    async fn execute(&self, sql: &str) {
        use sqlx::Executor;
        self.connect().await.execute(sql).await.unwrap();
    }
}

/// Every contract test on both backends: those under `clocked` get the store's `ManualClock`
/// and its database too.
macro_rules! contract {
    ($($name:ident),* $(,)?; clocked: $($clocked:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _, _dir) = super::sqlite(super::system()).await;
                    super::$name(store).await;
                }
            )*
            $(
                #[tokio::test]
                async fn $clocked() {
                    let clock = std::sync::Arc::new(super::ManualClock::new(super::ODD_TIME));
                    let (store, db, _dir) = super::sqlite(clock.clone()).await;
                    super::$clocked(store, clock, db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(pg) = super::PgSchema::new() else { return };
                    let store = pg.store().await.expect("postgres store");
                    // Run in a task so that a failing test still drops its schema.
                    let outcome = tokio::spawn(super::$name(store)).await;
                    pg.drop_schema().await;
                    if let Err(e) = outcome {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            )*
            $(
                #[tokio::test]
                async fn $clocked() {
                    let Some(pg) = super::PgSchema::new() else { return };
                    let clock = std::sync::Arc::new(super::ManualClock::new(super::ODD_TIME));
                    let store = pg.store_with(clock.clone()).await.expect("postgres store");
                    let db = super::Database::Postgres { url: pg.url.clone(), schema: pg.schema.clone() };
                    let outcome = tokio::spawn(super::$clocked(store, clock, db)).await;
                    pg.drop_schema().await;
                    if let Err(e) = outcome {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            )*
        }
    };
}

contract!(
    first_start_creates_the_default_environments_once,
    flags_carry_versions_and_stale_writes_change_nothing,
    duplicate_keys_and_names_are_refused_alike,
    archived_flags_leave_snapshots_and_come_back_on_restore,
    segments_are_created_updated_and_deleted_with_versions,
    each_write_bumps_the_environments_it_concerns_and_lands_in_their_feeds,
    subscribers_hear_of_each_commit,
    audit_entries_record_actor_reason_and_diff_and_filter,
    audit_pages_summarise_large_bodies_and_stop_at_their_byte_budget,
    tokens_are_stored_hashed_found_listed_and_revoked,
    concurrent_writers_of_one_version_produce_exactly_one_winner,
    refused_writes_leave_no_trace,
    every_kind_of_write_is_audited_under_its_action,
    release_writes_commit_flag_plan_restore_point_and_audit_together,
    concurrent_plan_steps_from_one_revision_commit_exactly_once,
    templates_are_stored_replaced_and_audited,
    metric_rows_are_appended_rolled_up_without_loss_and_expired,
    guard_events_happen_once_and_standing_guards_are_audited,
    a_release_write_with_a_guard_event_commits_everything_together_once,
    a_refused_release_write_leaves_no_guard_event_and_no_audit_entry,
    concurrent_release_writes_of_one_guard_event_commit_exactly_once;
    clocked: store_timestamps_follow_a_manual_clock,
    history_facts_follow_every_definition_write_and_old_rows_are_replayed,
);

async fn first_start_creates_the_default_environments_once(store: Arc<dyn Store>) {
    store.ensure_environments(&DEFAULT_ENVIRONMENTS).await.unwrap();
    let envs = store.list_environments().await.unwrap();
    let names: Vec<&str> = envs.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["development", "production", "staging"]);
    assert!(envs.iter().all(|e| e.revision == 0));
    store.create_environment("qa", &meta("admin", None)).await.unwrap();
    assert!(matches!(
        store.create_environment("qa", &meta("admin", None)).await,
        Err(StoreError::AlreadyExists { .. })
    ));
}

async fn flags_carry_versions_and_stale_writes_change_nothing(store: Arc<dyn Store>) {
    let created = store.create_flag("f", &flag("one"), &meta("a", None)).await.unwrap();
    assert_eq!(created.version, 1);
    let updated = store.update_flag("f", &flag("two"), 1, &meta("a", None)).await.unwrap();
    assert_eq!((updated.version, updated.flag.description.as_str()), (2, "two"));
    match store.update_flag("f", &flag("stale"), 1, &meta("b", None)).await {
        Err(StoreError::VersionMismatch { expected: 1, current: 2 }) => {}
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    let read = store.get_flag("f").await.unwrap().unwrap();
    assert_eq!((read.version, read.flag.description.as_str()), (2, "two"));
    assert!(matches!(
        store.update_flag("nope", &flag("x"), 1, &meta("a", None)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.list_flags(false).await.unwrap().len(), 1);
}

async fn duplicate_keys_and_names_are_refused_alike(store: Arc<dyn Store>) {
    store.create_flag("f", &flag(""), &meta("a", None)).await.unwrap();
    assert!(matches!(
        store.create_flag("f", &flag(""), &meta("a", None)).await,
        Err(StoreError::AlreadyExists { kind: "flag", .. })
    ));
    store.create_segment("s", &Segment::default(), &meta("a", None)).await.unwrap();
    assert!(matches!(
        store.create_segment("s", &Segment::default(), &meta("a", None)).await,
        Err(StoreError::AlreadyExists { kind: "segment", .. })
    ));
}

async fn archived_flags_leave_snapshots_and_come_back_on_restore(store: Arc<dyn Store>) {
    store.create_flag("keep", &flag(""), &meta("a", None)).await.unwrap();
    store.create_flag("old", &flag(""), &meta("a", None)).await.unwrap();
    let archived = store.set_flag_archived("old", true, Some(1), &meta("a", Some("retired"))).await.unwrap();
    assert!(archived.archived);
    let snap = store.snapshot("production").await.unwrap();
    assert!(snap.flags.flags.contains_key("keep") && !snap.flags.flags.contains_key("old"));
    assert_eq!(store.list_flags(false).await.unwrap().len(), 1);
    assert_eq!(store.list_flags(true).await.unwrap().len(), 2);
    store.set_flag_archived("old", false, None, &meta("a", None)).await.unwrap();
    assert!(store.snapshot("production").await.unwrap().flags.flags.contains_key("old"));
    assert!(matches!(store.snapshot("nowhere").await, Err(StoreError::NotFound { .. })));
}

async fn segments_are_created_updated_and_deleted_with_versions(store: Arc<dyn Store>) {
    let seg = Segment { included: vec!["u1".into()], ..Segment::default() };
    store.create_segment("beta", &seg, &meta("a", None)).await.unwrap();
    let bigger = Segment { included: vec!["u1".into(), "u2".into()], ..Segment::default() };
    let updated = store.update_segment("beta", &bigger, 1, &meta("a", None)).await.unwrap();
    assert_eq!(updated.version, 2);
    assert!(matches!(store.delete_segment("beta", 1, &meta("a", None)).await, Err(StoreError::VersionMismatch { .. })));
    assert_eq!(store.snapshot("staging").await.unwrap().flags.segments["beta"].included.len(), 2);
    store.delete_segment("beta", 2, &meta("a", None)).await.unwrap();
    assert!(store.get_segment("beta").await.unwrap().is_none());
    assert!(store.list_segments().await.unwrap().is_empty());
}

async fn each_write_bumps_the_environments_it_concerns_and_lands_in_their_feeds(store: Arc<dyn Store>) {
    let revision = |env: &'static str| {
        let store = store.clone();
        async move { store.snapshot(env).await.unwrap().revision }
    };
    let (prod, staging) = (revision("production").await, revision("staging").await);
    // Flag-wide writes are in every environment's view.
    store.create_flag("a", &flag(""), &meta("x", None)).await.unwrap();
    store.update_flag("a", &flag("changed"), 1, &meta("x", None)).await.unwrap();
    // A segment nobody uses concerns no environment.
    store.create_segment("s", &Segment::default(), &meta("x", None)).await.unwrap();
    // Production's own configuration, then a production rule on the segment.
    let in_production = |config: serde_json::Value| -> Flag {
        serde_json::from_value(json!({"description": "changed", "environments": {"production": config}})).unwrap()
    };
    store.update_flag("a", &in_production(json!({"enabled": true})), 2, &meta("x", None)).await.unwrap();
    let rule = json!({"enabled": true, "rules": [{"clauses": [{"op": "in_segment", "values": ["s"]}], "serve": {"variant": "on"}}]});
    store.update_flag("a", &in_production(rule), 3, &meta("x", None)).await.unwrap();
    // Now production uses the segment: its changes concern production alone.
    let members = Segment { included: vec!["u1".into()], ..Segment::default() };
    store.update_segment("s", &members, 1, &meta("x", None)).await.unwrap();

    assert_eq!(revision("production").await, prod + 5);
    assert_eq!(revision("staging").await, staging + 2, "production's own changes leave staging's revision alone");
    assert_eq!(revision("development").await, revision("staging").await);
    let items = store.changes_since("production", prod).await.unwrap().expect("the feed reaches back");
    let seen: Vec<(i64, &str, &str)> =
        items.iter().map(|i| (i.revision - prod, i.kind.as_str(), i.key.as_str())).collect();
    assert_eq!(seen, [(1, "flag", "a"), (2, "flag", "a"), (3, "flag", "a"), (4, "flag", "a"), (5, "segment", "s")]);
    let items = store.changes_since("staging", staging).await.unwrap().expect("the feed reaches back");
    assert_eq!(items.iter().map(|i| i.revision - staging).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(store.changes_since("production", prod + 5).await.unwrap(), Some(Vec::new()));
    assert_eq!(store.changes_since("production", prod + 99).await.unwrap(), None, "a revision from the future");
    assert!(matches!(store.changes_since("nowhere", 0).await, Err(StoreError::NotFound { kind: "environment", .. })));
}

async fn subscribers_hear_of_each_commit(store: Arc<dyn Store>) {
    let mut rx = store.subscribe();
    store.create_flag("f", &flag(""), &meta("x", None)).await.unwrap();
    let revision = store.snapshot("production").await.unwrap().revision;
    let mut heard = std::collections::HashSet::new();
    while heard.len() < DEFAULT_ENVIRONMENTS.len() {
        let change = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a change").expect("open");
        if change.revision == revision {
            heard.insert(change.environment);
        }
    }
}

async fn audit_entries_record_actor_reason_and_diff_and_filter(store: Arc<dyn Store>) {
    store.create_flag("f", &flag("v1"), &meta("alice", Some("launch"))).await.unwrap();
    let mut on = flag("v1");
    on.environments
        .insert("production".into(), dimmer_engine::model::EnvironmentConfig { enabled: true, ..Default::default() });
    store.update_flag("f", &on, 1, &meta("bob", Some("go live"))).await.unwrap();
    store.create_flag("g", &flag(""), &meta("alice", None)).await.unwrap();

    let entries = store.audit(&AuditFilter { flag: Some("f".into()), ..Default::default() }).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!((entries[0].actor.as_str(), entries[0].action.as_str()), ("bob", "flag.update"));
    assert_eq!(entries[0].reason.as_deref(), Some("go live"));
    assert_eq!(entries[0].environment.as_deref(), Some("production"), "a one-environment change names it");
    assert_eq!(entries[0].after.as_ref().unwrap()["environments"]["production"]["enabled"], json!(true));
    assert!(entries[0].before.as_ref().unwrap()["environments"]["production"].is_null());
    assert_eq!(entries[1].before, None);
    let by_alice = store.audit(&AuditFilter { actor: Some("alice".into()), ..Default::default() }).await.unwrap();
    assert_eq!(by_alice.len(), 2);
    let page = store.audit(&AuditFilter { limit: 1, ..Default::default() }).await.unwrap();
    let next = store.audit(&AuditFilter { limit: 1, before_id: Some(page[0].id), ..Default::default() }).await.unwrap();
    assert!(next[0].id < page[0].id);
}

async fn audit_pages_summarise_large_bodies_and_stop_at_their_byte_budget(store: Arc<dyn Store>) {
    let big = |n: usize| Segment { included: (0..n).map(|i| format!("user-{i:06}")).collect(), ..Segment::default() };
    let long_reason = "é".repeat(3000);
    store.create_segment("s", &big(2000), &meta("alice", Some(&long_reason))).await.unwrap();
    for version in 1..=5 {
        store.update_segment("s", &big(100 + version as usize), version, &meta("bob", None)).await.unwrap();
    }
    let bounds = AuditBounds { body_bytes: 4096, page_bytes: 5000 };
    let everything = AuditFilter { limit: 1000, ..AuditFilter::default() };
    let whole = store.audit(&everything).await.unwrap();
    let mut listed = Vec::new();
    let mut filter = everything.clone();
    loop {
        let page = store.audit_page(&filter, &bounds).await.unwrap();
        assert!(!page.entries.is_empty());
        listed.extend(page.entries.iter().cloned());
        match page.next {
            Some(next) => {
                assert_eq!(Some(next), page.entries.last().map(|e| e.id));
                assert!(page.entries.len() < 1000, "cut by size, not count");
                filter.before_id = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(listed.iter().map(|e| e.id).collect::<Vec<_>>(), whole.iter().map(|e| e.id).collect::<Vec<_>>());
    for (page_entry, entry) in listed.iter().zip(&whole) {
        let stored = entry.after.as_ref().map(|v| v.to_string().len() as u64);
        match stored {
            Some(bytes) if bytes > 4096 => {
                assert!(page_entry.truncated);
                assert_eq!(page_entry.after, Some(json!({"truncated": true, "bytes": bytes})));
                assert_eq!(store.get_audit_entry(entry.id).await.unwrap().as_ref(), Some(entry), "whole on request");
            }
            _ => assert_eq!(page_entry.after, entry.after),
        }
    }
    // The creation's reason (6,000 bytes) is cut to 1,000 characters in the page, whole alone.
    let created = listed.last().unwrap();
    assert!(created.truncated);
    assert_eq!(created.reason.as_deref().unwrap().chars().count(), 1001);
    let whole_created = store.get_audit_entry(created.id).await.unwrap().unwrap();
    assert_eq!(whole_created.reason.as_deref(), Some(long_reason.as_str()));
    assert!(!whole_created.truncated);
    assert!(store.get_audit_entry(-1).await.unwrap().is_none());
    // Small bodies fill the byte budget: the page stops there, and the count still applies.
    let small = store.audit_page(&AuditFilter { limit: 2, ..AuditFilter::default() }, &bounds).await.unwrap();
    assert_eq!(small.entries.len(), 2);
    assert_eq!(small.next, Some(small.entries[1].id));
}

async fn tokens_are_stored_hashed_found_listed_and_revoked(store: Arc<dyn Store>) {
    let token = TokenRecord {
        name: "web".into(),
        scope: Scope::Sdk,
        environment: Some("production".into()),
        hash: "ab".repeat(32),
        created_at: 1,
        revoked: false,
        origins: vec!["https://app.example.com".into(), "http://localhost:5173".into()],
    };
    store.create_token(&token, &meta("admin", None)).await.unwrap();
    assert!(matches!(store.create_token(&token, &meta("admin", None)).await, Err(StoreError::AlreadyExists { .. })));
    // Another name with the same hash: only the database's unique index knows; same answer.
    let twin = TokenRecord { name: "twin".into(), ..token.clone() };
    assert!(matches!(
        store.create_token(&twin, &meta("admin", None)).await,
        Err(StoreError::AlreadyExists { kind: "token", .. })
    ));
    let found = store.token_by_hash(&"ab".repeat(32)).await.unwrap().unwrap();
    assert_eq!((found.scope, found.environment.as_deref()), (Scope::Sdk, Some("production")));
    // Its browser origins come back as stored, in order, by hash and in the list.
    assert_eq!(found.origins, token.origins);
    assert_eq!(store.list_tokens().await.unwrap()[0].origins, token.origins);
    // The creation's audit entry says which origins it allowed (never the hash).
    let created = store.audit(&AuditFilter::default()).await.unwrap();
    let after = created.iter().find(|e| e.action == "token.create").and_then(|e| e.after.clone()).unwrap();
    assert_eq!(after["origins"], json!(["https://app.example.com", "http://localhost:5173"]), "{after}");
    assert!(!after.to_string().contains(&"ab".repeat(32)), "{after}");
    assert!(store.token_by_hash("00").await.unwrap().is_none());
    store.revoke_token("web", &meta("admin", Some("leaked"))).await.unwrap();
    assert!(store.token_by_hash(&"ab".repeat(32)).await.unwrap().unwrap().revoked);
    assert!(matches!(store.revoke_token("nope", &meta("admin", None)).await, Err(StoreError::NotFound { .. })));
    assert_eq!(store.list_tokens().await.unwrap().len(), 1);
}

async fn concurrent_writers_of_one_version_produce_exactly_one_winner(store: Arc<dyn Store>) {
    store.create_flag("race", &flag("start"), &meta("x", None)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.update_flag("race", &flag(&format!("writer {i}")), 1, &meta(&format!("w{i}"), None)).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::VersionMismatch { expected: 1, current: 2 }) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.get_flag("race").await.unwrap().unwrap().version, 2);
}

#[tokio::test]
async fn postgres_replicas_hear_each_others_commits() {
    let Some(pg) = PgSchema::new() else { return };
    let a = pg.store().await.expect("postgres store");
    let b = pg.store().await.expect("postgres store");
    let mut rx = b.subscribe();
    a.create_flag("from-a", &flag(""), &meta("x", None)).await.unwrap();
    let revision = a.snapshot("production").await.unwrap().revision;
    let heard = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match rx.recv().await {
                Ok(c) if c.environment == "production" && c.revision == revision => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    })
    .await;
    assert_eq!(heard, Ok(true), "replica b did not hear a's commit within 2 s");
    drop((a, b));
    pg.drop_schema().await;
}

async fn refused_writes_leave_no_trace(store: Arc<dyn Store>) {
    store.create_flag("f", &flag("one"), &meta("a", None)).await.unwrap();
    store.create_segment("s", &Segment::default(), &meta("a", None)).await.unwrap();
    let revision = store.snapshot("production").await.unwrap().revision;
    let audited = store.audit(&AuditFilter::default()).await.unwrap().len();

    let stale = meta("late", None);
    assert!(store.update_flag("f", &flag("x"), 7, &stale).await.is_err());
    assert!(store.set_flag_archived("f", true, Some(7), &stale).await.is_err());
    assert!(store.create_flag("f", &flag("x"), &stale).await.is_err());
    assert!(store.update_segment("s", &Segment::default(), 7, &stale).await.is_err());
    assert!(store.delete_segment("s", 7, &stale).await.is_err());
    assert!(matches!(store.delete_segment("nope", 1, &stale).await, Err(StoreError::NotFound { kind: "segment", .. })));
    assert!(matches!(store.set_flag_archived("nope", true, None, &stale).await, Err(StoreError::NotFound { .. })));

    assert_eq!(store.snapshot("production").await.unwrap().revision, revision);
    assert_eq!(store.audit(&AuditFilter::default()).await.unwrap().len(), audited);
    assert!(store.audit(&AuditFilter { actor: Some("late".into()), ..Default::default() }).await.unwrap().is_empty());
    let f = store.get_flag("f").await.unwrap().unwrap();
    assert_eq!((f.version, f.archived, f.flag.description.as_str()), (1, false, "one"));
}

async fn every_kind_of_write_is_audited_under_its_action(store: Arc<dyn Store>) {
    let m = meta("ops", Some("why"));
    store.create_environment("qa", &m).await.unwrap();
    store.create_flag("f", &flag(""), &m).await.unwrap();
    store.update_flag("f", &flag("flag-wide"), 1, &m).await.unwrap();
    store.set_flag_archived("f", true, Some(2), &m).await.unwrap();
    store.set_flag_archived("f", false, Some(3), &m).await.unwrap();
    store.create_segment("s", &Segment::default(), &m).await.unwrap();
    store.update_segment("s", &Segment { description: "d".into(), ..Segment::default() }, 1, &m).await.unwrap();
    store.delete_segment("s", 2, &m).await.unwrap();
    let token = TokenRecord {
        name: "ci".into(),
        scope: Scope::Writer,
        environment: None,
        hash: "cd".repeat(32),
        created_at: 1,
        revoked: false,
        origins: Vec::new(),
    };
    store.create_token(&token, &m).await.unwrap();
    store.revoke_token("ci", &m).await.unwrap();

    let entries = store.audit(&AuditFilter::default()).await.unwrap();
    let actions: Vec<&str> = entries.iter().rev().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "environment.create",
            "flag.create",
            "flag.update",
            "flag.archive",
            "flag.restore",
            "segment.create",
            "segment.update",
            "segment.delete",
            "token.create",
            "token.revoke",
        ]
    );
    assert!(entries.iter().all(|e| e.actor == "ops" && e.reason.as_deref() == Some("why")));
    assert!(entries.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let archive = entries.iter().find(|e| e.action == "flag.archive").unwrap();
    assert_eq!((archive.environment.as_deref(), archive.flag.as_deref()), (None, Some("f")));
    assert_eq!(archive.before.as_ref().unwrap()["archived"], json!(false));
    assert_eq!(archive.after.as_ref().unwrap()["archived"], json!(true));
    let deleted = entries.iter().find(|e| e.action == "segment.delete").unwrap();
    assert_eq!((deleted.segment.as_deref(), deleted.after.as_ref()), (Some("s"), None));
    assert_eq!(deleted.before.as_ref().unwrap()["description"], json!("d"));
    assert!(entries.iter().all(|e| !e.after.as_ref().is_some_and(|a| a.to_string().contains(&"cd".repeat(32)))));

    // Filters combine; flag-wide flag changes concern every environment.
    let qa = store.audit(&AuditFilter { environment: Some("qa".into()), ..Default::default() }).await.unwrap();
    assert!(qa.iter().any(|e| e.action == "environment.create"));
    assert!(qa.iter().all(|e| e.environment.as_deref() == Some("qa") || e.flag.is_some()));
    let qa_flag =
        AuditFilter { environment: Some("qa".into()), flag: Some("f".into()), limit: 2, ..Default::default() };
    let page = store.audit(&qa_flag).await.unwrap();
    assert_eq!(page.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["flag.restore", "flag.archive"]);
    let nobody = AuditFilter { actor: Some("nobody".into()), flag: Some("f".into()), ..Default::default() };
    assert!(store.audit(&nobody).await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_stores_sharing_a_file_never_surface_busy_and_keep_what_they_acknowledged() {
    let dir = TempDir::new("contract-shared");
    let path = dir.0.join("dimmer.db");
    let one: Arc<dyn Store> = Arc::new(SqlStore::open(&path, system()).await.unwrap());
    let two: Arc<dyn Store> = Arc::new(SqlStore::open(&path, system()).await.unwrap());
    one.ensure_environments(&DEFAULT_ENVIRONMENTS).await.unwrap();
    // Each store serializes its own writers; across stores only the file lock does.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move { store.create_flag(&format!("f{i}"), &flag(""), &meta("x", None)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    drop((one, two));

    let reopened = SqlStore::open(&path, system()).await.unwrap();
    assert_eq!(reopened.list_flags(false).await.unwrap().len(), 20);
    assert_eq!(reopened.snapshot("production").await.unwrap().revision, 20, "no lost or doubled revision");
    let feed = reopened.changes_since("production", 0).await.unwrap().unwrap();
    assert_eq!(feed.iter().map(|c| c.revision).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());

    use sqlx::Connection;
    let mut raw = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut raw).await.unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn sqlite_opens_exactly_the_file_it_is_given_whatever_its_path_holds() {
    let dir = TempDir::new("contract-path");
    // Characters that mean something in a URL, which is how the SQLite file reaches sqlx.
    let odd = dir.0.join("a dir %41 ?x #y");
    std::fs::create_dir_all(&odd).unwrap();
    let path = odd.join("dimmer %20.db");
    let store = SqlStore::open(&path, system()).await.unwrap();
    store.ensure_environments(&["e"]).await.unwrap();
    drop(store);
    assert!(path.is_file(), "{} was not created", path.display());
    let reopened = SqlStore::open(&path, system()).await.unwrap();
    assert_eq!(reopened.list_environments().await.unwrap().len(), 1);
    let names: Vec<_> = std::fs::read_dir(&odd).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.iter().all(|n| n.to_string_lossy().starts_with("dimmer %20.db")), "{names:?}");
}

async fn next(rx: &mut tokio::sync::broadcast::Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a change within 5 s").expect("open")
}

#[tokio::test]
async fn postgres_notifications_stay_within_their_schema() {
    let (Some(x), Some(y)) = (PgSchema::new(), PgSchema::new()) else { return };
    let y = PgSchema { schema: format!("{}_y", y.schema), ..y };
    let (x_store, y_writer, y_replica) = (
        x.store().await.expect("postgres store"),
        y.store().await.expect("postgres store"),
        y.store().await.expect("postgres store"),
    );
    let outcome = tokio::spawn(async move {
        let mut rx = y_replica.subscribe();
        y_writer.create_flag("y1", &flag(""), &meta("y", None)).await.unwrap();
        y_writer.create_flag("y2", &flag(""), &meta("y", None)).await.unwrap();
        // Drain y's own announcements so far: every environment at revision 2.
        let mut at_two = std::collections::HashSet::new();
        while at_two.len() < DEFAULT_ENVIRONMENTS.len() {
            let change = next(&mut rx).await;
            if change.revision == 2 {
                at_two.insert(change.environment);
            }
        }
        // NOTIFY is delivered in commit order: were x's commit (revision 1) announced on y's
        // channel, y's replica would hear it before y's next commit (revision 3).
        x_store.create_flag("x1", &flag(""), &meta("x", None)).await.unwrap();
        y_writer.create_flag("y3", &flag(""), &meta("y", None)).await.unwrap();
        let heard = next(&mut rx).await;
        assert_eq!(heard.revision, 3, "heard {heard:?}: a change from another schema");
    })
    .await;
    x.drop_schema().await;
    y.drop_schema().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn postgres_replicas_writing_at_once_share_one_gapless_revision_sequence() {
    let Some(pg) = PgSchema::new() else { return };
    let (a, b) = (pg.store().await.expect("postgres store"), pg.store().await.expect("postgres store"));
    let outcome = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for i in 0..20 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(
                async move { store.create_flag(&format!("f{i}"), &flag(""), &meta("x", None)).await },
            ));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        for env in DEFAULT_ENVIRONMENTS {
            let feed = b.changes_since(env, 0).await.unwrap().unwrap();
            assert_eq!(feed.iter().map(|c| c.revision).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>(), "{env}");
        }
    })
    .await;
    pg.drop_schema().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn plan() -> Plan {
    Plan { stages: parse_stages("1%,5%,100%", 60_000).unwrap(), template: None, guards: Vec::new() }
}

fn step(action: &str, flag_update: Option<(Flag, i64)>, state: PlanState, expected: i64) -> ReleaseWrite {
    ReleaseWrite {
        flag: "rel".into(),
        environment: "production".into(),
        action: action.into(),
        flag_update,
        plan: Some((plan(), state, expected)),
        restore: RestoreWrite::Keep,
        before: json!({"stage": expected}),
        after: json!({"stage": state.stage}),
        guard_event: None,
    }
}

async fn release_writes_commit_flag_plan_restore_point_and_audit_together(store: Arc<dyn Store>) {
    store.create_flag("rel", &flag("v1"), &meta("x", None)).await.unwrap();
    let revision = store.list_environments().await.unwrap()[0].revision;
    let start = PlanState::start(1_000);
    let out = store
        .release_write(&step("plan.start", Some((flag("v2"), 1)), start, 0), &meta("ana", Some("go")))
        .await
        .unwrap();
    assert_eq!((out.flag.version, out.plan.as_ref().map(|p| p.revision)), (2, Some(1)));
    assert_eq!(store.list_environments().await.unwrap()[0].revision, revision + 1, "a flag change bumps revisions");
    let stored = store.get_plan("rel", "production").await.unwrap().unwrap();
    assert_eq!((stored.plan, stored.state, stored.revision), (plan(), start, 1));
    assert_eq!(store.list_plans().await.unwrap().len(), 1);

    // A stale plan revision changes nothing: not the flag, not the plan, not the audit log.
    let audit_len = store.audit(&AuditFilter::default()).await.unwrap().len();
    let stale = step("plan.advance", Some((flag("v3"), 2)), PlanState { stage: 1, ..start }, 0);
    assert!(matches!(
        store.release_write(&stale, &meta("ana", None)).await,
        Err(StoreError::VersionMismatch { expected: 0, current: 1 })
    ));
    assert_eq!(store.get_flag("rel").await.unwrap().unwrap().version, 2);
    assert_eq!(store.audit(&AuditFilter::default()).await.unwrap().len(), audit_len);

    // The first restore point of an incident is kept; a restore clears it.
    let point = |enabled| RestorePoint { enabled, exposure: None, at_ms: 5 };
    let mut kill = step("release.kill", None, PlanState { status: Status::Paused, ..start }, 1);
    kill.restore = RestoreWrite::SetIfAbsent(point(true));
    store.release_write(&kill, &meta("ops", Some("incident"))).await.unwrap();
    let mut again = step("release.kill", None, PlanState { status: Status::Paused, ..start }, 2);
    again.restore = RestoreWrite::SetIfAbsent(point(false));
    store.release_write(&again, &meta("ops", None)).await.unwrap();
    assert_eq!(store.restore_point("rel", "production").await.unwrap(), Some(point(true)));
    let mut restore = step("release.restore", None, PlanState { status: Status::Paused, ..start }, 3);
    restore.restore = RestoreWrite::Clear;
    store.release_write(&restore, &meta("ops", None)).await.unwrap();
    assert_eq!(store.restore_point("rel", "production").await.unwrap(), None);

    let entries = store.audit(&AuditFilter { flag: Some("rel".into()), ..AuditFilter::default() }).await.unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["release.restore", "release.kill", "release.kill", "plan.start", "flag.create"]);
    assert_eq!(entries[3].reason.as_deref(), Some("go"));
    assert_eq!(entries[3].environment.as_deref(), Some("production"));
    assert_eq!(entries[3].after, Some(json!({"stage": 0})));
}

/// A flag `rel` with a plan started in production: flag version 1, plan revision 1.
async fn started_plan(store: &Arc<dyn Store>) {
    store.create_flag("rel", &flag("v1"), &meta("x", None)).await.unwrap();
    store.release_write(&step("plan.start", None, PlanState::start(0), 0), &meta("x", None)).await.unwrap();
}

/// Eight release writes at once, the i-th being `write(i)`: how many committed. The others
/// must have lost the race cleanly.
async fn race(store: &Arc<dyn Store>, write: fn(usize) -> ReleaseWrite) -> usize {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.release_write(&write(i), &meta(&format!("replica {i}"), None)).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::AlreadyRecorded { .. } | StoreError::VersionMismatch { .. }) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    wins
}

async fn concurrent_plan_steps_from_one_revision_commit_exactly_once(store: Arc<dyn Store>) {
    started_plan(&store).await;
    let advance = |i| {
        let next = PlanState { stage: 1, entered_at_ms: 10, status: Status::Running };
        step("plan.advance", Some((flag(&format!("r{i}")), 1)), next, 1)
    };
    assert_eq!(race(&store, advance).await, 1);
    let plan = store.get_plan("rel", "production").await.unwrap().unwrap();
    assert_eq!((plan.revision, plan.state.stage), (2, 1));
    let advances =
        store.audit(&AuditFilter::default()).await.unwrap().iter().filter(|e| e.action == "plan.advance").count();
    assert_eq!(advances, 1);
}

async fn templates_are_stored_replaced_and_audited(store: Arc<dyn Store>) {
    let mut t = Template {
        name: "slow".into(),
        description: "d".into(),
        stages: parse_stages("1%,100%", 1).unwrap(),
        default_for: vec![dimmer_engine::FlagKind::Release],
    };
    store.put_template(&t, &meta("ana", None)).await.unwrap();
    t.description = "e".into();
    store.put_template(&t, &meta("ana", None)).await.unwrap();
    assert_eq!(store.list_templates().await.unwrap(), [t]);
    let entries = store.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(entries.iter().filter(|e| e.action == "template.put").count(), 2);
    assert_eq!(entries[0].before.as_ref().and_then(|b| b["description"].as_str()), Some("d"));
}

fn metric(flag: &str, variant: &str, bucket_ms: i64, errors: u64, latency: &[f64]) -> MetricRow {
    MetricRow {
        flag: flag.into(),
        variant: variant.into(),
        bucket_ms,
        width_ms: BUCKET_MS,
        aggregate: Aggregate {
            evaluations: 10,
            successes: 10 - errors,
            errors,
            latency: LatencySketch::of(latency.iter().copied()),
            events: [("click".to_owned(), EventStat { count: 2, sum: 1.5, sum_sq: Some(1.25) })].into(),
        },
    }
}

async fn metric_rows_are_appended_rolled_up_without_loss_and_expired(store: Arc<dyn Store>) {
    let hour = 3_600_000;
    let now = 100 * 24 * hour;
    // Three batches into the current bucket, two into one a minute old, one two days old.
    for (bucket, errors) in [(now, 1), (now, 2), (now, 0), (now - 60_000, 3), (now - 60_000, 1), (now - 48 * hour, 5)] {
        let rows = [metric("f", "on", bucket, errors, &[10.0, 20.0]), metric("f", "off", bucket, 0, &[15.0])];
        store.record_metrics("production", &rows).await.unwrap();
    }
    store.record_metrics("staging", &[metric("f", "on", now, 9, &[])]).await.unwrap();
    let everything =
        |store: Arc<dyn Store>| async move { store.metric_rows("production", "f", 0, i64::MAX).await.unwrap() };
    let before = totals(&everything(store.clone()).await, 0, i64::MAX);
    assert_eq!(before["on"].errors, 12);
    assert_eq!(before["on"].latency.count(), 12);

    let stats = store.roll_up_metrics(now, &Retention::default()).await.unwrap();
    // The two old fine buckets are merged (3 rows each side -> 1 row per bucket and variant,
    // the two-day-old one coarsened on top); the current bucket is left alone.
    assert!(stats.merged >= 6, "{stats:?}");
    let rows = everything(store.clone()).await;
    assert_eq!(totals(&rows, 0, i64::MAX), before, "a rollup never changes a total");
    let old: Vec<&MetricRow> = rows.iter().filter(|r| r.bucket_ms < now - 24 * hour).collect();
    assert!(old.iter().all(|r| r.width_ms == COARSE_BUCKET_MS), "{old:?}");
    assert_eq!(rows.iter().filter(|r| r.bucket_ms == now).count(), 6, "the open bucket keeps its rows");

    // A second pass has nothing left to merge.
    let again = store.roll_up_metrics(now, &Retention::default()).await.unwrap();
    assert_eq!(again.merged, 0, "{again:?}");

    let last = store.last_evaluations("production").await.unwrap();
    assert_eq!(last.get("f"), Some(&now));

    let retention = Retention { keep_ms: hour, ..Retention::default() };
    let expired = store.roll_up_metrics(now, &retention).await.unwrap();
    assert!(expired.expired >= 2, "{expired:?}");
    let left = totals(&everything(store.clone()).await, 0, i64::MAX);
    assert_eq!(left["on"].errors, 7, "only the rows within the last hour are kept");
    assert_eq!(totals(&store.metric_rows("staging", "f", 0, i64::MAX).await.unwrap(), 0, i64::MAX)["on"].errors, 9);
}

fn guard() -> Guard {
    Guard {
        name: "errors".into(),
        metric: "error_rate".into(),
        compare: Compare::Threshold,
        max: 0.05,
        min_sample: 100,
        action: Action::Alert,
        alpha: 0.01,
        data_deadline: None,
    }
}

async fn guard_events_happen_once_and_standing_guards_are_audited(store: Arc<dyn Store>) {
    let details = json!({"guard": "errors"});
    let m = meta("guard", Some("regression"));
    assert!(store.guard_event_once("f", "production", "k1", "guard.dial_down", &details, &m).await.unwrap());
    assert!(!store.guard_event_once("f", "production", "k1", "guard.dial_down", &details, &m).await.unwrap());
    assert!(store.guard_event_once("f", "staging", "k1", "guard.dial_down", &details, &m).await.unwrap());
    let audit =
        store.audit(&AuditFilter { flag: Some("f".into()), limit: 100, ..AuditFilter::default() }).await.unwrap();
    assert_eq!(audit.iter().filter(|a| a.action == "guard.dial_down").count(), 2);

    let guards =
        StandingGuards { flag: "f".into(), environment: "production".into(), guards: vec![guard()], updated_at_ms: 0 };
    store.put_standing_guards(&guards, &meta("alice", Some("watch errors"))).await.unwrap();
    let listed = store.list_standing_guards().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].guards, guards.guards);
    store.put_standing_guards(&StandingGuards { guards: vec![], ..guards }, &meta("alice", None)).await.unwrap();
    assert!(store.list_standing_guards().await.unwrap().is_empty());
    let audit =
        store.audit(&AuditFilter { flag: Some("f".into()), limit: 100, ..AuditFilter::default() }).await.unwrap();
    assert_eq!(audit.iter().filter(|a| a.action == "guards.put").count(), 2);
}

/// Not a round number, and not now: a timestamp from anywhere but the clock stands out.
const ODD_TIME: i64 = 1_234_567_891;

async fn store_timestamps_follow_a_manual_clock(store: Arc<dyn Store>, clock: Arc<ManualClock>, db: Database) {
    let t0 = clock.now_ms();
    let m = meta("clock", None);
    store.create_environment("qa", &m).await.unwrap();
    assert!(store.list_environments().await.unwrap().iter().all(|e| e.created_at == t0));
    let f = store.create_flag("f", &flag("one"), &m).await.unwrap();
    assert_eq!((f.created_at, f.updated_at), (t0, t0));
    let s = store.create_segment("s", &Segment::default(), &m).await.unwrap();
    assert_eq!((s.created_at, s.updated_at), (t0, t0));
    let token = TokenRecord {
        name: "t".into(),
        scope: Scope::Reader,
        environment: None,
        hash: "ef".repeat(32),
        created_at: 7,
        revoked: false,
        origins: Vec::new(),
    };
    store.create_token(&token, &m).await.unwrap();
    assert_eq!(store.list_tokens().await.unwrap()[0].created_at, t0, "stamped by the store, not the record");
    assert!(store.list_tokens().await.unwrap()[0].origins.is_empty(), "no origins: stored and read as none");
    let t = Template {
        name: "t".into(),
        description: "d".into(),
        stages: parse_stages("1%,100%", 1).unwrap(),
        default_for: vec![],
    };
    store.put_template(&t, &m).await.unwrap();
    let start = step("plan.start", None, PlanState::start(0), 0);
    let out = store.release_write(&start, &m).await.unwrap_err();
    assert!(matches!(out, StoreError::NotFound { kind: "flag", .. }), "{out:?}");
    store.create_flag("rel", &flag("v1"), &m).await.unwrap();
    let plan = store.release_write(&start, &m).await.unwrap().plan.unwrap();
    assert_eq!((plan.created_at, plan.updated_at), (t0, t0));
    let guards =
        StandingGuards { flag: "f".into(), environment: "production".into(), guards: vec![guard()], updated_at_ms: 3 };
    store.put_standing_guards(&guards, &m).await.unwrap();
    assert_eq!(store.list_standing_guards().await.unwrap()[0].updated_at_ms, t0);
    assert!(store.guard_event_once("f", "production", "k0", "guard.alert", &json!({}), &m).await.unwrap());
    assert_eq!(db.integers("SELECT at FROM guard_events").await, [t0]);
    assert_eq!(
        db.integers("SELECT created_at FROM templates UNION ALL SELECT updated_at FROM templates").await,
        [t0, t0]
    );
    assert!(store.audit(&AuditFilter::default()).await.unwrap().iter().all(|e| e.at == t0));

    clock.advance_ms(61_001);
    let t1 = clock.now_ms();
    let f = store.update_flag("f", &flag("two"), 1, &m).await.unwrap();
    assert_eq!((f.created_at, f.updated_at), (t0, t1));
    let f = store.set_flag_archived("f", true, Some(2), &m).await.unwrap();
    assert_eq!((f.created_at, f.updated_at), (t0, t1));
    assert_eq!(store.get_flag("f").await.unwrap().unwrap().updated_at, t1);
    let s = store.update_segment("s", &Segment { description: "x".into(), ..Segment::default() }, 1, &m).await.unwrap();
    assert_eq!((s.created_at, s.updated_at), (t0, t1));
    assert_eq!(store.get_segment("s").await.unwrap().unwrap().updated_at, t1);
    store.put_template(&Template { description: "e".into(), ..t }, &m).await.unwrap();
    assert_eq!(
        db.integers("SELECT created_at FROM templates UNION ALL SELECT updated_at FROM templates").await,
        [t0, t1]
    );
    let advance = step("plan.advance", None, PlanState { stage: 1, ..PlanState::start(0) }, 1);
    let plan = store.release_write(&advance, &m).await.unwrap().plan.unwrap();
    assert_eq!((plan.created_at, plan.updated_at), (t0, t1));
    assert_eq!(store.get_plan("rel", "production").await.unwrap().unwrap().updated_at, t1);
    store.put_standing_guards(&guards, &m).await.unwrap();
    assert_eq!(store.list_standing_guards().await.unwrap()[0].updated_at_ms, t1);
    assert!(store.guard_event_once("f", "production", "k1", "guard.alert", &json!({}), &m).await.unwrap());
    assert_eq!(db.integers("SELECT at FROM guard_events ORDER BY at").await, [t0, t1]);
    store.create_environment("late", &m).await.unwrap();
    let late = store.list_environments().await.unwrap().into_iter().find(|e| e.name == "late").unwrap();
    assert_eq!(late.created_at, t1);
    let audit = store.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.at == t1).count(), 8, "{audit:?}");
    assert!(audit.iter().all(|e| e.at == t0 || e.at == t1));
}

/// The lifecycle's history facts move with every definition write (create, update, archive,
/// release writes), and a flag written before the store kept them (a NULL column, as migration
/// 0005 leaves every existing flag) gets the same facts replayed from its audit entries.
async fn history_facts_follow_every_definition_write_and_old_rows_are_replayed(
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    db: Database,
) {
    use dimmer_engine::model::{EnvironmentConfig, Exposure};
    let m = meta("facts", None);
    let at = |weight: Option<u32>, enabled: bool| {
        let mut f = flag("f");
        let exposure = weight.map(|weight| Exposure { weight, ..Exposure::default() });
        f.environments.insert("production".into(), EnvironmentConfig { enabled, exposure, ..Default::default() });
        f.environments.insert("staging".into(), EnvironmentConfig { enabled: true, ..Default::default() });
        f
    };
    let facts = |store: Arc<dyn Store>| async move {
        let summaries = store.flag_summaries().await.unwrap();
        let rel = summaries.into_iter().find(|s| s.key == "rel").unwrap();
        assert_eq!((rel.kind, rel.owner.as_deref()), (dimmer_engine::FlagKind::Release, None));
        rel.history
    };
    let t0 = clock.now_ms();
    store.create_flag("rel", &at(Some(0), true), &m).await.unwrap();
    let f = facts(store.clone()).await;
    assert_eq!(f.get(None), (true, None), "staging is released, production is on at 0%");
    assert_eq!(f.get(Some("staging")), (true, Some(t0)));
    assert_eq!(f.get(Some("production")), (false, None));
    assert_eq!(f.get(Some("qa")), (false, None), "an environment the flag never configured");

    clock.advance_ms(1_000);
    let t1 = clock.now_ms();
    let start = ReleaseWrite {
        after: json!({"enabled": true, "exposure_percent": 100.0, "exposure": null, "plan": null}),
        ..step("plan.start", Some((at(None, true), 1)), PlanState::start(0), 0)
    };
    store.release_write(&start, &m).await.unwrap();
    let f = facts(store.clone()).await;
    assert_eq!(f.get(None), (true, Some(t1)));
    assert_eq!(f.get(Some("production")), (true, Some(t1)));
    assert_eq!(f.get(Some("staging")), (true, Some(t0)), "staging untouched");

    clock.advance_ms(1_000);
    store.update_flag("rel", &at(Some(5_000), true), 2, &m).await.unwrap();
    assert_eq!(facts(store.clone()).await.get(Some("production")), (true, None), "back to 5%");
    clock.advance_ms(1_000);
    let t3 = clock.now_ms();
    store.update_flag("rel", &at(None, true), 3, &m).await.unwrap();
    store.set_flag_archived("rel", true, Some(4), &m).await.unwrap();
    let kept = facts(store.clone()).await;
    assert_eq!(kept.get(Some("production")), (true, Some(t3)), "released again from t3; archiving keeps it");

    db.execute("UPDATE flags SET facts = NULL").await;
    assert_eq!(facts(store.clone()).await, kept, "replayed from the audit log");
    clock.advance_ms(1_000);
    store.set_flag_archived("rel", false, Some(5), &m).await.unwrap();
    assert_eq!(facts(store.clone()).await, kept, "a write to a replayed row carries the replayed facts on");
}

/// A dial-down caused by a guard verdict under `key`, based on flag version `version` and plan
/// revision `revision`.
fn guarded_dial_down(key: &str, version: i64, revision: i64) -> ReleaseWrite {
    let paused = PlanState { status: Status::Paused, ..PlanState::start(0) };
    let mut w = step("release.dial_down", Some((flag(&format!("down {key}")), version)), paused, revision);
    w.restore = RestoreWrite::SetIfAbsent(RestorePoint { enabled: true, exposure: None, at_ms: 5 });
    w.guard_event = Some(GuardEvent {
        key: key.into(),
        action: "guard.regression".into(),
        details: json!({"guard": "errors", "key": key}),
    });
    w
}

/// Everything a release write could have left behind: the flag's version, the plan's
/// revision, the restore point, the production revision and the number of audit entries.
async fn traces(store: &Arc<dyn Store>) -> (i64, Option<i64>, Option<RestorePoint>, i64, usize) {
    (
        store.get_flag("rel").await.unwrap().unwrap().version,
        store.get_plan("rel", "production").await.unwrap().map(|p| p.revision),
        store.restore_point("rel", "production").await.unwrap(),
        store.snapshot("production").await.unwrap().revision,
        store.audit(&AuditFilter { limit: 1000, ..AuditFilter::default() }).await.unwrap().len(),
    )
}

async fn a_release_write_with_a_guard_event_commits_everything_together_once(store: Arc<dyn Store>) {
    store.create_flag("rel", &flag("v1"), &meta("x", None)).await.unwrap();
    let out = store.release_write(&guarded_dial_down("k1", 1, 0), &meta("guard", Some("regression"))).await.unwrap();
    assert_eq!((out.flag.version, out.plan.map(|p| p.revision)), (2, Some(1)));
    assert_eq!(store.restore_point("rel", "production").await.unwrap().map(|p| p.enabled), Some(true));
    let entries = store.audit(&AuditFilter { flag: Some("rel".into()), ..AuditFilter::default() }).await.unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["release.dial_down", "guard.regression", "flag.create"]);
    assert_eq!(entries[1].after, Some(json!({"guard": "errors", "key": "k1"})));
    assert_eq!(
        (entries[1].environment.as_deref(), entries[1].reason.as_deref()),
        (Some("production"), Some("regression"))
    );
    // The event row committed too: the same key is taken, for release writes and alerts alike.
    let before = traces(&store).await;
    match store.release_write(&guarded_dial_down("k1", 2, 1), &meta("guard", None)).await {
        Err(StoreError::AlreadyRecorded { key }) => assert_eq!(key, "k1"),
        other => panic!("expected AlreadyRecorded, got {other:?}"),
    }
    assert_eq!(traces(&store).await, before, "a recorded key writes nothing");
    assert!(
        !store.guard_event_once("rel", "production", "k1", "guard.alert", &json!({}), &meta("g", None)).await.unwrap()
    );
    // Keys are per flag and environment.
    let mut staging = guarded_dial_down("k1", 2, 0);
    staging.environment = "staging".into();
    store.release_write(&staging, &meta("guard", None)).await.unwrap();
}

async fn a_refused_release_write_leaves_no_guard_event_and_no_audit_entry(store: Arc<dyn Store>) {
    started_plan(&store).await;
    let before = traces(&store).await;
    // A stale flag version, then a stale plan revision, each with a fresh key.
    assert!(matches!(
        store.release_write(&guarded_dial_down("k2", 7, 1), &meta("guard", None)).await,
        Err(StoreError::VersionMismatch { expected: 7, current: 1 })
    ));
    assert!(matches!(
        store.release_write(&guarded_dial_down("k2", 1, 7), &meta("guard", None)).await,
        Err(StoreError::VersionMismatch { expected: 7, current: 1 })
    ));
    assert_eq!(traces(&store).await, before, "nothing of a refused write is left, the audit log included");
    // The event row went with the rest: the key is still free.
    store.release_write(&guarded_dial_down("k2", 1, 1), &meta("guard", None)).await.unwrap();
    let audit = store.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == "guard.regression").count(), 1);
}

async fn concurrent_release_writes_of_one_guard_event_commit_exactly_once(store: Arc<dyn Store>) {
    started_plan(&store).await;
    assert_eq!(race(&store, |_| guarded_dial_down("race", 1, 1)).await, 1);
    assert_eq!(store.get_flag("rel").await.unwrap().unwrap().version, 2);
    assert_eq!(store.get_plan("rel", "production").await.unwrap().unwrap().revision, 2);
    let audit = store.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == "guard.regression").count(), 1);
    assert_eq!(audit.iter().filter(|e| e.action == "release.dial_down").count(), 1);
}
