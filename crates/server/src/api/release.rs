//! Release API: plans (start, status, advance, pause, resume, rollback), the dial-down fast
//! path (kill, dial-down, restore) and plan templates. Handlers only translate HTTP; the
//! decisions are in `dimmer_domain::release` and their application in `crate::service::releases`.

use crate::api::extract::Path;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::schemas as doc;
use crate::api::AppState;
use crate::api::auth::Principal;
use crate::api::error::{ApiError, Code, FieldError, Json};
use crate::service::releases::{Outcome, PlanView, ReleaseError, StageView};
use dimmer_domain::release::{self, Command, Plan, Template};
use dimmer_store::ChangeMeta;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/plans", get(list_plans))
        .route("/api/v1/flags/{key}/environments/{env}/plan", get(plan_status).post(start_plan))
        .route("/api/v1/flags/{key}/environments/{env}/plan/advance", post(advance))
        .route("/api/v1/flags/{key}/environments/{env}/plan/pause", post(pause))
        .route("/api/v1/flags/{key}/environments/{env}/plan/resume", post(resume))
        .route("/api/v1/flags/{key}/environments/{env}/plan/rollback", post(rollback))
        .route("/api/v1/flags/{key}/environments/{env}/kill", post(kill))
        .route("/api/v1/flags/{key}/environments/{env}/dial-down", post(dial_down))
        .route("/api/v1/flags/{key}/environments/{env}/restore", post(restore))
        .route("/api/v1/templates", get(list_templates).post(create_template))
}

impl From<ReleaseError> for ApiError {
    fn from(e: ReleaseError) -> Self {
        match e {
            ReleaseError::NotFound { kind, key } => ApiError::not_found(kind, &key),
            ReleaseError::Invalid { field, message } => {
                ApiError::new(Code::ValidationFailed, format!("{field}: {message}"))
                    .with_errors(vec![FieldError::new(field, message)])
            }
            ReleaseError::Conflict(message) => ApiError::new(Code::Conflict, message),
            ReleaseError::Store(e) => e.into(),
        }
    }
}

async fn answer(state: &AppState, outcome: Result<Outcome, ReleaseError>) -> Result<Response, ApiError> {
    let outcome = outcome?;
    if outcome.changed {
        // Snapshots (and so every stream) are current before the caller hears "done".
        super::publish(state).await;
    }
    Ok(Json(outcome).into_response())
}

fn meta(principal: &Principal, headers: &HeaderMap, body_reason: Option<&str>) -> ChangeMeta {
    principal.meta(super::reason(headers, body_reason))
}

/// A body that may be absent or `{}` and may carry a reason.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReasonOnly {
    /// Why, for the audit log and the webhook (the `X-Dimmer-Reason` header takes precedence).
    #[serde(default)]
    reason: Option<String>,
}

/// Parses an optional JSON body (empty is `{}`).
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    crate::api::error::optional_json_object(body)
}

/// `GET /api/v1/plans`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PlanList {
    /// Every plan, finished ones included.
    plans: Vec<PlanView>,
}

/// Every release plan, finished ones included.
#[utoipa::path(
    get,
    path = "/api/v1/plans",
    tag = "releases",
    operation_id = "listPlans",
    responses(
        (status = 200, description = "Every plan", body = PlanList),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token", body = doc::ErrorBody),
    )
)]
async fn list_plans(principal: Principal, State(state): State<AppState>) -> Result<Response, ApiError> {
    principal.require_read()?;
    let plans = state.store.list_plans().await?.iter().map(PlanView::of).collect();
    Ok(Json(PlanList { plans }).into_response())
}

/// The flag's release plan in an environment: stages, current stage, status, next advance.
#[utoipa::path(
    get,
    path = "/api/v1/flags/{key}/environments/{env}/plan",
    tag = "releases",
    operation_id = "getPlan",
    params(("key" = String, Path, description = "The flag key"), ("env" = String, Path, description = "The environment")),
    responses(
        (status = 200, description = "The plan", body = PlanView),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token", body = doc::ErrorBody),
        (status = 404, description = "No plan on that flag in that environment", body = doc::ErrorBody),
    )
)]
async fn plan_status(
    principal: Principal,
    State(state): State<AppState>,
    Path((key, env)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    let plan = state.store.get_plan(&key, &env).await?.ok_or_else(|| ApiError::not_found("plan", &key))?;
    Ok(Json(PlanView::of(&plan)).into_response())
}

/// How to start a plan: a template, or explicit stages; neither means the default template for
/// the flag's kind.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartPlan {
    /// A template name (`standard`, `careful`, `quick`, or a stored one).
    #[serde(default)]
    template: Option<String>,
    /// Stages such as `internal,1%,5%,25%,50%,100%`; a stage may carry its own dwell (`5%@2h`).
    #[serde(default)]
    stages: Option<String>,
    /// The minimum dwell of each stage with `stages`, such as `30m` (default `1h`).
    #[serde(default)]
    dwell: Option<String>,
    /// Guards on every stage (see docs/guards.md): the plan advances only while they are
    /// healthy, and a regression applies the guard's action at once.
    #[serde(default)]
    guards: Vec<dimmer_domain::guard::Guard>,
    /// Why, for the audit log.
    #[serde(default)]
    reason: Option<String>,
}

/// Starts a release plan: the flag is turned on in the environment and serves the change to the
/// first stage's exposure; later stages follow after their dwell (or on `advance`).
#[utoipa::path(
    post,
    path = "/api/v1/flags/{key}/environments/{env}/plan",
    tag = "releases",
    operation_id = "startPlan",
    params(
        ("key" = String, Path, description = "The flag key"),
        ("env" = String, Path, description = "The environment"),
        ("X-Dimmer-Reason" = Option<String>, Header, description = "Why, for the audit log"),
    ),
    request_body(content = StartPlan, description = "Optional: a template or stages (empty: the flag kind's default template)"),
    responses(
        (status = 200, description = "What changed", body = Outcome),
        (status = 400, description = "Not JSON, or unknown fields", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such flag, environment or template", body = doc::ErrorBody),
        (status = 409, description = "A plan is already running or paused there", body = doc::ErrorBody),
        (status = 422, description = "Bad stages or dwell, or an unknown segment", body = doc::ErrorBody),
    )
)]
async fn start_plan(
    principal: Principal,
    State(state): State<AppState>,
    Path((key, env)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let body: StartPlan = optional_body(&body)?;
    let reason = super::reason(&headers, body.reason.as_deref());
    let outcome = start_plan_from(&state, &principal, &key, &env, body, reason).await?;
    Ok(Json(outcome).into_response())
}

/// Starts a plan as `POST /api/v1/flags/{key}/environments/{env}/plan` does: the guards'
/// validation, a template or stages, the policy's plan rule, the audited release step, the
/// snapshot refresh. Shared with the web console so that a plan started there passes exactly
/// the same checks.
pub(crate) async fn start_plan_from(
    state: &AppState,
    principal: &Principal,
    key: &str,
    env: &str,
    body: StartPlan,
    reason: Option<String>,
) -> Result<Outcome, ApiError> {
    principal.require_write()?;
    dimmer_domain::guard::validate(&body.guards)
        .map_err(|e| invalid(&format!("guards[{}].{}", e.index, e.field), &e.reason))?;
    let mut plan = match (&body.template, &body.stages) {
        (Some(_), Some(_)) => {
            return Err(invalid("stages", "give a template or stages, not both"));
        }
        (_, Some(spec)) => {
            let dwell = release::parse_duration(body.dwell.as_deref().unwrap_or("1h")).map_err(ReleaseError::from)?;
            Plan {
                stages: release::parse_stages(spec, dwell).map_err(ReleaseError::from)?,
                template: None,
                guards: Vec::new(),
            }
        }
        (name, None) => {
            if body.dwell.is_some() {
                return Err(invalid("dwell", "only applies with stages (a template has its own dwells)"));
            }
            // Unnamed: the policy's template for the flag's kind, if it names one.
            let name = match name {
                Some(n) => Some(n.clone()),
                None => match state.store.get_flag(key).await? {
                    Some(r) => state.policy.policy.kind(r.flag.kind).template,
                    None => None,
                },
            };
            let template = state.releases.template_for(name.as_deref(), key).await?;
            Plan { stages: template.stages, template: Some(template.name), guards: Vec::new() }
        }
    };
    plan.guards = body.guards;
    let highest = plan.stages.iter().map(|s| s.weight).max().unwrap_or(0);
    let refused = state.policy.policy.check_plan(env, highest, !plan.guards.is_empty());
    super::policy::refuse(refused.into_iter().map(super::policy::violation).collect())?;
    let outcome = state.releases.start(key, env, plan, &principal.meta(reason)).await?;
    if outcome.changed {
        // Snapshots (and so every stream) are current before the caller hears "done".
        super::publish(state).await;
    }
    Ok(outcome)
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::from(ReleaseError::Invalid { field: field.to_owned(), message: message.to_owned() })
}

async fn command(
    principal: Principal,
    state: AppState,
    key: String,
    env: String,
    headers: HeaderMap,
    reason: Option<String>,
    command: Command,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let meta = meta(&principal, &headers, reason.as_deref());
    answer(&state, state.releases.command(&key, &env, command, &meta).await).await
}

/// Enters the next stage now, whatever the dwell.
#[utoipa::path(
    post,
    path = "/api/v1/flags/{key}/environments/{env}/plan/advance",
    tag = "releases",
    operation_id = "advancePlan",
    params(("key" = String, Path, description = "The flag key"), ("env" = String, Path, description = "The environment")),
    request_body(content = ReasonOnly, description = "Optional"),
    responses(
        (status = 200, description = "What changed", body = Outcome),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No plan there", body = doc::ErrorBody),
        (status = 409, description = "The plan is released or rolled back", body = doc::ErrorBody),
    )
)]
async fn advance(
    principal: Principal,
    State(state): State<AppState>,
    Path((key, env)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: ReasonOnly = optional_body(&body)?;
    command(principal, state, key, env, headers, body.reason, Command::Advance).await
}

/// Holds the plan where it is (idempotent).
#[utoipa::path(
    post,
    path = "/api/v1/flags/{key}/environments/{env}/plan/pause",
    tag = "releases",
    operation_id = "pausePlan",
    params(("key" = String, Path, description = "The flag key"), ("env" = String, Path, description = "The environment")),
    request_body(content = ReasonOnly, description = "Optional"),
    responses(
        (status = 200, description = "What changed", body = Outcome),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No plan there", body = doc::ErrorBody),
        (status = 409, description = "The plan is released or rolled back", body = doc::ErrorBody),
    )
)]
async fn pause(
    principal: Principal,
    State(state): State<AppState>,
    Path((key, env)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: ReasonOnly = optional_body(&body)?;
    command(principal, state, key, env, headers, body.reason, Command::Pause).await
}

/// Lets a paused plan move on: the current stage's exposure is applied again (undoing a
/// dial-down) and its dwell restarts.
#[utoipa::path(
    post,
    path = "/api/v1/flags/{key}/environments/{env}/plan/resume",
    tag = "releases",
    operation_id = "resumePlan",
    params(("key" = String, Path, description = "The flag key"), ("env" = String, Path, description = "The environment")),
    request_body(content = ReasonOnly, description = "Optional"),
    responses(
        (status = 200, description = "What changed", body = Outcome),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No plan there", body = doc::ErrorBody),
        (status = 409, description = "The plan is not paused", body = doc::ErrorBody),
    )
)]
async fn resume(
    principal: Principal,
    State(state): State<AppState>,
    Path((key, env)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: ReasonOnly = optional_body(&body)?;
    command(principal, state, key, env, headers, body.reason, Command::Resume).await
}

/// Rollback: to the previous stage (the plan is paused there), or with `to_zero` to no exposure
/// at all (the plan ends).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollbackBody {
    /// Back to 0% and end the plan, instead of one stage back.
    #[serde(default)]
    to_zero: bool,
    /// Why, for the audit log.
    #[serde(default)]
    reason: Option<String>,
}

/// Rolls the plan back one stage (and pauses it), or to 0% (ending it).
#[utoipa::path(
    post,
    path = "/api/v1/flags/{key}/environments/{env}/plan/rollback",
    tag = "releases",
    operation_id = "rollbackPlan",
    params(("key" = String, Path, description = "The flag key"), ("env" = String, Path, description = "The environment")),
    request_body(content = RollbackBody, description = "Optional"),
    responses(
        (status = 200, description = "What changed", body = Outcome),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No plan there", body = doc::ErrorBody),
        (status = 409, description = "The plan is over", body = doc::ErrorBody),
    )
)]
async fn rollback(
    principal: Principal,
    State(state): State<AppState>,
    Path((key, env)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: RollbackBody = optional_body(&body)?;
    command(principal, state, key, env, headers, body.reason, Command::Rollback { to_zero: body.to_zero }).await
}

fn required_reason(headers: &HeaderMap, body: Option<&str>) -> Result<String, ApiError> {
    super::reason(headers, body).ok_or_else(|| {
        invalid("reason", "required: say why (X-Dimmer-Reason header or a \"reason\" field), for the audit log")
    })
}

/// Switches the flag off in the environment: everyone gets the off variant. Needs no plan,
/// pauses a running one, is idempotent.
#[utoipa::path(
    post,
    path = "/api/v1/flags/{key}/environments/{env}/kill",
    tag = "releases",
    operation_id = "killFlag",
    params(
        ("key" = String, Path, description = "The flag key"),
        ("env" = String, Path, description = "The environment"),
        ("X-Dimmer-Reason" = Option<String>, Header, description = "Why (required here or in the body)"),
    ),
    request_body(content = ReasonOnly, description = "The reason, unless in the header"),
    responses(
        (status = 409, description = "The flag is archived: restore the flag first", body = doc::ErrorBody),
        (status = 200, description = "What changed (`changed: false` when it was already off)", body = Outcome),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such flag or environment", body = doc::ErrorBody),
        (status = 422, description = "No reason given", body = doc::ErrorBody),
    )
)]
async fn kill(
    principal: Principal,
    State(state): State<AppState>,
    Path((key, env)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let body: ReasonOnly = optional_body(&body)?;
    let reason = required_reason(&headers, body.reason.as_deref())?;
    let meta = principal.meta(Some(reason));
    answer(&state, state.releases.kill(&key, &env, &meta).await).await
}

/// A dial-down: the target exposure.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DialDownBody {
    /// The exposure to cut to, in percent (0 to 100, up to three decimals).
    to: Option<f64>,
    /// Why (required here or in `X-Dimmer-Reason`).
    #[serde(default)]
    reason: Option<String>,
}

/// Cuts the exposure to `to` percent: never widens, drops canary segments, needs no plan,
/// pauses a running one, is idempotent. Everyone still exposed was exposed before.
#[utoipa::path(
    post,
    path = "/api/v1/flags/{key}/environments/{env}/dial-down",
    tag = "releases",
    operation_id = "dialDownFlag",
    params(
        ("key" = String, Path, description = "The flag key"),
        ("env" = String, Path, description = "The environment"),
        ("X-Dimmer-Reason" = Option<String>, Header, description = "Why (required here or in the body)"),
    ),
    request_body = DialDownBody,
    responses(
        (status = 409, description = "The flag is archived: restore the flag first", body = doc::ErrorBody),
        (status = 200, description = "What changed (`changed: false` when already at or below)", body = Outcome),
        (status = 400, description = "Not JSON", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such flag or environment", body = doc::ErrorBody),
        (status = 422, description = "No reason, or `to` missing or out of range", body = doc::ErrorBody),
    )
)]
async fn dial_down(
    principal: Principal,
    State(state): State<AppState>,
    Path((key, env)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let body: DialDownBody = optional_body(&body)?;
    let to = body.to.ok_or_else(|| invalid("to", "required: the exposure to cut to, in percent"))?;
    let scaled = (to * 1000.0).round();
    if !to.is_finite() || !(0.0..=100.0).contains(&to) || (to * 1000.0 - scaled).abs() > 1e-6 {
        return Err(invalid("to", &format!("{to} is not a percentage from 0 to 100 with at most three decimals")));
    }
    // In 0..=100000 and whole, checked just above: the conversion is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "range checked above")]
    let weight = scaled as u32;
    let reason = required_reason(&headers, body.reason.as_deref())?;
    let meta = principal.meta(Some(reason));
    answer(&state, state.releases.dial_down(&key, &env, weight, &meta).await).await
}

/// Undoes the kills and dial-downs since the last restore: back to the state before the first.
/// A paused plan stays paused (resume it). Idempotent.
#[utoipa::path(
    post,
    path = "/api/v1/flags/{key}/environments/{env}/restore",
    tag = "releases",
    operation_id = "restoreFlag",
    params(
        ("key" = String, Path, description = "The flag key"),
        ("env" = String, Path, description = "The environment"),
        ("X-Dimmer-Reason" = Option<String>, Header, description = "Why, for the audit log"),
    ),
    request_body(content = ReasonOnly, description = "Optional"),
    responses(
        (status = 409, description = "The flag is archived: restore the flag first", body = doc::ErrorBody),
        (status = 200, description = "What changed (`changed: false` when there was nothing to restore)", body = Outcome),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such flag or environment", body = doc::ErrorBody),
    )
)]
async fn restore(
    principal: Principal,
    State(state): State<AppState>,
    Path((key, env)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let body: ReasonOnly = optional_body(&body)?;
    let meta = meta(&principal, &headers, body.reason.as_deref());
    answer(&state, state.releases.restore(&key, &env, &meta).await).await
}

/// A plan template as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TemplateView<'a> {
    /// Its name.
    name: &'a str,
    /// What it is for.
    description: &'a str,
    /// Its stages.
    stages: Vec<StageView>,
    /// Flag kinds for which it is the default template.
    #[schema(value_type = Vec<doc::FlagKind>)]
    default_for: &'a [dimmer_engine::FlagKind],
    /// Whether it is one of the built-in templates, unchanged.
    builtin: bool,
}

impl<'a> From<&'a Template> for TemplateView<'a> {
    fn from(t: &'a Template) -> Self {
        Self {
            name: &t.name,
            description: &t.description,
            stages: t.stages.iter().map(StageView::of).collect(),
            default_for: &t.default_for,
            builtin: release::builtin_templates().iter().any(|b| b == t),
        }
    }
}

/// `GET /api/v1/templates`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TemplateList<'a> {
    /// The built-in templates and the stored ones.
    templates: Vec<TemplateView<'a>>,
}

/// Plan templates: the built-in ones and those stored on the server.
#[utoipa::path(
    get,
    path = "/api/v1/templates",
    tag = "releases",
    operation_id = "listTemplates",
    responses(
        (status = 200, description = "The templates", body = TemplateList),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token", body = doc::ErrorBody),
    )
)]
async fn list_templates(principal: Principal, State(state): State<AppState>) -> Result<Response, ApiError> {
    principal.require_read()?;
    let templates = state.releases.templates().await?;
    Ok(Json(TemplateList { templates: templates.iter().map(TemplateView::from).collect() }).into_response())
}

/// A new (or replacing) template.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTemplate {
    /// 1 to 64 letters, digits, '-' or '_'.
    name: String,
    /// What it is for.
    #[serde(default)]
    description: String,
    /// Stages such as `internal,1%,5%,100%` (a stage may carry its own dwell: `5%@2h`).
    stages: String,
    /// The minimum dwell of each stage, such as `30m` (default `1h`).
    #[serde(default)]
    dwell: Option<String>,
    /// Flag kinds for which this is the default template.
    #[serde(default)]
    #[schema(value_type = Vec<doc::FlagKind>)]
    default_for: Vec<dimmer_engine::FlagKind>,
    /// Why, for the audit log.
    #[serde(default)]
    reason: Option<String>,
}

/// Creates or replaces a template (admin only); a stored template replaces a built-in one of the
/// same name.
#[utoipa::path(
    post,
    path = "/api/v1/templates",
    tag = "releases",
    operation_id = "createTemplate",
    request_body = NewTemplate,
    responses(
        (status = 201, description = "The template", body = TemplateView),
        (status = 400, description = "Not JSON, or unknown fields", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin token", body = doc::ErrorBody),
        (status = 422, description = "A bad name, stages or dwell", body = doc::ErrorBody),
    )
)]
async fn create_template(
    principal: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<NewTemplate>,
) -> Result<Response, ApiError> {
    principal.require(&[])?;
    if body.name.is_empty()
        || body.name.len() > 64
        || !body.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid("name", "1 to 64 letters, digits, '-' or '_'"));
    }
    let dwell = release::parse_duration(body.dwell.as_deref().unwrap_or("1h")).map_err(ReleaseError::from)?;
    let stages = release::parse_stages(&body.stages, dwell).map_err(ReleaseError::from)?;
    let template = Template { name: body.name, description: body.description, stages, default_for: body.default_for };
    let meta = meta(&principal, &headers, body.reason.as_deref());
    state.store.put_template(&template, &meta).await?;
    Ok((axum::http::StatusCode::CREATED, Json(TemplateView::from(&template))).into_response())
}
