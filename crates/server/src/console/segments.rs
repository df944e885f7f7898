//! Segments in the console: the list (what each holds and which flags use it), a segment's page
//! (an edit form for writers: description, included and excluded keys, rules of clauses edited
//! as in the targeting editor; a read-only view for readers), creating and deleting one. Every
//! change goes through the functions behind the admin API's segment routes
//! (`api::admin::{create,update,delete}_segment_checked`): the same engine validation, version
//! check and audit, with the token's name as actor. Errors come back at the input they name; a
//! stale edit is not written but shown beside what changed meanwhile.

use std::collections::BTreeMap;

use axum::Form;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dimmer_engine::model::{Segment, SegmentRule};
use dimmer_store::SegmentRecord;
use maud::{Markup, html};
use serde_json::Value;

use super::form::{
    CLAUSE_FIELDS, ClauseDraft, Placed, field_errors, id_of, index_after, input_for, not_saved, parse_keys, value_text,
};
use super::session::Viewer;
use super::{ConsoleState, Failure, bad_form, ok_page, page, see_other, segment, when};
use crate::api::error::{ApiError, Code, FieldError};

/// At most this many rules in one segment form.
const MAX_RULES: usize = 100;
/// At most this many clauses in one rule of a segment form.
const MAX_CLAUSES: usize = 50;

pub(super) fn router() -> Router<ConsoleState> {
    Router::new()
        .route("/segments", get(list))
        .route("/new-segment", get(new_form).post(create))
        .route("/segments/{key}", get(show).post(save))
        .route("/segments/{key}/delete", post(delete))
}

/// A segment rule as the form holds it.
#[derive(Debug, Clone, Default, PartialEq)]
struct RuleDraft {
    remove: bool,
    clauses: Vec<ClauseDraft>,
}

impl RuleDraft {
    fn is_blank(&self) -> bool {
        self.clauses.iter().all(ClauseDraft::is_blank)
    }
}

/// The whole form, as typed.
#[derive(Debug, Clone, Default, PartialEq)]
struct Draft {
    /// Only when creating.
    key: String,
    description: String,
    /// Keys one a line (or separated by commas).
    included: String,
    excluded: String,
    rules: Vec<RuleDraft>,
}

/// What travels with the form besides the draft.
#[derive(Debug, Clone, Default)]
struct Meta {
    csrf: String,
    /// The segment version the form was read at.
    version: i64,
    /// The segment at that version, as JSON: what "changed meanwhile" is measured from.
    base: String,
    reason: String,
    /// A button other than Save: `rule`, `clause:N`.
    add: String,
}

impl Draft {
    fn of(s: &Segment) -> Self {
        Self {
            key: String::new(),
            description: s.description.clone(),
            included: s.included.join("\n"),
            excluded: s.excluded.join("\n"),
            rules: s
                .rules
                .iter()
                .map(|r| RuleDraft { remove: false, clauses: r.clauses.iter().map(ClauseDraft::of).collect() })
                .collect(),
        }
    }

    /// Reads the posted fields (`rules[0].clauses[1].op`); unknown names are ignored, indexes
    /// past the bounds refused.
    fn from_pairs(pairs: &[(String, String)]) -> Result<(Self, Meta), ApiError> {
        let mut draft = Draft::default();
        let mut meta = Meta::default();
        let mut rules: BTreeMap<usize, RuleDraft> = BTreeMap::new();
        let mut clauses: BTreeMap<(usize, usize), ClauseDraft> = BTreeMap::new();
        let too_many = |name: &str| {
            ApiError::new(
                Code::ValidationFailed,
                format!("{name}: at most {MAX_RULES} rules of {MAX_CLAUSES} clauses in one segment form"),
            )
        };
        for (name, value) in pairs {
            let value = value.clone();
            match name.as_str() {
                "csrf" => meta.csrf = value,
                "version" => {
                    meta.version = value
                        .trim()
                        .parse()
                        .map_err(|_| ApiError::new(Code::MalformedRequest, "version: not a version number"))?;
                }
                "base" => meta.base = value,
                "reason" => meta.reason = value,
                "add" => meta.add = value,
                "key" => draft.key = value,
                "description" => draft.description = value,
                "included" => draft.included = value,
                "excluded" => draft.excluded = value,
                _ => {
                    let Some((i, rest)) = index_after(name, "rules[") else { continue };
                    if i >= MAX_RULES {
                        return Err(too_many(name));
                    }
                    let rule = rules.entry(i).or_default();
                    if rest == ".remove" {
                        rule.remove = true;
                    } else if let Some((j, field)) = index_after(rest, ".clauses[") {
                        if j >= MAX_CLAUSES {
                            return Err(too_many(name));
                        }
                        clauses.entry((i, j)).or_default().set(field, value);
                    }
                }
            }
        }
        for ((i, _), c) in clauses {
            if let Some(r) = rules.get_mut(&i) {
                r.clauses.push(c);
            }
        }
        draft.rules = rules.into_values().collect();
        Ok((draft, meta))
    }

    /// The segment this draft describes; removed and blank rules and clauses are left out.
    fn to_segment(&self) -> Segment {
        Segment {
            description: self.description.trim().to_owned(),
            included: parse_keys(&self.included),
            excluded: parse_keys(&self.excluded),
            rules: self
                .rules
                .iter()
                .filter(|r| !r.remove && !r.is_blank())
                .map(|r| SegmentRule {
                    clauses: r
                        .clauses
                        .iter()
                        .filter(|c| !c.remove && !c.is_blank())
                        .map(ClauseDraft::to_clause)
                        .collect(),
                })
                .collect(),
        }
    }

    /// For each saved rule, its place in the form and its clauses' places.
    fn saved_places(&self) -> Vec<(usize, Vec<usize>)> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.remove && !r.is_blank())
            .map(|(i, r)| {
                let clauses =
                    r.clauses.iter().enumerate().filter(|(_, c)| !c.remove && !c.is_blank()).map(|(j, _)| j).collect();
                (i, clauses)
            })
            .collect()
    }

    /// Applies a button other than Save: an empty rule, or an empty clause in rule N.
    fn apply(&mut self, add: &str) {
        if add == "rule" && self.rules.len() < MAX_RULES {
            self.rules.push(RuleDraft { remove: false, clauses: vec![ClauseDraft::default()] });
        } else if let Some(i) = add.strip_prefix("clause:").and_then(|i| i.parse::<usize>().ok())
            && let Some(r) = self.rules.get_mut(i)
            && r.clauses.len() < MAX_CLAUSES
        {
            r.clauses.push(ClauseDraft::default());
        }
    }

    /// Every input name the form shows, in page order.
    fn input_names(&self, creating: bool) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        if creating {
            names.push("key".to_owned());
        }
        names.extend(["description", "included", "excluded"].map(str::to_owned));
        for (i, r) in self.rules.iter().enumerate() {
            for j in 0..r.clauses.len() {
                names.extend(CLAUSE_FIELDS.iter().map(|f| format!("rules[{i}].clauses[{j}].{f}")));
            }
        }
        names.push("reason".to_owned());
        names
    }
}

/// An error path of the API (relative to the segment: `rules[0].clauses[1].values[0]`) with
/// saved rule and clause indexes turned back into the form's.
fn form_path(path: &str, places: &[(usize, Vec<usize>)]) -> String {
    let Some((i, after)) = index_after(path, "rules[") else { return path.to_owned() };
    let Some((form_i, clause_places)) = places.get(i) else { return path.to_owned() };
    if let Some((j, tail)) = index_after(after, ".clauses[") {
        let form_j = clause_places.get(j).copied().unwrap_or(j);
        return format!("rules[{form_i}].clauses[{form_j}]{tail}");
    }
    format!("rules[{form_i}]{after}")
}

fn respond(status: StatusCode, title: &str, viewer: &Viewer, body: Markup) -> Response {
    (status, axum::response::Html(page(title, Some(viewer), body).into_string())).into_response()
}

async fn load(state: &ConsoleState, key: &str) -> Result<SegmentRecord, ApiError> {
    state.app.store.get_segment(key).await?.ok_or_else(|| ApiError::not_found("segment", key))
}

/// The flags (not archived) whose rules name segment `key`.
async fn used_by(state: &ConsoleState, key: &str) -> Result<Vec<String>, ApiError> {
    Ok(state
        .app
        .store
        .list_flags(false)
        .await?
        .into_iter()
        .filter(|f| crate::api::admin::uses_segment(&f.flag, key))
        .map(|f| f.key)
        .collect())
}

/// `GET /segments`: every segment with what it holds and which flags use it.
async fn list(State(state): State<ConsoleState>, viewer: Viewer) -> Result<Response, Failure> {
    let segments = state.app.store.list_segments().await?;
    // One pass over the flags for every segment: segments are few, a flag names few of them.
    let flags = state.app.store.list_flags(false).await?;
    let users = |key: &str| -> Vec<&str> {
        flags.iter().filter(|f| crate::api::admin::uses_segment(&f.flag, key)).map(|f| f.key.as_str()).collect()
    };
    let body = html! {
        h1 { "Segments" }
        @if viewer.can_write() { p { a.button href="/new-segment" { "New segment" } } }
        @if segments.is_empty() { p.muted { "No segments." } } @else {
            div.scroll { table {
                caption.visually-hidden { "Segments, what they hold and the flags using them" }
                thead { tr {
                    th scope="col" { "Segment" } th scope="col" { "Description" } th scope="col" { "Included" }
                    th scope="col" { "Excluded" } th scope="col" { "Rules" } th scope="col" { "Used by" } th scope="col" { "Changed" }
                } }
                tbody { @for s in &segments {
                    @let used = users(&s.key);
                    tr {
                        th scope="row" { a href={ "/segments/" (segment(&s.key)) } { (s.key) } }
                        td { (s.segment.description) }
                        td { (s.segment.included.len()) }
                        td { (s.segment.excluded.len()) }
                        td { (s.segment.rules.len()) }
                        td { @if used.is_empty() { span.muted { "no flag" } } @else {
                            @for (n, f) in used.iter().enumerate() {
                                @if n > 0 { ", " }
                                a href={ "/flags/" (segment(f)) } { (f) }
                            }
                        } }
                        td { "v" (s.version) " · " (when(s.updated_at)) }
                    }
                } }
            } }
        }
    };
    Ok(ok_page(page("Segments", Some(&viewer), body)))
}

/// The 412 side: what changed meanwhile, theirs and yours, from the version the form was read at.
struct Stale {
    base_version: i64,
    theirs: Markup,
    yours: Markup,
}

/// The editor page, for creating (`record` none) or editing a segment.
struct Editor<'a> {
    viewer: &'a Viewer,
    record: Option<&'a SegmentRecord>,
    used_by: &'a [String],
    draft: &'a Draft,
    meta: &'a Meta,
    errors: &'a [FieldError],
    stale: Option<Stale>,
}

fn render(e: &Editor<'_>) -> Markup {
    let creating = e.record.is_none();
    let names = e.draft.input_names(creating);
    let places = e.draft.saved_places();
    let placed = Placed::new(e.errors, |err| input_for(&form_path(&err.path, &places), &names).map(str::to_owned));
    let action = match e.record {
        Some(r) => format!("/segments/{}", segment(&r.key)),
        None => "/new-segment".to_owned(),
    };
    let field = |name: &str, label: &str, hint: &str, value: &str, area: bool| -> Markup {
        let id = id_of(name);
        html! {
            div.field.invalid[placed.invalid(name)] {
                label for=(id) { (label) }
                @if !hint.is_empty() { div.hint { (hint) } }
                @if area {
                    textarea id=(id) name=(name) rows="3" aria-invalid=[placed.aria_invalid(name)] aria-describedby=[placed.described(name)] { (value) }
                } @else {
                    input id=(id) name=(name) value=(value) autocomplete="off" aria-invalid=[placed.aria_invalid(name)] aria-describedby=[placed.described(name)];
                }
                (placed.at(name))
            }
        }
    };
    html! {
        p.crumbs { a href="/segments" { "Segments" } " / " }
        h1 { @match e.record { Some(r) => { "Segment " (r.key) }, None => { "New segment" } } }
        @if let Some(r) = e.record {
            p.muted { "version " (r.version) " · changed " (when(r.updated_at)) " · "
                @if e.used_by.is_empty() { "no flag uses it" } @else {
                    "used by "
                    @for (n, f) in e.used_by.iter().enumerate() {
                        @if n > 0 { ", " }
                        a href={ "/flags/" (segment(f)) } { (f) }
                    }
                }
            }
        }
        @if let Some(stale) = &e.stale {
            section.card.danger #stale role="alert" aria-labelledby="stale-h" {
                h2 #stale-h { "Changed meanwhile: your edit was not saved" }
                p { "You started from version " (stale.base_version) "; the segment is at version "
                    (e.record.map_or(0, |r| r.version)) " now. Nothing was overwritten. Compare, then save your edit over the current version or discard it." }
                div.act-grid {
                    div { h3 { "Their change" } (stale.theirs) }
                    div { h3 { "Your edit" } (stale.yours) }
                }
                p { a href=(action) { "Discard my edit and start from the current version" } }
            }
        }
        (placed.summary(&not_saved(e.errors.len())))
        form.card.editor method="post" action=(action) novalidate {
            input type="hidden" name="csrf" value=(e.viewer.csrf);
            input type="hidden" name="version" value=(e.meta.version);
            input type="hidden" name="base" value=(e.meta.base);
            fieldset {
                legend { "Segment" }
                @if creating { (field("key", "Key", "letters, digits, - _ . (it cannot change later)", &e.draft.key, false)) }
                (field("description", "Description", "", &e.draft.description, false))
                (field("included", "Included keys", "targeting keys that are always members, one a line", &e.draft.included, true))
                (field("excluded", "Excluded keys", "targeting keys that are never members (checked before the rules), one a line", &e.draft.excluded, true))
            }
            fieldset {
                legend { "Rules: a context is a member when any rule holds (all its clauses)" }
                @if e.draft.rules.is_empty() { p.muted { "No rules." } }
                @for (i, r) in e.draft.rules.iter().enumerate() {
                    @let p = format!("rules[{i}]");
                    fieldset.rule aria-label={ "Segment rule " (i + 1) } {
                        legend { "Rule " (i + 1) }
                        @for (j, c) in r.clauses.iter().enumerate() {
                            (c.render(&format!("{p}.clauses[{j}]"), &format!("Segment rule {}, clause {}", i + 1, j + 1), &format!("Clause {}", j + 1), &placed))
                        }
                        button.secondary type="submit" name="add" value={ "clause:" (i) } formnovalidate { "Add a clause to rule " (i + 1) }
                        div.checks {
                            label { input type="checkbox" name={ (p) ".remove" } value="on" checked[r.remove]; " Remove rule " (i + 1) }
                        }
                    }
                }
                button.secondary type="submit" name="add" value="rule" formnovalidate { "Add a rule" }
            }
            (field("reason", "Reason", "why, for the audit log", &e.meta.reason, false))
            button type="submit" name="add" value="" {
                @if creating { "Create segment" } @else if e.stale.is_some() { "Save over the current version" } @else { "Save segment" }
            }
        }
        @if let Some(r) = e.record {
            form.card method="post" action={ "/segments/" (segment(&r.key)) "/delete" } {
                h2 { "Delete" }
                p.muted { "Only a segment no flag uses can be deleted." }
                input type="hidden" name="csrf" value=(e.viewer.csrf);
                input type="hidden" name="version" value=(r.version);
                label for="delete-reason" { "Reason for deleting" }
                input #delete-reason name="reason" autocomplete="off";
                button.bad type="submit" { "Delete segment " (r.key) }
            }
        }
    }
}

/// What a reader sees: the segment, no form.
fn read_only(r: &SegmentRecord, used_by: &[String]) -> Markup {
    let keys = |list: &[String]| -> Markup {
        html! { @if list.is_empty() { p.muted { "None." } } @else { ul { @for k in list { li { code { (k) } } } } } }
    };
    html! {
        p.crumbs { a href="/segments" { "Segments" } " / " }
        h1 { "Segment " (r.key) }
        p.muted { "version " (r.version) " · changed " (when(r.updated_at)) " · "
            @if used_by.is_empty() { "no flag uses it" } @else { "used by " (used_by.join(", ")) } }
        @if !r.segment.description.is_empty() { p { (r.segment.description) } }
        section.card { h2 { "Included keys" } (keys(&r.segment.included)) }
        section.card { h2 { "Excluded keys" } (keys(&r.segment.excluded)) }
        section.card {
            h2 { "Rules (any holds)" }
            @if r.segment.rules.is_empty() { p.muted { "No rules." } }
            ol { @for rule in &r.segment.rules {
                li { ul { @for c in &rule.clauses {
                    li {
                        code { (c.attribute.as_deref().unwrap_or("")) } " "
                        @if c.negate { "not " } (c.op.name()) " "
                        (c.values.iter().map(value_text).collect::<Vec<_>>().join(", "))
                        @if c.case_insensitive { " (ignoring case)" }
                    }
                } } }
            } }
        }
    }
}

fn segment_json(s: &Segment) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// `GET /new-segment` (writers).
async fn new_form(viewer: Viewer) -> Result<Response, Failure> {
    viewer.principal.require_write()?;
    let draft = Draft::default();
    let meta = Meta::default();
    let editor =
        Editor { viewer: &viewer, record: None, used_by: &[], draft: &draft, meta: &meta, errors: &[], stale: None };
    Ok(respond(StatusCode::OK, "New segment", &viewer, render(&editor)))
}

fn reason_of(meta: &Meta) -> Option<String> {
    Some(meta.reason.trim().to_owned()).filter(|r| !r.is_empty())
}

/// `POST /new-segment`: "add a rule" and "add a clause" show the form again; Create creates.
async fn create(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, Failure> {
    let Form(pairs) = form.map_err(bad_form)?;
    let (mut draft, meta) = Draft::from_pairs(&pairs)?;
    viewer.check_csrf(&meta.csrf)?;
    viewer.principal.require_write()?;
    let show = |draft: &Draft, status: StatusCode, errors: &[FieldError]| {
        let editor = Editor { viewer: &viewer, record: None, used_by: &[], draft, meta: &meta, errors, stale: None };
        respond(status, "New segment", &viewer, render(&editor))
    };
    if !meta.add.is_empty() {
        draft.apply(&meta.add);
        return Ok(show(&draft, StatusCode::OK, &[]));
    }
    let key = Some(draft.key.trim().to_owned());
    let result = crate::api::admin::create_segment_checked(
        &state.app,
        &viewer.principal,
        key,
        &draft.to_segment(),
        reason_of(&meta),
    )
    .await;
    match result {
        Ok(r) => Ok(see_other(&format!("/segments/{}", segment(&r.key)))),
        Err(e) if matches!(e.code, Code::ValidationFailed | Code::MalformedRequest | Code::AlreadyExists) => {
            let status = e.code.status();
            let mut errors = field_errors(e);
            // "The key is taken" names no field: it is about the key.
            if status == StatusCode::CONFLICT {
                for f in errors.iter_mut().filter(|f| f.path.is_empty()) {
                    "key".clone_into(&mut f.path);
                }
            }
            Ok(show(&draft, status, &errors))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /segments/{key}`: the edit form for writers, the segment for readers.
async fn show(State(state): State<ConsoleState>, viewer: Viewer, Path(key): Path<String>) -> Result<Response, Failure> {
    let record = load(&state, &key).await?;
    let used = used_by(&state, &key).await?;
    let title = format!("Segment {key}");
    if !viewer.can_write() {
        return Ok(respond(StatusCode::OK, &title, &viewer, read_only(&record, &used)));
    }
    let draft = Draft::of(&record.segment);
    let meta = Meta { version: record.version, base: segment_json(&record.segment), ..Meta::default() };
    let editor = Editor {
        viewer: &viewer,
        record: Some(&record),
        used_by: &used,
        draft: &draft,
        meta: &meta,
        errors: &[],
        stale: None,
    };
    Ok(respond(StatusCode::OK, &title, &viewer, render(&editor)))
}

/// `POST /segments/{key}`: Save (conditional on the version the form was read at), or a
/// button that changes the form.
async fn save(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path(key): Path<String>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, Failure> {
    let Form(pairs) = form.map_err(bad_form)?;
    let (mut draft, mut meta) = Draft::from_pairs(&pairs)?;
    viewer.check_csrf(&meta.csrf)?;
    viewer.principal.require_write()?;
    let record = load(&state, &key).await?;
    let used = used_by(&state, &key).await?;
    let title = format!("Segment {key}");
    if !meta.add.is_empty() {
        draft.apply(&meta.add);
        let editor = Editor {
            viewer: &viewer,
            record: Some(&record),
            used_by: &used,
            draft: &draft,
            meta: &meta,
            errors: &[],
            stale: None,
        };
        return Ok(respond(StatusCode::OK, &title, &viewer, render(&editor)));
    }
    let wanted = draft.to_segment();
    let stale_view = |record: &SegmentRecord, meta: &mut Meta| {
        let base: Option<Value> = serde_json::from_str(&meta.base).ok();
        let current = serde_json::to_value(&record.segment).ok();
        let mine = serde_json::to_value(&wanted).ok();
        let stale = Stale {
            base_version: meta.version,
            theirs: super::history::diff(base.as_ref(), current.as_ref()),
            yours: super::history::diff(base.as_ref(), mine.as_ref()),
        };
        meta.version = record.version;
        meta.base = segment_json(&record.segment);
        let editor = Editor {
            viewer: &viewer,
            record: Some(record),
            used_by: &used,
            draft: &draft,
            meta,
            errors: &[],
            stale: Some(stale),
        };
        respond(StatusCode::PRECONDITION_FAILED, &title, &viewer, render(&editor))
    };
    if record.version != meta.version {
        return Ok(stale_view(&record, &mut meta));
    }
    let result = crate::api::admin::update_segment_checked(
        &state.app,
        &viewer.principal,
        &key,
        &wanted,
        meta.version,
        reason_of(&meta),
    )
    .await;
    match result {
        Ok(r) => Ok(see_other(&format!("/segments/{}?done=save&v={}", segment(&r.key), r.version))),
        Err(e) if e.code == Code::VersionMismatch => {
            // Changed between our read and the write: read again and show what changed.
            let record = load(&state, &key).await?;
            Ok(stale_view(&record, &mut meta))
        }
        Err(e) if matches!(e.code, Code::ValidationFailed | Code::MalformedRequest) => {
            let status = e.code.status();
            let errors = field_errors(e);
            let editor = Editor {
                viewer: &viewer,
                record: Some(&record),
                used_by: &used,
                draft: &draft,
                meta: &meta,
                errors: &errors,
                stale: None,
            };
            Ok(respond(status, &title, &viewer, render(&editor)))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /segments/{key}/delete`: refused while flags use the segment (the page says which).
async fn delete(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path(key): Path<String>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, Failure> {
    let Form(pairs) = form.map_err(bad_form)?;
    let (_, meta) = Draft::from_pairs(&pairs)?;
    viewer.check_csrf(&meta.csrf)?;
    viewer.principal.require_write()?;
    let result =
        crate::api::admin::delete_segment_checked(&state.app, &viewer.principal, &key, meta.version, reason_of(&meta))
            .await;
    match result {
        Ok(()) => Ok(see_other("/segments")),
        Err(e) if matches!(e.code, Code::ValidationFailed | Code::VersionMismatch) => {
            let status = e.code.status();
            let message = if e.code == Code::VersionMismatch {
                "The segment changed since you read it: nothing was deleted. Look at it again.".to_owned()
            } else {
                e.message.clone()
            };
            let record = load(&state, &key).await?;
            let used = used_by(&state, &key).await?;
            let draft = Draft::of(&record.segment);
            let meta = Meta { version: record.version, base: segment_json(&record.segment), ..Meta::default() };
            let errors = [FieldError::new("", message)];
            let editor = Editor {
                viewer: &viewer,
                record: Some(&record),
                used_by: &used,
                draft: &draft,
                meta: &meta,
                errors: &errors,
                stale: None,
            };
            Ok(respond(status, &format!("Segment {key}"), &viewer, render(&editor)))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_segment_survives_the_form_unchanged() {
        let segment: Segment = serde_json::from_value(json!({
            "description": "Beta testers",
            "included": ["alice", "bob"],
            "excluded": ["mallory"],
            "rules": [{"clauses": [
                {"attribute": "plan", "op": "in", "values": ["pro", "42", 7]},
                {"attribute": "email", "op": "ends_with", "values": ["@example.com"], "negate": true, "case_insensitive": true}
            ]}]
        }))
        .unwrap();
        let draft = Draft::of(&segment);
        let mut list = vec![
            ("description".to_owned(), draft.description.clone()),
            ("included".to_owned(), draft.included.clone()),
            ("excluded".to_owned(), draft.excluded.clone()),
        ];
        for (j, c) in draft.rules[0].clauses.iter().enumerate() {
            list.push((format!("rules[0].clauses[{j}].attribute"), c.attribute.clone()));
            list.push((format!("rules[0].clauses[{j}].op"), c.op.clone()));
            list.push((format!("rules[0].clauses[{j}].values"), c.values.clone()));
            if c.negate {
                list.push((format!("rules[0].clauses[{j}].negate"), "on".to_owned()));
            }
            if c.case_insensitive {
                list.push((format!("rules[0].clauses[{j}].case_insensitive"), "on".to_owned()));
            }
        }
        let (back, _) = Draft::from_pairs(&list).unwrap();
        assert_eq!(back, draft);
        assert_eq!(back.to_segment(), segment);
    }

    #[test]
    fn removed_rules_and_clauses_shift_errors_back_to_their_inputs() {
        let (draft, _) = Draft::from_pairs(&pairs(&[
            ("rules[0].clauses[0].attribute", "plan"),
            ("rules[0].remove", "on"),
            ("rules[1].clauses[0].attribute", "x"),
            ("rules[1].clauses[0].remove", "on"),
            ("rules[1].clauses[1].values", "pro"),
        ]))
        .unwrap();
        let segment = draft.to_segment();
        assert_eq!(segment.rules.len(), 1);
        assert_eq!(segment.rules[0].clauses.len(), 1);
        let places = draft.saved_places();
        assert_eq!(form_path("rules[0].clauses[0].attribute", &places), "rules[1].clauses[1].attribute");
        let names = draft.input_names(true);
        assert_eq!(input_for("rules[0]", &names), Some("rules[0].clauses[0].attribute"));
        assert_eq!(input_for("included[1]", &names), Some("included"));
        assert_eq!(input_for("key", &names), Some("key"));
    }

    #[test]
    fn forms_past_the_bounds_are_refused() {
        assert!(Draft::from_pairs(&pairs(&[("rules[100].remove", "on")])).is_err());
        assert!(Draft::from_pairs(&pairs(&[("rules[0].clauses[50].op", "in")])).is_err());
        assert!(Draft::from_pairs(&pairs(&[("version", "x")])).is_err());
    }
}
