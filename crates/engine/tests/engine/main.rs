//! The engine integration tests, one binary with a module per feature.

mod conformance;
mod evaluation;
mod incremental;
mod properties;
mod robustness;
mod schema;
