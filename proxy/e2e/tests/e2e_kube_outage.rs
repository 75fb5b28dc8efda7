//! End to end in Kubernetes mode: the API server goes away and comes back.
//!
//! While kube-apiserver is stopped the proxy keeps serving its last table
//! and says in `/v1/routes` since when and why it cannot watch; once the
//! server is back, a weight change made after the restart is applied and
//! the error clears.
//!
//! A binary of its own: stopping the API server takes it from every test
//! of the binary.

mod common;

use common::kube::{PATIENCE, by_cohort, routes, scene, traffic, wait_for_route, write_traffic};
use common::{assert_in_band, count_split};
use weir_envtest::TestEnv;
use weir_test_kit::poll::until;

const N: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_table_serves_through_an_outage_and_changes_apply_after_it() {
    let env = TestEnv::new("kube-outage").await;
    let s = scene(&env, 20.0, true).await;
    assert_eq!(routes(s.admin).await["lastError"], serde_json::Value::Null);

    weir_envtest::stop_apiserver().await;
    let error = until("the outage in /v1/routes lastError", PATIENCE, || async {
        Some(routes(s.admin).await["lastError"].as_str()?.to_string())
    })
    .await;
    assert!(
        error.starts_with("cannot watch the Kubernetes API since 20"),
        "{error}"
    );
    assert!(
        error.contains("the last good route table stays in service"),
        "{error}"
    );
    println!("outage reported as: {error}");
    // Still serving the last table, split as before.
    let seen = count_split(s.listen, N, 4).await;
    assert_in_band(
        by_cohort(&seen, "canary"),
        N,
        0.2,
        "canary at 20% during the outage",
    );
    assert_eq!(wait_for_route(s.admin, &s.route, 1).await["generation"], 1);

    weir_envtest::start_apiserver().await;
    write_traffic(&s.canaries, &traffic(2, 80.0)).await;
    wait_for_route(s.admin, &s.route, 2).await;
    until("lastError to clear", PATIENCE, || async {
        routes(s.admin).await["lastError"].is_null().then_some(())
    })
    .await;
    let seen = count_split(s.listen, N, 4).await;
    assert_in_band(
        by_cohort(&seen, "canary"),
        N,
        0.8,
        "canary at 80% after the outage",
    );
}
