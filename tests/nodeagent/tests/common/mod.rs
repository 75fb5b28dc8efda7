//! What the control-plane tests share: the node agent process, the Nodes
//! becoming usable, a namespace.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use weir_controller::kube::run::{Handle, Settings};
use weir_crds::Canary;
use weir_test_kit::poll::until;

/// Bound on each wait for the control plane.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// The agent process; SIGTERM on drop so it removes its namespaces and
/// bridge (it also stops by itself once this test binary is gone).
pub struct AgentProcess(pub Child);

impl Drop for AgentProcess {
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

pub fn weir_bin() -> PathBuf {
    let bin = std::env::var_os("WEIR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_BIN_EXE_weir-node-agent")).with_file_name("weir")
        });
    assert!(
        bin.is_file(),
        "no weir binary at {}: build it first (cargo build -p weir) or set WEIR_BIN",
        bin.display()
    );
    bin
}

/// Starts the agent with `nodes`, each `name:resource=quantity,...`.
pub fn start_agent(kubeconfig: &Path, log_dir: &Path, nodes: &[&str]) -> AgentProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir-node-agent"));
    for node in nodes {
        cmd.args(["--node", node]);
    }
    let child = cmd
        .arg("--weir-bin")
        .arg(weir_bin())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--log-dir")
        .arg(log_dir)
        .args(["--exit-with-pid", &std::process::id().to_string()])
        .stdin(Stdio::null())
        .spawn()
        .expect("start weir-node-agent");
    AgentProcess(child)
}

/// Waits until `count` Nodes are registered with no taint: the agent
/// registers them, the node-lifecycle controller lifts the not-ready taint
/// the API server put on them.
pub async fn nodes_usable(client: &Client, count: usize) {
    let nodes = Api::<Node>::all(client.clone());
    until("the Nodes Ready and untainted", PATIENCE, || async {
        let list = nodes
            .list(&ListParams::default())
            .await
            .expect("list Nodes");
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
        if usable == count {
            Ok(())
        } else {
            Err(list.items.len())
        }
    })
    .await;
}

pub async fn create_namespace(client: &Client, name: &str) {
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

/// weir's controller for `namespace`, leading from the start (no proxies:
/// nothing measures its Canaries), and `canary` created for it. Keep the
/// sender: dropping it stops the controller.
pub async fn run_controller(
    client: &Client,
    namespace: &str,
    canary: &Canary,
) -> (watch::Sender<bool>, Handle) {
    Api::<Canary>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), canary)
        .await
        .expect("create Canary");
    let (lead, leading) = watch::channel(true);
    let handle = Handle::spawn(
        client.clone(),
        Settings {
            namespace: Some(namespace.into()),
            identity: format!("{namespace}-test"),
            ..Settings::default()
        },
        leading,
    );
    (lead, handle)
}

/// A new version of Deployment `name`: its container `vllm` runs `image`.
pub async fn set_image(client: &Client, namespace: &str, name: &str, image: &str) {
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Strategic(
                serde_json::json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "vllm", "image": image}
                ]}}}}),
            ),
        )
        .await
        .expect("a new version");
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone())
}

/// The pid of the `weir sim` process the agent runs for pod `name` (its
/// command line has `--name <pod>`).
pub fn sim_pid(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_sim = args.iter().any(|a| *a == b"sim")
                && args
                    .windows(2)
                    .any(|w| w[0] == b"--name" && w[1] == name.as_bytes());
            is_sim.then_some(pid)
        })
}

/// The image of the Deployment's first container.
pub fn image_of(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.spec.as_ref()?.containers[0]
        .image
        .clone()
}

/// The Events of `namespace` with `reason`, as they are now.
pub async fn events(client: &Client, namespace: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .expect("list Events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}
