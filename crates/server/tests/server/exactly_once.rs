//! Exactly-once guard actions. The guard loop's passes are driven one at a time (no timer, no
//! sleep) over the real services and a real store, with a regression recorded in the outcome
//! metrics; a store wrapper injects a failure at each point of the verdict-and-action write:
//! before it, inside its transaction, and after its commit. Whatever fails, the flag ends up
//! dialed down once, with one verdict and one dial-down in the audit log. Two PostgreSQL
//! replicas judging the same regression at the same moment act once between them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dimmer_domain::guard::Guard;
use dimmer_domain::outcomes::{Aggregate, BUCKET_MS, MetricRow, Retention, RollupStats};
use dimmer_domain::release::{Plan, RestorePoint, Template, parse_stages};
use dimmer_domain::{Clock, ManualClock};
use dimmer_engine::{Flag, Segment};
use dimmer_server::api::AppState;
use dimmer_server::app::Options;
use dimmer_store::{
    AuditBounds, AuditEntry, AuditFilter, AuditPage, Change, ChangeMeta, ChangedItem, Environment, FlagRecord,
    PlanRecord, ReleaseOutcome, ReleaseWrite, SegmentRecord, Snapshot, StandingGuards, Store, StoreError, StoreResult,
    TokenRecord,
};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::support::TempDir;

const FLAG: &str = "checkout";
const ENV: &str = "production";
const START_MS: i64 = 1_000_000_000;

/// Where the wrapper makes the next verdict-and-action write fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The write never reaches the database (the process died first).
    BeforeWrite,
    /// The transaction fails after the verdict row is inserted and before the action is
    /// written: the flag changed under it, so its version check fails and it rolls back.
    InsideTransaction,
    /// The transaction commits, but the caller never hears so (the connection dropped).
    AfterCommit,
}

/// A store that fails the next release write carrying a guard verdict, as `fault` says.
struct Faulty {
    inner: Arc<dyn Store>,
    fault: Mutex<Option<Fault>>,
}

impl Faulty {
    fn take(&self, write: &ReleaseWrite) -> Option<Fault> {
        // Only the writes that carry a verdict fail.
        write.guard_event.as_ref()?;
        self.fault.lock().unwrap().take()
    }
}

#[async_trait]
impl Store for Faulty {
    async fn release_write(&self, write: &ReleaseWrite, meta: &ChangeMeta) -> StoreResult<ReleaseOutcome> {
        match self.take(write) {
            None => self.inner.release_write(write, meta).await,
            Some(Fault::BeforeWrite) => Err(StoreError::Corrupt("injected: the process died before the write".into())),
            Some(Fault::InsideTransaction) => {
                let mut stale = write.clone();
                if let Some((_, version)) = stale.flag_update.as_mut() {
                    *version -= 1;
                }
                let refused = self.inner.release_write(&stale, meta).await;
                assert!(matches!(refused, Err(StoreError::VersionMismatch { .. })), "{refused:?}");
                refused
            }
            Some(Fault::AfterCommit) => {
                self.inner.release_write(write, meta).await?;
                Err(StoreError::Corrupt("injected: the connection dropped after the commit".into()))
            }
        }
    }

    async fn ensure_environments(&self, names: &[&str]) -> StoreResult<()> {
        self.inner.ensure_environments(names).await
    }
    async fn list_environments(&self) -> StoreResult<Vec<Environment>> {
        self.inner.list_environments().await
    }
    async fn create_environment(&self, name: &str, meta: &ChangeMeta) -> StoreResult<Environment> {
        self.inner.create_environment(name, meta).await
    }
    async fn list_flags(&self, include_archived: bool) -> StoreResult<Vec<FlagRecord>> {
        self.inner.list_flags(include_archived).await
    }
    async fn get_flag(&self, key: &str) -> StoreResult<Option<FlagRecord>> {
        self.inner.get_flag(key).await
    }
    async fn create_flag(&self, key: &str, flag: &Flag, meta: &ChangeMeta) -> StoreResult<FlagRecord> {
        self.inner.create_flag(key, flag, meta).await
    }
    async fn update_flag(&self, key: &str, flag: &Flag, version: i64, meta: &ChangeMeta) -> StoreResult<FlagRecord> {
        self.inner.update_flag(key, flag, version, meta).await
    }
    async fn set_flag_archived(
        &self,
        key: &str,
        archived: bool,
        version: Option<i64>,
        meta: &ChangeMeta,
    ) -> StoreResult<FlagRecord> {
        self.inner.set_flag_archived(key, archived, version, meta).await
    }
    async fn list_segments(&self) -> StoreResult<Vec<SegmentRecord>> {
        self.inner.list_segments().await
    }
    async fn get_segment(&self, key: &str) -> StoreResult<Option<SegmentRecord>> {
        self.inner.get_segment(key).await
    }
    async fn create_segment(&self, key: &str, segment: &Segment, meta: &ChangeMeta) -> StoreResult<SegmentRecord> {
        self.inner.create_segment(key, segment, meta).await
    }
    async fn update_segment(
        &self,
        key: &str,
        segment: &Segment,
        version: i64,
        meta: &ChangeMeta,
    ) -> StoreResult<SegmentRecord> {
        self.inner.update_segment(key, segment, version, meta).await
    }
    async fn delete_segment(&self, key: &str, version: i64, meta: &ChangeMeta) -> StoreResult<()> {
        self.inner.delete_segment(key, version, meta).await
    }
    async fn snapshot(&self, environment: &str) -> StoreResult<Snapshot> {
        self.inner.snapshot(environment).await
    }
    async fn changes_since(&self, environment: &str, revision: i64) -> StoreResult<Option<Vec<ChangedItem>>> {
        self.inner.changes_since(environment, revision).await
    }
    async fn audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        self.inner.audit(filter).await
    }
    async fn audit_page(&self, filter: &AuditFilter, bounds: &AuditBounds) -> StoreResult<AuditPage> {
        self.inner.audit_page(filter, bounds).await
    }
    async fn get_audit_entry(&self, id: i64) -> StoreResult<Option<AuditEntry>> {
        self.inner.get_audit_entry(id).await
    }
    async fn flag_summaries(&self) -> StoreResult<Vec<dimmer_store::FlagSummary>> {
        self.inner.flag_summaries().await
    }
    async fn create_token(&self, token: &TokenRecord, meta: &ChangeMeta) -> StoreResult<()> {
        self.inner.create_token(token, meta).await
    }
    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        self.inner.token_by_hash(hash).await
    }
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.inner.list_tokens().await
    }
    async fn revoke_token(&self, name: &str, meta: &ChangeMeta) -> StoreResult<()> {
        self.inner.revoke_token(name, meta).await
    }
    async fn record_metrics(&self, environment: &str, rows: &[MetricRow]) -> StoreResult<()> {
        self.inner.record_metrics(environment, rows).await
    }
    async fn metric_rows(&self, environment: &str, flag: &str, from: i64, until: i64) -> StoreResult<Vec<MetricRow>> {
        self.inner.metric_rows(environment, flag, from, until).await
    }
    async fn roll_up_metrics(&self, now_ms: i64, retention: &Retention) -> StoreResult<RollupStats> {
        self.inner.roll_up_metrics(now_ms, retention).await
    }
    async fn last_evaluations(&self, environment: &str) -> StoreResult<HashMap<String, i64>> {
        self.inner.last_evaluations(environment).await
    }
    async fn list_standing_guards(&self) -> StoreResult<Vec<StandingGuards>> {
        self.inner.list_standing_guards().await
    }
    async fn put_standing_guards(&self, guards: &StandingGuards, meta: &ChangeMeta) -> StoreResult<()> {
        self.inner.put_standing_guards(guards, meta).await
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
        self.inner.guard_event_once(flag, environment, key, action, details, meta).await
    }
    async fn get_plan(&self, flag: &str, environment: &str) -> StoreResult<Option<PlanRecord>> {
        self.inner.get_plan(flag, environment).await
    }
    async fn list_plans(&self) -> StoreResult<Vec<PlanRecord>> {
        self.inner.list_plans().await
    }
    async fn restore_point(&self, flag: &str, environment: &str) -> StoreResult<Option<RestorePoint>> {
        self.inner.restore_point(flag, environment).await
    }
    async fn list_templates(&self) -> StoreResult<Vec<Template>> {
        self.inner.list_templates().await
    }
    async fn put_template(&self, template: &Template, meta: &ChangeMeta) -> StoreResult<()> {
        self.inner.put_template(template, meta).await
    }
    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.subscribe()
    }
}

/// The server's services over `store` on `clock`, without HTTP: the test drives the passes.
fn services(store: Arc<dyn Store>, clock: &Arc<ManualClock>) -> (AppState, watch::Sender<bool>) {
    let (stop, stopped) = watch::channel(false);
    let options = Options { clock: clock.clone(), ..crate::support::options() };
    let (_router, state, _worker) = dimmer_server::app::app(store, &options, stopped);
    (state, stop)
}

async fn open_sqlite(dir: &Path, clock: &Arc<ManualClock>) -> Arc<dyn Store> {
    let store = dimmer_store::open(None, dir, clock.clone()).await.unwrap();
    dimmer_server::app::first_start(store.as_ref()).await.unwrap();
    store
}

fn people() -> ChangeMeta {
    ChangeMeta { actor: "release-manager".into(), reason: Some("test".into()) }
}

/// A flag released to 5% under an error-rate guard, and a stage's worth of outcomes in which
/// the change fails four times as often as the control.
async fn regressing_release(state: &AppState, clock: &ManualClock) {
    let flag: Flag =
        serde_json::from_value(json!({"owner": "team-pay", "environments": {ENV: {"default": {"variant": "off"}}}}))
            .unwrap();
    state.store.create_flag(FLAG, &flag, &people()).await.unwrap();
    let guard: Guard = serde_json::from_value(
        json!({"name": "errors", "metric": "error_rate", "compare": "relative", "max": 0.5, "min_sample": 500}),
    )
    .unwrap();
    let plan = Plan { stages: parse_stages("5%,100%", 600_000).unwrap(), template: None, guards: vec![guard] };
    state.releases.start(FLAG, ENV, plan, &people()).await.unwrap();
    let mut rows = Vec::new();
    for _ in 0..30 {
        clock.advance_ms(BUCKET_MS);
        let bucket_ms = clock.now_ms() - BUCKET_MS;
        for (variant, evaluations, errors) in [("on", 500, 20), ("off", 9_500, 95)] {
            let aggregate = Aggregate { evaluations, errors, successes: evaluations - errors, ..Aggregate::default() };
            rows.push(MetricRow {
                flag: FLAG.into(),
                variant: variant.into(),
                bucket_ms,
                width_ms: BUCKET_MS,
                aggregate,
            });
        }
    }
    state.store.record_metrics(ENV, &rows).await.unwrap();
}

/// The production exposure weight and the guard's audit entries: (verdicts, dial-downs).
async fn traces(store: &dyn Store) -> (u32, usize, usize) {
    let flag = store.get_flag(FLAG).await.unwrap().unwrap();
    let weight = flag.flag.environments[ENV].exposure.as_ref().map_or(u32::MAX, |e| e.weight);
    let audit =
        store.audit(&AuditFilter { flag: Some(FLAG.into()), limit: 100, ..AuditFilter::default() }).await.unwrap();
    let count = |action: &str| audit.iter().filter(|e| e.action == action && e.actor == "guard").count();
    (weight, count("guard.regression"), count("release.dial_down"))
}

/// 5% in the engine's units (1/1000 of a percent).
const FIVE_PERCENT: u32 = 5_000;

#[tokio::test]
async fn a_failure_before_the_write_leaves_no_verdict_and_after_a_restart_the_guard_acts_once() {
    let dir = TempDir::new("once-restart");
    let clock = Arc::new(ManualClock::new(START_MS));
    {
        let store = open_sqlite(&dir.0, &clock).await;
        let faulty = Arc::new(Faulty { inner: store.clone(), fault: Mutex::new(Some(Fault::BeforeWrite)) });
        let (state, _stop) = services(faulty.clone(), &clock);
        regressing_release(&state, &clock).await;
        let report = state.guardian.pass().await.unwrap();
        assert_eq!((report.judged, report.acted), (1, 0), "the action failed, so nothing was acted on");
        assert_eq!(traces(store.as_ref()).await, (FIVE_PERCENT, 0, 0), "no verdict without its action");
        // The process dies here: its services and store go away with it.
    }
    let store = open_sqlite(&dir.0, &clock).await;
    let (state, _stop) = services(store.clone(), &clock);
    let report = state.guardian.pass().await.unwrap();
    assert_eq!(report.acted, 1, "after the restart the next pass judges again and acts");
    assert_eq!(traces(store.as_ref()).await, (0, 1, 1));
    for _ in 0..3 {
        clock.advance_ms(BUCKET_MS);
        assert_eq!(state.guardian.pass().await.unwrap().acted, 0);
    }
    assert_eq!(traces(store.as_ref()).await, (0, 1, 1), "dialed down exactly once");
}

#[tokio::test]
async fn a_failure_inside_the_transaction_rolls_the_verdict_back_with_the_action() {
    let dir = TempDir::new("once-inside");
    let clock = Arc::new(ManualClock::new(START_MS));
    let store = open_sqlite(&dir.0, &clock).await;
    let faulty = Arc::new(Faulty { inner: store.clone(), fault: Mutex::new(Some(Fault::InsideTransaction)) });
    let (state, _stop) = services(faulty.clone(), &clock);
    regressing_release(&state, &clock).await;
    // The first write inserts the verdict, fails on the flag's version and rolls back; the
    // service decides again on fresh data and writes verdict and action under the same key,
    // which it could not if the verdict of the failed write had stayed.
    let report = state.guardian.pass().await.unwrap();
    assert_eq!(*faulty.fault.lock().unwrap(), None, "the fault was injected");
    assert_eq!(report.acted, 1);
    assert_eq!(traces(store.as_ref()).await, (0, 1, 1));
}

#[tokio::test]
async fn a_verdict_committed_but_not_acknowledged_is_not_acted_on_twice() {
    let dir = TempDir::new("once-after");
    let clock = Arc::new(ManualClock::new(START_MS));
    let store = open_sqlite(&dir.0, &clock).await;
    let faulty = Arc::new(Faulty { inner: store.clone(), fault: Mutex::new(Some(Fault::AfterCommit)) });
    let (state, _stop) = services(faulty.clone(), &clock);
    regressing_release(&state, &clock).await;
    let report = state.guardian.pass().await.unwrap();
    assert_eq!(report.acted, 0, "the loop did not hear of its commit");
    assert_eq!(traces(store.as_ref()).await, (0, 1, 1), "but verdict and action committed together");
    for _ in 0..3 {
        clock.advance_ms(BUCKET_MS);
        assert_eq!(state.guardian.pass().await.unwrap().acted, 0);
    }
    assert_eq!(traces(store.as_ref()).await, (0, 1, 1));
}

#[tokio::test]
async fn two_postgres_replicas_judging_one_regression_at_the_same_moment_act_once() {
    use dimmer_store::testing::PgSchema;

    let Some(pg) = PgSchema::new() else { return };
    let outcome = tokio::spawn({
        let (url, schema) = (pg.url.clone(), pg.schema.clone());
        async move {
            let clock = Arc::new(ManualClock::new(START_MS));
            let connect = || async {
                let store = dimmer_store::SqlStore::connect_with_schema(&url, &schema, clock.clone()).await.unwrap();
                let store: Arc<dyn Store> = Arc::new(store);
                dimmer_server::app::first_start(store.as_ref()).await.unwrap();
                store
            };
            let (a, b) = (connect().await, connect().await);
            let (one, _stop_one) = services(a.clone(), &clock);
            let (two, _stop_two) = services(b, &clock);
            regressing_release(&one, &clock).await;
            let mut acted = 0;
            for _ in 0..5 {
                let (x, y) = tokio::join!(one.guardian.pass(), two.guardian.pass());
                acted += x.unwrap().acted + y.unwrap().acted;
                clock.advance_ms(BUCKET_MS);
            }
            assert_eq!(acted, 1, "one replica acted, once");
            assert_eq!(traces(a.as_ref()).await, (0, 1, 1));
        }
    })
    .await;
    pg.drop_schema().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
