//! Is a cohort's latency still falling? A cold replica (empty caches, an
//! allocator still growing, graphs compiled on first use) is slow at first
//! and gets faster; judged then, it looks like a regression it is not.
//!
//! The test splits the window's per-interval distributions into an early
//! and a late half (the middle interval of an odd count is left out, so the
//! halves never share one) and compares the halves with the very effect
//! the verdict uses: the Hodges–Lehmann shift, or a quantile's log ratio
//! (a cold start often lives in the tail: p95 falls while p50 barely
//! moves). `early` plays the canary and `late` the baseline of
//! [`compare_latency`], so a positive estimate means latency fell; the
//! trend is *falling* when `estimate / se` exceeds the one-sided normal
//! quantile at `level`.
//!
//! Why halves and not Mann–Kendall on per-interval medians: a rank test on
//! a handful of medians throws away all but one number per interval and
//! cannot see a tail that falls; the halves keep every request and reuse
//! the standard errors the verdict already trusts. Cost: one
//! [`compare_latency`] of two merged distributions, bins not requests.
//!
//! The test is only ever used to *hold* a verdict, never to make one, so
//! its level trades how long an abort may wait against how well a cold
//! canary is protected; it does not touch the verdicts' error guarantee.

use super::compare_latency;
use crate::dist::Distribution;
use crate::stats::special::normal_quantile;

/// How a cohort's latency moved from the early to the late half of a
/// window.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Trend {
    /// Requests in the early half.
    pub early_n: u64,
    /// Requests in the late half.
    pub late_n: u64,
    /// `ln(early / late)` of the effect: positive when latency fell.
    pub log_drop: f64,
    /// Its standard error (`+∞` when it cannot be estimated yet).
    pub se: f64,
}

impl Trend {
    /// `log_drop / se`: standard errors by which latency fell.
    pub fn z(&self) -> f64 {
        if self.se.is_finite() && self.se > 0.0 {
            self.log_drop / self.se
        } else {
            0.0
        }
    }

    /// Whether the fall is significant at one-sided `level` (e.g. 0.05).
    pub fn falling(&self, level: f64) -> bool {
        self.z() > normal_quantile(1.0 - level)
    }

    /// The fall as a fraction of the early value (`0.3`: the late half is
    /// 30% faster).
    pub fn drop(&self) -> f64 {
        1.0 - (-self.log_drop).exp()
    }
}

/// The trend of `slices` (one distribution per interval, oldest first) in
/// the shift (`quantile` None) or in `quantile`. `None` when fewer than two
/// slices hold requests or a half is empty.
pub fn trend(slices: &[Distribution], quantile: Option<f64>) -> Option<Trend> {
    let occupied = slices.iter().filter(|s| !s.is_empty()).count();
    if occupied < 2 {
        return None;
    }
    let half = slices.len() / 2;
    let merge = |part: &[Distribution]| {
        part.iter().fold(Distribution::new(), |mut all, s| {
            all.merge(s);
            all
        })
    };
    let early = merge(&slices[..half]);
    let late = merge(&slices[slices.len() - half..]);
    let quantiles: Vec<f64> = quantile.into_iter().collect();
    // The confidence only shapes the fixed-sample intervals, which this
    // test does not read.
    let c = compare_latency(&late, &early, &quantiles, 0.95)?;
    let (log_drop, se) = match c.quantiles.first() {
        Some(q) => (q.log_ratio, q.se_log_ratio),
        None => (c.log_shift, c.se_log_shift),
    };
    Some(Trend {
        early_n: early.count(),
        late_n: late.count(),
        log_drop,
        se: if se.is_finite() { se } else { f64::INFINITY },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution as _, LogNormal};

    /// Seeded lognormal samples: median `median`, log-sd 0.3.
    fn lognormal(n: usize, median: f64, seed: u64) -> Distribution {
        let mut rng = StdRng::seed_from_u64(seed);
        let d = LogNormal::new(median.ln(), 0.3).expect("valid lognormal");
        let values: Vec<f64> = (0..n).map(|_| d.sample(&mut rng)).collect();
        Distribution::from_values(&values).expect("finite samples")
    }

    /// `k` slices of `n` requests; slice `i`'s median is `medians(i)`.
    fn slices(k: usize, n: usize, seed: u64, medians: impl Fn(usize) -> f64) -> Vec<Distribution> {
        (0..k)
            .map(|i| lognormal(n, medians(i), seed * 1000 + i as u64))
            .collect()
    }

    /// Binomial band: `rate` of `runs` trials lies within `sds` standard
    /// deviations of `p`.
    fn within(rate: f64, p: f64, runs: usize, sds: f64) -> bool {
        (rate - p).abs() <= sds * (p * (1.0 - p) / runs as f64).sqrt()
    }

    #[test]
    fn a_flat_latency_is_called_falling_at_about_the_level() {
        // No trend: each test is a draw under the null, so the share called
        // falling is Binomial(runs, level)/runs; 4 sd bands, plus the
        // asymptotic standard errors' own slack of a quarter of the level.
        let (runs, level) = (400, 0.05);
        for quantile in [None, Some(0.95)] {
            let falling = (0..runs)
                .filter(|&seed| {
                    let s = slices(6, 60, seed as u64 + 1, |_| 0.2);
                    trend(&s, quantile).is_some_and(|t| t.falling(level))
                })
                .count();
            let rate = falling as f64 / runs as f64;
            assert!(
                within(rate, level, runs, 4.0) || rate < level,
                "{quantile:?}: flat latency called falling in {rate} of runs at level {level}"
            );
        }
    }

    #[test]
    fn a_cold_start_that_fades_is_falling_and_a_steady_slowdown_is_not() {
        // The early half 30% slower: ln 1.3 = 0.26 against a shift standard
        // error of about 0.3·√(π/3)·√(2/180) ≈ 0.032, z ≈ 8: found in every
        // run. A canary slower by the same 30% throughout has no trend.
        let (runs, level) = (50, 0.05);
        let cold = |i: usize| if i < 3 { 0.26 } else { 0.2 };
        let found = (0..runs)
            .filter(|&seed| {
                let t = trend(&slices(6, 60, seed as u64 + 1, cold), None).expect("a trend");
                assert!(
                    (t.log_drop - 1.3_f64.ln()).abs() < 5.0 * t.se,
                    "estimate {} vs ln 1.3 (se {})",
                    t.log_drop,
                    t.se
                );
                t.falling(level)
            })
            .count();
        assert_eq!(found, runs, "a fading cold start is a fall");
        let steady = (0..runs)
            .filter(|&seed| {
                let s = slices(6, 60, seed as u64 + 1, |_| 0.26);
                trend(&s, None).is_some_and(|t| t.falling(level))
            })
            .count();
        assert!(
            within(steady as f64 / runs as f64, level, runs, 4.0),
            "a steady slowdown called falling in {steady} of {runs} runs"
        );
    }

    #[test]
    fn a_tail_that_falls_shows_in_its_quantile() {
        // Cold requests only in the tail: 10% of the early half at 3x. The
        // p95 of the early half sits among them; the shift hardly moves.
        let mut early = lognormal(200, 0.2, 7);
        early.merge(&lognormal(22, 0.6, 8));
        let s = vec![early, lognormal(222, 0.2, 9)];
        let p95 = trend(&s, Some(0.95)).expect("a trend");
        assert!(p95.falling(0.05), "{p95:?}");
        assert!(p95.drop() > 0.3, "{p95:?}");
    }

    #[test]
    fn halves_leave_the_middle_out_and_need_two_occupied_slices() {
        assert_eq!(trend(&[lognormal(50, 0.2, 1)], None), None);
        let empty = vec![Distribution::new(), lognormal(50, 0.2, 1)];
        assert_eq!(trend(&empty, None), None);
        // Three slices: the middle (much slower) one is in neither half.
        let s = vec![
            lognormal(50, 0.2, 1),
            lognormal(50, 2.0, 2),
            lognormal(50, 0.2, 3),
        ];
        let t = trend(&s, None).expect("a trend");
        assert_eq!((t.early_n, t.late_n), (50, 50));
        assert!(!t.falling(0.05), "{t:?}");
    }
}
