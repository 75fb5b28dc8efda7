//! Fixed-sample statistical tests and the special functions behind them.
//!
//! Each test answers one question about a canary against its baseline, on
//! data already gathered (the sequential machinery decides *when* to ask):
//!
//! - [`rank`]: Mann-Whitney U, for latencies and other skewed, heavy-tailed
//!   metrics where only the ordering is trusted;
//! - [`proportions`]: Fisher's exact test and Newcombe's interval, for error
//!   rates, which are rare events where normal approximations mislead;
//! - [`means`]: Welch's t-test, for metrics whose means matter and whose
//!   variances differ between cohorts;
//! - [`special`]: the distribution functions these need, in pure Rust and
//!   accurate in the far tails.
//!
//! Every p-value is meant to be *the same number scipy prints* (the reference
//! implementation operators reach for when they doubt a verdict), and
//! `tests/scipy_reference.rs` holds the code to that. Inputs that would make
//! scipy return NaN or warn (empty samples, NaN, constant data) are refused
//! here with a [`StatsError`] instead, so a bad verdict cannot hide in a NaN.

use std::fmt;

use serde::Serialize;

pub mod means;
pub mod proportions;
pub mod rank;
pub mod special;

pub use means::{Moments, Welch, welch_t, welch_t_from_moments};
pub use proportions::{FisherExact, fisher_exact, newcombe_difference_ci};
pub use rank::{MannWhitney, MwMethod, mann_whitney, mann_whitney_asymptotic};

/// Which of the two cohorts an input problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sample {
    /// The cohort on the current version.
    Baseline,
    /// The cohort on the new version.
    Canary,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sample::Baseline => "baseline",
            Sample::Canary => "canary",
        })
    }
}

/// Input the tests refuse, rather than answer with NaN.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// A sample had no values.
    #[error("the {0} sample is empty")]
    Empty(Sample),
    /// A sample held NaN or ±∞.
    #[error("the {sample} sample has the non-finite value {value} at index {index}")]
    NonFinite {
        /// Which sample.
        sample: Sample,
        /// Position of the first offending value.
        index: usize,
        /// The value itself.
        value: f64,
    },
    /// A sample had fewer values than the test needs.
    #[error("the {sample} sample has {n} values; the test needs at least {min}")]
    TooSmall {
        /// Which sample.
        sample: Sample,
        /// How many values (or the `n` given with moments) it had.
        n: f64,
        /// The minimum the test needs.
        min: u32,
    },
    /// Summary statistics were not usable (NaN mean, negative variance, ...).
    #[error("the {sample} moments are invalid: {reason}")]
    InvalidMoments {
        /// Which sample.
        sample: Sample,
        /// What is wrong with them.
        reason: &'static str,
    },
    /// Both samples are constant, so a t statistic does not exist.
    #[error("both samples have zero variance; the t statistic is undefined")]
    ZeroVariance,
    /// The confidence level was not strictly between 0 and 1.
    #[error("confidence level {0} is not strictly between 0 and 1")]
    InvalidConfidence(f64),
    /// A contingency table could not be analysed.
    #[error("invalid 2x2 table: {0}")]
    InvalidTable(&'static str),
}

/// Checks that a raw sample is non-empty and finite.
fn check_sample(values: &[f64], sample: Sample) -> Result<(), StatsError> {
    if values.is_empty() {
        return Err(StatsError::Empty(sample));
    }
    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(StatsError::NonFinite {
            sample,
            index,
            value,
        });
    }
    Ok(())
}

/// Checks a confidence level lies in (0, 1).
fn check_confidence(confidence: f64) -> Result<(), StatsError> {
    if confidence > 0.0 && confidence < 1.0 {
        Ok(())
    } else {
        Err(StatsError::InvalidConfidence(confidence))
    }
}

/// Helpers shared by the statistics unit tests.
#[cfg(test)]
pub(crate) mod testing {
    /// `actual` is within `rel` of `expected`, relatively.
    #[track_caller]
    pub(crate) fn assert_rel(actual: f64, expected: f64, rel: f64) {
        assert!(
            (actual - expected).abs() <= rel * expected.abs(),
            "got {actual:e}, expected {expected:e}"
        );
    }
}
