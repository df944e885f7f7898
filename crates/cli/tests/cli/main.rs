//! The `dimmer` binary end to end: real processes, real files, real HTTP; a module per area.

#![allow(clippy::expect_used, reason = "test helpers: a failed set-up should stop the test")]

mod demo;
mod offline;
mod policy;
mod sdk;
mod serve;
mod training;
mod unleash;
