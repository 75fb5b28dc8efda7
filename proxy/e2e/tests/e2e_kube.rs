//! End to end in Kubernetes mode: a real kube-apiserver (weir-envtest), a
//! Canary whose `status.traffic` is written through the status subresource,
//! EndpointSlices of its Services pointing at simulators on the host's IP,
//! and the proxy serving a `KubeSource`, driven with real HTTP requests.
//!
//! - a namespace without Canaries is an empty table: every request is the
//!   proxy's 404;
//! - the split follows the weights; a weight change is applied and its
//!   generation shows in `/v1/routes` and `/v1/observations`;
//! - requests spread over the ready endpoints of one Service, an endpoint
//!   marked not ready receives nothing, and readiness changes apply;
//! - a cohort without a ready endpoint fails over to the other cohort and
//!   is counted as a connect error against its own;
//! - an endpoint that refuses connections (a pod that began terminating
//!   while its slice still names it) is stepped past to another of its
//!   cohort, uncounted; a cohort whose endpoints all refuse fails over.
//!
//! The API-server outage is in `e2e_kube_outage.rs` (it stops the server
//! every test of its binary shares).
//!
//! Stand-ins, on purpose: these tests write the Canary's traffic and the
//! Services' EndpointSlices themselves (on an API server without a
//! controller-manager) because what they test is how the proxy follows
//! exactly those objects, state by state (an endpoint not ready, a cohort
//! with none, a weight change at a chosen moment), which pods and real
//! controllers would only produce at moments a test cannot pick. The
//! proxy on slices written by the real EndpointSlice controller, for pods
//! that run, is `tests/nodeagent/tests/weir_on_pods.rs` and the cli's
//! `kube_fullstack.rs`.

mod common;

use common::kube::{
    PATIENCE, by_cohort, by_sim, create_canary, endpoints_of, host_sim, put_endpoint,
    put_endpoint_at, route_name, routes, scene, start_kube_proxy, traffic, wait_for_route,
    write_traffic,
};
use common::{
    assert_in_band, chat, client, count_split, counter, metrics, observations, observations_when,
};
use weir_analysis::observations::Snapshot;
use weir_crds::Cohort;
use weir_envtest::TestEnv;
use weir_proxy::{ConfigSource, Outcome};
use weir_test_kit::poll::until;

/// Requests per measured split.
const N: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_without_canaries_is_an_empty_table_of_404s() {
    let env = TestEnv::new("kube-empty").await;
    let kp = start_kube_proxy(&env).await;
    let response = chat(&client(), kp.proxy.listen, false)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 404);
    let text = response.text().await.expect("a body");
    assert!(text.contains("no route matches"), "{text}");
    let routes = routes(kp.proxy.admin).await;
    assert_eq!(routes["table"]["routes"], serde_json::json!([]));
    assert_eq!(routes["lastError"], serde_json::Value::Null);
    assert!(
        routes["source"]
            .as_str()
            .is_some_and(|s| s.contains(&env.namespace)),
        "{routes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_follows_status_traffic_and_its_generation_is_reported() {
    let env = TestEnv::new("kube-split").await;
    let s = scene(&env, 20.0, true).await;
    let served = wait_for_route(s.admin, &s.route, 1).await;
    assert_eq!(
        endpoints_of(&served, "stable"),
        [s.stable.addr().to_string()]
    );
    assert_eq!(
        served["backends"][0]["url"],
        format!("http://chat-stable.{}.svc:8000", env.namespace)
    );

    let seen = count_split(s.listen, N, 4).await;
    assert_in_band(by_cohort(&seen, "canary"), N, 0.2, "canary at 20%");
    assert_eq!(
        by_cohort(&seen, "canary") + by_cohort(&seen, "stable"),
        N as u64
    );
    assert_eq!(by_sim(&seen, "canary-0"), by_cohort(&seen, "canary"));

    write_traffic(&s.canaries, &traffic(2, 70.0)).await;
    let served = wait_for_route(s.admin, &s.route, 2).await;
    assert_eq!(served["backends"][1]["weight"], 70.0);
    let snapshot = observations(&client(), s.admin).await;
    assert_eq!(
        snapshot.routes.get(&s.route),
        Some(&2),
        "{:?}",
        snapshot.routes
    );
    let seen = count_split(s.listen, N, 4).await;
    assert_in_band(by_cohort(&seen, "canary"), N, 0.7, "canary at 70%");

    // The controller owns the weights here.
    let response = client()
        .put(format!("http://{}/v1/routes/{}/weights", s.admin, s.route))
        .json(&serde_json::json!({"weights": {"stable": 100, "canary": 0}}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 409);
    let text = response.text().await.expect("a body");
    assert!(text.contains("weir promote / abort / pause"), "{text}");
    assert!(s.kp.source.last_error().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_over_ready_endpoints_and_skip_unready_ones() {
    let env = TestEnv::new("kube-endpoints").await;
    let pods = [
        host_sim("stable-a").await,
        host_sim("stable-b").await,
        host_sim("stable-c").await,
    ];
    let canary = host_sim("canary-0").await;
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
    let endpoints_become = |want: [usize; 2]| {
        let route = route.clone();
        let mut want = want.map(addr).to_vec();
        want.sort();
        async move {
            until(&format!("endpoints {want:?}"), PATIENCE, || async {
                let served = wait_for_route(admin, &route, 1).await;
                (endpoints_of(&served, "stable") == want).then_some(())
            })
            .await;
        }
    };
    endpoints_become([0, 1]).await;

    let seen = count_split(listen, N, 1).await;
    // Sequential requests find every endpoint idle: the first of the two
    // candidates wins, uniformly.
    assert_in_band(by_sim(&seen, "stable-a"), N, 0.5, "stable-a of two");
    assert_in_band(by_sim(&seen, "stable-b"), N, 0.5, "stable-b of two");
    assert_eq!(by_sim(&seen, "stable-c"), 0, "not ready: no request");
    assert_eq!(pods[2].requests(), 0);

    // stable-a goes unready, stable-c becomes ready.
    put_endpoint(&env, Cohort::Stable, &pods[0], false).await;
    put_endpoint(&env, Cohort::Stable, &pods[2], true).await;
    endpoints_become([1, 2]).await;
    let before = pods[0].requests();
    let seen = count_split(listen, N, 1).await;
    assert_eq!(by_sim(&seen, "stable-a"), 0);
    assert_eq!(pods[0].requests(), before);
    assert_in_band(by_sim(&seen, "stable-c"), N, 0.5, "stable-c of two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_endpoint_is_stepped_past_within_its_cohort_before_any_failover() {
    let env = TestEnv::new("kube-refusing").await;
    let alive = host_sim("stable-a").await;
    let canary = host_sim("canary-0").await;
    // A ready endpoint nothing listens on: a pod whose process has gone
    // while its slice still says ready.
    let gone = {
        let l = std::net::TcpListener::bind((weir_envtest::host_ip().expect("host ip"), 0))
            .expect("bind");
        l.local_addr().expect("addr")
    };
    let kp = start_kube_proxy(&env).await;
    let (listen, admin) = (kp.proxy.listen, kp.proxy.admin);
    let canaries = create_canary(&env).await;
    put_endpoint(&env, Cohort::Stable, &alive, true).await;
    put_endpoint_at(&env, Cohort::Stable, gone, true).await;
    put_endpoint(&env, Cohort::Canary, &canary, true).await;
    write_traffic(&canaries, &traffic(1, 0.0)).await;
    let route = route_name(&env);
    let stable_endpoints = |n: usize, generation: u64| {
        let route = route.clone();
        async move {
            until(&format!("{n} stable endpoints"), PATIENCE, || async {
                let served = wait_for_route(admin, &route, generation).await;
                (endpoints_of(&served, "stable").len() == n).then_some(())
            })
            .await;
        }
    };
    stable_endpoints(2, 1).await;

    // The draw sends about half the requests to the refusing endpoint:
    // each is tried again on the other, so stable serves them all and
    // nothing is counted against it or moved to the canary.
    let seen = count_split(listen, N, 4).await;
    assert_eq!(by_sim(&seen, "stable-a"), N as u64, "{seen:?}");
    assert_eq!(canary.requests(), 0);
    // The client can read the last response before the proxy has recorded
    // it (the record follows the last write).
    let snapshot = observations_when(admin, "every request recorded", |s| {
        ok_and_refused(s, &route, "stable").0 >= N as u64
    })
    .await;
    assert_eq!(ok_and_refused(&snapshot, &route, "stable"), (N as u64, 0));
    // Each of those steps is counted apart, as churn: one per request that
    // drew the refusing endpoint (at most one each: there is one other to
    // step to). How many drew it depends on the load, since it never holds
    // a request and so is the less busy of the two.
    let retries = |cohort: &'static str| {
        let route = route.clone();
        async move {
            let text = metrics(admin).await;
            counter(
                &text,
                weir_proxy::metrics::CONNECT_RETRIES_TOTAL,
                &route,
                cohort,
            )
        }
    };
    let stepped = retries("stable").await;
    assert!(
        (1.0..=N as f64).contains(&stepped),
        "connect retries on stable: {stepped}, not within [1, {N}]"
    );
    assert_eq!(retries("canary").await, 0.0);

    // Every ready endpoint of stable refuses, with the canary at 50% to
    // fail over to: stable's half moves to the canary, each a connect
    // error against stable.
    put_endpoint(&env, Cohort::Stable, &alive, false).await;
    write_traffic(&canaries, &traffic(2, 50.0)).await;
    stable_endpoints(1, 2).await;
    let seen = count_split(listen, N, 4).await;
    assert_eq!(by_cohort(&seen, "canary"), N as u64, "{seen:?}");
    let (ok, refused) = ok_and_refused(&observations(&client(), admin).await, &route, "stable");
    assert_eq!(ok, N as u64, "the first phase's, no more");
    assert_in_band(refused, N, 0.5, "connect errors on stable");
    // With one ready endpoint there is nothing to step to.
    assert_eq!(
        retries("stable").await,
        stepped,
        "no retry without another endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cohort_without_ready_endpoints_fails_over_and_counts_against_itself() {
    let env = TestEnv::new("kube-no-endpoints").await;
    let s = scene(&env, 50.0, false).await;
    let served = wait_for_route(s.admin, &s.route, 1).await;
    assert_eq!(endpoints_of(&served, "canary"), Vec::<String>::new());

    let seen = count_split(s.listen, N, 4).await;
    assert_eq!(by_cohort(&seen, "stable"), N as u64, "all served by stable");
    assert_eq!(s.canary.requests(), 0);
    // The client can read a response before the proxy has recorded it (the
    // record follows the last write): wait until stable's count, where
    // every request ends, holds them all.
    let snapshot = observations_when(s.admin, "every request recorded", |o| {
        ok_and_refused(o, &s.route, "stable").0 >= N as u64
    })
    .await;
    let on = |cohort: &str| ok_and_refused(&snapshot, &s.route, cohort);
    let ((canary_ok, canary_refused), (stable_ok, _)) = (on("canary"), on("stable"));
    assert_eq!((canary_ok, stable_ok), (0, N as u64));
    // Every request the draw sent to the canary is a connect error there.
    assert_in_band(canary_refused, N, 0.5, "connect errors on the canary");
}

/// Requests of `cohort` on `route` (all revisions) that ended ok, and that
/// were refused a connection.
fn ok_and_refused(snapshot: &Snapshot, route: &str, cohort: &str) -> (u64, u64) {
    snapshot
        .cohorts
        .iter()
        .filter(|c| c.route == route && c.cohort.as_str() == cohort)
        .map(|c| (c.requests[Outcome::Ok], c.requests[Outcome::ConnectError]))
        .fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1))
}
