//! Bounds at the edge, end to end: rate limits per token and per address (429 with
//! `Retry-After`, refilled by the manual clock), the request time limit (408) that leaves streams
//! alone, `/metrics` behind a token when configured, and failed sign-ins in the log without the
//! token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dimmer_domain::ManualClock;
use dimmer_server::app::Options;
use dimmer_server::service::limits::{Rate, RateLimits};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{ADMIN, SseClient, TempDir, TestServer};

async fn server_with(clock: &Arc<ManualClock>, options: Options) -> TestServer {
    let dir = TempDir::new("limits");
    let store = dimmer_store::open(None, &dir.0, clock.clone()).await.expect("sqlite");
    TestServer::start_with_options(store, dir, Options { clock: clock.clone(), ..options }).await
}

/// Sends requests until one is refused; returns how many passed and the refusal.
async fn flood(server: &TestServer, method: Method, path: &str, token: Option<&str>) -> (usize, reqwest::Response) {
    for passed in 0..1000 {
        let mut req = server.http.request(method.clone(), format!("{}{path}", server.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if method == Method::POST {
            req = req.json(&json!({"context": {"targetingKey": "u"}}));
        }
        let resp = req.send().await.unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            return (passed, resp);
        }
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }
    panic!("{path}: never limited");
}

async fn refusal(resp: reqwest::Response) -> (u64, serde_json::Value) {
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    (retry, resp.json().await.unwrap())
}

#[tokio::test]
async fn a_flood_gets_429_with_retry_after_per_token_and_per_address_until_the_clock_moves_on() {
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let limits = RateLimits {
        per_token: Some(Rate { per_second: 2.0, burst: 5.0 }),
        per_address: Some(Rate { per_second: 10.0, burst: 40.0 }),
    };
    let server = server_with(&clock, Options { rate_limits: limits, ..crate::support::options() }).await;
    let (s, _) = server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "f"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let sdk = server.token("svc", "sdk", Some("production")).await;

    // The token's burst, then 429 with Retry-After, in the error shape.
    let (passed, resp) = flood(&server, Method::GET, "/api/v1/sdk/config", Some(&sdk)).await;
    assert_eq!(passed, 5);
    let (retry, body) = refusal(resp).await;
    assert_eq!(retry, 1);
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["message"].as_str().unwrap().contains("this token"), "{body}");
    // OFREP's routes answer the same, as the protocol specifies.
    let (passed, resp) = flood(&server, Method::POST, "/ofrep/v1/evaluate/flags/f", Some(&sdk)).await;
    assert_eq!(passed, 0);
    assert_eq!(refusal(resp).await.0, 1);
    // Another token has a bucket of its own.
    let (s, _) = server.admin(Method::GET, "/api/v1/flags", None).await;
    assert_eq!(s, StatusCode::OK);

    // The address's limit holds whatever the token (or without one).
    let (_, resp) = flood(&server, Method::GET, "/healthz", None).await;
    let (retry, body) = refusal(resp).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("this address"), "{body}");
    assert_eq!(retry, 1);
    let (s, _) = server.admin(Method::GET, "/api/v1/flags", None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);

    // Time moves on (the injected clock, not a sleep): requests pass again.
    clock.advance_ms(1000 * retry as i64);
    let (s, _, v) = server.call(Method::GET, "/api/v1/sdk/config", Some(&sdk), None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = server.admin(Method::GET, "/api/v1/flags", None).await;
    assert_eq!(s, StatusCode::OK);
    // Refusals are counted by route and status like every other answer.
    let text = server.http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"dimmer_http_requests_total{method="GET",route="/api/v1/sdk/config",status="429"} 1"#));
    server.stop().await;
}

/// A log sink for one test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

// One thread: the server's tasks run on it too, so the subscriber set here hears them.
#[tokio::test(flavor = "current_thread")]
async fn failed_sign_ins_are_logged_with_the_address_and_a_hash_prefix_never_the_token() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt().with_writer(logs.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = TestServer::start().await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let (s, _) = server.admin(Method::DELETE, "/api/v1/tokens/svc", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let unknown = "dmr_an-unknown-token-that-must-not-be-logged";
    for token in [unknown, sdk.as_str()] {
        let (s, _, _) = server.call(Method::GET, "/api/v1/sdk/config", Some(token), None, &[]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    server.stop().await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for token in [unknown, sdk.as_str()] {
        let prefix = &dimmer_server::service::tokens::hash_token(token)[..8];
        let line =
            text.lines().find(|l| l.contains(prefix)).unwrap_or_else(|| panic!("no warning for {prefix}: {text}"));
        assert!(line.contains("WARN") && line.contains("sign-in failed") && line.contains("127.0.0.1"), "{line}");
    }
    assert!(!text.contains(unknown) && !text.contains(&sdk) && !text.contains(ADMIN), "a token was logged: {text}");
}

#[tokio::test]
async fn a_slow_request_gets_408_in_the_error_shape_and_changes_nothing_while_streams_live_on() {
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let options = Options { request_timeout: Some(Duration::from_millis(300)), ..crate::support::options() };
    let server = server_with(&clock, options).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let mut stream = SseClient::connect(&server, &sdk, None).await;
    assert_eq!(stream.next(5).await.expect("snapshot").event, "snapshot");

    // A body that never finishes arriving: the server answers 408 instead of waiting forever.
    let address = server.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /api/v1/flags HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"key\": \"slow\""
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("}}") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed without an answer: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: serde_json::Value = serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout");
    let (_, flags) = server.admin(Method::GET, "/api/v1/flags", None).await;
    assert_eq!(flags["flags"], json!([]), "nothing was created: {flags}");

    // The stream outlived the time limit and still carries changes.
    let (s, _) = server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "after"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let patch = stream.next(5).await.expect("a patch after the time limit passed");
    assert_eq!(patch.event, "patch");
    assert!(patch.data.contains("after"), "{}", patch.data);
    server.stop().await;
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let server = server_with(&clock, Options { metrics_token_required: true, ..crate::support::options() }).await;
    let (s, _, v) = server.call(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let (s, _, v) = server.call(Method::GET, "/metrics", Some(&sdk), None, &[]).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let reader = server.token("prometheus", "reader", None).await;
    let (s, _, v) = server.call(Method::GET, "/metrics", Some(&reader), None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.as_str().unwrap().contains("dimmer_http_requests_total"));
    // Health and readiness stay open for probes.
    let (s, _, _) = server.call(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    server.stop().await;
}
