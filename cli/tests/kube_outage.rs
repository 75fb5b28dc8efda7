//! The API server goes away in the middle of a run and comes back: the
//! proxies keep serving the last table they had (both cohorts, at the
//! run's weights), and the controller picks the run up where it was.
//!
//! A test binary of its own: stopping the API server takes it from every
//! test of the binary. On the control plane, kube-controller-manager,
//! kube-scheduler and the node agent lose it too, as in a real outage.

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use weir_crds::{Canary, Phase};
use weir_test_kit::poll::until;

mod common;
mod stack;

use stack::{Stack, wait_phase};
use weir_test_kit::sim::FAST;

/// Sends `n` chat completions through `url` and counts the cohorts that
/// answered (the proxy's `x-weir-cohort` header); panics on any failure.
async fn requests(url: &str, n: usize) -> (usize, usize) {
    let client = reqwest::Client::new();
    let (mut stable, mut canary) = (0, 0);
    for _ in 0..n {
        let response = client
            .post(format!("{url}/chat/completions"))
            .json(&serde_json::json!({
                "model": "weir-sim",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 2
            }))
            .send()
            .await
            .expect("the proxy answers");
        assert!(response.status().is_success(), "{}", response.status());
        match response
            .headers()
            .get("x-weir-cohort")
            .and_then(|v| v.to_str().ok())
        {
            Some("stable") => stable += 1,
            Some("canary") => canary += 1,
            other => panic!("no cohort header: {other:?}"),
        }
    }
    (stable, canary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_keep_serving_through_an_api_server_outage_and_the_controller_recovers() {
    let stack = Stack::new(
        "kube-outage",
        serde_json::json!({"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}),
        FAST,
    )
    .await;
    let ns = stack.ns().to_string();
    stack.release("sim:v2").await;
    let paused = wait_phase(&stack.env.client, &ns, "chat", Phase::Paused).await;
    stack.every_proxy_serves(50.0).await;
    let generation = paused.traffic.expect("traffic").generation;

    stack.env.stop_apiserver().await;
    // Both proxies go on splitting 50/50 with the table they had.
    for p in &stack.proxies {
        let (stable, canary) = requests(&p.url(), 60).await;
        assert!(
            stable >= 15 && canary >= 15,
            "a 50/50 split through the outage: {stable} stable, {canary} canary"
        );
    }
    // And say why they cannot watch.
    until(
        "the outage reported in lastError",
        Duration::from_secs(60),
        || async {
            let routes = stack.proxies[0].routes().await.expect("admin API answers");
            match routes["lastError"].as_str() {
                Some(error) if !error.is_empty() => Ok(()),
                _ => Err(routes),
            }
        },
    )
    .await;
    assert_eq!(
        stack.proxies[0]
            .canary_weight(&ns, "chat")
            .await
            .map(|w| w.1),
        Some(generation),
        "the last table stays"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.env.start_apiserver().await;

    // The controller picks the run up: a promotion asked after the outage
    // completes, and every proxy follows.
    let canaries: Api<Canary> = Api::namespaced(stack.env.client.clone(), &ns);
    let promote =
        serde_json::json!({"metadata": {"annotations": {"weir.dev/promote": "after-outage;full"}}});
    canaries
        .patch("chat", &PatchParams::default(), &Patch::Merge(&promote))
        .await
        .expect("promote");
    wait_phase(&stack.env.client, &ns, "chat", Phase::Succeeded).await;
    stack.every_proxy_serves(0.0).await;
}
