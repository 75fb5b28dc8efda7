//! `weir controller`: the Kubernetes controller as a process.
//!
//! Connects to the API server (retrying with backoff and jitter until
//! `--api-timeout`), campaigns for the leader Lease (unless
//! `--no-leader-election`), and while leading reconciles every Canary in
//! its scope. Serves `/metrics`, `/healthz` and `/readyz` on
//! `--metrics-addr`. SIGTERM or Ctrl-C: stop reconciling, release the
//! Lease so another replica takes over at once, exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::watch;
use weir_controller::kube::fleet::ProxyService;
use weir_controller::kube::leader::{LeaderElector, Timings};
use weir_controller::kube::metrics::{self, Metrics};
use weir_controller::kube::run::{self, Settings};
use weir_controller::notify::deliver::{Notifier, Policy, Source};

use crate::exit::Code;
use crate::signals::Shutdown;

/// Arguments of `weir controller`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Reconcile the Canaries of this namespace only (default: all).
    #[arg(long, short = 'n', value_name = "NS")]
    namespace: Option<String>,
    /// The proxies' Service, `NAMESPACE/NAME`: every ready endpoint is
    /// polled for observations (without it nothing is judged).
    #[arg(long, value_name = "NS/NAME")]
    proxy_service: Option<String>,
    /// The proxies' admin port (/v1/observations), unless their
    /// EndpointSlices name a port `admin`.
    #[arg(long, value_name = "PORT", default_value_t = 9090)]
    proxy_admin_port: u16,
    /// How often the proxies are polled.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration)]
    poll_interval: Duration,
    /// `/metrics`, `/healthz`, `/readyz` (read-only; 0.0.0.0 in a pod so
    /// the kubelet can probe it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9091")]
    metrics_addr: SocketAddr,
    /// Run without a leader Lease (one replica only).
    #[arg(long)]
    no_leader_election: bool,
    /// The Lease's namespace (default: $POD_NAMESPACE, else the
    /// kubeconfig's namespace).
    #[arg(long, value_name = "NS")]
    lease_namespace: Option<String>,
    /// The Lease all replicas share.
    #[arg(long, value_name = "NAME", default_value = weir_crds::names::LEASE)]
    lease_name: String,
    /// This replica's name (default: $POD_NAME, else host name and pid).
    #[arg(long, value_name = "NAME")]
    identity: Option<String>,
    /// How long others wait before taking an unrenewed Lease.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = duration)]
    lease_duration: Duration,
    /// How long a leader acts without renewing.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    renew_deadline: Duration,
    /// How often the Lease is renewed or looked at.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration)]
    retry_period: Duration,
    /// Give up when the API server has not answered for this long at start.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    api_timeout: Duration,
    /// Canaries reconciled at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// The Secret listing the notification webhooks (key `webhooks.yaml`),
    /// `NAMESPACE/NAME`; re-read as it changes. Without it no
    /// notifications are sent.
    #[arg(long, value_name = "NS/NAME")]
    notifications_secret: Option<String>,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 2s, 500ms, 1m)"))
}

fn proxy_service(value: &str, port: u16) -> Result<ProxyService> {
    let (namespace, name) = namespaced("--proxy-service", value, "weir-system/weir-proxy")?;
    Ok(ProxyService {
        namespace: namespace.into(),
        name: name.into(),
        admin_port: port,
    })
}

/// `NAMESPACE/NAME` of a flag, or an error naming the flag.
fn namespaced<'a>(flag: &str, value: &'a str, example: &str) -> Result<(&'a str, &'a str)> {
    match value.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
            Ok((namespace, name))
        }
        _ => bail!("{flag} {value:?}: write NAMESPACE/NAME, e.g. {example}"),
    }
}

fn identity(args: &Args) -> String {
    args.identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "weir".into());
            format!("{host}-{}", std::process::id())
        })
}

/// Runs `weir controller` until SIGTERM or Ctrl-C.
pub fn run(args: &Args) -> Result<Code> {
    let proxies = args
        .proxy_service
        .as_deref()
        .map(|v| proxy_service(v, args.proxy_admin_port))
        .transpose()?;
    let notifications = args
        .notifications_secret
        .as_deref()
        .map(|v| {
            namespaced(
                "--notifications-secret",
                v,
                "weir-system/weir-notifications",
            )
        })
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("weir-controller")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let config = kube::Config::infer().await.map_err(|e| {
            anyhow!(
                "no Kubernetes configuration ({e}): set KUBECONFIG, or run in a pod with a ServiceAccount"
            )
        })?;
        let url = config.cluster_url.clone();
        let default_namespace = config.default_namespace.clone();
        let client = kube::Client::try_from(config).context("cannot build a Kubernetes client")?;
        let info = weir_controller::kube::backoff::connect(&client, &url, args.api_timeout).await?;
        let identity = identity(args);
        eprintln!(
            "weir controller {identity}: connected to Kubernetes {}.{} at {url}",
            info.major, info.minor
        );
        let metrics = Arc::new(Metrics::default());
        let listener = metrics::bind(args.metrics_addr)
            .await
            .with_context(|| format!("cannot listen on --metrics-addr {}", args.metrics_addr))?;
        metrics.api_ok();
        tokio::spawn(metrics::serve(listener, Arc::clone(&metrics)));
        // The webhooks' URLs and headers stay in the Secret: only its
        // name is printed.
        let notifier = notifications.map(|(namespace, name)| {
            eprintln!("weir controller {identity}: notifications from Secret {namespace}/{name}");
            Notifier::start(
                Source::Secret {
                    client: client.clone(),
                    namespace: namespace.into(),
                    name: name.into(),
                },
                Policy::default(),
            )
        });
        let settings = Settings {
            namespace: args.namespace.clone(),
            identity: identity.clone(),
            proxies,
            poll_every: args.poll_interval,
            concurrency: args.concurrency,
            notifier,
        };
        // Caught from before the Lease is sought and Canaries reconciled:
        // a SIGTERM from then on stops the controller and gives the Lease
        // back; before, the default (exiting) leaves nothing behind.
        let mut shutdown = Shutdown::listen()?;
        let (lead_tx, leading) = watch::channel(args.no_leader_election);
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let elector = if args.no_leader_election {
            eprintln!("weir controller {identity}: leader election off; reconciling");
            None
        } else {
            let namespace = args
                .lease_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|s| !s.is_empty()))
                .unwrap_or(default_namespace);
            let timings = Timings {
                lease_duration: args.lease_duration,
                renew_deadline: args.renew_deadline,
                retry_period: args.retry_period,
            };
            let elector = LeaderElector::new(
                client.clone(),
                namespace.clone(),
                args.lease_name.clone(),
                identity.clone(),
                timings,
            )?;
            eprintln!(
                "weir controller {identity}: campaigning for Lease {namespace}/{}",
                args.lease_name
            );
            let stop = stop_rx.clone();
            Some(tokio::spawn(elector.run(lead_tx, stopped(stop))))
        };
        eprintln!(
            "weir controller {identity}: metrics on http://{}/metrics",
            args.metrics_addr
        );
        let controller = tokio::spawn(run::run(
            client,
            settings,
            Arc::clone(&metrics),
            leading,
            stopped(stop_rx),
        ));
        shutdown.recv().await;
        eprintln!("weir controller {identity}: stopping");
        let _ = stop_tx.send(true);
        let _ = controller.await;
        if let Some(e) = elector {
            // Releases the Lease so a successor leads at once.
            let _ = tokio::time::timeout(args.renew_deadline, e).await;
        }
        Ok(Code::Success)
    })
}
