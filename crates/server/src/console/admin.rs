//! The console's other pages: the policy and each flag's lifecycle (stale flags with their
//! reasons and owners, flags ready to retire), environments, release-plan templates, and API
//! tokens (admin: create — the token shown once —, list, revoke). Token changes go
//! through `api::admin::create_token_checked` and the store's audited revoke, as the API's do.

use axum::Form;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dimmer_engine::policy::{State as LifecycleState, kind_name};
use maud::{Markup, html};
use serde::Deserialize;

use super::session::Viewer;
use super::{ConsoleState, Failure, bad_form, human_duration, ok_page, page, see_other, segment, when};
use crate::api::error::{ApiError, Code};

pub(super) fn router() -> Router<ConsoleState> {
    Router::new()
        .route("/policy", get(policy))
        .route("/environments", get(environments))
        .route("/templates", get(templates))
        .route("/tokens", get(tokens).post(create_token))
        .route("/tokens/{name}/revoke", post(revoke_token))
}

/// `GET /policy`: the effective policy, stale flags and flags ready to retire.
async fn policy(State(state): State<ConsoleState>, viewer: Viewer) -> Result<Response, Failure> {
    let now = state.app.clock.now_ms();
    let all = crate::service::policy::lifecycles(state.app.store.as_ref(), &state.app.policy.policy, now, None).await?;
    let file = state.app.policy.policy.to_file();
    let text = serde_json::to_string_pretty(&file).unwrap_or_default();
    let stale: Vec<_> = all.iter().filter(|(_, l)| l.state == LifecycleState::Stale).collect();
    let retire: Vec<_> = all.iter().filter(|(_, l)| l.state == LifecycleState::Released).collect();
    let body = html! {
        h1 { "Policy and lifecycle" }
        section.card aria-labelledby="stale-h" {
            h2 #stale-h { "Stale flags (" (stale.len()) ")" }
            @if stale.is_empty() { p.muted { "None." } } @else {
                div.scroll { table {
                    caption.visually-hidden { "Stale flags, with why and who owns them" }
                    thead { tr { th scope="col" { "Flag" } th scope="col" { "Owner" } th scope="col" { "Why it is stale" } th scope="col" { "Age" } } }
                    tbody { @for (r, l) in &stale {
                        tr {
                            th scope="row" { a href={ "/flags/" (segment(&r.key)) } { (r.key) } }
                            td { (r.owner.as_deref().unwrap_or("—")) }
                            td { ul { @for reason in &l.reasons { li { (reason.message) " (rule " code { (reason.rule) } ")" } } } }
                            td { (l.age_days) " days" }
                        }
                    } }
                } }
            }
        }
        section.card aria-labelledby="retire-h" {
            h2 #retire-h { "Ready to retire (" (retire.len()) ")" }
            p.muted { "Released everywhere they run: remove the flag from the code, then archive it." }
            @if retire.is_empty() { p.muted { "None." } } @else {
                ul { @for (r, l) in &retire {
                    li {
                        a href={ "/flags/" (segment(&r.key)) } { (r.key) } " · " (kind_name(r.kind)) " · owner " (r.owner.as_deref().unwrap_or("none"))
                        @if let Some(since) = l.released_since { " · released " (human_duration(now - since)) " ago" }
                    }
                } }
            }
        }
        section.card aria-labelledby="policy-h" {
            h2 #policy-h { "Effective policy" }
            p { @match &state.app.policy.source {
                Some(path) => { "From " code { (path.display()) } "." }
                None => { "The default policy (docs/POLICY.md): no --policy file was given." }
            } }
            pre { (text) }
        }
    };
    Ok(ok_page(page("Policy and lifecycle", Some(&viewer), body)))
}

/// `GET /environments`.
async fn environments(State(state): State<ConsoleState>, viewer: Viewer) -> Result<Response, Failure> {
    let envs = state.app.store.list_environments().await?;
    let body = html! {
        h1 { "Environments" }
        table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Revision" } th scope="col" { "Created" } } }
            tbody { @for e in &envs {
                tr { th scope="row" { a href={ "/flags?env=" (segment(&e.name)) } { (e.name) } } td { (e.revision) } td { (when(e.created_at)) } }
            } }
        }
        p.muted { "Create environments with " code { "POST /api/v1/environments" } " (admin)." }
    };
    Ok(ok_page(page("Environments", Some(&viewer), body)))
}

/// `GET /templates`: the built-in and stored release-plan templates.
async fn templates(State(state): State<ConsoleState>, viewer: Viewer) -> Result<Response, Failure> {
    let list = state.app.releases.templates().await.map_err(ApiError::from)?;
    let body = html! {
        h1 { "Release-plan templates" }
        @for t in &list {
            section.card {
                h2 { (t.name) }
                @if !t.description.is_empty() { p { (t.description) } }
                ol.timeline aria-label={ "Stages of " (t.name) } {
                    @for s in &t.stages { li { strong { (crate::service::releases::stage_label(s)) } " · dwell " (human_duration(s.min_dwell_ms)) } }
                }
                @if !t.default_for.is_empty() {
                    p.muted { "Default for: " (t.default_for.iter().map(|k| kind_name(*k)).collect::<Vec<_>>().join(", ")) }
                }
            }
        }
    };
    Ok(ok_page(page("Templates", Some(&viewer), body)))
}

fn tokens_page(
    viewer: &Viewer,
    list: &[dimmer_store::TokenRecord],
    environments: &[String],
    created: Option<&crate::api::admin::CreatedToken>,
    error: Option<&str>,
) -> Markup {
    html! {
        h1 { "API tokens" }
        @if let Some(c) = created {
            section.card.notice role="status" #created {
                h2 { "Token " (c.name) " created" }
                p { "Copy it now: it is shown this once and cannot be read again." }
                label for="new-token" { "The new token" }
                input #new-token readonly value=(c.token);
            }
        }
        section.card aria-labelledby="new-h" {
            h2 #new-h { "New token" }
            @if let Some(e) = error { p.error #token-form-error role="alert" { (e) } }
            form method="post" action="/tokens" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                label for="t-name" { "Name" }
                input #t-name name="name" required autocomplete="off";
                label for="t-scope" { "Scope" }
                select #t-scope name="scope" {
                    @for s in ["reader", "writer", "admin", "sdk", "client"] { option value=(s) { (s) } }
                }
                label for="t-env" { "Environment (sdk and client tokens)" }
                select #t-env name="environment" {
                    option value="" { "(none)" }
                    @for e in environments { option value=(e) { (e) } }
                }
                label for="t-reason" { "Reason" }
                input #t-reason name="reason" autocomplete="off";
                button type="submit" { "Create token" }
            }
        }
        div.scroll { table {
            caption { "Tokens (never the tokens themselves)" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Scope" } th scope="col" { "Environment" } th scope="col" { "Created" } th scope="col" { "State" } } }
            tbody { @for t in list {
                tr {
                    th scope="row" { (t.name) }
                    td { (t.scope.as_str()) }
                    td { (t.environment.as_deref().unwrap_or("—")) }
                    td { (when(t.created_at)) }
                    td {
                        @if t.revoked { "revoked" } @else {
                            form method="post" action={ "/tokens/" (segment(&t.name)) "/revoke" } {
                                input type="hidden" name="csrf" value=(viewer.csrf);
                                button.bad type="submit" aria-label={ "Revoke " (t.name) } { "Revoke" }
                            }
                        }
                    }
                }
            } }
        } }
    }
}

async fn token_page(
    state: &ConsoleState,
    viewer: &Viewer,
    status: StatusCode,
    created: Option<&crate::api::admin::CreatedToken>,
    error: Option<&str>,
) -> Result<Response, Failure> {
    let list = state.app.store.list_tokens().await?;
    let envs: Vec<String> = state.app.store.list_environments().await?.into_iter().map(|e| e.name).collect();
    let markup = page("API tokens", Some(viewer), tokens_page(viewer, &list, &envs, created, error));
    Ok((status, axum::response::Html(markup.into_string())).into_response())
}

/// `GET /tokens` (admin).
async fn tokens(State(state): State<ConsoleState>, viewer: Viewer) -> Result<Response, Failure> {
    viewer.principal.require(&[])?;
    token_page(&state, &viewer, StatusCode::OK, None, None).await
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    environment: String,
    #[serde(default)]
    reason: String,
}

/// `POST /tokens` (admin): the answer shows the token once; it is never in a URL or a log.
async fn create_token(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Result<Response, Failure> {
    let Form(form) = form.map_err(bad_form)?;
    viewer.check_csrf(&form.csrf)?;
    viewer.principal.require(&[])?;
    let env = Some(form.environment.trim().to_owned()).filter(|e| !e.is_empty());
    let reason = Some(form.reason.trim().to_owned()).filter(|r| !r.is_empty());
    let result = crate::api::admin::create_token_checked(
        &state.app,
        &viewer.principal,
        form.name.trim(),
        &form.scope,
        env,
        &[],
        reason,
    )
    .await;
    match result {
        Ok(created) => token_page(&state, &viewer, StatusCode::CREATED, Some(&created), None).await,
        Err(e) if matches!(e.code, Code::ValidationFailed | Code::AlreadyExists) => {
            token_page(&state, &viewer, e.code.status(), None, Some(&e.message)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// `POST /tokens/{name}/revoke` (admin): audited by the store; the token stops working at once.
async fn revoke_token(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    headers: axum::http::HeaderMap,
    Path(name): Path<String>,
    form: Result<Form<CsrfOnly>, FormRejection>,
) -> Result<Response, Failure> {
    let json = super::wants_json(&headers);
    let fail = |e: ApiError| Failure::new(e, json);
    let Form(form) = form.map_err(|e| fail(bad_form(e)))?;
    viewer.check_csrf(&form.csrf).map_err(fail)?;
    viewer.principal.require(&[]).map_err(fail)?;
    state.app.store.revoke_token(&name, &viewer.principal.meta(None)).await.map_err(|e| fail(e.into()))?;
    state.app.tokens.clear();
    if json {
        return Ok(crate::api::error::Json(serde_json::json!({"revoked": name})).into_response());
    }
    Ok(see_other("/tokens"))
}
