//! End to end: the canary dies mid-test.
//!
//! Ten long streams run on the canary (forced with the override header)
//! when its server is killed: a simulator with a zero shutdown grace closes
//! its listener and cuts every open connection at once, which is what the
//! proxy sees of a crashed pod (FIN/RST mid-body, then refused connects).
//! The streams must end promptly and visibly broken, count against the
//! canary, and from then on every request must be served by stable, the
//! refused canary connects retried there once and counted as the canary's
//! `connect_error`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{
    REQUEST_TIMEOUT, Table, Z_999, binomial_band, chat, client, counts, observations_when,
    read_body, served_by, sim, start_memory_proxy, stream_complete, stream_sim,
};
use weir_proxy::Outcome;
use weir_test_kit::poll::until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_canary_cuts_its_streams_and_stable_takes_over() {
    const STREAMS: u64 = 10;
    const AFTER: u64 = 400;
    const P: f64 = 0.2;

    let stable = stream_sim("stable", Duration::ZERO, Duration::from_millis(1), 8).await;
    // 100 tokens 50 ms apart: 5 s per stream, far longer than the test
    // needs to kill the server under them.
    let canary = sim("canary", |c| {
        c.ttft = Duration::ZERO;
        c.itl = Duration::from_millis(50);
        c.tokens = 100;
        c.shutdown_grace = Duration::ZERO;
    })
    .await;
    let mut table = Table::new(&stable, &canary, P * 100.0);
    table.override_header = true;
    let (proxy, _source) = start_memory_proxy(table.table()).await;
    let (listen, admin_addr) = (proxy.listen, proxy.admin);

    // Ten canary streams, each past its first chunk before the kill.
    let streaming = Arc::new(AtomicU64::new(0));
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..STREAMS {
        let (client, streaming) = (client(), Arc::clone(&streaming));
        streams.spawn(async move {
            let mut response = chat(&client, listen, true)
                .header(weir_proxy::COHORT_HEADER, "canary")
                .send()
                .await
                .expect("the proxy answers");
            assert_eq!(response.status(), 200);
            assert_eq!(served_by(&response), ("canary".into(), "canary".into()));
            let first = response
                .chunk()
                .await
                .expect("a first chunk")
                .expect("the stream is open");
            streaming.fetch_add(1, Ordering::AcqRel);
            let rest = read_body(response).await;
            (String::from_utf8_lossy(&first).into_owned(), rest)
        });
    }
    until("ten open canary streams", REQUEST_TIMEOUT, || {
        let streaming = Arc::clone(&streaming);
        async move { (streaming.load(Ordering::Acquire) == STREAMS).then_some(()) }
    })
    .await;
    assert_eq!(canary.running(), STREAMS);
    assert_eq!(proxy.active(), STREAMS as usize);

    let killed = canary
        .shutdown()
        .await
        .expect("the canary's server task ends");
    assert_eq!(killed.open_at_shutdown, STREAMS);
    assert!(!killed.drained, "the streams were cut, not drained");

    // Every client stream ends (no hang) and is visibly incomplete: a
    // transport error, or a body without `data: [DONE]`.
    let mut cut = 0;
    let mut errored = 0;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(done) = streams.join_next().await {
            let (first, rest) = done.expect("a stream task finished");
            let body = match rest {
                Ok(rest) => first + &rest,
                Err((rest, _)) => {
                    errored += 1;
                    first + &rest
                }
            };
            assert!(!stream_complete(&body), "a cut stream looked complete");
            cut += 1;
        }
    })
    .await;
    assert!(ended.is_ok(), "the cut streams did not end within 10 s");
    assert_eq!(cut, STREAMS);
    println!("kill: {cut} canary streams cut, {errored} with a client-side transport error");

    // The proxy counts all ten against the canary, none as ok.
    let snapshot = observations_when(admin_addr, "the cut streams counted", |s| {
        counts(s, "canary").total() >= STREAMS
    })
    .await;
    let before = counts(&snapshot, "canary");
    assert_eq!(before.total(), STREAMS, "{before:?}");
    assert_eq!(before[Outcome::StreamError], STREAMS, "{before:?}");

    // From now on stable serves everything at 80/20; a request drawn for the
    // canary is refused at connect and retried once on stable.
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let client = client();
        let mine = (w..AFTER).step_by(8).count();
        workers.spawn(async move {
            for _ in 0..mine {
                let response = chat(&client, listen, true)
                    .send()
                    .await
                    .expect("the proxy answers");
                assert_eq!(response.status(), 200);
                assert_eq!(served_by(&response), ("stable".into(), "stable".into()));
                let body = read_body(response).await.expect("a complete stream");
                assert!(stream_complete(&body), "{body:?}");
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("every request was served by stable");
    }
    assert_eq!(stable.requests(), AFTER);

    let snapshot = observations_when(admin_addr, "the new requests counted", |s| {
        counts(s, "stable").total() >= AFTER
    })
    .await;
    let (s, c) = (counts(&snapshot, "stable"), counts(&snapshot, "canary"));
    assert_eq!((s[Outcome::Ok], s.total()), (AFTER, AFTER), "{s:?}");
    let refused = c[Outcome::ConnectError];
    assert_eq!(
        c.total(),
        STREAMS + refused,
        "the canary gained only connect errors: {c:?}"
    );
    // Each new request drew the canary with probability 0.2: Binomial(400,
    // 0.2), mean 80, sd 8, 99.9% band [54, 106].
    let (lo, hi) = binomial_band(AFTER, P, Z_999);
    assert_eq!((lo, hi), (54, 106), "band arithmetic");
    assert!(
        (lo..=hi).contains(&refused),
        "{refused} of {AFTER} requests drew the dead canary; 99.9% band [{lo}, {hi}]"
    );
    println!(
        "kill: then {AFTER} requests all on stable, {refused} refused by the canary first (band [{lo}, {hi}])"
    );
}
