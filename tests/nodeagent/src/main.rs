//! weir-node-agent: the kubelet of the test control plane.
//!
//! `tests/envtest/up --control-plane` runs a real kube-controller-manager
//! and kube-scheduler, but no container runtime can run in this sandbox, so
//! no kubelet can. This agent is the one stand-in: it registers Nodes with
//! the capacity the flags give (GPUs included), renews their Leases, and
//! runs each pod the scheduler binds to them as a `weir sim` process in a
//! network namespace of its own, with its own IP (see [`net`] for how that
//! network stays on this machine), reporting what a kubelet reports: pod IP,
//! phase, readiness from the pod's HTTP readiness probe, restarts. Deleted
//! pods get their preStop sleep, SIGTERM, the grace period and SIGKILL.
//! Pods reach the API server through a relay on the bridge address, with
//! `KUBECONFIG` and `POD_NAMESPACE` in their environment (see
//! [`apiserver`]).
//!
//! Needs root (network namespaces) and `ip` (iproute2). Stops on SIGTERM,
//! SIGINT, or when `--exit-with-pid`'s process is gone; in every case it
//! kills its pods' processes and removes every namespace and link it made,
//! the relay and the pods' kubeconfig.

mod agent;
mod apiserver;
mod net;
mod node;
mod plan;
mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio::sync::watch;

use crate::net::{Ip, Names, PodRange};
use crate::node::NodeSpec;

/// Runs pods bound to its Nodes as `weir sim` processes in network
/// namespaces.
#[derive(Debug, Parser)]
#[command(
    name = "weir-node-agent",
    after_help = "\
Pods: the first container's args go to `weir sim` as they are; env WEIR_SIM_<FLAG>=V \
adds --<flag> V; every env var with a literal value is in the process's environment, as \
a kubelet sets it (valueFrom entries are skipped); --listen <podIP>:<first containerPort, else 8000> and --name <pod> \
are added unless given. The image is reported, never pulled.

The API server, from a pod: every pod's environment has KUBECONFIG=<a kubeconfig the agent \
writes in --log-dir> and POD_NAMESPACE=<the pod's namespace> (the pod's own env vars of \
those names win). That kubeconfig is the agent's current context with the server at \
https://<bridge address>:<port>, a TCP relay the agent runs to the API server (443 when free, \
bound to the bridge address only), and tls-server-name the host the agent's kubeconfig names, \
so the serving certificate verifies through it. Pods cannot reach the host's 127.0.0.1; this is \
how they reach the API server, as a kubelet's pods reach the kubernetes Service."
)]
struct Args {
    /// A node to register: NAME[:RESOURCE=QUANTITY,...], e.g.
    /// gpu-0:cpu=8,memory=32Gi,nvidia.com/gpu=2 (repeat for more nodes;
    /// `pods` defaults to 110).
    #[arg(long = "node", value_name = "SPEC", required = true)]
    nodes: Vec<NodeSpec>,
    /// The `weir` binary that runs each pod (`weir sim`); default $WEIR_BIN.
    #[arg(long, value_name = "PATH")]
    weir_bin: Option<PathBuf>,
    /// The kubeconfig (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Where each pod's process writes its output (<namespace>_<pod>.log),
    /// and the agent the pods' kubeconfig (weir-node-agent-<pid>.kubeconfig,
    /// removed when it stops).
    #[arg(long, value_name = "DIR", default_value = "/tmp")]
    log_dir: PathBuf,
    /// Stop (and clean up) once this process is gone: a test passes its own
    /// pid so the agent never outlives it.
    #[arg(long, value_name = "PID")]
    exit_with_pid: Option<u32>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir-node-agent: error: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir-node-agent: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let Some(weir_bin) = args
        .weir_bin
        .or_else(|| std::env::var_os("WEIR_BIN").map(PathBuf::from))
    else {
        bail!("which weir binary runs the pods? pass --weir-bin or set WEIR_BIN");
    };
    if !weir_bin.is_file() {
        bail!(
            "no weir binary at {} (build it: cargo build -p weir)",
            weir_bin.display()
        );
    }
    std::fs::create_dir_all(&args.log_dir)
        .with_context(|| format!("creating {}", args.log_dir.display()))?;
    let (kubeconfig, client) = client(args.kubeconfig.as_deref()).await?;
    let api = apiserver::api_server(&kubeconfig)?;

    let ip = Ip;
    let removed = ip
        .sweep()
        .await
        .context("sweeping what earlier agents left (needs root and iproute2)")?;
    if !removed.is_empty() {
        eprintln!(
            "weir-node-agent: removed leftovers of dead agents: {}",
            removed.join(" ")
        );
    }

    let names = Names::new(std::process::id());
    let range = claim_range(&ip, &names, args.nodes.len()).await?;
    eprintln!(
        "weir-node-agent: pod network 10.{}.0.0/16 on bridge {} (no gateway, no NAT)",
        range.bridge_ip().octets()[1],
        names.bridge()
    );

    let pod_kubeconfig = args
        .log_dir
        .join(format!("weir-node-agent-{}.kubeconfig", std::process::id()));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(stop_on_signal_or_exit(stop_tx, args.exit_with_pid));
    let agent = agent::Agent::new(
        client,
        args.nodes,
        weir_bin,
        args.log_dir,
        pod_kubeconfig.clone(),
        names.clone(),
        range,
    );
    let result = serve(agent, &api, &pod_kubeconfig, stop_rx).await;
    let _ = std::fs::remove_file(&pod_kubeconfig);
    // The pods' namespaces are gone by now; the bridge goes last. A failed
    // run removes them too (the sweeper would, at the next start).
    let _ = ip.run(&["link", "del", &names.bridge()]).await;
    if let Ok(left) = ip.run(&["netns", "list"]).await {
        for netns in net::netns_names(&left) {
            if net::owner_pid(netns) == Some(std::process::id()) {
                ip.remove_pod(netns, "").await;
            }
        }
    }
    eprintln!(
        "weir-node-agent: stopped; removed bridge {}",
        names.bridge()
    );
    result
}

/// Runs the pods until `stop`, with the API server reachable from them: a
/// relay on the bridge address and a kubeconfig naming it at
/// `pod_kubeconfig` (the caller removes it). The relay stops on return.
async fn serve(
    agent: agent::Agent,
    api: &apiserver::ApiServer,
    pod_kubeconfig: &std::path::Path,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let bridge_ip = agent.bridge_ip();
    let relay = apiserver::Relay::start(bridge_ip, api.upstream().to_string())
        .await
        .with_context(|| format!("starting the API server relay on {bridge_ip}"))?;
    let file = serde_json::to_vec_pretty(&api.for_pods(relay.addr()))?;
    write_private(pod_kubeconfig, &file)
        .with_context(|| format!("writing the pods' kubeconfig {}", pod_kubeconfig.display()))?;
    eprintln!(
        "weir-node-agent: pods reach the API server ({}) at https://{}, KUBECONFIG={}",
        api.upstream(),
        relay.addr(),
        pod_kubeconfig.display()
    );
    Arc::new(agent).run(stop).await
}

/// Picks a free /16 and creates the bridge on it, holding a lock so two
/// agents starting together do not pick the same range.
async fn claim_range(ip: &Ip, names: &Names, nodes: usize) -> Result<PodRange> {
    let lock_path = std::env::temp_dir().join("weir-node-agent.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let routes = ip.run(&["-4", "route", "show"]).await?;
    let octet = net::free_range(&routes).ok_or(net::NetError::NoRange)?;
    let range = PodRange::new(octet, nodes);
    ip.add_bridge(&names.bridge(), range.bridge_ip())
        .await
        .context("creating the pod bridge (needs root)")?;
    drop(lock);
    Ok(range)
}

/// The agent's kubeconfig (the pods' is derived from it) and its client.
async fn client(
    kubeconfig: Option<&std::path::Path>,
) -> Result<(kube::config::Kubeconfig, kube::Client)> {
    // kube's TLS is rustls on aws-lc-rs; name the provider, as every kube
    // client of the workspace does.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let file = match kubeconfig {
        Some(path) => kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?,
        None => kube::config::Kubeconfig::read()
            .context("no kubeconfig (pass --kubeconfig or set KUBECONFIG)")?,
    };
    let config = kube::Config::from_custom_kubeconfig(
        file.clone(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .context("using the kubeconfig")?;
    let client = kube::Client::try_from(config).context("making the Kubernetes client")?;
    Ok((file, client))
}

/// Writes `bytes` to a new file at `path` readable by its owner only (it
/// holds the agent's credentials).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// Turns `stop` true on SIGTERM, SIGINT, or once `pid` is gone.
async fn stop_on_signal_or_exit(stop: watch::Sender<bool>, pid: Option<u32>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("weir-node-agent: cannot handle signals; stopping");
        let _ = stop.send(true);
        return;
    };
    let gone = async {
        let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
            return std::future::pending().await;
        };
        let pid = nix::unistd::Pid::from_raw(pid);
        while nix::sys::signal::kill(pid, None).is_ok() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = gone => eprintln!("weir-node-agent: the process it was started for is gone"),
    }
    let _ = stop.send(true);
}
