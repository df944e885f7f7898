//! The store's integration tests: one contract suite run against SQLite and PostgreSQL.

mod contract;
