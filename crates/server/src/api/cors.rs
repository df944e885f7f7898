//! CORS for the routes pages call from another origin: OFREP (evaluations and change events) and
//! the SDK API. The admin API never gets this layer, so it sends no CORS headers and browsers
//! refuse cross-origin calls to it (its preflights are not answered with a 2xx either).
//!
//! Which origins may call is decided twice over: server-wide (`cors_origins` in `config`) and per
//! token (a token's `origins`, for sdk and client tokens).
//!
//! - **A request with a token** (`Authorization`, `X-API-Key`, or the event stream's ticket) whose
//!   token lists origins is answered for the page only if its origin is in that list or in the
//!   server-wide list; from any other origin it is refused with 403 in the API's error shape,
//!   naming the origin, without CORS headers (so a page that got hold of the token cannot read
//!   even the refusal). With a server-wide `*`, a token's list is the whole of what it allows:
//!   `*` says "no restriction configured", and a token's own list is one.
//! - **A request whose token lists no origins** (or without a token) follows the server-wide list:
//!   answers to allowed origins carry the CORS headers; others are served without them, not
//!   refused, and the browser keeps the answer from the page.
//! - **A preflight** (`OPTIONS` with `Access-Control-Request-Method`) carries no token: browsers
//!   never send credentials with it. It is answered 204 when the server-wide list allows the
//!   origin or when *some* live token lists it, and 403 otherwise. Answering it says no more than
//!   "a page of this origin may hold a token here"; it grants nothing, because the request that
//!   follows carries its token and is checked against that token's list as above.
//!
//! Allowed answers name the origin (or `*`) and expose `ETag`, which OFREP providers read from
//! script. A same-origin request (its `Origin` names the host it was sent to: a page served by
//! this server) is none of CORS's business and passes untouched.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::api::AppState;
use crate::api::auth::presented_token;
use crate::api::error::{ApiError, Code};
use crate::config::CorsOrigins;
use crate::service::origins::same_origin;
use crate::service::tokens::Identity;

/// The methods OFREP and SDK clients use.
const METHODS: &str = "GET, POST";
/// The request headers they send: the token, the JSON body, the conditional request, the stream
/// resume.
const HEADERS: &str = "Authorization, Content-Type, If-None-Match, X-API-Key, Last-Event-ID";
/// How long a browser may reuse a preflight answer, in seconds: a page evaluating on every
/// context change should not pay a preflight each time.
const MAX_AGE: &str = "600";

/// What the CORS layer consults: the server-wide origins, and the state for tokens' own.
struct Cors {
    origins: CorsOrigins,
    state: AppState,
}

/// `router` with CORS answered for `origins` and for tokens' own origins.
pub(super) fn allow(router: Router<AppState>, state: AppState, origins: &CorsOrigins) -> Router<AppState> {
    let cors = Arc::new(Cors { origins: origins.clone(), state });
    router.layer(middleware::from_fn_with_state(cors, cors_layer))
}

/// The event stream's query: its ticket stands for the token.
#[derive(Deserialize)]
struct TicketQuery {
    env: Option<String>,
    ticket: Option<String>,
}

/// How an answer to an origin is marked.
enum Allow {
    /// `Access-Control-Allow-Origin: *`.
    Any,
    /// The origin itself, with `Vary: Origin`.
    Origin,
}

async fn cors_layer(State(cors): State<Arc<Cors>>, request: Request, next: Next) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
        return next.run(request).await;
    };
    // An origin that is not text matches no list (and is shown as it came, lossily).
    let text = origin.to_str().ok().map(str::to_owned);
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    if let (Some(text), Some(host)) = (&text, host)
        && same_origin(text, host)
    {
        return next.run(request).await;
    }
    let server_allows = text.as_deref().is_some_and(|o| cors.origins.allows(o));
    let preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        return answer_preflight(&cors, origin, text.as_deref(), server_allows).await;
    }
    let decision = match token_of(&cors.state, request.headers(), request.uri()).await {
        // A token with origins of its own: its list, and the server's explicit list beside it.
        Some(identity) if !identity.origins.is_empty() => {
            let by_token = text.as_deref().is_some_and(|o| identity.origins.iter().any(|t| t == o));
            let by_server = server_allows && matches!(cors.origins, CorsOrigins::Only(_));
            if !(by_token || by_server) {
                return refuse(&origin, &identity);
            }
            Some(Allow::Origin)
        }
        _ if server_allows => Some(server_mark(&cors.origins)),
        _ => None,
    };
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    match decision {
        Some(mark) => {
            allow_origin(headers, &mark, origin);
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("ETag"));
        }
        None => {
            // The answer depends on the origin (and on the token): caches must not hand this one
            // to an allowed page.
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    response
}

async fn answer_preflight(cors: &Cors, origin: HeaderValue, text: Option<&str>, server_allows: bool) -> Response {
    let mark = if server_allows {
        Some(server_mark(&cors.origins))
    } else if let Some(text) = text {
        let state = &cors.state;
        match state.tokens.some_token_allows(state.store.as_ref(), text).await {
            Ok(true) => Some(Allow::Origin),
            Ok(false) => None,
            Err(e) => return ApiError::from(e).into_response(),
        }
    } else {
        None
    };
    let Some(mark) = mark else {
        let shown = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        let mut response = ApiError::new(
            Code::Forbidden,
            format!(
                "origin {shown} may not call this server from a browser (see cors_origins and the tokens' origins)"
            ),
        )
        .into_response();
        response.headers_mut().append(header::VARY, HeaderValue::from_static("Origin"));
        return response;
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    allow_origin(headers, &mark, origin);
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(HEADERS));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
    headers.append(header::VARY, HeaderValue::from_static("Access-Control-Request-Method"));
    headers.append(header::VARY, HeaderValue::from_static("Access-Control-Request-Headers"));
    response
}

/// The live token a request carries, if any: in its headers, or as the event stream's ticket.
/// An unknown token (or a failed lookup) reads as none here; the handler answers it.
async fn token_of(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Option<Identity> {
    let store = state.store.as_ref();
    if let Some(token) = presented_token(headers) {
        return state.tokens.authenticate(store, token).await.ok().flatten();
    }
    let Query(query) = Query::<TicketQuery>::try_from_uri(uri).ok()?;
    let (env, ticket) = (query.env?, query.ticket?);
    state.tokens.authenticate_ticket(store, &env, &ticket).await.ok().flatten()
}

/// 403 for a page of an origin the token does not list: no CORS headers, so the page cannot even
/// read why; the message is for whoever looks at the network panel or the server's answer.
fn refuse(origin: &HeaderValue, identity: &Identity) -> Response {
    let shown = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    let mut response = ApiError::new(
        Code::Forbidden,
        format!(
            "origin {shown} may not use the token \"{}\" from a browser: it is not among the token's origins ({}) \
             or the server's cors_origins",
            identity.name,
            identity.origins.join(", ")
        ),
    )
    .into_response();
    response.headers_mut().append(header::VARY, HeaderValue::from_static("Origin"));
    response
}

fn server_mark(origins: &CorsOrigins) -> Allow {
    match origins {
        CorsOrigins::Any => Allow::Any,
        CorsOrigins::Only(_) => Allow::Origin,
    }
}

fn allow_origin(headers: &mut HeaderMap, mark: &Allow, origin: HeaderValue) {
    match mark {
        Allow::Any => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
        Allow::Origin => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}
