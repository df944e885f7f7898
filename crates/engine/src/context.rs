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

/// Contexts with more attributes than this are hashed; smaller ones (the usual case) are
/// scanned, which is faster than hashing the name.
const SCAN_LIMIT: usize = 16;

/// Attribute storage: scanned when few, hashed when many.
#[derive(Debug, Clone)]
enum Attributes {
    Few(Vec<(Box<str>, Value)>),
    Many(HashMap<Box<str>, Value, foldhash::fast::RandomState>),
}

impl Default for Attributes {
    fn default() -> Self {
        Attributes::Few(Vec::new())
    }
}

impl Attributes {
    #[inline]
    fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Attributes::Few(items) => {
                items.iter().find(|(k, _)| crate::ops::bytes_eq(k.as_bytes(), name.as_bytes())).map(|(_, v)| v)
            }
            Attributes::Many(map) => map.get(name),
        }
    }

    fn insert(&mut self, name: String, value: Value) {
        match self {
            Attributes::Few(items) => {
                if let Some(slot) = items.iter_mut().find(|(k, _)| k.as_ref() == name) {
                    slot.1 = value;
                } else if items.len() < SCAN_LIMIT {
                    items.push((name.into(), value));
                } else {
                    let mut map: HashMap<Box<str>, Value, foldhash::fast::RandomState> =
                        std::mem::take(items).into_iter().collect();
                    map.insert(name.into(), value);
                    *self = Attributes::Many(map);
                }
            }
            Attributes::Many(map) => {
                map.insert(name.into(), value);
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Attributes::Few(items) => items.len(),
            Attributes::Many(map) => map.len(),
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&str, &Value)> + '_> {
        match self {
            Attributes::Few(items) => Box::new(items.iter().map(|(k, v)| (k.as_ref(), v))),
            Attributes::Many(map) => Box::new(map.iter().map(|(k, v)| (k.as_ref(), v))),
        }
    }
}

/// Attributes of the user (or device, tenant, request) a flag is evaluated for.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// `targetingKey`, kept apart because nearly every rollout reads it.
    targeting_key: Option<Value>,
    /// Every other attribute.
    attributes: Attributes,
    random: Option<u32>,
}

impl PartialEq for Context {
    fn eq(&self, other: &Self) -> bool {
        self.random == other.random
            && self.targeting_key == other.targeting_key
            && self.attributes.len() == other.attributes.len()
            && self.attributes.iter().all(|(k, v)| other.attributes.get(k) == Some(v))
    }
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
        let mut ctx = Self::default();
        for (k, v) in map {
            ctx.set(k, v);
        }
        ctx
    }

    /// Sets an attribute.
    pub fn set(&mut self, name: impl Into<String>, value: Value) -> &mut Self {
        let name = name.into();
        if name == TARGETING_KEY {
            self.targeting_key = Some(value);
        } else {
            self.attributes.insert(name, value);
        }
        self
    }

    /// Builder form of [`Context::set`].
    pub fn attr(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.set(name, value.into());
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
    #[inline]
    pub fn targeting_key(&self) -> Option<&str> {
        self.targeting_key.as_ref().and_then(Value::as_str)
    }

    /// A top-level attribute.
    #[inline]
    pub fn get(&self, name: &str) -> Option<&Value> {
        if name == TARGETING_KEY { self.targeting_key.as_ref() } else { self.attributes.get(name) }
    }

    /// Looks an attribute up by path: the whole name first (attribute names may contain dots),
    /// then segment by segment through nested objects.
    #[inline]
    pub fn lookup(&self, path: &AttributePath) -> Option<&Value> {
        if path.is_targeting_key {
            return self.targeting_key.as_ref();
        }
        if let Some(v) = self.attributes.get(path.full.as_ref()) {
            return Some(v);
        }
        let (first, rest) = path.parts.split_first()?;
        let mut current = self.get(first)?;
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
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.targeting_key.iter().map(|v| (TARGETING_KEY, v)).chain(self.attributes.iter())
    }
}

/// An attribute path, split once at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributePath {
    full: Box<str>,
    /// Resolved once, so that reading the targeting key costs no string comparison.
    is_targeting_key: bool,
    /// The dot-separated segments; empty when the path has no dot.
    parts: Box<[Box<str>]>,
}

impl AttributePath {
    /// Parses a path such as `address.country`.
    pub fn new(path: &str) -> Self {
        let parts = if path.contains('.') { path.split('.').map(Box::from).collect() } else { Box::default() };
        Self { full: path.into(), is_targeting_key: path == TARGETING_KEY, parts }
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl Serialize for Context {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let sorted: std::collections::BTreeMap<&str, &Value> = self.attributes().collect();
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

    #[test]
    fn large_contexts_switch_to_hashing_and_keep_every_attribute() {
        let mut ctx = Context::with_key("k");
        for i in 0..40 {
            ctx.set(format!("a{i}"), json!(i));
        }
        ctx.set("a3", json!("replaced"));
        assert_eq!(ctx.get("a39"), Some(&json!(39)));
        assert_eq!(ctx.get("a3"), Some(&json!("replaced")));
        assert_eq!(ctx.targeting_key(), Some("k"));
        assert_eq!(ctx.attributes().count(), 41);
    }
}
