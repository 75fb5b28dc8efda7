//! End to end: where requests go. A real proxy (pingora, in-process) in
//! front of two simulated OpenAI servers, driven over loopback HTTP.
//!
//! - the weighted split matches its weights within a binomial band, and the
//!   proxy's `/v1/observations` agree with what the client saw;
//! - sticky sessions only ever move onto the canary as its weight rises, and
//!   two proxies with the same table agree on every session;
//! - the override header forces a cohort only when the table enables it;
//! - an unknown route is a JSON 404 and does not disturb the proxy.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    REQUEST_TIMEOUT, ROUTE, Table, Z_999, binomial_band, chat, client, count_split, counts,
    instant_sim, observations_when, put_weights, routes_state, served_by, start_memory_proxy,
};
use weir_proxy::Outcome;
use weir_proxy::route::sticky_point;
use weir_test_kit::poll::until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_matches_weights_and_observations_match_the_client() {
    const N: u64 = 20_000;
    const P: f64 = 0.2;
    let stable = instant_sim("stable").await;
    let canary = instant_sim("canary").await;
    let (proxy, _source) = start_memory_proxy(Table::new(&stable, &canary, 20.0).table()).await;
    let (listen, admin_addr) = (proxy.listen, proxy.admin);

    let seen = tokio::time::timeout(
        Duration::from_secs(120),
        count_split(listen, N as usize, 32),
    )
    .await
    .expect("20,000 requests finish");

    // Every response names its cohort, and the simulator that answered is
    // that cohort's: no other pair appears.
    let get = |c: &str| seen.get(&(c.to_string(), c.to_string())).copied();
    let on_stable = get("stable").unwrap_or(0);
    let on_canary = get("canary").unwrap_or(0);
    assert_eq!(on_stable + on_canary, N, "cohort/sim pairs seen: {seen:?}");
    assert_eq!(canary.requests(), on_canary, "the canary sim's own count");
    assert_eq!(stable.requests(), on_stable, "the stable sim's own count");

    // Binomial(20000, 0.2): mean 4000, sd sqrt(20000·0.2·0.8) = 56.6; the
    // 99.9% band mean ± 3.29 sd is [3814, 4186].
    let (lo, hi) = binomial_band(N, P, Z_999);
    assert_eq!((lo, hi), (3814, 4186), "band arithmetic");
    assert!(
        (lo..=hi).contains(&on_canary),
        "canary served {on_canary} of {N}; the 99.9% band at 20% is [{lo}, {hi}]"
    );
    println!("split: canary {on_canary}, stable {on_stable}, band [{lo}, {hi}]");

    // The proxy records a request in `logging`, after the client may have
    // its response: wait until every request is counted and none is in
    // flight, then compare.
    let snapshot = observations_when(admin_addr, "all requests in /v1/observations", |s| {
        let counted = counts(s, "stable").total() + counts(s, "canary").total();
        counted >= N && s.cohorts.iter().all(|c| c.inflight == 0)
    })
    .await;
    let (s, c) = (counts(&snapshot, "stable"), counts(&snapshot, "canary"));
    assert_eq!((s.total(), c.total()), (on_stable, on_canary));
    assert_eq!(
        (s[Outcome::Ok], c[Outcome::Ok]),
        (on_stable, on_canary),
        "every request was ok"
    );
    assert_eq!(snapshot.cohorts.len(), 2, "{snapshot:?}");
    assert!(snapshot.cohorts.iter().all(|c| c.route == ROUTE));
}

/// The cohort a session key lands on at `canary_percent`, by the documented
/// rule (canary first on `[0, 2^64)`, weights in basis points summing to
/// 10,000).
fn expected_on_canary(session: &str, canary_percent: f64) -> bool {
    let canary_bp = (canary_percent * 100.0).round() as u128;
    (u128::from(sticky_point(session)) * 10_000) >> 64 < canary_bp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_sessions_only_move_onto_the_canary_and_proxies_agree() {
    const SESSIONS: usize = 500;
    const WEIGHTS: [f64; 4] = [10.0, 20.0, 40.0, 60.0];
    let stable = instant_sim("stable").await;
    let canary = instant_sim("canary").await;
    let mut table = Table::new(&stable, &canary, WEIGHTS[0]);
    table.sticky_header = Some("x-session-id");
    let (a, _source_a) = start_memory_proxy(table.table()).await;
    let (b, _source_b) = start_memory_proxy(table.table()).await;
    assert_ne!(a.listen, b.listen);
    let admin = client();
    let sessions: Arc<Vec<String>> =
        Arc::new((0..SESSIONS).map(|i| format!("session-{i:04}")).collect());

    // history[i]: the cohort of session i at each weight, in order.
    let mut history: Vec<Vec<bool>> = vec![Vec::new(); SESSIONS];
    for (step, &weight) in WEIGHTS.iter().enumerate() {
        if step > 0 {
            put_weights(&admin, a.admin, weight).await;
            put_weights(&admin, b.admin, weight).await;
        }
        assert_eq!(routes_state(&admin, a.admin).await.1, weight);
        assert_eq!(routes_state(&admin, b.admin).await.1, weight);

        // 8 workers, each asking both proxies about every 8th session.
        let mut workers = tokio::task::JoinSet::new();
        for w in 0..8 {
            let (client, sessions) = (client(), Arc::clone(&sessions));
            let (la, lb) = (a.listen, b.listen);
            workers.spawn(async move {
                let mut out = Vec::new();
                for i in (w..SESSIONS).step_by(8) {
                    let mut cohorts = Vec::new();
                    for listen in [la, lb] {
                        let response = chat(&client, listen, false)
                            .header("x-session-id", &sessions[i])
                            .send()
                            .await
                            .expect("the proxy answers");
                        assert_eq!(response.status(), 200);
                        let (cohort, sim) = served_by(&response);
                        assert_eq!(cohort, sim, "the cohort header names the sim that answered");
                        response.bytes().await.expect("a complete body");
                        cohorts.push(cohort);
                    }
                    out.push((i, cohorts));
                }
                out
            });
        }
        let mut on_canary = 0u64;
        while let Some(done) = workers.join_next().await {
            for (i, cohorts) in done.expect("a worker finished") {
                assert_eq!(
                    cohorts[0], cohorts[1],
                    "{} is on {} at proxy A but {} at proxy B",
                    sessions[i], cohorts[0], cohorts[1]
                );
                let canary = cohorts[0] == "canary";
                assert_eq!(
                    canary,
                    expected_on_canary(&sessions[i], weight),
                    "{} at canary {weight}%: XXH64 rule",
                    sessions[i]
                );
                on_canary += u64::from(canary);
                history[i].push(canary);
            }
        }
        // The session keys are fixed, so this count is fixed; the band says
        // the hash spreads them as a fair coin with P(canary) = weight would.
        let (lo, hi) = binomial_band(SESSIONS as u64, weight / 100.0, Z_999);
        assert!(
            (lo..=hi).contains(&on_canary),
            "{on_canary} of {SESSIONS} sessions on the canary at {weight}%; 99.9% band [{lo}, {hi}]"
        );
        println!("sticky: canary {weight}%: {on_canary}/{SESSIONS} sessions, band [{lo}, {hi}]");
    }

    for (i, steps) in history.iter().enumerate() {
        assert_eq!(steps.len(), WEIGHTS.len());
        assert!(
            steps.windows(2).all(|w| w[0] <= w[1]),
            "{} went back from canary to stable: {steps:?} at {WEIGHTS:?}",
            sessions[i]
        );
    }
    // Some sessions moved at every step (the test would pass vacuously if
    // the weight changes had no effect).
    for step in 1..WEIGHTS.len() {
        let moved = history.iter().filter(|h| !h[step - 1] && h[step]).count();
        assert!(moved > 0, "no session moved at step {step}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_header_forces_a_cohort_only_when_enabled() {
    const EACH: usize = 20;
    let stable = instant_sim("stable").await;
    let canary = instant_sim("canary").await;
    // Canary at weight 0: only the override header can reach it.
    let mut table = Table::new(&stable, &canary, 0.0);
    table.override_header = true;
    let (proxy, source) = start_memory_proxy(table.table()).await;
    let (listen, admin_addr) = (proxy.listen, proxy.admin);
    let client = client();

    let ask = |forced: Option<&'static str>| {
        let client = client.clone();
        async move {
            let mut cohorts = Vec::new();
            for _ in 0..EACH {
                let mut request = chat(&client, listen, false);
                if let Some(cohort) = forced {
                    request = request.header(weir_proxy::COHORT_HEADER, cohort);
                }
                let response = request.send().await.expect("the proxy answers");
                assert_eq!(response.status(), 200);
                let (cohort, sim) = served_by(&response);
                assert_eq!(cohort, sim);
                response.bytes().await.expect("a complete body");
                cohorts.push(cohort);
            }
            cohorts
        }
    };
    let all = |c: &str| vec![c.to_string(); EACH];

    assert_eq!(ask(Some("canary")).await, all("canary"), "override on");
    assert_eq!(ask(Some("stable")).await, all("stable"), "override on");
    assert_eq!(ask(None).await, all("stable"), "weight 0 gets nothing");
    assert_eq!(canary.requests(), EACH as u64);

    // The same table with the override switched off.
    table.override_header = false;
    let new = source.replace(table.table()).generation();
    until(
        "the table without override in service",
        REQUEST_TIMEOUT,
        || {
            let client = client.clone();
            async move { (routes_state(&client, admin_addr).await.0 == new).then_some(()) }
        },
    )
    .await;
    assert_eq!(ask(Some("canary")).await, all("stable"), "override off");
    assert_eq!(
        canary.requests(),
        EACH as u64,
        "the canary got nothing more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_is_a_json_404_and_the_proxy_keeps_serving() {
    const ROUNDS: u64 = 10;
    let stable = instant_sim("stable").await;
    let canary = instant_sim("canary").await;
    let mut table = Table::new(&stable, &canary, 20.0);
    table.hosts = &["chat.example"];
    let (proxy, _source) = start_memory_proxy(table.table()).await;
    let (listen, admin_addr) = (proxy.listen, proxy.admin);
    let client = client();
    let url = format!("http://{}/v1/chat/completions", listen);

    for _ in 0..ROUNDS {
        let response = client
            .post(&url)
            .header("host", "other.example")
            .body(common::chat_body(false))
            .send()
            .await
            .expect("the proxy answers");
        assert_eq!(response.status(), 404);
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        assert!(response.headers().get(weir_proxy::COHORT_HEADER).is_none());
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        assert_eq!(
            body["error"]["message"],
            "no route matches host other.example and path /v1/chat/completions",
            "{body}"
        );

        let response = client
            .post(&url)
            .header("host", "chat.example")
            .body(common::chat_body(false))
            .send()
            .await
            .expect("the proxy answers");
        assert_eq!(response.status(), 200);
        let (cohort, sim) = served_by(&response);
        assert!(cohort == "stable" || cohort == "canary", "{cohort}");
        assert_eq!(cohort, sim);
        response.bytes().await.expect("a complete body");
    }

    // The 404s reached no upstream and no cohort's counts.
    assert_eq!(stable.requests() + canary.requests(), ROUNDS);
    let snapshot = observations_when(admin_addr, "the routed requests counted", |s| {
        counts(s, "stable")[Outcome::Ok] + counts(s, "canary")[Outcome::Ok] >= ROUNDS
    })
    .await;
    let total: u64 = snapshot.cohorts.iter().map(|c| c.requests.total()).sum();
    assert_eq!(total, ROUNDS, "{snapshot:?}");
}
