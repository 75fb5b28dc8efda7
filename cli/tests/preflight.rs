//! `weir preflight` against the real API server of the harness: every
//! check passes on a prepared namespace (tests/prepared), and breaking one
//! part at a time makes exactly that check FAIL, with its fix, and the exit
//! code 1. The CRD is cluster-scoped and shared by the tests of a binary,
//! so breaking it is `preflight_crd.rs`'s job. Version skew cannot be
//! broken against one real server: its policy is table-tested in
//! `cli/src/preflight/version.rs`.
//!
//! On the control plane, with a node agent of the namespace's own
//! (tests/prepared): the target's pods and a GPU hog are placed by the
//! real scheduler and hold GPUs as they would on a cluster, and the GPU
//! node can be deleted to leave a cluster with none. What preflight
//! predicts about a whole rollout on the real scheduler and Deployment
//! controller is shown on them by `tests/nodeagent/tests/gpu_capacity.rs`
//! and `weir_on_pods.rs`.

mod common;
mod prepared;
mod stack;

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use prepared::{ALL_PASS, DCGM_METRIC, GPU_QUERY, Prepared, closed_port, preflight};
use stack::PATIENCE;
use weir_controller::kube::rbac::{CONTROLLER_RULES, permissions};
use weir_envtest::{TestEnv, control_plane, repo_root};
use weir_test_kit::poll::until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_passes_when_prepared_and_names_each_broken_part_with_its_fix() {
    let p = Prepared::new("preflight").await;
    let ns = p.ns().to_string();

    let all = p.run();
    assert_eq!(all.with("PASS"), ALL_PASS, "{}", all.text);
    assert_eq!(all.code, Some(0), "{}", all.text);
    let (detail, _) = all.says("gpu-capacity");
    assert!(
        detail.contains("promotion (RollingUpdate, surge 1)") && detail.contains("needs 3 more"),
        "{detail}"
    );

    // The target without a readiness probe, then without the target.
    let deployments: Api<Deployment> = Api::namespaced(p.env.client.clone(), &ns);
    let mut unprobed = deployments.get("chat-frontend").await.expect("target");
    unprobed.spec = prepared::target(false).spec;
    deployments
        .replace("chat-frontend", &PostParams::default(), &unprobed)
        .await
        .expect("probe removed");
    let r = p.run();
    let (detail, fix) = r.only_failure("target");
    assert!(
        detail.contains("no readinessProbe on container vllm"),
        "{detail}"
    );
    assert!(
        fix.contains("readinessProbe: {httpGet: {path: /health, port: 8000}"),
        "{fix}"
    );
    p.delete::<Deployment>("chat-frontend").await;
    let r = p.run();
    let (detail, fix) = r.only_failure("target");
    assert!(
        detail.contains(&format!("no Deployment chat-frontend in namespace {ns}")),
        "{detail}"
    );
    assert!(fix.contains("spec.targetRef.name"), "{fix}");
    assert_eq!(r.status("gpu-capacity"), "SKIP", "{}", r.text);
    deployments
        .create(&PostParams::default(), &prepared::target(true))
        .await
        .expect("target back");

    // The proxy not ready, then ready but not answering.
    let slices: Api<EndpointSlice> = Api::namespaced(p.env.client.clone(), &ns);
    let admin = p.proxy.running.admin;
    let slice = |port: u16, ready: bool| {
        serde_json::json!({
            "ports": [{"name": "admin", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [admin.ip().to_string()], "conditions": {"ready": ready}}]
        })
    };
    let patch_slice = |v: serde_json::Value| {
        let slices = slices.clone();
        async move {
            slices
                .patch("weir-proxy-0", &PatchParams::default(), &Patch::Merge(&v))
                .await
                .expect("slice patched");
        }
    };
    patch_slice(slice(admin.port(), false)).await;
    let (detail, _) = p.run().only_failure("proxy");
    assert!(
        detail.contains("has no ready endpoints (1 not ready)"),
        "{detail}"
    );
    let closed = closed_port();
    patch_slice(slice(closed, true)).await;
    let (detail, fix) = p.run().only_failure("proxy");
    assert!(
        detail.contains(&format!("{}:{closed}", admin.ip())) && detail.contains("/readyz"),
        "{detail}"
    );
    assert!(fix.contains("admin"), "{fix}");
    patch_slice(slice(admin.port(), true)).await;

    // Prometheus unreachable, then the metric absent.
    let nowhere = format!("http://127.0.0.1:{}", closed_port());
    p.metrics(&nowhere, GPU_QUERY, p.dcgm.port(), DCGM_METRIC)
        .await;
    let (detail, fix) = p.run().only_failure("metric/gpu-prom");
    assert!(
        detail.contains(&format!("Prometheus at {nowhere} does not answer")),
        "{detail}"
    );
    assert!(
        fix.contains("spec.analysis.metrics[1].source.prometheus.address"),
        "{fix}"
    );
    let absent = r#"avg(DCGM_FI_DEV_NO_SUCH_METRIC{namespace="$namespace"})"#;
    p.metrics(&p.prometheus.url, absent, p.dcgm.port(), DCGM_METRIC)
        .await;
    let (detail, _) = p.run().only_failure("metric/gpu-prom");
    assert!(
        detail.contains(&format!(
            "metric absent: avg(DCGM_FI_DEV_NO_SUCH_METRIC{{namespace=\"{ns}\"}}) returned no series"
        )),
        "{detail}"
    );

    // The DCGM exporter unreachable, then without the metric.
    p.metrics(&p.prometheus.url, GPU_QUERY, closed_port(), DCGM_METRIC)
        .await;
    let (detail, _) = p.run().only_failure("metric/gpu-dcgm");
    assert!(
        detail.contains("cannot scrape DCGM exporter pods"),
        "{detail}"
    );
    p.metrics(&p.prometheus.url, GPU_QUERY, p.dcgm.port(), "DCGM_FI_NOPE")
        .await;
    let (detail, fix) = p.run().only_failure("metric/gpu-dcgm");
    assert!(
        detail.contains("metric absent: no DCGM_FI_NOPE"),
        "{detail}"
    );
    assert!(
        fix.contains("spec.analysis.metrics[2].source.scrape.metric"),
        "{fix}"
    );
    p.good_metrics().await;

    // Not enough spare GPUs: the target's 2 pods and a hog of 5 hold 7
    // of the node's 8, the rollout needs 3 more.
    p.target_settled().await;
    let pods: Api<Pod> = Api::namespaced(p.env.client.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &prepared::pod("hog", serde_json::json!({"app": "hog"}), None, 5),
    )
    .await
    .expect("gpu hog");
    prepared::ready(&pods, "hog").await;
    let (detail, fix) = p.run().only_failure("gpu-capacity");
    assert!(
        detail.contains("needs 3 more") && detail.contains("room for 1"),
        "{detail}"
    );
    assert!(
        fix.contains("add 2 nvidia.com/gpu") && fix.contains("spec.gpuBudget: 3"),
        "{fix}"
    );
    // Once the controller has adopted the target, a GPU budget equal to
    // what stable holds needs nothing more.
    Api::<weir_crds::Canary>::namespaced(p.env.client.clone(), &ns)
        .patch_status(
            "chat",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"status": {
                "phase": "Idle", "replicas": {"stable": 2, "canary": 0}, "targetReplicas": 2}})),
        )
        .await
        .expect("adopted");
    p.patch_canary(serde_json::json!({"gpuBudget": 2})).await;
    let r = p.run();
    assert_eq!(r.with("PASS"), ALL_PASS, "{}", r.text);
    p.patch_canary(serde_json::json!({"gpuBudget": null})).await;
    p.delete::<Pod>("hog").await;

    // A graph: a component that is not there, then one that is. Its GPUs
    // count with the target's: at the promotion's peak the frontend adds
    // 3 pods of 1 GPU and decode 2 of 1 (stable, canary and a surge of one
    // less the one running), 5 of the 6 the node has free.
    p.patch_canary(serde_json::json!({"graph": {"components": [{"name": "decode"}]}}))
        .await;
    let (detail, fix) = p.run().only_failure("graph");
    assert!(
        detail.contains(&format!("no Deployment decode in namespace {ns}")),
        "{detail}"
    );
    assert!(fix.contains("create Deployment decode"), "{fix}");
    let mut decode = prepared::target(true);
    decode.metadata.name = Some("decode".into());
    if let Some(spec) = decode.spec.as_mut() {
        spec.replicas = Some(1);
        let labels = std::collections::BTreeMap::from([("app".to_string(), "decode".to_string())]);
        spec.selector.match_labels = Some(labels.clone());
        if let Some(meta) = spec.template.metadata.as_mut() {
            meta.labels = Some(labels);
        }
    }
    deployments
        .create(&PostParams::default(), &decode)
        .await
        .expect("decode");
    let r = p.run();
    let mut with_graph = ALL_PASS.to_vec();
    with_graph.push("graph");
    with_graph.sort_unstable();
    assert_eq!(r.with("PASS"), with_graph, "{}", r.text);
    let (detail, _) = r.says("graph");
    assert!(
        detail.contains("2 components, started in this order: decode, chat-frontend"),
        "{detail}"
    );
    let (detail, _) = r.says("gpu-capacity");
    assert!(
        detail.contains(
            "the pods it adds: 2 of decode (1 GPU each), 3 of chat-frontend (1 GPU each)"
        ),
        "{detail}"
    );
    p.patch_canary(serde_json::json!({"graph": null})).await;
    p.delete::<Deployment>("decode").await;

    // RBAC: a ServiceAccount that may read what preflight reads, but holds
    // only a sliver of the controller's permissions.
    rbac_too_small(&p).await;

    // No Canary of that name.
    let proxies = format!("{ns}/weir-proxy");
    let r = preflight(
        p.env.kubeconfig(),
        &["-n", &ns, "--canary", "nope", "--proxy-service", &proxies],
    );
    let (detail, _) = r.only_failure("canary");
    assert!(
        detail.contains(&format!("no Canary nope in namespace {ns}")),
        "{detail}"
    );

    // No GPU nodes (last: the target's pods lose their node). The agent
    // keeps the GPU-less node, and the exporter on it, running.
    Api::<Node>::all(p.env.client.clone())
        .delete(&p.node, &DeleteParams::default())
        .await
        .expect("node deleted");
    let r = p.run();
    let (detail, fix) = r.only_failure("gpu-nodes");
    assert!(
        detail.contains("no node has allocatable nvidia.com/gpu"),
        "{detail}"
    );
    assert!(fix.contains("device plugin"), "{fix}");
    assert_eq!(r.status("gpu-capacity"), "SKIP", "{}", r.text);
}

async fn rbac_too_small(p: &Prepared) {
    let ns = p.ns();
    let rbac = p.dir.join("rbac.json");
    let reader = format!("preflight-reader-{ns}");
    let objects = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "weir", "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": reader},
         "rules": [
            {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
            {"apiGroups": ["weir.dev"], "resources": ["canaries"], "verbs": ["get", "list", "watch"]}
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": reader},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": reader},
         "subjects": [{"kind": "ServiceAccount", "name": "weir", "namespace": ns}]}
    ]});
    std::fs::write(&rbac, objects.to_string()).expect("write rbac");
    let applied = p
        .env
        .server()
        .command("kubectl")
        .args(["apply", "-f"])
        .arg(&rbac)
        .output()
        .expect("kubectl runs");
    assert!(applied.status.success(), "{applied:?}");
    let account = format!("system:serviceaccount:{ns}:weir");
    let groups = vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{ns}"),
        "system:authenticated".to_string(),
    ];
    let config = p.kubeconfig("weir-sa", |k| {
        for a in &mut k.auth_infos {
            if let Some(auth) = a.auth_info.as_mut() {
                auth.impersonate = Some(account.clone());
                auth.impersonate_groups = Some(groups.clone());
            }
        }
    });
    let r = until("the reader role to take effect", PATIENCE, || {
        let r = p.run_as(&config);
        async move { (r.status("crd") == "PASS").then_some(r) }
    })
    .await;
    let (detail, fix) = r.only_failure("rbac");
    assert!(
        detail.starts_with(&format!("{account} may not ")),
        "{detail}"
    );
    // What the reader role grants (get canaries, get deployments, list
    // pods, ...) is not missing; the rest of the controller's rules is.
    for missing in [
        "may not update,patch canaries.weir.dev; get,update,patch canaries.weir.dev/status; \
         update canaries.weir.dev/finalizers; list,watch,create,update,patch deployments.apps; ",
        "; get,list,watch,create,update,patch,delete controllerrevisions.apps; ",
        "; get,watch pods; create,patch events; create,patch events.events.k8s.io; ",
        "(37 of the controller's 44 permissions missing)",
    ] {
        assert!(detail.contains(missing), "{missing}: {detail}");
    }
    assert!(
        fix.contains(&format!(
            "--clusterrole=weir-controller --serviceaccount={ns}:weir"
        )),
        "{fix}"
    );
}

#[tokio::test]
async fn an_unreachable_api_server_fails_the_api_check_and_skips_the_rest() {
    let env = TestEnv::on_control_plane("preflight-api").await;
    let dir = std::env::temp_dir().join(format!("weir-preflight-{}", env.namespace));
    std::fs::create_dir_all(&dir).expect("dir");
    let closed = prepared::kubeconfig(env.kubeconfig(), &dir.join("closed"), |k| {
        for c in &mut k.clusters {
            if let Some(cluster) = c.cluster.as_mut() {
                cluster.server = Some("https://127.0.0.1:1".into());
            }
        }
    });
    let r = preflight(&closed, &["-n", &env.namespace, "--canary", "chat"]);
    let (detail, fix) = r.only_failure("api");
    assert!(
        detail.contains("cannot reach the API server at https://127.0.0.1:1"),
        "{detail}"
    );
    assert!(fix.contains("kubectl cluster-info"), "{fix}");
    assert_eq!(r.with("PASS"), Vec::<&str>::new(), "{}", r.text);
    assert_eq!(r.with("SKIP").len(), r.checks.len() - 1, "{}", r.text);

    // The table says the same to a person.
    let out = common::command(&["preflight", "-n", &env.namespace])
        .env("KUBECONFIG", &closed)
        .output()
        .expect("weir runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.starts_with("CHECK"), "{text}");
    assert!(
        text.contains("fix: check that the API server at https://127.0.0.1:1"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The controller's rules in code (`weir_controller::kube::rbac`, which
/// preflight asks about) are the chart's controller ClusterRole, verb for
/// verb.
#[test]
fn the_rules_preflight_checks_are_the_charts_controller_clusterrole() {
    let out = control_plane()
        .command("helm")
        .args(["template", "weir"])
        .arg(repo_root().join("charts/weir"))
        .args(["--namespace", "weir-system"])
        .output()
        .expect("run helm template");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).expect("UTF-8");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).expect("YAML");
    let role = docs
        .iter()
        .find(|d| {
            d["kind"] == "ClusterRole"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-controller"))
        })
        .expect("the chart renders the controller's ClusterRole");
    let mut chart = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        let list = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .unwrap_or(&Vec::new())
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        };
        for group in list("apiGroups") {
            for resource in list("resources") {
                for verb in list("verbs") {
                    chart.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    let code: BTreeSet<(String, String, String)> = permissions(CONTROLLER_RULES)
        .into_iter()
        .map(|(p, _)| {
            let resource = match p.subresource {
                Some(s) => format!("{}/{s}", p.resource),
                None => p.resource.to_string(),
            };
            (p.group.to_string(), resource, p.verb.to_string())
        })
        .collect();
    let only_chart: Vec<_> = chart.difference(&code).collect();
    let only_code: Vec<_> = code.difference(&chart).collect();
    assert!(
        only_chart.is_empty() && only_code.is_empty(),
        "controller/src/kube/rbac.rs and charts/weir/templates/rbac.yaml disagree:\n  \
         only in the chart: {only_chart:?}\n  only in CONTROLLER_RULES: {only_code:?}"
    );
}
