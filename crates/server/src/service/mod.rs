//! The services: what the server does, without HTTP. Each applies pure decisions from
//! `dimmer-domain` to the store, owns its background loop (if it has one) and reports typed errors;
//! the `api` module maps them to responses. No module here knows axum.

pub mod catalogue;
pub mod guardian;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod origins;
pub mod outcomes;
pub mod policy;
pub mod prometheus;
pub mod releases;
pub mod tokens;
pub mod validation;
pub mod webhooks;
