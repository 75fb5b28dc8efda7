//! The full-stack harness of the Kubernetes tests, on a real control plane
//! ([`TestEnv::on_cluster`]): kube-controller-manager and kube-scheduler
//! beside the API server, and the node agent of `tests/nodeagent` running
//! each pod as a `weir sim` process with its own IP. Deployments roll out
//! through real ReplicaSets, pods become ready by their readiness probes,
//! and the EndpointSlice controller writes the slices of weir's Services.
//! The controller and the proxies run in this process.
//!
//! What a version does is its pod template's: a container's `args` are the
//! `weir sim` flags its pods run with (the image only names the version,
//! for the revision history). Every pod accepts `POST /control`, so a test
//! can make a running version turn slow.
//!
//! One stand-in is left: the proxies are not pods, so the slice naming
//! their admin API is written here ([`proxy_service`]).

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::watch;
use weir_controller::kube::fleet::ProxyService;
use weir_controller::kube::run::{Handle, Settings};
use weir_controller::notify::config::{Format, Webhook};
use weir_controller::notify::deliver::{Notifier, Policy, Source};
use weir_crds::{Canary, Phase};
use weir_envtest::TestEnv;
use weir_test_kit::poll::{try_until, until};
use weir_test_kit::webhook;

use crate::common::{self, Proc};

/// Longest wait for anything the controller does.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// The container `vllm` of a version: `weir sim` with `args` (plus
/// `--control`), ready when `/health` answers, probed every second from
/// `ready_after` seconds on (a version slow to start).
pub fn container(image: &str, args: &[&str], ready_after: u32) -> Value {
    let mut args: Vec<&str> = args.to_vec();
    args.push("--control");
    let mut container = weir_envtest::sim_container(image, &args);
    container["readinessProbe"]["initialDelaySeconds"] = ready_after.into();
    container
}

/// The target Deployment `chat-frontend`: `replicas` pods of `image`, a
/// healthy version ([`FAST`]), stopped with 5 s of grace.
pub fn target(image: &str, replicas: i32) -> Deployment {
    weir_envtest::target(
        replicas,
        json!({
            "terminationGracePeriodSeconds": 5,
            "containers": [container(image, FAST, 0)]
        }),
    )
}

/// Creates the target and waits until its `replicas` pods are ready, as a
/// user's Deployment is before a Canary adopts it.
pub async fn create_target(deployments: &Api<Deployment>, target: &Deployment) {
    deployments
        .create(&PostParams::default(), target)
        .await
        .expect("target");
    let want = target.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let namespace = deployments.namespace().expect("a namespaced Api");
    weir_envtest::cluster::rolled_out(
        &deployments.clone().into_client(),
        namespace,
        "chat-frontend",
        want,
    )
    .await
    .expect("the target rolled out");
}

/// Multiplies the time to first token of every ready pod behind Service
/// `service` by `factor` (`weir sim`'s `POST /control`): the running
/// version turns slow.
pub async fn slow_down(client: &Client, namespace: &str, service: &str, factor: f64) {
    let labels = format!("kubernetes.io/service-name={service}");
    let addresses = weir_envtest::cluster::ready_addresses(client, namespace, &labels)
        .await
        .expect("list EndpointSlices");
    assert!(!addresses.is_empty(), "no ready pod behind {service}");
    let http = reqwest::Client::new();
    for ip in addresses {
        let answer = http
            .post(format!("http://{ip}:{}/control", weir_envtest::SIM_PORT))
            .json(&json!({"ttftFactor": factor}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /control to {ip}: {e}"));
        assert!(answer.status().is_success(), "{ip}: {}", answer.status());
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

/// Waits until `controller` has reconciled Canary `ns/name` to the end at
/// least once: it records the Canary's phase in its metrics only after
/// writing status and converging the objects. What a check that something
/// did *not* happen waits for, instead of a time that a slow start can
/// outlast.
pub async fn reconciled(controller: &Handle, ns: &str, name: &str) {
    let series = format!(
        "{}{{namespace=\"{ns}\",name=\"{name}\",",
        weir_controller::kube::metrics::names::PHASE
    );
    until(&format!("a reconcile of {ns}/{name}"), PATIENCE, || async {
        controller.metrics.render().contains(&series).then_some(())
    })
    .await;
}

/// A controller that leads from the start and reads the proxies of
/// Service `weir-proxy` ([`proxy_service`]): a run is judged on their
/// measurements.
pub fn controller_with_proxies(env: &TestEnv, name: &str) -> Handle {
    let (lead, leading) = watch::channel(true);
    std::mem::forget(lead);
    let settings = Settings {
        namespace: Some(env.namespace.clone()),
        identity: name.into(),
        proxies: Some(ProxyService {
            namespace: env.namespace.clone(),
            name: "weir-proxy".into(),
            admin_port: 9090,
        }),
        poll_every: Duration::from_millis(500),
        concurrency: 4,
        notifier: None,
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
/// `image`, doing what the previous version did.
pub async fn set_image(deployments: &Api<Deployment>, image: &str) {
    patch_container(deployments, json!({"name": "vllm", "image": image})).await;
}

/// Gives the target `chat-frontend` a new template: [`container`].
pub async fn set_version(
    deployments: &Api<Deployment>,
    image: &str,
    args: &[&str],
    ready_after: u32,
) {
    patch_container(deployments, container(image, args, ready_after)).await;
}

async fn patch_container(deployments: &Api<Deployment>, container: Value) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [container]}}}});
    deployments
        .patch(
            "chat-frontend",
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
        .expect("new template");
}

/// Runs `weir ARGS` against `env`'s API server (blocking, off the
/// runtime); returns (exit code, stdout, stderr).
pub async fn weir(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_string()).collect();
    let kubeconfig = env.kubeconfig();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = common::command(&refs)
            .env("KUBECONFIG", kubeconfig)
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

    /// Requests this proxy measured for `cohort` of any route, and how
    /// many of them failed.
    pub fn counted(&self, cohort: &str) -> (u64, u64) {
        let snapshot = self
            .running
            .observations
            .snapshot(&self.running.table.load());
        snapshot
            .cohorts
            .iter()
            .filter(|c| c.cohort.as_str() == cohort)
            .fold((0, 0), |(all, errors), c| {
                (all + c.requests.total(), errors + c.requests.errors())
            })
    }

    /// `GET /v1/routes`.
    pub async fn routes(&self) -> Option<Value> {
        reqwest::get(format!("http://{}/v1/routes", self.running.admin))
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// Route `ns/name` of this proxy's table, as `/v1/routes` shows it.
    async fn route(&self, namespace: &str, name: &str) -> Option<Value> {
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
        admin: SocketAddr::new(
            weir_envtest::host_ip().expect("the host's address").into(),
            0,
        ),
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

/// The proxies' Service `weir-proxy` and one EndpointSlice per proxy
/// naming its admin port, as the chart's Service would have: the one
/// stand-in (the proxies are not pods).
pub async fn proxy_service(client: &Client, namespace: &str, proxies: &[&Proxy]) {
    let admins: Vec<SocketAddr> = proxies.iter().map(|p| p.running.admin).collect();
    weir_envtest::cluster::proxy_admin_endpoints(client, namespace, "weir-proxy", &admins)
        .await
        .expect("the proxies' admin endpoints");
}

/// Two proxies following `namespace`, behind the `weir-proxy` Service.
pub async fn two_proxies(client: &Client, namespace: &str) -> [Proxy; 2] {
    let proxies = [
        proxy(client, namespace, 0).await,
        proxy(client, namespace, 1).await,
    ];
    proxy_service(client, namespace, &proxies.iter().collect::<Vec<_>>()).await;
    proxies
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

pub fn image_of(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.spec.as_ref()?.containers[0]
        .image
        .clone()
}

/// Canary `chat` with `strategy`, judged fast
/// ([`weir_envtest::CanaryBuilder::judged_fast`]).
pub fn canary_spec(strategy: Value) -> Canary {
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
    pub proxies: Vec<Proxy>,
    pub controller: Option<Handle>,
    /// What the webhook received.
    pub hooks: webhook::Log,
    notifier: Notifier,
    /// The `weir sim` flags of v2 (v1's are [`FAST`]).
    v2: Vec<String>,
    /// Held for the whole test, and dropped last: verdicts compare
    /// latencies, so two stacks must not share the cores at once.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Stack {
    /// The target on v1 (one pod, [`FAST`]) adopted by Canary `chat` with
    /// `strategy`; v2, once released, runs `v2`.
    pub async fn new(name: &str, strategy: Value, v2: &[&str]) -> Stack {
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let turn = ONE_AT_A_TIME.lock().await;
        let env = TestEnv::on_cluster(name).await;
        let ns = env.namespace.clone();
        let deployments = Api::<Deployment>::namespaced(env.client.clone(), &ns);
        create_target(&deployments, &target("sim:v1", 1)).await;
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
            proxies,
            controller: None,
            hooks,
            notifier,
            v2: v2.iter().map(|a| (*a).to_string()).collect(),
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
    pub async fn notified(&self, event: &str) -> Vec<Value> {
        until(&format!("a {event} notification"), PATIENCE, || async {
            let bodies: Vec<Value> = self.hooks.all().into_iter().map(|r| r.body).collect();
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

    /// Releases v2: the target's template runs `image` with v2's flags.
    pub async fn release(&self, image: &str) {
        let args: Vec<&str> = self.v2.iter().map(String::as_str).collect();
        set_version(&self.deployments(), image, &args, 0).await;
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
