//! Routing on the request body's `model` and rewriting it per cohort: what
//! reaches the upstream (a recorder that keeps every body), and what the
//! client reads back (the simulator, which echoes the model it was asked
//! for, as vLLM does).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::recorder::Recorder;
use common::{REQUEST_TIMEOUT, client, metrics, read_body, sim, start_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_proxy::{ConfigSource, MemorySource};

/// Two routes on one path: `adapter` takes requests for `chat` and sends
/// them all to the canary, which asks for `chat-lora-v8`; `pool` takes
/// every other request unchanged.
fn yaml(adapter: &str, pool: &str, stable_weight: f64) -> String {
    format!(
        "listen: 127.0.0.1:1\n\
         admin: 127.0.0.1:2\n\
         routes:\n\
         \x20 - name: adapter\n\
         \x20   match: {{pathPrefix: /v1, model: chat}}\n\
         \x20   backends:\n\
         \x20     - {{cohort: stable, url: {adapter}, weight: {stable_weight}, model: chat-lora-v7}}\n\
         \x20     - {{cohort: canary, url: {adapter}, weight: {}, model: chat-lora-v8}}\n\
         \x20 - name: pool\n\
         \x20   match: {{pathPrefix: /v1}}\n\
         \x20   backends:\n\
         \x20     - {{cohort: stable, url: {pool}, weight: 100}}\n",
        100.0 - stable_weight
    )
}

async fn proxy(adapter: &str, pool: &str, stable_weight: f64) -> common::Proxy {
    let table = weir_proxy::config::file::parse(&yaml(adapter, pool, stable_weight))
        .expect("valid config")
        .table;
    start_proxy(Arc::new(MemorySource::new(table, true)) as Arc<dyn ConfigSource>).await
}

/// Two recorders, `adapter` (behind the model route, all on its canary)
/// and `pool` (everything else), and the proxy in front of them.
async fn recorders() -> (Recorder, Recorder, common::Proxy) {
    let adapter = Recorder::start().await;
    let pool = Recorder::start().await;
    let proxy = proxy(
        &format!("http://{}", adapter.addr),
        &format!("http://{}", pool.addr),
        0.0,
    )
    .await;
    (adapter, pool, proxy)
}

async fn post(listen: SocketAddr, body: impl Into<reqwest::Body>) -> (u16, String) {
    let response = client()
        .post(format!("http://{listen}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the proxy answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// The request head's `content-length`, as the recorder kept it.
fn content_length(head: &str) -> Option<usize> {
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
}

async fn lookups(admin: SocketAddr) -> String {
    metrics(admin)
        .await
        .lines()
        .filter(|l| l.starts_with("weir_proxy_model_lookups_total{"))
        .map(|l| l.replace("weir_proxy_model_lookups_total", ""))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_the_model_reaches_its_cohort_under_the_cohorts_name() {
    let (adapter, pool, proxy) = recorders().await;
    let body = r#"{"model": "chat", "messages":[{"role":"user","content":"the \"model\":\"chat\" field"}]}"#;
    let (status, _) = post(proxy.listen, body).await;
    assert_eq!(status, 200);
    let sent = String::from_utf8(adapter.bodies()[0].clone()).expect("utf-8");
    assert_eq!(sent, body.replacen("\"chat\"", "\"chat-lora-v8\"", 1));
    // The length was changed with the body: the recorder read exactly it.
    assert_eq!(content_length(&adapter.heads()[0]), Some(sent.len()));
    let parsed: serde_json::Value = serde_json::from_str(&sent).expect("still JSON");
    assert_eq!(parsed["model"], "chat-lora-v8");

    // Chunked, in two pieces sent apart: the rewritten start goes as a
    // chunk of its own.
    let mut conn = tokio::net::TcpStream::connect(proxy.listen)
        .await
        .expect("connect");
    let first = br#"{"model":"chat","#;
    let head =
        "POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n";
    let start = format!(
        "{head}{:x}\r\n{}\r\n",
        first.len(),
        String::from_utf8_lossy(first)
    );
    conn.write_all(start.as_bytes()).await.expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    conn.write_all(b"f\r\n\"stream\":false}\r\n0\r\n\r\n")
        .await
        .expect("write");
    let mut answer = [0u8; 12];
    tokio::time::timeout(REQUEST_TIMEOUT, conn.read_exact(&mut answer))
        .await
        .expect("in time")
        .expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 200");
    assert!(adapter.heads()[1].contains("transfer-encoding: chunked"));
    assert_eq!(
        adapter.bodies()[1],
        br#"{"model":"chat-lora-v8","stream":false}"#
    );
    assert!(pool.bodies().is_empty(), "nothing went to the pool");
    let metrics = metrics(proxy.admin).await;
    for line in [
        r#"weir_proxy_route_weight{route="adapter",cohort="stable",model="chat-lora-v7"} 0"#,
        r#"weir_proxy_route_weight{route="adapter",cohort="canary",model="chat-lora-v8"} 100"#,
        r#"weir_proxy_route_weight{route="pool",cohort="stable"} 100"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    assert_eq!(
        lookups(proxy.admin).await,
        r#"{lookup="found"} 2 {lookup="missing"} 0 {lookup="not_string"} 0 {lookup="not_json"} 0 {lookup="duplicate"} 0 {lookup="beyond_read_ahead"} 0"#
    );
}

/// Bodies that do not name the model go on the other route unchanged, and
/// each is counted by what it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_bodies_pass_unchanged_and_are_counted() {
    let (adapter, pool, proxy) = recorders().await;
    let cases: [&[u8]; 4] = [
        br#"{"messages":[{"role":"user","content":"hi"}]}"#,
        br#"{"model":"chat-base","messages":[]}"#,
        br#"{"model":42,"messages":[]}"#,
        b"{\"model\":\"chat\",",
    ];
    for body in cases {
        let (status, _) = post(proxy.listen, body.to_vec()).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(body));
    }
    assert_eq!(pool.bodies(), cases.map(<[u8]>::to_vec).to_vec());
    assert!(adapter.bodies().is_empty());

    // Named twice: which one a server takes is its parser's choice, so the
    // request is refused before anything goes upstream.
    let (status, text) = post(proxy.listen, r#"{"model":"chat","model":"other"}"#).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("names the top-level model twice"), "{text}");
    assert_eq!(pool.bodies().len(), cases.len());
    assert!(adapter.bodies().is_empty());
    // A request without a body is not looked into.
    let response = client()
        .get(format!("http://{}/v1/models", proxy.listen))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(
        lookups(proxy.admin).await,
        r#"{lookup="found"} 1 {lookup="missing"} 1 {lookup="not_string"} 1 {lookup="not_json"} 1 {lookup="duplicate"} 1 {lookup="beyond_read_ahead"} 0"#
    );
}

/// A 2 MiB body is not held: the model is read in the part read ahead
/// (64 KiB) and the rest streams on. Named past that part, it cannot be
/// routed on and the request goes on the other route, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_body_is_routed_on_its_start_and_streamed() {
    let (adapter, pool, proxy) = recorders().await;
    let filler = "x".repeat(2 << 20);
    let first =
        format!(r#"{{"model":"chat","messages":[{{"role":"user","content":"{filler}"}}]}}"#);
    let (status, _) = post(proxy.listen, first.clone()).await;
    assert_eq!(status, 200);
    let sent = adapter.bodies().pop().expect("the adapter got it");
    assert_eq!(sent.len(), first.len() + "-lora-v8".len());
    assert!(sent.starts_with(br#"{"model":"chat-lora-v8","messages""#));
    assert!(sent.ends_with(&first.as_bytes()[first.len() - 100..]));

    let last = format!(r#"{{"messages":[{{"role":"user","content":"{filler}"}}],"model":"chat"}}"#);
    let (status, _) = post(proxy.listen, last.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        pool.bodies().pop().expect("the pool got it"),
        last.as_bytes()
    );
    let counted = lookups(proxy.admin).await;
    assert!(
        counted.contains(r#"{lookup="found"} 1"#)
            && counted.contains(r#"{lookup="beyond_read_ahead"} 1"#),
        "{counted}"
    );
}

/// Against the simulator, which echoes the model it was asked for: clients
/// that ask for `chat` read `chat` in every answer, streamed or not, from
/// either cohort, never the adapter's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_never_see_the_cohorts_model_name() {
    let server = sim("pool", |_| {}).await;
    let proxy = proxy(&server.base_url(), &server.base_url(), 50.0).await;
    let mut cohorts = std::collections::BTreeSet::new();
    for i in 0..24 {
        let stream = i % 2 == 0;
        let body = format!(
            r#"{{"model":"chat","messages":[{{"role":"user","content":"hi"}}],"stream":{stream},"max_tokens":6}}"#
        );
        let response = client()
            .post(format!("http://{}/v1/chat/completions", proxy.listen))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 200);
        cohorts.insert(
            response.headers()[weir_proxy::COHORT_HEADER]
                .to_str()
                .expect("text")
                .to_string(),
        );
        let text = tokio::time::timeout(REQUEST_TIMEOUT, read_body(response))
            .await
            .expect("in time")
            .expect("whole");
        assert!(!text.contains("chat-lora"), "{text}");
        let echoed = if stream {
            text.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter(|d| d.starts_with('{'))
                .map(|d| serde_json::from_str::<serde_json::Value>(d).expect("JSON event"))
                .map(|v| v["model"].clone())
                .collect::<Vec<_>>()
        } else {
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            vec![v["model"].clone()]
        };
        assert!(
            !echoed.is_empty() && echoed.iter().all(|m| m == "chat"),
            "{text}"
        );
    }
    assert_eq!(cohorts.len(), 2, "both cohorts answered: {cohorts:?}");
}
