//! Status tells the truth when pods do not come up, on the real control
//! plane: a target whose pods never pass their readiness probe is adopted,
//! the Canary's `Ready` is False naming the stable Deployment, its counts
//! and the pods' reason, and a new revision holds (and says so) instead of
//! starting a rollout against a stable that serves nothing.
//!
//! Needs root and iproute2 like `control_plane.rs`, and the `weir` binary.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, PostParams};
use weir_crds::{Canary, Phase};
use weir_test_kit::poll::until;

mod common;
use common::{PATIENCE, cluster, run_controller, set_image};

const NAMESPACE: &str = "truth";

/// `chat`: 2 sims whose readiness probe asks for a path they answer 404.
fn never_ready(image: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "chat", "namespace": NAMESPACE},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "chat"}},
            "template": {
                "metadata": {"labels": {"app": "chat"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "vllm",
                        "image": image,
                        "args": ["--ttft", "5ms", "--itl", "1ms", "--tokens", "4"],
                        "ports": [{"name": "http", "containerPort": 8000}],
                        "readinessProbe": {
                            "httpGet": {"path": "/not-a-health-check", "port": "http"},
                            "periodSeconds": 1,
                            "failureThreshold": 1
                        }
                    }]
                }
            }
        }
    }))
    .expect("a valid Deployment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_false_and_a_new_revision_holds_while_stable_serves_nothing() {
    let (client, _agent, logs) = cluster(&["node-0:cpu=8,memory=32Gi"], NAMESPACE).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), NAMESPACE);
    deployments
        .create(&PostParams::default(), &never_ready("weir/sim:v1"))
        .await
        .expect("create chat");
    let canaries = Api::<Canary>::namespaced(client.clone(), NAMESPACE);
    let canary = weir_envtest::canary("chat")
        .spec(serde_json::json!({"targetRef": {"name": "chat"}}))
        .build();
    let (lead, _controller) = run_controller(&client, NAMESPACE, &canary).await;

    // Adopted, but the stable copy's pods run and never pass their probe.
    let ready = until(
        "Ready=False naming the stable Deployment",
        PATIENCE,
        || async {
            let c = canaries.get("chat").await.expect("get Canary");
            let s = c.status.unwrap_or_default();
            let ready = s.conditions.iter().find(|c| c.type_ == "Ready").cloned();
            match ready {
                Some(r)
                    if r.status == "False"
                        && r.reason == "StableNotReady"
                        && r.message
                            .contains("2 pods running, readiness probe not passing") =>
                {
                    Ok(r)
                }
                other => Err((s.phase, other)),
            }
        },
    )
    .await;
    assert!(
        ready.message.starts_with(
            "the stable cohort has no ready replica: chat-stable 0/2 ready; 2 pods running, readiness probe not passing (container vllm)"
        ),
        "{}",
        ready.message
    );

    // A new version holds, and says why.
    set_image(&client, NAMESPACE, "chat", "weir/sim:v2").await;
    let held = until("the new revision to hold", PATIENCE, || async {
        let c = canaries.get("chat").await.expect("get Canary");
        let s = c.status.unwrap_or_default();
        if s.message.contains("holds until stable is ready") {
            Ok(s)
        } else {
            Err((s.phase, s.message))
        }
    })
    .await;
    assert_eq!(
        held.phase,
        Phase::Idle,
        "no rollout started: {}",
        held.message
    );
    assert!(
        held.message.contains(
            "waiting for stable replicas: 0/2 ready; 2 pods running, readiness probe not passing"
        ),
        "{}",
        held.message
    );
    let events = Api::<Event>::namespaced(client.clone(), NAMESPACE);
    let said = until(
        "a WaitingForReplicas Event for stable",
        PATIENCE,
        || async {
            let reasons: Vec<(String, String)> = events
                .list(&ListParams::default())
                .await
                .expect("list Events")
                .items
                .into_iter()
                .filter_map(|e| Some((e.reason?, e.note.unwrap_or_default())))
                .collect();
            let waiting = reasons.iter().any(|(r, n)| {
                r == "WaitingForReplicas" && n.contains("waiting for stable replicas")
            });
            if waiting { Ok(reasons) } else { Err(reasons) }
        },
    )
    .await;
    assert!(
        !said.iter().any(|(r, _)| r == "RolloutStarted"),
        "no rollout started: {said:?}"
    );
    drop(lead);
    let _ = std::fs::remove_dir_all(&logs);
}
