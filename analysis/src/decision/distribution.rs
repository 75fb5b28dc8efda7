//! Latency and distribution metrics (any positive per-request quantity:
//! TTFT, output tokens, decode speed): the Hodges-Lehmann shift and each
//! requested quantile's ratio, all relative effects on a log scale, with
//! Mann-Whitney as the reference test. One comparison
//! ([`compare_latency`]) serves both kinds; each effect is then judged once
//! per direction with a margin.
//!
//! Zeros (an empty answer's 0 output tokens) sit in the distribution's zero
//! bin and count as the smallest values: they take part in the ranks, the
//! shift and the quantiles (a quantile that falls among them is 0, a ratio
//! of `ln(MIN_VALUE)`-ish on the log scale, i.e. about −100%). The *share*
//! of zeros is best judged on its own as a proportion (an error-rate
//! metric); see [`crate::compare::latency`].

use super::effect::{effect, fill_log_effect, reference};
use super::{
    Direction, MIN_TAIL_OBSERVATIONS, Margin, MetricResult, MetricSpec, Policy, trim_float,
};
use crate::compare::compare_latency;
use crate::dist::Distribution;
use crate::sequential::Sides;

pub(super) fn judge_distribution(
    spec: &MetricSpec,
    policy: &Policy,
    sides: Sides,
    baseline: &Distribution,
    canary: &Distribution,
    out: &mut Vec<MetricResult>,
) {
    // Validation refuses absolute margins for these kinds.
    let directions: Vec<(Direction, f64)> = spec
        .bounds
        .directions()
        .filter_map(|(d, m)| match m {
            Margin::Relative(r) => Some((d, r)),
            Margin::Absolute(_) => None,
        })
        .collect();
    let (nb, nc) = (baseline.count(), canary.count());
    let comparison = compare_latency(baseline, canary, &spec.quantiles, policy.confidence);
    let enough = nb.min(nc) >= policy.min_samples.max(1);
    let entries = |name: &str, test: &str| -> Vec<MetricResult> {
        directions
            .iter()
            .map(|&(d, r)| effect(spec, name, test, (d, Margin::Relative(r)), nb, nc))
            .collect()
    };

    let mut shift = entries("shift", "hodges-lehmann");
    let mut quantile_entries: Vec<Vec<MetricResult>> = spec
        .quantiles
        .iter()
        .map(|p| entries(&quantile_label(*p), "quantile-ratio"))
        .collect();
    let mut reference = reference(spec, "mann-whitney", nb, nc);

    match &comparison {
        None => {
            let note = format!("no data yet (baseline {nb}, canary {nc} samples)");
            for e in shift
                .iter_mut()
                .chain(quantile_entries.iter_mut().flatten())
            {
                e.note = Some(note.clone());
            }
        }
        Some(c) => {
            reference.statistic = Some(c.u_canary);
            reference.p_value = Some(c.mw_p);
            // Common-language effect size: P(canary larger than baseline).
            reference.estimate = Some(c.u_canary / (nb as f64 * nc as f64));
            reference.baseline_value = baseline.quantile(0.5);
            reference.canary_value = canary.quantile(0.5);

            for (entry, &(direction, margin)) in shift.iter_mut().zip(&directions) {
                if enough {
                    fill_log_effect(
                        entry,
                        c.log_shift,
                        c.se_log_shift,
                        (direction, margin),
                        sides,
                    );
                } else {
                    entry.note = Some(format!(
                        "needs {} samples per cohort, has {}",
                        policy.min_samples,
                        nb.min(nc)
                    ));
                }
            }
            for (group, q) in quantile_entries.iter_mut().zip(&c.quantiles) {
                let tail = q.p.min(1.0 - q.p);
                let needed = (MIN_TAIL_OBSERVATIONS / tail).ceil() as u64;
                let needed = needed.max(policy.min_samples);
                let judged = nb.min(nc) >= needed && q.se_log_ratio.is_finite();
                for (entry, &(direction, margin)) in group.iter_mut().zip(&directions) {
                    entry.baseline_value = Some(q.baseline.value);
                    entry.canary_value = Some(q.canary.value);
                    if judged {
                        fill_log_effect(
                            entry,
                            q.log_ratio,
                            q.se_log_ratio,
                            (direction, margin),
                            sides,
                        );
                    } else {
                        entry.note = Some(format!(
                            "{} needs {needed} samples per cohort, has {}",
                            quantile_label(q.p),
                            nb.min(nc)
                        ));
                    }
                }
            }
        }
    }
    out.extend(shift);
    out.extend(quantile_entries.into_iter().flatten());
    out.push(reference);
}

/// `0.99` → `p99`, `0.5` → `p50`, `0.999` → `p99.9`.
pub fn quantile_label(p: f64) -> String {
    format!("p{}", trim_float(p * 100.0))
}
