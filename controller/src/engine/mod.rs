//! The rollout engine: `plan(rollout, status, observed, now) -> Plan`.
//!
//! Pure and deterministic: no I/O, no clock, no randomness. The Kubernetes
//! reconciler and the local runner are thin shells around it: they gather
//! [`Observed`], call [`plan`], apply [`Plan::actions`] in order and write
//! [`Plan::status`] once. Everything the engine remembers lives in
//! `CanaryStatus`, so a restarted shell resumes a run exactly where it was.
//!
//! One call may take several transitions (a `setWeight` whose canary is
//! ready is followed at once by the next step); it stops at the first thing
//! it has to wait for, and says when to call again.
//!
//! Safety rules that hold on every path:
//! - abort, supersede and rollback move traffic to stable 100% *first*; the
//!   canary is scaled down only once every proxy applied that table and the
//!   canary's open streams have drained;
//! - evidence counts only inside an analysis window, which opens a warm-up
//!   after the last traffic change, and evidence of an older window is
//!   ignored;
//! - each command (promote, abort, retry) acts once per request id.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use weir_analysis::decision::{Decision, Load, Role};
use weir_analysis::{Observations, Verdict};
use weir_crds::{
    AbortStatus, AnalysisStatus, AnalysisWindow, CanaryStatus, Cohort, CohortReplicas,
    EffectStatus, HistoryEntry, HistoryEvent, PausedReason, Phase, Traffic, TrafficBackend,
    VerdictStatus, WindowPurpose,
};

mod blue_green;
mod canary;
pub mod reasons;
pub mod replicas;
pub mod spec;
#[cfg(test)]
mod tests;

pub use blue_green::STAGES as BLUE_GREEN_STAGES;
pub use spec::{Rollout, Share, SpecError};

use spec::{AnalysisBounds, Mode, Strategy};

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
    /// Kubernetes: the revision stable's pods all run, once rolled out.
    pub stable_rolled_out: Option<String>,
    /// The oldest traffic generation every proxy has applied (None: unknown).
    pub applied_generation: Option<u64>,
    /// Open requests per cohort across proxies (None: unknown).
    pub open_streams: Option<CohortReplicas>,
    /// Evidence for the analysis window in status.
    pub evidence: Option<Evidence>,
    /// Pending commands.
    pub commands: Commands,
}

/// The analysis inputs gathered for one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// The window id the shell gathered for; other ids are ignored.
    pub window: u64,
    /// Observations per metric, by metric name.
    pub metrics: Vec<(String, Observations)>,
    /// Per-replica load of each cohort in the window.
    pub load: Option<Load>,
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
    /// Scale a cohort (Kubernetes only).
    Scale {
        /// Which cohort.
        cohort: Cohort,
        /// To how many replicas.
        replicas: u32,
    },
    /// Copy the canary's template to stable (Kubernetes only; idempotent).
    PromoteStable {
        /// The revision stable takes.
        revision: String,
    },
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
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
    Timestamp::from_millisecond(t.as_millisecond().saturating_add(ms)).unwrap_or(Timestamp::MAX)
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::from_millis(u64::try_from(now.as_millisecond() - since.as_millisecond()).unwrap_or(0))
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
                    self.s.stable_revision = Some(self.obs.desired_revision.clone());
                }
                if !self.r.is_local() && self.s.replicas.is_none() {
                    // Adoption: the target's pods still serve the stable
                    // version. They stay until the stable copy is ready and
                    // the proxies route to it; then the target (the canary
                    // cohort) scales to zero like after any run.
                    let total = self.obs.target_replicas;
                    self.s.replicas = Some(CohortReplicas {
                        stable: total,
                        canary: total,
                    });
                }
                self.s.phase = Phase::Idle;
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
        if new_run {
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
        self.scale_down_when_drained();
        self.follow_target_replicas();
        Flow::Wait
    }

    /// Kubernetes, no run in progress: stable serves alone at the user's
    /// replica count (which changes when the user scales the target).
    fn follow_target_replicas(&mut self) {
        let Some(r) = self.s.replicas else { return };
        if self.r.is_local() || r.canary > 0 || self.traffic_share(Cohort::Canary) > Share::NONE {
            return;
        }
        let total = self.obs.target_replicas.max(1);
        let want = self.r.gpu_budget.map_or(total, |b| total.min(b.max(1)));
        if r.stable != want {
            self.scale(Cohort::Stable, want);
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

    fn promoting(&mut self) -> Flow {
        let canary_rev = self.s.canary_revision.clone().unwrap_or_default();
        if self.r.is_local() {
            self.route_all_to(Cohort::Canary);
            return self.succeed(canary_rev);
        }
        let total = self.obs.target_replicas.max(1);
        let current = self.s.replicas.unwrap_or(CohortReplicas {
            stable: total,
            canary: 0,
        });
        if self.obs.stable_rolled_out.as_deref() == Some(canary_rev.as_str()) {
            if current.stable >= total {
                self.s.stable_revision = Some(canary_rev.clone());
                self.route_all_to(Cohort::Stable);
                return self.succeed(canary_rev);
            }
            // A GPU budget kept stable small: both cohorts run the new
            // version now, so capacity moves back to stable step by step.
            return self.hand_back(total, current);
        }
        // Keep the proven canary serving while stable is replaced: all of
        // it when the canary can grow to carry everything beside stable
        // (within the GPU budget). Otherwise stable is replaced in place
        // (no surge) while the split stays as the last step left it.
        let canary_fits = self
            .r
            .gpu_budget
            .is_none_or(|b| b >= total + current.stable);
        if canary_fits && self.traffic_share(Cohort::Canary) < Share::ALL {
            self.scale(Cohort::Canary, total);
            if self.obs.ready.canary >= total {
                self.route_all_to(Cohort::Canary);
            }
        }
        if let Some(flow) = self.promotion_deadline(&canary_rev) {
            return flow;
        }
        self.actions.push(Action::PromoteStable {
            revision: canary_rev,
        });
        Flow::Wait
    }

    /// Aborts a promotion that made no progress within the deadline.
    fn promotion_deadline(&mut self, canary_rev: &str) -> Option<Flow> {
        let since = self.s.progress_at.as_ref().map_or(self.now, |t| t.0);
        if elapsed(since, self.now) > self.r.progress_deadline {
            self.abort(
                reasons::PROGRESS_DEADLINE,
                format!(
                    "stable did not finish rolling out {canary_rev} within {}s (progressDeadlineSeconds)",
                    self.r.progress_deadline.as_secs()
                ),
            );
            return Some(Flow::Again);
        }
        self.wake_at(after(since, self.r.progress_deadline));
        None
    }

    /// GPU budget, after stable took the new version: traffic follows each
    /// cohort's ready replicas, and once stable has all it was given and
    /// every proxy serves the split, one canary replica's GPU goes to
    /// stable. Ends when stable has `total` ready replicas.
    fn hand_back(&mut self, total: u32, current: CohortReplicas) -> Flow {
        let canary_rev = self.s.canary_revision.clone().unwrap_or_default();
        let (rs, rc) = (self.obs.ready.stable, self.obs.ready.canary);
        if rs + rc > 0 {
            let share = Share::from_fraction(f64::from(rc) / f64::from(rs + rc));
            self.set_traffic(share, false);
        }
        let generation = self.s.traffic.as_ref().map_or(0, |t| t.generation);
        let applied = self.obs.applied_generation.is_some_and(|g| g >= generation);
        if applied && rs >= current.stable && current.canary > 0 {
            let canary = current.canary - 1;
            let stable = self
                .r
                .gpu_budget
                .map_or(total, |b| total.min(b.saturating_sub(canary)))
                .max(current.stable);
            self.s.progress_at = Some(Time(self.now));
            self.scale(Cohort::Canary, canary);
            self.scale(Cohort::Stable, stable);
        }
        if let Some(flow) = self.promotion_deadline(&canary_rev) {
            return flow;
        }
        self.wake_at(after(self.now, Duration::from_secs(1)));
        Flow::Wait
    }

    fn succeed(&mut self, revision: String) -> Flow {
        self.s.phase = Phase::Succeeded;
        self.s.window = None;
        self.s.paused_reason = None;
        self.history(HistoryEvent::Promoted, "every step passed".into());
        self.event(
            false,
            reasons::PROMOTED,
            format!("revision {revision} promoted"),
        );
        self.actions.push(Action::Finish(Outcome::Promoted));
        Flow::Again
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

    fn enter_promoting(&mut self) {
        self.s.phase = Phase::Promoting;
        self.s.paused_reason = None;
        self.s.window = None;
        self.s.progress_at = Some(Time(self.now));
        self.event(
            false,
            reasons::PROMOTING,
            format!(
                "revision {} won; {}",
                self.s.canary_revision.as_deref().unwrap_or("?"),
                if self.r.is_local() {
                    "all traffic moves to the canary"
                } else {
                    "stable is being updated to it"
                }
            ),
        );
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

    /// Kubernetes: once the proxies serve the current table, the canary
    /// has no open streams and stable is ready to carry everything, scale
    /// the canary to zero.
    fn scale_down_when_drained(&mut self) {
        if self.r.is_local() || self.traffic_share(Cohort::Canary) > Share::NONE {
            return;
        }
        let canary = self.s.replicas.map_or(0, |r| r.canary);
        if canary == 0 {
            return;
        }
        let generation = self.s.traffic.as_ref().map_or(0, |t| t.generation);
        let applied = self.obs.applied_generation.is_some_and(|g| g >= generation);
        let drained = self.obs.open_streams.is_none_or(|o| o.canary == 0);
        let stable_ready = self.obs.ready.stable >= self.s.replicas.map_or(0, |r| r.stable);
        if applied && drained && stable_ready {
            self.scale(Cohort::Canary, 0);
            self.scale(Cohort::Stable, self.obs.target_replicas.max(1));
        }
    }

    // --- traffic and replicas ---------------------------------------------

    /// The share a cohort has in the published table.
    fn traffic_share(&self, cohort: Cohort) -> Share {
        let Some(t) = &self.s.traffic else {
            return if cohort == Cohort::Stable {
                Share::ALL
            } else {
                Share::NONE
            };
        };
        t.backends
            .iter()
            .find(|b| b.cohort == cohort)
            .and_then(|b| Share::from_percent(b.weight).ok())
            .unwrap_or(Share::NONE)
    }

    fn route_all_to(&mut self, cohort: Cohort) {
        let canary = if cohort == Cohort::Canary {
            Share::ALL
        } else {
            Share::NONE
        };
        self.set_traffic(canary, false);
    }

    /// Publishes a table giving the canary `canary`; no-op when unchanged.
    fn set_traffic(&mut self, canary: Share, override_header: bool) {
        let backends = Cohort::BOTH
            .into_iter()
            .map(|cohort| {
                let share = if cohort == Cohort::Canary {
                    canary
                } else {
                    canary.complement()
                };
                let revision = match cohort {
                    Cohort::Stable => self.s.stable_revision.clone(),
                    Cohort::Canary => self.s.canary_revision.clone(),
                };
                let (service, port, url) = match &self.r.mode {
                    Mode::Kubernetes { canary, port, .. } => (
                        Some(weir_crds::names::service(canary, cohort)),
                        Some(*port),
                        None,
                    ),
                    Mode::Local { stable, canary } => {
                        let b = if cohort == Cohort::Stable {
                            stable
                        } else {
                            canary
                        };
                        (None, None, Some(b.url.clone()))
                    }
                };
                TrafficBackend {
                    cohort,
                    service,
                    port,
                    url,
                    weight: share.percent(),
                    revision,
                }
            })
            .collect();
        let next = Traffic {
            generation: self.s.traffic.as_ref().map_or(1, |t| t.generation + 1),
            route: self.r.route.clone(),
            sticky: self.r.sticky.clone(),
            override_header,
            backends,
        };
        if let Some(cur) = &self.s.traffic
            && (Traffic {
                generation: cur.generation,
                ..next.clone()
            }) == *cur
        {
            return;
        }
        self.s.canary_weight = canary.percent();
        self.s.traffic = Some(next.clone());
        self.actions.push(Action::SetTraffic(next));
    }

    /// Kubernetes: asks for `replicas` of a cohort; no-op when unchanged.
    fn scale(&mut self, cohort: Cohort, replicas: u32) {
        if self.r.is_local() {
            return;
        }
        let mut current = self.s.replicas.unwrap_or(CohortReplicas {
            stable: self.obs.target_replicas,
            canary: 0,
        });
        let slot = match cohort {
            Cohort::Stable => &mut current.stable,
            Cohort::Canary => &mut current.canary,
        };
        if *slot == replicas && self.s.replicas.is_some() {
            return;
        }
        *slot = replicas;
        self.s.replicas = Some(current);
        self.actions.push(Action::Scale { cohort, replicas });
    }

    /// Replicas per cohort for a canary share (see [`replicas`]).
    fn replicas_for(&self, canary: Share, fixed: Option<u32>) -> CohortReplicas {
        replicas::for_share(self.obs.target_replicas, canary, fixed, self.r.gpu_budget)
    }

    // --- analysis -----------------------------------------------------------

    fn window_purpose(&self) -> WindowPurpose {
        self.s
            .window
            .as_ref()
            .map_or(WindowPurpose::Step, |w| w.purpose)
    }

    /// Starts a new evidence window a warm-up from now.
    fn open_window(&mut self, purpose: WindowPurpose) {
        let opens_at = after(self.now, self.r.analysis.warmup);
        // Ids never repeat, across runs and retries too: the shell keys its
        // baselines by id, and a reused id would count old evidence.
        let from_clock = u64::try_from(opens_at.as_millisecond()).unwrap_or(0);
        let id = self
            .s
            .window
            .as_ref()
            .map_or(0, |w| w.id + 1)
            .max(from_clock);
        self.s.window = Some(AnalysisWindow {
            id,
            opens_at: Time(opens_at),
            purpose,
        });
        self.s.last_analysis = None;
    }

    /// Judges the window at each interval within the step's bounds.
    fn judge(
        &mut self,
        bounds: AnalysisBounds,
        purpose: WindowPurpose,
        load_matters: bool,
    ) -> Judged {
        if self.s.window.as_ref().is_none_or(|w| w.purpose != purpose) {
            self.open_window(purpose);
        }
        let Some(window) = self.s.window.clone() else {
            return Judged::Pending;
        };
        let started = self.s.step_started_at.as_ref().map_or(self.now, |t| t.0);
        match self.look(&window, load_matters) {
            Some((Verdict::Abort, rule)) => return Judged::Failed(rule),
            Some((Verdict::Promote, _)) if elapsed(started, self.now) >= bounds.min => {
                return Judged::Passed;
            }
            _ => {}
        }
        if elapsed(started, self.now) >= bounds.max {
            let rule = self
                .s
                .last_analysis
                .as_ref()
                .map_or_else(|| "no evidence arrived".to_string(), |a| a.rule.clone());
            return Judged::Inconclusive(rule);
        }
        self.wake_at(after(started, bounds.max));
        if bounds.min > Duration::ZERO {
            self.wake_at(after(started, bounds.min));
        }
        Judged::Pending
    }

    /// Takes a verdict when one is due (an interval after the window opened
    /// or after the last verdict) and the shell brought evidence for this
    /// window; otherwise asks to be woken when it is due.
    fn look(&mut self, window: &AnalysisWindow, load_matters: bool) -> Option<(Verdict, String)> {
        let interval = self.r.analysis.interval;
        let due = self
            .s
            .last_analysis
            .as_ref()
            .map_or(after(window.opens_at.0, interval), |a| {
                after(a.at.0, interval)
            });
        if self.now < due {
            self.wake_at(due);
            return None;
        }
        self.wake_at(after(self.now, interval));
        let ev = self
            .obs
            .evidence
            .as_ref()
            .filter(|e| e.window == window.id)?;
        let mut inputs = Vec::with_capacity(self.r.analysis.metrics.len());
        for m in &self.r.analysis.metrics {
            if let Some((_, o)) = ev.metrics.iter().find(|(n, _)| *n == m.spec.name) {
                inputs.push((m.spec.clone(), o.clone()));
            }
        }
        let load = if load_matters { ev.load } else { None };
        match weir_analysis::decide(&self.r.analysis.policy, &inputs, load) {
            Ok(decision) => {
                self.record(&decision);
                // An abort's reason reads without the verdict word: it is
                // shown after "aborted:".
                let rule = decision.rule.as_str();
                let reason = match decision.verdict {
                    Verdict::Abort => rule.strip_prefix("abort: ").unwrap_or(rule),
                    _ => rule,
                };
                let verdict = (decision.verdict, reason.to_string());
                self.decision = Some(decision);
                Some(verdict)
            }
            Err(e) => {
                // The spec was validated against the analysis crate, so this
                // is evidence of the wrong shape: say so, keep going.
                self.s.message = format!("analysis input problem: {e}");
                None
            }
        }
    }

    /// Outside analysis steps (a pause, a smoke weight) the evidence is
    /// still watched: a regression shown beyond its margin, or a hard limit
    /// breached, aborts at once. The confidence sequences hold at every
    /// look, so watching costs no error guarantee; only promotion waits for
    /// an analysis step.
    fn watch(&mut self) -> Option<Flow> {
        let window = self.s.window.clone()?;
        if self.r.analysis.metrics.is_empty() {
            return None;
        }
        let load_matters = window.purpose == WindowPurpose::Step;
        match self.look(&window, load_matters)? {
            (Verdict::Abort, why) => {
                self.abort(reasons::ANALYSIS_FAILED, why);
                Some(Flow::Again)
            }
            _ => None,
        }
    }

    /// Writes a decision into status; evidence that grew is progress.
    fn record(&mut self, d: &Decision) {
        let canary_n = d.metrics.iter().map(|m| m.canary_n).max().unwrap_or(0);
        let before = self.s.last_analysis.as_ref().map_or(0, |a| {
            a.metrics.iter().map(|m| m.canary_n).max().unwrap_or(0)
        });
        if canary_n > before {
            self.s.progress_at = Some(Time(self.now));
        }
        self.s.last_analysis = Some(AnalysisStatus {
            verdict: match d.verdict {
                Verdict::Promote => VerdictStatus::Promote,
                Verdict::Continue => VerdictStatus::Continue,
                Verdict::Abort => VerdictStatus::Abort,
            },
            at: Time(self.now),
            rule: d.rule.clone(),
            metrics: d
                .metrics
                .iter()
                .filter(|m| m.role != Role::Reference)
                .map(|m| EffectStatus {
                    name: m.name.clone(),
                    finding: format!("{:?}", m.finding).to_lowercase(),
                    summary: m.describe(),
                    estimate: m.estimate,
                    low: m.ci_low,
                    high: m.ci_high,
                    margin: m.margin,
                    stable_n: m.baseline_n,
                    canary_n: m.canary_n,
                })
                .collect(),
        });
    }

    /// Applies `onInconclusive` to an undecided analysis.
    fn inconclusive(&mut self, rule: String) -> Flow {
        use weir_crds::OnInconclusive;
        let message = format!("no verdict within maxDuration: {rule}");
        match self.r.analysis.on_inconclusive {
            OnInconclusive::Abort => self.abort(reasons::INCONCLUSIVE, message),
            OnInconclusive::Promote => {
                self.event(
                    true,
                    reasons::INCONCLUSIVE,
                    format!("{message}; continuing (onInconclusive: promote)"),
                );
                self.advance();
            }
            OnInconclusive::Pause => {
                self.event(
                    true,
                    reasons::INCONCLUSIVE,
                    format!("{message}; paused until weir promote or weir abort"),
                );
                self.s.phase = Phase::Paused;
                self.s.paused_reason = Some(PausedReason::Inconclusive);
            }
        }
        Flow::Again
    }

    // --- bookkeeping ----------------------------------------------------------

    fn wake_at(&mut self, t: Timestamp) {
        if t > self.now {
            self.wake = Some(self.wake.map_or(t, |w| w.min(t)));
        }
    }

    fn event(&mut self, warning: bool, reason: &'static str, message: String) {
        self.actions.push(Action::Event {
            warning,
            reason,
            message,
        });
    }

    fn history(&mut self, event: HistoryEvent, reason: String) {
        self.s.history.push(HistoryEntry {
            event,
            revision: self.s.canary_revision.clone(),
            reason,
            at: Time(self.now),
        });
        // Status must stay small: keep the latest entries.
        const KEEP: usize = 20;
        if self.s.history.len() > KEEP {
            let extra = self.s.history.len() - KEEP;
            self.s.history.drain(..extra);
        }
    }

    fn finish(mut self) -> Plan {
        self.s.steps_hash = matches!(self.s.phase, Phase::Progressing | Phase::Paused)
            .then(|| steps_fingerprint(&self.r.strategy, self.s.current_step));
        self.s.message = self.describe();
        self.conditions();
        let requeue_after = match self.s.phase {
            Phase::Progressing | Phase::Promoting => Some(
                self.wake
                    .map_or(self.r.analysis.interval, |w| elapsed(self.now, w))
                    .min(self.r.analysis.interval)
                    .max(Duration::from_millis(50)),
            ),
            // A pause ends only by a command or a spec change; while a
            // window is open its evidence is still watched.
            Phase::Paused => self.s.window.as_ref().map(|_| self.r.analysis.interval),
            // A scale-down waits on the proxies and the drain, which no
            // watch reports: look again soon (adoption, after a promotion
            // or an abort).
            Phase::Idle | Phase::Succeeded | Phase::Aborted
                if !self.r.is_local() && self.s.replicas.is_some_and(|r| r.canary > 0) =>
            {
                Some(Duration::from_secs(1))
            }
            _ => None,
        };
        Plan {
            actions: self.actions,
            status: self.s,
            requeue_after,
            decision: self.decision,
        }
    }

    /// The one-line status message.
    fn describe(&self) -> String {
        let verdict = self.s.last_analysis.as_ref().map(|a| a.rule.as_str());
        match self.s.phase {
            Phase::Initializing => "initializing".into(),
            Phase::Idle => format!(
                "stable {} serves all traffic",
                self.s.stable_revision.as_deref().unwrap_or("?")
            ),
            Phase::Progressing | Phase::Paused => {
                let what = step_label(self.r, &self.s);
                let paused = match self.s.paused_reason {
                    Some(PausedReason::Manual) => " (paused: weir resume to continue)",
                    Some(PausedReason::Step) => " (paused: weir promote to continue)",
                    Some(PausedReason::Inconclusive) => {
                        " (paused, inconclusive: weir promote or weir abort)"
                    }
                    Some(PausedReason::AwaitingPromotion) => {
                        " (preview passed: weir promote to cut over)"
                    }
                    None => "",
                };
                match verdict {
                    Some(v) => format!("{what}{paused}: {v}"),
                    None => format!("{what}{paused}"),
                }
            }
            Phase::Promoting => format!(
                "promoting {}",
                self.s.canary_revision.as_deref().unwrap_or("?")
            ),
            Phase::Succeeded => format!(
                "revision {} promoted",
                self.s.canary_revision.as_deref().unwrap_or("?")
            ),
            Phase::Aborted => self
                .s
                .abort
                .as_ref()
                .map_or_else(|| "aborted".into(), |a| format!("aborted: {}", a.message)),
        }
    }

    /// Ready, Progressing and AnalysisPassing, with `observedGeneration`.
    fn conditions(&mut self) {
        let phase = self.s.phase;
        let ready = !matches!(phase, Phase::Initializing);
        let progressing = matches!(phase, Phase::Progressing | Phase::Promoting);
        self.condition(
            "Ready",
            ready,
            phase.as_str(),
            "the stable cohort serves traffic".into(),
        );
        let message = self.s.message.clone();
        self.condition("Progressing", progressing, phase.as_str(), message);
        if let Some(a) = self.s.last_analysis.clone() {
            let verdict = format!("{:?}", a.verdict);
            self.condition(
                "AnalysisPassing",
                a.verdict != VerdictStatus::Abort,
                &verdict,
                a.rule,
            );
        }
    }

    fn condition(&mut self, kind: &str, ok: bool, reason: &str, message: String) {
        let status = if ok { "True" } else { "False" };
        let generation = self.s.observed_generation;
        let existing = self.s.conditions.iter_mut().find(|c| c.type_ == kind);
        match existing {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Time(self.now);
                }
                c.status = status.into();
                c.reason = reason.into();
                c.message = message;
                c.observed_generation = generation;
            }
            None => self.s.conditions.push(Condition {
                type_: kind.into(),
                status: status.into(),
                reason: reason.into(),
                message,
                last_transition_time: Time(self.now),
                observed_generation: generation,
            }),
        }
    }
}
