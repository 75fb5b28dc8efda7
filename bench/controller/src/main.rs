//! Scale benchmark of the controller: one `weir controller` process
//! reconciles N Canaries (default 500) against a real kube-apiserver.
//!
//! Each Canary targets a Deployment of its own (one replica). The run
//! measures two waves: adoption (every target adopted: stable copy ready,
//! target scaled to zero) and a rollout of a new template on every target
//! at once (`setWeight 50`, a 2 s pause, promotion). A small stand-in for
//! the kubelet reports every Deployment's pods ready (there is none on a
//! bare API server), through a watch, as the Deployment controller would.
//!
//! Reported: the time each wave took, the controller's reconcile duration
//! quantiles (from its own `weir_reconcile_duration_seconds` histogram),
//! reconcile errors, and the controller process's peak and final resident
//! memory (from /proc). Prints a Markdown section on stdout.
//!
//!   weir-bench-controller --weir target/release/weir [--canaries 500]
//!
//! KUBECONFIG must point at the API server (bench/controller/run starts one).

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use weir_crds::{Canary, Phase};

const NAMESPACE: &str = "weir-bench";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn target(i: usize, image: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("frontend-{i}")},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": format!("frontend-{i}")}},
            "template": {
                "metadata": {"labels": {"app": format!("frontend-{i}")}},
                "spec": {"containers": [{"name": "vllm", "image": image}]}
            }
        }
    }))
    .expect("deployment")
}

fn canary(i: usize) -> Canary {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "Canary",
        "metadata": {"name": format!("chat-{i}")},
        "spec": {
            "targetRef": {"name": format!("frontend-{i}")},
            "service": {"port": 8000},
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "2s"}}]}},
            "analysis": {"interval": "1s", "warmup": "1s", "metrics": []}
        }
    }))
    .expect("canary")
}

/// Reports every Deployment's pods ready, as the Deployment controller and
/// kubelet would.
async fn kubelet(client: Client) {
    let api: Api<Deployment> = Api::namespaced(client, NAMESPACE);
    let stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    while let Ok(Some(d)) = stream.try_next().await {
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = d.status.clone().unwrap_or_default();
        if st.observed_generation == d.metadata.generation && st.ready_replicas == Some(want) {
            continue;
        }
        let body = serde_json::json!({"status": {
            "observedGeneration": d.metadata.generation, "replicas": want,
            "updatedReplicas": want, "readyReplicas": want, "availableReplicas": want}});
        let api = api.clone();
        tokio::spawn(async move {
            let _ = api
                .patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&body))
                .await;
        });
    }
}

/// Waits until `done` holds for every Canary; returns how long it took.
async fn wave(
    client: &Client,
    n: usize,
    started: Instant,
    done: impl Fn(&Canary) -> bool,
) -> Duration {
    let api: Api<Canary> = Api::namespaced(client.clone(), NAMESPACE);
    loop {
        let list = api
            .list(&ListParams::default())
            .await
            .expect("list canaries");
        let finished = list.items.iter().filter(|c| done(c)).count();
        if finished == n {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "only {finished} of {n} Canaries finished in 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A quantile of a Prometheus histogram, interpolated in its bucket.
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let within = if count > prev.1 {
                (rank - prev.1) / (count - prev.1)
            } else {
                1.0
            };
            return prev.0 + (le - prev.0) * within;
        }
        prev = (le, count);
    }
    prev.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = arg("--canaries")
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let weir = arg("--weir").unwrap_or_else(|| "target/release/weir".into());
    let metrics_port = 19_091;
    // One crypto provider for the process (see the workspace's rustls).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = Client::try_default().await.expect("KUBECONFIG");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))
            .expect("namespace");
    let _ = namespaces.create(&PostParams::default(), &ns).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let canaries: Api<Canary> = Api::namespaced(client.clone(), NAMESPACE);
    eprintln!("creating {n} Deployments and Canaries");
    futures::stream::iter(0..n)
        .for_each_concurrent(16, |i| {
            let (deployments, canaries) = (deployments.clone(), canaries.clone());
            async move {
                deployments
                    .create(&PostParams::default(), &target(i, "vllm:v1"))
                    .await
                    .expect("create deployment");
                canaries
                    .create(&PostParams::default(), &canary(i))
                    .await
                    .expect("create canary");
            }
        })
        .await;
    tokio::spawn(kubelet(client.clone()));

    let mut controller = tokio::process::Command::new(&weir)
        .args([
            "controller",
            "--namespace",
            NAMESPACE,
            "--no-leader-election",
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
            "--concurrency",
            "16",
        ])
        .env("WEIR_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("weir controller starts");
    let pid = controller.id().expect("pid");

    let started = Instant::now();
    let adoption = wave(&client, n, started, |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Idle && s.replicas.is_some_and(|r| r.canary == 0))
    })
    .await;
    eprintln!("adopted {n} in {:.1}s", adoption.as_secs_f64());
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": "vllm:v2"}]}}}});
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(16, |i| {
            let deployments = deployments.clone();
            let patch = patch.clone();
            async move {
                deployments
                    .patch(
                        &format!("frontend-{i}"),
                        &PatchParams::default(),
                        &Patch::Strategic(&patch),
                    )
                    .await
                    .expect("new template");
            }
        })
        .await;
    let rollout = wave(&client, n, started, |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Succeeded)
    })
    .await;
    eprintln!("rolled out {n} in {:.1}s", rollout.as_secs_f64());

    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("weir_reconcile_duration_seconds_bucket{le=\"")?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = buckets.last().map_or(0.0, |b| b.1);
    let errors: f64 = 0.0
        + text
            .lines()
            .filter(|l| l.starts_with("weir_reconcile_errors_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    let peak = proc_kib(pid, "VmHWM:");
    let rss = proc_kib(pid, "VmRSS:");
    let _ = controller.kill().await;

    println!(
        "One `weir controller` (release build, `--concurrency 16`) against a real kube-apiserver \
         on this machine ({} cores), {n} Canaries, each with its own one-replica target Deployment.\n",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!("| measure | value |\n|---|---:|");
    println!(
        "| adoption of all {n} (stable copy ready, target to 0) | {:.1} s |",
        adoption.as_secs_f64()
    );
    println!(
        "| rollout of all {n} at once (setWeight 50, 2 s pause, promotion) | {:.1} s |",
        rollout.as_secs_f64()
    );
    println!("| reconciles | {count:.0} |");
    println!(
        "| reconcile p50 | {:.1} ms |",
        quantile(&buckets, 0.5) * 1000.0
    );
    println!(
        "| reconcile p99 | {:.1} ms |",
        quantile(&buckets, 0.99) * 1000.0
    );
    println!("| reconcile errors | {errors:.0} |");
    println!(
        "| controller memory, peak (VmHWM) | {:.1} MiB |",
        peak as f64 / 1024.0
    );
    println!(
        "| controller memory, at the end (VmRSS) | {:.1} MiB |",
        rss as f64 / 1024.0
    );
}
