//! Gauges (GPU utilization, KV-cache usage, power): per-interval means.
//!
//! A gauge is sampled once per analysis interval per cohort (already
//! averaged over the cohort's GPUs by the source), optionally divided by the
//! cohort's throughput in that interval so that a canary serving more
//! requests per replica is not blamed for using more GPU. Intervals are the
//! unit of observation; their mean is compared with Welch's t (fixed sample)
//! and, for the decision, a log ratio of means with a delta-method standard
//! error.

use crate::stats::means::{Moments, Welch, welch_t_from_moments};

/// One interval's value of a gauge for one cohort.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GaugeInterval {
    /// The gauge's mean over the interval.
    pub value: f64,
    /// The cohort's throughput in the interval (requests or tokens per
    /// second per replica), when known.
    pub throughput: Option<f64>,
}

/// The fixed-sample comparison of two gauges.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GaugeComparison {
    /// Intervals in the baseline.
    pub baseline_n: u64,
    /// Intervals in the canary.
    pub canary_n: u64,
    /// Mean of the baseline's (normalized) values.
    pub baseline_mean: f64,
    /// Mean of the canary's (normalized) values.
    pub canary_mean: f64,
    /// Welch's t-test, canary minus baseline.
    pub welch: Welch,
    /// `ln(canary_mean / baseline_mean)`; `None` when a mean is not positive.
    pub log_ratio: Option<f64>,
    /// Standard error of `log_ratio` (delta method).
    pub se_log_ratio: f64,
    /// Standard error of the difference of means.
    pub se_difference: f64,
}

/// The values to compare: raw, or divided by throughput when `per_unit`.
/// Intervals without throughput (or with zero) are dropped when `per_unit`,
/// since a ratio to nothing is not an observation.
pub fn normalized(points: &[GaugeInterval], per_unit: bool) -> Vec<f64> {
    points
        .iter()
        .filter_map(|p| match (per_unit, p.throughput) {
            (false, _) => Some(p.value),
            (true, Some(t)) if t > 0.0 => Some(p.value / t),
            (true, _) => None,
        })
        .filter(|v| v.is_finite())
        .collect()
}

fn moments(values: &[f64]) -> Moments {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    Moments { mean, variance, n }
}

/// Compares two cohorts' gauge values (already normalized). `None` when
/// either cohort has fewer than two values or both have no variance.
pub fn compare_gauges(
    baseline: &[f64],
    canary: &[f64],
    confidence: f64,
) -> Option<GaugeComparison> {
    if baseline.len() < 2 || canary.len() < 2 {
        return None;
    }
    let (b, c) = (moments(baseline), moments(canary));
    let welch = welch_t_from_moments(b, c, confidence).ok()?;
    let (vb, vc) = (b.variance / b.n, c.variance / c.n);
    let positive = b.mean > 0.0 && c.mean > 0.0;
    Some(GaugeComparison {
        baseline_n: baseline.len() as u64,
        canary_n: canary.len() as u64,
        baseline_mean: b.mean,
        canary_mean: c.mean,
        welch,
        log_ratio: positive.then(|| (c.mean / b.mean).ln()),
        se_log_ratio: if positive {
            (vb / (b.mean * b.mean) + vc / (c.mean * c.mean)).sqrt()
        } else {
            f64::INFINITY
        },
        se_difference: (vb + vc).sqrt(),
    })
}
