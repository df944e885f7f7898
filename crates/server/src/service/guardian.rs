//! The guard loop: each pass reads every guarded window from the store, asks the pure
//! [`dimmer_domain::guard::assess`] for a verdict, applies it through the release service (dial-down,
//! rollback, pause or alert only), then lets healthy plans progress. A second, slower loop rolls
//! the outcome metrics up.
//!
//! Several replicas may run this loop at once: a verdict and the action it causes are written in
//! one transaction under a key naming the window ([`Releases::act_on_verdict`]), so exactly one
//! replica acts, and an action that fails leaves no verdict behind: the next pass retries it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dimmer_engine::model::EnvironmentConfig;
use dimmer_engine::model::{FULL_WEIGHT, OFF, ON};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::service::metrics::Metrics;
use crate::service::releases::{ReleaseError, Releases, VerdictApplied};
use crate::service::webhooks::{Event, Notifier};
use dimmer_domain::Clock;
use dimmer_domain::guard::{self, Action, Assessment, FindingStatus, Guard, Verdict};
use dimmer_domain::outcomes::{BUCKET_MS, Retention, bucket_of, totals};
use dimmer_domain::release::{Health, Status};
use dimmer_store::{ChangeMeta, FlagRecord, GuardEvent, PlanRecord, StandingGuards, Store};

/// The guard loop's state: what it reads from and acts through.
#[derive(Debug)]
pub struct Guardian {
    store: Arc<dyn Store>,
    releases: Arc<Releases>,
    notifier: Arc<Notifier>,
    metrics: Arc<Metrics>,
    /// Where `promql:` guards are queried; `None`: they report `no_data`.
    prometheus: Option<crate::service::prometheus::PromClient>,
}

/// The period a guard judges (a plan's current stage, or a standing guard's rolling window),
/// and the key its events are recorded under.
#[derive(Debug, Clone)]
pub struct Period {
    /// The window's start, Unix milliseconds.
    pub since_ms: i64,
    /// Names the window in event keys: a verdict acts once per window.
    pub key: String,
    /// For people: "stage 2 of 6" or "standing guards".
    pub label: String,
}

/// What a regression verdict records: the audit entry's `after` and the alert's details.
#[derive(Debug, Serialize)]
struct RegressionDetails<'a> {
    guards: &'a [String],
    action: &'static str,
    window: &'a str,
    since_ms: i64,
    findings: &'a [&'a guard::Finding],
}

/// What a sample-ratio alert records.
#[derive(Debug, Serialize)]
struct SampleRatioDetails<'a> {
    window: &'a str,
    sample_ratio: &'a guard::SampleRatio,
}

/// What a no-data alert records.
#[derive(Debug, Serialize)]
struct NoDataDetails<'a> {
    window: &'a str,
    guards: &'a [String],
}

/// The details of a guard event as the audit log stores them.
fn details(details: &impl Serialize) -> Value {
    // Plain data of strings and numbers (finite floats): serializing cannot fail.
    serde_json::to_value(details).unwrap_or(Value::Null)
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Windows judged.
    pub judged: usize,
    /// Actions applied (alerts included).
    pub acted: usize,
    /// Plans that advanced.
    pub advanced: usize,
}

impl Guardian {
    /// The loop over `store`, acting through `releases`.
    pub fn new(store: Arc<dyn Store>, releases: Arc<Releases>, notifier: Arc<Notifier>, metrics: Arc<Metrics>) -> Self {
        Self { store, releases, notifier, metrics, prometheus: None }
    }

    /// Queries `promql:` guards against the Prometheus-compatible server at `url`.
    pub fn with_prometheus(mut self, url: Option<&str>) -> Self {
        self.prometheus = url.map(crate::service::prometheus::PromClient::new);
        self
    }

    fn now(&self) -> i64 {
        self.releases.clock().now_ms()
    }

    /// The window of a running plan's current stage.
    pub fn plan_period(plan: &PlanRecord) -> Period {
        Period {
            // The first bucket that lies wholly inside the stage: the one before mixes in the
            // previous stage's exposure.
            since_ms: bucket_of(plan.state.entered_at_ms + BUCKET_MS - 1, BUCKET_MS),
            key: format!("plan:{}:{}", plan.state.entered_at_ms, plan.state.stage),
            label: format!("stage {} of {}", plan.state.stage + 1, plan.plan.stages.len()),
        }
    }

    /// The window of standing guards: a standing guard judges the flag as it is now, so any
    /// change to the flag or to the guards starts a new window.
    pub fn standing_period(record: &FlagRecord, standing: &StandingGuards) -> Period {
        let since = record.updated_at.max(standing.updated_at_ms);
        Period {
            since_ms: bucket_of(since + BUCKET_MS - 1, BUCKET_MS),
            key: format!("standing:{}:{}", record.version, standing.updated_at_ms),
            label: "standing guards".into(),
        }
    }

    /// Judges `guards` on a flag in an environment over `period`.
    pub async fn assess(
        &self,
        record: &FlagRecord,
        environment: &str,
        guards: &[Guard],
        period: &Period,
    ) -> Result<Assessment, ReleaseError> {
        let now = self.now();
        let rows = self.store.metric_rows(environment, &record.key, period.since_ms, now + BUCKET_MS).await?;
        let variants = totals(&rows, period.since_ms, now + BUCKET_MS);
        let cfg = record.flag.environments.get(environment);
        let control = cfg.and_then(|c| c.off_variant.clone()).unwrap_or_else(|| OFF.to_owned());
        let queries = self.run_queries(record, environment, guards, now - period.since_ms).await;
        let window = guard::Window {
            variants: &variants,
            control: &control,
            age_ms: now - period.since_ms,
            expected_treatment_share: cfg.and_then(|c| expected_treatment_share(c, &control)),
            queries: &queries,
        };
        Ok(guard::assess(&window, guards))
    }

    /// The `promql:` guards' queries, for every variant of the flag.
    async fn run_queries(
        &self,
        record: &FlagRecord,
        environment: &str,
        guards: &[Guard],
        window_ms: i64,
    ) -> guard::QueryResults {
        let mut out = guard::QueryResults::new();
        for g in guards {
            let Ok(guard::Metric::Query(template)) = g.parsed_metric() else { continue };
            for variant in record.flag.variants.keys() {
                let query = guard::render_query(&template, &record.key, variant, environment, window_ms);
                let result = match &self.prometheus {
                    Some(client) => client.query(&query).await,
                    None => Err("no Prometheus is configured (prometheus_url)".into()),
                };
                out.insert((g.name.clone(), variant.clone()), result);
            }
        }
        out
    }

    /// One pass: judge every running guarded plan and every standing guard, act on the verdicts,
    /// then advance the plans whose guards allow it.
    pub async fn pass(&self) -> Result<PassReport, ReleaseError> {
        let mut report = PassReport::default();
        // Keyed by the window (flag, environment, when the stage began): a plan that moved or
        // started after it was judged has no entry, and waits for the next pass.
        let mut health: HashMap<(String, String, i64), Health> = HashMap::new();
        for plan in self.store.list_running_plans().await? {
            if plan.state.status != Status::Running || plan.plan.guards.is_empty() {
                continue;
            }
            // One plan that cannot be judged (its flag or its metrics unreadable) is reported
            // and left for the next pass; the others are judged now.
            let judged = async {
                let Some(record) = self.store.get_flag(&plan.flag).await?.filter(|r| !r.archived) else {
                    return Ok(None);
                };
                let period = Self::plan_period(&plan);
                let assessment = self.assess(&record, &plan.environment, &plan.plan.guards, &period).await?;
                Ok::<_, ReleaseError>(Some((record, period, assessment)))
            };
            let (record, period, assessment) = match judged.await {
                Ok(Some(judged)) => judged,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(flag = %plan.flag, environment = %plan.environment, error = %e, "guard pass skipped a plan");
                    continue;
                }
            };
            report.judged += 1;
            health.insert(
                (plan.flag.clone(), plan.environment.clone(), plan.state.entered_at_ms),
                health_of(&assessment.verdict),
            );
            report.acted += self.act(&record, &plan.environment, &plan.plan.guards, &period, &assessment).await;
        }
        for standing in self.store.list_standing_guards().await? {
            let Some(record) = self.store.get_flag(&standing.flag).await?.filter(|r| !r.archived) else { continue };
            if !record.flag.environments.get(&standing.environment).is_some_and(|c| c.enabled) {
                continue;
            }
            let period = Self::standing_period(&record, &standing);
            let assessment = self.assess(&record, &standing.environment, &standing.guards, &period).await?;
            report.judged += 1;
            report.acted += self.act(&record, &standing.environment, &standing.guards, &period, &assessment).await;
        }
        let health_of_plan = move |p: &PlanRecord| {
            if p.plan.guards.is_empty() {
                return Health::Healthy;
            }
            let key = (p.flag.clone(), p.environment.clone(), p.state.entered_at_ms);
            health.get(&key).copied().unwrap_or(Health::Unknown)
        };
        report.advanced = self.releases.tick(&health_of_plan).await?;
        Ok(report)
    }

    /// Applies an assessment: a regression's action, and alerts for a sample-ratio mismatch
    /// and for guards short of data past their deadline. Each once per window. Returns how many
    /// events were acted on here.
    async fn act(
        &self,
        record: &FlagRecord,
        environment: &str,
        guards: &[Guard],
        period: &Period,
        assessment: &Assessment,
    ) -> usize {
        let mut acted = 0;
        if let Verdict::Regression { action, guards: fired } = &assessment.verdict {
            let findings: Vec<&guard::Finding> =
                assessment.findings.iter().filter(|f| f.status == FindingStatus::Regression).collect();
            let summary = findings.iter().map(|f| describe(f, guards)).collect::<Vec<_>>().join("; ");
            let reason = format!("guard {} saw a regression ({}): {summary}", fired.join(", "), period.label);
            let details = details(&RegressionDetails {
                guards: fired,
                action: action.as_str(),
                window: &period.label,
                since_ms: period.since_ms,
                findings: &findings,
            });
            let verdict = GuardEvent {
                key: format!("{}:regression", period.key),
                action: "guard.regression".into(),
                details: details.clone(),
            };
            let meta = ChangeMeta { actor: "guard".into(), reason: Some(reason.clone()) };
            match self.releases.act_on_verdict(&record.key, environment, *action, &verdict, &meta).await {
                Ok(Some(applied)) => {
                    acted += 1;
                    self.metrics.guard_event("regression", action.as_str());
                    let exposure_after = match &applied {
                        VerdictApplied::Acted(outcome) => Some(outcome.exposure_percent),
                        VerdictApplied::Recorded => None,
                        VerdictApplied::NotApplicable { why } => {
                            tracing::warn!(flag = %record.key, environment, action = action.as_str(), why, "guard action does not apply; verdict recorded");
                            self.metrics.guard_event("action_not_applicable", action.as_str());
                            None
                        }
                    };
                    self.alert(record, environment, "guard.regression", &reason, details, exposure_after);
                }
                // Recorded before, by an earlier pass or another replica: it acted.
                Ok(None) => {}
                Err(e) => {
                    // Neither verdict nor action was written: the next pass judges again and retries.
                    tracing::error!(flag = %record.key, environment, action = action.as_str(), error = %e, "guard action failed; retrying next pass");
                    self.metrics.guard_event("action_failed", action.as_str());
                }
            }
        }
        if let Some(srm) = assessment.sample_ratio.as_ref().filter(|s| s.mismatch) {
            let reason = format!(
                "sample-ratio mismatch on {} in {environment} ({}): {:.2}% of evaluations on treatment, {:.2}% expected (p = {:.2e}); the comparison is not trustworthy",
                record.key,
                period.label,
                srm.observed * 100.0,
                srm.expected * 100.0,
                srm.p_value
            );
            let details = details(&SampleRatioDetails { window: &period.label, sample_ratio: srm });
            if self
                .once(record, environment, &format!("{}:srm", period.key), "guard.sample_ratio", &details, &reason)
                .await
            {
                acted += 1;
                self.metrics.guard_event("sample_ratio", "alert");
                self.alert(record, environment, "guard.sample_ratio", &reason, details, None);
            }
        }
        if !assessment.overdue.is_empty() {
            let reason = format!(
                "not enough data for guard {} on {} in {environment} ({}) past its deadline: is the SDK reporting outcomes?",
                assessment.overdue.join(", "),
                record.key,
                period.label
            );
            let details = details(&NoDataDetails { window: &period.label, guards: &assessment.overdue });
            if self
                .once(record, environment, &format!("{}:no-data", period.key), "guard.no_data", &details, &reason)
                .await
            {
                acted += 1;
                self.metrics.guard_event("no_data", "alert");
                self.alert(record, environment, "guard.no_data", &reason, details, None);
            }
        }
        acted
    }

    /// Records the event unless another pass (or replica) already did; true when it is ours.
    async fn once(
        &self,
        record: &FlagRecord,
        environment: &str,
        key: &str,
        action: &str,
        details: &Value,
        reason: &str,
    ) -> bool {
        let meta = ChangeMeta { actor: "guard".into(), reason: Some(reason.to_owned()) };
        match self.store.guard_event_once(&record.key, environment, key, action, details, &meta).await {
            Ok(ours) => ours,
            Err(e) => {
                tracing::warn!(flag = %record.key, environment, error = %e, "guard event not recorded");
                false
            }
        }
    }

    fn alert(
        &self,
        record: &FlagRecord,
        environment: &str,
        event: &str,
        message: &str,
        details: Value,
        exposure_after: Option<f64>,
    ) {
        let cfg = record.flag.environments.get(environment);
        let exposure = dimmer_domain::release::weight_percent(dimmer_domain::release::exposure_weight(cfg));
        self.notifier.notify(Event {
            event: event.to_owned(),
            flag: record.key.clone(),
            environment: environment.to_owned(),
            actor: "guard".into(),
            reason: Some(message.to_owned()),
            at: self.now(),
            exposure_before: exposure,
            exposure_after: exposure_after.unwrap_or(exposure),
            plan: None,
            message: format!(":rotating_light: {message}"),
            details: Some(details),
        });
    }

    /// The loop: a [`Self::pass`] every `every` until shutdown.
    pub async fn run_loop(self: Arc<Self>, every: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    if let Err(e) = self.pass().await {
                        tracing::warn!(error = %e, "guard and plan pass failed");
                    }
                }
                _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
            }
        }
    }

    /// The rollup loop: merges, coarsens and expires outcome rows every `every`.
    pub async fn run_rollup(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        retention: Retention,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    if let Err(e) = store.roll_up_metrics(clock.now_ms(), &retention).await {
                        tracing::warn!(error = %e, "metrics rollup failed");
                    }
                }
                _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
            }
        }
    }
}

/// The plan's health from a verdict. An alert-only regression alerts and lets the plan go on;
/// any other regression holds it (its action has been applied besides).
pub fn health_of(verdict: &Verdict) -> Health {
    match verdict {
        Verdict::Healthy | Verdict::Regression { action: Action::Alert, .. } => Health::Healthy,
        Verdict::Waiting => Health::Unknown,
        Verdict::Regression { .. } => Health::Unhealthy,
    }
}

/// The share of evaluations expected on treatment variants, when the configuration makes it
/// predictable: no targets, rules or prerequisites, a default serving one treatment variant,
/// and an exposure without canary segments. Otherwise who gets what depends on the users.
pub fn expected_treatment_share(cfg: &EnvironmentConfig, control: &str) -> Option<f64> {
    if !cfg.enabled || !cfg.targets.is_empty() || !cfg.rules.is_empty() || !cfg.prerequisites.is_empty() {
        return None;
    }
    let variant = match &cfg.default {
        Some(serve) if serve.rollout.is_none() => serve.variant.clone()?,
        None => ON.to_owned(),
        _ => return None,
    };
    if variant == control {
        return None;
    }
    let exposure = cfg.exposure.as_ref()?;
    if !exposure.segments.is_empty() {
        return None;
    }
    let total = exposure.total.unwrap_or(FULL_WEIGHT);
    Some(f64::from(exposure.weight.min(total)) / f64::from(total.max(1)))
}

/// One finding in words: "error_rate on on: 2.10% vs control 1.00% (limit 1.50%, 12000 vs
/// 228000 outcomes, log LR 9.1 >= 4.6)".
fn describe(f: &guard::Finding, guards: &[Guard]) -> String {
    let metric = guards.iter().find(|g| g.name == f.guard).map_or("", |g| g.metric.as_str());
    let value = |v: Option<f64>| match v {
        None => "n/a".to_owned(),
        Some(v) if metric == "error_rate" || metric.starts_with("event:") => format!("{:.2}%", v * 100.0),
        Some(v) if metric.starts_with("event_mean:") || metric.starts_with("promql:") => format!("{v:.4}"),
        Some(v) => format!("{v:.1} ms"),
    };
    format!(
        "{} on {}: {} vs control {} (limit {}, {} vs {} samples, log LR {:.1} >= {:.1})",
        f.guard,
        f.variant,
        value(f.treatment),
        value(f.control),
        value(f.limit),
        f.treatment_n,
        f.control_n,
        f.log_likelihood_ratio,
        f.log_threshold
    )
}
