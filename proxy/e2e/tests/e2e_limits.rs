//! Limits that keep one client, or many, from holding the proxy, and the
//! operator's way out when the config file is broken: the request-head
//! deadline on both listeners, the admin API's connection cap, and a
//! weight change that goes into force while the file on disk is invalid.

mod common;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{
    REQUEST_TIMEOUT, Table, client, count_split, instant_sim, start_proxy, start_proxy_with,
};
use weir_proxy::admin::ADMIN_MAX_CONNECTIONS;
use weir_proxy::{ConfigSource, FileSource, MemorySource, Settings};
use weir_sim::SimHandle;
use weir_test_kit::poll::until;

/// A one-second request-head deadline.
fn short_head_deadline(settings: &mut Settings) {
    settings.timeouts.header = Duration::from_secs(1);
}

/// A proxy over two instant sims, with `configure`d settings.
async fn proxy_with(configure: impl FnOnce(&mut Settings)) -> (common::Proxy, [SimHandle; 2]) {
    let stable = instant_sim("stable").await;
    let canary = instant_sim("canary").await;
    let source = Arc::new(MemorySource::new(
        Table::new(&stable, &canary, 20.0).table(),
        true,
    ));
    (start_proxy_with(source, configure).await, [stable, canary])
}

/// Reads until the peer closes the connection (end of stream or reset),
/// returning what it sent.
async fn until_closed(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Waits until a new connection gets `200` for `GET url`.
async fn until_served(what: &str, url: String) {
    let client = client();
    until(what, REQUEST_TIMEOUT, || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client.get(url).send().await.ok()?;
            (response.status() == 200).then_some(())
        }
    })
    .await;
}

/// Longest a test waits for the proxy to close a connection it should
/// close after one second: far beyond the deadline, so only a connection
/// the proxy keeps fails the test.
const CLOSE_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_request_head_is_cut_at_the_deadline() {
    let (proxy, _sims) = proxy_with(short_head_deadline).await;
    let conn = TcpStream::connect(proxy.listen).await.expect("connect");
    let (mut read, mut write) = conn.into_split();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    write
        .write_all(b"GET /v1/models HTTP/1.1\r\nhost: chat\r\nx-slow: ")
        .await
        .expect("the head starts");
    // One byte every 100 ms, never the end of the head: each read brings
    // something, so only a deadline on the whole head cuts it.
    let trickle = async {
        loop {
            if write.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = trickle => {}
        _ = tokio::time::sleep(CLOSE_WITHIN) => {}
    }
    tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the proxy closed the trickling connection")
        .expect("the reader ends");
    // The proxy still serves others.
    let response = client()
        .get(format!("http://{}/v1/models", proxy.listen))
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_closes_connections_that_send_no_request() {
    let (proxy, _sims) = proxy_with(short_head_deadline).await;

    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(proxy.admin).await.expect("connect");
    tokio::time::timeout(CLOSE_WITHIN, until_closed(&mut silent))
        .await
        .expect("a silent admin connection is closed");

    // A kept-alive connection, idle after one answer.
    let mut idle = TcpStream::connect(proxy.admin).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\n\r\n")
        .await
        .expect("send");
    let answer = tokio::time::timeout(CLOSE_WITHIN, until_closed(&mut idle))
        .await
        .expect("an idle admin connection is closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_connections_beyond_its_cap() {
    let (proxy, _sims) = proxy_with(|_| {}).await;
    // Fill every slot with a connection the admin API has answered once
    // (so it was accepted and holds its slot) and that stays open.
    let mut held = Vec::new();
    for _ in 0..ADMIN_MAX_CONNECTIONS {
        let mut conn = TcpStream::connect(proxy.admin).await.expect("connect");
        conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\n\r\n")
            .await
            .expect("send");
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.ends_with(b"ok\n") {
            let n = tokio::time::timeout(REQUEST_TIMEOUT, conn.read(&mut buf))
                .await
                .expect("an answer")
                .expect("read");
            assert!(n > 0, "a connection within the cap is served");
            answer.extend_from_slice(&buf[..n]);
        }
        held.push(conn);
    }
    let mut extra = TcpStream::connect(proxy.admin).await.expect("connect");
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\n\r\n")
        .await;
    let got = tokio::time::timeout(REQUEST_TIMEOUT, until_closed(&mut extra))
        .await
        .expect("the connection over the cap is closed at once");
    assert!(got.is_empty(), "and not served: {got:?}");

    // A freed slot serves a new connection.
    drop(held.pop());
    until_served(
        "the admin API to serve a new connection",
        format!("http://{}/healthz", proxy.admin),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_beyond_the_cap_are_closed_at_once() {
    let (proxy, _sims) = proxy_with(|s| s.max_connections = Some(4)).await;
    // Four connections that send nothing hold the four slots while they
    // wait for a request head.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(proxy.listen).await.expect("connect"));
    }
    until("four connections to be held", REQUEST_TIMEOUT, || async {
        (proxy.connections() == 4).then_some(())
    })
    .await;
    let mut extra = TcpStream::connect(proxy.listen).await.expect("connect");
    let _ = extra
        .write_all(b"GET /v1/models HTTP/1.1\r\nhost: chat\r\n\r\n")
        .await;
    let got = tokio::time::timeout(REQUEST_TIMEOUT, until_closed(&mut extra))
        .await
        .expect("the fifth connection is closed at once");
    assert!(
        got.is_empty(),
        "and not served: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(proxy.connections(), 4);

    // One held connection serves a request: a slot is not a refusal.
    let held_one = &mut held[0];
    held_one
        .write_all(b"GET /v1/models HTTP/1.1\r\nhost: chat\r\nconnection: close\r\n\r\n")
        .await
        .expect("send");
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, until_closed(held_one))
        .await
        .expect("answered and closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Its slot is free again: a new client is served.
    until_served(
        "a new client to be served",
        format!("http://{}/v1/models", proxy.listen),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_moves_to_stable_while_the_config_file_is_broken() {
    let stable = instant_sim("stable").await;
    let canary = instant_sim("canary").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.yaml");
    let yaml = Table::new(&stable, &canary, 50.0).yaml();
    std::fs::write(&path, &yaml).expect("write");
    let (source, _) = FileSource::open(&path).expect("valid");
    let source = Arc::new(source);
    let proxy = start_proxy(Arc::clone(&source) as Arc<dyn ConfigSource>).await;

    // Someone breaks the file; the proxy refuses it and keeps 50/50.
    let broken = format!("{yaml}  - this is not a route\n");
    std::fs::write(&path, &broken).expect("write");
    source.poll();
    assert!(source.last_error().is_some(), "the broken file is refused");

    // The emergency: everything to stable.
    let response = client()
        .put(format!("http://{}/v1/routes/chat/weights", proxy.admin))
        .json(&serde_json::json!({ "weights": { "stable": 100, "canary": 0 } }))
        .send()
        .await
        .expect("the admin API answers");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("JSON");
    let last_error = body["lastError"].as_str().expect("lastError says why");
    assert!(
        last_error.starts_with("the new weights are in force but not saved to "),
        "{last_error}"
    );
    let split = count_split(proxy.listen, 200, 8).await;
    let on_canary: u64 = split
        .iter()
        .filter(|((cohort, _), _)| cohort == "canary")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(on_canary, 0, "{split:?}");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        broken,
        "the file is left as it was"
    );
}
