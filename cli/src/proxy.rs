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
use weir_proxy::admin::exposure_warning;
use weir_proxy::config::file::POLL_INTERVAL;
use weir_proxy::config::kube::Scope;
use weir_proxy::tls::{Certificate, TlsFiles};
use weir_proxy::{ConfigSource, FileSource, KubeSource, Observations, Settings, Timeouts};

use crate::exit::Code;
use crate::signals::Shutdown;

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
    /// Most client connections served at once; past it new connections
    /// are closed as soon as they are accepted (default: half the
    /// open-file limit, which the proxy raises to its hard maximum).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// Terminate TLS on the listener with this PEM certificate chain (leaf
    /// first; `tls.crt` of a Kubernetes TLS Secret). Reloaded when it
    /// changes; a bad renewal keeps the last good certificate.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (`tls.key`).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Verify `https://` upstreams against the CA certificates in this PEM
    /// file (`ca.crt` of a Kubernetes Secret) instead of the system's trust
    /// store. Read at startup.
    #[arg(long, value_name = "FILE")]
    upstream_ca: Option<PathBuf>,
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
        let (source, mut settings) = match &args.config {
            Some(path) => from_file(args, path)?,
            None => from_cluster(args).await?,
        };
        settings.tls = tls(args)?;
        settings.upstream_ca.clone_from(&args.upstream_ca);
        let budget = open_file_budget();
        let max_connections = args.max_connections.map_or(budget, |n| n as usize);
        settings.max_connections = Some(max_connections);
        let instance = format!("{}-{}", std::process::id(), unix_millis());
        let observations = Arc::new(Observations::new(instance));
        let described = source.describe();
        // Caught from before the proxy serves: on a multi-thread runtime it
        // answers requests while this task is still here, and a SIGTERM then
        // would kill the process instead of draining it. (Before this,
        // nothing needs draining and the default, exiting, is right.)
        let mut shutdown = Shutdown::listen()?;
        let running = weir_proxy::start(settings, source, observations).await?;
        let scheme = if args.tls_cert.is_some() { "https" } else { "http" };
        eprintln!(
            "weir proxy: serving {described} on {}; admin on {} (/metrics, /v1/observations, /v1/routes); {scheme}; up to {max_connections} client connections",
            running.listen, running.admin
        );
        if let Some(warning) = exposure_warning(running.admin, args.config.is_some()) {
            eprintln!("weir proxy: warning: {warning}");
        }
        shutdown.recv().await;
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
        max_connections: None,
        tls: None,
        upstream_ca: None,
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
        max_connections: None,
        tls: None,
        upstream_ca: None,
    };
    Ok((source, settings))
}

/// The listener's certificate from `--tls-cert`/`--tls-key`, watched for
/// renewals, or `None` without them.
fn tls(args: &Args) -> Result<Option<Arc<Certificate>>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let certificate = Certificate::open(TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
    })?;
    let certificate = Arc::new(certificate);
    tokio::spawn(Arc::clone(&certificate).watch(POLL_INTERVAL));
    Ok(Some(certificate))
}

/// Descriptors kept for what is not a client stream: listeners, the admin
/// API, idle pooled upstream connections, the config file, logs.
const RESERVED_FDS: u64 = 256;

/// Raises the open-file limit to its hard maximum, as nginx's
/// `worker_rlimit_nofile` and HAProxy do (a busy proxy needs thousands of
/// descriptors; the soft default is often 1024), and returns the default
/// connection cap for it.
fn open_file_budget() -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return connection_cap(1024);
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    connection_cap(limit)
}

/// Client connections allowed with `nofile` descriptors: each stream holds
/// two (the client's and its upstream's), after [`RESERVED_FDS`].
fn connection_cap(nofile: u64) -> usize {
    let cap = nofile.saturating_sub(RESERVED_FDS) / 2;
    usize::try_from(cap).unwrap_or(usize::MAX).max(16)
}

fn num_threads() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_two_descriptors_per_stream_and_a_reserve() {
        assert_eq!(connection_cap(1024), 384);
        assert_eq!(connection_cap(1_048_576), 524_160);
        assert_eq!(connection_cap(100), 16, "never below a usable floor");
        assert_eq!(connection_cap(u64::MAX), ((u64::MAX - 256) / 2) as usize);
    }
}
