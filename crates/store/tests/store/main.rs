//! The store's integration tests: one contract suite run against SQLite and PostgreSQL.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test code: the contract suite and helpers are test functions in all but attribute"
)]

mod contract;
