//! The client without a server: typed getters and their reasons, defaults when nothing is
//! known, bootstrap and cache files, listeners, and a client whose server never answers.

use std::time::Duration;

use dimmer_sdk::{Client, Context, ErrorCode, Reason, Source};
use serde_json::json;

use super::{contract_flags, offline_client, scratch};

#[test]
fn typed_getters_serve_values_and_details() {
    let c = offline_client();
    let ctx = Context::with_key("user-1");
    assert!(c.bool_value("boolean-flag", &ctx, false));
    assert_eq!(c.string_value("string-flag", &ctx, "bye"), "hi");
    assert_eq!(c.int_value("integer-flag", &ctx, 1), 10);
    assert_eq!(c.number_value("float-flag", &ctx, 0.1), 0.5);
    assert_eq!(c.json_value("object-flag", &ctx, json!({}))["imagesPerPage"], 100);
    let d = c.string_details("string-flag", &ctx, "bye");
    assert_eq!((d.variant.as_deref(), d.reason, d.error_code), (Some("greeting"), Reason::Static, None));
    assert_eq!((d.revision, d.environment.as_deref()), (Some(0), Some("production")));
}

#[test]
fn each_evaluation_draws_its_own_random_number_for_random_bucketing() {
    // Unleash's flexibleRollout with `default` stickiness at 100%, and a 50/50 `$random` coin.
    let flags = serde_json::from_value(json!({"flags": {
        "anonymous-ok": {"environments": {"production": {
            "enabled": true,
            "rules": [{"gate": {"weight": 100, "total": 100, "bucket_by": ["userId", "sessionId", "$random"]}, "serve": {"variant": "on"}}],
            "default": {"variant": "off"}
        }}},
        "coin": {"environments": {"production": {
            "enabled": true,
            "default": {"rollout": {"bucket_by": "$random", "variants": [{"variant": "on", "weight": 50000}, {"variant": "off", "weight": 50000}]}}
        }}}
    }}))
    .unwrap();
    let snapshot = dimmer_sdk::Snapshot { environment: "production".into(), revision: 1, flags };
    let c = Client::builder("http://127.0.0.1:9", "unused").offline(true).bootstrap(snapshot).build().unwrap();
    let anonymous = Context::new();
    let d = c.bool_details("anonymous-ok", &anonymous, false);
    assert_eq!((d.value, d.reason, d.error_code), (true, Reason::TargetingMatch, None), "{d:?}");
    let heads = (0..2_000).filter(|_| c.bool_value("coin", &anonymous, false)).count();
    // Binomial(2000, 0.5): 1000 ± 22; ±150 is almost 7 standard deviations.
    assert!((850..=1150).contains(&heads), "{heads} of 2000 evaluations got \"on\"");
    // A number set on the context wins: the same answer every time.
    let pinned = Context::new().with_random(7);
    let first = c.bool_value("coin", &pinned, false);
    assert!((0..50).all(|_| c.bool_value("coin", &pinned, !first) == first));
}

#[test]
fn defaults_come_with_a_reason() {
    let c = offline_client();
    let ctx = Context::new();
    let d = c.bool_details("no-such-flag", &ctx, true);
    assert_eq!((d.value, d.reason, d.error_code), (true, Reason::Error, Some(ErrorCode::FlagNotFound)));
    let d = c.int_details("string-flag", &ctx, 7);
    assert_eq!((d.value, d.reason, d.error_code, d.variant), (7, Reason::Error, Some(ErrorCode::TypeMismatch), None));

    let empty = Client::builder("http://127.0.0.1:9", "t").offline(true).build().unwrap();
    let d = empty.bool_details("boolean-flag", &ctx, true);
    assert_eq!((d.value, d.error_code), (true, Some(ErrorCode::ProviderNotReady)));
    assert!(!empty.bool_value("boolean-flag", &ctx, false));
    assert_eq!(empty.status().source, Source::Nothing);
}

#[test]
fn building_needs_a_runtime_unless_offline_and_a_valid_url() {
    let err = Client::builder("http://127.0.0.1:9", "t").build().unwrap_err();
    assert!(matches!(err, dimmer_sdk::Error::NoRuntime), "{err}");
    let err = Client::builder("not a url", "t").offline(true).build().unwrap_err();
    assert!(matches!(err, dimmer_sdk::Error::InvalidUrl { .. }), "{err}");
    let err =
        Client::builder("http://h", "t").offline(true).bootstrap_file("/nonexistent/flags.json").build().unwrap_err();
    assert!(matches!(err, dimmer_sdk::Error::Io { .. }), "{err}");
}

#[test]
fn the_cache_wins_over_the_bootstrap_file() {
    let dir = scratch("cache-wins");
    let cache = dir.join("cache.json");
    std::fs::write(
        &cache,
        r#"{"environment":"production","revision":42,"flags":{"flags":{"boolean-flag":{"environments":{"production":{"enabled":false}}}}}}"#,
    )
    .unwrap();
    let c = Client::builder("http://h", "t")
        .offline(true)
        .cache_path(&cache)
        .bootstrap_file(contract_flags())
        .build()
        .unwrap();
    assert_eq!(c.status().source, Source::Cache);
    assert_eq!(c.status().revision, Some(42));
    let d = c.bool_details("boolean-flag", &Context::new(), true);
    assert_eq!((d.value, d.reason), (false, Reason::Disabled));

    // A corrupt cache is ignored in favour of the bootstrap.
    std::fs::write(&cache, "{ not json").unwrap();
    let c = Client::builder("http://h", "t")
        .offline(true)
        .cache_path(&cache)
        .bootstrap_file(contract_flags())
        .build()
        .unwrap();
    assert_eq!(c.status().source, Source::Bootstrap);
}

#[tokio::test]
async fn an_unreachable_server_never_blocks_the_getters() {
    // Port 9 (discard) on loopback: connections are refused at once.
    let c = Client::builder("http://127.0.0.1:9", "t")
        .bootstrap_file(contract_flags())
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .build()
        .unwrap();
    let err = c.wait_ready(Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, dimmer_sdk::Error::NotReady { serving: Source::Bootstrap, .. }), "{err}");
    assert!(c.bool_value("boolean-flag", &Context::new(), false));
    assert!(!c.status().connected);
    c.close().await;
    assert!(c.bool_value("boolean-flag", &Context::new(), false), "still serving after close");
}
