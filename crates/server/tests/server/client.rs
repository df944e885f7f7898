//! Browser clients: the `client` token scope (OFREP and its change events, nothing else) and CORS
//! (on OFREP and the SDK API for the configured origins; never on the admin API), over real HTTP.

use std::sync::Arc;

use dimmer_server::config::CorsOrigins;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{TempDir, TestServer};

const PAGE: &str = "http://127.0.0.1:5173";

async fn start(cors_origins: CorsOrigins) -> TestServer {
    let dir = TempDir::new("client");
    let store =
        dimmer_store::open(None, &dir.0, Arc::new(dimmer_domain::SystemClock)).await.expect("open SQLite store");
    let options = dimmer_server::app::Options { cors_origins, ..Default::default() };
    TestServer::start_with_options(store, dir, options).await
}

async fn seed(server: &TestServer) {
    let flag = json!({"key": "new-checkout", "environments": {
        "production": {"enabled": true}, "staging": {"enabled": true}}});
    let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(flag)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

fn assert_error(status: StatusCode, body: &serde_json::Value, expected: StatusCode, what: &str) {
    assert_eq!(status, expected, "{what}: {body}");
    let error = &body["error"];
    assert!(error["code"].is_string() && error["message"].is_string(), "{what}: the one error shape: {body}");
}

#[tokio::test]
async fn a_client_token_evaluates_its_environment_and_nothing_else() {
    let server = start(CorsOrigins::default()).await;
    seed(&server).await;
    let client = server.token("web", "client", Some("production")).await;
    let context = json!({"context": {"targetingKey": "u1"}});

    // OFREP, single and bulk: 200.
    let (s, _, v) = server
        .call(Method::POST, "/ofrep/v1/evaluate/flags/new-checkout", Some(&client), Some(context.clone()), &[])
        .await;
    assert_eq!((s, &v["value"]), (StatusCode::OK, &json!(true)), "{v}");
    let (s, _, v) =
        server.call(Method::POST, "/ofrep/v1/evaluate/flags", Some(&client), Some(context.clone()), &[]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["metadata"]["environment"], "production");

    // Another environment: 403, through OFREP as anywhere.
    let (s, _, v) = server
        .call(Method::POST, "/ofrep/v1/evaluate/flags?env=staging", Some(&client), Some(context.clone()), &[])
        .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "OFREP in another environment");
    let (s, _, v) = server
        .call(Method::POST, "/ofrep/v1/evaluate/flags/new-checkout?env=staging", Some(&client), Some(context), &[])
        .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "OFREP in another environment");

    // The SDK API carries rules, segments and user keys: 403, its own environment included.
    for path in ["/api/v1/sdk/config", "/api/v1/sdk/stream", "/api/v1/sdk/config?env=production"] {
        let (s, _, v) = server.call(Method::GET, path, Some(&client), None, &[]).await;
        assert_error(s, &v, StatusCode::FORBIDDEN, path);
    }
    // No metrics ingestion.
    let (s, _, v) =
        server.call(Method::POST, "/api/v1/sdk/metrics", Some(&client), Some(json!({"metrics": []})), &[]).await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "metrics");
    // No admin API, reads and writes alike.
    for (method, path, body) in [
        (Method::GET, "/api/v1/flags", None),
        (Method::GET, "/api/v1/flags/new-checkout", None),
        (Method::GET, "/api/v1/tokens", None),
        (Method::GET, "/api/v1/segments", None),
        (Method::GET, "/api/v1/audit", None),
        (Method::GET, "/api/v1/policy", None),
        (Method::POST, "/api/v1/flags/new-checkout/environments/production/toggle", Some(json!({"enabled": false}))),
        (Method::POST, "/api/v1/flags/new-checkout/environments/production/kill", Some(json!({"reason": "x"}))),
        (Method::POST, "/api/v1/tokens", Some(json!({"name": "x", "scope": "admin"}))),
    ] {
        let (s, _, v) = server.call(method.clone(), path, Some(&client), body, &[]).await;
        assert_error(s, &v, StatusCode::FORBIDDEN, &format!("{method} {path}"));
    }
    // The flag is still on: nothing the client token tried went through.
    let (_, _, v) = server
        .call(Method::POST, "/ofrep/v1/evaluate/flags/new-checkout", Some(&client), Some(json!({"context": {}})), &[])
        .await;
    assert_eq!(v["value"], true, "{v}");
    server.stop().await;
}

#[tokio::test]
async fn client_tokens_are_bound_to_an_existing_environment_and_listed_by_scope() {
    let server = start(CorsOrigins::default()).await;
    let (s, v) = server.admin(Method::POST, "/api/v1/tokens", Some(json!({"name": "web", "scope": "client"}))).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "a client token without an environment");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("environment:"), "{v}");
    let (s, v) = server
        .admin(Method::POST, "/api/v1/tokens", Some(json!({"name": "web", "scope": "client", "environment": "nope"})))
        .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "a client token of an unknown environment");
    let (s, v) = server
        .admin(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "web", "scope": "client", "environment": "staging"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!((&v["scope"], &v["environment"]), (&json!("client"), &json!("staging")));
    let (_, v) = server.admin(Method::GET, "/api/v1/tokens", None).await;
    let web = v["tokens"].as_array().unwrap().iter().find(|t| t["name"] == "web").cloned().unwrap();
    assert_eq!((&web["scope"], &web["environment"]), (&json!("client"), &json!("staging")));
    server.stop().await;
}

/// Sends a request from a page of `origin`.
async fn from_page(
    server: &TestServer,
    method: Method,
    path: &str,
    origin: &str,
    headers: &[(&str, &str)],
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = server.http.request(method, format!("{}{path}", server.base)).header("origin", origin);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(token) = token {
        req = req.bearer_auth(token).json(&json!({"context": {"targetingKey": "u1"}}));
    }
    req.send().await.expect("request")
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

const PREFLIGHT: &[(&str, &str)] = &[
    ("access-control-request-method", "POST"),
    ("access-control-request-headers", "authorization,content-type,if-none-match"),
];

#[tokio::test]
async fn cors_answers_configured_origins_on_ofrep_and_the_sdk_api_only() {
    let server = start(CorsOrigins::Only(vec![PAGE.to_owned()])).await;
    seed(&server).await;
    let client = server.token("web", "client", Some("production")).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;

    // Preflights from the page: 204 with what OFREP providers send.
    for path in ["/ofrep/v1/evaluate/flags", "/ofrep/v1/evaluate/flags/new-checkout", "/api/v1/sdk/config"] {
        let resp = from_page(&server, Method::OPTIONS, path, PAGE, PREFLIGHT, None).await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{path}");
        assert_eq!(header(&resp, "access-control-allow-origin"), Some(PAGE), "{path}");
        let methods = header(&resp, "access-control-allow-methods").unwrap_or_default().to_ascii_lowercase();
        assert!(methods.contains("post") && methods.contains("get"), "{path}: {methods}");
        let allowed = header(&resp, "access-control-allow-headers").unwrap_or_default().to_ascii_lowercase();
        for needed in ["authorization", "content-type", "if-none-match"] {
            assert!(allowed.contains(needed), "{path}: {needed} in {allowed}");
        }
        assert!(header(&resp, "access-control-max-age").is_some(), "{path}");
    }

    // The evaluation itself: the origin allowed, the ETag readable by the page's script.
    let resp = from_page(&server, Method::POST, "/ofrep/v1/evaluate/flags", PAGE, &[], Some(&client)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(PAGE));
    assert_eq!(header(&resp, "access-control-expose-headers"), Some("ETag"));
    assert!(header(&resp, "vary").unwrap_or_default().to_ascii_lowercase().contains("origin"));
    let etag = header(&resp, "etag").expect("etag").to_owned();
    let body: serde_json::Value = resp.json().await.unwrap();
    // A 304 carries them too, or the browser hides it from the page.
    let resp =
        from_page(&server, Method::POST, "/ofrep/v1/evaluate/flags", PAGE, &[("if-none-match", &etag)], Some(&client))
            .await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(PAGE));
    // And the event stream the answer advertises (EventSource is a cross-origin GET).
    let uri = body["eventStreams"][0]["endpoint"]["requestUri"].as_str().unwrap();
    let resp = from_page(&server, Method::GET, uri, PAGE, &[], None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(PAGE));
    drop(resp);
    // The SDK API too (for sdk tokens in pages of allowed origins).
    let resp = from_page(&server, Method::GET, "/api/v1/sdk/config", PAGE, &[], None).await;
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(PAGE), "even its errors are readable");
    let mut req = server.http.get(format!("{}/api/v1/sdk/config", server.base)).header("origin", PAGE);
    req = req.bearer_auth(&sdk);
    let resp = req.send().await.unwrap();
    assert_eq!((resp.status(), header(&resp, "access-control-allow-origin")), (StatusCode::OK, Some(PAGE)));

    // Another origin: its preflight refused in the API's error shape, no CORS headers ever.
    let other = "https://evil.example";
    let resp = from_page(&server, Method::OPTIONS, "/ofrep/v1/evaluate/flags", other, PREFLIGHT, None).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "forbidden", "{v}");
    let resp = from_page(&server, Method::POST, "/ofrep/v1/evaluate/flags", other, &[], Some(&client)).await;
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
    assert!(header(&resp, "vary").unwrap_or_default().to_ascii_lowercase().contains("origin"));

    // The admin API, even from the allowed page: no CORS at all, and its preflight fails.
    for path in ["/api/v1/flags", "/api/v1/tokens", "/api/v1/flags/new-checkout/environments/production/kill"] {
        let resp = from_page(&server, Method::OPTIONS, path, PAGE, PREFLIGHT, None).await;
        assert!(!resp.status().is_success(), "{path}: a preflight to the admin API is refused: {}", resp.status());
        assert_eq!(header(&resp, "access-control-allow-origin"), None, "{path}");
    }
    let resp = server
        .http
        .get(format!("{}/api/v1/flags", server.base))
        .header("origin", PAGE)
        .bearer_auth(crate::support::ADMIN);
    let resp = resp.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
    server.stop().await;
}

#[tokio::test]
async fn without_cors_origins_no_page_may_call_and_any_origin_is_a_wildcard() {
    let closed = start(CorsOrigins::default()).await;
    let resp = from_page(&closed, Method::OPTIONS, "/ofrep/v1/evaluate/flags", PAGE, PREFLIGHT, None).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
    closed.stop().await;

    let open = start(CorsOrigins::Any).await;
    seed(&open).await;
    let client = open.token("web", "client", Some("production")).await;
    let resp =
        from_page(&open, Method::OPTIONS, "/ofrep/v1/evaluate/flags", "https://any.example", PREFLIGHT, None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
    let resp =
        from_page(&open, Method::POST, "/ofrep/v1/evaluate/flags", "https://any.example", &[], Some(&client)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&resp, "access-control-expose-headers"), Some("ETag"));
    let resp = from_page(&open, Method::OPTIONS, "/api/v1/tokens", "https://any.example", PREFLIGHT, None).await;
    assert!(!resp.status().is_success());
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
    open.stop().await;
}

/// A page's origin listed on a token (not server-wide).
const SHOP: &str = "https://shop.example";
const EVIL: &str = "https://evil.example";

async fn token_with_origins(server: &TestServer, name: &str, scope: &str, origins: &[&str]) -> String {
    let body = json!({"name": name, "scope": scope, "environment": "production", "origins": origins});
    let (s, v) = server.admin(Method::POST, "/api/v1/tokens", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["token"].as_str().expect("token").to_owned()
}

#[tokio::test]
async fn a_tokens_own_origins_open_it_to_their_pages_and_refuse_it_to_others() {
    let server = start(CorsOrigins::Only(vec![PAGE.to_owned()])).await;
    seed(&server).await;
    let shop = token_with_origins(&server, "shop", "client", &[SHOP]).await;
    let plain = server.token("plain", "client", Some("production")).await;

    // The preflight carries no token: the shop's origin is answered because a token lists it.
    let resp = from_page(&server, Method::OPTIONS, "/ofrep/v1/evaluate/flags", SHOP, PREFLIGHT, None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(SHOP));
    let resp = from_page(&server, Method::OPTIONS, "/ofrep/v1/evaluate/flags", EVIL, PREFLIGHT, None).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // The shop's token from the shop's page: answered for the page, ETag readable.
    let resp = from_page(&server, Method::POST, "/ofrep/v1/evaluate/flags", SHOP, &[], Some(&shop)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(SHOP));
    assert_eq!(header(&resp, "access-control-expose-headers"), Some("ETag"));
    assert!(header(&resp, "vary").unwrap_or_default().to_ascii_lowercase().contains("origin"));
    let body: serde_json::Value = resp.json().await.unwrap();
    // From the server-wide origin too.
    let resp = from_page(&server, Method::POST, "/ofrep/v1/evaluate/flags", PAGE, &[], Some(&shop)).await;
    assert_eq!((resp.status(), header(&resp, "access-control-allow-origin")), (StatusCode::OK, Some(PAGE)));
    // From any other origin: refused, naming the origin, and nothing the page could read.
    for path in ["/ofrep/v1/evaluate/flags", "/ofrep/v1/evaluate/flags/new-checkout"] {
        let resp = from_page(&server, Method::POST, path, EVIL, &[], Some(&shop)).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(header(&resp, "access-control-allow-origin"), None, "{path}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "forbidden", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(EVIL), "names the origin: {v}");
    }
    // The event stream opened with the shop token's ticket: the same rule.
    let uri = body["eventStreams"][0]["endpoint"]["requestUri"].as_str().unwrap().to_owned();
    let resp = from_page(&server, Method::GET, &uri, EVIL, &[], None).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
    let resp = from_page(&server, Method::GET, &uri, SHOP, &[], None).await;
    assert_eq!((resp.status(), header(&resp, "access-control-allow-origin")), (StatusCode::OK, Some(SHOP)));
    drop(resp);
    // A page served by this server itself is same-origin: not CORS's business, not refused.
    let own = server.base.clone();
    let resp = from_page(&server, Method::POST, "/ofrep/v1/evaluate/flags", &own, &[], Some(&shop)).await;
    assert_eq!((resp.status(), header(&resp, "access-control-allow-origin")), (StatusCode::OK, None));

    // A token without origins follows the server-wide list: the shop's page gets no CORS
    // headers (the browser keeps the answer from it), the configured page does.
    let resp = from_page(&server, Method::POST, "/ofrep/v1/evaluate/flags", SHOP, &[], Some(&plain)).await;
    assert_eq!((resp.status(), header(&resp, "access-control-allow-origin")), (StatusCode::OK, None));
    let resp = from_page(&server, Method::POST, "/ofrep/v1/evaluate/flags", PAGE, &[], Some(&plain)).await;
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(PAGE));

    // An sdk token with origins, on the SDK API: the same rule.
    let sdk = token_with_origins(&server, "shop-sdk", "sdk", &[SHOP]).await;
    let get = |origin: &'static str| {
        server.http.get(format!("{}/api/v1/sdk/config", server.base)).header("origin", origin).bearer_auth(&sdk).send()
    };
    let resp = get(SHOP).await.unwrap();
    assert_eq!((resp.status(), header(&resp, "access-control-allow-origin")), (StatusCode::OK, Some(SHOP)));
    let resp = get(EVIL).await.unwrap();
    assert_eq!((resp.status(), header(&resp, "access-control-allow-origin")), (StatusCode::FORBIDDEN, None));

    // Never the admin API, whatever a token lists.
    for path in ["/api/v1/flags", "/api/v1/tokens"] {
        let resp = from_page(&server, Method::OPTIONS, path, SHOP, PREFLIGHT, None).await;
        assert!(!resp.status().is_success(), "{path}: {}", resp.status());
        assert_eq!(header(&resp, "access-control-allow-origin"), None, "{path}");
    }

    // Revoked, its origins open nothing any more.
    let (s, v) = server.admin(Method::DELETE, "/api/v1/tokens/shop", None).await;
    assert!(s.is_success(), "{v}");
    let (s, v) = server.admin(Method::DELETE, "/api/v1/tokens/shop-sdk", None).await;
    assert!(s.is_success(), "{v}");
    let resp = from_page(&server, Method::OPTIONS, "/ofrep/v1/evaluate/flags", SHOP, PREFLIGHT, None).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    server.stop().await;
}

#[tokio::test]
async fn with_every_origin_allowed_server_wide_a_tokens_list_still_restricts_it() {
    let server = start(CorsOrigins::Any).await;
    seed(&server).await;
    let shop = token_with_origins(&server, "shop", "client", &[SHOP]).await;
    let plain = server.token("plain", "client", Some("production")).await;
    let resp = from_page(&server, Method::POST, "/ofrep/v1/evaluate/flags", SHOP, &[], Some(&shop)).await;
    assert_eq!((resp.status(), header(&resp, "access-control-allow-origin")), (StatusCode::OK, Some(SHOP)));
    let resp = from_page(&server, Method::POST, "/ofrep/v1/evaluate/flags", EVIL, &[], Some(&shop)).await;
    assert_eq!((resp.status(), header(&resp, "access-control-allow-origin")), (StatusCode::FORBIDDEN, None));
    let resp = from_page(&server, Method::POST, "/ofrep/v1/evaluate/flags", EVIL, &[], Some(&plain)).await;
    assert_eq!((resp.status(), header(&resp, "access-control-allow-origin")), (StatusCode::OK, Some("*")));
    server.stop().await;
}

#[tokio::test]
async fn token_origins_are_validated_normalised_listed_and_audited() {
    let server = start(CorsOrigins::default()).await;
    let create = |body: serde_json::Value| server.admin(Method::POST, "/api/v1/tokens", Some(body));
    let errors = |v: &serde_json::Value| -> Vec<String> {
        v["error"]["details"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_owned())
            .collect()
    };
    // Only sdk and client tokens are used from pages.
    let (s, v) = create(json!({"name": "ops", "scope": "admin", "origins": [SHOP]})).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "origins on an admin token");
    assert_eq!(errors(&v), ["origins"]);
    // Every bad entry, at its index: a path, a wildcard, no scheme.
    let body = json!({"name": "web", "scope": "client", "environment": "production",
        "origins": [SHOP, "https://shop.example/app", "*", "shop.example"]});
    let (s, v) = create(body).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "bad origins");
    assert_eq!(errors(&v), ["origins[1]", "origins[2]", "origins[3]"]);
    // Bounded in number and length.
    let many: Vec<String> = (0..21).map(|i| format!("https://a{i}.example")).collect();
    let (s, v) = create(json!({"name": "web", "scope": "client", "environment": "production", "origins": many})).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "too many origins");
    assert_eq!(errors(&v), ["origins"]);
    let long = format!("https://{}.example", "a".repeat(400));
    let (s, v) =
        create(json!({"name": "web", "scope": "client", "environment": "production", "origins": [long]})).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "a long origin");
    // Nothing of that was created.
    let (_, v) = server.admin(Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(v["tokens"].as_array().unwrap().len(), 1, "the admin token only: {v}");

    // Normalised to what browsers send, duplicates dropped; shown at creation and in the list.
    let body = json!({"name": "web", "scope": "client", "environment": "production",
        "origins": ["HTTPS://Shop.Example:443", SHOP, "http://localhost:5173"]});
    let (s, v) = create(body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["origins"], json!([SHOP, "http://localhost:5173"]));
    let (_, v) = server.admin(Method::GET, "/api/v1/tokens", None).await;
    let web = v["tokens"].as_array().unwrap().iter().find(|t| t["name"] == "web").cloned().unwrap();
    assert_eq!(web["origins"], json!([SHOP, "http://localhost:5173"]));
    let admin = v["tokens"].as_array().unwrap().iter().find(|t| t["name"] != "web").cloned().unwrap();
    assert_eq!(admin["origins"], json!([]));
    // Audited with its origins.
    let (_, v) = server.admin(Method::GET, "/api/v1/audit", None).await;
    let entry = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "token.create" && e["after"]["name"] == "web")
        .cloned()
        .unwrap();
    assert_eq!(entry["after"]["origins"], json!([SHOP, "http://localhost:5173"]), "{entry}");
    server.stop().await;
}
