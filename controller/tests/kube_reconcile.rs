//! The reconciler's first slice against a real control plane
//! (tests/envtest, pods run by the node agent): first sight of a target adopts it as stable and
//! creates the owned objects; a new pod template starts a run that scales
//! the canary through the scale subresource.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::sync::Arc;

use weir_controller::kube::metrics::Metrics;
use weir_controller::kube::{builders, reconcile};
use weir_crds::{Canary, Phase};
use weir_envtest::TestEnv;

fn target(image: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "chat-frontend"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "chat"}},
            "template": {
                "metadata": {"labels": {"app": "chat"}},
                "spec": {"containers": [{"name": "vllm", "image": image}]}
            }
        }
    }))
    .expect("deployment")
}

/// A controller's context without proxies or notifications.
fn context(env: &TestEnv) -> Arc<reconcile::Context> {
    Arc::new(reconcile::Context::new(
        env.client.clone(),
        Arc::new(Metrics::default()),
        None,
        "test".into(),
    ))
}

/// One reconcile of Canary `name`, as the controller runs it; the Canary
/// after it.
async fn reconcile_once(
    canaries: &Api<Canary>,
    ctx: &Arc<reconcile::Context>,
    name: &str,
) -> Canary {
    let c = canaries.get(name).await.expect("get");
    reconcile::reconcile(Arc::new(c), Arc::clone(ctx))
        .await
        .expect("reconcile");
    canaries.get(name).await.expect("get")
}

#[tokio::test]
async fn first_sight_adopts_the_target_and_a_new_template_starts_a_run() {
    let env = TestEnv::on_cluster("reconcile-first-sight").await;
    let ns = env.namespace.as_str();
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), ns);
    let canaries: Api<Canary> = Api::namespaced(env.client.clone(), ns);
    let services: Api<Service> = Api::namespaced(env.client.clone(), ns);
    deployments
        .create(&PostParams::default(), &target("vllm:v1"))
        .await
        .expect("target");
    canaries
        .create(
            &PostParams::default(),
            &weir_envtest::canary("chat").build(),
        )
        .await
        .expect("canary");

    let ctx = context(&env);
    let once = || reconcile_once(&canaries, &ctx, "chat");
    // The first pass adds the finalizer (and nothing else), the second
    // adopts the target.
    let first = once().await;
    assert_eq!(first.finalizers(), ["weir.dev/finalizer"]);
    assert!(first.status.is_none());
    let status = once().await.status.expect("status written");
    assert_eq!(status.phase, Phase::Idle, "{}", status.message);
    let written = canaries
        .get("chat")
        .await
        .expect("get")
        .status
        .expect("status written");
    assert_eq!(written.phase, Phase::Idle);
    // The revision is the hash of the template as the API server stores it
    // (with its defaults filled in), which is what every reconcile reads.
    let served = deployments.get("chat-frontend").await.expect("target");
    let v1 = builders::template_revision(&served.spec.expect("spec").template);
    assert_eq!(written.stable_revision.as_deref(), Some(v1.as_str()));
    let traffic = written.traffic.expect("traffic");
    assert_eq!(
        traffic
            .backends
            .iter()
            .map(|b| b.weight)
            .collect::<Vec<_>>(),
        vec![100.0, 0.0]
    );

    let stable = deployments
        .get("chat-frontend-stable")
        .await
        .expect("stable copy");
    let selector = stable
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone());
    assert_eq!(
        selector,
        Some(BTreeMap::from([(
            "app".to_string(),
            "chat-stable".to_string()
        )]))
    );
    assert_eq!(stable.spec.as_ref().and_then(|s| s.replicas), Some(4));
    // The stable copy's pods were only just created, so it is not ready:
    // the target's own pods keep serving (it is not scaled down under
    // them).
    let target_now = deployments.get("chat-frontend").await.expect("target");
    assert_eq!(target_now.spec.and_then(|s| s.replicas), Some(4));
    let svc = services.get("chat-canary").await.expect("canary service");
    assert_eq!(
        svc.spec.and_then(|s| s.selector),
        Some(BTreeMap::from([("app".to_string(), "chat".to_string())]))
    );
    assert!(services.get("chat-stable").await.is_ok());
    // A new revision waits for a stable cohort that serves (Ready is False
    // until then): the Deployment controller reports the stable copy's
    // four pods ready.
    weir_test_kit::poll::until(
        "the stable copy rolled out",
        std::time::Duration::from_secs(90),
        || async {
            let d = deployments.get("chat-frontend-stable").await.ok()?;
            let s = d.status?;
            (s.observed_generation == d.metadata.generation && s.ready_replicas == Some(4))
                .then_some(())
        },
    )
    .await;

    // A new template on the target starts a run: 20% of 4 replicas.
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": "vllm:v2"}]}}}});
    deployments
        .patch(
            "chat-frontend",
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .expect("new template");
    let status = once().await.status.expect("status");
    assert_eq!(status.phase, Phase::Progressing, "{}", status.message);
    let scaled = deployments.get("chat-frontend").await.expect("target");
    let v2 = builders::template_revision(&scaled.spec.clone().expect("spec").template);
    assert_ne!(v1, v2);
    assert_eq!(status.canary_revision.as_deref(), Some(v2.as_str()));
    assert_eq!(
        scaled.spec.and_then(|s| s.replicas),
        Some(1),
        "canary scaled to its share first"
    );
    // No traffic before the canary is ready (no kubelet: nothing is ready).
    let written = canaries
        .get("chat")
        .await
        .expect("get")
        .status
        .expect("status");
    assert_eq!(written.canary_weight, 0.0);
}

#[tokio::test]
async fn a_target_that_is_not_found_is_refused_and_may_be_corrected_in_place() {
    let env = TestEnv::on_control_plane("reconcile-typo").await;
    let ns = env.namespace.as_str();
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), ns);
    let canaries: Api<Canary> = Api::namespaced(env.client.clone(), ns);
    deployments
        .create(&PostParams::default(), &target("vllm:v1"))
        .await
        .expect("target");
    let typo = weir_envtest::canary("chat")
        .spec(serde_json::json!({"targetRef": {"name": "chat-frontnd"}}))
        .build();
    canaries
        .create(&PostParams::default(), &typo)
        .await
        .expect("canary");
    let ctx = context(&env);
    let once = || reconcile_once(&canaries, &ctx, "chat");
    let rename = |to: &str| {
        let edit = serde_json::json!({"spec": {"targetRef": {"name": to}}});
        let canaries = canaries.clone();
        async move {
            canaries
                .patch("chat", &PatchParams::default(), &Patch::Merge(&edit))
                .await
        }
    };

    // Refused, naming the field and the way out; nothing is created.
    once().await;
    let status = once().await.status.expect("status written");
    assert!(
        status
            .message
            .contains("spec.targetRef.name: Deployment chat-frontnd not found"),
        "{}",
        status.message
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "TargetNotFound")
    );
    assert_eq!(status.target_replicas, None);
    assert!(
        deployments
            .get_opt("chat-frontend-stable")
            .await
            .expect("get")
            .is_none()
    );

    // Corrected in place (the CRD allows it: weir holds no target yet),
    // the next reconcile adopts the right Deployment.
    rename("chat-frontend")
        .await
        .expect("the typo is corrected");
    let status = once().await.status.expect("status");
    assert_eq!(status.phase, Phase::Idle, "{}", status.message);
    assert_eq!(status.target_replicas, Some(4));
    assert!(
        deployments
            .get_opt("chat-frontend-stable")
            .await
            .expect("get")
            .is_some(),
        "the stable copy of the corrected target"
    );
    // From now on the target is held: another name is refused.
    let err = rename("another-frontend")
        .await
        .expect_err("the target is fixed once held");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains("targetRef.name cannot change")),
        "{err}"
    );
}
