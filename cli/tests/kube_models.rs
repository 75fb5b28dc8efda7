//! A model canary in Kubernetes mode, on the real control plane (see
//! tests/stack): one Deployment whose pods serve three LoRA adapters by
//! name, as one vLLM pool does, shared by both cohorts. Requests for
//! `chat` stream through two proxies that rewrite the model per cohort.
//!
//! What it shows: an adapter with the same profile is promoted by name,
//! then one that truncates a third of its answers is aborted on that
//! effect with traffic back on the promoted adapter; one that no pod has
//! loaded holds before any traffic moves, naming the pod, until `weir undo`
//! puts the stable model back; `weir history` lists the models promoted;
//! in all of it no Deployment is copied, scaled or edited.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use weir_crds::{Canary, HistoryEvent, Phase};
use weir_envtest::TestEnv;
use weir_test_kit::poll::until;

mod common;
mod stack;

use stack::{PATIENCE, create_target, wait_phase};

/// The pool's pods: `weir sim` serving three adapters; chat-lora-v9 cuts a
/// third of its answers at the token limit. Output lengths vary per
/// answer, as real ones do.
const POOL: &[&str] = &[
    "--ttft",
    "60ms",
    "--ttft-sigma",
    "0.1",
    "--itl",
    "3ms",
    "--tokens",
    "12",
    "--tokens-sigma",
    "0.4",
    "--model",
    "chat-lora-v7",
    "--model",
    "chat-lora-v8",
    "--model",
    "chat-lora-v9:length-share=0.33",
];

/// What weir must not have touched: no stable copy exists and the target
/// keeps its replicas and its first spec generation.
async fn untouched(deployments: &Api<Deployment>) {
    let names: Vec<String> = deployments
        .list(&Default::default())
        .await
        .expect("list deployments")
        .items
        .into_iter()
        .filter_map(|d| d.metadata.name)
        .collect();
    assert_eq!(names, ["chat-frontend"], "no copy of the Deployment");
    let target = deployments.get("chat-frontend").await.expect("target");
    assert_eq!(
        target.metadata.generation,
        Some(1),
        "the target was never edited"
    );
    assert_eq!(target.spec.and_then(|s| s.replicas), Some(2));
}

/// Sets Canary `chat`'s `spec.models.canary`: the next adapter.
async fn ask_for(canaries: &Api<Canary>, model: &str) {
    canaries
        .patch(
            "chat",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"models": {"canary": model}}})),
        )
        .await
        .expect("a new adapter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_canary_on_one_deployment_is_promoted_then_a_bad_one_aborted() {
    let env = TestEnv::on_cluster("kube-models").await;
    let ns = env.namespace.clone();
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), &ns);
    let pool = weir_envtest::target(
        2,
        json!({
            "terminationGracePeriodSeconds": 5,
            "containers": [stack::container("sim:pool", POOL, 0)]
        }),
    );
    create_target(&deployments, &pool).await;
    let proxies = stack::two_proxies(&env.client, &ns).await;
    let canary = weir_envtest::canary("chat")
        .judged_fast()
        .steps(json!([
            {"setWeight": 50},
            {"analysis": {"minDuration": "3s", "maxDuration": "80s"}}
        ]))
        .spec(json!({
            "route": {"model": "chat"},
            "models": {"stable": "chat-lora-v7", "canary": "chat-lora-v8"},
            "analysis": {"metrics": [
                {"name": "ttft", "kind": "latency", "quantiles": [0.5], "maxIncrease": "25%"},
                {"name": "errors", "kind": "errorRate", "maxIncrease": "5pp"},
                {"name": "tokens", "kind": "outputTokens", "maxChange": "25%"},
                {"name": "truncated", "kind": "truncationRate", "maxIncrease": "5pp"}
            ]}
        }))
        .build();
    let canaries = Api::<Canary>::namespaced(env.client.clone(), &ns);
    canaries
        .create(&PostParams::default(), &canary)
        .await
        .expect("canary");
    let _controller = stack::controller_with_proxies(&env, "models");
    let _load: Vec<common::Proc> = proxies
        .iter()
        .map(|p| {
            common::spawn(
                "load",
                &[
                    "load",
                    "--url",
                    &p.url(),
                    "--model",
                    "chat",
                    "--rate",
                    "30",
                    "--duration",
                    "240s",
                ],
            )
        })
        .collect();

    let done = wait_phase(&env.client, &ns, "chat", Phase::Succeeded).await;
    assert_eq!(done.stable_revision.as_deref(), Some("chat-lora-v8"));
    let promoted = done
        .history
        .iter()
        .find(|h| h.event == HistoryEvent::Promoted)
        .unwrap_or_else(|| panic!("{done:#?}"));
    assert_eq!(promoted.revision.as_deref(), Some("chat-lora-v8"));
    // Every proxy's table sends the requests for chat to the stable
    // cohort, which now asks the pool for chat-lora-v8.
    for p in &proxies {
        until(
            "the proxy serves the promoted adapter",
            PATIENCE,
            || async {
                let routes = p.routes().await?;
                let route = routes["table"]["routes"]
                    .as_array()?
                    .iter()
                    .find(|r| r["match"]["model"] == "chat")?
                    .clone();
                let models: BTreeMap<String, (String, f64)> = route["backends"]
                    .as_array()?
                    .iter()
                    .filter_map(|b| {
                        Some((
                            b["cohort"].as_str()?.to_string(),
                            (b["model"].as_str()?.to_string(), b["weight"].as_f64()?),
                        ))
                    })
                    .collect();
                (models.get("stable") == Some(&("chat-lora-v8".to_string(), 100.0))).then_some(())
            },
        )
        .await;
    }
    untouched(&deployments).await;

    // The next adapter cuts a third of its answers short.
    ask_for(&canaries, "chat-lora-v9").await;
    let aborted = wait_phase(&env.client, &ns, "chat", Phase::Aborted).await;
    let abort = aborted.abort.as_ref().expect("the abort is recorded");
    assert!(abort.message.contains("truncated"), "{}", abort.message);
    assert!(!abort.message.contains("ttft"), "{}", abort.message);
    assert_eq!(aborted.stable_revision.as_deref(), Some("chat-lora-v8"));
    for p in &proxies {
        until("the proxy is back on stable", PATIENCE, || async {
            let (weight, _) = p.canary_weight(&ns, "chat").await?;
            (weight == 0.0).then_some(())
        })
        .await;
    }
    untouched(&deployments).await;

    // An adapter no pod has loaded: the run holds, saying which pod does
    // not list it, and no traffic moves.
    ask_for(&canaries, "chat-lora-v10").await;
    let events = stack::event_recorded(&env.client, &ns, "chat", "ModelNotLoaded").await;
    let (_, said) = events
        .iter()
        .find(|(reason, _)| reason == "ModelNotLoaded")
        .expect("the event");
    assert!(
        said.contains("new revision chat-lora-v10 holds: pod chat-frontend-")
            && said.contains(
                "does not list chat-lora-v10 (it lists: chat-lora-v7, chat-lora-v8, chat-lora-v9)"
            ),
        "{said}"
    );
    let held = stack::canary(&env.client, &ns, "chat")
        .await
        .status
        .expect("a status");
    assert_eq!(
        held.phase,
        Phase::Aborted,
        "no run started: {}",
        held.message
    );
    assert!(held.message.contains("holds: pod"), "{}", held.message);
    for p in &proxies {
        assert_eq!(
            p.canary_weight(&ns, "chat").await.map(|(w, _)| w),
            Some(0.0)
        );
    }

    // weir history lists the models served in turn; weir undo puts the
    // model stable serves back in the spec, and the held run is gone.
    let (code, out, err) = stack::weir(&env, &["history", "chat", "-n", &ns]).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows.iter()
            .map(|r| (r[0], r[1], *r.last().unwrap_or(&"")))
            .collect::<Vec<_>>(),
        [
            ("1", "chat-lora-v7", "ago)"),
            ("2", "chat-lora-v8", "stable")
        ],
        "{out}"
    );
    let (code, out, err) = stack::weir(&env, &["undo", "chat", "-n", &ns]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("spec.models.canary set to chat-lora-v8"),
        "{out}"
    );
    let idle = wait_phase(&env.client, &ns, "chat", Phase::Idle).await;
    assert_eq!(idle.message, "stable chat-lora-v8 serves all traffic");
    untouched(&deployments).await;
}
