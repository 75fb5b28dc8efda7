//! The Canary CRD from crds/yaml/ on a real API server: create, read, the
//! status subresource, watch, and the schema's validation.

use futures::{StreamExt, TryStreamExt};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use weir_crds::{Canary, Phase};
use weir_envtest::{CanaryBuilder, TestEnv, install_canary_crd, repo_root};

use crate::{PATIENCE, rejection};

/// A Kubernetes-mode Canary as a user would write it (a route, sticky
/// sessions, four steps, a latency and a GPU metric), with `spec` patched
/// by `edit` (a JSON merge patch: `null` removes a field).
fn canary_builder(name: &str, edit: Value) -> CanaryBuilder {
    weir_envtest::canary(name)
        .spec(json!({
            "route": {"hosts": ["chat.example.com"], "pathPrefix": "/v1"},
            "sticky": {"header": "x-session-id"},
        }))
        .steps(json!([
            {"setWeight": 5},
            {"analysis": {"minDuration": "2m", "maxDuration": "15m"}},
            {"pause": {}},
            {"setWeight": 50},
        ]))
        .metrics(json!([
            {"name": "ttft", "kind": "latency", "signal": "ttft",
             "quantiles": [0.5, 0.95], "maxIncrease": "10%"},
            {"name": "gpu", "kind": "gauge",
             "source": {"scrape": {"port": 9400, "metric": "DCGM_FI_DEV_GPU_UTIL"}},
             "perRequest": true, "maxIncrease": "15%"},
        ]))
        .spec(edit)
}

fn canary_json(name: &str, edit: Value) -> Value {
    canary_builder(name, edit).json()
}

fn canary(name: &str, edit: Value) -> Canary {
    canary_builder(name, edit).build()
}

async fn canaries(env: &TestEnv) -> Api<Canary> {
    install_canary_crd(&env.client)
        .await
        .expect("install crds/yaml/canary.yaml");
    Api::namespaced(env.client.clone(), &env.namespace)
}

#[tokio::test]
async fn a_canary_round_trips_and_its_status_is_a_subresource() {
    let env = TestEnv::new("canary-round-trip").await;
    let api = canaries(&env).await;
    let name = "chat";

    // Watch before creating, so the test sees the status change as an event.
    let mut events = watcher(
        api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .applied_objects()
    .boxed();

    let sent = canary(name, json!({}));
    let created = api
        .create(&PostParams::default(), &sent)
        .await
        .expect("a valid Canary is accepted");
    // Nothing was pruned or changed by the schema: every field survives.
    assert_eq!(created.spec, sent.spec);
    let read = api.get(name).await.expect("get the Canary");
    assert_eq!(read.spec, sent.spec);
    assert_eq!(read.metadata.generation, Some(1));

    // The status subresource takes status...
    let status = json!({"status": {
        "observedGeneration": 1,
        "phase": "Progressing",
        "message": "step 1/4: setWeight 5",
        "currentStep": 1,
        "canaryWeight": 5.0,
        "stableRevision": "5d8f9c",
        "canaryRevision": "7c1a02",
        "targetReplicas": 4,
        "traffic": {
            "generation": 1,
            "route": {"hosts": ["chat.example.com"], "pathPrefix": "/v1"},
            "backends": [
                {"cohort": "stable", "service": "chat-stable", "port": 8000, "weight": 95.0, "revision": "5d8f9c"},
                {"cohort": "canary", "service": "chat-canary", "port": 8000, "weight": 5.0, "revision": "7c1a02"},
            ],
        },
    }});
    let patched = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch status");
    let got = patched.status.expect("status is set");
    assert_eq!(got.phase, Phase::Progressing);
    assert_eq!(got.current_step, 1);
    let traffic = got.traffic.expect("traffic is kept");
    assert_eq!(traffic.backends.len(), 2);
    assert_eq!(traffic.backends[1].weight, 5.0);
    // ...without bumping the spec's generation.
    assert_eq!(patched.metadata.generation, Some(1));

    // ...and the main resource ignores status.
    let ignored = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Aborted"}})),
        )
        .await
        .expect("patch the main resource");
    assert_eq!(ignored.status.map(|s| s.phase), Some(Phase::Progressing));

    // A spec change bumps the generation.
    let paused = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .expect("pause");
    assert!(paused.spec.paused);
    assert_eq!(paused.metadata.generation, Some(2));

    // The target is fixed once weir holds it (status.targetReplicas, a
    // transition rule): a new name would leave its stable copy behind.
    let moved = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"targetRef": {"name": "another-frontend"}}})),
        )
        .await;
    let (code, message) = rejection(moved);
    assert_eq!(code, 422, "{message}");
    for w in ["spec.targetRef.name", "cannot change", "Delete this Canary"] {
        assert!(message.contains(w), "{w:?} not in {message:?}");
    }

    // The watch saw the status the controller wrote.
    let seen = tokio::time::timeout(PATIENCE, async {
        while let Some(c) = events.try_next().await.expect("watch stream") {
            if c.status.as_ref().map(|s| s.phase) == Some(Phase::Progressing) {
                return c;
            }
        }
        panic!("the watch ended");
    })
    .await
    .expect("the watch delivers the status change");
    assert_eq!(seen.status.map(|s| s.canary_weight), Some(5.0));
}

#[tokio::test]
async fn a_target_weir_never_found_may_be_renamed_until_weir_holds_one() {
    let env = TestEnv::new("canary-rename").await;
    let api = canaries(&env).await;
    let name = "typo";
    api.create(&PostParams::default(), &canary(name, json!({})))
        .await
        .expect("created");
    let rename = |to: &str| {
        let api = api.clone();
        let edit = json!({"spec": {"targetRef": {"name": to}}});
        async move {
            api.patch(name, &PatchParams::default(), &Patch::Merge(edit))
                .await
        }
    };
    // No status yet, then one that says the target was not found: the
    // name is a typo to correct, not a target to leave behind.
    rename("chat-frontnd")
        .await
        .expect("renamed with no status");
    let refused = json!({"status": {"phase": "Idle", "message": "spec.targetRef.name: Deployment chat-frontnd not found"}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&refused))
        .await
        .expect("status");
    let before_fix = api.get(name).await.expect("get").metadata.resource_version;
    let fixed = rename("chat-frontend").await.expect("corrected in place");
    assert_eq!(
        fixed.spec.target_ref.map(|t| t.name).as_deref(),
        Some("chat-frontend")
    );
    // The controller's first hold on a target is an apply conditional on
    // the Canary it read: one read before the rename is refused, so the
    // rename wins over a reconcile of the old name.
    let stale = json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "Canary",
        "metadata": {"resourceVersion": before_fix},
        "status": {"targetReplicas": 2},
    });
    let (code, message) = rejection(
        api.patch_status(
            name,
            &PatchParams::apply("weir-test").force(),
            &Patch::Apply(&stale),
        )
        .await,
    );
    assert_eq!(code, 409, "{message}");
    // Once weir recorded the target's replicas, it holds the target.
    let held = json!({"status": {"targetReplicas": 2}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&held))
        .await
        .expect("status");
    let (code, message) = rejection(rename("another-frontend").await);
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("spec.targetRef.name"), "{message}");
    // Other edits still go through.
    rename("chat-frontend")
        .await
        .expect("the same name is no change");
}

#[tokio::test]
async fn invalid_canaries_are_rejected_naming_the_field() {
    let env = TestEnv::new("canary-invalid").await;
    canaries(&env).await;
    // (what is wrong, spec edit, what the message must contain)
    let cases = [
        (
            "setWeight above 100",
            json!({"strategy": {"canary": {"steps": [{"setWeight": 150}]}}}),
            vec![
                "spec.strategy.canary.steps[0].setWeight",
                "less than or equal to 100",
            ],
        ),
        (
            "both targetRef and backends",
            json!({"backends": {"stable": {"url": "http://127.0.0.1:8001"}, "canary": {"url": "http://127.0.0.1:8002"}}}),
            vec![
                "spec",
                "exactly one of targetRef (Kubernetes mode) and backends",
            ],
        ),
        (
            "neither targetRef nor backends",
            json!({"targetRef": null}),
            vec![
                "spec",
                "exactly one of targetRef (Kubernetes mode) and backends",
            ],
        ),
        (
            "targetRef without service",
            json!({"service": null}),
            vec!["spec", "add service: {port: 8000}"],
        ),
        (
            "both canary and blueGreen",
            json!({"strategy": {"blueGreen": {"autoPromote": true}}}),
            vec!["spec.strategy", "exactly one of canary and blueGreen"],
        ),
        (
            "no steps",
            json!({"strategy": {"canary": {"steps": []}}}),
            vec!["spec.strategy.canary.steps", "at least 1 items"],
        ),
        (
            "port 0",
            json!({"service": {"port": 0}}),
            vec!["spec.service.port", "greater than or equal to 1"],
        ),
        (
            "confidence 1",
            json!({"analysis": {"confidence": 1.0}}),
            vec!["spec.analysis.confidence", "less than 1"],
        ),
        (
            "header and cookie",
            json!({"sticky": {"cookie": "session"}}),
            vec!["spec.sticky", "exactly one of header or cookie"],
        ),
        (
            "relative path prefix",
            json!({"route": {"pathPrefix": "v1"}}),
            vec!["spec.route.pathPrefix", "should match '^/'"],
        ),
        (
            "a graph whose order comes back to a component (a cycle)",
            json!({"graph": {"components": [{"name": "decode"}, {"name": "prefill"}],
                             "order": ["decode", "prefill", "decode"]}}),
            vec!["spec.graph.order[2]", "Duplicate value"],
        ),
        (
            "a graph whose order names an unknown component",
            json!({"graph": {"components": [{"name": "decode"}],
                             "order": ["decode", "router"]}}),
            vec![
                "spec.graph.order",
                "names a component that is neither targetRef.name nor in graph.components",
            ],
        ),
        (
            "a graph whose order leaves a component out",
            json!({"graph": {"components": [{"name": "decode"}, {"name": "prefill"}],
                             "order": ["decode", "chat-frontend"]}}),
            vec!["spec.graph.order", "must name every component once"],
        ),
        (
            "a graph that lists its target as a worker",
            json!({"graph": {"components": [{"name": "chat-frontend"}]}}),
            vec![
                "spec.graph.components",
                "the serving component is targetRef",
            ],
        ),
        (
            "a graph URL without a port",
            json!({"graph": {"components": [{"name": "decode", "urlEnv": "DECODE_URL"}]}}),
            vec!["spec.graph.components[0]", "urlEnv needs the port"],
        ),
        (
            "a graph with a budget in one Deployment's pods",
            json!({"graph": {"components": [{"name": "decode"}]}, "gpuBudget": 4}),
            vec!["spec.gpuBudget", "set graph.gpuBudget"],
        ),
        (
            "a graph budget of no GPUs",
            json!({"graph": {"components": [{"name": "decode"}], "gpuBudget": 0}}),
            vec![
                "spec.graph.gpuBudget",
                "should be greater than or equal to 1",
            ],
        ),
        (
            "a step that is two steps",
            json!({"strategy": {"canary": {"steps": [{"setWeight": 5, "pause": {}}]}}}),
            vec![
                "spec.strategy.canary.steps[0]",
                "must validate one and only one schema (oneOf)",
            ],
        ),
    ];
    for (i, (what, edit, wanted)) in cases.into_iter().enumerate() {
        // Raw JSON: the typed Canary could not even hold some of these.
        let body = canary_json(&format!("bad-{i}"), edit);
        let (code, message) = rejection(create_raw(&env.client, &env.namespace, &body).await);
        assert_eq!(code, 422, "{what}: {message}");
        for w in wanted {
            assert!(message.contains(w), "{what}: {w:?} not in {message:?}");
        }
    }
}

/// Creates a Canary from raw JSON (no client-side typing or defaults).
async fn create_raw(
    client: &Client,
    namespace: &str,
    body: &Value,
) -> Result<DynamicObject, kube::Error> {
    let object: DynamicObject = serde_json::from_value(body.clone()).expect("an object");
    Api::<DynamicObject>::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::erase::<Canary>(&()),
    )
    .create(&PostParams::default(), &object)
    .await
}

#[tokio::test]
async fn valid_variants_and_the_examples_are_accepted() {
    let env = TestEnv::new("canary-valid").await;
    let api = canaries(&env).await;
    let blue_green = canary(
        "blue-green",
        json!({"strategy": {"canary": null, "blueGreen": {
            "previewReplicas": 1, "autoPromote": false, "scaleDownDelay": "10m",
            "prePromotionAnalysis": {"maxDuration": "5m"},
        }}}),
    );
    let fixed = canary(
        "fixed",
        json!({"strategy": {"canary": {"replicas": {"fixed": 2}}},
               "promotion": {"strategy": "Recreate", "maxUnavailable": "25%"}}),
    );
    let example = std::fs::read_to_string(repo_root().join("examples/canary-local.yaml"))
        .expect("read examples/canary-local.yaml");
    let local: Canary = serde_saphyr::from_str(&example).expect("the example parses");
    // The Kubernetes example, in this test's namespace; the controller's
    // own validation accepts it too.
    let example = std::fs::read_to_string(repo_root().join("examples/canary-kubernetes.yaml"))
        .expect("read examples/canary-kubernetes.yaml");
    let mut kubernetes: Canary = serde_saphyr::from_str(&example).expect("the example parses");
    kubernetes.metadata.namespace = None;
    kubernetes.metadata.name = Some("chat-kubernetes".into());
    weir_controller::engine::Rollout::new("chat", &kubernetes.spec)
        .expect("the controller accepts the Kubernetes example");
    let example = std::fs::read_to_string(repo_root().join("examples/canary-graph.yaml"))
        .expect("read examples/canary-graph.yaml");
    let mut graph: Canary = serde_saphyr::from_str(&example).expect("the example parses");
    graph.metadata.namespace = None;
    graph.metadata.name = Some("chat-graph".into());
    weir_controller::engine::Rollout::new("chat", &graph.spec)
        .expect("the controller accepts the graph example");
    for c in [blue_green, fixed, local, kubernetes, graph] {
        let name = c.metadata.name.clone().unwrap_or_default();
        let created = api
            .create(&PostParams::default(), &c)
            .await
            .unwrap_or_else(|e| panic!("{name} is valid but was refused: {e}"));
        assert_eq!(created.spec, c.spec, "{name} came back changed");
    }
}
