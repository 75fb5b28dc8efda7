//! HTTP/1 messages from arbitrary bytes: a client's request or an
//! upstream's response (head and body), the body fed in arbitrary pieces.
//! Never panics, a head parsed is parsed the same from exactly its bytes,
//! data ranges stay inside what was given, every call makes progress or
//! asks for more, and the pieces never change what is decoded.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use weir_proxy::server::framing::{Body, Decoded, Framing, parse_head};
use weir_proxy::server::request;

/// The body decoded from `input` given `step` bytes more at a time, and how
/// it ended (`Ok(true)`: complete).
fn decode(framing: Framing, input: &[u8], step: usize) -> (Vec<u8>, Result<bool, ()>) {
    let mut body = Body::new(framing);
    let mut data = Vec::new();
    let (mut start, mut end) = (0, 0);
    loop {
        let given = &input[start..end];
        let Ok((used, decoded)) = body.decode(given) else {
            return (data, Err(()));
        };
        assert!(used <= given.len());
        match decoded {
            Decoded::Data(r) => {
                assert!(r.start < r.end && r.end <= used, "{r:?} of {used}");
                data.extend_from_slice(&given[r]);
            }
            Decoded::End => return (data, Ok(true)),
            Decoded::More if end == input.len() => return (data, Ok(body.on_close())),
            Decoded::More => end = (end + step).min(input.len()),
        }
        start += used;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(control & 0x3f) + 1;
    let (framing, body) = if control & 0x80 != 0 {
        match request::parse(rest) {
            Ok(Some(head)) => {
                assert!(head.len <= rest.len());
                let again = request::parse(&rest[..head.len]).expect("the same head");
                assert_eq!(again.map(|h| h.len), Some(head.len));
                assert!(!matches!(head.framing, Framing::UntilClose));
                (head.framing, &rest[head.len..])
            }
            Ok(None) | Err(_) => (Framing::Chunked, rest),
        }
    } else {
        let method = if control & 0x40 != 0 { Method::HEAD } else { Method::POST };
        match parse_head(rest, &method) {
            Ok(Some(head)) => {
                assert!(head.len <= rest.len());
                (head.framing, &rest[head.len..])
            }
            Ok(None) | Err(_) => (Framing::Chunked, rest),
        }
    };
    let whole = decode(framing, body, body.len().max(1));
    let pieces = decode(framing, body, step);
    // A malformed body may be noticed at a different point, after more or
    // less of its data was handed out; a well-formed one decodes the same.
    if whole.1.is_ok() && pieces.1.is_ok() {
        assert_eq!(whole, pieces);
    }
});
