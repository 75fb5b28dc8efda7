//! GPU capacity on the real control plane: a canary pod the scheduler
//! cannot place (`Insufficient nvidia.com/gpu`) is reported by weir in the
//! Canary's status, its Progressing condition and an Event, and the
//! progress deadline aborts the run with traffic on stable. The controller
//! runs without proxies, which the run says too (`NotMeasured`).
//!
//! The cluster: two Nodes of 4 GPUs each (the node agent), `chat` with 4
//! replicas of 1 GPU. Adoption runs the target's pods beside the stable
//! copy until the copy is ready, so it needs 8 GPUs; then another tenant's
//! Deployment takes the 4 GPUs the target gave back, and the canary's
//! first replica finds none free, as on a busy fleet.
//!
//! Needs root and iproute2 like `control_plane.rs`, and the `weir` binary.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use weir_crds::{Canary, Phase};
use weir_test_kit::poll::until;

use weir_envtest::cluster::rolled_out;

mod common;
use common::{PATIENCE, cluster, events, run_controller, set_image};

const NAMESPACE: &str = "gpu";
/// How long a step may wait on replicas before the run is aborted.
const DEADLINE_SECS: u64 = 20;

/// A Deployment of `replicas` sims, each asking for one GPU.
fn gpu_deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "vllm",
                        "image": image,
                        "args": ["--ttft", "5ms", "--itl", "1ms", "--tokens", "4"],
                        "ports": [{"name": "http", "containerPort": 8000}],
                        "resources": {"limits": {"nvidia.com/gpu": 1}},
                        "readinessProbe": {
                            "httpGet": {"path": "/health", "port": "http"},
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

/// GPUs the pods bound to a node ask for.
async fn gpus_in_use(client: &Client) -> i64 {
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await
        .expect("list pods");
    pods.items
        .iter()
        .filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some()))
        .flat_map(|p| p.spec.iter().flat_map(|s| s.containers.iter()))
        .filter_map(|c| c.resources.as_ref()?.limits.as_ref()?.get("nvidia.com/gpu"))
        .filter_map(|q| q.0.parse::<i64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_without_gpus_is_reported_and_aborted_by_the_progress_deadline() {
    let (client, _agent, logs) = cluster(
        &[
            "gpu-0:cpu=16,memory=64Gi,nvidia.com/gpu=4",
            "gpu-1:cpu=16,memory=64Gi,nvidia.com/gpu=4",
        ],
        NAMESPACE,
    )
    .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), NAMESPACE);
    deployments
        .create(
            &PostParams::default(),
            &gpu_deployment("chat", 4, "weir/sim:v1"),
        )
        .await
        .expect("create chat");
    rolled_out(&client, NAMESPACE, "chat", 4)
        .await
        .expect("rolled out");

    let canaries = Api::<Canary>::namespaced(client.clone(), NAMESPACE);
    let canary = weir_envtest::canary("chat")
        .steps(serde_json::json!([{"setWeight": 25}, {"pause": {}}]))
        .spec(serde_json::json!({
            "targetRef": {"name": "chat"},
            "progressDeadlineSeconds": DEADLINE_SECS
        }))
        .build();
    let (lead, _controller) = run_controller(&client, NAMESPACE, &canary).await;

    // Adopted: the stable copy serves, the target gave its GPUs back.
    rolled_out(&client, NAMESPACE, "chat-stable", 4)
        .await
        .expect("rolled out");
    rolled_out(&client, NAMESPACE, "chat", 0)
        .await
        .expect("rolled out");
    // Another tenant takes the free GPUs.
    deployments
        .create(
            &PostParams::default(),
            &gpu_deployment("batch", 4, "weir/sim:v1"),
        )
        .await
        .expect("create batch");
    rolled_out(&client, NAMESPACE, "batch", 4)
        .await
        .expect("rolled out");
    assert_eq!(gpus_in_use(&client).await, 8, "every GPU taken");

    set_image(&client, NAMESPACE, "chat", "weir/sim:v2").await;

    // The step waits on a canary replica the scheduler cannot place, and
    // says so with the scheduler's own words.
    let missing = "Insufficient nvidia.com/gpu";
    let waiting = until("status to name the missing GPUs", PATIENCE, || async {
        let c = canaries.get("chat").await.expect("get Canary");
        let s = c.status.unwrap_or_default();
        let progressing = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        if s.message.contains(missing) && progressing.contains(missing) {
            Ok(s.message)
        } else {
            Err((s.phase, s.message, progressing))
        }
    })
    .await;
    assert!(
        waiting.contains("waiting for canary replicas: 0/1 ready; 1 pod Unschedulable"),
        "{waiting}"
    );
    let warned = until("a WaitingForReplicas warning", PATIENCE, || async {
        let found: Vec<Event> = events(&client, NAMESPACE, "WaitingForReplicas")
            .await
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter(|e| e.note.as_deref().is_some_and(|n| n.contains(missing)))
            .collect();
        if found.is_empty() { Err(()) } else { Ok(found) }
    })
    .await;
    assert_eq!(warned.len(), 1, "said once, not per reconcile: {warned:?}");
    // The controller runs without proxies: the run said, from its first
    // step, that nothing measures it.
    let unmeasured = until("a NotMeasured warning", PATIENCE, || async {
        let found = events(&client, NAMESPACE, "NotMeasured").await;
        if found.is_empty() { Err(()) } else { Ok(found) }
    })
    .await;
    assert_eq!(unmeasured.len(), 1, "{unmeasured:?}");
    assert!(
        waiting.contains("not measured: the controller runs without --proxy-service"),
        "{waiting}"
    );

    // Waiting is not progress: the deadline aborts, naming what was missing;
    // traffic is all on stable and the canary gives its pending pod up.
    let aborted = until("the progress deadline to abort", PATIENCE, || async {
        let c = canaries.get("chat").await.expect("get Canary");
        let s = c.status.unwrap_or_default();
        if s.phase == Phase::Aborted {
            Ok(s)
        } else {
            Err(s.phase)
        }
    })
    .await;
    let abort = aborted.abort.expect("abort recorded");
    assert_eq!(abort.reason, "ProgressDeadlineExceeded");
    assert!(abort.message.contains(missing), "{}", abort.message);
    let traffic = aborted.traffic.expect("traffic published");
    let canary_weight: f64 = traffic
        .backends
        .iter()
        .filter(|b| b.cohort == weir_crds::Cohort::Canary)
        .map(|b| b.weight)
        .sum();
    assert_eq!(canary_weight, 0.0, "all traffic on stable: {traffic:?}");
    // Through the whole wait (many reconciles), each thing said was said
    // once: no two WaitingForReplicas Events with the same note.
    let notes: Vec<String> = events(&client, NAMESPACE, "WaitingForReplicas")
        .await
        .into_iter()
        .filter_map(|e| e.note)
        .collect();
    let distinct: std::collections::BTreeSet<&String> = notes.iter().collect();
    assert_eq!(distinct.len(), notes.len(), "repeated: {notes:#?}");
    rolled_out(&client, NAMESPACE, "chat", 0)
        .await
        .expect("rolled out");
    rolled_out(&client, NAMESPACE, "chat-stable", 4)
        .await
        .expect("rolled out");
    assert_eq!(
        gpus_in_use(&client).await,
        8,
        "stable and the tenant keep theirs"
    );
    drop(lead);
    let _ = std::fs::remove_dir_all(&logs);
}
