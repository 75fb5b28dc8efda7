//! Rollout notifications: the engine's transitions sent to webhooks.
//!
//! Split by job: this module turns one reconcile's plan into
//! [`Notification`]s (pure: the Canary, its new status and the plan's
//! events in, documents out); [`config`] reads the webhooks (URLs and
//! headers, from a Secret) and picks the ones a Canary's event goes to;
//! [`payload`] writes the bodies (weir's versioned JSON document, or a
//! Slack message); [`deliver`] sends them from background tasks, with
//! retries, so a slow or dead receiver never holds up a reconcile.
//!
//! Delivery is at-least-once: a notification is retried until a 2xx or its
//! attempts run out, and every attempt carries the same `Idempotency-Key`
//! (also the document's `id`), derived from the Canary, its run and the
//! transition, so a receiver that saw it already can drop the repeat.

pub mod config;
pub mod deliver;
pub mod payload;

use serde::Serialize;
use weir_crds::{Canary, CanaryStatus};

use crate::engine::{Action, Outcome, Plan, reasons};

/// The `apiVersion` of the JSON document; a change that removes or renames
/// a field gets a new version.
pub const API_VERSION: &str = "weir.dev/notification/v1";

/// What happened, as notifications name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    /// A run began (a new revision, or a retry).
    Started,
    /// A step took effect: a weight was set, blue-green cut over, or
    /// promotion began.
    StepReached,
    /// The run is held (a pause step, `weir pause`, `onInconclusive: pause`).
    Paused,
    /// An analysis showed every effect within its margin.
    AnalysisPassed,
    /// An analysis showed an effect beyond its margin (the run aborts).
    AnalysisFailed,
    /// An analysis reached `maxDuration` undecided.
    Inconclusive,
    /// The canary's version is stable now.
    Promoted,
    /// Traffic is back on stable, with the reason.
    Aborted,
}

impl EventKind {
    /// Every kind, in the order of a run.
    pub const ALL: [EventKind; 8] = [
        EventKind::Started,
        EventKind::StepReached,
        EventKind::Paused,
        EventKind::AnalysisPassed,
        EventKind::AnalysisFailed,
        EventKind::Inconclusive,
        EventKind::Promoted,
        EventKind::Aborted,
    ];

    /// The name on the wire (`analysisFailed`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::StepReached => "stepReached",
            EventKind::Paused => "paused",
            EventKind::AnalysisPassed => "analysisPassed",
            EventKind::AnalysisFailed => "analysisFailed",
            EventKind::Inconclusive => "inconclusive",
            EventKind::Promoted => "promoted",
            EventKind::Aborted => "aborted",
        }
    }

    /// The kind of an engine Event reason; `None` for the reasons that are
    /// bookkeeping (resumed, superseded, steps changed, ...).
    pub fn of_reason(reason: &str) -> Option<EventKind> {
        Some(match reason {
            reasons::RUN_STARTED | reasons::RETRIED => EventKind::Started,
            reasons::WEIGHT_SET | reasons::CUTOVER | reasons::PROMOTING => EventKind::StepReached,
            reasons::PAUSED => EventKind::Paused,
            reasons::ANALYSIS_PASSED => EventKind::AnalysisPassed,
            reasons::ANALYSIS_FAILED => EventKind::AnalysisFailed,
            reasons::INCONCLUSIVE => EventKind::Inconclusive,
            reasons::PROMOTED => EventKind::Promoted,
            reasons::MANUAL_ABORT
            | reasons::PROGRESS_DEADLINE
            | reasons::ROLLED_BACK
            | reasons::INTERRUPTED => EventKind::Aborted,
            _ => return None,
        })
    }
}

/// Which Canary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid (a deleted and re-created Canary is another one).
    pub uid: String,
}

/// One effect of the deciding verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Effect {
    /// e.g. `ttft.p95`.
    pub name: String,
    /// `within`, `exceeds`, `undecided`, ...
    pub finding: String,
    /// The verdict line, e.g. `ttft.p95 +200.9% [+116.3%, +288.9%] vs margin +10.0%`.
    pub summary: String,
}

/// The notification document (`apiVersion` [`API_VERSION`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// [`API_VERSION`].
    pub api_version: &'static str,
    /// The idempotency key: the same for every attempt at this event.
    pub id: String,
    /// What happened.
    pub event: EventKind,
    /// The Kubernetes Event reason (`AnalysisFailed`, `AbortedByRequest`, ...).
    pub reason: String,
    /// `warning` for failures and aborts, else `info`.
    pub severity: &'static str,
    /// The engine's sentence, as in the Kubernetes Event.
    pub message: String,
    /// The Canary.
    pub canary: CanaryRef,
    /// The run's phase after the transition.
    pub phase: String,
    /// The current step (0-based).
    pub step: u32,
    /// The canary's share of traffic, in percent.
    pub canary_weight: f64,
    /// The version stable serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// The version on trial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,
    /// Analysis events: the effects of the deciding verdict.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<Effect>,
    /// Aborts: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    /// When the controller decided it (RFC 3339).
    pub time: String,
}

/// FNV-1a, 64 bits: a hash whose value never changes between builds or
/// Rust versions (std's hasher may), for keys receivers keep.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The notifications of one reconcile: one per engine Event of a kind that
/// notifies, plus `aborted` when the run ended aborted by an analysis (the
/// `analysisFailed` or `inconclusive` notification says which effects, the
/// `aborted` one that traffic is back on stable). `status` is the status
/// the plan wrote; `now` is when (RFC 3339).
pub fn from_plan(canary: &Canary, plan: &Plan, now: &str) -> Vec<Notification> {
    let status = &plan.status;
    let aborted = plan
        .actions
        .iter()
        .any(|a| matches!(a, Action::Finish(Outcome::Aborted)));
    let mut out = Vec::new();
    for action in &plan.actions {
        let Action::Event {
            reason, message, ..
        } = action
        else {
            continue;
        };
        let Some(kind) = EventKind::of_reason(reason) else {
            continue;
        };
        out.push(notification(canary, status, kind, reason, message, now));
    }
    let abort_notified = out.iter().any(|n| n.event == EventKind::Aborted);
    if let (true, false, Some(abort)) = (aborted, abort_notified, &status.abort) {
        out.push(notification(
            canary,
            status,
            EventKind::Aborted,
            &abort.reason,
            &abort.message,
            now,
        ));
    }
    out
}

fn notification(
    canary: &Canary,
    status: &CanaryStatus,
    kind: EventKind,
    reason: &str,
    message: &str,
    now: &str,
) -> Notification {
    let namespace = canary.metadata.namespace.clone().unwrap_or_default();
    let name = canary.metadata.name.clone().unwrap_or_default();
    let uid = canary.metadata.uid.clone().unwrap_or_default();
    let step_started = status
        .step_started_at
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let step = status.current_step.to_string();
    // The same transition always gets the same key; two transitions of one
    // run differ in reason, step, the step's start or the message.
    let id = format!(
        "{:016x}",
        fnv1a(&[
            &uid,
            status.canary_revision.as_deref().unwrap_or_default(),
            kind.as_str(),
            reason,
            &step,
            &step_started,
            message,
        ])
    );
    let effects = match kind {
        EventKind::AnalysisPassed | EventKind::AnalysisFailed | EventKind::Inconclusive => status
            .last_analysis
            .iter()
            .flat_map(|a| &a.metrics)
            // Reference tests (Mann-Whitney) decide nothing.
            .filter(|e| e.finding != "none")
            .map(|e| Effect {
                name: e.name.clone(),
                finding: e.finding.clone(),
                summary: e.summary.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let warning = matches!(
        kind,
        EventKind::AnalysisFailed | EventKind::Aborted | EventKind::Inconclusive
    );
    Notification {
        api_version: API_VERSION,
        id,
        event: kind,
        reason: reason.to_string(),
        severity: if warning { "warning" } else { "info" },
        message: message.to_string(),
        canary: CanaryRef {
            namespace,
            name,
            uid,
        },
        phase: status.phase.as_str().to_string(),
        step: status.current_step,
        canary_weight: status.canary_weight,
        stable_revision: status.stable_revision.clone(),
        canary_revision: status.canary_revision.clone(),
        effects,
        abort_reason: match kind {
            EventKind::Aborted => status.abort.as_ref().map(|a| a.reason.clone()),
            _ => None,
        },
        time: now.to_string(),
    }
}

#[cfg(test)]
mod tests;
