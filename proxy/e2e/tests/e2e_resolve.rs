//! End to end: a backend whose host name does not resolve.
//!
//! Upstream names are resolved without blocking the runtime, and a name
//! that does not resolve is a connect failure like a refused connection:
//! counted against its cohort and retried once on the other cohort, so the
//! client never sees it.

mod common;

use common::{
    Table, chat, client, counts, instant_sim, observations_when, served_by, start_memory_proxy,
};
use weir_proxy::Outcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_canary_counts_as_connect_errors_and_stable_serves() {
    const REQUESTS: u64 = 40;
    let stable = instant_sim("stable").await;
    let canary = instant_sim("canary").await;
    // `.invalid` is reserved (RFC 6761): it never resolves.
    let yaml = Table::new(&stable, &canary, 50.0)
        .yaml()
        .replace(&canary.base_url(), "http://no-such-host.invalid:9");
    let table = weir_proxy::config::file::parse(&yaml)
        .expect("valid config")
        .table;
    let (proxy, _source) = start_memory_proxy(table).await;
    let client = client();
    for _ in 0..REQUESTS {
        let response = chat(&client, proxy.listen, false)
            .send()
            .await
            .expect("the proxy answers");
        assert_eq!(response.status(), 200);
        assert_eq!(served_by(&response), ("stable".into(), "stable".into()));
    }
    // The client can read the last response before the proxy has recorded
    // it (the record follows the last write).
    let snapshot = observations_when(proxy.admin, "every request recorded", |s| {
        counts(s, "stable").get(Outcome::Ok) >= REQUESTS
    })
    .await;
    let (stable_counts, canary_counts) = (counts(&snapshot, "stable"), counts(&snapshot, "canary"));
    assert_eq!(stable_counts.get(Outcome::Ok), REQUESTS);
    let failed = canary_counts.get(Outcome::ConnectError);
    // At 50/50 about half the requests drew the canary first.
    assert!(
        failed > 5 && failed < REQUESTS - 5,
        "{failed} canary connect errors of {REQUESTS}"
    );
    assert_eq!(
        canary_counts.total(),
        failed,
        "nothing but connect errors on the canary"
    );
}
