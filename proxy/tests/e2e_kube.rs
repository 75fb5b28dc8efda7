//! End to end in Kubernetes mode: a real kube-apiserver (weir-envtest), a
//! Canary whose `status.traffic` is written through the status subresource,
//! EndpointSlices of its Services pointing at simulators on the host's IP,
//! and the proxy serving a `KubeSource`, driven with real HTTP requests.
//!
//! - before any Canary the table is empty (404), and once a Canary has
//!   traffic its split follows the weights; a weight change is applied and
//!   its generation shows in `/v1/routes` and `/v1/observations`;
//! - requests spread over the ready endpoints of one Service, an endpoint
//!   marked not ready receives nothing, and readiness changes apply;
//! - a cohort without a ready endpoint fails over to the other cohort and
//!   is counted as a connect error against its own.
//!
//! The API-server outage is in `e2e_kube_outage.rs` (it stops the server
//! every test of its binary shares).

mod common;

use common::kube::{
    KubeProxy, PATIENCE, by_cohort, by_sim, create_canary, endpoints_of, host_ip, put_endpoint,
    route_name, split, start_kube_proxy, traffic, wait_for_route, write_traffic,
};
use common::{Z_999, binomial_band, chat, client, observations, sim_at, wait_for};
use weir_crds::Cohort;
use weir_envtest::TestEnv;
use weir_proxy::ConfigSource;

/// Requests per measured split.
const N: usize = 400;

async fn instant_sim_on_host(name: &str) -> weir_sim::SimHandle {
    sim_at(host_ip(), name, |c| {
        c.ttft = std::time::Duration::ZERO;
        c.itl = std::time::Duration::ZERO;
        c.tokens = 1;
    })
    .await
}

fn assert_in_band(count: u64, n: usize, p: f64, what: &str) {
    let (lo, hi) = binomial_band(n as u64, p, Z_999);
    assert!(
        (lo..=hi).contains(&count),
        "{what}: {count} of {n}, outside [{lo}, {hi}] for p = {p}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_follows_status_traffic_and_its_generation_is_reported() {
    let env = TestEnv::new("kube-split").await;
    let stable = instant_sim_on_host("stable-0").await;
    let canary = instant_sim_on_host("canary-0").await;
    let kp: KubeProxy = start_kube_proxy(&env).await;
    let (listen, admin) = (kp.proxy.listen, kp.proxy.admin);

    // No Canary yet: an empty table, and every request is the proxy's 404.
    let response = chat(&client(), listen, false)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 404);
    assert_eq!(
        common::kube::routes(admin).await["table"]["routes"],
        serde_json::json!([])
    );

    let canaries = create_canary(&env).await;
    put_endpoint(&env, Cohort::Stable, &stable, true).await;
    put_endpoint(&env, Cohort::Canary, &canary, true).await;
    write_traffic(&canaries, &traffic(1, 20.0)).await;
    let route = route_name(&env);
    let served = wait_for_route(admin, &route, 1).await;
    assert_eq!(endpoints_of(&served, "stable"), [stable.addr().to_string()]);
    assert_eq!(
        served["backends"][0]["url"],
        format!("http://chat-stable.{}.svc:8000", env.namespace)
    );

    let seen = split(listen, N, 4).await;
    assert_in_band(by_cohort(&seen, "canary"), N, 0.2, "canary at 20%");
    assert_eq!(
        by_cohort(&seen, "canary") + by_cohort(&seen, "stable"),
        N as u64
    );
    assert_eq!(by_sim(&seen, "canary-0"), by_cohort(&seen, "canary"));

    write_traffic(&canaries, &traffic(2, 70.0)).await;
    let served = wait_for_route(admin, &route, 2).await;
    assert_eq!(served["backends"][1]["weight"], 70.0);
    let snapshot = observations(&client(), admin).await;
    assert_eq!(
        snapshot.routes.get(&route),
        Some(&2),
        "{:?}",
        snapshot.routes
    );
    let seen = split(listen, N, 4).await;
    assert_in_band(by_cohort(&seen, "canary"), N, 0.7, "canary at 70%");

    // The controller owns the weights here.
    let response = client()
        .put(format!("http://{admin}/v1/routes/{route}/weights"))
        .json(&serde_json::json!({"weights": {"stable": 100, "canary": 0}}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 409);
    let text = response.text().await.expect("a body");
    assert!(text.contains("weir promote / abort / pause"), "{text}");
    assert!(kp.source.last_error().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_over_ready_endpoints_and_skip_unready_ones() {
    let env = TestEnv::new("kube-endpoints").await;
    let pods = [
        instant_sim_on_host("stable-a").await,
        instant_sim_on_host("stable-b").await,
        instant_sim_on_host("stable-c").await,
    ];
    let canary = instant_sim_on_host("canary-0").await;
    let kp = start_kube_proxy(&env).await;
    let (listen, admin) = (kp.proxy.listen, kp.proxy.admin);
    let canaries = create_canary(&env).await;
    put_endpoint(&env, Cohort::Stable, &pods[0], true).await;
    put_endpoint(&env, Cohort::Stable, &pods[1], true).await;
    put_endpoint(&env, Cohort::Stable, &pods[2], false).await;
    put_endpoint(&env, Cohort::Canary, &canary, true).await;
    write_traffic(&canaries, &traffic(1, 0.0)).await;
    let route = route_name(&env);
    let addr = |i: usize| pods[i].addr().to_string();
    wait_for(
        "stable-a and stable-b, not stable-c, as endpoints",
        PATIENCE,
        || async {
            let served = wait_for_route(admin, &route, 1).await;
            let mut want = vec![addr(0), addr(1)];
            want.sort();
            (endpoints_of(&served, "stable") == want).then_some(())
        },
    )
    .await;

    let seen = split(listen, N, 1).await;
    // Sequential requests find every endpoint idle: the first of the two
    // candidates wins, uniformly.
    assert_in_band(by_sim(&seen, "stable-a"), N, 0.5, "stable-a of two");
    assert_in_band(by_sim(&seen, "stable-b"), N, 0.5, "stable-b of two");
    assert_eq!(by_sim(&seen, "stable-c"), 0, "not ready: no request");
    assert_eq!(pods[2].requests(), 0);

    // stable-a goes unready, stable-c becomes ready.
    put_endpoint(&env, Cohort::Stable, &pods[0], false).await;
    put_endpoint(&env, Cohort::Stable, &pods[2], true).await;
    wait_for("stable-b and stable-c as endpoints", PATIENCE, || async {
        let served = wait_for_route(admin, &route, 1).await;
        let mut want = vec![addr(1), addr(2)];
        want.sort();
        (endpoints_of(&served, "stable") == want).then_some(())
    })
    .await;
    let before = pods[0].requests();
    let seen = split(listen, N, 1).await;
    assert_eq!(by_sim(&seen, "stable-a"), 0);
    assert_eq!(pods[0].requests(), before);
    assert_in_band(by_sim(&seen, "stable-c"), N, 0.5, "stable-c of two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cohort_without_ready_endpoints_fails_over_and_counts_against_itself() {
    let env = TestEnv::new("kube-no-endpoints").await;
    let stable = instant_sim_on_host("stable-0").await;
    let unready = instant_sim_on_host("canary-0").await;
    let kp = start_kube_proxy(&env).await;
    let (listen, admin) = (kp.proxy.listen, kp.proxy.admin);
    let canaries = create_canary(&env).await;
    put_endpoint(&env, Cohort::Stable, &stable, true).await;
    put_endpoint(&env, Cohort::Canary, &unready, false).await;
    write_traffic(&canaries, &traffic(1, 50.0)).await;
    let route = route_name(&env);
    let served = wait_for_route(admin, &route, 1).await;
    assert_eq!(endpoints_of(&served, "canary"), Vec::<String>::new());

    let seen = split(listen, N, 4).await;
    assert_eq!(by_cohort(&seen, "stable"), N as u64, "all served by stable");
    assert_eq!(unready.requests(), 0);
    let snapshot = observations(&client(), admin).await;
    let on = |cohort: &str| {
        snapshot
            .cohorts
            .iter()
            .filter(|c| c.route == route && c.cohort.as_str() == cohort)
            .map(|c| c.requests)
            .fold(weir_proxy::observe::RequestCounts::default(), |mut a, c| {
                a.ok += c.ok;
                a.connect_error += c.connect_error;
                a
            })
    };
    let (canary, stable) = (on("canary"), on("stable"));
    assert_eq!(canary.ok, 0);
    assert_eq!(stable.ok, N as u64);
    // Every request the draw sent to the canary is a connect error there.
    assert_in_band(canary.connect_error, N, 0.5, "connect errors on the canary");
}
