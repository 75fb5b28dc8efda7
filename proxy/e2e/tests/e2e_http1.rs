//! The HTTP/1 hop, checked at the upstream: what reaches it and what comes
//! back. The upstream here is a recorder that keeps every request head it
//! receives, so a test can say "nothing reached it" and "it got exactly
//! this", which a client alone cannot see.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::recorder::{Recorder, find, proxy_to, proxy_to_with};
use common::{
    REQUEST_TIMEOUT, Table, chat, chat_body, client, counts, observations_when, stream_sim,
};

/// Writes `request` in one packet and reads until `answers` responses
/// have ended or the proxy closes; returns what was read.
async fn exchange(proxy: SocketAddr, request: &[u8], answers: usize) -> String {
    let mut conn = TcpStream::connect(proxy).await.expect("connect");
    conn.write_all(request).await.expect("write");
    let mut got = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
            let text = String::from_utf8_lossy(&got);
            if text.matches("HTTP/1.1 ").count() >= answers && ended(&text, answers) {
                break;
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .expect("the proxy answers or closes");
    String::from_utf8_lossy(&got).into_owned()
}

/// Whether `answers` responses are complete in `text` (each either the
/// recorder's `ok` body or a proxy error with its JSON body).
fn ended(text: &str, answers: usize) -> bool {
    text.matches("\r\n\r\nok").count() + text.matches("weir_proxy_error\"}}").count() >= answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelined_requests_in_one_packet_both_get_answers() {
    let up = Recorder::start().await;
    let proxy = proxy_to(up.addr, up.addr).await;
    let request =
        b"GET /v1/models HTTP/1.1\r\nhost: a\r\n\r\nGET /v1/models HTTP/1.1\r\nhost: a\r\n\r\n";
    let got = exchange(proxy.listen, request, 2).await;
    assert_eq!(got.matches("HTTP/1.1 200").count(), 2, "{got}");
    assert_eq!(up.heads().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http11_request_without_one_host_is_refused_and_reaches_no_upstream() {
    let up = Recorder::start().await;
    let proxy = proxy_to(up.addr, up.addr).await;
    for request in [
        &b"GET /v1/models HTTP/1.1\r\n\r\n"[..],
        &b"GET /v1/models HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n"[..],
    ] {
        let got = exchange(proxy.listen, request, 1).await;
        assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    }
    assert!(up.heads().is_empty(), "{:?}", up.heads());
}

/// Request smuggling: framing that two parsers could read differently, so
/// that a request hidden in the body reaches the upstream as a request of
/// its own. Each is refused with 400 before anything reaches an upstream;
/// the body's framing is checked too, because the proxy reads a body of up
/// to 64 KiB before it connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smuggling_set_is_refused_with_400_and_reaches_no_upstream() {
    let up = Recorder::start().await;
    let proxy = proxy_to(up.addr, up.addr).await;
    let hidden = "GET /smuggled HTTP/1.1\r\nhost: a\r\n\r\n";
    let post = |fields: &str, body: &str| {
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\n{fields}\r\n{body}{hidden}")
    };
    let chunked = "transfer-encoding: chunked\r\n";
    let cases = [
        (
            "Content-Length with Transfer-Encoding",
            post(&format!("content-length: 5\r\n{chunked}"), "0\r\n\r\n"),
        ),
        (
            "two different Content-Lengths",
            post("content-length: 4\r\ncontent-length: 40\r\n", "abcd"),
        ),
        (
            "Content-Length as a list of two values",
            post("content-length: 4, 40\r\n", "abcd"),
        ),
        (
            "a folded (obs-fold) Transfer-Encoding",
            post("transfer-encoding:\r\n chunked\r\n", "0\r\n\r\n"),
        ),
        (
            "a chunk size that is no number",
            post(chunked, "zz\r\nabcd\r\n0\r\n\r\n"),
        ),
        (
            "a chunk size that overflows",
            post(chunked, "fffffffffffffffffffff\r\nabcd\r\n0\r\n\r\n"),
        ),
        (
            "a bad chunk after a good one",
            post(chunked, "4\r\nabcd\r\n4x\r\nefgh\r\n0\r\n\r\n"),
        ),
        (
            "a chunk longer than its size",
            post(chunked, "2\r\nabcd\r\n0\r\n\r\n"),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            post("transfer-encoding: chunked, identity\r\n", "0\r\n\r\n"),
        ),
        (
            "Transfer-Encoding: identity, chunked",
            post("transfer-encoding: identity, chunked\r\n", "0\r\n\r\n"),
        ),
        (
            "two Transfer-Encoding fields",
            post(&format!("{chunked}{chunked}"), "0\r\n\r\n"),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!(
                "POST /v1/chat/completions HTTP/1.0\r\nhost: a\r\n{chunked}\r\n0\r\n\r\n{hidden}"
            ),
        ),
    ];
    for (what, request) in &cases {
        let got = exchange(proxy.listen, request.as_bytes(), 1).await;
        assert!(got.starts_with("HTTP/1.1 400"), "{what}: {got:?}");
    }
    assert!(up.heads().is_empty(), "{:?}", up.heads());
    // The same requests framed soundly go through, one request each (the
    // recorder reads bodies by Content-Length only, so it is shown the
    // chunked body's bytes as a head of their own: only heads that are
    // requests are counted).
    let sound = |fields: &str, body: &str| {
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\n{fields}\r\n{body}")
    };
    for request in [
        sound("content-length: 4\r\n", "abcd"),
        sound(chunked, "4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n"),
    ] {
        let got = exchange(proxy.listen, request.as_bytes(), 1).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    }
    let heads = up.heads();
    let requests = heads
        .iter()
        .filter(|h| h.starts_with("post /v1/chat"))
        .count();
    assert_eq!(requests, 2, "{heads:?}");
    assert!(!heads.iter().any(|h| h.contains("smuggled")), "{heads:?}");
    assert_eq!(up.bodies()[0], b"abcd");
}

/// A client that sends `Expect: 100-continue` waits for `100 Continue`
/// before its body: the proxy answers it at once (it reads the body before
/// it connects) and the upstream gets the body without the expectation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_by_the_proxy() {
    let up = Recorder::start().await;
    let proxy = proxy_to(up.addr, up.addr).await;
    let mut conn = TcpStream::connect(proxy.listen).await.expect("connect");
    conn.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\
expect: 100-continue\r\n\r\n",
    )
    .await
    .expect("write head");
    let mut got = Vec::new();
    tokio::time::timeout(REQUEST_TIMEOUT, read_until(&mut conn, &mut got, "\r\n\r\n"))
        .await
        .expect("100 Continue before the body is sent");
    let interim = String::from_utf8_lossy(&got).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim:?}");
    assert!(
        up.heads().is_empty(),
        "nothing goes upstream before the body"
    );
    conn.write_all(b"{}").await.expect("write body");
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_until(&mut conn, &mut got, "\r\n\r\nok"),
    )
    .await
    .expect("the answer");
    assert!(String::from_utf8_lossy(&got).contains("HTTP/1.1 200"));
    let heads = up.heads();
    assert_eq!(heads.len(), 1);
    assert!(!heads[0].contains("expect:"), "{heads:?}");
    assert_eq!(up.bodies()[0], b"{}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_request_goes_upstream_as_http11_with_a_host() {
    let up = Recorder::start().await;
    let proxy = proxy_to(up.addr, up.addr).await;
    let got = exchange(proxy.listen, b"GET /v1/models HTTP/1.0\r\n\r\n", 1).await;
    assert!(got.contains(" 200 "), "{got}");
    let heads = up.heads();
    assert_eq!(heads.len(), 1);
    assert!(
        heads[0].starts_with("get /v1/models http/1.1\r\n"),
        "{heads:?}"
    );
    assert!(
        heads[0].contains(&format!("\r\nhost: {}", up.addr)),
        "{heads:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_headers_stay_at_the_proxy() {
    let up = Recorder::start().await;
    let proxy = proxy_to(up.addr, up.addr).await;
    let request = b"GET /v1/models HTTP/1.1\r\nhost: a\r\nconnection: keep-alive, x-hop\r\n\
x-hop: secret\r\nkeep-alive: timeout=5\r\nupgrade: h2c\r\nx-end-to-end: kept\r\n\r\n";
    let got = exchange(proxy.listen, request, 1).await;
    assert!(got.contains(" 200 "), "{got}");
    let heads = up.heads();
    let head = &heads[0];
    for hop in [
        "x-hop:",
        "keep-alive:",
        "upgrade:",
        "connection: keep-alive, x-hop",
    ] {
        assert!(!head.contains(hop), "{hop} forwarded: {head}");
    }
    assert!(head.contains("x-end-to-end: kept"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_after_routing_names_the_cohort_that_failed() {
    // Two ports nothing listens on: bound, then closed.
    let closed = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let proxy = proxy_to(closed(), closed()).await;
    let got = exchange(
        proxy.listen,
        b"GET /v1/models HTTP/1.1\r\nhost: a\r\n\r\n",
        1,
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 502"), "{got}");
    // Stable failed; a canary at weight 0 is no fallback (after an abort it
    // must take nothing), so the answer names stable.
    assert!(
        got.to_ascii_lowercase().contains("x-weir-cohort: stable"),
        "{got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_pooled_connection_the_upstream_dropped_goes_again_on_a_new_one() {
    // Which requests find a pooled connection depends on whether the proxy
    // had released the last one when the next arrived, so the test sends
    // requests until enough of them did (usually the second already) and
    // asserts on every one.
    const DROPS: u64 = 5;
    const MOST: usize = 500;
    let up = Recorder::answering(1).await;
    let proxy = proxy_to(up.addr, up.addr).await;
    let client = client();
    let mut sent = 0;
    while up.dropped() < DROPS {
        assert!(
            sent < MOST,
            "only {} of {sent} requests found a pooled connection",
            up.dropped()
        );
        let response = chat(&client, proxy.listen, false)
            .send()
            .await
            .expect("the proxy answers");
        let status = response.status();
        let body = response.text().await.expect("body");
        assert_eq!(
            (status.as_u16(), body.as_str()),
            (200, "ok"),
            "request {sent}"
        );
        sent += 1;
    }
    // Every request reached the upstream once with its whole body: the
    // replay sent the body the first attempt had read from the client.
    let bodies = up.bodies();
    assert_eq!(bodies.len(), sent);
    assert!(
        bodies.iter().all(|b| b == chat_body(false).as_bytes()),
        "a body arrived changed"
    );
}

/// An upstream for one streamed completion: it answers with the response
/// head and the first SSE event at once, and sends the rest only when
/// `gate` opens.
async fn gated_stream(gate: tokio::sync::oneshot::Receiver<()>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.expect("the proxy connects");
        let mut buf = Vec::new();
        while find(&buf, b"\r\n\r\n").is_none() {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let event = |data: &str| {
            let line = format!("data: {data}\n\n");
            format!("{:x}\r\n{line}\r\n", line.len())
        };
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let first = event(r#"{"choices":[{"index":0,"delta":{"content":"first"}}]}"#);
        if conn
            .write_all(format!("{head}{first}").as_bytes())
            .await
            .is_err()
        {
            return;
        }
        let _ = gate.await;
        let rest = format!(
            "{}{}0\r\n\r\n",
            event(
                r#"{"choices":[{"index":0,"delta":{"content":"second"},"finish_reason":"stop"}]}"#
            ),
            event("[DONE]")
        );
        let _ = conn.write_all(rest.as_bytes()).await;
    });
    addr
}

/// Reads from `conn` into `got` until `text` has arrived.
async fn read_until(conn: &mut TcpStream, got: &mut Vec<u8>, text: &str) {
    while !String::from_utf8_lossy(got).contains(text) {
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => panic!("closed before {text:?}: {}", String::from_utf8_lossy(got)),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_token_reaches_the_client_while_the_upstream_holds_the_next() {
    let (open, gate) = tokio::sync::oneshot::channel();
    let upstream = gated_stream(gate).await;
    let proxy = proxy_to(upstream, upstream).await;
    let mut conn = TcpStream::connect(proxy.listen).await.expect("connect");
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: chat\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.expect("write");
    // The upstream holds everything after the first token until the gate
    // opens, and the gate opens only once the client has that token: a
    // proxy that held events back (for a buffer to fill, a batch, the end
    // of the response) never delivers it and the test fails here.
    let mut got = Vec::new();
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_until(&mut conn, &mut got, "\"first\""),
    )
    .await
    .expect("the first token arrives while the upstream holds the rest");
    let so_far = String::from_utf8_lossy(&got).into_owned();
    assert!(so_far.starts_with("HTTP/1.1 200"), "{so_far}");
    assert!(!so_far.contains("second"), "{so_far}");
    open.send(()).expect("the upstream waits at the gate");
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_until(&mut conn, &mut got, "0\r\n\r\n"),
    )
    .await
    .expect("the rest follows");
    let all = String::from_utf8_lossy(&got);
    assert!(
        all.contains("\"second\"") && all.contains("data: [DONE]"),
        "{all}"
    );
}

/// A client may send its next request while the response to the last one
/// still streams (pipelining): the proxy keeps those bytes, forwards
/// nothing of them meanwhile, and serves the request once the response has
/// ended, on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_while_a_response_streams_is_served_after_it() {
    let (open, gate) = tokio::sync::oneshot::channel();
    let streaming = gated_stream(gate).await;
    let up = Recorder::start().await;
    // The second request asks for the canary (weight 0) by the override
    // header, so it reaches the recorder and not the gated upstream.
    let yaml = format!(
        "listen: 127.0.0.1:1\n\
         admin: 127.0.0.1:2\n\
         overrideHeader: true\n\
         routes:\n\
         \x20 - name: chat\n\
         \x20   backends:\n\
         \x20     - {{cohort: stable, url: http://{streaming}, weight: 100}}\n\
         \x20     - {{cohort: canary, url: http://{}, weight: 0}}\n",
        up.addr
    );
    let table = weir_proxy::config::file::parse(&yaml)
        .expect("valid config")
        .table;
    let source = std::sync::Arc::new(weir_proxy::MemorySource::new(table, true));
    let proxy = common::start_proxy_with(source, |_| {}).await;
    let mut conn = TcpStream::connect(proxy.listen).await.expect("connect");
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let first = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: chat\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(first.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_until(&mut conn, &mut got, "\"first\""),
    )
    .await
    .expect("the first token arrives");
    // Sent in two pieces, the second one while the stream is open.
    let second = "GET /v1/models HTTP/1.1\r\nhost: chat\r\nx-weir-cohort: canary\r\n\r\n";
    let (start, end) = second.split_at(20);
    conn.write_all(start.as_bytes()).await.expect("write");
    conn.write_all(end.as_bytes()).await.expect("write");
    assert!(up.heads().is_empty(), "forwarded before its turn");
    open.send(()).expect("the upstream waits at the gate");
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_until(&mut conn, &mut got, "\r\n\r\nok"),
    )
    .await
    .expect("the second request is answered on the same connection");
    let all = String::from_utf8_lossy(&got);
    let done = all.find("data: [DONE]").expect("the stream ended");
    let second_answer = all.rfind("HTTP/1.1 200").expect("a second answer");
    assert!(done < second_answer, "answers out of order: {all}");
    assert_eq!(all.matches("HTTP/1.1 200").count(), 2, "{all}");
    let heads = up.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with("get /v1/models"), "{heads:?}");
}

/// A request head that arrives in many small pieces, longer than what the
/// proxy parses after every read, is served once its blank line comes (and
/// not before: its fields all reach the upstream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_head_arriving_in_small_pieces_is_served_whole() {
    let up = Recorder::start().await;
    let proxy = proxy_to(up.addr, up.addr).await;
    let filler = "f".repeat(6000);
    let request =
        format!("GET /v1/models HTTP/1.1\r\nhost: a\r\nx-filler: {filler}\r\nx-last: here\r\n\r\n");
    let mut conn = TcpStream::connect(proxy.listen).await.expect("connect");
    conn.set_nodelay(true).expect("nodelay");
    // Pieces of 97 bytes put the blank line's CR LF CR LF across a piece
    // boundary on the way.
    for piece in request.as_bytes().chunks(97) {
        conn.write_all(piece).await.expect("write");
        conn.flush().await.expect("flush");
    }
    let mut got = Vec::new();
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_until(&mut conn, &mut got, "\r\n\r\nok"),
    )
    .await
    .expect("answered");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let heads = up.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].contains("x-last: here"),
        "{:?}",
        &heads[0][..200.min(heads[0].len())]
    );
    assert!(heads[0].contains(&filler));
}

/// The read timeout bounds the silence between two reads of the upstream,
/// not the stream: a stream that goes quiet for longer is cut and recorded
/// as a timeout, against its cohort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_silent_past_the_read_timeout_is_cut_and_recorded_as_a_timeout() {
    // The gate is never opened: the upstream holds its second token.
    let (_gate, held) = tokio::sync::oneshot::channel();
    let up = gated_stream(held).await;
    let proxy = proxy_to_with(up, up, |s| s.timeouts.read = Duration::from_secs(1)).await;
    let mut conn = TcpStream::connect(proxy.listen).await.expect("connect");
    let body = chat_body(true);
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    tokio::time::timeout(REQUEST_TIMEOUT, read_until(&mut conn, &mut got, "first"))
        .await
        .expect("the first token arrives");
    let cut = async {
        loop {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, cut)
        .await
        .expect("the proxy ends the stream once the upstream is silent past the read timeout");
    assert!(!String::from_utf8_lossy(&got).contains("second"));
    observations_when(proxy.admin, "the timeout recorded", |s| {
        counts(s, "stable").get(weir_proxy::Outcome::Timeout) == 1
    })
    .await;
}

/// A stream that sends a token every 300 ms for 2.4 s outlasts a 1 s read
/// timeout many times over and is never cut: each read moves the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_the_read_timeout_but_never_silent_that_long_completes() {
    let tokens = 8;
    let (stable, canary) = (
        stream_sim(
            "stable",
            Duration::from_millis(10),
            Duration::from_millis(300),
            tokens,
        )
        .await,
        stream_sim(
            "canary",
            Duration::from_millis(10),
            Duration::from_millis(300),
            tokens,
        )
        .await,
    );
    let source = std::sync::Arc::new(weir_proxy::MemorySource::new(
        Table::new(&stable, &canary, 0.0).table(),
        true,
    ));
    let proxy =
        common::start_proxy_with(source, |s| s.timeouts.read = Duration::from_secs(1)).await;
    let client = client();
    let response = chat(&client, proxy.listen, true)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("the whole stream");
    assert!(common::stream_complete(&body), "{body}");
    // The record is written once the response has ended, which may be a
    // moment after the client has it all.
    let admin = proxy.admin;
    let snapshot = observations_when(admin, "the request recorded", |s| {
        counts(s, "stable").iter().map(|(_, n)| n).sum::<u64>() == 1
    })
    .await;
    let stable = counts(&snapshot, "stable");
    assert_eq!(stable.get(weir_proxy::Outcome::Ok), 1, "{stable:?}");
}
