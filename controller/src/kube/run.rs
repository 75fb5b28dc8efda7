//! The controller process: watches, the reconcile loop, the proxy fleet
//! poller and leadership, wired together.
//!
//! Only the leader reconciles. Every replica polls the proxies (read-only,
//! so a new leader starts with warm observations) and serves its metrics;
//! when leadership is lost the reconcile loop is dropped at once, mid-call
//! if need be: every reconcile is level-triggered from status, so a cut
//! one is finished by whoever leads next.
//!
//! Watches: Canaries (the reconciled kind) and Deployments, mapped to the
//! Canary that owns them (the stable copy) or names them as its target. A
//! target's readiness or template change therefore reconciles its Canary
//! at once; analysis cadence comes from the engine's `requeue_after`.
//! The watchers retry with backoff and jitter when the API server goes
//! away, and re-list when it returns.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use weir_crds::Canary;

use super::fleet::{Fleet, ProxyService};
use super::leader::LeaderElector;
use super::metrics::Metrics;
use super::reconcile::{self, Context};
use crate::notify::deliver::Notifier;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch one namespace (None: all).
    pub namespace: Option<String>,
    /// This replica's name (Events, the lease).
    pub identity: String,
    /// Where the proxies are (None: no observations; nothing is judged).
    pub proxies: Option<ProxyService>,
    /// How often the proxies are polled.
    pub poll_every: Duration,
    /// Canaries reconciled at once.
    pub concurrency: u16,
    /// Where rollout notifications go (None: nowhere).
    pub notifier: Option<Notifier>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespace: None,
            identity: "weir-controller".into(),
            proxies: None,
            poll_every: Duration::from_secs(2),
            concurrency: 8,
            notifier: None,
        }
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until `shutdown` resolves, reconciling while
/// `leading` says so.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    mut leading: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let fleet = settings
        .proxies
        .as_ref()
        .map(|_| Arc::new(Fleet::default()));
    // The poller runs inside this future (not a task of its own), so
    // whatever stops the controller stops it too.
    let poll = {
        let (fleet, proxies, client) = (fleet.clone(), settings.proxies.clone(), client.clone());
        async move {
            match (fleet, proxies) {
                (Some(f), Some(p)) => f.run(client, p, settings.poll_every).await,
                _ => std::future::pending().await,
            }
        }
    };
    let mut ctx = Context::new(
        client.clone(),
        Arc::clone(&metrics),
        fleet,
        settings.identity.clone(),
    );
    if let Some(notifier) = settings.notifier.clone() {
        ctx = ctx.with_notifier(notifier);
    }
    let ctx = Arc::new(ctx);
    let lead = async {
        loop {
            // Wait to lead.
            while !*leading.borrow_and_update() {
                metrics.set_leader(false);
                if leading.changed().await.is_err() {
                    return;
                }
            }
            metrics.set_leader(true);
            tracing::info!(identity = %settings.identity, "leading: reconciling Canaries");
            let reconciling = reconcile_all(&client, &settings, Arc::clone(&ctx));
            let lost = async {
                loop {
                    if leading.changed().await.is_err() || !*leading.borrow() {
                        return;
                    }
                }
            };
            tokio::select! {
                () = lost => {
                    metrics.set_leader(false);
                    tracing::warn!(identity = %settings.identity, "leadership lost: reconciling stopped");
                }
                () = reconciling => {
                    tracing::error!("the reconcile loop ended; restarting it");
                }
            }
        }
    };
    // `/readyz` says whether the API server answers; a standby replica
    // makes no other calls that would tell.
    let heartbeat = async {
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tick.tick().await;
            if client.apiserver_version().await.is_ok() {
                metrics.api_ok();
            }
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = lead => {}
        () = poll => {}
        () = heartbeat => {}
    }
    metrics.set_leader(false);
}

/// How often a replica checks that the API server answers.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// The kube-runtime controller over Canaries, until its streams end.
async fn reconcile_all(client: &Client, settings: &Settings, ctx: Arc<Context>) {
    let ns = settings.namespace.as_deref();
    let canaries: Api<Canary> = scoped(client, ns);
    let deployments: Api<Deployment> = scoped(client, ns);
    let controller = Controller::new(canaries, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(deployments, watcher::Config::default(), move |d| {
            let namespace = d.namespace().unwrap_or_default();
            let owner = d
                .owner_references()
                .iter()
                .find(|o| o.kind == "Canary" && o.api_version.starts_with(weir_crds::GROUP))
                .map(|o| o.name.clone());
            let mut refs: Vec<ObjectRef<Canary>> = owner
                .into_iter()
                .map(|name| ObjectRef::new(&name).within(&namespace))
                .collect();
            let name = d.name_any();
            refs.extend(store.state().iter().filter_map(|c| {
                let component = c
                    .spec
                    .graph
                    .as_ref()
                    .is_some_and(|g| g.components.iter().any(|p| p.name == name));
                let targets = c.namespace().as_deref() == Some(namespace.as_str())
                    && (component || c.spec.target_ref.as_ref().is_some_and(|t| t.name == name));
                targets.then(|| ObjectRef::from_obj(c.as_ref()))
            }));
            refs
        })
        .with_config(Config::default().concurrency(settings.concurrency))
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

/// A controller running in a task of its own, for tests and embedding:
/// dropping or [`Handle::kill`]ing it stops it at once, as a crash would.
#[derive(Debug)]
pub struct Handle {
    task: tokio::task::JoinHandle<()>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
}

impl Handle {
    /// Starts a controller that leads as `leading` says.
    pub fn spawn(client: Client, settings: Settings, leading: watch::Receiver<bool>) -> Handle {
        let metrics = Arc::new(Metrics::default());
        let m = Arc::clone(&metrics);
        let task = tokio::spawn(async move {
            run(client, settings, m, leading, std::future::pending()).await;
        });
        Handle { task, metrics }
    }

    /// Starts a controller that leads while `elector` holds the Lease; the
    /// two run in one task, so [`Handle::kill`] stops both without
    /// releasing the Lease, as a crashed pod would.
    pub fn spawn_elected(client: Client, settings: Settings, elector: LeaderElector) -> Handle {
        let metrics = Arc::new(Metrics::default());
        let m = Arc::clone(&metrics);
        let task = tokio::spawn(async move {
            let (tx, rx) = watch::channel(false);
            tokio::select! {
                () = elector.run(tx, std::future::pending()) => {}
                () = run(client, settings, m, rx, std::future::pending()) => {}
            }
        });
        Handle { task, metrics }
    }

    /// Stops it abruptly, mid-reconcile if need be (a crash).
    pub fn kill(self) {
        self.task.abort();
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
