//! What one call leaves behind: events, history, the status message, the
//! conditions and when to call again.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_crds::{Cohort, HistoryEntry, HistoryEvent, PausedReason, Phase, VerdictStatus};

use super::conditions::{self, ConditionType, Wanted};
use super::spec::Mode;
use super::{Action, Cx, Plan, Share, elapsed, reasons, step_label, steps_fingerprint};

impl Cx<'_> {
    pub(super) fn wake_at(&mut self, t: Timestamp) {
        if t > self.now {
            self.wake = Some(self.wake.map_or(t, |w| w.min(t)));
        }
    }

    pub(super) fn event(&mut self, warning: bool, reason: &'static str, message: String) {
        self.actions.push(Action::Event {
            warning,
            reason,
            message,
        });
    }

    pub(super) fn history(&mut self, event: HistoryEvent, reason: String) {
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

    pub(super) fn finish(mut self) -> Plan {
        self.s.steps_hash = matches!(self.s.phase, Phase::Progressing | Phase::Paused)
            .then(|| steps_fingerprint(&self.r.strategy, self.s.current_step));
        let before = std::mem::take(&mut self.s.message);
        self.s.message = self.describe();
        if let Some(waiting) = self.waiting_for()
            && !before.contains(&waiting)
        {
            // Once per change of what is missing, not per reconcile. A
            // warning when the pods say why (unschedulable, a failing
            // probe): someone has to act.
            let warning = self
                .waiting
                .is_some_and(|w| self.obs.unready.get(w.cohort).as_deref().is_some());
            self.event(warning, reasons::WAITING_FOR_REPLICAS, waiting);
        }
        if let Some(unloaded) = &self.unloaded
            && !before.contains(unloaded.as_str())
        {
            // Someone has to load it: a warning, once per reason.
            let message = format!(
                "new revision {} holds: {unloaded}",
                self.obs.desired_revision
            );
            self.event(true, reasons::MODEL_NOT_LOADED, message);
        }
        if let Some(unmeasured) = self.unmeasured()
            && !before.contains(&unmeasured)
            && self.s.message.contains(&unmeasured)
        {
            self.event(true, reasons::NOT_MEASURED, unmeasured);
        }
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
                if self.r.manages_pods() && self.s.replicas.is_some_and(|r| r.canary > 0) =>
            {
                Some(Duration::from_secs(1))
            }
            Phase::Idle | Phase::Succeeded | Phase::Aborted if self.unloaded.is_some() => {
                self.wake.map(|w| elapsed(self.now, w))
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
    pub(super) fn describe(&self) -> String {
        let verdict = self.s.last_analysis.as_ref().map(|a| a.rule.as_str());
        // Set only while settled (Idle, Succeeded, Aborted).
        if let Some(unloaded) = &self.unloaded {
            return format!(
                "stable {}; new revision {} holds: {unloaded}",
                self.s.stable_revision.as_deref().unwrap_or("?"),
                self.obs.desired_revision
            );
        }
        match self.s.phase {
            Phase::Initializing => "initializing".into(),
            Phase::Idle => {
                let stable = self.s.stable_revision.as_deref().unwrap_or("?");
                match self.waiting_for() {
                    Some(w) => format!(
                        "stable {stable}; new revision {} holds until stable is ready: {w}",
                        self.obs.desired_revision
                    ),
                    None => match (self.r.gpu_budget, self.s.replicas) {
                        (Some(budget), Some(r))
                            if r.canary > 0 && self.traffic_share(Cohort::Canary) > Share::NONE =>
                        {
                            format!(
                                "adopting within gpuBudget {budget}: the target's replicas move \
                                 to the stable copy one at a time ({}/{} ready there, {} left \
                                 on the target)",
                                self.obs.ready.stable, self.obs.target_replicas, r.canary
                            )
                        }
                        _ => format!("stable {stable} serves all traffic"),
                    },
                }
            }
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
                let said = match (self.waiting_for(), self.warmup_progress(), verdict) {
                    (Some(w), _, _) => format!("{what}{paused}: {w}"),
                    (None, Some(w), _) => format!("{what}{paused}: {w}"),
                    (None, None, Some(v)) => format!("{what}{paused}: {v}"),
                    (None, None, None) => format!("{what}{paused}"),
                };
                match self.unmeasured() {
                    Some(u) => format!("{said}; {u}"),
                    None => said,
                }
            }
            Phase::Promoting => {
                let revision = self.s.canary_revision.as_deref().unwrap_or("?");
                match (self.r.gpu_budget, self.s.replicas) {
                    (Some(budget), Some(r)) => format!(
                        "promoting {revision} within gpuBudget {budget}: stable {}/{} ready, \
                         canary {}/{}",
                        self.obs.ready.stable, r.stable, self.obs.ready.canary, r.canary
                    ),
                    _ => format!("promoting {revision}"),
                }
            }
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

    /// What a run with metrics says when nothing measures its traffic.
    pub(super) fn unmeasured(&self) -> Option<String> {
        let why = self.obs.unmeasured.as_deref()?;
        (!self.r.analysis.metrics.is_empty())
            .then(|| format!("not measured: {why}; its analysis cannot pass"))
    }

    /// Ready, Progressing and AnalysisPassing, with `observedGeneration`.
    pub(super) fn conditions(&mut self) {
        let phase = self.s.phase;
        let generation = self.s.observed_generation;
        let message = self.s.message.clone();
        let last = self.s.last_analysis.clone();
        // Kubernetes: stable was given replicas and none of them is ready.
        let stable_wanted = self.s.replicas.map_or(0, |r| r.stable);
        let stable_down = self.r.manages_pods()
            && !matches!(phase, Phase::Initializing)
            && stable_wanted > 0
            && self.obs.ready.stable == 0;
        let stable_message = if stable_down {
            let why = self
                .obs
                .unready
                .stable
                .as_deref()
                .map_or_else(String::new, |w| format!("; {w}"));
            let deployment = match &self.r.mode {
                Mode::Kubernetes { target, .. } => {
                    format!("{} ", weir_crds::names::stable_deployment(target))
                }
                Mode::Local { .. } => String::new(),
            };
            format!(
                "the stable cohort has no ready replica: {deployment}0/{stable_wanted} ready{why}"
            )
        } else {
            "the stable cohort serves traffic".to_string()
        };
        let mut wanted = vec![
            Wanted {
                kind: ConditionType::Ready,
                ok: !matches!(phase, Phase::Initializing) && !stable_down,
                reason: if stable_down {
                    "StableNotReady"
                } else {
                    phase.as_str()
                },
                message: &stable_message,
                generation,
            },
            Wanted {
                kind: ConditionType::Progressing,
                ok: matches!(phase, Phase::Progressing | Phase::Promoting),
                reason: phase.as_str(),
                message: &message,
                generation,
            },
        ];
        if let Some(a) = &last {
            wanted.push(Wanted {
                kind: ConditionType::AnalysisPassing,
                ok: a.verdict != VerdictStatus::Abort,
                reason: a.verdict.as_str(),
                message: &a.rule,
                generation,
            });
        }
        for w in wanted {
            conditions::set(&mut self.s.conditions, w, self.now);
        }
    }
}
