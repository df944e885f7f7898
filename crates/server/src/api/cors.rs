//! CORS for the routes pages call from another origin: OFREP (evaluations and change events) and
//! the SDK API. The admin API never gets this layer, so it sends no CORS headers and browsers
//! refuse cross-origin calls to it (its preflights are not answered with a 2xx either).
//!
//! Which origins may call is server-wide (`cors_origins` in `config`). A preflight (`OPTIONS`
//! with `Access-Control-Request-Method`) from an allowed origin is answered here with 204 and
//! the methods and headers OFREP clients send (`Authorization`, `Content-Type`,
//! `If-None-Match`, …); from any other origin with 403 in the API's error shape. Answers to
//! allowed origins name the origin (or `*`) and expose `ETag`, which OFREP providers read from
//! script. Requests from other origins are served without CORS headers, not refused: a browser
//! then keeps the answer from the page, and same-origin deployments (which send `Origin` on
//! POST too) keep working.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::api::AppState;
use crate::api::error::{ApiError, Code};
use crate::config::CorsOrigins;

/// The methods OFREP and SDK clients use.
const METHODS: &str = "GET, POST";
/// The request headers they send: the token, the JSON body, the conditional request, the stream
/// resume.
const HEADERS: &str = "Authorization, Content-Type, If-None-Match, X-API-Key, Last-Event-ID";
/// How long a browser may reuse a preflight answer, in seconds: a page evaluating on every
/// context change should not pay a preflight each time.
const MAX_AGE: &str = "600";

/// `router` with CORS answered for `origins`.
pub(super) fn allow(router: Router<AppState>, origins: &CorsOrigins) -> Router<AppState> {
    router.layer(middleware::from_fn_with_state(Arc::new(origins.clone()), cors))
}

async fn cors(State(origins): State<Arc<CorsOrigins>>, request: Request, next: Next) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
        return next.run(request).await;
    };
    let allowed = origin.to_str().is_ok_and(|o| origins.allows(o));
    let preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        if !allowed {
            let shown = String::from_utf8_lossy(origin.as_bytes()).into_owned();
            return ApiError::new(
                Code::Forbidden,
                format!("origin {shown} may not call this server from a browser (see cors_origins)"),
            )
            .into_response();
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        allow_origin(headers, &origins, origin);
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(HEADERS));
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
        headers.append(header::VARY, HeaderValue::from_static("Access-Control-Request-Method"));
        headers.append(header::VARY, HeaderValue::from_static("Access-Control-Request-Headers"));
        return response;
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if allowed {
        allow_origin(headers, &origins, origin);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("ETag"));
    } else if matches!(*origins, CorsOrigins::Only(_)) {
        // The answer depends on the origin: caches must not hand this one to an allowed page.
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

fn allow_origin(headers: &mut HeaderMap, origins: &CorsOrigins, origin: HeaderValue) {
    match origins {
        CorsOrigins::Any => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
        CorsOrigins::Only(_) => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}
