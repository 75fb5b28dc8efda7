//! Confidence sequences: intervals that stay valid however often you look.
//!
//! weir judges a canary every analysis interval, again and again, and stops
//! at the first decisive look. A fixed-sample 95% interval checked at 20
//! looks misses the truth far more than 5% of the time (that is how
//! Kayenta-style repeated tests abort healthy canaries). weir instead uses
//! *confidence sequences*: a sequence of intervals `CS_t` with
//! `P(∃ t: θ ∉ CS_t) ≤ α`, i.e. coverage holds simultaneously at every look,
//! including looks chosen after seeing the data. Any rule of the form "stop
//! when the interval clears the margin" then inherits the guarantee.
//!
//! Why confidence sequences rather than alpha spending or a plain mSPRT:
//! - alpha spending needs the maximum information (sample size) in advance;
//!   a canary's traffic is not known in advance and `maxDuration` bounds
//!   time, not samples;
//! - an mSPRT tests one point null; a non-inferiority decision needs the
//!   interval against a margin on both sides (promote *and* abort), and an
//!   interval also explains the verdict to a person.
//!
//! Two constructions, both built on Ville's inequality for nonnegative
//! (super)martingales:
//!
//! 1. [`normal_mixture_half_width`]: for estimators that are asymptotically
//!    normal (the log-scale Hodges–Lehmann shift, log quantile ratios, log
//!    mean ratios), Robbins' normal-mixture boundary. With estimate `θ̂` of
//!    variance `v`, the mixture over effects `λ ~ N(0, τ²)` of the Gaussian
//!    likelihood ratio is `M = √(v/(v+τ²)) · exp(τ²(θ̂−θ)² / (2v(v+τ²)))`;
//!    `M ≥ 1/α` never happens with probability more than α, which gives the
//!    half-width `√(v (1 + v/τ²) (2 ln(1/α) + ln(1 + τ²/v)))`. This is the
//!    asymptotic confidence sequence of Waudby-Smith et al. (2021, "Time-
//!    uniform central limit theory"): valid as samples grow, with `v`
//!    estimated from the data. `τ` is the mixture's scale, fixed before any
//!    data: weir sets it to the metric's margin, the effect size the user
//!    cares about, which makes the sequence tightest around decisions that
//!    matter.
//! 2. [`BetaBinomial`]: for error rates, an *exact* construction that needs
//!    no normal approximation and so stays calibrated when errors are rare
//!    (0.1%): each cohort's Bernoulli likelihood is mixed over a fixed prior
//!    (a small mixture of Beta distributions spanning 0.05%–25%), and a
//!    hypothesis about the two rates is rejected when the mixture beats the
//!    best likelihood inside the hypothesis by `1/α` (a sequential form of
//!    universal inference: the ratio is dominated by a test martingale under
//!    every point of the hypothesis). It holds at every sample size, not
//!    just asymptotically.
//!
//! The decision layer gives each effect's two ends their own levels
//! ([`Sides`]): the end an abort relies on at `α / m` (Bonferroni over the
//! `m` effect-directions it judges), the end a promotion relies on at `α`,
//! so a healthy canary is aborted and a bad one promoted each with
//! probability at most the configured `α` (see [`crate::decision`]).
//! `bench/decisions` checks this by simulation.

use crate::stats::special::{ln_gamma, normal_cdf};

/// Half-width of the two-sided normal-mixture confidence sequence at level
/// `alpha` for an estimate with standard error `se`, mixture scale `tau`
/// (same units as the estimate).
///
/// Returns `+∞` when `se` is not finite or `tau`/`alpha` are not positive.
pub fn normal_mixture_half_width(se: f64, tau: f64, alpha: f64) -> f64 {
    if !(se.is_finite() && tau > 0.0 && alpha > 0.0 && alpha < 1.0) {
        return f64::INFINITY;
    }
    if se == 0.0 {
        return 0.0;
    }
    let v = se * se;
    let ratio = tau * tau / v;
    (v * (1.0 + 1.0 / ratio) * (2.0 * (1.0 / alpha).ln() + ratio.ln_1p())).sqrt()
}

/// Half-width of a *one-sided* normal-mixture confidence sequence at level
/// `alpha`: `P(∃ t: θ < θ̂_t − w_t) ≤ α` (and symmetrically for the upper
/// side). The mixture is over effects `λ ≥ 0` only (a half-normal of scale
/// `tau`), whose martingale is
/// `2 (1+r)^(−1/2) exp(r y² / (2(1+r))) Φ(y √(r/(1+r)))` with `r = τ²/v` and
/// `y = (θ̂ − θ)/se`; the boundary is where it reaches `1/α`, found by
/// bisection. A decision only ever needs one side per effect (abort looks at
/// lower bounds, promote at upper bounds), and spending all of `α` on that
/// side is what makes the one-sided sequence tighter than half of a
/// two-sided one.
pub fn normal_mixture_one_sided(se: f64, tau: f64, alpha: f64) -> f64 {
    if !(se.is_finite() && tau > 0.0 && alpha > 0.0 && alpha < 1.0) {
        return f64::INFINITY;
    }
    if se == 0.0 {
        return 0.0;
    }
    let r = tau * tau / (se * se);
    let shrink = (r / (1.0 + r)).sqrt();
    let log_m = |y: f64| {
        std::f64::consts::LN_2 - 0.5 * r.ln_1p()
            + r * y * y / (2.0 * (1.0 + r))
            + normal_cdf(shrink * y).ln()
    };
    let target = (1.0 / alpha).ln();
    let (mut lo, mut hi) = (0.0, 1.0);
    while log_m(hi) < target {
        hi *= 2.0;
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if log_m(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    se * hi
}

/// Anytime-valid p-value for `θ = theta0` from the same normal mixture:
/// `min(1, 1/M)`. Valid at every look simultaneously.
pub fn normal_mixture_p_value(estimate: f64, theta0: f64, se: f64, tau: f64) -> f64 {
    if !(se.is_finite() && tau > 0.0) {
        return 1.0;
    }
    if se == 0.0 {
        return if estimate == theta0 { 1.0 } else { 0.0 };
    }
    let v = se * se;
    let t2 = tau * tau;
    let d = estimate - theta0;
    let ln_m = 0.5 * (v / (v + t2)).ln() + t2 * d * d / (2.0 * v * (v + t2));
    (-ln_m).exp().min(1.0)
}

/// Error probabilities of each end of an interval: the lower end is above
/// the truth at some look with probability at most `lower`, the upper end
/// below it with probability at most `upper`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sides {
    /// For the lower end (what an increase effect's abort relies on, and a
    /// decrease effect's promotion).
    pub lower: f64,
    /// For the upper end (what an increase effect's promotion relies on,
    /// and a decrease effect's abort).
    pub upper: f64,
}

impl Sides {
    /// Both ends at `alpha / 2`: a two-sided sequence at level `alpha`.
    pub fn two_sided(alpha: f64) -> Self {
        Self {
            lower: alpha / 2.0,
            upper: alpha / 2.0,
        }
    }
}

/// Prior means of the Beta mixture components (each `Beta(1, 1/m − 1)`).
/// They span the error rates inference services see, from a healthy 0.05%
/// to a broken 25%; equal weights cost `ln 5` nats of evidence, a small price
/// for being tight at every scale.
const PRIOR_MEANS: [f64; 5] = [0.0005, 0.002, 0.01, 0.05, 0.25];

/// Error counts of one cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Requests that failed.
    pub errors: u64,
    /// All requests judged.
    pub total: u64,
}

impl Counts {
    /// The observed error rate, 0 when empty.
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.errors as f64 / self.total as f64
        }
    }

    fn log_likelihood(&self, p: f64) -> f64 {
        let s = self.errors as f64;
        let f = (self.total - self.errors) as f64;
        let mut ll = 0.0;
        if s > 0.0 {
            ll += s * p.ln();
        }
        if f > 0.0 {
            ll += f * (-p).ln_1p();
        }
        ll
    }

    /// Log of the mixture marginal likelihood over the fixed Beta prior.
    fn log_marginal(&self) -> f64 {
        let s = self.errors as f64;
        let f = (self.total - self.errors) as f64;
        let terms: Vec<f64> = PRIOR_MEANS
            .iter()
            .map(|m| {
                let (a, b) = (1.0, 1.0 / m - 1.0);
                ln_beta(a + s, b + f) - ln_beta(a, b)
            })
            .collect();
        log_mean_exp(&terms)
    }
}

fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

fn log_mean_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + (terms.iter().map(|t| (t - max).exp()).sum::<f64>() / terms.len() as f64).ln()
}

/// How the canary's error rate relates to the baseline's at the margin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateBoundary {
    /// `p_canary = p_baseline + d` (absolute, e.g. 0.5 percentage points).
    Difference(f64),
    /// `p_canary = p_baseline · (1 + r)` (relative).
    Ratio(f64),
}

impl RateBoundary {
    fn canary_rate(self, baseline: f64) -> f64 {
        match self {
            RateBoundary::Difference(d) => baseline + d,
            RateBoundary::Ratio(r) => baseline * (1.0 + r),
        }
    }

    /// The range of baseline rates for which the boundary's canary rate is a
    /// probability.
    fn baseline_range(self) -> (f64, f64) {
        match self {
            RateBoundary::Difference(d) => ((-d).max(0.0), (1.0 - d).min(1.0)),
            RateBoundary::Ratio(r) => (0.0, (1.0 / (1.0 + r)).min(1.0)),
        }
    }

    /// Where `(p_baseline, p_canary)` lies relative to the boundary:
    /// positive when the canary is worse than the boundary allows.
    fn excess(self, baseline: f64, canary: f64) -> f64 {
        canary - self.canary_rate(baseline)
    }
}

/// Exact anytime-valid evidence about two error rates (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct BetaBinomial {
    /// The baseline cohort's counts.
    pub baseline: Counts,
    /// The canary cohort's counts.
    pub canary: Counts,
}

impl BetaBinomial {
    /// Log e-value against "the canary is at most as bad as `boundary`"
    /// (`p_c ≤ g(p_b)`). Large values are evidence that the canary is worse.
    pub fn log_evidence_worse(&self, boundary: RateBoundary) -> f64 {
        self.log_evidence(boundary, true)
    }

    /// Log e-value against "the canary is at least as bad as `boundary`"
    /// (`p_c ≥ g(p_b)`). Large values are evidence that the canary is better.
    pub fn log_evidence_better(&self, boundary: RateBoundary) -> f64 {
        self.log_evidence(boundary, false)
    }

    fn log_evidence(&self, boundary: RateBoundary, worse: bool) -> f64 {
        let (pb, pc) = (self.baseline.rate(), self.canary.rate());
        let excess = boundary.excess(pb, pc);
        // If the unrestricted maximum lies inside the hypothesis, the
        // supremum there is the global maximum: no evidence against it.
        let inside = if worse { excess <= 0.0 } else { excess >= 0.0 };
        let sup = if inside {
            self.baseline.log_likelihood(pb) + self.canary.log_likelihood(pc)
        } else {
            self.profile_on_boundary(boundary)
        };
        let marginal = self.baseline.log_marginal() + self.canary.log_marginal();
        (marginal - sup).max(0.0)
    }

    /// Maximum joint log-likelihood with the rates tied by `boundary`.
    /// The function is concave in the baseline rate, so a bisection on its
    /// derivative finds the maximum.
    fn profile_on_boundary(&self, boundary: RateBoundary) -> f64 {
        let (lo, hi) = boundary.baseline_range();
        if hi <= lo {
            return f64::NEG_INFINITY;
        }
        let value = |p: f64| {
            self.baseline.log_likelihood(p) + self.canary.log_likelihood(boundary.canary_rate(p))
        };
        let slope = |p: f64| {
            let h = 1e-9 * (hi - lo).max(1e-12);
            value((p + h).min(hi)) - value((p - h).max(lo))
        };
        let (mut a, mut b) = (lo, hi);
        for _ in 0..80 {
            let mid = 0.5 * (a + b);
            if slope(mid) > 0.0 {
                a = mid;
            } else {
                b = mid;
            }
        }
        [lo, 0.5 * (a + b), hi]
            .into_iter()
            .map(value)
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// Confidence sequence for `p_canary − p_baseline`, by inverting the
    /// exact one-sided tests: the lower end errs with probability at most
    /// `sides.lower`, the upper end at most `sides.upper`, at every look.
    pub fn difference_interval(&self, sides: Sides) -> (f64, f64) {
        let estimate = self.canary.rate() - self.baseline.rate();
        self.interval(sides, RateBoundary::Difference, (-1.0, 1.0), estimate)
    }

    /// Confidence sequence for `p_canary / p_baseline − 1` (levels per side
    /// as in [`Self::difference_interval`]); the upper end is `+∞` while the
    /// baseline has no errors to compare with.
    pub fn ratio_interval(&self, sides: Sides) -> (f64, f64) {
        const TOP: f64 = 1e6;
        let estimate = (self.canary.rate() / self.baseline.rate() - 1.0).clamp(-1.0, TOP);
        let estimate = if estimate.is_nan() { 0.0 } else { estimate };
        let (low, high) = self.interval(sides, RateBoundary::Ratio, (-1.0, TOP), estimate);
        (low, if high >= TOP { f64::INFINITY } else { high })
    }

    fn interval(
        &self,
        sides: Sides,
        family: fn(f64) -> RateBoundary,
        (lo, hi): (f64, f64),
        estimate: f64,
    ) -> (f64, f64) {
        let (worse_at, better_at) = ((1.0 / sides.lower).ln(), (1.0 / sides.upper).ln());
        // Lower bound: the largest d for which "canary ≤ boundary(d)" is
        // rejected; upper bound: the smallest d for which "canary ≥
        // boundary(d)" is rejected.
        let lower = bisect_boundary(lo, estimate, |d| {
            self.log_evidence_worse(family(d)) >= worse_at
        });
        let upper = bisect_boundary(estimate, hi, |d| {
            self.log_evidence_better(family(d)) < better_at
        });
        (lower, upper)
    }

    /// Anytime-valid p-value for equal rates: `min(1, 1/E)` with the larger
    /// of the two one-sided e-values, doubled for two sides.
    pub fn p_value_equal(&self) -> f64 {
        let e = self
            .log_evidence_worse(RateBoundary::Difference(0.0))
            .max(self.log_evidence_better(RateBoundary::Difference(0.0)));
        (2.0 * (-e).exp()).min(1.0)
    }
}

/// The canary's own rate: exact confidence sequence with per-side levels,
/// used for the hard limit.
pub fn rate_interval(counts: Counts, sides: Sides) -> (f64, f64) {
    let (lower_at, upper_at) = ((1.0 / sides.lower).ln(), (1.0 / sides.upper).ln());
    let marginal = counts.log_marginal();
    let p_hat = counts.rate();
    let best = counts.log_likelihood(p_hat);
    // Evidence against "p ≤ p0" (for p0 < p̂) or "p ≥ p0" (for p0 > p̂).
    let evidence = |p0: f64| marginal - counts.log_likelihood(p0).min(best);
    let lower = if p_hat == 0.0 {
        0.0
    } else {
        bisect_boundary(0.0, p_hat, |p| evidence(p) >= lower_at)
    };
    let upper = if p_hat == 1.0 {
        1.0
    } else {
        bisect_boundary(p_hat, 1.0, |p| evidence(p) < upper_at)
    };
    (lower, upper)
}

/// The point in `[lo, hi]` where `rejected` switches from true to false,
/// assuming it is monotone (true on the left). Returns `lo` if it is false
/// everywhere and `hi` if true everywhere.
fn bisect_boundary(lo: f64, hi: f64, rejected: impl Fn(f64) -> bool) -> f64 {
    if !rejected(lo) {
        return lo;
    }
    if rejected(hi) {
        return hi;
    }
    let (mut a, mut b) = (lo, hi);
    for _ in 0..50 {
        let mid = 0.5 * (a + b);
        if rejected(mid) {
            a = mid;
        } else {
            b = mid;
        }
    }
    0.5 * (a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixture_width_shrinks_like_one_over_root_n_times_a_log() {
        let tau = 0.1;
        let alpha = 0.05;
        // Once the standard error is well below τ, ten times the precision
        // buys a bit less than ten times the width (the log term grows).
        let wide = normal_mixture_half_width(0.01, tau, alpha);
        let narrow = normal_mixture_half_width(0.001, tau, alpha);
        assert!(
            wide / narrow < 10.0 && wide / narrow > 5.0,
            "{wide} {narrow}"
        );
        // Always wider than the fixed-sample interval (z = 1.96).
        assert!(narrow > 1.96 * 0.001);
        // Near se ≈ τ the mixture pays for being tuned to smaller effects.
        assert!(normal_mixture_half_width(0.1, tau, alpha) / wide > 10.0);
        assert!(normal_mixture_half_width(f64::INFINITY, tau, alpha).is_infinite());
    }

    #[test]
    fn one_sided_boundary_is_tighter_than_two_sided_at_the_same_level() {
        let (se, tau) = (0.01, 0.1);
        let one = normal_mixture_one_sided(se, tau, 0.05);
        let two = normal_mixture_half_width(se, tau, 0.05);
        let two_at_double = normal_mixture_half_width(se, tau, 0.10);
        assert!(one < two, "{one} vs {two}");
        // Half-normal mixing at α is close to the symmetric mixture at 2α
        // (their difference is the chance of crossing both sides).
        assert!(
            (one - two_at_double).abs() / one < 0.05,
            "{one} vs {two_at_double}"
        );
        // Monotone in α.
        assert!(normal_mixture_one_sided(se, tau, 0.01) > one);
    }

    #[test]
    fn mixture_p_value_agrees_with_the_width() {
        let (se, tau, alpha) = (0.02, 0.1, 0.05);
        let w = normal_mixture_half_width(se, tau, alpha);
        // On the boundary the p-value is exactly alpha.
        let p = normal_mixture_p_value(w, 0.0, se, tau);
        assert!((p - alpha).abs() < 1e-12, "p={p}");
        assert_eq!(normal_mixture_p_value(0.0, 0.0, se, tau), 1.0);
    }

    #[test]
    fn rate_interval_covers_and_is_exact_for_zero_errors() {
        let (lo, hi) = rate_interval(
            Counts {
                errors: 0,
                total: 1000,
            },
            Sides::two_sided(0.05),
        );
        assert_eq!(lo, 0.0);
        // Zero errors in 1000 cannot rule out a rate near 0.5%.
        assert!(hi > 0.003 && hi < 0.02, "hi={hi}");
        let (lo, hi) = rate_interval(
            Counts {
                errors: 50,
                total: 10_000,
            },
            Sides::two_sided(0.05),
        );
        assert!(
            lo < 0.005 && hi > 0.005 && lo > 0.002 && hi < 0.009,
            "[{lo}, {hi}]"
        );
    }

    #[test]
    fn difference_interval_brackets_the_truth_and_shrinks() {
        let small = BetaBinomial {
            baseline: Counts {
                errors: 5,
                total: 1000,
            },
            canary: Counts {
                errors: 20,
                total: 1000,
            },
        };
        let large = BetaBinomial {
            baseline: Counts {
                errors: 50,
                total: 10_000,
            },
            canary: Counts {
                errors: 200,
                total: 10_000,
            },
        };
        let (a, b) = small.difference_interval(Sides::two_sided(0.05));
        let (c, d) = large.difference_interval(Sides::two_sided(0.05));
        assert!(a < 0.015 && 0.015 < b, "[{a}, {b}]");
        assert!(c < 0.015 && 0.015 < d, "[{c}, {d}]");
        assert!(d - c < b - a);
        // With 10k per cohort, +1.5pp is clearly above a 0.5pp margin.
        assert!(c > 0.005, "lower {c}");
        assert!(large.log_evidence_worse(RateBoundary::Difference(0.005)) > (2.0f64 / 0.05).ln());
        assert_eq!(
            large.log_evidence_better(RateBoundary::Difference(0.005)),
            0.0
        );
    }

    #[test]
    fn relative_boundary_matches_difference_where_they_coincide() {
        let bb = BetaBinomial {
            baseline: Counts {
                errors: 100,
                total: 100_000,
            },
            canary: Counts {
                errors: 400,
                total: 100_000,
            },
        };
        // A 4x jump from 0.1% is beyond both a +50% ratio and a +0.05pp
        // difference; the evidence says "worse" and never "better".
        assert!(bb.log_evidence_worse(RateBoundary::Ratio(0.5)) > 0.0);
        assert!(bb.log_evidence_worse(RateBoundary::Difference(0.0005)) > 0.0);
        assert_eq!(bb.log_evidence_better(RateBoundary::Ratio(0.5)), 0.0);
        assert!(bb.p_value_equal() < 0.05);
        // The same counts at a tenth of the traffic are not enough evidence:
        // the mixture pays a few nats for not knowing the rates in advance.
        let small = BetaBinomial {
            baseline: Counts {
                errors: 10,
                total: 10_000,
            },
            canary: Counts {
                errors: 40,
                total: 10_000,
            },
        };
        assert!(
            small.log_evidence_worse(RateBoundary::Ratio(0.5))
                < bb.log_evidence_worse(RateBoundary::Ratio(0.5))
        );
    }
}
