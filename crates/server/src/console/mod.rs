//! The web console: server-rendered pages (maud) under `/`, beside the API under `/api` and
//! `/ofrep`, served by the same binary. A presentation layer like `api/`: it authenticates a
//! person by an API token once, keeps a server-side session, and then calls the same services
//! and store methods the API handlers call — so scope checks, policy, validation and the audit
//! log (with the token's name as actor) hold by construction.
//!
//! Safety: every page carries a strict Content-Security-Policy (scripts only as ES modules from
//! `/assets`, no inline script or style), every change is a POST with a per-session CSRF token
//! and an Origin check, and the session cookie is HttpOnly and SameSite=Strict.

mod admin;
mod edit;
mod flag;
mod flags;
mod form;
mod history;
mod metrics;
mod plan;
mod segments;
mod session;
mod variants;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, html};

use crate::api::AppState;
use crate::api::error::{ApiError, Code};
pub use session::Sessions;
use session::Viewer;

/// What console handlers share: the API's state (services, store, clock) and the sessions.
#[derive(Clone, Debug)]
pub struct ConsoleState {
    /// The services and store, as the API handlers see them.
    pub app: AppState,
    /// Signed-in people.
    pub sessions: std::sync::Arc<Sessions>,
    /// Every flag's list row, kept current by the change feed (the list's search and filters).
    pub catalogue: std::sync::Arc<crate::service::catalogue::Catalogue>,
}

/// Console forms are small; anything larger is not a person typing.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The console's routes, ready to merge beside the API's router.
pub fn router(app: AppState) -> Router {
    let sessions = std::sync::Arc::new(Sessions::new(app.clock.clone()));
    let catalogue = std::sync::Arc::new(crate::service::catalogue::Catalogue::new());
    let state = ConsoleState { app, sessions, catalogue };
    Router::new()
        .route("/", get(flags::list))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .merge(session::router())
        .merge(flags::router())
        .merge(flag::router())
        .merge(edit::router())
        .merge(plan::router())
        .merge(metrics::router())
        .merge(admin::router())
        .merge(segments::router())
        .merge(variants::router())
        .merge(history::router())
        .layer(middleware::from_fn(security_headers))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(state)
}

/// The policy of every console answer: scripts and styles from this server only (the ES module
/// and stylesheet under `/assets`), no inline code, no framing, forms posting back here only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        // Pages show live state and a CSRF token: never from a cache.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("../../assets/console.css"))
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../../assets/console.js"))
}

/// An embedded asset: nothing is fetched from elsewhere at run time.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A whole page: the shared head, the navigation for `viewer` (none before sign-in), `body`.
fn page(title: &str, viewer: Option<&Viewer>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Dimmer" }
                link rel="stylesheet" href="/assets/console.css";
                script type="module" src="/assets/console.js" {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Dimmer" }
                    @if let Some(v) = viewer {
                        nav aria-label="Main" {
                            a href="/" { "Flags" }
                            @if v.can_write() { a href="/new-flag" { "New flag" } }
                            a href="/history" { "History" }
                            a href="/policy" { "Policy" }
                            a href="/segments" { "Segments" }
                            a href="/environments" { "Environments" }
                            a href="/templates" { "Templates" }
                            @if v.principal.require(&[]).is_ok() { a href="/tokens" { "Tokens" } }
                        }
                        div.who {
                            span { "Signed in as " strong { (v.principal.name) } " (" (v.principal.scope.as_str()) ")" }
                            form method="post" action="/sign-out" {
                                input type="hidden" name="csrf" value=(v.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// A failed console request: JSON in the API's one error shape for scripts (`Accept:
/// application/json`), a page naming the problem for people.
#[derive(Debug)]
pub(crate) struct Failure {
    error: ApiError,
    json: bool,
}

impl Failure {
    fn new(error: ApiError, json: bool) -> Self {
        Self { error, json }
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self { error, json: false }
    }
}

impl From<dimmer_store::StoreError> for Failure {
    fn from(error: dimmer_store::StoreError) -> Self {
        ApiError::from(error).into()
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        if self.json {
            return self.error.into_response();
        }
        let status = self.error.code.status();
        let markup = page(
            "Error",
            None,
            html! {
                h1 { "Something went wrong" }
                p.error role="alert" { (self.error.message) }
                p { a href="/" { "Back to the flags" } }
            },
        );
        (status, axum::response::Html(markup.into_string())).into_response()
    }
}

/// Whether the caller (the console's script) asked for JSON instead of a page.
fn wants_json(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/json"))
}

/// A page with status 200.
fn ok_page(markup: Markup) -> Response {
    axum::response::Html(markup.into_string()).into_response()
}

/// After a change made by a plain form post: back to a page (post/redirect/get).
fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// A form that does not parse: the message names the field.
fn bad_form(rejection: axum::extract::rejection::FormRejection) -> ApiError {
    ApiError::new(Code::MalformedRequest, rejection.body_text())
}

/// `s` as one URL path segment (flag keys may hold any character but `/` and spaces).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `s` as a query-string value.
fn query_value(s: &str) -> String {
    segment(s)
}

/// A duration in words: "4 min 10 s", "2 h 5 min", "3 days".
fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} days {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A Unix-millisecond time as UTC text (`2026-05-01 12:30:05 UTC`).
fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, (rem % 3600) / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(when(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn durations_read_in_words() {
        assert_eq!(human_duration(59_000), "59 s");
        assert_eq!(human_duration(250_000), "4 min 10 s");
        assert_eq!(human_duration(7_500_000), "2 h 5 min");
    }

    #[test]
    fn keys_are_encoded_as_one_segment() {
        assert_eq!(segment("team.new-checkout"), "team.new-checkout");
        assert_eq!(segment("a?b#c%"), "a%3Fb%23c%25");
    }
}
