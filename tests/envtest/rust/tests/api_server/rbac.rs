//! The chart's RBAC (charts/weir/templates/{controller,proxy}-rbac.yaml) is
//! enough for what the controller and the proxies do, and no more, in
//! cluster scope and in namespace scope: every operation runs as the
//! chart's ServiceAccounts (impersonated), with only the rendered rules
//! applied. (cli/tests/chart.rs runs the real processes with real tokens.)

use std::collections::BTreeMap;
use std::future::Future;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, Client};
use serde_json::{Value, json};
use weir_crds::{Canary, Phase};
use weir_envtest::{TestEnv, install_canary_crd, repo_root, server};

use weir_test_kit::poll::until;

use crate::rejection;

/// `helm template` of charts/weir into `namespace` with `extra` values, one
/// JSON value per object.
fn rendered_chart(release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let out = server()
        .command("helm")
        .args(["template", release])
        .arg(repo_root().join("charts/weir"))
        .args(["--namespace", namespace])
        .args(extra)
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

/// The chart's two ServiceAccounts and the controller's Lease, as rendered.
struct Accounts {
    controller: String,
    proxy: String,
    lease: String,
}

/// Applies, as admin, the ServiceAccounts and every RBAC object the chart
/// renders into `env`'s namespace with `extra` values (release: the
/// namespace's name); returns the accounts and the kinds applied, sorted.
async fn apply_chart_rbac(env: &TestEnv, extra: &[&str]) -> (Accounts, Vec<String>) {
    let mut kinds = Vec::new();
    let mut controller = None;
    let mut proxy = None;
    let mut lease = None;
    for doc in rendered_chart(&env.namespace, &env.namespace, extra) {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let ns = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or(&env.namespace)
            .to_owned();
        let client = env.client.clone();
        match kind.as_str() {
            "ServiceAccount" => {
                apply::<ServiceAccount>(Api::namespaced(client, &ns), &name, doc).await;
                if name.ends_with("-controller") {
                    controller = Some(name);
                } else if name.ends_with("-proxy") {
                    proxy = Some(name);
                }
            }
            "ClusterRole" => apply::<ClusterRole>(Api::all(client), &name, doc).await,
            "ClusterRoleBinding" => {
                apply::<ClusterRoleBinding>(Api::all(client), &name, doc).await;
            }
            "Role" => apply::<Role>(Api::namespaced(client, &ns), &name, doc).await,
            "RoleBinding" => {
                apply::<RoleBinding>(Api::namespaced(client, &ns), &name, doc).await;
            }
            // Workloads and their Services grant nothing; the controller's
            // args name its Lease.
            "Deployment" => {
                let args = doc["spec"]["template"]["spec"]["containers"][0]["args"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if let Some(l) = args
                    .iter()
                    .find_map(|a| a.as_str()?.strip_prefix("--lease-name="))
                {
                    lease = Some(l.to_owned());
                }
                continue;
            }
            "Service" | "PodDisruptionBudget" => continue,
            other => panic!("the chart renders a {other} this test does not know about"),
        }
        kinds.push(kind);
    }
    kinds.sort();
    let accounts = Accounts {
        controller: controller.expect("the chart renders the controller's ServiceAccount"),
        proxy: proxy.expect("the chart renders the proxies' ServiceAccount"),
        lease: lease.expect("the controller's --lease-name"),
    };
    (accounts, kinds)
}

/// Server-side applies `doc` as a `K` named `name` through `api`.
async fn apply<K>(api: Api<K>, name: &str, doc: Value)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let object: K = object(doc);
    api.patch(
        name,
        &PatchParams::apply("weir-envtest").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

/// The first call of a new ServiceAccount: the API server's RBAC cache
/// takes a moment to see a new binding, so 403 is retried for a while
/// (every later call must pass at once).
async fn first_allowed<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    until(what, super::PATIENCE, || {
        let answer = call();
        async move {
            match answer.await {
                Err(kube::Error::Api(e)) if e.code == 403 => Err(e),
                other => Ok(other.unwrap_or_else(|e| panic!("{what}: {e}"))),
            }
        }
    })
    .await
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
    let (accounts, kinds) = apply_chart_rbac(&env, &[]).await;
    // Cluster scope: a ClusterRole each, and the controller's Role for its
    // Lease and the proxies' EndpointSlices in the release's namespace.
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "ServiceAccount",
            "ServiceAccount"
        ]
    );
    let account = accounts.controller.clone();
    let ns = env.namespace.as_str();
    let admin = env.client.clone();
    let controller: Client = env.as_service_account(&account);

    // What the user creates: the target Deployment and the Canary.
    Api::<Deployment>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &deployment("chat-frontend"))
        .await
        .expect("admin creates the target");
    let canary = create_canary(&admin, ns).await;

    // --- allowed, as the controller ---
    let pp = PostParams::default();
    let merge = PatchParams::default();
    // Canaries in every namespace: list (watch), finalizer, status.
    lists_chat_cluster_wide(&controller, ns).await;
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

    // Leader election: take the chart's Lease, then renew it.
    let leases = Api::<Lease>::namespaced(controller.clone(), ns);
    let lease: Lease = object(json!({
        "metadata": {"name": accounts.lease},
        "spec": {"holderIdentity": "weir-0", "leaseDurationSeconds": 15},
    }));
    let mut held = leases.create(&pp, &lease).await.expect("create the Lease");
    if let Some(spec) = held.spec.as_mut() {
        spec.holder_identity = Some("weir-1".into());
    }
    let renewed = leases
        .replace(&accounts.lease, &pp, &held)
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
    // Another release's Lease.
    let (code, message) = rejection(leases.get("weir-controller").await);
    assert_eq!(code, 403, "reading another Lease: {message}");
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

/// Lists the Canaries of every namespace as `client` (see
/// [`first_allowed`]) and finds `chat` of `namespace` among them.
async fn lists_chat_cluster_wide(client: &Client, namespace: &str) {
    let listed = first_allowed("list Canaries cluster-wide", || async {
        Api::<Canary>::all(client.clone())
            .list(&ListParams::default())
            .await
    })
    .await;
    assert!(listed.items.iter().any(|c| {
        c.metadata.name.as_deref() == Some("chat")
            && c.metadata.namespace.as_deref() == Some(namespace)
    }));
}

/// How the API server refuses to list through `api`.
async fn refused_list<K>(api: Api<K>) -> (u16, String)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    rejection(api.list(&ListParams::default()).await)
}

/// Creates the Canary `chat` of `namespace` as admin (its target need not
/// exist) and returns what was sent.
async fn create_canary(admin: &Client, namespace: &str) -> Canary {
    let canary = weir_envtest::canary("chat")
        .steps(json!([{"setWeight": 10}]))
        .metrics(json!([]))
        .build();
    Api::<Canary>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &canary)
        .await
        .expect("admin creates the Canary");
    canary
}

#[tokio::test]
async fn the_charts_proxy_role_only_lists_and_watches_canaries_and_endpoint_slices() {
    let env = TestEnv::new("rbac-proxy").await;
    install_canary_crd(&env.client)
        .await
        .expect("install the CRD");
    let (accounts, _) = apply_chart_rbac(&env, &[]).await;
    let ns = env.namespace.as_str();
    create_canary(&env.client, ns).await;
    let proxy = env.as_service_account(&accounts.proxy);

    // --- allowed: what its watchers do, in every namespace ---
    lists_chat_cluster_wide(&proxy, ns).await;
    // A watch from "any" version starts with the Canaries there are.
    let first = Api::<Canary>::all(proxy.clone())
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .expect("watch Canaries")
        .boxed()
        .try_next()
        .await
        .expect("a watch event");
    assert!(matches!(first, Some(WatchEvent::Added(_))), "{first:?}");
    Api::<EndpointSlice>::all(proxy.clone())
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=weir"))
        .await
        .expect("list EndpointSlices");
    let _slices = Api::<EndpointSlice>::all(proxy.clone())
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .expect("watch EndpointSlices");

    // --- denied: it writes nothing and reads nothing else ---
    let canaries = Api::<Canary>::namespaced(proxy.clone(), ns);
    let (code, message) = rejection(
        canaries
            .patch_status(
                "chat",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Aborted"}})),
            )
            .await,
    );
    assert_eq!(code, 403, "writing a Canary's status: {message}");
    assert!(
        message.contains(&format!("system:serviceaccount:{ns}:{}", accounts.proxy)),
        "{message}"
    );
    let (code, message) = rejection(canaries.get("chat").await);
    assert_eq!(code, 403, "get (its watchers only list): {message}");
    let (code, message) = rejection(
        Api::<Secret>::namespaced(proxy.clone(), ns)
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(code, 403, "listing Secrets: {message}");
    let (code, message) = rejection(
        Api::<Service>::namespaced(proxy.clone(), ns)
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(code, 403, "listing Services: {message}");
    let (code, message) = rejection(
        Api::<EndpointSlice>::namespaced(proxy.clone(), ns)
            .create(
                &PostParams::default(),
                &weir_envtest::endpoint_slice(ns, "chat-stable", [10, 0, 0, 1].into(), 8000, true),
            )
            .await,
    );
    assert_eq!(code, 403, "writing an EndpointSlice: {message}");
    let (code, message) = rejection(
        Api::<Lease>::namespaced(proxy, ns)
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(code, 403, "the controller's Leases: {message}");
}

#[tokio::test]
async fn in_namespace_scope_both_accounts_are_confined_to_the_watched_namespace() {
    let env = TestEnv::new("rbac-namespaced").await;
    let watched = TestEnv::new("rbac-watched").await;
    let elsewhere = TestEnv::new("rbac-elsewhere").await;
    install_canary_crd(&env.client)
        .await
        .expect("install the CRD");
    let scope = format!("rbac.watchNamespace={}", watched.namespace);
    let (accounts, kinds) =
        apply_chart_rbac(&env, &["--set", "rbac.scope=namespace", "--set", &scope]).await;
    assert_eq!(
        kinds,
        [
            "Role",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "RoleBinding",
            "ServiceAccount",
            "ServiceAccount"
        ],
        "no ClusterRole in namespace scope"
    );
    let (home, app, other) = (
        env.namespace.as_str(),
        watched.namespace.as_str(),
        elsewhere.namespace.as_str(),
    );
    for ns in [app, other] {
        create_canary(&env.client, ns).await;
    }
    // The ServiceAccounts live in the release's namespace.
    let controller = env.as_service_account(&accounts.controller);
    let proxy = env.as_service_account(&accounts.proxy);

    // --- allowed, in the watched namespace ---
    first_allowed("the controller lists the watched Canaries", || async {
        Api::<Canary>::namespaced(controller.clone(), app)
            .list(&ListParams::default())
            .await
    })
    .await;
    Api::<Canary>::namespaced(controller.clone(), app)
        .patch_status(
            "chat",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Progressing"}})),
        )
        .await
        .expect("the controller writes a watched Canary's status");
    let service: Service = object(json!({
        "metadata": {"name": "chat-stable"},
        "spec": {"selector": labels(), "ports": [{"port": 8000}]},
    }));
    Api::<Service>::namespaced(controller.clone(), app)
        .create(&PostParams::default(), &service)
        .await
        .expect("the controller creates a cohort Service");
    first_allowed("the proxy lists the watched Canaries", || async {
        Api::<Canary>::namespaced(proxy.clone(), app)
            .list(&ListParams::default())
            .await
    })
    .await;
    Api::<EndpointSlice>::namespaced(proxy.clone(), app)
        .list(&ListParams::default())
        .await
        .expect("the proxy lists the watched EndpointSlices");
    // --- allowed, in the release's namespace: the Lease, the proxies ---
    let lease: Lease = object(json!({
        "metadata": {"name": accounts.lease},
        "spec": {"holderIdentity": "weir-0", "leaseDurationSeconds": 15},
    }));
    first_allowed("the controller takes its Lease", || async {
        Api::<Lease>::namespaced(controller.clone(), home)
            .create(&PostParams::default(), &lease)
            .await
    })
    .await;
    Api::<EndpointSlice>::namespaced(controller.clone(), home)
        .list(&ListParams::default().labels("kubernetes.io/service-name=weir-proxy-admin"))
        .await
        .expect("the controller finds the proxies");

    // --- denied: every namespace but the watched one ---
    let status_patch = Patch::Merge(json!({"status": {"phase": "Aborted"}}));
    let denied = [
        (
            "the controller lists Canaries cluster-wide",
            refused_list(Api::<Canary>::all(controller.clone())).await,
        ),
        (
            "the controller lists another namespace's Canaries",
            refused_list(Api::<Canary>::namespaced(controller.clone(), other)).await,
        ),
        (
            "the controller lists its own namespace's Canaries",
            refused_list(Api::<Canary>::namespaced(controller.clone(), home)).await,
        ),
        (
            "the controller reads Deployments elsewhere",
            refused_list(Api::<Deployment>::namespaced(controller.clone(), other)).await,
        ),
        (
            "the controller lists pods cluster-wide (only with rbac.dcgmExporters)",
            refused_list(Api::<Pod>::all(controller.clone())).await,
        ),
        (
            "the proxy lists Canaries cluster-wide",
            refused_list(Api::<Canary>::all(proxy.clone())).await,
        ),
        (
            "the proxy lists another namespace's Canaries",
            refused_list(Api::<Canary>::namespaced(proxy.clone(), other)).await,
        ),
        (
            "the controller creates a Service elsewhere",
            rejection(
                Api::<Service>::namespaced(controller.clone(), other)
                    .create(&PostParams::default(), &service)
                    .await,
            ),
        ),
        (
            "the proxy writes a watched Canary's status",
            rejection(
                Api::<Canary>::namespaced(proxy.clone(), app)
                    .patch_status("chat", &PatchParams::default(), &status_patch)
                    .await,
            ),
        ),
    ];
    for (what, (code, message)) in denied {
        assert_eq!(code, 403, "{what}: {message}");
    }
}
