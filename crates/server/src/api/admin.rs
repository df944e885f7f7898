//! Admin API beyond flags: environments, segments, tokens and the audit log.

use crate::api::extract::{Path, Query};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use dimmer_engine::{FlagSet, Segment};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schemas as doc;
use crate::api::AppState;
use crate::api::auth::Principal;
use crate::api::error::{ApiError, Code, Details, FieldError, Json};
use crate::service::tokens;
use dimmer_store::{AuditBounds, AuditEntry, AuditFilter, Environment, Scope, SegmentRecord, TokenRecord};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/environments", get(list_environments).post(create_environment))
        .route("/api/v1/segments", get(list_segments).post(create_segment))
        .route("/api/v1/segments/{key}", get(read_segment).put(update_segment).delete(delete_segment))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{name}", delete(revoke_token))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/audit/{id}", get(audit_entry))
}

/// `GET /api/v1/environments`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EnvironmentList {
    /// Environments by name.
    environments: Vec<Environment>,
}

/// Every environment and its revision.
#[utoipa::path(
    get,
    path = "/api/v1/environments",
    tag = "environments",
    operation_id = "listEnvironments",
    responses(
        (status = 200, description = "The environments", body = EnvironmentList),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token", body = doc::ErrorBody),
    )
)]
async fn list_environments(principal: Principal, State(state): State<AppState>) -> Result<Response, ApiError> {
    principal.require_read()?;
    let environments = state.store.list_environments().await?;
    Ok(Json(EnvironmentList { environments }).into_response())
}

/// A new environment.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewEnvironment {
    /// 1 to 64 letters, digits, '-' or '_'.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    name: String,
    /// Why, for the audit log (the `X-Dimmer-Reason` header takes precedence).
    #[serde(default)]
    reason: Option<String>,
}

/// Adds an environment (admin only).
#[utoipa::path(
    post,
    path = "/api/v1/environments",
    tag = "environments",
    operation_id = "createEnvironment",
    params(("X-Dimmer-Reason" = Option<String>, Header, description = "Why, for the audit log (takes precedence over the body's `reason`)")),
    request_body = NewEnvironment,
    responses(
        (status = 201, description = "Created at revision 0", body = Environment),
        (status = 400, description = "Not JSON or not of this shape", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin token", body = doc::ErrorBody),
        (status = 409, description = "The name is taken", body = doc::ErrorBody),
        (status = 422, description = "An invalid name", body = doc::ErrorBody),
    )
)]
async fn create_environment(
    principal: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<NewEnvironment>,
) -> Result<Response, ApiError> {
    principal.require(&[])?;
    let valid = !body.name.is_empty()
        && body.name.len() <= 64
        && body.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(ApiError::new(Code::ValidationFailed, "name: 1 to 64 letters, digits, '-' or '_'"));
    }
    let meta = principal.meta(super::reason(&headers, body.reason.as_deref()));
    let env = state.store.create_environment(&body.name, &meta).await?;
    Ok((StatusCode::CREATED, Json(env)).into_response())
}

/// A segment as the API shows it: the model's fields, then key, version and bookkeeping.
/// Documented as `doc::SegmentView`, whose schema is derived from the engine's JSON Schema.
#[derive(Debug, Serialize)]
pub(crate) struct SegmentView<'a> {
    #[serde(flatten)]
    segment: &'a Segment,
    key: &'a str,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

impl<'a> From<&'a SegmentRecord> for SegmentView<'a> {
    fn from(r: &'a SegmentRecord) -> Self {
        Self {
            segment: &r.segment,
            key: &r.key,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// `GET /api/v1/segments`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SegmentList<'a> {
    /// Segments by key.
    #[schema(value_type = Vec<doc::SegmentView>)]
    segments: Vec<SegmentView<'a>>,
}

fn segment_response(status: StatusCode, r: &SegmentRecord) -> Response {
    super::versioned(status, SegmentView::from(r), r.version)
}

/// Every segment, by key.
#[utoipa::path(
    get,
    path = "/api/v1/segments",
    tag = "segments",
    operation_id = "listSegments",
    responses(
        (status = 200, description = "The segments", body = SegmentList),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token", body = doc::ErrorBody),
    )
)]
async fn list_segments(principal: Principal, State(state): State<AppState>) -> Result<Response, ApiError> {
    principal.require_read()?;
    let segments = state.store.list_segments().await?;
    Ok(Json(SegmentList { segments: segments.iter().map(SegmentView::from).collect() }).into_response())
}

/// One segment.
#[utoipa::path(
    get,
    path = "/api/v1/segments/{key}",
    tag = "segments",
    operation_id = "getSegment",
    params(("key" = String, Path, description = "The segment key")),
    responses(
        (status = 200, description = "The segment", body = doc::SegmentView,
            headers(("ETag" = String, description = "The segment's version, `\"N\"`"))),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such segment", body = doc::ErrorBody),
    )
)]
async fn read_segment(
    principal: Principal,
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    let r = state.store.get_segment(&key).await?.ok_or_else(|| ApiError::not_found("segment", &key))?;
    Ok(segment_response(StatusCode::OK, &r))
}

/// Validates a segment through the engine, with the other segments (for `in_segment`).
async fn validate_segment(state: &AppState, key: &str, segment: &Segment) -> Result<(), ApiError> {
    let mut set = FlagSet::default();
    for s in state.store.list_segments().await? {
        set.segments.insert(s.key, s.segment);
    }
    set.segments.insert(key.to_owned(), segment.clone());
    let prefix = format!("segments{}", dimmer_engine::compile::path_key(key));
    let errors = crate::service::validation::engine_errors(&set, &["default".to_owned()], &prefix);
    if errors.is_empty() {
        Ok(())
    } else {
        let errors = errors.iter().map(FieldError::from_engine).collect();
        Err(ApiError::new(Code::ValidationFailed, "the segment is invalid").with_errors(errors))
    }
}

/// Creates a segment at version 1, validated through the engine.
#[utoipa::path(
    post,
    path = "/api/v1/segments",
    tag = "segments",
    operation_id = "createSegment",
    params(("X-Dimmer-Reason" = Option<String>, Header, description = "Why, for the audit log (takes precedence over the body's `reason`)")),
    request_body = doc::SegmentCreate,
    responses(
        (status = 201, description = "Created", body = doc::SegmentView,
            headers(("ETag" = String, description = "The segment's version, `\"1\"`"))),
        (status = 400, description = "Not JSON, or not a segment (the message names the field)", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 409, description = "The key is taken", body = doc::ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = doc::ErrorBody),
        (status = 422, description = "No or an invalid key, or an invalid segment; `details.errors` lists them", body = doc::ErrorBody),
    )
)]
async fn create_segment(
    principal: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let (key, reason, segment) = super::split_document::<Segment>(body)?;
    let reason = super::reason(&headers, reason.as_deref());
    let r = create_segment_checked(&state, &principal, key, &segment, reason).await?;
    Ok(segment_response(StatusCode::CREATED, &r))
}

/// Creates a segment as `POST /api/v1/segments` does: scope, key rule, engine validation, the
/// audited write, the snapshot refresh. Shared with the web console so that a segment made
/// there passes exactly the same checks.
pub(crate) async fn create_segment_checked(
    state: &AppState,
    principal: &Principal,
    key: Option<String>,
    segment: &Segment,
    reason: Option<String>,
) -> Result<SegmentRecord, ApiError> {
    principal.require_write()?;
    let key = key.filter(|k| !k.is_empty() && !k.contains('/')).ok_or_else(|| {
        ApiError::new(Code::ValidationFailed, "key: required, without '/'")
            .with_errors(vec![FieldError::new("key", "required")])
    })?;
    super::flags::check_key(&key)?;
    validate_segment(state, &key, segment).await?;
    let r = state.store.create_segment(&key, segment, &principal.meta(reason)).await?;
    super::publish(state).await;
    Ok(r)
}

/// Replaces a segment, if `If-Match` names its current version.
#[utoipa::path(
    put,
    path = "/api/v1/segments/{key}",
    tag = "segments",
    operation_id = "updateSegment",
    params(
        ("key" = String, Path, description = "The segment key"),
        ("If-Match" = String, Header, description = "The version read: `\"3\"`, `3` or `W/\"3\"`"),
        ("X-Dimmer-Reason" = Option<String>, Header, description = "Why, for the audit log (takes precedence over the body's `reason`)"),
    ),
    request_body = doc::SegmentUpdate,
    responses(
        (status = 200, description = "Updated", body = doc::SegmentView,
            headers(("ETag" = String, description = "The segment's new version"))),
        (status = 400, description = "Not JSON, not a segment, or a malformed `If-Match`", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such segment", body = doc::ErrorBody),
        (status = 412, description = "`If-Match` is stale", body = doc::ErrorBody,
            headers(("ETag" = String, description = "The current version"))),
        (status = 413, description = "The body is over 1 MiB", body = doc::ErrorBody),
        (status = 422, description = "An invalid segment; `details.errors` lists them", body = doc::ErrorBody),
        (status = 428, description = "No `If-Match`", body = doc::ErrorBody),
    )
)]
async fn update_segment(
    principal: Principal,
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let expected = super::require_if_match(&headers)?;
    let (_, reason, segment) = super::split_document::<Segment>(body)?;
    let reason = super::reason(&headers, reason.as_deref());
    let r = update_segment_checked(&state, &principal, &key, &segment, expected, reason).await?;
    Ok(segment_response(StatusCode::OK, &r))
}

/// Replaces a segment as `PUT /api/v1/segments/{key}` does, conditional on `expected` (the
/// version read). Shared with the web console.
pub(crate) async fn update_segment_checked(
    state: &AppState,
    principal: &Principal,
    key: &str,
    segment: &Segment,
    expected: i64,
    reason: Option<String>,
) -> Result<SegmentRecord, ApiError> {
    principal.require_write()?;
    validate_segment(state, key, segment).await?;
    let r = state.store.update_segment(key, segment, expected, &principal.meta(reason)).await?;
    super::publish(state).await;
    Ok(r)
}

/// Deletes a segment that no flag uses, if `If-Match` names its current version.
#[utoipa::path(
    delete,
    path = "/api/v1/segments/{key}",
    tag = "segments",
    operation_id = "deleteSegment",
    params(
        ("key" = String, Path, description = "The segment key"),
        ("If-Match" = String, Header, description = "The version read: `\"3\"`, `3` or `W/\"3\"`"),
        ("X-Dimmer-Reason" = Option<String>, Header, description = "Why, for the audit log"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A malformed `If-Match`", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "A reader or sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such segment", body = doc::ErrorBody),
        (status = 412, description = "`If-Match` is stale", body = doc::ErrorBody,
            headers(("ETag" = String, description = "The current version"))),
        (status = 422, description = "Flags use the segment; `details.flags` names them", body = doc::ErrorBody),
        (status = 428, description = "No `If-Match`", body = doc::ErrorBody),
    )
)]
async fn delete_segment(
    principal: Principal,
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let expected = super::require_if_match(&headers)?;
    delete_segment_checked(&state, &principal, &key, expected, super::reason(&headers, None)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes a segment as `DELETE /api/v1/segments/{key}` does: refused while flags use it,
/// conditional on `expected`, audited. Shared with the web console.
pub(crate) async fn delete_segment_checked(
    state: &AppState,
    principal: &Principal,
    key: &str,
    expected: i64,
    reason: Option<String>,
) -> Result<(), ApiError> {
    principal.require_write()?;
    let in_use: Vec<String> = state
        .store
        .list_flags(false)
        .await?
        .into_iter()
        .filter(|f| uses_segment(&f.flag, key))
        .map(|f| f.key)
        .collect();
    if !in_use.is_empty() {
        return Err(ApiError::new(
            Code::ValidationFailed,
            format!("segment \"{key}\" is used by flags: {}", in_use.join(", ")),
        )
        .with_details(Details::Flags { flags: in_use }));
    }
    state.store.delete_segment(key, expected, &principal.meta(reason)).await?;
    super::publish(state).await;
    Ok(())
}

/// Whether any environment of `flag` has a rule with an `in_segment` clause naming `key`.
pub(crate) fn uses_segment(flag: &dimmer_engine::Flag, key: &str) -> bool {
    flag.environments
        .values()
        .flat_map(|c| c.rules.iter())
        .flat_map(|r| r.clauses.iter())
        .any(|c| c.op == dimmer_engine::Operator::InSegment && c.values.iter().any(|v| v.as_str() == Some(key)))
}

/// `GET /api/v1/tokens` (never the tokens themselves).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TokenList {
    /// Tokens by name.
    tokens: Vec<TokenRecord>,
}

/// Every token by name, without the tokens themselves (admin only).
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    operation_id = "listTokens",
    responses(
        (status = 200, description = "The tokens", body = TokenList),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin token", body = doc::ErrorBody),
    )
)]
async fn list_tokens(principal: Principal, State(state): State<AppState>) -> Result<Response, ApiError> {
    principal.require(&[])?;
    let tokens = state.store.list_tokens().await?;
    Ok(Json(TokenList { tokens }).into_response())
}

/// A new token.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// A unique name, 1 to 128 characters: the actor in the audit log.
    #[schema(min_length = 1, max_length = 128)]
    name: String,
    /// What it may do.
    #[schema(value_type = Scope)]
    scope: String,
    /// The environment of an `sdk` or `client` token (required for them, refused for others).
    #[serde(default)]
    environment: Option<String>,
    /// For `sdk` and `client` tokens: the browser origins (`scheme://host[:port]`, such as
    /// `https://app.example.com`) whose pages may use this token, beside the server-wide CORS
    /// origins; a request from another origin carrying this token is refused (403). Empty or
    /// absent: the server-wide setting alone decides.
    #[serde(default)]
    #[schema(max_items = 20)]
    origins: Vec<String>,
    /// Why, for the audit log (the `X-Dimmer-Reason` header takes precedence).
    #[serde(default)]
    reason: Option<String>,
}

/// A new token: the only time the token itself is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedToken {
    /// Its name.
    pub(crate) name: String,
    /// What it may do.
    pub(crate) scope: Scope,
    /// For `sdk` and `client` tokens, the one environment they read; null for others.
    pub(crate) environment: Option<String>,
    /// The browser origins whose pages may use it (normalised), beside the server-wide ones.
    pub(crate) origins: Vec<String>,
    /// The token; store it now, it cannot be read again.
    pub(crate) token: String,
}

/// Creates a token and answers it once (admin only); sdk and client tokens are bound to one
/// environment. A client token only evaluates flags (OFREP) and may be embedded in a web page.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    operation_id = "createToken",
    params(("X-Dimmer-Reason" = Option<String>, Header, description = "Why, for the audit log (takes precedence over the body's `reason`)")),
    request_body = NewToken,
    responses(
        (status = 201, description = "Created; the only time the token is shown", body = CreatedToken),
        (status = 400, description = "Not JSON or not of this shape", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin token", body = doc::ErrorBody),
        (status = 409, description = "The name is taken", body = doc::ErrorBody),
        (status = 422, description = "Unknown scope, invalid name, an environment missing (sdk, client) or unexpected (others), or origins that are invalid, too many, or on a token that is not sdk or client", body = doc::ErrorBody),
    )
)]
async fn create_token(
    principal: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<NewToken>,
) -> Result<Response, ApiError> {
    let reason = super::reason(&headers, body.reason.as_deref());
    let created =
        create_token_checked(&state, &principal, &body.name, &body.scope, body.environment, &body.origins, reason)
            .await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Creates a token as `POST /api/v1/tokens` does (admin only; the scope, name and environment
/// checked; audited): shared with the web console. The answer is the only time the token is seen.
pub(crate) async fn create_token_checked(
    state: &AppState,
    principal: &Principal,
    name: &str,
    scope: &str,
    environment: Option<String>,
    origins: &[String],
    reason: Option<String>,
) -> Result<CreatedToken, ApiError> {
    principal.require(&[])?;
    let scope = Scope::parse(scope).ok_or_else(|| {
        ApiError::new(
            Code::ValidationFailed,
            format!("scope: \"{scope}\" is not one of admin, writer, reader, sdk, client"),
        )
    })?;
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::new(Code::ValidationFailed, "name: 1 to 128 characters"));
    }
    let environment = match (scope, environment) {
        (Scope::Sdk | Scope::Client, Some(env)) => {
            if !state.store.list_environments().await?.iter().any(|e| e.name == env) {
                return Err(ApiError::new(
                    Code::ValidationFailed,
                    format!("environment: unknown environment \"{env}\""),
                ));
            }
            Some(env)
        }
        (Scope::Sdk | Scope::Client, None) => {
            return Err(ApiError::new(
                Code::ValidationFailed,
                format!("environment: an {} token is bound to one environment", scope.as_str()),
            ));
        }
        (_, Some(_)) => {
            return Err(ApiError::new(
                Code::ValidationFailed,
                "environment: only sdk and client tokens are bound to an environment",
            ));
        }
        (_, None) => None,
    };
    let origins = token_origins(scope, origins)?;
    let meta = principal.meta(reason);
    let token = tokens::create_token_with_origins(
        state.store.as_ref(),
        name,
        scope,
        environment.clone(),
        origins.clone(),
        &meta,
    )
    .await?;
    // Preflights consult every token's origins through a cache: this one counts from now on.
    state.tokens.clear();
    Ok(CreatedToken { name: name.to_owned(), scope, environment, origins, token })
}

/// A new token's browser origins, normalised, or every problem at its field (`origins[2]`).
fn token_origins(scope: Scope, entries: &[String]) -> Result<Vec<String>, ApiError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    if !matches!(scope, Scope::Sdk | Scope::Client) {
        return Err(ApiError::new(
            Code::ValidationFailed,
            format!("origins: only sdk and client tokens are used from browsers, not {} tokens", scope.as_str()),
        )
        .with_errors(vec![FieldError::new("origins", "only sdk and client tokens are used from browsers")]));
    }
    crate::service::origins::token_origins(entries).map_err(|problems| {
        let errors: Vec<FieldError> = problems
            .into_iter()
            .map(|p| {
                let path = p.index.map_or_else(|| "origins".to_owned(), |i| format!("origins[{i}]"));
                FieldError::new(path, p.message)
            })
            .collect();
        let first = errors.first().map(|e| format!("{}: {}", e.path, e.message)).unwrap_or_default();
        ApiError::new(Code::ValidationFailed, first).with_errors(errors)
    })
}

/// Revokes a token by name (admin only); it stops working at once on this server.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{name}",
    tag = "tokens",
    operation_id = "revokeToken",
    params(
        ("name" = String, Path, description = "The token's name"),
        ("X-Dimmer-Reason" = Option<String>, Header, description = "Why, for the audit log"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "Not an admin token", body = doc::ErrorBody),
        (status = 404, description = "No such token", body = doc::ErrorBody),
    )
)]
async fn revoke_token(
    principal: Principal,
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    principal.require(&[])?;
    let meta = principal.meta(super::reason(&headers, None));
    state.store.revoke_token(&name, &meta).await?;
    state.tokens.clear();
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Only entries about this flag.
    flag: Option<String>,
    /// Only entries about this environment.
    env: Option<String>,
    /// Only entries by this actor (token name).
    actor: Option<String>,
    /// Only entries with an id below this: the `next` of the previous page.
    before: Option<i64>,
    /// At most this many: 100 when absent or 0; more than 1000 is refused.
    #[serde(default)]
    #[param(required = false, minimum = 0, maximum = 1000)]
    limit: u32,
}

/// A listed `before`, `after` or `reason` larger than this is summarised (`before`/`after` as
/// `{"truncated": true, "bytes": N}`, a reason cut to its first 1,000 characters); the entry's
/// `href` serves it whole.
pub const AUDIT_BODY_BYTES: u64 = 16 * 1024;
/// A page of the audit log ends with the entry that brings it to this many bytes.
pub const AUDIT_PAGE_BYTES: u64 = 1024 * 1024;

/// `GET /api/v1/audit`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AuditList {
    /// Entries, newest first.
    entries: Vec<ListedAuditEntry>,
    /// When more entries match (the page was cut by `limit` or by size): pass it as `before`
    /// for the next page. Null on the last page.
    #[schema(required = true)]
    next: Option<i64>,
}

/// An audit entry in a list: summarised when large (`truncated`), with where to read it whole.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ListedAuditEntry {
    /// The entry; `before`/`after` may be `{"truncated": true, "bytes": N}` when `truncated`.
    #[serde(flatten)]
    entry: AuditEntry,
    /// With `truncated`: the path that serves this entry whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    href: Option<String>,
}

/// Audit entries matching the filter, newest first, in pages bounded by count and by size.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    operation_id = "listAudit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of entries: bodies over 16 KiB summarised, at most about 1 MiB, `next` for the rest", body = AuditList),
        (status = 400, description = "A malformed query", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token", body = doc::ErrorBody),
    )
)]
async fn audit(
    principal: Principal,
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    if q.limit > 1000 {
        return Err(ApiError::new(
            Code::MalformedRequest,
            format!("query parameter limit: {} is more than 1000", q.limit),
        )
        .with_details(crate::api::error::Details::Parameter { parameter: "limit".to_owned(), location: "query" }));
    }
    let filter = AuditFilter { flag: q.flag, environment: q.env, actor: q.actor, before_id: q.before, limit: q.limit };
    let bounds = AuditBounds { body_bytes: AUDIT_BODY_BYTES, page_bytes: AUDIT_PAGE_BYTES };
    let page = state.store.audit_page(&filter, &bounds).await?;
    let entries = page
        .entries
        .into_iter()
        .map(|entry| ListedAuditEntry { href: entry.truncated.then(|| format!("/api/v1/audit/{}", entry.id)), entry })
        .collect();
    Ok(Json(AuditList { entries, next: page.next }).into_response())
}

/// One audit entry, whole (`before`, `after` and `reason` as recorded).
#[utoipa::path(
    get,
    path = "/api/v1/audit/{id}",
    tag = "audit",
    operation_id = "getAuditEntry",
    params(("id" = i64, Path, description = "The entry's id")),
    responses(
        (status = 200, description = "The entry", body = AuditEntry),
        (status = 400, description = "The id is not a number", body = doc::ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = doc::ErrorBody),
        (status = 403, description = "An sdk token", body = doc::ErrorBody),
        (status = 404, description = "No such entry", body = doc::ErrorBody),
    )
)]
async fn audit_entry(
    principal: Principal,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    let entry =
        state.store.get_audit_entry(id).await?.ok_or_else(|| ApiError::not_found("audit entry", &id.to_string()))?;
    Ok(Json(entry).into_response())
}
