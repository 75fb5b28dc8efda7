//! A graph canary on the real control plane (see tests/stack): a frontend,
//! prefill workers and decode workers as three Deployments, the way a
//! Dynamo graph or a vLLM/SGLang prefill-decode pair runs without its
//! operator. Each pod is `weir sim`: decode answers, prefill and the
//! frontend forward every request to the URL weir gives their cohort
//! (`DECODE_URL`, `PREFILL_URL`), and every pod counts requests by the
//! generation (`DYN_NAMESPACE`) of the pod that sent them. The cluster has
//! no DNS, so the forwarding sims resolve Service names through the API
//! server's EndpointSlices (`weir sim --services-from-cluster`, standing in
//! for cluster DNS and kube-proxy).
//!
//! What it shows: a new decode version is one new revision of the graph;
//! the canary's components start in the order the resource gives (decode,
//! prefill, frontend: not the order they are listed in), each ready before
//! the next grows and all before any traffic moves; promotion updates the
//! stable copies in that order, each rolled out before the next. A slower
//! decode version is aborted on TTFT measured at the frontend, traffic back
//! on stable before any canary component shrinks, then the frontend,
//! prefill and decode scale down in that order. Throughout, no request
//! crosses from one generation to another.
//!
//! Within `graph.gpuBudget` equal to what stable holds (the cluster's 4
//! GPUs), the same graph is adopted, run and promoted one unit at a time:
//! a watch of the pods shows the scheduler never asked for a fifth GPU, no
//! pod was unschedulable, and no request failed.
//!
//! The timeline is read from watches of the Deployments and the Canary,
//! ordered by resourceVersion: the test control plane has one etcd, whose
//! revision orders every write across kinds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use weir_crds::{Canary, Phase, names};
use weir_envtest::TestEnv;
use weir_test_kit::poll::{try_until, until};
use weir_test_kit::sim::generation_counts;

mod common;
mod stack;

use stack::{PATIENCE, wait_phase};

/// The three components in start order.
const ORDER: [&str; 3] = ["decode", "prefill", "frontend"];

/// A component's Deployment: one pod of `args`, selected by `app: NAME`.
/// Before weir manages it, the graph's variables have the values a team
/// would give a graph of its own (weir overwrites them per cohort).
fn component(name: &str, image: &str, args: &[&str]) -> Deployment {
    let mut container = weir_envtest::sim_container(image, args);
    container["env"] = json!([
        {"name": "DYN_NAMESPACE", "value": "unmanaged"},
        {"name": "DECODE_URL", "value": "http://decode:8000"},
        {"name": "PREFILL_URL", "value": "http://prefill:8000"},
    ]);
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [container]
                }
            }
        }
    }))
    .expect("a valid Deployment")
}

/// The graph at v1, in start order: decode answers, prefill and the
/// frontend forward.
fn graph_v1() -> [Deployment; 3] {
    [
        component("decode", "decode:v1", &strs(&decode_args("60ms"))),
        component("prefill", "prefill:v1", &strs(&forward_args("DECODE_URL"))),
        component(
            "frontend",
            "frontend:v1",
            &strs(&forward_args("PREFILL_URL")),
        ),
    ]
}

/// Canary `chat` of the graph, one 50% step judged fast; `budget`:
/// `graph.gpuBudget`.
fn graph_canary(budget: Option<u32>) -> Canary {
    let mut graph = json!({
        // Listed prefill first: the order below is what counts.
        "components": [
            {"name": "prefill", "port": 8000, "urlEnv": "PREFILL_URL"},
            {"name": "decode", "port": 8000, "urlEnv": "DECODE_URL"}
        ],
        "order": ORDER,
        "isolation": {"env": "DYN_NAMESPACE"}
    });
    if let Some(b) = budget {
        graph["gpuBudget"] = json!(b);
    }
    weir_envtest::canary("chat")
        .judged_fast()
        .steps(json!([
            {"setWeight": 50},
            {"analysis": {"minDuration": "3s", "maxDuration": "80s"}}
        ]))
        .spec(json!({
            "targetRef": {"name": "frontend"},
            "graph": graph,
            "progressDeadlineSeconds": 180
        }))
        .build()
}

/// Decode workers: they answer, counting who asked.
fn decode_args(ttft: &str) -> Vec<String> {
    [
        "--ttft",
        ttft,
        "--ttft-sigma",
        "0.1",
        "--itl",
        "3ms",
        "--tokens",
        "12",
        "--generation-env",
        "DYN_NAMESPACE",
    ]
    .map(String::from)
    .to_vec()
}

/// Prefill and the frontend: they forward to the URL in `var`, finding
/// the Service through the API server the node agent gives pods.
fn forward_args(var: &str) -> Vec<String> {
    [
        "--forward-env",
        var,
        "--generation-env",
        "DYN_NAMESPACE",
        "--services-from-cluster",
    ]
    .map(String::from)
    .to_vec()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// One Deployment as a watch saw it.
#[derive(Debug, Clone)]
struct Dep {
    name: String,
    spec: i32,
    pods: i32,
    ready: i32,
    /// The controller has seen the current spec and every pod is on it
    /// and ready.
    rolled_out: bool,
    revision: Option<String>,
}

/// One write the watches saw, by etcd revision.
#[derive(Debug, Clone)]
enum Seen {
    Deployment(Dep),
    Canary { phase: Phase, weight: f64 },
}

/// The watches' record of one namespace.
struct Timeline {
    seen: Arc<Mutex<Vec<(u64, Seen)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Timeline {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn rv(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Timeline {
    fn start(client: &Client, namespace: &str) -> Timeline {
        let seen: Arc<Mutex<Vec<(u64, Seen)>>> = Arc::default();
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        let canaries: Api<Canary> = Api::namespaced(client.clone(), namespace);
        let into = Arc::clone(&seen);
        let d = tokio::spawn(async move {
            // A watch error (the API server slow on a busy machine) is
            // retried from the last resourceVersion seen, so no write is
            // missed; the stream must not end on it.
            let mut stream = watcher(deployments, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(item) = stream.next().await {
                let d = match item {
                    Ok(object) => object,
                    Err(e) => {
                        eprintln!("timeline: watching deployments: {e} (retrying)");
                        continue;
                    }
                };
                let spec = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let st = d.status.clone().unwrap_or_default();
                let pods = st.replicas.unwrap_or(0);
                let ready = st.ready_replicas.unwrap_or(0);
                let rolled_out = st.observed_generation == d.metadata.generation
                    && st.updated_replicas.unwrap_or(0) == spec
                    && ready == spec
                    && pods == spec;
                let entry = Seen::Deployment(Dep {
                    name: d.name_any(),
                    spec,
                    pods,
                    ready,
                    rolled_out,
                    revision: d.annotations().get(names::REVISION_ANNOTATION).cloned(),
                });
                into.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((rv(&d.metadata), entry));
            }
        });
        let into = Arc::clone(&seen);
        let c = tokio::spawn(async move {
            // A watch error (the API server slow on a busy machine) is
            // retried from the last resourceVersion seen, so no write is
            // missed; the stream must not end on it.
            let mut stream = watcher(canaries, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(item) = stream.next().await {
                let c = match item {
                    Ok(object) => object,
                    Err(e) => {
                        eprintln!("timeline: watching canaries: {e} (retrying)");
                        continue;
                    }
                };
                let status = c.status.clone().unwrap_or_default();
                into.lock().unwrap_or_else(PoisonError::into_inner).push((
                    rv(&c.metadata),
                    Seen::Canary {
                        phase: status.phase,
                        weight: status.canary_weight,
                    },
                ));
            }
        });
        Timeline {
            seen,
            tasks: vec![d, c],
        }
    }

    /// Everything seen, in etcd order.
    fn all(&self) -> Vec<(u64, Seen)> {
        let mut all = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        all.sort_by_key(|(rv, _)| *rv);
        all
    }

    /// The revision of the first write after `after` that `pred` accepts,
    /// waiting for it to arrive: a list the test waited on can be ahead
    /// of these watches, so a write already made may not be here yet.
    /// Each predicate looks at one kind, and one watch delivers its kind
    /// in etcd order, so the first match to arrive is the first written.
    async fn first(&self, after: u64, what: &str, pred: impl Fn(&Seen) -> bool) -> u64 {
        let found = try_until(what, PATIENCE, || async {
            self.all()
                .iter()
                .find(|(rv, s)| *rv > after && pred(s))
                .map(|(rv, _)| *rv)
        })
        .await;
        found.unwrap_or_else(|_| panic!("never seen after {after}: {what}\n{}", show(&self.all())))
    }
}

fn show(all: &[(u64, Seen)]) -> String {
    all.iter()
        .map(|(rv, s)| format!("{rv} {s:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn deployment<'a>(s: &'a Seen, wanted: &str) -> Option<&'a Dep> {
    match s {
        Seen::Deployment(d) if d.name == wanted => Some(d),
        _ => None,
    }
}

fn weight(s: &Seen) -> Option<f64> {
    match s {
        Seen::Canary { weight, .. } => Some(*weight),
        _ => None,
    }
}

/// Requests by (sender's generation, own generation).
type Counts = BTreeMap<(String, String), f64>;

/// Requests counted by every pod of the namespace, by (sender's
/// generation, own generation), the highest count each pod reported:
/// polled while the test runs, since pods that go take their counters.
#[derive(Default)]
struct Crossings {
    by_pod: Mutex<BTreeMap<String, Counts>>,
}

impl Crossings {
    async fn poll(&self, client: &Client, namespace: &str) {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let Ok(list) = pods.list(&ListParams::default()).await else {
            return;
        };
        let http = reqwest::Client::new();
        for pod in list.items {
            let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
                continue;
            };
            let url = format!("http://{ip}:{}/metrics", weir_envtest::SIM_PORT);
            let Ok(answer) = http
                .get(&url)
                .timeout(std::time::Duration::from_secs(1))
                .send()
                .await
            else {
                continue;
            };
            let Ok(text) = answer.text().await else {
                continue;
            };
            let counts = generation_counts(&text);
            let mut by_pod = self.by_pod.lock().unwrap_or_else(PoisonError::into_inner);
            let mine = by_pod.entry(pod.name_any()).or_default();
            for (from, own, n) in counts {
                let e = mine.entry((from, own)).or_insert(0.0);
                *e = e.max(n);
            }
        }
    }

    /// Totals over every pod: (sender, own) -> requests.
    fn totals(&self) -> Counts {
        let mut out = BTreeMap::new();
        for counts in self
            .by_pod
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            for (k, n) in counts {
                *out.entry(k.clone()).or_insert(0.0) += n;
            }
        }
        out
    }
}

/// Waits until no canary component (the user's Deployments) has a pod.
async fn canary_gone(deployments: &Api<Deployment>, what: &str) {
    until(what, PATIENCE, || async {
        let all = deployments.list(&ListParams::default()).await.ok()?;
        all.items
            .iter()
            .filter(|d| ORDER.contains(&d.name_any().as_str()))
            .all(|d| {
                let spec = d.spec.as_ref().and_then(|s| s.replicas);
                let pods = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                spec == Some(0) && pods == 0
            })
            .then_some(())
    })
    .await;
}

async fn set_decode(deployments: &Api<Deployment>, image: &str, args: &[String]) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "vllm", "image": image, "args": args}
    ]}}}});
    deployments
        .patch("decode", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect("a new decode version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_component_graph_is_promoted_and_a_slow_decode_aborted_in_order() {
    let env = TestEnv::on_cluster("kube-graph").await;
    let ns = env.namespace.clone();
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), &ns);
    let timeline = Timeline::start(&env.client, &ns);
    for d in graph_v1() {
        deployments
            .create(&PostParams::default(), &d)
            .await
            .expect("component");
    }
    let proxies = stack::two_proxies(&env.client, &ns).await;
    let canary = graph_canary(None);
    let canaries = Api::<Canary>::namespaced(env.client.clone(), &ns);
    canaries
        .create(&PostParams::default(), &canary)
        .await
        .expect("canary");
    let _controller = stack::controller_with_proxies(&env, "graph");

    // Adoption: the stable copies serve before anything else happens.
    let idle = wait_phase(&env.client, &ns, "chat", Phase::Idle).await;
    let first = idle.stable_revision.clone().expect("a stable revision");
    for name in ORDER {
        weir_envtest::cluster::rolled_out(&env.client, &ns, &names::stable_deployment(name), 1)
            .await
            .expect("the stable copy rolled out");
    }
    let crossings = Arc::new(Crossings::default());
    let poller = {
        let (client, ns, crossings) = (env.client.clone(), ns.clone(), Arc::clone(&crossings));
        tokio::spawn(async move {
            loop {
                crossings.poll(&client, &ns).await;
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
        })
    };
    let _load: Vec<common::Proc> = proxies
        .iter()
        .map(|p| stack::load(&p.url(), 25, 400, &[]))
        .collect();
    until("stable serves through the graph", PATIENCE, || async {
        crossings.poll(&env.client, &ns).await;
        let totals = crossings.totals();
        let own = weir_controller::engine::graph::generation("chat", &first);
        (totals.get(&(own.clone(), own)).copied().unwrap_or(0.0) > 20.0).then_some(())
    })
    .await;

    // Adoption scales your Deployments down in reverse order once the
    // copies serve; the timeline below reads their next scale-up as the
    // run's, so that must be over first (on a busy machine it can still
    // be going when stable already served 20 requests).
    canary_gone(&deployments, "adoption's scale-down is over").await;
    // A new decode version: one new revision of the whole graph.
    let released = rv(&deployments.get("decode").await.expect("decode").metadata);
    set_decode(&deployments, "decode:v2", &decode_args("60ms")).await;
    let done = wait_phase(&env.client, &ns, "chat", Phase::Succeeded).await;
    let second = done.stable_revision.clone().expect("promoted");
    assert_ne!(second, first);
    assert_eq!(done.components.len(), 3, "{:?}", done.components);
    let t = &timeline;
    // The canary's components: each asked for only once the one before
    // is ready, all ready before any traffic moves.
    let mut ready_at = Vec::new();
    for (i, name) in ORDER.iter().enumerate() {
        let grown = t
            .first(released, &format!("{name} scaled up"), |s| {
                deployment(s, name).is_some_and(|d| d.spec > 0)
            })
            .await;
        if let Some(&before) = ready_at.last() {
            assert!(
                grown > before,
                "{name} grew at {grown}, before {} was ready at {before}\n{}",
                ORDER[i - 1],
                show(&t.all())
            );
        }
        let ready = t
            .first(grown, &format!("{name} ready"), |s| {
                deployment(s, name).is_some_and(|d| d.spec > 0 && d.ready >= d.spec && d.rolled_out)
            })
            .await;
        ready_at.push(ready);
    }
    let moved = t
        .first(released, "canary traffic", |s| {
            weight(s).is_some_and(|w| w > 0.0)
        })
        .await;
    assert!(
        moved > ready_at[2],
        "traffic moved at {moved}, the graph was ready at {}\n{}",
        ready_at[2],
        show(&t.all())
    );
    // Promotion: each stable copy takes the new version only once the one
    // before it rolled it out.
    let mut rolled_at = moved;
    for name in ORDER {
        let copy = names::stable_deployment(name);
        let taken = t
            .first(moved, &format!("{copy} takes {second}"), |s| {
                deployment(s, &copy).is_some_and(|d| d.revision.as_deref() == Some(second.as_str()))
            })
            .await;
        assert!(
            taken > rolled_at,
            "{copy} took the new version at {taken}, before the copy before it rolled out at {rolled_at}\n{}",
            show(&t.all())
        );
        rolled_at = t
            .first(taken, &format!("{copy} rolled out"), |s| {
                deployment(s, &copy)
                    .is_some_and(|d| d.rolled_out && d.revision.as_deref() == Some(second.as_str()))
            })
            .await;
    }

    // A slower decode version: aborted on the time to first token the
    // proxies measure in front of the frontend.
    canary_gone(&deployments, "the promoted run's canary is gone").await;
    let released = rv(&deployments.get("decode").await.expect("decode").metadata);
    set_decode(&deployments, "decode:v3", &decode_args("240ms")).await;
    let aborted = wait_phase(&env.client, &ns, "chat", Phase::Aborted).await;
    let abort = aborted.abort.as_ref().expect("the abort is recorded");
    assert!(abort.message.contains("ttft"), "{}", abort.message);
    assert_eq!(aborted.stable_revision.as_deref(), Some(second.as_str()));
    canary_gone(&deployments, "the aborted canary is gone").await;
    let moved = t
        .first(released, "canary traffic", |s| {
            weight(s).is_some_and(|w| w > 0.0)
        })
        .await;
    let back = t
        .first(
            moved,
            "aborted, traffic back on stable",
            |s| matches!(s, Seen::Canary { phase: Phase::Aborted, weight } if *weight == 0.0),
        )
        .await;
    // Scale-down in reverse: each component only once the one after it
    // has no pods left, and none before traffic is back on stable.
    let mut gone_at = back;
    for name in ORDER.iter().rev() {
        let shrunk = t
            .first(moved, &format!("{name} scaled down"), |s| {
                deployment(s, name).is_some_and(|d| d.spec == 0)
            })
            .await;
        assert!(
            shrunk > gone_at,
            "{name} shrank at {shrunk}, before {gone_at}\n{}",
            show(&t.all())
        );
        gone_at = t
            .first(shrunk, &format!("{name} has no pods"), |s| {
                deployment(s, name).is_some_and(|d| d.spec == 0 && d.pods == 0)
            })
            .await;
    }
    for p in &proxies {
        until("the proxy is back on stable", PATIENCE, || async {
            let (weight, _) = p.canary_weight(&ns, "chat").await?;
            (weight == 0.0).then_some(())
        })
        .await;
    }

    // Isolation: every request any pod got came from its own generation,
    // and each generation served a share of the run.
    poller.abort();
    crossings.poll(&env.client, &ns).await;
    let totals = crossings.totals();
    // Frontends count the proxies' requests as from "" (no generation).
    let crossed: Vec<_> = totals
        .iter()
        .filter(|((from, own), n)| !from.is_empty() && from != own && **n > 0.0)
        .collect();
    eprintln!("requests by (sender's generation, own generation): {totals:?}");
    assert!(
        crossed.is_empty(),
        "requests crossed generations: {crossed:?}"
    );
    for rev in [&first, &second] {
        let g = weir_controller::engine::graph::generation("chat", rev);
        let n = totals.get(&(g.clone(), g.clone())).copied().unwrap_or(0.0);
        assert!(n > 20.0, "generation {g} served {n}: {totals:?}");
    }
    let v3 = aborted
        .canary_revision
        .clone()
        .expect("the aborted revision");
    let g = weir_controller::engine::graph::generation("chat", &v3);
    assert!(
        totals.get(&(g.clone(), g.clone())).copied().unwrap_or(0.0) > 0.0,
        "the slow version served some requests: {totals:?}"
    );
}

/// `d` at `replicas`, each pod asking for `gpus` of `nvidia.com/gpu`.
/// Its pods keep answering for 2 s after SIGTERM, as a preStop sleep
/// makes a worker do: stable shrinks while it serves under a budget, and
/// a caller that resolved a worker just before it left still reaches it.
fn sized(mut d: Deployment, replicas: i32, gpus: u32) -> Deployment {
    let spec = d.spec.as_mut().expect("spec");
    spec.replicas = Some(replicas);
    let pod = spec.template.spec.as_mut().expect("pod spec");
    pod.termination_grace_period_seconds = Some(5);
    let args = pod.containers[0].args.get_or_insert_with(Vec::new);
    args.extend(["--shutdown-delay".to_string(), "2s".to_string()]);
    if gpus > 0 {
        pod.containers[0].resources = Some(
            serde_json::from_value(json!({"limits": {"nvidia.com/gpu": gpus.to_string()}}))
                .expect("resources"),
        );
    }
    d
}

/// The most `nvidia.com/gpu` the namespace's pods asked for at once, from
/// a watch of its pods: a pod asks from its creation (the scheduler
/// counts pending pods' requests) until it is gone, terminating included.
struct GpuWatch {
    most: Arc<Mutex<(u32, usize)>>,
    task: tokio::task::JoinHandle<()>,
}

impl GpuWatch {
    fn start(client: &Client, namespace: &str) -> GpuWatch {
        use kube::runtime::watcher::Event;
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let most: Arc<Mutex<(u32, usize)>> = Arc::default();
        let into = Arc::clone(&most);
        let task = tokio::spawn(async move {
            let gpus = |p: &Pod| -> u32 {
                p.spec
                    .iter()
                    .flat_map(|s| s.containers.iter())
                    .filter_map(|c| {
                        c.resources
                            .as_ref()?
                            .limits
                            .as_ref()?
                            .get("nvidia.com/gpu")?
                            .0
                            .parse::<u32>()
                            .ok()
                    })
                    .sum()
            };
            let mut asking: BTreeMap<String, u32> = BTreeMap::new();
            let mut stream = watcher(pods, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::Apply(p) | Event::InitApply(p)) => {
                        let done = p.status.as_ref().and_then(|s| s.phase.as_deref());
                        if matches!(done, Some("Succeeded" | "Failed")) {
                            asking.remove(&p.name_any());
                        } else {
                            asking.insert(p.name_any(), gpus(&p));
                        }
                    }
                    Ok(Event::Delete(p)) => {
                        asking.remove(&p.name_any());
                    }
                    Ok(Event::Init | Event::InitDone) => continue,
                    Err(e) => {
                        eprintln!("gpu watch: {e} (retrying)");
                        continue;
                    }
                }
                let now: u32 = asking.values().sum();
                let mut m = into.lock().unwrap_or_else(PoisonError::into_inner);
                m.0 = m.0.max(now);
                m.1 += 1;
            }
        });
        GpuWatch { most, task }
    }

    /// The most GPUs asked at once, and how many pod events were seen.
    fn most(&self) -> (u32, usize) {
        *self.most.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for GpuWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_within_a_gpu_budget_is_promoted_without_a_spare_gpu() {
    // The cluster's 4 GPUs (2 nodes of 2): decode and prefill run 2 pods
    // of 1 GPU each, the frontend 1 pod of none. graph.gpuBudget: 4 is
    // what stable holds: every GPU the canary graph gets, stable gave up.
    let env = TestEnv::on_cluster("kube-graph-budget").await;
    let ns = env.namespace.clone();
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), &ns);
    for (d, (replicas, gpus)) in graph_v1().into_iter().zip([(2, 1), (2, 1), (1, 0)]) {
        deployments
            .create(&PostParams::default(), &sized(d, replicas, gpus))
            .await
            .expect("component");
    }
    for (name, n) in [("decode", 2), ("prefill", 2), ("frontend", 1)] {
        weir_envtest::cluster::rolled_out(&env.client, &ns, name, n)
            .await
            .expect("the component rolled out");
    }
    // From before the Canary: adoption within the budget is recorded too.
    let gpus = GpuWatch::start(&env.client, &ns);
    let proxies = stack::two_proxies(&env.client, &ns).await;
    let canary = graph_canary(Some(4));
    Api::<Canary>::namespaced(env.client.clone(), &ns)
        .create(&PostParams::default(), &canary)
        .await
        .expect("canary");
    let _controller = stack::controller_with_proxies(&env, "graph-budget");

    // Adoption: no room for copies beside the user's pods, so the pods
    // move to the stable copies one unit at a time.
    let idle = wait_phase(&env.client, &ns, "chat", Phase::Idle).await;
    let first = idle.stable_revision.clone().expect("a stable revision");
    for (name, n) in [("decode", 2), ("prefill", 2), ("frontend", 1)] {
        weir_envtest::cluster::rolled_out(&env.client, &ns, &names::stable_deployment(name), n)
            .await
            .expect("the stable copy rolled out whole");
    }
    let _load: Vec<common::Proc> = proxies
        .iter()
        .map(|p| stack::load(&p.url(), 20, 300, &[]))
        .collect();
    until("stable serves through the graph", PATIENCE, || async {
        let served: u64 = proxies.iter().map(|p| p.counted("stable").0).sum();
        (served > 20).then_some(())
    })
    .await;

    canary_gone(&deployments, "adoption's scale-down is over").await;
    set_decode(&deployments, "decode:v2", &decode_args("60ms")).await;
    let done = wait_phase(&env.client, &ns, "chat", Phase::Succeeded).await;
    let second = done.stable_revision.clone().expect("promoted");
    assert_ne!(second, first);
    for (name, n) in [("decode", 2), ("prefill", 2), ("frontend", 1)] {
        let copy = names::stable_deployment(name);
        weir_envtest::cluster::rolled_out(&env.client, &ns, &copy, n)
            .await
            .expect("the stable copy is whole again");
        let d = deployments.get(&copy).await.expect("copy");
        assert_eq!(
            d.annotations().get(names::REVISION_ANNOTATION),
            Some(&second),
            "{copy} runs the promoted version"
        );
    }
    canary_gone(&deployments, "the canary graph is gone").await;

    let (most, events) = gpus.most();
    eprintln!("gpu budget (graph): {events} pod events; at most {most} GPUs asked for at once");
    assert!(events > 20, "the watch saw the rollout: {events} events");
    assert!(most <= 4, "{most} GPUs were asked for, the budget is 4");
    let unschedulable: Vec<String> =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .expect("list Events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
            .filter_map(|e| e.note)
            .collect();
    assert!(
        unschedulable.is_empty(),
        "the scheduler was asked for what it could not place: {unschedulable:?}"
    );
    let (stable, stable_errors) = proxies
        .iter()
        .map(|p| p.counted("stable"))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let (canary, canary_errors) = proxies
        .iter()
        .map(|p| p.counted("canary"))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    eprintln!(
        "gpu budget (graph): requests stable {stable} ({stable_errors} errors), canary {canary} ({canary_errors} errors)"
    );
    assert!(canary > 0, "the canary graph served");
    assert_eq!((stable_errors, canary_errors), (0, 0), "no request failed");

    // A spec that no longer names a component weir holds is refused, and
    // its copy is left serving as it was, until the spec names it again.
    let canaries = Api::<Canary>::namespaced(env.client.clone(), &ns);
    let without_prefill = json!({"graph": {
        "components": [{"name": "decode", "port": 8000, "urlEnv": "DECODE_URL"}],
        "order": ["decode", "frontend"]
    }});
    for (edit, field) in [
        (without_prefill, "spec.graph.components"),
        (json!({"graph": null}), "spec.graph:"),
    ] {
        canaries
            .patch(
                "chat",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": edit})),
            )
            .await
            .expect("the API server takes the edit");
        let message = ready(&canaries, "False").await;
        assert!(
            message.contains(field) && message.contains("prefill-stable"),
            "{message}"
        );
        let copy = deployments
            .get(&names::stable_deployment("prefill"))
            .await
            .expect("the copy is still there");
        assert_eq!(copy.spec.and_then(|s| s.replicas), Some(2), "{message}");
        let mine = deployments.get("prefill").await.expect("prefill");
        assert_eq!(mine.spec.and_then(|s| s.replicas), Some(0), "{message}");
        canaries
            .patch(
                "chat",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"graph": graph_canary(Some(4)).spec.graph}})),
            )
            .await
            .expect("put back");
        ready(&canaries, "True").await;
    }
}

/// Waits for the Canary's `Ready` condition to be `status`; its message.
async fn ready(canaries: &Api<Canary>, status: &str) -> String {
    until(&format!("Ready={status}"), PATIENCE, || async {
        let c = canaries.get("chat").await.ok()?;
        c.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == status)
            .map(|c| c.message)
    })
    .await
}
