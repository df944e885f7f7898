//! A flag's page per environment: its state, exposure, targeting and variants; the kill,
//! dial-down and restore controls (each with a required reason); the release plan's timeline
//! with its commands and what the guards say; and the live state as server-sent events that
//! follow the hub's watch channel of the environment.

use std::convert::Infallible;

use axum::Form;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dimmer_domain::guard::{FindingStatus, Verdict};
use dimmer_domain::release::{self, Command};
use dimmer_engine::policy::kind_name;
use dimmer_store::{FlagRecord, PlanRecord};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::session::Viewer;
use super::{ConsoleState, Failure, bad_form, human_duration, ok_page, page, query_value, see_other, segment, when};
use crate::api::error::{ApiError, Code, FieldError};
use crate::service::guardian::Guardian;
use crate::service::releases::{Outcome, PlanView, ReleaseError};

pub(super) fn router() -> Router<ConsoleState> {
    Router::new()
        .route("/flags/{key}", get(show))
        .route("/flags/{key}/environments/{env}/events", get(events))
        .route("/flags/{key}/environments/{env}/{action}", post(act))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct EnvQuery {
    #[serde(default)]
    env: Option<String>,
    /// Set after a plain (script-less) form post: what was done.
    #[serde(default)]
    done: Option<String>,
    /// The metrics window (`15m`, `1h`, …).
    #[serde(default)]
    window: String,
}

/// The state a flag page shows live, sent on every change of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Live {
    enabled: bool,
    state: &'static str,
    exposure: String,
    version: i64,
    plan: String,
}

fn live_of(record: &FlagRecord, env: &str, plan: Option<&PlanRecord>) -> Live {
    let cfg = record.flag.environments.get(env);
    let enabled = cfg.is_some_and(|c| c.enabled);
    let exposure = release::weight_percent(release::exposure_weight(cfg));
    Live {
        enabled,
        state: if enabled { "On" } else { "Off" },
        exposure: format!("{exposure}%"),
        version: record.version,
        plan: plan.map_or_else(
            || "no plan".to_owned(),
            |p| {
                let view = PlanView::of(p);
                format!("{} at stage {} of {}", view.status, view.stage + 1, view.stages.len())
            },
        ),
    }
}

async fn load(state: &ConsoleState, key: &str) -> Result<FlagRecord, ApiError> {
    state.app.store.get_flag(key).await?.ok_or_else(|| ApiError::not_found("flag", key))
}

/// `GET /flags/{key}?env=E`.
async fn show(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path(key): Path<String>,
    query: Result<Query<EnvQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let Query(q) = query.map_err(|e| ApiError::new(Code::MalformedRequest, e.body_text()))?;
    let record = load(&state, &key).await?;
    let environments: Vec<String> = state.app.store.list_environments().await?.into_iter().map(|e| e.name).collect();
    let env = match q.env {
        Some(env) if environments.contains(&env) => env,
        Some(env) => return Err(ApiError::not_found("environment", &env).into()),
        None => environments.iter().find(|e| *e == "production").or(environments.first()).cloned().unwrap_or_default(),
    };
    let plan = state.app.store.get_plan(&key, &env).await?;
    let live = live_of(&record, &env, plan.as_ref());
    let cfg = record.flag.environments.get(&env).cloned().unwrap_or_default();
    let flag_url = format!("/flags/{}", segment(&key));
    let action_url = |action: &str| format!("{flag_url}/environments/{}/{action}", segment(&env));
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let guards = match &plan {
        Some(p) if !p.plan.guards.is_empty() => {
            let period = Guardian::plan_period(p);
            state.app.guardian.assess(&record, &env, &p.plan.guards, &period).await.ok()
        }
        _ => None,
    };
    let now = state.app.clock.now_ms();
    let metrics = super::metrics::section(&state, &record, &env, &q.window).await?;
    let body = html! {
        p.crumbs { a href="/" { "Flags" } " / " }
        h1 { (key) }
        p.muted {
            (kind_name(record.flag.kind)) " · owner " (record.flag.owner.as_deref().unwrap_or("none"))
            " · version " (record.version) @if record.archived { " · " strong { "archived" } }
        }
        @if !record.flag.description.is_empty() { p { (record.flag.description) } }
        @if let Some(done) = &q.done { p.notice role="status" { "Done: " (done) "." } }
        nav.tabs aria-label="Environments" {
            @for e in &environments {
                a href={ (flag_url) "?env=" (query_value(e)) } aria-current=[(e == &env).then_some("page")] { (e) }
            }
        }
        section.card aria-labelledby="state-h" #live
            data-events={ (flag_url) "/environments/" (segment(&env)) "/events" } {
            h2 #state-h { "State in " (env) }
            dl.state-list {
                dt { "State" } dd { span #live-state data-live="state" class={ "state " @if live.enabled { "on" } @else { "off" } } { (live.state) } }
                dt { "Exposure" } dd #live-exposure data-live="exposure" { (live.exposure) }
                dt { "Release plan" } dd #live-plan data-live="plan" { (live.plan) }
                dt { "Version" } dd data-live="version" { (live.version) }
            }
            p.muted #live-status role="status" aria-live="polite" {}
        }
        @if viewer.can_write() {
            section.card.danger aria-labelledby="act-h" {
                h2 #act-h { "Kill, dial down, restore" }
                p.muted { "Each takes effect at once for every SDK of " (env) ", and is recorded with your reason." }
                div.act-grid {
                    form method="post" action=(action_url("kill")) aria-label={ "Kill " (key) " in " (env) } data-confirm={ "Kill " (key) " in " (env) "? Everyone gets the off variant." } {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        label for="kill-reason" { "Reason" }
                        input #kill-reason name="reason" required autocomplete="off";
                        button.bad type="submit" { "Kill" }
                    }
                    form method="post" action=(action_url("dial-down")) aria-label={ "Dial " (key) " down in " (env) } data-confirm={ "Dial " (key) " down in " (env) "?" } {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        label for="dial-to" { "Exposure to keep, in percent" }
                        input #dial-to name="to" type="number" min="0" max="100" step="0.001" value="0" required;
                        label for="dial-reason" { "Reason" }
                        input #dial-reason name="reason" required autocomplete="off";
                        button type="submit" { "Dial down" }
                    }
                    form method="post" action=(action_url("restore")) aria-label={ "Restore " (key) " in " (env) } data-confirm={ "Restore " (key) " in " (env) " to before the last kill or dial-down?" } {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        label for="restore-reason" { "Reason" }
                        input #restore-reason name="reason" required autocomplete="off";
                        button type="submit" { "Restore" }
                    }
                }
            }
        }
        section.card aria-labelledby="plan-h" {
            h2 #plan-h { "Release plan" }
            @match &plan {
                None => p { "No release plan in " (env) "." }
                Some(p) => (plan_section(&viewer, p, now, &action_url, guards.as_ref()))
            }
            @if viewer.can_write() && plan.as_ref().is_none_or(|p| !matches!(p.state.status, release::Status::Running | release::Status::Paused)) {
                p { a.button href=(action_url("start-plan")) { "Start a release plan in " (env) } }
            }
        }
        (metrics)
        section.card aria-labelledby="cfg-h" {
            h2 #cfg-h { "Targeting in " (env) }
            @if viewer.can_write() { p { a.button href=(action_url("edit")) { "Edit targeting in " (env) } } }
            h3 { "Default" }
            pre { (cfg.default.as_ref().map(|d| pretty(&serde_json::json!(d))).unwrap_or_else(|| "the off variant".into())) }
            @if let Some(off) = &cfg.off_variant { p { "Off variant: " code { (off) } } }
            h3 { "Targets" }
            @if cfg.targets.is_empty() { p.muted { "None." } } @else {
                ul { @for (variant, keys) in &cfg.targets { li { code { (variant) } ": " (keys.join(", ")) } } }
            }
            h3 { "Rules" }
            @if cfg.rules.is_empty() { p.muted { "None." } } @else {
                ol { @for rule in &cfg.rules { li { pre { (pretty(&serde_json::json!(rule))) } } } }
            }
            @if !cfg.prerequisites.is_empty() {
                h3 { "Prerequisites" }
                pre { (pretty(&serde_json::json!(cfg.prerequisites))) }
            }
        }
        section.card aria-labelledby="var-h" {
            h2 #var-h { "Variants" }
            @if viewer.can_write() { p { a.button href={ (flag_url) "/variants" } { "Edit variants" } } }
            table { thead { tr { th scope="col" { "Variant" } th scope="col" { "Value" } } }
                tbody { @for (name, value) in &record.flag.variants { tr { th scope="row" { (name) } td { code { (value) } } } } } }
        }
        p { a href={ "/history?flag=" (query_value(&key)) } { "History of " (key) } }
    };
    Ok(ok_page(page(&key, Some(&viewer), body)))
}

fn plan_section(
    viewer: &Viewer,
    record: &PlanRecord,
    now: i64,
    action_url: &dyn Fn(&str) -> String,
    guards: Option<&dimmer_domain::guard::Assessment>,
) -> Markup {
    let view = PlanView::of(record);
    html! {
        p { "Status: " strong { (view.status) } @if let Some(t) = &view.template { " · template " (t) } }
        ol.timeline aria-label="Stages" {
            @for (i, stage) in view.stages.iter().enumerate() {
                li class={ @if i < view.stage { "past" } @else if i == view.stage { "current" } @else { "next" } }
                    aria-current=[(i == view.stage).then_some("step")] {
                    strong { (stage.label) }
                    " · dwell " (human_duration(stage.min_dwell_ms))
                    @if i == view.stage {
                        " · entered " (when(view.entered_at))
                        @if let Some(after) = view.advances_after {
                            @if after > now { " · may advance in " (human_duration(after - now)) }
                            @else { " · dwell over: advances when the guards allow" }
                        }
                    }
                }
            }
        }
        @if let Some(a) = guards {
            h3 { "What the guards say" }
            p { (match &a.verdict {
                Verdict::Healthy => "Healthy: every guard has enough data and none sees a regression.".to_owned(),
                Verdict::Waiting => "Waiting: some guards do not have enough data yet.".to_owned(),
                Verdict::Regression { action, guards } => format!("Regression seen by {}: the guard acts ({}).", guards.join(", "), action.as_str()),
            }) }
            ul { @for f in &a.findings {
                li { (finding_words(f)) }
            } }
        }
        @if viewer.can_write() {
            div.act-grid {
                @for (command, label) in [("advance", "Advance"), ("pause", "Pause"), ("resume", "Resume"), ("rollback", "Roll back")] {
                    form method="post" action=(action_url(&format!("plan-{command}"))) aria-label={ (label) " the plan" } data-confirm={ (label) " the plan?" } {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        label for={ "plan-" (command) "-reason" } { "Reason" }
                        input id={ "plan-" (command) "-reason" } name="reason" required;
                        button type="submit" { (label) " plan" }
                    }
                }
            }
        }
    }
}

fn finding_words(f: &dimmer_domain::guard::Finding) -> String {
    let number = |v: Option<f64>| v.map_or_else(|| "no data".to_owned(), |v| format!("{v:.4}"));
    let status = match f.status {
        FindingStatus::Pass => "passes",
        FindingStatus::Regression => "sees a regression",
        FindingStatus::Insufficient => "needs more data",
        FindingStatus::NoData => "has no data from Prometheus",
    };
    format!(
        "{} on variant {} {status}: treatment {} against control {} (limit {}), {} and {} samples",
        f.guard,
        f.variant,
        number(f.treatment),
        number(f.control),
        number(f.limit),
        f.treatment_n,
        f.control_n
    )
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    to: String,
}

/// `POST /flags/{key}/environments/{env}/{kill|dial-down|restore|plan-advance|…}`.
async fn act(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path((key, env, action)): Path<(String, String, String)>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Result<Response, Failure> {
    let json = super::wants_json(&headers);
    let fail = |e: ApiError| Failure::new(e, json);
    let Form(form) = form.map_err(|e| fail(bad_form(e)))?;
    viewer.check_csrf(&form.csrf).map_err(fail)?;
    viewer.principal.require_write().map_err(fail)?;
    let reason = form.reason.trim();
    if reason.is_empty() {
        return Err(fail(
            ApiError::new(Code::ValidationFailed, "reason: say why (it goes to the audit log)")
                .with_errors(vec![FieldError::new("reason", "required")]),
        ));
    }
    let meta = viewer.principal.meta(Some(reason.to_owned()));
    let releases = &state.app.releases;
    let outcome: Result<Outcome, ReleaseError> = match action.as_str() {
        "kill" => releases.kill(&key, &env, &meta).await,
        "dial-down" => {
            let weight = weight_of(&form.to).map_err(fail)?;
            releases.dial_down(&key, &env, weight, &meta).await
        }
        "restore" => releases.restore(&key, &env, &meta).await,
        "plan-advance" => releases.command(&key, &env, Command::Advance, &meta).await,
        "plan-pause" => releases.command(&key, &env, Command::Pause, &meta).await,
        "plan-resume" => releases.command(&key, &env, Command::Resume, &meta).await,
        "plan-rollback" => releases.command(&key, &env, Command::Rollback { to_zero: false }, &meta).await,
        other => return Err(fail(ApiError::new(Code::NotFound, format!("no console action \"{other}\"")))),
    };
    let outcome = outcome.map_err(|e| fail(e.into()))?;
    if outcome.changed {
        // Snapshots, streams and this console's live view are current before the answer.
        crate::api::publish(&state.app).await;
    }
    if json {
        return Ok(crate::api::error::Json(outcome).into_response());
    }
    Ok(see_other(&format!("/flags/{}?env={}&done={}", segment(&key), query_value(&env), query_value(&action))))
}

/// A dial-down target in percent (0 to 100, at most three decimals) as an exposure weight.
fn weight_of(to: &str) -> Result<u32, ApiError> {
    let invalid = || {
        ApiError::new(
            Code::ValidationFailed,
            format!("to: {to:?} is not a percentage from 0 to 100 with at most three decimals"),
        )
        .with_errors(vec![FieldError::new("to", "a percentage from 0 to 100")])
    };
    let value: f64 = to.trim().parse().map_err(|_| invalid())?;
    let scaled = (value * 1000.0).round();
    if !value.is_finite() || !(0.0..=100.0).contains(&value) || (value * 1000.0 - scaled).abs() > 1e-6 {
        return Err(invalid());
    }
    // In 0..=100000 and whole, checked just above: the conversion is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "range checked above")]
    Ok(scaled as u32)
}

/// `GET /flags/{key}/environments/{env}/events`: `event: state` with the [`Live`] state now
/// and after every change of it, following the environment's snapshots; ends at shutdown.
async fn events(
    State(state): State<ConsoleState>,
    _viewer: Viewer,
    Path((key, env)): Path<(String, String)>,
) -> Result<Response, Failure> {
    load(&state, &key).await?;
    let mut snapshots = state.app.hub.watch(&env).await?;
    let mut shutdown = state.app.shutdown.clone();
    let app = state.app.clone();
    let stream = async_stream::stream! {
        let mut last: Option<Live> = None;
        loop {
            snapshots.borrow_and_update();
            let flag = app.store.get_flag(&key).await;
            let plan = app.store.get_plan(&key, &env).await;
            if let (Ok(Some(flag)), Ok(plan)) = (flag, plan) {
                let live = live_of(&flag, &env, plan.as_ref());
                if last.as_ref() != Some(&live) {
                    let data = serde_json::to_string(&live).unwrap_or_default();
                    yield Ok::<Event, Infallible>(Event::default().event("state").data(data));
                    last = Some(live);
                }
            }
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { break },
                _ = shutdown.changed() => break,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_down_targets_are_checked() {
        assert_eq!(weight_of("5").unwrap(), 5000);
        assert_eq!(weight_of("0.125").unwrap(), 125);
        assert!(weight_of("101").is_err());
        assert!(weight_of("abc").is_err());
        assert!(weight_of("0.0001").is_err());
    }
}
