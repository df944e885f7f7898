//! What the console's editors share: the API's field errors put back at the inputs they name
//! (each editor says how its paths map to its input names; this module places, marks and lists
//! them the same way everywhere), and clauses as form text (the targeting editor's rules and
//! segment rules edit them alike).

use std::collections::BTreeMap;

use dimmer_engine::model::{Clause, Operator};
use maud::{Markup, html};
use serde_json::Value;

use crate::api::error::{ApiError, Details, FieldError};

/// The API's 422 (or 409, 400) as field errors: `details.errors`, else its message unplaced.
pub(super) fn field_errors(e: ApiError) -> Vec<FieldError> {
    match e.details {
        Some(Details::Errors { errors }) if !errors.is_empty() => errors,
        _ => vec![FieldError::new("", e.message)],
    }
}

/// An input's `id` from its name (`rules[0].serve` → `f-rules-0--serve`); its error's id adds
/// `-error`.
pub(super) fn id_of(name: &str) -> String {
    let mut id = String::from("f-");
    for c in name.chars() {
        id.push(if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' });
    }
    id
}

/// Whether `input` is `path` or a field above it (`rules[0].serve` above `rules[0].serve.rollout`).
pub(super) fn covers(input: &str, path: &str) -> bool {
    path.strip_prefix(input).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// The input an error path belongs to: the deepest input at or above it, else the first input
/// below it (`rules[0].clauses[0]` → its attribute). `None`: shown above the form only.
pub(super) fn input_for<'a>(path: &str, inputs: &'a [String]) -> Option<&'a str> {
    inputs
        .iter()
        .filter(|i| covers(i, path))
        .max_by_key(|i| i.len())
        .or_else(|| inputs.iter().find(|i| covers(path, i)))
        .map(String::as_str)
}

/// `name` = `{prefix}{N}]{rest}` → `(N, rest)`.
pub(super) fn index_after<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let after = name.strip_prefix(prefix)?;
    let (n, rest) = after.split_once(']')?;
    Some((n.parse().ok()?, rest))
}

/// Errors placed at their inputs: what a page needs to mark an input invalid, point its
/// `aria-describedby` at the message beside it, and list every error above the form.
pub(super) struct Placed<'a> {
    at: BTreeMap<String, Vec<&'a FieldError>>,
    all: Vec<(Option<String>, &'a FieldError)>,
}

impl<'a> Placed<'a> {
    /// `place` names the input an error belongs to (mostly from its path).
    pub(super) fn new(errors: &'a [FieldError], place: impl Fn(&FieldError) -> Option<String>) -> Self {
        let mut at: BTreeMap<String, Vec<&FieldError>> = BTreeMap::new();
        let mut all = Vec::with_capacity(errors.len());
        for e in errors {
            let name = place(e);
            if let Some(n) = &name {
                at.entry(n.clone()).or_default().push(e);
            }
            all.push((name, e));
        }
        Self { at, all }
    }

    /// Whether input `name` has an error.
    pub(super) fn invalid(&self, name: &str) -> bool {
        self.at.contains_key(name)
    }

    /// The `aria-invalid` attribute of input `name`.
    pub(super) fn aria_invalid(&self, name: &str) -> Option<&'static str> {
        self.invalid(name).then_some("true")
    }

    /// The `aria-describedby` of input `name`: its error message, when it has one.
    pub(super) fn described(&self, name: &str) -> Option<String> {
        self.invalid(name).then(|| format!("{}-error", id_of(name)))
    }

    /// The messages of input `name`, to show beside it.
    pub(super) fn at(&self, name: &str) -> Markup {
        html! {
            @if let Some(list) = self.at.get(name) {
                p.error id={ (id_of(name)) "-error" } {
                    @for (n, err) in list.iter().enumerate() {
                        @if n > 0 { br; }
                        (err.message) @if let Some(rule) = err.rule { " (rule " code { (rule) } ")" }
                    }
                }
            }
        }
    }

    /// Every error above the form, each linked to its input, under `heading`.
    pub(super) fn summary(&self, heading: &str) -> Markup {
        html! {
            @if !self.all.is_empty() {
                div.error #form-errors role="alert" {
                    p { (heading) }
                    ul { @for (name, err) in &self.all {
                        li {
                            @match name {
                                Some(n) => a href={ "#" (id_of(n)) } { code { (err.path) } },
                                None => code { (err.path) },
                            }
                            ": " (err.message) @if let Some(rule) = err.rule { " (rule " code { (rule) } ")" }
                        }
                    } }
                }
            }
        }
    }
}

/// "Not saved: 2 problems."
pub(super) fn not_saved(n: usize) -> String {
    format!("Not saved: {n} {}.", if n == 1 { "problem" } else { "problems" })
}

/// One clause as a form holds it: text, as typed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct ClauseDraft {
    pub(super) attribute: String,
    pub(super) op: String,
    /// One value a line; a line that reads as JSON (`42`, `true`, `"42"`) is that value.
    pub(super) values: String,
    pub(super) negate: bool,
    pub(super) case_insensitive: bool,
    pub(super) remove: bool,
}

/// The input fields of a clause, as `{prefix}.{field}` names.
pub(super) const CLAUSE_FIELDS: [&str; 5] = ["attribute", "op", "values", "negate", "case_insensitive"];

impl ClauseDraft {
    pub(super) fn of(c: &Clause) -> Self {
        Self {
            attribute: c.attribute.clone().unwrap_or_default(),
            op: c.op.name().to_owned(),
            values: c.values.iter().map(value_text).collect::<Vec<_>>().join("\n"),
            negate: c.negate,
            case_insensitive: c.case_insensitive,
            remove: false,
        }
    }

    /// The clause this draft describes (the engine judges it).
    pub(super) fn to_clause(&self) -> Clause {
        Clause {
            attribute: Some(self.attribute.trim().to_owned()).filter(|a| !a.is_empty()),
            op: Operator::parse(self.op.trim()),
            values: parse_values(&self.values),
            negate: self.negate,
            case_insensitive: self.case_insensitive,
        }
    }

    pub(super) fn is_blank(&self) -> bool {
        self.attribute.trim().is_empty() && self.values.trim().is_empty() && (self.op.is_empty() || self.op == "in")
    }

    /// Takes the posted field `field` (`.attribute`, `.negate`, …); false if it is not one.
    pub(super) fn set(&mut self, field: &str, value: String) -> bool {
        match field {
            ".attribute" => self.attribute = value,
            ".op" => self.op = value,
            ".values" => self.values = value,
            ".negate" => self.negate = true,
            ".case_insensitive" => self.case_insensitive = true,
            ".remove" => self.remove = true,
            _ => return false,
        }
        true
    }

    /// The clause's inputs, named `{q}.attribute` and so on, in a fieldset labelled `label`.
    pub(super) fn render(&self, q: &str, label: &str, legend: &str, errors: &Placed<'_>) -> Markup {
        let attribute = format!("{q}.attribute");
        let op = format!("{q}.op");
        let values = format!("{q}.values");
        html! {
            fieldset.clause aria-label=(label) {
                legend { (legend) }
                div.field.invalid[errors.invalid(&attribute)] {
                    label for=(id_of(&attribute)) { "Attribute" }
                    input id=(id_of(&attribute)) name=(attribute) value=(self.attribute) autocomplete="off"
                        aria-invalid=[errors.aria_invalid(&attribute)] aria-describedby=[errors.described(&attribute)];
                    (errors.at(&attribute))
                }
                div.field.invalid[errors.invalid(&op)] {
                    label for=(id_of(&op)) { "Operator" }
                    select id=(id_of(&op)) name=(op) aria-invalid=[errors.aria_invalid(&op)] aria-describedby=[errors.described(&op)] {
                        @for o in Operator::ALL { option value=(o.name()) selected[self.op == o.name()] { (o.name()) } }
                        @if !self.op.is_empty() && !Operator::ALL.iter().any(|o| o.name() == self.op) {
                            option value=(self.op) selected { (self.op) }
                        }
                    }
                    (errors.at(&op))
                }
                div.field.invalid[errors.invalid(&values)] {
                    label for=(id_of(&values)) { "Values" }
                    div.hint { "one a line; 42, true or \"42\" are read as JSON" }
                    textarea id=(id_of(&values)) name=(values) rows="2" aria-invalid=[errors.aria_invalid(&values)] aria-describedby=[errors.described(&values)] { (self.values) }
                    (errors.at(&values))
                }
                div.checks {
                    label { input type="checkbox" name={ (q) ".negate" } value="on" checked[self.negate]; " Negate" }
                    label { input type="checkbox" name={ (q) ".case_insensitive" } value="on" checked[self.case_insensitive]; " Ignore case" }
                    label { input type="checkbox" name={ (q) ".remove" } value="on" checked[self.remove]; " Remove this clause" }
                }
            }
        }
    }
}

/// A JSON value as one line of a form: strings bare unless they would read back as another value.
pub(super) fn value_text(v: &Value) -> String {
    match v {
        // A string that would read back as another JSON value is quoted.
        Value::String(s) if serde_json::from_str::<Value>(s).is_ok() || s.trim() != s || s.is_empty() => {
            serde_json::to_string(s).unwrap_or_default()
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One line as a value: JSON if it reads as JSON, else the text itself.
pub(super) fn parse_value(line: &str) -> Value {
    serde_json::from_str::<Value>(line).unwrap_or_else(|_| Value::String(line.to_owned()))
}

/// Values one a line (blank lines skipped).
pub(super) fn parse_values(text: &str) -> Vec<Value> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(parse_value).collect()
}

/// Keys one a line or separated by commas (blank ones skipped).
pub(super) fn parse_keys(text: &str) -> Vec<String> {
    text.split([',', '\n']).map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_find_the_deepest_input_above_them_or_the_first_below() {
        let names: Vec<String> = ["rules[0].serve", "rules[0].clauses[0].attribute", "rules[0].clauses[0].op"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(input_for("rules[0].serve.rollout.variants[0]", &names), Some("rules[0].serve"));
        assert_eq!(input_for("rules[0].clauses[0]", &names), Some("rules[0].clauses[0].attribute"));
        assert_eq!(input_for("rules[1]", &names), None);
        assert!(!covers("rules[0].serve", "rules[0].server"));
    }

    #[test]
    fn placed_errors_mark_their_input_and_list_every_error() {
        let errors = vec![FieldError::new("included[0]", "bad"), FieldError::new("", "general")];
        let placed = Placed::new(&errors, |e| e.path.starts_with("included").then(|| "included".to_owned()));
        assert!(placed.invalid("included") && !placed.invalid("excluded"));
        assert_eq!(placed.described("included").as_deref(), Some("f-included-error"));
        let summary = placed.summary("Not saved").into_string();
        assert!(summary.contains("href=\"#f-included\"") && summary.contains("general"), "{summary}");
        assert!(placed.at("included").into_string().contains("id=\"f-included-error\""));
    }

    #[test]
    fn values_survive_the_form() {
        let values = vec![Value::from("pro"), Value::from("42"), Value::from(7), Value::from(true), Value::from(" x")];
        let text: Vec<String> = values.iter().map(value_text).collect();
        assert_eq!(parse_values(&text.join("\n")), values);
    }
}
