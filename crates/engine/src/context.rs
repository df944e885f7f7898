//! The evaluation context: who is asking, as attributes (OpenFeature's evaluation context).
//!
//! A context is a map of attributes; `targetingKey` is the conventional identity. Time and
//! randomness are not read by the engine: the caller puts the time in an attribute (for date
//! operators) and may supply a random number for `$random` bucketing.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// The attribute holding the context's identity.
pub const TARGETING_KEY: &str = "targetingKey";
/// The bucketing source that takes the caller-supplied random number instead of an attribute.
pub const RANDOM: &str = "$random";

type Attributes = HashMap<String, Value, foldhash::fast::RandomState>;

/// Attributes of the user (or device, tenant, request) a flag is evaluated for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    attributes: Attributes,
    random: Option<u32>,
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context with a targeting key.
    pub fn with_key(key: impl Into<String>) -> Self {
        let mut ctx = Self::new();
        ctx.set(TARGETING_KEY, Value::String(key.into()));
        ctx
    }

    /// Builds a context from a JSON object (OpenFeature's flat shape: `targetingKey` and attributes).
    pub fn from_map(map: Map<String, Value>) -> Self {
        let mut attributes = Attributes::with_capacity_and_hasher(map.len(), Default::default());
        attributes.extend(map);
        Self { attributes, random: None }
    }

    /// Sets an attribute.
    pub fn set(&mut self, name: impl Into<String>, value: Value) -> &mut Self {
        self.attributes.insert(name.into(), value);
        self
    }

    /// Builder form of [`Context::set`].
    pub fn attr(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// Supplies the random number used where a rollout buckets by `$random`.
    pub fn with_random(mut self, random: u32) -> Self {
        self.random = Some(random);
        self
    }

    /// The caller-supplied random number, if any.
    pub fn random(&self) -> Option<u32> {
        self.random
    }

    /// The targeting key, when it is a string.
    pub fn targeting_key(&self) -> Option<&str> {
        self.attributes.get(TARGETING_KEY).and_then(Value::as_str)
    }

    /// A top-level attribute.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.attributes.get(name)
    }

    /// Looks an attribute up by path: the whole name first (attribute names may contain dots),
    /// then segment by segment through nested objects.
    pub fn lookup(&self, path: &AttributePath) -> Option<&Value> {
        if let Some(v) = self.attributes.get(path.full.as_ref()) {
            return Some(v);
        }
        let (first, rest) = path.parts.split_first()?;
        let mut current = self.attributes.get(first.as_ref())?;
        for part in rest {
            current = match current {
                Value::Object(map) => map.get(part.as_ref())?,
                Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(current)
    }

    /// All attributes.
    pub fn attributes(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.attributes.iter()
    }
}

/// An attribute path, split once at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributePath {
    full: Box<str>,
    /// The dot-separated segments; empty when the path has no dot.
    parts: Box<[Box<str>]>,
}

impl AttributePath {
    /// Parses a path such as `address.country`.
    pub fn new(path: &str) -> Self {
        let parts = if path.contains('.') {
            path.split('.').map(Box::from).collect()
        } else {
            Box::default()
        };
        Self { full: path.into(), parts }
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl Serialize for Context {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let sorted: std::collections::BTreeMap<_, _> = self.attributes.iter().collect();
        sorted.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Context {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Context::from_map(Map::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_attributes_resolve_by_path_and_whole_names_win() {
        let ctx: Context = serde_json::from_value(json!({
            "targetingKey": "u1",
            "address": {"country": "fr", "lines": ["a", "b"]},
            "a.b": 1,
            "a": {"b": 2}
        }))
        .unwrap();
        assert_eq!(ctx.targeting_key(), Some("u1"));
        assert_eq!(ctx.lookup(&AttributePath::new("address.country")), Some(&json!("fr")));
        assert_eq!(ctx.lookup(&AttributePath::new("address.lines.1")), Some(&json!("b")));
        assert_eq!(ctx.lookup(&AttributePath::new("a.b")), Some(&json!(1)));
        assert_eq!(ctx.lookup(&AttributePath::new("address.zip")), None);
        assert_eq!(ctx.lookup(&AttributePath::new("targetingKey.x")), None);
    }
}
