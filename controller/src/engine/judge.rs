//! Analysis windows and verdicts: when evidence counts, when a verdict is
//! due, and what each verdict does to the run.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_analysis::Verdict;
use weir_analysis::decision::{Decision, Role};
use weir_crds::{
    AnalysisStatus, AnalysisWindow, EffectStatus, PausedReason, Phase, WarmupProgress,
    WindowPurpose,
};

use super::spec::AnalysisBounds;
use super::{Cx, Flow, Judged, after, elapsed, reasons, verdict_status};

impl Cx<'_> {
    pub(super) fn window_purpose(&self) -> WindowPurpose {
        self.s
            .window
            .as_ref()
            .map_or(WindowPurpose::Step, |w| w.purpose)
    }

    /// Starts a new evidence window a warm-up from now: its time, and its
    /// requests per canary replica when the spec asks for some (the window
    /// then opens when both have passed, see `warming`).
    pub(super) fn open_window(&mut self, purpose: WindowPurpose) {
        let opens_at = after(self.now, self.r.analysis.warmup);
        let needed = self.r.analysis.warmup_requests;
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
            warmup: (needed > 0).then_some(WarmupProgress {
                requests: 0,
                needed,
            }),
        });
        self.s.last_analysis = None;
    }

    /// Judges the window at each interval within the step's bounds.
    pub(super) fn judge(
        &mut self,
        bounds: AnalysisBounds,
        purpose: WindowPurpose,
        load_matters: bool,
    ) -> Judged {
        if self.s.window.as_ref().is_none_or(|w| w.purpose != purpose) {
            self.open_window(purpose);
        }
        // Before the clone: opening the window moves its `opensAt`.
        let warming = self.warming();
        let Some(window) = self.s.window.clone() else {
            return Judged::Pending;
        };
        let started = self.s.step_started_at.as_ref().map_or(self.now, |t| t.0);
        let verdict = if warming {
            None
        } else {
            self.look(&window, load_matters)
        };
        match verdict {
            Some((Verdict::Abort, rule)) => return Judged::Failed(rule),
            Some((Verdict::Promote, _)) if elapsed(started, self.now) >= bounds.min => {
                return Judged::Passed;
            }
            _ => {}
        }
        if elapsed(started, self.now) >= bounds.max {
            let rule = match (&self.s.last_analysis, self.warmup_progress()) {
                (_, Some(w)) => w.to_string(),
                (Some(a), None) => a.rule.clone(),
                (None, None) => "no evidence arrived".to_string(),
            };
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
    pub(super) fn look(
        &mut self,
        window: &AnalysisWindow,
        load_matters: bool,
    ) -> Option<(Verdict, String)> {
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
            .filter(|e| e.window == window.id && !e.metrics.is_empty())?;
        let mut inputs = Vec::with_capacity(self.r.analysis.metrics.len());
        for m in &self.r.analysis.metrics {
            if let Some((_, o)) = ev.metrics.iter().find(|(n, _)| *n == m.spec.name) {
                inputs.push((m.spec.clone(), o.clone()));
            }
        }
        let load = if load_matters { ev.load } else { None };
        match weir_analysis::decide(&self.r.analysis.policy, &inputs, load) {
            Ok(mut decision) => {
                if let Some(why) = self.still_falling(&decision, ev) {
                    decision.verdict = Verdict::Continue;
                    decision.rule = why;
                }
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
    pub(super) fn watch(&mut self) -> Option<Flow> {
        if self.r.analysis.metrics.is_empty() || self.s.window.is_none() || self.warming() {
            return None;
        }
        let window = self.s.window.clone()?;
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
    pub(super) fn record(&mut self, d: &Decision) {
        let canary_n = d.metrics.iter().map(|m| m.canary_n).max().unwrap_or(0);
        let before = self.s.last_analysis.as_ref().map_or(0, |a| {
            a.metrics.iter().map(|m| m.canary_n).max().unwrap_or(0)
        });
        if canary_n > before {
            self.s.progress_at = Some(Time(self.now));
        }
        self.s.last_analysis = Some(AnalysisStatus {
            verdict: verdict_status(d.verdict),
            at: Time(self.now),
            rule: d.rule.clone(),
            metrics: d
                .metrics
                .iter()
                .filter(|m| m.role != Role::Reference)
                .map(|m| EffectStatus {
                    name: m.name.clone(),
                    finding: m.finding.as_str().into(),
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
    pub(super) fn inconclusive(&mut self, rule: String) -> Flow {
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
}
