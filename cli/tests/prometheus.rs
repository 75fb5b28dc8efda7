//! weir under a real Prometheus (the Debian package): two `weir sim`
//! processes (the stable and the canary cohort, the canary configured
//! slower) and `weir proxy` on loopback, scraped every second while `weir
//! load` streams through the proxy.
//!
//! What it shows:
//! - the analysis's Prometheus source reads each cohort's TTFT histogram
//!   (`vllm:time_to_first_token_seconds`) and DCGM GPU utilization, and the
//!   numbers agree with what the sims were told to do and what the proxy
//!   itself measured, within the error of the histogram's buckets;
//! - the controller's Prometheus gauge source (a query with `$pods` and
//!   `$namespace`) finds each cohort's GPUs by the cohort's pods, listed
//!   from a real API server;
//! - every PromQL expression of the Grafana dashboard (template variables
//!   filled in) and of the alert rules runs, the dashboard's per-cohort
//!   panels show both cohorts with the right values, Prometheus loads and
//!   evaluates the rule file, the proxy-error alert picks out the failing
//!   cohort, the leader alerts follow a `weir controller` process, and
//!   `promtool check rules` passes;
//! - `promtool test rules` (tests/fixtures/prometheus-rules.test.yaml)
//!   shows each alert firing exactly when it should on synthetic series.
//!
//! How the sims and the scrape config stand in for a cluster: each sim's
//! target carries `cohort`, `namespace` and `pod` labels, as
//! Kubernetes service discovery (and dcgm-exporter, for GPU series) would
//! attach them; the pods are named as a Deployment names its pods, stable's
//! after `<target>-stable`, the canary's after `<target>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use weir_analysis::names::{dcgm, vllm};
use weir_analysis::observations::{CohortSnapshot, Snapshot};
use weir_analysis::source::prometheus_api::QueryResult;
use weir_analysis::source::{Query, Reading, Selector};
use weir_controller::engine::spec::Rollout;
use weir_controller::evidence::{Cohorts, GaugeReader};
use weir_controller::kube::builders::stable_labels;
use weir_controller::kube::gauges::KubeGauges;
use weir_crds::{CanarySpec, Cohort};
use weir_envtest::TestEnv;

mod common;
mod promserver;
mod stack;

use common::controller_process;
use common::proxy_process::{Proxy, proxy};
use common::{Proc, Sim, sim};
use promserver::{Job, Prometheus, promtool};
use stack::PATIENCE;
use weir_test_kit::poll::until;

/// The target Deployment the pod names derive from.
const TARGET: &str = "chat-frontend";
/// The proxy's route (a config file route; `<namespace>.<canary>` in a cluster).
const ROUTE: &str = "chat";
/// The Canary's name, for the dashboard's `$canary`.
const CANARY: &str = "chat";
/// Log-space spread of both sims' TTFT.
const TTFT_SIGMA: f64 = 0.1;
/// Requests per second through the proxy, for [`LOAD_SECONDS`].
const LOAD_RATE: u32 = 30;
const LOAD_SECONDS: u32 = 12;
/// The dashboard is evaluated this long after the load started, with rates
/// over [`RATE_INTERVAL`]: a window wholly inside the load.
const DASHBOARD_AT: f64 = 10.0;
const RATE_INTERVAL: &str = "8s";

/// How one cohort's sim behaves, and the pod it stands for.
#[derive(Debug, Clone, Copy)]
struct Spec {
    cohort: &'static str,
    /// Median time to first token.
    ttft: Duration,
    /// GPU utilization, percent (constant: none added per request).
    gpu_util: f64,
    /// Fraction of streams that break mid-stream.
    stream_error_rate: f64,
    /// The pod name, as its Deployment would name it.
    pod: &'static str,
}

const STABLE: Spec = Spec {
    cohort: "stable",
    ttft: Duration::from_millis(170),
    gpu_util: 40.0,
    stream_error_rate: 0.0,
    pod: "chat-frontend-stable-5d8f9c7b4-x7k2p",
};

/// Twice as slow to the first token, hotter, and one stream in five breaks.
const CANARY_SPEC: Spec = Spec {
    cohort: "canary",
    ttft: Duration::from_millis(360),
    gpu_util: 70.0,
    stream_error_rate: 0.2,
    pod: "chat-frontend-7c1a02d95-q9z4m",
};

// Each scene runs sims, a proxy, Prometheus and 30 streams a second; on a
// small machine two at once would blur the timing the assertions rely on.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// The rule file and the dashboard, as the chart ships them.
fn chart_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/weir/files")
        .join(name)
}

/// Two sims, the proxy splitting 50/50 between them, and Prometheus
/// scraping all three (and `extra` jobs) with the chart's rule file loaded.
struct Scene {
    sims: Vec<(Spec, Sim)>,
    proxy: Proxy,
    prometheus: Prometheus,
    namespace: String,
    /// Unix seconds at which the load started.
    load_started: Option<f64>,
    dir: PathBuf,
}

impl Scene {
    async fn start(name: &str, namespace: &str, extra: Vec<Job>) -> Scene {
        let sims: Vec<(Spec, Sim)> = [STABLE, CANARY_SPEC]
            .into_iter()
            .map(|spec| {
                let ttft = format!("{}ms", spec.ttft.as_millis());
                let sigma = TTFT_SIGMA.to_string();
                let util = spec.gpu_util.to_string();
                let errors = spec.stream_error_rate.to_string();
                let args = [
                    "--ttft",
                    &ttft,
                    "--ttft-sigma",
                    &sigma,
                    "--itl",
                    "5ms",
                    "--tokens",
                    "16",
                    "--gpu-util",
                    &util,
                    "--gpu-util-per-request",
                    "0",
                    "--stream-error-rate",
                    &errors,
                ];
                (spec, sim(spec.cohort, &args))
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("weir-obs-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let config = dir.join("proxy.yaml");
        let mut routes = format!(
            "listen: 127.0.0.1:1\nadmin: 127.0.0.1:2\nroutes:\n  - name: {ROUTE}\n    match: {{pathPrefix: /}}\n    backends:\n"
        );
        for (spec, sim) in &sims {
            routes.push_str(&format!(
                "      - {{cohort: {}, url: http://{}, weight: 50}}\n",
                spec.cohort, sim.addr
            ));
        }
        std::fs::write(&config, routes).expect("write the proxy config");
        let proxy = proxy(&config);

        let mut job = Job::new("vllm", &[]);
        for (spec, sim) in &sims {
            job = job.target(
                sim.addr,
                &[
                    ("cohort", spec.cohort),
                    ("namespace", namespace),
                    ("pod", spec.pod),
                ],
            );
        }
        let mut jobs = vec![job, Job::new("weir-proxy", &[proxy.admin])];
        jobs.extend(extra);
        let targets = jobs.iter().map(|j| j.targets.len()).sum();
        let rules = chart_file("prometheus-rules.yaml");
        let prometheus =
            Prometheus::start(name, &promserver::config(&jobs, &[rules.as_path()])).await;
        prometheus.wait_targets_up(targets).await;
        Scene {
            sims,
            proxy,
            prometheus,
            namespace: namespace.to_string(),
            load_started: None,
            dir,
        }
    }

    /// Streams [`LOAD_RATE`] requests a second through the proxy for
    /// [`LOAD_SECONDS`], then waits until Prometheus has scraped each sim's
    /// final TTFT count.
    async fn load(&mut self) {
        self.load_started = Some(unix_now());
        let url = format!("http://{}", self.proxy.listen);
        let (rate, duration) = (LOAD_RATE.to_string(), format!("{LOAD_SECONDS}s"));
        let out = tokio::task::spawn_blocking(move || {
            common::command(&[
                "load",
                "--url",
                &url,
                "--rate",
                &rate,
                "--duration",
                &duration,
                "--seed",
                "3",
            ])
            .output()
            .expect("weir load runs")
        })
        .await
        .expect("joins");
        assert!(
            out.status.success(),
            "weir load failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (spec, sim) in &self.sims {
            let served = sim_ttft_count(sim).await;
            assert!(served > 50.0, "{}: only {served} requests", spec.cohort);
            let expr = format!(r#"{}_count{{cohort="{}"}}"#, vllm::TTFT, spec.cohort);
            until(
                "Prometheus to scrape the sims' final counts",
                PATIENCE,
                || async {
                    (self.prometheus.scalar(&expr, None).await == Some(served)).then_some(())
                },
            )
            .await;
        }
    }

    /// What the proxy measured for `cohort` (all revisions).
    async fn proxy_observed(&self, cohort: &str) -> CohortSnapshot {
        let url = format!("http://{}/v1/observations", self.proxy.admin);
        let body = reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .text()
            .await
            .expect("a body");
        let snapshot = Snapshot::parse(&body).expect("the proxy's observations parse");
        let mut parts = snapshot
            .cohorts
            .into_iter()
            .filter(|c| c.route == ROUTE && c.cohort.as_str() == cohort);
        let mut total = parts
            .next()
            .unwrap_or_else(|| panic!("no {cohort} observations"));
        for part in parts {
            total.add(&part);
        }
        total
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- prometheus log ---\n{}", self.prometheus.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The sim's own count of TTFT observations, from its `/metrics`.
async fn sim_ttft_count(sim: &Sim) -> f64 {
    let url = format!("http://{}/metrics", sim.addr);
    let text = reqwest::get(&url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .expect("a body");
    let prefix = format!("{}_count{{", vllm::TTFT);
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} line in the sim's /metrics"))
}

/// The bucket `(lower, upper]` of the sims' TTFT histogram holding `v`.
fn ttft_bucket(v: f64) -> (f64, f64) {
    let bounds = weir_sim::metrics::TTFT_BUCKETS;
    let i = bounds.partition_point(|b| *b < v);
    let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
    (lower, bounds.get(i).copied().unwrap_or(f64::INFINITY))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analysis_reads_each_cohorts_ttft_and_gpu_utilization_from_prometheus() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut scene = Scene::start("analysis", "llm", Vec::new()).await;
    scene.load().await;
    let prometheus = &scene.prometheus;

    let mut p50 = BTreeMap::new();
    for (spec, sim) in &scene.sims {
        let cohort = Selector::any().eq("cohort", spec.cohort);
        // Evaluated at the last scrape, over a window that holds the whole
        // run from its first scrape (counts 0): `increase` then has nothing
        // to extrapolate, and counts are exact.
        let at = prometheus
            .scalar(
                &format!(
                    r#"timestamp({}_count{{cohort="{}"}})"#,
                    vllm::TTFT,
                    spec.cohort
                ),
                None,
            )
            .await
            .expect("the sim's series exists");
        let api = prometheus
            .api()
            .with_window(Duration::from_secs(600))
            .at(at);
        let Reading::Distribution(ttft) = api
            .read_query(&Query::histogram(vllm::TTFT, cohort.clone()))
            .await
            .expect("reads")
        else {
            panic!("{}: no TTFT distribution", spec.cohort);
        };
        assert_eq!(
            ttft.count() as f64,
            sim_ttft_count(sim).await,
            "{}: every request the sim served",
            spec.cohort
        );

        // The proxy's own high-resolution measurement (about 1% bins) of
        // the same requests; it adds its own overhead, a few ms, to the
        // server's TTFT.
        let observed = scene.proxy_observed(spec.cohort).await;
        let median = spec.ttft.as_secs_f64();
        let proxy_p50 = observed.ttft_seconds.quantile(0.5).expect("observed");
        assert!(
            (0.95 * median..=1.2 * median).contains(&proxy_p50),
            "{}: the proxy's median TTFT {proxy_p50:.4}s vs the sim's configured {median}s",
            spec.cohort
        );
        for p in [0.5, 0.95] {
            let from_prometheus = ttft.quantile(p).expect("not empty");
            let truth = observed.ttft_seconds.quantile(p).expect("observed");
            // A bucketed quantile lies in the bucket of the true one; the
            // server's TTFT is at most 10% below the proxy's.
            let band = (ttft_bucket(0.9 * truth).0, ttft_bucket(truth).1);
            assert!(
                (band.0..=band.1).contains(&from_prometheus),
                "{} p{}: {from_prometheus:.4}s from Prometheus, outside {band:?} around the proxy's {truth:.4}s",
                spec.cohort,
                p * 100.0
            );
            if p == 0.5 {
                p50.insert(spec.cohort, from_prometheus);
            }
        }

        // GPU utilization: by the cohort label, and as in a cluster, by
        // the pods of the cohort's Deployment.
        let pods = if spec.cohort == "stable" {
            format!("{TARGET}-stable-[a-z0-9]+-[a-z0-9]+")
        } else {
            format!("{TARGET}-[a-z0-9]+-[a-z0-9]+")
        };
        let by_pods =
            Selector::parse(&format!(r#"{{namespace="llm",pod=~"{pods}"}}"#)).expect("selector");
        for selector in [cohort, by_pods] {
            let api = prometheus
                .api()
                .with_window(Duration::from_secs(10))
                .with_step(Duration::from_secs(1))
                .at(at);
            let Reading::Gauge(points) = api
                .read_query(&Query::gauge(dcgm::GPU_UTIL, selector.clone()))
                .await
                .expect("reads")
            else {
                panic!("{}: no GPU utilization for {selector:?}", spec.cohort);
            };
            assert!(points.len() >= 5, "{}: {points:?}", spec.cohort);
            assert!(
                points.iter().all(|p| p.value == spec.gpu_util),
                "{}: configured {}%, read {points:?}",
                spec.cohort,
                spec.gpu_util
            );
        }
    }
    assert!(
        p50["canary"] > 1.5 * p50["stable"],
        "the canary is seen slower: {p50:?}"
    );
}

/// Every `expr` in the dashboard (panel targets, annotations) with the
/// title of the panel or annotation it belongs to.
fn dashboard_expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), dashboard)];
    while let Some((title, v)) = stack.pop() {
        match v {
            Value::Object(o) => {
                let title = o
                    .get("title")
                    .or_else(|| o.get("name"))
                    .and_then(Value::as_str)
                    .map_or(title, str::to_string);
                if let Some(Value::String(expr)) = o.get("expr") {
                    out.push((title.clone(), expr.clone()));
                }
                stack.extend(o.values().map(|v| (title.clone(), v)));
            }
            Value::Array(a) => stack.extend(a.iter().map(|v| (title.clone(), v))),
            _ => {}
        }
    }
    out
}

/// Fills in `$name` and `${name}`; panics naming a variable it has no value
/// for.
fn substitute(expr: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = expr.to_string();
    // Longest names first, so `$canary` never eats the start of a longer one.
    let mut names: Vec<&&str> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), &values[*name])
            .replace(&format!("${name}"), &values[*name]);
    }
    assert!(!out.contains('$'), "an unknown template variable in {expr}");
    out
}

/// The values of a vector answer by cohort (finite values only).
fn by_cohort(answer: &QueryResult) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    if let QueryResult::Vector(series) = answer {
        for s in series {
            if let (Some(cohort), Some(p)) = (s.labels.get("cohort"), s.sample)
                && p.value.is_finite()
            {
                out.entry(cohort.clone()).or_default().push(p.value);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_expression_runs_and_per_cohort_panels_show_both_cohorts() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut scene = Scene::start("dashboard", "llm", Vec::new()).await;
    scene.load().await;
    let prometheus = &scene.prometheus;
    let at = scene.load_started.expect("loaded") + DASHBOARD_AT;

    let text = std::fs::read_to_string(chart_file("grafana-dashboard.json")).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let values: BTreeMap<&str, String> = [
        ("namespace", scene.namespace.clone()),
        ("canary", CANARY.to_string()),
        ("route", ROUTE.to_string()),
        ("target", TARGET.to_string()),
        ("__rate_interval", RATE_INTERVAL.to_string()),
    ]
    .into_iter()
    .collect();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("template variables");
    for v in variables {
        let name = v["name"].as_str().expect("a variable name");
        assert!(
            name == "datasource" || values.contains_key(name),
            "the test has no value for the dashboard's ${name}"
        );
    }

    // Every expression runs; per-cohort panels show both cohorts.
    let expressions = dashboard_expressions(&dashboard);
    assert!(expressions.len() >= 20, "{expressions:?}");
    let mut panels: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for (title, expr) in &expressions {
        let expr = substitute(expr, &values);
        let answer = prometheus.query(&expr, Some(at)).await;
        let panel = panels.entry(title.clone()).or_default();
        for (cohort, v) in by_cohort(&answer.result) {
            panel.entry(cohort).or_default().extend(v);
        }
    }
    let per_cohort: Vec<&String> = panels.keys().filter(|t| t.contains("per cohort")).collect();
    assert!(per_cohort.len() >= 10, "{per_cohort:?}");
    for title in &per_cohort {
        let cohorts: BTreeSet<&str> = panels[*title].keys().map(String::as_str).collect();
        assert_eq!(
            cohorts,
            BTreeSet::from(["canary", "stable"]),
            "panel {title:?} shows {cohorts:?}"
        );
    }
    let per_cohort_exprs: String = expressions
        .iter()
        .filter(|(t, _)| t.contains("per cohort"))
        .map(|(_, e)| e.as_str())
        .collect();
    for metric in [
        "weir_proxy_ttft_seconds",
        "weir_proxy_inter_token_seconds",
        "weir_proxy_requests_total",
        "weir_proxy_route_weight",
        "weir_proxy_connect_retries_total",
        "DCGM_FI_DEV_GPU_UTIL",
        vllm::TTFT,
    ] {
        assert!(
            per_cohort_exprs.contains(metric),
            "no per-cohort panel reads {metric}"
        );
    }
    // The values are the right cohort's: the pod-name rule sends each
    // GPU to its cohort, the weights are the proxy's, only the canary errs.
    let panel = |title: &str| {
        panels
            .get(title)
            .unwrap_or_else(|| panic!("no panel {title:?}"))
    };
    for spec in [STABLE, CANARY_SPEC] {
        assert_eq!(
            panel("GPU utilization per cohort")[spec.cohort],
            vec![spec.gpu_util]
        );
        assert_eq!(
            panel("Route weight per cohort")[spec.cohort],
            vec![50.0, 50.0]
        );
    }
    // No pod refused a connection here: the churn panel reads zero for
    // each cohort (the series exist before the first retry).
    for cohort in ["stable", "canary"] {
        assert_eq!(
            panel("Connections stepped past per cohort (pod churn)")[cohort],
            vec![0.0],
            "{cohort}"
        );
    }
    let errors = panel("Error rate per cohort");
    assert_eq!(errors["stable"], vec![0.0]);
    assert!(errors["canary"][0] > 0.0, "{errors:?}");

    // Template variables: `label_values(selector, label)` as Grafana asks
    // Prometheus, then the variable's regex.
    let mut found = BTreeMap::new();
    for v in variables.iter().filter(|v| v["type"] == "query") {
        let query = substitute(v["query"]["query"].as_str().expect("query"), &values);
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("not label_values(...): {query}"));
        let (selector, label) = inner
            .rsplit_once(',')
            .expect("label_values(selector, label)");
        let data = prometheus
            .get(
                &format!("/api/v1/label/{}/values", label.trim()),
                &[("match[]", selector.trim())],
            )
            .await;
        let mut names: Vec<String> = data
            .as_array()
            .expect("label values")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        if let Some(re) = v["regex"].as_str().filter(|r| !r.is_empty()) {
            let re = regex::Regex::new(re.trim_matches('/')).expect("the variable's regex");
            names = names
                .iter()
                .filter_map(|n| Some(re.captures(n)?.get(1)?.as_str().to_string()))
                .collect();
        }
        found.insert(v["name"].as_str().unwrap_or_default().to_string(), names);
    }
    assert_eq!(found["route"], vec![ROUTE.to_string()]);
    assert_eq!(found["target"], vec![TARGET.to_string()], "{found:?}");

    // Prometheus loads the rule file and evaluates every rule.
    let rule_file = chart_file("prometheus-rules.yaml");
    let declared = std::fs::read_to_string(&rule_file)
        .expect("rules")
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    let rules = until("every rule to be evaluated", PATIENCE, || async {
        let data = prometheus.get("/api/v1/rules", &[]).await;
        let rules: Vec<Value> = data["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        rules
            .iter()
            .all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            })
            .then_some(rules)
    })
    .await;
    assert_eq!(rules.len(), declared, "{rules:?}");
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
        let expr = rule["query"].as_str().expect("a query");
        prometheus.query(expr, None).await;
    }

    // The proxy-error alert picks out the failing cohort; with no
    // controller scraped, nothing leads.
    let alerts = until("WeirProxyErrors for the canary", PATIENCE, || async {
        let data = prometheus.get("/api/v1/alerts", &[]).await;
        let alerts = data["alerts"].as_array()?.clone();
        alerts
            .iter()
            .any(|a| a["labels"]["alertname"] == "WeirProxyErrors")
            .then_some(alerts)
    })
    .await;
    let named = |name: &str| -> Vec<&Value> {
        alerts
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .collect()
    };
    let errors = named("WeirProxyErrors");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["labels"]["cohort"], "canary");
    assert_eq!(errors[0]["labels"]["route"], ROUTE);
    assert_eq!(errors[0]["labels"]["severity"], "warning");
    assert_eq!(named("WeirControllerNoLeader").len(), 1, "{alerts:?}");
    assert!(named("WeirCanaryAborted").is_empty(), "{alerts:?}");

    let out = std::process::Command::new(promtool())
        .args(["check", "rules"])
        .arg(&rule_file)
        .output()
        .expect("promtool runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains(&format!("SUCCESS: {declared} rules found")),
        "promtool check rules:\n{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pod of the cohort's Deployment, run by the node agent; returns once
/// the agent reports it ready.
async fn ready_pod(api: &Api<Pod>, name: &str, labels: &BTreeMap<String, String>) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.9.0"}]},
    }))
    .expect("a pod");
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create the pod");
    until(&format!("pod {name} ready"), PATIENCE, || async {
        let status = api.get(name).await.ok()?.status?;
        status
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_prometheus_gauge_finds_each_cohort_by_its_pods_and_leader_alerts_follow_the_controller()
 {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::on_cluster("prometheus-gauges").await;
    let ns = env.namespace.clone();

    // A controller process, scraped like the chart's ServiceMonitor does.
    let metrics_addr = common::free_addr();
    let cmd = controller_process::controller(&env, metrics_addr, &[]);
    let controller: Proc = common::spawn_command("weir controller", cmd);
    let scene = Scene::start(
        "gauges",
        &ns,
        vec![Job::new("weir-weir-controller-metrics", &[metrics_addr])],
    )
    .await;
    let prometheus = &scene.prometheus;

    // The cohorts' pods, labelled as the controller labels them.
    let selector: BTreeMap<String, String> = [("app".to_string(), TARGET.to_string())].into();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns);
    ready_pod(&pods, STABLE.pod, &stable_labels(&selector)).await;
    ready_pod(&pods, CANARY_SPEC.pod, &selector).await;

    let spec: CanarySpec = serde_json::from_value(json!({
        "targetRef": {"name": TARGET},
        "service": {"port": 8000},
        "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
        "analysis": {"metrics": [{
            "name": "gpu",
            "kind": "gauge",
            "source": {"prometheus": {
                "address": prometheus.url,
                "query": r#"avg(DCGM_FI_DEV_GPU_UTIL{pod=~"$pods", namespace="$namespace"})"#,
            }},
            "maxIncrease": "15%",
        }]},
    }))
    .expect("a Canary spec");
    let rollout = Rollout::new(CANARY, &spec).expect("a valid spec");
    let metric = &rollout.analysis.metrics[0];
    let gauges = KubeGauges {
        pods: pods.clone(),
        exporters: Api::all(env.client.clone()),
        namespace: ns.clone(),
        selectors: Cohorts {
            stable: vec![stable_labels(&selector)],
            canary: vec![selector.clone()],
        },
    };
    for (cohort, spec) in [(Cohort::Stable, STABLE), (Cohort::Canary, CANARY_SPEC)] {
        assert_eq!(
            gauges.read(metric, cohort).await,
            Some(spec.gpu_util),
            "{cohort:?}"
        );
    }

    // The leader alerts: quiet while the controller leads, pending once
    // it is gone.
    let state = |alerts: &Value, name: &str| -> Option<String> {
        alerts["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .find(|r| r["name"] == name)
            .and_then(|r| r["state"].as_str().map(str::to_string))
    };
    until(
        "the controller to lead, as Prometheus sees it",
        PATIENCE,
        || async {
            let leading = prometheus.scalar("sum(weir_controller_leader)", None).await == Some(1.0);
            let rules = prometheus.get("/api/v1/rules", &[]).await;
            (leading
                && state(&rules, "WeirControllerNoLeader").as_deref() == Some("inactive")
                && state(&rules, "WeirControllerTargetDown").as_deref() == Some("inactive"))
            .then_some(())
        },
    )
    .await;
    drop(controller);
    until(
        "the leader alerts once the controller is gone",
        PATIENCE,
        || async {
            let rules = prometheus.get("/api/v1/rules", &[]).await;
            (state(&rules, "WeirControllerNoLeader").as_deref() == Some("pending")
                && state(&rules, "WeirControllerTargetDown").as_deref() == Some("pending"))
            .then_some(())
        },
    )
    .await;
}

/// When each alert fires and when it must not (the leader's gauges only,
/// client errors left out, quiet routes ignored, `for:` honoured), with its
/// rendered annotations: `promtool test rules` on synthetic series.
#[test]
fn promtool_unit_tests_fire_each_alert_exactly_when_it_should() {
    let tests =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prometheus-rules.test.yaml");
    let out = std::process::Command::new(promtool())
        .args(["test", "rules"])
        .arg(&tests)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
