//! Latency metrics: the Hodges-Lehmann shift and each requested quantile's
//! ratio, all relative effects on a log scale, with Mann-Whitney as the
//! reference test.

use super::effect::{effect, fill_log_effect};
use super::{
    Finding, MIN_TAIL_OBSERVATIONS, Margin, MetricResult, MetricSpec, Policy, Role, trim_float,
};
use crate::compare::compare_latency;
use crate::dist::Distribution;
use crate::sequential::Sides;

pub(super) fn judge_latency(
    spec: &MetricSpec,
    policy: &Policy,
    sides: Sides,
    baseline: &Distribution,
    canary: &Distribution,
    out: &mut Vec<MetricResult>,
) {
    let Margin::Relative(margin) = spec.max_increase else {
        return;
    };
    let (nb, nc) = (baseline.count(), canary.count());
    let comparison = compare_latency(baseline, canary, &spec.quantiles, policy.confidence);
    let enough = nb.min(nc) >= policy.min_samples.max(1);

    let mut shift = effect(spec, "shift", "hodges-lehmann", nb, nc);
    let mut quantile_entries: Vec<MetricResult> = spec
        .quantiles
        .iter()
        .map(|p| effect(spec, &quantile_label(*p), "quantile-ratio", nb, nc))
        .collect();
    let mut reference = MetricResult {
        name: spec.name.clone(),
        test: "mann-whitney".into(),
        role: Role::Reference,
        finding: Finding::None,
        relative: false,
        ..effect(spec, "", "", nb, nc)
    };

    match &comparison {
        None => {
            let note = format!("no data yet (baseline {nb}, canary {nc} samples)");
            shift.note = Some(note.clone());
            quantile_entries
                .iter_mut()
                .for_each(|q| q.note = Some(note.clone()));
        }
        Some(c) => {
            reference.statistic = Some(c.u_canary);
            reference.p_value = Some(c.mw_p);
            // Common-language effect size: P(canary slower than baseline).
            reference.estimate = Some(c.u_canary / (nb as f64 * nc as f64));
            reference.baseline_value = baseline.quantile(0.5);
            reference.canary_value = canary.quantile(0.5);

            if enough {
                fill_log_effect(&mut shift, c.log_shift, c.se_log_shift, margin, sides);
            } else {
                shift.note = Some(format!(
                    "needs {} samples per cohort, has {}",
                    policy.min_samples,
                    nb.min(nc)
                ));
            }
            for (entry, q) in quantile_entries.iter_mut().zip(&c.quantiles) {
                entry.baseline_value = Some(q.baseline.value);
                entry.canary_value = Some(q.canary.value);
                let tail = q.p.min(1.0 - q.p);
                let needed = (MIN_TAIL_OBSERVATIONS / tail).ceil() as u64;
                let needed = needed.max(policy.min_samples);
                if nb.min(nc) < needed || !q.se_log_ratio.is_finite() {
                    entry.note = Some(format!(
                        "{} needs {needed} samples per cohort, has {}",
                        quantile_label(q.p),
                        nb.min(nc)
                    ));
                    continue;
                }
                fill_log_effect(entry, q.log_ratio, q.se_log_ratio, margin, sides);
            }
        }
    }
    out.push(shift);
    out.extend(quantile_entries);
    out.push(reference);
}

/// `0.99` → `p99`, `0.5` → `p50`, `0.999` → `p99.9`.
pub fn quantile_label(p: f64) -> String {
    format!("p{}", trim_float(p * 100.0))
}
