//! Types that exist only to be described: bodies the handlers do not build as one value (the
//! snapshot, precomputed by the hub; OFREP's request and its unions with the API's errors) and
//! placeholders for the schemas taken from the engine's JSON Schema. The bodies the handlers do
//! build are typed next to them, in each router. Handlers name these in their annotations;
//! `openapi.rs` assembles the document.

#![allow(dead_code, reason = "documentation-only types: described in the OpenAPI document, never built")]

use std::borrow::Cow;

use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// Declares a type whose schema the OpenAPI document takes from the engine's JSON Schema;
/// utoipa only sees a placeholder (and makes every use a `$ref` to it).
macro_rules! engine_schema {
    ($($name:ident: $what:literal;)*) => {$(
        #[doc = concat!("Documentation marker: ", $what)]
        #[derive(Debug)]
        pub(crate) struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .description(Some(format!("{}: {}. See docs/flags.schema.json.", PLACEHOLDER, $what)))
                    .into()
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    )*};
}

engine_schema! {
    Flag: "one flag (the engine's model)";
    FlagKind: "a flag's kind (the engine's model)";
    Segment: "one segment (the engine's model)";
    FlagSet: "flags and segments by key (the engine's model)";
    FlagView: "a flag with key, version and bookkeeping";
    FlagCreate: "a new flag";
    FlagUpdate: "a flag's new definition";
    EnvironmentConfigUpdate: "one environment's new configuration";
    SegmentView: "a segment with key, version and bookkeeping";
    SegmentCreate: "a new segment";
    SegmentUpdate: "a segment's new definition";
}

/// Named `doc::ErrorBody` in every annotation; the type is the one [`crate::api::error`] answers.
pub(crate) use crate::api::error::ErrorBody;

/// An environment's complete configuration at one revision (`GET /api/v1/sdk/config`, and the
/// `data` of the stream's `snapshot` events).
#[derive(Debug, ToSchema)]
pub(crate) struct Snapshot {
    /// The environment.
    pub environment: String,
    /// Its revision.
    pub revision: i64,
    /// Every non-archived flag and every segment.
    pub flags: FlagSet,
}

/// An OFREP evaluation request; an empty body is an empty context.
#[derive(Debug, ToSchema)]
pub(crate) struct OfrepEvaluationRequest {
    /// The evaluation context: `targetingKey` and any attributes.
    #[schema(value_type = Option<Object>)]
    pub context: Option<Map<String, Value>>,
}

/// The description every placeholder schema starts with; none is left in the served document.
pub(crate) const PLACEHOLDER: &str = "Placeholder for a schema derived from the engine's JSON Schema";

/// Every OFREP error (`/ofrep/...`, status 400 and up): OFREP's fields, which OpenFeature
/// providers read, and the API's `error` object, so either kind of client finds what it expects.
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OfrepError {
    /// The flag key, on single-flag evaluations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// OpenFeature's error code: `FLAG_NOT_FOUND`, `PARSE_ERROR`, `TARGETING_KEY_MISSING`,
    /// `INVALID_CONTEXT` or `GENERAL`.
    pub error_code: String,
    /// In words.
    pub error_details: String,
    /// The API's error object (its `code` decides the HTTP status).
    pub error: crate::api::error::ErrorObject,
}

/// Alertmanager's webhook payload (version 4): what Dimmer reads of it. Other fields Alertmanager
/// sends (`receiver`, `groupLabels`, …) are accepted and ignored.
#[derive(Debug, ToSchema)]
pub(crate) struct AlertmanagerPayload {
    /// The alerts of the group, firing and resolved: each with `status` and `labels` (`flag`, and
    /// `environment` or `env`; optionally `dimmer_action` and `dimmer_to`).
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<Value>,
}
