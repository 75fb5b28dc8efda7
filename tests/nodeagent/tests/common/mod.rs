//! What the control-plane tests share: the node agent process, the Nodes
//! becoming usable, a namespace.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::time::Duration;

use std::collections::HashMap;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use weir_controller::kube::run::{Handle, Settings};
use weir_crds::Canary;
use weir_envtest::cluster::{Agent, nodes_usable, start_agent};

/// Bound on each wait for the control plane.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// The binary's control plane with the agent running `nodes` (Ready and
/// untainted), the Canary CRD and `namespace`: an admin client, the agent
/// (keep it) and the directory of the pods' output (remove it once passed).
pub async fn cluster(nodes: &[&str], namespace: &str) -> (Client, Agent, PathBuf) {
    let server = weir_envtest::control_plane();
    let client = server.client().await.expect("admin client");
    let logs = std::env::temp_dir().join(format!("weir-{namespace}-test-{}", std::process::id()));
    let agent = start_agent(server.kubeconfig(), &logs, nodes).expect("the node agent starts");
    nodes_usable(&client, nodes.len())
        .await
        .expect("the Nodes usable");
    weir_envtest::install_canary_crd(&client)
        .await
        .expect("Canary CRD");
    create_namespace(&client, namespace).await;
    (client, agent, logs)
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

/// weir's controller for `namespace`, leading from the start, as the
/// chart's controller ServiceAccount (its RBAC from `charts/weir`, nothing
/// else; no proxies: nothing measures its Canaries), and `canary` created
/// for it. Keep the sender: dropping it stops the controller.
pub async fn run_controller(
    client: &Client,
    namespace: &str,
    canary: &Canary,
) -> (watch::Sender<bool>, Handle) {
    let accounts = weir_envtest::control_plane()
        .chart_accounts(namespace)
        .await
        .expect("the chart's accounts");
    Api::<Canary>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), canary)
        .await
        .expect("create Canary");
    let (lead, leading) = watch::channel(true);
    let handle = Handle::spawn(
        accounts.controller,
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

/// One moment of a rollout: the pods as the watch saw them after one
/// event, and the ReplicaSets as a list right after it returned.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The event: `+name` a pod created or changed, `~name` one being
    /// deleted, `-name` one gone (the name says its Deployment and
    /// ReplicaSet), so a failure shows whose pods moved.
    pub pod: String,
    /// Pods that exist and are not being deleted.
    pub live: usize,
    /// Those of them that are Ready.
    pub ready: usize,
    /// Pods being deleted (preStop, grace) that still exist.
    pub terminating: usize,
    /// The sum of the ReplicaSets' `spec.replicas`: what maxSurge bounds.
    pub desired: i32,
    /// Live pods their ReplicaSet still wants: per ReplicaSet, at most its
    /// `spec.replicas` of its live pods.
    pub wanted: usize,
}

/// The ReplicaSet that owns `pod`.
fn owner(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "ReplicaSet")
        .map(|o| o.uid.clone())
}

/// What the watch saw of a rollout.
#[derive(Debug, Default)]
pub struct Recording {
    /// One per pod event.
    pub samples: Vec<Sample>,
    /// For each pod deleted, how long it was seen terminating (from the
    /// first event with its deletionTimestamp to its deletion).
    pub terminations: Vec<Duration>,
}

/// Records a [`Sample`] after every pod event of `namespace`. `ready` is
/// sent once the watch has its initial list (the rollout must start after
/// that, or its first deletions are missed); after `stop`, it goes on until
/// its own view has caught up with the end state the test saw by listing
/// (`settled` pods, none terminating): a watch may lag behind a list.
pub async fn record(
    client: Client,
    namespace: String,
    settled: usize,
    ready: tokio::sync::oneshot::Sender<()>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Recording {
    let mut ready = Some(ready);
    let mut stop = Some(stop);
    let api = Api::<Pod>::namespaced(client.clone(), &namespace);
    let replica_sets = Api::<ReplicaSet>::namespaced(client, &namespace);
    let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
    let mut pods: HashMap<String, Pod> = HashMap::new();
    let mut samples = Vec::new();
    let mut deleting: HashMap<String, std::time::Instant> = HashMap::new();
    let mut terminations = Vec::new();
    // The initial list arrives one pod at a time: sample only once it is whole.
    let mut listed = false;
    loop {
        let caught_up = pods.len() == settled && deleting.is_empty();
        if stop.is_none() && caught_up {
            return Recording {
                samples,
                terminations,
            };
        }
        let event = tokio::select! {
            _ = async { stop.as_mut().expect("armed").await }, if stop.is_some() => {
                stop = None;
                continue;
            }
            event = events.next() => event,
        };
        let mut what = String::new();
        match event {
            Some(Ok(WatchEvent::Apply(p) | WatchEvent::InitApply(p))) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                let deleting_now = p.metadata.deletion_timestamp.is_some();
                what = format!("{}{}", if deleting_now { "~" } else { "+" }, p.name_any());
                if deleting_now {
                    deleting
                        .entry(uid.clone())
                        .or_insert_with(std::time::Instant::now);
                }
                pods.insert(uid, p);
            }
            Some(Ok(WatchEvent::Delete(p))) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                what = format!("-{}", p.name_any());
                if let Some(since) = deleting.remove(&uid) {
                    terminations.push(since.elapsed());
                }
                pods.remove(&uid);
            }
            Some(Ok(WatchEvent::Init)) => {
                listed = false;
                pods.clear();
                continue;
            }
            Some(Ok(WatchEvent::InitDone)) => {
                listed = true;
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            Some(Err(e)) => panic!("watching pods during the rollout: {e}"),
            None => {
                return Recording {
                    samples,
                    terminations,
                };
            }
        }
        if !listed {
            continue;
        }
        // A list is one consistent snapshot, taken after the pod event: an
        // old ReplicaSet's scale-down that caused the event is in it. Specs
        // taken later only make `wanted` smaller during a rollout (old sets
        // shrink; a new set never has more pods than its spec), so it never
        // overstates.
        let sets = replica_sets
            .list(&ListParams::default())
            .await
            .expect("list ReplicaSets");
        let spec: HashMap<String, i32> = sets
            .items
            .iter()
            .map(|rs| {
                (
                    rs.metadata.uid.clone().unwrap_or_default(),
                    rs.spec
                        .as_ref()
                        .and_then(|s| s.replicas)
                        .unwrap_or_default(),
                )
            })
            .collect();
        let live: Vec<&Pod> = pods
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let mut per_set: HashMap<String, usize> = HashMap::new();
        for pod in &live {
            *per_set.entry(owner(pod).unwrap_or_default()).or_default() += 1;
        }
        let wanted = per_set
            .iter()
            .map(|(rs, n)| {
                (*n).min(
                    spec.get(rs)
                        .and_then(|s| usize::try_from(*s).ok())
                        .unwrap_or(0),
                )
            })
            .sum();
        samples.push(Sample {
            pod: what,
            live: live.len(),
            ready: live.iter().filter(|p| is_ready(p)).count(),
            terminating: pods.len() - live.len(),
            desired: spec.values().sum(),
            wanted,
        });
    }
}

/// [`record`] running in the background from a complete first list.
pub struct Recorder {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Recording>,
}

impl Recorder {
    /// Starts recording `namespace` and returns once the watch has listed
    /// every pod (a rollout started after this is seen whole).
    pub async fn start(client: &Client, namespace: &str, settled: usize) -> Recorder {
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(record(
            client.clone(),
            namespace.to_string(),
            settled,
            ready_tx,
            stop_rx,
        ));
        tokio::time::timeout(PATIENCE, ready_rx)
            .await
            .expect("the pod watch lists within its patience")
            .expect("the recorder is running");
        Recorder { stop, task }
    }

    /// What was seen, once the watch has caught up with `settled` pods.
    pub async fn finish(self) -> Recording {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the watch catches up with the end of the rollout")
            .expect("recorder")
    }
}

/// Pods of the namespace that are not being deleted.
pub async fn live_pods(client: &Client, namespace: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The ready addresses of the namespace's EndpointSlices with `labels`.
pub async fn ready_addresses(
    client: &Client,
    namespace: &str,
    labels: &str,
) -> std::collections::BTreeSet<String> {
    weir_envtest::cluster::ready_addresses(client, namespace, labels)
        .await
        .expect("list EndpointSlices")
}
