//! Live outcome metrics on a flag's page: per variant, evaluations, error rate, p50 and p95
//! latency and custom events over a chosen window, as SVG charts drawn on the server (no
//! script needed to see them) with the plan's stage changes, kills, dial-downs and guard
//! verdicts marked on the time axis. The numbers come from the rows the metrics API reads
//! (`Store::metric_rows`, summed by `dimmer_domain::outcomes` as `GET /api/v1/flags/{key}/metrics`
//! does); the page's script refreshes the fragment while the page is open.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dimmer_domain::outcomes::{Aggregate, BUCKET_MS, COARSE_BUCKET_MS, bucket_of, totals};
use dimmer_store::{AuditBounds, AuditFilter, FlagRecord};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::session::Viewer;
use super::{ConsoleState, Failure, human_duration, ok_page, page, query_value, segment, when};
use crate::api::error::ApiError;

/// The windows offered, by their name in the query.
const WINDOWS: [(&str, i64); 5] =
    [("15m", 900_000), ("1h", 3_600_000), ("6h", 21_600_000), ("24h", 86_400_000), ("7d", 604_800_000)];
/// Points per chart, about.
const POINTS: i64 = 30;
/// Chart size in SVG units (it scales to the page's width).
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 120.0;
const PAD_LEFT: f64 = 52.0;
const PAD_BOTTOM: f64 = 18.0;
/// Line colours by variant order, each at least 4.5:1 on white.
const COLOURS: [&str; 6] = ["#0b57d0", "#a4161a", "#0a6b2d", "#6a1b9a", "#8a4b00", "#00695c"];
/// At most this many audit entries are marked on the axis.
const MAX_MARKS: u32 = 200;
/// The audit read behind the marks: bodies over 2 KiB summarised, reasons over it cut to their
/// first thousand characters; the count, not the bytes, ends the page.
const MARK_BOUNDS: AuditBounds = AuditBounds { body_bytes: 2048, page_bytes: 4 << 20 };

pub(super) fn router() -> Router<ConsoleState> {
    Router::new().route("/flags/{key}/environments/{env}/metrics", get(fragment))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct WindowQuery {
    #[serde(default)]
    window: String,
}

/// The window's name and length; unknown names read as one hour.
pub(super) fn window_of(name: &str) -> (&'static str, i64) {
    WINDOWS.iter().find(|(n, _)| *n == name).copied().unwrap_or(WINDOWS[1])
}

/// One step of one variant.
#[derive(Debug, Clone, Copy, Default)]
struct Point {
    evaluations: f64,
    error_rate: Option<f64>,
    p50: Option<f64>,
    p95: Option<f64>,
    events: Option<f64>,
}

fn point(a: &Aggregate) -> Point {
    let events: u64 = a.events.values().map(|e| e.count).sum();
    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52 are drawn, not computed with")]
    let per_eval = (a.evaluations > 0).then(|| events as f64 / a.evaluations as f64);
    #[allow(clippy::cast_precision_loss, reason = "as above")]
    Point {
        evaluations: a.evaluations as f64,
        error_rate: a.error_rate().map(|r| r * 100.0),
        p50: a.latency.quantile(0.5),
        p95: a.latency.quantile(0.95),
        events: per_eval,
    }
}

/// One variant's line: its name and `(time, value)` points (no value: no data in that step).
type Line = (String, Vec<(i64, Option<f64>)>);

/// A mark on the time axis: an audit entry of the flag in this environment.
struct Mark {
    at: i64,
    label: String,
}

/// `s` escaped for HTML text and attribute values.
fn esc(s: &str) -> String {
    html! { (s) }.into_string()
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}").trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{v:.4}").trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// One chart: a line per variant over the window, marks as dashed verticals.
fn chart(title: &str, unit: &str, series: &[Line], from: i64, until: i64, marks: &[Mark]) -> Markup {
    let max = series.iter().flat_map(|(_, p)| p.iter().filter_map(|(_, v)| *v)).fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let plot_w = WIDTH - PAD_LEFT;
    let plot_h = HEIGHT - PAD_BOTTOM;
    #[allow(clippy::cast_precision_loss, reason = "milliseconds within a window, far below 2^52")]
    let x = |t: i64| PAD_LEFT + (t - from) as f64 / (until - from).max(1) as f64 * plot_w;
    let y = |v: f64| plot_h - v / top * (plot_h - 4.0);
    let mut svg = String::new();
    let id = title.to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-{id}"><title id="chart-{id}">{} over the window, per variant</title>"#,
        esc(title)
    );
    let _ = write!(
        svg,
        r##"<line x1="{PAD_LEFT}" y1="{plot_h}" x2="{WIDTH}" y2="{plot_h}" stroke="#4a4a4a"/><line x1="{PAD_LEFT}" y1="0" x2="{PAD_LEFT}" y2="{plot_h}" stroke="#4a4a4a"/>"##
    );
    let _ = write!(
        svg,
        r##"<text x="{}" y="12" text-anchor="end" font-size="11" fill="#1a1a1a">{}{unit}</text><text x="{}" y="{plot_h}" text-anchor="end" font-size="11" fill="#1a1a1a">0</text>"##,
        PAD_LEFT - 4.0,
        fmt_num(top),
        PAD_LEFT - 4.0
    );
    for mark in marks.iter().filter(|m| m.at >= from && m.at <= until) {
        let mx = x(mark.at);
        let _ = write!(
            svg,
            r##"<line class="mark" x1="{mx:.1}" y1="0" x2="{mx:.1}" y2="{plot_h}" stroke="#6b7280" stroke-dasharray="3 3"><title>{}</title></line>"##,
            esc(&mark.label)
        );
    }
    for (n, (variant, points)) in series.iter().enumerate() {
        let colour = COLOURS[n % COLOURS.len()];
        let coords: Vec<String> =
            points.iter().filter_map(|(t, v)| v.map(|v| format!("{:.1},{:.1}", x(*t), y(v)))).collect();
        if coords.is_empty() {
            continue;
        }
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}" data-variant="{}"/>"#,
            coords.join(" "),
            esc(variant)
        );
        for c in &coords {
            if let Some((cx, cy)) = c.split_once(',') {
                let _ = write!(svg, r#"<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>"#);
            }
        }
    }
    let _ = write!(
        svg,
        r##"<text x="{PAD_LEFT}" y="{}" font-size="11" fill="#1a1a1a">{}</text><text x="{WIDTH}" y="{}" text-anchor="end" font-size="11" fill="#1a1a1a">now</text></svg>"##,
        HEIGHT - 4.0,
        esc(&when(from)),
        HEIGHT - 4.0
    );
    html! {
        figure.chart-box {
            figcaption { strong { (title) } }
            (PreEscaped(svg))
        }
    }
}

/// The metrics section of a flag's page for `env` over the window named `window`.
pub(super) async fn section(
    state: &ConsoleState,
    record: &FlagRecord,
    env: &str,
    window: &str,
) -> Result<Markup, ApiError> {
    let (window, window_ms) = window_of(window);
    let now = state.app.clock.now_ms();
    let until = bucket_of(now, BUCKET_MS) + BUCKET_MS;
    let from = until - window_ms;
    let rows = state.app.store.metric_rows(env, &record.key, bucket_of(from, COARSE_BUCKET_MS), until).await?;
    let sums = totals(&rows, from, until);
    let step = ((window_ms / POINTS).max(BUCKET_MS) + BUCKET_MS - 1) / BUCKET_MS * BUCKET_MS;
    let mut steps: BTreeMap<String, BTreeMap<i64, Aggregate>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.bucket_ms >= from) {
        steps
            .entry(row.variant.clone())
            .or_default()
            .entry(bucket_of(row.bucket_ms - from, step) + from)
            .or_default()
            .add(&row.aggregate);
    }
    // Variants in the flag's order, then any others with data.
    let mut variants: Vec<String> = record.flag.variants.keys().filter(|v| sums.contains_key(*v)).cloned().collect();
    variants.extend(sums.keys().filter(|v| !record.flag.variants.contains_key(*v)).cloned());
    // A page, not whole entries: the marks need no bodies, so large ones never leave the store
    // (a flag's newest entries read through its `(flag, id)` index, at most `MAX_MARKS`).
    let filter = AuditFilter {
        flag: Some(record.key.clone()),
        environment: Some(env.to_owned()),
        limit: MAX_MARKS,
        ..AuditFilter::default()
    };
    let audit = state.app.store.audit_page(&filter, &MARK_BOUNDS).await?.entries;
    let marks: Vec<Mark> = audit
        .iter()
        .filter(|e| e.at >= from && ["release.", "plan.", "guard."].iter().any(|p| e.action.starts_with(p)))
        .map(|e| Mark {
            at: e.at,
            label: format!(
                "{} by {} at {}{}",
                e.action,
                e.actor,
                when(e.at),
                e.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
            ),
        })
        .collect();
    // Steps centred on their middle, so a step's point sits where its data is.
    let series_of = |pick: &dyn Fn(&Point) -> Option<f64>| -> Vec<Line> {
        variants
            .iter()
            .map(|v| {
                let points = steps
                    .get(v)
                    .map(|s| s.iter().map(|(t, a)| ((*t + step / 2).min(until), pick(&point(a)))).collect())
                    .unwrap_or_default();
                (v.clone(), points)
            })
            .collect()
    };
    let flag_url = format!("/flags/{}", segment(&record.key));
    let fragment_url = format!("{flag_url}/environments/{}/metrics?window={window}", segment(env));
    let legend = html! {
        ul.legend aria-label="Variants" {
            @for (n, v) in variants.iter().enumerate() {
                li { span class={ "swatch c" (n % COLOURS.len()) } {} " " (v) }
            }
        }
    };
    Ok(html! {
        section.card #metrics aria-labelledby="metrics-h" data-refresh=(fragment_url) {
            h2 #metrics-h { "Outcomes in " (env) ", last " (human_duration(window_ms)) }
            form.filters method="get" action=(flag_url) {
                input type="hidden" name="env" value=(env);
                div { label for="window" { "Window" }
                    select #window name="window" {
                        @for (name, _) in WINDOWS { option value=(name) selected[name == window] { (name) } }
                    }
                }
                div.actions { button type="submit" { "Show window" } }
            }
            @if variants.is_empty() {
                p.muted { "No outcomes reported in this window. SDKs report evaluations, errors, latency and events; see docs/guards.md." }
            } @else {
                div.scroll {
                    table.metrics {
                        caption { "Per variant over the window" }
                        thead { tr {
                            th scope="col" { "Variant" } th scope="col" { "Evaluations" } th scope="col" { "Errors" }
                            th scope="col" { "Error rate" } th scope="col" { "p50 latency" } th scope="col" { "p95 latency" } th scope="col" { "Events" }
                        } }
                        tbody {
                            @for v in &variants {
                                @if let Some(a) = sums.get(v) {
                                    tr data-variant=(v) {
                                        th scope="row" { (v) }
                                        td { (a.evaluations) }
                                        td { (a.errors) }
                                        td { (a.error_rate().map_or_else(|| "—".to_owned(), |r| format!("{:.2}%", r * 100.0))) }
                                        td { (a.latency.quantile(0.5).map_or_else(|| "—".to_owned(), |v| format!("{} ms", fmt_num(v)))) }
                                        td { (a.latency.quantile(0.95).map_or_else(|| "—".to_owned(), |v| format!("{} ms", fmt_num(v)))) }
                                        td { @if a.events.is_empty() { "—" } @else {
                                            (a.events.iter().map(|(name, e)| format!("{name}: {}", e.count)).collect::<Vec<_>>().join(", "))
                                        } }
                                    }
                                }
                            }
                        }
                    }
                }
                (legend)
                div.charts {
                    (chart("Evaluations", "", &series_of(&|p| Some(p.evaluations)), from, until, &marks))
                    (chart("Error rate", "%", &series_of(&|p| p.error_rate), from, until, &marks))
                    (chart("Latency p50", " ms", &series_of(&|p| p.p50), from, until, &marks))
                    (chart("Latency p95", " ms", &series_of(&|p| p.p95), from, until, &marks))
                    (chart("Events per evaluation", "", &series_of(&|p| p.events), from, until, &marks))
                }
            }
            @if !marks.is_empty() {
                h3 { "Marked on the time axis" }
                ul.marks { @for m in &marks { li { (m.label) } } }
            }
            p.muted { "Updated " (when(now)) "." }
        }
    })
}

/// `GET /flags/{key}/environments/{env}/metrics?window=1h`: the section alone (the page's
/// script swaps it in), or within a page for a person who opened the link.
async fn fragment(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    headers: axum::http::HeaderMap,
    Path((key, env)): Path<(String, String)>,
    Query(q): Query<WindowQuery>,
) -> Result<Response, Failure> {
    let record = state.app.store.get_flag(&key).await?.ok_or_else(|| ApiError::not_found("flag", &key))?;
    if !state.app.store.list_environments().await?.iter().any(|e| e.name == env) {
        return Err(ApiError::not_found("environment", &env).into());
    }
    let markup = section(&state, &record, &env, &q.window).await?;
    if headers.get("x-fragment").is_some() {
        return Ok(axum::response::Html(markup.into_string()).into_response());
    }
    let body = html! {
        p.crumbs { a href="/" { "Flags" } " / " a href={ "/flags/" (segment(&key)) "?env=" (query_value(&env)) } { (key) } " / " }
        (markup)
    };
    Ok(ok_page(page(&format!("Outcomes of {key}"), Some(&viewer), body)))
}
