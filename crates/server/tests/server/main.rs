//! The server's integration tests: a real server on port 0, real HTTP and SSE, a module per area.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test code: the contract suite and helpers are test functions in all but attribute"
)]

mod api;
mod browser;
mod client;
mod console;
mod errors;
mod exactly_once;
mod guards;
mod layers;
mod limits;
mod node_ofrep;
mod node_service;
mod ofrep;
mod openapi;
mod otlp;
mod policy;
mod prometheus;
mod release;
mod schemathesis;
mod stream;
mod support;
