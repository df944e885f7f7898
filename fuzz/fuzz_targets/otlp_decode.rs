//! Fuzz target: any bytes, as an OTLP traces or logs request in either encoding and as a
//! metrics batch, must decode or be refused without panicking; whatever decodes must map to
//! entries that pass the metrics batch's bounds.
#![no_main]

use dimmer_protocol::otlp::{self, Bounds, Correlator, Encoding};
use dimmer_protocol::{Limits, MetricsBatch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut correlator = Correlator::new(Bounds::default(), vec![otlp::kind::SERVER, otlp::kind::CONSUMER]);
    for encoding in [Encoding::Protobuf, Encoding::Json] {
        if let Ok(request) = otlp::decode_traces(data, encoding) {
            let x = correlator.traces(&request, 0);
            let batch = MetricsBatch { sdk: None, metrics: x.metrics };
            assert_eq!(batch.check(&Limits::default()), Ok(()));
        }
        if let Ok(request) = otlp::decode_logs(data, encoding) {
            let x = correlator.logs(&request, 1);
            let batch = MetricsBatch { sdk: None, metrics: x.metrics };
            assert_eq!(batch.check(&Limits::default()), Ok(()));
        }
    }
    if let Ok(batch) = serde_json::from_slice::<MetricsBatch>(data) {
        let _ = batch.check(&Limits::default());
    }
});
