//! `status`: what the controller reports about a run (phase, step,
//! replicas, the analysis in progress and its latest verdict, history).
//! The traffic contract with the proxies, also in status, is in
//! [`crate::traffic`].

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Traffic;
// Only the doc link of `Acknowledged` names it; rustc does not count that.
#[allow(unused_imports, reason = "named by a doc link")]
use crate::annotations;

/// What the controller reports, and the traffic contract with the proxies.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// The spec generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the run is.
    #[serde(default)]
    pub phase: Phase,
    /// One line for people, e.g. `step 2/7: analysis, 812/1000 samples`.
    #[serde(default)]
    pub message: String,
    /// Index of the current step.
    #[serde(default)]
    pub current_step: u32,
    /// Fingerprint of the steps up to and including the current one, as
    /// the run took them. An edit that changes them during the run (a step
    /// removed, inserted or changed before or at the current one) restarts
    /// the run from its first step, so no step is skipped or judged twice
    /// under a plan nobody wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_hash: Option<String>,
    /// When the current step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// Why the run is paused (phase `Paused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<PausedReason>,
    /// The canary's share of traffic now, in percent (for `kubectl get`).
    #[serde(default)]
    pub canary_weight: f64,
    /// The version stable serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// The version on trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,
    /// When the run made its last progress (for `progressDeadlineSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_at: Option<Time>,
    /// Ready, Progressing, AnalysisPassing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Replicas the engine wants per cohort (a graph: in units of its
    /// largest component's replicas; `components` has each one's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<CohortReplicas>,
    /// Kubernetes mode: the replicas the user asked of the target. The
    /// controller scales the target as the canary cohort, so the user's
    /// count is kept here: recorded at first sight, and again when the user
    /// scales the target while no run is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_replicas: Option<u32>,
    /// Kubernetes mode, a graph: each component in start order, the target
    /// included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentStatus>,
    /// The contract with every proxy replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
    /// The analysis window in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<AnalysisWindow>,
    /// The latest verdict with its numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<AnalysisStatus>,
    /// Blue-green progress after cutover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover: Option<Cutover>,
    /// Why the run was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortStatus>,
    /// Commands already acted on.
    #[serde(default)]
    pub acknowledged: Acknowledged,
    /// Promotions, aborts and rollbacks, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Nothing recorded yet: the first reconcile adopts the current version
    /// as stable.
    #[default]
    Initializing,
    /// Stable serves everything; no canary.
    Idle,
    /// Steps are running.
    Progressing,
    /// Held by a pause step, `spec.paused` or `onInconclusive: pause`.
    Paused,
    /// The canary has won; stable is being updated to its version.
    Promoting,
    /// The canary's version is stable now.
    Succeeded,
    /// Traffic is back on stable; the canary lost or was stopped.
    Aborted,
}

impl Phase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Phase; 7] = [
        Phase::Initializing,
        Phase::Idle,
        Phase::Progressing,
        Phase::Paused,
        Phase::Promoting,
        Phase::Succeeded,
        Phase::Aborted,
    ];

    /// The name as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Initializing => "Initializing",
            Phase::Idle => "Idle",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Promoting => "Promoting",
            Phase::Succeeded => "Succeeded",
            Phase::Aborted => "Aborted",
        }
    }

    /// Whether the run is over (nothing moves until a new revision or a
    /// retry).
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Aborted | Phase::Idle)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PausedReason {
    /// A `pause` step without a duration: until `weir promote`.
    Step,
    /// `spec.paused` (`weir pause`): until `weir resume`.
    Manual,
    /// An analysis reached `maxDuration` undecided with
    /// `onInconclusive: pause`: until `weir promote` or `weir abort`.
    Inconclusive,
    /// Blue-green with `autoPromote: false`: until `weir promote`.
    AwaitingPromotion,
}

/// One component of a graph, as the controller last saw and scaled it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// The user's Deployment (the canary cohort; stable is its
    /// `-stable` copy).
    pub name: String,
    /// The replicas the user asked of it: recorded like
    /// `targetReplicas`; each cohort's count is its proportion of the
    /// graph's units in `replicas` above.
    pub target_replicas: u32,
    /// Replicas given per cohort now (a component waits for the ones
    /// before it in the order to be ready before it grows, for the ones
    /// after it to be gone before it shrinks, and under `graph.gpuBudget`
    /// for GPUs its own pods do not hold).
    pub replicas: CohortReplicas,
    /// Ready replicas per cohort.
    pub ready: CohortReplicas,
    /// The revision the stable copy runs once rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
}

/// Replicas per cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CohortReplicas {
    /// Stable replicas.
    pub stable: u32,
    /// Canary replicas.
    pub canary: u32,
}

impl CohortReplicas {
    /// The count of `cohort`.
    pub fn get(self, cohort: crate::Cohort) -> u32 {
        match cohort {
            crate::Cohort::Stable => self.stable,
            crate::Cohort::Canary => self.canary,
        }
    }

    /// The count of `cohort`, to change it.
    pub fn get_mut(&mut self, cohort: crate::Cohort) -> &mut u32 {
        match cohort {
            crate::Cohort::Stable => &mut self.stable,
            crate::Cohort::Canary => &mut self.canary,
        }
    }
}

/// The evidence window of the analysis in progress. Observations count only
/// from `opensAt` (the end of the warm-up after the last traffic change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisWindow {
    /// Changes whenever the window restarts; evidence of another id is stale.
    pub id: u64,
    /// Evidence before this is warm-up and is ignored. While `warmup` is
    /// set, the earliest the window can open; once it opens, when it did.
    pub opens_at: Time,
    /// Which analysis this window serves.
    pub purpose: WindowPurpose,
    /// Set while the window waits for the canary's replicas to serve
    /// their warm-up requests (`spec.analysis.warmupRequests`); cleared
    /// when the window opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupProgress>,
}

/// How far a window's request warm-up has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmupProgress {
    /// Requests per canary replica served since the traffic change.
    pub requests: u64,
    /// Requests per canary replica the window waits for.
    pub needed: u64,
}

impl fmt::Display for WarmupProgress {
    /// `warming up: 12/50 requests per canary replica`, as status and
    /// progress lines show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "warming up: {}/{} requests per canary replica",
            self.requests.min(self.needed),
            self.needed
        )
    }
}

/// Which analysis a window serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WindowPurpose {
    /// A canary `analysis` step.
    Step,
    /// Blue-green, before cutover (override-header traffic).
    PrePromotion,
    /// Blue-green, after cutover.
    PostPromotion,
}

/// The latest verdict with its numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// Promote, Continue or Abort.
    pub verdict: VerdictStatus,
    /// When it was taken.
    pub at: Time,
    /// The rule that fired, in a sentence.
    pub rule: String,
    /// Each effect: estimate, interval, samples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<EffectStatus>,
}

/// A verdict as reported in status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VerdictStatus {
    /// Every effect is within its margin.
    Promote,
    /// Not enough evidence yet.
    Continue,
    /// An effect is beyond its margin.
    Abort,
}

impl VerdictStatus {
    /// The name as written in status (`Promote`, `Continue`, `Abort`).
    pub const fn as_str(self) -> &'static str {
        match self {
            VerdictStatus::Promote => "Promote",
            VerdictStatus::Continue => "Continue",
            VerdictStatus::Abort => "Abort",
        }
    }
}

/// One judged effect, as reported in status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectStatus {
    /// e.g. `ttft p95`.
    pub name: String,
    /// within, exceeds, undecided, insufficient.
    pub finding: String,
    /// Canary against stable, e.g. `+4.1% [−1.2%, +9.8%] (n 812/3130)`.
    pub summary: String,
    /// The point estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<f64>,
    /// Lower end of the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    /// Upper end of the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
    /// The margin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// Samples in stable.
    pub stable_n: u64,
    /// Samples in the canary.
    pub canary_n: u64,
}

/// Blue-green after cutover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cutover {
    /// When all traffic moved to the new side.
    pub at: Time,
    /// When the old side may be scaled down (once drained).
    pub scale_down_at: Time,
}

/// Why a run was aborted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortStatus {
    /// A reason constant, e.g. `AnalysisFailed`.
    pub reason: String,
    /// What happened, naming the metric when there is one.
    pub message: String,
    /// When.
    pub at: Time,
}

/// Command ids already acted on (see [`annotations`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Acknowledged {
    /// Last promote request handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<String>,
    /// Last abort request handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<String>,
    /// Last retry request handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
}

/// One line of history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// What happened.
    pub event: HistoryEvent,
    /// The canary revision concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Why, in a sentence.
    pub reason: String,
    /// When.
    pub at: Time,
}

/// A history event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HistoryEvent {
    /// The canary's version became stable.
    Promoted,
    /// The run was aborted.
    Aborted,
    /// A newer revision replaced the run.
    Superseded,
    /// Blue-green: post-promotion analysis rolled the cutover back.
    RolledBack,
}

impl HistoryEvent {
    /// The name as written in status (`Promoted`, `Aborted`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            HistoryEvent::Promoted => "Promoted",
            HistoryEvent::Aborted => "Aborted",
            HistoryEvent::Superseded => "Superseded",
            HistoryEvent::RolledBack => "RolledBack",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `as_str` is what status says: the serialized name, for every variant.
    #[test]
    fn names_are_the_serialized_names() {
        for v in [
            VerdictStatus::Promote,
            VerdictStatus::Continue,
            VerdictStatus::Abort,
        ] {
            assert_eq!(serde_json::to_value(v).ok(), Some(v.as_str().into()));
        }
        for e in [
            HistoryEvent::Promoted,
            HistoryEvent::Aborted,
            HistoryEvent::Superseded,
            HistoryEvent::RolledBack,
        ] {
            assert_eq!(serde_json::to_value(e).ok(), Some(e.as_str().into()));
        }
    }
}
