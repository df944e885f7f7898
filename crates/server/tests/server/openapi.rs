//! The OpenAPI document at `/api/v1/openapi.json`: served without a token, OpenAPI 3.x, every
//! route of the routers in `paths` with its method (and nothing else), OFREP's paths as in the
//! protocol's contract, every `$ref` resolvable, and the documented shapes those the API answers.

use std::collections::BTreeSet;
use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::TestServer;

/// Every route the routers in `crates/server/src/api/*.rs` register, as (method, path). Keep in
/// sync with them: [`routes_in_the_router_sources_are_the_table`] checks the table against the
/// sources, and the other tests check the document and the server against it.
const ROUTES: &[(&str, &str)] = &[
    // flags.rs
    ("GET", "/api/v1/flags"),
    ("POST", "/api/v1/flags"),
    ("GET", "/api/v1/flags/{key}"),
    ("PUT", "/api/v1/flags/{key}"),
    ("POST", "/api/v1/flags/{key}/archive"),
    ("POST", "/api/v1/flags/{key}/restore"),
    ("PUT", "/api/v1/flags/{key}/environments/{env}"),
    ("POST", "/api/v1/flags/{key}/environments/{env}/toggle"),
    // admin.rs
    ("GET", "/api/v1/environments"),
    ("POST", "/api/v1/environments"),
    ("GET", "/api/v1/segments"),
    ("POST", "/api/v1/segments"),
    ("GET", "/api/v1/segments/{key}"),
    ("PUT", "/api/v1/segments/{key}"),
    ("DELETE", "/api/v1/segments/{key}"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/{name}"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/audit/{id}"),
    // release.rs
    ("GET", "/api/v1/plans"),
    ("GET", "/api/v1/flags/{key}/environments/{env}/plan"),
    ("POST", "/api/v1/flags/{key}/environments/{env}/plan"),
    ("POST", "/api/v1/flags/{key}/environments/{env}/plan/advance"),
    ("POST", "/api/v1/flags/{key}/environments/{env}/plan/pause"),
    ("POST", "/api/v1/flags/{key}/environments/{env}/plan/resume"),
    ("POST", "/api/v1/flags/{key}/environments/{env}/plan/rollback"),
    ("POST", "/api/v1/flags/{key}/environments/{env}/kill"),
    ("POST", "/api/v1/flags/{key}/environments/{env}/dial-down"),
    ("POST", "/api/v1/flags/{key}/environments/{env}/restore"),
    ("GET", "/api/v1/templates"),
    ("POST", "/api/v1/templates"),
    // guards.rs
    ("POST", "/api/v1/sdk/metrics"),
    ("GET", "/api/v1/flags/{key}/metrics"),
    ("GET", "/api/v1/flags/{key}/environments/{env}/guards"),
    ("PUT", "/api/v1/flags/{key}/environments/{env}/guards"),
    ("POST", "/api/v1/alertmanager"),
    // policy.rs
    ("GET", "/api/v1/policy"),
    ("GET", "/api/v1/lifecycle"),
    // sdk.rs
    ("GET", "/api/v1/sdk/config"),
    ("GET", "/api/v1/sdk/stream"),
    // ofrep.rs
    ("POST", "/ofrep/v1/evaluate/flags/{key}"),
    ("POST", "/ofrep/v1/evaluate/flags"),
    ("GET", "/api/v1/ofrep/events"),
    // system.rs
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    // openapi.rs
    ("GET", "/api/v1/openapi.json"),
];

/// Routes the routers register that are not Dimmer's JSON API and so are not in the document:
/// OTLP/HTTP (`api/otlp.rs`), whose requests and answers are OpenTelemetry's protobuf or JSON
/// messages (docs/api.md and docs/guards.md describe them).
const UNDOCUMENTED: &[(&str, &str)] = &[("POST", "/v1/traces"), ("POST", "/v1/logs")];

/// Routes answered without a token.
const OPEN: &[&str] = &["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"];

const HTTP_METHODS: [&str; 7] = ["get", "post", "put", "delete", "patch", "head", "options"];

async fn fetch(server: &TestServer) -> Value {
    let resp = server.http.get(format!("{}/api/v1/openapi.json", server.base)).send().await.expect("request");
    assert_eq!(resp.status(), StatusCode::OK, "the document needs no token");
    assert!(resp.headers()["content-type"].to_str().expect("ascii").starts_with("application/json"));
    resp.json().await.expect("the document is JSON")
}

fn table() -> BTreeSet<(String, String)> {
    ROUTES.iter().map(|(m, p)| (m.to_lowercase(), (*p).to_owned())).collect()
}

#[tokio::test]
async fn every_route_is_documented_with_its_method_and_nothing_else() {
    let server = TestServer::start().await;
    let doc = fetch(&server).await;
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3."), "not OpenAPI 3.x: {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for method in HTTP_METHODS {
            if item.get(method).is_some() {
                documented.insert((method.to_owned(), path.clone()));
            }
        }
    }
    let expected = table();
    let missing: Vec<_> = expected.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&expected).collect();
    assert!(missing.is_empty(), "routes missing from the document: {missing:?}");
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
    assert_eq!(ROUTES.len(), expected.len(), "the table has duplicates");

    for (method, path) in ROUTES {
        let op = &doc["paths"][path][method.to_lowercase()];
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}: no responses");
        assert!(op["operationId"].is_string(), "{method} {path}: no operationId");
        // Every `{param}` of the path is a documented, required path parameter.
        for name in path.split('{').skip(1).filter_map(|s| s.split_once('}')).map(|(n, _)| n) {
            let found = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true);
            assert!(found, "{method} {path}: path parameter {name} not documented");
        }
        if OPEN.contains(path) {
            assert!(op.get("security").is_none(), "{method} {path} needs no token");
        } else if *path == "/api/v1/ofrep/events" {
            // EventSource sends no headers: the URL's ticket stands for the token.
            assert_eq!(op["security"], json!([{"StreamTicket": []}]), "{method} {path}");
            assert!(op["responses"].get("401").is_some(), "{method} {path}: 401 not documented");
        } else {
            // Either scheme will do: two requirements of one scheme each.
            assert_eq!(op["security"], json!([{"BearerAuth": []}, {"ApiKeyAuth": []}]), "{method} {path}");
            let statuses = op["responses"].as_object().expect("responses");
            assert!(statuses.contains_key("401"), "{method} {path}: 401 not documented");
            // OFREP's errors carry its fields beside the API's `error` object.
            let error_schema = if path.starts_with("/ofrep/") { "OfrepError" } else { "ErrorBody" };
            assert_eq!(
                op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"],
                format!("#/components/schemas/{error_schema}"),
                "{method} {path}"
            );
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["BearerAuth"]["scheme"], "bearer");
    assert_eq!((&schemes["StreamTicket"]["in"], &schemes["StreamTicket"]["name"]), (&json!("query"), &json!("ticket")));
    assert_eq!(
        schemes["ApiKeyAuth"],
        json!({"type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": schemes["ApiKeyAuth"]["description"]})
    );

    // The conditional-request headers and status codes.
    let header_of = |method: &str, path: &str, name: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == name && p["in"] == "header")
    };
    for (method, path) in [
        ("put", "/api/v1/flags/{key}"),
        ("put", "/api/v1/flags/{key}/environments/{env}"),
        ("put", "/api/v1/segments/{key}"),
        ("delete", "/api/v1/segments/{key}"),
    ] {
        assert!(header_of(method, path, "If-Match"), "{method} {path}: If-Match");
        for status in ["412", "428"] {
            assert!(doc["paths"][path][method]["responses"].get(status).is_some(), "{method} {path}: {status}");
        }
    }
    assert!(header_of("post", "/api/v1/flags", "X-Dimmer-Reason"));
    assert!(header_of("get", "/api/v1/sdk/stream", "Last-Event-ID"));
    assert!(doc["paths"]["/api/v1/sdk/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"].is_object());
    for (method, path) in [("get", "/api/v1/sdk/config"), ("post", "/ofrep/v1/evaluate/flags")] {
        assert!(header_of(method, path, "If-None-Match"), "{method} {path}: If-None-Match");
        assert!(doc["paths"][path][method]["responses"].get("304").is_some(), "{method} {path}: 304");
    }
    server.stop().await;
}

/// The table is the routers: every `.route("…", get(…).post(…))` in the API's sources.
#[test]
fn routes_in_the_router_sources_are_the_table() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut routed = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("src/api") {
        let source = std::fs::read_to_string(entry.expect("entry").path()).expect("source");
        let mut rest = source.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            // The call's arguments, up to its closing parenthesis.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(i, _)| i)
                .expect("balanced .route(...)");
            let args = &rest[..end];
            let path = args.trim_start().strip_prefix('"').and_then(|s| s.split_once('"')).map(|(p, _)| p);
            let path = path.unwrap_or_else(|| panic!("a route path that is not a literal: {args}"));
            let handlers = &args[args.find(',').expect("a method router")..];
            let mut found = false;
            for method in HTTP_METHODS {
                let call = format!("{method}(");
                let calls = handlers
                    .match_indices(&call)
                    .filter(|(i, _)| !handlers[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_'));
                for _ in calls {
                    routed.insert((method.to_owned(), path.to_owned()));
                    found = true;
                }
            }
            assert!(found, "no method for {path}: {args}");
            rest = &rest[end..];
        }
    }
    let mut expected = table();
    expected.extend(UNDOCUMENTED.iter().map(|(m, p)| (m.to_lowercase(), (*p).to_owned())));
    assert_eq!(routed, expected, "the ROUTES and UNDOCUMENTED tables and the routers differ");
}

/// Every route of the table is served (neither 404 from routing nor 405): without a token the
/// protected ones answer 401 before reading anything, the stream included.
#[tokio::test]
async fn every_route_of_the_table_is_served() {
    let server = TestServer::start().await;
    for (method, path) in ROUTES {
        let concrete =
            path.replace("{key}", "k").replace("{env}", "production").replace("{name}", "n").replace("{id}", "1");
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let (status, _, body) = server.call(method.clone(), &concrete, None, None, &[]).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(status != StatusCode::NOT_FOUND || body.get("error").is_some(), "{method} {path}: not routed");
        // What the document says about tokens is what the server does.
        assert_eq!(status == StatusCode::UNAUTHORIZED, !OPEN.contains(path), "{method} {path}: {status}");
    }
    server.stop().await;
}

/// OFREP's paths are named as in `tests/vectors/ofrep/openapi.yaml`.
#[tokio::test]
async fn ofrep_paths_match_the_contract() {
    let contract = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/ofrep/openapi.yaml");
    let yaml = std::fs::read_to_string(&contract)
        .unwrap_or_else(|e| panic!("{}: {e} (it ships in tests/vectors/)", contract.display()));
    // The keys of the top-level `paths:` mapping (two-space indent); no YAML parser needed.
    let mut in_paths = false;
    let mut contract_paths = BTreeSet::new();
    for line in yaml.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line.trim_end() == "paths:";
        } else if in_paths && let Some(key) = line.strip_prefix("  /").and_then(|l| l.trim_end().strip_suffix(':')) {
            contract_paths.insert(format!("/{key}"));
        }
    }
    let expected: BTreeSet<String> =
        ["/ofrep/v1/evaluate/flags/{key}", "/ofrep/v1/evaluate/flags"].into_iter().map(str::to_owned).collect();
    assert_eq!(contract_paths, expected, "the contract's paths");

    let server = TestServer::start().await;
    let doc = fetch(&server).await;
    let documented: BTreeSet<String> =
        doc["paths"].as_object().expect("paths").keys().filter(|p| p.starts_with("/ofrep/")).cloned().collect();
    assert_eq!(documented, contract_paths);
    for path in &contract_paths {
        assert!(doc["paths"][path]["post"].is_object(), "POST {path}");
    }
    assert_eq!(doc["paths"]["/ofrep/v1/evaluate/flags/{key}"]["post"]["operationId"], "evaluateFlag");
    assert_eq!(doc["paths"]["/ofrep/v1/evaluate/flags"]["post"]["operationId"], "evaluateFlagsBulk");
    server.stop().await;
}

fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if k == "$ref" => out.push(s),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// Every `$ref` points at a schema of the document, and the flag and segment schemas come from
/// the engine's JSON Schema (`docs/flags.schema.json`).
#[tokio::test]
async fn every_reference_resolves_and_flags_use_the_engine_schema() {
    let server = TestServer::start().await;
    let doc = fetch(&server).await;
    let schemas = doc["components"]["schemas"].as_object().expect("components.schemas");
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("a reference outside: {r}"));
        assert!(schemas.contains_key(name), "{r} does not resolve");
    }
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/flags.schema.json"))
            .expect("docs/flags.schema.json"),
    )
    .expect("JSON");
    for name in file["$defs"].as_object().expect("$defs").keys() {
        assert!(schemas.contains_key(name), "{name} of docs/flags.schema.json is not in the document");
    }
    assert_eq!(
        schemas["Flag"]["properties"].as_object().map(|p| p.keys().collect::<Vec<_>>()),
        file["$defs"]["Flag"]["properties"].as_object().map(|p| p.keys().collect::<Vec<_>>())
    );
    for name in ["FlagView", "FlagCreate", "FlagUpdate", "SegmentView", "SegmentCreate", "SegmentUpdate"] {
        assert!(schemas[name]["properties"]["description"].is_object(), "{name}: not the engine's schema");
    }
    server.stop().await;
}

/// What the API answers fits what the document says: the error shape, a flag, a segment.
#[tokio::test]
async fn documented_shapes_are_the_answers() {
    let server = TestServer::start().await;
    let doc = fetch(&server).await;
    let schemas = &doc["components"]["schemas"];
    let fits = |name: &str, value: &Value| {
        let schema = &schemas[name];
        let object = value.as_object().unwrap_or_else(|| panic!("{name}: not an object: {value}"));
        let properties = schema["properties"].as_object().expect("properties");
        for key in object.keys() {
            assert!(properties.contains_key(key), "{name}: {key} is answered but not documented");
        }
        for key in schema["required"].as_array().into_iter().flatten() {
            assert!(object.contains_key(key.as_str().expect("name")), "{name}: required {key} is not answered");
        }
    };

    let (status, error) = server.admin(Method::GET, "/api/v1/flags/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    fits("ErrorBody", &error);
    fits("ErrorObject", &error["error"]);
    let codes = schemas["Code"]["enum"].as_array().expect("codes");
    assert!(codes.contains(&error["error"]["code"]));

    let (status, flag) = server
        .admin(Method::POST, "/api/v1/flags", Some(json!({"key": "documented", "kind": "release", "owner": "docs"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{flag}");
    fits("FlagView", &flag);
    let (_, list) = server.admin(Method::GET, "/api/v1/flags", None).await;
    fits("FlagList", &list);

    let (status, segment) =
        server.admin(Method::POST, "/api/v1/segments", Some(json!({"key": "beta", "included": ["u1"]}))).await;
    assert_eq!(status, StatusCode::CREATED, "{segment}");
    fits("SegmentView", &segment);

    let (_, tokens) = server.admin(Method::GET, "/api/v1/tokens", None).await;
    for token in tokens["tokens"].as_array().expect("tokens") {
        fits("TokenRecord", token);
    }
    let (_, envs) = server.admin(Method::GET, "/api/v1/environments", None).await;
    fits("EnvironmentList", &envs);
    fits("Environment", &envs["environments"][0]);
    server.stop().await;
}
