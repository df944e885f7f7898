//! The web console over real HTTP: sign-in and its cookie, CSRF and Origin checks, scopes ruling
//! what a page offers, kills audited with the reason and the token's name, the live state
//! stream, policy errors at their field, and the page headers.

use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::{Method, StatusCode, redirect};
use serde_json::json;

use crate::support::{ADMIN, TempDir, TestServer};

/// A browser-like client that keeps the session cookie and does not follow redirects.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(server: &TestServer) -> Self {
        let http = reqwest::Client::builder().redirect(redirect::Policy::none()).build().expect("client");
        Self { http, base: server.base.clone(), cookie: None }
    }

    async fn sign_in(&mut self, token: &str, extra: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let mut req = self.http.post(format!("{}/sign-in", self.base)).form(&[("token", token)]);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("sign in");
        let (status, headers) = (resp.status(), resp.headers().clone());
        if let Some(set) = headers.get(SET_COOKIE) {
            self.cookie = set.to_str().expect("ascii").split(';').next().map(str::to_owned);
        }
        (status, headers, resp.text().await.expect("body"))
    }

    async fn get(&self, path: &str) -> (StatusCode, HeaderMap, String) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.expect("get");
        (resp.status(), resp.headers().clone(), resp.text().await.expect("body"))
    }

    async fn post(&self, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> (StatusCode, String) {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("post");
        (resp.status(), resp.text().await.expect("body"))
    }

    /// The session's CSRF token, as every page with a form carries it.
    async fn csrf(&self) -> String {
        let (_, _, html) = self.get("/").await;
        let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
        html[at..].split('"').next().expect("value").to_owned()
    }
}

async fn flag_on(server: &TestServer, key: &str) {
    let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": key, "kind": "operational"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = server
        .admin(
            Method::POST,
            &format!("/api/v1/flags/{key}/environments/staging/toggle"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_session_cookie_and_sign_out_ends_it() {
    let server = TestServer::start().await;
    let mut browser = Browser::new(&server);
    let (status, headers, _) = browser.get("/").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "not signed in: to the sign-in form");
    assert_eq!(headers["location"], "/sign-in");

    let (status, headers, _) = browser.sign_in(ADMIN, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers[SET_COOKIE].to_str().unwrap();
    for part in ["dimmer_session=", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(part), "{part} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure flag, or the browser would drop it");
    assert!(!cookie.contains(ADMIN), "the token never travels in the cookie");
    let (status, _, html) = browser.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Signed in as"), "{html}");

    let csrf = browser.csrf().await;
    let (status, _) = browser.post("/sign-out", &[("csrf", &csrf)], &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, _) = browser.get("/").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the session is gone on the server");

    let mut tls = Browser::new(&server);
    let (_, headers, _) = tls.sign_in(ADMIN, &[("x-forwarded-proto", "https")]).await;
    assert!(headers[SET_COOKIE].to_str().unwrap().contains("Secure"), "over TLS the cookie is Secure");
}

#[tokio::test]
async fn sdk_tokens_and_unknown_tokens_are_refused_at_sign_in_with_a_clear_message() {
    let server = TestServer::start().await;
    let sdk = server.token("web", "sdk", Some("production")).await;
    let mut browser = Browser::new(&server);
    let (status, headers, html) = browser.sign_in(&sdk, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get(SET_COOKIE).is_none());
    assert!(html.contains("this is a sdk token, made for applications"), "{html}");
    let (status, _, html) = browser.sign_in("dmr_nope", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("unknown or revoked token"), "{html}");
}

#[tokio::test]
async fn changes_without_the_session_csrf_token_or_from_another_origin_are_refused() {
    let server = TestServer::start().await;
    flag_on(&server, "checkout").await;
    let mut browser = Browser::new(&server);
    browser.sign_in(ADMIN, &[]).await;
    let kill = "/flags/checkout/environments/staging/kill";
    let (status, body) = browser.post(kill, &[("reason", "no csrf")], &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = browser.post(kill, &[("reason", "forged"), ("csrf", "0000")], &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let csrf = browser.csrf().await;
    let (status, _) =
        browser.post(kill, &[("reason", "cross-site"), ("csrf", &csrf)], &[("origin", "https://evil.example")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another site's page is refused even with the token");
    let (_, flag) = server.admin(Method::GET, "/api/v1/flags/checkout", None).await;
    assert_eq!(flag["environments"]["staging"]["enabled"], true, "nothing was killed");
    let (status, _) = browser.post(kill, &[("csrf", &csrf), ("reason", "  ")], &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a reason is required");
}

#[tokio::test]
async fn a_reader_sees_everything_and_no_write_control() {
    let server = TestServer::start().await;
    flag_on(&server, "checkout").await;
    let reader = server.token("rita", "reader", None).await;
    let mut browser = Browser::new(&server);
    assert_eq!(browser.sign_in(&reader, &[]).await.0, StatusCode::SEE_OTHER);
    let (status, _, html) = browser.get("/flags/checkout?env=staging").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("State in staging"), "{html}");
    for control in [">Kill<", ">Dial down<", ">Restore<", "/kill\"", "New flag"] {
        assert!(!html.contains(control), "a reader's page has no {control}");
    }
    let (status, _, _) = browser.get("/history?flag=checkout").await;
    assert_eq!(status, StatusCode::OK);
    let csrf = browser.csrf().await;
    let (status, _) =
        browser.post("/flags/checkout/environments/staging/kill", &[("csrf", &csrf), ("reason", "try")], &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "and the server refuses the change anyway");
}

#[tokio::test]
async fn a_kill_through_the_console_is_audited_with_the_reason_and_the_token_name() {
    let server = TestServer::start().await;
    flag_on(&server, "checkout").await;
    let writer = server.token("alice", "writer", None).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&writer, &[]).await;
    let (_, _, html) = browser.get("/flags/checkout?env=staging").await;
    assert!(html.contains(">Kill<") && html.contains("for=\"kill-reason\">Reason<"), "{html}");
    let csrf = browser.csrf().await;
    let (status, _) = browser
        .post(
            "/flags/checkout/environments/staging/kill",
            &[("csrf", &csrf), ("reason", "p99 doubled")],
            &[("origin", &server.base)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, flag) = server.admin(Method::GET, "/api/v1/flags/checkout", None).await;
    assert_eq!(flag["environments"]["staging"]["enabled"], false);
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit?flag=checkout", None).await;
    let entry = &audit["entries"][0];
    assert_eq!(entry["action"], "release.kill", "{audit}");
    assert_eq!(entry["actor"], "alice");
    assert_eq!(entry["reason"], "p99 doubled");
    let (_, _, history) = browser.get("/history?flag=checkout").await;
    assert!(history.contains("p99 doubled") && history.contains("release.kill"), "{history}");

    // The script's way: JSON in the API's shapes.
    let (status, body) = browser
        .post(
            "/flags/checkout/environments/staging/restore",
            &[("csrf", &csrf), ("reason", "fixed")],
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let outcome: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(outcome["enabled"], true);
    let (status, body) = browser
        .post(
            "/flags/nope/environments/staging/kill",
            &[("csrf", &csrf), ("reason", "x")],
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "not_found");
}

#[tokio::test]
async fn the_live_state_stream_sends_the_new_state_after_a_kill() {
    let server = TestServer::start().await;
    flag_on(&server, "checkout").await;
    let mut browser = Browser::new(&server);
    browser.sign_in(ADMIN, &[]).await;
    let resp = browser
        .http
        .get(format!("{}/flags/checkout/environments/staging/events", server.base))
        .header("cookie", browser.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = Box::pin(resp.bytes_stream());
    let mut text = String::new();
    use futures::StreamExt;
    while !text.contains("\"enabled\":true") {
        text.push_str(&String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()));
    }
    server
        .call(
            Method::POST,
            "/api/v1/flags/checkout/environments/staging/kill",
            Some(ADMIN),
            Some(json!({"reason": "r"})),
            &[],
        )
        .await;
    while !text.contains("\"enabled\":false") {
        text.push_str(&String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()));
    }
    assert!(text.contains("event: state"), "{text}");
}

#[tokio::test]
async fn creating_a_flag_shows_errors_at_the_field_they_name_then_creates_it() {
    let server = TestServer::start().await;
    let mut browser = Browser::new(&server);
    browser.sign_in(ADMIN, &[]).await;
    let csrf = browser.csrf().await;
    let form = [("csrf", csrf.as_str()), ("key", "bad key"), ("kind", "release"), ("owner", "team-a")];
    let (status, html) = browser.post("/new-flag", &form, &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("id=\"key-error\""), "the error sits at the key field: {html}");
    assert!(html.contains("value=\"team-a\""), "what was typed is kept");
    let form = [("csrf", csrf.as_str()), ("key", "good-key"), ("kind", "release"), ("owner", "team-a")];
    let (status, _) = browser.post("/new-flag", &form, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, html) = browser.post("/new-flag", &form, &[]).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(html.contains("id=\"key-error\""), "a taken key is a key error: {html}");
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit?flag=good-key", None).await;
    assert_eq!(audit["entries"][0]["actor"], "admin");
}

#[tokio::test]
async fn the_list_searches_filters_and_pages_on_the_server() {
    let server = TestServer::start().await;
    for i in 0..120 {
        let body = json!({"key": format!("flag-{i:03}"), "kind": "release", "owner": if i % 2 == 0 { "team-even" } else { "team-odd" }});
        assert_eq!(server.admin(Method::POST, "/api/v1/flags", Some(body)).await.0, StatusCode::CREATED);
    }
    let mut browser = Browser::new(&server);
    browser.sign_in(ADMIN, &[]).await;
    let (_, _, html) = browser.get("/flags").await;
    assert!(html.contains("120 of 120 flags · page 1 of 3"), "{html}");
    assert!(html.contains("flag-049") && !html.contains("flag-050"));
    let (_, _, html) = browser.get("/flags?q=team-odd&page=2").await;
    assert!(html.contains("60 of 120 flags · page 2 of 2"), "{html}");
    let (_, _, html) = browser.get("/flags?env=production&state=on").await;
    assert!(html.contains("0 of 120 flags"), "{html}");
    let (_, _, html) = browser.get("/flags?sort=key&page=3").await;
    assert!(html.contains("flag-119"));
}

/// The rows of the list's table: one string per flag row, from its key to its last change.
fn list_rows(html: &str) -> Vec<&str> {
    html.split("<tr>").skip(2).map(|row| row.split("</tr>").next().unwrap_or_default()).collect()
}

#[tokio::test]
async fn the_list_searches_every_field_filters_by_kind_state_and_archived_and_sorts() {
    let server = TestServer::start().await;
    let flags = [
        json!({"key": "alpha", "kind": "release", "owner": "payments", "description": "New Checkout flow", "tags": ["Web"]}),
        json!({"key": "beta", "kind": "experiment", "owner": "growth", "tags": ["pricing-test"]}),
        json!({"key": "gamma", "kind": "kill-switch", "description": "Stops emails"}),
    ];
    for body in flags {
        assert_eq!(server.admin(Method::POST, "/api/v1/flags", Some(body)).await.0, StatusCode::CREATED);
    }
    let toggle = |key: &str, env: &str, on: bool| {
        let path = format!("/api/v1/flags/{key}/environments/{env}/toggle");
        let server = &server;
        async move { assert_eq!(server.admin(Method::POST, &path, Some(json!({"enabled": on}))).await.0, StatusCode::OK) }
    };
    toggle("alpha", "production", true).await;
    toggle("gamma", "staging", true).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(ADMIN, &[]).await;
    let keys = |html: &str| -> Vec<String> {
        list_rows(html)
            .iter()
            .filter_map(|r| r.split("<a href=\"/flags/").nth(1)?.split('"').next().map(str::to_owned))
            .collect()
    };
    let shown = |path: &'static str| {
        let browser = &browser;
        async move { keys(&browser.get(path).await.2) }
    };
    // Search: key, description, owner and tag, ignoring case.
    assert_eq!(shown("/flags?q=ALP").await, ["alpha"]);
    assert_eq!(shown("/flags?q=checkout").await, ["alpha"]);
    assert_eq!(shown("/flags?q=growth").await, ["beta"]);
    assert_eq!(shown("/flags?q=PRICING").await, ["beta"]);
    assert_eq!(shown("/flags?q=nowhere").await, Vec::<String>::new());
    // Filters, alone and together; an unknown kind matches nothing.
    assert_eq!(shown("/flags?kind=experiment").await, ["beta"]);
    assert_eq!(shown("/flags?kind=no-such-kind").await, Vec::<String>::new());
    assert_eq!(shown("/flags?env=production&state=on").await, ["alpha"]);
    assert_eq!(shown("/flags?env=production&state=off").await, ["beta", "gamma"]);
    assert_eq!(shown("/flags?env=staging&state=on&kind=kill-switch").await, ["gamma"]);
    // Sorting: by owner (none first), by kind, by last change (newest first).
    assert_eq!(shown("/flags?sort=owner").await, ["gamma", "beta", "alpha"]);
    assert_eq!(shown("/flags?sort=kind").await, ["beta", "gamma", "alpha"]);
    assert_eq!(shown("/flags?sort=updated").await[0], "gamma");

    // The list follows every change made after it was first shown: a new description, a toggle,
    // an archive, a new environment and a flag switched on there alone.
    let (s, _, v) = server
        .call(
            Method::PUT,
            "/api/v1/flags/beta",
            Some(ADMIN),
            Some(json!({"kind": "experiment", "description": "Annual plan price"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(shown("/flags?q=annual").await, ["beta"]);
    toggle("alpha", "production", false).await;
    assert_eq!(shown("/flags?env=production&state=on").await, Vec::<String>::new());
    let (s, v) = server.admin(Method::POST, "/api/v1/flags/gamma/archive", Some(json!({}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(shown("/flags").await, ["alpha", "beta"]);
    assert_eq!(shown("/flags?archived=only").await, ["gamma"]);
    assert_eq!(shown("/flags?archived=include").await, ["alpha", "beta", "gamma"]);
    let (s, v) = server.admin(Method::POST, "/api/v1/environments", Some(json!({"name": "qa"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    toggle("beta", "qa", true).await;
    let (_, _, html) = browser.get("/flags?env=qa&state=on").await;
    assert_eq!(keys(&html), ["beta"]);
    assert!(html.contains("<th scope=\"col\">qa</th>"), "the new environment has its column: {html}");
    assert!(html.contains("1 of 3 flags"), "{html}");
}

#[tokio::test]
async fn the_list_of_one_postgres_replica_shows_changes_made_through_another() {
    use dimmer_store::testing::PgSchema;

    let Some(pg) = PgSchema::new() else { return };
    let one = TestServer::start_with(pg.store().await.expect("store"), TempDir::new("replica-one")).await;
    let two = TestServer::start_with(pg.store().await.expect("store"), TempDir::new("replica-two")).await;
    flag_on(&one, "shared").await;
    let mut browser = Browser::new(&one);
    browser.sign_in(ADMIN, &[]).await;
    let (_, _, html) = browser.get("/flags?env=staging&state=on").await;
    assert!(html.contains("1 of 1 flags"), "{html}");
    // Written through the other replica: the first one's list must not keep what it showed.
    let (s, v) = two
        .admin(Method::POST, "/api/v1/flags/shared/environments/staging/toggle", Some(json!({"enabled": false})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    flag_on(&two, "second").await;
    let (_, _, html) = browser.get("/flags?env=staging&state=on").await;
    assert!(html.contains("1 of 2 flags") && html.contains("second") && !html.contains("/flags/shared\""), "{html}");
    one.stop().await;
    two.stop().await;
    pg.drop_schema().await;
}

#[tokio::test]
async fn console_pages_carry_a_strict_content_security_policy_and_serve_their_assets() {
    let server = TestServer::start().await;
    let browser = Browser::new(&server);
    let (status, headers, html) = browser.get("/sign-in").await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(html.contains("<label for=\"token\">API token</label>"), "{html}");
    assert!(!html.contains("<script>"), "no inline script");
    let (status, headers, js) = browser.get("/assets/console.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(js.contains("EventSource"));
    let (status, _, _) = browser.get("/api/v1/flags").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the API is still the API");
}

#[tokio::test]
async fn revoking_the_token_ends_its_console_sessions() {
    let server = TestServer::start().await;
    let writer = server.token("alice", "writer", None).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&writer, &[]).await;
    assert_eq!(browser.get("/").await.0, StatusCode::OK);
    let (s, v) = server.admin(Method::DELETE, "/api/v1/tokens/alice", None).await;
    assert!(s.is_success(), "{v}");
    let (status, headers, _) = browser.get("/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/sign-in");
}

/// The value of the hidden input `name` in a page's form.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html.find(&marker).unwrap_or_else(|| panic!("a {name} field in {html}")) + marker.len();
    html[at..].split('"').next().expect("value").replace("&quot;", "\"").replace("&amp;", "&")
}

#[tokio::test]
async fn editing_targeting_saves_through_the_api_checks_and_is_audited() {
    let server = TestServer::start().await;
    flag_on(&server, "checkout").await;
    let writer = server.token("alice", "writer", None).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&writer, &[]).await;
    let (_, _, page) = browser.get("/flags/checkout?env=staging").await;
    assert!(page.contains("Edit targeting in staging"), "{page}");
    let (status, _, form) = browser.get("/flags/checkout/environments/staging/edit").await;
    assert_eq!(status, StatusCode::OK);
    assert!(form.contains("<label for=\"f-off_variant\">Off variant</label>"), "{form}");
    let csrf = hidden(&form, "csrf");
    let version = hidden(&form, "version");
    let base = hidden(&form, "base");

    // Without script, "Add a rule" posts the form back and it returns with an empty rule.
    let (status, html) = browser
        .post(
            "/flags/checkout/environments/staging/edit",
            &[("csrf", &csrf), ("version", &version), ("base", &base), ("enabled", "on"), ("add", "rule")],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("name=\"rules[0].clauses[0].attribute\""), "{html}");

    // A rule serving a variant the flag does not have: the engine's error at the rule's input.
    let rule = |serve: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("version", version.clone()),
            ("base", base.clone()),
            ("enabled", "on".to_owned()),
            ("targets.on", "vip-1\nvip-2".to_owned()),
            ("rules[0].id", "pro-users".to_owned()),
            ("rules[0].clauses[0].attribute", "plan".to_owned()),
            ("rules[0].clauses[0].op", "in".to_owned()),
            ("rules[0].clauses[0].values", "pro\nteam".to_owned()),
            ("rules[0].serve", serve.to_owned()),
            ("default", "off".to_owned()),
            ("reason", "pro plans first".to_owned()),
        ]
    };
    let as_refs = |v: &Vec<(&'static str, String)>| v.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    let bad = as_refs(&rule("maybe"));
    let bad: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, html) = browser.post("/flags/checkout/environments/staging/edit", &bad, &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"f-rules-0--serve-error\""), "the error sits at the rule's Serves input: {html}");
    assert!(html.contains("aria-describedby=\"f-rules-0--serve-error\""), "{html}");
    assert!(html.contains("value=\"pro-users\""), "what was typed is kept");
    let (_, flag) = server.admin(Method::GET, "/api/v1/flags/checkout", None).await;
    assert!(flag["environments"]["staging"].get("rules").is_none(), "nothing saved: {flag}");

    let good = as_refs(&rule("on"));
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, html) = browser.post("/flags/checkout/environments/staging/edit", &good, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let (_, flag) = server.admin(Method::GET, "/api/v1/flags/checkout", None).await;
    let staging = &flag["environments"]["staging"];
    assert_eq!(staging["targets"]["on"], json!(["vip-1", "vip-2"]), "{flag}");
    assert_eq!(staging["rules"][0]["clauses"][0], json!({"attribute": "plan", "op": "in", "values": ["pro", "team"]}));
    assert_eq!(staging["rules"][0]["serve"], json!({"variant": "on"}));
    assert_eq!(staging["default"], json!({"variant": "off"}));
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit?flag=checkout", None).await;
    assert_eq!(audit["entries"][0]["actor"], "alice", "{audit}");
    assert_eq!(audit["entries"][0]["reason"], "pro plans first");

    // A reader may not open the editor.
    let reader = server.token("rita", "reader", None).await;
    let mut other = Browser::new(&server);
    other.sign_in(&reader, &[]).await;
    let (_, _, page) = other.get("/flags/checkout?env=staging").await;
    assert!(!page.contains("Edit targeting"), "{page}");
    assert_eq!(other.get("/flags/checkout/environments/staging/edit").await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_stale_edit_is_not_written_and_shows_what_changed_meanwhile() {
    let server = TestServer::start().await;
    flag_on(&server, "checkout").await;
    let mut browser = Browser::new(&server);
    browser.sign_in(ADMIN, &[]).await;
    let (_, _, form) = browser.get("/flags/checkout/environments/staging/edit").await;
    let (csrf, version, base) = (hidden(&form, "csrf"), hidden(&form, "version"), hidden(&form, "base"));

    // Someone else changes the targets meanwhile, through the API.
    let (_, current) = server.admin(Method::GET, "/api/v1/flags/checkout", None).await;
    let (s, _, v) = server
        .call(
            Method::PUT,
            "/api/v1/flags/checkout/environments/staging",
            Some(ADMIN),
            Some(json!({"enabled": true, "targets": {"off": ["bob"]}, "reason": "bob opted out"})),
            &[("if-match", &current["version"].to_string())],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let mine = [
        ("csrf", csrf.as_str()),
        ("version", version.as_str()),
        ("base", base.as_str()),
        ("enabled", "on"),
        ("targets.on", "carol"),
        ("targets.off", ""),
    ];
    let (status, html) = browser.post("/flags/checkout/environments/staging/edit", &mine, &[]).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{html}");
    assert!(html.contains("Changed meanwhile: your edit was not saved"), "{html}");
    assert!(html.contains("<h3>Their change</h3>") && html.contains("targets.off[0]"), "their diff: {html}");
    assert!(
        html.contains("<ins>&quot;bob&quot;</ins>") && html.contains("<ins>&quot;carol&quot;</ins>"),
        "both: {html}"
    );
    assert!(html.contains("bob opted out"), "who changed it and why: {html}");
    assert!(html.contains(">carol</textarea>"), "the edit is kept in the form");
    let (_, flag) = server.admin(Method::GET, "/api/v1/flags/checkout", None).await;
    assert_eq!(flag["environments"]["staging"]["targets"], json!({"off": ["bob"]}), "theirs stands: {flag}");

    // Saving over it is a deliberate second step, against the version now shown.
    let (new_version, new_base) = (hidden(&html, "version"), hidden(&html, "base"));
    assert_ne!(new_version, version);
    let over = [
        ("csrf", csrf.as_str()),
        ("version", new_version.as_str()),
        ("base", new_base.as_str()),
        ("enabled", "on"),
        ("targets.on", "carol"),
        ("targets.off", "bob"),
    ];
    let (status, _) = browser.post("/flags/checkout/environments/staging/edit", &over, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, flag) = server.admin(Method::GET, "/api/v1/flags/checkout", None).await;
    assert_eq!(flag["environments"]["staging"]["targets"], json!({"on": ["carol"], "off": ["bob"]}));
}

#[tokio::test]
async fn reverting_to_a_version_from_the_history_is_a_new_audited_change() {
    let server = TestServer::start().await;
    flag_on(&server, "checkout").await;
    let (_, current) = server.admin(Method::GET, "/api/v1/flags/checkout", None).await;
    let (s, _, v) = server
        .call(
            Method::PUT,
            "/api/v1/flags/checkout/environments/staging",
            Some(ADMIN),
            Some(json!({"enabled": true, "default": {"variant": "off"}, "reason": "a mistake"})),
            &[("if-match", &current["version"].to_string())],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let writer = server.token("alice", "writer", None).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&writer, &[]).await;
    let (_, _, history) = browser.get("/history?flag=checkout").await;
    let link = history
        .split("href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|h| h.contains("/revert?") && h.contains("side=before"))
        .unwrap_or_else(|| panic!("a revert link in {history}"))
        .replace("&amp;", "&");
    assert!(history.contains("Revert staging to before this change"), "{history}");
    let (status, _, page) = browser.get(&link).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("<code>default.variant</code>"), "what the revert changes: {page}");
    let (csrf, version) = (hidden(&page, "csrf"), hidden(&page, "version"));

    let (status, html) = browser.post(&link, &[("csrf", &csrf), ("version", &version), ("reason", "")], &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a reason is required: {html}");
    let stale = (version.parse::<i64>().unwrap() - 1).to_string();
    let (status, html) = browser.post(&link, &[("csrf", &csrf), ("version", &stale), ("reason", "undo")], &[]).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "a stale revert changes nothing: {html}");
    let (status, _) = browser.post(&link, &[("csrf", &csrf), ("version", &version), ("reason", "undo")], &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, flag) = server.admin(Method::GET, "/api/v1/flags/checkout", None).await;
    assert!(flag["environments"]["staging"].get("default").is_none(), "{flag}");
    assert_eq!(flag["environments"]["staging"]["enabled"], true);
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit?flag=checkout", None).await;
    let entry = &audit["entries"][0];
    assert_eq!(entry["actor"], "alice", "{audit}");
    assert!(entry["reason"].as_str().unwrap().ends_with("undo"), "{entry}");
}

#[tokio::test]
async fn a_guarded_plan_starts_from_the_console_with_errors_at_their_fields() {
    let server = TestServer::start().await;
    let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "checkout", "kind": "release"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let writer = server.token("alice", "writer", None).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&writer, &[]).await;
    let (_, _, page) = browser.get("/flags/checkout?env=staging").await;
    assert!(page.contains("Start a release plan in staging"), "{page}");
    let (status, _, form) = browser.get("/flags/checkout/environments/staging/start-plan").await;
    assert_eq!(status, StatusCode::OK, "{form}");
    assert!(form.contains("<option value=\"standard\""), "the built-in templates are offered: {form}");
    let csrf = hidden(&form, "csrf");
    let path = "/flags/checkout/environments/staging/start-plan";

    // A guard metric the domain does not know, in the second row: the error sits there.
    let bad = [
        ("csrf", csrf.as_str()),
        ("template", "custom"),
        ("stages", "10%,50%,100%"),
        ("dwell", "30m"),
        ("guards[1].name", "errors"),
        ("guards[1].metric", "bogus"),
        ("guards[1].max", "0.25"),
        ("reason", "ship it"),
    ];
    let (status, html) = browser.post(path, &bad, &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"f-guards-1--metric-error\""), "at the second row's metric: {html}");
    assert!(html.contains("value=\"10%,50%,100%\""), "what was typed is kept");
    assert_eq!(
        server.admin(Method::GET, "/api/v1/flags/checkout/environments/staging/plan", None).await.0,
        StatusCode::NOT_FOUND
    );

    let bad_stages = [("csrf", csrf.as_str()), ("template", "custom"), ("stages", "10%,5%"), ("reason", "ship it")];
    let (status, html) = browser.post(path, &bad_stages, &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"f-stages-error\""), "{html}");

    let good = [
        ("csrf", csrf.as_str()),
        ("template", "custom"),
        ("stages", "10%,50%,100%"),
        ("dwell", "30m"),
        ("guards[0].name", "errors"),
        ("guards[0].metric", "error_rate"),
        ("guards[0].compare", "relative"),
        ("guards[0].max", "0.25"),
        ("guards[0].action", "rollback"),
        ("reason", "ship it"),
    ];
    let (status, html) = browser.post(path, &good, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let (s, plan) = server.admin(Method::GET, "/api/v1/flags/checkout/environments/staging/plan", None).await;
    assert_eq!(s, StatusCode::OK, "{plan}");
    assert_eq!(plan["status"], "running");
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit?flag=checkout", None).await;
    let entry = &audit["entries"][0];
    assert_eq!(
        (entry["action"].as_str(), entry["actor"].as_str(), entry["reason"].as_str()),
        (Some("plan.start"), Some("alice"), Some("ship it")),
        "{audit}"
    );
    let (_, _, page) = browser.get("/flags/checkout?env=staging").await;
    assert!(page.contains("What the guards say"), "the guarded plan's findings are shown: {page}");
    assert!(!page.contains("Start a release plan in staging"), "not while one runs");
}

#[tokio::test]
async fn outcomes_show_per_variant_as_server_drawn_charts_with_kills_marked_on_the_axis() {
    let server = TestServer::start().await;
    flag_on(&server, "checkout").await;
    let sdk = server.token("svc", "sdk", Some("staging")).await;
    let sketch = |values: &[f64]| dimmer_protocol::LatencySketch::of(values.iter().copied());
    let batch = json!({"sdk": "test/1", "metrics": [
        {"flag": "checkout", "variant": "on", "evaluations": 200, "errors": 4, "successes": 196, "latency": sketch(&[10.0, 20.0, 30.0]),
         "events": {"purchase": {"count": 12, "sum": 240.0}}},
        {"flag": "checkout", "variant": "off", "evaluations": 100, "errors": 1, "successes": 99, "latency": sketch(&[12.0])},
    ]});
    let (s, _, v) = server.call(Method::POST, "/api/v1/sdk/metrics", Some(&sdk), Some(batch), &[]).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (s, _, v) = server
        .call(
            Method::POST,
            "/api/v1/flags/checkout/environments/staging/kill",
            Some(ADMIN),
            Some(json!({"reason": "errors up"})),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let reader = server.token("rita", "reader", None).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&reader, &[]).await;
    let (status, _, html) = browser.get("/flags/checkout?env=staging&window=15m").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("<tr data-variant=\"on\"><th scope=\"row\">on</th><td>200</td><td>4</td><td>2.00%</td>"),
        "{html}"
    );
    assert!(html.contains("purchase: 12"), "events per variant: {html}");
    assert!(html.contains("<polyline") && html.contains("data-variant=\"off\""), "a line per variant: {html}");
    assert!(html.contains("class=\"mark\"") && html.contains("release.kill by admin"), "the kill on the axis: {html}");
    assert!(html.contains("<option value=\"15m\" selected>"), "the chosen window: {html}");

    // The fragment the page's script refreshes.
    let resp = browser
        .http
        .get(format!("{}/flags/checkout/environments/staging/metrics?window=1h", server.base))
        .header("cookie", browser.cookie.clone().unwrap())
        .header("x-fragment", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let fragment = resp.text().await.unwrap();
    assert!(fragment.starts_with("<section"), "{fragment}");
    assert!(fragment.contains("<td>200</td>"));
}

#[tokio::test]
async fn an_admin_creates_a_token_shown_once_lists_and_revokes_it_and_sees_policy_templates_and_environments() {
    let server = TestServer::start().await;
    let mut browser = Browser::new(&server);
    browser.sign_in(ADMIN, &[]).await;
    let csrf = browser.csrf().await;
    let (status, html) = browser
        .post(
            "/tokens",
            &[("csrf", &csrf), ("name", "web-shop"), ("scope", "sdk"), ("environment", ""), ("reason", "")],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "an sdk token needs an environment: {html}");
    assert!(html.contains("environment: an sdk token is bound to one environment"), "{html}");
    let (status, html) = browser
        .post(
            "/tokens",
            &[("csrf", &csrf), ("name", "web-shop"), ("scope", "sdk"), ("environment", "staging"), ("reason", "shop")],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{html}");
    let marker = "id=\"new-token\" readonly value=\"";
    let at = html.find(marker).unwrap_or_else(|| panic!("the new token in {html}")) + marker.len();
    let token = html[at..].split('"').next().unwrap().to_owned();
    assert!(token.starts_with("dmr_"), "shown once: {token}");
    let (_, _, list) = browser.get("/tokens").await;
    assert!(list.contains("web-shop") && !list.contains(&token), "listed, never shown again");
    let (status, _) = browser.post("/tokens/web-shop/revoke", &[("csrf", &csrf)], &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (s, _, _) = server.call(Method::GET, "/api/v1/sdk/config", Some(&token), None, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "revoked at once");
    let (_, audit) = server.admin(Method::GET, "/api/v1/audit?actor=admin", None).await;
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"token.create") && actions.contains(&"token.revoke"), "{audit}");

    for (path, text) in [
        ("/policy", "Effective policy"),
        ("/templates", "standard"),
        ("/environments", "production"),
        ("/segments", "Segments"),
    ] {
        let (status, _, html) = browser.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(html.contains(text), "{path}: {html}");
    }
    // Tokens are for admins only.
    let reader = server.token("rita", "reader", None).await;
    let mut other = Browser::new(&server);
    other.sign_in(&reader, &[]).await;
    assert_eq!(other.get("/tokens").await.0, StatusCode::FORBIDDEN);
    let (_, _, page) = other.get("/policy").await;
    assert!(!page.contains("href=\"/tokens\""), "{page}");
}

#[tokio::test]
async fn several_flags_are_archived_at_once_each_with_its_own_audit_entry() {
    let server = TestServer::start().await;
    for key in ["old-banner", "old-search", "keep-me"] {
        let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": key, "kind": "release"}))).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let writer = server.token("alice", "writer", None).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&writer, &[]).await;
    let (_, _, list) = browser.get("/flags").await;
    assert!(list.contains("aria-label=\"Select old-banner\"") && list.contains(">Archive selected<"), "{list}");
    let csrf = browser.csrf().await;
    let (status, html) =
        browser.post("/flags/archive", &[("csrf", &csrf), ("key", "old-banner"), ("reason", "")], &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a reason is required: {html}");
    let form = [("csrf", csrf.as_str()), ("key", "old-banner"), ("key", "old-search"), ("reason", "launched long ago")];
    let (status, _) = browser.post("/flags/archive", &form, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, _, list) = browser.get("/flags?archived_done=2").await;
    assert!(list.contains("Archived 2 flags.") && list.contains("1 of 3 flags"), "{list}");
    for key in ["old-banner", "old-search"] {
        let (_, flag) = server.admin(Method::GET, &format!("/api/v1/flags/{key}"), None).await;
        assert_eq!(flag["archived"], true, "{flag}");
        let (_, audit) = server.admin(Method::GET, &format!("/api/v1/audit?flag={key}"), None).await;
        let entry = &audit["entries"][0];
        assert_eq!(
            (entry["action"].as_str(), entry["actor"].as_str()),
            (Some("flag.archive"), Some("alice")),
            "{audit}"
        );
        assert_eq!(entry["reason"], "launched long ago");
    }
    let (_, flag) = server.admin(Method::GET, "/api/v1/flags/keep-me", None).await;
    assert_eq!(flag["archived"], false);

    let reader = server.token("rita", "reader", None).await;
    let mut other = Browser::new(&server);
    other.sign_in(&reader, &[]).await;
    let (_, _, list) = other.get("/flags").await;
    assert!(!list.contains("Archive selected"), "{list}");
    let csrf = other.csrf().await;
    let form = [("csrf", csrf.as_str()), ("key", "keep-me"), ("reason", "x")];
    assert_eq!(other.post("/flags/archive", &form, &[]).await.0, StatusCode::FORBIDDEN);
}

/// The form pairs as `reqwest` takes them.
fn refs<'a>(pairs: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The newest audit entry by `actor` with `action`.
async fn audited(server: &TestServer, actor: &str, action: &str) -> serde_json::Value {
    let (_, audit) = server.admin(Method::GET, &format!("/api/v1/audit?actor={actor}"), None).await;
    audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == action)
        .cloned()
        .unwrap_or_else(|| panic!("no {action} by {actor} in {audit}"))
}

#[tokio::test]
async fn segments_are_created_edited_and_deleted_through_the_api_checks_with_errors_at_their_fields() {
    let server = TestServer::start().await;
    let writer = server.token("sam", "writer", None).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&writer, &[]).await;
    let (_, _, list) = browser.get("/segments").await;
    assert!(list.contains("href=\"/new-segment\""), "{list}");
    let (status, _, form) = browser.get("/new-segment").await;
    assert_eq!(status, StatusCode::OK);
    let csrf = hidden(&form, "csrf");

    // "Add a rule" posts the form back and it returns with an empty clause.
    let (status, html) = browser.post("/new-segment", &[("csrf", &csrf), ("key", "beta"), ("add", "rule")], &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("name=\"rules[0].clauses[0].attribute\""), "{html}");

    // A bad key and a clause without an attribute: each error at its input, nothing created.
    let create = |key: &str, attribute: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("key", key.to_owned()),
            ("description", "Beta testers".to_owned()),
            ("included", "alice\nbob".to_owned()),
            ("rules[0].clauses[0].attribute", attribute.to_owned()),
            ("rules[0].clauses[0].op", "in".to_owned()),
            ("rules[0].clauses[0].values", "pro".to_owned()),
            ("reason", "beta programme".to_owned()),
        ]
    };
    let bad = create("Beta Testers", "plan");
    let (status, html) = browser.post("/new-segment", &refs(&bad), &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"f-key-error\""), "the key's error at the key: {html}");
    assert!(html.contains("aria-describedby=\"f-key-error\""), "{html}");
    let bad = create("beta", "");
    let (status, html) = browser.post("/new-segment", &refs(&bad), &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"f-rules-0--clauses-0--attribute-error\""), "at the clause's attribute: {html}");
    assert!(html.contains("needs an attribute"), "{html}");
    assert!(html.contains("alice\nbob"), "what was typed is kept");
    let (s, _) = server.admin(Method::GET, "/api/v1/segments/beta", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing created");

    let good = create("beta", "plan");
    let (status, html) = browser.post("/new-segment", &refs(&good), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let (_, seg) = server.admin(Method::GET, "/api/v1/segments/beta", None).await;
    assert_eq!(seg["included"], json!(["alice", "bob"]), "{seg}");
    assert_eq!(seg["rules"][0]["clauses"][0], json!({"attribute": "plan", "op": "in", "values": ["pro"]}));
    let entry = audited(&server, "sam", "segment.create").await;
    assert_eq!(entry["reason"], "beta programme", "{entry}");

    // Edit at version 1; meanwhile the API changes it: the save is refused and both sides shown.
    let (_, _, form) = browser.get("/segments/beta").await;
    let (version, base) = (hidden(&form, "version"), hidden(&form, "base"));
    let edit = |version: &str, base: &str, excluded: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("version", version.to_owned()),
            ("base", base.to_owned()),
            ("description", "Beta testers".to_owned()),
            ("included", "alice\nbob".to_owned()),
            ("excluded", excluded.to_owned()),
            ("rules[0].clauses[0].attribute", "plan".to_owned()),
            ("rules[0].clauses[0].op", "in".to_owned()),
            ("rules[0].clauses[0].values", "pro".to_owned()),
            ("reason", "no bots".to_owned()),
        ]
    };
    let (s, _, v) = server
        .call(
            Method::PUT,
            "/api/v1/segments/beta",
            Some(ADMIN),
            Some(json!({"description": "Beta", "included": ["carol"]})),
            &[("if-match", "1")],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let stale = edit(&version, &base, "bot-1");
    let (status, html) = browser.post("/segments/beta", &refs(&stale), &[]).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{html}");
    assert!(html.contains("Changed meanwhile") && html.contains("included[0]"), "{html}");
    let (_, seg) = server.admin(Method::GET, "/api/v1/segments/beta", None).await;
    assert_eq!(seg["included"], json!(["carol"]), "theirs stands");
    let over = edit(&hidden(&html, "version"), &hidden(&html, "base"), "bot-1");
    let (status, html) = browser.post("/segments/beta", &refs(&over), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let (_, seg) = server.admin(Method::GET, "/api/v1/segments/beta", None).await;
    assert_eq!(seg["excluded"], json!(["bot-1"]), "{seg}");
    assert_eq!(audited(&server, "sam", "segment.update").await["reason"], "no bots");

    // A flag uses it: listed as a user, and the delete is refused with the API's reason.
    let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "beta-ui", "kind": "release"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _, v) = server
        .call(
            Method::PUT,
            "/api/v1/flags/beta-ui/environments/staging",
            Some(ADMIN),
            Some(json!({"enabled": true, "rules": [{"clauses": [{"op": "in_segment", "values": ["beta"]}], "serve": {"variant": "on"}}]})),
            &[("if-match", "1")],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, _, list) = browser.get("/segments").await;
    assert!(list.contains("href=\"/flags/beta-ui\""), "its users are listed: {list}");
    let (_, _, page) = browser.get("/segments/beta").await;
    let version = hidden(&page, "version");
    let (status, html) =
        browser.post("/segments/beta/delete", &[("csrf", &csrf), ("version", &version), ("reason", "done")], &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("is used by flags: beta-ui"), "{html}");

    // Unused, it goes, audited.
    let (s, _, _) = server
        .call(
            Method::PUT,
            "/api/v1/flags/beta-ui/environments/staging",
            Some(ADMIN),
            Some(json!({"enabled": true})),
            &[("if-match", "2")],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (status, html) =
        browser.post("/segments/beta/delete", &[("csrf", &csrf), ("version", &version), ("reason", "done")], &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert_eq!(server.admin(Method::GET, "/api/v1/segments/beta", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(audited(&server, "sam", "segment.delete").await["reason"], "done");
}

#[tokio::test]
async fn a_reader_sees_segments_and_variants_without_write_controls_and_is_refused_changes() {
    let server = TestServer::start().await;
    flag_on(&server, "checkout").await;
    let (s, v) = server
        .admin(Method::POST, "/api/v1/segments", Some(json!({"key": "staff", "included": ["ann"], "rules": [{"clauses": [{"attribute": "email", "op": "ends_with", "values": ["@example.com"]}]}]})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let reader = server.token("rita", "reader", None).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&reader, &[]).await;
    let (status, _, list) = browser.get("/segments").await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains("href=\"/segments/staff\"") && !list.contains("New segment"), "{list}");
    let (status, _, page) = browser.get("/segments/staff").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("@example.com") && page.contains("ann"), "{page}");
    assert!(!page.contains("action=\"/segments/staff"), "no write form: {page}");
    let (_, _, flag) = browser.get("/flags/checkout?env=staging").await;
    assert!(!flag.contains("Edit variants"), "{flag}");
    assert_eq!(browser.get("/new-segment").await.0, StatusCode::FORBIDDEN);
    assert_eq!(browser.get("/flags/checkout/variants").await.0, StatusCode::FORBIDDEN);
    let csrf = browser.csrf().await;
    let (status, _) =
        browser.post("/segments/staff", &[("csrf", &csrf), ("version", "1"), ("included", "me")], &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = browser.post("/segments/staff/delete", &[("csrf", &csrf), ("version", "1")], &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = browser
        .post("/flags/checkout/variants", &[("csrf", &csrf), ("version", "2"), ("variants[0].key", "x")], &[])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A writer without the session's CSRF token is refused too.
    let writer = server.token("sam", "writer", None).await;
    let mut other = Browser::new(&server);
    other.sign_in(&writer, &[]).await;
    let (status, _) = other.post("/segments/staff", &[("version", "1"), ("included", "me")], &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, seg) = server.admin(Method::GET, "/api/v1/segments/staff", None).await;
    assert_eq!(seg["included"], json!(["ann"]), "nothing changed");
}

#[tokio::test]
async fn variants_are_edited_through_the_flag_update_and_a_served_one_cannot_go() {
    let server = TestServer::start().await;
    flag_on(&server, "checkout").await;
    let writer = server.token("vic", "writer", None).await;
    let mut browser = Browser::new(&server);
    browser.sign_in(&writer, &[]).await;
    let (_, _, page) = browser.get("/flags/checkout?env=staging").await;
    assert!(page.contains("href=\"/flags/checkout/variants\""), "{page}");
    let (status, _, form) = browser.get("/flags/checkout/variants").await;
    assert_eq!(status, StatusCode::OK);
    let (csrf, version, base) = (hidden(&form, "csrf"), hidden(&form, "version"), hidden(&form, "base"));
    let (status, html) = browser
        .post("/flags/checkout/variants", &[("csrf", &csrf), ("version", &version), ("add", "variant")], &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("name=\"variants[0].key\""), "{html}");

    let rows = |version: &str, base: &str, third: (&str, &str, &str), remove_third: bool| {
        let mut v = vec![
            ("csrf", csrf.clone()),
            ("version", version.to_owned()),
            ("base", base.to_owned()),
            ("variants[0].key", "on".to_owned()),
            ("variants[0].value", "true".to_owned()),
            ("variants[0].was", "on".to_owned()),
            ("variants[1].key", "off".to_owned()),
            ("variants[1].value", "false".to_owned()),
            ("variants[1].was", "off".to_owned()),
            ("variants[2].key", third.0.to_owned()),
            ("variants[2].value", third.1.to_owned()),
            ("variants[2].was", third.2.to_owned()),
            ("reason", "a third way".to_owned()),
        ];
        if remove_third {
            v.push(("variants[2].remove", "on".to_owned()));
        }
        v
    };
    // A value the form cannot read: at its input, nothing saved.
    let bad = rows(&version, &base, ("beta", "", ""), false);
    let (status, html) = browser.post("/flags/checkout/variants", &refs(&bad), &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"f-variants-2--value-error\""), "{html}");
    let good = rows(&version, &base, ("beta", "true", ""), false);
    let (status, html) = browser.post("/flags/checkout/variants", &refs(&good), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let (_, flag) = server.admin(Method::GET, "/api/v1/flags/checkout", None).await;
    assert_eq!(flag["variants"], json!({"on": true, "off": false, "beta": true}), "{flag}");
    assert_eq!(audited(&server, "vic", "flag.update").await["reason"], "a third way");

    // Targeting serves beta: removing it, or renaming it, is the engine's error at its row.
    let v = flag["version"].as_i64().unwrap();
    let (s, _, body) = server
        .call(
            Method::PUT,
            "/api/v1/flags/checkout/environments/staging",
            Some(ADMIN),
            Some(json!({"enabled": true, "default": {"variant": "beta"}})),
            &[("if-match", &v.to_string())],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (_, _, form) = browser.get("/flags/checkout/variants").await;
    let (version, base) = (hidden(&form, "version"), hidden(&form, "base"));
    for (third, remove) in [(("beta", "true", "beta"), true), (("gamma", "true", "beta"), false)] {
        let gone = rows(&version, &base, third, remove);
        let (status, html) = browser.post("/flags/checkout/variants", &refs(&gone), &[]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
        assert!(html.contains("id=\"f-variants-2--key-error\""), "at the row that dropped it: {html}");
        assert!(html.contains("unknown variant &quot;beta&quot;"), "{html}");
    }
    let (_, flag) = server.admin(Method::GET, "/api/v1/flags/checkout", None).await;
    assert_eq!(flag["variants"]["beta"], true, "nothing saved");

    // A stale form is not written.
    let stale = rows(&(v - 1).to_string(), &base, ("beta", "\"b\"", "beta"), false);
    let (status, html) = browser.post("/flags/checkout/variants", &refs(&stale), &[]).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{html}");
    assert!(html.contains("Changed meanwhile") && html.contains("Save over the current version"), "{html}");
    let (_, flag) = server.admin(Method::GET, "/api/v1/flags/checkout", None).await;
    assert_eq!(flag["variants"]["beta"], true, "nothing saved");
}
