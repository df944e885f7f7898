//! The `dimmer` command.
fn main() {}
