//! The error guarantee under continuous monitoring, checked by seeded
//! simulation: rollouts judged at every look, stopping at the first
//! decisive one.
//!
//! Bands come from the math, not from a previous run: if the true rate of a
//! wrong decision is at most α = 5%, the number of wrong decisions in `n`
//! independent rollouts is at most Binomial(n, 0.05), whose 99.9% quantile
//! is the bound asserted (so a correct implementation fails this test with
//! probability under 0.1% per seed, and the seeds are fixed). The same loop
//! with an uncorrected fixed-sample test shows the problem the guarantee
//! solves.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution as _, LogNormal};
use weir_analysis::stats::special::normal_sf;
use weir_analysis::{
    Bounds, Counts, Distribution, Margin, MetricKind, MetricSpec, Observations, Policy, Verdict,
    decide,
};

const ROLLOUTS: u64 = 200;
const ALPHA: f64 = 0.05;

/// The 99.9% quantile of Binomial(n, p), by summing the pmf.
fn binomial_upper(n: u64, p: f64) -> u64 {
    let mut cdf = 0.0;
    let mut pmf = (1.0 - p).powi(n as i32);
    for k in 0..=n {
        cdf += pmf;
        if cdf >= 0.999 {
            return k;
        }
        pmf *= (n - k) as f64 / (k + 1) as f64 * p / (1.0 - p);
    }
    n
}

/// Runs one rollout: looks every `step` samples per cohort up to `max`;
/// returns the first decisive verdict, or `Continue`.
fn rollout(
    spec: &MetricSpec,
    seed: u64,
    step: usize,
    max: usize,
    mut draw: impl FnMut(&mut StdRng, bool) -> f64,
) -> Verdict {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut b, mut c) = (Distribution::new(), Distribution::new());
    let (mut eb, mut ec) = (0u64, 0u64);
    for look in 1..=max / step {
        for _ in 0..step {
            let (x, y) = (draw(&mut rng, false), draw(&mut rng, true));
            if spec.kind == MetricKind::ErrorRate {
                eb += x as u64;
                ec += y as u64;
            } else {
                b.record(x).expect("finite");
                c.record(y).expect("finite");
            }
        }
        let n = (look * step) as u64;
        let obs = if spec.kind == MetricKind::ErrorRate {
            Observations::Errors {
                baseline: Counts {
                    errors: eb,
                    total: n,
                },
                canary: Counts {
                    errors: ec,
                    total: n,
                },
            }
        } else if spec.kind == MetricKind::Distribution {
            Observations::Distribution {
                baseline: b.clone(),
                canary: c.clone(),
            }
        } else {
            Observations::Latency {
                baseline: b.clone(),
                canary: c.clone(),
            }
        };
        let d = decide(&Policy::default(), &[(spec.clone(), obs)], None).expect("valid");
        if d.verdict != Verdict::Continue {
            return d.verdict;
        }
    }
    Verdict::Continue
}

fn latency_spec() -> MetricSpec {
    MetricSpec {
        name: "ttft".into(),
        kind: MetricKind::Latency,
        bounds: Bounds::max_increase(Margin::Relative(0.10)),
        quantiles: vec![0.5, 0.99],
        hard_limit: None,
    }
}

fn lognormal(scale: f64) -> impl FnMut(&mut StdRng, bool) -> f64 {
    let d = LogNormal::new(0.2f64.ln(), 0.3).expect("valid");
    move |rng, canary| d.sample(rng) * if canary { scale } else { 1.0 }
}

#[test]
fn healthy_canaries_are_rarely_aborted_however_often_we_look() {
    let spec = latency_spec();
    let aborted = (0..ROLLOUTS)
        .filter(|s| rollout(&spec, 1000 + s, 200, 4000, lognormal(1.0)) == Verdict::Abort)
        .count() as u64;
    let bound = binomial_upper(ROLLOUTS, ALPHA);
    assert!(
        aborted <= bound,
        "{aborted} of {ROLLOUTS} healthy canaries aborted (bound {bound})"
    );
}

#[test]
fn canaries_exactly_at_the_margin_are_rarely_promoted() {
    // Every quantile and the shift are exactly +10%: promoting is wrong.
    let spec = latency_spec();
    let promoted = (0..ROLLOUTS)
        .filter(|s| rollout(&spec, 2000 + s, 200, 4000, lognormal(1.10)) == Verdict::Promote)
        .count() as u64;
    let bound = binomial_upper(ROLLOUTS, ALPHA);
    assert!(
        promoted <= bound,
        "{promoted} of {ROLLOUTS} at-margin canaries promoted (bound {bound})"
    );
}

#[test]
fn rare_errors_at_the_margin_are_rarely_promoted() {
    // 0.1% → 0.6%: exactly 0.5pp worse. The exact evidence must not promote.
    let spec = MetricSpec {
        name: "errors".into(),
        kind: MetricKind::ErrorRate,
        bounds: Bounds::max_increase(Margin::Absolute(0.005)),
        quantiles: vec![],
        hard_limit: None,
    };
    let draw = |rng: &mut StdRng, canary: bool| {
        let rate = if canary { 0.006 } else { 0.001 };
        f64::from(u8::from(rng.random::<f64>() < rate))
    };
    let promoted = (0..ROLLOUTS)
        .filter(|s| rollout(&spec, 3000 + s, 500, 10_000, draw) == Verdict::Promote)
        .count() as u64;
    let bound = binomial_upper(ROLLOUTS, ALPHA);
    assert!(
        promoted <= bound,
        "{promoted} of {ROLLOUTS} promoted (bound {bound})"
    );
}

/// Output tokens judged both ways (`maxChange: 20%`), with the canary at
/// either edge of the margin: every effect exactly 20% higher, or exactly
/// 20% lower. Neither is beyond the margin, so an abort is wrong; neither
/// is shown inside it, so a promotion is wrong too. Both directions of
/// three effects are six chances of `α/6` on the abort side (three of them
/// on the edge's side), one chance of `α` on the promote side.
#[test]
fn a_both_way_metric_at_either_edge_of_its_margin_is_rarely_misjudged() {
    let spec = MetricSpec {
        name: "tokens".into(),
        kind: MetricKind::Distribution,
        bounds: Bounds::max_change(Margin::Relative(0.20)),
        quantiles: vec![0.5, 0.99],
        hard_limit: None,
    };
    let tokens = |scale: f64| {
        let d = LogNormal::new(180f64.ln(), 0.5).expect("valid");
        move |rng: &mut StdRng, canary: bool| d.sample(rng) * if canary { scale } else { 1.0 }
    };
    let bound = binomial_upper(ROLLOUTS, ALPHA);
    for (edge, scale, seeds) in [("+20%", 1.20, 4000), ("-20%", 0.80, 5000)] {
        let verdicts: Vec<Verdict> = (0..ROLLOUTS)
            .map(|s| rollout(&spec, seeds + s, 200, 4000, tokens(scale)))
            .collect();
        let count = |v: Verdict| verdicts.iter().filter(|x| **x == v).count() as u64;
        let (aborted, promoted) = (count(Verdict::Abort), count(Verdict::Promote));
        assert!(
            aborted <= bound && promoted <= bound,
            "at {edge}: {aborted} aborted, {promoted} promoted of {ROLLOUTS} (bound {bound} each)"
        );
    }
}

/// Decode speed (`maxDecrease: 25%`) exactly 25% lower: not shown
/// inside the margin, so promoting is wrong. The promotion needs the lower
/// end of that decrease effect above the truth: one chance of `α`.
#[test]
fn a_decrease_metric_at_its_margin_is_rarely_promoted() {
    let spec = MetricSpec {
        name: "decode_speed".into(),
        kind: MetricKind::Distribution,
        bounds: Bounds::max_decrease(Margin::Relative(0.25)),
        quantiles: vec![0.05, 0.5],
        hard_limit: None,
    };
    let d = LogNormal::new(60f64.ln(), 0.2).expect("valid");
    let speed =
        move |rng: &mut StdRng, canary: bool| d.sample(rng) * if canary { 0.75 } else { 1.0 };
    let promoted = (0..ROLLOUTS)
        .filter(|s| rollout(&spec, 6000 + s, 200, 4000, speed) == Verdict::Promote)
        .count() as u64;
    let bound = binomial_upper(ROLLOUTS, ALPHA);
    assert!(
        promoted <= bound,
        "{promoted} of {ROLLOUTS} at-margin canaries promoted (bound {bound})"
    );
}

/// The same healthy rollouts judged by a fixed-sample two-sided z-test on
/// the mean log latency at every look, uncorrected: false alarms pile up
/// far beyond α. This is the failure the confidence sequences prevent; if
/// it stopped showing, the simulation would not be testing anything.
#[test]
fn uncorrected_repeated_tests_would_fail_the_same_check() {
    let mut alarms = 0;
    for s in 0..ROLLOUTS {
        let mut rng = StdRng::seed_from_u64(1000 + s);
        let d = LogNormal::new(0.2f64.ln(), 0.3).expect("valid");
        let (mut sum_b, mut sum_c) = (0.0, 0.0);
        for look in 1..=20u32 {
            for _ in 0..200 {
                sum_b += d.sample(&mut rng).ln();
                sum_c += d.sample(&mut rng).ln();
            }
            let n = f64::from(look * 200);
            let z = (sum_c / n - sum_b / n) / (0.3 * (2.0 / n).sqrt());
            if 2.0 * normal_sf(z.abs()) < ALPHA {
                alarms += 1;
                break;
            }
        }
    }
    let bound = binomial_upper(ROLLOUTS, ALPHA);
    assert!(
        alarms > bound,
        "{alarms} false alarms with 20 uncorrected looks; expected well over {bound}"
    );
}
