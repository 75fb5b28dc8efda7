//! One reconcile of one Canary: read the cluster, call the engine, write
//! status, then bring the owned objects to what status says.
//!
//! # Why the order is status first
//!
//! Everything the engine remembers is in `status` (DESIGN.md), and the
//! world is brought to it *level-triggered*: the replicas each cohort
//! should have are `status.replicas`, the version stable should run is
//! `status.canaryRevision` while `Promoting`, the traffic is
//! `status.traffic`. So status is written first and the rest converges
//! from it, every reconcile. A controller killed between the two finds
//! the new status on restart and converges the rest; it never repeats a
//! transition, because the transition is already recorded. Only Events are
//! written after status and may be lost to such a kill (at most once,
//! never twice).
//!
//! The engine gates traffic on readiness (a weight moves only once the
//! canary's replicas are ready; a cohort scales down only once every proxy
//! serves the table without it and its streams drained), so writing the
//! traffic before scaling never routes to capacity that is not there.
//!
//! # Reads
//!
//! The Canary is read fresh (not from the watch cache): a reconcile must
//! see the status and finalizers the previous one wrote, or it would take
//! the same transition twice. The target and the stable copy are read
//! fresh too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Client, ResourceExt};
use weir_crds::names::{self, FINALIZER};
use weir_crds::{Canary, CanaryStatus, Cohort, CohortReplicas, Phase};

use super::builders::{self, Owner};
use super::commands;
use super::events;
use super::fleet::Fleet;
use super::gauges::KubeGauges;
use super::metrics::Metrics;
use crate::engine::spec::{Mode, Strategy};
use crate::engine::{self, Observed, Outcome, Plan, Rollout, reasons};
use crate::evidence::{Cohorts, Collector};

/// The field manager of every write.
pub const MANAGER: &str = "weir-controller";

/// How often a Canary is looked at when nothing asks sooner (a settled
/// Canary still converges its owned objects and notices a lost watch).
const RESYNC: Duration = Duration::from_secs(300);
/// Promoted templates kept per Canary for `weir undo`.
const REVISION_HISTORY: usize = 10;
/// Retry delay when the target Deployment is missing or the spec invalid
/// (a watch event on either also triggers a reconcile at once).
const RETRY_INVALID: Duration = Duration::from_secs(60);

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a call.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The Canary or its target cannot be used as written.
    #[error("{0}")]
    Invalid(String),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Api { what, source }
}

/// One Canary's collector, locked across a reconcile's awaits.
type SharedCollector = Arc<tokio::sync::Mutex<Collector>>;

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The controller's metrics.
    pub metrics: Arc<Metrics>,
    /// The proxies' observations (None: no proxy fleet configured; the
    /// table in status is then taken as applied and nothing is judged).
    pub fleet: Option<Arc<Fleet>>,
    /// This replica's name, on its Events.
    pub identity: String,
    /// Per-Canary evidence, by namespace/name.
    collectors: Mutex<HashMap<(String, String), SharedCollector>>,
    /// Consecutive failures per Canary, for the retry backoff.
    failures: Mutex<HashMap<(String, String), u32>>,
    /// Canaries (uid, generation) whose Services were applied by this
    /// process: they are applied once per spec change, not per reconcile.
    services_applied: Mutex<HashSet<(String, i64)>>,
    /// Per Canary uid, the stable revision this process last kept as the
    /// newest ControllerRevision (a revision promoted again is renumbered).
    revisions_recorded: Mutex<HashMap<String, String>>,
}

impl Context {
    /// A context for reconciles by replica `identity`.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        fleet: Option<Arc<Fleet>>,
        identity: String,
    ) -> Self {
        Context {
            client,
            metrics,
            fleet,
            identity,
            collectors: Mutex::default(),
            failures: Mutex::default(),
            services_applied: Mutex::default(),
            revisions_recorded: Mutex::default(),
        }
    }

    fn collector(&self, key: &(String, String)) -> SharedCollector {
        let mut all = self
            .collectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(all.entry(key.clone()).or_insert_with(|| {
            Arc::new(tokio::sync::Mutex::new(Collector::new(Some(names::route(
                &key.0, &key.1,
            )))))
        }))
    }

    fn forget(&self, key: &(String, String)) {
        self.collectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        self.metrics.forget(&key.0, &key.1);
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("identity", &self.identity)
            .field("fleet", &self.fleet.is_some())
            .finish_non_exhaustive()
    }
}

fn key_of(canary: &Canary) -> (String, String) {
    (canary.namespace().unwrap_or_default(), canary.name_any())
}

/// The reconcile the controller runs: the finalizer first, then
/// [`apply`] or [`cleanup`].
///
/// # Errors
/// [`Error`]; the controller retries with backoff ([`error_policy`]).
pub async fn reconcile(canary: Arc<Canary>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = key_of(&canary);
    let started = Instant::now();
    let api: Api<Canary> = Api::namespaced(ctx.client.clone(), &key.0);
    // Read fresh, not from the watch cache: a reconcile must see the status
    // (and finalizers) the previous one wrote, or it would take the same
    // transition twice (or fail adding a finalizer that is there).
    let fresh = match api.get_opt(&key.1).await {
        Ok(Some(c)) => Arc::new(c),
        Ok(None) => return Ok(Action::await_change()),
        Err(e) => {
            ctx.metrics
                .reconciled(&key.0, &key.1, started.elapsed(), true);
            return Err(api_error(format!("get canary {}", key.1))(e));
        }
    };
    drop(canary);
    let result = finalizer(&api, FINALIZER, fresh, |event| async {
        match event {
            FinalizerEvent::Apply(c) => apply(&c, &ctx).await,
            FinalizerEvent::Cleanup(c) => cleanup(&c, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.metrics
        .reconciled(&key.0, &key.1, started.elapsed(), result.is_err());
    if result.is_ok() {
        ctx.metrics.api_ok();
        ctx.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    }
    result
}

/// After a failed reconcile: retry with exponential backoff per Canary
/// (about 1 s, 2 s, 4 s … capped at 2 min, half of each delay jittered so
/// many Canaries failing together do not retry in lockstep), so a broken
/// Canary does not spin while a brief API hiccup is retried soon.
pub fn error_policy(canary: Arc<Canary>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = key_of(&canary);
    let n = {
        let mut failures = ctx.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let n = failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let backoff = super::backoff::Backoff {
        base: Duration::from_secs(1),
        factor: 2,
        cap: Duration::from_secs(120),
    };
    let attempt = n - 1;
    let delay = backoff.ceiling(attempt) / 2 + backoff.delay(attempt, rand::random::<f64>()) / 2;
    tracing::warn!(namespace = %key.0, name = %key.1, error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// What a reconcile read of the world.
struct World {
    canary: Canary,
    rollout: Rollout,
    target: Deployment,
    stable: Option<Deployment>,
    selector: BTreeMap<String, String>,
    target_name: String,
}

/// A Canary that exists (not being deleted), as just read.
async fn apply(canary: &Canary, ctx: &Context) -> Result<Action, Error> {
    let (namespace, name) = key_of(canary);
    // `weir restore` is putting it back: its status or the objects it owns
    // may not be there yet, and acting now would adopt the target anew.
    // Removing the annotation is a change, which reconciles it at once.
    if canary
        .annotations()
        .contains_key(weir_crds::annotations::RESTORING)
    {
        tracing::info!(%namespace, %name, "being restored (weir restore); left alone until done");
        return Ok(Action::await_change());
    }
    let canaries: Api<Canary> = Api::namespaced(ctx.client.clone(), &namespace);
    let world = match read_world(ctx, canary.clone()).await? {
        Ok(world) => world,
        Err((canary, reason, problem)) => {
            refuse(ctx, &canary, reason, &problem).await?;
            return Ok(Action::requeue(RETRY_INVALID));
        }
    };
    let now = Timestamp::now();
    let status = world.canary.status.clone().unwrap_or_default();
    let observed = observe(ctx, &world, &status, now).await;
    let plan = engine::plan(&world.rollout, &status, &observed, now);
    let mut new_status = plan.status.clone();
    if !world.rollout.is_local() {
        new_status.target_replicas = Some(observed.target_replicas);
    }
    if new_status != status {
        write_status(&canaries, &name, &new_status).await?;
    }
    converge(ctx, &world, &new_status, &observed).await?;
    publish(ctx, &world.canary, &plan).await;
    ctx.metrics.canary(
        &namespace,
        &name,
        new_status.phase,
        new_status.canary_weight,
    );
    Ok(match plan.requeue_after {
        Some(d) => Action::requeue(d),
        None => Action::requeue(RESYNC),
    })
}

/// Reads the target and the stable copy; `Err` (inner) for a Canary that
/// cannot run as written, with a condition reason and the problem.
async fn read_world(
    ctx: &Context,
    canary: Canary,
) -> Result<Result<World, (Canary, &'static str, String)>, Error> {
    let (namespace, name) = key_of(&canary);
    let rollout = match Rollout::new(&name, &canary.spec) {
        Ok(r) => r,
        Err(e) => return Ok(Err((canary, reasons::INVALID_SPEC, e.to_string()))),
    };
    let Mode::Kubernetes { target, .. } = &rollout.mode else {
        return Ok(Err((
            canary,
            reasons::INVALID_SPEC,
            "spec.backends: the controller rolls out a Deployment: give spec.targetRef (backends are for weir run)"
                .into(),
        )));
    };
    let target_name = target.clone();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(target) = deployments
        .get_opt(&target_name)
        .await
        .map_err(api_error(format!("get target deployment {target_name}")))?
    else {
        return Ok(Err((
            canary,
            reasons::TARGET_MISSING,
            format!(
                "spec.targetRef.name: Deployment {target_name} not found in namespace {namespace}; create it or fix the name"
            ),
        )));
    };
    let selector = match builders::target_selector(&target) {
        Ok(s) => s,
        Err(e) => {
            return Ok(Err((
                canary,
                reasons::INVALID_SPEC,
                format!("Deployment {target_name}: {e}"),
            )));
        }
    };
    let stable_name = names::stable_deployment(&target_name);
    let stable = deployments
        .get_opt(&stable_name)
        .await
        .map_err(api_error(format!("get {stable_name}")))?;
    Ok(Ok(World {
        canary,
        rollout,
        target,
        stable,
        selector,
        target_name,
    }))
}

/// Says in status why the Canary cannot run, once per problem; traffic is
/// left exactly as it was (the proxies keep the last table).
async fn refuse(ctx: &Context, canary: &Canary, reason: &str, problem: &str) -> Result<(), Error> {
    let (namespace, name) = key_of(canary);
    let mut status = canary.status.clone().unwrap_or_default();
    let before = status.clone();
    status.observed_generation = canary.metadata.generation;
    status.message = format!("cannot run: {problem}");
    let now = Time(Timestamp::now());
    match status.conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "False" && c.message == problem => {}
        Some(c) => {
            if c.status != "False" {
                c.last_transition_time = now;
            }
            c.status = "False".into();
            c.reason = reason.into();
            c.message = problem.into();
            c.observed_generation = canary.metadata.generation;
        }
        None => status.conditions.push(Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: reason.into(),
            message: problem.into(),
            last_transition_time: now,
            observed_generation: canary.metadata.generation,
        }),
    }
    if status == before {
        return Ok(());
    }
    let canaries: Api<Canary> = Api::namespaced(ctx.client.clone(), &namespace);
    write_status(&canaries, &name, &status).await?;
    if let Err(e) = events::record(&ctx.client, canary, &ctx.identity, true, reason, problem).await
    {
        tracing::warn!(%namespace, %name, error = %e, "cannot record event");
    }
    tracing::warn!(%namespace, %name, %problem, "canary cannot run");
    Ok(())
}

/// Ready replicas of a Deployment whose controller has seen its latest
/// spec: pods of the current template that are ready.
fn ready_replicas(d: Option<&Deployment>) -> u32 {
    let Some(d) = d else { return 0 };
    let Some(st) = d.status.as_ref() else {
        return 0;
    };
    if st.observed_generation < d.metadata.generation {
        return 0;
    }
    let updated = st.updated_replicas.unwrap_or(0);
    let ready = st.ready_replicas.unwrap_or(0);
    u32::try_from(updated.min(ready)).unwrap_or(0)
}

fn spec_replicas(d: &Deployment) -> u32 {
    d.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .map_or(1, |r| u32::try_from(r).unwrap_or(0))
}

/// The revision stable's pods all run once its rollout finished.
fn rolled_out(d: &Deployment) -> Option<String> {
    let st = d.status.as_ref()?;
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let done = st.observed_generation >= d.metadata.generation
        && st.updated_replicas.unwrap_or(0) >= want
        && st.ready_replicas.unwrap_or(0) >= want
        && st.replicas.unwrap_or(0) <= want;
    done.then(|| d.annotations().get(names::REVISION_ANNOTATION).cloned())
        .flatten()
}

/// Everything the engine needs to know this time.
async fn observe(ctx: &Context, w: &World, status: &CanaryStatus, now: Timestamp) -> Observed {
    let (namespace, name) = key_of(&w.canary);
    let template = w
        .target
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let target_now = spec_replicas(&w.target);
    // The user's total: recorded at first sight; outside a run, a target
    // scaled by someone else (to anything but what weir set) is the user
    // changing it.
    let settled = matches!(
        status.phase,
        Phase::Idle | Phase::Succeeded | Phase::Aborted | Phase::Initializing
    );
    let ours = status.replicas.map(|r| r.canary);
    let total = match status.target_replicas {
        None => target_now.max(1),
        Some(_) if settled && ours == Some(0) && target_now > 0 => target_now,
        Some(t) => t.max(1),
    };
    let desired_revision = desired_revision(&template, w.stable.as_ref(), &w.selector);
    let route = names::route(&namespace, &name);
    let table_generation = status.traffic.as_ref().map_or(0, |t| t.generation);
    let (applied_generation, open_streams) = match &ctx.fleet {
        Some(f) => (f.applied(&route), f.open(&route)),
        None => (Some(table_generation), None),
    };
    let ready = CohortReplicas {
        stable: ready_replicas(w.stable.as_ref()),
        canary: ready_replicas(Some(&w.target)),
    };
    let evidence = match &ctx.fleet {
        Some(fleet) => {
            let collector = ctx.collector(&(namespace.clone(), name.clone()));
            let mut collector = collector.lock().await;
            let snapshot = fleet.snapshot();
            let replicas = Cohorts {
                stable: f64::from(ready.stable.max(1)),
                canary: f64::from(ready.canary.max(1)),
            };
            let gauges = KubeGauges {
                pods: Api::namespaced(ctx.client.clone(), &namespace),
                exporters: Api::all(ctx.client.clone()),
                namespace: namespace.clone(),
                selectors: Cohorts {
                    stable: builders::stable_labels(&w.selector),
                    canary: w.selector.clone(),
                },
            };
            collector
                .gather(&w.rollout, status, now, Some(&snapshot), replicas, &gauges)
                .await;
            collector.evidence(&w.rollout, status, Some(&snapshot), replicas)
        }
        None => None,
    };
    Observed {
        generation: w.canary.metadata.generation,
        desired_revision,
        target_replicas: total,
        ready,
        stable_rolled_out: w.stable.as_ref().and_then(rolled_out),
        applied_generation,
        open_streams,
        evidence,
        commands: commands::from_annotations(w.canary.annotations()),
    }
}

/// The revision the user wants: the target template's hash, unless the
/// template is the one the stable copy runs (then the revision recorded on
/// the stable copy). The second rule keeps a Kubernetes upgrade that
/// defaults a new template field from looking like a new version: the
/// stable copy gets the same default, so the templates still compare
/// equal while their hashes differ.
fn desired_revision(
    template: &PodTemplateSpec,
    stable: Option<&Deployment>,
    selector: &BTreeMap<String, String>,
) -> String {
    let hash = builders::template_revision(template);
    let Some(stable) = stable else { return hash };
    let recorded = stable.annotations().get(names::REVISION_ANNOTATION);
    let same = stable
        .spec
        .as_ref()
        .is_some_and(|s| builders::unlabel_stable(&s.template, selector) == *template);
    match recorded {
        Some(rev) if same => rev.clone(),
        _ => hash,
    }
}

async fn write_status(
    canaries: &Api<Canary>,
    name: &str,
    status: &CanaryStatus,
) -> Result<(), Error> {
    let body = serde_json::json!({
        "apiVersion": format!("{}/{}", weir_crds::GROUP, weir_crds::VERSION),
        "kind": "Canary",
        "status": status,
    });
    canaries
        .patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(api_error(format!("write status of canary {name}")))?;
    Ok(())
}

/// Brings the owned objects to what `status` says.
async fn converge(
    ctx: &Context,
    w: &World,
    status: &CanaryStatus,
    observed: &Observed,
) -> Result<(), Error> {
    let (namespace, name) = key_of(&w.canary);
    let owner = Owner {
        name: name.clone(),
        namespace: namespace.clone(),
        uid: w.canary.uid().unwrap_or_default(),
    };
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let ssa = PatchParams::apply(MANAGER).force();
    let port = w.canary.spec.service.map_or(8000, |s| s.port);
    let blue_green = matches!(w.rollout.strategy, Strategy::BlueGreen(_));

    // Services, once per spec change (and at this process's first sight).
    let generation = w.canary.metadata.generation.unwrap_or(0);
    let services_key = (owner.uid.clone(), generation);
    let applied = ctx
        .services_applied
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&services_key);
    if !applied {
        let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
        let mut wanted = vec![
            (
                names::service(&name, Cohort::Stable),
                builders::service(
                    &owner,
                    Cohort::Stable,
                    false,
                    builders::stable_labels(&w.selector),
                    port,
                ),
            ),
            (
                names::service(&name, Cohort::Canary),
                builders::service(&owner, Cohort::Canary, false, w.selector.clone(), port),
            ),
        ];
        if blue_green {
            wanted.push((
                names::preview_service(&name),
                builders::service(&owner, Cohort::Canary, true, w.selector.clone(), port),
            ));
        }
        for (svc_name, svc) in wanted {
            services
                .patch(&svc_name, &ssa, &Patch::Apply(&svc))
                .await
                .map_err(api_error(format!("apply service {svc_name}")))?;
        }
        ctx.services_applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(services_key);
    }

    // The stable copy: created at first sight with the target's template;
    // given the canary's template while promoting.
    let wanted = status.replicas.unwrap_or(CohortReplicas {
        stable: observed.target_replicas,
        canary: 0,
    });
    let stable_name = names::stable_deployment(&w.target_name);
    let target_template = w
        .target
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let stable_revision = w
        .stable
        .as_ref()
        .and_then(|d| d.annotations().get(names::REVISION_ANNOTATION).cloned());
    let promoting_to = (status.phase == Phase::Promoting)
        .then(|| status.canary_revision.clone())
        .flatten();
    let template_for_stable = match (&w.stable, &promoting_to) {
        (None, _) => Some((
            target_template.clone(),
            status
                .stable_revision
                .clone()
                .unwrap_or_else(|| builders::template_revision(&target_template)),
        )),
        (Some(_), Some(rev)) if stable_revision.as_ref() != Some(rev) => {
            Some((target_template.clone(), rev.clone()))
        }
        _ => None,
    };
    if let Some((template, revision)) = template_for_stable {
        let strategy = builders::promotion_strategy(
            &w.canary.spec.promotion,
            wanted.stable,
            w.rollout
                .gpu_budget
                .map(|b| b.saturating_sub(wanted.stable + wanted.canary)),
        );
        let copy = builders::stable_deployment(
            &owner,
            &w.target,
            &template,
            &revision,
            wanted.stable,
            strategy,
        )
        .map_err(Error::Invalid)?;
        deployments
            .patch(&stable_name, &ssa, &Patch::Apply(&copy))
            .await
            .map_err(api_error(format!("apply {stable_name}")))?;
    } else if let Some(stable) = &w.stable
        && spec_replicas(stable) != wanted.stable
    {
        scale(&deployments, &stable_name, wanted.stable).await?;
    }
    if spec_replicas(&w.target) != wanted.canary
        || w.target.spec.as_ref().and_then(|s| s.replicas).is_none()
    {
        scale(&deployments, &w.target_name, wanted.canary).await?;
    }

    // The version stable serves, kept for `weir undo` (once per revision
    // and process; recording is idempotent across restarts).
    if let Some(revision) = &status.stable_revision
        && !matches!(status.phase, Phase::Promoting | Phase::Initializing)
    {
        let recorded = ctx
            .revisions_recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&owner.uid)
            == Some(revision);
        if !recorded {
            let template = if builders::template_revision(&target_template) == *revision {
                Some(target_template.clone())
            } else {
                w.stable
                    .as_ref()
                    .and_then(|d| d.spec.as_ref())
                    .map(|s| builders::unlabel_stable(&s.template, &w.selector))
            };
            if let Some(template) = template {
                record_revision(ctx, &owner, &template, revision).await?;
                ctx.revisions_recorded
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(owner.uid.clone(), revision.clone());
            }
        }
    }
    Ok(())
}

async fn scale(deployments: &Api<Deployment>, name: &str, replicas: u32) -> Result<(), Error> {
    let body = serde_json::json!({"spec": {"replicas": replicas}});
    deployments
        .patch_scale(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(api_error(format!("scale {name} to {replicas}")))?;
    Ok(())
}

/// Keeps the template as a `ControllerRevision` (for `weir undo`), numbered
/// after the newest one; an existing record of the same template is
/// renumbered as the newest, as Deployments do with ReplicaSets.
async fn record_revision(
    ctx: &Context,
    owner: &Owner,
    template: &PodTemplateSpec,
    revision: &str,
) -> Result<(), Error> {
    let revisions: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let existing = revisions
        .list(&ListParams::default().labels(&format!("{}={}", names::CANARY_LABEL, owner.name)))
        .await
        .map_err(api_error("list controller revisions"))?;
    let newest = existing.items.iter().map(|r| r.revision).max().unwrap_or(0);
    let mine = existing.items.iter().find(|r| {
        r.annotations()
            .get(names::REVISION_ANNOTATION)
            .map(String::as_str)
            == Some(revision)
    });
    match mine {
        Some(r) if r.revision == newest => Ok(()),
        Some(r) => {
            let name = r.name_any();
            let body = serde_json::json!({"revision": newest + 1});
            revisions
                .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .map_err(api_error(format!("renumber controller revision {name}")))?;
            Ok(())
        }
        None => {
            let cr = builders::controller_revision(owner, template, revision, newest + 1);
            match revisions.create(&PostParams::default(), &cr).await {
                Ok(_) => {}
                // Another reconcile recorded it a moment ago.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(api_error("record controller revision")(e)),
            }
            // Keep the newest REVISION_HISTORY (the list above lacks the
            // one just made, which is the newest).
            let mut older: Vec<&ControllerRevision> = existing.items.iter().collect();
            older.sort_by_key(|r| std::cmp::Reverse(r.revision));
            for old in older.into_iter().skip(REVISION_HISTORY - 1) {
                let name = old.name_any();
                match revisions.delete(&name, &Default::default()).await {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => {
                        return Err(api_error(format!("prune controller revision {name}"))(e));
                    }
                }
            }
            Ok(())
        }
    }
}

/// Records the plan's Events and counts its outcome.
async fn publish(ctx: &Context, canary: &Canary, plan: &Plan) {
    let (namespace, name) = key_of(canary);
    if let Some(d) = &plan.decision {
        ctx.metrics.verdict(
            &namespace,
            &name,
            match d.verdict {
                weir_analysis::Verdict::Promote => "Promote",
                weir_analysis::Verdict::Continue => "Continue",
                weir_analysis::Verdict::Abort => "Abort",
            },
        );
    }
    for action in &plan.actions {
        match action {
            engine::Action::Event {
                warning,
                reason,
                message,
            } => {
                tracing::info!(%namespace, %name, reason, %message, "transition");
                if let Err(e) = events::record(
                    &ctx.client,
                    canary,
                    &ctx.identity,
                    *warning,
                    reason,
                    message,
                )
                .await
                {
                    tracing::warn!(%namespace, %name, error = %e, "cannot record event");
                }
            }
            engine::Action::Finish(Outcome::Promoted) => ctx.metrics.promoted(&namespace, &name),
            engine::Action::Finish(Outcome::Aborted) => {
                let reason = plan
                    .status
                    .abort
                    .as_ref()
                    .map_or("Unknown", |a| a.reason.as_str());
                ctx.metrics.aborted(&namespace, &name, reason);
            }
            engine::Action::SetTraffic(_)
            | engine::Action::Scale { .. }
            | engine::Action::PromoteStable { .. } => {}
        }
    }
}

/// A Canary being deleted: with `revertOnDeletion`, the target gets the
/// stable version and the user's replica count back before the finalizer
/// goes (the stable copy and the Services are owned by the Canary and
/// garbage-collected after it).
async fn cleanup(canary: &Canary, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(canary);
    let (namespace, name) = &key;
    if canary.spec.revert_on_deletion
        && let Some(target) = &canary.spec.target_ref
    {
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
        let stable = deployments
            .get_opt(&names::stable_deployment(&target.name))
            .await
            .map_err(api_error("get the stable copy"))?;
        let status = canary.status.clone().unwrap_or_default();
        if let (Some(stable), Some(target_dep)) = (
            stable,
            deployments
                .get_opt(&target.name)
                .await
                .map_err(api_error("get the target"))?,
        ) {
            let selector = builders::target_selector(&target_dep).map_err(Error::Invalid)?;
            let template = stable
                .spec
                .as_ref()
                .map(|s| builders::unlabel_stable(&s.template, &selector))
                .unwrap_or_default();
            let replicas = status
                .target_replicas
                .unwrap_or_else(|| spec_replicas(&stable));
            // A replace with the resourceVersion just read: the template is
            // swapped whole (a merge would keep the canary's extra fields),
            // and a concurrent edit fails the call, which is retried.
            let mut reverted = target_dep.clone();
            if let Some(spec) = reverted.spec.as_mut() {
                spec.template = template;
                spec.replicas = Some(i32::try_from(replicas).unwrap_or(i32::MAX));
            }
            reverted.status = None;
            deployments
                .replace(&target.name, &PostParams::default(), &reverted)
                .await
                .map_err(api_error(format!("revert target {}", target.name)))?;
            if let Err(e) = events::record(
                &ctx.client,
                canary,
                &ctx.identity,
                false,
                reasons::REVERTED,
                &format!(
                    "Canary deleted: {} runs the stable version again with {replicas} replicas",
                    target.name
                ),
            )
            .await
            {
                tracing::warn!(%namespace, %name, error = %e, "cannot record event");
            }
        }
    }
    ctx.forget(&key);
    Ok(Action::await_change())
}
