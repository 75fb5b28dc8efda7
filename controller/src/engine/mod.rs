//! The rollout engine: `plan(rollout, status, observed, now) -> Plan`.
//!
//! Pure and deterministic: no I/O, no clock, no randomness. The Kubernetes
//! reconciler and the local runner are thin shells around it: they gather
//! [`Observed`], call [`plan`], apply [`Plan::actions`] in order and write
//! [`Plan::status`] once. Everything the engine remembers lives in
//! `CanaryStatus`, so a restarted shell resumes a run exactly where it was.
//!
//! # State, not commands, for what the world should look like
//!
//! What the cluster should look like is *state* in the status: the replicas
//! per cohort (`status.replicas`), the version stable should run
//! (`status.canaryRevision` while `Promoting`) and the traffic table
//! (`status.traffic`). The Kubernetes shell converges the cluster to that
//! state on every reconcile (`kube::desired` computes the objects, a thin
//! applier writes them), so a shell killed between writing status and
//! acting finds the same intent on restart. [`Action`]s are what happens
//! once: publish a table (local mode pushes it to its in-process proxy;
//! Kubernetes proxies read `status.traffic`), record an event, finish a run.
//!
//! One call may take several transitions (a `setWeight` whose canary is
//! ready is followed at once by the next step); it stops at the first thing
//! it has to wait for, and says when to call again.
//!
//! Safety rules that hold on every path:
//! - abort, supersede and rollback move traffic to stable 100% *first*; the
//!   canary is scaled down only once every proxy applied that table and the
//!   canary's open streams have drained;
//! - evidence counts only inside an analysis window, which opens once the
//!   warm-up after the last traffic change has passed (its time *and* its
//!   requests per canary replica), and evidence of an older window is
//!   ignored;
//! - an abort on latency waits while the canary's latency is still falling
//!   within the window (a cold replica warming up): it is held, never
//!   turned into a promotion;
//! - each command (promote, abort, retry) acts once per request id.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};
use weir_analysis::decision::{Decision, Load};
use weir_analysis::{Distribution, Observations, Verdict};
use weir_crds::{
    AbortStatus, CanaryStatus, Cohort, CohortReplicas, HistoryEvent, PausedReason, Phase, Traffic,
    VerdictStatus,
};

mod blue_green;
mod bookkeeping;
mod canary;
pub mod conditions;
pub mod graph;
mod judge;
mod promotion;
pub mod reasons;
pub mod replicas;
pub mod spec;
#[cfg(test)]
mod tests;
mod traffic;
mod warmup;

pub use blue_green::STAGES as BLUE_GREEN_STAGES;
pub use promotion::stable_takes_template;
pub use spec::{Rollout, Share, SpecError};

use spec::Strategy;

/// What the shell saw this time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The spec generation (for `observedGeneration`).
    pub generation: Option<i64>,
    /// The revision the user wants (Kubernetes: the target's pod-template
    /// hash; local: the canary backend's identity).
    pub desired_revision: String,
    /// Kubernetes: the target's replicas. Local: ignored.
    pub target_replicas: u32,
    /// Ready replicas per cohort (local: 1 when the backend answers).
    pub ready: CohortReplicas,
    /// Kubernetes: why a cohort's pods that are not ready are not, in the
    /// pods' own words (`1 pod Unschedulable: 0/2 nodes are available: 2
    /// Insufficient nvidia.com/gpu.`); `None` when there is nothing to say.
    /// Said in status and an Event while a step waits.
    pub unready: Cohorts<Option<String>>,
    /// Why nothing measures this Canary's traffic (the controller was
    /// started without proxies to read), or `None` when something does.
    /// A run with metrics says so in status and an Event, before any
    /// analysis could wait on evidence that never comes.
    pub unmeasured: Option<String>,
    /// Kubernetes: the revision stable's pods all run, once rolled out.
    pub stable_rolled_out: Option<String>,
    /// Kubernetes: the revision stable's template carries, rolled out or
    /// not (a GPU-budget promotion gives it the new one at zero replicas,
    /// then scales it up: it is on the new version from then on).
    pub stable_carries: Option<String>,
    /// The oldest traffic generation every proxy has applied (None: unknown).
    pub applied_generation: Option<u64>,
    /// Open requests per cohort across proxies (None: unknown).
    pub open_streams: Option<CohortReplicas>,
    /// Evidence for the analysis window in status.
    pub evidence: Option<Evidence>,
    /// Pending commands.
    pub commands: Commands,
    /// Kubernetes, a model canary: why the model the spec asks for cannot
    /// be served yet (a ready pod does not list it in `/v1/models`), or
    /// `None`. A new run holds while it is `Some`: a request for a model a
    /// server does not have gets a 404, and the run would be judged on
    /// errors that say nothing about the adapter.
    pub model_missing: Option<String>,
}

/// A value per cohort.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cohorts<T> {
    /// The stable cohort.
    pub stable: T,
    /// The canary cohort.
    pub canary: T,
}

impl<T> Cohorts<T> {
    /// The value of `cohort`.
    pub fn get(&self, cohort: Cohort) -> &T {
        match cohort {
            Cohort::Stable => &self.stable,
            Cohort::Canary => &self.canary,
        }
    }

    /// The value of `cohort`, to change it.
    pub fn get_mut(&mut self, cohort: Cohort) -> &mut T {
        match cohort {
            Cohort::Stable => &mut self.stable,
            Cohort::Canary => &mut self.canary,
        }
    }
}

/// A step waiting for a cohort to have this many ready replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiting {
    cohort: Cohort,
    wanted: u32,
}

/// The analysis inputs gathered for one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// The window id the shell gathered for; other ids are ignored.
    pub window: u64,
    /// Requests each canary replica served since the window's traffic
    /// change: what a request warm-up counts.
    pub warmup_requests: u64,
    /// Observations per metric, by metric name, since the window opened
    /// (empty while it warms up).
    pub metrics: Vec<(String, Observations)>,
    /// Per-replica load of each cohort in the window.
    pub load: Option<Load>,
    /// Per latency metric, the canary's distribution in each slice of the
    /// window, oldest first: what the trend test reads.
    pub slices: Vec<(String, Vec<Distribution>)>,
}

/// Commands from `weir promote/abort/retry`, each with its request id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commands {
    /// Promote: `(id, full)`.
    pub promote: Option<(String, bool)>,
    /// Abort.
    pub abort: Option<String>,
    /// Retry an aborted run.
    pub retry: Option<String>,
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Publish this table to every proxy (also written to `status.traffic`).
    SetTraffic(Traffic),
    /// Record an event.
    Event {
        /// Warning or normal.
        warning: bool,
        /// A constant from [`reasons`].
        reason: &'static str,
        /// What happened.
        message: String,
    },
    /// The run ended.
    Finish(Outcome),
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The canary's version serves everything.
    Promoted,
    /// Traffic is back on stable.
    Aborted,
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Actions, in the order they must be applied.
    pub actions: Vec<Action>,
    /// The status to write.
    pub status: CanaryStatus,
    /// Call again after this long at the latest (None: nothing will happen
    /// until something changes).
    pub requeue_after: Option<Duration>,
    /// The decision of this call, when one was taken.
    pub decision: Option<Decision>,
}

/// Transitions one call may take before it must be waiting on something.
const MAX_TRANSITIONS: usize = 32;

/// Decides what happens next. See the module docs.
pub fn plan(rollout: &Rollout, status: &CanaryStatus, observed: &Observed, now: Timestamp) -> Plan {
    let mut cx = Cx {
        r: rollout,
        obs: observed,
        now,
        s: status.clone(),
        actions: Vec::new(),
        wake: None,
        decision: None,
        waiting: None,
        unloaded: None,
    };
    if observed.generation.is_some() {
        cx.s.observed_generation = observed.generation;
    }
    // Once, against the status as the last call left it: within this call
    // the current step moves on and the fingerprint with it.
    if matches!(cx.s.phase, Phase::Progressing | Phase::Paused)
        && cx.s.canary_revision.as_deref() == Some(observed.desired_revision.as_str())
    {
        cx.steps_edited();
    }
    let mut flow = Flow::Again;
    for _ in 0..MAX_TRANSITIONS {
        flow = cx.step();
        if flow == Flow::Wait {
            break;
        }
    }
    debug_assert_eq!(flow, Flow::Wait, "engine did not settle: {:?}", cx.s.phase);
    cx.finish()
}

/// Whether `plan` may take another transition now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// State changed; look again.
    Again,
    /// Waiting on time or the world.
    Wait,
}

/// Where an analysis stands.
#[derive(Debug, Clone, PartialEq)]
enum Judged {
    /// Promote verdict after `minDuration`.
    Passed,
    /// Abort verdict, with why (the rule without the verdict word).
    Failed(String),
    /// `maxDuration` reached without a verdict.
    Inconclusive(String),
    /// Keep collecting.
    Pending,
}

/// One call's working state.
struct Cx<'a> {
    r: &'a Rollout,
    obs: &'a Observed,
    now: Timestamp,
    s: CanaryStatus,
    actions: Vec<Action>,
    wake: Option<Timestamp>,
    decision: Option<Decision>,
    /// What the current step waits for, when it is replicas.
    waiting: Option<Waiting>,
    /// Why a model canary's new run holds: its model is not loaded yet.
    unloaded: Option<String>,
}

/// How soon a model canary that holds for its model looks at the pods
/// again.
const UNLOADED_RECHECK: Duration = Duration::from_secs(5);

fn after(t: Timestamp, d: Duration) -> Timestamp {
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
    Timestamp::from_millisecond(t.as_millisecond().saturating_add(ms)).unwrap_or(Timestamp::MAX)
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::from_millis(u64::try_from(now.as_millisecond() - since.as_millisecond()).unwrap_or(0))
}

/// The verdict as status spells it.
pub fn verdict_status(verdict: Verdict) -> VerdictStatus {
    match verdict {
        Verdict::Promote => VerdictStatus::Promote,
        Verdict::Continue => VerdictStatus::Continue,
        Verdict::Abort => VerdictStatus::Abort,
    }
}

/// The current step for people: `step 2/4: analysis`, `blue-green: cutover`.
pub fn step_label(rollout: &Rollout, status: &CanaryStatus) -> String {
    if !matches!(status.phase, Phase::Progressing | Phase::Paused) {
        return status.phase.to_string();
    }
    let i = status.current_step as usize;
    match &rollout.strategy {
        Strategy::Canary { steps, .. } => {
            let what = match steps.get(i) {
                Some(spec::Step::SetWeight(w)) => format!("setWeight {}", w.percent()),
                Some(spec::Step::Pause(Some(d))) => format!("pause {}", spec::format_duration(*d)),
                Some(spec::Step::Pause(None)) => "pause".into(),
                Some(spec::Step::Analysis(_)) => "analysis".into(),
                None => "done".into(),
            };
            format!("step {}/{}: {what}", i + 1, steps.len())
        }
        Strategy::BlueGreen(_) => format!(
            "blue-green: {}",
            blue_green::STAGES.get(i).copied().unwrap_or("done")
        ),
    }
}

/// The fingerprint of the steps a run has taken, up to and including
/// `current` (FNV-1a over an explicit text, so it is the same in every
/// build and controller version). Blue-green's stages are fixed: only a
/// change of strategy counts.
fn steps_fingerprint(strategy: &Strategy, current: u32) -> String {
    let text = match strategy {
        Strategy::Canary { steps, .. } => {
            let taken = steps.iter().take(current as usize + 1);
            let parts: Vec<String> = taken
                .map(|s| match s {
                    spec::Step::SetWeight(w) => format!("w{}", w.basis_points()),
                    spec::Step::Pause(Some(d)) => format!("p{}", d.as_millis()),
                    spec::Step::Pause(None) => "p".into(),
                    spec::Step::Analysis(b) => {
                        format!("a{}-{}", b.min.as_millis(), b.max.as_millis())
                    }
                })
                .collect();
            format!("canary:{}", parts.join(","))
        }
        Strategy::BlueGreen(_) => "blueGreen".into(),
    };
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

fn pending(command: Option<&String>, acknowledged: Option<&String>) -> bool {
    command.is_some() && command != acknowledged
}

impl Cx<'_> {
    fn step(&mut self) -> Flow {
        if let Some(flow) = self.commands() {
            return flow;
        }
        match self.s.phase {
            Phase::Initializing => {
                if self.s.stable_revision.is_none() {
                    // A model canary's first stable is the model the spec
                    // says serves now; a Deployment's is what it runs.
                    let first = self.r.model_of(Cohort::Stable).map(str::to_string);
                    self.s.stable_revision =
                        Some(first.unwrap_or_else(|| self.obs.desired_revision.clone()));
                }
                self.s.phase = Phase::Idle;
                if self.r.manages_pods() && self.s.replicas.is_none() {
                    // Adoption: the target's pods still serve the stable
                    // version. They stay until the stable copy is ready and
                    // the proxies route to it; then the target (the canary
                    // cohort) scales to zero like after any run.
                    let total = self.obs.target_replicas;
                    if self
                        .r
                        .gpu_budget
                        .is_some_and(|b| b < total.saturating_mul(2))
                    {
                        // No room for a copy beside the target: the target
                        // keeps serving, and its replicas move to the copy
                        // one at a time (`settled`).
                        self.s.replicas = Some(CohortReplicas {
                            stable: 0,
                            canary: total,
                        });
                        self.route_all_to(Cohort::Canary);
                        return Flow::Again;
                    }
                    self.s.replicas = Some(CohortReplicas {
                        stable: total,
                        canary: total,
                    });
                }
                self.route_all_to(Cohort::Stable);
                Flow::Again
            }
            Phase::Idle | Phase::Succeeded | Phase::Aborted => self.settled(),
            Phase::Progressing | Phase::Paused => self.running(),
            Phase::Promoting => self.promoting(),
        }
    }

    /// Promote, abort and retry requests, each acted on once.
    fn commands(&mut self) -> Option<Flow> {
        let c = &self.obs.commands;
        if pending(c.abort.as_ref(), self.s.acknowledged.abort.as_ref()) {
            self.s.acknowledged.abort.clone_from(&c.abort);
            if matches!(
                self.s.phase,
                Phase::Progressing | Phase::Paused | Phase::Promoting
            ) {
                self.abort(
                    reasons::MANUAL_ABORT,
                    "aborted by request (weir abort)".into(),
                );
                return Some(Flow::Again);
            }
        }
        if pending(c.retry.as_ref(), self.s.acknowledged.retry.as_ref()) {
            self.s.acknowledged.retry.clone_from(&c.retry);
            if self.s.phase == Phase::Aborted
                && let Some(rev) = self.s.canary_revision.clone()
                && Some(&rev) != self.s.stable_revision.as_ref()
            {
                self.event(
                    false,
                    reasons::RETRIED,
                    format!("retrying revision {rev} from its first step"),
                );
                self.start_run(rev);
                return Some(Flow::Again);
            }
        }
        if let Some((id, full)) = &c.promote
            && Some(id) != self.s.acknowledged.promote.as_ref()
        {
            self.s.acknowledged.promote = Some(id.clone());
            if matches!(self.s.phase, Phase::Progressing | Phase::Paused) {
                if *full {
                    self.event(
                        false,
                        reasons::PROMOTED_BY_HAND,
                        "full promotion requested (weir promote --full)".into(),
                    );
                    self.enter_promoting();
                } else {
                    self.event(
                        false,
                        reasons::PROMOTED_BY_HAND,
                        format!(
                            "step {} ended by request (weir promote)",
                            self.s.current_step + 1
                        ),
                    );
                    self.s.phase = Phase::Progressing;
                    self.s.paused_reason = None;
                    self.advance();
                }
                return Some(Flow::Again);
            }
        }
        None
    }

    /// Idle, Succeeded, Aborted: finish any scale-down, start a run when a
    /// new revision appears.
    fn settled(&mut self) -> Flow {
        let desired = self.obs.desired_revision.as_str();
        let stable = self.s.stable_revision.as_deref();
        let finished = self.s.canary_revision.as_deref();
        let new_run = Some(desired) != stable
            && !(matches!(self.s.phase, Phase::Aborted | Phase::Succeeded)
                && Some(desired) == finished);
        // A canary is compared with stable, and traffic falls back on it:
        // a new revision waits for a stable cohort that serves (the stable
        // replicas it waits for, when it does).
        // Adoption under a GPU budget moves the target's replicas to the
        // stable copy one at a time, traffic following them; a new
        // revision waits for it to finish.
        let adopting = self.s.phase == Phase::Idle
            && self.r.manages_pods()
            && self.traffic_share(Cohort::Canary) > Share::NONE
            && self.s.replicas.is_some_and(|r| r.canary > 0);
        let hold = self.s.replicas.map(|r| r.stable).filter(|&given| {
            self.r.manages_pods()
                && self.s.phase == Phase::Idle
                && new_run
                && ((given > 0 && self.obs.ready.stable == 0) || adopting)
        });
        let unloaded = self.obs.model_missing.clone().filter(|_| new_run);
        if new_run && hold.is_none() && unloaded.is_none() {
            self.event(
                false,
                reasons::RUN_STARTED,
                format!("new revision {desired}: starting the rollout"),
            );
            self.start_run(desired.to_string());
            return Flow::Again;
        }
        if self.s.phase == Phase::Aborted && Some(desired) == stable {
            // The user reverted the target: nothing left to retry.
            self.s.phase = Phase::Idle;
            self.s.paused_reason = None;
        }
        if adopting {
            let total = self.obs.target_replicas.max(1);
            if self.shift_capacity(Cohort::Stable, total, self.r.gpu_budget) {
                self.route_all_to(Cohort::Stable);
                return Flow::Again;
            }
            self.wake_at(after(self.now, Duration::from_secs(1)));
        }
        self.scale_down_when_drained();
        self.follow_target_replicas();
        if unloaded.is_some() {
            // Loading an adapter changes no object that is watched: look
            // again soon.
            self.unloaded = unloaded;
            self.wake_at(after(self.now, UNLOADED_RECHECK));
        }
        match hold {
            Some(given) => self.wait_for_ready(Cohort::Stable, given),
            None => Flow::Wait,
        }
    }

    /// Progressing or Paused.
    fn running(&mut self) -> Flow {
        let desired = self.obs.desired_revision.clone();
        if Some(&desired) != self.s.canary_revision.as_ref() {
            let old = self.s.canary_revision.clone().unwrap_or_default();
            if Some(&desired) == self.s.stable_revision.as_ref() {
                self.route_all_to(Cohort::Stable);
                self.history(
                    HistoryEvent::Superseded,
                    "the target went back to the stable revision".into(),
                );
                self.event(
                    true,
                    reasons::SUPERSEDED,
                    format!("revision {old} withdrawn: the target is back on stable"),
                );
                self.s.phase = Phase::Idle;
                self.clear_run();
                return Flow::Again;
            }
            self.route_all_to(Cohort::Stable);
            self.history(HistoryEvent::Superseded, format!("superseded by {desired}"));
            self.event(
                false,
                reasons::SUPERSEDED,
                format!("revision {old} superseded by {desired}: restarting"),
            );
            self.start_run(desired);
            return Flow::Again;
        }
        if self.r.paused {
            if self.s.paused_reason != Some(PausedReason::Manual) {
                self.s.phase = Phase::Paused;
                self.s.paused_reason = Some(PausedReason::Manual);
                self.event(
                    false,
                    reasons::PAUSED,
                    "paused by request (weir pause)".into(),
                );
            }
            return self.watch().unwrap_or(Flow::Wait);
        }
        if self.s.paused_reason == Some(PausedReason::Manual) {
            self.s.phase = Phase::Progressing;
            self.s.paused_reason = None;
            // The step restarts: its timers and evidence do not span a pause
            // of unknown length.
            self.s.step_started_at = Some(Time(self.now));
            self.s.progress_at = Some(Time(self.now));
            if self.s.window.is_some() {
                self.open_window(self.window_purpose());
            }
            self.event(
                false,
                reasons::RESUMED,
                "resumed by request (weir resume)".into(),
            );
            return Flow::Again;
        }
        if self.s.phase == Phase::Paused {
            return self.watch().unwrap_or(Flow::Wait);
        }
        let since = self.s.progress_at.as_ref().map_or(self.now, |t| t.0);
        if elapsed(since, self.now) > self.r.progress_deadline {
            self.abort(
                reasons::PROGRESS_DEADLINE,
                format!(
                    "no progress for {}s (progressDeadlineSeconds): {}",
                    self.r.progress_deadline.as_secs(),
                    self.s.message
                ),
            );
            return Flow::Again;
        }
        self.wake_at(after(since, self.r.progress_deadline));
        match &self.r.strategy {
            Strategy::Canary { .. } => self.canary_step(),
            Strategy::BlueGreen(bg) => self.blue_green_step(bg),
        }
    }

    /// A run whose steps up to the current one were edited starts again
    /// from the first step, with traffic where it is until a step sets it.
    /// Editing later steps (or appending some) changes nothing now.
    fn steps_edited(&mut self) {
        let Some(taken) = self.s.steps_hash.as_deref() else {
            return;
        };
        if taken == steps_fingerprint(&self.r.strategy, self.s.current_step) {
            return;
        }
        let at = self.s.current_step + 1;
        let share = self.traffic_share(Cohort::Canary);
        self.event(
            false,
            reasons::STEPS_CHANGED,
            format!(
                "the steps up to step {at} changed during the run: starting again from step 1 (canary traffic stays at {share}% until a step sets it)"
            ),
        );
        // A person's pause outlives the edit; a step's pause was the old
        // plan's.
        let manual = self.s.paused_reason == Some(PausedReason::Manual);
        let revision = self.obs.desired_revision.clone();
        self.start_run(revision);
        if manual {
            self.s.phase = Phase::Paused;
            self.s.paused_reason = Some(PausedReason::Manual);
        }
    }

    fn start_run(&mut self, revision: String) {
        self.clear_run();
        self.s.canary_revision = Some(revision);
        self.s.phase = Phase::Progressing;
        self.s.current_step = 0;
        self.s.step_started_at = Some(Time(self.now));
        self.s.progress_at = Some(Time(self.now));
    }

    fn clear_run(&mut self) {
        self.s.window = None;
        self.s.last_analysis = None;
        self.s.abort = None;
        self.s.cutover = None;
        self.s.paused_reason = None;
    }

    /// Ends the current step and starts the next.
    fn advance(&mut self) {
        self.s.current_step += 1;
        self.s.step_started_at = Some(Time(self.now));
        self.s.progress_at = Some(Time(self.now));
    }

    /// Traffic to stable first, then (later, once applied and drained) the
    /// canary scales down.
    fn abort(&mut self, reason: &'static str, message: String) {
        self.route_all_to(Cohort::Stable);
        self.s.phase = Phase::Aborted;
        self.s.window = None;
        self.s.paused_reason = None;
        self.s.abort = Some(AbortStatus {
            reason: reason.to_string(),
            message: message.clone(),
            at: Time(self.now),
        });
        self.history(HistoryEvent::Aborted, message.clone());
        self.event(true, reason, message);
        self.actions.push(Action::Finish(Outcome::Aborted));
    }
}
