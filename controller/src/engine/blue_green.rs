//! The blue-green strategy: a preview reachable only through the override
//! header, an optional pre-promotion analysis, one atomic cutover, an
//! optional post-promotion analysis that rolls back on a regression, and the
//! old side kept warm until `scaleDownDelay` has passed and it has drained.
//!
//! `status.currentStep` indexes [`STAGES`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_crds::{Cohort, Cutover, HistoryEvent, PausedReason, Phase, WindowPurpose};

use super::spec::{BlueGreen, Share};
use super::{Cx, Flow, Judged, after, reasons};

/// The stages, in order.
pub const STAGES: [&str; 5] = [
    "preview",
    "pre-promotion analysis",
    "cutover",
    "post-promotion analysis",
    "scale-down delay",
];

const PREVIEW: u32 = 0;
const PRE: u32 = 1;
const CUTOVER: u32 = 2;
const POST: u32 = 3;
const SCALE_DOWN: u32 = 4;

impl Cx<'_> {
    pub(super) fn blue_green_step(&mut self, bg: &BlueGreen) -> Flow {
        match self.s.current_step {
            PREVIEW => {
                let total = self.obs.target_replicas.max(1);
                let preview = bg.preview_replicas.unwrap_or(total);
                self.scale(Cohort::Canary, preview);
                if self.r.manages_pods() && self.obs.ready.canary < preview {
                    return self.wait_for_ready(Cohort::Canary, preview);
                }
                // Live traffic stays on stable; the override header reaches
                // the preview.
                self.set_traffic(Share::NONE, true);
                self.open_window(WindowPurpose::PrePromotion);
                self.advance();
                Flow::Again
            }
            PRE => {
                if let Some(bounds) = bg.pre {
                    // Preview traffic is whatever carries the header: its
                    // per-replica load says nothing about fairness.
                    match self.judge(bounds, WindowPurpose::PrePromotion, false) {
                        Judged::Passed => {}
                        Judged::Failed(why) => {
                            self.abort(
                                reasons::ANALYSIS_FAILED,
                                format!("pre-promotion analysis: {why}"),
                            );
                            return Flow::Again;
                        }
                        Judged::Inconclusive(rule) => return self.inconclusive(rule),
                        Judged::Pending => return Flow::Wait,
                    }
                }
                if !bg.auto_promote {
                    self.s.phase = Phase::Paused;
                    self.s.paused_reason = Some(PausedReason::AwaitingPromotion);
                    self.event(
                        false,
                        reasons::PAUSED,
                        "preview ready: weir promote cuts over".into(),
                    );
                    return Flow::Wait;
                }
                self.advance();
                Flow::Again
            }
            CUTOVER => {
                // A preview smaller than stable would take all the traffic
                // at its own size: grow it to stable's size first, and cut
                // over once that many are ready.
                let total = self.obs.target_replicas.max(1);
                self.scale(Cohort::Canary, total);
                if self.r.manages_pods() && self.obs.ready.canary < total {
                    return self.wait_for_ready(Cohort::Canary, total);
                }
                self.set_traffic(Share::ALL, false);
                self.s.cutover = Some(Cutover {
                    at: Time(self.now),
                    scale_down_at: Time(after(self.now, bg.scale_down_delay)),
                });
                self.open_window(WindowPurpose::PostPromotion);
                self.event(
                    false,
                    reasons::CUTOVER,
                    "all traffic moved to the new version".into(),
                );
                self.advance();
                Flow::Again
            }
            POST => {
                if let Some(bounds) = bg.post {
                    match self.judge(bounds, WindowPurpose::PostPromotion, false) {
                        Judged::Passed => {}
                        Judged::Failed(why) => {
                            self.rollback(format!("post-promotion analysis: {why}"));
                            return Flow::Again;
                        }
                        Judged::Inconclusive(rule) => return self.inconclusive(rule),
                        Judged::Pending => return Flow::Wait,
                    }
                }
                self.advance();
                Flow::Again
            }
            SCALE_DOWN => {
                let until = self
                    .s
                    .cutover
                    .as_ref()
                    .map_or(self.now, |c| c.scale_down_at.0);
                // Waiting out the delay is the plan, not a stall.
                self.s.progress_at = Some(Time(self.now));
                if self.now < until {
                    self.wake_at(until);
                    return Flow::Wait;
                }
                let drained = self.obs.open_streams.is_none_or(|o| o.stable == 0);
                if !drained {
                    self.wake_at(after(self.now, std::time::Duration::from_secs(1)));
                    return Flow::Wait;
                }
                self.enter_promoting();
                Flow::Again
            }
            _ => {
                self.enter_promoting();
                Flow::Again
            }
        }
    }

    /// Post-promotion regression: traffic back to the old side, which is
    /// still warm.
    fn rollback(&mut self, message: String) {
        self.abort(reasons::ROLLED_BACK, message.clone());
        if let Some(last) = self.s.history.last_mut() {
            last.event = HistoryEvent::RolledBack;
        }
    }
}
