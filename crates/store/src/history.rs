//! A flag's definitions over time, read back from the audit log the store writes: the inverse of
//! the audit format, so it lives beside the code that writes it.

use dimmer_engine::Flag;
use serde_json::Value;

/// Replays a flag's audit entries (`(at, environment, after)`, oldest first) into its successive
/// definitions. Flag writes record the whole definition; release operations (plans, kills,
/// dial-downs, restores) record a summary of one environment (`enabled`, `exposure`), applied to
/// the definition before them.
pub fn replay(entries: impl IntoIterator<Item = (i64, Option<String>, Value)>) -> Vec<(i64, Flag)> {
    let mut history: Vec<(i64, Flag)> = Vec::new();
    for (at, environment, after) in entries {
        let Value::Object(mut map) = after else { continue };
        if map.contains_key("exposure_percent") {
            let (Some(env), Some((_, last))) = (environment, history.last()) else { continue };
            let mut flag = last.clone();
            let config = flag.environments.entry(env).or_default();
            config.enabled = map.get("enabled").and_then(Value::as_bool).unwrap_or(false);
            config.exposure = map.remove("exposure").and_then(|e| serde_json::from_value(e).ok());
            history.push((at, flag));
        } else {
            // The stored copy carries bookkeeping beside the model's fields.
            map.remove("archived");
            map.remove("version");
            if let Ok(flag) = serde_json::from_value::<Flag>(Value::Object(map)) {
                history.push((at, flag));
            }
        }
    }
    history
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use dimmer_engine::policy::history_facts;
    use serde_json::json;

    use super::*;

    #[test]
    fn replay_applies_release_summaries_to_the_definition_before_them() {
        let created = json!({"kind": "release", "archived": false, "version": 1});
        let plan = json!({"enabled": true, "exposure_percent": 1.0, "exposure": {"weight": 1000}, "plan": null});
        let full = json!({"enabled": true, "exposure_percent": 100.0, "exposure": null, "plan": null});
        let h =
            replay([(1, None, created), (2, Some("production".into()), plan), (3, Some("production".into()), full)]);
        assert_eq!(h.len(), 3);
        assert_eq!(h[1].1.environments["production"].exposure.as_ref().unwrap().weight, 1000);
        assert!(h[2].1.environments["production"].exposure.is_none());
        assert_eq!(history_facts(h.iter().map(|(at, f)| (*at, f))), (true, Some(3)));
    }
}
