//! weir itself on the real control plane: its controller and proxy, each
//! with a client of the chart's ServiceAccount and nothing else, roll
//! Canaries out over pods that kube-scheduler placed, the node agent runs
//! with their own IPs, and the real Deployment and EndpointSlice
//! controllers follow. Traffic goes from the proxy to pod IPs taken from
//! EndpointSlices the EndpointSlice controller wrote.
//!
//! One stand-in is left, and says so where it is made: the proxy runs in
//! this process on the host (the node agent runs only `weir sim`), so the
//! EndpointSlice that tells the controller where the proxy's admin API is
//! is written by the test, as the chart's admin Service would have it.
//!
//! The tests take turns (verdicts compare latencies, so two runs must not
//! share the two cores) and share one node agent and its two Nodes.
//!
//! Needs root and iproute2 (network namespaces), and the `weir` binary
//! (`cargo build -p weir`, or `$WEIR_BIN`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::watch;
use weir_controller::kube::fleet::ProxyService;
use weir_controller::kube::run::{Handle, Settings};
use weir_crds::{Canary, Phase};
use weir_test_kit::poll::until;
use weir_test_kit::sim::{FAST, SLOW};

use weir_envtest::cluster::rolled_out;

mod common;
use common::{
    PATIENCE, create_namespace, events, is_ready, live_pods, pod_ip, ready_addresses, sim_pid,
};

/// The target Deployment `chat-frontend`: `replicas` sims run with `args`,
/// ready when `/health` answers, stopped as a kubelet stops them
/// (`preStop` sleep, then SIGTERM with `grace` seconds to finish).
fn target(replicas: i32, image: &str, args: &[&str], grace: i64) -> Deployment {
    gpu_target(replicas, image, args, grace, 0)
}

/// [`target`], each pod asking for `gpus` `nvidia.com/gpu` (none for 0).
fn gpu_target(replicas: i32, image: &str, args: &[&str], grace: i64, gpus: u32) -> Deployment {
    let resources = if gpus > 0 {
        json!({"limits": {"nvidia.com/gpu": gpus}})
    } else {
        json!({})
    };
    let mut container = weir_envtest::sim_container(image, args);
    container["lifecycle"] = json!({"preStop": {"sleep": {"seconds": 1}}});
    container["resources"] = resources;
    weir_envtest::target(
        replicas,
        json!({
            "terminationGracePeriodSeconds": grace,
            "containers": [container]
        }),
    )
}

/// Canary `chat` with `strategy`, judged fast.
fn canary(strategy: Value) -> Canary {
    weir_envtest::canary("chat")
        .strategy(strategy)
        .judged_fast()
        .build()
}

/// weir in one namespace of the control plane: the target, the Canary, one
/// proxy and the controller, each of weir's two with its chart account.
struct Weir {
    admin: Client,
    ns: String,
    proxy: weir_proxy::Running,
    _controller: Handle,
    _lead: watch::Sender<bool>,
    source: tokio::task::JoinHandle<()>,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Drop for Weir {
    fn drop(&mut self) {
        self.source.abort();
    }
}

impl Weir {
    async fn start(ns: &str, target: Deployment, canary: Canary) -> Weir {
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let turn = ONE_AT_A_TIME.lock().await;
        let server = weir_envtest::control_plane();
        let admin = server.client().await.expect("admin client");
        weir_envtest::cluster::shared(&admin)
            .await
            .expect("the binary's node agent and its Nodes");
        weir_envtest::install_canary_crd(&admin)
            .await
            .expect("the Canary CRD");
        create_namespace(&admin, ns).await;
        let accounts = server
            .chart_accounts(ns)
            .await
            .expect("the chart's accounts");

        // The user's side: the target, ready, and its Canary.
        let replicas = target.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        Api::<Deployment>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &target)
            .await
            .expect("create the target");
        rolled_out(&admin, ns, "chat-frontend", replicas)
            .await
            .expect("rolled out");
        Api::<Canary>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &canary)
            .await
            .expect("create the Canary");

        // The proxy, as the proxies' account.
        use weir_proxy::config::kube::{KubeSource, Scope};
        let source = Arc::new(KubeSource::new(
            accounts.proxy,
            Scope {
                namespace: Some(ns.to_string()),
                selector: None,
            },
        ));
        let runner = Arc::clone(&source);
        let task = tokio::spawn(async move { runner.run().await });
        let host = weir_envtest::host_ip().expect("the host's address");
        let proxy = weir_proxy::start(
            weir_proxy::Settings {
                listen: "127.0.0.1:0".parse().expect("an address"),
                admin: SocketAddr::new(host.into(), 0),
                timeouts: weir_proxy::Timeouts::default(),
                draw_seed: None,
                max_connections: None,
                tls: None,
                upstream_ca: None,
            },
            source as Arc<dyn weir_proxy::ConfigSource>,
            Arc::new(weir_proxy::Observations::new(format!("{ns}-proxy"))),
        )
        .await
        .expect("the proxy starts");
        // Stand-in: the proxy is not a pod, so no controller writes the
        // slice of its admin Service.
        weir_envtest::cluster::proxy_admin_endpoints(&admin, ns, "weir-proxy", &[proxy.admin])
            .await
            .expect("the proxies' admin Service and EndpointSlice");

        // The controller, as the controller's account.
        let (lead, leading) = watch::channel(true);
        let controller = Handle::spawn(
            accounts.controller,
            Settings {
                namespace: Some(ns.to_string()),
                identity: format!("{ns}-controller"),
                proxies: Some(ProxyService {
                    namespace: ns.to_string(),
                    name: "weir-proxy".into(),
                    admin_port: 9090,
                }),
                poll_every: Duration::from_millis(500),
                concurrency: 4,
                notifier: None,
            },
            leading,
        );
        let weir = Weir {
            admin,
            ns: ns.to_string(),
            proxy,
            _controller: controller,
            _lead: lead,
            source: task,
            _turn: turn,
        };
        weir.phase(Phase::Idle).await;
        rolled_out(&weir.admin, ns, "chat-frontend-stable", replicas)
            .await
            .expect("rolled out");
        // Adopted: the target at zero, its own pods gone.
        rolled_out(&weir.admin, ns, "chat-frontend", 0)
            .await
            .expect("rolled out");
        let pods = Api::<Pod>::namespaced(weir.admin.clone(), ns);
        until("only the stable copy's pods", PATIENCE, || async {
            let n = pods
                .list(&ListParams::default())
                .await
                .expect("list Pods")
                .items
                .len();
            if n == usize::try_from(replicas).unwrap_or_default() {
                Ok(())
            } else {
                Err(n)
            }
        })
        .await;
        weir
    }

    /// Tears the namespace down as a user of the chart's namespace scope
    /// must: the Canary first (the controller reverts the target and lets
    /// it go), then the namespace, which must be gone, not left
    /// `Terminating`: the namespace controller empties it, the garbage
    /// collector takes the owned objects and the node agent stops the
    /// pods. (The other order leaves the Canary's finalizer behind: the
    /// namespace's deletion takes the controller's Role with it, so the
    /// controller may no longer remove it. docs/kubernetes.md says so.)
    async fn finish(self) {
        use k8s_openapi::api::core::v1::Namespace;
        let canaries = Api::<Canary>::namespaced(self.admin.clone(), &self.ns);
        canaries
            .delete("chat", &DeleteParams::default())
            .await
            .expect("delete the Canary");
        until("the Canary gone", PATIENCE, || async {
            match canaries.get_opt("chat").await.expect("get the Canary") {
                None => Ok(()),
                Some(c) => Err(c.metadata.finalizers),
            }
        })
        .await;
        let namespaces = Api::<Namespace>::all(self.admin.clone());
        namespaces
            .delete(&self.ns, &DeleteParams::default())
            .await
            .expect("delete the namespace");
        until(&format!("namespace {} gone", self.ns), PATIENCE, || async {
            match namespaces
                .get_opt(&self.ns)
                .await
                .expect("get the namespace")
            {
                None => Ok(()),
                Some(ns) => Err(ns
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|c| c.status == "True")
                    .map(|c| format!("{}: {}", c.type_, c.message.unwrap_or_default()))
                    .collect::<Vec<_>>()),
            }
        })
        .await;
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// The stable copy now.
    async fn stable_copy(&self) -> Deployment {
        self.deployments()
            .get("chat-frontend-stable")
            .await
            .expect("the stable copy")
    }

    /// The image the stable copy's template runs now.
    async fn stable_image(&self) -> Option<String> {
        common::image_of(&self.stable_copy().await)
    }

    /// `http://LISTEN/v1`, for clients.
    fn url(&self) -> String {
        format!("http://{}/v1", self.proxy.listen)
    }

    /// Waits for `phase`; returns the Canary's status then.
    async fn phase(&self, phase: Phase) -> weir_crds::CanaryStatus {
        let canaries = Api::<Canary>::namespaced(self.admin.clone(), &self.ns);
        until(&format!("Canary chat {phase:?}"), PATIENCE, || async {
            let c = canaries.get("chat").await.expect("get the Canary");
            let s = c.status.unwrap_or_default();
            if s.phase == phase {
                Ok(s)
            } else {
                Err((s.phase, s.message))
            }
        })
        .await
    }

    /// A new version of the target: its container runs `image` with `args`.
    async fn release(&self, image: &str, args: &[&str]) {
        self.deployments()
            .patch(
                "chat-frontend",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "vllm", "image": image, "args": args}
                ]}}}})),
            )
            .await
            .expect("a new version");
    }

    /// The proxy's route for `chat` as `/v1/routes` shows it.
    async fn route(&self) -> Option<Value> {
        let routes: Value = reqwest::get(format!("http://{}/v1/routes", self.proxy.admin))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let name = weir_crds::names::route(&self.ns, "chat");
        routes["table"]["routes"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == name.as_str())
            .cloned()
    }

    /// The canary's weight and the IPs the proxy balances each cohort over.
    async fn serving(&self) -> Option<(f64, BTreeSet<String>, BTreeSet<String>)> {
        let route = self.route().await?;
        let backends = route["backends"].as_array()?;
        let of =
            |cohort: &str| -> Option<&Value> { backends.iter().find(|b| b["cohort"] == cohort) };
        let ips = |b: &Value| -> BTreeSet<String> {
            b["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["address"].as_str())
                .filter_map(|a| a.parse::<SocketAddr>().ok())
                .map(|a| a.ip().to_string())
                .collect()
        };
        let (stable, canary) = (of("stable")?, of("canary")?);
        Some((canary["weight"].as_f64()?, ips(stable), ips(canary)))
    }

    /// Waits until the proxy serves the canary at `weight`, each cohort
    /// over exactly the ready pod IPs that the EndpointSlice controller
    /// listed for its Service; returns (stable IPs, canary IPs).
    async fn serves(&self, weight: f64) -> (BTreeSet<String>, BTreeSet<String>) {
        until(
            &format!("the proxy serving the canary at {weight} over the slices' pod IPs"),
            PATIENCE,
            || async {
                let stable = controller_slices(&self.admin, &self.ns, "chat-stable").await;
                let canary = controller_slices(&self.admin, &self.ns, "chat-canary").await;
                let seen = self.serving().await;
                // A cohort with a share serves over some pod: the engine
                // moves a weight once the Deployment reports the pods ready,
                // and the EndpointSlice controller lists them a moment later
                // (the proxy and the slices then agree on an empty set).
                let served = |share: bool, ips: &BTreeSet<String>| !share || !ips.is_empty();
                match &seen {
                    Some((w, s, c))
                        if *w == weight
                            && *s == stable
                            && *c == canary
                            && served(weight < 100.0, s)
                            && served(weight > 0.0, c) =>
                    {
                        Ok((stable, canary))
                    }
                    _ => Err((seen, stable, canary)),
                }
            },
        )
        .await
    }

    /// Waits until the namespace holds `n` pods, all ready and on `image`.
    async fn only(&self, n: usize, image: &str) {
        let pods = Api::<Pod>::namespaced(self.admin.clone(), &self.ns);
        until(
            &format!("{n} ready pods of {image} and nothing else"),
            PATIENCE,
            || async {
                let all = pods
                    .list(&ListParams::default())
                    .await
                    .expect("list Pods")
                    .items;
                let on = pods_of(&self.admin, &self.ns, image).await;
                if all.len() == n && on.len() == n && on.iter().all(is_ready) {
                    Ok(())
                } else {
                    Err(all.len())
                }
            },
        )
        .await;
    }

    /// The proxy's finished requests of `cohort`: (all, errors).
    fn counted(&self, cohort: &str) -> (u64, u64) {
        let snapshot = self.proxy.observations.snapshot(&self.proxy.table.load());
        snapshot
            .cohorts
            .iter()
            .filter(|c| c.cohort.as_str() == cohort)
            .fold((0, 0), |(all, errors), c| {
                (all + c.requests.total(), errors + c.requests.errors())
            })
    }

    /// The notes of the namespace's Events with `reason`, once there is one.
    async fn event(&self, reason: &str) -> Vec<String> {
        until(&format!("a {reason} Event"), PATIENCE, || async {
            let notes: Vec<String> = events(&self.admin, &self.ns, reason)
                .await
                .into_iter()
                .filter_map(|e| e.note)
                .collect();
            if notes.is_empty() { Err(()) } else { Ok(notes) }
        })
        .await
    }
}

/// The ready addresses of Service `service`'s EndpointSlices that the
/// EndpointSlice controller manages (no other writer's slice counts).
async fn controller_slices(client: &Client, ns: &str, service: &str) -> BTreeSet<String> {
    let labels = format!(
        "kubernetes.io/service-name={service},endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io"
    );
    ready_addresses(client, ns, &labels).await
}

/// The live pods of the namespace whose template runs `image`.
async fn pods_of(client: &Client, ns: &str, image: &str) -> Vec<Pod> {
    live_pods(client, ns)
        .await
        .into_iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .is_some_and(|s| s.containers[0].image.as_deref() == Some(image))
        })
        .collect()
}

/// `weir load` through `url`, killed when dropped.
struct Load(Child);

impl Load {
    fn start(url: &str, rate: u32, secs: u32) -> Load {
        let child = Command::new(weir_envtest::cluster::weir_bin().expect("the weir binary"))
            .args(["load", "--url", url, "--rate", &rate.to_string()])
            .args(["--duration", &format!("{secs}s"), "--max-tokens", "8"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start weir load");
        Load(child)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a streamed chat completion came back as.
#[derive(Debug)]
struct Streamed {
    /// `x-weir-cohort`.
    cohort: String,
    /// `x-weir-sim`: the pod that served it.
    pod: String,
    /// Content events received.
    events: usize,
    /// Whether the stream ended with `[DONE]`.
    done: bool,
}

/// Starts a streamed chat completion of `tokens` tokens through `url`;
/// the handle resolves once the response is complete (or cut), and
/// `started` gets (cohort, pod) as soon as the response head arrives.
fn stream(
    url: String,
    tokens: u32,
    started: tokio::sync::mpsc::UnboundedSender<(String, String)>,
) -> tokio::task::JoinHandle<Result<Streamed, String>> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let mut response = http
            .post(format!("{url}/chat/completions"))
            .json(&json!({
                "model": "weir-sim", "stream": true, "max_tokens": tokens,
                "messages": [{"role": "user", "content": "hello"}]
            }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (cohort, pod) = (header("x-weir-cohort"), header("x-weir-sim"));
        let _ = started.send((cohort.clone(), pod.clone()));
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return Err(format!("{cohort} stream from {pod} cut: {e}")),
            }
        }
        let text = String::from_utf8_lossy(&body);
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        Ok(Streamed {
            events: data
                .iter()
                .filter(|d| d.contains("\"content\":\"") && !d.contains("\"content\":\"\""))
                .count(),
            done: data.last() == Some(&"[DONE]"),
            cohort,
            pod,
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_revision_is_promoted_and_a_slow_one_aborted_over_pod_ips() {
    let weir = Weir::start(
        "promote-abort",
        target(2, "weir/sim:v1", FAST, 5),
        canary(json!({"canary": {"steps": [
            {"setWeight": 50},
            {"analysis": {"minDuration": "3s", "maxDuration": "60s"}}
        ]}})),
    )
    .await;
    // Adopted: the proxy balances stable over the stable copy's pod IPs,
    // as the EndpointSlice controller lists them.
    // The target's own pods go once the stable copy serves.
    let stable = until("the target's own pods gone", PATIENCE, || async {
        let (stable, canary) = weir.serves(0.0).await;
        if canary.is_empty() {
            Ok(stable)
        } else {
            Err(canary)
        }
    })
    .await;
    let v1_pods: BTreeSet<String> = pods_of(&weir.admin, &weir.ns, "weir/sim:v1")
        .await
        .iter()
        .filter(|p| is_ready(p))
        .filter_map(pod_ip)
        .collect();
    assert_eq!(stable, v1_pods, "stable is the v1 pods' own IPs");
    assert!(stable.iter().all(|ip| ip.starts_with("10.")), "{stable:?}");

    // A healthy v2: half the traffic on the canary's pods, judged, promoted.
    let _load = Load::start(&weir.url(), 30, 150);
    weir.release("weir/sim:v2", FAST).await;
    let (_, canary) = weir.serves(50.0).await;
    let v2_pods: BTreeSet<String> = pods_of(&weir.admin, &weir.ns, "weir/sim:v2")
        .await
        .iter()
        .filter_map(pod_ip)
        .collect();
    assert!(
        !canary.is_empty() && canary.is_subset(&v2_pods),
        "the canary is v2 pods' IPs: {canary:?} of {v2_pods:?}"
    );
    let promoted = weir.phase(Phase::Succeeded).await;
    let passed = weir.event("AnalysisPassed").await;
    assert!(passed.iter().any(|n| n.contains("ttft")), "{passed:?}");
    let (stable_seen, stable_errors) = weir.counted("stable");
    let (canary_seen, canary_errors) = weir.counted("canary");
    assert!(
        stable_seen >= 100 && canary_seen >= 100,
        "both cohorts measured on real pods: stable {stable_seen}, canary {canary_seen}"
    );
    assert_eq!((stable_errors, canary_errors), (0, 0), "no request failed");
    assert_eq!(
        weir.stable_image().await.as_deref(),
        Some("weir/sim:v2"),
        "promoted: {promoted:?}"
    );
    // The Deployment controller rolled the stable copy to v2, and the
    // proxy followed its pods.
    rolled_out(&weir.admin, &weir.ns, "chat-frontend-stable", 2)
        .await
        .expect("rolled out");
    let (stable, _) = weir.serves(0.0).await;
    let v2_pods: BTreeSet<String> = pods_of(&weir.admin, &weir.ns, "weir/sim:v2")
        .await
        .iter()
        .filter(|p| is_ready(p))
        .filter_map(pod_ip)
        .collect();
    assert!(stable.is_subset(&v2_pods), "{stable:?} of {v2_pods:?}");

    // A slow v3: aborted on TTFT, traffic back on stable (v2) first, the
    // canary's pods gone.
    weir.release("weir/sim:v3", SLOW).await;
    let aborted = weir.phase(Phase::Aborted).await;
    let abort = aborted.abort.expect("the abort recorded");
    assert_eq!(abort.reason, "AnalysisFailed");
    assert!(abort.message.contains("ttft"), "{}", abort.message);
    weir.serves(0.0).await;
    until("the v3 pods gone", PATIENCE, || async {
        let left = pods_of(&weir.admin, &weir.ns, "weir/sim:v3").await;
        if left.is_empty() {
            Ok(())
        } else {
            Err(left.len())
        }
    })
    .await;
    assert_eq!(
        weir.stable_image().await.as_deref(),
        Some("weir/sim:v2"),
        "stable untouched by the abort"
    );
    weir.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_on_a_terminating_canary_pod_finish_and_no_new_one_reaches_it() {
    // Streams of 10 s: 100 tokens 100 ms apart. The pods get 30 s to
    // finish after SIGTERM (the sim drains its open streams).
    let long = &[
        "--ttft",
        "20ms",
        "--ttft-sigma",
        "0",
        "--itl",
        "100ms",
        "--tokens",
        "100",
    ];
    let weir = Weir::start(
        "drain",
        target(2, "weir/sim:v1", long, 30),
        canary(json!({"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}})),
    )
    .await;
    weir.release("weir/sim:v2", long).await;
    weir.phase(Phase::Paused).await;
    // Two canary pods: one goes, the other keeps serving the canary's
    // share. (With none ready, a cohort's requests go to the other cohort
    // and count against it as connect errors, by design: they say the
    // version could not serve its share.)
    until("two canary pods in the proxy's table", PATIENCE, || async {
        let (_, canary) = weir.serves(50.0).await;
        if canary.len() == 2 {
            Ok(())
        } else {
            Err(canary)
        }
    })
    .await;

    // Open streams until three run on one canary pod.
    let (started, mut heads) = tokio::sync::mpsc::unbounded_channel();
    let mut open = Vec::new();
    let mut on_pods: std::collections::BTreeMap<String, usize> = Default::default();
    let canary_name = loop {
        open.push(stream(weir.url(), 100, started.clone()));
        let (cohort, pod) = tokio::time::timeout(PATIENCE, heads.recv())
            .await
            .expect("a response head within the patience")
            .expect("the stream task is running");
        if cohort == "canary" {
            let n = on_pods.entry(pod.clone()).or_default();
            *n += 1;
            if *n == 3 {
                break pod;
            }
        }
    };
    let canary_pod = Api::<Pod>::namespaced(weir.admin.clone(), &weir.ns)
        .get(&canary_name)
        .await
        .expect("the canary pod");

    // The pod goes (as a scale-down or an eviction takes one): the
    // ReplicaSet replaces it, the EndpointSlice controller marks it
    // terminating, and the proxy takes it out of the canary's endpoints.
    Api::<Pod>::namespaced(weir.admin.clone(), &weir.ns)
        .delete(&canary_name, &DeleteParams::default())
        .await
        .expect("delete the canary pod");
    let gone = pod_ip(&canary_pod).expect("the pod's IP");
    until(
        "the proxy to drop the terminating pod",
        PATIENCE,
        || async {
            let (_, _, canary) = weir.serving().await.ok_or(None)?;
            if canary.contains(&gone) {
                Err(Some(canary))
            } else {
                Ok(())
            }
        },
    )
    .await;
    let terminating = Api::<EndpointSlice>::namespaced(weir.admin.clone(), &weir.ns)
        .list(&ListParams::default().labels("kubernetes.io/service-name=chat-canary"))
        .await
        .expect("list the canary's slices")
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .find(|e| e.addresses.contains(&gone))
        .and_then(|e| e.conditions.clone())
        .and_then(|c| c.terminating);
    assert_eq!(
        terminating,
        Some(true),
        "the EndpointSlice controller marks the pod terminating while it drains"
    );

    // New requests while the old pod drains: none reaches it.
    let mut late = Vec::new();
    for _ in 0..20 {
        late.push(stream(weir.url(), 2, started.clone()));
    }
    for handle in late {
        let s = handle
            .await
            .expect("the request task")
            .expect("a new request succeeds");
        assert_ne!(s.pod, canary_name, "a new request reached the draining pod");
        assert!(s.done, "{s:?}");
    }
    // Every stream that was open finishes whole, the drained pod's too.
    let mut drained = 0;
    for handle in open {
        let s = handle
            .await
            .expect("the stream task")
            .unwrap_or_else(|e| panic!("an open stream was cut: {e}"));
        assert!(s.done && s.events == 100, "a whole stream: {s:?}");
        if s.pod == canary_name {
            assert_eq!(s.cohort, "canary", "{s:?}");
            drained += 1;
        }
    }
    assert!(drained >= 3, "{drained} streams on the drained pod");
    let (_, errors) = weir.counted("canary");
    let snapshot = weir.proxy.observations.snapshot(&weir.proxy.table.load());
    let outcomes: Vec<_> = snapshot
        .cohorts
        .iter()
        .map(|c| {
            (
                c.cohort.as_str().to_string(),
                c.requests
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        errors, 0,
        "nothing counted against the canary: {outcomes:?}"
    );
    // The pod's process has exited once its streams were done.
    until("the drained pod's process gone", PATIENCE, || async {
        match sim_pid(&canary_name) {
            None => Ok(()),
            Some(pid) => Err(pid),
        }
    })
    .await;
    weir.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_pod_that_crashes_is_counted_against_the_canary_and_the_run_ends() {
    // Requests of the load take 0.2 s; the test's own streams 2 s.
    let args = &[
        "--ttft",
        "20ms",
        "--ttft-sigma",
        "0.1",
        "--itl",
        "20ms",
        "--tokens",
        "100",
    ];
    let weir = Weir::start(
        "crash",
        target(1, "weir/sim:v1", args, 5),
        canary(json!({"canary": {"steps": [
            {"setWeight": 50},
            {"analysis": {"minDuration": "10s", "maxDuration": "60s"}}
        ]}})),
    )
    .await;
    let _load = Load::start(&weir.url(), 30, 150);
    weir.release("weir/sim:v2", args).await;
    let (_, canary) = weir.serves(50.0).await;
    assert_eq!(canary.len(), 1, "one canary pod: {canary:?}");
    let pod = pods_of(&weir.admin, &weir.ns, "weir/sim:v2")
        .await
        .into_iter()
        .next()
        .expect("the canary pod");
    let name = pod.metadata.name.clone().expect("a name");

    // Mid-analysis, with streams open on it, the canary's process dies.
    let (started, mut heads) = tokio::sync::mpsc::unbounded_channel();
    let mut open = Vec::new();
    let mut on_canary = 0;
    while on_canary < 2 {
        let handle = stream(weir.url(), 100, started.clone());
        let (cohort, _) = tokio::time::timeout(PATIENCE, heads.recv())
            .await
            .expect("a response head within the patience")
            .expect("the stream task is running");
        if cohort == "canary" {
            open.push(handle);
            on_canary += 1;
        }
    }
    let pid = sim_pid(&name).unwrap_or_else(|| panic!("no weir sim process for pod {name}"));
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    for handle in open {
        match handle.await.expect("the stream task") {
            Ok(s) => assert!(!s.done, "a stream of the killed process ended whole: {s:?}"),
            Err(cut) => eprintln!("as expected: {cut}"),
        }
    }

    // The agent restarts it: the pod's restart count says so.
    let pods = Api::<Pod>::namespaced(weir.admin.clone(), &weir.ns);
    until("the crashed pod restarted", PATIENCE, || async {
        let p = pods.get(&name).await.expect("get the pod");
        let restarts = p
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.first().map(|c| c.restart_count));
        if restarts >= Some(1) {
            Ok(())
        } else {
            Err(restarts)
        }
    })
    .await;
    // The cut streams (and any request refused while it was down, which
    // the stable cohort served) count against the canary, never stable.
    let (_, canary_errors) = weir.counted("canary");
    let (_, stable_errors) = weir.counted("stable");
    assert!(
        canary_errors >= 2,
        "the cut streams counted against the canary: {canary_errors}"
    );
    assert_eq!(stable_errors, 0, "nothing counted against stable");
    // And the run ends with a verdict instead of hanging on the crash.
    let canaries = Api::<Canary>::namespaced(weir.admin.clone(), &weir.ns);
    let ended = until("the run to end", PATIENCE, || async {
        let s = canaries
            .get("chat")
            .await
            .expect("get the Canary")
            .status
            .unwrap_or_default();
        match s.phase {
            Phase::Succeeded | Phase::Aborted => Ok(s),
            _ => Err((s.phase, s.message)),
        }
    })
    .await;
    eprintln!(
        "the run with a crashed canary pod ended {:?}: {}",
        ended.phase, ended.message
    );
    weir.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_within_max_surge_never_holds_more_pods_or_less_capacity() {
    const REPLICAS: usize = 4;
    let weir = Weir::start(
        "surge",
        target(4, "weir/sim:v1", FAST, 5),
        weir_envtest::canary("chat")
            .strategy(json!({"canary": {"steps": [
                {"setWeight": 25},
                {"pause": {"duration": "3s"}}
            ]}}))
            .judged_fast()
            .spec(json!({"promotion": {"maxSurge": 1, "maxUnavailable": 0}}))
            .build(),
    )
    .await;
    // Every pod and ReplicaSet transition from here on, adoption done.
    let recorder = common::Recorder::start(&weir.admin, &weir.ns, REPLICAS).await;
    let _load = Load::start(&weir.url(), 30, 150);
    weir.release("weir/sim:v2", FAST).await;
    weir.phase(Phase::Succeeded).await;
    let stable_copy = weir.stable_copy().await;
    assert_eq!(
        common::image_of(&stable_copy).as_deref(),
        Some("weir/sim:v2")
    );
    let rolling = stable_copy
        .spec
        .and_then(|s| s.strategy)
        .and_then(|s| s.rolling_update)
        .expect("a RollingUpdate");
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(
        (rolling.max_surge, rolling.max_unavailable),
        (Some(IntOrString::Int(0)), Some(IntOrString::Int(1))),
        "no room left for a surge: the canary's pod stands in for it"
    );
    // The end: 4 stable pods on v2, the canary's gone.
    weir.only(REPLICAS, "weir/sim:v2").await;
    let common::Recording { samples, .. } = recorder.finish().await;

    let max = |f: fn(&common::Sample) -> usize| samples.iter().map(f).max().unwrap_or_default();
    let (max_live, max_wanted, max_terminating) =
        (max(|s| s.live), max(|s| s.wanted), max(|s| s.terminating));
    let max_desired = samples.iter().map(|s| s.desired).max().unwrap_or_default();
    let min_ready = samples.iter().map(|s| s.ready).min().unwrap_or_default();
    eprintln!(
        "promotion: {} pod transitions; the ReplicaSets of both cohorts wanted at most \
         {max_desired} pods and {max_wanted} wanted pods existed; {max_live} pods not being \
         deleted at most (+{max_terminating} terminating); at least {min_ready} ready",
        samples.len()
    );
    // maxSurge 1 over 4 replicas, the canary's pod included: the
    // ReplicaSets of both Deployments never asked for more than 5. (Live
    // pods may reach 6 for a moment: one ReplicaSet's delete and another's
    // create race; see control_plane.rs.)
    assert_eq!(max_desired, 5, "at most 4 + 1 pods wanted: {samples:?}");
    assert_eq!(max_wanted, REPLICAS + 1, "{samples:?}");
    // maxUnavailable 0: stable and canary together never had fewer than
    // 4 ready pods.
    assert!(min_ready >= REPLICAS, "capacity fell: {samples:?}");
    assert!(
        max_terminating >= 1,
        "stable's old pods were replaced: {samples:?}"
    );
    // And no request failed through it all.
    let (stable_seen, stable_errors) = weir.counted("stable");
    let (canary_seen, canary_errors) = weir.counted("canary");
    assert!(
        stable_seen > 0 && canary_seen > 0,
        "{stable_seen} {canary_seen}"
    );
    assert_eq!((stable_errors, canary_errors), (0, 0), "no request failed");
    weir.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_within_a_gpu_budget_never_asks_for_a_fifth_gpu() {
    // 2 nodes of 2 GPUs; stable runs 4 pods of 1 GPU; gpuBudget 4.
    const REPLICAS: usize = 4;
    let ns = "budget";
    let server = weir_envtest::control_plane();
    let admin = server.client().await.expect("admin client");
    // Every pod from before the Canary exists: adoption is recorded too.
    let recorder = common::Recorder::start(&admin, ns, REPLICAS).await;
    let weir = Weir::start(
        ns,
        gpu_target(4, "weir/sim:v1", FAST, 5, 1),
        weir_envtest::canary("chat")
            .strategy(json!({"canary": {"steps": [
                {"setWeight": 25},
                {"pause": {"duration": "3s"}}
            ]}}))
            .judged_fast()
            .spec(json!({"gpuBudget": 4}))
            .build(),
    )
    .await;
    let _load = Load::start(&weir.url(), 30, 240);
    weir.release("weir/sim:v2", FAST).await;
    let done = weir.phase(Phase::Succeeded).await;
    assert_eq!(
        done.message,
        format!(
            "revision {} promoted",
            done.canary_revision.clone().unwrap_or_default()
        )
    );
    assert_eq!(weir.stable_image().await.as_deref(), Some("weir/sim:v2"));
    weir.only(REPLICAS, "weir/sim:v2").await;
    let common::Recording { samples, .. } = recorder.finish().await;

    // Every pod asks for one GPU, and a pod holds it from creation (the
    // scheduler counts pending pods' requests) until it is gone
    // (terminating ones included): the pods that exist are the GPUs asked
    // for.
    let asked = samples
        .iter()
        .map(|s| s.live + s.terminating)
        .max()
        .unwrap_or_default();
    eprintln!(
        "gpu budget: {} pod transitions from adoption to promotion; at most {asked} pods \
         (GPUs) at once",
        samples.len()
    );
    assert!(asked <= 4, "a 5th GPU was asked for: {samples:?}");
    assert!(
        samples.len() > 20,
        "the watch saw the whole rollout: {samples:?}"
    );
    let unschedulable = events(&weir.admin, &weir.ns, "FailedScheduling").await;
    assert!(
        unschedulable.is_empty(),
        "the scheduler was asked for what it could not place: {:?}",
        unschedulable
            .iter()
            .map(|e| e.note.clone())
            .collect::<Vec<_>>()
    );
    let (stable_seen, stable_errors) = weir.counted("stable");
    let (canary_seen, canary_errors) = weir.counted("canary");
    eprintln!(
        "gpu budget: requests stable {stable_seen} ({stable_errors} errors), canary \
         {canary_seen} ({canary_errors} errors)"
    );
    assert!(canary_seen > 0, "the canary served");
    // Each replica moved only after the proxies served the split it
    // leaves: no request was sent to a cohort whose last pod was leaving.
    assert_eq!((stable_errors, canary_errors), (0, 0), "no request failed");
    weir.finish().await;
}
