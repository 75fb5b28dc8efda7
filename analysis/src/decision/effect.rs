//! What every judged effect shares: the entry's common fields, its finding
//! against the margin in its direction, and the confidence-sequence
//! interval a normally distributed estimate gets (latency, distribution and
//! gauge effects on a log scale, or gauge differences on their own scale).

use super::{Direction, Finding, Margin, MetricResult, MetricSpec, Role};
use crate::sequential::{Sides, normal_mixture_one_sided, normal_mixture_p_value};

/// The finding for an interval against a boundary (both on the test scale,
/// the boundary signed: above zero for an increase margin, below for a
/// decrease margin).
pub(super) fn finding(direction: Direction, low: f64, high: f64, boundary: f64) -> Finding {
    let (above, below) = (low > boundary, high < boundary);
    judged(direction, above, below)
}

/// The finding once it is known whether the effect is shown above its
/// boundary and whether it is shown below it: beyond the margin is above
/// for an increase, below for a decrease.
pub(super) fn judged(direction: Direction, above: bool, below: bool) -> Finding {
    let (beyond, inside) = match direction {
        Direction::Increase => (above, below),
        Direction::Decrease => (below, above),
    };
    if beyond {
        Finding::Exceeds
    } else if inside {
        Finding::Within
    } else {
        Finding::Undecided
    }
}

/// A new entry of `spec`'s metric with the fields every entry shares, and
/// no direction: `name` is appended to the metric's name after a dot
/// (empty: the metric's own name, as reference entries are named).
pub(super) fn entry(
    spec: &MetricSpec,
    name: &str,
    test: &str,
    baseline_n: u64,
    canary_n: u64,
) -> MetricResult {
    MetricResult {
        name: if name.is_empty() {
            spec.name.clone()
        } else {
            format!("{}.{name}", spec.name)
        },
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
        direction: None,
        relative: false,
        role: Role::Decision,
        finding: Finding::Insufficient,
        note: None,
    }
}

/// The entry of effect `name` judged in `direction` against `margin`:
/// `metric.name`, or `metric.name.up` / `.down` when the metric is judged
/// both ways.
pub(super) fn effect(
    spec: &MetricSpec,
    name: &str,
    test: &str,
    (direction, margin): (Direction, Margin),
    baseline_n: u64,
    canary_n: u64,
) -> MetricResult {
    let name = if spec.bounds.both() {
        format!("{name}.{}", direction.suffix())
    } else {
        name.to_string()
    };
    MetricResult {
        direction: Some(direction),
        relative: matches!(margin, Margin::Relative(_)),
        ..entry(spec, &name, test, baseline_n, canary_n)
    }
}

/// A reference entry: a classical test shown beside the effects.
pub(super) fn reference(
    spec: &MetricSpec,
    test: &str,
    baseline_n: u64,
    canary_n: u64,
) -> MetricResult {
    MetricResult {
        role: Role::Reference,
        finding: Finding::None,
        ..entry(spec, "", test, baseline_n, canary_n)
    }
}

/// The boundary of a relative margin on the log scale: `ln(1 + m)` for an
/// increase, `ln(1 − m)` for a decrease.
pub(super) fn log_boundary(direction: Direction, relative_margin: f64) -> f64 {
    direction.signed(relative_margin).ln_1p()
}

/// Fills a log-scale effect (relative margin) from an estimate and its
/// standard error; `sides` are the levels of an increase effect (see
/// [`Direction::sides`]).
pub(super) fn fill_log_effect(
    entry: &mut MetricResult,
    log_estimate: f64,
    se: f64,
    (direction, relative_margin): (Direction, f64),
    sides: Sides,
) {
    let boundary = log_boundary(direction, relative_margin);
    let tau = boundary.abs().max(0.01);
    let (low, high) = normal_interval(log_estimate, se, tau, direction.sides(sides));
    entry.statistic = Some(log_estimate);
    entry.estimate = Some(log_estimate.exp_m1());
    entry.ci_low = Some(low.exp_m1());
    entry.ci_high = Some(high.exp_m1());
    entry.p_value = Some(normal_mixture_p_value(log_estimate, 0.0, se, tau));
    entry.margin = Some(direction.signed(relative_margin));
    entry.relative = true;
    entry.finding = finding(direction, low, high, boundary);
}

/// The normal-mixture confidence sequence around `estimate`, each end at
/// its own level.
pub(super) fn normal_interval(estimate: f64, se: f64, tau: f64, sides: Sides) -> (f64, f64) {
    (
        estimate - normal_mixture_one_sided(se, tau, sides.lower),
        estimate + normal_mixture_one_sided(se, tau, sides.upper),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Findings on either scale: the boundary is what matters, signed.
    #[test]
    fn findings_by_direction() {
        use Direction::{Decrease, Increase};
        use Finding::{Exceeds, Undecided, Within};
        let up = 0.2f64.ln_1p();
        let down = (-0.25f64).ln_1p();
        #[rustfmt::skip]
        let table = [
            // direction, low, high, boundary, finding
            (Increase, 0.25, 0.30, up, Exceeds),     // log scale, wholly above +20%
            (Increase, -0.1, 0.10, up, Within),      // below +20%
            (Increase, 0.10, 0.25, up, Undecided),   // straddles
            (Decrease, -0.45, -0.35, down, Exceeds), // wholly below −25%
            (Decrease, -0.1, 0.05, down, Within),    // above −25%
            (Decrease, -0.35, -0.1, down, Undecided),
            (Decrease, 0.30, 0.40, down, Within),    // far above: a decrease margin allows it
            (Increase, -0.90, -0.40, up, Within),    // far below: an increase margin allows it
            // raw scale, an absolute margin of 3pp each way
            (Increase, 0.031, 0.05, 0.03, Exceeds),
            (Decrease, -0.05, -0.031, -0.03, Exceeds),
            (Decrease, -0.029, 0.01, -0.03, Within),
            (Decrease, -0.031, 0.01, -0.03, Undecided),
        ];
        for (direction, low, high, boundary, expected) in table {
            assert_eq!(
                finding(direction, low, high, boundary),
                expected,
                "{direction:?} [{low}, {high}] vs {boundary}"
            );
        }
    }

    #[test]
    fn log_boundaries_are_ratios() {
        assert!((log_boundary(Direction::Increase, 0.2) - 1.2f64.ln()).abs() < 1e-15);
        assert!((log_boundary(Direction::Decrease, 0.25) - 0.75f64.ln()).abs() < 1e-15);
    }

    /// A decrease effect's upper end is the one that aborts, so it gets the
    /// smaller error (the wider half); an increase effect's lower end does.
    #[test]
    fn a_decrease_effect_swaps_its_ends_levels() {
        let sides = Sides {
            lower: 0.05 / 6.0,
            upper: 0.05,
        };
        let (se, tau) = (0.02, 0.25);
        let strict = normal_mixture_one_sided(se, tau, 0.05 / 6.0);
        let loose = normal_mixture_one_sided(se, tau, 0.05);
        assert!(strict > loose);
        let (lo, hi) = normal_interval(0.0, se, tau, Direction::Increase.sides(sides));
        assert_eq!((-lo, hi), (strict, loose));
        let (lo, hi) = normal_interval(0.0, se, tau, Direction::Decrease.sides(sides));
        assert_eq!((-lo, hi), (loose, strict));
    }
}
