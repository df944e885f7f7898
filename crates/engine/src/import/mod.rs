//! Importers: other tools' flag formats turned into native flags, evaluated by the same engine.

pub mod unleash;
