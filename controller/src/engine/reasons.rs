//! Event and abort reasons: one constant each, so events, status and alerts
//! agree on spelling.

/// A new revision started a rollout.
pub const RUN_STARTED: &str = "RolloutStarted";
/// The canary's share of traffic changed.
pub const WEIGHT_SET: &str = "WeightSet";
/// The canary's replicas served their warm-up requests: the window opened.
pub const WARMED_UP: &str = "WarmedUp";
/// A step waits for a cohort's replicas to become ready (what is missing
/// and the pods' reason).
pub const WAITING_FOR_REPLICAS: &str = "WaitingForReplicas";
/// A run with metrics started while nothing measures its traffic.
pub const NOT_MEASURED: &str = "NotMeasured";
/// A model canary's new model is not listed by every pod yet: the run
/// holds.
pub const MODEL_NOT_LOADED: &str = "ModelNotLoaded";
/// An analysis step passed.
pub const ANALYSIS_PASSED: &str = "AnalysisPassed";
/// An analysis found a regression beyond its margin: aborted.
pub const ANALYSIS_FAILED: &str = "AnalysisFailed";
/// An analysis reached `maxDuration` without a verdict.
pub const INCONCLUSIVE: &str = "AnalysisInconclusive";
/// A pause began.
pub const PAUSED: &str = "Paused";
/// A manual pause ended.
pub const RESUMED: &str = "Resumed";
/// A person ended a step or promoted fully.
pub const PROMOTED_BY_HAND: &str = "PromotedByRequest";
/// The canary won; promotion began.
pub const PROMOTING: &str = "Promoting";
/// The canary's version is stable now.
pub const PROMOTED: &str = "Promoted";
/// A person aborted the run.
pub const MANUAL_ABORT: &str = "AbortedByRequest";
/// The run made no progress within `progressDeadlineSeconds`.
pub const PROGRESS_DEADLINE: &str = "ProgressDeadlineExceeded";
/// A newer revision replaced the run.
pub const SUPERSEDED: &str = "Superseded";
/// An aborted run was restarted.
pub const RETRIED: &str = "Retried";
/// The steps up to the current one were edited: the run starts again.
pub const STEPS_CHANGED: &str = "StepsChanged";
/// Blue-green: all traffic moved to the new side.
pub const CUTOVER: &str = "CutOver";
/// Blue-green: post-promotion analysis rolled the cutover back.
pub const ROLLED_BACK: &str = "RolledBack";
/// The proxy stopped (local mode: Ctrl-C) and traffic went back to stable.
pub const INTERRUPTED: &str = "Interrupted";
/// The Canary's spec cannot run as written (condition and Event reason).
pub const INVALID_SPEC: &str = "InvalidSpec";
/// The target Deployment does not exist.
pub const TARGET_MISSING: &str = "TargetNotFound";
/// The Canary was deleted and the target got the stable version back.
pub const REVERTED: &str = "RevertedOnDeletion";
