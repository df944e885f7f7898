//! Dimmer's evaluation engine: flags, variants, rules, segments, prerequisites and deterministic
//! percentage bucketing.
//!
//! The engine is pure. It does no I/O, never reads the clock and has no randomness of its own:
//! time arrives as a context attribute and randomness (for `$random` bucketing) as an argument
//! ([`evaluate_with_random`], or [`Context::with_random`]).
//! Use it in two steps: [`compile`] a [`FlagSet`] once per change, then [`evaluate`] many times.
//!
//! ```
//! use dimmer_engine::{compile, evaluate, Context, FlagSet, Reason};
//!
//! let set: FlagSet = serde_json::from_str(r#"{"flags": {"new-checkout": {
//!     "environments": {"production": {"enabled": true, "rules": [
//!         {"clauses": [{"attribute": "country", "op": "in", "values": ["fr", "de"]}],
//!          "serve": {"rollout": {"variants": [{"variant": "on", "weight": 25000},
//!                                             {"variant": "off", "weight": 75000}]}}}
//!     ], "default": {"variant": "off"}}}}}}"#).unwrap();
//! let (flags, diagnostics) = compile(&set, "production");
//! assert!(diagnostics.is_empty());
//! let ctx = Context::with_key("user-42").attr("country", "fr");
//! let eval = evaluate(&flags, "new-checkout", &ctx);
//! assert_eq!(eval.reason, Reason::Split);
//! ```

pub mod compile;
pub mod context;
pub mod eval;
pub mod hash;
pub mod import;
pub mod incremental;
pub mod keys;
pub mod model;
pub mod ops;
pub mod policy;
pub mod scope;
pub mod semver;

pub use compile::{CompiledFlags, Diagnostic, Severity, compile, validate};
pub use context::Context;
pub use eval::{
    ErrorCode, Evaluation, Explain, NoTrace, Reason, Tracer, evaluate, evaluate_traced, evaluate_traced_with_random,
    evaluate_with_random,
};
pub use model::{Flag, FlagKind, FlagSet, Operator, Segment};
