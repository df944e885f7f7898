//! Admin API for flags: create, read, update (with `If-Match`), list, archive, restore, and the
//! per-environment shortcuts (replace one environment's configuration, toggle on/off).

use crate::api::extract::{Path, Query};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use dimmer_engine::Flag;
use dimmer_engine::model::EnvironmentConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::policy::Check;
use super::schemas as doc;
use crate::api::AppState;
use crate::api::auth::Principal;
use crate::api::error::{ApiError, Code, FieldError, Json};
use dimmer_store::{FlagRecord, StoreError};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/flags", get(list).post(create))
        .route("/api/v1/flags/{key}", get(read).put(update))
        .route("/api/v1/flags/{key}/archive", post(archive))
        .route("/api/v1/flags/{key}/restore", post(restore))
        .route("/api/v1/flags/{key}/environments/{env}", put(put_environment))
        .route("/api/v1/flags/{key}/environments/{env}/toggle", post(toggle))
}

/// A flag as the API shows it: the model's fields plus key, version and bookkeeping. Documented
/// as `doc::FlagView`, whose schema is derived from the engine's JSON Schema.
#[derive(Debug, Serialize)]
pub(crate) struct FlagView<'a> {
    key: &'a str,
    version: i64,
    archived: bool,
    created_at: i64,
    updated_at: i64,
    #[serde(flatten)]
    flag: &'a Flag,
}

impl<'a> From<&'a FlagRecord> for FlagView<'a> {
    fn from(r: &'a FlagRecord) -> Self {
        Self {
            key: &r.key,
            version: r.version,
            archived: r.archived,
            created_at: r.created_at,
            updated_at: r.updated_at,
            flag: &r.flag,
        }
    }
}

/// `GET /api/v1/flags`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct FlagList<'a> {
    /// Flags by key.
    #[schema(value_type = Vec<doc::FlagView>)]
    flags: Vec<FlagView<'a>>,
}

/// A response carrying a flag and its version as ETag.
fn flag_response(status: StatusCode, record: &FlagRecord) -> Response {
    super::versioned(status, FlagView::from(record), record.version)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Include archived flags.
    #[serde(default)]
    archived: bool,
}

/// Lists flags by key; archived ones only with `?archived=true`.
#[utoipa::path(
    get,
    path = "/api/v1/flags",
    tag = "flags",
    operation_id = "listFlags",
    params(ListQuery),
    responses(
        (status = 200, description = "The flags", body = FlagList),
        (status = 400, description = "A malformed query", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token", body = doc::ErrorBody),
    )
)]
async fn list(
    principal: Principal,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    let flags = state.store.list_flags(q.archived).await?;
    Ok(Json(FlagList { flags: flags.iter().map(FlagView::from).collect() }).into_response())
}

/// One flag, archived or not.
#[utoipa::path(
    get,
    path = "/api/v1/flags/{key}",
    tag = "flags",
    operation_id = "getFlag",
    params(("key" = String, Path, description = "The flag key (percent-encoded if need be)")),
    responses(
        (status = 200, description = "The flag", body = doc::FlagView,
            headers(("ETag" = String, description = "The flag's version, `\"N\"`"))),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such flag", body = doc::ErrorBody),
    )
)]
async fn read(
    principal: Principal,
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    let record = state.store.get_flag(&key).await?.ok_or_else(|| ApiError::not_found("flag", &key))?;
    Ok(flag_response(StatusCode::OK, &record))
}

/// Checks a flag or segment key's form (`dimmer_engine::keys`): keys travel in URLs, in code and
/// in terminals, so only characters that survive all three are accepted.
pub(super) fn check_key(key: &str) -> Result<(), ApiError> {
    dimmer_engine::keys::check_key(key).map_err(|e| {
        ApiError::new(Code::ValidationFailed, format!("key: {e}"))
            .with_errors(vec![FieldError::new("key", e.to_string())])
    })
}

/// Validates `flag` as it would be stored: known environments, and the engine's compile step
/// in every environment against the other flags and the segments. `policy_errors` (the flag
/// policy's violations) come first in one 422 with the rest, so a caller sees every problem.
async fn validate(state: &AppState, key: &str, flag: &Flag, policy_errors: Vec<FieldError>) -> Result<(), ApiError> {
    let envs = state.store.list_environments().await?;
    let mut errors = policy_errors;
    for name in flag.environments.keys() {
        if !envs.iter().any(|e| &e.name == name) {
            errors.push(FieldError::new(format!("environments.{name}"), format!("unknown environment \"{name}\"")));
        }
    }
    let set = crate::service::validation::set_for_flag(state.store.as_ref(), key, flag).await?;
    let prefix = format!("flags{}", dimmer_engine::compile::path_key(key));
    let names: Vec<String> = envs.iter().map(|e| e.name.clone()).collect();
    for entry in crate::service::validation::engine_errors(&set, &names, &prefix).iter().map(FieldError::from_engine) {
        if !errors.contains(&entry) {
            errors.push(entry);
        }
    }
    super::policy::refuse(errors)
}

/// Creates a flag at version 1; a new boolean flag is off everywhere.
///
/// The flag is validated through the engine's compile step in every environment.
#[utoipa::path(
    post,
    path = "/api/v1/flags",
    tag = "flags",
    operation_id = "createFlag",
    params(("X-Dimmer-Reason" = Option<String>, Header, description = "Why, for the audit log (takes precedence over the body's `reason`)")),
    request_body = doc::FlagCreate,
    responses(
        (status = 201, description = "Created", body = doc::FlagView,
            headers(("ETag" = String, description = "The flag's version, `\"1\"`"))),
        (status = 400, description = "Not JSON, or not a flag (the message names the field)", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 409, description = "The key is taken (archived flags included)", body = doc::ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = doc::ErrorBody),
        (status = 422, description = "Invalid key or flag; `details.errors` lists every `{path, message}`", body = doc::ErrorBody),
    )
)]
async fn create(
    principal: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let record = create_flag(&state, &principal, &headers, body).await?;
    Ok(flag_response(StatusCode::CREATED, &record))
}

/// Creates a flag from a create body, as `POST /api/v1/flags` does: scope, key, policy and
/// engine checks, the audited write, the snapshot refresh. Shared with the web console so that a
/// flag made there passes exactly the same checks.
pub(crate) async fn create_flag(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    body: Value,
) -> Result<FlagRecord, ApiError> {
    principal.require_write()?;
    let kind_declared = dimmer_engine::policy::declares_kind(&body);
    let (key, reason, flag) = super::split_document::<Flag>(body)?;
    let key = key.ok_or_else(|| {
        ApiError::new(Code::ValidationFailed, "key: required").with_errors(vec![FieldError::new("key", "required")])
    })?;
    check_key(&key)?;
    let policy = super::policy::violations(state, &key, &flag, Check::Create { kind_declared }).await?;
    validate(state, &key, &flag, policy).await?;
    let meta = principal.meta(super::reason(headers, reason.as_deref()));
    let record = state.store.create_flag(&key, &flag, &meta).await?;
    super::publish(state).await;
    Ok(record)
}

/// Replaces a flag's definition, if `If-Match` names its current version.
#[utoipa::path(
    put,
    path = "/api/v1/flags/{key}",
    tag = "flags",
    operation_id = "updateFlag",
    params(
        ("key" = String, Path, description = "The flag key"),
        ("If-Match" = String, Header, description = "The version read (`ETag` of a GET): `\"3\"`, `3` or `W/\"3\"`"),
        ("X-Dimmer-Reason" = Option<String>, Header, description = "Why, for the audit log (takes precedence over the body's `reason`)"),
    ),
    request_body = doc::FlagUpdate,
    responses(
        (status = 200, description = "Updated", body = doc::FlagView,
            headers(("ETag" = String, description = "The flag's new version"))),
        (status = 400, description = "Not JSON, not a flag, or a malformed `If-Match`", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such flag", body = doc::ErrorBody),
        (status = 412, description = "`If-Match` is stale; `details.current` and `ETag` give the current version", body = doc::ErrorBody,
            headers(("ETag" = String, description = "The current version"))),
        (status = 413, description = "The body is over 1 MiB", body = doc::ErrorBody),
        (status = 422, description = "Invalid flag, or a body key that differs from the URL's", body = doc::ErrorBody),
        (status = 428, description = "No `If-Match`", body = doc::ErrorBody),
    )
)]
async fn update(
    principal: Principal,
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let expected = super::require_if_match(&headers)?;
    let kind_declared = dimmer_engine::policy::declares_kind(&body);
    let (body_key, reason, flag) = super::split_document::<Flag>(body)?;
    if body_key.as_deref().is_some_and(|k| k != key) {
        return Err(ApiError::new(
            Code::ValidationFailed,
            "key: the body's key differs from the URL's; keys cannot change",
        ));
    }
    let reason = super::reason(&headers, reason.as_deref());
    let record = replace_flag(&state, &principal, &key, &flag, kind_declared, expected, reason).await?;
    Ok(flag_response(StatusCode::OK, &record))
}

/// Replaces a flag's definition as `PUT /api/v1/flags/{key}` does: scope, policy (with the
/// flag before the change) and engine checks, the audited write conditional on `expected`, the
/// snapshot refresh. Shared with the web console's variant editor.
pub(crate) async fn replace_flag(
    state: &AppState,
    principal: &Principal,
    key: &str,
    flag: &Flag,
    kind_declared: bool,
    expected: i64,
    reason: Option<String>,
) -> Result<FlagRecord, ApiError> {
    principal.require_write()?;
    let before = state.store.get_flag(key).await?.ok_or_else(|| ApiError::not_found("flag", key))?;
    let policy =
        super::policy::violations(state, key, flag, Check::Update { before: &before.flag, kind_declared }).await?;
    validate(state, key, flag, policy).await?;
    let record = state.store.update_flag(key, flag, expected, &principal.meta(reason)).await?;
    super::publish(state).await;
    Ok(record)
}

/// The optional body of archive and restore.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReasonBody {
    /// Why, for the audit log (the `X-Dimmer-Reason` header takes precedence).
    #[serde(default)]
    reason: Option<String>,
}

async fn set_archived(
    principal: Principal,
    state: AppState,
    key: String,
    headers: HeaderMap,
    body: Bytes,
    archived: bool,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let expected = super::if_match(&headers)?;
    // The body is optional here: an empty one carries no reason.
    let reason = crate::api::error::optional_json_object::<ReasonBody>(&body)?.reason;
    let meta = principal.meta(super::reason(&headers, reason.as_deref()));
    let record = state.store.set_flag_archived(&key, archived, expected, &meta).await?;
    super::publish(&state).await;
    Ok(flag_response(StatusCode::OK, &record))
}

/// Archives a flag: it leaves SDK snapshots. `If-Match` is optional.
#[utoipa::path(
    post,
    path = "/api/v1/flags/{key}/archive",
    tag = "flags",
    operation_id = "archiveFlag",
    params(
        ("key" = String, Path, description = "The flag key"),
        ("If-Match" = Option<String>, Header, description = "Optional: the version read"),
        ("X-Dimmer-Reason" = Option<String>, Header, description = "Why, for the audit log (takes precedence over the body's `reason`)"),
    ),
    request_body(content = ref("#/components/schemas/ReasonBody"), description = "Optional; an empty body carries no reason"),
    responses(
        (status = 200, description = "Archived (or already archived)", body = doc::FlagView,
            headers(("ETag" = String, description = "The flag's version"))),
        (status = 400, description = "A malformed body or `If-Match`", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such flag", body = doc::ErrorBody),
        (status = 412, description = "`If-Match` is stale", body = doc::ErrorBody,
            headers(("ETag" = String, description = "The current version"))),
    )
)]
async fn archive(
    principal: Principal,
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    set_archived(principal, state, key, headers, body, true).await
}

/// Restores an archived flag. `If-Match` is optional.
#[utoipa::path(
    post,
    path = "/api/v1/flags/{key}/restore",
    tag = "flags",
    operation_id = "restoreFlag",
    params(
        ("key" = String, Path, description = "The flag key"),
        ("If-Match" = Option<String>, Header, description = "Optional: the version read"),
        ("X-Dimmer-Reason" = Option<String>, Header, description = "Why, for the audit log (takes precedence over the body's `reason`)"),
    ),
    request_body(content = ref("#/components/schemas/ReasonBody"), description = "Optional; an empty body carries no reason"),
    responses(
        (status = 200, description = "Restored (or not archived)", body = doc::FlagView,
            headers(("ETag" = String, description = "The flag's version"))),
        (status = 400, description = "A malformed body or `If-Match`", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such flag", body = doc::ErrorBody),
        (status = 412, description = "`If-Match` is stale", body = doc::ErrorBody,
            headers(("ETag" = String, description = "The current version"))),
    )
)]
async fn restore(
    principal: Principal,
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    set_archived(principal, state, key, headers, body, false).await
}

/// Replaces one environment's configuration (targeting, rules, default serve), with `If-Match`.
#[utoipa::path(
    put,
    path = "/api/v1/flags/{key}/environments/{env}",
    tag = "flags",
    operation_id = "putFlagEnvironment",
    params(
        ("key" = String, Path, description = "The flag key"),
        ("env" = String, Path, description = "The environment name"),
        ("If-Match" = String, Header, description = "The flag version read: `\"3\"`, `3` or `W/\"3\"`"),
        ("X-Dimmer-Reason" = Option<String>, Header, description = "Why, for the audit log (takes precedence over the body's `reason`)"),
    ),
    request_body = doc::EnvironmentConfigUpdate,
    responses(
        (status = 200, description = "Updated", body = doc::FlagView,
            headers(("ETag" = String, description = "The flag's new version"))),
        (status = 400, description = "Not JSON, not an environment configuration, or a malformed `If-Match`", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such flag", body = doc::ErrorBody),
        (status = 412, description = "`If-Match` is stale", body = doc::ErrorBody,
            headers(("ETag" = String, description = "The current version"))),
        (status = 413, description = "The body is over 1 MiB", body = doc::ErrorBody),
        (status = 422, description = "Invalid configuration or unknown environment; `details.errors` lists them", body = doc::ErrorBody),
        (status = 428, description = "No `If-Match`", body = doc::ErrorBody),
    )
)]
async fn put_environment(
    principal: Principal,
    State(state): State<AppState>,
    Path((key, env)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let expected = super::require_if_match(&headers)?;
    let (_, reason, config) = super::split_document::<EnvironmentConfig>(body)?;
    let reason = super::reason(&headers, reason.as_deref());
    let record = replace_environment(&state, &principal, &key, env, config, expected, reason).await?;
    Ok(flag_response(StatusCode::OK, &record))
}

/// Replaces one environment's configuration as `PUT /api/v1/flags/{key}/environments/{env}`
/// does: scope, policy and engine checks, the audited write conditional on `expected` (the
/// version read), the snapshot refresh. Shared with the web console (its editor and "revert to
/// this version") so that a change made there passes exactly the same checks.
pub(crate) async fn replace_environment(
    state: &AppState,
    principal: &Principal,
    key: &str,
    env: String,
    config: EnvironmentConfig,
    expected: i64,
    reason: Option<String>,
) -> Result<FlagRecord, ApiError> {
    principal.require_write()?;
    let mut record = state.store.get_flag(key).await?.ok_or_else(|| ApiError::not_found("flag", key))?;
    let before = record.flag.clone();
    record.flag.environments.insert(env, config);
    let policy = super::policy::violations(state, key, &record.flag, Check::Exposure { before: &before }).await?;
    validate(state, key, &record.flag, policy).await?;
    let meta = principal.meta(reason);
    let record = state.store.update_flag(key, &record.flag, expected, &meta).await?;
    super::publish(state).await;
    Ok(record)
}

/// Turns a flag on or off in one environment.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ToggleBody {
    /// On or off.
    enabled: bool,
    /// Why, for the audit log (the `X-Dimmer-Reason` header takes precedence).
    #[serde(default)]
    reason: Option<String>,
}

/// Turns a flag on or off in one environment. Idempotent, and it never fails on a concurrent
/// edit: it re-reads and retries, because switching off must always go through.
#[utoipa::path(
    post,
    path = "/api/v1/flags/{key}/environments/{env}/toggle",
    tag = "flags",
    operation_id = "toggleFlag",
    params(
        ("key" = String, Path, description = "The flag key"),
        ("env" = String, Path, description = "The environment name"),
        ("X-Dimmer-Reason" = Option<String>, Header, description = "Why, for the audit log (takes precedence over the body's `reason`)"),
    ),
    request_body = ToggleBody,
    responses(
        (status = 200, description = "The flag, now on or off there", body = doc::FlagView,
            headers(("ETag" = String, description = "The flag's version"))),
        (status = 400, description = "Not JSON or not `{\"enabled\": bool}`", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such flag or environment", body = doc::ErrorBody),
        (status = 412, description = "The flag kept changing through 16 attempts", body = doc::ErrorBody),
    )
)]
async fn toggle(
    principal: Principal,
    State(state): State<AppState>,
    Path((key, env)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<ToggleBody>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    if !state.store.list_environments().await?.iter().any(|e| e.name == env) {
        return Err(ApiError::not_found("environment", &env));
    }
    let meta = principal.meta(super::reason(&headers, body.reason.as_deref()));
    for _ in 0..16 {
        let mut record = state.store.get_flag(&key).await?.ok_or_else(|| ApiError::not_found("flag", &key))?;
        let before = record.flag.clone();
        let config = record.flag.environments.entry(env.clone()).or_default();
        if config.enabled == body.enabled {
            return Ok(flag_response(StatusCode::OK, &record));
        }
        config.enabled = body.enabled;
        if body.enabled {
            // Switching on can expose everyone at once; switching off is never refused.
            let check = Check::Exposure { before: &before };
            super::policy::refuse(super::policy::violations(&state, &key, &record.flag, check).await?)?;
        }
        match state.store.update_flag(&key, &record.flag, record.version, &meta).await {
            Ok(updated) => {
                super::publish(&state).await;
                return Ok(flag_response(StatusCode::OK, &updated));
            }
            Err(StoreError::VersionMismatch { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(Code::VersionMismatch, "the flag kept changing; try again"))
}
