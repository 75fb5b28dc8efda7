//! Promotion: the proven canary's version becomes stable.
//!
//! Local mode moves all traffic to the canary and is done. Kubernetes mode
//! keeps the canary serving while the stable copy takes its template
//! (`status.phase == Promoting` with `status.canaryRevision` is what the
//! shell converges the stable copy to), then moves traffic back to stable;
//! under a GPU budget capacity returns to stable one replica at a time.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_crds::{Cohort, CohortReplicas, HistoryEvent, Phase};

use super::{Action, Cx, Flow, Outcome, Share, after, elapsed, reasons};

impl Cx<'_> {
    pub(super) fn promoting(&mut self) -> Flow {
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
        // (within the GPU budget and a maxSurge the user set). Otherwise
        // stable is replaced in place, the canary's pods standing in for
        // the surge that does not fit, while the split stays as the last
        // step left it.
        let canary_fits = self
            .r
            .promotion_limit(total)
            .is_none_or(|limit| limit >= total + current.stable);
        if canary_fits && self.traffic_share(Cohort::Canary) < Share::ALL {
            self.scale(Cohort::Canary, total);
            if self.obs.ready.canary >= total {
                self.route_all_to(Cohort::Canary);
            }
        }
        if let Some(flow) = self.promotion_deadline(&canary_rev) {
            return flow;
        }
        // The shell gives the stable copy the canary's template while the
        // phase is Promoting (level-triggered, see `kube::desired`).
        Flow::Wait
    }

    /// Aborts a promotion that made no progress within the deadline.
    pub(super) fn promotion_deadline(&mut self, canary_rev: &str) -> Option<Flow> {
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
    pub(super) fn hand_back(&mut self, total: u32, current: CohortReplicas) -> Flow {
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
                .promotion_limit(total)
                .map_or(total, |limit| total.min(limit.saturating_sub(canary)))
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

    pub(super) fn succeed(&mut self, revision: String) -> Flow {
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

    pub(super) fn enter_promoting(&mut self) {
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
}
