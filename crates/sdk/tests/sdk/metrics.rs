//! Outcome metrics sent to a stand-in intake: counted per flag and variant, batched, kept
//! through server errors, dropped (and counted) when refused, flushed at close.

use std::time::Duration;

use dimmer_sdk::{Client, Context, Outcome};
use serde_json::json;

use super::fake::Fake;

async fn client_of(fake: &Fake) -> Client {
    Client::builder(&fake.base, "t")
        .streaming(false)
        .poll_interval(Duration::from_secs(3600))
        .metrics_flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap()
}

fn flags() -> serde_json::Value {
    json!({"flags": {"checkout": {"environments": {"production": {"enabled": true}}}}})
}

#[tokio::test]
async fn evaluations_outcomes_and_events_arrive_per_variant() {
    let fake = Fake::start(flags()).await;
    let client = client_of(&fake).await;
    client.wait_ready(Duration::from_secs(10)).await.unwrap();
    let ctx = Context::with_key("u");
    for _ in 0..5 {
        assert!(client.bool_value("checkout", &ctx, false));
    }
    let d = client.bool_details("checkout", &ctx, false);
    client.start_timer(&d).success();
    let _ = client.measure(&d, || Err::<(), _>("boom"));
    client.record_outcome(&d, Outcome::Success, Some(Duration::from_millis(12)));
    client.track(&d, "conversion", Some(19.5));
    client.flush_metrics().await;

    let batches = fake.state.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].sdk.as_deref(), Some("dimmer-rust/0.1.0"));
    let e = &batches[0].metrics[0];
    assert_eq!((e.flag.as_str(), e.variant.as_str()), ("checkout", "on"));
    assert_eq!((e.evaluations, e.successes, e.errors), (6, 2, 1));
    assert_eq!(e.latency.as_ref().map(|l| l.count()), Some(3));
    assert_eq!(e.events["conversion"].count, 1);
    let stats = client.metrics_stats();
    assert_eq!((stats.batches_sent, stats.entries_sent, stats.pending_entries), (1, 1, 0));
    client.close().await;
}

#[tokio::test]
async fn a_server_error_keeps_the_batch_and_a_refusal_drops_it() {
    let fake = Fake::start(flags()).await;
    let client = client_of(&fake).await;
    client.wait_ready(Duration::from_secs(10)).await.unwrap();
    let ctx = Context::with_key("u");
    fake.state.metric_statuses.lock().unwrap().extend([503, 202, 422]);

    client.bool_value("checkout", &ctx, false);
    client.flush_metrics().await; // 503: kept
    assert_eq!(client.metrics_stats().pending_entries, 1);
    client.bool_value("checkout", &ctx, false);
    client.flush_metrics().await; // 202: both evaluations, merged into one entry
    let sent = fake.state.batches.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].metrics[0].evaluations, 2);

    client.bool_value("checkout", &ctx, false);
    client.flush_metrics().await; // 422: dropped, not retried
    let stats = client.metrics_stats();
    assert_eq!((stats.send_failures, stats.batches_rejected, stats.dropped, stats.pending_entries), (1, 1, 1, 0));
    client.close().await;
}

#[tokio::test]
async fn close_flushes_what_is_left() {
    let fake = Fake::start(flags()).await;
    let client = client_of(&fake).await;
    client.wait_ready(Duration::from_secs(10)).await.unwrap();
    client.bool_value("checkout", &Context::with_key("u"), false);
    client.close().await;
    assert_eq!(fake.state.batches.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unreachable_server_keeps_a_bounded_aggregate_and_counts_drops() {
    let client = Client::builder("http://127.0.0.1:9", "t")
        .bootstrap_file(super::contract_flags())
        .max_pending_metrics(2)
        .metrics_flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let ctx = Context::with_key("u");
    for key in ["boolean-flag", "string-flag", "integer-flag"] {
        let d = client.json_details(key, &ctx, json!(null));
        client.record_outcome(&d, Outcome::Success, None);
    }
    client.flush_metrics().await;
    let stats = client.metrics_stats();
    // Two pairs fit; the third pair's evaluation and its outcome are each dropped and counted.
    assert_eq!(stats.pending_entries, 2, "{stats:?}");
    assert!(stats.dropped >= 1, "{stats:?}");
    assert!(stats.send_failures >= 1);
    client.close().await;
}
