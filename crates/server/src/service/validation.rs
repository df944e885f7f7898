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

/// A prerequisite closure larger than this is validated against every flag instead.
const MAX_CLOSURE: usize = 2_000;

/// What validating flag `key` (as `flag`) reads: the flag, the flags it names as prerequisites in
/// any environment and theirs in turn (what its compile, cycle and cost checks see), archived ones
/// included as before, and every segment. A write costs what it touches, not the whole set; the
/// flag's diagnostics are the same as against every flag, since nothing else reaches them.
pub async fn set_for_flag(
    store: &dyn dimmer_store::Store,
    key: &str,
    flag: &dimmer_engine::Flag,
) -> Result<dimmer_engine::FlagSet, dimmer_store::StoreError> {
    let mut set = dimmer_engine::FlagSet::default();
    let names = |f: &dimmer_engine::Flag| -> Vec<String> {
        f.environments.values().flat_map(|c| c.prerequisites.iter().map(|p| p.flag.clone())).collect()
    };
    let mut pending = names(flag);
    let mut seen = std::collections::HashSet::from([key.to_owned()]);
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if seen.len() > MAX_CLOSURE {
            set.flags.clear();
            for record in store.list_flags(true).await? {
                if record.key != key {
                    set.flags.insert(record.key, record.flag);
                }
            }
            break;
        }
        if let Some(record) = store.get_flag(&name).await? {
            pending.extend(names(&record.flag));
            set.flags.insert(record.key, record.flag);
        }
    }
    set.flags.insert(key.to_owned(), flag.clone());
    for segment in store.list_segments().await? {
        set.segments.insert(segment.key, segment.segment);
    }
    Ok(set)
}
