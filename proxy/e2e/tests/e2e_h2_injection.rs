//! HTTP/2 header values are bytes, not lines: a value holding `\r\n` (or a
//! bare `\n`, or NUL) would become a header of its own, or a request of
//! its own, once the proxy writes the request as HTTP/1.1 to an upstream.
//! RFC 9113 §8.2.1 makes such a request malformed; it must be refused
//! (a stream reset, a GOAWAY or a 400) and reach no upstream. Today the
//! `h2` library under pingora refuses it while decoding the header block,
//! with a GOAWAY (a connection error, stricter than the stream error the
//! RFC asks for), so the request never reaches weir's code and a 400
//! cannot be written for it.
//!
//! No HTTP/2 client library sends such a value (they validate what they
//! send), so the test writes the frames itself: the connection preface, an
//! empty SETTINGS, one HEADERS frame with every field as an HPACK literal.
//! A well-formed request written the same way must get its 200 from the
//! upstream, so a refusal is the proxy's, not the test's encoding.

mod common;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::REQUEST_TIMEOUT;
use common::recorder::{Recorder, proxy_to};

/// One HPACK "literal header field without indexing, new name" (RFC 7541
/// §6.2.2), lengths under 127 (one-byte integers, no Huffman coding).
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    assert!(name.len() < 127 && value.len() < 127);
    out.push(0x00);
    out.push(u8::try_from(name.len()).expect("short"));
    out.extend_from_slice(name);
    out.push(u8::try_from(value.len()).expect("short"));
    out.extend_from_slice(value);
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// How the proxy answered stream 1.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A response HEADERS frame whose first field is `:status` from the
    /// static table (index 8 is 200, 12 is 400), as the proxy's HPACK
    /// encoder writes it.
    Status(u16),
    /// RST_STREAM on stream 1.
    Reset,
    /// GOAWAY.
    GoAway,
    /// The connection closed without either.
    Closed,
}

/// Sends one GET with an extra header `x-test: <value>` over h2c and reads
/// frames until the proxy answers stream 1.
async fn send(proxy: std::net::SocketAddr, value: &[u8]) -> Answer {
    let mut conn = TcpStream::connect(proxy).await.expect("connect");
    let mut block = Vec::new();
    literal(&mut block, b":method", b"GET");
    literal(&mut block, b":scheme", b"http");
    literal(&mut block, b":path", b"/v1/models");
    literal(&mut block, b":authority", b"weir.test");
    literal(&mut block, b"x-test", value);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    out.extend(frame(0x1, 0x4 | 0x1, 1, &block)); // HEADERS, END_HEADERS | END_STREAM
    conn.write_all(&out).await.expect("write");
    let read = async {
        let mut head = [0u8; 9];
        loop {
            if conn.read_exact(&mut head).await.is_err() {
                return Answer::Closed;
            }
            let len =
                usize::try_from(u32::from_be_bytes([0, head[0], head[1], head[2]])).expect("len");
            let (kind, stream) = (
                head[3],
                u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            );
            let mut payload = vec![0u8; len];
            if conn.read_exact(&mut payload).await.is_err() {
                return Answer::Closed;
            }
            match (kind, stream) {
                (0x7, _) => return Answer::GoAway,
                (0x3, 1) => return Answer::Reset,
                (0x1, 1) => {
                    // Padding and priority flags are not used by the proxy.
                    return match payload.first() {
                        Some(0x88) => Answer::Status(200),
                        Some(0x8c) => Answer::Status(400),
                        other => panic!("a response head starting {other:?}"),
                    };
                }
                (0x4, 0) if head[4] & 0x1 == 0 => {
                    // The proxy's SETTINGS: acknowledge it.
                    conn.write_all(&frame(0x4, 0x1, 0, &[])).await.expect("ack");
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .expect("an answer to stream 1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_header_values_with_line_breaks_or_nul_are_refused_and_reach_no_upstream() {
    let up = Recorder::start().await;
    let proxy = proxy_to(up.addr, up.addr).await;

    // The encoding is right: a plain value is forwarded and answered.
    assert_eq!(send(proxy.listen, b"plain").await, Answer::Status(200));
    let heads = up.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].contains("x-test: plain"), "{heads:?}");

    for (what, value) in [
        ("CR LF", &b"a\r\nx-injected: 1"[..]),
        ("a bare LF", b"a\nx-injected: 1"),
        ("a bare CR", b"a\rx-injected: 1"),
        ("NUL", b"a\0b"),
        (
            "a whole request",
            b"a\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: a\r\n\r\n",
        ),
    ] {
        let answer = send(proxy.listen, value).await;
        assert!(
            matches!(answer, Answer::Reset | Answer::GoAway | Answer::Status(400)),
            "{what}: {answer:?}"
        );
    }
    // A refused request was answered without an upstream; one forwarded
    // anyway would have been answered with the upstream's 200 above. A
    // last plain request, sent after every answer, must be the second and
    // last thing the upstream saw.
    assert_eq!(send(proxy.listen, b"after").await, Answer::Status(200));
    let heads = up.heads();
    assert_eq!(heads.len(), 2, "only the plain requests arrived: {heads:?}");
    assert!(heads[1].contains("x-test: after"), "{heads:?}");
    assert!(
        !heads
            .iter()
            .any(|h| h.contains("injected") || h.contains("smuggled")),
        "{heads:?}"
    );
}
