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
//!
//! Security is declared here once, not per handler: [`Security`] makes every operation require a
//! token (`BearerAuth` or `ApiKeyAuth`) except those listed in [`PUBLIC`], and the OFREP event
//! stream ([`TICKETED`]), which a ticket in its URL opens (`EventSource` sends no headers).

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};

use crate::api::AppState;
use crate::api::error::ApiError;

use super::schemas;

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
        super::admin::audit_entry,
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
        super::ofrep::events,
        super::system::healthz,
        super::system::readyz,
        super::system::metrics,
        super::policy::show,
        super::policy::list,
        openapi,
    ),
    components(schemas(
        schemas::ErrorBody,
        schemas::OfrepError,
        schemas::Flag,
        schemas::Segment,
        schemas::FlagSet,
        // Optional request bodies, named by `ref(...)` (utoipa would offer `null` for `Option<_>`).
        super::flags::ReasonBody,
        schemas::OfrepEvaluationRequest,
    )),
    modifiers(&Security),
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

/// The operations that need no token, as (method, path): liveness and readiness (probes carry
/// no credentials), Prometheus' scrape, and this document. Their handlers take no `Principal`;
/// every other handler does, and its operation is documented as requiring a token.
pub(crate) const PUBLIC: &[(&str, &str)] =
    &[("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"), ("get", "/api/v1/openapi.json")];

/// The operations opened by an event-stream ticket in the query (`StreamTicket`) instead of a
/// token: the URL an OFREP bulk answer advertises.
pub(crate) const TICKETED: &[(&str, &str)] = &[("get", "/api/v1/ofrep/events")];

/// The two ways to present a token, and the requirement of one on every operation but the
/// [`PUBLIC`] and [`TICKETED`] ones (one place instead of an annotation on each handler).
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            let operations = [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("options", &mut item.options),
                ("head", &mut item.head),
                ("patch", &mut item.patch),
                ("trace", &mut item.trace),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation
                    && TICKETED.contains(&(method, path.as_str()))
                {
                    operation.security = Some(vec![SecurityRequirement::new("StreamTicket", Vec::<String>::new())]);
                } else if let Some(operation) = operation
                    && !PUBLIC.contains(&(method, path.as_str()))
                {
                    // Either scheme will do: two requirements, each of one scheme.
                    operation.security = Some(vec![
                        SecurityRequirement::new("BearerAuth", Vec::<String>::new()),
                        SecurityRequirement::new("ApiKeyAuth", Vec::<String>::new()),
                    ]);
                }
            }
        }
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
        components.add_security_scheme(
            "StreamTicket",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "ticket",
                "The ticket in the URL an OFREP bulk answer advertises in `eventStreams`: it opens that \
                 environment's change events and nothing else",
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
        if let Some(Value::Object(paths)) = root.get_mut("paths") {
            for (path, item) in paths.iter_mut() {
                let Value::Object(item) = item else { continue };
                for operation in item.values_mut() {
                    if let Value::Object(operation) = operation {
                        common_responses(path, operation);
                        version_headers(operation);
                        optional_bodies(operation);
                    }
                }
            }
        }
    }
    integer_ranges(&mut doc);
    Ok(doc)
}

/// Gives every integer schema with a width (`format: uint32`, `int64`, …) the range the server
/// reads into: JSON Schema's `format` is only a hint that generators and validators skip, and a
/// number beyond the Rust type is refused (400), which the document must say.
fn integer_ranges(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let range = match map.get("format").and_then(Value::as_str) {
                Some("uint8") => Some((json!(0), json!(u8::MAX))),
                Some("uint16") => Some((json!(0), json!(u16::MAX))),
                Some("uint32") => Some((json!(0), json!(u32::MAX))),
                Some("uint64" | "uint") => Some((json!(0), json!(u64::MAX))),
                Some("int8") => Some((json!(i8::MIN), json!(i8::MAX))),
                Some("int16") => Some((json!(i16::MIN), json!(i16::MAX))),
                Some("int32") => Some((json!(i32::MIN), json!(i32::MAX))),
                Some("int64" | "int") => Some((json!(i64::MIN), json!(i64::MAX))),
                _ => None,
            };
            let integer = match map.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(types)) => types.iter().any(|t| t == "integer"),
                _ => false,
            };
            if let (Some((min, max)), true) = (range, integer) {
                let tighter_min =
                    map.get("minimum").and_then(Value::as_f64).is_some_and(|m| m >= min.as_f64().unwrap_or(f64::MIN));
                if !tighter_min {
                    map.insert("minimum".into(), min);
                }
                let tighter_max =
                    map.get("maximum").and_then(Value::as_f64).is_some_and(|m| m <= max.as_f64().unwrap_or(f64::MAX));
                if !tighter_max {
                    map.insert("maximum".into(), max);
                }
            }
            map.values_mut().for_each(integer_ranges);
        }
        Value::Array(items) => items.iter_mut().for_each(integer_ranges),
        _ => {}
    }
}

/// A body described as "Optional…" may be left out (the handlers read an empty body as `{}`):
/// the document says `required: false`, as utoipa cannot be told per annotation.
fn optional_bodies(operation: &mut Map<String, Value>) {
    let Some(Value::Object(body)) = operation.get_mut("requestBody") else { return };
    if body.get("description").and_then(Value::as_str).is_some_and(|d| d.starts_with("Optional")) {
        body.insert("required".into(), json!(false));
    }
}

/// `If-Match` takes a version as the server reads it (`"3"`, `3` or `W/"3"`): said as a pattern,
/// so that generated clients and schemathesis know a malformed one is refused (400).
fn version_headers(operation: &mut Map<String, Value>) {
    let Some(Value::Array(parameters)) = operation.get_mut("parameters") else { return };
    for parameter in parameters {
        if parameter.get("in") == Some(&json!("header")) && parameter.get("name") == Some(&json!("If-Match")) {
            parameter["schema"] = json!({"type": "string", "pattern": "^(W/)?\"?[0-9]{1,18}\"?$"});
        }
    }
}

/// Documents the answers any operation can give besides its own, so the document is as strict as
/// the server (schemathesis holds every answer to it): a malformed parameter or body (400), a
/// body too large (413), no or a wrong token (401, 403), a slow request (408; not the event
/// streams, whose body the time limit does not cover), the rate limits (429 with `Retry-After`),
/// and a failure (500). Under `/ofrep/` the body is [`schemas::OfrepError`]; elsewhere
/// `ErrorBody`. A status an operation documents itself keeps its own description.
fn common_responses(path: &str, operation: &mut Map<String, Value>) {
    let has_parameters =
        operation.get("parameters").and_then(Value::as_array).is_some_and(|p| !p.is_empty()) || path.contains('{');
    let has_body = operation.contains_key("requestBody");
    let secured = operation.contains_key("security");
    let streams = operation
        .get("responses")
        .and_then(|r| r.get("200"))
        .and_then(|ok| ok.get("content"))
        .is_some_and(|content| content.as_object().is_some_and(|c| c.contains_key("text/event-stream")));
    let schema = if path.starts_with("/ofrep/") { "OfrepError" } else { "ErrorBody" };
    let body = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}});
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    if has_parameters || has_body {
        wanted.push(("400", "A malformed parameter or body (the error names it)"));
    }
    if secured {
        wanted.push(("401", "No token, or an unknown or revoked one"));
        wanted.push(("403", "The token's scope or environment does not allow this"));
    }
    if !streams {
        wanted.push(("408", "The request did not complete in time; it may or may not have taken effect"));
    }
    if has_body {
        wanted.push(("413", "The body is larger than the server accepts"));
    }
    wanted.push(("429", "Too many requests from this token or address"));
    wanted.push(("500", "The server failed; details are in its log"));
    let responses = operation.entry("responses").or_insert_with(|| json!({}));
    let Value::Object(responses) = responses else { return };
    for (status, description) in wanted {
        if responses.contains_key(status) {
            continue;
        }
        let mut response = json!({"description": description, "content": body.clone()});
        if status == "429" {
            response["headers"] = json!({"Retry-After": {
                "description": "Seconds until a request may succeed",
                "schema": {"type": "integer", "minimum": 0}}});
        }
        responses.insert(status.to_owned(), response);
    }
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
            json!({"key": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": dimmer_engine::keys::KEY_PATTERN,
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
            json!({"key": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": dimmer_engine::keys::KEY_PATTERN,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::schemas::PLACEHOLDER;

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

    #[test]
    fn every_operation_but_the_public_ones_requires_a_token() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let token = json!([{"BearerAuth": []}, {"ApiKeyAuth": []}]);
        let mut public = Vec::new();
        let mut ticketed = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if PUBLIC.contains(&(method.as_str(), path.as_str())) {
                    assert!(operation.get("security").is_none(), "{method} {path} is public");
                    public.push((method.as_str(), path.as_str()));
                } else if TICKETED.contains(&(method.as_str(), path.as_str())) {
                    assert_eq!(operation["security"], json!([{"StreamTicket": []}]), "{method} {path}");
                    ticketed.push((method.as_str(), path.as_str()));
                } else {
                    assert_eq!(operation["security"], token, "{method} {path}");
                }
            }
        }
        public.sort_unstable();
        let mut listed = PUBLIC.to_vec();
        listed.sort_unstable();
        assert_eq!(public, listed, "every public operation is documented");
        assert_eq!(ticketed, TICKETED, "every ticketed operation is documented");
    }
}
