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
    server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "a"}))).await;
    server.admin(Method::POST, "/api/v1/flags", Some(json!({"key": "b"}))).await;
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
