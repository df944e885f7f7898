//! The audit log in the console: newest first, filtered by flag, environment, actor and action,
//! paged by id, each entry's before and after rendered as a diff of the fields that changed.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use dimmer_store::AuditFilter;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::session::Viewer;
use super::{ConsoleState, Failure, ok_page, page, query_value, segment, when};
use crate::api::error::{ApiError, Code};

/// Entries per page.
const PAGE_SIZE: u32 = 50;

pub(super) fn router() -> Router<ConsoleState> {
    Router::new().route("/history", get(history))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct HistoryQuery {
    #[serde(default)]
    flag: String,
    #[serde(default)]
    env: String,
    #[serde(default)]
    actor: String,
    /// Entries whose action starts with this (`release.`, `flag.update`).
    #[serde(default)]
    action: String,
    /// Entries older than this id (the next page).
    #[serde(default)]
    before: Option<i64>,
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

async fn history(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let Query(q) = query.map_err(|e| ApiError::new(Code::MalformedRequest, e.body_text()))?;
    let filter = AuditFilter {
        flag: some(&q.flag),
        environment: some(&q.env),
        actor: some(&q.actor),
        before_id: q.before,
        // The action filter is applied here, over a larger page, since the store does not know it.
        limit: if q.action.trim().is_empty() { PAGE_SIZE } else { 1000 },
    };
    let fetched = state.app.store.audit(&filter).await?;
    let last_id = fetched.last().map(|e| e.id);
    let full_page = fetched.len() == filter.limit as usize;
    let action = q.action.trim();
    let entries: Vec<_> = fetched.into_iter().filter(|e| e.action.starts_with(action)).collect();
    let next = full_page.then_some(last_id).flatten().map(|id| {
        let mut parts = Vec::new();
        for (k, v) in [("flag", &q.flag), ("env", &q.env), ("actor", &q.actor), ("action", &q.action)] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", query_value(v)));
            }
        }
        parts.push(format!("before={id}"));
        format!("/history?{}", parts.join("&"))
    });
    let title = if q.flag.is_empty() { "History".to_owned() } else { format!("History of {}", q.flag) };
    let body = html! {
        h1 { (title) }
        form.filters method="get" action="/history" role="search" aria-label="Filter the history" {
            div { label for="h-flag" { "Flag" } input #h-flag name="flag" value=(q.flag); }
            div { label for="h-env" { "Environment" } input #h-env name="env" value=(q.env); }
            div { label for="h-actor" { "Actor" } input #h-actor name="actor" value=(q.actor); }
            div { label for="h-action" { "Action" } input #h-action name="action" value=(q.action) placeholder="release., flag.update"; }
            div.actions { button type="submit" { "Apply filters" } }
        }
        @if entries.is_empty() { p { "No entries." } }
        ol.history {
            @for e in &entries {
                li.entry {
                    p.entry-head {
                        strong.action { (e.action) }
                        @if let Some(f) = &e.flag { " · " a href={ "/flags/" (segment(f)) } { (f) } }
                        @if let Some(env) = &e.environment { " · " (env) }
                        @if let Some(s) = &e.segment { " · segment " (s) }
                    }
                    p.muted { "by " strong.actor { (e.actor) } " at " (when(e.at)) }
                    p.reason { "Reason: " @if let Some(r) = &e.reason { span { (r) } } @else { span.muted { "none given" } } }
                    (diff(e.before.as_ref(), e.after.as_ref()))
                    @if let (true, Some(f)) = (viewer.can_write(), &e.flag) {
                        @let envs = changed_environments(e.before.as_ref(), e.after.as_ref());
                        @if !envs.is_empty() {
                            ul.reverts {
                                @for env in &envs {
                                    @let base = format!("/flags/{}/environments/{}/revert?entry={}", segment(f), segment(env), e.id);
                                    li { a href={ (base) "&side=after" } { "Revert " (env) " to this version" } }
                                    @if e.before.is_some() {
                                        li { a href={ (base) "&side=before" } { "Revert " (env) " to before this change" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(href) = next { nav.pager aria-label="Pages" { a href=(href) rel="next" { "Older entries" } } }
    };
    Ok(ok_page(page(&title, Some(&viewer), body)))
}

/// Every leaf of a JSON value by its path (`environments.production.enabled`).
fn flatten(value: &Value, path: &str, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                flatten(v, &p, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                flatten(v, &format!("{path}[{i}]"), out);
            }
        }
        leaf => {
            out.insert(path.to_owned(), leaf.to_string());
        }
    }
}

/// One changed field: its path, the value before (none when added), after (none when removed).
pub(super) type Change = (String, Option<String>, Option<String>);

pub(super) fn changes(before: Option<&Value>, after: Option<&Value>) -> Vec<Change> {
    let (mut b, mut a) = (BTreeMap::new(), BTreeMap::new());
    if let Some(v) = before {
        flatten(v, "", &mut b);
    }
    if let Some(v) = after {
        flatten(v, "", &mut a);
    }
    let paths: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    paths
        .into_iter()
        .filter(|p| b.get(*p) != a.get(*p))
        .map(|p| (p.clone(), b.get(p).cloned(), a.get(p).cloned()))
        .collect()
}

pub(super) fn diff(before: Option<&Value>, after: Option<&Value>) -> Markup {
    let rows = changes(before, after);
    html! {
        @if rows.is_empty() { p.muted { "No field changed." } } @else {
            table.diff {
                caption.visually-hidden { "Fields changed" }
                thead { tr { th scope="col" { "Field" } th scope="col" { "Before" } th scope="col" { "After" } } }
                tbody {
                    @for (path, b, a) in &rows {
                        tr {
                            th scope="row" { code { (if path.is_empty() { "(value)" } else { path }) } }
                            td { @if let Some(b) = b { del { (b) } } @else { span.muted { "—" } } }
                            td { @if let Some(a) = a { ins { (a) } } @else { span.muted { "removed" } } }
                        }
                    }
                }
            }
        }
    }
}

/// Which environments an audit entry of a flag changed: those a revert is offered for.
pub(super) fn changed_environments(before: Option<&Value>, after: Option<&Value>) -> Vec<String> {
    let envs = |v: Option<&Value>| v.and_then(|v| v.get("environments")).and_then(Value::as_object).cloned();
    let (b, a) = (envs(before).unwrap_or_default(), envs(after).unwrap_or_default());
    let mut names: Vec<String> = b.keys().chain(a.keys()).cloned().collect();
    names.sort();
    names.dedup();
    names.retain(|n| b.get(n) != a.get(n));
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_diff_lists_changed_added_and_removed_fields() {
        let before = json!({"enabled": true, "exposure_percent": 100.0, "plan": {"stage": 1}});
        let after = json!({"enabled": false, "exposure_percent": 100.0, "note": "x"});
        let rows = changes(Some(&before), Some(&after));
        assert_eq!(
            rows,
            vec![
                ("enabled".into(), Some("true".into()), Some("false".into())),
                ("note".into(), None, Some("\"x\"".into())),
                ("plan.stage".into(), Some("1".into()), None),
            ]
        );
    }

    #[test]
    fn the_environments_an_entry_changed() {
        let before = json!({"environments": {"production": {"enabled": false}, "staging": {"enabled": true}}});
        let after = json!({"environments": {"production": {"enabled": true}, "staging": {"enabled": true}}});
        assert_eq!(changed_environments(Some(&before), Some(&after)), vec!["production".to_owned()]);
    }
}
