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
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use weir_controller::kube::fleet::ProxyService;
use weir_controller::kube::run::{Handle, Settings};
use weir_controller::notify::config::{Format, Webhook};
use weir_controller::notify::deliver::{Notifier, Policy, Source};
use weir_crds::{Canary, Phase};
use weir_envtest::{TestEnv, install_canary_crd};
use weir_test_kit::poll::{try_until, until};
use weir_test_kit::webhook;

use crate::common::{self, Proc, STARTUP};

/// Longest wait for anything the controller does.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// The host's own non-loopback address (EndpointSlices refuse loopback).
pub fn host_ip() -> IpAddr {
    IpAddr::V4(weir_envtest::host_ip().expect("a non-loopback address for the sims"))
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

/// The kubelet's images for one `weir sim` pod per version: `sim:<version>`
/// runs on that pod's port.
pub fn sim_images(versions: &[&str], pods: &[Pod]) -> HashMap<String, Vec<u16>> {
    versions
        .iter()
        .zip(pods)
        .map(|(v, p)| (format!("sim:{v}"), vec![p.addr.port()]))
        .collect()
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
    let ip = host_ip();
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
            pods.sort_unstable();
            pods.dedup();
            let mut wanted: Vec<String> = Vec::new();
            for port in &pods {
                let slice = weir_envtest::endpoint_slice(&namespace, &name, ip, *port, true);
                let slice_name = slice.metadata.name.clone().unwrap_or_default();
                wanted.push(slice_name.clone());
                if !existing.items.iter().any(|e| e.name_any() == slice_name) {
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

/// A controller that leads from the start (no lease: one replica).
pub fn controller(env: &TestEnv, name: &str) -> Handle {
    let (lead, leading) = watch::channel(true);
    // The sender must outlive the controller: a closed channel stops it.
    std::mem::forget(lead);
    let settings = Settings {
        namespace: Some(env.namespace.clone()),
        identity: name.into(),
        ..Settings::default()
    };
    Handle::spawn(env.client.clone(), settings, leading)
}

/// Each ControllerRevision's number and the image of its template,
/// sorted by number.
pub fn numbered(
    revisions: &[k8s_openapi::api::apps::v1::ControllerRevision],
) -> Vec<(i64, Option<String>)> {
    let mut numbered: Vec<(i64, Option<String>)> = revisions
        .iter()
        .map(|r| {
            let t = weir_controller::kube::builders::template_of(r).expect("template");
            (
                r.revision,
                t.spec.and_then(|s| s.containers[0].image.clone()),
            )
        })
        .collect();
    numbered.sort();
    numbered
}

/// Gives the target `chat-frontend` a new template: its container runs
/// `image`.
pub async fn set_image(deployments: &Api<Deployment>, image: &str) {
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": image}]}}}});
    deployments
        .patch(
            "chat-frontend",
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .expect("new template");
}

/// Runs `weir ARGS` against the test API server (blocking, off the
/// runtime); returns (exit code, stdout, stderr).
pub async fn weir(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = common::command(&refs)
            .env("KUBECONFIG", weir_envtest::server().kubeconfig())
            .output()
            .expect("weir runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("joins")
}

/// The Canary's Events, oldest first.
async fn listed(client: &Client, namespace: &str, canary: &str) -> Vec<Event> {
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
    list
}

/// The Canary's Events, oldest first: (reason, note).
pub async fn events(client: &Client, namespace: &str, canary: &str) -> Vec<(String, String)> {
    listed(client, namespace, canary)
        .await
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// The Canary's Events, oldest first: (reporting instance, reason).
pub async fn events_by(client: &Client, namespace: &str, canary: &str) -> Vec<(String, String)> {
    listed(client, namespace, canary)
        .await
        .into_iter()
        .map(|e| {
            (
                e.reporting_instance.unwrap_or_default(),
                e.reason.unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits until the Canary has an Event with `reason`; returns its Events
/// as [`events`] lists them. The controller records a transition's Events
/// after the status it writes, so a test that saw the status must still
/// wait for the Event.
pub async fn event_recorded(
    client: &Client,
    namespace: &str,
    canary: &str,
    reason: &str,
) -> Vec<(String, String)> {
    until(&format!("a {reason} Event"), PATIENCE, || async {
        let all = events(client, namespace, canary).await;
        if all.iter().any(|(r, _)| r == reason) {
            Ok(all)
        } else {
            Err(all)
        }
    })
    .await
}

/// Waits until controller replica `who` has recorded an Event with
/// `reason` about the Canary; returns its Events as [`events_by`] lists
/// them.
pub async fn event_recorded_by(
    client: &Client,
    namespace: &str,
    canary: &str,
    who: &str,
    reason: &str,
) -> Vec<(String, String)> {
    until(
        &format!("a {reason} Event from {who}"),
        PATIENCE,
        || async {
            let all = events_by(client, namespace, canary).await;
            if all.iter().any(|(w, r)| w == who && r == reason) {
                Ok(all)
            } else {
                Err(all)
            }
        },
    )
    .await
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
    phase: Phase,
) -> weir_crds::CanaryStatus {
    let reached = try_until(&format!("phase {phase}"), PATIENCE, || async {
        let status = canary(client, namespace, name).await.status;
        match status {
            Some(s) if s.phase == phase => Ok(s),
            other => Err(other),
        }
    })
    .await;
    match reached {
        Ok(status) => status,
        Err(timed_out) => panic!(
            "{timed_out}\nevents {:#?}",
            events(client, namespace, name).await
        ),
    }
}

/// Every status the Canary went through, as a watch saw them: (phase,
/// currentStep, canary weight), consecutive repeats dropped.
pub struct Trail {
    task: tokio::task::JoinHandle<()>,
    seen: Arc<Mutex<Vec<(Phase, u32, f64)>>>,
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
        let seen: Arc<Mutex<Vec<(Phase, u32, f64)>>> = Arc::default();
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
    pub fn seen(&self) -> Vec<(Phase, u32, f64)> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the watch has seen the Canary in `phase` (a watch may
    /// lag a read that already saw it); returns what it saw.
    pub async fn until(&self, phase: Phase) -> Vec<(Phase, u32, f64)> {
        until(&format!("the watch to see {phase}"), PATIENCE, || async {
            let seen = self.seen();
            if seen.last().is_some_and(|(p, _, _)| *p == phase) {
                Ok(seen)
            } else {
                Err(seen)
            }
        })
        .await
    }
}

/// A weir proxy in this process, following the namespace's Canaries.
pub struct Proxy {
    /// The running proxy (listen and admin addresses).
    pub running: weir_proxy::Running,
    source: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.source.abort();
    }
}

impl Proxy {
    /// `http://LISTEN/v1`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.running.listen)
    }

    /// `GET /v1/routes`.
    pub async fn routes(&self) -> Option<serde_json::Value> {
        reqwest::get(format!("http://{}/v1/routes", self.running.admin))
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// Route `ns/name` of this proxy's table, as `/v1/routes` shows it.
    async fn route(&self, namespace: &str, name: &str) -> Option<serde_json::Value> {
        let routes = self.routes().await?;
        let route_name = weir_crds::names::route(namespace, name);
        routes["table"]["routes"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == route_name.as_str())
            .cloned()
    }

    /// The canary's weight and the route's generation in this proxy's
    /// table for Canary `ns/name`.
    pub async fn canary_weight(&self, namespace: &str, name: &str) -> Option<(f64, u64)> {
        let route = self.route(namespace, name).await?;
        let weight = route["backends"]
            .as_array()?
            .iter()
            .find(|b| b["cohort"] == "canary")?["weight"]
            .as_f64()?;
        Some((weight, route["generation"].as_u64()?))
    }

    /// Whether every cohort with a share of route `ns/name` has a ready
    /// endpoint in this proxy's table (a cohort without one has its share
    /// served by the other).
    pub async fn endpoints_ready(&self, namespace: &str, name: &str) -> Option<bool> {
        let route = self.route(namespace, name).await?;
        Some(route["backends"].as_array()?.iter().all(|b| {
            b["weight"].as_f64() == Some(0.0)
                || b["endpoints"]
                    .as_array()
                    .is_none_or(|endpoints| !endpoints.is_empty())
        }))
    }
}

/// Starts a proxy serving the Canaries of `namespace`, its admin API on
/// the host's address (the controller finds it through an EndpointSlice).
pub async fn proxy(client: &Client, namespace: &str, n: usize) -> Proxy {
    use weir_proxy::config::kube::{KubeSource, Scope};
    let source = Arc::new(KubeSource::new(
        client.clone(),
        Scope {
            namespace: Some(namespace.to_string()),
            selector: None,
        },
    ));
    let runner = Arc::clone(&source);
    let task = tokio::spawn(async move { runner.run().await });
    let settings = weir_proxy::Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin: SocketAddr::new(host_ip(), 0),
        timeouts: weir_proxy::Timeouts::default(),
        draw_seed: None,
        max_connections: None,
        tls: None,
        upstream_ca: None,
    };
    let observations = Arc::new(weir_proxy::Observations::new(format!(
        "test-proxy-{n}-{}",
        std::process::id()
    )));
    let running = weir_proxy::start(
        settings,
        source as Arc<dyn weir_proxy::ConfigSource>,
        observations,
    )
    .await
    .expect("proxy starts");
    Proxy {
        running,
        source: task,
    }
}

/// The proxies' Service `weir-proxy` (no selector) and one EndpointSlice
/// per proxy naming its admin port, as the chart's Service would have.
pub async fn proxy_service(client: &Client, namespace: &str, proxies: &[&Proxy]) {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "weir-proxy"},
        "spec": {"ports": [{"name": "admin", "port": 9090}]}
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("proxy service");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    for (i, p) in proxies.iter().enumerate() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("weir-proxy-{i}"),
                         "labels": {"kubernetes.io/service-name": "weir-proxy"}},
            "addressType": "IPv4",
            "ports": [{"name": "admin", "port": p.running.admin.port(), "protocol": "TCP"}],
            "endpoints": [{"addresses": [p.running.admin.ip().to_string()],
                           "conditions": {"ready": true}}]
        }))
        .expect("slice");
        slices
            .create(&PostParams::default(), &slice)
            .await
            .expect("proxy slice");
    }
}

/// `weir load` through `url` at `rate` requests a second for `secs`.
pub fn load(url: &str, rate: u32, secs: u32, extra: &[&str]) -> Proc {
    let rate = rate.to_string();
    let duration = format!("{secs}s");
    let mut args = vec![
        "load",
        "--url",
        url,
        "--rate",
        &rate,
        "--duration",
        &duration,
        "--max-tokens",
        "8",
    ];
    args.extend_from_slice(extra);
    common::spawn("load", &args)
}

use weir_test_kit::sim::FAST;

/// The target Deployment `chat-frontend` running `image`.
pub fn target(image: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "chat-frontend"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "chat"}},
            "template": {
                "metadata": {"labels": {"app": "chat"}},
                "spec": {"containers": [{"name": "vllm", "image": image}]}
            }
        }
    }))
    .expect("deployment")
}

pub fn image_of(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.spec.as_ref()?.containers[0]
        .image
        .clone()
}

/// Canary `chat` with `strategy`, judged fast
/// ([`weir_envtest::CanaryBuilder::judged_fast`]).
pub fn canary_spec(strategy: serde_json::Value) -> Canary {
    weir_envtest::canary("chat")
        .strategy(strategy)
        .judged_fast()
        .build()
}

/// One namespace with the target on v1, a Canary, two proxies, their
/// Service, a controller, and a webhook receiver that gets every rollout
/// notification of the Canary.
pub struct Stack {
    pub env: TestEnv,
    pub kubelet: Kubelet,
    pub proxies: Vec<Proxy>,
    pub controller: Option<Handle>,
    /// What the webhook received.
    pub hooks: webhook::Log,
    notifier: Notifier,
    _pods: Vec<Pod>,
    /// Held for the whole test, and dropped last: verdicts compare
    /// latencies, so two stacks must not share the cores at once.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Stack {
    pub async fn new(name: &str, strategy: serde_json::Value, v2: &[&str]) -> Stack {
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let turn = ONE_AT_A_TIME.lock().await;
        let env = TestEnv::new(name).await;
        install_canary_crd(&env.client).await.expect("crd");
        let ns = env.namespace.clone();
        let v1_pod = pod("v1", FAST);
        let v2_pod = pod("v2", v2);
        let kubelet = Kubelet::start(
            env.client.clone(),
            &ns,
            HashMap::from([
                ("sim:v1".to_string(), vec![v1_pod.addr.port()]),
                ("sim:v2".to_string(), vec![v2_pod.addr.port()]),
            ]),
        );
        Api::<Deployment>::namespaced(env.client.clone(), &ns)
            .create(&PostParams::default(), &target("sim:v1", 1))
            .await
            .expect("target");
        Api::<Canary>::namespaced(env.client.clone(), &ns)
            .create(&PostParams::default(), &canary_spec(strategy))
            .await
            .expect("canary");
        let proxies = vec![
            proxy(&env.client, &ns, 0).await,
            proxy(&env.client, &ns, 1).await,
        ];
        proxy_service(&env.client, &ns, &proxies.iter().collect::<Vec<_>>()).await;
        let receiver = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a webhook port");
        let hook = Webhook {
            name: "test".into(),
            url: format!(
                "http://{}/hook",
                receiver.local_addr().expect("its address")
            ),
            format: Format::Json,
            headers: BTreeMap::new(),
            all_canaries: true,
            events: Vec::new(),
        };
        let hooks = webhook::serve(receiver, webhook::Answer::Ok);
        let notifier = Notifier::start(Source::Static(vec![hook]), Policy::default());
        let mut stack = Stack {
            env,
            kubelet,
            proxies,
            controller: None,
            hooks,
            notifier,
            _pods: vec![v1_pod, v2_pod],
            _turn: turn,
        };
        stack.start_controller("first");
        wait_phase(&stack.env.client, &ns, "chat", Phase::Idle).await;
        stack
    }

    pub fn ns(&self) -> &str {
        &self.env.namespace
    }

    /// The notification bodies received so far, once one of `event` is
    /// among them.
    pub async fn notified(&self, event: &str) -> Vec<serde_json::Value> {
        until(&format!("a {event} notification"), PATIENCE, || async {
            let bodies: Vec<serde_json::Value> =
                self.hooks.all().into_iter().map(|r| r.body).collect();
            if bodies.iter().any(|b| b["event"] == event) {
                Ok(bodies)
            } else {
                Err(bodies
                    .iter()
                    .map(|b| b["event"].to_string())
                    .collect::<Vec<_>>())
            }
        })
        .await
    }

    pub fn start_controller(&mut self, identity: &str) {
        let (lead, leading) = watch::channel(true);
        std::mem::forget(lead);
        let settings = Settings {
            namespace: Some(self.env.namespace.clone()),
            identity: identity.into(),
            proxies: Some(ProxyService {
                namespace: self.env.namespace.clone(),
                name: "weir-proxy".into(),
                admin_port: 9090,
            }),
            poll_every: Duration::from_millis(500),
            concurrency: 4,
            notifier: Some(self.notifier.clone()),
        };
        self.controller = Some(Handle::spawn(self.env.client.clone(), settings, leading));
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.env.client.clone(), self.ns())
    }

    /// Streams through both proxies (`rate` each) for `secs`.
    pub fn load(&self, rate: u32, secs: u32) -> Vec<Proc> {
        self.proxies
            .iter()
            .map(|p| load(&p.url(), rate, secs, &[]))
            .collect()
    }

    pub async fn release(&self, image: &str) {
        set_image(&self.deployments(), image).await;
    }

    /// Waits until every proxy serves the canary at `weight` with the
    /// generation in status, each cohort with a share over ready endpoints.
    pub async fn every_proxy_serves(&self, weight: f64) {
        until(
            &format!("every proxy serving canary weight {weight}"),
            PATIENCE,
            || async {
                let c = canary(&self.env.client, self.ns(), "chat").await;
                let generation = c.status?.traffic?.generation;
                for p in &self.proxies {
                    let (w, g) = p.canary_weight(self.ns(), "chat").await?;
                    if w != weight || g != generation {
                        return None;
                    }
                    if !p.endpoints_ready(self.ns(), "chat").await? {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
    }
}
