//! The JavaScript server-side OpenFeature OFREP provider, through Node: `examples/node-ofrep/`
//! (`@openfeature/server-sdk` with `@openfeature/ofrep-provider`, the npm versions locked in its
//! `package-lock.json`) runs as a real `node` process against a real server, and evaluates
//! boolean, string, number and object flags with contexts; a missing flag and a type mismatch
//! come back as the default with OpenFeature's error codes.
//!
//! The components come from the environment `.ci/run` sets: `DIMMER_NODE` (default `node` on the
//! `PATH`) and `DIMMER_NODE_OFREP_MODULES` (default `examples/node-ofrep/node_modules`, from
//! `npm ci --ignore-scripts` there). A missing one is a loud warning outside CI and a failure in CI
//! (`CI` set).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{NodeComponents, NodeExample, TempDir, TestServer, node_components, workspace};

/// `node` and this example's packages, or `None` (outside CI) when one is missing.
fn components() -> Option<NodeComponents> {
    node_components(&NodeExample {
        test: "the Node OFREP provider test",
        example: "node-ofrep",
        modules_var: "DIMMER_NODE_OFREP_MODULES",
        probe: "@openfeature/ofrep-provider/package.json",
    })
}

async fn seed(server: &TestServer) {
    let flags = [
        json!({"key": "new-checkout", "environments": {"production": {"enabled": true, "rules": [
            {"id": "france", "clauses": [{"attribute": "country", "op": "in", "values": ["fr"]}], "serve": {"variant": "on"}}
        ], "default": {"variant": "off"}}}}),
        json!({"key": "banner-copy", "variants": {"control": "Buy now", "bold": "BUY NOW"},
               "environments": {"production": {"enabled": true, "default": {"variant": "bold"}, "off_variant": "control"}}}),
        json!({"key": "page-size", "variants": {"few": 10, "many": 50.5},
               "environments": {"production": {"enabled": true, "rules": [
                   {"id": "pro", "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "serve": {"variant": "many"}}
               ], "default": {"variant": "few"}, "off_variant": "few"}}}),
        json!({"key": "theme", "variants": {
                   "light": {"background": "#ffffff", "dense": false},
                   "dark": {"background": "#101010", "dense": true, "accents": ["teal", "amber"]}},
               "environments": {"production": {"enabled": true, "rules": [
                   {"id": "night", "clauses": [{"attribute": "prefers", "op": "in", "values": ["dark"]}], "serve": {"variant": "dark"}}
               ], "default": {"variant": "light"}, "off_variant": "light"}}}),
        json!({"key": "old-banner", "environments": {"production": {"enabled": false}}}),
    ];
    for flag in flags {
        let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(flag)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
}

/// Runs the example's script on `cases` against `server` with `token`; its JSON results.
async fn run_script(parts: &NodeComponents, server: &TestServer, token: &str, cases: &Value) -> Vec<Value> {
    // The script as shipped, beside a link to the packages: Node resolves an ES module's imports
    // from the script's own folder, wherever `npm ci` put them.
    let dir = TempDir::new("node-ofrep");
    let script = dir.0.join("evaluate.mjs");
    std::fs::copy(workspace().join("examples/node-ofrep/evaluate.mjs"), &script).expect("copy the script");
    std::os::unix::fs::symlink(&parts.node_modules, dir.0.join("node_modules")).expect("link node_modules");
    let cases_file = dir.0.join("cases.json");
    std::fs::write(&cases_file, cases.to_string()).expect("write the cases");
    let out = tokio::process::Command::new(&parts.node)
        .arg(&script)
        .arg(&cases_file)
        .env("DIMMER_URL", &server.base)
        .env("DIMMER_SDK_TOKEN", token)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "node failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(!stdout.contains(token) && !stderr.contains(token), "the token is never printed");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{stderr}"))
}

#[tokio::test]
async fn the_javascript_ofrep_provider_evaluates_through_node() {
    let Some(parts) = components() else { return };
    let server = TestServer::start().await;
    seed(&server).await;
    let sdk = server.token("node-service", "sdk", Some("production")).await;
    let fr = json!({"targetingKey": "user-42", "country": "fr", "plan": "pro", "prefers": "dark"});
    let de = json!({"targetingKey": "user-7", "country": "de", "plan": "free"});
    let cases = json!([
        {"flag": "new-checkout", "type": "boolean", "default": false, "context": fr},
        {"flag": "new-checkout", "type": "boolean", "default": true, "context": de},
        {"flag": "banner-copy", "type": "string", "default": "Buy", "context": de},
        {"flag": "page-size", "type": "number", "default": 1, "context": fr},
        {"flag": "page-size", "type": "number", "default": 1, "context": de},
        {"flag": "theme", "type": "object", "default": {}, "context": fr},
        {"flag": "theme", "type": "object", "default": {}, "context": de},
        {"flag": "old-banner", "type": "boolean", "default": true, "context": de},
        {"flag": "no-such-flag", "type": "boolean", "default": true, "context": fr},
        {"flag": "banner-copy", "type": "number", "default": 7, "context": fr},
    ]);
    let results = run_script(&parts, &server, &sdk, &cases).await;
    assert_eq!(results.len(), 10, "{results:#?}");
    let got = |i: usize| {
        let r = &results[i];
        (r["value"].clone(), r["variant"].clone(), r["reason"].clone(), r["errorCode"].clone())
    };
    let n = Value::Null;
    assert_eq!(got(0), (json!(true), json!("on"), json!("TARGETING_MATCH"), n.clone()), "{:#}", results[0]);
    assert_eq!(got(1), (json!(false), json!("off"), json!("DEFAULT"), n.clone()), "{:#}", results[1]);
    // No rules: the same answer for every context.
    assert_eq!(got(2), (json!("BUY NOW"), json!("bold"), json!("STATIC"), n.clone()), "{:#}", results[2]);
    assert_eq!(got(3), (json!(50.5), json!("many"), json!("TARGETING_MATCH"), n.clone()), "{:#}", results[3]);
    assert_eq!(got(4), (json!(10), json!("few"), json!("DEFAULT"), n.clone()), "{:#}", results[4]);
    let dark = json!({"background": "#101010", "dense": true, "accents": ["teal", "amber"]});
    assert_eq!(got(5), (dark, json!("dark"), json!("TARGETING_MATCH"), n.clone()), "{:#}", results[5]);
    let light = json!({"background": "#ffffff", "dense": false});
    assert_eq!(got(6), (light, json!("light"), json!("DEFAULT"), n.clone()), "{:#}", results[6]);
    assert_eq!(got(7), (json!(false), json!("off"), json!("DISABLED"), n.clone()), "{:#}", results[7]);
    // Errors: the application's default, with OpenFeature's code.
    assert_eq!(
        (got(8).0, got(8).2, got(8).3),
        (json!(true), json!("ERROR"), json!("FLAG_NOT_FOUND")),
        "{:#}",
        results[8]
    );
    assert_eq!((got(9).0, got(9).2, got(9).3), (json!(7), json!("ERROR"), json!("TYPE_MISMATCH")), "{:#}", results[9]);

    // What Node resolved is what the server answers over OFREP itself.
    for (case, result) in cases.as_array().unwrap().iter().zip(&results).take(8) {
        let path = format!("/ofrep/v1/evaluate/flags/{}", case["flag"].as_str().unwrap());
        let (s, _, raw) =
            server.call(Method::POST, &path, Some(&sdk), Some(json!({"context": case["context"]})), &[]).await;
        assert_eq!(s, StatusCode::OK, "{raw}");
        assert_eq!(
            (&raw["value"], &raw["variant"], &raw["reason"]),
            (&result["value"], &result["variant"], &result["reason"])
        );
    }

    // A revoked token: every evaluation is the default, with the error OpenFeature reports.
    let (s, v) = server.admin(Method::DELETE, "/api/v1/tokens/node-service", None).await;
    assert!(s.is_success(), "{v}");
    let results = run_script(&parts, &server, &sdk, &json!([cases[0]])).await;
    assert_eq!((&results[0]["value"], &results[0]["reason"]), (&json!(false), &json!("ERROR")), "{:#}", results[0]);
    assert!(!results[0]["errorCode"].is_null(), "{:#}", results[0]);
    server.stop().await;
}
