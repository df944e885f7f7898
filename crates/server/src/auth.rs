//! API tokens: generated from the OS's random source, stored only as SHA-256 hashes, compared in
//! constant time, scoped, and never logged.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, Code};
use crate::state::AppState;
use dimmer_store::{ChangeMeta, Scope, Store, StoreError, TokenRecord};

/// Every token starts with this, so that secret scanners can recognise leaked ones.
pub const TOKEN_PREFIX: &str = "dmr_";
/// How long a looked-up token is trusted before it is checked again (revocations made through
/// this server take effect at once; through another replica, within this time).
const CACHE_TTL: Duration = Duration::from_secs(5);

/// A new random token: the prefix and 32 random bytes in hex.
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Who is calling, after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name: the actor in the audit log.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// For sdk tokens, their environment.
    pub environment: Option<String>,
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

    /// The audit metadata of a change made by this principal.
    pub fn meta(&self, reason: Option<String>) -> ChangeMeta {
        ChangeMeta { actor: self.name.clone(), reason }
    }
}

/// A short-lived cache of token lookups, so that OFREP and SDK calls do not hit the database.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: RwLock<HashMap<String, (Option<Principal>, Instant)>>,
}

impl TokenCache {
    /// Authenticates a presented token.
    pub async fn authenticate(&self, store: &dyn Store, token: &str) -> Result<Principal, ApiError> {
        let hash = hash_token(token);
        if let Ok(entries) = self.entries.read()
            && let Some((principal, at)) = entries.get(&hash)
            && at.elapsed() < CACHE_TTL
        {
            return principal.clone().ok_or_else(unauthorized);
        }
        let found = store.token_by_hash(&hash).await?;
        let principal = found.filter(|t| !t.revoked && hashes_equal(&t.hash, &hash)).map(|t| Principal {
            name: t.name,
            scope: t.scope,
            environment: t.environment,
        });
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() > 10_000 {
                entries.clear();
            }
            entries.insert(hash, (principal.clone(), Instant::now()));
        }
        principal.ok_or_else(unauthorized)
    }

    /// Forgets every cached lookup (after a revocation).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }
}

fn hashes_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn unauthorized() -> ApiError {
    ApiError::new(Code::Unauthorized, "missing, unknown or revoked token")
}

/// The token in `Authorization: Bearer …` or `X-API-Key`.
fn presented_token(parts: &Parts) -> Option<&str> {
    let bearer = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    bearer.or_else(|| parts.headers.get("x-api-key").and_then(|v| v.to_str().ok())).map(str::trim)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = presented_token(parts).ok_or_else(unauthorized)?;
        state.tokens.authenticate(state.store.as_ref(), token).await
    }
}

/// Creates a token and returns it (the only time it is ever seen).
pub async fn create_token(
    store: &dyn Store,
    name: &str,
    scope: Scope,
    environment: Option<String>,
    meta: &ChangeMeta,
) -> Result<String, ApiError> {
    let token = generate_token().map_err(|e| ApiError::internal(&e))?;
    let record = TokenRecord {
        name: name.to_owned(),
        scope,
        environment,
        hash: hash_token(&token),
        created_at: dimmer_store::now_ms(),
        revoked: false,
    };
    store.create_token(&record, meta).await?;
    Ok(token)
}

/// Makes sure an admin token exists at start: the configured one, or a generated one that is
/// returned so that it can be printed once.
pub async fn bootstrap_admin(store: &dyn Store, configured: Option<&str>) -> Result<Option<String>, StoreError> {
    let system = ChangeMeta { actor: "system".into(), reason: Some("bootstrap".into()) };
    if let Some(token) = configured {
        let hash = hash_token(token);
        if store.token_by_hash(&hash).await?.is_some() {
            return Ok(None);
        }
        let name = unused_name(store, "admin").await?;
        let record = TokenRecord {
            name,
            scope: Scope::Admin,
            environment: None,
            hash,
            created_at: dimmer_store::now_ms(),
            revoked: false,
        };
        store.create_token(&record, &system).await?;
        return Ok(None);
    }
    if store.list_tokens().await?.iter().any(|t| t.scope == Scope::Admin && !t.revoked) {
        return Ok(None);
    }
    let token = generate_token().map_err(|e| StoreError::Corrupt(format!("no random source: {e}")))?;
    let record = TokenRecord {
        name: unused_name(store, "admin").await?,
        scope: Scope::Admin,
        environment: None,
        hash: hash_token(&token),
        created_at: dimmer_store::now_ms(),
        revoked: false,
    };
    store.create_token(&record, &system).await?;
    Ok(Some(token))
}

async fn unused_name(store: &dyn Store, base: &str) -> Result<String, StoreError> {
    let taken: Vec<String> = store.list_tokens().await?.into_iter().map(|t| t.name).collect();
    let mut name = base.to_owned();
    let mut n = 1;
    while taken.contains(&name) {
        n += 1;
        name = format!("{base}-{n}");
    }
    Ok(name)
}

/// Shared handle to the token cache.
pub type Tokens = Arc<TokenCache>;
