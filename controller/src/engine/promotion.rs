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
        if self.r.is_model() {
            // Nothing to roll: the stable cohort asks for the winning
            // model from now on, and serves everything (its model is its
            // revision), so the next run compares with it.
            self.s.stable_revision = Some(canary_rev.clone());
            self.route_all_to(Cohort::Stable);
            return self.succeed(canary_rev);
        }
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
            return self.hand_back(total);
        }
        // Under a GPU budget no pod is ever replaced in place (the
        // Deployment controller does not wait for a terminating pod to
        // give its GPU back before it creates the next one): capacity moves
        // to the proven canary one replica at a time until stable has
        // none, stable takes the new template at zero
        // ([`stable_takes_template`]), and capacity moves back.
        if self.r.gpu_budget.is_some() {
            // Stable took the new template and is growing back: its pods
            // coming up are not rolled out yet, and are the new version.
            if self.obs.stable_carries.as_deref() == Some(canary_rev.as_str()) {
                return self.hand_back(total);
            }
            self.shift_capacity(Cohort::Canary, total, self.r.promotion_limit(total));
            return self.moving(&canary_rev);
        }
        // Keep the proven canary serving while stable is replaced: all of
        // it when the canary can grow to carry everything beside stable
        // (within a maxSurge the user set). Otherwise
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

    /// GPU budget, after stable took the new version: capacity moves back
    /// to stable one replica at a time ([`Cx::shift_capacity`]). Ends when
    /// stable has `total` ready replicas.
    pub(super) fn hand_back(&mut self, total: u32) -> Flow {
        let canary_rev = self.s.canary_revision.clone().unwrap_or_default();
        self.shift_capacity(Cohort::Stable, total, self.r.promotion_limit(total));
        self.moving(&canary_rev)
    }

    /// While capacity moves: look again in a second (pods coming and going
    /// change no Deployment spec), within the promotion's deadline.
    fn moving(&mut self, canary_rev: &str) -> Flow {
        if let Some(flow) = self.promotion_deadline(canary_rev) {
            return flow;
        }
        self.wake_at(after(self.now, Duration::from_secs(1)));
        Flow::Wait
    }

    /// Moves capacity `toward` one cohort one replica at a time, for a
    /// GPU budget that cannot hold both at full size. Traffic follows each
    /// cohort's ready replicas; once the receiving cohort has all it was
    /// given ready and every proxy serves the split, the other gives up
    /// one replica and the receiver takes what that frees (at most
    /// `total`, within `limit`). The shell creates the new pod only once
    /// the old one is gone (`kube::desired`), so the scheduler is never
    /// asked for more than the budget. Returns whether the other cohort is
    /// at zero.
    pub(super) fn shift_capacity(
        &mut self,
        toward: Cohort,
        total: u32,
        limit: Option<u32>,
    ) -> bool {
        let current = self.s.replicas.unwrap_or(CohortReplicas {
            stable: total,
            canary: 0,
        });
        let (rs, rc) = (self.obs.ready.stable, self.obs.ready.canary);
        let (given, ready, from, giving) = match toward {
            Cohort::Stable => (current.stable, rs, Cohort::Canary, current.canary),
            Cohort::Canary => (current.canary, rc, Cohort::Stable, current.stable),
        };
        // About to move one replica: the split it leaves is published (and
        // served by every proxy) before the pod goes, so no request is
        // sent to a cohort whose last pod is leaving.
        let moving = giving > 0 && ready >= given;
        let (rs_after, rc_after) = match (moving, toward) {
            (false, _) => (rs, rc),
            (true, Cohort::Stable) => (rs, rc.min(giving - 1)),
            (true, Cohort::Canary) => (rs.min(giving - 1), rc),
        };
        if rs_after + rc_after > 0 {
            let by_capacity =
                Share::from_fraction(f64::from(rc_after) / f64::from(rs_after + rc_after));
            // Traffic only ever moves toward the receiving cohort: after a
            // blue-green cutover the canary keeps all of it while stable's
            // idle pods go.
            let now = self.traffic_share(Cohort::Canary);
            let share = match toward {
                Cohort::Canary => by_capacity.max(now),
                Cohort::Stable => by_capacity.min(now),
            };
            self.set_traffic(share, false);
        }
        if giving == 0 {
            return true;
        }
        let generation = self.s.traffic.as_ref().map_or(0, |t| t.generation);
        let applied = self.obs.applied_generation.is_some_and(|g| g >= generation);
        if applied && moving {
            let left = giving - 1;
            let taken = limit
                .map_or(total, |l| total.min(l.saturating_sub(left)))
                .max(given);
            self.s.progress_at = Some(Time(self.now));
            self.scale(from, left);
            self.scale(toward, taken);
        }
        false
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
                if self.r.is_model() {
                    "the stable cohort asks for it from now on"
                } else if self.r.is_local() {
                    "all traffic moves to the canary"
                } else {
                    "stable is being updated to it"
                }
            ),
        );
    }
}

/// Whether the stable copy takes the promoted template now: while
/// `Promoting`, at once; under a GPU budget only once stable has no
/// replicas, so that no pod of it is replaced in place (capacity went to
/// the canary first). The shell (`kube::desired`) and the engine's tables
/// read this one rule.
pub fn stable_takes_template(rollout: &super::Rollout, status: &weir_crds::CanaryStatus) -> bool {
    status.phase == Phase::Promoting
        && rollout.manages_pods()
        && (rollout.gpu_budget.is_none() || status.replicas.is_some_and(|r| r.stable == 0))
}
