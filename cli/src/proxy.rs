//! `weir proxy`: the L7 proxy as a process. Its routes come from one of:
//!
//! - `--config FILE`: a YAML file, hot-reloaded on change and rewritten by
//!   `PUT /v1/routes/{name}/weights`;
//! - `--kube`: the Canaries of the Kubernetes cluster (their
//!   `status.traffic`, written by the weir controller) and the ready pods of
//!   their Services, watched through the API server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use weir_proxy::config::file::POLL_INTERVAL;
use weir_proxy::config::kube::Scope;
use weir_proxy::{ConfigSource, FileSource, KubeSource, Observations, Settings, Timeouts};

use crate::exit::Code;

/// Where a proxy in a cluster listens unless told otherwise: every
/// interface, since clients reach it through its Service.
const KUBE_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);
/// Its admin API: loopback, since it is not for clients (a probe or the
/// controller reaching it must be configured with `--admin`).
const KUBE_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);

/// Arguments of `weir proxy`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("routes").required(true).args(["config", "kube"])))]
pub struct Args {
    /// The YAML config file (listen, admin, routes with weighted cohorts).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve the Canaries of the Kubernetes cluster (default kubeconfig,
    /// or the pod's service account in a cluster) instead of a file.
    #[arg(long)]
    kube: bool,
    /// With --kube: only the Canaries of this namespace (default: all).
    #[arg(long, short = 'n', value_name = "NS", conflicts_with = "config")]
    namespace: Option<String>,
    /// With --kube: only Canaries matching this label selector
    /// (e.g. `team=llm,tier!=dev`).
    #[arg(long, short = 'l', value_name = "LABELS", conflicts_with = "config")]
    selector: Option<String>,
    /// The proxy listener; overrides the file's `listen` (with --kube,
    /// default 0.0.0.0:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The admin listener; overrides the file's `admin` (with --kube,
    /// default 127.0.0.1:9090). Keep it on loopback unless a network policy
    /// protects it: with a file config it changes traffic.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Worker threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// On SIGTERM, how long open streams may run before the proxy exits;
    /// overrides the file's `gracePeriod` (with --kube, default 30s). A pod's
    /// terminationGracePeriodSeconds must exceed it.
    #[arg(long, value_name = "DURATION", value_parser = crate::sim::duration)]
    grace_period: Option<Duration>,
}

/// Runs `weir proxy` until SIGTERM or Ctrl-C, then drains.
pub fn run(args: &Args) -> Result<Code> {
    let threads = args.threads.map_or_else(num_threads, usize::from);
    // One thread: a current-thread runtime, with no work-stealing
    // machinery between the I/O driver and the tasks it wakes.
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = builder
        .thread_name("weir-proxy")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (source, settings) = match &args.config {
            Some(path) => from_file(args, path)?,
            None => from_cluster(args).await?,
        };
        let instance = format!("{}-{}", std::process::id(), unix_millis());
        let observations = Arc::new(Observations::new(instance));
        let described = source.describe();
        let running = weir_proxy::start(settings, source, observations).await?;
        eprintln!(
            "weir proxy: serving {described} on {}; admin on {} (/metrics, /v1/observations, /v1/routes)",
            running.listen, running.admin
        );
        shutdown_signal().await?;
        eprintln!("weir proxy: draining {} open request(s)…", running.active());
        let drained = running.shutdown().await;
        if drained.abandoned > 0 {
            eprintln!(
                "weir proxy: grace period over, {} request(s) cut after {:.1}s",
                drained.abandoned,
                drained.took.as_secs_f64()
            );
        }
        Ok(Code::Success)
    })
}

/// The file source, polled for changes, and the file's settings under the
/// flags' overrides.
fn from_file(args: &Args, path: &Path) -> Result<(Arc<dyn ConfigSource>, Settings)> {
    let (source, config) = FileSource::open(path)?;
    let source = Arc::new(source);
    let watcher = Arc::clone(&source);
    tokio::spawn(async move { watcher.watch(POLL_INTERVAL).await });
    let settings = Settings {
        listen: args.listen.unwrap_or(config.listen),
        admin: args.admin.unwrap_or(config.admin),
        timeouts: Timeouts {
            grace: args.grace_period.unwrap_or(config.timeouts.grace),
            ..config.timeouts
        },
        draw_seed: None,
    };
    Ok((source, settings))
}

/// The Kubernetes source, watching, and the flags' settings.
async fn from_cluster(args: &Args) -> Result<(Arc<dyn ConfigSource>, Settings)> {
    let config = kube::Config::infer().await.map_err(|e| {
        anyhow!(
            "no Kubernetes cluster config found ({e}); weir proxy --kube reads $KUBECONFIG or ~/.kube/config, or runs in a pod with a service account; or give --config FILE to run without a cluster"
        )
    })?;
    let client = kube::Client::try_from(config).context("cannot create the Kubernetes client")?;
    let source = Arc::new(KubeSource::new(
        client,
        Scope {
            namespace: args.namespace.clone(),
            selector: args.selector.clone(),
        },
    ));
    let watcher = Arc::clone(&source);
    tokio::spawn(async move { watcher.run().await });
    let settings = Settings {
        listen: args.listen.unwrap_or(KUBE_LISTEN),
        admin: args.admin.unwrap_or(KUBE_ADMIN),
        timeouts: Timeouts {
            grace: args.grace_period.unwrap_or(Timeouts::DEFAULT_GRACE),
            ..Timeouts::default()
        },
        draw_seed: None,
    };
    Ok((source, settings))
}

fn num_threads() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
