//! A namespace prepared for `weir preflight` to pass, on the harness's
//! control plane (controller-manager, scheduler) with a node agent of its
//! own, and real parts wherever the check probes something: the Canary
//! CRD, two Nodes (one with 8 allocatable `nvidia.com/gpu`, one without
//! GPUs), the target Deployment with a readiness probe and a GPU limit
//! whose pods the scheduler places on the GPU node, a dcgm-exporter pod (a
//! `weir sim`, whose /metrics carries dcgm-exporter's series) on the other
//! node, a real Prometheus (the Debian package) scraping that pod's IP,
//! and a `weir proxy` in this process behind a proxy Service. The proxy's
//! EndpointSlice is the one written here (the proxy is no pod): a
//! stand-in, as in the other Kubernetes-mode tests. Tests break one part
//! at a time and run the `weir` binary against it.
//!
//! The agent is this namespace's own (not the test binary's shared one):
//! preflight's GPU arithmetic is checked against capacity the test sets
//! exactly, down to a cluster whose GPU node is gone.

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use weir_crds::Canary;
use weir_envtest::cluster::{self, Agent};
use weir_envtest::{SIM_PORT, TestEnv, sim_container};

use crate::common;
use crate::stack::{self, PATIENCE};
use weir_test_kit::poll::until;

/// The Debian package's binary.
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A real Prometheus scraping one target every second, killed when dropped.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Prometheus {
    /// Starts Prometheus scraping `target`'s /metrics with the extra
    /// target label `namespace`; returns once a query of `metric` returns
    /// a series.
    pub async fn start(target: SocketAddr, namespace: &str, metric: &str) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: the preflight tests need a real Prometheus; tests/run \
             installs it (apt-get install -y prometheus)"
        );
        let dir = std::env::temp_dir().join(format!("weir-preflight-prom-{namespace}"));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs:\n\
                 - job_name: sim\n\
                 \x20 static_configs:\n\
                 \x20 - targets: ['{target}']\n\
                 \x20   labels: {{namespace: '{namespace}'}}\n"
            ),
        )
        .expect("prometheus.yml");
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PROMETHEUS}: {e}"));
        let prom = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let query = format!("{}/api/v1/query?query={metric}", prom.url);
        until("Prometheus to scrape the sim", PATIENCE, || {
            let query = query.clone();
            async move {
                let body: serde_json::Value = reqwest::get(&query).await.ok()?.json().await.ok()?;
                (!body["data"]["result"].as_array()?.is_empty()).then_some(())
            }
        })
        .await;
        prom
    }
}

/// What one `weir preflight` printed with `--output json`, and its exit.
#[derive(Debug)]
pub struct Report {
    /// The exit code.
    pub code: Option<i32>,
    /// Each check's line, by name.
    pub checks: BTreeMap<String, serde_json::Value>,
    /// Everything it printed, for messages.
    pub text: String,
}

impl Report {
    /// The status of check `name`, `-` when absent.
    pub fn status(&self, name: &str) -> &str {
        self.checks
            .get(name)
            .and_then(|c| c["status"].as_str())
            .unwrap_or("-")
    }

    /// The checks with status `status`, sorted.
    pub fn with(&self, status: &str) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|(_, c)| c["status"] == status)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Check `name`'s detail and fix.
    pub fn says(&self, name: &str) -> (String, String) {
        let c = &self.checks[name];
        (
            c["detail"].as_str().unwrap_or_default().to_string(),
            c["fix"].as_str().unwrap_or_default().to_string(),
        )
    }

    /// Asserts that `name` is the only check that FAILs, that it has a
    /// fix, and that the run exited 1; returns its detail and fix.
    pub fn only_failure(&self, name: &str) -> (String, String) {
        assert_eq!(self.with("FAIL"), [name], "{}", self.text);
        assert_eq!(self.code, Some(1), "{}", self.text);
        let (detail, fix) = self.says(name);
        assert!(!fix.is_empty(), "a FAIL without a fix: {}", self.text);
        (detail, fix)
    }
}

/// Runs `weir preflight ARGS --output json` with `kubeconfig`.
pub fn preflight(kubeconfig: &Path, args: &[&str]) -> Report {
    let out = common::command(&["preflight", "--output", "json"])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("weir runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = format!(
        "{stdout}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checks = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}\n{text}"));
            (v["check"].as_str().unwrap_or_default().to_string(), v)
        })
        .collect();
    Report {
        code: out.status.code(),
        checks,
        text,
    }
}

/// Writes a copy of the kubeconfig at `from`, changed by `edit`, to `path`.
pub fn kubeconfig(from: &Path, path: &Path, edit: impl FnOnce(&mut Kubeconfig)) -> PathBuf {
    let mut k = Kubeconfig::read_from(from).expect("kubeconfig");
    edit(&mut k);
    std::fs::write(path, serde_json::to_string(&k).expect("kubeconfig json")).expect("write");
    path.to_path_buf()
}

/// A pod of `labels` that the node agent runs as a `weir sim`, asking for
/// `gpus`, placed by the scheduler (on `node` when given).
pub fn pod(name: &str, labels: serde_json::Value, node: Option<&str>, gpus: u32) -> Pod {
    let mut container = sim_container("registry.example/sim:test", &["--seed", "7"]);
    if gpus > 0 {
        container["resources"] =
            serde_json::json!({"limits": {"nvidia.com/gpu": gpus.to_string()}});
    }
    let mut spec = serde_json::json!({"containers": [container]});
    if let Some(node) = node {
        spec["nodeSelector"] = serde_json::json!({"kubernetes.io/hostname": node});
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels},
        "spec": spec
    }))
    .expect("pod")
}

/// Waits until pod `name` is ready; its IP.
pub async fn ready(pods: &Api<Pod>, name: &str) -> IpAddr {
    until(&format!("pod {name} ready"), PATIENCE, || async move {
        let pod = pods.get_opt(name).await.ok()??;
        let status = pod.status?;
        let ready = status
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(())?;
        status.pod_ip?.parse().ok()
    })
    .await
}

/// The target: 2 replicas of one GPU each, with a readiness probe unless
/// `probe` is false.
pub fn target(probe: bool) -> Deployment {
    let mut container = serde_json::json!({
        "name": "vllm", "image": "vllm/vllm-openai:v0.9.0",
        "resources": {"limits": {"nvidia.com/gpu": "1"}}
    });
    if probe {
        container["readinessProbe"] =
            serde_json::json!({"httpGet": {"path": "/health", "port": 8000}});
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "chat-frontend"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "chat"}},
            "template": {"metadata": {"labels": {"app": "chat"}},
                         "spec": {"containers": [container]}}
        }
    }))
    .expect("deployment")
}

/// The namespace, prepared.
pub struct Prepared {
    /// The test's namespace and admin client.
    pub env: TestEnv,
    /// The GPU node's name (cluster-scoped: named after the namespace).
    pub node: String,
    /// The exporter pods' label selector (unique to this namespace).
    pub exporter: String,
    /// The proxy in this process.
    pub proxy: stack::Proxy,
    /// The exporter pod's address (pod IP, [`SIM_PORT`]).
    pub dcgm: SocketAddr,
    /// Prometheus, scraping `dcgm`.
    pub prometheus: Prometheus,
    /// Scratch files (kubeconfigs, the agent's pod logs).
    pub dir: PathBuf,
    /// The node agent running the two Nodes (dropped last: SIGTERM).
    _agent: Agent,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prepared {
    /// Prepares a namespace named after `test`.
    pub async fn new(test: &str) -> Prepared {
        let env = TestEnv::on_control_plane(test).await;
        let ns = env.namespace.clone();
        let dir = std::env::temp_dir().join(format!("weir-preflight-{ns}"));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        // The GPU-less node first: the agent posts the Nodes' status in
        // this order, and the test deletes the GPU node last of all.
        let node = format!("gpu-{ns}");
        let spare = format!("cpu-{ns}");
        let agent = cluster::start_agent(
            env.kubeconfig(),
            &dir.join("pods"),
            &[
                &format!("{spare}:cpu=16,memory=64Gi"),
                &format!("{node}:cpu=64,memory=512Gi,nvidia.com/gpu=8"),
            ],
        )
        .expect("node agent");
        cluster::nodes_usable(&env.client, 2)
            .await
            .expect("the agent's Nodes");

        let exporter = format!("app=dcgm-exporter-{ns}");
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns);
        pods.create(
            &PostParams::default(),
            &pod(
                "dcgm-exporter",
                serde_json::json!({"app": format!("dcgm-exporter-{ns}")}),
                Some(&spare),
                0,
            ),
        )
        .await
        .expect("exporter pod");
        let dcgm = SocketAddr::new(ready(&pods, "dcgm-exporter").await, SIM_PORT);
        let prometheus = Prometheus::start(dcgm, &ns, "DCGM_FI_DEV_GPU_UTIL").await;

        Api::<Deployment>::namespaced(env.client.clone(), &ns)
            .create(&PostParams::default(), &target(true))
            .await
            .expect("target");
        Api::<Canary>::namespaced(env.client.clone(), &ns)
            .create(
                &PostParams::default(),
                &canary(&prometheus.url, dcgm.port(), &exporter),
            )
            .await
            .expect("canary");

        let proxy = stack::proxy(&env.client, &ns, 0).await;
        stack::proxy_service(&env.client, &ns, &[&proxy]).await;

        Prepared {
            env,
            node,
            exporter,
            proxy,
            dcgm,
            prometheus,
            dir,
            _agent: agent,
        }
    }

    /// Waits until the target has rolled out and only its 2 current pods
    /// are left (no terminating one still holds a GPU).
    pub async fn target_settled(&self) {
        cluster::rolled_out(&self.env.client, self.ns(), "chat-frontend", 2)
            .await
            .expect("the target rolled out");
        let pods: Api<Pod> = Api::namespaced(self.env.client.clone(), self.ns());
        until("only the target's 2 current pods", PATIENCE, || {
            let pods = pods.clone();
            async move {
                let list = pods.list(&ListParams::default().labels("app=chat")).await;
                (list.ok()?.items.len() == 2).then_some(())
            }
        })
        .await;
    }

    /// The namespace.
    pub fn ns(&self) -> &str {
        &self.env.namespace
    }

    /// `weir preflight -n NS --canary chat --proxy-service NS/weir-proxy`
    /// with `kubeconfig` (the admin's by default).
    pub fn run_as(&self, kubeconfig: &Path) -> Report {
        let proxies = format!("{}/weir-proxy", self.ns());
        preflight(
            kubeconfig,
            &[
                "-n",
                self.ns(),
                "--canary",
                "chat",
                "--proxy-service",
                &proxies,
            ],
        )
    }

    /// [`Prepared::run_as`] the admin.
    pub fn run(&self) -> Report {
        self.run_as(self.env.kubeconfig())
    }

    /// A copy of the admin kubeconfig, changed by `edit`.
    pub fn kubeconfig(&self, name: &str, edit: impl FnOnce(&mut Kubeconfig)) -> PathBuf {
        kubeconfig(self.env.kubeconfig(), &self.dir.join(name), edit)
    }

    /// Merges `patch` into Canary chat's spec.
    pub async fn patch_canary(&self, spec: serde_json::Value) {
        Api::<Canary>::namespaced(self.env.client.clone(), self.ns())
            .patch(
                "chat",
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({ "spec": spec })),
            )
            .await
            .expect("canary patched");
    }

    /// Replaces the Canary's analysis metrics.
    pub async fn metrics(&self, prometheus: &str, query: &str, port: u16, metric: &str) {
        self.patch_canary(serde_json::json!({"analysis": {"metrics":
            metrics(prometheus, query, port, metric, &self.exporter)}}))
            .await;
    }

    /// The metrics as prepared.
    pub async fn good_metrics(&self) {
        self.metrics(
            &self.prometheus.url,
            GPU_QUERY,
            self.dcgm.port(),
            DCGM_METRIC,
        )
        .await;
    }

    /// Deletes a namespaced object, waiting until it is gone.
    pub async fn delete<K>(&self, name: &str)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.env.client.clone(), self.ns());
        let _ = api.delete(name, &DeleteParams::default()).await;
        until(&format!("{name} to be deleted"), PATIENCE, || {
            let api = api.clone();
            async move { api.get_opt(name).await.ok()?.is_none().then_some(()) }
        })
        .await;
    }
}

/// The Prometheus query of the prepared Canary.
pub const GPU_QUERY: &str = r#"avg(DCGM_FI_DEV_GPU_UTIL{namespace="$namespace"})"#;
/// The metric its DCGM scrape reads.
pub const DCGM_METRIC: &str = "DCGM_FI_DEV_GPU_UTIL";

fn metrics(
    prometheus: &str,
    query: &str,
    port: u16,
    metric: &str,
    exporter: &str,
) -> serde_json::Value {
    serde_json::json!([
        {"name": "ttft", "kind": "latency", "maxIncrease": "10%"},
        {"name": "gpu-prom", "kind": "gauge", "maxIncrease": "15%",
         "source": {"prometheus": {"address": prometheus, "query": query}}},
        {"name": "gpu-dcgm", "kind": "gauge", "maxIncrease": "15%",
         "source": {"scrape": {"port": port, "metric": metric, "exporter": exporter}}}
    ])
}

/// Canary chat: setWeight 50% then an analysis, the three metrics.
fn canary(prometheus: &str, dcgm_port: u16, exporter: &str) -> Canary {
    weir_envtest::canary("chat")
        .steps(serde_json::json!([{"setWeight": 50}, {"analysis": {}}]))
        .metrics(metrics(
            prometheus,
            GPU_QUERY,
            dcgm_port,
            DCGM_METRIC,
            exporter,
        ))
        .build()
}

/// The checks that pass on a prepared namespace.
pub const ALL_PASS: [&str; 11] = [
    "api",
    "canary",
    "crd",
    "gpu-capacity",
    "gpu-nodes",
    "metric/gpu-dcgm",
    "metric/gpu-prom",
    "proxy",
    "rbac",
    "target",
    "version",
];

/// A closed port on the host's address.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind((host_ip(), 0)).expect("bind");
    l.local_addr().expect("addr").port()
}

/// The host's own non-loopback address (EndpointSlices and pod IPs refuse
/// loopback).
pub fn host_ip() -> IpAddr {
    IpAddr::V4(weir_envtest::host_ip().expect("a non-loopback address"))
}
