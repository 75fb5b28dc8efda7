//! Gauge metrics (GPU utilization, queue depth, ...): the ratio or the
//! difference of the per-interval means, judged once per direction with a
//! margin, with Welch's t-test as the reference.

use super::effect::{effect, fill_log_effect, finding, normal_interval, reference};
use super::{Margin, MetricResult, MetricSpec, Policy};
use crate::compare::compare_gauges;
use crate::sequential::{Sides, normal_mixture_p_value};

pub(super) fn judge_gauge(
    spec: &MetricSpec,
    policy: &Policy,
    sides: Sides,
    baseline: &[f64],
    canary: &[f64],
    out: &mut Vec<MetricResult>,
) {
    let (nb, nc) = (baseline.len() as u64, canary.len() as u64);
    let mut reference = reference(spec, "welch-t", nb, nc);
    let comparison = compare_gauges(baseline, canary, policy.confidence);
    if let Some(c) = &comparison {
        reference.statistic = Some(c.welch.t);
        reference.p_value = Some(c.welch.p_value);
        reference.estimate = Some(c.welch.difference);
        reference.ci_low = Some(c.welch.ci_low);
        reference.ci_high = Some(c.welch.ci_high);
        reference.baseline_value = Some(c.baseline_mean);
        reference.canary_value = Some(c.canary_mean);
    }
    for (direction, margin) in spec.bounds.directions() {
        let test = match margin {
            Margin::Relative(_) => "mean-ratio",
            Margin::Absolute(_) => "mean-difference",
        };
        let mut mean = effect(spec, "mean", test, (direction, margin), nb, nc);
        if let Some(c) = &comparison {
            mean.baseline_value = Some(c.baseline_mean);
            mean.canary_value = Some(c.canary_mean);
        }
        match (&comparison, margin) {
            (Some(_), _) if nb.min(nc) < policy.min_intervals => {
                mean.note = Some(format!(
                    "needs {} intervals per cohort, has {}",
                    policy.min_intervals,
                    nb.min(nc)
                ));
            }
            (Some(c), Margin::Relative(margin)) => match c.log_ratio {
                Some(lr) => {
                    fill_log_effect(&mut mean, lr, c.se_log_ratio, (direction, margin), sides)
                }
                None => {
                    mean.note = Some(
                        "a relative margin needs positive means; use an absolute margin".into(),
                    )
                }
            },
            (Some(c), Margin::Absolute(margin)) => {
                let d = c.canary_mean - c.baseline_mean;
                let tau = margin.max(f64::MIN_POSITIVE);
                let (low, high) = normal_interval(d, c.se_difference, tau, direction.sides(sides));
                let boundary = direction.signed(margin);
                mean.statistic = Some(d);
                mean.estimate = Some(d);
                mean.ci_low = Some(low);
                mean.ci_high = Some(high);
                mean.p_value = Some(normal_mixture_p_value(d, 0.0, c.se_difference, tau));
                mean.margin = Some(boundary);
                mean.finding = finding(direction, low, high, boundary);
            }
            (None, _) => {
                mean.note = Some(format!(
                    "needs at least 2 intervals per cohort, has {}",
                    nb.min(nc)
                ))
            }
        }
        out.push(mean);
    }
    out.push(reference);
}
