//! Keeping current against a stand-in server: snapshot then stream, patches, listeners,
//! `Last-Event-ID` on reconnection, ETag polling when the stream is unavailable, the cache.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dimmer_sdk::{Client, Context, Source};
use serde_json::json;

use super::fake::{Fake, eventually};
use super::scratch;

fn on(enabled: bool) -> serde_json::Value {
    json!({"environments": {"production": {"enabled": enabled}}})
}

#[tokio::test]
async fn a_streamed_change_reaches_getters_listeners_and_the_cache() {
    let fake = Fake::start(json!({"flags": {"checkout": on(false)}})).await;
    let cache = scratch("stream-cache").join("flags.json");
    let client = Client::builder(&fake.base, "t").cache_path(&cache).metrics(false).build().unwrap();
    client.wait_ready(Duration::from_secs(10)).await.unwrap();
    let ctx = Context::with_key("u");
    assert!(!client.bool_value("checkout", &ctx, true));

    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = heard.clone();
    client.on_change(|_| panic!("a broken listener must not stop the others"));
    client.on_change(move |e| h.lock().unwrap().push((e.revision, e.flags_changed.clone())));
    let mut changes = client.subscribe();
    // The stream is open once the stand-in has seen it.
    eventually("the stream", || fake.state.streams.load(Ordering::Relaxed) > 0).await;
    fake.change("checkout", on(true));
    let event = tokio::time::timeout(Duration::from_secs(10), changes.recv()).await.unwrap().unwrap();
    assert_eq!((event.revision, event.flags_changed.as_slice()), (2, ["checkout".to_owned()].as_slice()));
    assert!(client.bool_value("checkout", &ctx, false));
    assert_eq!(heard.lock().unwrap().as_slice(), [(2, vec!["checkout".to_owned()])]);
    // The stream resumed from the initial snapshot's revision.
    assert_eq!(fake.state.last_event_ids.lock().unwrap()[0].as_deref(), Some("1"));

    eventually("the cache file", || std::fs::read_to_string(&cache).is_ok_and(|s| s.contains("\"revision\":2"))).await;
    client.close().await;
}

#[tokio::test]
async fn without_a_stream_the_client_polls_with_its_etag() {
    let fake = Fake::start(json!({"flags": {"checkout": on(false)}})).await;
    fake.state.stream_enabled.store(false, Ordering::Relaxed);
    let client = Client::builder(&fake.base, "t")
        .metrics(false)
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    client.wait_ready(Duration::from_secs(10)).await.unwrap();
    eventually("a 304", || fake.state.not_modified.load(Ordering::Relaxed) > 0).await;
    fake.change("checkout", on(true));
    eventually("the polled change", || client.bool_value("checkout", &Context::with_key("u"), false)).await;
    assert_eq!(client.status().source, Source::Server);
    client.close().await;
}

#[tokio::test]
async fn streaming_off_means_polling_only() {
    let fake = Fake::start(json!({"flags": {}})).await;
    let client = Client::builder(&fake.base, "t")
        .metrics(false)
        .streaming(false)
        .poll_interval(Duration::from_millis(10))
        .build()
        .unwrap();
    eventually("several polls", || fake.state.polls.load(Ordering::Relaxed) >= 3).await;
    assert_eq!(fake.state.streams.load(Ordering::Relaxed), 0);
    client.close().await;
}
