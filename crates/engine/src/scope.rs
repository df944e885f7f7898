//! One environment's view of a flag set: what an SDK or OFREP client of that environment is
//! sent. Other environments' targeting (their targets, rules and user keys) and the segments
//! only they use never leave the server; a change to them concerns no client of this one.

use std::collections::BTreeSet;

use crate::model::{Clause, EnvironmentConfig, FlagSet, Operator};

impl FlagSet {
    /// Every flag with `environment`'s configuration only (none when it has none), and the
    /// segments that configuration uses, directly or through other segments.
    pub fn for_environment(&self, environment: &str) -> FlagSet {
        let flags = self
            .flags
            .iter()
            .map(|(key, flag)| {
                let mut flag = flag.clone();
                flag.environments.retain(|name, _| name == environment);
                (key.clone(), flag)
            })
            .collect();
        let used = self.segments_used_in(environment);
        let segments = self
            .segments
            .iter()
            .filter(|(key, _)| used.contains(key.as_str()))
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        FlagSet { flags, segments }
    }

    /// The segments `environment`'s configurations use: in exposure canaries and `in_segment`
    /// clauses, and the segments those segments' rules name in turn. Unknown names are left out.
    pub fn segments_used_in(&self, environment: &str) -> BTreeSet<String> {
        let mut pending: Vec<String> = Vec::new();
        for config in self.flags.values().filter_map(|f| f.environments.get(environment)) {
            named_segments(config, &mut pending);
        }
        let mut used = BTreeSet::new();
        while let Some(name) = pending.pop() {
            let Some(segment) = self.segments.get(&name) else { continue };
            if !used.insert(name) {
                continue;
            }
            for rule in &segment.rules {
                clause_segments(&rule.clauses, &mut pending);
            }
        }
        used
    }

    /// The environments whose view includes the segment `key` (see [`Self::segments_used_in`]):
    /// the ones a change to that segment concerns.
    pub fn environments_using_segment(&self, key: &str) -> BTreeSet<String> {
        let environments: BTreeSet<&String> = self.flags.values().flat_map(|f| f.environments.keys()).collect();
        environments.into_iter().filter(|env| self.segments_used_in(env).contains(key)).cloned().collect()
    }
}

fn named_segments(config: &EnvironmentConfig, out: &mut Vec<String>) {
    if let Some(exposure) = &config.exposure {
        out.extend(exposure.segments.iter().cloned());
    }
    for rule in &config.rules {
        clause_segments(&rule.clauses, out);
    }
}

fn clause_segments(clauses: &[Clause], out: &mut Vec<String>) {
    for clause in clauses.iter().filter(|c| c.op == Operator::InSegment) {
        out.extend(clause.values.iter().filter_map(|v| v.as_str()).map(str::to_owned));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> FlagSet {
        serde_json::from_value(serde_json::json!({
            "flags": {
                "checkout": {"environments": {
                    "production": {"enabled": true, "targets": {"on": ["vip-user"]},
                        "rules": [{"clauses": [{"op": "in_segment", "values": ["beta"]}], "serve": {"variant": "on"}}]},
                    "development": {"enabled": true, "exposure": {"weight": 0, "segments": ["staff"]}}
                }},
                "search": {"environments": {"production": {"enabled": false}}}
            },
            "segments": {
                "beta": {"rules": [{"clauses": [{"op": "in_segment", "values": ["paying"]}]}]},
                "paying": {"included": ["customer-1"]},
                "staff": {"included": ["dev-1"]},
                "unused": {"included": ["nobody"]}
            }
        }))
        .unwrap()
    }

    #[test]
    fn an_environment_sees_its_own_configuration_and_the_segments_it_uses_only() {
        let dev = set().for_environment("development");
        let text = serde_json::to_string(&dev).unwrap();
        assert!(!text.contains("vip-user") && !text.contains("customer-1") && !text.contains("production"), "{text}");
        assert_eq!(dev.segments.keys().collect::<Vec<_>>(), ["staff"]);
        assert_eq!(dev.flags.len(), 2, "every flag is known, even one without configuration here");
        assert!(dev.flags["search"].environments.is_empty());

        let prod = set().for_environment("production");
        assert_eq!(prod.segments.keys().collect::<Vec<_>>(), ["beta", "paying"], "through the beta segment's rule");
        assert_eq!(prod.flags["checkout"].environments.keys().collect::<Vec<_>>(), ["production"]);
    }

    #[test]
    fn a_segment_change_concerns_the_environments_that_use_it() {
        let set = set();
        assert_eq!(set.environments_using_segment("paying"), BTreeSet::from(["production".to_owned()]));
        assert_eq!(set.environments_using_segment("staff"), BTreeSet::from(["development".to_owned()]));
        assert!(set.environments_using_segment("unused").is_empty());
    }
}
