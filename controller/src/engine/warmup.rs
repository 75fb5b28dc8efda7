//! A cold canary is not a slow canary: when evidence starts to count, and
//! when a latency abort waits.
//!
//! New replicas are always cold (allocators, caches, graphs compiled on
//! first use) and stable's are warm, so the first requests a canary serves
//! after a traffic change say little about its version. Two guards:
//!
//! - **Warm-up by requests as well as time.** A window opens once
//!   `spec.analysis.warmup` has passed *and* each canary replica has served
//!   `warmupRequests` since the change, whichever is later: at low traffic
//!   a time alone holds too few requests to get past a cold start. The
//!   shell counts the requests (`Evidence::warmup_requests`); this module
//!   decides, and the moment it opens the window is the moment the shell
//!   takes the window's baseline.
//! - **A latency abort waits while the canary is still getting faster.**
//!   When every effect that would abort is a latency effect whose canary
//!   value fell significantly from the early to the late half of the
//!   window (`weir_analysis::compare::trend`), the verdict is held: the
//!   step continues, judged again at the next interval. A hold never
//!   promotes, an error or gauge abort is never held, and `maxDuration`
//!   still ends the step (then `onInconclusive` applies).
//!
//! Why neither costs the error guarantee: the evidence before a window
//! opens is never in it, so where the window starts is chosen from data the
//! confidence sequences never see; and holding a verdict only moves the
//! time it is read, which the sequences allow (they are valid at every
//! look, so at any stopping time). A canary within its margins is aborted
//! with probability at most α either way; a canary beyond them is promoted
//! with probability at most α, and a hold can only delay its abort.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_analysis::compare::trend;
use weir_analysis::decision::{Decision, Finding, Role, quantile_label};
use weir_analysis::{MetricKind, MetricResult};
use weir_crds::WarmupProgress;

use super::spec::format_duration;
use super::{Cx, Evidence, after, elapsed, reasons};

/// How often a window waiting for requests looks again, as a share of the
/// analysis interval: requests arrive between verdicts.
const WARMUP_LOOKS_PER_INTERVAL: u32 = 5;

impl Cx<'_> {
    /// The request warm-up of the current window, while it lasts.
    pub(super) fn warmup_progress(&self) -> Option<WarmupProgress> {
        self.s.window.as_ref().and_then(|w| w.warmup)
    }

    /// Whether the window still warms up on requests. Counts the canary's
    /// requests from this window's evidence and opens the window (its
    /// `opensAt` becomes now, the shell's baseline moment) once they and
    /// the warm-up time both suffice.
    pub(super) fn warming(&mut self) -> bool {
        let now = self.now;
        let look_again = after(
            now,
            (self.r.analysis.interval / WARMUP_LOOKS_PER_INTERVAL).max(Duration::from_millis(50)),
        );
        let seen = self
            .obs
            .evidence
            .as_ref()
            .map(|e| (e.window, e.warmup_requests));
        let Some(window) = self.s.window.as_mut() else {
            return false;
        };
        let Some(mut progress) = window.warmup else {
            return false;
        };
        if let Some((_, requests)) = seen.filter(|(id, _)| *id == window.id) {
            // The count only grows within a window; a snapshot that came
            // back short (a proxy replica restarted) does not undo it.
            progress.requests = progress.requests.max(requests);
        }
        let time_left = now < window.opens_at.0;
        if !time_left && progress.requests >= progress.needed {
            let waited = elapsed(window.opens_at.0, now) + self.r.analysis.warmup;
            window.warmup = None;
            window.opens_at = Time(now);
            self.event(
                false,
                reasons::WARMED_UP,
                format!(
                    "canary warmed up: {} requests per replica in {} (warmupRequests {}, warmup {}); evidence counts from now",
                    progress.requests,
                    format_duration(Duration::from_secs(waited.as_secs())),
                    progress.needed,
                    format_duration(self.r.analysis.warmup)
                ),
            );
            return false;
        }
        window.warmup = Some(progress);
        let wake = if time_left {
            window.opens_at.0
        } else {
            look_again
        };
        self.wake_at(wake);
        true
    }

    /// Why an abort `d` waits: every effect beyond its margin is a latency
    /// effect whose canary value is still falling within the window. `None`
    /// when the verdict is not an abort or any part of it stands.
    pub(super) fn still_falling(&self, d: &Decision, ev: &Evidence) -> Option<String> {
        if d.verdict != weir_analysis::Verdict::Abort {
            return None;
        }
        let level = 1.0 - self.r.analysis.policy.confidence;
        let mut falling = Vec::new();
        for m in d
            .metrics
            .iter()
            .filter(|m| m.role != Role::Reference && m.finding == Finding::Exceeds)
        {
            falling.push(self.fell(m, ev, level)?);
        }
        if falling.is_empty() {
            return None;
        }
        Some(format!(
            "continue: canary latency still falling within the window ({}); the abort waits until it levels off [{}]",
            falling.join(", "),
            d.rule.strip_prefix("abort: ").unwrap_or(&d.rule)
        ))
    }

    /// "ttft.p95 -31% from its first half to its second, z 3.2"
    /// when latency effect `m` fell significantly at one-sided `level`.
    fn fell(&self, m: &MetricResult, ev: &Evidence, level: f64) -> Option<String> {
        if m.kind != MetricKind::Latency {
            return None;
        }
        let metric = self.r.analysis.metrics.iter().find(|c| {
            m.name
                .strip_prefix(&c.spec.name)
                .is_some_and(|e| e.starts_with('.'))
        })?;
        let effect = &m.name[metric.spec.name.len() + 1..];
        // Judged both ways, only a rise (`.up`) can be a cold start; a
        // canary shown faster than its margin allows is not held.
        if effect.ends_with(".down") {
            return None;
        }
        let effect = effect.strip_suffix(".up").unwrap_or(effect);
        let quantile = match effect {
            "shift" => None,
            label => Some(
                *metric
                    .spec
                    .quantiles
                    .iter()
                    .find(|q| quantile_label(**q) == label)?,
            ),
        };
        let (_, slices) = ev.slices.iter().find(|(n, _)| *n == metric.spec.name)?;
        let t = trend(slices, quantile)?;
        t.falling(level).then(|| {
            format!(
                "{} {:+.0}% from its first half to its second, z {:.1}",
                m.name,
                -t.drop() * 100.0,
                t.z()
            )
        })
    }
}
