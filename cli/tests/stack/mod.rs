//! The full-stack harness of the Kubernetes tests: a real API server
//! (weir-envtest), the controller in-process, `weir sim` processes as the
//! pods of each version, and a small stand-in for what the API server
//! cannot do without a kubelet and a controller-manager.
//!
//! The stand-in ([`Kubelet`]) is the only simulated part, and it does
//! exactly what those components would: it reports a Deployment's pods
//! ready (the status subresource, as the Deployment controller writes it)
//! and writes the EndpointSlices of weir's Services (as the EndpointSlice
//! controller would), pointing each "pod" at a sim process that runs the
//! pod's image. Which sim runs which image is the test's to say, and to
//! change mid-run ("the new version turns bad").
//!
//! The API server refuses loopback addresses in EndpointSlices, so sims
//! listen on the host's own address, one port each; each pod gets an
//! EndpointSlice of its own carrying its port (as a Service with a named
//! target port whose pods use different container ports would).

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Client, ResourceExt};
use weir_crds::Canary;

use crate::common::{self, Proc, STARTUP};

/// Longest wait for anything the controller does.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// The host's own non-loopback IPv4 address (EndpointSlices refuse
/// loopback): the source address of a route to a public address (no
/// packet is sent).
pub fn host_ip() -> IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket");
    socket
        .connect("192.0.2.255:9")
        .or_else(|_| socket.connect("8.8.8.8:53"))
        .expect("a route out of this host");
    let ip = socket.local_addr().expect("local addr").ip();
    assert!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "this host has no non-loopback address for EndpointSlices: {ip}"
    );
    ip
}

/// A `weir sim` process listening on the host's address.
pub struct Pod {
    _proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Starts `weir sim --name NAME` on the host's address; `extra` are more
/// flags (`--ttft 200ms` ...).
pub fn pod(name: &str, extra: &[&str]) -> Pod {
    let listen = format!("{}:0", host_ip());
    let mut args = vec!["sim", "--listen", &listen, "--name", name, "--seed", "7"];
    args.extend_from_slice(extra);
    let proc = common::spawn(&format!("sim {name}"), &args);
    let addr = proc
        .stderr
        .wait_for(STARTUP, |t| {
            common::between(t, " on http://", "/v1").map(String::from)
        })
        .unwrap_or_else(|| panic!("sim {name} did not start:\n{}", proc.stderr.text()));
    Pod {
        _proc: proc,
        addr: addr.parse().expect("the sim prints ip:port"),
    }
}

/// Which sim ports serve which image: replica `i` of a Deployment whose
/// first container runs `image` is `ports[i % len]`.
pub type Images = Arc<Mutex<HashMap<String, Vec<u16>>>>;

/// The kubelet, Deployment controller and EndpointSlice controller, as far
/// as weir can tell: see the module docs.
pub struct Kubelet {
    task: tokio::task::JoinHandle<()>,
    /// What runs each image; change it to change what a version does.
    pub images: Images,
    /// Deployments whose rollouts do not progress (status frozen).
    held: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Kubelet {
    /// Starts it for `namespace`.
    pub fn start(client: Client, namespace: &str, images: HashMap<String, Vec<u16>>) -> Kubelet {
        let images: Images = Arc::new(Mutex::new(images));
        let held = Arc::default();
        let task = tokio::spawn(kubelet_loop(
            client,
            namespace.to_string(),
            Arc::clone(&images),
            Arc::clone(&held),
        ));
        Kubelet { task, images, held }
    }

    /// Freezes (or, with `false`, releases) Deployment `name`'s rollout:
    /// its status stays as it is, as if its new pods never got ready.
    pub fn hold(&self, name: &str, held: bool) {
        let mut set = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held {
            set.insert(name.to_string());
        } else {
            set.remove(name);
        }
    }

    /// Makes `image` run on `ports` from now on.
    pub fn set_image(&self, image: &str, ports: Vec<u16>) {
        self.images
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(image.to_string(), ports);
    }
}

fn image_of(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()
}

fn labels_of(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

async fn kubelet_loop(
    client: Client,
    namespace: String,
    images: Images,
    held: Arc<Mutex<std::collections::HashSet<String>>>,
) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    let ip = host_ip().to_string();
    let ssa = PatchParams::apply("test-kubelet").force();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(deps) = deployments.list(&ListParams::default()).await else {
            continue;
        };
        for d in &deps.items {
            if held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&d.name_any())
            {
                continue;
            }
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let st = d.status.clone().unwrap_or_default();
            let done = st.observed_generation == d.metadata.generation
                && st.replicas == Some(want)
                && st.ready_replicas == Some(want)
                && st.updated_replicas == Some(want);
            if !done {
                let body = serde_json::json!({"status": {
                    "observedGeneration": d.metadata.generation,
                    "replicas": want,
                    "updatedReplicas": want,
                    "readyReplicas": want,
                    "availableReplicas": want,
                }});
                let _ = deployments
                    .patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&body))
                    .await;
            }
        }
        let Ok(svcs) = services
            .list(&ListParams::default().labels(&format!(
                "{}={}",
                weir_crds::names::MANAGED_BY,
                weir_crds::names::MANAGER
            )))
            .await
        else {
            continue;
        };
        let Ok(existing) = slices.list(&ListParams::default()).await else {
            continue;
        };
        let ports_of = |image: &str| {
            images
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(image)
                .cloned()
                .unwrap_or_default()
        };
        for svc in &svcs.items {
            let name = svc.name_any();
            let selector = svc
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            // The pods the Service selects: replica i of each matching
            // Deployment, on the sim port that runs its image.
            let mut pods: Vec<u16> = Vec::new();
            for d in &deps.items {
                let labels = labels_of(d);
                if selector.is_empty() || !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                    continue;
                }
                let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let ports = image_of(d).map(|i| ports_of(&i)).unwrap_or_default();
                for i in 0..usize::try_from(replicas).unwrap_or(0) {
                    if let Some(p) = ports.get(i % ports.len().max(1)) {
                        pods.push(*p);
                    }
                }
            }
            let mut wanted: Vec<String> = Vec::new();
            for (i, port) in pods.iter().enumerate() {
                let slice_name = format!("{name}-{i}");
                wanted.push(slice_name.clone());
                let mut labels = svc.labels().clone();
                labels.insert("kubernetes.io/service-name".into(), name.clone());
                labels.insert(
                    "endpointslice.kubernetes.io/managed-by".into(),
                    "test-kubelet".into(),
                );
                let slice = EndpointSlice {
                    metadata: ObjectMeta {
                        name: Some(slice_name.clone()),
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    },
                    address_type: "IPv4".into(),
                    endpoints: vec![Endpoint {
                        addresses: vec![ip.clone()],
                        conditions: Some(EndpointConditions {
                            ready: Some(true),
                            serving: Some(true),
                            terminating: Some(false),
                        }),
                        ..Endpoint::default()
                    }],
                    ports: Some(vec![EndpointPort {
                        name: Some("http".into()),
                        port: Some(i32::from(*port)),
                        protocol: Some("TCP".into()),
                        app_protocol: None,
                    }]),
                };
                let same = existing.items.iter().any(|e| {
                    e.name_any() == slice_name
                        && e.ports
                            .as_ref()
                            .and_then(|p| p.first())
                            .and_then(|p| p.port)
                            == Some(i32::from(*port))
                });
                if !same {
                    let mut body = serde_json::to_value(&slice).unwrap_or_default();
                    body["apiVersion"] = "discovery.k8s.io/v1".into();
                    body["kind"] = "EndpointSlice".into();
                    let _ = slices.patch(&slice_name, &ssa, &Patch::Apply(&body)).await;
                }
            }
            for e in &existing.items {
                let belongs = e.labels().get("kubernetes.io/service-name") == Some(&name);
                if belongs && !wanted.contains(&e.name_any()) {
                    let _ = slices.delete(&e.name_any(), &DeleteParams::default()).await;
                }
            }
        }
    }
}

/// Polls `check` until it returns `Some` or `PATIENCE` passes; panics with
/// `what` and the last value of `describe`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Canary's Events, oldest first: (reason, note).
pub async fn events(client: &Client, namespace: &str, canary: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let mut list: Vec<Event> = api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(canary))
        .collect();
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    list.into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// The Canary now.
pub async fn canary(client: &Client, namespace: &str, name: &str) -> Canary {
    Api::<Canary>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .expect("canary")
}

/// Waits until the Canary reaches `phase`; on timeout, panics with its
/// status and Events.
pub async fn wait_phase(
    client: &Client,
    namespace: &str,
    name: &str,
    phase: weir_crds::Phase,
) -> weir_crds::CanaryStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let c = canary(client, namespace, name).await;
        if let Some(s) = c.status.as_ref().filter(|s| s.phase == phase) {
            return s.clone();
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out waiting for phase {phase}: status {:#?}\nevents {:#?}",
                c.status,
                events(client, namespace, name).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every status the Canary went through, as a watch saw them: (phase,
/// currentStep, canary weight), consecutive repeats dropped.
pub struct Trail {
    task: tokio::task::JoinHandle<()>,
    seen: Arc<Mutex<Vec<(weir_crds::Phase, u32, f64)>>>,
}

impl Drop for Trail {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Trail {
    /// Starts watching Canary `name`.
    pub fn start(client: &Client, namespace: &str, name: &str) -> Trail {
        use futures::StreamExt;
        use kube::runtime::WatchStreamExt;
        let api: Api<Canary> = Api::namespaced(client.clone(), namespace);
        let seen: Arc<Mutex<Vec<(weir_crds::Phase, u32, f64)>>> = Arc::default();
        let sink = Arc::clone(&seen);
        let config =
            kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"));
        let task = tokio::spawn(async move {
            let mut stream = kube::runtime::watcher(api, config)
                .applied_objects()
                .boxed();
            while let Some(item) = stream.next().await {
                let Ok(c) = item else { continue };
                let Some(s) = c.status else { continue };
                let entry = (s.phase, s.current_step, s.canary_weight);
                let mut all = sink.lock().unwrap_or_else(PoisonError::into_inner);
                if all.last() != Some(&entry) {
                    all.push(entry);
                }
            }
        });
        Trail { task, seen }
    }

    /// What it saw so far.
    pub fn seen(&self) -> Vec<(weir_crds::Phase, u32, f64)> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
