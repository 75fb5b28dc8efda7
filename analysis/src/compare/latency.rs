//! Latency: how the canary's distribution differs from the baseline's.
//!
//! Three views, because a regression can hide from any one of them:
//! - Mann-Whitney U (rank test): is the canary stochastically larger?
//! - Hodges–Lehmann shift on the log scale: the median of all pairwise
//!   `ln(canary) − ln(baseline)`, i.e. a *relative* shift, so a margin of
//!   10% means the same at 50 ms and at 5 s;
//! - quantile ratios (p50, p99, ...): a regression that only lives in the
//!   tail leaves U and the shift almost unchanged and moves p99 a lot.
//!
//! Everything is computed from two [`Distribution`]s, never from raw
//! samples, so the cost depends on the number of occupied bins (hundreds),
//! not on the number of requests (millions). Pairs of bins are combined on a
//! uniform log grid finer than the bins (`H = ln 2 / 512`); two values tie
//! exactly when they share a bin.
//!
//! Standard errors come from distribution-free order statistics (the
//! Moses interval for the shift, the binomial rank interval for quantiles),
//! so no density has to be estimated.
//!
//! Nothing here is specific to time: the same comparison judges any
//! positive per-request quantity (output tokens, decode speed). Zeros (an
//! empty answer has 0 output tokens) are kept, not dropped: they sit in the
//! distribution's zero bin, which is placed on the grid at `MIN_VALUE / 2`
//! (about 2⁻³¹), below every tracked value. So they tie with each other,
//! rank below everything else in U, enter the shift as pairs with a large
//! log difference (`ln(value) + 31 ln 2`, about 27 for 200 tokens; a few
//! zeros move the median of the pairs only by their share of the ranks, as
//! in any rank statistic), and a quantile
//! that falls among them is 0, read as `MIN_VALUE` in its log ratio: a drop
//! of about −100%. When both cohorts' quantile is 0 the ratio is 0 with no
//! spread (the quantile cannot tell the shares apart): judge the share of
//! zeros as a proportion (an error-rate metric) to see it move.

use crate::dist::{Bin, Distribution, MIN_VALUE};
use crate::stats::rank::mann_whitney_asymptotic;
use crate::stats::special::normal_quantile;

/// Grid step in log units for pairwise differences.
const GRID: f64 = std::f64::consts::LN_2 / 512.0;
/// The `z` used to turn a rank interval into a standard error. Any fixed
/// value works asymptotically; 1.96 spans enough bins to be stable.
const SE_Z: f64 = 1.959_963_984_540_054;

/// One cohort's estimate of a quantile.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct QuantileEstimate {
    /// The quantile's value (same units as the samples).
    pub value: f64,
    /// Fixed-sample, distribution-free confidence interval (order
    /// statistics) at the requested confidence; `+∞` when the sample is too
    /// small to bound it.
    pub ci_low: f64,
    /// Upper end of that interval.
    pub ci_high: f64,
    /// Standard error of `ln(value)`; `+∞` when it cannot be estimated yet.
    pub se_log: f64,
}

/// A quantile of both cohorts and their log ratio.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct QuantileComparison {
    /// The quantile level, e.g. 0.99.
    pub p: f64,
    /// The baseline's quantile.
    pub baseline: QuantileEstimate,
    /// The canary's quantile.
    pub canary: QuantileEstimate,
    /// `ln(canary / baseline)`.
    pub log_ratio: f64,
    /// Standard error of `log_ratio`.
    pub se_log_ratio: f64,
}

/// The latency comparison of two cohorts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LatencyComparison {
    /// Observations in the baseline.
    pub baseline_n: u64,
    /// Observations in the canary.
    pub canary_n: u64,
    /// Mann-Whitney U of the canary (pairs where the canary is slower, plus
    /// half the ties; values in the same bin tie).
    pub u_canary: f64,
    /// Signed z of U (positive: canary slower), tie and continuity corrected.
    pub mw_z: f64,
    /// Two-sided fixed-sample p-value of U.
    pub mw_p: f64,
    /// Hodges–Lehmann estimate of `ln(canary) − ln(baseline)`.
    pub log_shift: f64,
    /// Its standard error (from the Moses interval).
    pub se_log_shift: f64,
    /// Fixed-sample Moses interval for `log_shift` at the requested
    /// confidence.
    pub log_shift_ci: (f64, f64),
    /// The requested quantiles.
    pub quantiles: Vec<QuantileComparison>,
}

/// A cohort's bins placed on the log grid.
fn grid_bins(dist: &Distribution) -> Vec<(i64, f64)> {
    dist.bins()
        .map(|b: Bin| (grid_index(b.midpoint()), b.count as f64))
        .collect()
}

fn grid_index(value: f64) -> i64 {
    // The zero bin sits one grid step below the smallest tracked value.
    let v = if value < MIN_VALUE {
        MIN_VALUE * 0.5
    } else {
        value
    };
    (v.ln() / GRID).round() as i64
}

/// The distribution of pairwise grid differences `canary − baseline`.
struct PairwiseDifferences {
    /// Lowest difference held in `weights[0]`.
    min: i64,
    /// Weight (number of pairs) at each difference.
    weights: Vec<f64>,
    total: f64,
}

impl PairwiseDifferences {
    fn new(baseline: &[(i64, f64)], canary: &[(i64, f64)]) -> Self {
        let (b_min, b_max) = (baseline[0].0, baseline[baseline.len() - 1].0);
        let (c_min, c_max) = (canary[0].0, canary[canary.len() - 1].0);
        let min = c_min - b_max;
        let len = (c_max - b_min - min + 1) as usize;
        let mut weights = vec![0.0; len];
        for &(c, wc) in canary {
            let base = c - min;
            for &(b, wb) in baseline {
                weights[(base - b) as usize] += wc * wb;
            }
        }
        let total = weights.iter().sum();
        Self {
            min,
            weights,
            total,
        }
    }

    /// U of the canary: pairs with a positive difference plus half the ties.
    fn u(&self) -> f64 {
        let mut u = 0.0;
        for (i, &w) in self.weights.iter().enumerate() {
            match (self.min + i as i64).cmp(&0) {
                std::cmp::Ordering::Greater => u += w,
                std::cmp::Ordering::Equal => u += 0.5 * w,
                std::cmp::Ordering::Less => {}
            }
        }
        u
    }

    /// The difference (log units) at fractional `rank` among all pairs,
    /// spreading each grid cell's weight evenly over its width.
    fn at_rank(&self, rank: f64) -> f64 {
        let rank = rank.clamp(0.0, self.total);
        let mut below = 0.0;
        for (i, &w) in self.weights.iter().enumerate() {
            if w > 0.0 && rank <= below + w {
                let frac = (rank - below) / w;
                return (self.min as f64 + i as f64 - 0.5 + frac) * GRID;
            }
            below += w;
        }
        (self.min as f64 + self.weights.len() as f64 - 0.5) * GRID
    }
}

/// Tie term `Σ (t³ − t)` over the pooled sample, where values in the same bin
/// tie.
fn tie_term(baseline: &Distribution, canary: &Distribution) -> f64 {
    let mut pooled: Vec<(Option<usize>, f64)> = baseline
        .bins()
        .chain(canary.bins())
        .map(|b| (b.index, b.count as f64))
        .collect();
    pooled.sort_by_key(|(index, _)| index.map_or(0, |i| i + 1));
    let mut term = 0.0;
    let mut i = 0;
    while i < pooled.len() {
        let mut t = pooled[i].1;
        let mut j = i + 1;
        while j < pooled.len() && pooled[j].0 == pooled[i].0 {
            t += pooled[j].1;
            j += 1;
        }
        term += t * t * t - t;
        i = j;
    }
    term
}

/// One cohort's quantile with its order-statistic interval.
pub fn quantile_estimate(dist: &Distribution, p: f64, confidence: f64) -> Option<QuantileEstimate> {
    let n = dist.count() as f64;
    let value = dist.quantile(p)?;
    let spread = |z: f64| z * (n * p * (1.0 - p)).sqrt();
    let at = |rank: f64| {
        if rank < 0.0 || rank > n {
            None
        } else {
            dist.value_at_rank(rank)
        }
    };
    let z = normal_quantile(0.5 + confidence / 2.0);
    let ci_low = at(p * n - spread(z)).unwrap_or(0.0);
    let ci_high = at(p * n + spread(z)).unwrap_or(f64::INFINITY);
    let se_log = match (at(p * n - spread(SE_Z)), at(p * n + spread(SE_Z))) {
        (Some(lo), Some(hi)) => (hi.max(MIN_VALUE).ln() - lo.max(MIN_VALUE).ln()) / (2.0 * SE_Z),
        _ => f64::INFINITY,
    };
    Some(QuantileEstimate {
        value,
        ci_low,
        ci_high,
        se_log,
    })
}

/// Compares two latency distributions. `None` when either is empty.
///
/// `confidence` sets the fixed-sample intervals reported alongside (the
/// sequential intervals that decide are built by the caller from the
/// standard errors).
pub fn compare_latency(
    baseline: &Distribution,
    canary: &Distribution,
    quantiles: &[f64],
    confidence: f64,
) -> Option<LatencyComparison> {
    if baseline.is_empty() || canary.is_empty() {
        return None;
    }
    let (nb, nc) = (baseline.count(), canary.count());
    let diffs = PairwiseDifferences::new(&grid_bins(baseline), &grid_bins(canary));
    let u_canary = diffs.u();
    let ties = tie_term(baseline, canary);
    let (mw_z, mw_p) = mann_whitney_asymptotic(u_canary, nb, nc, ties);

    // Moses: the shift interval is bounded by the pairwise differences at
    // ranks N/2 ∓ z·σ_U, with σ_U tie-corrected.
    let (nbf, ncf) = (nb as f64, nc as f64);
    let n = nbf + ncf;
    let sigma_u = (nbf * ncf / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)).max(1.0)))
        .max(0.0)
        .sqrt();
    let half = diffs.total / 2.0;
    let log_shift = diffs.at_rank(half);
    let se_log_shift = (diffs.at_rank(half + SE_Z * sigma_u)
        - diffs.at_rank(half - SE_Z * sigma_u))
        / (2.0 * SE_Z);
    let z = normal_quantile(0.5 + confidence / 2.0);
    let log_shift_ci = (
        diffs.at_rank(half - z * sigma_u),
        diffs.at_rank(half + z * sigma_u),
    );

    let quantiles = quantiles
        .iter()
        .filter_map(|&p| {
            let b = quantile_estimate(baseline, p, confidence)?;
            let c = quantile_estimate(canary, p, confidence)?;
            Some(QuantileComparison {
                p,
                baseline: b,
                canary: c,
                log_ratio: c.value.max(MIN_VALUE).ln() - b.value.max(MIN_VALUE).ln(),
                se_log_ratio: b.se_log.hypot(c.se_log),
            })
        })
        .collect();

    Some(LatencyComparison {
        baseline_n: nb,
        canary_n: nc,
        u_canary,
        mw_z,
        mw_p,
        log_shift,
        se_log_shift,
        log_shift_ci,
        quantiles,
    })
}
