//! End to end: graceful shutdown of an in-process proxy.
//!
//! With 50 streams open, `Running::shutdown` turns `/readyz` to 503, stops
//! accepting connections, lets all 50 finish and reports nothing
//! abandoned. With nothing open it returns at once instead of sitting out
//! its 30 s grace period.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{
    REQUEST_TIMEOUT, Table, chat, client, instant_sim, read_body, served_by, start_memory_proxy,
    stream_complete, stream_sim, timeouts,
};
use weir_proxy::Outcome;
use weir_test_kit::poll::until;

/// Whether a new TCP connection to `addr` is refused.
async fn refused(addr: SocketAddr) -> bool {
    matches!(
        tokio::net::TcpStream::connect(addr).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

async fn readyz(client: &reqwest::Client, admin: SocketAddr) -> u16 {
    client
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .expect("the admin API answers while draining")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_fifty_open_streams() {
    const STREAMS: u64 = 50;
    // 100 tokens 40 ms apart: each stream runs 4 s, so the checks made
    // during the drain happen while every stream is still open.
    let itl = Duration::from_millis(40);
    let stable = stream_sim("stable", Duration::ZERO, itl, 100).await;
    let canary = stream_sim("canary", Duration::ZERO, itl, 100).await;
    let (proxy, _source) = start_memory_proxy(Table::new(&stable, &canary, 20.0).table()).await;
    let admin = client();
    assert_eq!(readyz(&admin, proxy.admin).await, 200);

    let open = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..STREAMS {
        let (client, open, finished) = (client(), Arc::clone(&open), Arc::clone(&finished));
        let listen = proxy.listen;
        streams.spawn(async move {
            let mut response = chat(&client, listen, true)
                .send()
                .await
                .expect("the proxy answers");
            assert_eq!(response.status(), 200);
            let (cohort, sim) = served_by(&response);
            assert_eq!(cohort, sim);
            let first = response
                .chunk()
                .await
                .expect("a first chunk")
                .expect("the stream is open");
            open.fetch_add(1, Ordering::AcqRel);
            let rest = read_body(response).await;
            finished.fetch_add(1, Ordering::AcqRel);
            rest.map(|rest| String::from_utf8_lossy(&first).into_owned() + &rest)
                .map_err(|(_, e)| e.to_string())
        });
    }
    until("fifty open streams", REQUEST_TIMEOUT, || {
        let open = Arc::clone(&open);
        async move { (open.load(Ordering::Acquire) == STREAMS).then_some(()) }
    })
    .await;
    assert_eq!(proxy.active(), STREAMS as usize);

    let (listen, admin_addr) = (proxy.listen, proxy.admin);
    let observations = Arc::clone(&proxy.observations);
    let table = Arc::clone(&proxy.table);
    let grace = timeouts().grace;
    let drain = tokio::spawn(proxy.shutdown());

    until("/readyz to turn 503", REQUEST_TIMEOUT, || {
        let admin = admin.clone();
        async move { (readyz(&admin, admin_addr).await == 503).then_some(()) }
    })
    .await;
    // The listener closes once the accept loop sees the signal.
    until("new connections refused", REQUEST_TIMEOUT, || async move {
        refused(listen).await.then_some(())
    })
    .await;
    assert_eq!(
        finished.load(Ordering::Acquire),
        0,
        "the checks above ran while every stream was open"
    );
    assert_eq!(readyz(&admin, admin_addr).await, 503, "still draining");
    assert!(!drain.is_finished(), "the drain waits for the open streams");

    let drained = tokio::time::timeout(Duration::from_secs(25), drain)
        .await
        .expect("the drain ends once the streams do, before the grace period")
        .expect("the drain task");
    assert_eq!(drained.abandoned, 0);
    assert!(drained.took < grace, "{drained:?}");

    let mut complete = 0;
    while let Some(done) = streams.join_next().await {
        let body = done
            .expect("a stream task")
            .expect("the stream was not cut by the drain");
        assert!(stream_complete(&body), "{body:?}");
        complete += 1;
    }
    assert_eq!(complete, STREAMS);
    let snapshot = observations.snapshot(&table.load());
    let ok: u64 = snapshot
        .cohorts
        .iter()
        .map(|c| c.requests[Outcome::Ok])
        .sum();
    let all: u64 = snapshot.cohorts.iter().map(|c| c.requests.total()).sum();
    assert_eq!((ok, all), (STREAMS, STREAMS), "{snapshot:?}");
    assert!(refused(listen).await, "still refusing after the drain");
    println!(
        "drain: {complete} streams completed, abandoned {}, took {:?}",
        drained.abandoned, drained.took
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_shutdown_returns_without_waiting_for_the_grace_period() {
    let stable = instant_sim("stable").await;
    let canary = instant_sim("canary").await;
    let (proxy, _source) = start_memory_proxy(Table::new(&stable, &canary, 20.0).table()).await;
    // Serve a few requests first; the client keeps its connection open
    // (idle keep-alive) through the shutdown.
    let client = client();
    for _ in 0..5 {
        let response = chat(&client, proxy.listen, false)
            .send()
            .await
            .expect("the proxy answers");
        assert_eq!(response.status(), 200);
        response.bytes().await.expect("a body");
    }
    let listen = proxy.listen;
    until("the requests to finish", REQUEST_TIMEOUT, || {
        let active = proxy.active();
        async move { (active == 0).then_some(()) }
    })
    .await;

    let grace = timeouts().grace;
    assert_eq!(grace, Duration::from_secs(30));
    let drained = tokio::time::timeout(Duration::from_secs(10), proxy.shutdown())
        .await
        .expect("an idle proxy shuts down without sitting out its 30 s grace");
    assert_eq!(drained.abandoned, 0);
    assert!(drained.took < grace, "{drained:?}");
    assert!(refused(listen).await, "the listener is closed");
    println!("idle drain: took {:?}", drained.took);
}
