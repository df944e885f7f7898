//! Validation shared by the API and the services: the engine's diagnostics for a flag or
//! segment document, as `{path, message}` entries the API returns with a 422.

/// The engine's error diagnostics under `prefix` (e.g. `flags.checkout`) in every environment,
/// as `{path, message}` with paths relative to the document, deduplicated.
pub fn engine_errors(set: &dimmer_engine::FlagSet, environments: &[String], prefix: &str) -> Vec<serde_json::Value> {
    let mut errors = Vec::new();
    for env in environments {
        for d in dimmer_engine::compile(set, env).1 {
            if d.severity == dimmer_engine::Severity::Error && d.path.starts_with(prefix) {
                let entry =
                    serde_json::json!({"path": d.path[prefix.len()..].trim_start_matches('.'), "message": d.message});
                if !errors.contains(&entry) {
                    errors.push(entry);
                }
            }
        }
    }
    errors
}
