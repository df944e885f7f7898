//! Starting a release plan from the console: a template (built-in or stored) or custom stages
//! with a dwell, and guards, in a plain form. Started through `api::release::start_plan_from`,
//! the function behind `POST /api/v1/flags/{key}/environments/{env}/plan` (the same guard
//! validation, policy plan rule and audited release step); errors come back at their fields.

use axum::Form;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use serde_json::{Value, json};

use super::form::{Placed, field_errors, id_of};
use super::session::Viewer;
use super::{ConsoleState, Failure, bad_form, human_duration, page, query_value, see_other, segment};
use crate::api::error::{ApiError, Code, FieldError};

/// Guard rows the form offers.
const GUARD_ROWS: usize = 3;
/// Metrics a guard can watch, as suggestions (`event:NAME` for any custom event).
const METRICS: [&str; 4] = ["error_rate", "latency_p50", "latency_p95", "latency_p99"];

pub(super) fn router() -> Router<ConsoleState> {
    Router::new().route("/flags/{key}/environments/{env}/start-plan", get(form_page).post(start))
}

/// One guard row, as typed.
#[derive(Debug, Clone, Default)]
struct GuardRow {
    name: String,
    metric: String,
    compare: String,
    max: String,
    min_sample: String,
    action: String,
}

impl GuardRow {
    fn is_blank(&self) -> bool {
        self.name.trim().is_empty() && self.metric.trim().is_empty() && self.max.trim().is_empty()
    }
}

/// The form, as typed.
#[derive(Debug, Clone, Default)]
struct StartForm {
    csrf: String,
    /// A template name, `` for the policy's default for the flag's kind, or `custom`.
    template: String,
    stages: String,
    dwell: String,
    guards: Vec<GuardRow>,
    reason: String,
}

impl StartForm {
    fn from_pairs(pairs: &[(String, String)]) -> Self {
        let mut form = StartForm { guards: vec![GuardRow::default(); GUARD_ROWS], ..StartForm::default() };
        for (name, value) in pairs {
            let value = value.clone();
            match name.as_str() {
                "csrf" => form.csrf = value,
                "template" => form.template = value,
                "stages" => form.stages = value,
                "dwell" => form.dwell = value,
                "reason" => form.reason = value,
                _ => {
                    let Some((i, field)) = name
                        .strip_prefix("guards[")
                        .and_then(|r| r.split_once("]."))
                        .and_then(|(i, f)| Some((i.parse::<usize>().ok()?, f)))
                    else {
                        continue;
                    };
                    let Some(row) = form.guards.get_mut(i) else { continue };
                    match field {
                        "name" => row.name = value,
                        "metric" => row.metric = value,
                        "compare" => row.compare = value,
                        "max" => row.max = value,
                        "min_sample" => row.min_sample = value,
                        "action" => row.action = value,
                        _ => {}
                    }
                }
            }
        }
        form
    }

    /// The body `POST /api/v1/flags/{key}/environments/{env}/plan` takes; a row that does not
    /// read is an error at its field. Guard indexes are the form's rows (blank rows are left
    /// out, so saved indexes are mapped back in `row_of`).
    fn body(&self) -> Result<Value, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut body = json!({});
        if self.template == "custom" {
            body["stages"] = json!(self.stages.trim());
            if !self.dwell.trim().is_empty() {
                body["dwell"] = json!(self.dwell.trim());
            }
        } else if !self.template.is_empty() {
            body["template"] = json!(self.template);
        }
        let mut guards = Vec::new();
        for (i, g) in self.guards.iter().enumerate().filter(|(_, g)| !g.is_blank()) {
            let mut guard = json!({
                "name": g.name.trim(),
                "metric": g.metric.trim(),
                "compare": if g.compare.is_empty() { "relative" } else { g.compare.as_str() },
                "action": if g.action.is_empty() { "dial_down" } else { g.action.as_str() },
            });
            match g.max.trim().parse::<f64>() {
                Ok(max) if max.is_finite() => guard["max"] = json!(max),
                _ => errors.push(FieldError::new(
                    format!("guards[{i}].max"),
                    "a number: the tolerated worsening or the limit",
                )),
            }
            if !g.min_sample.trim().is_empty() {
                match g.min_sample.trim().parse::<u64>() {
                    Ok(n) => guard["min_sample"] = json!(n),
                    Err(_) => {
                        errors.push(FieldError::new(format!("guards[{i}].min_sample"), "a whole number of outcomes"))
                    }
                }
            }
            guards.push(guard);
        }
        body["guards"] = Value::Array(guards);
        if errors.is_empty() { Ok(body) } else { Err(errors) }
    }

    /// The form row of the `n`th guard sent.
    fn row_of(&self, n: usize) -> usize {
        self.guards.iter().enumerate().filter(|(_, g)| !g.is_blank()).nth(n).map_or(n, |(i, _)| i)
    }
}

/// An error path of the API turned into the form's (`guards[0].max` of the first guard sent →
/// the row it came from), and the input's name it belongs to.
fn input_of(form: &StartForm, path: &str) -> Option<String> {
    if let Some(rest) = path.strip_prefix("guards[") {
        let (n, field) = rest.split_once("].")?;
        let row = form.row_of(n.parse().ok()?);
        let field = field.split(['.', '[']).next().unwrap_or_default();
        return Some(format!("guards[{row}].{field}"));
    }
    let head = path.split(['.', '[']).next().unwrap_or_default();
    match head {
        // "This plan needs guards" (the policy's plan rule): at the first guard.
        "guards" => Some("guards[0].name".to_owned()),
        "stages" | "dwell" | "reason" => Some(head.to_owned()),
        "template" => Some("template".to_owned()),
        // The policy's plan rule is about the plan's reach: the stages, or the template giving them.
        "environments" | "plan" => Some(if form.template == "custom" { "stages" } else { "template" }.to_owned()),
        _ => None,
    }
}

async fn render(
    state: &ConsoleState,
    viewer: &Viewer,
    key: &str,
    env: &str,
    form: &StartForm,
    errors: &[FieldError],
) -> Result<Markup, Failure> {
    let templates = state.app.releases.templates().await.map_err(ApiError::from)?;
    let placed = Placed::new(errors, |e| input_of(form, &e.path));
    let invalid = |name: &str| placed.invalid(name);
    let described = |name: &str| placed.described(name);
    let errors_of = |name: &str| placed.at(name);
    let flag_url = format!("/flags/{}", segment(key));
    Ok(html! {
        p.crumbs { a href="/" { "Flags" } " / " a href={ (flag_url) "?env=" (query_value(env)) } { (key) } " / " }
        h1 { "Start a release plan for " (key) " in " (env) }
        (placed.summary("The plan was not started:"))
        form.card method="post" action={ (flag_url) "/environments/" (segment(env)) "/start-plan" } novalidate {
            input type="hidden" name="csrf" value=(viewer.csrf);
            fieldset {
                legend { "Stages" }
                div.field.invalid[invalid("template")] {
                    label for="f-template" { "Template" }
                    select #f-template name="template" aria-invalid=[invalid("template").then_some("true")] aria-describedby=[described("template")] {
                        option value="" selected[form.template.is_empty()] { "The policy's template for this kind of flag" }
                        @for t in &templates {
                            option value=(t.name) selected[form.template == t.name] {
                                (t.name) ": " (t.stages.iter().map(|s| format!("{} for {}", crate::service::releases::stage_label(s), human_duration(s.min_dwell_ms))).collect::<Vec<_>>().join(", "))
                            }
                        }
                        option value="custom" selected[form.template == "custom"] { "Custom stages (below)" }
                    }
                    (errors_of("template"))
                }
                div.field.invalid[invalid("stages")] {
                    label for="f-stages" { "Custom stages" }
                    div.hint { "with the custom template: internal,1%,5%,25%,100% (a stage may carry its own dwell: 5%@2h)" }
                    input #f-stages name="stages" value=(form.stages) autocomplete="off" aria-invalid=[invalid("stages").then_some("true")] aria-describedby=[described("stages")];
                    (errors_of("stages"))
                }
                div.field.invalid[invalid("dwell")] {
                    label for="f-dwell" { "Dwell of each custom stage" }
                    div.hint { "such as 30m or 2h (default 1h)" }
                    input #f-dwell name="dwell" value=(form.dwell) autocomplete="off" aria-invalid=[invalid("dwell").then_some("true")] aria-describedby=[described("dwell")];
                    (errors_of("dwell"))
                }
            }
            datalist #metric-list { @for m in METRICS { option value=(m) {} } }
            @for (i, g) in form.guards.iter().enumerate() {
                fieldset.guard {
                    legend { "Guard " (i + 1) @if i > 0 { " (optional)" } }
                    @for (field, label, value, hint) in [
                        ("name", "Guard name", &g.name, ""),
                        ("metric", "Metric", &g.metric, "error_rate, latency_p95, or event:NAME"),
                        ("max", "Limit", &g.max, "relative: 0.25 = 25% worse than control; threshold: in the metric's unit"),
                        ("min_sample", "Minimum sample", &g.min_sample, "outcomes on each side before it judges (default 1000)"),
                    ] {
                        @let name = format!("guards[{i}].{field}");
                        div.field.invalid[invalid(&name)] {
                            label for=(id_of(&name)) { (label) " (guard " (i + 1) ")" }
                            @if !hint.is_empty() { div.hint { (hint) } }
                            input id=(id_of(&name)) name=(name) value=(value) autocomplete="off" list=[(field == "metric").then_some("metric-list")]
                                aria-invalid=[invalid(&name).then_some("true")] aria-describedby=[described(&name)];
                            (errors_of(&name))
                        }
                    }
                    @for (field, label, options) in [
                        ("compare", "Compare", &["relative", "absolute", "threshold"][..]),
                        ("action", "On a regression", &["dial_down", "rollback", "pause", "alert"][..]),
                    ] {
                        @let name = format!("guards[{i}].{field}");
                        @let value = if field == "compare" { &g.compare } else { &g.action };
                        div.field.invalid[invalid(&name)] {
                            label for=(id_of(&name)) { (label) " (guard " (i + 1) ")" }
                            select id=(id_of(&name)) name=(name) aria-describedby=[described(&name)] {
                                @for o in options { option value=(o) selected[value == o] { (o.replace('_', " ")) } }
                            }
                            (errors_of(&name))
                        }
                    }
                }
            }
            div.field.invalid[invalid("reason")] {
                label for="f-reason" { "Reason" }
                input #f-reason name="reason" value=(form.reason) autocomplete="off" required aria-invalid=[placed.aria_invalid("reason")] aria-describedby=[described("reason")];
                (errors_of("reason"))
            }
            button type="submit" { "Start plan" }
        }
    })
}

fn respond(status: StatusCode, key: &str, viewer: &Viewer, body: Markup) -> Response {
    (status, axum::response::Html(page(&format!("Start a plan for {key}"), Some(viewer), body).into_string()))
        .into_response()
}

async fn check(state: &ConsoleState, key: &str, env: &str) -> Result<(), ApiError> {
    state.app.store.get_flag(key).await?.ok_or_else(|| ApiError::not_found("flag", key))?;
    if !state.app.store.list_environments().await?.iter().any(|e| e.name == env) {
        return Err(ApiError::not_found("environment", env));
    }
    Ok(())
}

/// `GET /flags/{key}/environments/{env}/start-plan`.
async fn form_page(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path((key, env)): Path<(String, String)>,
) -> Result<Response, Failure> {
    viewer.principal.require_write()?;
    check(&state, &key, &env).await?;
    let form = StartForm { guards: vec![GuardRow::default(); GUARD_ROWS], ..StartForm::default() };
    let body = render(&state, &viewer, &key, &env, &form, &[]).await?;
    Ok(respond(StatusCode::OK, &key, &viewer, body))
}

/// `POST /flags/{key}/environments/{env}/start-plan`.
async fn start(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path((key, env)): Path<(String, String)>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, Failure> {
    let Form(pairs) = form.map_err(bad_form)?;
    let form = StartForm::from_pairs(&pairs);
    viewer.check_csrf(&form.csrf)?;
    viewer.principal.require_write()?;
    check(&state, &key, &env).await?;
    let reason = form.reason.trim();
    let mut errors = Vec::new();
    if reason.is_empty() {
        errors.push(FieldError::new("reason", "required: say why (it goes to the audit log)"));
    }
    let body = match form.body() {
        Ok(b) => Some(b),
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    let (Some(body), true) = (body, errors.is_empty()) else {
        let markup = render(&state, &viewer, &key, &env, &form, &errors).await?;
        return Ok(respond(StatusCode::UNPROCESSABLE_ENTITY, &key, &viewer, markup));
    };
    let reason = reason.to_owned();
    let parsed = serde_json::from_value(body).map_err(|e| {
        ApiError::new(Code::MalformedRequest, format!("{e}")).with_errors(vec![FieldError::new("", e.to_string())])
    });
    let result = match parsed {
        Ok(start) => {
            crate::api::release::start_plan_from(&state.app, &viewer.principal, &key, &env, start, Some(reason)).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(see_other(&format!("/flags/{}?env={}&done=plan-start", segment(&key), query_value(&env)))),
        Err(e)
            if matches!(e.code, Code::ValidationFailed | Code::MalformedRequest | Code::NotFound | Code::Conflict) =>
        {
            let status = e.code.status();
            // An unknown template names it in the message only: put it at the template.
            let template = e.code == Code::NotFound && e.message.contains("template");
            let mut errors = field_errors(e);
            if let [only] = errors.as_mut_slice()
                && template
                && only.path.is_empty()
            {
                only.path = "template".to_owned();
            }
            let markup = render(&state, &viewer, &key, &env, &form, &errors).await?;
            Ok(respond(status, &key, &viewer, markup))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_guard_rows_are_left_out_and_errors_find_their_row() {
        let pairs: Vec<(String, String)> = [
            ("template", "custom"),
            ("stages", "1%,100%"),
            ("guards[1].name", "errors"),
            ("guards[1].metric", "error_rate"),
            ("guards[1].max", "0.25"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let form = StartForm::from_pairs(&pairs);
        let body = form.body().unwrap();
        assert_eq!(body["guards"].as_array().unwrap().len(), 1);
        assert_eq!(body["guards"][0]["compare"], "relative");
        assert_eq!(body["stages"], "1%,100%");
        assert_eq!(input_of(&form, "guards[0].max").as_deref(), Some("guards[1].max"));
        assert_eq!(input_of(&form, "environments.production").as_deref(), Some("stages"));
        assert_eq!(input_of(&form, "guards").as_deref(), Some("guards[0].name"));
    }
}
