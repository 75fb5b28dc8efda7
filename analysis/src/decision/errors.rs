//! Error-rate metrics, and any other share of requests where one direction
//! is worse (`finish_reason: length`, empty answers): the difference (or
//! ratio) of the two cohorts' rates judged with a beta-binomial mixture,
//! once per direction with a margin, an optional hard limit on the canary's
//! own rate that fails fast, and Fisher's exact test as the reference.

use super::effect::{effect, entry, finding, judged, reference};
use super::{Direction, Margin, MetricResult, MetricSpec, Policy, Role};
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
    let enough = nb.min(nc) >= policy.min_samples.max(1);
    for (direction, margin) in spec.bounds.directions() {
        let mut diff = effect(
            spec,
            "difference",
            "beta-binomial-mixture",
            (direction, margin),
            nb,
            nc,
        );
        diff.baseline_value = Some(baseline.rate());
        diff.canary_value = Some(canary.rate());
        if enough {
            judge_difference(&mut diff, &evidence, direction, margin, sides);
        } else {
            diff.note = Some(format!(
                "needs {} requests per cohort, has {}",
                policy.min_samples,
                nb.min(nc)
            ));
        }
        out.push(diff);
    }

    if let Some(limit) = spec.hard_limit {
        // Fast failure: judged from the first request, no minimum.
        let mut guard = entry(spec, "hard-limit", "rate-limit", nb, nc);
        guard.role = Role::Guard;
        guard.direction = Some(Direction::Increase);
        guard.margin = Some(limit);
        guard.canary_value = Some(canary.rate());
        if canary.total > 0 {
            let (low, high) = rate_interval(canary, sides);
            guard.estimate = Some(canary.rate());
            guard.statistic = Some(canary.rate());
            guard.ci_low = Some(low);
            guard.ci_high = Some(high);
            guard.finding = finding(Direction::Increase, low, high, limit);
        } else {
            guard.note = Some("no canary requests yet".into());
        }
        out.push(guard);
    }

    let mut reference = reference(spec, "fisher-exact", nb, nc);
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

/// Judges the difference (absolute margin) or ratio (relative margin) of
/// the two rates against the boundary `p_c = p_b ± d` or `p_c = p_b (1 ± r)`
/// with the exact evidence, each end at its direction's level.
fn judge_difference(
    diff: &mut MetricResult,
    evidence: &BetaBinomial,
    direction: Direction,
    margin: Margin,
    sides: Sides,
) {
    let (baseline, canary) = (evidence.baseline, evidence.canary);
    let sides = direction.sides(sides);
    let (above_at, below_at) = ((1.0 / sides.lower).ln(), (1.0 / sides.upper).ln());
    let (boundary_at, amount): (fn(f64) -> RateBoundary, f64) = match margin {
        Margin::Absolute(d) => (RateBoundary::Difference, d),
        Margin::Relative(r) => (RateBoundary::Ratio, r),
    };
    let boundary = boundary_at(direction.signed(amount));
    // Shown above the boundary: "p_c ≤ g(p_b)" rejected at the lower end's
    // level; shown below it: "p_c ≥ g(p_b)" rejected at the upper end's.
    let above = evidence.log_evidence_worse(boundary) >= above_at;
    let below = evidence.log_evidence_better(boundary) >= below_at;
    diff.finding = judged(direction, above, below);
    let (low, high) = match margin {
        Margin::Absolute(_) => evidence.difference_interval(sides),
        Margin::Relative(_) => evidence.ratio_interval(sides),
    };
    diff.estimate = Some(match margin {
        Margin::Absolute(_) => canary.rate() - baseline.rate(),
        Margin::Relative(_) => canary.rate() / baseline.rate().max(f64::MIN_POSITIVE) - 1.0,
    });
    diff.statistic = Some(canary.rate() - baseline.rate());
    diff.ci_low = Some(low);
    diff.ci_high = Some(high);
    diff.margin = Some(direction.signed(amount));
    diff.p_value = Some(evidence.p_value_equal());
}
