//! Error rates: Fisher's exact test and Newcombe's interval for a difference
//! of two proportions.
//!
//! Errors are rare (0.1% is typical) and canary cohorts are small early in a
//! rollout, so normal approximations (the z-test for proportions, Wald
//! intervals) are badly calibrated exactly where weir decides. Fisher's test
//! conditions on the margins and is exact at any size; Newcombe's hybrid
//! score interval is the standard well-calibrated interval for p₁ − p₂ with
//! rare events and never leaves [-1, 1].
//!
//! The Fisher p-value is computed relative to the hypergeometric mode with
//! the term ratio p(x+1)/p(x), never with `ln Γ` of counts in the millions
//! (whose rounding alone would cost ~1e-9; scipy's own value drifts by up to
//! ~5e-10 at those sizes, while this one agrees with 40-digit arithmetic to
//! ~3e-15). Terms decrease monotonically away from the mode, so each tail is
//! summed outward and cut off once the rest is provably below 1e-17 of what
//! was summed, or underflows: a million requests per cohort at 0.1% errors
//! takes a few thousand multiplications (~10 µs).

use serde::Serialize;

use super::StatsError;
use super::special::normal_quantile;

/// Tables whose probability is within this relative distance of the
/// observed table's count as "as extreme". It absorbs rounding, so that
/// mathematically equal probabilities (the mirror tables when two margins are
/// equal) are always both counted. scipy 1.17 uses 1e-14 and so does weir, so
/// that the method is the same as the reference it is checked against (R's
/// `fisher.test` uses 1e-7; the two differ only for a table whose
/// probability lies within (1e-14, 1e-7] of the observed one without being
/// equal to it).
pub const FISHER_RELATIVE_TOLERANCE: f64 = 1e-14;

/// Result of Fisher's exact test on a 2x2 table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FisherExact {
    /// Sample odds ratio (a·d)/(b·c): +∞ when b or c is 0 (and the table is
    /// not degenerate), NaN when a row or column sums to 0 (as scipy).
    pub odds_ratio: f64,
    /// Two-sided p-value, in [0, 1].
    pub p_value: f64,
}

/// table = [[canary_errors, canary_ok], [baseline_errors, baseline_ok]]; two-sided p as scipy.stats.fisher_exact(table, alternative='two-sided')
///
/// The p-value sums the hypergeometric probabilities (margins fixed) of all
/// tables no more likely than the observed one, within a relative tolerance
/// of [`FISHER_RELATIVE_TOLERANCE`]. A row or column of zeros gives p = 1 and
/// a NaN odds ratio. P-values below ~1e-300 may come back as 0.
///
/// # Errors
/// [`StatsError::InvalidTable`] when the total count exceeds 2^53 (counts are
/// no longer exact in f64).
pub fn fisher_exact(table: [[u64; 2]; 2]) -> Result<FisherExact, StatsError> {
    const MAX_TOTAL: u64 = 1 << 53;
    let [[a, b], [c, d]] = table;
    let total = a
        .checked_add(b)
        .and_then(|s| s.checked_add(c))
        .and_then(|s| s.checked_add(d))
        .filter(|&s| s <= MAX_TOTAL)
        .ok_or(StatsError::InvalidTable("the total count exceeds 2^53"))?;
    let row1 = a + b;
    let col1 = a + c;
    if row1 == 0 || c + d == 0 || col1 == 0 || b + d == 0 {
        return Ok(FisherExact {
            odds_ratio: f64::NAN,
            p_value: 1.0,
        });
    }
    let odds_ratio = if b > 0 && c > 0 {
        (a as f64 * d as f64) / (c as f64 * b as f64)
    } else {
        f64::INFINITY
    };
    let p_value = hypergeometric_two_sided(a, total, row1, col1);
    Ok(FisherExact {
        odds_ratio,
        p_value,
    })
}

/// Two-sided p-value of `x` successes in `draws` draws from `total` items of
/// which `successes` are successes.
fn hypergeometric_two_sided(x: u64, total: u64, successes: u64, draws: u64) -> f64 {
    let lo = (successes + draws).saturating_sub(total);
    let hi = successes.min(draws);
    let mode_wide = (u128::from(draws) + 1) * (u128::from(successes) + 1) / (u128::from(total) + 2);
    let mode = u64::try_from(mode_wide).unwrap_or(hi).clamp(lo, hi);

    let k = successes as f64;
    let n = draws as f64;
    let failures = (total - successes) as f64;
    // p(x+1) / p(x)
    let up = |x: u64| {
        let x = x as f64;
        ((k - x) * (n - x)) / ((x + 1.0) * (failures - n + x + 1.0))
    };
    // p(x-1) / p(x)
    let down = |x: u64| {
        let x = x as f64;
        (x * (failures - n + x)) / ((k - x + 1.0) * (n - x + 1.0))
    };

    // Probability of the observed table relative to the mode. Below the
    // smallest normal double it counts as 0: subnormals lose precision and,
    // multiplied by ratios close to 1, can get stuck instead of underflowing.
    let mut observed = 1.0_f64;
    if x > mode {
        for i in mode..x {
            observed *= up(i);
            if observed < f64::MIN_POSITIVE {
                observed = 0.0;
                break;
            }
        }
    } else {
        for i in (x + 1..=mode).rev() {
            observed *= down(i);
            if observed < f64::MIN_POSITIVE {
                observed = 0.0;
                break;
            }
        }
    }
    let threshold = observed * (1.0 + FISHER_RELATIVE_TOLERANCE);

    // Probabilities (relative to the mode) split into the tables at least as
    // extreme as the observed one and the rest; p = extreme / (extreme + rest)
    // is then exactly 1 when nothing is less extreme.
    let (mut extreme, mut rest) = if 1.0 <= threshold {
        (1.0_f64, 0.0_f64)
    } else {
        (0.0, 1.0)
    };
    for upward in [true, false] {
        let ratio_at = |at: u64| {
            if upward {
                if at < hi { up(at) } else { 0.0 }
            } else if at > lo {
                down(at)
            } else {
                0.0
            }
        };
        let mut term = 1.0_f64;
        let mut at = mode;
        // Summed per side, then added: tails are tiny next to the centre.
        let mut extreme_side = 0.0_f64;
        loop {
            let ratio = ratio_at(at);
            term *= ratio;
            if term < f64::MIN_POSITIVE {
                break; // end of the support, or (as above) underflow
            }
            at = if upward { at + 1 } else { at - 1 };
            if term > threshold {
                rest += term;
                continue;
            }
            extreme_side += term;
            // Terms fall away from the mode with ever smaller ratios
            // (log-concavity), so what is left is at most term·r/(1-r).
            let next = ratio_at(at);
            if next < 1.0 && term * next / (1.0 - next) <= 1e-17 * extreme_side {
                break;
            }
        }
        extreme += extreme_side;
    }
    (extreme / (extreme + rest)).min(1.0)
}

/// Newcombe's hybrid score interval (his method 10, built from the two Wilson
/// score intervals without continuity correction) for p_canary − p_baseline
/// at the two-sided `confidence` level (e.g. 0.95).
///
/// Well calibrated for rare events and zero counts, and always inside
/// [-1, 1]. Returns `(NaN, NaN)` when a sample size is 0, errors exceed the
/// sample size, or `confidence` is not strictly between 0 and 1.
pub fn newcombe_difference_ci(
    canary_errors: u64,
    canary_n: u64,
    baseline_errors: u64,
    baseline_n: u64,
    confidence: f64,
) -> (f64, f64) {
    if canary_n == 0
        || baseline_n == 0
        || canary_errors > canary_n
        || baseline_errors > baseline_n
        || !(confidence > 0.0 && confidence < 1.0)
    {
        return (f64::NAN, f64::NAN);
    }
    let z = normal_quantile(1.0 - (1.0 - confidence) / 2.0);
    let p1 = canary_errors as f64 / canary_n as f64;
    let p2 = baseline_errors as f64 / baseline_n as f64;
    let (l1, u1) = wilson_interval(canary_errors, canary_n, z);
    let (l2, u2) = wilson_interval(baseline_errors, baseline_n, z);
    let difference = p1 - p2;
    let below = ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt();
    let above = ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt();
    (difference - below, difference + above)
}

/// Wilson score interval for `x` successes out of `n` at normal quantile `z`.
///
/// The bounds are the roots of (n + z²)p² − (2x + z²)p + x²/n = 0; the upper
/// root is formed without cancellation and the lower one from the product of
/// the roots, so x = 0 gives exactly 0 and rare events keep full precision.
fn wilson_interval(x: u64, n: u64, z: f64) -> (f64, f64) {
    let xf = x as f64;
    let nf = n as f64;
    let z2 = z * z;
    let upper = if x == n {
        1.0
    } else {
        (2.0 * xf + z2 + z * (z2 + 4.0 * xf * (nf - xf) / nf).sqrt()) / (2.0 * (nf + z2))
    };
    let lower = if x == 0 {
        0.0
    } else {
        xf * xf / nf / ((nf + z2) * upper)
    };
    (lower, upper.min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::stats::testing::assert_rel;

    #[test]
    fn fisher_small_table_by_hand() {
        // [[1, 9], [11, 3]]: margins 10/14, 12/12, N = 24. scipy: p =
        // 0.0027594561852200836, odds ratio 3/99.
        let r = fisher_exact([[1, 9], [11, 3]]).expect("valid table");
        assert_rel(r.p_value, 0.002_759_456_185_220_083_6, 1e-13);
        assert_rel(r.odds_ratio, 3.0 / 99.0, 1e-15);
    }

    #[test]
    fn fisher_degenerate_tables_follow_scipy() {
        let r = fisher_exact([[0, 500], [0, 700]]).expect("valid table");
        assert!(r.odds_ratio.is_nan());
        assert_eq!(r.p_value, 1.0);
        let r = fisher_exact([[3, 0], [1, 5]]).expect("valid table");
        assert_eq!(r.odds_ratio, f64::INFINITY);
        let r = fisher_exact([[5, 5], [5, 5]]).expect("valid table");
        assert_eq!(r.p_value, 1.0);
        assert_eq!(r.odds_ratio, 1.0);
    }

    #[test]
    fn fisher_symmetric_table_includes_the_mirror_term() {
        // Equal rows: p(x) = p(n - x), so both tails count.
        let one_tail: f64 = {
            // P(X ≤ 0) for N = 20, K = 10, n = 4: C(10,4)/C(20,4).
            210.0 / 4845.0
        };
        let r = fisher_exact([[0, 10], [4, 6]]).expect("valid table");
        assert_rel(r.p_value, 2.0 * one_tail, 1e-14);
    }

    #[test]
    fn fisher_large_counts_are_fast_and_sane() {
        // 1000 vs 1300 errors in a million requests each.
        let r = fisher_exact([[1000, 999_000], [1300, 998_700]]).expect("valid table");
        assert!(r.p_value > 1e-12 && r.p_value < 1e-7, "p = {}", r.p_value);
        // Far-out tables stop at the underflow instead of walking 5e8 terms.
        let r = fisher_exact([[1_000_000_000, 0], [0, 1_000_000_000]]).expect("valid table");
        assert_eq!(r.p_value, 0.0);
        assert!(fisher_exact([[u64::MAX, 1], [0, 0]]).is_err());
    }

    #[test]
    fn newcombe_reproduces_published_examples() {
        // Newcombe (1998), Statistics in Medicine 17:873, Table II, method 10.
        let cases = [
            ((56, 70, 48, 80), (0.0524, 0.3339)),
            ((9, 10, 3, 10), (0.1705, 0.8090)),
            ((5, 56, 0, 29), (-0.0381, 0.1926)),
            ((0, 10, 0, 20), (-0.1611, 0.2775)),
            ((0, 10, 0, 10), (-0.2775, 0.2775)),
            ((10, 10, 0, 20), (0.6791, 1.0000)),
            ((10, 10, 0, 10), (0.6075, 1.0000)),
        ];
        for ((x1, n1, x2, n2), (lo, hi)) in cases {
            let (l, h) = newcombe_difference_ci(x1, n1, x2, n2, 0.95);
            assert!(
                (l - lo).abs() < 5e-5 && (h - hi).abs() < 5e-5,
                "{x1}/{n1} - {x2}/{n2}: got ({l:.4}, {h:.4}), published ({lo}, {hi})"
            );
        }
    }

    #[test]
    fn newcombe_rejects_nonsense() {
        assert!(newcombe_difference_ci(1, 0, 0, 10, 0.95).0.is_nan());
        assert!(newcombe_difference_ci(11, 10, 0, 10, 0.95).0.is_nan());
        assert!(newcombe_difference_ci(1, 10, 0, 10, 1.0).1.is_nan());
    }
}
