//! Editing a flag's configuration in one environment: on/off, the off variant, individual
//! targets, rules with their clauses, gates and what they serve, and the default serve. A plain
//! HTML form (it works without script: "add a rule" and "add a clause" post the form back and
//! it is shown again with an empty row), saved through `api::flags::replace_environment`, the
//! function behind `PUT /api/v1/flags/{key}/environments/{env}`: the same policy, engine
//! validation, `If-Match` and audit. Errors come back at the input whose path they name; a
//! stale edit (the flag changed since the form was read) is not written but shown beside what
//! changed meanwhile.
//!
//! Also here: "revert to this version" from the history, which replaces one environment's
//! configuration with the one an audit entry recorded, through the same function.

use std::collections::BTreeMap;

use axum::Form;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dimmer_engine::model::{BucketBy, EnvironmentConfig, Gate, Rollout, Rule, Serve, WeightedVariant};
use dimmer_store::FlagRecord;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::form::{
    CLAUSE_FIELDS, ClauseDraft, Placed, field_errors, id_of, index_after, input_for, not_saved, parse_keys,
};
use super::session::Viewer;
use super::{ConsoleState, Failure, bad_form, page, query_value, see_other, segment, when};
use crate::api::error::{ApiError, Code, FieldError};

/// At most this many rules in one form (the engine's own bounds are far above what a person edits).
const MAX_RULES: usize = 200;
/// At most this many clauses in one rule of a form.
const MAX_CLAUSES: usize = 50;
/// The weight total when a rollout or gate leaves it out (1/1000 of a percent).
const DEFAULT_TOTAL: u32 = 100_000;

pub(super) fn router() -> Router<ConsoleState> {
    Router::new()
        .route("/flags/{key}/environments/{env}/edit", get(edit_form).post(save))
        .route("/flags/{key}/environments/{env}/revert", get(revert_form).post(revert))
}

/// One rule as the form holds it.
#[derive(Debug, Clone, Default, PartialEq)]
struct RuleDraft {
    id: String,
    description: String,
    /// A variant (`on`) or a split (`on 20%, off 80%`).
    serve: String,
    /// The rollout's settings the form does not show (total, bucket_by, salt, seed), as JSON,
    /// so that saving never moves anyone between buckets.
    serve_extra: String,
    /// A percentage let in, or empty for no gate.
    gate: String,
    gate_extra: String,
    remove: bool,
    clauses: Vec<ClauseDraft>,
}

/// The whole form.
#[derive(Debug, Clone, Default, PartialEq)]
struct Draft {
    enabled: bool,
    off_variant: String,
    default: String,
    default_extra: String,
    /// Variant → targeting keys, one a line.
    targets: Vec<(String, String)>,
    rules: Vec<RuleDraft>,
}

/// What travels with the form besides the draft.
#[derive(Debug, Clone, Default)]
struct Meta {
    csrf: String,
    /// The flag version the form was read at (`If-Match`).
    version: i64,
    /// The configuration at that version, as JSON: what "changed meanwhile" is measured from.
    base: String,
    reason: String,
    /// A button other than Save: `rule`, `clause:N`, `up:N`.
    add: String,
}

/// A rollout's or gate's settings besides the weights, kept across an edit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Extra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    total: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bucket_by: Option<BucketBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    salt: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    seed: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Extra {
    fn text(&self) -> String {
        if *self == Extra::default() { String::new() } else { serde_json::to_string(self).unwrap_or_default() }
    }

    fn total(&self) -> u32 {
        self.total.unwrap_or(DEFAULT_TOTAL).max(1)
    }
}

/// `weight` out of `total` as a percentage with at most three decimals, without trailing zeros.
fn percent(weight: u32, total: u32) -> String {
    let p = f64::from(weight) * 100.0 / f64::from(total.max(1));
    let text = format!("{p:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A percentage typed in the form as a weight out of `total`.
fn weight_of(text: &str, total: u32) -> Result<u32, String> {
    let t = text.trim().trim_end_matches('%').trim();
    let p: f64 = t.parse().map_err(|_| format!("{text:?} is not a percentage"))?;
    if !p.is_finite() || !(0.0..=100.0).contains(&p) {
        return Err(format!("{text:?} is not a percentage from 0 to 100"));
    }
    let w = (p * f64::from(total) / 100.0).round();
    // In 0..=total (checked just above), so it fits a u32 exactly.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "range checked above")]
    Ok(w as u32)
}

fn serve_text(serve: &Serve) -> (String, String) {
    match (&serve.variant, &serve.rollout) {
        (Some(v), _) => (v.clone(), String::new()),
        (None, Some(r)) => {
            let extra = Extra { total: r.total, bucket_by: r.bucket_by.clone(), salt: r.salt.clone(), seed: r.seed };
            let total = extra.total();
            let parts: Vec<String> =
                r.variants.iter().map(|w| format!("{} {}%", w.variant, percent(w.weight, total))).collect();
            (parts.join(", "), extra.text())
        }
        (None, None) => (String::new(), String::new()),
    }
}

fn parse_extra(text: &str, path: &str) -> Result<Extra, FieldError> {
    if text.trim().is_empty() {
        return Ok(Extra::default());
    }
    serde_json::from_str(text)
        .map_err(|e| FieldError::new(path, format!("the kept rollout settings do not parse: {e}")))
}

/// `on` → that variant; `on 20%, off 80%` → a split. Empty → none.
fn parse_serve(text: &str, extra: &str, path: &str) -> Result<Option<Serve>, FieldError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if !text.contains('%') && !text.contains(',') && !text.contains(' ') {
        return Ok(Some(Serve::variant(text)));
    }
    let extra = parse_extra(extra, path)?;
    let total = extra.total();
    let mut variants = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, share) = part.rsplit_once([' ', ':']).ok_or_else(|| {
            FieldError::new(path, format!("{part:?}: write a variant and its share, like \"on 20%\""))
        })?;
        let weight = weight_of(share, total).map_err(|m| FieldError::new(path, format!("{part:?}: {m}")))?;
        variants.push(WeightedVariant { variant: name.trim().trim_end_matches(':').trim().to_owned(), weight });
    }
    Ok(Some(Serve {
        variant: None,
        rollout: Some(Rollout {
            variants,
            total: extra.total,
            bucket_by: extra.bucket_by,
            salt: extra.salt,
            seed: extra.seed,
        }),
    }))
}

impl Draft {
    fn of(cfg: &EnvironmentConfig, variants: &[String]) -> Self {
        let (default, default_extra) = cfg.default.as_ref().map(serve_text).unwrap_or_default();
        let mut targets: Vec<(String, String)> = variants
            .iter()
            .map(|v| (v.clone(), cfg.targets.get(v).map(|k| k.join("\n")).unwrap_or_default()))
            .collect();
        for (v, keys) in &cfg.targets {
            if !variants.contains(v) {
                targets.push((v.clone(), keys.join("\n")));
            }
        }
        let rules = cfg
            .rules
            .iter()
            .map(|r| {
                let (serve, serve_extra) = serve_text(&r.serve);
                let (gate, gate_extra) = r.gate.as_ref().map_or_else(Default::default, |g| {
                    let extra =
                        Extra { total: g.total, bucket_by: g.bucket_by.clone(), salt: g.salt.clone(), seed: g.seed };
                    (percent(g.weight, extra.total()), extra.text())
                });
                RuleDraft {
                    id: r.id.clone().unwrap_or_default(),
                    description: r.description.clone().unwrap_or_default(),
                    serve,
                    serve_extra,
                    gate,
                    gate_extra,
                    remove: false,
                    clauses: r.clauses.iter().map(ClauseDraft::of).collect(),
                }
            })
            .collect();
        Self {
            enabled: cfg.enabled,
            off_variant: cfg.off_variant.clone().unwrap_or_default(),
            default,
            default_extra,
            targets,
            rules,
        }
    }

    /// Reads the posted fields (names as the form writes them: `rules[0].clauses[1].op`).
    /// Unknown names are ignored; indexes past the bounds are refused.
    fn from_pairs(pairs: &[(String, String)]) -> Result<(Self, Meta), ApiError> {
        let mut draft = Draft::default();
        let mut meta = Meta::default();
        let mut rules: BTreeMap<usize, RuleDraft> = BTreeMap::new();
        let mut clauses: BTreeMap<(usize, usize), ClauseDraft> = BTreeMap::new();
        let too_many = |name: &str| {
            ApiError::new(
                Code::ValidationFailed,
                format!("{name}: at most {MAX_RULES} rules of {MAX_CLAUSES} clauses in one form"),
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
                "enabled" => draft.enabled = value == "on" || value == "true",
                "off_variant" => draft.off_variant = value,
                "default" => draft.default = value,
                "default.extra" => draft.default_extra = value,
                _ => {
                    if let Some(variant) = name.strip_prefix("targets.") {
                        if draft.targets.len() >= MAX_RULES {
                            return Err(too_many(name));
                        }
                        draft.targets.push((variant.to_owned(), value));
                        continue;
                    }
                    let Some((i, rest)) = index_after(name, "rules[") else { continue };
                    if i >= MAX_RULES {
                        return Err(too_many(name));
                    }
                    if let Some((j, field)) = index_after(rest, ".clauses[") {
                        if j >= MAX_CLAUSES {
                            return Err(too_many(name));
                        }
                        rules.entry(i).or_default();
                        clauses.entry((i, j)).or_default().set(field, value);
                        continue;
                    }
                    let r = rules.entry(i).or_default();
                    match rest {
                        ".id" => r.id = value,
                        ".description" => r.description = value,
                        ".serve" => r.serve = value,
                        ".serve.extra" => r.serve_extra = value,
                        ".gate" => r.gate = value,
                        ".gate.extra" => r.gate_extra = value,
                        ".remove" => r.remove = true,
                        _ => {}
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

    /// The configuration this draft describes, on top of `current` (its prerequisites and
    /// exposure are not edited here: exposure belongs to release plans and dial-downs). Errors
    /// of the form itself name the input as the API's paths do.
    fn to_config(&self, current: &EnvironmentConfig) -> Result<EnvironmentConfig, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut cfg = EnvironmentConfig {
            enabled: self.enabled,
            prerequisites: current.prerequisites.clone(),
            exposure: current.exposure.clone(),
            ..EnvironmentConfig::default()
        };
        let off = self.off_variant.trim();
        cfg.off_variant = (!off.is_empty()).then(|| off.to_owned());
        match parse_serve(&self.default, &self.default_extra, "default") {
            Ok(serve) => cfg.default = serve,
            Err(e) => errors.push(e),
        }
        for (variant, keys) in &self.targets {
            let keys = parse_keys(keys);
            if !keys.is_empty() {
                cfg.targets.entry(variant.clone()).or_default().extend(keys);
            }
        }
        for (i, r) in self.rules.iter().enumerate().filter(|(_, r)| !r.remove && !r.is_blank()) {
            // Paths name the rule by its place in the form; removed and blank rules before it
            // shift the saved index, so the saved rule's errors are mapped back (see `render`).
            let path = format!("rules[{i}]");
            let serve = match parse_serve(&r.serve, &r.serve_extra, &format!("{path}.serve")) {
                Ok(Some(s)) => s,
                Ok(None) => {
                    errors.push(FieldError::new(format!("{path}.serve"), "say what the rule serves"));
                    Serve::default()
                }
                Err(e) => {
                    errors.push(e);
                    Serve::default()
                }
            };
            let gate = if r.gate.trim().is_empty() {
                None
            } else {
                match parse_extra(&r.gate_extra, &format!("{path}.gate")).and_then(|extra| {
                    weight_of(&r.gate, extra.total())
                        .map(|weight| Gate {
                            weight,
                            total: extra.total,
                            bucket_by: extra.bucket_by,
                            salt: extra.salt,
                            seed: extra.seed,
                        })
                        .map_err(|m| FieldError::new(format!("{path}.gate"), m))
                }) {
                    Ok(g) => Some(g),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                }
            };
            let clauses = r.clauses.iter().filter(|c| !c.remove && !c.is_blank()).map(ClauseDraft::to_clause).collect();
            let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
            cfg.rules.push(Rule { id: text(&r.id), description: text(&r.description), clauses, gate, serve });
        }
        if errors.is_empty() { Ok(cfg) } else { Err(errors) }
    }

    /// For each saved rule index, its place in the form (removed and blank rules are skipped
    /// when saving), and likewise for clauses: to put the API's errors back at their inputs.
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

    /// Applies a button other than Save: an empty rule or clause, or a rule moved up.
    fn apply(&mut self, add: &str) {
        if add == "rule" && self.rules.len() < MAX_RULES {
            self.rules.push(RuleDraft { clauses: vec![ClauseDraft::default()], ..RuleDraft::default() });
        } else if let Some(i) = add.strip_prefix("clause:").and_then(|i| i.parse::<usize>().ok()) {
            if let Some(r) = self.rules.get_mut(i)
                && r.clauses.len() < MAX_CLAUSES
            {
                r.clauses.push(ClauseDraft::default());
            }
        } else if let Some(i) = add.strip_prefix("up:").and_then(|i| i.parse::<usize>().ok())
            && i > 0
            && i < self.rules.len()
        {
            self.rules.swap(i - 1, i);
        }
    }
}

impl RuleDraft {
    fn is_blank(&self) -> bool {
        self.id.trim().is_empty()
            && self.description.trim().is_empty()
            && self.serve.trim().is_empty()
            && self.gate.trim().is_empty()
            && self.clauses.iter().all(ClauseDraft::is_blank)
    }
}

/// An error path of the API (`environments.production.rules[0].clauses[1].values[0]`) made
/// relative to the form (`rules[0].clauses[1].values[0]`), with saved rule and clause indexes
/// turned back into the form's. `None`: not about this environment (shown above the form).
fn form_path(path: &str, env: &str, places: &[(usize, Vec<usize>)]) -> Option<String> {
    let prefix = format!("environments{}", dimmer_engine::compile::path_key(env));
    let rest = path.strip_prefix(&prefix)?;
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    let Some((i, after)) = index_after(rest, "rules[") else { return Some(rest.to_owned()) };
    let Some((form_i, clause_places)) = places.get(i) else { return Some(rest.to_owned()) };
    if let Some((j, tail)) = index_after(after, ".clauses[") {
        let form_j = clause_places.get(j).copied().unwrap_or(j);
        return Some(format!("rules[{form_i}].clauses[{form_j}]{tail}"));
    }
    Some(format!("rules[{form_i}]{after}"))
}

/// Every input name the form shows for `draft`, in page order.
fn input_names(draft: &Draft) -> Vec<String> {
    let mut names = vec!["enabled".to_owned(), "off_variant".to_owned()];
    for (v, _) in &draft.targets {
        names.push(format!("targets.{v}"));
    }
    for (i, r) in draft.rules.iter().enumerate() {
        for f in ["id", "description"] {
            names.push(format!("rules[{i}].{f}"));
        }
        for j in 0..r.clauses.len() {
            for f in CLAUSE_FIELDS {
                names.push(format!("rules[{i}].clauses[{j}].{f}"));
            }
        }
        names.push(format!("rules[{i}].gate"));
        names.push(format!("rules[{i}].serve"));
    }
    names.push("default".to_owned());
    names
}

/// The variant keys of a flag, in order.
fn variant_keys(record: &FlagRecord) -> Vec<String> {
    record.flag.variants.keys().cloned().collect()
}

/// The editor page. `errors` are in the form's paths; `stale` is set when the save was refused
/// because the flag changed meanwhile (theirs: base → current; yours: base → your draft).
struct Editor<'a> {
    viewer: &'a Viewer,
    record: &'a FlagRecord,
    env: &'a str,
    draft: &'a Draft,
    meta: &'a Meta,
    errors: &'a [FieldError],
    stale: Option<Stale>,
}

struct Stale {
    base_version: i64,
    theirs: Markup,
    yours: Markup,
    who: Vec<(String, i64, Option<String>)>,
}

fn render(e: &Editor<'_>) -> Markup {
    let names = input_names(e.draft);
    let placed = Placed::new(e.errors, |err| input_for(&err.path, &names).map(str::to_owned));
    let invalid = |name: &str| placed.invalid(name);
    let described = |name: &str| placed.described(name);
    let errors_of = |name: &str| placed.at(name);
    let variants = variant_keys(e.record);
    let flag_url = format!("/flags/{}", segment(&e.record.key));
    let action = format!("{flag_url}/environments/{}/edit", segment(e.env));
    let text_input = |name: &str, label: &str, value: &str, hint: &str| -> Markup {
        let id = id_of(name);
        html! {
            div.field.invalid[invalid(name)] {
                label for=(id) { (label) }
                @if !hint.is_empty() { div.hint { (hint) } }
                input id=(id) name=(name) value=(value) autocomplete="off" list=[(name.ends_with("serve") || name == "default").then_some("variant-list")]
                    aria-invalid=[invalid(name).then_some("true")] aria-describedby=[described(name)];
                (errors_of(name))
            }
        }
    };
    html! {
        p.crumbs { a href="/" { "Flags" } " / " a href={ (flag_url) "?env=" (query_value(e.env)) } { (e.record.key) } " / " }
        h1 { "Edit " (e.record.key) " in " (e.env) }
        @if let Some(stale) = &e.stale {
            section.card.danger #stale role="alert" aria-labelledby="stale-h" {
                h2 #stale-h { "Changed meanwhile: your edit was not saved" }
                p { "You started from version " (stale.base_version) "; the flag is at version " (e.record.version)
                    " now. Nothing was overwritten. Compare, then save your edit over the current version or discard it." }
                @if !stale.who.is_empty() {
                    ul { @for (actor, at, reason) in &stale.who {
                        li { strong { (actor) } " at " (when(*at)) @if let Some(r) = reason { ": " (r) } }
                    } }
                }
                div.act-grid {
                    div { h3 { "Their change" } (stale.theirs) }
                    div { h3 { "Your edit" } (stale.yours) }
                }
                p { a href=(action) { "Discard my edit and start from the current version" } }
            }
        }
        (placed.summary(&not_saved(e.errors.len())))
        datalist #variant-list { @for v in &variants { option value=(v) {} } }
        form.card.editor method="post" action=(action) novalidate {
            input type="hidden" name="csrf" value=(e.viewer.csrf);
            input type="hidden" name="version" value=(e.meta.version);
            input type="hidden" name="base" value=(e.meta.base);
            fieldset {
                legend { "State" }
                div.field.check.invalid[invalid("enabled")] {
                    input #f-enabled type="checkbox" name="enabled" value="on" checked[e.draft.enabled] aria-describedby=[described("enabled")];
                    label for="f-enabled" { "On in " (e.env) }
                    (errors_of("enabled"))
                }
                div.field.invalid[invalid("off_variant")] {
                    label for="f-off_variant" { "Off variant" }
                    div.hint { "served while off, and the control variant of dial-downs (default: off)" }
                    select #f-off_variant name="off_variant" aria-invalid=[invalid("off_variant").then_some("true")] aria-describedby=[described("off_variant")] {
                        option value="" { "(default)" }
                        @for v in &variants { option value=(v) selected[e.draft.off_variant == *v] { (v) } }
                        @if !e.draft.off_variant.is_empty() && !variants.contains(&e.draft.off_variant) {
                            option value=(e.draft.off_variant) selected { (e.draft.off_variant) }
                        }
                    }
                    (errors_of("off_variant"))
                }
            }
            fieldset {
                legend { "Individual targets" }
                p.hint { "Targeting keys that always get a variant, one a line (or separated by commas)." }
                @for (v, keys) in &e.draft.targets {
                    @let name = format!("targets.{v}");
                    div.field.invalid[invalid(&name)] {
                        label for=(id_of(&name)) { "Targets served " (v) }
                        textarea id=(id_of(&name)) name=(name) rows="2" aria-invalid=[invalid(&name).then_some("true")] aria-describedby=[described(&name)] { (keys) }
                        (errors_of(&name))
                    }
                }
            }
            fieldset {
                legend { "Rules, tried in order" }
                @if e.draft.rules.is_empty() { p.muted { "No rules." } }
                @for (i, r) in e.draft.rules.iter().enumerate() {
                    @let p = format!("rules[{i}]");
                    fieldset.rule aria-label={ "Rule " (i + 1) } {
                        legend { "Rule " (i + 1) }
                        input type="hidden" name={ (p) ".serve.extra" } value=(r.serve_extra);
                        input type="hidden" name={ (p) ".gate.extra" } value=(r.gate_extra);
                        (text_input(&format!("{p}.id"), "Rule id", &r.id, ""))
                        (text_input(&format!("{p}.description"), "Rule description", &r.description, ""))
                        @for (j, c) in r.clauses.iter().enumerate() {
                            (c.render(&format!("{p}.clauses[{j}]"), &format!("Rule {}, clause {}", i + 1, j + 1), &format!("Clause {}", j + 1), &placed))
                        }
                        button.secondary type="submit" name="add" value={ "clause:" (i) } formnovalidate { "Add a clause to rule " (i + 1) }
                        (text_input(&format!("{p}.gate"), "Gate: share of matching users let in (percent)", &r.gate, "empty: everyone who matches"))
                        (text_input(&format!("{p}.serve"), "Serves", &r.serve, "a variant (on), or a split (on 20%, off 80%)"))
                        div.checks {
                            label { input type="checkbox" name={ (p) ".remove" } value="on" checked[r.remove]; " Remove rule " (i + 1) }
                        }
                        @if i > 0 { button.secondary type="submit" name="add" value={ "up:" (i) } formnovalidate { "Move rule " (i + 1) " up" } }
                    }
                }
                button.secondary type="submit" name="add" value="rule" formnovalidate { "Add a rule" }
            }
            fieldset {
                legend { "Default" }
                input type="hidden" name="default.extra" value=(e.draft.default_extra);
                (text_input("default", "Default serve", &e.draft.default, "when no target or rule matches: a variant, or a split (on 20%, off 80%); empty: on"))
            }
            div.field {
                label for="f-reason" { "Reason" }
                div.hint { "why, for the audit log" }
                input #f-reason name="reason" value=(e.meta.reason) autocomplete="off";
            }
            button type="submit" name="add" value="" { @if e.stale.is_some() { "Save over the current version" } @else { "Save" } }
        }
    }
}

async fn load(state: &ConsoleState, key: &str) -> Result<FlagRecord, ApiError> {
    state.app.store.get_flag(key).await?.ok_or_else(|| ApiError::not_found("flag", key))
}

async fn known_env(state: &ConsoleState, env: &str) -> Result<(), ApiError> {
    if state.app.store.list_environments().await?.iter().any(|e| e.name == env) {
        Ok(())
    } else {
        Err(ApiError::not_found("environment", env))
    }
}

fn config_json(record: &FlagRecord, env: &str) -> String {
    let cfg = record.flag.environments.get(env).cloned().unwrap_or_default();
    serde_json::to_string(&cfg).unwrap_or_default()
}

fn respond(status: StatusCode, title: &str, viewer: &Viewer, body: Markup) -> Response {
    (status, axum::response::Html(page(title, Some(viewer), body).into_string())).into_response()
}

/// `GET /flags/{key}/environments/{env}/edit`.
async fn edit_form(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path((key, env)): Path<(String, String)>,
) -> Result<Response, Failure> {
    viewer.principal.require_write()?;
    known_env(&state, &env).await?;
    let record = load(&state, &key).await?;
    let cfg = record.flag.environments.get(&env).cloned().unwrap_or_default();
    let draft = Draft::of(&cfg, &variant_keys(&record));
    let meta = Meta { version: record.version, base: config_json(&record, &env), ..Meta::default() };
    let editor =
        Editor { viewer: &viewer, record: &record, env: &env, draft: &draft, meta: &meta, errors: &[], stale: None };
    Ok(respond(StatusCode::OK, &format!("Edit {key}"), &viewer, render(&editor)))
}

/// `POST /flags/{key}/environments/{env}/edit`: Save, or a button that changes the form.
async fn save(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path((key, env)): Path<(String, String)>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, Failure> {
    let Form(pairs) = form.map_err(bad_form)?;
    let (mut draft, mut meta) = Draft::from_pairs(&pairs)?;
    viewer.check_csrf(&meta.csrf)?;
    viewer.principal.require_write()?;
    known_env(&state, &env).await?;
    let record = load(&state, &key).await?;
    let title = format!("Edit {key}");
    if !meta.add.is_empty() {
        draft.apply(&meta.add);
        let editor = Editor {
            viewer: &viewer,
            record: &record,
            env: &env,
            draft: &draft,
            meta: &meta,
            errors: &[],
            stale: None,
        };
        return Ok(respond(StatusCode::OK, &title, &viewer, render(&editor)));
    }
    let current = record.flag.environments.get(&env).cloned().unwrap_or_default();
    let config = match draft.to_config(&current) {
        Ok(c) => c,
        Err(errors) => {
            let editor = Editor {
                viewer: &viewer,
                record: &record,
                env: &env,
                draft: &draft,
                meta: &meta,
                errors: &errors,
                stale: None,
            };
            return Ok(respond(StatusCode::UNPROCESSABLE_ENTITY, &title, &viewer, render(&editor)));
        }
    };
    if record.version != meta.version {
        return Ok(stale_view(&state, &viewer, &record, &env, &draft, &mut meta, &config).await);
    }
    let reason = Some(meta.reason.trim().to_owned()).filter(|r| !r.is_empty());
    let result = crate::api::flags::replace_environment(
        &state.app,
        &viewer.principal,
        &key,
        env.clone(),
        config.clone(),
        meta.version,
        reason,
    )
    .await;
    match result {
        Ok(_) => Ok(see_other(&format!("/flags/{}?env={}&done=edit", segment(&key), query_value(&env)))),
        Err(e) if e.code == Code::VersionMismatch => {
            // Changed between our read and the write: read again and show what changed.
            let record = load(&state, &key).await?;
            Ok(stale_view(&state, &viewer, &record, &env, &draft, &mut meta, &config).await)
        }
        Err(e) if matches!(e.code, Code::ValidationFailed | Code::MalformedRequest) => {
            let status = e.code.status();
            let places = draft.saved_places();
            let errors: Vec<FieldError> = field_errors(e)
                .into_iter()
                .map(|f| match form_path(&f.path, &env, &places) {
                    Some(path) => FieldError { path, ..f },
                    None => f,
                })
                .collect();
            let editor = Editor {
                viewer: &viewer,
                record: &record,
                env: &env,
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

/// The 412 view: the draft kept, their change and the edit side by side, and the form now based
/// on the current version (so "save over" is a deliberate second step).
async fn stale_view(
    state: &ConsoleState,
    viewer: &Viewer,
    record: &FlagRecord,
    env: &str,
    draft: &Draft,
    meta: &mut Meta,
    yours: &EnvironmentConfig,
) -> Response {
    let base: Option<Value> = serde_json::from_str(&meta.base).ok();
    let current = serde_json::to_value(record.flag.environments.get(env).cloned().unwrap_or_default()).ok();
    let mine = serde_json::to_value(yours).ok();
    let who = state
        .app
        .store
        .audit(&dimmer_store::AuditFilter { flag: Some(record.key.clone()), limit: 5, ..Default::default() })
        .await
        .unwrap_or_default()
        .into_iter()
        // The newest entries of the flag: as many as versions passed, which is what changed it.
        .take(usize::try_from(record.version - meta.version).unwrap_or(1).clamp(1, 5))
        .map(|a| (a.actor, a.at, a.reason))
        .collect();
    let stale = Stale {
        base_version: meta.version,
        theirs: super::history::diff(base.as_ref(), current.as_ref()),
        yours: super::history::diff(base.as_ref(), mine.as_ref()),
        who,
    };
    meta.version = record.version;
    meta.base = config_json(record, env);
    let editor = Editor { viewer, record, env, draft, meta, errors: &[], stale: Some(stale) };
    respond(StatusCode::PRECONDITION_FAILED, &format!("Edit {}", record.key), viewer, render(&editor))
}

/// Which audit entry, and which side of it, a revert brings back.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RevertQuery {
    #[serde(default)]
    entry: i64,
    /// `after` (this version, the default) or `before` (before this change).
    #[serde(default)]
    side: String,
}

/// The environment's configuration as the audit entry recorded it (a flag's whole definition
/// before or after the change), read whole from the store by id.
async fn recorded(state: &ConsoleState, key: &str, env: &str, q: &RevertQuery) -> Result<EnvironmentConfig, ApiError> {
    let entry = state
        .app
        .store
        .get_audit_entry(q.entry)
        .await?
        .filter(|e| e.flag.as_deref() == Some(key))
        .ok_or_else(|| ApiError::not_found("audit entry of this flag", &q.entry.to_string()))?;
    let side = if q.side == "before" { entry.before } else { entry.after };
    let doc = side.ok_or_else(|| {
        ApiError::new(
            Code::ValidationFailed,
            "entry: this entry records no flag on that side (a creation has no before)",
        )
    })?;
    let cfg = doc.get("environments").and_then(|e| e.get(env)).cloned().unwrap_or(Value::Null);
    if cfg.is_null() {
        return Ok(EnvironmentConfig::default());
    }
    serde_json::from_value(cfg).map_err(|e| {
        ApiError::new(Code::ValidationFailed, format!("entry: the recorded configuration of {env} does not read: {e}"))
    })
}

fn revert_page(
    viewer: &Viewer,
    record: &FlagRecord,
    env: &str,
    q: &RevertQuery,
    target: &EnvironmentConfig,
    notice: Option<&str>,
    errors: &[FieldError],
) -> Markup {
    let current = serde_json::to_value(record.flag.environments.get(env).cloned().unwrap_or_default()).ok();
    let target_json = serde_json::to_value(target).ok();
    let flag_url = format!("/flags/{}", segment(&record.key));
    let side = if q.side == "before" { "before" } else { "after" };
    html! {
        p.crumbs { a href="/" { "Flags" } " / " a href={ (flag_url) "?env=" (query_value(env)) } { (record.key) } " / " }
        h1 { "Revert " (record.key) " in " (env) }
        p { "Brings back " (env) "'s configuration as it was " @if side == "before" { "before" } @else { "after" }
            " change #" (q.entry) ", as a new change (version " (record.version) " → " (record.version + 1)
            "), checked and audited like any edit." }
        @if let Some(n) = notice { div.error role="alert" #stale { p { (n) } } }
        @if !errors.is_empty() {
            div.error role="alert" #form-errors {
                p { "Not reverted:" }
                ul { @for e in errors { li { code { (e.path) } ": " (e.message) @if let Some(rule) = e.rule { " (rule " code { (rule) } ")" } } } }
            }
        }
        h2 { "What changes" }
        (super::history::diff(current.as_ref(), target_json.as_ref()))
        @if viewer.can_write() {
            form.card method="post" action={ (flag_url) "/environments/" (segment(env)) "/revert?entry=" (q.entry) "&side=" (side) } {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="hidden" name="version" value=(record.version);
                label for="revert-reason" { "Reason" }
                input #revert-reason name="reason" required autocomplete="off";
                button type="submit" { "Revert " (env) }
            }
        }
    }
}

/// `GET /flags/{key}/environments/{env}/revert?entry=N&side=after`: what a revert would change.
async fn revert_form(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path((key, env)): Path<(String, String)>,
    query: Result<Query<RevertQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let Query(q) = query.map_err(|e| ApiError::new(Code::MalformedRequest, e.body_text()))?;
    viewer.principal.require_write()?;
    known_env(&state, &env).await?;
    let record = load(&state, &key).await?;
    let target = recorded(&state, &key, &env, &q).await?;
    let body = revert_page(&viewer, &record, &env, &q, &target, None, &[]);
    Ok(respond(StatusCode::OK, &format!("Revert {key}"), &viewer, body))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RevertForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    version: i64,
    #[serde(default)]
    reason: String,
}

/// `POST /flags/{key}/environments/{env}/revert?entry=N&side=after`.
async fn revert(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path((key, env)): Path<(String, String)>,
    query: Result<Query<RevertQuery>, axum::extract::rejection::QueryRejection>,
    form: Result<Form<RevertForm>, FormRejection>,
) -> Result<Response, Failure> {
    let Query(q) = query.map_err(|e| ApiError::new(Code::MalformedRequest, e.body_text()))?;
    let Form(form) = form.map_err(bad_form)?;
    viewer.check_csrf(&form.csrf)?;
    viewer.principal.require_write()?;
    known_env(&state, &env).await?;
    let record = load(&state, &key).await?;
    let mut target = recorded(&state, &key, &env, &q).await?;
    // Exposure belongs to release plans and dial-downs: a revert of targeting leaves it alone.
    target.exposure = record.flag.environments.get(&env).and_then(|c| c.exposure.clone());
    let title = format!("Revert {key}");
    let reason = form.reason.trim();
    if reason.is_empty() {
        let errors = [FieldError::new("reason", "required: say why (it goes to the audit log)")];
        let body = revert_page(&viewer, &record, &env, &q, &target, None, &errors);
        return Ok(respond(StatusCode::UNPROCESSABLE_ENTITY, &title, &viewer, body));
    }
    let stale = |record: &FlagRecord, target: &EnvironmentConfig| {
        let notice = format!(
            "The flag changed meanwhile (version {} when you looked, {} now): nothing was reverted. Check the changes below again.",
            form.version, record.version
        );
        respond(
            StatusCode::PRECONDITION_FAILED,
            &title,
            &viewer,
            revert_page(&viewer, record, &env, &q, target, Some(&notice), &[]),
        )
    };
    if record.version != form.version {
        return Ok(stale(&record, &target));
    }
    let reason =
        format!("revert to change #{} ({}): {reason}", q.entry, if q.side == "before" { "before" } else { "after" });
    let result = crate::api::flags::replace_environment(
        &state.app,
        &viewer.principal,
        &key,
        env.clone(),
        target.clone(),
        form.version,
        Some(reason),
    )
    .await;
    match result {
        Ok(_) => Ok(see_other(&format!("/flags/{}?env={}&done=revert", segment(&key), query_value(&env)))),
        Err(e) if e.code == Code::VersionMismatch => {
            let record = load(&state, &key).await?;
            Ok(stale(&record, &target))
        }
        Err(e) if matches!(e.code, Code::ValidationFailed | Code::MalformedRequest) => {
            let status = e.code.status();
            let body = revert_page(&viewer, &record, &env, &q, &target, None, &field_errors(e));
            Ok(respond(status, &title, &viewer, body))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> EnvironmentConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_configuration_survives_the_form_unchanged() {
        let cfg = config(json!({
            "enabled": true,
            "targets": {"on": ["alice", "bob"]},
            "rules": [
                {"id": "beta", "clauses": [
                    {"attribute": "plan", "op": "in", "values": ["pro", "42", 7, true]},
                    {"attribute": "email", "op": "ends_with", "values": ["@example.com"], "negate": true, "case_insensitive": true}
                ], "gate": {"weight": 12500, "salt": "s"}, "serve": {"variant": "on"}},
                {"serve": {"rollout": {"variants": [{"variant": "on", "weight": 333}, {"variant": "off", "weight": 667}], "total": 1000, "salt": "x", "seed": 3}}}
            ],
            "default": {"rollout": {"variants": [{"variant": "on", "weight": 20000}, {"variant": "off", "weight": 80000}]}},
            "off_variant": "off",
            "exposure": {"weight": 5000}
        }));
        let draft = Draft::of(&cfg, &["on".into(), "off".into()]);
        assert_eq!(draft.rules[1].serve, "on 33.3%, off 66.7%");
        assert_eq!(draft.default, "on 20%, off 80%");
        // Through the wire: the field names the page writes.
        let mut pairs = vec![
            ("enabled".to_owned(), "on".to_owned()),
            ("off_variant".into(), draft.off_variant.clone()),
            ("default".into(), draft.default.clone()),
            ("default.extra".into(), draft.default_extra.clone()),
        ];
        for (v, keys) in &draft.targets {
            pairs.push((format!("targets.{v}"), keys.clone()));
        }
        for (i, r) in draft.rules.iter().enumerate() {
            for (f, v) in [
                ("id", &r.id),
                ("description", &r.description),
                ("serve", &r.serve),
                ("serve.extra", &r.serve_extra),
                ("gate", &r.gate),
                ("gate.extra", &r.gate_extra),
            ] {
                pairs.push((format!("rules[{i}].{f}"), v.clone()));
            }
            for (j, c) in r.clauses.iter().enumerate() {
                pairs.push((format!("rules[{i}].clauses[{j}].attribute"), c.attribute.clone()));
                pairs.push((format!("rules[{i}].clauses[{j}].op"), c.op.clone()));
                pairs.push((format!("rules[{i}].clauses[{j}].values"), c.values.clone()));
                if c.negate {
                    pairs.push((format!("rules[{i}].clauses[{j}].negate"), "on".into()));
                }
                if c.case_insensitive {
                    pairs.push((format!("rules[{i}].clauses[{j}].case_insensitive"), "on".into()));
                }
            }
        }
        let (back, _) = Draft::from_pairs(&pairs).unwrap();
        assert_eq!(back, draft);
        // The exposure is kept from the stored configuration, not from the form.
        assert_eq!(back.to_config(&cfg).unwrap(), cfg);
    }

    #[test]
    fn removed_and_blank_rules_are_dropped_and_errors_find_their_inputs_again() {
        let mut draft = Draft::default();
        draft.apply("rule");
        draft.apply("rule");
        draft.apply("rule");
        draft.rules[0].remove = true;
        draft.rules[0].serve = "on".into();
        draft.rules[2].serve = "on".into();
        draft.rules[2].clauses[0].attribute = "plan".into();
        draft.rules[2].clauses[0].op = "bogus".into();
        let cfg = draft.to_config(&EnvironmentConfig::default()).unwrap();
        assert_eq!(cfg.rules.len(), 1, "rule 1 removed, rule 2 blank");
        let places = draft.saved_places();
        let path = form_path("environments.production.rules[0].clauses[0].op", "production", &places);
        assert_eq!(path.as_deref(), Some("rules[2].clauses[0].op"));
        assert_eq!(form_path("environments.staging.rules[0]", "production", &places), None);
        let names = input_names(&draft);
        assert_eq!(input_for("rules[2].clauses[0].op", &names), Some("rules[2].clauses[0].op"));
        assert_eq!(input_for("rules[2].serve.rollout.variants[0].variant", &names), Some("rules[2].serve"));
        assert_eq!(input_for("rules[2].clauses[0]", &names), Some("rules[2].clauses[0].attribute"));
        assert_eq!(input_for("targets.on[0]", &names), None, "no such input shown");
        assert_eq!(input_for("", &names), None);
    }

    #[test]
    fn bad_shares_are_errors_at_their_input() {
        let draft = Draft { default: "on 120%, off".into(), ..Draft::default() };
        let errors = draft.to_config(&EnvironmentConfig::default()).unwrap_err();
        assert_eq!(errors[0].path, "default");
        let draft = Draft {
            rules: vec![RuleDraft { serve: "on".into(), gate: "lots".into(), ..RuleDraft::default() }],
            ..Draft::default()
        };
        assert_eq!(draft.to_config(&EnvironmentConfig::default()).unwrap_err()[0].path, "rules[0].gate");
    }

    #[test]
    fn forms_past_the_bounds_are_refused() {
        let pairs = vec![(format!("rules[{MAX_RULES}].id"), "x".to_owned())];
        assert!(Draft::from_pairs(&pairs).is_err());
    }
}
