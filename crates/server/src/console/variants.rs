//! Editing a flag's variants (add, remove, rename, change a value) from the console, saved
//! through `api::flags::replace_flag`, the function behind `PUT /api/v1/flags/{key}`: the same
//! policy, engine validation, version check and audit. A variant that targeting still serves
//! cannot go: the engine's "unknown variant" error is put back at the row that removed or
//! renamed it. A stale edit is not written but shown beside what changed meanwhile.

use axum::Form;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dimmer_engine::compile::path_key;
use dimmer_store::FlagRecord;
use maud::{Markup, html};
use serde_json::Value;

use super::form::{Placed, field_errors, id_of, index_after, not_saved, parse_value, value_text};
use super::session::Viewer;
use super::{ConsoleState, Failure, bad_form, page, see_other, segment};
use crate::api::error::{ApiError, Code, FieldError};

/// At most this many variant rows in one form.
const MAX_VARIANTS: usize = 100;

pub(super) fn router() -> Router<ConsoleState> {
    Router::new().route("/flags/{key}/variants", get(edit_form).post(save))
}

/// One variant row, as typed.
#[derive(Debug, Clone, Default, PartialEq)]
struct Row {
    key: String,
    /// A line of JSON (`true`, `42`, `"blue"`, `{"a": 1}`), or text taken as a string.
    value: String,
    /// The key the row had when the form was read (empty for a new row): a removed or renamed
    /// variant that targeting still serves is reported here.
    was: String,
    remove: bool,
}

impl Row {
    fn is_blank(&self) -> bool {
        self.key.trim().is_empty() && self.value.trim().is_empty() && self.was.is_empty()
    }
}

/// What travels with the form besides the rows.
#[derive(Debug, Clone, Default)]
struct Meta {
    csrf: String,
    version: i64,
    /// The variants at that version, as JSON: what "changed meanwhile" is measured from.
    base: String,
    reason: String,
    /// `variant` for "Add a variant".
    add: String,
}

fn rows_of<'a>(variants: impl IntoIterator<Item = (&'a String, &'a Value)>) -> Vec<Row> {
    variants
        .into_iter()
        .map(|(k, v)| Row { key: k.clone(), value: value_text(v), was: k.clone(), remove: false })
        .collect()
}

fn from_pairs(pairs: &[(String, String)]) -> Result<(Vec<Row>, Meta), ApiError> {
    let mut rows: std::collections::BTreeMap<usize, Row> = std::collections::BTreeMap::new();
    let mut meta = Meta::default();
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
            _ => {
                let Some((i, field)) = index_after(name, "variants[") else { continue };
                if i >= MAX_VARIANTS {
                    return Err(ApiError::new(
                        Code::ValidationFailed,
                        format!("{name}: at most {MAX_VARIANTS} variants in one form"),
                    ));
                }
                let row = rows.entry(i).or_default();
                match field {
                    ".key" => row.key = value,
                    ".value" => row.value = value,
                    ".was" => row.was = value,
                    ".remove" => row.remove = true,
                    _ => {}
                }
            }
        }
    }
    Ok((rows.into_values().collect(), meta))
}

/// The variants the rows describe, in order. What the form itself cannot read (a row without a
/// key or value, a key twice) is an error at its input; the rest is the engine's to judge.
fn to_variants(rows: &[Row]) -> Result<Vec<(String, Value)>, Vec<FieldError>> {
    let mut out: Vec<(String, Value)> = Vec::new();
    let mut errors = Vec::new();
    for (i, r) in rows.iter().enumerate().filter(|(_, r)| !r.remove && !r.is_blank()) {
        let key = r.key.trim();
        let value = r.value.trim();
        if key.is_empty() {
            errors.push(FieldError::new(format!("variants[{i}].key"), "required: name the variant"));
            continue;
        }
        if value.is_empty() {
            errors.push(FieldError::new(
                format!("variants[{i}].value"),
                "required: true, 42, \"text\" or a JSON object (\"\" for an empty string)",
            ));
            continue;
        }
        if out.iter().any(|(k, _)| k == key) {
            errors.push(FieldError::new(format!("variants[{i}].key"), format!("\"{key}\" is listed twice")));
            continue;
        }
        out.push((key.to_owned(), parse_value(value)));
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// The input an API error belongs to: `variants.KEY` at that row's value; "unknown variant
/// \"K\"" (targeting serves a variant that is gone) at the key of the row that removed or
/// renamed K; other paths above the form.
fn place(rows: &[Row], err: &FieldError) -> Option<String> {
    if err.path.starts_with("variants[") && index_after(&err.path, "variants[").is_some() {
        // The form's own paths.
        return Some(err.path.clone());
    }
    if let Some(rest) = err.path.strip_prefix("variants") {
        let i = rows.iter().position(|r| !r.remove && path_key(r.key.trim()) == rest)?;
        return Some(format!("variants[{i}].value"));
    }
    let gone = err.message.strip_prefix("unknown variant \"")?.split('"').next()?;
    let i = rows.iter().position(|r| r.was == gone && (r.remove || r.key.trim() != gone))?;
    Some(format!("variants[{i}].key"))
}

struct Stale {
    base_version: i64,
    theirs: Markup,
    yours: Markup,
}

struct Editor<'a> {
    viewer: &'a Viewer,
    record: &'a FlagRecord,
    rows: &'a [Row],
    meta: &'a Meta,
    errors: &'a [FieldError],
    stale: Option<Stale>,
}

fn render(e: &Editor<'_>) -> Markup {
    let placed = Placed::new(e.errors, |err| place(e.rows, err));
    let flag_url = format!("/flags/{}", segment(&e.record.key));
    let action = format!("{flag_url}/variants");
    html! {
        p.crumbs { a href="/" { "Flags" } " / " a href=(flag_url) { (e.record.key) } " / " }
        h1 { "Variants of " (e.record.key) }
        p.muted { "A variant that targeting still serves (in any environment) cannot be removed or renamed: change the targeting first." }
        @if let Some(stale) = &e.stale {
            section.card.danger #stale role="alert" aria-labelledby="stale-h" {
                h2 #stale-h { "Changed meanwhile: your edit was not saved" }
                p { "You started from version " (stale.base_version) "; the flag is at version " (e.record.version)
                    " now. Nothing was overwritten. Compare, then save your edit over the current version or discard it." }
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
            @for (i, r) in e.rows.iter().enumerate() {
                @let n = i + 1;
                @let key = format!("variants[{i}].key");
                @let value = format!("variants[{i}].value");
                fieldset.rule aria-label={ "Variant " (n) } {
                    legend { "Variant " (n) @if !r.was.is_empty() { " (" (r.was) ")" } }
                    input type="hidden" name={ "variants[" (i) "].was" } value=(r.was);
                    div.field.invalid[placed.invalid(&key)] {
                        label for=(id_of(&key)) { "Key of variant " (n) }
                        input id=(id_of(&key)) name=(key) value=(r.key) autocomplete="off"
                            aria-invalid=[placed.aria_invalid(&key)] aria-describedby=[placed.described(&key)];
                        (placed.at(&key))
                    }
                    div.field.invalid[placed.invalid(&value)] {
                        label for=(id_of(&value)) { "Value of variant " (n) }
                        div.hint { "true, 42, \"text\" (bare text is a string too) or JSON" }
                        input id=(id_of(&value)) name=(value) value=(r.value) autocomplete="off"
                            aria-invalid=[placed.aria_invalid(&value)] aria-describedby=[placed.described(&value)];
                        (placed.at(&value))
                    }
                    div.checks {
                        label { input type="checkbox" name={ "variants[" (i) "].remove" } value="on" checked[r.remove]; " Remove variant " (n) }
                    }
                }
            }
            button.secondary type="submit" name="add" value="variant" formnovalidate { "Add a variant" }
            div.field {
                label for="f-reason" { "Reason" }
                div.hint { "why, for the audit log" }
                input #f-reason name="reason" value=(e.meta.reason) autocomplete="off";
            }
            button type="submit" name="add" value="" { @if e.stale.is_some() { "Save over the current version" } @else { "Save variants" } }
        }
    }
}

fn respond(status: StatusCode, viewer: &Viewer, key: &str, body: Markup) -> Response {
    let title = format!("Variants of {key}");
    (status, axum::response::Html(page(&title, Some(viewer), body).into_string())).into_response()
}

async fn load(state: &ConsoleState, key: &str) -> Result<FlagRecord, ApiError> {
    state.app.store.get_flag(key).await?.ok_or_else(|| ApiError::not_found("flag", key))
}

fn variants_json(record: &FlagRecord) -> String {
    serde_json::to_string(&record.flag.variants).unwrap_or_default()
}

/// `GET /flags/{key}/variants` (writers).
async fn edit_form(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path(key): Path<String>,
) -> Result<Response, Failure> {
    viewer.principal.require_write()?;
    let record = load(&state, &key).await?;
    let rows = rows_of(&record.flag.variants);
    let meta = Meta { version: record.version, base: variants_json(&record), ..Meta::default() };
    let editor = Editor { viewer: &viewer, record: &record, rows: &rows, meta: &meta, errors: &[], stale: None };
    Ok(respond(StatusCode::OK, &viewer, &key, render(&editor)))
}

/// `POST /flags/{key}/variants`: Save, or "Add a variant".
async fn save(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path(key): Path<String>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, Failure> {
    let Form(pairs) = form.map_err(bad_form)?;
    let (mut rows, mut meta) = from_pairs(&pairs)?;
    viewer.check_csrf(&meta.csrf)?;
    viewer.principal.require_write()?;
    let record = load(&state, &key).await?;
    let show = |record: &FlagRecord, rows: &[Row], meta: &Meta, status: StatusCode, errors: &[FieldError]| {
        let editor = Editor { viewer: &viewer, record, rows, meta, errors, stale: None };
        respond(status, &viewer, &key, render(&editor))
    };
    if meta.add == "variant" {
        if rows.len() < MAX_VARIANTS {
            rows.push(Row::default());
        }
        return Ok(show(&record, &rows, &meta, StatusCode::OK, &[]));
    }
    let variants = match to_variants(&rows) {
        Ok(v) => v,
        Err(errors) => return Ok(show(&record, &rows, &meta, StatusCode::UNPROCESSABLE_ENTITY, &errors)),
    };
    let stale_view = |record: &FlagRecord, meta: &mut Meta| {
        let base: Option<Value> = serde_json::from_str(&meta.base).ok();
        let current = serde_json::to_value(&record.flag.variants).ok();
        let mine = Some(Value::Object(variants.iter().cloned().collect()));
        let stale = Stale {
            base_version: meta.version,
            theirs: super::history::diff(base.as_ref(), current.as_ref()),
            yours: super::history::diff(base.as_ref(), mine.as_ref()),
        };
        meta.version = record.version;
        meta.base = variants_json(record);
        let editor = Editor { viewer: &viewer, record, rows: &rows, meta, errors: &[], stale: Some(stale) };
        respond(StatusCode::PRECONDITION_FAILED, &viewer, &key, render(&editor))
    };
    if record.version != meta.version {
        return Ok(stale_view(&record, &mut meta));
    }
    let mut flag = record.flag.clone();
    flag.variants = variants.iter().cloned().collect();
    // The stored flag always carries its kind, as a GET of the API shows it: the policy's
    // "kind required" is about new documents, not about this edit.
    let kind_declared = true;
    let reason = Some(meta.reason.trim().to_owned()).filter(|r| !r.is_empty());
    let result = crate::api::flags::replace_flag(
        &state.app,
        &viewer.principal,
        &key,
        &flag,
        kind_declared,
        meta.version,
        reason,
    )
    .await;
    match result {
        Ok(r) => Ok(see_other(&format!("/flags/{}?done=variants", segment(&r.key)))),
        Err(e) if e.code == Code::VersionMismatch => {
            let record = load(&state, &key).await?;
            Ok(stale_view(&record, &mut meta))
        }
        Err(e) if matches!(e.code, Code::ValidationFailed | Code::MalformedRequest) => {
            let status = e.code.status();
            Ok(show(&record, &rows, &meta, status, &field_errors(e)))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, value: &str, was: &str, remove: bool) -> Row {
        Row { key: key.into(), value: value.into(), was: was.into(), remove }
    }

    #[test]
    fn rows_read_as_variants_in_order_and_survive_the_form() {
        let variants: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"blue": "blue", "n": 42, "t": true, "s": "42", "o": {"a": 1}}"#).unwrap();
        let rows = rows_of(&variants);
        let back: Vec<(String, Value)> = variants.into_iter().collect();
        assert_eq!(to_variants(&rows).unwrap(), back);
    }

    #[test]
    fn what_the_form_cannot_read_is_an_error_at_its_input() {
        let rows = vec![
            row("on", "true", "on", false),
            row("", "1", "", false),
            row("on", "2", "", false),
            row("x", "", "", false),
        ];
        let errors = to_variants(&rows).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["variants[1].key", "variants[2].key", "variants[3].value"]);
        assert!(to_variants(&[row("", "", "", false), row("gone", "1", "gone", true)]).unwrap().is_empty());
    }

    #[test]
    fn a_served_variant_that_is_gone_is_reported_at_the_row_that_removed_or_renamed_it() {
        let rows =
            vec![row("on", "true", "on", false), row("off", "false", "off", true), row("azure", "1", "blue", false)];
        let gone = |name: &str| {
            FieldError::new(
                "environments.production.default.variant",
                format!("unknown variant \"{name}\" (the flag has: on)"),
            )
        };
        assert_eq!(place(&rows, &gone("off")).as_deref(), Some("variants[1].key"));
        assert_eq!(place(&rows, &gone("blue")).as_deref(), Some("variants[2].key"));
        assert_eq!(place(&rows, &gone("nope")), None);
        assert_eq!(place(&rows, &FieldError::new("variants.azure", "not null")).as_deref(), Some("variants[2].value"));
        assert_eq!(place(&rows, &FieldError::new("owner", "required")), None);
    }

    #[test]
    fn forms_past_the_bounds_are_refused() {
        let pairs = vec![(format!("variants[{MAX_VARIANTS}].key"), "x".to_owned())];
        assert!(from_pairs(&pairs).is_err());
    }
}
