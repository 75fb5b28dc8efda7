//! Error-rate metrics: the difference (or ratio) of the two cohorts' rates
//! judged with a beta-binomial mixture, an optional hard limit on the
//! canary's own rate that fails fast, and Fisher's exact test as the
//! reference.

use super::effect::{effect, finding};
use super::{Finding, Margin, MetricResult, MetricSpec, Policy, Role};
use crate::compare::compare_errors;
use crate::sequential::{BetaBinomial, Counts, RateBoundary, Sides, rate_interval};

pub(super) fn judge_errors(
    spec: &MetricSpec,
    policy: &Policy,
    sides: Sides,
    baseline: Counts,
    canary: Counts,
    out: &mut Vec<MetricResult>,
) {
    let (nb, nc) = (baseline.total, canary.total);
    let evidence = BetaBinomial { baseline, canary };
    let mut diff = effect(spec, "difference", "beta-binomial-mixture", nb, nc);
    diff.baseline_value = Some(baseline.rate());
    diff.canary_value = Some(canary.rate());
    let enough = nb.min(nc) >= policy.min_samples.max(1);
    if enough {
        let (worse_at, better_at) = ((1.0 / sides.lower).ln(), (1.0 / sides.upper).ln());
        let (boundary_at, margin): (fn(f64) -> RateBoundary, f64) = match spec.max_increase {
            Margin::Absolute(d) => (RateBoundary::Difference, d),
            Margin::Relative(r) => (RateBoundary::Ratio, r),
        };
        let worse = evidence.log_evidence_worse(boundary_at(margin)) >= worse_at;
        let better = evidence.log_evidence_better(boundary_at(margin)) >= better_at;
        diff.finding = match (worse, better) {
            (true, _) => Finding::Exceeds,
            (false, true) => Finding::Within,
            (false, false) => Finding::Undecided,
        };
        let (low, high) = match spec.max_increase {
            Margin::Absolute(_) => evidence.difference_interval(sides),
            Margin::Relative(_) => evidence.ratio_interval(sides),
        };
        diff.estimate = Some(match spec.max_increase {
            Margin::Absolute(_) => canary.rate() - baseline.rate(),
            Margin::Relative(_) => canary.rate() / baseline.rate().max(f64::MIN_POSITIVE) - 1.0,
        });
        diff.statistic = Some(canary.rate() - baseline.rate());
        diff.ci_low = Some(low);
        diff.ci_high = Some(high);
        diff.margin = Some(margin);
        diff.p_value = Some(evidence.p_value_equal());
    } else {
        diff.note = Some(format!(
            "needs {} requests per cohort, has {}",
            policy.min_samples,
            nb.min(nc)
        ));
    }
    out.push(diff);

    if let Some(limit) = spec.hard_limit {
        // Fast failure: judged from the first request, no minimum.
        let mut guard = effect(spec, "hard-limit", "rate-limit", nb, nc);
        guard.role = Role::Guard;
        guard.relative = false;
        guard.margin = Some(limit);
        guard.canary_value = Some(canary.rate());
        if canary.total > 0 {
            let (low, high) = rate_interval(canary, sides);
            guard.estimate = Some(canary.rate());
            guard.statistic = Some(canary.rate());
            guard.ci_low = Some(low);
            guard.ci_high = Some(high);
            guard.finding = finding(low, high, limit);
        } else {
            guard.note = Some("no canary requests yet".into());
        }
        out.push(guard);
    }

    let mut reference = MetricResult {
        name: spec.name.clone(),
        test: "fisher-exact".into(),
        role: Role::Reference,
        finding: Finding::None,
        relative: false,
        ..effect(spec, "", "", nb, nc)
    };
    if let Some(c) = compare_errors(baseline, canary, policy.confidence) {
        reference.statistic = Some(c.fisher.odds_ratio);
        reference.p_value = Some(c.fisher.p_value);
        reference.estimate = Some(c.difference);
        reference.ci_low = Some(c.difference_ci.0);
        reference.ci_high = Some(c.difference_ci.1);
        reference.baseline_value = Some(baseline.rate());
        reference.canary_value = Some(canary.rate());
    }
    out.push(reference);
}
