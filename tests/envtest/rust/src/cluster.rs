//! Pods that run: the [`control_plane`](crate::control_plane) with the node
//! agent of `tests/nodeagent` (the one part of the cluster that stays ours:
//! no container runtime can run here). The agent registers Nodes, runs each
//! Pod the scheduler binds to them as a `weir sim` process in a network
//! namespace of its own, with its own pod IP, and reports it as a kubelet
//! would; the real Deployment, ReplicaSet, EndpointSlice, namespace and
//! garbage-collector controllers do everything else.
//!
//! [`TestEnv::on_cluster`](crate::TestEnv::on_cluster) gives a test a
//! namespace there; the test binary's one agent, running [`NODES`], starts
//! with the first. Tests that need Nodes of their own shape start an agent
//! with [`start_agent`].
//!
//! Needs root and iproute2 (network namespaces), and two binaries of this
//! workspace beside the test binary's directory (`cargo test --workspace`
//! builds both; alone: `cargo build -p weir -p weir-node-agent`), or at
//! `$WEIR_NODE_AGENT` and `$WEIR_BIN`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::collections::BTreeSet;
use std::net::SocketAddr;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

use crate::Error;

/// The Nodes of the shared agent: room for every test's pods (each sim
/// asks for nothing unless its test says so), and 4 GPUs in all.
pub const NODES: [&str; 2] = [
    "node-0:cpu=16,memory=64Gi,nvidia.com/gpu=2",
    "node-1:cpu=16,memory=64Gi,nvidia.com/gpu=2",
];

/// A running node agent. Dropping it sends SIGTERM (it removes its pod
/// namespaces and bridge); it also stops by itself once the test binary
/// that started it is gone, so a static one needs no drop.
#[derive(Debug)]
pub struct Agent(Child);

impl Agent {
    /// The agent's pid.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        for _ in 0..300 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A binary of this workspace: `$env` if set, else `name` in the directory
/// above the test binary's (`target/debug/deps/<test>` →
/// `target/debug/<name>`), where cargo puts the workspace's binaries.
fn workspace_binary(name: &str, package: &str, env: &str) -> Result<PathBuf, Error> {
    let path = match std::env::var_os(env) {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join(name)))
            .ok_or_else(|| Error::Binary(format!("cannot tell where {name} is: set ${env}")))?,
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Binary(format!(
            "no {name} binary at {}: build it first (cargo build -p {package}) or set ${env}",
            path.display()
        )))
    }
}

/// The `weir` binary the agent runs as each pod's process.
pub fn weir_bin() -> Result<PathBuf, Error> {
    workspace_binary("weir", "weir", "WEIR_BIN")
}

/// Starts a node agent against `kubeconfig` registering `nodes`, each
/// `name:resource=quantity,...`; the pods' output goes under `log_dir`.
pub fn start_agent(kubeconfig: &Path, log_dir: &Path, nodes: &[&str]) -> Result<Agent, Error> {
    let agent = workspace_binary("weir-node-agent", "weir-node-agent", "WEIR_NODE_AGENT")?;
    let mut cmd = Command::new(&agent);
    for node in nodes {
        cmd.args(["--node", node]);
    }
    let child = cmd
        .arg("--weir-bin")
        .arg(weir_bin()?)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--log-dir")
        .arg(log_dir)
        .args(["--exit-with-pid", &std::process::id().to_string()])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| Error::Binary(format!("starting {}: {e}", agent.display())))?;
    Ok(Agent(child))
}

/// Checks `check` every 200 ms until it gives `Ok`, for up to 90 s; on
/// timeout, the error names `what` and the last `Err` it gave.
async fn wait_for<F, Fut>(what: &str, mut check: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<(), String>, Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let last = match check().await? {
            Ok(()) => return Ok(()),
            Err(last) => last,
        };
        if Instant::now() > deadline {
            return Err(Error::Timeout(format!("{what} after 90 s: {last}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `count` Nodes are registered with no taint: the agent
/// registers them, the node-lifecycle controller lifts the not-ready taint
/// the API server put on them.
pub async fn nodes_usable(client: &Client, count: usize) -> Result<(), Error> {
    let nodes = Api::<Node>::all(client.clone());
    wait_for(&format!("{count} Nodes usable"), || async {
        let list = nodes.list(&ListParams::default()).await?;
        let usable = list
            .items
            .iter()
            .filter(|n| {
                n.spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_none_or(Vec::is_empty)
            })
            .count();
        Ok(if usable == count {
            Ok(())
        } else {
            Err(format!("{usable} usable, {} registered", list.items.len()))
        })
    })
    .await
}

/// Waits until Deployment `name` exists and has rolled out: the Deployment
/// controller has seen its current spec and reports `replicas` pods, all on its
/// template and ready.
pub async fn rolled_out(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: i32,
) -> Result<(), Error> {
    let api = Api::<Deployment>::namespaced(client.clone(), namespace);
    wait_for(
        &format!("{name} rolled out with {replicas} ready"),
        || async {
            let Some(d) = api.get_opt(name).await? else {
                return Ok(Err("not created yet".to_string()));
            };
            let s = d.status.clone().unwrap_or_default();
            let done = s.observed_generation == d.metadata.generation
                && s.replicas.unwrap_or(0) == replicas
                && s.updated_replicas.unwrap_or(0) == replicas
                && s.ready_replicas.unwrap_or(0) == replicas;
            Ok(if done { Ok(()) } else { Err(format!("{s:?}")) })
        },
    )
    .await
}

/// The test binary's control plane with its one agent running [`NODES`],
/// started on first call (the agent stops by itself with the binary), and
/// those Nodes usable.
pub async fn shared(client: &Client) -> Result<(), Error> {
    static AGENT: OnceLock<Result<Agent, String>> = OnceLock::new();
    let agent = AGENT.get_or_init(|| {
        let logs = std::env::temp_dir().join(format!("weir-agent-{}", std::process::id()));
        start_agent(crate::control_plane().kubeconfig(), &logs, &NODES).map_err(|e| e.to_string())
    });
    if let Err(e) = agent {
        return Err(Error::Binary(e.clone()));
    }
    nodes_usable(client, NODES.len()).await
}

/// The ready addresses of the namespace's EndpointSlices with `labels`
/// (`kubernetes.io/service-name=chat-canary`, say).
pub async fn ready_addresses(
    client: &Client,
    namespace: &str,
    labels: &str,
) -> Result<BTreeSet<String>, Error> {
    Ok(Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(labels))
        .await?
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect())
}

/// Stand-in for the chart's proxy pods, where a test runs weir's proxy as
/// a process or task on the host (the node agent runs only `weir sim`):
/// Service `service` (port `admin` 9090, no selector, created unless it
/// exists, as the chart's admin Service) and one EndpointSlice per proxy
/// naming its admin address, as the EndpointSlice controller would write
/// them for those pods. The controller finds the proxies through it.
pub async fn proxy_admin_endpoints(
    client: &Client,
    namespace: &str,
    service: &str,
    admins: &[SocketAddr],
) -> Result<(), Error> {
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    if services.get_opt(service).await?.is_none() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service},
            "spec": {"ports": [{"name": "admin", "port": 9090}]}
        }))
        .map_err(|e| Error::Up(format!("the admin Service: {e}")))?;
        services.create(&PostParams::default(), &svc).await?;
    }
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace);
    for (i, admin) in admins.iter().enumerate() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-{i}"),
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": if admin.is_ipv4() { "IPv4" } else { "IPv6" },
            "ports": [{"name": "admin", "port": admin.port(), "protocol": "TCP"}],
            "endpoints": [{"addresses": [admin.ip().to_string()],
                           "conditions": {"ready": true}}]
        }))
        .map_err(|e| Error::Up(format!("the admin EndpointSlice: {e}")))?;
        slices.create(&PostParams::default(), &slice).await?;
    }
    Ok(())
}
