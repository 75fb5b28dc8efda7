//! Pods reach the API server, as a kubelet's pods reach the `kubernetes`
//! Service: through the agent's relay on the bridge address, with the
//! `KUBECONFIG` and `POD_NAMESPACE` the agent puts in every pod's
//! environment. The proof is a frontend pod (`weir sim --forward
//! http://worker:8000 --services-from-cluster`) that resolves Service
//! `worker` through the EndpointSlices it reads from the API server, from
//! inside its network namespace, in its own namespace (named by nothing
//! but `POD_NAMESPACE`), and relays chat completions to the worker pods.
//!
//! Needs root and iproute2 (network namespaces), and the binaries
//! (`cargo build -p weir -p weir-node-agent`). When it fails, the pods'
//! output is in `$TMPDIR/weir-api-relay-test-<pid>/`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use weir_envtest::cluster::{nodes_usable, rolled_out, start_agent};
use weir_envtest::sim_container;
use weir_test_kit::poll::until;
use weir_test_kit::sim::generation_counts;

mod common;
use common::{PATIENCE, create_namespace, pod_ip, ready_addresses};

/// The generation both Deployments run (`--generation-env G`).
const GENERATION: &str = "gen-a";
const WORKERS: i32 = 2;
const REQUESTS: usize = 4;

fn deployment(name: &str, replicas: i32, args: &[&str]) -> Deployment {
    let mut container = sim_container("weir/sim:v1", args);
    container["env"] = serde_json::json!([{"name": "G", "value": GENERATION}]);
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 2, "containers": [container]}
            }
        }
    }))
    .expect("a valid Deployment")
}

fn worker_service() -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "worker"},
        "spec": {
            "selector": {"app": "worker"},
            "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]
        }
    }))
    .expect("a valid Service")
}

async fn pods(client: &Client, namespace: &str, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The value of the sample `name{labels}` in a Prometheus text scrape.
/// Whether a TCP socket listens on exactly `addr` (`ss`; a wildcard
/// address is not `addr`).
fn listening(addr: &str) -> bool {
    let out = Command::new("ss")
        .args(["-Hltn"])
        .output()
        .expect("run ss (iproute2)");
    assert!(out.status.success(), "ss: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().nth(3) == Some(addr))
}

/// The pods' kubeconfig the agent with pid `pid` writes in `logs`.
fn pod_kubeconfig_path(logs: &Path, pid: u32) -> std::path::PathBuf {
    logs.join(format!("weir-node-agent-{pid}.kubeconfig"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_resolves_a_service_through_the_api_server_relay() {
    let server = weir_envtest::control_plane();
    let client = server.client().await.expect("admin client");
    let logs = std::env::temp_dir().join(format!("weir-api-relay-test-{}", std::process::id()));
    let agent = start_agent(server.kubeconfig(), &logs, &["api-0:cpu=8,memory=32Gi"])
        .expect("the node agent starts");
    nodes_usable(&client, 1).await.expect("the Node usable");

    // The pods' kubeconfig: the relay on the bridge address, the name the
    // serving certificate carries. It works from the host too (the host
    // reaches the bridge), a real TLS connection through the relay.
    let path = pod_kubeconfig_path(&logs, agent.id());
    let file = until(
        "the agent to write the pods' kubeconfig",
        PATIENCE,
        || async { Kubeconfig::read_from(&path).map_err(|e| e.to_string()) },
    )
    .await;
    let cluster = file.clusters[0].cluster.clone().expect("the cluster");
    let relay = cluster
        .server
        .as_deref()
        .and_then(|s| s.strip_prefix("https://"))
        .expect("an https server")
        .to_string();
    assert!(
        relay.starts_with("10.") && relay.ends_with(":443"),
        "the relay on the bridge address, port 443 when free: {relay}"
    );
    assert_eq!(cluster.tls_server_name.as_deref(), Some("127.0.0.1"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&path).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "it holds credentials");
    let through_relay = Client::try_from(
        Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .expect("a config"),
    )
    .expect("a client");
    let version = through_relay
        .apiserver_version()
        .await
        .expect("the API server through the relay, its certificate verified");
    assert!(!version.git_version.is_empty());
    assert!(listening(&relay), "the relay listens on {relay}");
    assert!(
        !listening("0.0.0.0:443") && !listening("*:443"),
        "the relay binds the bridge address only"
    );

    // A worker Deployment behind Service `worker`, and a frontend that
    // resolves the Service from inside its pod: no kubeconfig path and no
    // namespace in its args.
    let namespace = "api-relay";
    create_namespace(&client, namespace).await;
    Api::<Service>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &worker_service())
        .await
        .expect("create Service");
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let worker = deployment(
        "worker",
        WORKERS,
        &[
            "--ttft",
            "5ms",
            "--itl",
            "1ms",
            "--tokens",
            "4",
            "--generation-env",
            "G",
        ],
    );
    deployments
        .create(&PostParams::default(), &worker)
        .await
        .expect("create the worker");
    rolled_out(&client, namespace, "worker", WORKERS)
        .await
        .expect("the workers ready");
    let worker_pods = pods(&client, namespace, "worker").await;
    let worker_ips: BTreeSet<String> = worker_pods.iter().filter_map(pod_ip).collect();
    until(
        "the EndpointSlices to list the workers",
        PATIENCE,
        || async {
            let listed =
                ready_addresses(&client, namespace, "kubernetes.io/service-name=worker").await;
            if listed == worker_ips {
                Ok(())
            } else {
                Err(listed)
            }
        },
    )
    .await;
    let frontend = deployment(
        "frontend",
        1,
        &[
            "--forward",
            "http://worker:8000",
            "--services-from-cluster",
            "--generation-env",
            "G",
        ],
    );
    deployments
        .create(&PostParams::default(), &frontend)
        .await
        .expect("create the frontend");
    rolled_out(&client, namespace, "frontend", 1)
        .await
        .expect("the frontend ready (it listens once the slices are listed)");
    let frontend_ip = pods(&client, namespace, "frontend")
        .await
        .first()
        .and_then(pod_ip)
        .expect("the frontend's IP");

    // Chat completions to the frontend's pod IP, answered by the workers.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let worker_names: BTreeSet<String> = worker_pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    for _ in 0..REQUESTS {
        let response = http
            .post(format!("http://{frontend_ip}:8000/v1/chat/completions"))
            .json(&serde_json::json!({
                "model": "m",
                "messages": [{"role": "user", "content": "Hi."}]
            }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST to the frontend pod {frontend_ip}: {e}"));
        let status = response.status();
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        assert!(status.is_success(), "{status}: {body}");
        let by = body["system_fingerprint"].as_str().unwrap_or_default();
        assert!(
            worker_names.contains(by),
            "answered by a worker pod ({worker_names:?}), not {by:?}: {body}"
        );
    }
    let mut relayed = 0.0;
    for ip in &worker_ips {
        let scrape = http
            .get(format!("http://{ip}:8000/metrics"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("/metrics of {ip}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("/metrics of {ip}: {e}"));
        relayed += generation_counts(&scrape)
            .into_iter()
            .filter(|(from, own, _)| from == GENERATION && own == GENERATION)
            .map(|(.., n)| n)
            .sum::<f64>();
    }
    assert!(
        relayed >= REQUESTS as f64,
        "the workers counted the frontend's {REQUESTS} requests from and of {GENERATION}: {relayed}"
    );

    // The agent stops: the relay and the pods' kubeconfig go with it.
    Api::<Namespace>::all(client.clone())
        .delete(namespace, &DeleteParams::default())
        .await
        .expect("delete namespace");
    drop(agent);
    assert!(!path.exists(), "the pods' kubeconfig is removed");
    assert!(!listening(&relay), "the relay is stopped");
    let _ = std::fs::remove_dir_all(&logs);
}
