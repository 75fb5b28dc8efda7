//! One reconcile of one Canary: read the cluster, call the engine, write
//! status, record the Events, then bring the owned objects to what status
//! says ([`super::desired`] decides what they should be, `super::apply`
//! writes them).
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
//! never twice); they go out right after the status write, before any
//! other call that could fail.
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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Client, ResourceExt};
use weir_crds::names::{self, FINALIZER};
use weir_crds::{Canary, CanaryStatus, CohortReplicas, ComponentStatus, Phase};

use super::apply::{self, ApiError, Written};
use super::builders;
use super::commands;
use super::desired::{self, Cluster, DesiredError};
use super::events;
use super::fleet::Fleet;
use super::gauges::KubeGauges;
use super::graph::{self, Seen};
use super::metrics::Metrics;
use super::pods;
use crate::engine::conditions::{self, ConditionType, Wanted};
use crate::engine::graph::{Part, PartSize};
use crate::engine::spec::Mode;
use crate::engine::{self, Observed, Outcome, Plan, Rollout, reasons};
use crate::evidence::{Cohorts, Collector};
use crate::notify::{self, deliver::Notifier};

pub use super::MANAGER;

/// How often a Canary is looked at when nothing asks sooner (a settled
/// Canary still converges its owned objects and notices a lost watch).
const RESYNC: Duration = Duration::from_secs(300);
/// Retry delay when the target Deployment is missing or the spec invalid
/// (a watch event on either also triggers a reconcile at once).
const RETRY_INVALID: Duration = Duration::from_secs(60);
/// How soon a Canary held back by its GPU budget is looked at again (until
/// the pods it waits on are gone).
const HELD_BACK: Duration = Duration::from_secs(1);

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a call.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The Canary or its target cannot be used as written.
    #[error(transparent)]
    Invalid(#[from] DesiredError),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[from] FinalizerError),
}

/// Why the finalizer could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum FinalizerError {
    /// The patch adding it failed.
    #[error("cannot add {FINALIZER}: {0}")]
    Add(#[source] kube::Error),
    /// The patch removing it failed.
    #[error("cannot remove {FINALIZER}: {0}")]
    Remove(#[source] kube::Error),
    /// The Canary has no name (never from the API server).
    #[error("the Canary has no name")]
    UnnamedObject,
    /// The finalizer name is not valid (a bug in weir).
    #[error("{FINALIZER} is not a valid finalizer name")]
    InvalidFinalizer,
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match e {
            F::ApplyFailed(e) | F::CleanupFailed(e) => e,
            F::AddFinalizer(e) => FinalizerError::Add(e).into(),
            F::RemoveFinalizer(e) => FinalizerError::Remove(e).into(),
            F::UnnamedObject => FinalizerError::UnnamedObject.into(),
            F::InvalidFinalizer => FinalizerError::InvalidFinalizer.into(),
        }
    }
}

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let failed = apply::api_error(what);
    move |source| Error::Api(failed(source))
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
    /// What this process wrote already and need not write again.
    written: Written,
    /// Where rollout notifications go (None: nowhere).
    notifier: Option<Notifier>,
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
            written: Written::default(),
            notifier: None,
        }
    }

    /// Sends each plan's notifications through `notifier` (never waiting
    /// for a webhook).
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = Some(notifier);
        self
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
    .map_err(Error::from);
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
    /// Every component in start order, the target included: a graph's,
    /// or the target alone.
    parts: Vec<PartRead>,
}

/// One component, as read.
struct PartRead {
    part: Part,
    target: Deployment,
    stable: Option<Deployment>,
    selector: BTreeMap<String, String>,
    /// The replicas the user asked of it.
    total: u32,
    /// Its share of `graph.gpuBudget`, in pods.
    budget: Option<u32>,
}

impl World {
    /// The components for the pure functions.
    fn seen(&self) -> Vec<Seen<'_>> {
        self.parts
            .iter()
            .map(|r| Seen {
                part: &r.part,
                target: &r.target,
                stable: r.stable.as_ref(),
                selector: &r.selector,
                total: r.total,
                budget: r.budget,
                pods: None,
            })
            .collect()
    }

    /// The replicas the user asked of the target.
    fn target_total(&self) -> u32 {
        self.parts
            .iter()
            .find(|p| p.part.serves)
            .map_or(1, |p| p.total)
    }

    /// The replicas the engine counts: the target's; a graph's unit, its
    /// largest component's ([`engine::graph::unit`]).
    fn total(&self) -> u32 {
        if self.rollout.graph.is_some() {
            engine::graph::unit(self.parts.iter().map(|p| p.total))
        } else {
            self.target_total()
        }
    }
}

/// The user's replica count of a Deployment weir scales: `recorded` at
/// first sight; outside a run, a Deployment scaled by someone else (to
/// anything but the `ours` weir set) is the user changing it.
fn user_total(recorded: Option<u32>, ours: Option<u32>, now: u32, phase: Phase) -> u32 {
    let settled = matches!(
        phase,
        Phase::Idle | Phase::Succeeded | Phase::Aborted | Phase::Initializing
    );
    match recorded {
        None => now.max(1),
        Some(_) if settled && ours == Some(0) && now > 0 => now,
        Some(t) => t.max(1),
    }
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
        new_status.target_replicas = Some(world.target_total());
    }
    let mut seen = world.seen();
    // What the objects should be is worked out before status is written:
    // a graph's status records what each component is given (order and
    // budget hold some back), which the next reconcile tells apart from
    // the user scaling a component.
    let api = Api::namespaced(ctx.client.clone(), &namespace);
    let held = |selector: BTreeMap<String, String>| {
        let api = api.clone();
        async move {
            let stable = pods::held(&api, &builders::stable_labels(&selector)).await;
            let canary = pods::held(&api, &selector).await;
            stable
                .zip(canary)
                .map(|(stable, canary)| Cohorts { stable, canary })
        }
    };
    let pods = match world.rollout.gpu_budget {
        Some(_) if world.rollout.graph.is_none() => held(world.selector.clone()).await,
        _ => None,
    };
    // A graph's budget binds each component on its own pods.
    for s in seen.iter_mut().filter(|s| s.budget.is_some()) {
        s.pods = held(s.selector.clone()).await;
    }
    let cluster = Cluster {
        canary: &world.canary,
        rollout: &world.rollout,
        target: &world.target,
        stable: world.stable.as_ref(),
        selector: &world.selector,
        pods,
        parts: &seen,
        stable_idle: {
            let table = new_status.traffic.as_ref().map_or(0, |t| t.generation);
            observed.applied_generation.is_some_and(|g| g >= table)
                && observed.open_streams.is_none_or(|o| o.stable == 0)
        },
    };
    let wanted = desired::desired(&cluster, &new_status, observed.target_replicas);
    // (A spec that drops a component recorded here is refused in
    // read_world: the record is what gives it back on deletion.)
    if let (Some(_), Ok(w)) = (&world.rollout.graph, &wanted) {
        new_status.components = components(&seen, &w.parts);
    }
    if new_status != status {
        // The first write of targetReplicas is weir taking hold of the
        // target: from it on the CRD fixes targetRef.name, before it the
        // name may still be corrected (a typo). Conditional on the Canary
        // as read, so a rename that came in between fails this write (a
        // conflict, retried on a fresh read) instead of the objects below
        // converging on the old name.
        let taking_hold = status.target_replicas.is_none() && new_status.target_replicas.is_some();
        let precondition = taking_hold
            .then_some(world.canary.metadata.resource_version.as_deref())
            .flatten();
        write_status(&canaries, &name, &new_status, precondition).await?;
    }
    // The transitions are recorded: their Events go out now, before the
    // objects converge, so a failing API call below cannot lose them.
    publish(ctx, &world.canary, &plan).await;
    let wanted = wanted?;
    apply::converge(
        &ctx.client,
        &ctx.written,
        &wanted,
        generation(&world.canary),
    )
    .await?;
    ctx.metrics.canary(
        &namespace,
        &name,
        new_status.phase,
        new_status.canary_weight,
    );
    // Pods going away do not change the Deployments, so nothing else
    // wakes a reconcile held back by the GPU budget.
    let requeue = plan.requeue_after.unwrap_or(RESYNC);
    Ok(Action::requeue(if wanted.held_back {
        requeue.min(HELD_BACK)
    } else {
        requeue
    }))
}

/// The Canary's spec generation (0 before the API server set one).
fn generation(canary: &Canary) -> i64 {
    canary.metadata.generation.unwrap_or(0)
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
    // A graph's components weir holds stay named until the Canary goes.
    let held = canary.status.iter().flat_map(|s| &s.components);
    if let Err(e) = engine::graph::still_held(held.map(|c| c.name.as_str()), rollout.graph.as_ref())
    {
        return Ok(Err((canary, reasons::INVALID_SPEC, e.to_string())));
    }
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
    let status = canary.status.clone().unwrap_or_default();
    let serving = PartRead {
        part: Part {
            name: target_name.clone(),
            serves: true,
            port: None,
            url_env: None,
        },
        total: user_total(
            status.target_replicas,
            // A graph's target is given its own count (`status.components`).
            status
                .components
                .iter()
                .filter(|_| rollout.graph.is_some())
                .find(|c| c.name == target_name)
                .map(|c| c.replicas.canary)
                .or(status.replicas.map(|r| r.canary)),
            spec_replicas(&target),
            status.phase,
        ),
        target: target.clone(),
        stable: stable.clone(),
        selector: selector.clone(),
        budget: None,
    };
    let Some(g) = &rollout.graph else {
        return Ok(Ok(World {
            canary,
            parts: vec![serving],
            rollout,
            target,
            stable,
            selector,
        }));
    };
    let mut parts = Vec::with_capacity(g.parts.len());
    let mut serving = Some(serving);
    for part in &g.parts {
        if part.serves {
            // The validated graph names the target once.
            if let Some(s) = serving.take() {
                parts.push(PartRead {
                    part: part.clone(),
                    ..s
                });
            }
            continue;
        }
        let name = &part.name;
        let Some(d) = deployments
            .get_opt(name)
            .await
            .map_err(api_error(format!("get graph component {name}")))?
        else {
            let i = canary
                .spec
                .graph
                .iter()
                .flat_map(|g| g.components.iter())
                .position(|c| &c.name == name)
                .unwrap_or(0);
            return Ok(Err((
                canary,
                reasons::TARGET_MISSING,
                format!(
                    "spec.graph.components[{i}].name: Deployment {name} not found in namespace {namespace}; create it or fix the name"
                ),
            )));
        };
        let part_selector = match builders::target_selector(&d) {
            Ok(s) => s,
            Err(e) => {
                return Ok(Err((
                    canary,
                    reasons::INVALID_SPEC,
                    format!("Deployment {name}: {e}"),
                )));
            }
        };
        let copy_name = names::stable_deployment(name);
        let copy = deployments
            .get_opt(&copy_name)
            .await
            .map_err(api_error(format!("get {copy_name}")))?;
        let recorded = status.components.iter().find(|c| &c.name == name);
        parts.push(PartRead {
            part: part.clone(),
            total: user_total(
                recorded.map(|c| c.target_replicas),
                recorded.map(|c| c.replicas.canary),
                spec_replicas(&d),
                status.phase,
            ),
            target: d,
            stable: copy,
            selector: part_selector,
            budget: None,
        });
    }
    // graph.gpuBudget counts GPUs: in the engine's units and each
    // component's pods, from what each component's pods hold (the larger
    // of its two templates: a new version may ask for more).
    let sizes: Vec<PartSize> = parts
        .iter()
        .map(|p| PartSize {
            total: p.total,
            gpus_per_pod: [Some(&p.target), p.stable.as_ref()]
                .into_iter()
                .flatten()
                .map(|d| pods::template_gpus(&desired::template(d)))
                .max()
                .unwrap_or(0),
        })
        .collect();
    let budget = g.budget(&sizes);
    let mut rollout = rollout;
    match budget {
        Ok(Some(b)) => {
            rollout.gpu_budget = Some(b.units);
            for (p, share) in parts.iter_mut().zip(b.pods) {
                p.budget = share;
            }
        }
        Ok(None) => {}
        Err(e) => return Ok(Err((canary, reasons::INVALID_SPEC, e.to_string()))),
    }
    Ok(Ok(World {
        canary,
        rollout,
        target,
        stable,
        selector,
        parts,
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
    let unchanged = conditions::get(&status.conditions, ConditionType::Ready)
        .is_some_and(|c| c.status == "False" && c.message == problem);
    if !unchanged {
        conditions::set(
            &mut status.conditions,
            Wanted {
                kind: ConditionType::Ready,
                ok: false,
                reason,
                message: problem,
                generation: canary.metadata.generation,
            },
            Timestamp::now(),
        );
    }
    if status == before {
        return Ok(());
    }
    let canaries: Api<Canary> = Api::namespaced(ctx.client.clone(), &namespace);
    write_status(&canaries, &name, &status, None).await?;
    if let Err(e) = events::record(&ctx.client, canary, &ctx.identity, true, reason, problem).await
    {
        tracing::warn!(%namespace, %name, error = %e, "cannot record event");
    }
    tracing::warn!(%namespace, %name, %problem, "canary cannot run");
    Ok(())
}

/// Ready replicas of a Deployment whose controller has seen its latest
/// spec: pods of the current template that are ready, counted low.
///
/// A Deployment's status counts ready pods over all its ReplicaSets and
/// updated pods whether ready or not, so mid-rollout `min(updated, ready)`
/// would count a ready old pod for a new one that is still starting. Every
/// pod that is not updated is old and may be among the ready ones, so at
/// least `ready - (replicas - updated)` of the ready pods are new.
pub(super) fn ready_replicas(d: Option<&Deployment>) -> u32 {
    let Some(d) = d else { return 0 };
    let Some(st) = d.status.as_ref() else {
        return 0;
    };
    if st.observed_generation < d.metadata.generation {
        return 0;
    }
    let updated = st.updated_replicas.unwrap_or(0);
    let old = (st.replicas.unwrap_or(0) - updated).max(0);
    let ready_new = (st.ready_replicas.unwrap_or(0) - old).max(0);
    u32::try_from(updated.min(ready_new)).unwrap_or(0)
}

fn spec_replicas(d: &Deployment) -> u32 {
    d.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .map_or(1, |r| u32::try_from(r).unwrap_or(0))
}

/// The revision stable's pods all run once its rollout finished.
pub(super) fn rolled_out(d: &Deployment) -> Option<String> {
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
    let settled = matches!(
        status.phase,
        Phase::Idle | Phase::Succeeded | Phase::Aborted | Phase::Initializing
    );
    let total = w.total();
    let seen = w.seen();
    // A model canary's version is the model its spec asks for; a
    // Deployment's is its template; a graph's, its templates'.
    let desired_revision = match (
        w.rollout.model_of(weir_crds::Cohort::Canary),
        &w.rollout.graph,
    ) {
        (Some(model), _) => model.to_string(),
        (None, Some(g)) => graph::revision(&seen, g),
        (None, None) => desired_revision(&template, w.stable.as_ref(), &w.selector),
    };
    let route = names::route(&namespace, &name);
    let table_generation = status.traffic.as_ref().map_or(0, |t| t.generation);
    let (applied_generation, open_streams) = match &ctx.fleet {
        Some(f) => (f.applied(&route), f.open(&route)),
        None => (Some(table_generation), None),
    };
    // A model canary's cohorts are the same pods: the target's. A
    // graph's are ready as far as its least ready component carries.
    let ready = if w.rollout.graph.is_none() {
        CohortReplicas {
            stable: if w.rollout.is_model() {
                ready_replicas(Some(&w.target))
            } else {
                ready_replicas(w.stable.as_ref())
            },
            canary: ready_replicas(Some(&w.target)),
        }
    } else {
        graph::ready(&seen, total)
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
                    stable: seen
                        .iter()
                        .map(|s| builders::stable_labels(s.selector))
                        .collect(),
                    canary: seen.iter().map(|s| s.selector.clone()).collect(),
                },
            };
            collector
                .gather(&w.rollout, status, now, Some(&snapshot), replicas, &gauges)
                .await;
            collector.evidence(&w.rollout, status, Some(&snapshot), replicas)
        }
        None => None,
    };
    let pods = Api::namespaced(ctx.client.clone(), &namespace);
    let given = status.replicas.unwrap_or_default();
    let unready = if w.rollout.graph.is_none() {
        Cohorts {
            stable: pods::unready(
                &pods,
                &builders::stable_labels(&w.selector),
                ready.stable,
                given.stable,
            )
            .await,
            canary: pods::unready(&pods, &w.selector, ready.canary, given.canary).await,
        }
    } else {
        graph_unready(&pods, &seen, given, total).await
    };
    // A model canary's next run moves traffic only to a model every pod
    // has loaded: asked only while a run could start.
    let finished = matches!(status.phase, Phase::Succeeded | Phase::Aborted)
        && status.canary_revision.as_deref() == Some(desired_revision.as_str());
    let model_missing = match w.rollout.model_of(weir_crds::Cohort::Canary) {
        Some(model)
            if settled
                && !finished
                && status.stable_revision.as_deref() != Some(desired_revision.as_str()) =>
        {
            let port = w.canary.spec.service.map_or(8000, |s| s.port);
            pods::model_missing(&pods, &w.selector, port, model).await
        }
        _ => None,
    };
    Observed {
        model_missing,
        generation: w.canary.metadata.generation,
        desired_revision,
        target_replicas: total,
        ready,
        unready,
        // Only the certain case: with a proxy Service, the first poll may
        // not have answered yet, and a proxy may be restarting.
        unmeasured: ctx.fleet.is_none().then(|| {
            "the controller runs without --proxy-service, so no proxy reports to it".to_string()
        }),
        stable_rolled_out: graph::rolled_out(&seen),
        stable_carries: graph::carries(&seen),
        applied_generation,
        open_streams,
        evidence,
        commands: commands::from_annotations(w.canary.annotations()),
    }
}

/// Why a graph's cohort is not ready, from its first component in start
/// order whose pods say so.
async fn graph_unready(
    pods: &Api<k8s_openapi::api::core::v1::Pod>,
    seen: &[Seen<'_>],
    given: CohortReplicas,
    total: u32,
) -> Cohorts<Option<String>> {
    let mut out = Cohorts::<Option<String>>::default();
    for s in seen {
        let asked = graph::asked_of(given, total, s.total);
        let ready = graph::ready_of(s);
        if out.stable.is_none() {
            let labels = builders::stable_labels(s.selector);
            out.stable = pods::unready(pods, &labels, ready.stable, asked.stable)
                .await
                .map(|why| format!("{}: {why}", names::stable_deployment(&s.part.name)));
        }
        if out.canary.is_none() {
            out.canary = pods::unready(pods, s.selector, ready.canary, asked.canary)
                .await
                .map(|why| format!("{}: {why}", s.part.name));
        }
    }
    out
}

/// A graph's components as status reports them, with what each is given
/// now (`changes`, in the same order).
fn components(seen: &[Seen<'_>], changes: &[graph::Change]) -> Vec<ComponentStatus> {
    seen.iter()
        .zip(changes)
        .map(|(s, c)| ComponentStatus {
            name: s.part.name.clone(),
            target_replicas: s.total,
            replicas: c.given,
            ready: graph::ready_of(s),
            stable_revision: s.stable.and_then(rolled_out),
        })
        .collect()
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
    resource_version: Option<&str>,
) -> Result<(), Error> {
    let mut body = serde_json::json!({
        "apiVersion": format!("{}/{}", weir_crds::GROUP, weir_crds::VERSION),
        "kind": "Canary",
        "status": status,
    });
    // An apply that names a resourceVersion is refused (409) unless the
    // object is still at it.
    if let Some(rv) = resource_version {
        body["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
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

/// Records the plan's Events, queues its notifications and counts its
/// outcome.
async fn publish(ctx: &Context, canary: &Canary, plan: &Plan) {
    let (namespace, name) = key_of(canary);
    if let Some(notifier) = &ctx.notifier {
        let now = Timestamp::now().to_string();
        for n in notify::from_plan(canary, plan, &now) {
            notifier.send(n, &canary.spec.notify);
        }
    }
    if let Some(d) = &plan.decision {
        ctx.metrics.verdict(
            &namespace,
            &name,
            engine::verdict_status(d.verdict).as_str(),
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
            // Published already: the proxies read `status.traffic`, which
            // the status write above carried.
            engine::Action::SetTraffic(_) => {}
        }
    }
}

/// A Canary being deleted: with `revertOnDeletion`, the target gets the
/// stable version and the user's replica count back before the finalizer
/// goes (the stable copy and the Services are owned by the Canary and
/// garbage-collected after it).
async fn cleanup(canary: &Canary, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(canary);
    let (_, name) = &key;
    if canary.spec.revert_on_deletion
        && let Some(target) = &canary.spec.target_ref
    {
        let status = canary.status.clone().unwrap_or_default();
        // A graph's components go back too, the target last, with the
        // replicas each had; weir's variables are taken off.
        let graph = Rollout::new(name, &canary.spec).ok().and_then(|r| r.graph);
        let managed: Vec<String> = graph
            .as_ref()
            .map(|g| g.managed_env().into_iter().map(String::from).collect())
            .unwrap_or_default();
        let mut each: Vec<(String, Option<u32>)> = status
            .components
            .iter()
            .filter(|c| c.name != target.name)
            .map(|c| (c.name.clone(), Some(c.target_replicas)))
            .collect();
        each.push((target.name.clone(), status.target_replicas));
        for (component, recorded) in each {
            revert(ctx, canary, &component, recorded, &managed).await?;
        }
    }
    ctx.forget(&key);
    Ok(Action::await_change())
}

/// Puts the stable version and the user's `recorded` replica count back on
/// Deployment `target` (from its stable copy), without the graph
/// variables `managed`.
async fn revert(
    ctx: &Context,
    canary: &Canary,
    target: &str,
    recorded: Option<u32>,
    managed: &[String],
) -> Result<(), Error> {
    let (namespace, name) = key_of(canary);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let stable = deployments
        .get_opt(&names::stable_deployment(target))
        .await
        .map_err(api_error("get the stable copy"))?;
    {
        if let (Some(stable), Some(target_dep)) = (
            stable,
            deployments
                .get_opt(target)
                .await
                .map_err(api_error("get the target"))?,
        ) {
            let selector = builders::target_selector(&target_dep).map_err(|source| {
                DesiredError::Selector {
                    target: target.to_string(),
                    source,
                }
            })?;
            let managed: Vec<&str> = managed.iter().map(String::as_str).collect();
            let template = stable
                .spec
                .as_ref()
                .map(|s| graph::strip(&builders::unlabel_stable(&s.template, &selector), &managed))
                .unwrap_or_default();
            let replicas = recorded.unwrap_or_else(|| spec_replicas(&stable));
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
                .replace(target, &PostParams::default(), &reverted)
                .await
                .map_err(api_error(format!("revert target {target}")))?;
            if let Err(e) = events::record(
                &ctx.client,
                canary,
                &ctx.identity,
                false,
                reasons::REVERTED,
                &format!(
                    "Canary deleted: {target} runs the stable version again with {replicas} replicas"
                ),
            )
            .await
            {
                tracing::warn!(%namespace, %name, error = %e, "cannot record event");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};

    use super::ready_replicas;

    fn deployment(replicas: i32, updated: i32, ready: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(2);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            ..DeploymentStatus::default()
        });
        d
    }

    #[test]
    fn only_pods_of_the_current_template_count_as_ready() {
        // (pods, updated, ready) -> new pods surely ready.
        for ((replicas, updated, ready), want) in [
            ((1, 1, 1), 1),
            ((4, 4, 3), 3),
            // Rolling, surge 1: four old ready pods, one new starting.
            ((5, 1, 4), 0),
            // The new one ready, one old pod terminating.
            ((5, 1, 5), 1),
            ((6, 3, 4), 1),
            // Status without `replicas`: the updated and ready bound.
            ((0, 2, 1), 1),
        ] {
            let d = deployment(replicas, updated, ready);
            assert_eq!(
                ready_replicas(Some(&d)),
                want,
                "{replicas} pods, {updated} updated, {ready} ready"
            );
        }
        let mut stale = deployment(1, 1, 1);
        stale.metadata.generation = Some(3);
        assert_eq!(ready_replicas(Some(&stale)), 0, "spec not yet observed");
        assert_eq!(ready_replicas(None), 0);
    }
}
