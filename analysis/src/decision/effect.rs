//! What every judged effect shares: the entry's common fields, its finding
//! against the margin, and the confidence-sequence interval a normally
//! distributed estimate gets (latency and gauge effects on a log scale, or
//! gauge differences on their own scale).

use super::{Finding, Margin, MetricResult, MetricSpec, Role};
use crate::sequential::{Sides, normal_mixture_one_sided, normal_mixture_p_value};

/// The finding for an interval against a margin (both on the test scale).
pub(super) fn finding(low: f64, high: f64, margin: f64) -> Finding {
    if low > margin {
        Finding::Exceeds
    } else if high < margin {
        Finding::Within
    } else {
        Finding::Undecided
    }
}

/// A new effect entry with the fields every effect shares.
pub(super) fn effect(
    spec: &MetricSpec,
    name: &str,
    test: &str,
    baseline_n: u64,
    canary_n: u64,
) -> MetricResult {
    MetricResult {
        name: format!("{}.{name}", spec.name),
        kind: spec.kind,
        test: test.into(),
        statistic: None,
        p_value: None,
        estimate: None,
        ci_low: None,
        ci_high: None,
        baseline_n,
        canary_n,
        baseline_value: None,
        canary_value: None,
        margin: None,
        relative: matches!(spec.max_increase, Margin::Relative(_)),
        role: Role::Decision,
        finding: Finding::Insufficient,
        note: None,
    }
}

/// Fills a log-scale effect (relative margin) from an estimate and its
/// standard error.
pub(super) fn fill_log_effect(
    entry: &mut MetricResult,
    log_estimate: f64,
    se: f64,
    relative_margin: f64,
    sides: Sides,
) {
    let tau = relative_margin.ln_1p().max(0.01);
    let (low, high) = normal_interval(log_estimate, se, tau, sides);
    entry.statistic = Some(log_estimate);
    entry.estimate = Some(log_estimate.exp_m1());
    entry.ci_low = Some(low.exp_m1());
    entry.ci_high = Some(high.exp_m1());
    entry.p_value = Some(normal_mixture_p_value(log_estimate, 0.0, se, tau));
    entry.margin = Some(relative_margin);
    entry.relative = true;
    entry.finding = finding(low, high, relative_margin.ln_1p());
}

/// The normal-mixture confidence sequence around `estimate`, each end at
/// its own level.
pub(super) fn normal_interval(estimate: f64, se: f64, tau: f64, sides: Sides) -> (f64, f64) {
    (
        estimate - normal_mixture_one_sided(se, tau, sides.lower),
        estimate + normal_mixture_one_sided(se, tau, sides.upper),
    )
}
