//! The SDK stream over real HTTP: a snapshot on connect, one patch per change with the revision
//! as the event id, and `Last-Event-ID` resuming with only the missed changes.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{SseClient, TestServer};

#[tokio::test]
async fn stream_sends_a_snapshot_then_one_patch_per_change() {
    let server = TestServer::start().await;
    server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "f"}))).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let mut sse = SseClient::connect(&server, &sdk, None).await;
    let first = sse.next(5).await.expect("snapshot");
    assert_eq!(first.event, "snapshot");
    let snapshot: Value = serde_json::from_str(&first.data).unwrap();
    assert!(snapshot["flags"]["flags"]["f"].is_object(), "{snapshot}");
    let rev: i64 = first.id.clone().unwrap().parse().unwrap();

    server.admin(Method::POST, "/api/v1/flags/f/environments/production/toggle", Some(json!({"enabled": true}))).await;
    let patch = sse.next(5).await.expect("patch after toggle");
    assert_eq!(patch.event, "patch");
    let patch_rev: i64 = patch.id.clone().unwrap().parse().unwrap();
    assert!(patch_rev > rev);
    let data: Value = serde_json::from_str(&patch.data).unwrap();
    assert_eq!(data["flags"]["f"]["environments"]["production"]["enabled"], true, "{data}");
    server.stop().await;
}

#[tokio::test]
async fn last_event_id_resumes_with_only_the_missed_changes() {
    let server = TestServer::start().await;
    // Enough flags that two missed changes weigh less than a whole snapshot.
    for key in ["a", "b", "c", "d", "e", "f"] {
        server
            .admin(Method::POST, "/api/v1/flags", Some(json!({"key": key, "description": "a flag of the test"})))
            .await;
    }
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let mut sse = SseClient::connect(&server, &sdk, None).await;
    let seen = sse.next(5).await.expect("snapshot").id.expect("id");
    drop(sse);

    // Two changes while disconnected.
    server.admin(Method::POST, "/api/v1/flags/a/environments/production/toggle", Some(json!({"enabled": true}))).await;
    server.admin(Method::POST, "/api/v1/flags/b/environments/production/toggle", Some(json!({"enabled": true}))).await;

    let mut sse = SseClient::connect(&server, &sdk, Some(&seen)).await;
    let mut changed = Vec::new();
    while let Some(event) = sse.next(2).await {
        assert_eq!(event.event, "patch", "a resume within the feed sends patches, not a snapshot");
        let data: Value = serde_json::from_str(&event.data).unwrap();
        changed.extend(data["flags"].as_object().unwrap().keys().cloned());
        if changed.len() >= 2 {
            break;
        }
    }
    assert_eq!(changed, vec!["a".to_owned(), "b".to_owned()]);

    // An id from the future (another database) gets a fresh snapshot.
    let mut sse = SseClient::connect(&server, &sdk, Some("999999")).await;
    assert_eq!(sse.next(5).await.expect("event").event, "snapshot");
    server.stop().await;
}

#[tokio::test]
async fn two_replicas_on_postgres_stream_each_others_changes_within_a_second() {
    let Some(pg) = dimmer_store::testing::PgSchema::new() else { return };
    let one =
        TestServer::start_with(pg.store().await.expect("postgres store"), crate::support::TempDir::new("replica-one"))
            .await;
    let two =
        TestServer::start_with(pg.store().await.expect("postgres store"), crate::support::TempDir::new("replica-two"))
            .await;
    let (status, v) = one.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "shared"}))).await;
    assert_eq!(status.as_u16(), 201, "{v}");
    let sdk = one.token("svc", "sdk", Some("production")).await;

    // Subscribed to replica two; the write goes through replica one.
    let mut sse = SseClient::connect(&two, &sdk, None).await;
    assert_eq!(sse.next(5).await.expect("snapshot").event, "snapshot");
    one.admin(Method::POST, "/api/v1/flags/shared/environments/production/toggle", Some(json!({"enabled": true})))
        .await;
    let written = std::time::Instant::now();
    let patch = sse.next(1).await.expect("replica two streamed replica one's change within a second");
    assert_eq!(patch.event, "patch");
    assert!(written.elapsed() < std::time::Duration::from_secs(1));
    let data: Value = serde_json::from_str(&patch.data).unwrap();
    assert_eq!(data["flags"]["shared"]["environments"]["production"]["enabled"], true);
    one.stop().await;
    two.stop().await;
    pg.drop_schema().await;
}

#[tokio::test]
async fn shutdown_closes_streams_cleanly_with_a_final_event() {
    let server = TestServer::start().await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let mut sse = SseClient::connect(&server, &sdk, None).await;
    assert_eq!(sse.next(5).await.expect("snapshot").event, "snapshot");
    let stopping = tokio::spawn(server.stop());
    let last = sse.next(5).await.expect("a final event before the stream closes");
    assert_eq!(last.event, "shutdown");
    assert!(sse.next(5).await.is_none(), "the stream ends after the shutdown event");
    tokio::time::timeout(std::time::Duration::from_secs(5), stopping)
        .await
        .expect("the server stops once its streams are closed")
        .expect("stop task");
}

#[tokio::test]
async fn a_resume_that_would_replay_more_than_a_snapshot_gets_the_snapshot() {
    let server = TestServer::start().await;
    server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "a"}))).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let mut sse = SseClient::connect(&server, &sdk, None).await;
    let seen = sse.next(5).await.expect("snapshot").id.expect("id");
    drop(sse);
    for enabled in [true, false, true, false, true, false] {
        let path = "/api/v1/flags/a/environments/production/toggle";
        server.admin(Method::POST, path, Some(json!({"enabled": enabled}))).await;
    }
    let mut sse = SseClient::connect(&server, &sdk, Some(&seen)).await;
    let event = sse.next(5).await.expect("event");
    assert_eq!(event.event, "snapshot", "six patches of the same flag weigh more than the snapshot");
    let snapshot: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(snapshot["flags"]["flags"]["a"]["environments"]["production"]["enabled"], false);
    server.stop().await;
}

/// A flag with production targeting (a user key, a rule on a production-only segment) and a
/// development configuration of its own.
async fn production_secrets(server: &TestServer) {
    let (s, v) = server
        .admin(
            Method::POST,
            "/api/v1/segments",
            Some(json!({"key": "prod-customers", "included": ["prod-customer-42"]})),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{v}");
    let flag = json!({"key": "checkout", "environments": {
        "production": {"enabled": true, "targets": {"on": ["vip-prod-user"]},
            "rules": [{"clauses": [{"op": "in_segment", "values": ["prod-customers"]}], "serve": {"variant": "on"}}]},
        "development": {"enabled": true}
    }});
    let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(flag)).await;
    assert_eq!(s.as_u16(), 201, "{v}");
}

/// A resource as read, without the bookkeeping the API adds around the definition.
fn definition(read: &Value) -> Value {
    let mut v = read.clone();
    for field in ["key", "version", "archived", "created_at", "updated_at"] {
        v.as_object_mut().unwrap().remove(field);
    }
    v
}

fn assert_no_production_targeting(what: &str, text: &str) {
    for secret in ["vip-prod-user", "prod-customer-42", "prod-customers", "\"production\""] {
        assert!(!text.contains(secret), "{what} shows {secret} to a development token: {text}");
    }
}

#[tokio::test]
async fn a_development_sdk_token_sees_no_production_targeting_in_config_stream_or_ofrep() {
    let server = TestServer::start().await;
    production_secrets(&server).await;
    let dev = server.token("dev-app", "sdk", Some("development")).await;

    let (s, _, config) = server.call(Method::GET, "/api/v1/sdk/config", Some(&dev), None, &[]).await;
    assert_eq!(s.as_u16(), 200);
    assert_no_production_targeting("the snapshot", &config.to_string());
    assert_eq!(config["flags"]["flags"]["checkout"]["environments"]["development"]["enabled"], true);

    let mut sse = SseClient::connect(&server, &dev, None).await;
    let first = sse.next(5).await.expect("snapshot");
    assert_no_production_targeting("the stream's snapshot", &first.data);

    let body = json!({"context": {"targetingKey": "vip-prod-user"}});
    let (s, _, bulk) = server.call(Method::POST, "/ofrep/v1/evaluate/flags", Some(&dev), Some(body), &[]).await;
    assert_eq!(s.as_u16(), 200, "{bulk}");
    assert_no_production_targeting("OFREP", &bulk.to_string());

    // A flag-wide change reaches development, still without production's configuration.
    let (s, _, flag) = server.call(Method::GET, "/api/v1/flags/checkout", Some(crate::support::ADMIN), None, &[]).await;
    assert_eq!(s.as_u16(), 200, "{flag}");
    let mut edited = definition(&flag);
    edited["description"] = json!("now with a description");
    let version = flag["version"].to_string();
    let (s, _, v) = server
        .call(
            Method::PUT,
            "/api/v1/flags/checkout",
            Some(crate::support::ADMIN),
            Some(edited),
            &[("if-match", &version)],
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    let patch = sse.next(5).await.expect("patch");
    assert_eq!(patch.event, "patch");
    assert_no_production_targeting("the patch", &patch.data);
    server.stop().await;
}

#[tokio::test]
async fn a_production_change_sends_nothing_to_development_streams() {
    let server = TestServer::start().await;
    production_secrets(&server).await;
    let dev = server.token("dev-app", "sdk", Some("development")).await;
    let mut sse = SseClient::connect(&server, &dev, None).await;
    let first = sse.next(5).await.expect("snapshot");
    let dev_revision: i64 = first.id.unwrap().parse().unwrap();

    // Production moves: a toggle, a segment it alone uses.
    let toggle = "/api/v1/flags/checkout/environments/production/toggle";
    server.admin(Method::POST, toggle, Some(json!({"enabled": false}))).await;
    let (s, _, segment) =
        server.call(Method::GET, "/api/v1/segments/prod-customers", Some(crate::support::ADMIN), None, &[]).await;
    assert_eq!(s.as_u16(), 200, "{segment}");
    let mut edited = definition(&segment);
    edited["included"] = json!(["prod-customer-42", "prod-customer-43"]);
    let version = segment["version"].to_string();
    let (s, _, v) = server
        .call(
            Method::PUT,
            "/api/v1/segments/prod-customers",
            Some(crate::support::ADMIN),
            Some(edited),
            &[("if-match", &version)],
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");

    // Then development moves once. Events arrive in order, so the next event the development
    // stream gets is this change, at the next revision: the production changes sent nothing.
    server
        .admin(Method::POST, "/api/v1/flags/checkout/environments/development/toggle", Some(json!({"enabled": false})))
        .await;
    let next = sse.next(5).await.expect("development's own change");
    assert_eq!(next.event, "patch");
    assert_eq!(
        next.id.unwrap().parse::<i64>().unwrap(),
        dev_revision + 1,
        "development's revisions move for development only"
    );
    let data: Value = serde_json::from_str(&next.data).unwrap();
    assert_eq!(data["flags"]["checkout"]["environments"]["development"]["enabled"], false);
    assert_no_production_targeting("the patch", &next.data);
    server.stop().await;
}

/// Reads raw bytes from a stream until `n` complete frames (blocks ending in a blank line,
/// heartbeat comments left out) have arrived; returns them as sent.
async fn raw_frames(resp: reqwest::Response, n: usize) -> (Vec<Vec<u8>>, reqwest::Response) {
    let mut resp = resp;
    let mut buffer: Vec<u8> = Vec::new();
    let mut frames = Vec::new();
    while frames.len() < n {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), resp.chunk())
            .await
            .expect("a frame within 5 s")
            .expect("stream")
            .expect("stream still open");
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buffer.drain(..end + 2).collect();
            if !frame.starts_with(b":") {
                frames.push(frame);
            }
        }
    }
    (frames, resp)
}

#[tokio::test]
async fn every_subscriber_of_an_environment_receives_byte_identical_frames() {
    let server = TestServer::start().await;
    for key in ["a", "b"] {
        let (s, v) = server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": key}))).await;
        assert_eq!(s.as_u16(), 201, "{v}");
    }
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let open = || server.http.get(format!("{}/api/v1/sdk/stream", server.base)).bearer_auth(&sdk).send();
    let mut subscribers = Vec::new();
    for _ in 0..4 {
        let resp = open().await.expect("stream");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let (frames, resp) = raw_frames(resp, 1).await;
        subscribers.push((frames, resp));
    }
    // Two changes: a toggle and a kill, each one patch.
    server.admin(Method::POST, "/api/v1/flags/a/environments/production/toggle", Some(json!({"enabled": true}))).await;
    let kill = "/api/v1/flags/a/environments/production/kill";
    let (s, _, v) =
        server.call(Method::POST, kill, Some(crate::support::ADMIN), None, &[("X-Dimmer-Reason", "test")]).await;
    assert_eq!(s.as_u16(), 200, "{v}");
    let mut received = Vec::new();
    for (mut frames, resp) in subscribers {
        let (more, _resp) = raw_frames(resp, 2).await;
        frames.extend(more);
        received.push(frames);
    }
    let first = &received[0];
    assert!(first[0].starts_with(b"event: snapshot\n"), "{}", String::from_utf8_lossy(&first[0]));
    assert!(first[1].starts_with(b"event: patch\n") && first[2].starts_with(b"event: patch\n"));
    let kill: Value =
        serde_json::from_slice(first[2].split(|b| *b == b'\n').nth(2).unwrap().strip_prefix(b"data: ").unwrap())
            .unwrap();
    assert_eq!(kill["flags"]["a"]["environments"]["production"]["enabled"], false, "{kill}");
    for (i, frames) in received.iter().enumerate() {
        assert_eq!(frames, first, "subscriber {i} received other bytes than subscriber 0");
    }
    // A late subscriber gets the same snapshot bytes as a GET of the configuration.
    let (late, _resp) = raw_frames(open().await.expect("stream"), 1).await;
    let config = server.http.get(format!("{}/api/v1/sdk/config", server.base)).bearer_auth(&sdk).send().await.unwrap();
    let body = config.bytes().await.unwrap();
    let data = late[0].split(|b| *b == b'\n').nth(2).unwrap().strip_prefix(b"data: ").unwrap();
    assert_eq!(data, &body[..]);
    server.stop().await;
}

/// Sends `head` on a fresh connection and returns everything the server wrote until it closed.
async fn raw_exchange(server: &TestServer, head: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = server.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_stream_request_with_a_body_or_a_broken_head_is_refused_with_400() {
    let server = TestServer::start().await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    for head in [
        format!(
            "GET /api/v1/sdk/stream HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {sdk}\r\ncontent-length: 5\r\n\r\nhello"
        ),
        "GET /api/v1/sdk/stream HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n".to_owned(),
    ] {
        let answer = raw_exchange(&server, &head).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    }
    // A refusal by the API itself keeps its JSON error shape on this path too.
    let answer = raw_exchange(&server, "GET /api/v1/sdk/stream HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_goes_away_is_noticed_without_a_write() {
    let server = TestServer::start().await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let gauge = |server: &TestServer| {
        let request = server.http.get(format!("{}/metrics", server.base));
        async move {
            let text = request.send().await.unwrap().text().await.unwrap();
            text.lines().find_map(|l| l.strip_prefix("dimmer_sse_connections ")).unwrap_or("").to_owned()
        }
    };
    let mut client = SseClient::connect(&server, &sdk, None).await;
    assert_eq!(client.next(10).await.expect("snapshot").event, "snapshot");
    assert_eq!(gauge(&server).await, "1");
    drop(client);
    // Nothing is sent to the stream: the server sees the connection close by itself.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while gauge(&server).await != "0" {
        assert!(tokio::time::Instant::now() < deadline, "the closed stream is still counted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.stop().await;
}
