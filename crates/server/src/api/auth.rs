//! Who is calling: the token in `Authorization: Bearer …` or `X-API-Key`, authenticated through
//! the token service, and the scope checks handlers make before they act.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use dimmer_store::{ChangeMeta, Scope};

use crate::api::AppState;
use crate::api::error::{ApiError, Code};
use crate::service::tokens::{Identity, StreamKey};

/// Who is calling, after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name: the actor in the audit log.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// For sdk and client tokens, their environment.
    pub environment: Option<String>,
    /// What signs this token's event-stream tickets.
    stream_key: StreamKey,
}

impl From<Identity> for Principal {
    fn from(identity: Identity) -> Self {
        Self {
            name: identity.name,
            scope: identity.scope,
            environment: identity.environment,
            stream_key: identity.stream_key,
        }
    }
}

impl Principal {
    /// Refuses the request unless the token has one of `allowed` (admin always passes).
    pub fn require(&self, allowed: &[Scope]) -> Result<(), ApiError> {
        if self.scope == Scope::Admin || allowed.contains(&self.scope) {
            Ok(())
        } else {
            let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
            Err(ApiError::new(
                Code::Forbidden,
                format!("this {} token may not do this (needs: admin or {})", self.scope.as_str(), names.join(", ")),
            ))
        }
    }

    /// May read the admin API.
    pub fn require_read(&self) -> Result<(), ApiError> {
        self.require(&[Scope::Writer, Scope::Reader])
    }

    /// May change flags and segments.
    pub fn require_write(&self) -> Result<(), ApiError> {
        self.require(&[Scope::Writer])
    }

    /// A ticket that opens `environment`'s OFREP change-event stream as this token.
    pub fn stream_ticket(&self, environment: &str) -> Option<String> {
        crate::service::tokens::stream_ticket(&self.name, &self.stream_key, environment)
    }

    /// The audit metadata of a change made by this principal.
    pub fn meta(&self, reason: Option<String>) -> ChangeMeta {
        ChangeMeta { actor: self.name.clone(), reason }
    }
}

/// The environment a request reads through the SDK API (snapshot, stream, metrics): an sdk
/// token's own, or `?env=` for admin/reader tokens. Client tokens are refused: the SDK API carries
/// rules, segments and user keys, which a token embedded in a web page must never read.
pub fn environment_of(principal: &Principal, requested: Option<String>) -> Result<String, ApiError> {
    if principal.scope == Scope::Client {
        return Err(ApiError::new(
            Code::Forbidden,
            "a client token evaluates flags through OFREP only; the SDK API needs an sdk token",
        ));
    }
    bound_environment(principal, requested)
}

/// The environment an OFREP evaluation reads: an sdk or client token's own, or `?env=` for
/// admin/reader tokens.
pub fn evaluation_environment_of(principal: &Principal, requested: Option<String>) -> Result<String, ApiError> {
    bound_environment(principal, requested)
}

fn bound_environment(principal: &Principal, requested: Option<String>) -> Result<String, ApiError> {
    let scope = principal.scope;
    let bound = matches!(scope, Scope::Sdk | Scope::Client);
    match (&principal.environment, requested) {
        (Some(own), Some(asked)) if bound && *own != asked => Err(ApiError::new(
            Code::Forbidden,
            format!("this {} token reads environment \"{own}\" only", scope.as_str()),
        )),
        (Some(own), _) if bound => Ok(own.clone()),
        (None, _) if bound => {
            Err(ApiError::new(Code::Forbidden, format!("this {} token has no environment", scope.as_str())))
        }
        (_, Some(asked)) => Ok(asked),
        (_, None) => Err(ApiError::new(Code::MalformedRequest, "env: name the environment (?env=production)")),
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(Code::Unauthorized, "missing, unknown or revoked token")
}

/// The token in `Authorization: Bearer …` or `X-API-Key`.
pub(crate) fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok())).map(str::trim)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = presented_token(&parts.headers).ok_or_else(unauthorized)?;
        let identity = state.tokens.authenticate(state.store.as_ref(), token).await?;
        identity.map(Principal::from).ok_or_else(|| {
            // Who tried, never what: the address and the first characters of the token's hash
            // (enough to match attempts with each other, useless to sign in with).
            let address = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
            let hash = crate::service::tokens::hash_token(token);
            tracing::warn!(
                address = %address.map_or_else(|| "unknown".to_owned(), |a| a.to_string()),
                token_hash = %hash.get(..8).unwrap_or_default(),
                "sign-in failed: unknown or revoked token"
            );
            unauthorized()
        })
    }
}
