//! The chart's RBAC (charts/weir/templates/rbac.yaml) is enough for what the
//! controller does, and no more: every operation runs as the chart's
//! ServiceAccount (impersonated), with only the rendered rules applied.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use weir_crds::{Canary, Phase};
use weir_envtest::{TestEnv, install_canary_crd, repo_root, server};

use crate::rejection;

/// `helm template` of charts/weir into `namespace`, one JSON value per object.
fn rendered_chart(release: &str, namespace: &str) -> Vec<Value> {
    let out = server()
        .command("helm")
        .args(["template", release])
        .arg(repo_root().join("charts/weir"))
        .args(["--namespace", namespace])
        .output()
        .expect("run helm template");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).expect("UTF-8");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("helm renders YAML");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Applies the chart's ServiceAccount, ClusterRole and ClusterRoleBinding as
/// admin; returns the ServiceAccount's name.
async fn apply_chart_rbac(env: &TestEnv) -> String {
    let ssa = PatchParams::apply("weir-envtest").force();
    let mut account = None;
    let mut kinds = Vec::new();
    for doc in rendered_chart(&env.namespace, &env.namespace) {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match kind.as_str() {
            "ServiceAccount" => {
                let sa: ServiceAccount = serde_json::from_value(doc).expect("a ServiceAccount");
                Api::<ServiceAccount>::namespaced(env.client.clone(), &env.namespace)
                    .patch(&name, &ssa, &Patch::Apply(&sa))
                    .await
                    .expect("apply the ServiceAccount");
                account = Some(name);
            }
            "ClusterRole" => {
                let role: ClusterRole = serde_json::from_value(doc).expect("a ClusterRole");
                Api::<ClusterRole>::all(env.client.clone())
                    .patch(&name, &ssa, &Patch::Apply(&role))
                    .await
                    .expect("apply the ClusterRole");
            }
            "ClusterRoleBinding" => {
                let binding: ClusterRoleBinding =
                    serde_json::from_value(doc).expect("a ClusterRoleBinding");
                Api::<ClusterRoleBinding>::all(env.client.clone())
                    .patch(&name, &ssa, &Patch::Apply(&binding))
                    .await
                    .expect("apply the ClusterRoleBinding");
            }
            other => panic!("the chart renders a {other} this test does not know how to apply"),
        }
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(
        kinds,
        ["ClusterRole", "ClusterRoleBinding", "ServiceAccount"]
    );
    account.expect("the chart renders a ServiceAccount")
}

fn object<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), "chat".to_owned())])
}

fn deployment(name: &str) -> Deployment {
    object(json!({
        "metadata": {"name": name, "labels": labels()},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels()},
            "template": {
                "metadata": {"labels": labels()},
                "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.9.0"}]},
            },
        },
    }))
}

#[tokio::test]
async fn the_charts_rbac_allows_the_controllers_operations_and_nothing_else() {
    let env = TestEnv::new("rbac").await;
    install_canary_crd(&env.client)
        .await
        .expect("install the CRD");
    let account = apply_chart_rbac(&env).await;
    let ns = env.namespace.as_str();
    let admin = env.client.clone();
    let controller: Client = env.as_service_account(&account);

    // What the user creates: the target Deployment and the Canary.
    Api::<Deployment>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &deployment("chat-frontend"))
        .await
        .expect("admin creates the target");
    let canary: Canary = object(json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "Canary",
        "metadata": {"name": "chat"},
        "spec": {
            "targetRef": {"name": "chat-frontend"},
            "service": {"port": 8000},
            "strategy": {"canary": {"steps": [{"setWeight": 10}]}},
            "analysis": {"metrics": []},
        },
    }));
    Api::<Canary>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &canary)
        .await
        .expect("admin creates the Canary");

    // --- allowed, as the controller ---
    let pp = PostParams::default();
    let merge = PatchParams::default();
    // Canaries in every namespace: list (watch), finalizer, status. The
    // API server's RBAC cache takes a moment to see the new binding: the
    // first call is retried on 403 for a while (every later one must pass
    // at once).
    let deadline = std::time::Instant::now() + super::PATIENCE;
    let all_canaries = loop {
        match Api::<Canary>::all(controller.clone())
            .list(&ListParams::default())
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 403 && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => break other.expect("list Canaries cluster-wide"),
        }
    };
    assert!(
        all_canaries
            .items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("chat"))
    );
    let canaries = Api::<Canary>::namespaced(controller.clone(), ns);
    canaries
        .patch(
            "chat",
            &merge,
            &Patch::Merge(json!({"metadata": {"finalizers": ["weir.dev/revert"]}})),
        )
        .await
        .expect("add the finalizer");
    let with_status = canaries
        .patch_status(
            "chat",
            &merge,
            &Patch::Merge(json!({"status": {"phase": "Progressing", "canaryWeight": 10.0}})),
        )
        .await
        .expect("patch status");
    assert_eq!(
        with_status.status.map(|s| s.phase),
        Some(Phase::Progressing)
    );

    // The target, the <target>-stable copy, and its size via /scale.
    let deployments = Api::<Deployment>::namespaced(controller.clone(), ns);
    deployments
        .get("chat-frontend")
        .await
        .expect("read the target");
    deployments
        .create(&pp, &deployment("chat-frontend-stable"))
        .await
        .expect("create the stable Deployment");
    let scale = deployments
        .patch_scale(
            "chat-frontend-stable",
            &merge,
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale via the scale subresource");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    assert_eq!(
        deployments
            .get("chat-frontend-stable")
            .await
            .expect("read back")
            .spec
            .and_then(|s| s.replicas),
        Some(1)
    );

    // The cohorts' Services.
    let service: Service = object(json!({
        "metadata": {"name": "chat-canary"},
        "spec": {"selector": labels(), "ports": [{"port": 8000}]},
    }));
    Api::<Service>::namespaced(controller.clone(), ns)
        .create(&pp, &service)
        .await
        .expect("create a Service");

    // A promoted template, kept for undo.
    let revision: ControllerRevision = object(json!({
        "metadata": {"name": "chat-5d8f9c"},
        "revision": 1,
        "data": {"spec": {"template": {}}},
    }));
    Api::<ControllerRevision>::namespaced(controller.clone(), ns)
        .create(&pp, &revision)
        .await
        .expect("create a ControllerRevision");

    // Events on the Canary, both APIs.
    let involved = json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Canary", "name": "chat", "namespace": ns});
    let event: Event = object(json!({
        "metadata": {"name": "chat.1"},
        "involvedObject": involved,
        "reason": "Progressing", "message": "setWeight 10", "type": "Normal",
        "source": {"component": "weir"},
    }));
    Api::<Event>::namespaced(controller.clone(), ns)
        .create(&pp, &event)
        .await
        .expect("create a core Event");
    let event_v1: EventV1 = object(json!({
        "metadata": {"name": "chat.2"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "regarding": involved,
        "reason": "Progressing", "note": "setWeight 10", "type": "Normal", "action": "Reconcile",
        "reportingController": "weir.dev/controller", "reportingInstance": "weir-0",
    }));
    Api::<EventV1>::namespaced(controller.clone(), ns)
        .create(&pp, &event_v1)
        .await
        .expect("create an events.k8s.io Event");

    // Leader election: take the Lease, then renew it.
    let leases = Api::<Lease>::namespaced(controller.clone(), ns);
    let lease: Lease = object(json!({
        "metadata": {"name": "weir-controller"},
        "spec": {"holderIdentity": "weir-0", "leaseDurationSeconds": 15},
    }));
    let mut held = leases.create(&pp, &lease).await.expect("create the Lease");
    if let Some(spec) = held.spec.as_mut() {
        spec.holder_identity = Some("weir-1".into());
    }
    let renewed = leases
        .replace("weir-controller", &pp, &held)
        .await
        .expect("update the Lease");
    assert_eq!(
        renewed.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("weir-1")
    );

    // Reads: pods (DCGM scrape targets) and EndpointSlices.
    Api::<Pod>::namespaced(controller.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list pods");
    Api::<EndpointSlice>::namespaced(controller.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list EndpointSlices");

    // --- denied ---
    let secrets = Api::<Secret>::namespaced(controller.clone(), ns);
    let (code, message) = rejection(secrets.get("anything").await);
    assert_eq!(code, 403, "reading a Secret: {message}");
    assert!(
        message.contains(&format!("system:serviceaccount:{ns}:{account}")),
        "{message}"
    );
    let (code, message) = rejection(secrets.list(&ListParams::default()).await);
    assert_eq!(code, 403, "listing Secrets: {message}");
    let (code, message) = rejection(
        Api::<Namespace>::all(controller.clone())
            .delete(ns, &DeleteParams::default())
            .await,
    );
    assert_eq!(code, 403, "deleting a Namespace: {message}");
    let (code, message) = rejection(canaries.create(&pp, &canary).await);
    assert_eq!(code, 403, "creating a Canary (the user's job): {message}");
    let (code, message) = rejection(canaries.delete("chat", &DeleteParams::default()).await);
    assert_eq!(code, 403, "deleting a Canary: {message}");
    let (code, message) = rejection(
        Api::<Pod>::namespaced(controller.clone(), ns)
            .delete("anything", &DeleteParams::default())
            .await,
    );
    assert_eq!(code, 403, "deleting a pod: {message}");
    let (code, message) = rejection(
        Api::<ClusterRole>::all(controller)
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(code, 403, "reading RBAC: {message}");
}
