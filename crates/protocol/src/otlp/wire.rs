//! The part of OTLP's messages Dimmer reads (opentelemetry-proto's `trace/v1`, `logs/v1`,
//! `common/v1` and the collector services), written out by field number from the published
//! `.proto` files, for both encodings: protobuf through prost, JSON through serde with OTLP/JSON's
//! rules (lowerCamelCase names, trace and span ids as hex, 64-bit integers as strings or
//! numbers, enums as integers, unknown fields ignored).
//!
//! Fields Dimmer does not use are left out: prost skips unknown fields, so they cost a skip and
//! no allocation. `AnyValue` keeps only scalars; arrays, maps and bytes are skipped the same way,
//! which also keeps decoding from recursing into nested values.

use serde::{Deserialize, Deserializer, Serialize};

/// `ExportTraceServiceRequest`.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExportTraceServiceRequest {
    /// Spans by resource.
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ResourceSpans` (the resource itself is not read).
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceSpans {
    /// Spans by instrumentation scope.
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

/// `ScopeSpans`.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ScopeSpans {
    /// The spans.
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

/// `Span`: ids, kind, times, attributes, events and status.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Span {
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    #[serde(deserialize_with = "hex_id")]
    pub trace_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "2")]
    #[serde(deserialize_with = "hex_id")]
    pub span_id: Vec<u8>,
    /// 8 bytes, or empty for a root span.
    #[prost(bytes = "vec", tag = "4")]
    #[serde(deserialize_with = "hex_id")]
    pub parent_span_id: Vec<u8>,
    /// `SpanKind`: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    #[prost(int32, tag = "6")]
    pub kind: i32,
    /// Nanoseconds since the epoch.
    #[prost(fixed64, tag = "7")]
    #[serde(deserialize_with = "u64_or_string")]
    pub start_time_unix_nano: u64,
    /// Nanoseconds since the epoch.
    #[prost(fixed64, tag = "8")]
    #[serde(deserialize_with = "u64_or_string")]
    pub end_time_unix_nano: u64,
    /// The span's attributes.
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    /// Its events.
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
    /// Its status.
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
}

/// `Span.Event`.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Event {
    /// The event's name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Its attributes.
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<KeyValue>,
}

/// `Status`: code 2 is ERROR.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Status {
    /// 0 unset, 1 ok, 2 error.
    #[prost(int32, tag = "3")]
    pub code: i32,
}

/// The status code of a failed span.
pub const STATUS_ERROR: i32 = 2;

/// `KeyValue`.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyValue {
    /// The attribute's name.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Its value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `AnyValue`, scalars only (see the module's note).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    /// The value.
    #[prost(oneof = "Value", tags = "1, 2, 3, 4")]
    pub value: Option<Value>,
}

/// `AnyValue.value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    /// A string.
    #[prost(string, tag = "1")]
    String(String),
    /// A boolean.
    #[prost(bool, tag = "2")]
    Bool(bool),
    /// An integer.
    #[prost(int64, tag = "3")]
    Int(i64),
    /// A float.
    #[prost(double, tag = "4")]
    Double(f64),
}

impl<'de> Deserialize<'de> for AnyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Json {
            string_value: Option<String>,
            bool_value: Option<bool>,
            #[serde(deserialize_with = "opt_i64_or_string")]
            int_value: Option<i64>,
            double_value: Option<f64>,
        }
        let j = Json::deserialize(d)?;
        let value = match j {
            Json { string_value: Some(s), .. } => Some(Value::String(s)),
            Json { bool_value: Some(b), .. } => Some(Value::Bool(b)),
            Json { int_value: Some(i), .. } => Some(Value::Int(i)),
            Json { double_value: Some(f), .. } => Some(Value::Double(f)),
            _ => None,
        };
        Ok(AnyValue { value })
    }
}

/// `ExportLogsServiceRequest`.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExportLogsServiceRequest {
    /// Log records by resource.
    #[prost(message, repeated, tag = "1")]
    pub resource_logs: Vec<ResourceLogs>,
}

/// `ResourceLogs`.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceLogs {
    /// Log records by scope.
    #[prost(message, repeated, tag = "2")]
    pub scope_logs: Vec<ScopeLogs>,
}

/// `ScopeLogs`.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ScopeLogs {
    /// The records.
    #[prost(message, repeated, tag = "2")]
    pub log_records: Vec<LogRecord>,
}

/// `LogRecord`: the event name, attributes and the span it belongs to.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LogRecord {
    /// Its attributes.
    #[prost(message, repeated, tag = "6")]
    pub attributes: Vec<KeyValue>,
    /// 16 bytes, or empty outside a trace.
    #[prost(bytes = "vec", tag = "9")]
    #[serde(deserialize_with = "hex_id")]
    pub trace_id: Vec<u8>,
    /// 8 bytes, or empty outside a span.
    #[prost(bytes = "vec", tag = "10")]
    #[serde(deserialize_with = "hex_id")]
    pub span_id: Vec<u8>,
    /// The event's name (OTLP 1.5); older exporters put it in the `event.name` attribute.
    #[prost(string, tag = "12")]
    pub event_name: String,
}

/// `ExportTraceServiceResponse` / `ExportLogsServiceResponse`: both carry a partial success
/// in field 1 with the rejected count in its field 1 and a message in its field 2.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportResponse {
    /// Set when part of the request was rejected.
    #[prost(message, optional, tag = "1")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_success: Option<PartialSuccess>,
}

/// `ExportTracePartialSuccess` / `ExportLogsPartialSuccess`.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartialSuccess {
    /// Spans (or log records) rejected; named `rejectedSpans` or `rejectedLogRecords` in JSON
    /// by the caller (see `otlp::response_json`).
    #[prost(int64, tag = "1")]
    #[serde(skip)]
    pub rejected: i64,
    /// Why.
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// `google.rpc.Status`: the body of an OTLP error response.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct RpcStatus {
    /// A gRPC code (3 invalid argument, 16 unauthenticated, 8 resource exhausted, …).
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The message.
    #[prost(string, tag = "2")]
    pub message: String,
}

fn hex_id<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = <Option<String>>::deserialize(d)?.unwrap_or_default();
    hex_decode(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a hex id")))
}

/// Hex to bytes; `None` for odd lengths, non-hex characters or more than 32 bytes.
pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes().chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString<T> {
    Number(T),
    String(String),
}

fn u64_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match <Option<NumberOrString<u64>>>::deserialize(d)? {
        None => Ok(0),
        Some(NumberOrString::Number(n)) => Ok(n),
        Some(NumberOrString::String(s)) => {
            s.parse().map_err(|_| serde::de::Error::custom(format!("{s:?} is not an unsigned 64-bit integer")))
        }
    }
}

fn opt_i64_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match <Option<NumberOrString<i64>>>::deserialize(d)? {
        None => Ok(None),
        Some(NumberOrString::Number(n)) => Ok(Some(n)),
        Some(NumberOrString::String(s)) => {
            s.parse().map(Some).map_err(|_| serde::de::Error::custom(format!("{s:?} is not a 64-bit integer")))
        }
    }
}
