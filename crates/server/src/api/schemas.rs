//! Types that exist only to be described: the bodies that the handlers build as JSON values, and
//! placeholders for the schemas taken from the engine's JSON Schema. Handlers name them in their
//! annotations; `openapi.rs` assembles the document.

#![allow(dead_code, reason = "documentation-only types: described in the OpenAPI document, never built")]

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use dimmer_store::{AuditEntry, Environment, Scope, TokenRecord};

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

/// `GET /api/v1/flags`.
#[derive(Debug, ToSchema)]
pub(crate) struct FlagList {
    /// Flags by key.
    pub flags: Vec<FlagView>,
}

/// `GET /api/v1/segments`.
#[derive(Debug, ToSchema)]
pub(crate) struct SegmentList {
    /// Segments by key.
    pub segments: Vec<SegmentView>,
}

/// `GET /api/v1/environments`.
#[derive(Debug, ToSchema)]
pub(crate) struct EnvironmentList {
    /// Environments by name.
    pub environments: Vec<Environment>,
}

/// `GET /api/v1/tokens` (never the tokens themselves).
#[derive(Debug, ToSchema)]
pub(crate) struct TokenList {
    /// Tokens by name.
    pub tokens: Vec<TokenRecord>,
}

/// A new token: the only time the token itself is shown.
#[derive(Debug, ToSchema)]
pub(crate) struct CreatedToken {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// For `sdk` tokens, the one environment they read.
    pub environment: Option<String>,
    /// The token; store it now, it cannot be read again.
    pub token: String,
}

/// `GET /api/v1/audit`.
#[derive(Debug, ToSchema)]
pub(crate) struct AuditList {
    /// Entries, newest first.
    pub entries: Vec<AuditEntry>,
}

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

/// `GET /healthz`.
#[derive(Debug, ToSchema)]
pub(crate) struct Health {
    /// `ok`.
    pub status: String,
}

/// `GET /readyz`.
#[derive(Debug, ToSchema)]
pub(crate) struct Readiness {
    /// `ready` or `unavailable`.
    pub status: String,
    /// When unavailable: `storage`.
    pub reason: Option<String>,
}

/// An OFREP evaluation request; an empty body is an empty context.
#[derive(Debug, ToSchema)]
pub(crate) struct OfrepEvaluationRequest {
    /// The evaluation context: `targetingKey` and any attributes.
    #[schema(value_type = Option<Object>)]
    pub context: Option<Map<String, Value>>,
}

/// A successful OFREP evaluation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OfrepEvaluationSuccess {
    /// The flag key.
    pub key: String,
    /// The value served (of the flag's kind).
    #[schema(value_type = Value)]
    pub value: Value,
    /// OpenFeature's reason (`TARGETING_MATCH`, `SPLIT`, `DEFAULT`, `DISABLED`, `STATIC`, …);
    /// a failed prerequisite reads as `DISABLED`.
    pub reason: String,
    /// The variant served, when the flag has variants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Where the answer comes from.
    pub metadata: OfrepFlagMetadata,
}

/// The metadata of one OFREP evaluation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OfrepFlagMetadata {
    /// The environment evaluated.
    pub environment: String,
    /// The id of the rule that matched, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `PREREQUISITE_FAILED` when a failed prerequisite is reported as `DISABLED`.
    #[serde(rename = "dimmerReason", skip_serializing_if = "Option::is_none")]
    pub dimmer_reason: Option<String>,
}

/// OFREP's error codes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum OfrepErrorCode {
    /// No such flag (404).
    FlagNotFound,
    /// The flag could not be evaluated as defined (400).
    ParseError,
    /// The flag needs a `targetingKey` (400).
    TargetingKeyMissing,
    /// The context is not an object, or the body not JSON (400).
    InvalidContext,
    /// Anything else, e.g. an off flag without an off variant (400).
    General,
}

/// A failed OFREP evaluation of one flag.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OfrepEvaluationFailure {
    /// The flag key.
    pub key: String,
    /// Why it failed.
    pub error_code: OfrepErrorCode,
    /// In words.
    pub error_details: String,
}

/// One flag of a bulk evaluation: a success or a failure.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum OfrepBulkItem {
    /// Evaluated.
    Success(OfrepEvaluationSuccess),
    /// Not evaluated.
    Failure(OfrepEvaluationFailure),
}

/// A bulk OFREP evaluation: every flag of the environment.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OfrepBulkEvaluationSuccess {
    /// One entry per flag.
    pub flags: Vec<OfrepBulkItem>,
    /// Where the answer comes from.
    pub metadata: OfrepBulkMetadata,
}

/// The metadata of a bulk evaluation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OfrepBulkMetadata {
    /// The environment evaluated.
    pub environment: String,
    /// Its revision (the `ETag` names it too).
    pub revision: i64,
}

/// A bulk OFREP evaluation that could not start.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OfrepBulkEvaluationFailure {
    /// Why.
    pub error_code: OfrepErrorCode,
    /// In words.
    pub error_details: String,
}

/// An OFREP failure, or an error of the API's own shape (authentication, environment).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum OfrepFailureOrError {
    /// OFREP's failure.
    Ofrep(OfrepEvaluationFailure),
    /// The API's error.
    Api(ErrorBody),
}

/// A bulk OFREP failure, or an error of the API's own shape (authentication, environment).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum OfrepBulkFailureOrError {
    /// OFREP's failure.
    Ofrep(OfrepBulkEvaluationFailure),
    /// The API's error.
    Api(ErrorBody),
}

/// The description every placeholder schema starts with; none is left in the served document.
pub(crate) const PLACEHOLDER: &str = "Placeholder for a schema derived from the engine's JSON Schema";
