//! `weir preflight [-n NS] [--context C] [--canary NAME] [--output json]`:
//! is this cluster ready for weir, and if not, what to change.
//!
//! The checks, in order: the API server answers (`api`) and its version is
//! within the supported skew (`version`); the Canary CRD is installed and
//! identical to this binary's (`crd`); the current identity holds the
//! controller's permissions (`rbac`); with `--canary`, the Canary is valid
//! (`canary`), its target Deployment exists with readiness probes
//! (`target`), and every Prometheus or DCGM source it names answers with
//! the metric (`metric/NAME`); the proxies are ready and answer (`proxy`);
//! there are GPU nodes (`gpu-nodes`) with room for the rollout's peak
//! (`gpu-capacity`).
//!
//! `gather` does all the reading and probing; every verdict is a pure
//! function of what it read (the sibling modules, table-tested without a
//! cluster). A check whose inputs depend on a failed one is SKIPped, so a
//! broken cluster shows one FAIL per cause. Exit 0 when nothing failed
//! (WARN does not fail), 1 otherwise.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use kube::CustomResourceExt as _;
use weir_controller::engine::spec::Mode;
use weir_crds::Canary;

use crate::cluster::{self, ApiCall, Cluster, Target, block_on, table};
use crate::exit::Code;
use crate::run::Output;

pub mod check;
mod crd;
mod gather;
mod gpu;
mod metrics;
mod proxy;
mod rbac;
mod target;
mod version;

use check::{Check, Status, names};

/// Arguments of `weir preflight`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Also check this Canary: its target Deployment, its metric sources
    /// and the GPUs its rollout needs.
    #[arg(long, value_name = "NAME")]
    pub canary: Option<String>,
    /// The proxies' Service, as given to `weir controller --proxy-service`.
    #[arg(long, value_name = "NS/NAME", default_value = "weir-system/weir-proxy")]
    pub proxy_service: String,
    /// The proxies' admin port, unless their EndpointSlices name a port
    /// `admin` (as `weir controller --proxy-admin-port`).
    #[arg(long, value_name = "PORT", default_value_t = 9090)]
    pub proxy_admin_port: u16,
    /// Longest wait for any one API call or probe.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration)]
    pub timeout: Duration,
    /// `text`: a table; `json`: one JSON object per check and line.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 5s, 500ms)"))
}

/// Runs every check, prints them, and exits 1 when one failed.
pub fn run(args: &Args) -> Result<Code> {
    let Some((ns, name)) = args
        .proxy_service
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
    else {
        bail!(
            "--proxy-service {:?}: write NAMESPACE/NAME, e.g. weir-system/weir-proxy",
            args.proxy_service
        );
    };
    let checks = block_on(async { Ok(checks(args, ns, name).await) })?;
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Text => out.write_all(render(&checks).as_bytes()),
        Output::Json => checks.iter().try_for_each(|c| {
            let line = serde_json::to_string(c).map_err(std::io::Error::other)?;
            writeln!(out, "{line}")
        }),
    }
    .context("writing the report to stdout")?;
    Ok(exit_code(&checks))
}

/// 1 when any check failed, else 0.
pub fn exit_code(checks: &[Check]) -> Code {
    if checks.iter().any(|c| c.status == Status::Fail) {
        Code::Error
    } else {
        Code::Success
    }
}

/// The table: one row per check, its fix on the next line when it has one.
pub fn render(checks: &[Check]) -> String {
    let mut rows = vec![vec!["CHECK".to_string(), "STATUS".into(), "DETAIL".into()]];
    for c in checks {
        rows.push(vec![
            c.check.clone(),
            c.status.as_str().into(),
            c.detail.clone(),
        ]);
        if !c.fix.is_empty() {
            rows.push(vec![
                String::new(),
                String::new(),
                format!("fix: {}", c.fix),
            ]);
        }
    }
    let mut text = table(&rows);
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    text.push_str(&format!(
        "\n{} passed, {} warnings, {} failed, {} skipped\n",
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Skip)
    ));
    text
}

/// The checks after `api`, skipped for `why`.
fn skip_rest(out: &mut Vec<Check>, why: &str, canary: bool) {
    for name in [names::VERSION, names::CRD, names::RBAC] {
        out.push(Check::skip(name, why));
    }
    if canary {
        for name in [names::CANARY, names::TARGET] {
            out.push(Check::skip(name, why));
        }
    }
    for name in [names::PROXY, names::GPU_NODES, names::GPU_CAPACITY] {
        out.push(Check::skip(name, why));
    }
}

/// Runs every check against the cluster `args` names and returns them in
/// order (what [`run`] prints); the proxies are the Service
/// `proxy_ns/proxy_name`. Never fails: a check that cannot run is a FAIL
/// or SKIP in the list.
pub async fn checks(args: &Args, proxy_ns: &str, proxy_name: &str) -> Vec<Check> {
    let mut out = Vec::new();
    let unreachable = "the API server cannot be reached (see api)";
    let cluster = match connect(args).await {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::fail(
                names::API,
                format!("{e:#}"),
                "point KUBECONFIG (or --context) at the cluster: kubectl cluster-info must answer",
            ));
            skip_rest(&mut out, unreachable, args.canary.is_some());
            return out;
        }
    };
    match cluster.client.apiserver_version().await {
        Err(e) => {
            let call = ApiCall {
                verb: "get",
                resource: "/version",
                name: None,
                namespace: None,
            };
            out.push(Check::fail(
                names::API,
                format!("{:#}", cluster.explain(e, call)),
                format!(
                    "check that the API server at {} runs and that the kubeconfig's server, \
                     certificates and credentials are current (kubectl cluster-info)",
                    cluster.server()
                ),
            ));
            skip_rest(&mut out, unreachable, args.canary.is_some());
            return out;
        }
        Ok(info) => {
            out.push(Check::pass(
                names::API,
                format!("the API server at {} answers", cluster.server()),
            ));
            out.push(version::check(&info));
        }
    }

    let ours = Canary::crd();
    let installed = gather::crd(&cluster, ours.metadata.name.as_deref().unwrap_or_default()).await;
    let crd_missing = matches!(installed, Ok(None));
    out.push(crd::check(&installed, &ours));

    let identity = gather::identity(&cluster).await;
    // The controller runs (and holds its Lease) beside the proxies.
    let answers = gather::access(&cluster, proxy_ns).await;
    out.push(rbac::check(
        &answers,
        identity.as_deref(),
        &cluster.namespace,
    ));

    let http = reqwest::Client::builder()
        .timeout(args.timeout)
        .build()
        .unwrap_or_default();
    let plan = match &args.canary {
        None => {
            for name in [names::CANARY, names::TARGET] {
                out.push(Check::skip(name, "pass --canary NAME to check a Canary"));
            }
            None
        }
        Some(_) if crd_missing => {
            for name in [names::CANARY, names::TARGET] {
                out.push(Check::skip(
                    name,
                    "the Canary CRD is not installed (see crd)",
                ));
            }
            None
        }
        Some(name) => canary_checks(&cluster, name, &http, args.timeout, &mut out).await,
    };

    let proxies =
        gather::proxies(&cluster, proxy_ns, proxy_name, args.proxy_admin_port, &http).await;
    out.push(proxy::check(&proxies));

    let nodes = gather::gpus(&cluster).await;
    let wants_gpus = plan
        .as_ref()
        .and_then(|p| p.as_ref().ok())
        .map(|p| p.gpus_per_pod > 0);
    out.push(gpu::nodes(&nodes, wants_gpus));
    let no_nodes = nodes.as_ref().is_ok_and(|n| n.iter().all(|n| !n.usable));
    out.push(match plan {
        None => Check::skip(
            names::GPU_CAPACITY,
            "pass --canary NAME to check its rollout's needs",
        ),
        Some(Err(why)) => Check::skip(names::GPU_CAPACITY, why),
        Some(Ok(plan)) if no_nodes && plan.gpus_per_pod > 0 => {
            Check::skip(names::GPU_CAPACITY, "no usable GPU nodes (see gpu-nodes)")
        }
        Some(Ok(plan)) => gpu::capacity(&plan, &nodes),
    });
    out
}

/// The client, with `--timeout` on connecting and reading.
async fn connect(args: &Args) -> Result<Cluster> {
    let mut config = cluster::config(&args.target).await?;
    config.connect_timeout = Some(args.timeout);
    config.read_timeout = Some(args.timeout);
    config.write_timeout = Some(args.timeout);
    Cluster::new(config, &args.target)
}

/// The `canary`, `target` and `metric/*` checks; the GPU plan of the
/// rollout, or why there is none.
async fn canary_checks(
    cluster: &Cluster,
    name: &str,
    http: &reqwest::Client,
    timeout: Duration,
    out: &mut Vec<Check>,
) -> Option<Result<gpu::Plan, String>> {
    let read = gather::canary(cluster, name).await;
    let (verdict, rollout) = target::canary(&read, name, &cluster.namespace);
    out.push(verdict);
    let (Some(rollout), Ok(Some(canary))) = (rollout, read) else {
        out.push(Check::skip(
            names::TARGET,
            "no Canary to read it from (see canary)",
        ));
        return Some(Err("no Canary to plan for (see canary)".into()));
    };
    let Mode::Kubernetes {
        target: target_name,
        port,
        ..
    } = &rollout.mode
    else {
        out.push(Check::skip(
            names::TARGET,
            "not a Kubernetes-mode Canary (see canary)",
        ));
        return Some(Err("not a Kubernetes-mode Canary (see canary)".into()));
    };
    let deployment = gather::deployment(cluster, target_name).await;
    out.push(target::target(
        &deployment,
        target_name,
        &cluster.namespace,
        *port,
    ));
    let found: Option<&Deployment> = deployment.as_ref().ok().and_then(Option::as_ref);
    let pods = gather::serving_pods(cluster, found)
        .await
        .unwrap_or_default();
    for probe in gather::metrics(cluster, &canary, &pods, http, timeout).await {
        out.push(metrics::check(&probe));
    }
    let Some(target) = found else {
        return Some(Err("no target Deployment (see target)".into()));
    };
    let (gpus_per_pod, target_replicas) = pods_of(target);
    let status = canary.status.clone().unwrap_or_default();
    let total = status.target_replicas.unwrap_or(target_replicas);
    let held = status
        .replicas
        .map_or(target_replicas, |r| r.stable + r.canary);
    let mut graph = Vec::new();
    if let Some(g) = &rollout.graph {
        let mut missing = Vec::new();
        for part in &g.parts {
            let read;
            let found = if part.serves {
                Some(target)
            } else {
                read = gather::deployment(cluster, &part.name).await;
                let check = target::target(&read, &part.name, &cluster.namespace, *port);
                if check.status != Status::Pass {
                    missing.push(check);
                }
                read.as_ref().ok().and_then(Option::as_ref)
            };
            let Some(d) = found else { continue };
            // The user's count and the pods both cohorts hold, as status
            // recorded them (the target's in the Canary's own fields).
            let (gpus_per_pod, now) = pods_of(d);
            let recorded = status.components.iter().find(|c| c.name == part.name);
            let (total, held) = match (part.serves, recorded) {
                (_, Some(c)) => (c.target_replicas, c.replicas.stable + c.replicas.canary),
                (true, None) => (total, held),
                (false, None) => (now, now),
            };
            graph.push(gpu::Component {
                name: part.name.clone(),
                total,
                held,
                gpus_per_pod,
            });
        }
        out.push(target::graph(g, missing));
    }
    let mut rollout = rollout;
    let (total, graph_budget) = gpu::in_units(&mut rollout, &graph, total);
    Some(Ok(gpu::Plan {
        phases: gpu::phases(&rollout, total, status.replicas.is_some()),
        held,
        gpus_per_pod,
        graph,
        graph_budget,
        total,
    }))
}

/// A Deployment's GPUs per pod and replicas (1 when unset).
fn pods_of(d: &Deployment) -> (u32, u32) {
    let spec = d.spec.as_ref();
    let gpus_per_pod = spec.map_or(0, |s| {
        weir_controller::kube::pods::template_gpus(&s.template)
    });
    let replicas = spec
        .and_then(|s| s.replicas)
        .and_then(|r| u32::try_from(r).ok())
        .unwrap_or(1);
    (gpus_per_pod, replicas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_fix_under_its_check_and_fails_only_on_fail() {
        let checks = vec![
            Check::pass(names::API, "the API server at https://k answers"),
            Check::fail(
                names::CRD,
                "the Canary CRD is not installed",
                "weir crds | kubectl apply -f -",
            ),
            Check::warn(names::PROXY, "1 not ready", "kubectl get pods"),
            Check::skip(names::TARGET, "pass --canary NAME"),
        ];
        let text = render(&checks);
        assert!(text.starts_with("CHECK"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[2].starts_with("crd ") && lines[2].contains("FAIL"),
            "{text}"
        );
        assert!(
            lines[3].trim_start().starts_with("fix: weir crds"),
            "{text}"
        );
        assert!(
            text.contains("1 passed, 1 warnings, 1 failed, 1 skipped"),
            "{text}"
        );
        assert_eq!(exit_code(&checks), Code::Error);
        assert_eq!(exit_code(&checks[2..]), Code::Success);
        let json = serde_json::to_value(&checks[1]).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"check": "crd", "status": "FAIL",
                "detail": "the Canary CRD is not installed", "fix": "weir crds | kubectl apply -f -"})
        );
    }
}
