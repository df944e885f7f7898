//! Guards: what a release watches, and the pure decision that turns a window of outcome
//! metrics into a verdict. The server's guard loop applies verdicts; nothing here reads a
//! clock or the store.
//!
//! Each guard compares the users on a treatment variant with the users on the control variant
//! over the same period (the current stage), or holds the treatment to an absolute threshold.
//! The test is a mixture sequential probability ratio test (mSPRT, Johari, Pekelis and Walsh,
//! "Always valid inference", 2017) on a normal approximation: its false-alarm rate stays below
//! `alpha` however often it looks, so the loop can look every second. A sample-ratio check on
//! the evaluations flags a broken split before anyone trusts the comparison.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::outcomes::Aggregate;

/// The false-alarm rate a guard allows by default, per stage.
pub const DEFAULT_ALPHA: f64 = 0.01;
/// Outcomes each side needs by default before a guard may judge.
pub const DEFAULT_MIN_SAMPLE: u64 = 200;
/// The p-value under which a sample-ratio mismatch is reported.
pub const SRM_P_VALUE: f64 = 0.001;
/// Evaluations needed before the sample ratio is checked.
pub const SRM_MIN_EVALUATIONS: u64 = 1000;

/// A guard, as configured on a plan or standing on a flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// A name for people and for audit entries, unique within its plan or flag.
    pub name: String,
    /// `error_rate`, `latency_p50` .. `latency_p99` (any `latency_pNN`), `event:NAME` (a
    /// custom event per evaluation, where fewer is worse) or `event_mean:NAME` (the mean value
    /// a custom event carries, such as a rating, where lower is worse).
    pub metric: String,
    /// `relative` (treatment against control, `max` is the tolerated relative worsening, 0.5
    /// = 50% worse), `absolute` (treatment minus control, in the metric's unit) or `threshold`
    /// (the treatment alone against `max`, in the metric's unit).
    pub compare: Compare,
    /// The tolerated worsening or the threshold.
    pub max: f64,
    /// Outcomes (or evaluations, for events) each side needs before the guard judges.
    #[serde(default = "default_min_sample")]
    pub min_sample: u64,
    /// What a regression does.
    #[serde(default)]
    pub action: Action,
    /// The false-alarm rate allowed per stage.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Alert when the guard still lacks data this long after the stage began (e.g. `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_deadline: Option<String>,
}

fn default_min_sample() -> u64 {
    DEFAULT_MIN_SAMPLE
}

fn default_alpha() -> f64 {
    DEFAULT_ALPHA
}

/// How a guard compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// Treatment against control, as a relative worsening.
    Relative,
    /// Treatment against control, as a difference in the metric's unit.
    Absolute,
    /// The treatment alone against a fixed limit.
    Threshold,
}

/// What a guard's regression does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Tell people; change nothing.
    Alert,
    /// Pause the plan.
    Pause,
    /// Go back one stage and pause there.
    Rollback,
    /// Dial exposure down to 0% (the control variant for everyone but targets).
    #[default]
    DialDown,
}

impl Action {
    /// Its name in audit entries and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Pause => "pause",
            Action::Rollback => "rollback",
            Action::DialDown => "dial_down",
        }
    }
}

/// A guard's metric, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// Errors per outcome.
    ErrorRate,
    /// A latency quantile, `0 < q < 1`.
    Latency(f64),
    /// A named event per evaluation; fewer is worse.
    Event(String),
    /// A named event's mean value; lower is worse.
    EventMean(String),
    /// A PromQL query template (`promql:…`), run against Prometheus for each variant; larger is
    /// worse.
    Query(String),
}

/// The longest PromQL template a guard may hold, bytes.
pub const MAX_QUERY_LEN: usize = 2048;

/// Prometheus query results per (guard name, variant): the value, or why there is none (the
/// query failed, returned nothing, or returned NaN). Filled by the caller, which owns the I/O.
pub type QueryResults = BTreeMap<(String, String), Result<f64, String>>;

/// A guard's PromQL template with its placeholders filled: `{{flag}}`, `{{variant}}`,
/// `{{environment}}` (as PromQL string contents: quotes and backslashes escaped) and
/// `{{window}}` (the window's age as a PromQL duration in seconds, at least `1s`).
pub fn render_query(template: &str, flag: &str, variant: &str, environment: &str, window_ms: i64) -> String {
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    template
        .replace("{{flag}}", &escape(flag))
        .replace("{{variant}}", &escape(variant))
        .replace("{{environment}}", &escape(environment))
        .replace("{{window}}", &format!("{}s", (window_ms / 1000).max(1)))
}

/// Why a guard definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("guards[{index}].{field}: {reason}")]
pub struct GuardError {
    /// The guard's position.
    pub index: usize,
    /// The field.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

impl Guard {
    /// The metric, parsed.
    pub fn parsed_metric(&self) -> Result<Metric, String> {
        if self.metric == "error_rate" {
            return Ok(Metric::ErrorRate);
        }
        if let Some(q) = self.metric.strip_prefix("latency_p") {
            return match q.parse::<u32>() {
                Ok(n) if (1..=99).contains(&n) && q.len() <= 2 => Ok(Metric::Latency(f64::from(n) / 100.0)),
                _ => match q {
                    "999" => Ok(Metric::Latency(0.999)),
                    _ => Err(format!(
                        "\"{}\": a latency quantile is latency_p1 .. latency_p99 or latency_p999",
                        self.metric
                    )),
                },
            };
        }
        if let Some(name) = self.metric.strip_prefix("event:")
            && !name.is_empty()
        {
            return Ok(Metric::Event(name.to_owned()));
        }
        if let Some(name) = self.metric.strip_prefix("event_mean:")
            && !name.is_empty()
        {
            return Ok(Metric::EventMean(name.to_owned()));
        }
        if let Some(template) = self.metric.strip_prefix("promql:") {
            if template.trim().is_empty() || template.len() > MAX_QUERY_LEN {
                return Err(format!("a PromQL template has 1 to {MAX_QUERY_LEN} bytes"));
            }
            if !template.contains("{{variant}}") {
                return Err("a PromQL template must select the variant with {{variant}}".into());
            }
            return Ok(Metric::Query(template.to_owned()));
        }
        let shown: String = self.metric.chars().take(80).collect();
        Err(format!("\"{shown}\" is not error_rate, latency_pNN, event:NAME, event_mean:NAME or promql:QUERY"))
    }
}

/// Checks a list of guards; the first problem is named by index and field.
pub fn validate(guards: &[Guard]) -> Result<(), GuardError> {
    let fail = |index, field, reason: String| Err(GuardError { index, field, reason });
    for (index, g) in guards.iter().enumerate() {
        if g.name.is_empty() || g.name.len() > 64 {
            return fail(index, "name", "must have 1 to 64 characters".into());
        }
        if guards[..index].iter().any(|o| o.name == g.name) {
            return fail(index, "name", format!("\"{}\" is used by an earlier guard", g.name));
        }
        let metric = g.parsed_metric().map_err(|reason| GuardError { index, field: "metric", reason })?;
        if !g.max.is_finite() || g.max < 0.0 {
            return fail(index, "max", "must be a finite number >= 0".into());
        }
        if metric == Metric::ErrorRate && g.compare != Compare::Relative && g.max > 1.0 {
            return fail(index, "max", "an error rate is between 0 and 1".into());
        }
        if !(g.alpha > 0.0 && g.alpha < 0.5) {
            return fail(index, "alpha", "must be between 0 and 0.5".into());
        }
        if g.min_sample == 0 {
            return fail(index, "min_sample", "must be at least 1".into());
        }
        if let Some(d) = &g.data_deadline {
            crate::duration::parse(d).ok_or_else(|| GuardError {
                index,
                field: "data_deadline",
                reason: format!("\"{}\" is not a duration such as 90s, 30m, 2h or 1d", d.trim()),
            })?;
        }
    }
    Ok(())
}

/// What the guards see: the per-variant totals since the window began, and which variant is
/// the control.
#[derive(Debug, Clone)]
pub struct Window<'a> {
    /// Per variant.
    pub variants: &'a BTreeMap<String, Aggregate>,
    /// The control variant (the flag's off variant in the environment).
    pub control: &'a str,
    /// How long the window has run, milliseconds.
    pub age_ms: i64,
    /// The share of evaluations expected on treatment variants (from the exposure), when the
    /// configuration makes it predictable.
    pub expected_treatment_share: Option<f64>,
    /// The results of `promql:` guards' queries, per guard and variant.
    pub queries: &'a QueryResults,
}

/// One guard's finding for one treatment variant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Finding {
    /// The guard.
    pub guard: String,
    /// The treatment variant judged.
    pub variant: String,
    /// `pass`, `regression`, `insufficient` or `no_data` (a Prometheus query failed or found
    /// nothing).
    pub status: FindingStatus,
    /// The treatment's value of the metric.
    pub treatment: Option<f64>,
    /// The control's value of the metric (absent for thresholds).
    pub control: Option<f64>,
    /// The worst acceptable treatment value.
    pub limit: Option<f64>,
    /// Samples on the treatment side.
    pub treatment_n: u64,
    /// Samples on the control side.
    pub control_n: u64,
    /// The test statistic: log of the mSPRT likelihood ratio (0 when not computed).
    pub log_likelihood_ratio: f64,
    /// The value it must reach: `ln(1/alpha)`.
    pub log_threshold: f64,
}

impl Finding {
    /// A finding with nothing to judge yet.
    fn insufficient(guard: &Guard, variant: &str) -> Self {
        Finding {
            guard: guard.name.clone(),
            variant: variant.to_owned(),
            status: FindingStatus::Insufficient,
            treatment: None,
            control: None,
            limit: None,
            treatment_n: 0,
            control_n: 0,
            log_likelihood_ratio: 0.0,
            log_threshold: (1.0 / guard.alpha).ln(),
        }
    }
}

/// A finding's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FindingStatus {
    /// Enough data and no evidence of a regression.
    Pass,
    /// Evidence of a regression beyond the tolerance.
    Regression,
    /// Not enough data yet.
    Insufficient,
    /// A Prometheus query failed or returned nothing: never a regression, alerted once per
    /// window.
    NoData,
}

/// A sample-ratio mismatch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SampleRatio {
    /// The expected share of evaluations on treatment variants.
    pub expected: f64,
    /// The observed share.
    pub observed: f64,
    /// Evaluations counted.
    pub evaluations: u64,
    /// The anytime-valid p-value (1 / the sequential test's Bayes factor).
    pub p_value: f64,
    /// Whether it is below [`SRM_P_VALUE`].
    pub mismatch: bool,
}

/// What the guards say about a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Assessment {
    /// One finding per guard and treatment variant.
    pub findings: Vec<Finding>,
    /// The sample-ratio check, when it could be made.
    pub sample_ratio: Option<SampleRatio>,
    /// Guards still short of data past their deadline.
    pub overdue: Vec<String>,
    /// The verdict.
    pub verdict: Verdict,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Every guard has enough data and none sees a regression.
    Healthy,
    /// Some guard lacks data; none sees a regression.
    Waiting,
    /// A guard sees a regression: apply `action` (the most severe of those that fired).
    Regression {
        /// What to do.
        action: Action,
        /// The guards that fired.
        guards: Vec<String>,
    },
}

/// Judges a window. Pure; the same window always gives the same assessment.
pub fn assess(window: &Window<'_>, guards: &[Guard]) -> Assessment {
    let empty = Aggregate::default();
    let control = window.variants.get(window.control).unwrap_or(&empty);
    let treatments: Vec<(&String, &Aggregate)> =
        window.variants.iter().filter(|(name, _)| name.as_str() != window.control).collect();
    let mut findings = Vec::new();
    let mut overdue = Vec::new();
    for guard in guards {
        let Ok(metric) = guard.parsed_metric() else { continue };
        if let Metric::Query(_) = metric {
            let found = query_findings(guard, window);
            if found.iter().any(|f| f.status == FindingStatus::NoData) {
                overdue.push(guard.name.clone());
            }
            findings.extend(found);
            continue;
        }
        let mut guard_findings: Vec<Finding> =
            treatments.iter().map(|(variant, treatment)| judge(guard, &metric, variant, treatment, control)).collect();
        if guard_findings.is_empty() {
            // Nobody on a treatment variant yet: the guard cannot judge.
            guard_findings.push(Finding::insufficient(guard, ""));
        }
        let deadline = guard.data_deadline.as_deref().and_then(crate::duration::parse);
        if deadline.is_some_and(|d| window.age_ms >= d)
            && guard_findings.iter().any(|f| f.status == FindingStatus::Insufficient)
        {
            overdue.push(guard.name.clone());
        }
        findings.extend(guard_findings);
    }
    let sample_ratio = window.expected_treatment_share.and_then(|expected| {
        let t: u64 = treatments.iter().map(|(_, a)| a.evaluations).sum();
        sample_ratio(t, control.evaluations, expected)
    });
    let fired: Vec<&Finding> = findings.iter().filter(|f| f.status == FindingStatus::Regression).collect();
    let verdict = if let Some(action) =
        fired.iter().filter_map(|f| guards.iter().find(|g| g.name == f.guard).map(|g| g.action)).max()
    {
        let mut names: Vec<String> = fired.iter().map(|f| f.guard.clone()).collect();
        names.dedup();
        Verdict::Regression { action, guards: names }
    } else if findings.iter().any(|f| matches!(f.status, FindingStatus::Insufficient | FindingStatus::NoData)) {
        Verdict::Waiting
    } else {
        Verdict::Healthy
    };
    Assessment { findings, sample_ratio, overdue, verdict }
}

/// A `promql:` guard: each treatment variant's value against the control's (or a threshold);
/// larger is worse. A query result has no sample size, so there is no test here: the guard
/// compares the values Prometheus returns, and what smooths noise is the query itself (a rate
/// over a window). A failed or empty query is `no_data`, never a regression.
fn query_findings(guard: &Guard, window: &Window<'_>) -> Vec<Finding> {
    let mine = |variant: &str| window.queries.get(&(guard.name.clone(), variant.to_owned()));
    let treatments: Vec<&String> =
        window.queries.keys().filter(|(g, v)| *g == guard.name && v != window.control).map(|(_, v)| v).collect();
    if treatments.is_empty() {
        let mut f = Finding::insufficient(guard, "");
        f.status = FindingStatus::NoData;
        return vec![f];
    }
    treatments
        .into_iter()
        .map(|variant| {
            let mut f = Finding::insufficient(guard, variant);
            f.log_threshold = 0.0;
            let treatment = mine(variant).and_then(|r| r.as_ref().ok()).copied();
            let control = mine(window.control).and_then(|r| r.as_ref().ok()).copied();
            f.treatment = treatment;
            f.control = control;
            let limit = match (guard.compare, control) {
                (Compare::Threshold, _) => Some(guard.max),
                (Compare::Relative, Some(c)) => Some(c + guard.max * c.abs()),
                (Compare::Absolute, Some(c)) => Some(c + guard.max),
                _ => None,
            };
            f.limit = limit;
            f.status = match (treatment, limit) {
                (Some(t), Some(l)) if t > l => FindingStatus::Regression,
                (Some(_), Some(_)) => FindingStatus::Pass,
                _ => FindingStatus::NoData,
            };
            f
        })
        .collect()
}

/// One guard on one treatment variant.
fn judge(guard: &Guard, metric: &Metric, variant: &str, treatment: &Aggregate, control: &Aggregate) -> Finding {
    let mut finding = Finding::insufficient(guard, variant);
    let log_threshold = finding.log_threshold;
    let needs_control = guard.compare != Compare::Threshold;
    let test = match metric {
        Metric::ErrorRate => {
            rate_test(guard, treatment.errors, treatment.outcomes(), control.errors, control.outcomes(), 1.0)
        }
        Metric::Event(name) => {
            let count = |a: &Aggregate| a.events.get(name).map_or(0, |e| e.count);
            // Fewer events is worse: flip the sign so that "larger is worse" holds throughout.
            rate_test(guard, count(treatment), treatment.evaluations, count(control), control.evaluations, -1.0)
        }
        Metric::Latency(q) => latency_test(guard, *q, treatment, control),
        Metric::EventMean(name) => mean_test(guard, treatment.events.get(name), control.events.get(name)),
        // Judged by `query_findings`, never here.
        Metric::Query(_) => TestResult::default(),
    };
    finding.treatment = test.treatment;
    finding.control = test.control;
    finding.limit = test.limit;
    finding.treatment_n = test.treatment_n;
    finding.control_n = test.control_n;
    let enough = test.treatment_n >= guard.min_sample && (!needs_control || test.control_n >= guard.min_sample);
    let Some(stat) = test.statistic.filter(|_| enough) else { return finding };
    finding.log_likelihood_ratio = stat.log_lr;
    finding.status =
        if stat.worse && stat.log_lr >= log_threshold { FindingStatus::Regression } else { FindingStatus::Pass };
    finding
}

/// The numbers behind a finding.
#[derive(Debug, Default)]
struct TestResult {
    treatment: Option<f64>,
    control: Option<f64>,
    limit: Option<f64>,
    treatment_n: u64,
    control_n: u64,
    statistic: Option<Statistic>,
}

#[derive(Debug)]
struct Statistic {
    log_lr: f64,
    /// The estimate is on the bad side of the tolerance.
    worse: bool,
}

/// The mSPRT for "the worsening `d` exceeds `margin`", where `d` is estimated as `estimate`
/// with variance `variance`, and the mixing distribution over the effect is N(0, tau²).
///
/// `log Λ = ½·ln(V/(V+τ²)) + τ²·(d̂ − m)² / (2·V·(V+τ²))`; it is a nonnegative martingale
/// under the null, so by Ville's inequality `P(sup Λ ≥ 1/α) ≤ α`.
pub fn msprt_log_lr(estimate: f64, margin: f64, variance: f64, tau2: f64) -> f64 {
    if variance <= 0.0 || tau2 <= 0.0 || variance.is_nan() || tau2.is_nan() || !estimate.is_finite() {
        return 0.0;
    }
    let delta = estimate - margin;
    0.5 * (variance / (variance + tau2)).ln() + tau2 * delta * delta / (2.0 * variance * (variance + tau2))
}

/// A rate (errors per outcome, events per evaluation); `sign` is 1 when larger is worse and
/// -1 when smaller is worse.
fn rate_test(guard: &Guard, t_hits: u64, t_n: u64, c_hits: u64, c_n: u64, sign: f64) -> TestResult {
    let mut out = TestResult { treatment_n: t_n, control_n: c_n, ..Default::default() };
    if t_n == 0 {
        return out;
    }
    let pt = t_hits as f64 / t_n as f64;
    out.treatment = Some(pt);
    if guard.compare == Compare::Threshold {
        let limit = guard.max;
        out.limit = Some(limit);
        // The variance under the null, at the limit itself, so that zero errors still tests.
        let p0 = limit.clamp(1e-4, 1.0 - 1e-4);
        let variance = variance_of_rate(p0, sign) / t_n as f64;
        let d = sign * (pt - limit);
        out.statistic = Some(Statistic { log_lr: msprt_log_lr(d, 0.0, variance, tau2_for(limit)), worse: d > 0.0 });
        return out;
    }
    if c_n == 0 {
        return out;
    }
    let pc = c_hits as f64 / c_n as f64;
    out.control = Some(pc);
    let margin = match guard.compare {
        Compare::Relative => guard.max * pc,
        _ => guard.max,
    };
    out.limit = Some(pc + sign * margin);
    // Pooled under the null, floored so that two clean arms still have a finite variance.
    let pooled = ((t_hits + c_hits) as f64 / (t_n + c_n) as f64).max(0.5 / (t_n + c_n) as f64);
    let variance = variance_of_rate(pooled, sign) * (1.0 / t_n as f64 + 1.0 / c_n as f64);
    let d = sign * (pt - pc);
    out.statistic =
        Some(Statistic { log_lr: msprt_log_lr(d, margin, variance, tau2_for(pc.max(margin))), worse: d > margin });
    out
}

/// The variance of one observation: Bernoulli for error rates, Poisson for event counts.
fn variance_of_rate(p: f64, sign: f64) -> f64 {
    if sign > 0.0 { p * (1.0 - p).max(1e-9) } else { p.max(1e-9) }
}

/// The mixing variance: the effect sizes the test is most sensitive to are about the size of
/// the baseline itself (an error rate doubling, a conversion rate halving), and never smaller
/// than one point: below that, a clean control (no errors at all, common in real services) made
/// the test blind to a treatment failing a quarter of its requests.
fn tau2_for(scale: f64) -> f64 {
    let s = scale.abs().max(MIN_EFFECT_SCALE);
    s * s
}

/// The smallest effect scale the tests are tuned for: one percentage point.
const MIN_EFFECT_SCALE: f64 = 0.01;

/// A latency quantile: is the treatment's q-quantile above the limit? Equivalently, is more
/// than `1 - q` of the treatment's outcomes slower than the limit? That is a one-sample rate
/// test, with the limit from the control's own quantile (relative, absolute) or fixed.
fn latency_test(guard: &Guard, q: f64, treatment: &Aggregate, control: &Aggregate) -> TestResult {
    let t_n = treatment.latency.count();
    let c_n = control.latency.count();
    let mut out = TestResult {
        treatment: treatment.latency.quantile(q),
        control: control.latency.quantile(q),
        treatment_n: t_n,
        control_n: c_n,
        ..Default::default()
    };
    let limit = match (guard.compare, out.control) {
        (Compare::Threshold, _) => guard.max,
        (Compare::Relative, Some(c)) => c * (1.0 + guard.max),
        (Compare::Absolute, Some(c)) => c + guard.max,
        _ => return out,
    };
    out.limit = Some(limit);
    if t_n == 0 {
        return out;
    }
    let tail = 1.0 - q;
    let slow = treatment.latency.count_above(limit) as f64 / t_n as f64;
    let variance = tail * q / t_n as f64;
    let d = slow - tail;
    out.statistic = Some(Statistic { log_lr: msprt_log_lr(d, 0.0, variance, tau2_for(tail)), worse: d > 0.0 });
    out
}

/// A named event's mean value, lower is worse: a difference of means (Welch: each side's own
/// variance, from the sum of squares) against the tolerance, or the treatment's mean against a
/// floor (`threshold`). The normal approximation of the mean is what makes this valid, so it
/// wants tens of events per side at least (`min_sample` counts events); a side whose sum of
/// squares is unknown (batches from SDKs that do not send one) cannot be judged.
fn mean_test(
    guard: &Guard,
    treatment: Option<&dimmer_protocol::EventStat>,
    control: Option<&dimmer_protocol::EventStat>,
) -> TestResult {
    let stat = |s: Option<&dimmer_protocol::EventStat>| s.and_then(|s| Some((s.count, s.mean()?, s.variance())));
    let mut out = TestResult::default();
    let Some((t_n, t_mean, t_var)) = stat(treatment) else { return out };
    out.treatment_n = t_n;
    out.treatment = Some(t_mean);
    let Some(t_var) = t_var else { return out };
    if guard.compare == Compare::Threshold {
        let limit = guard.max;
        out.limit = Some(limit);
        // A floor under the variance: a side that always reports the same value still tests.
        let variance = t_var.max(mean_variance_floor(limit)) / t_n as f64;
        let d = limit - t_mean;
        let tau = (0.1 * limit.abs()).max(t_var.sqrt() * 0.1);
        out.statistic = Some(Statistic { log_lr: msprt_log_lr(d, 0.0, variance, tau2_for(tau)), worse: d > 0.0 });
        return out;
    }
    let Some((c_n, c_mean, c_var)) = stat(control) else { return out };
    out.control_n = c_n;
    out.control = Some(c_mean);
    let Some(c_var) = c_var else { return out };
    let margin = match guard.compare {
        Compare::Relative => guard.max * c_mean.abs(),
        _ => guard.max,
    };
    out.limit = Some(c_mean - margin);
    let floor = mean_variance_floor(c_mean);
    let variance = t_var.max(floor) / t_n as f64 + c_var.max(floor) / c_n as f64;
    let d = c_mean - t_mean;
    // The effects worth finding: the tolerance itself, or a tenth of the baseline or of its
    // spread, whichever is larger.
    let tau = margin.max(0.1 * c_mean.abs()).max(0.1 * c_var.sqrt());
    out.statistic = Some(Statistic { log_lr: msprt_log_lr(d, margin, variance, tau2_for(tau)), worse: d > margin });
    out
}

/// The smallest per-value variance a mean test assumes, relative to the scale of the values.
fn mean_variance_floor(scale: f64) -> f64 {
    (1e-3 * scale.abs()).max(1e-6).powi(2)
}

/// The sequential sample-ratio test: a beta-binomial mixture likelihood ratio of the observed
/// `treatment : control` evaluations against the expected share (the two-category case of
/// Lindon and Malek's Dirichlet-multinomial test, 2020). Like the guards' mSPRT it stays valid
/// however often it is checked, where a chi-squared test looked at every pass would cry wolf.
/// `p_value` is the anytime-valid `1 / Bayes factor`. `None` below [`SRM_MIN_EVALUATIONS`] or
/// for a degenerate expectation.
pub fn sample_ratio(treatment: u64, control: u64, expected: f64) -> Option<SampleRatio> {
    let n = treatment + control;
    if n < SRM_MIN_EVALUATIONS || !(expected > 0.0 && expected < 1.0) {
        return None;
    }
    // The mixing prior: a beta centred on the expected share, as concentrated as 100
    // observations, so that mismatches of a few points are what it looks for.
    let k = 100.0;
    let (a, b) = (k * expected, k * (1.0 - expected));
    let (t, c) = (treatment as f64, control as f64);
    let log_bf = ln_beta(a + t, b + c) - ln_beta(a, b) - t * expected.ln() - c * (1.0 - expected).ln();
    let p_value = (-log_bf).exp().min(1.0);
    Some(SampleRatio { expected, observed: t / n as f64, evaluations: n, p_value, mismatch: p_value < SRM_P_VALUE })
}

fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// The log-gamma function for `x > 0` (Lanczos, g = 7, n = 9: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the series in its accurate range.
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dimmer_protocol::LatencySketch;

    fn guard(metric: &str, compare: Compare, max: f64) -> Guard {
        Guard {
            name: metric.replace(':', "-"),
            metric: metric.into(),
            compare,
            max,
            min_sample: 100,
            action: Action::DialDown,
            alpha: 0.01,
            data_deadline: None,
        }
    }

    static NO_QUERIES: QueryResults = BTreeMap::new();

    #[test]
    fn prometheus_guards_compare_values_and_report_missing_data_without_acting() {
        let g = |compare, max| Guard {
            name: "p".into(),
            metric: "promql:sum(rate(errors{flag=\"{{flag}}\",variant=\"{{variant}}\"}[{{window}}]))".into(),
            compare,
            max,
            min_sample: 1,
            action: Action::DialDown,
            alpha: 0.01,
            data_deadline: None,
        };
        let results = |on: Result<f64, String>, off: Option<Result<f64, String>>| {
            let mut r = QueryResults::new();
            r.insert(("p".into(), "on".into()), on);
            if let Some(off) = off {
                r.insert(("p".into(), "off".into()), off);
            }
            r
        };
        let empty = BTreeMap::new();
        let run = |guard: &Guard, q: &QueryResults| {
            let w =
                Window { variants: &empty, control: "off", age_ms: 60_000, expected_treatment_share: None, queries: q };
            assess(&w, std::slice::from_ref(guard))
        };
        let regression = Verdict::Regression { action: Action::DialDown, guards: vec!["p".into()] };
        let rows: Vec<(&str, Guard, QueryResults, Verdict, bool)> = vec![
            (
                "relative: 0.08 against 0.01 + 50%",
                g(Compare::Relative, 0.5),
                results(Ok(0.08), Some(Ok(0.01))),
                regression.clone(),
                false,
            ),
            (
                "relative: 0.012 against 0.01 + 50%",
                g(Compare::Relative, 0.5),
                results(Ok(0.012), Some(Ok(0.01))),
                Verdict::Healthy,
                false,
            ),
            ("absolute", g(Compare::Absolute, 0.05), results(Ok(0.08), Some(Ok(0.01))), regression.clone(), false),
            ("threshold, no control needed", g(Compare::Threshold, 0.05), results(Ok(0.08), None), regression, false),
            (
                "the query failed",
                g(Compare::Relative, 0.5),
                results(Err("connection refused".into()), Some(Ok(0.01))),
                Verdict::Waiting,
                true,
            ),
            (
                "the control has no data",
                g(Compare::Relative, 0.5),
                results(Ok(0.5), Some(Err("no data".into()))),
                Verdict::Waiting,
                true,
            ),
            ("no query ran at all", g(Compare::Relative, 0.5), QueryResults::new(), Verdict::Waiting, true),
        ];
        for (name, guard, q, expected, no_data) in rows {
            let got = run(&guard, &q);
            assert_eq!(got.verdict, expected, "{name}: {:#?}", got.findings);
            assert_eq!(got.overdue == vec!["p".to_owned()], no_data, "{name}");
        }
        assert_eq!(
            render_query(
                "x{flag=\"{{flag}}\",v=\"{{variant}}\",e=\"{{environment}}\"}[{{window}}]",
                "f",
                "a\"b",
                "prod",
                90_500
            ),
            "x{flag=\"f\",v=\"a\\\"b\",e=\"prod\"}[90s]"
        );
        let mut bad = g(Compare::Relative, 0.5);
        bad.metric = "promql:sum(x)".into();
        assert_eq!(validate(&[bad]).unwrap_err().field, "metric");
    }

    fn arm(evaluations: u64, errors: u64) -> Aggregate {
        Aggregate { evaluations, errors, successes: evaluations - errors, ..Default::default() }
    }

    fn window(variants: &BTreeMap<String, Aggregate>) -> Window<'_> {
        Window { variants, control: "off", age_ms: 60_000, expected_treatment_share: None, queries: &NO_QUERIES }
    }

    fn variants(on: Aggregate, off: Aggregate) -> BTreeMap<String, Aggregate> {
        BTreeMap::from([("on".to_owned(), on), ("off".to_owned(), off)])
    }

    /// The decision table: each row is a window and the verdict it must give.
    #[test]
    fn error_rate_verdicts() {
        let relative = guard("error_rate", Compare::Relative, 0.5);
        let absolute = guard("error_rate", Compare::Absolute, 0.005);
        let threshold = guard("error_rate", Compare::Threshold, 0.02);
        let regression = |g: &Guard| Verdict::Regression { action: Action::DialDown, guards: vec![g.name.clone()] };
        let rows: Vec<(&str, &Guard, Aggregate, Aggregate, Verdict)> = vec![
            ("too few outcomes on treatment", &relative, arm(50, 25), arm(10_000, 100), Verdict::Waiting),
            ("too few outcomes on control", &relative, arm(10_000, 100), arm(50, 0), Verdict::Waiting),
            ("same error rate", &relative, arm(5_000, 50), arm(95_000, 950), Verdict::Healthy),
            ("doubled error rate", &relative, arm(10_000, 200), arm(95_000, 950), regression(&relative)),
            ("doubled, but too little evidence yet", &relative, arm(2_000, 40), arm(95_000, 950), Verdict::Healthy),
            ("slightly worse, within tolerance", &relative, arm(5_000, 60), arm(95_000, 950), Verdict::Healthy),
            ("better than control", &relative, arm(5_000, 10), arm(95_000, 950), Verdict::Healthy),
            // A control without a single error: a quarter of the treatment failing is a regression.
            ("clean control, a quarter failing", &relative, arm(303, 75), arm(897, 0), regression(&relative)),
            ("clean control, clean treatment", &relative, arm(300, 0), arm(900, 0), Verdict::Healthy),
            ("clean control, one failure in 300", &relative, arm(300, 1), arm(900, 0), Verdict::Healthy),
            (
                "absolute: +1 point over 0.5 tolerated",
                &absolute,
                arm(20_000, 400),
                arm(95_000, 950),
                regression(&absolute),
            ),
            ("absolute: +0.2 points", &absolute, arm(20_000, 240), arm(95_000, 950), Verdict::Healthy),
            ("threshold: 5% against 2%", &threshold, arm(2_000, 100), arm(0, 0), regression(&threshold)),
            ("threshold: 1% against 2%", &threshold, arm(2_000, 20), arm(0, 0), Verdict::Healthy),
            ("threshold: no errors at all", &threshold, arm(2_000, 0), arm(0, 0), Verdict::Healthy),
        ];
        for (name, g, on, off, expected) in rows {
            let v = variants(on, off);
            let got = assess(&window(&v), std::slice::from_ref(g));
            assert_eq!(got.verdict, expected, "{name}: {:#?}", got.findings);
        }
    }

    #[test]
    fn fewer_events_is_worse() {
        let g = guard("event:checkout", Compare::Relative, 0.1);
        let with_events = |evaluations: u64, checkouts: u64| {
            let mut a = arm(evaluations, 0);
            a.events.insert("checkout".into(), dimmer_protocol::EventStat { count: checkouts, sum: 0.0, sum_sq: None });
            a
        };
        let v = variants(with_events(10_000, 500), with_events(100_000, 10_000));
        assert!(matches!(assess(&window(&v), std::slice::from_ref(&g)).verdict, Verdict::Regression { .. }));
        let v = variants(with_events(10_000, 1_100), with_events(100_000, 10_000));
        assert_eq!(assess(&window(&v), std::slice::from_ref(&g)).verdict, Verdict::Healthy);
    }

    /// Ratings 1..5: `n` events whose values repeat `pattern`.
    fn rated(evaluations: u64, n: u64, pattern: &[f64]) -> Aggregate {
        let mut a = arm(evaluations, 0);
        let mut stat = dimmer_protocol::EventStat::default();
        for i in 0..n {
            stat.add(&dimmer_protocol::EventStat::one(Some(pattern[i as usize % pattern.len()])));
        }
        a.events.insert("csat".into(), stat);
        a
    }

    #[test]
    fn event_mean_verdicts() {
        // Control: mean 4.0, sd about 0.9. Worse: mean 3.4. Same: mean 4.0, other order.
        let good = [5.0, 4.0, 3.0, 4.0, 5.0, 3.0, 4.0, 4.0];
        let worse = [4.0, 3.0, 2.0, 4.0, 4.0, 3.0, 4.0, 3.2];
        let same = [4.0, 5.0, 3.0, 4.0, 3.0, 5.0, 4.0, 4.0];
        let slightly = [4.0, 4.0, 3.0, 4.0, 4.0, 3.0, 4.0, 4.0];
        let relative = guard("event_mean:csat", Compare::Relative, 0.05);
        let absolute = guard("event_mean:csat", Compare::Absolute, 0.3);
        let threshold = guard("event_mean:csat", Compare::Threshold, 3.8);
        let regression = |g: &Guard| Verdict::Regression { action: Action::DialDown, guards: vec![g.name.clone()] };
        let rows: Vec<(&str, &Guard, Aggregate, Aggregate, Verdict)> = vec![
            (
                "too few ratings on treatment",
                &relative,
                rated(1_000, 50, &worse),
                rated(9_000, 5_000, &good),
                Verdict::Waiting,
            ),
            ("same mean", &relative, rated(2_000, 2_000, &same), rated(9_000, 9_000, &good), Verdict::Healthy),
            (
                "15% lower mean",
                &relative,
                rated(2_000, 2_000, &worse),
                rated(9_000, 9_000, &good),
                regression(&relative),
            ),
            (
                "6% lower, but little evidence",
                &relative,
                rated(2_000, 200, &slightly),
                rated(9_000, 9_000, &good),
                Verdict::Healthy,
            ),
            (
                "higher mean is never a regression",
                &relative,
                rated(2_000, 2_000, &good),
                rated(9_000, 9_000, &worse),
                Verdict::Healthy,
            ),
            (
                "absolute: 0.6 lower against 0.3 tolerated",
                &absolute,
                rated(2_000, 2_000, &worse),
                rated(9_000, 9_000, &good),
                regression(&absolute),
            ),
            ("absolute: same", &absolute, rated(2_000, 2_000, &same), rated(9_000, 9_000, &good), Verdict::Healthy),
            (
                "threshold: 3.4 under a floor of 3.8",
                &threshold,
                rated(2_000, 2_000, &worse),
                Aggregate::default(),
                regression(&threshold),
            ),
            ("threshold: 4.0 over 3.8", &threshold, rated(2_000, 2_000, &good), Aggregate::default(), Verdict::Healthy),
            ("no ratings at all", &relative, arm(2_000, 0), arm(9_000, 0), Verdict::Waiting),
        ];
        for (name, g, on, off, expected) in rows {
            let v = variants(on, off);
            let got = assess(&window(&v), std::slice::from_ref(g));
            assert_eq!(got.verdict, expected, "{name}: {:#?}", got.findings);
        }
    }

    #[test]
    fn event_mean_without_squares_waits() {
        let g = guard("event_mean:csat", Compare::Relative, 0.05);
        let old = |n: u64, mean: f64| {
            let mut a = arm(n, 0);
            a.events.insert("csat".into(), dimmer_protocol::EventStat { count: n, sum: mean * n as f64, sum_sq: None });
            a
        };
        let v = variants(old(5_000, 2.0), old(50_000, 4.0));
        let got = assess(&window(&v), std::slice::from_ref(&g));
        assert_eq!(got.verdict, Verdict::Waiting);
        assert_eq!(got.findings[0].treatment, Some(2.0), "the mean is still shown");
    }

    #[test]
    fn latency_quantiles_against_control_and_threshold() {
        let with_latency = |values: Vec<f64>| Aggregate {
            evaluations: values.len() as u64,
            successes: values.len() as u64,
            latency: LatencySketch::of(values),
            ..Default::default()
        };
        // Control: uniform 10..110 ms, p95 about 105 ms. Treatment twice as slow.
        let control: Vec<f64> = (0..20_000).map(|i| 10.0 + (i % 1000) as f64 / 10.0).collect();
        let slow: Vec<f64> = control.iter().take(3_000).map(|x| x * 2.0).collect();
        let same: Vec<f64> = control.iter().take(3_000).copied().collect();
        let g = guard("latency_p95", Compare::Relative, 0.2);
        let v = variants(with_latency(slow.clone()), with_latency(control.clone()));
        let got = assess(&window(&v), std::slice::from_ref(&g));
        assert!(matches!(got.verdict, Verdict::Regression { .. }), "{:#?}", got.findings);
        let v = variants(with_latency(same), with_latency(control));
        assert_eq!(assess(&window(&v), std::slice::from_ref(&g)).verdict, Verdict::Healthy);

        let g = guard("latency_p99", Compare::Threshold, 150.0);
        let v = variants(with_latency(slow), Aggregate::default());
        assert!(matches!(assess(&window(&v), std::slice::from_ref(&g)).verdict, Verdict::Regression { .. }));
    }

    #[test]
    fn the_most_severe_action_wins_and_alerts_do_not_hide_it() {
        let mut alert = guard("error_rate", Compare::Relative, 0.1);
        alert.name = "errors-alert".into();
        alert.action = Action::Alert;
        let mut rollback = guard("error_rate", Compare::Relative, 0.2);
        rollback.action = Action::Rollback;
        let v = variants(arm(5_000, 150), arm(95_000, 950));
        let got = assess(&window(&v), &[alert, rollback]);
        assert_eq!(
            got.verdict,
            Verdict::Regression { action: Action::Rollback, guards: vec!["errors-alert".into(), "error_rate".into()] }
        );
    }

    #[test]
    fn no_treatment_traffic_waits_and_goes_overdue_past_the_deadline() {
        let mut g = guard("error_rate", Compare::Relative, 0.5);
        g.data_deadline = Some("30s".into());
        let v = BTreeMap::from([("off".to_owned(), arm(1_000, 1))]);
        let got = assess(&window(&v), std::slice::from_ref(&g));
        assert_eq!(got.verdict, Verdict::Waiting);
        assert_eq!(got.overdue, vec![g.name.clone()]);
    }

    #[test]
    fn sample_ratio_mismatch_is_detected_only_when_real() {
        assert!(!sample_ratio(500, 9_500, 0.05).unwrap().mismatch);
        assert!(sample_ratio(800, 9_200, 0.05).unwrap().mismatch);
        assert_eq!(sample_ratio(5, 95, 0.05), None);
        assert!(sample_ratio(50_000, 950_000, 0.05).unwrap().p_value > 0.01);
        assert!(sample_ratio(52_000, 948_000, 0.05).unwrap().mismatch);
        // ln Γ against known values: Γ(5) = 24, Γ(0.5) = √π.
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn bad_guards_are_named() {
        let mut g = guard("error_rate", Compare::Threshold, 2.0);
        assert_eq!(validate(std::slice::from_ref(&g)).unwrap_err().field, "max");
        g.max = 0.1;
        g.metric = "latency_p100".into();
        assert_eq!(validate(std::slice::from_ref(&g)).unwrap_err().field, "metric");
        g.metric = "event:".into();
        assert_eq!(validate(std::slice::from_ref(&g)).unwrap_err().field, "metric");
        g.metric = "event_mean:".into();
        assert_eq!(validate(std::slice::from_ref(&g)).unwrap_err().field, "metric");
        g.metric = "latency_p95".into();
        g.data_deadline = Some("soon".into());
        assert_eq!(validate(std::slice::from_ref(&g)).unwrap_err().field, "data_deadline");
        g.data_deadline = None;
        assert_eq!(
            validate(&[g.clone(), g.clone()]).unwrap_err(),
            GuardError { index: 1, field: "name", reason: "\"error_rate\" is used by an earlier guard".into() }
        );
        assert_eq!(validate(&[g]), Ok(()));
    }

    #[test]
    fn the_statistic_grows_with_evidence_and_is_zero_without_it() {
        assert_eq!(msprt_log_lr(0.01, 0.0, 0.0, 1e-4), 0.0);
        let weak = msprt_log_lr(0.01, 0.0, 1e-5, 1e-4);
        let strong = msprt_log_lr(0.01, 0.0, 1e-6, 1e-4);
        assert!(strong > weak);
    }
}
