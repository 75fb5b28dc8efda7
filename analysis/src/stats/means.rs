//! Welch's t-test: is the canary's mean different from the baseline's?
//!
//! Used for metrics whose mean is what matters (tokens per response, cost per
//! request) and whose spread is expected to change with the version, which is
//! why the unequal-variance (Welch-Satterthwaite) form is the only one
//! offered. Results match scipy's `ttest_ind(canary, baseline,
//! equal_var=False)` and its `confidence_interval`.
//!
//! [`welch_t_from_moments`] exists because most of weir's sources never see
//! raw values: proxies and Prometheus export counts, sums and sums of squares.

use serde::Serialize;

use super::special::{student_t_quantile, student_t_sf};
use super::{Sample, StatsError, check_confidence, check_sample};

/// Summary statistics of one sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Moments {
    /// Sample mean.
    pub mean: f64,
    /// Unbiased sample variance (divisor n − 1).
    pub variance: f64,
    /// Number of observations (a float so that weighted or pre-aggregated
    /// counts pass through; must be ≥ 2).
    pub n: f64,
}

impl Moments {
    /// Mean, unbiased variance and count of `values`, computed with the
    /// corrected two-pass algorithm (stable for data with a large offset, such
    /// as timestamps or latencies around a big constant).
    ///
    /// # Errors
    /// [`StatsError::Empty`] / [`StatsError::NonFinite`] for empty or
    /// non-finite input, [`StatsError::TooSmall`] for a single value.
    pub fn from_sample(values: &[f64], sample: Sample) -> Result<Moments, StatsError> {
        check_sample(values, sample)?;
        let n = values.len() as f64;
        if values.len() < 2 {
            return Err(StatsError::TooSmall { sample, n, min: 2 });
        }
        let rough = values.iter().sum::<f64>() / n;
        // Second pass: the residual sum corrects the mean's rounding error.
        let (mut residual, mut squares) = (0.0, 0.0);
        for &v in values {
            let d = v - rough;
            residual += d;
            squares += d * d;
        }
        let mean = rough + residual / n;
        let variance = ((squares - residual * residual / n) / (n - 1.0)).max(0.0);
        Ok(Moments { mean, variance, n })
    }

    fn validate(&self, sample: Sample) -> Result<(), StatsError> {
        if !self.n.is_finite() {
            return Err(StatsError::InvalidMoments {
                sample,
                reason: "n is not finite",
            });
        }
        if self.n < 2.0 {
            return Err(StatsError::TooSmall {
                sample,
                n: self.n,
                min: 2,
            });
        }
        if !self.mean.is_finite() {
            return Err(StatsError::InvalidMoments {
                sample,
                reason: "the mean is not finite",
            });
        }
        if !self.variance.is_finite() || self.variance < 0.0 {
            return Err(StatsError::InvalidMoments {
                sample,
                reason: "the variance is negative or not finite",
            });
        }
        Ok(())
    }
}

/// Result of Welch's two-sample t-test, canary minus baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Welch {
    /// t statistic; positive when the canary's mean is larger.
    pub t: f64,
    /// Welch-Satterthwaite degrees of freedom (not an integer in general).
    pub df: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// mean(canary) − mean(baseline).
    pub difference: f64,
    /// Lower end of the confidence interval for the difference.
    pub ci_low: f64,
    /// Upper end of the confidence interval for the difference.
    pub ci_high: f64,
}

/// canary minus baseline; two-sided p as scipy.stats.ttest_ind(canary, baseline, equal_var=False); CI at `confidence` for the difference of means (Welch-Satterthwaite df), as scipy's result.confidence_interval(confidence).
///
/// # Errors
/// [`StatsError::Empty`], [`StatsError::NonFinite`] or [`StatsError::TooSmall`]
/// (fewer than 2 values) for a bad sample, [`StatsError::ZeroVariance`] when
/// both samples are constant, [`StatsError::InvalidConfidence`] unless
/// 0 < `confidence` < 1.
pub fn welch_t(baseline: &[f64], canary: &[f64], confidence: f64) -> Result<Welch, StatsError> {
    let baseline = Moments::from_sample(baseline, Sample::Baseline)?;
    let canary = Moments::from_sample(canary, Sample::Canary)?;
    welch_t_from_moments(baseline, canary, confidence)
}

/// The same from summary statistics (mean, sample variance with n-1, n) for callers that only have moments.
///
/// # Errors
/// [`StatsError::TooSmall`] when an `n` is below 2,
/// [`StatsError::InvalidMoments`] for non-finite means or negative/non-finite
/// variances, [`StatsError::ZeroVariance`] when both variances are 0,
/// [`StatsError::InvalidConfidence`] unless 0 < `confidence` < 1.
pub fn welch_t_from_moments(
    baseline: Moments,
    canary: Moments,
    confidence: f64,
) -> Result<Welch, StatsError> {
    baseline.validate(Sample::Baseline)?;
    canary.validate(Sample::Canary)?;
    check_confidence(confidence)?;
    if baseline.variance == 0.0 && canary.variance == 0.0 {
        return Err(StatsError::ZeroVariance);
    }
    // Same operation order as scipy's `_unequal_var_ttest_denom`.
    let vn1 = canary.variance / canary.n;
    let vn2 = baseline.variance / baseline.n;
    let df =
        (vn1 + vn2).powi(2) / (vn1.powi(2) / (canary.n - 1.0) + vn2.powi(2) / (baseline.n - 1.0));
    let standard_error = (vn1 + vn2).sqrt();
    let difference = canary.mean - baseline.mean;
    let t = difference / standard_error;
    let p_value = (2.0 * student_t_sf(t.abs(), df)).min(1.0);
    let tail = (1.0 - confidence) / 2.0;
    let ci_low = difference + student_t_quantile(tail, df) * standard_error;
    let ci_high = difference + student_t_quantile(1.0 - tail, df) * standard_error;
    Ok(Welch {
        t,
        df,
        p_value,
        difference,
        ci_low,
        ci_high,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::stats::testing::assert_rel;

    #[test]
    fn moments_are_stable_under_a_large_offset() {
        let values: Vec<f64> = [1.0, 2.0, 3.0, 4.0].iter().map(|v| v + 1e9).collect();
        let m = Moments::from_sample(&values, Sample::Canary).expect("valid sample");
        assert_eq!(m.mean, 1e9 + 2.5);
        assert_rel(m.variance, 5.0 / 3.0, 1e-12);
        assert_eq!(m.n, 4.0);
    }

    #[test]
    fn equal_variance_equal_size_has_pooled_df() {
        // Equal variances and sizes: df = 2(n - 1).
        let baseline = [1.0, 2.0, 3.0, 4.0, 5.0];
        let canary = [3.0, 4.0, 5.0, 6.0, 7.0];
        let w = welch_t(&baseline, &canary, 0.95).expect("valid samples");
        assert_rel(w.df, 8.0, 1e-15);
        assert_rel(w.difference, 2.0, 1e-15);
        // t = 2 / sqrt(2.5/5 + 2.5/5) = 2.
        assert_rel(w.t, 2.0, 1e-15);
        // scipy: ttest_ind(canary, baseline, equal_var=False).pvalue
        assert_rel(w.p_value, 0.080_516_237_957_262_62, 1e-12);
        assert!(w.ci_low < 0.0 && w.ci_high > 4.0);
        assert_rel(w.ci_high - w.difference, w.difference - w.ci_low, 1e-12);
    }

    #[test]
    fn refuses_degenerate_input() {
        assert_eq!(
            welch_t(&[1.0, 1.0], &[2.0, 2.0], 0.95),
            Err(StatsError::ZeroVariance)
        );
        assert!(matches!(
            welch_t(&[1.0], &[2.0, 3.0], 0.95),
            Err(StatsError::TooSmall {
                sample: Sample::Baseline,
                ..
            })
        ));
        assert_eq!(
            welch_t(&[1.0, 2.0], &[2.0, 3.0], 1.0),
            Err(StatsError::InvalidConfidence(1.0))
        );
        let bad = Moments {
            mean: 0.0,
            variance: -1.0,
            n: 10.0,
        };
        let good = Moments {
            mean: 0.0,
            variance: 1.0,
            n: 10.0,
        };
        assert!(matches!(
            welch_t_from_moments(good, bad, 0.9),
            Err(StatsError::InvalidMoments {
                sample: Sample::Canary,
                ..
            })
        ));
    }

    #[test]
    fn one_constant_sample_is_fine() {
        let w = welch_t(&[5.0, 5.0, 5.0], &[1.0, 2.0, 3.0, 4.0], 0.9).expect("valid samples");
        // Only the canary varies: df = n_canary - 1.
        assert_rel(w.df, 3.0, 1e-15);
    }
}
