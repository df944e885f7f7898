//! Dimmer's flag server: durable storage of flags, segments, environments, tokens and the audit
//! log; the admin API, the SDK API (snapshot and SSE stream) and OFREP over HTTP.
//!
//! [`app::run`] serves a [`store::Store`] on a listener until a shutdown signal; `dimmer serve`
//! (in the CLI crate) parses the configuration and calls it.

pub mod api;
pub mod app;
pub mod config;
pub mod console;
pub mod service;
mod sse_connection;
