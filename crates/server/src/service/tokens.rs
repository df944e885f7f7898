//! API tokens: generated from the OS's random source, stored only as SHA-256 hashes, compared in
//! constant time, scoped, and never logged.
//!
//! A browser's `EventSource` cannot send an `Authorization` header, so the OFREP change-event
//! stream is opened with a *ticket* in its URL instead of the token: the token's name and an
//! HMAC-SHA256 of the environment keyed by the token's stored hash. A ticket opens that one
//! environment's change events and nothing else (no evaluation, no configuration); it never
//! reveals the token or its hash; any replica can check it (the key is in the shared store); and
//! it dies with its token (revoked, or re-created under the same name).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use dimmer_domain::Clock;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use dimmer_store::{ChangeMeta, Scope, Store, StoreError, TokenRecord};

/// Every token starts with this, so that secret scanners can recognise leaked ones.
pub const TOKEN_PREFIX: &str = "dmr_";
/// How long a looked-up token is trusted before it is checked again (revocations made through
/// this server take effect at once; through another replica, within this time).
const CACHE_TTL_MS: i64 = 5_000;

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

/// A token that authenticated: its name (the actor in the audit log), scope and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's name.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// For sdk and client tokens, their environment.
    pub environment: Option<String>,
    /// What signs this token's event-stream tickets.
    pub stream_key: StreamKey,
    /// The browser origins whose pages may use it (beside the server-wide ones); empty: the
    /// server-wide CORS setting alone decides.
    pub origins: Vec<String>,
}

/// The key of a token's event-stream tickets: its stored hash, which only the store holds.
/// Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamKey(String);

impl StreamKey {
    /// The key of the token whose stored hash is `hash`.
    pub fn from_hash(hash: String) -> Self {
        Self(hash)
    }
}

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey(<redacted>)")
    }
}

/// What a ticket's MAC covers besides the environment, so that it can never be mistaken for
/// another use of the same key.
const TICKET_PURPOSE: &[u8] = b"dimmer ofrep change events\0";

fn ticket_mac(key: &StreamKey, environment: &str) -> Option<Hmac<Sha256>> {
    // HMAC takes keys of any length: this fails for no key, but no `expect` is needed to say so.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.0.as_bytes()).ok()?;
    mac.update(TICKET_PURPOSE);
    mac.update(environment.as_bytes());
    Some(mac)
}

/// A ticket that opens `environment`'s change-event stream as the token named `name`:
/// `<name, hex>.<HMAC, hex>`. Deterministic, so the stream URL a client is given stays the same
/// from one evaluation to the next and its connection is kept.
pub fn stream_ticket(name: &str, key: &StreamKey, environment: &str) -> Option<String> {
    let tag = ticket_mac(key, environment)?.finalize().into_bytes();
    Some(format!("{}.{}", hex::encode(name.as_bytes()), hex::encode(tag)))
}

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The operating system's random source failed.
    #[error("no random source: {0}")]
    Random(getrandom::Error),
    /// Storage failed (or the name is taken).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A short-lived cache of token lookups, so that OFREP and SDK calls do not hit the database.
/// Entries expire by the injected clock, like every other time the server compares.
pub struct TokenCache {
    clock: Arc<dyn Clock>,
    /// By token hash: who it is (`None`: unknown or revoked) and when that was looked up.
    entries: RwLock<HashMap<String, (Option<Identity>, i64)>>,
    /// By token name, for tickets: who it is (`None`: unknown or revoked) and when.
    by_name: RwLock<HashMap<String, (Option<Identity>, i64)>>,
    /// Every origin some live token allows, for preflights (which carry no token), and when it
    /// was read.
    token_origins: RwLock<Option<(Arc<HashSet<String>>, i64)>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").finish_non_exhaustive()
    }
}

impl TokenCache {
    /// An empty cache whose entries age by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            entries: RwLock::new(HashMap::new()),
            by_name: RwLock::new(HashMap::new()),
            token_origins: RwLock::new(None),
        }
    }

    /// Authenticates a presented token: `None` for an unknown or revoked one.
    pub async fn authenticate(&self, store: &dyn Store, token: &str) -> Result<Option<Identity>, StoreError> {
        let hash = hash_token(token);
        let now = self.clock.now_ms();
        if let Ok(entries) = self.entries.read()
            && let Some((principal, at)) = entries.get(&hash)
            && now.saturating_sub(*at) < CACHE_TTL_MS
            && now >= *at
        {
            return Ok(principal.clone());
        }
        let found = store.token_by_hash(&hash).await?;
        let principal = found.filter(|t| !t.revoked && hashes_equal(&t.hash, &hash)).map(identity);
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() > 10_000 {
                entries.clear();
            }
            entries.insert(hash, (principal.clone(), now));
        }
        Ok(principal)
    }

    /// Authenticates an event-stream ticket for `environment`: the token it names, if that token
    /// is live, signed this ticket for this environment, and may read it.
    pub async fn authenticate_ticket(
        &self,
        store: &dyn Store,
        environment: &str,
        ticket: &str,
    ) -> Result<Option<Identity>, StoreError> {
        let Some((name, tag)) = ticket.split_once('.') else { return Ok(None) };
        let (Ok(name), Ok(tag)) = (hex::decode(name), hex::decode(tag)) else { return Ok(None) };
        let Ok(name) = String::from_utf8(name) else { return Ok(None) };
        let Some(identity) = self.by_name(store, &name).await? else { return Ok(None) };
        let signed = ticket_mac(&identity.stream_key, environment).is_some_and(|mac| mac.verify_slice(&tag).is_ok());
        let bound_elsewhere = matches!(identity.scope, Scope::Sdk | Scope::Client)
            && identity.environment.as_deref() != Some(environment);
        Ok((signed && !bound_elsewhere).then_some(identity))
    }

    /// The live token named `name`, looked up at most once per cache lifetime.
    async fn by_name(&self, store: &dyn Store, name: &str) -> Result<Option<Identity>, StoreError> {
        let now = self.clock.now_ms();
        if let Ok(cached) = self.by_name.read()
            && let Some((identity, at)) = cached.get(name)
            && now.saturating_sub(*at) < CACHE_TTL_MS
            && now >= *at
        {
            return Ok(identity.clone());
        }
        // Tickets are presented once per stream connection, not per request: a scan of the
        // (short) token table, cached, is cheaper than another index to keep.
        let found = store.list_tokens().await?.into_iter().find(|t| t.name == name && !t.revoked).map(identity);
        if let Ok(mut cached) = self.by_name.write() {
            if cached.len() > 10_000 {
                cached.clear();
            }
            cached.insert(name.to_owned(), (found.clone(), now));
        }
        Ok(found)
    }

    /// Whether some live token lists `origin` among its browser origins. Preflights ask this:
    /// they carry no token, so the most they can learn is that a page of this origin may hold one.
    /// Read from the store at most once per cache lifetime, whatever the number of preflights.
    pub async fn some_token_allows(&self, store: &dyn Store, origin: &str) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        if let Ok(cached) = self.token_origins.read()
            && let Some((origins, at)) = cached.as_ref()
            && now.saturating_sub(*at) < CACHE_TTL_MS
            && now >= *at
        {
            return Ok(origins.contains(origin));
        }
        let origins: HashSet<String> =
            store.list_tokens().await?.into_iter().filter(|t| !t.revoked).flat_map(|t| t.origins).collect();
        let allowed = origins.contains(origin);
        if let Ok(mut cached) = self.token_origins.write() {
            *cached = Some((Arc::new(origins), now));
        }
        Ok(allowed)
    }

    /// Forgets every cached lookup (after a token is created or revoked).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
        if let Ok(mut by_name) = self.by_name.write() {
            by_name.clear();
        }
        if let Ok(mut origins) = self.token_origins.write() {
            *origins = None;
        }
    }
}

fn identity(t: TokenRecord) -> Identity {
    Identity {
        name: t.name,
        scope: t.scope,
        environment: t.environment,
        stream_key: StreamKey(t.hash),
        origins: t.origins,
    }
}

fn hashes_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Creates a token and returns it (the only time it is ever seen).
pub async fn create_token(
    store: &dyn Store,
    name: &str,
    scope: Scope,
    environment: Option<String>,
    meta: &ChangeMeta,
) -> Result<String, TokenError> {
    create_token_with_origins(store, name, scope, environment, Vec::new(), meta).await
}

/// Creates a token whose pages may be served from `origins` (already validated by
/// [`crate::service::origins::token_origins`]) and returns it (the only time it is ever seen).
pub async fn create_token_with_origins(
    store: &dyn Store,
    name: &str,
    scope: Scope,
    environment: Option<String>,
    origins: Vec<String>,
    meta: &ChangeMeta,
) -> Result<String, TokenError> {
    let token = generate_token().map_err(TokenError::Random)?;
    let record = TokenRecord {
        name: name.to_owned(),
        scope,
        environment,
        hash: hash_token(&token),
        // Stamped by the store, from the clock it was opened with.
        created_at: 0,
        revoked: false,
        origins,
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
            // Stamped by the store, from the clock it was opened with.
            created_at: 0,
            revoked: false,
            origins: Vec::new(),
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
        // Stamped by the store, from the clock it was opened with.
        created_at: 0,
        revoked: false,
        origins: Vec::new(),
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
