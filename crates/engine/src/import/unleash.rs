//! Unleash client-API payloads imported as native flags.
