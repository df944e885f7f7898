//! The server's integration tests: a real server on port 0, real HTTP and SSE, a module per area.

#![allow(clippy::expect_used, reason = "test helpers: a failed set-up should stop the test")]

mod api;
mod ofrep;
mod stream;
mod support;
