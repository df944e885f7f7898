//! The flags list (search, filters, sorting and pagination, all on the server) and the form that
//! creates a flag through the same checks as `POST /api/v1/flags`, its errors shown at the
//! fields they name.

use axum::Form;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dimmer_engine::policy::kind_name;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::session::Viewer;
use super::{ConsoleState, Failure, bad_form, ok_page, page, query_value, see_other, segment, when};
use crate::api::error::{ApiError, Code, Details, FieldError};
use crate::service::catalogue::{Archived, Page, Search, Sort};

/// Rows per page of the list.
const PAGE_SIZE: usize = 50;
/// The kinds a flag can have, in the policy's words.
const KINDS: [&str; 5] = ["release", "experiment", "operational", "kill-switch", "permission"];

pub(super) fn router() -> Router<ConsoleState> {
    Router::new()
        .route("/flags", get(list))
        .route("/new-flag", get(new_form).post(create))
        .route("/flags/archive", axum::routing::post(archive_selected))
}

/// The list's query: every field optional, unknown values read as "no filter".
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    env: String,
    /// `on` or `off` in `env`.
    #[serde(default)]
    state: String,
    /// `exclude` (default), `include` or `only`.
    #[serde(default)]
    archived: String,
    /// `key` (default), `updated`, `kind` or `owner`.
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: Option<usize>,
    /// After archiving several flags: how many were archived.
    #[serde(default)]
    archived_done: Option<usize>,
}

impl ListQuery {
    /// The catalogue search this query asks for; unknown values read as "no filter".
    fn search(&self) -> Search {
        let archived = match self.archived.as_str() {
            "include" => Archived::Include,
            "only" => Archived::Only,
            _ => Archived::Exclude,
        };
        let sort = match self.sort.as_str() {
            "updated" => Sort::Updated,
            "kind" => Sort::Kind,
            "owner" => Sort::Owner,
            _ => Sort::Key,
        };
        let state = match (self.env.as_str(), self.state.as_str()) {
            ("", _) | (_, "") => None,
            (env, state) => Some((env.to_owned(), state == "on")),
        };
        Search {
            text: self.q.clone(),
            kind: (!self.kind.is_empty()).then(|| self.kind.clone()),
            state,
            archived,
            sort,
            page: self.page.unwrap_or(1),
            page_size: PAGE_SIZE,
        }
    }

    /// The query string for another page of the same list.
    fn with_page(&self, page: usize) -> String {
        let pairs = [
            ("q", &self.q),
            ("kind", &self.kind),
            ("env", &self.env),
            ("state", &self.state),
            ("archived", &self.archived),
            ("sort", &self.sort),
        ];
        let mut out: Vec<String> =
            pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}", query_value(v))).collect();
        out.push(format!("page={page}"));
        format!("/flags?{}", out.join("&"))
    }
}

/// `GET /` and `GET /flags`.
pub(super) async fn list(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let Query(q) = query.map_err(|e| ApiError::new(Code::MalformedRequest, e.body_text()))?;
    let catalogue = state.catalogue.view(state.app.store.as_ref()).await?;
    let environments: Vec<&str> = catalogue.environments.iter().map(|(e, _)| e.as_str()).collect();
    let Page { rows, matched, total: total_flags, page: page_no, pages } = catalogue.search(&q.search());
    let shown = rows.iter();
    let selected = |field: &str, value: &str| field == value;
    let body = html! {
        div.heading {
            h1 { "Flags" }
            @if viewer.can_write() { a.button href="/new-flag" { "New flag" } }
        }
        form.filters method="get" action="/flags" role="search" aria-label="Search and filter flags" {
            div { label for="q" { "Search" } input #q type="search" name="q" value=(q.q) placeholder="key, description, owner or tag"; }
            div { label for="kind" { "Kind" }
                select #kind name="kind" {
                    option value="" { "Any kind" }
                    @for k in KINDS { option value=(k) selected[selected(&q.kind, k)] { (k) } }
                }
            }
            div { label for="env" { "Environment" }
                select #env name="env" {
                    option value="" { "Any environment" }
                    @for e in &environments { option value=(e) selected[selected(&q.env, e)] { (e) } }
                }
            }
            div { label for="state" { "State there" }
                select #state name="state" {
                    option value="" { "On or off" }
                    option value="on" selected[selected(&q.state, "on")] { "On" }
                    option value="off" selected[selected(&q.state, "off")] { "Off" }
                }
            }
            div { label for="archived" { "Archived" }
                select #archived name="archived" {
                    option value="exclude" { "Hide archived" }
                    option value="include" selected[selected(&q.archived, "include")] { "Include archived" }
                    option value="only" selected[selected(&q.archived, "only")] { "Only archived" }
                }
            }
            div { label for="sort" { "Sort by" }
                select #sort name="sort" {
                    option value="key" { "Key" }
                    option value="updated" selected[selected(&q.sort, "updated")] { "Last change" }
                    option value="kind" selected[selected(&q.sort, "kind")] { "Kind" }
                    option value="owner" selected[selected(&q.sort, "owner")] { "Owner" }
                }
            }
            div.actions { button type="submit" { "Apply filters" } }
        }
        @if let Some(n) = q.archived_done { p.notice role="status" { "Archived " (n) @if n == 1 { " flag." } @else { " flags." } } }
        p #count role="status" { (matched) " of " (total_flags) " flags" @if pages > 1 { " · page " (page_no) " of " (pages) } }
        form #bulk method="post" action="/flags/archive" {}
        div.scroll {
            table.flags {
                caption.visually-hidden { "Flags, with their state per environment" }
                thead { tr {
                    @if viewer.can_write() { th scope="col" { span.visually-hidden { "Select" } } }
                    th scope="col" { "Key" } th scope="col" { "Kind" } th scope="col" { "Owner" }
                    @for e in &environments { th scope="col" { (e) } }
                    th scope="col" { "Last change" }
                } }
                tbody {
                    @for r in shown {
                        tr {
                            @if viewer.can_write() {
                                td { @if !r.archived {
                                    input type="checkbox" form="bulk" name="key" value=(r.key) aria-label={ "Select " (r.key) };
                                } }
                            }
                            th scope="row" {
                                a href={ "/flags/" (segment(&r.key)) } { (r.key) }
                                @if r.archived { " " span.tag { "archived" } }
                                @if !r.description.is_empty() { div.muted { (r.description) } }
                            }
                            td { (kind_name(r.kind)) }
                            td { (r.owner.as_deref().unwrap_or("—")) }
                            @for e in &environments {
                                @let on = r.is_on(e);
                                td { span class={ "state " @if on { "on" } @else { "off" } } { @if on { "On" } @else { "Off" } } }
                            }
                            td { (when(r.updated_at)) }
                        }
                    }
                }
            }
        }
        @if viewer.can_write() && matched > 0 {
            div.card.bulk {
                input type="hidden" form="bulk" name="csrf" value=(viewer.csrf);
                label for="bulk-reason" { "Reason for archiving the selected flags" }
                input #bulk-reason form="bulk" name="reason" required autocomplete="off";
                button type="submit" form="bulk" { "Archive selected" }
            }
        }
        @if pages > 1 {
            nav.pager aria-label="Pages" {
                @if page_no > 1 { a href=(q.with_page(page_no - 1)) rel="prev" { "Previous page" } }
                @if page_no < pages { a href=(q.with_page(page_no + 1)) rel="next" { "Next page" } }
            }
        }
    };
    Ok(ok_page(page("Flags", Some(&viewer), body)))
}

/// What the create form holds (also re-shown with errors).
#[derive(Debug, Default, Deserialize)]
pub(super) struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    reason: String,
}

/// The form's inputs, by the request field whose errors they show.
const FIELDS: [&str; 5] = ["key", "kind", "owner", "description", "tags"];

/// The input an error path belongs to (`tags[2]` → `tags`), or none (shown above the form).
fn field_of(path: &str) -> Option<&'static str> {
    let head = path.split(['.', '[']).next().unwrap_or_default();
    FIELDS.into_iter().find(|f| *f == head)
}

fn create_form(viewer: &Viewer, form: &CreateForm, errors: &[FieldError], general: Option<&str>) -> Markup {
    let errors_at = |field: &str| -> Vec<&FieldError> {
        errors.iter().filter(|e| field_of(&e.path) == Some(field)).collect::<Vec<_>>()
    };
    let unplaced: Vec<&FieldError> = errors.iter().filter(|e| field_of(&e.path).is_none()).collect();
    let field = |name: &'static str, label: &str, hint: &str, input: Markup| {
        let here = errors_at(name);
        html! {
            div.field.invalid[!here.is_empty()] {
                label for=(name) { (label) }
                @if !hint.is_empty() { div.hint #{ (name) "-hint" } { (hint) } }
                (input)
                @for e in &here {
                    p.error #{ (name) "-error" } { (e.message) @if let Some(rule) = e.rule { " (rule " code { (rule) } ")" } }
                }
            }
        }
    };
    let invalid = |name: &str| !errors_at(name).is_empty();
    let described = |name: &str| {
        if invalid(name) { format!("{name}-hint {name}-error") } else { format!("{name}-hint") }
    };
    html! {
        h1 { "New flag" }
        @if general.is_some() || !unplaced.is_empty() || !errors.is_empty() {
            div.error role="alert" #form-errors {
                p { (general.unwrap_or("The flag was not created: fix the fields marked below.")) }
                @if !unplaced.is_empty() {
                    ul { @for e in &unplaced { li { code { (e.path) } ": " (e.message) } } }
                }
            }
        }
        form.card method="post" action="/new-flag" novalidate {
            input type="hidden" name="csrf" value=(viewer.csrf);
            (field("key", "Key", "kebab-case, optionally with a team prefix: payments.new-checkout", html! {
                input #key name="key" value=(form.key) required autocomplete="off" aria-invalid=(invalid("key")) aria-describedby=(described("key"));
            }))
            (field("kind", "Kind", "", html! {
                select #kind name="kind" aria-invalid=(invalid("kind")) {
                    @for k in KINDS { option value=(k) selected[form.kind == k] { (k) } }
                }
            }))
            (field("owner", "Owner", "the team or person answerable for the flag", html! {
                input #owner name="owner" value=(form.owner) aria-invalid=(invalid("owner")) aria-describedby=(described("owner"));
            }))
            (field("description", "Description", "what the flag does, for people", html! {
                input #description name="description" value=(form.description) aria-invalid=(invalid("description")) aria-describedby=(described("description"));
            }))
            (field("tags", "Tags", "comma-separated", html! {
                input #tags name="tags" value=(form.tags) aria-invalid=(invalid("tags")) aria-describedby=(described("tags"));
            }))
            div.field {
                label for="reason" { "Reason" }
                input #reason name="reason" value=(form.reason);
            }
            button type="submit" { "Create flag" }
        }
    }
}

async fn new_form(viewer: Viewer) -> Result<Response, Failure> {
    viewer.principal.require_write()?;
    let form = CreateForm { kind: "release".into(), ..CreateForm::default() };
    Ok(ok_page(page("New flag", Some(&viewer), create_form(&viewer, &form, &[], None))))
}

/// The create body `POST /api/v1/flags` takes, from the form.
fn body_of(form: &CreateForm) -> Value {
    let mut body = json!({"key": form.key.trim(), "kind": form.kind, "description": form.description.trim()});
    if !form.owner.trim().is_empty() {
        body["owner"] = json!(form.owner.trim());
    }
    let tags: Vec<&str> = form.tags.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
    if !tags.is_empty() {
        body["tags"] = json!(tags);
    }
    if !form.reason.trim().is_empty() {
        body["reason"] = json!(form.reason.trim());
    }
    body
}

async fn create(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    form: Result<Form<CreateForm>, FormRejection>,
) -> Result<Response, Failure> {
    let Form(form) = form.map_err(bad_form)?;
    viewer.check_csrf(&form.csrf)?;
    let result = crate::api::flags::create_flag(&state.app, &viewer.principal, &HeaderMap::new(), body_of(&form)).await;
    match result {
        Ok(record) => Ok(see_other(&format!("/flags/{}", segment(&record.key)))),
        Err(e) if matches!(e.code, Code::ValidationFailed | Code::MalformedRequest | Code::AlreadyExists) => {
            let mut errors = match e.details {
                Some(Details::Errors { errors }) => errors,
                _ => Vec::new(),
            };
            if errors.is_empty() {
                // A message of the form "key: …" names its field too.
                let (path, message) = e.message.split_once(": ").unwrap_or(("", e.message.as_str()));
                let path = if e.code == Code::AlreadyExists { "key" } else { path };
                errors.push(FieldError::new(path, message));
            }
            let markup = page("New flag", Some(&viewer), create_form(&viewer, &form, &errors, None));
            let status = e.code.status();
            Ok((status, axum::response::Html(markup.into_string())).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// At most this many flags archived by one form.
const MAX_BULK: usize = 500;

/// `POST /flags/archive`: archives each selected flag, each in its own audited change with the
/// reason given, as `POST /api/v1/flags/{key}/archive` does; stops at the first failure and says
/// which flags were archived before it.
async fn archive_selected(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, Failure> {
    let Form(pairs) = form.map_err(bad_form)?;
    let field =
        |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned()).unwrap_or_default();
    viewer.check_csrf(&field("csrf"))?;
    viewer.principal.require_write()?;
    let keys: Vec<&str> = pairs.iter().filter(|(k, _)| k == "key").map(|(_, v)| v.as_str()).collect();
    let invalid = |path: &str, message: String| {
        Failure::from(
            ApiError::new(Code::ValidationFailed, format!("{path}: {message}"))
                .with_errors(vec![FieldError::new(path, message)]),
        )
    };
    if keys.is_empty() {
        return Err(invalid("key", "select at least one flag".into()));
    }
    if keys.len() > MAX_BULK {
        return Err(invalid("key", format!("at most {MAX_BULK} flags at once")));
    }
    let reason = field("reason");
    if reason.is_empty() {
        return Err(invalid("reason", "say why (it goes to the audit log of each flag)".into()));
    }
    let meta = viewer.principal.meta(Some(reason));
    let mut done = 0;
    for key in &keys {
        match state.app.store.set_flag_archived(key, true, None, &meta).await {
            Ok(_) => done += 1,
            Err(e) => {
                crate::api::publish(&state.app).await;
                let archived = keys[..done].join(", ");
                let e = ApiError::from(e);
                let message = format!(
                    "{key}: {} (archived before it: {})",
                    e.message,
                    if archived.is_empty() { "none" } else { &archived }
                );
                return Err(ApiError::new(e.code, message).into());
            }
        }
    }
    crate::api::publish(&state.app).await;
    Ok(see_other(&format!("/flags?archived_done={done}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_paths_find_their_input() {
        assert_eq!(field_of("owner"), Some("owner"));
        assert_eq!(field_of("tags[1]"), Some("tags"));
        assert_eq!(field_of("flags.x.environments.production"), None);
    }
}
