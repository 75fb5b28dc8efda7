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

use common::kube::{
    PATIENCE, by_cohort, create_canary, host_ip, put_endpoint, route_name, routes, split,
    start_kube_proxy, traffic, wait_for_route, write_traffic,
};
use common::{Z_999, binomial_band, sim_at, wait_for};
use weir_crds::Cohort;
use weir_envtest::TestEnv;

const N: usize = 400;

fn assert_in_band(count: u64, p: f64, what: &str) {
    let (lo, hi) = binomial_band(N as u64, p, Z_999);
    assert!(
        (lo..=hi).contains(&count),
        "{what}: {count} of {N}, outside [{lo}, {hi}] for p = {p}"
    );
}

/// Runs a blocking envtest call off the runtime (it waits for the server).
async fn apiserver(start: bool) {
    tokio::task::spawn_blocking(move || {
        let server = weir_envtest::server();
        if start {
            server.start_apiserver()
        } else {
            server.stop_apiserver()
        }
    })
    .await
    .expect("the envtest call ends")
    .unwrap_or_else(|e| {
        panic!(
            "{} the API server: {e}",
            if start { "starting" } else { "stopping" }
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_table_serves_through_an_outage_and_changes_apply_after_it() {
    let env = TestEnv::new("kube-outage").await;
    let instant = |c: &mut weir_sim::SimConfig| {
        c.ttft = std::time::Duration::ZERO;
        c.itl = std::time::Duration::ZERO;
        c.tokens = 1;
    };
    let stable = sim_at(host_ip(), "stable-0", instant).await;
    let canary = sim_at(host_ip(), "canary-0", instant).await;
    let kp = start_kube_proxy(&env).await;
    let (listen, admin) = (kp.proxy.listen, kp.proxy.admin);
    let canaries = create_canary(&env).await;
    put_endpoint(&env, Cohort::Stable, &stable, true).await;
    put_endpoint(&env, Cohort::Canary, &canary, true).await;
    write_traffic(&canaries, &traffic(1, 20.0)).await;
    let route = route_name(&env);
    wait_for_route(admin, &route, 1).await;
    assert_eq!(routes(admin).await["lastError"], serde_json::Value::Null);

    apiserver(false).await;
    let error = wait_for("the outage in /v1/routes lastError", PATIENCE, || async {
        let error = routes(admin).await["lastError"].as_str()?.to_string();
        Some(error)
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
    let seen = split(listen, N, 4).await;
    assert_in_band(
        by_cohort(&seen, "canary"),
        0.2,
        "canary at 20% during the outage",
    );
    assert_eq!(wait_for_route(admin, &route, 1).await["generation"], 1);

    apiserver(true).await;
    write_traffic(&canaries, &traffic(2, 80.0)).await;
    wait_for_route(admin, &route, 2).await;
    wait_for("lastError to clear", PATIENCE, || async {
        routes(admin).await["lastError"].is_null().then_some(())
    })
    .await;
    let seen = split(listen, N, 4).await;
    assert_in_band(
        by_cohort(&seen, "canary"),
        0.8,
        "canary at 80% after the outage",
    );
}
