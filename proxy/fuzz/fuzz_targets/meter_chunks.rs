//! The meter on arbitrary bodies split at arbitrary points: never panics,
//! and the split never changes what it measures.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use weir_proxy::{End, Meter};

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    // Low bits: chunk size; bit 7: SSE or JSON.
    let size = usize::from(control & 0x3f) + 1;
    let content_type = if control & 0x80 != 0 {
        "text/event-stream"
    } else {
        "application/json"
    };
    let t0 = Instant::now();
    let run = |size: usize| {
        let mut m = Meter::new(t0);
        m.on_response(200, Some(content_type), t0);
        for piece in rest.chunks(size) {
            m.on_body_chunk(piece, t0);
        }
        m.finish(End::Complete, t0)
    };
    let whole = run(rest.len().max(1));
    let split = run(size);
    assert_eq!(whole.outcome, split.outcome);
    assert_eq!(whole.content_events, split.content_events);
    assert_eq!(whole.output_tokens, split.output_tokens);
    assert_eq!(whole.inter_token.count(), split.inter_token.count());
});
