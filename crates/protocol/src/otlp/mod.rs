//! OpenTelemetry (OTLP/HTTP) traces and log events turned into outcome metrics: decoding
//! ([`decode_traces`], [`decode_logs`]: protobuf or JSON, already decompressed) and the mapping
//! from OpenTelemetry's feature-flag semantic conventions to per-variant [`FlagMetrics`]
//! ([`Correlator`]). Pure: no I/O, no clock (the caller passes the time), so a fuzz target and
//! property tests can drive it.
//!
//! The mapping. A `feature_flag.evaluation` event (the older span-event name `feature_flag`
//! too), on a span or as a log record, with `feature_flag.key` and `feature_flag.result.variant`
//! (or the older `feature_flag.variant`), is one evaluation of that flag's variant. Its outcome
//! is the *counted* span it happened under: the span itself when its kind counts (server and
//! consumer by default), else its nearest counted ancestor. A counted span gives each flag and
//! variant evaluated under it one outcome: an error when its status is ERROR or its
//! `http.response.status_code` (or the older `http.status_code`) is 5xx, a success otherwise,
//! with the span's duration as latency. Events with a `dimmer.event` attribute (span events or
//! log records; optional numeric `dimmer.event.value`) are custom events for every flag variant
//! evaluated under the same counted span.
//!
//! Parents and children arrive in different requests (an SDK exports a child before its parent
//! has ended), and log records arrive apart from their spans. The correlator keeps what it has
//! not resolved for a while, bounded: spans it has seen (to resolve later log records and
//! children) and evaluations waiting for their counted span. See [`Bounds`].

pub mod wire;

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::{EventStat, FlagMetrics, SketchBuilder};
pub use wire::{ExportLogsServiceRequest, ExportTraceServiceRequest};

/// The two encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Decodes an `ExportTraceServiceRequest`.
pub fn decode_traces(body: &[u8], encoding: Encoding) -> Result<ExportTraceServiceRequest, DecodeError> {
    decode(body, encoding)
}

/// Decodes an `ExportLogsServiceRequest`.
pub fn decode_logs(body: &[u8], encoding: Encoding) -> Result<ExportLogsServiceRequest, DecodeError> {
    decode(body, encoding)
}

fn decode<T: prost::Message + Default + serde::de::DeserializeOwned>(
    body: &[u8],
    encoding: Encoding,
) -> Result<T, DecodeError> {
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|e| DecodeError(format!("not an OTLP protobuf message: {e}"))),
        Encoding::Json => {
            let mut de = serde_json::Deserializer::from_slice(body);
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let path = e.path().to_string();
                DecodeError(format!("{path}: {}", e.inner()))
            })
        }
    }
}

/// Span kinds, as OTLP numbers them.
pub mod kind {
    /// `SPAN_KIND_INTERNAL`.
    pub const INTERNAL: i32 = 1;
    /// `SPAN_KIND_SERVER`.
    pub const SERVER: i32 = 2;
    /// `SPAN_KIND_CLIENT`.
    pub const CLIENT: i32 = 3;
    /// `SPAN_KIND_PRODUCER`.
    pub const PRODUCER: i32 = 4;
    /// `SPAN_KIND_CONSUMER`.
    pub const CONSUMER: i32 = 5;

    /// A kind from its name (`server`, `consumer`, …).
    pub fn parse(name: &str) -> Option<i32> {
        match name.trim().to_ascii_lowercase().as_str() {
            "internal" => Some(INTERNAL),
            "server" => Some(SERVER),
            "client" => Some(CLIENT),
            "producer" => Some(PRODUCER),
            "consumer" => Some(CONSUMER),
            _ => None,
        }
    }
}

/// The bounds of the correlator and of what one request may add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Spans remembered for later log records and children.
    pub max_spans: usize,
    /// Evaluations and events waiting for their counted span.
    pub max_pending: usize,
    /// How long either waits, milliseconds.
    pub ttl_ms: i64,
    /// Flag and variant (and event) names, bytes.
    pub max_name_len: usize,
    /// Distinct flag × variant entries one request may produce.
    pub max_entries: usize,
    /// Parent links followed to find a counted span.
    pub max_depth: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_spans: 100_000,
            max_pending: 100_000,
            ttl_ms: 120_000,
            max_name_len: 128,
            max_entries: 1000,
            max_depth: 32,
        }
    }
}

/// What one request gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    /// Per flag and variant: evaluations, outcomes, latency and events (the same entries an SDK
    /// batch carries).
    pub metrics: Vec<FlagMetrics>,
    /// Spans (or log records) in the request.
    pub items: u64,
    /// Spans (or log records) refused: a bad id, a name over the bound, an entry past the
    /// per-request bound. Reported as OTLP's partial success.
    pub rejected: u64,
    /// Why the first rejected one was refused.
    pub reason: Option<String>,
    /// Outcomes resolved.
    pub outcomes: u64,
    /// Evaluations whose counted span is not known yet (kept, bounded).
    pub waiting: u64,
}

type TraceId = [u8; 16];
type SpanId = [u8; 8];
type Key = (TraceId, SpanId);

/// Something that happened under a span: an evaluation or a custom event.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Evaluation { flag: String, variant: String },
    Event { name: String, value: Option<f64> },
}

/// A span the correlator knows.
#[derive(Debug, Clone)]
struct Known {
    at_ms: i64,
    parent: Option<SpanId>,
    /// For counted spans: the outcome, and what was resolved to it so far.
    outcome: Option<SpanOutcome>,
}

#[derive(Debug, Clone)]
struct SpanOutcome {
    error: bool,
    latency_ms: f64,
    evaluations: Vec<(String, String)>,
    events: Vec<(String, Option<f64>)>,
}

/// Per-variant totals being built for one request.
#[derive(Debug, Default)]
struct Accum {
    evaluations: u64,
    successes: u64,
    errors: u64,
    latency: SketchBuilder,
    events: BTreeMap<String, EventStat>,
}

/// Turns OTLP requests into per-variant metrics, remembering (bounded, for `ttl_ms`) what it
/// could not resolve yet. One per server process; the caller serialises access.
#[derive(Debug)]
pub struct Correlator {
    bounds: Bounds,
    counted_kinds: Vec<i32>,
    spans: HashMap<Key, Known>,
    span_order: VecDeque<(i64, Key)>,
    pending: HashMap<Key, (i64, Vec<Item>)>,
    pending_len: usize,
    pending_order: VecDeque<(i64, Key)>,
    /// Evaluations whose counted span never came (expired or evicted), since start.
    pub unresolved: u64,
}

/// Reads a string attribute.
fn attr<'a>(attributes: &'a [wire::KeyValue], key: &str) -> Option<&'a wire::Value> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

fn attr_str<'a>(attributes: &'a [wire::KeyValue], key: &str) -> Option<&'a str> {
    match attr(attributes, key)? {
        wire::Value::String(s) => Some(s),
        _ => None,
    }
}

fn attr_number(attributes: &[wire::KeyValue], key: &str) -> Option<f64> {
    match attr(attributes, key)? {
        wire::Value::Int(i) => Some(*i as f64),
        wire::Value::Double(d) if d.is_finite() => Some(*d),
        wire::Value::String(s) => s.parse().ok().filter(|f: &f64| f.is_finite()),
        _ => None,
    }
}

/// Whether an event (span event or log record) is a flag evaluation.
fn is_evaluation(name: &str) -> bool {
    name == "feature_flag.evaluation" || name == "feature_flag"
}

/// The item an event or log record stands for, or why it is refused; `Ok(None)` for
/// events Dimmer does not read.
fn item_of(name: &str, attributes: &[wire::KeyValue], max_len: usize) -> Result<Option<Item>, String> {
    let bounded = |field: &str, s: &str| {
        if s.is_empty() || s.len() > max_len {
            Err(format!("{field}: a name has 1 to {max_len} bytes"))
        } else {
            Ok(s.to_owned())
        }
    };
    if is_evaluation(name) {
        let flag = attr_str(attributes, "feature_flag.key");
        let variant = attr_str(attributes, "feature_flag.result.variant")
            .or_else(|| attr_str(attributes, "feature_flag.variant"));
        return match (flag, variant) {
            (Some(f), Some(v)) => Ok(Some(Item::Evaluation {
                flag: bounded("feature_flag.key", f)?,
                variant: bounded("feature_flag.result.variant", v)?,
            })),
            // An evaluation without a variant (an error, a provider that reports values only)
            // cannot be attributed: not refused, not counted.
            _ => Ok(None),
        };
    }
    if let Some(event) = attr_str(attributes, "dimmer.event") {
        return Ok(Some(Item::Event {
            name: bounded("dimmer.event", event)?,
            value: attr_number(attributes, "dimmer.event.value"),
        }));
    }
    Ok(None)
}

fn ids(trace: &[u8], span: &[u8]) -> Option<Key> {
    Some((trace.try_into().ok()?, span.try_into().ok()?))
}

impl Correlator {
    /// A correlator counting spans of `counted_kinds` (OTLP's numbers, see [`kind`]).
    pub fn new(bounds: Bounds, counted_kinds: Vec<i32>) -> Self {
        Correlator {
            bounds,
            counted_kinds,
            spans: HashMap::new(),
            span_order: VecDeque::new(),
            pending: HashMap::new(),
            pending_len: 0,
            pending_order: VecDeque::new(),
            unresolved: 0,
        }
    }

    /// Spans and waiting items held now.
    pub fn held(&self) -> (usize, usize) {
        (self.spans.len(), self.pending_len)
    }

    /// Maps a traces request received at `now_ms`.
    pub fn traces(&mut self, request: &ExportTraceServiceRequest, now_ms: i64) -> Extracted {
        self.expire(now_ms);
        let mut out = Extracted::default();
        let mut acc: BTreeMap<(String, String), Accum> = BTreeMap::new();
        let spans = request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans);
        // First every span of the request becomes known, so that children resolve to parents
        // in the same request whatever their order.
        let mut accepted: Vec<(Key, &wire::Span)> = Vec::new();
        for span in spans {
            out.items += 1;
            let Some(key) = ids(&span.trace_id, &span.span_id) else {
                out.reject("a span needs a 16-byte trace id and an 8-byte span id");
                continue;
            };
            let parent =
                if span.parent_span_id.is_empty() { None } else { span.parent_span_id.as_slice().try_into().ok() };
            let outcome = self.counted_kinds.contains(&span.kind).then(|| {
                let status = span.status.as_ref().is_some_and(|s| s.code == wire::STATUS_ERROR);
                let http = attr_number(&span.attributes, "http.response.status_code")
                    .or_else(|| attr_number(&span.attributes, "http.status_code"));
                let nanos = span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano);
                SpanOutcome {
                    error: status || http.is_some_and(|c| (500.0..600.0).contains(&c)),
                    latency_ms: nanos as f64 / 1e6,
                    evaluations: Vec::new(),
                    events: Vec::new(),
                }
            });
            self.remember(key, Known { at_ms: now_ms, parent, outcome });
            accepted.push((key, span));
        }
        for (key, span) in accepted {
            let mut items = Vec::new();
            for event in &span.events {
                match item_of(&event.name, &event.attributes, self.bounds.max_name_len) {
                    Ok(Some(item)) => {
                        // Counted as evaluations when they arrive; what waits was counted then.
                        if matches!(item, Item::Evaluation { .. }) {
                            out.count_evaluation(&item, &mut acc, self.bounds.max_entries);
                        }
                        items.push(item);
                    }
                    Ok(None) => {}
                    Err(reason) => out.reject(&reason),
                }
            }
            // What children and log records sent earlier was waiting for this span.
            if let Some((_, waiting)) = self.pending.remove(&key) {
                self.pending_len -= waiting.len();
                items.extend(waiting);
            }
            for item in items {
                self.resolve(key, item, now_ms, &mut acc, &mut out);
            }
        }
        out.finish(acc);
        out
    }

    /// Maps a logs request received at `now_ms`.
    pub fn logs(&mut self, request: &ExportLogsServiceRequest, now_ms: i64) -> Extracted {
        self.expire(now_ms);
        let mut out = Extracted::default();
        let mut acc: BTreeMap<(String, String), Accum> = BTreeMap::new();
        let records = request.resource_logs.iter().flat_map(|r| &r.scope_logs).flat_map(|s| &s.log_records);
        for record in records {
            out.items += 1;
            let name = if record.event_name.is_empty() {
                attr_str(&record.attributes, "event.name").unwrap_or_default()
            } else {
                record.event_name.as_str()
            };
            let item = match item_of(name, &record.attributes, self.bounds.max_name_len) {
                Ok(Some(item)) => item,
                Ok(None) => continue,
                Err(reason) => {
                    out.reject(&reason);
                    continue;
                }
            };
            if matches!(item, Item::Evaluation { .. }) {
                out.count_evaluation(&item, &mut acc, self.bounds.max_entries);
            }
            // Outside a span, an evaluation is an evaluation and nothing more.
            if let Some(key) = ids(&record.trace_id, &record.span_id) {
                self.resolve(key, item, now_ms, &mut acc, &mut out);
            }
        }
        out.finish(acc);
        out
    }

    /// Follows parents from `key` to the counted span and applies `item` there, or leaves it
    /// waiting for the first span on the way that is not known yet.
    fn resolve(
        &mut self,
        mut key: Key,
        item: Item,
        now_ms: i64,
        acc: &mut BTreeMap<(String, String), Accum>,
        out: &mut Extracted,
    ) {
        for _ in 0..self.bounds.max_depth {
            let Some(known) = self.spans.get_mut(&key) else {
                self.wait(key, item, now_ms, out);
                return;
            };
            if let Some(outcome) = &mut known.outcome {
                apply(outcome, item, acc, out, self.bounds.max_entries);
                return;
            }
            match known.parent {
                Some(parent) => key.1 = parent,
                // A root that does not count: the evaluation stays an evaluation.
                None => return,
            }
        }
    }

    fn wait(&mut self, key: Key, item: Item, now_ms: i64, out: &mut Extracted) {
        if self.pending_len >= self.bounds.max_pending {
            self.evict_pending();
        }
        if matches!(item, Item::Evaluation { .. }) {
            out.waiting += 1;
        }
        let slot = self.pending.entry(key).or_insert_with(|| (now_ms, Vec::new()));
        let fresh = slot.1.is_empty();
        slot.1.push(item);
        if fresh {
            self.pending_order.push_back((now_ms, key));
            // Resolved keys leave their entries in the order until they age out; past twice the
            // bound, drop them at once so that the order stays bounded at any rate.
            if self.pending_order.len() > 2 * self.bounds.max_pending {
                let pending = &self.pending;
                self.pending_order.retain(|(at, k)| pending.get(k).is_some_and(|(t, _)| t == at));
            }
        }
        self.pending_len += 1;
    }

    fn remember(&mut self, key: Key, mut known: Known) {
        if let Some(old) = self.spans.get(&key) {
            // The same span again (an exporter's retry): it keeps its place in the age order, so
            // that repeats cannot grow the order past the table.
            known.at_ms = old.at_ms;
            self.spans.insert(key, known);
            return;
        }
        if self.spans.len() >= self.bounds.max_spans {
            while let Some((at, old)) = self.span_order.pop_front() {
                if self.spans.get(&old).is_some_and(|k| k.at_ms == at) {
                    self.spans.remove(&old);
                    break;
                }
            }
        }
        self.span_order.push_back((known.at_ms, key));
        self.spans.insert(key, known);
    }

    fn evict_pending(&mut self) {
        while let Some((at, key)) = self.pending_order.pop_front() {
            if self.pending.get(&key).is_some_and(|(t, _)| *t == at)
                && let Some((_, items)) = self.pending.remove(&key)
            {
                self.pending_len -= items.len();
                self.unresolved += items.iter().filter(|i| matches!(i, Item::Evaluation { .. })).count() as u64;
                return;
            }
        }
    }

    /// Forgets spans and waiting items older than the time to live.
    fn expire(&mut self, now_ms: i64) {
        let cutoff = now_ms - self.bounds.ttl_ms;
        while self.span_order.front().is_some_and(|(at, _)| *at < cutoff) {
            if let Some((at, key)) = self.span_order.pop_front()
                && self.spans.get(&key).is_some_and(|k| k.at_ms == at)
            {
                self.spans.remove(&key);
            }
        }
        while self.pending_order.front().is_some_and(|(at, _)| *at < cutoff) {
            self.evict_pending();
        }
    }
}

/// Applies an item to its counted span: a new evaluation gets the span's outcome (once per flag
/// and variant) and the events already there; a new event goes to the evaluations already there.
fn apply(
    outcome: &mut SpanOutcome,
    item: Item,
    acc: &mut BTreeMap<(String, String), Accum>,
    out: &mut Extracted,
    max_entries: usize,
) {
    match item {
        Item::Evaluation { flag, variant } => {
            if outcome.evaluations.iter().any(|(f, v)| *f == flag && *v == variant) {
                return;
            }
            let key = (flag, variant);
            let Some(a) = entry(acc, &key, max_entries, out) else { return };
            if outcome.error {
                a.errors += 1;
            } else {
                a.successes += 1;
            }
            a.latency.record(outcome.latency_ms);
            for (name, value) in &outcome.events {
                add_event(a, name, *value);
            }
            out.outcomes += 1;
            outcome.evaluations.push(key);
        }
        Item::Event { name, value } => {
            for key in &outcome.evaluations {
                if let Some(a) = entry(acc, key, max_entries, out) {
                    add_event(a, &name, value);
                }
            }
            outcome.events.push((name, value));
        }
    }
}

/// Adds one event, within the batch's bound of event names per entry.
fn add_event(a: &mut Accum, name: &str, value: Option<f64>) {
    if let Some(stat) = a.events.get_mut(name) {
        stat.add(&EventStat::one(value));
    } else if a.events.len() < crate::MAX_EVENTS_PER_ENTRY {
        a.events.insert(name.to_owned(), EventStat::one(value));
    }
}

fn entry<'a>(
    acc: &'a mut BTreeMap<(String, String), Accum>,
    key: &(String, String),
    max_entries: usize,
    out: &mut Extracted,
) -> Option<&'a mut Accum> {
    if !acc.contains_key(key) && acc.len() >= max_entries {
        out.reject(&format!("more than {max_entries} flag variants in one request"));
        return None;
    }
    Some(acc.entry(key.clone()).or_default())
}

impl Extracted {
    fn reject(&mut self, reason: &str) {
        self.rejected += 1;
        if self.reason.is_none() {
            self.reason = Some(reason.to_owned());
        }
    }

    fn count_evaluation(&mut self, item: &Item, acc: &mut BTreeMap<(String, String), Accum>, max_entries: usize) {
        if let Item::Evaluation { flag, variant } = item
            && let Some(a) = entry(acc, &(flag.clone(), variant.clone()), max_entries, self)
        {
            a.evaluations += 1;
        }
    }

    fn finish(&mut self, acc: BTreeMap<(String, String), Accum>) {
        self.metrics = acc
            .into_iter()
            .map(|((flag, variant), a)| FlagMetrics {
                flag,
                variant,
                evaluations: a.evaluations,
                successes: a.successes,
                errors: a.errors,
                latency: (a.latency.count() > 0).then(|| a.latency.build()),
                events: a.events,
            })
            .collect();
    }
}

#[cfg(test)]
mod tests;
