//! Fuzz target: any bytes, read as a JSON flag set, must compile and evaluate every flag without
//! panicking, and a flag that compiles without errors must never evaluate to a parse error.
#![no_main]

use dimmer_engine::{
    Context, ErrorCode, Explain, FlagSet, Severity, compile, evaluate, evaluate_traced, validate,
};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

/// The prefix compile gives a flag's diagnostic paths.
fn flag_prefix(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        format!("flags.{key}")
    } else {
        format!("flags[{}]", serde_json::Value::String(key.to_owned()))
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(set) = serde_json::from_slice::<FlagSet>(data) else {
        return;
    };
    let _ = validate(&set);
    // Fixed contexts: the fuzzer explores flag definitions, and these reach most operators.
    let contexts = [
        Context::new(),
        Context::with_key("alice"),
        Context::with_key("user-42")
            .attr("country", "fr")
            .attr("plan", "pro")
            .attr("email", "bob@example.com")
            .attr("version", "2.1.0")
            .attr("ip", "10.1.2.3")
            .attr("seats", 12)
            .attr("signup", "2024-06-01T00:00:00Z")
            .attr("address", json!({"country": "de", "lines": ["a", "b"]}))
            .with_random(123_456),
    ];
    for env in ["production", "staging"] {
        let (flags, diagnostics) = compile(&set, env);
        for key in set.flags.keys() {
            let prefix = flag_prefix(key);
            let clean = !diagnostics.iter().any(|d| {
                d.severity == Severity::Error
                    && d.path
                        .strip_prefix(&prefix)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            });
            for ctx in &contexts {
                let eval = evaluate(&flags, key, ctx);
                let mut explain = Explain::default();
                assert_eq!(evaluate_traced(&flags, key, ctx, &mut explain), eval);
                if clean {
                    assert_ne!(eval.error, Some(ErrorCode::ParseError), "{key}: {eval:?}");
                }
            }
        }
    }
});
