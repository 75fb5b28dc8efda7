//! Graceful shutdown: stop accepting, let open streams finish, bounded.

mod common;

use std::time::Duration;

use common::{chat, client, fast, post, start, wait_for};
use http_body_util::BodyExt;
use weir_sim::SimConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_finish_and_new_connections_are_refused() {
    let sim = start(SimConfig {
        itl: Duration::from_millis(40),
        tokens: 10,
        ..fast()
    })
    .await;
    let addr = sim.addr();
    let c = client();
    let url = sim.base_url();
    let stream = tokio::spawn({
        let c = c.clone();
        async move {
            common::send(
                &c,
                http::Method::POST,
                &format!("{url}/v1/chat/completions"),
                &chat(true),
            )
            .await
        }
    });
    assert!(wait_for(Duration::from_secs(5), async || sim.running() == 1).await);
    let summary = sim.shutdown().await.expect("shuts down");
    assert_eq!(summary.open_at_shutdown, 1);
    assert!(summary.drained);
    assert_eq!(summary.requests, 1);

    let finished = stream.await.expect("stream task");
    let data = finished.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(data.len(), 10 + 2, "every token, the finish chunk, [DONE]");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_bounds_the_wait() {
    let sim = start(SimConfig {
        itl: Duration::from_millis(100),
        tokens: 1000, // 100 s
        shutdown_grace: Duration::from_millis(200),
        ..fast()
    })
    .await;
    let c = client();
    let request = http::Request::post(format!("{}/v1/chat/completions", sim.base_url()))
        .body(http_body_util::Full::new(bytes::Bytes::from(chat(true))))
        .expect("request");
    let response = c.request(request).await.expect("response");
    let mut body = response.into_body();
    assert!(body.frame().await.is_some());
    let summary = sim.shutdown().await.expect("shuts down");
    assert!(!summary.drained);
    // The cut stream ends without [DONE]: an error or end of body.
    let mut rest = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        rest.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..]));
    }
    assert!(!String::from_utf8_lossy(&rest).contains("[DONE]"));
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let sim = start(fast()).await;
    let addr = sim.addr();
    let c = client();
    assert_eq!(
        post(&c, &sim, "/v1/chat/completions", &chat(false))
            .await
            .status,
        http::StatusCode::OK
    );
    drop(sim);
    assert!(
        wait_for(Duration::from_secs(5), async || {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_like_vllms() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = start(SimConfig {
        keep_alive: Duration::from_millis(200),
        ..fast()
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("connect");
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: sim\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    // Read until the server closes the idle connection (EOF), or give up.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection stayed open");
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
}
