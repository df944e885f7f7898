//! Applies release decisions: plan start and commands, kill, dial-down and restore, and the thin
//! progression loop. The decisions themselves are pure ([`dimmer_domain::release`]); this module reads
//! the store, asks them, writes the outcome in one transaction, then tells people (webhooks).
//!
//! Every operation is a read-decide-write on optimistic versions: a concurrent flag edit makes
//! the write fail and the operation is decided again on fresh data, so nothing waits on a lock
//! held by a slow operation. The loop's writes are conditional on the plan's revision, so of
//! several replicas deciding the same advance exactly one commits it.

use std::sync::Arc;

use dimmer_engine::Flag;
use dimmer_engine::model::EnvironmentConfig;
use serde::Serialize;
use serde_json::Value;

use crate::service::webhooks::{Event, Notifier, PlanPosition};
use dimmer_domain::Clock;
use dimmer_domain::guard::Action;
use dimmer_domain::release::{
    self, Command, Decision, Health, Plan, PlanError, PlanState, RestorePoint, Status, Template,
};
use dimmer_store::{ChangeMeta, FlagRecord, GuardEvent, PlanRecord, ReleaseWrite, RestoreWrite, Store, StoreError};

/// A user-driven operation is decided again at most this many times when concurrent writes
/// keep moving the flag under it.
const RETRIES: usize = 16;

/// Why a release operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// No such flag, environment or plan.
    #[error("{kind} \"{key}\" not found")]
    NotFound {
        /// `flag`, `environment`, `plan` or `template`.
        kind: &'static str,
        /// Which.
        key: String,
    },
    /// The request is invalid; `field` names what.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// Why.
        message: String,
    },
    /// The plan cannot do that now (e.g. a plan is already running).
    #[error("{0}")]
    Conflict(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PlanError> for ReleaseError {
    fn from(e: PlanError) -> Self {
        match e.field() {
            Some(field) => ReleaseError::Invalid { field, message: e.reason() },
            None => ReleaseError::Conflict(e.to_string()),
        }
    }
}

/// What an operation did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    /// False when the operation found nothing to change (it is idempotent).
    pub changed: bool,
    /// The flag's version afterwards.
    pub version: i64,
    /// Whether the environment is on.
    pub enabled: bool,
    /// The exposure ceiling afterwards, in percent.
    pub exposure_percent: f64,
    /// The plan afterwards, if the flag has one in this environment.
    pub plan: Option<PlanView>,
}

/// What [`Releases::act_on_verdict`] did with a verdict it recorded.
#[derive(Debug, Clone)]
pub enum VerdictApplied {
    /// The action was applied (or found already in place) with the verdict.
    Acted(Outcome),
    /// An alert: the verdict was recorded; nothing changes.
    Recorded,
    /// The action does not apply now (no plan, or the plan has ended); the verdict was
    /// recorded alone.
    NotApplicable {
        /// Why the action did not apply.
        why: String,
    },
}

/// The release service: shared by the API handlers and the progression loop.
pub struct Releases {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    notifier: Arc<Notifier>,
}

impl std::fmt::Debug for Releases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Releases").finish_non_exhaustive()
    }
}

/// Why a step is written: who asked (the audit entry's actor and reason) and, when a guard
/// acts, its verdict, recorded in the same transaction.
#[derive(Clone, Copy)]
struct Cause<'a> {
    meta: &'a ChangeMeta,
    verdict: Option<&'a GuardEvent>,
}

/// What an operation wants written, decided from the current flag and plan.
struct Step {
    action: &'static str,
    config: Option<EnvironmentConfig>,
    plan: Option<(Plan, PlanState)>,
    restore: RestoreWrite,
}

/// A plan as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PlanView {
    /// The flag released.
    pub flag: String,
    /// The environment it is released in.
    pub environment: String,
    /// The template it was made from, if any.
    pub template: Option<String>,
    /// `running`, `paused`, `released` or `rolled-back`.
    pub status: String,
    /// The current stage's index (0-based).
    pub stage: usize,
    /// The current stage as people read it (`internal + 5%`).
    pub stage_label: Option<String>,
    /// When the current stage began, Unix milliseconds.
    pub entered_at: i64,
    /// When a running plan may enter its next stage (guards permitting), Unix milliseconds.
    pub advances_after: Option<i64>,
    /// Every stage.
    pub stages: Vec<StageView>,
    /// The plan's revision: bumped by every change.
    pub revision: i64,
}

impl PlanView {
    /// The view of a stored plan.
    pub fn of(record: &PlanRecord) -> Self {
        let state = &record.state;
        let advances_after = match (state.status, record.plan.stages.get(state.stage)) {
            (Status::Running, Some(stage)) if state.stage + 1 < record.plan.stages.len() => {
                Some(state.entered_at_ms.saturating_add(stage.min_dwell_ms))
            }
            _ => None,
        };
        Self {
            flag: record.flag.clone(),
            environment: record.environment.clone(),
            template: record.plan.template.clone(),
            status: state.status.as_str().to_owned(),
            stage: state.stage,
            stage_label: record.plan.stages.get(state.stage).map(stage_label),
            entered_at: state.entered_at_ms,
            advances_after,
            stages: record.plan.stages.iter().map(StageView::of).collect(),
            revision: record.revision,
        }
    }
}

/// A stage as the API shows it (in plans and templates).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StageView {
    /// Segments exposed in full.
    pub segments: Vec<String>,
    /// The share of everyone else exposed, in percent.
    pub percent: f64,
    /// The stage as people read it (`internal + 5%`).
    pub label: String,
    /// The minimum time in the stage, in milliseconds.
    pub min_dwell_ms: i64,
}

impl StageView {
    /// The view of a stage.
    pub fn of(stage: &release::Stage) -> Self {
        Self {
            segments: stage.segments.clone(),
            percent: release::weight_percent(stage.weight),
            label: stage_label(stage),
            min_dwell_ms: stage.min_dwell_ms,
        }
    }
}

/// `internal + 5%`: a stage as people read it.
pub fn stage_label(stage: &release::Stage) -> String {
    let mut parts = stage.segments.clone();
    if stage.weight > 0 || parts.is_empty() {
        parts.push(release::percent_text(stage.weight));
    }
    parts.join(" + ")
}

/// A flag's release state in one environment: the `before` and `after` of a release step's
/// audit entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct ReleaseSummary<'a> {
    enabled: bool,
    exposure_percent: f64,
    exposure: Option<&'a dimmer_engine::model::Exposure>,
    plan: Option<PlanPosition>,
}

fn summary(cfg: Option<&EnvironmentConfig>, plan: Option<&PlanState>) -> Value {
    let summary = ReleaseSummary {
        enabled: cfg.is_some_and(|c| c.enabled),
        exposure_percent: release::weight_percent(release::exposure_weight(cfg)),
        exposure: cfg.and_then(|c| c.exposure.as_ref()),
        plan: plan.map(|p| PlanPosition { stage: p.stage, stages: None, status: p.status.as_str() }),
    };
    // Plain data of strings and numbers: serializing cannot fail.
    serde_json::to_value(summary).unwrap_or(Value::Null)
}

impl Releases {
    /// The service over `store`, reading time from `clock`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, notifier: Arc<Notifier>) -> Self {
        Self { store, clock, notifier }
    }

    async fn check_environment(&self, environment: &str) -> Result<(), ReleaseError> {
        let known = self.store.list_environments().await?;
        if known.iter().any(|e| e.name == environment) {
            Ok(())
        } else {
            Err(ReleaseError::NotFound { kind: "environment", key: environment.to_owned() })
        }
    }

    async fn flag(&self, key: &str) -> Result<FlagRecord, ReleaseError> {
        match self.store.get_flag(key).await? {
            Some(f) if !f.archived => Ok(f),
            Some(_) => Err(ReleaseError::Conflict(format!("flag \"{key}\" is archived: restore it first"))),
            None => Err(ReleaseError::NotFound { kind: "flag", key: key.to_owned() }),
        }
    }

    /// The engine's verdict on the flag with `cfg` in `environment`, against the live segments
    /// and flags (prerequisites): a plan naming a missing segment is refused here.
    async fn validate(&self, key: &str, flag: &Flag, environment: &str) -> Result<(), ReleaseError> {
        let set = crate::service::validation::set_for_flag(self.store.as_ref(), key, flag).await?;
        let prefix = format!("flags.{key}");
        let errors = crate::service::validation::engine_errors(&set, &[environment.to_owned()], &prefix);
        match errors.first() {
            None => Ok(()),
            Some(e) => Err(ReleaseError::Invalid {
                field: e["path"].as_str().unwrap_or_default().to_owned(),
                message: e["message"].as_str().unwrap_or_default().to_owned(),
            }),
        }
    }

    /// Reads, decides with `decide`, writes; decided again on fresh data when a concurrent write
    /// got there first. `decide` returns `None` when there is nothing to do.
    async fn run<F>(&self, key: &str, environment: &str, meta: &ChangeMeta, decide: F) -> Result<Outcome, ReleaseError>
    where
        F: Fn(&FlagRecord, Option<&PlanRecord>, i64) -> Result<Option<Step>, ReleaseError>,
    {
        self.run_once(key, environment, meta, None, decide).await
    }

    /// [`Self::run`], recording `verdict` (when given) in the same transaction as the step it
    /// causes. `StoreError::AlreadyRecorded` when the verdict was recorded before: nothing is
    /// written. A step that changes nothing still records the verdict, alone.
    async fn run_once<F>(
        &self,
        key: &str,
        environment: &str,
        meta: &ChangeMeta,
        verdict: Option<&GuardEvent>,
        decide: F,
    ) -> Result<Outcome, ReleaseError>
    where
        F: Fn(&FlagRecord, Option<&PlanRecord>, i64) -> Result<Option<Step>, ReleaseError>,
    {
        self.check_environment(environment).await?;
        for _ in 0..RETRIES {
            let record = self.flag(key).await?;
            let plan = self.store.get_plan(key, environment).await?;
            let now = self.clock.now_ms();
            let cfg_before = record.flag.environments.get(environment);
            let Some(step) = decide(&record, plan.as_ref(), now)? else {
                if let Some(event) = verdict {
                    let recorded = self.record_verdict(key, environment, event, meta).await?;
                    if !recorded {
                        return Err(StoreError::AlreadyRecorded { key: event.key.clone() }.into());
                    }
                }
                return Ok(Outcome {
                    changed: false,
                    version: record.version,
                    enabled: cfg_before.is_some_and(|c| c.enabled),
                    exposure_percent: release::weight_percent(release::exposure_weight(cfg_before)),
                    plan: plan.as_ref().map(PlanView::of),
                });
            };
            match self.write(&record, plan.as_ref(), environment, step, Cause { meta, verdict }, now).await {
                Err(ReleaseError::Store(StoreError::VersionMismatch { .. })) => continue,
                other => return other,
            }
        }
        Err(ReleaseError::Conflict(format!("flag \"{key}\" kept changing under the operation; try again")))
    }

    async fn write(
        &self,
        record: &FlagRecord,
        plan: Option<&PlanRecord>,
        environment: &str,
        step: Step,
        cause: Cause<'_>,
        now: i64,
    ) -> Result<Outcome, ReleaseError> {
        let Cause { meta, verdict } = cause;
        let cfg_before = record.flag.environments.get(environment);
        let mut flag_update = None;
        if let Some(cfg) = &step.config
            && Some(cfg) != cfg_before
        {
            let mut flag = record.flag.clone();
            flag.environments.insert(environment.to_owned(), cfg.clone());
            // Switching a flag off or lowering its exposure cannot make a valid flag invalid
            // (and an invalid one must still be stoppable): the kill path compiles nothing.
            if !matches!(step.action, "release.kill" | "release.dial_down") {
                self.validate(&record.key, &flag, environment).await?;
            }
            flag_update = Some((flag, record.version));
        }
        let cfg_after = step.config.as_ref().or(cfg_before);
        let plan_state_before = plan.map(|p| p.state);
        let plan_write = step.plan.clone().map(|(p, s)| (p, s, plan.map_or(0, |p| p.revision)));
        let plan_state_after = plan_write.as_ref().map(|(_, s, _)| *s).or(plan_state_before);
        let write = ReleaseWrite {
            flag: record.key.clone(),
            environment: environment.to_owned(),
            action: step.action.to_owned(),
            flag_update,
            plan: plan_write,
            restore: step.restore,
            before: summary(cfg_before, plan_state_before.as_ref()),
            after: summary(cfg_after, plan_state_after.as_ref()),
            guard_event: verdict.cloned(),
        };
        let out = self.store.release_write(&write, meta).await?;
        let plan_after = out.plan.or_else(|| plan.cloned());
        let before = release::exposure_weight(cfg_before);
        let after = release::exposure_weight(cfg_after);
        let enabled = cfg_after.is_some_and(|c| c.enabled);
        self.notifier.notify(Event {
            event: step.action.to_owned(),
            flag: record.key.clone(),
            environment: environment.to_owned(),
            actor: meta.actor.clone(),
            reason: meta.reason.clone(),
            at: now,
            exposure_before: release::weight_percent(before),
            exposure_after: release::weight_percent(after),
            plan: plan_after.as_ref().map(|p| PlanPosition {
                stage: p.state.stage,
                stages: Some(p.plan.stages.len()),
                status: p.state.status.as_str(),
            }),
            message: message(step.action, &record.key, environment, meta, before, after, plan_after.as_ref()),
            details: None,
        });
        Ok(Outcome {
            changed: true,
            version: out.flag.version,
            enabled,
            exposure_percent: release::weight_percent(after),
            plan: plan_after.as_ref().map(PlanView::of),
        })
    }

    /// `kill`: the environment is switched off (everyone gets the off variant); a running plan
    /// is paused. Idempotent.
    pub async fn kill(&self, key: &str, environment: &str, meta: &ChangeMeta) -> Result<Outcome, ReleaseError> {
        self.run(key, environment, meta, |record, plan, now| {
            let cfg = record.flag.environments.get(environment).cloned().unwrap_or_default();
            let paused = pause_running(plan, now);
            if !cfg.enabled && paused.is_none() {
                return Ok(None);
            }
            let point = RestorePoint { enabled: cfg.enabled, exposure: cfg.exposure.clone(), at_ms: now };
            Ok(Some(Step {
                action: "release.kill",
                config: Some(EnvironmentConfig { enabled: false, ..cfg }),
                plan: paused,
                restore: RestoreWrite::SetIfAbsent(point),
            }))
        })
        .await
    }

    /// `dial-down --to weight`: the exposure is cut (never widened; canary segments dropped);
    /// a running plan is paused. Idempotent.
    pub async fn dial_down(
        &self,
        key: &str,
        environment: &str,
        weight: u32,
        meta: &ChangeMeta,
    ) -> Result<Outcome, ReleaseError> {
        self.dial_down_once(key, environment, weight, meta, None).await
    }

    async fn dial_down_once(
        &self,
        key: &str,
        environment: &str,
        weight: u32,
        meta: &ChangeMeta,
        verdict: Option<&GuardEvent>,
    ) -> Result<Outcome, ReleaseError> {
        self.run_once(key, environment, meta, verdict, |record, plan, now| {
            let cfg = record.flag.environments.get(environment).cloned().unwrap_or_default();
            let next = release::dialed_down(&cfg, weight);
            let paused = pause_running(plan, now);
            if next.is_none() && paused.is_none() {
                return Ok(None);
            }
            let point = RestorePoint { enabled: cfg.enabled, exposure: cfg.exposure.clone(), at_ms: now };
            Ok(Some(Step {
                action: "release.dial_down",
                config: next,
                plan: paused,
                restore: RestoreWrite::SetIfAbsent(point),
            }))
        })
        .await
    }

    /// `restore`: back to the state before the first kill or dial-down since the last restore.
    /// A paused plan stays paused (resume it to let it move on). Idempotent.
    pub async fn restore(&self, key: &str, environment: &str, meta: &ChangeMeta) -> Result<Outcome, ReleaseError> {
        let Some(point) = self.store.restore_point(key, environment).await? else {
            // Nothing to go back to: report the current state.
            return self.run(key, environment, meta, |_, _, _| Ok(None)).await;
        };
        self.run(key, environment, meta, move |record, _, _| {
            let cfg = record.flag.environments.get(environment).cloned().unwrap_or_default();
            let restored = EnvironmentConfig { enabled: point.enabled, exposure: point.exposure.clone(), ..cfg };
            Ok(Some(Step {
                action: "release.restore",
                config: Some(restored),
                plan: None,
                restore: RestoreWrite::Clear,
            }))
        })
        .await
    }

    /// Starts a plan: the flag is turned on in the environment, serving the change to the first
    /// stage's exposure. Refused while another plan on the flag is running or paused.
    pub async fn start(
        &self,
        key: &str,
        environment: &str,
        plan: Plan,
        meta: &ChangeMeta,
    ) -> Result<Outcome, ReleaseError> {
        if plan.stages.is_empty() {
            return Err(PlanError::Empty.into());
        }
        self.run(key, environment, meta, |record, existing, now| {
            if let Some(p) = existing.filter(|p| matches!(p.state.status, Status::Running | Status::Paused)) {
                return Err(ReleaseError::Conflict(format!(
                    "flag \"{key}\" already has a {} plan in {environment} (stage {} of {}): roll it back first",
                    p.state.status.as_str(),
                    p.state.stage + 1,
                    p.plan.stages.len()
                )));
            }
            let config = release::configure_stage(&record.flag, environment, &plan.stages[0]).ok_or_else(|| {
                ReleaseError::Invalid {
                    field: "flag".into(),
                    message: "the flag has no variant other than its control (off) variant: nothing to release".into(),
                }
            })?;
            let mut state = PlanState::start(now);
            if plan.stages.len() == 1 {
                state.status = Status::Released;
            }
            Ok(Some(Step {
                action: "plan.start",
                config: Some(config),
                plan: Some((plan.clone(), state)),
                restore: RestoreWrite::Clear,
            }))
        })
        .await
    }

    /// `advance`, `pause`, `resume` or `rollback` on the flag's plan.
    pub async fn command(
        &self,
        key: &str,
        environment: &str,
        command: Command,
        meta: &ChangeMeta,
    ) -> Result<Outcome, ReleaseError> {
        self.command_once(key, environment, command, meta, None).await
    }

    async fn command_once(
        &self,
        key: &str,
        environment: &str,
        command: Command,
        meta: &ChangeMeta,
        verdict: Option<&GuardEvent>,
    ) -> Result<Outcome, ReleaseError> {
        self.run_once(key, environment, meta, verdict, |record, plan, now| {
            let plan =
                plan.ok_or_else(|| ReleaseError::NotFound { kind: "plan", key: format!("{key} in {environment}") })?;
            // Idempotent where it makes sense: pausing a paused plan changes nothing.
            if command == Command::Pause && plan.state.status == Status::Paused {
                return Ok(None);
            }
            let state = release::apply(&plan.plan.stages, &plan.state, command, now)?;
            Ok(Some(step_for(record, plan, environment, state, command_action(command))?))
        })
        .await
    }

    /// Applies a guard's verdict exactly once: the verdict (recorded under its key, with its
    /// audit entry) and the action it causes commit in one transaction, so that of several
    /// replicas exactly one acts and a crash or failure leaves neither. `Ok(Some(_))`: this call
    /// recorded it; `Ok(None)`: it was recorded before (by an earlier pass or another replica).
    /// An action that does not apply (no plan to pause or roll back, or the plan has ended) is
    /// recorded as the verdict alone; any other error leaves nothing, and the next pass retries.
    pub async fn act_on_verdict(
        &self,
        key: &str,
        environment: &str,
        action: Action,
        verdict: &GuardEvent,
        meta: &ChangeMeta,
    ) -> Result<Option<VerdictApplied>, ReleaseError> {
        let once = Some(verdict);
        let applied = match action {
            Action::Alert => {
                let recorded = self.record_verdict(key, environment, verdict, meta).await?;
                return Ok(recorded.then_some(VerdictApplied::Recorded));
            }
            Action::DialDown => self.dial_down_once(key, environment, 0, meta, once).await,
            Action::Rollback => {
                self.command_once(key, environment, Command::Rollback { to_zero: false }, meta, once).await
            }
            Action::Pause => self.command_once(key, environment, Command::Pause, meta, once).await,
        };
        match applied {
            Ok(outcome) => Ok(Some(VerdictApplied::Acted(outcome))),
            Err(ReleaseError::Store(StoreError::AlreadyRecorded { .. })) => Ok(None),
            Err(e @ (ReleaseError::Conflict(_) | ReleaseError::NotFound { kind: "plan", .. })) => {
                let recorded = self.record_verdict(key, environment, verdict, meta).await?;
                Ok(recorded.then(|| VerdictApplied::NotApplicable { why: e.to_string() }))
            }
            Err(e) => Err(e),
        }
    }

    /// Records a verdict that changes nothing; true when this call recorded it.
    async fn record_verdict(
        &self,
        key: &str,
        environment: &str,
        verdict: &GuardEvent,
        meta: &ChangeMeta,
    ) -> Result<bool, ReleaseError> {
        Ok(self.store.guard_event_once(key, environment, &verdict.key, &verdict.action, &verdict.details, meta).await?)
    }

    /// One pass of the progression loop: every running plan whose dwell has passed and whose
    /// guards are healthy (as `health` says) enters its next stage. Returns how many advanced
    /// here. The guard loop (the guardian service) calls it after applying the guards' verdicts.
    pub async fn tick(&self, health: &(dyn Fn(&PlanRecord) -> Health + Send + Sync)) -> Result<usize, ReleaseError> {
        let mut advanced = 0;
        let meta = ChangeMeta { actor: "system".into(), reason: Some("dwell passed; guards healthy".into()) };
        for plan in self.store.list_running_plans().await? {
            if plan.state.status != Status::Running {
                continue;
            }
            let now = self.clock.now_ms();
            let Decision::Advance { .. } = release::decide(&plan.plan.stages, &plan.state, now, health(&plan)) else {
                continue;
            };
            let Ok(record) = self.flag(&plan.flag).await else { continue };
            // A plan that cannot advance is reported; the others still may.
            let step = release::apply(&plan.plan.stages, &plan.state, Command::Advance, now)
                .map_err(ReleaseError::from)
                .and_then(|state| step_for(&record, &plan, &plan.environment, state, "plan.advance"));
            let step = match step {
                Ok(step) => step,
                Err(e) => {
                    tracing::warn!(flag = %plan.flag, environment = %plan.environment, error = %e, "plan step failed");
                    continue;
                }
            };
            match self
                .write(&record, Some(&plan), &plan.environment, step, Cause { meta: &meta, verdict: None }, now)
                .await
            {
                Ok(_) => advanced += 1,
                // Another replica advanced it, or the flag changed: the next pass decides again.
                Err(ReleaseError::Store(StoreError::VersionMismatch { .. })) => {}
                Err(e) => {
                    tracing::warn!(flag = %plan.flag, environment = %plan.environment, error = %e, "plan step failed")
                }
            }
        }
        Ok(advanced)
    }

    /// The clock the service reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Stored templates over the built-in ones (a stored one replaces a built-in of its name).
    pub async fn templates(&self) -> Result<Vec<Template>, ReleaseError> {
        let stored = self.store.list_templates().await?;
        let mut all: Vec<Template> =
            release::builtin_templates().into_iter().filter(|b| !stored.iter().any(|s| s.name == b.name)).collect();
        all.extend(stored);
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The template to use: the named one, or the default for the flag's kind.
    pub async fn template_for(&self, name: Option<&str>, flag: &str) -> Result<Template, ReleaseError> {
        let templates = self.templates().await?;
        match name {
            Some(name) => templates
                .into_iter()
                .find(|t| t.name == name)
                .ok_or_else(|| ReleaseError::NotFound { kind: "template", key: name.to_owned() }),
            None => {
                let kind = self.flag(flag).await?.flag.kind;
                // A stored default wins over a built-in one.
                let stored = self.store.list_templates().await?;
                stored
                    .into_iter()
                    .find(|t| t.default_for.contains(&kind))
                    .or_else(|| release::builtin_templates().into_iter().find(|t| t.default_for.contains(&kind)))
                    .or_else(|| release::builtin_templates().into_iter().next())
                    .ok_or_else(|| ReleaseError::NotFound { kind: "template", key: "default".into() })
            }
        }
    }
}

fn pause_running(plan: Option<&PlanRecord>, now: i64) -> Option<(Plan, PlanState)> {
    let plan = plan.filter(|p| p.state.status == Status::Running)?;
    let state = release::apply(&plan.plan.stages, &plan.state, Command::Pause, now).ok()?;
    Some((plan.plan.clone(), state))
}

fn command_action(command: Command) -> &'static str {
    match command {
        Command::Advance => "plan.advance",
        Command::Pause => "plan.pause",
        Command::Resume => "plan.resume",
        Command::Rollback { to_zero: false } => "plan.rollback",
        Command::Rollback { to_zero: true } => "plan.rollback_to_zero",
    }
}

/// The write for a plan entering `state`: the flag is configured for the new stage, except
/// that pausing leaves the exposure alone. Resuming re-applies the stage (after a dial-down the
/// exposure goes back up to it); rolling back to zero exposes nobody.
fn step_for(
    record: &FlagRecord,
    plan: &PlanRecord,
    environment: &str,
    state: PlanState,
    action: &'static str,
) -> Result<Step, ReleaseError> {
    let config = match (state.status, plan.plan.stages.get(state.stage)) {
        (Status::Paused, _) if action == "plan.pause" => None,
        (Status::RolledBack, _) => {
            let cfg = record.flag.environments.get(environment).cloned().unwrap_or_default();
            let zero = release::Stage { segments: Vec::new(), weight: 0, min_dwell_ms: 0 };
            Some(EnvironmentConfig { exposure: release::stage_exposure(&zero, cfg.exposure.as_ref()), ..cfg })
        }
        // A killed flag stays off through plan commands: `restore` is what turns it back on.
        (_, Some(stage)) => release::configure_stage(&record.flag, environment, stage).map(|cfg| EnvironmentConfig {
            enabled: record.flag.environments.get(environment).is_some_and(|c| c.enabled),
            ..cfg
        }),
        (_, None) => None,
    };
    let restore = if action == "plan.resume" { RestoreWrite::Clear } else { RestoreWrite::Keep };
    Ok(Step { action, config, plan: Some((plan.plan.clone(), state)), restore })
}

fn message(
    action: &str,
    flag: &str,
    environment: &str,
    meta: &ChangeMeta,
    before: u32,
    after: u32,
    plan: Option<&PlanRecord>,
) -> String {
    let what = match action {
        "release.kill" => "killed".to_owned(),
        "release.dial_down" => format!("dialed down to {}", release::percent_text(after)),
        "release.restore" => format!("restored to {}", release::percent_text(after)),
        "plan.start" => "release plan started".to_owned(),
        "plan.advance" => "advanced".to_owned(),
        "plan.pause" => "plan paused".to_owned(),
        "plan.resume" => "plan resumed".to_owned(),
        "plan.rollback" => "rolled back one stage".to_owned(),
        "plan.rollback_to_zero" => "rolled back to 0%".to_owned(),
        other => other.to_owned(),
    };
    let stage = plan
        .and_then(|p| p.plan.stages.get(p.state.stage).map(|s| (p, s)))
        .map(|(p, s)| {
            format!(
                "; plan stage {}/{} ({}), {}",
                p.state.stage + 1,
                p.plan.stages.len(),
                stage_label(s),
                p.state.status.as_str()
            )
        })
        .unwrap_or_default();
    let reason = meta.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    format!(
        "{flag} in {environment} {what} by {} (exposure {} → {}){stage}{reason}",
        meta.actor,
        release::percent_text(before),
        release::percent_text(after)
    )
}
