//! Signing in and out of the console, and who is looking at a page.
//!
//! A person signs in with an API token; the server keeps a session in memory (bounded in number,
//! expiring by the injected clock) keyed by the hash of a random id, and sends the id in an
//! HttpOnly, SameSite=Strict cookie. The token itself is never kept: the session holds the
//! token's hash so that a revoked token ends its sessions at the next request. Session ids and
//! tokens are never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Form;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dimmer_domain::Clock;
use dimmer_store::Scope;
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{ConsoleState, Failure, bad_form, page, see_other, wants_json};
use crate::api::auth::Principal;
use crate::api::error::{ApiError, Code};
use crate::service::tokens::hash_token;

/// The session cookie's name.
const COOKIE: &str = "dimmer_session";
/// How long a session lasts after sign-in.
const SESSION_TTL_MS: i64 = 12 * 60 * 60 * 1000;
/// At most this many sessions are kept; past it the oldest is dropped.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in person.
#[derive(Debug, Clone)]
struct Session {
    principal: Principal,
    /// The hash of the token signed in with: checked against the store on every request.
    token_hash: String,
    csrf: String,
    created_at: i64,
    expires_at: i64,
}

/// The sessions of this server, in memory: a restart signs everyone out, which is acceptable
/// for a console and keeps the store free of bearer secrets.
pub struct Sessions {
    clock: Arc<dyn Clock>,
    /// By the SHA-256 of the session id.
    by_id: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

fn random_hex() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(&e))?;
    Ok(hex::encode(bytes))
}

impl Sessions {
    /// No sessions; expiry by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock, by_id: Mutex::new(HashMap::new()) }
    }

    /// Opens a session; returns its id (for the cookie only).
    fn open(&self, principal: Principal, token_hash: String) -> Result<String, ApiError> {
        let id = random_hex()?;
        let now = self.clock.now_ms();
        let session =
            Session { principal, token_hash, csrf: random_hex()?, created_at: now, expires_at: now + SESSION_TTL_MS };
        let mut map = self.by_id.lock().map_err(|_| ApiError::new(Code::Internal, "the session table is poisoned"))?;
        map.retain(|_, s| s.expires_at > now);
        while map.len() >= MAX_SESSIONS {
            let Some(oldest) = map.iter().min_by_key(|(_, s)| s.created_at).map(|(k, _)| k.clone()) else { break };
            map.remove(&oldest);
        }
        map.insert(hash_token(&id), session);
        Ok(id)
    }

    fn get(&self, id: &str) -> Option<Session> {
        let now = self.clock.now_ms();
        let mut map = self.by_id.lock().ok()?;
        let key = hash_token(id);
        match map.get(&key) {
            Some(s) if s.expires_at > now => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    fn close(&self, id: &str) {
        if let Ok(mut map) = self.by_id.lock() {
            map.remove(&hash_token(id));
        }
    }

    /// How many sessions are open (tests check the bound).
    pub fn len(&self) -> usize {
        self.by_id.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The person looking at a page: their token's identity and their session's CSRF token.
#[derive(Debug, Clone)]
pub(super) struct Viewer {
    pub principal: Principal,
    pub csrf: String,
}

impl Viewer {
    /// May change flags (admin and writer tokens): decides which controls a page shows.
    pub fn can_write(&self) -> bool {
        self.principal.require_write().is_ok()
    }

    /// Refuses a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, presented: &str) -> Result<(), ApiError> {
        if bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::new(
                Code::Forbidden,
                "csrf: this form is stale or came from another site; reload the page and try again",
            ))
        }
    }
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Refuses a change sent from another site: a browser names the page's origin in `Origin` (and
/// `Sec-Fetch-Site`); it must be this server. Requests without them (not a browser) still need
/// the session's CSRF token.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refuse = || ApiError::new(Code::Forbidden, "origin: changes are accepted from this console's own pages only");
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "cross-site") {
        return Err(refuse());
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return Ok(()) };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) { Ok(()) } else { Err(refuse()) }
}

/// Not signed in: a page goes to the sign-in form, a script gets 401 in the API's error shape.
#[derive(Debug)]
pub(super) enum Unsigned {
    Redirect,
    Error(Failure),
}

impl IntoResponse for Unsigned {
    fn into_response(self) -> Response {
        match self {
            Unsigned::Redirect => see_other("/sign-in"),
            Unsigned::Error(f) => f.into_response(),
        }
    }
}

impl FromRequestParts<ConsoleState> for Viewer {
    type Rejection = Unsigned;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Self, Self::Rejection> {
        let json = wants_json(&parts.headers);
        let fail = |e: ApiError| Unsigned::Error(Failure::new(e, json));
        if parts.method != Method::GET && parts.method != Method::HEAD {
            same_origin(&parts.headers).map_err(fail)?;
        }
        let unsigned = || {
            if json {
                Unsigned::Error(Failure::new(
                    ApiError::new(Code::Unauthorized, "not signed in, or the session has ended"),
                    true,
                ))
            } else {
                Unsigned::Redirect
            }
        };
        let id = session_id(&parts.headers).ok_or_else(unsigned)?;
        let session = state.sessions.get(id).ok_or_else(unsigned)?;
        // A revoked token ends its sessions: the store is asked, not a cache.
        let token = state.app.store.token_by_hash(&session.token_hash).await.map_err(|e| fail(e.into()))?;
        if token.is_none_or(|t| t.revoked) {
            state.sessions.close(id);
            return Err(unsigned());
        }
        Ok(Viewer { principal: session.principal, csrf: session.csrf })
    }
}

pub(super) fn router() -> Router<ConsoleState> {
    Router::new().route("/sign-in", get(sign_in_form).post(sign_in)).route("/sign-out", post(sign_out))
}

fn sign_in_page(status: StatusCode, error: Option<&str>) -> Response {
    let markup = page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in to Dimmer" }
            p { "Use an API token with the admin, writer or reader scope (" code { "dimmer token create NAME --scope reader" } "). SDK tokens cannot sign in." }
            form.card method="post" action="/sign-in" {
                @if let Some(message) = error {
                    p.error #token-error role="alert" { (message) }
                }
                label for="token" { "API token" }
                @if error.is_some() {
                    input #token type="password" name="token" autocomplete="off" required aria-invalid="true" aria-describedby="token-error";
                } @else {
                    input #token type="password" name="token" autocomplete="off" required autofocus;
                }
                button type="submit" { "Sign in" }
            }
        },
    );
    (status, axum::response::Html(markup.into_string())).into_response()
}

async fn sign_in_form() -> Response {
    sign_in_page(StatusCode::OK, None)
}

#[derive(Debug, Deserialize)]
pub(super) struct SignInForm {
    #[serde(default)]
    token: String,
}

/// Whether the browser reached us over TLS (directly or through a proxy that says so): the
/// cookie is then marked `Secure`.
fn over_tls(headers: &HeaderMap) -> bool {
    let forwarded = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "https");
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("https://"));
    forwarded || origin
}

async fn sign_in(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Result<Response, Failure> {
    // Login CSRF: a sign-in posted from another site is refused like any change.
    same_origin(&headers)?;
    let Form(form) = form.map_err(bad_form)?;
    let token = form.token.trim();
    if token.is_empty() {
        return Ok(sign_in_page(StatusCode::UNPROCESSABLE_ENTITY, Some("API token: enter a token")));
    }
    let identity = state.app.tokens.authenticate(state.app.store.as_ref(), token).await?;
    let Some(identity) = identity else {
        return Ok(sign_in_page(StatusCode::UNAUTHORIZED, Some("API token: unknown or revoked token")));
    };
    let principal = Principal::from(identity);
    // Only people's scopes: SDK (and browser-client) tokens are for applications.
    if !matches!(principal.scope, Scope::Admin | Scope::Writer | Scope::Reader) {
        let message = format!(
            "API token: this is a {} token, made for applications (SDKs, OFREP); sign in with an admin, writer or reader token",
            principal.scope.as_str()
        );
        return Ok(sign_in_page(StatusCode::FORBIDDEN, Some(&message)));
    }
    tracing::info!(actor = %principal.name, "console sign-in");
    let id = state.sessions.open(principal, hash_token(token))?;
    let secure = if over_tls(&headers) { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", SESSION_TTL_MS / 1000);
    let mut response = see_other("/");
    let value = HeaderValue::from_str(&cookie).map_err(|_| ApiError::new(Code::Internal, "session cookie"))?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, Failure> {
    let Form(form) = form.map_err(bad_form)?;
    viewer.check_csrf(&form.csrf)?;
    if let Some(id) = session_id(&headers) {
        state.sessions.close(id);
    }
    let mut response = see_other("/sign-in");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("dimmer_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dimmer_domain::ManualClock;

    fn someone() -> Principal {
        Principal::from(crate::service::tokens::Identity {
            name: "alice".into(),
            scope: Scope::Reader,
            environment: None,
            stream_key: crate::service::tokens::StreamKey::from_hash("h".into()),
            origins: Vec::new(),
        })
    }

    #[test]
    fn sessions_expire_by_the_injected_clock() {
        let clock = Arc::new(ManualClock::new(1_000));
        let sessions = Sessions::new(clock.clone());
        let id = sessions.open(someone(), "h".into()).unwrap();
        assert!(sessions.get(&id).is_some());
        clock.advance_ms(SESSION_TTL_MS);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::new(Arc::new(ManualClock::new(0)));
        for _ in 0..MAX_SESSIONS + 5 {
            sessions.open(someone(), "h".into()).unwrap();
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
    }

    #[test]
    fn origins_of_other_sites_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&h).is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(same_origin(&h).is_err());
    }
}
