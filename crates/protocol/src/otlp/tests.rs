//! The mapping's decision table: spans and log records in, per-variant metrics out.

use super::wire::*;
use super::*;
use prost::Message as _;

const T: [u8; 16] = [7; 16];

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }) }
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

fn evaluation(flag: &str, variant: &str) -> Event {
    Event {
        name: "feature_flag.evaluation".into(),
        attributes: vec![kv("feature_flag.key", s(flag)), kv("feature_flag.result.variant", s(variant))],
    }
}

fn span(id: u8, parent: Option<u8>, kind: i32, ms: u64, events: Vec<Event>) -> Span {
    Span {
        trace_id: T.to_vec(),
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        kind,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_000_000_000 + ms * 1_000_000,
        attributes: Vec::new(),
        events,
        status: None,
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest { resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans }] }] }
}

fn correlator() -> Correlator {
    Correlator::new(Bounds::default(), vec![kind::SERVER, kind::CONSUMER])
}

fn entry<'a>(x: &'a Extracted, flag: &str, variant: &str) -> &'a FlagMetrics {
    x.metrics.iter().find(|m| m.flag == flag && m.variant == variant).expect("an entry")
}

#[test]
fn a_server_span_with_an_evaluation_is_one_outcome_with_its_latency() {
    let mut failed = span(2, None, kind::SERVER, 80, vec![evaluation("checkout", "on")]);
    failed.status = Some(Status { code: STATUS_ERROR });
    let mut http500 = span(3, None, kind::SERVER, 10, vec![evaluation("checkout", "on")]);
    http500.attributes.push(kv("http.response.status_code", Value::Int(503)));
    let mut old = evaluation("checkout", "off");
    old.attributes[1].key = "feature_flag.variant".into();
    old.name = "feature_flag".into();
    let fine = span(4, None, kind::SERVER, 40, vec![old]);
    let x = correlator().traces(
        &request(vec![span(1, None, kind::SERVER, 20, vec![evaluation("checkout", "on")]), failed, http500, fine]),
        0,
    );
    let on = entry(&x, "checkout", "on");
    assert_eq!((on.evaluations, on.successes, on.errors), (3, 1, 2));
    let latency = on.latency.as_ref().unwrap();
    assert_eq!(latency.count(), 3);
    assert!((latency.sum - 110.0).abs() < 1e-9, "20 + 80 + 10 ms");
    assert!((latency.quantile(0.5).unwrap() - 20.0).abs() <= 0.2);
    let off = entry(&x, "checkout", "off");
    assert_eq!((off.evaluations, off.successes, off.errors), (1, 1, 0));
    assert_eq!((x.items, x.rejected, x.outcomes, x.waiting), (4, 0, 4, 0));
}

#[test]
fn an_evaluation_on_a_child_counts_once_for_its_server_span_in_any_order_and_across_requests() {
    // Same request, child first: the server span's outcome, once, however often it evaluated.
    let child = span(2, Some(1), kind::INTERNAL, 5, vec![evaluation("f", "on"), evaluation("f", "on")]);
    let mut root = span(1, None, kind::SERVER, 50, vec![evaluation("f", "on")]);
    root.status = Some(Status { code: STATUS_ERROR });
    let x = correlator().traces(&request(vec![child.clone(), root.clone()]), 0);
    let on = entry(&x, "f", "on");
    assert_eq!((on.evaluations, on.errors, on.successes), (3, 1, 0));

    // Child in one request, its parent in the next: the evaluation waits, then resolves.
    let mut c = correlator();
    let x = c.traces(&request(vec![child]), 0);
    assert_eq!((entry(&x, "f", "on").evaluations, entry(&x, "f", "on").errors, x.waiting), (2, 0, 2));
    root.events.clear();
    let x = c.traces(&request(vec![root]), 1_000);
    let on = entry(&x, "f", "on");
    assert_eq!((on.evaluations, on.errors, x.outcomes), (0, 1, 1));
    assert_eq!(c.held().1, 0, "nothing left waiting");
}

#[test]
fn client_and_internal_roots_do_not_count_and_kinds_are_configurable() {
    let x = correlator().traces(&request(vec![span(1, None, kind::CLIENT, 5, vec![evaluation("f", "on")])]), 0);
    let on = entry(&x, "f", "on");
    assert_eq!((on.evaluations, on.successes + on.errors, x.waiting), (1, 0, 0));
    let mut c = Correlator::new(Bounds::default(), vec![kind::CLIENT]);
    let x = c.traces(&request(vec![span(1, None, kind::CLIENT, 5, vec![evaluation("f", "on")])]), 0);
    assert_eq!(entry(&x, "f", "on").successes, 1);
}

#[test]
fn log_events_resolve_to_their_span_before_or_after_it_arrives() {
    let log = |span_id: u8, flag: &str| LogRecord {
        attributes: vec![kv("feature_flag.key", s(flag)), kv("feature_flag.result.variant", s("on"))],
        trace_id: T.to_vec(),
        span_id: vec![span_id; 8],
        event_name: "feature_flag.evaluation".into(),
    };
    let logs = |records| ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs { scope_logs: vec![ScopeLogs { log_records: records }] }],
    };
    let mut c = correlator();
    // The span first, then its log record.
    c.traces(&request(vec![span(1, None, kind::SERVER, 30, Vec::new())]), 0);
    let x = c.logs(&logs(vec![log(1, "a")]), 10);
    assert_eq!((entry(&x, "a", "on").evaluations, entry(&x, "a", "on").successes), (1, 1));
    // The log record first (on a child span), then the spans.
    let x = c.logs(&logs(vec![log(9, "b")]), 20);
    assert_eq!((entry(&x, "b", "on").successes, x.waiting), (0, 1));
    let x = c.traces(
        &request(vec![span(9, Some(8), kind::INTERNAL, 1, Vec::new()), span(8, None, kind::SERVER, 30, Vec::new())]),
        30,
    );
    assert_eq!(entry(&x, "b", "on").successes, 1);
    // The older form: the name in the `event.name` attribute.
    let mut old = log(1, "c");
    old.event_name.clear();
    old.attributes.push(kv("event.name", s("feature_flag.evaluation")));
    let x = c.logs(&logs(vec![old]), 40);
    assert_eq!(entry(&x, "c", "on").successes, 1);
}

#[test]
fn waiting_evaluations_expire_and_the_tables_stay_bounded() {
    let bounds = Bounds { max_spans: 10, max_pending: 10, ttl_ms: 1_000, ..Bounds::default() };
    let mut c = Correlator::new(bounds, vec![kind::SERVER]);
    let orphans: Vec<Span> =
        (0..50).map(|i| span(i, Some(200), kind::INTERNAL, 1, vec![evaluation("f", "on")])).collect();
    let x = c.traces(&request(orphans), 0);
    assert_eq!(entry(&x, "f", "on").evaluations, 50);
    let (spans, pending) = c.held();
    assert!(spans <= 10 && pending <= 10, "{spans} {pending}");
    c.traces(&request(Vec::new()), 5_000);
    assert_eq!(c.held(), (0, 0));
    assert_eq!(c.unresolved, 50);
}

#[test]
fn repeats_and_resolved_waits_do_not_grow_the_tables() {
    let bounds = Bounds { max_spans: 10, max_pending: 10, ttl_ms: 1_000_000, ..Bounds::default() };
    let mut c = Correlator::new(bounds, vec![kind::SERVER]);
    for round in 0..100u8 {
        // The same span again and again.
        c.traces(&request(vec![span(1, None, kind::SERVER, 1, vec![evaluation("f", "on")])]), i64::from(round));
        // A child, then its parent: the wait is resolved.
        let (child, parent) = (100 + round % 100, 200u8.wrapping_add(round));
        c.traces(&request(vec![span(child, Some(parent), kind::INTERNAL, 1, vec![evaluation("f", "on")])]), 0);
        c.traces(&request(vec![span(parent, None, kind::SERVER, 1, Vec::new())]), 0);
    }
    assert!(
        c.span_order.len() <= 10 && c.pending_order.len() <= 21,
        "{} {}",
        c.span_order.len(),
        c.pending_order.len()
    );
}

#[test]
fn custom_events_go_to_the_variants_evaluated_under_the_same_span() {
    let rating = Event {
        name: "rated".into(),
        attributes: vec![kv("dimmer.event", s("csat")), kv("dimmer.event.value", Value::Double(4.0))],
    };
    let child = span(2, Some(1), kind::INTERNAL, 1, vec![rating]);
    let root = span(1, None, kind::SERVER, 10, vec![evaluation("f", "on")]);
    let x = correlator().traces(&request(vec![root, child]), 0);
    let stat = entry(&x, "f", "on").events["csat"];
    assert_eq!((stat.count, stat.sum, stat.sum_sq), (1, 4.0, Some(16.0)));
}

#[test]
fn bad_ids_and_long_names_are_rejected_and_counted() {
    let mut bad = span(1, None, kind::SERVER, 1, vec![evaluation("f", "on")]);
    bad.trace_id = vec![1, 2, 3];
    let long = span(2, None, kind::SERVER, 1, vec![evaluation(&"x".repeat(200), "on")]);
    let x = correlator().traces(&request(vec![bad, long]), 0);
    assert_eq!((x.items, x.rejected), (2, 2));
    assert!(x.metrics.is_empty());
    assert!(x.reason.unwrap().contains("trace id"));
}

#[test]
fn both_encodings_decode_to_the_same_request() {
    let mut sp = span(1, None, kind::SERVER, 12, vec![evaluation("f", "on")]);
    sp.attributes.push(kv("http.response.status_code", Value::Int(200)));
    let req = request(vec![sp]);
    let proto = req.encode_to_vec();
    assert_eq!(decode_traces(&proto, Encoding::Protobuf).unwrap(), req);
    let json = serde_json::json!({"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {"name": "x"}, "spans": [{
        "traceId": "07070707070707070707070707070707", "spanId": "0101010101010101", "parentSpanId": "",
        "name": "GET /", "kind": 2, "startTimeUnixNano": "1000000000", "endTimeUnixNano": 1012000000u64,
        "attributes": [{"key": "http.response.status_code", "value": {"intValue": "200"}}],
        "events": [{"timeUnixNano": "1", "name": "feature_flag.evaluation", "attributes": [
            {"key": "feature_flag.key", "value": {"stringValue": "f"}},
            {"key": "feature_flag.result.variant", "value": {"stringValue": "on"}}]}]
    }]}]}]});
    let decoded = decode_traces(json.to_string().as_bytes(), Encoding::Json).unwrap();
    assert_eq!(decoded, req);
    let err = decode_traces(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#, Encoding::Json)
        .unwrap_err();
    assert!(err.0.contains("resourceSpans[0].scopeSpans[0].spans[0].traceId"), "{err}");
    assert!(decode_traces(&[0xff, 0xff, 0xff], Encoding::Protobuf).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Arbitrary bytes never panic the decoders or the mapping (the fuzz target's property, run
    /// on stable in every test run).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
        let mut c = correlator();
        for encoding in [Encoding::Protobuf, Encoding::Json] {
            if let Ok(req) = decode_traces(&bytes, encoding) {
                let x = c.traces(&req, 0);
                proptest::prop_assert!(x.rejected <= x.items + x.metrics.len() as u64 * 2 + 1_000);
            }
            if let Ok(req) = decode_logs(&bytes, encoding) {
                c.logs(&req, 0);
            }
        }
        let _ = serde_json::from_slice::<crate::MetricsBatch>(&bytes).map(|b| b.check(&crate::Limits::default()));
    }

    /// Well-formed requests with random structure: every entry passes the batch bounds.
    #[test]
    fn extracted_entries_always_pass_the_batch_check(
        shape in proptest::collection::vec((0u8..20, proptest::option::of(0u8..20), 1i32..6, 0u64..10_000, 0usize..3), 0..60)
    ) {
        let spans: Vec<Span> = shape.iter().map(|(id, parent, k, ms, evals)| {
            let events = (0..*evals).map(|i| evaluation("f", if i % 2 == 0 { "on" } else { "off" })).collect();
            span(*id, *parent, *k, *ms, events)
        }).collect();
        let x = correlator().traces(&request(spans), 0);
        let batch = crate::MetricsBatch { sdk: None, metrics: x.metrics };
        proptest::prop_assert_eq!(batch.check(&crate::Limits::default()), Ok(()));
    }
}
