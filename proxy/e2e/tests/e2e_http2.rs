//! HTTP/2 from clients on the plain listener: h2c with prior knowledge,
//! next to HTTP/1 on the same port. (h2 over TLS, chosen by ALPN, is in
//! e2e_tls.rs.) The clients are reqwest, `curl --http2-prior-knowledge`
//! and, for what no well-behaved client sends, frames written by hand.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::recorder::{Recorder, proxy_to};
use common::{
    REQUEST_TIMEOUT, Table, chat, cohort, observations_when, read_body, served_by,
    start_memory_proxy, start_proxy_with, stream_complete, stream_sim,
};
use weir_core::Outcome;
use weir_proxy::MemorySource;
use weir_test_kit::poll::until;

/// A client that speaks HTTP/2 only, without asking first (h2c).
fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("an HTTP/2 client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_multiplexed_on_one_h2c_connection_are_each_routed_and_metered() {
    const STREAMS: usize = 16;
    const TOKENS: u32 = 30;
    // 30 tokens 100 ms apart: every stream is still open when the last
    // one starts, so the test can see them share one connection.
    let itl = Duration::from_millis(100);
    let stable = stream_sim("stable", Duration::ZERO, itl, TOKENS).await;
    let canary = stream_sim("canary", Duration::ZERO, itl, TOKENS).await;
    let (proxy, _source) = start_memory_proxy(Table::new(&stable, &canary, 50.0).table()).await;
    let (listen, admin) = (proxy.listen, proxy.admin);
    let client = h2c_client();

    // One request first, so the connection exists before the rest share it.
    let mut served = Vec::new();
    let first = chat(&client, listen, true).send().await.expect("h2c");
    assert_eq!(first.version(), reqwest::Version::HTTP_2);
    assert_eq!(first.status(), 200);
    served.push(served_by(&first).0);
    assert!(stream_complete(
        &read_body(first).await.expect("a whole stream")
    ));

    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..STREAMS {
        let client = client.clone();
        streams.spawn(async move {
            let response = chat(&client, listen, true).send().await.expect("h2c");
            assert_eq!(response.version(), reqwest::Version::HTTP_2);
            assert_eq!(response.status(), 200);
            let (cohort, sim) = served_by(&response);
            assert_eq!(cohort, sim, "x-weir-cohort names the upstream that served");
            let body = read_body(response).await.expect("a whole stream");
            assert!(stream_complete(&body), "{body}");
            cohort
        });
    }
    observations_when(admin, "every stream in flight", |s| {
        s.cohorts.iter().map(|c| c.inflight).sum::<u64>() == STREAMS as u64
    })
    .await;
    assert_eq!(proxy.connections(), 1, "the streams share one connection");
    while let Some(cohort) = streams.join_next().await {
        served.push(cohort.expect("a stream task"));
    }

    // Each stream is its own request in the observations, counted against
    // the cohort its response named. The client can read a stream's end
    // before the proxy has recorded it (the record follows the last write):
    // wait for every one.
    let sent = served.len() as u64;
    let snapshot = observations_when(admin, "every stream recorded", |s| {
        s.cohorts.iter().map(|c| c.requests.total()).sum::<u64>() >= sent
    })
    .await;
    for name in ["stable", "canary"] {
        let seen = served.iter().filter(|c| *c == name).count() as u64;
        let mine = cohort(&snapshot, name);
        let ok = mine.map_or(0, |c| c.requests.get(Outcome::Ok));
        assert_eq!(ok, seen, "{name}: requests");
        assert_eq!(
            mine.map_or(0, |c| c.output_tokens),
            seen * u64::from(TOKENS),
            "{name}: output tokens"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_client_resets_is_cut_while_the_upstream_is_quiet() {
    // The next token would come a minute after the first: only noticing
    // the reset (not a failed write) ends the request within the test.
    let sim = stream_sim("stable", Duration::ZERO, Duration::from_secs(60), 3).await;
    let (proxy, _source) = start_memory_proxy(Table::new(&sim, &sim, 0.0).table()).await;
    let client = h2c_client();
    let mut response = chat(&client, proxy.listen, true).send().await.expect("h2c");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let first = response.chunk().await.expect("a first chunk");
    assert!(first.is_some_and(|c| !c.is_empty()));
    // Dropping the response resets the stream (RST_STREAM CANCEL); the
    // connection stays open for other streams.
    drop(response);
    observations_when(proxy.admin, "the reset stream recorded", |s| {
        cohort(s, "stable")
            .is_some_and(|c| c.requests.get(Outcome::ClientAbort) == 1 && c.inflight == 0)
    })
    .await;
    // The same connection still carries a new stream.
    let again = client
        .get(format!("http://{}/v1/models", proxy.listen))
        .send()
        .await
        .expect("h2c");
    assert_eq!(again.status(), 200);
    assert_eq!(proxy.connections(), 1);
}

/// Writes `request` and reads until the proxy closes the connection.
async fn until_closed(proxy: SocketAddr, request: &[u8]) -> String {
    let mut conn = TcpStream::connect(proxy).await.expect("connect");
    conn.write_all(request).await.expect("write");
    let mut got = Vec::new();
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = conn.read(&mut chunk).await {
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the proxy answers and closes");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_request_shorter_than_the_h2_preface_is_answered() {
    let up = Recorder::start().await;
    let proxy = proxy_to(up.addr, up.addr).await;
    let request = b"GET / HTTP/1.0\r\n\r\n";
    assert!(request.len() < 24, "shorter than the preface");
    let got = until_closed(proxy.listen, request).await;
    assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
    assert_eq!(up.heads().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_inside_the_preface_is_closed_at_the_head_deadline() {
    let up = Recorder::start().await;
    let yaml = format!(
        "listen: 127.0.0.1:1\nadmin: 127.0.0.1:2\nroutes:\n  - name: chat\n    backends:\n      - {{cohort: stable, url: http://{}, weight: 100}}\n",
        up.addr
    );
    let table = weir_proxy::config::file::parse(&yaml).expect("valid").table;
    let source = std::sync::Arc::new(MemorySource::new(table, true));
    let proxy = start_proxy_with(source, |s| {
        s.timeouts.header = Duration::from_millis(300);
    })
    .await;
    let got = until_closed(proxy.listen, b"PRI * HTTP/2.0\r\n").await;
    assert_eq!(got, "", "closed without an answer");
    until("the connection released", REQUEST_TIMEOUT, || async {
        (proxy.connections() == 0).then_some(())
    })
    .await;
    assert!(up.heads().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_streams_over_h2c() {
    let sim = stream_sim("stable", Duration::ZERO, Duration::from_millis(1), 12).await;
    let (proxy, _source) = start_memory_proxy(Table::new(&sim, &sim, 0.0).table()).await;
    let url = format!("http://{}/v1/chat/completions", proxy.listen);
    let text = common::curl_chat(vec!["--http2-prior-knowledge".into()], url).await;
    assert!(text.starts_with("HTTP/2 200"), "{text}");
    assert!(text.contains("x-weir-cohort: stable"), "{text}");
    assert!(stream_complete(&text), "{text}");
}

// Frames written by hand (RFC 9113 §4.1, HPACK literals of RFC 7541 §6.2.2
// without Huffman coding): a client library refuses to send a header value
// with CR LF in it, and that refusal is not what is under test.

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a small frame");
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// An HPACK string literal (no Huffman coding), shorter than 127 bytes.
fn literal(s: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::try_from(s.len()).expect("short")];
    out.extend(s);
    out
}

/// The preface, empty SETTINGS and one GET on stream 1 carrying header
/// `x-note: <value>`.
fn h2_get(value: &[u8]) -> Vec<u8> {
    // :method GET, :scheme http (static table 2 and 6, indexed).
    let mut block = vec![0x82, 0x86];
    // :path and :authority: literals with indexed names (4 and 1).
    block.push(0x04);
    block.extend(literal(b"/v1/models"));
    block.push(0x01);
    block.extend(literal(b"localhost"));
    // x-note: a literal with a new name.
    block.push(0x00);
    block.extend(literal(b"x-note"));
    block.extend(literal(value));
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(0x4, 0, 0, &[]));
    // END_STREAM | END_HEADERS
    bytes.extend(frame(HEADERS, 0x5, 1, &block));
    bytes
}

/// What the proxy did with stream 1: the type of its first frame there
/// (HEADERS or RST_STREAM), GOAWAY, or `None` when it closed.
async fn answer_to_stream_1(proxy: SocketAddr, bytes: &[u8]) -> Option<(u8, Vec<u8>)> {
    let mut conn = TcpStream::connect(proxy).await.expect("connect");
    conn.write_all(bytes).await.expect("write");
    let read = async {
        loop {
            let mut head = [0u8; 9];
            conn.read_exact(&mut head).await.ok()?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            conn.read_exact(&mut payload).await.ok()?;
            if head[3] == GOAWAY || (stream == 1 && [HEADERS, RST_STREAM].contains(&head[3])) {
                return Some((head[3], payload));
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .expect("the proxy answers stream 1 or closes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_header_value_with_cr_lf_is_refused_and_reaches_no_upstream() {
    let up = Recorder::start().await;
    let proxy = proxy_to(up.addr, up.addr).await;

    // The hand-written request is a good one: with a plain value it is
    // answered and its header arrives as sent.
    let answer = answer_to_stream_1(proxy.listen, &h2_get(b"a b")).await;
    assert_eq!(answer.map(|(kind, _)| kind), Some(HEADERS));
    let heads = up.heads();
    assert_eq!(heads.len(), 1);
    assert!(heads[0].contains("\r\nx-note: a b\r\n"), "{heads:?}");

    // With CR LF in the value it would be a second header upstream.
    let answer = answer_to_stream_1(proxy.listen, &h2_get(b"a\r\nx-injected: yes")).await;
    match answer {
        // Malformed (RFC 9113 §8.2.1): the stream or the connection is
        // reset, or the proxy answers 400 (:status 400 is HPACK static
        // entry 12, sent indexed).
        None | Some((RST_STREAM | GOAWAY, _)) => {}
        Some((HEADERS, block)) => assert_eq!(block.first(), Some(&0x8c), "not a 400"),
        Some(other) => panic!("unexpected frame {other:?}"),
    }
    let heads = up.heads();
    assert_eq!(
        heads.len(),
        1,
        "the second request reached the upstream: {heads:?}"
    );
}
