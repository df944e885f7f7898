//! Dimmer's release domain, pure: release plans and their stages, guards and the statistics that
//! judge them, outcome aggregates over time buckets, and the injected clock.
//!
//! Nothing here does I/O or reads the time: decisions take `now` and data as arguments and
//! return what should happen; the server's services apply them and the store keeps them. Only
//! [`clock::SystemClock`] reads the system time, and only when the server is given it.

pub mod clock;
pub mod duration;
pub mod guard;
pub mod outcomes;
pub mod release;
pub mod simulate;

pub use clock::{Clock, ManualClock, SystemClock};
