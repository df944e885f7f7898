//! The flag policy over HTTP: the effective policy (`GET /api/v1/policy`), each flag's lifecycle
//! (`GET /api/v1/lifecycle`), and the policy check that flag writes go through.

use crate::api::extract::Query;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dimmer_engine::Flag;
use dimmer_engine::policy::{PolicyFile, Reason, State as LifecycleState, Violation, kind_name};
use serde::{Deserialize, Serialize};

use super::schemas as doc;
use crate::api::AppState;
use crate::api::auth::Principal;
use crate::api::error::{ApiError, Code, FieldError, Json};
use dimmer_domain::release::Status;
use dimmer_store::Scope;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/policy", get(show)).route("/api/v1/lifecycle", get(list))
}

/// `GET /api/v1/policy`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PolicyView {
    /// True when no policy file was given and the default policy applies.
    default: bool,
    /// The effective policy in the shape of `dimmer-policy.yaml` (docs/POLICY.md), defaults
    /// filled in: `version`, `naming`, `required`, `kinds`, `release_plans`, `stale`.
    #[schema(value_type = Object)]
    policy: PolicyFile,
}

/// The policy the server enforces, in the shape of a policy file, defaults filled in.
#[utoipa::path(
    get,
    path = "/api/v1/policy",
    tag = "policy",
    operation_id = "getPolicy",
    responses(
        (status = 200, description = "The effective policy", body = PolicyView),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
    )
)]
async fn show(principal: Principal, State(state): State<AppState>) -> Result<Response, ApiError> {
    // Any token: SDK and CI tokens check flag files against the same rules.
    principal.require(&[Scope::Writer, Scope::Reader, Scope::Sdk])?;
    let p = &state.policy;
    Ok(Json(PolicyView { default: p.source.is_none(), policy: p.policy.to_file() }).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct LifecycleQuery {
    /// Only this environment's configuration counts (default: every environment).
    env: Option<String>,
    /// Only flags in this state: new, rolling-out, released, stale or archived.
    #[param(pattern = "^(new|rolling-out|released|stale|archived)$")]
    state: Option<String>,
}

/// `GET /api/v1/lifecycle`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LifecycleList<'a> {
    /// The server's time of the decision, Unix milliseconds.
    now: i64,
    /// One entry per flag, by key.
    flags: Vec<LifecycleEntry<'a>>,
}

/// One flag's lifecycle.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LifecycleEntry<'a> {
    /// The flag key.
    key: &'a str,
    /// The flag's kind.
    #[schema(value_type = doc::FlagKind)]
    kind: &'static str,
    /// Who owns the flag, if the flag says.
    owner: Option<&'a str>,
    /// When the flag's definition last changed, Unix milliseconds.
    updated_at: i64,
    /// `new`, `rolling-out`, `released`, `stale` or `archived`.
    #[schema(value_type = String)]
    state: LifecycleState,
    /// The state apart from staleness (`new`, `rolling-out`, `released` or `archived`).
    #[schema(value_type = String)]
    phase: LifecycleState,
    /// Why the flag is stale; empty otherwise.
    reasons: Vec<StaleReason<'a>>,
    /// Since when the flag has been released, Unix milliseconds, or null.
    released_since: Option<i64>,
    /// Whole days since creation.
    age_days: i64,
}

/// Why a flag is stale.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StaleReason<'a> {
    /// The rule: `past_lifetime`, `released_untouched` or `no_evaluations`.
    rule: &'static str,
    /// In words, with the numbers.
    message: &'a str,
}

impl<'a> From<&'a Reason> for StaleReason<'a> {
    fn from(r: &'a Reason) -> Self {
        Self { rule: r.rule, message: &r.message }
    }
}

/// Every flag's lifecycle, decided from facts: exposure now and in the audit log's history,
/// age against its kind's lifetime, and (once metrics are wired) its last evaluation.
#[utoipa::path(
    get,
    path = "/api/v1/lifecycle",
    tag = "policy",
    operation_id = "listLifecycle",
    params(LifecycleQuery),
    responses(
        (status = 200, description = "Each flag's state and, for stale ones, why", body = LifecycleList),
        (status = 400, description = "A malformed query", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such environment", body = doc::ErrorBody),
    )
)]
async fn list(
    principal: Principal,
    State(state): State<AppState>,
    Query(q): Query<LifecycleQuery>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    const STATES: [&str; 5] = ["new", "rolling-out", "released", "stale", "archived"];
    if let Some(s) = &q.state
        && !STATES.contains(&s.as_str())
    {
        return Err(ApiError::new(
            Code::MalformedRequest,
            format!("state: \"{s}\" is not one of {}", STATES.join(", ")),
        ));
    }
    if let Some(env) = &q.env
        && !state.store.list_environments().await?.iter().any(|e| &e.name == env)
    {
        return Err(ApiError::not_found("environment", env));
    }
    let now = state.clock.now_ms();
    let all =
        crate::service::policy::lifecycles(state.store.as_ref(), &state.policy.policy, now, q.env.as_deref()).await?;
    let flags = all
        .iter()
        .filter(|(_, l)| q.state.as_deref().is_none_or(|s| s == l.state.name()))
        .map(|(r, l)| LifecycleEntry {
            key: &r.key,
            kind: kind_name(r.kind),
            owner: r.owner.as_deref(),
            updated_at: r.updated_at,
            state: l.state,
            phase: l.phase,
            reasons: l.reasons.iter().map(StaleReason::from).collect(),
            released_since: l.released_since,
            age_days: l.age_days,
        })
        .collect();
    Ok(Json(LifecycleList { now, flags }).into_response())
}

/// What a flag write is checked for.
pub(super) enum Check<'a> {
    /// A new flag: key, fields and exposure. `kind_declared`: the body wrote `kind` out.
    Create { kind_declared: bool },
    /// A new definition: fields and exposure (keys cannot change, so key rules were settled at
    /// creation).
    Update { before: &'a Flag, kind_declared: bool },
    /// One environment's configuration or switch: exposure only.
    Exposure { before: &'a Flag },
}

/// The policy's violations of a write, as entries of `details.errors` naming their rule. A release plan counts as running when it is running or paused (and carries
/// guards, where the rule requires them).
pub(super) async fn violations(
    state: &AppState,
    key: &str,
    after: &Flag,
    check: Check<'_>,
) -> Result<Vec<FieldError>, ApiError> {
    let policy = &state.policy.policy;
    let (mut found, before): (Vec<Violation>, Option<&Flag>) = match check {
        Check::Create { kind_declared } => (policy.check_new_flag(key, after, kind_declared), None),
        Check::Update { before, kind_declared } => (policy.check_fields(after, kind_declared), Some(before)),
        Check::Exposure { before } => (Vec::new(), Some(before)),
    };
    let without_plans = policy.check_exposure(before, after, |_| false);
    if !without_plans.is_empty() {
        // Only now ask the store: most writes raise no exposure past a threshold.
        let mut running = Vec::new();
        for rule in policy.plan_rules() {
            for env in &rule.environments {
                if let Some(plan) = state.store.get_plan(key, env).await?
                    && matches!(plan.state.status, Status::Running | Status::Paused)
                    && (!rule.require_guards || !plan.plan.guards.is_empty())
                {
                    running.push(env.clone());
                }
            }
        }
        found.extend(policy.check_exposure(before, after, |env| running.iter().any(|r| r == env)));
    }
    Ok(found.into_iter().map(violation).collect())
}

/// A policy violation as an entry of `details.errors`.
pub(super) fn violation(v: Violation) -> FieldError {
    FieldError { path: v.path, rule: Some(v.rule), message: v.message }
}

/// A 422 naming every violated rule, or nothing.
pub(super) fn refuse(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        return Ok(());
    }
    let summary: Vec<String> = errors
        .iter()
        .map(|e| {
            let rule = e.rule.map(|r| format!(" [{r}]")).unwrap_or_default();
            format!("{}: {}{rule}", e.path, e.message)
        })
        .collect();
    Err(ApiError::new(Code::ValidationFailed, summary.join("; ")).with_errors(errors))
}
