//! Error rates: two proportions, often rare (0.1%–1%).
//!
//! The normal approximation to a difference of proportions is badly
//! calibrated when errors are rare: with zero errors seen its variance is
//! zero and it "proves" anything. weir reports Fisher's exact test and
//! Newcombe's hybrid score interval (both calibrated at small counts) as the
//! fixed-sample view, and decides with the exact Beta-binomial evidence of
//! [`crate::sequential::BetaBinomial`].

use crate::sequential::Counts;
use crate::stats::proportions::{FisherExact, fisher_exact, newcombe_difference_ci};

/// The fixed-sample comparison of two error rates.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ErrorComparison {
    /// Baseline counts.
    pub baseline: Counts,
    /// Canary counts.
    pub canary: Counts,
    /// `rate(canary) − rate(baseline)`.
    pub difference: f64,
    /// Newcombe hybrid score interval for the difference.
    pub difference_ci: (f64, f64),
    /// Fisher's exact test on the 2×2 table.
    pub fisher: FisherExact,
}

/// Compares two cohorts' error counts. `None` when either cohort is empty.
pub fn compare_errors(
    baseline: Counts,
    canary: Counts,
    confidence: f64,
) -> Option<ErrorComparison> {
    if baseline.total == 0
        || canary.total == 0
        || baseline.errors > baseline.total
        || canary.errors > canary.total
    {
        return None;
    }
    let fisher = fisher_exact([
        [canary.errors, canary.total - canary.errors],
        [baseline.errors, baseline.total - baseline.errors],
    ])
    .ok()?;
    Some(ErrorComparison {
        baseline,
        canary,
        difference: canary.rate() - baseline.rate(),
        difference_ci: newcombe_difference_ci(
            canary.errors,
            canary.total,
            baseline.errors,
            baseline.total,
            confidence,
        ),
        fisher,
    })
}
