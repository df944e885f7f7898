//! The OpenAPI 3.1 document of the whole HTTP API, generated from the handlers' `#[utoipa::path]`
//! annotations and served at `GET /api/v1/openapi.json` (no token needed).
//!
//! Flags and segments are the engine's model; its JSON Schema comes from schemars (the schema of
//! `docs/flags.schema.json`), which utoipa does not read. So the annotations name the flag and
//! segment bodies through the marker types in [`schemas`] (`FlagView`, `FlagCreate`, …), whose
//! utoipa schema is only a generic placeholder, and [`document`] then replaces each placeholder
//! with a schema derived from the engine's JSON Schema and adds the engine's own definitions
//! (`Flag`, `Segment`, `EnvironmentConfig`, `Rule`, …) to `components.schemas`. OpenAPI 3.1
//! schemas are JSON Schema 2020-12, the dialect schemars writes, so they are embedded unchanged
//! but for their `$ref`s.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::error::ApiError;
use crate::state::AppState;

/// The description every placeholder schema starts with; none is left in the served document.
const PLACEHOLDER: &str = "Placeholder for a schema derived from the engine's JSON Schema";

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/openapi.json", get(openapi))
}

/// The API as utoipa sees it; [`document`] completes it with the engine's schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Dimmer HTTP API",
        description = "Dimmer's flag server: admin API (flags, segments, environments, tokens, audit), \
            SDK API (snapshot and server-sent events), OFREP and operations endpoints. \
            Errors of the admin and SDK APIs share one shape, `ErrorBody`; OFREP answers in its own terms. \
            Flags and segments follow `docs/flags.schema.json`."
    ),
    paths(
        super::flags::list,
        super::flags::create,
        super::flags::read,
        super::flags::update,
        super::flags::archive,
        super::flags::restore,
        super::flags::put_environment,
        super::flags::toggle,
        super::admin::list_environments,
        super::admin::create_environment,
        super::admin::list_segments,
        super::admin::create_segment,
        super::admin::read_segment,
        super::admin::update_segment,
        super::admin::delete_segment,
        super::admin::list_tokens,
        super::admin::create_token,
        super::admin::revoke_token,
        super::admin::audit,
        super::release::list_plans,
        super::release::plan_status,
        super::release::start_plan,
        super::release::advance,
        super::release::pause,
        super::release::resume,
        super::release::rollback,
        super::release::kill,
        super::release::dial_down,
        super::release::restore,
        super::release::list_templates,
        super::release::create_template,
        super::guards::ingest,
        super::guards::view,
        super::guards::read_guards,
        super::guards::put_guards,
        super::guards::alertmanager,
        super::sdk::config,
        super::sdk::stream,
        super::ofrep::single,
        super::ofrep::bulk,
        super::system::healthz,
        super::system::readyz,
        super::system::metrics,
        super::policy::show,
        super::policy::list,
        openapi,
    ),
    components(schemas(
        schemas::ErrorBody,
        schemas::Flag,
        schemas::Segment,
        schemas::FlagSet,
        // Optional request bodies, named by `ref(...)` (utoipa would offer `null` for `Option<_>`).
        super::flags::ReasonBody,
        schemas::OfrepEvaluationRequest,
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "flags", description = "Flags: the engine's model plus key, version and bookkeeping; writes are validated through the engine in every environment."),
        (name = "segments", description = "Reusable user groups."),
        (name = "environments", description = "Environments and their revisions."),
        (name = "tokens", description = "API tokens (admin only); stored as hashes."),
        (name = "audit", description = "The audit log, newest first."),
        (name = "releases", description = "Release plans and templates, and the dial-down fast path: kill, dial-down, restore (docs/releasing.md)."),
        (name = "guards", description = "Outcome metrics per variant, standing guards, and the Alertmanager receiver (docs/guards.md)."),
        (name = "sdk", description = "SDK API: an environment's snapshot and its change stream."),
        (name = "ofrep", description = "OpenFeature Remote Evaluation Protocol (tests/vectors/ofrep/openapi.yaml)."),
        (name = "policy", description = "The flag policy (docs/POLICY.md) and each flag's lifecycle; flag writes are checked against the policy."),
        (name = "system", description = "Operations endpoints and this document; no token needed."),
    )
)]
pub(crate) struct ApiDoc;

/// The two ways to present a token, accepted on every route that needs one.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "BearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`Authorization: Bearer <token>`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "ApiKeyAuth",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "`X-API-Key: <token>`, the same tokens as bearer",
            ))),
        );
    }
}

/// The served document: utoipa's, with the engine's schemas in `components.schemas`.
pub(crate) fn document() -> Result<Value, serde_json::Error> {
    let mut doc = serde_json::to_value(ApiDoc::openapi())?;
    if let Value::Object(root) = &mut doc {
        let components = root.entry("components").or_insert_with(|| json!({}));
        if let Value::Object(components) = components {
            let schemas = components.entry("schemas").or_insert_with(|| json!({}));
            if let Value::Object(schemas) = schemas {
                schemas.extend(engine_schemas(dimmer_engine::model::flag_set_schema()));
            }
        }
    }
    Ok(doc)
}

/// The engine's definitions, its `FlagSet`, and the API's flag and segment bodies derived from
/// them, with `$ref`s pointing into `components.schemas`.
fn engine_schemas(mut root: Value) -> Map<String, Value> {
    rewrite_refs(&mut root);
    let mut out = Map::new();
    let Value::Object(mut root) = root else { return out };
    root.remove("$schema");
    root.remove("title");
    if let Some(Value::Object(defs)) = root.remove("$defs") {
        out.extend(defs);
    }
    out.insert("FlagSet".into(), Value::Object(root));

    let string = json!({"type": "string"});
    let millis = json!({"type": "integer", "format": "int64", "description": "Unix milliseconds."});
    let version = json!({"type": "integer", "format": "int64", "minimum": 1,
        "description": "Bumped on every change; sent back in `If-Match` (also given as `ETag`)."});
    let reason = json!({"type": ["string", "null"],
        "description": "Why, for the audit log (the `X-Dimmer-Reason` header takes precedence)."});

    let derived = [
        (
            "FlagView",
            "Flag",
            "A flag as the API shows it: the model of docs/flags.schema.json plus key, version and bookkeeping.",
            json!({"key": string, "version": version, "archived": {"type": "boolean",
                "description": "Archived flags are left out of SDK snapshots."},
                "created_at": millis, "updated_at": millis}),
            &["key", "version", "archived", "created_at", "updated_at"][..],
        ),
        (
            "FlagCreate",
            "Flag",
            "A new flag: the model of docs/flags.schema.json plus its key and an optional reason.",
            json!({"key": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\s/]+$",
                "description": "1 to 256 characters, without spaces, control characters or '/'."},
                "reason": reason}),
            &["key"][..],
        ),
        (
            "FlagUpdate",
            "Flag",
            "A flag's new definition: the model of docs/flags.schema.json; `key`, if sent, must be the URL's.",
            json!({"key": {"type": "string", "description": "Optional; keys cannot change."}, "reason": reason}),
            &[][..],
        ),
        (
            "EnvironmentConfigUpdate",
            "EnvironmentConfig",
            "One environment's new configuration (targets, rules, default, off variant) plus an optional reason.",
            json!({"reason": reason}),
            &[][..],
        ),
        (
            "SegmentView",
            "Segment",
            "A segment as the API shows it: the model of docs/flags.schema.json plus key, version and bookkeeping.",
            json!({"key": string, "version": version, "created_at": millis, "updated_at": millis}),
            &["key", "version", "created_at", "updated_at"][..],
        ),
        (
            "SegmentCreate",
            "Segment",
            "A new segment: the model of docs/flags.schema.json plus its key and an optional reason.",
            json!({"key": {"type": "string", "minLength": 1, "pattern": "^[^/]+$",
                "description": "Required, without '/'."}, "reason": reason}),
            &["key"][..],
        ),
        (
            "SegmentUpdate",
            "Segment",
            "A segment's new definition: the model of docs/flags.schema.json plus an optional reason (`key` is ignored).",
            json!({"key": {"type": "string", "description": "Ignored: the URL names the segment."}, "reason": reason}),
            &[][..],
        ),
    ];
    for (name, base, description, properties, required) in derived {
        let schema = extend(out.get(base), description, properties, required);
        out.insert(name.into(), schema);
    }
    out
}

/// `base` (an object schema) with more properties and required names, and a new description.
fn extend(base: Option<&Value>, description: &str, properties: Value, required: &[&str]) -> Value {
    let mut schema = match base {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::from_iter([("type".to_owned(), json!("object"))]),
    };
    schema.insert("description".into(), json!(description));
    if let (Value::Object(extra), Value::Object(props)) =
        (properties, schema.entry("properties").or_insert_with(|| json!({})))
    {
        props.extend(extra);
    }
    if !required.is_empty()
        && let Value::Array(names) = schema.entry("required").or_insert_with(|| json!([]))
    {
        for name in required {
            if !names.iter().any(|n| n == name) {
                names.push(json!(name));
            }
        }
    }
    Value::Object(schema)
}

/// Points schemars' `#/$defs/X` references at `#/components/schemas/X`.
fn rewrite_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match v {
                    Value::String(s) if k == "$ref" => {
                        if let Some(name) = s.strip_prefix("#/$defs/") {
                            *s = format!("#/components/schemas/{name}");
                        }
                    }
                    _ => rewrite_refs(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// Computed once: the document only changes with the code.
static DOCUMENT: LazyLock<Result<String, serde_json::Error>> =
    LazyLock::new(|| document().and_then(|doc| serde_json::to_string(&doc)));

/// This document: the OpenAPI 3.1 description of the whole HTTP API.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "system",
    operation_id = "getOpenApi",
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object),
    )
)]
async fn openapi() -> Result<Response, ApiError> {
    match &*DOCUMENT {
        Ok(json) => {
            Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json.clone()).into_response())
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Types that exist only to be described: the bodies that the handlers build as JSON values.
pub(crate) mod schemas {
    #![allow(dead_code, reason = "documentation-only types: described in the OpenAPI document, never built")]

    use std::borrow::Cow;

    use serde::Serialize;
    use serde_json::{Map, Value};
    use utoipa::ToSchema;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

    use crate::error::Code;
    use crate::store::{AuditEntry, Environment, Scope, TokenRecord};

    /// Declares a type whose schema [`super::document`] takes from the engine's JSON Schema;
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
                        .description(Some(format!("{}: {}. See docs/flags.schema.json.", super::PLACEHOLDER, $what)))
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

    /// Every error of the admin and SDK APIs (not OFREP's evaluation failures).
    #[derive(Debug, Serialize, ToSchema)]
    pub(crate) struct ErrorBody {
        /// The error.
        pub error: ErrorObject,
    }

    /// An error: a stable code, a message for people, structured details.
    #[derive(Debug, Serialize, ToSchema)]
    pub(crate) struct ErrorObject {
        /// Stable, snake_case; decides the HTTP status.
        pub code: Code,
        /// What went wrong, in words.
        pub message: String,
        /// Structured details, or null: `errors` (`[{path, message}]`) for validation failures,
        /// `expected` and `current` for a version mismatch, `flags` for a segment in use.
        #[schema(value_type = Value)]
        pub details: Value,
    }

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_schemas_replace_every_placeholder_and_collide_with_nothing_else() {
        let utoipa = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let engine = engine_schemas(dimmer_engine::model::flag_set_schema());
        for (name, schema) in utoipa["components"]["schemas"].as_object().unwrap() {
            let placeholder = schema["description"].as_str().is_some_and(|d| d.starts_with(PLACEHOLDER));
            assert_eq!(placeholder, engine.contains_key(name), "{name}: utoipa's and the engine's schemas collide");
        }
        let doc = document().unwrap().to_string();
        assert!(!doc.contains(PLACEHOLDER), "a placeholder schema was left in the document");
        assert!(engine["FlagView"]["properties"]["kind"].is_object());
        assert!(engine["SegmentCreate"]["required"].as_array().unwrap().contains(&json!("key")));
    }
}
