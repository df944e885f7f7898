//! OTLP ingest end to end: the real OpenTelemetry SDK (`opentelemetry_sdk` with the
//! `opentelemetry-otlp` HTTP exporter, protobuf and JSON) exports spans with feature-flag
//! evaluation events, and log events correlated to their spans, to a real server; the per-variant
//! outcomes are read back through the metrics API. Malformed, oversized and unauthenticated
//! payloads are refused in OTLP's form, with nothing stored.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dimmer_domain::ManualClock;
use dimmer_protocol::otlp::wire;
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use prost::Message as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::release::{create_flag, server};
use crate::support::TestServer;

async fn view(server: &TestServer) -> Value {
    let (s, v) = server.admin(Method::GET, "/api/v1/flags/checkout/metrics?env=production&window=1h", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn variant<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["variants"].as_array().unwrap().iter().find(|v| v["variant"] == name).unwrap_or(&Value::Null)
}

fn headers(token: &str) -> HashMap<String, String> {
    HashMap::from([("Authorization".to_owned(), format!("Bearer {token}"))])
}

fn evaluation(variant: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("feature_flag.key", "checkout"),
        KeyValue::new("feature_flag.result.variant", variant.to_owned()),
    ]
}

/// Through the SDK: `n` server spans per variant; on `on` every fifth fails and each takes
/// 80 ms, on `off` none fails and each takes 20 ms. Half the evaluations happen on an internal
/// child span (the span that was active when the flag was evaluated), as OpenFeature's hook
/// records them under a web framework's handler span.
fn export_spans(base: String, token: String, protocol: Protocol, n: usize) {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(format!("{base}/v1/traces"))
        .with_headers(headers(&token))
        .build()
        .expect("exporter");
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_batch_exporter(exporter).build();
    let tracer = provider.tracer("otlp-test");
    let t0 = SystemTime::now();
    for i in 0..n {
        for (variant, ms, fails) in [("on", 80, i % 5 == 0), ("off", 20, false)] {
            let mut server_span =
                tracer.span_builder("GET /checkout").with_kind(SpanKind::Server).with_start_time(t0).start(&tracer);
            if i % 2 == 0 {
                server_span.add_event("feature_flag.evaluation", evaluation(variant));
            } else {
                let cx = Context::new().with_remote_span_context(server_span.span_context().clone());
                let mut child =
                    tracer.span_builder("handler").with_kind(SpanKind::Internal).start_with_context(&tracer, &cx);
                child.add_event("feature_flag.evaluation", evaluation(variant));
                child.end();
            }
            if fails {
                server_span.set_status(Status::error("boom"));
            }
            server_span.end_with_timestamp(t0 + Duration::from_millis(ms));
        }
    }
    provider.force_flush().expect("flush");
    provider.shutdown().expect("shutdown");
}

#[tokio::test]
async fn spans_from_the_real_sdk_become_per_variant_outcomes_in_both_encodings() {
    for protocol in [Protocol::HttpBinary, Protocol::HttpJson] {
        let clock = Arc::new(ManualClock::new(1_000_000_000));
        let server = server(&clock, Vec::new()).await;
        create_flag(&server).await;
        let sdk = server.token("svc", "sdk", Some("production")).await;
        let (base, token) = (server.base.clone(), sdk.clone());
        // The blocking exporter runs a runtime of its own: off the test's runtime.
        tokio::task::spawn_blocking(move || export_spans(base, token, protocol, 600)).await.unwrap();

        let v = view(&server).await;
        let on = variant(&v, "on");
        let off = variant(&v, "off");
        assert_eq!(
            (on["evaluations"].as_u64(), on["errors"].as_u64(), on["successes"].as_u64()),
            (Some(600), Some(120), Some(480)),
            "{protocol:?}: {v}"
        );
        assert_eq!(
            (off["evaluations"].as_u64(), off["errors"].as_u64(), off["successes"].as_u64()),
            (Some(600), Some(0), Some(600)),
            "{v}"
        );
        // Latency within the sketch's 1%.
        let p50 = |x: &Value| x["latency_ms"]["p50"].as_f64().unwrap();
        assert!((p50(on) - 80.0).abs() <= 0.8 && (p50(off) - 20.0).abs() <= 0.2, "{v}");
        let text = server.http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
        assert!(
            text.contains("dimmer_flag_outcomes_total{flag=\"checkout\",variant=\"on\",environment=\"production\",outcome=\"error\"} 120"),
            "{text}"
        );
        server.stop().await;
    }
}

/// Spans through one exporter, the evaluations as log events (`feature_flag.evaluation`) through
/// another, in separate requests: the server correlates them by trace and span id.
fn export_spans_and_logs(base: String, token: String) {
    let span_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{base}/v1/traces"))
        .with_headers(headers(&token))
        .build()
        .expect("exporter");
    let log_exporter = opentelemetry_otlp::LogExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{base}/v1/logs"))
        .with_headers(headers(&token))
        .build()
        .expect("exporter");
    let tracing = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_batch_exporter(span_exporter).build();
    let logging = opentelemetry_sdk::logs::SdkLoggerProvider::builder().with_batch_exporter(log_exporter).build();
    let tracer = tracing.tracer("otlp-test");
    let logger = logging.logger("otlp-test");
    let t0 = SystemTime::now();
    for i in 0..300 {
        let variant = if i % 3 == 0 { "on" } else { "off" };
        let mut span = tracer.span_builder("process").with_kind(SpanKind::Consumer).with_start_time(t0).start(&tracer);
        {
            let _active = Context::new().with_remote_span_context(span.span_context().clone()).attach();
            let mut record = logger.create_log_record();
            record.set_event_name("feature_flag.evaluation");
            record.add_attribute("feature_flag.key", "checkout");
            record.add_attribute("feature_flag.result.variant", variant);
            logger.emit(record);
        }
        if variant == "on" {
            span.set_attribute(KeyValue::new("http.response.status_code", 503));
        }
        span.end_with_timestamp(t0 + Duration::from_millis(35));
    }
    // Logs first, then spans: every evaluation waits for its span.
    logging.force_flush().expect("flush");
    tracing.force_flush().expect("flush");
    logging.shutdown().expect("shutdown");
    tracing.shutdown().expect("shutdown");
}

#[tokio::test]
async fn log_events_correlated_to_their_spans_become_outcomes() {
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let server = server(&clock, Vec::new()).await;
    create_flag(&server).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let (base, token) = (server.base.clone(), sdk.clone());
    tokio::task::spawn_blocking(move || export_spans_and_logs(base, token)).await.unwrap();
    let v = view(&server).await;
    let (on, off) = (variant(&v, "on"), variant(&v, "off"));
    assert_eq!(
        (on["evaluations"].as_u64(), on["errors"].as_u64(), on["successes"].as_u64()),
        (Some(100), Some(100), Some(0)),
        "{v}"
    );
    assert_eq!(
        (off["evaluations"].as_u64(), off["errors"].as_u64(), off["successes"].as_u64()),
        (Some(200), Some(0), Some(200)),
        "{v}"
    );
    assert!((off["latency_ms"]["p95"].as_f64().unwrap() - 35.0).abs() <= 0.35, "{v}");
    server.stop().await;
}

fn one_span_json(trace: &str) -> Value {
    json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": trace, "spanId": "0102030405060708", "kind": 2,
        "startTimeUnixNano": "1000000000", "endTimeUnixNano": "1010000000",
        "events": [{"name": "feature_flag.evaluation", "attributes": [
            {"key": "feature_flag.key", "value": {"stringValue": "checkout"}},
            {"key": "feature_flag.result.variant", "value": {"stringValue": "on"}}]}]
    }]}]}]})
}

async fn post(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    gzip: bool,
    body: Vec<u8>,
) -> (StatusCode, String, Vec<u8>) {
    let mut req = server.http.post(format!("{}{path}", server.base)).header("content-type", content_type);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if gzip {
        req = req.header("content-encoding", "gzip");
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (status, ct, resp.bytes().await.unwrap().to_vec())
}

fn gzipped(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn bad_payloads_are_refused_in_otlp_form_and_store_nothing_and_partial_success_is_reported() {
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let server = server(&clock, Vec::new()).await;
    create_flag(&server).await;
    let sdk = server.token("svc", "sdk", Some("production")).await;
    let reader = server.token("dash", "reader", None).await;
    let good = one_span_json("0102030405060708090a0b0c0d0e0f10").to_string().into_bytes();

    // Unauthenticated, a wrong token scope, a wrong media type or encoding.
    let (s, ct, body) = post(&server, "/v1/traces", None, "application/x-protobuf", false, good.clone()).await;
    assert_eq!((s, ct.as_str()), (StatusCode::UNAUTHORIZED, "application/x-protobuf"));
    assert_eq!(wire::RpcStatus::decode(body.as_slice()).unwrap().code, 16);
    let (s, _, _) = post(&server, "/v1/traces", Some("dmr_nope"), "application/json", false, good.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, body) = post(&server, "/v1/traces", Some(&reader), "application/json", false, good.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{}", String::from_utf8_lossy(&body));
    let (s, _, _) = post(&server, "/v1/traces", Some(&sdk), "text/plain", false, good.clone()).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _, _) = post(&server, "/v1/logs", Some(&sdk), "application/json", true, good.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "not gzip at all");

    // Malformed: protobuf junk, JSON with a bad id (the field is named).
    let (s, _, body) =
        post(&server, "/v1/traces", Some(&sdk), "application/x-protobuf", false, vec![0x0a, 0xff, 0xff, 0xff]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(wire::RpcStatus::decode(body.as_slice()).unwrap().code, 3);
    let bad = one_span_json("zz").to_string().into_bytes();
    let (s, ct, body) = post(&server, "/v1/traces", Some(&sdk), "application/json", false, bad).await;
    assert_eq!((s, ct.as_str()), (StatusCode::BAD_REQUEST, "application/json"));
    let status: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        status["message"].as_str().unwrap().contains("resourceSpans[0].scopeSpans[0].spans[0].traceId"),
        "{status}"
    );

    // Oversized as sent, and a small gzip body that expands past the bound.
    let (s, _, _) = post(&server, "/v1/traces", Some(&sdk), "application/x-protobuf", false, vec![0; 5 << 20]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let bomb = gzipped(&vec![b' '; 17 << 20]);
    assert!(bomb.len() < 1 << 20);
    let (s, _, _) = post(&server, "/v1/traces", Some(&sdk), "application/json", true, bomb).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    let v = view(&server).await;
    assert_eq!(v["variants"], json!([]), "nothing stored: {v}");

    // Partial success: one span with a short trace id is rejected and counted, the other kept.
    let mut two = one_span_json("0102030405060708090a0b0c0d0e0f10");
    let mut short = two["resourceSpans"][0]["scopeSpans"][0]["spans"][0].clone();
    short["traceId"] = json!("0102");
    two["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array_mut().unwrap().push(short);
    let (s, _, body) =
        post(&server, "/v1/traces", Some(&sdk), "application/json", true, gzipped(two.to_string().as_bytes())).await;
    assert_eq!(s, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "1", "{answer}");
    // A clean protobuf request answers an empty response.
    let req = wire::ExportTraceServiceRequest::default().encode_to_vec();
    let (s, ct, body) = post(&server, "/v1/traces", Some(&sdk), "application/x-protobuf", false, req).await;
    assert_eq!((s, ct.as_str()), (StatusCode::OK, "application/x-protobuf"));
    assert_eq!(wire::ExportResponse::decode(body.as_slice()).unwrap().partial_success, None);
    let v = view(&server).await;
    assert_eq!(variant(&v, "on")["successes"], 1, "{v}");
    server.stop().await;
}
