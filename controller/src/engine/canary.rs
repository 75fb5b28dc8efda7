//! The canary strategy: weighted steps, pauses and analyses in order.

use weir_crds::{PausedReason, Phase, WindowPurpose};

use super::spec::{Step, Strategy};
use super::{Cx, Flow, Judged, reasons};

impl Cx<'_> {
    pub(super) fn canary_step(&mut self) -> Flow {
        let Strategy::Canary {
            fixed_replicas,
            steps,
        } = &self.r.strategy
        else {
            return Flow::Wait;
        };
        let Some(step) = steps.get(self.s.current_step as usize).copied() else {
            self.enter_promoting();
            return Flow::Again;
        };
        match step {
            Step::SetWeight(share) => {
                let want = self.replicas_for(share, *fixed_replicas);
                // Canary capacity first, then traffic: a share never lands
                // on replicas that are not ready to take it.
                self.scale(super::Cohort::Canary, want.canary);
                self.scale(super::Cohort::Stable, want.stable);
                if self.r.manages_pods() && self.obs.ready.canary < want.canary {
                    return self.wait_for_ready(super::Cohort::Canary, want.canary);
                }
                let changed = self.traffic_share(super::Cohort::Canary) != share;
                self.set_traffic(share, false);
                if changed || self.s.window.is_none() {
                    self.open_window(WindowPurpose::Step);
                }
                self.event(
                    false,
                    reasons::WEIGHT_SET,
                    format!("canary weight {share}%"),
                );
                self.advance();
                Flow::Again
            }
            Step::Pause(Some(d)) => {
                if let Some(flow) = self.watch() {
                    return flow;
                }
                let started = self.s.step_started_at.as_ref().map_or(self.now, |t| t.0);
                let until = super::after(started, d);
                if self.now >= until {
                    self.advance();
                    return Flow::Again;
                }
                // A timed pause is not a stall.
                self.s.progress_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    self.now,
                ));
                self.wake_at(until);
                Flow::Wait
            }
            Step::Pause(None) => {
                self.s.phase = Phase::Paused;
                self.s.paused_reason = Some(PausedReason::Step);
                self.event(
                    false,
                    reasons::PAUSED,
                    format!(
                        "step {}: paused until weir promote",
                        self.s.current_step + 1
                    ),
                );
                Flow::Wait
            }
            Step::Analysis(bounds) => match self.judge(bounds, WindowPurpose::Step, true) {
                Judged::Passed => {
                    let rule = self
                        .s
                        .last_analysis
                        .as_ref()
                        .map(|a| a.rule.clone())
                        .unwrap_or_default();
                    self.event(
                        false,
                        reasons::ANALYSIS_PASSED,
                        format!("step {}: {rule}", self.s.current_step + 1),
                    );
                    self.advance();
                    Flow::Again
                }
                Judged::Failed(why) => {
                    self.abort(reasons::ANALYSIS_FAILED, why);
                    Flow::Again
                }
                Judged::Inconclusive(rule) => self.inconclusive(rule),
                Judged::Pending => Flow::Wait,
            },
        }
    }
}
