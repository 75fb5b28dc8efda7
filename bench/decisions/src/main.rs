//! Decision-quality benchmark: how often each rule decides wrong, and how
//! fast it decides, over many simulated rollouts.
//!
//! Each rollout draws per-request values (latencies, output tokens, decode
//! speeds, or 0/1 outcomes) for a baseline and a canary cohort from a
//! scenario, then looks every `step` requests per cohort up to `max`, as a
//! controller judging every interval would. Three rules judge the same data
//! side by side:
//!
//! - **weir**: `weir_analysis::decide` (confidence sequences with margins),
//!   stopping at the first promote or abort;
//! - **Flagger-style**: a fixed threshold on a window statistic of the
//!   canary (p99 latency, mean output tokens or decode speed, a rate) in
//!   each window; the threshold is set from the *true* healthy value and
//!   the margin, which is generous to it; five failed checks abort, ten
//!   windows with fewer failures promote (Flagger's usual `threshold: 5`
//!   and ten steps);
//! - **Kayenta-style**: a two-sided Mann-Whitney test at 98% confidence on
//!   all data so far, repeated at every look with no correction; abort when
//!   significant in a bad direction (higher, lower, or either for output
//!   length), promote at the end.
//!
//! A decision is wrong when it aborts a canary whose true effect is inside
//! the margin, or promotes one whose true effect is outside it. Rollouts that
//! reach `max` without a decision are counted as inconclusive, not wrong.

use std::fmt::Write as _;
use std::process::ExitCode;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution as _, LogNormal, Pareto};
use weir_analysis::stats::rank::mann_whitney_asymptotic;
use weir_analysis::{
    Bounds, Counts, Distribution, Margin, MetricKind, MetricSpec, Observations, Policy, Verdict,
    decide,
};

/// Relative latency margin and absolute error margin used by every scenario.
const LATENCY_MARGIN: f64 = 0.10;
const ERROR_MARGIN: f64 = 0.005;
/// Quantiles weir compares besides the shift.
const QUANTILES: [f64; 2] = [0.5, 0.99];
/// Output tokens per request: `maxChange`, either way is a regression.
const TOKENS_MARGIN: f64 = 0.20;
/// Decode speed (tokens per second after the first): `maxDecrease`; its
/// slow tail is the low quantiles.
const DECODE_MARGIN: f64 = 0.25;
const DECODE_QUANTILES: [f64; 2] = [0.05, 0.5];
/// Share of answers cut at `max_tokens` (`finish_reason: length`).
const LENGTH_MARGIN: f64 = 0.03;
/// Flagger-style rule: failed checks before abort, windows before promote.
const FLAGGER_FAILURES: u32 = 5;
const FLAGGER_WINDOWS: u32 = 10;
/// Kayenta-style rule: significance level of each uncorrected look.
const KAYENTA_ALPHA: f64 = 0.02;

/// How one request's measurement is drawn.
#[derive(Debug, Clone, Copy)]
enum Draw {
    /// Lognormal value with this median and log-sd, times `scale`; with
    /// probability `tail_p` a request is `tail_factor` times larger.
    Lognormal {
        median: f64,
        sigma: f64,
        scale: f64,
        tail_p: f64,
        tail_factor: f64,
    },
    /// Lognormal body with a Pareto tail mixed in with probability `p`.
    HeavyTail {
        median: f64,
        sigma: f64,
        p: f64,
        pareto_min: f64,
        pareto_shape: f64,
    },
    /// Two lognormal modes (prefix-cache hits and misses).
    Bimodal {
        p_fast: f64,
        fast: f64,
        slow: f64,
        sigma: f64,
    },
    /// Output tokens: lognormal with this mean and log-sd, times `scale`,
    /// rounded to whole tokens; a share `empty` of answers have none.
    Tokens {
        mean: f64,
        sigma: f64,
        scale: f64,
        empty: f64,
    },
    /// A Bernoulli outcome: 1 = counted (an error, a `finish_reason:
    /// length`).
    Share { rate: f64 },
}

impl Draw {
    fn sample(&self, rng: &mut StdRng) -> f64 {
        let lognormal = |median: f64, sigma: f64, rng: &mut StdRng| {
            LogNormal::new(median.ln(), sigma).map_or(median, |d| d.sample(rng))
        };
        match *self {
            Draw::Lognormal {
                median,
                sigma,
                scale,
                tail_p,
                tail_factor,
            } => {
                let x = lognormal(median, sigma, rng) * scale;
                if tail_p > 0.0 && rng.random::<f64>() < tail_p {
                    x * tail_factor
                } else {
                    x
                }
            }
            Draw::HeavyTail {
                median,
                sigma,
                p,
                pareto_min,
                pareto_shape,
            } => {
                if rng.random::<f64>() < p {
                    Pareto::new(pareto_min, pareto_shape).map_or(pareto_min, |d| d.sample(rng))
                } else {
                    lognormal(median, sigma, rng)
                }
            }
            Draw::Bimodal {
                p_fast,
                fast,
                slow,
                sigma,
            } => {
                let median = if rng.random::<f64>() < p_fast {
                    fast
                } else {
                    slow
                };
                lognormal(median, sigma, rng)
            }
            Draw::Tokens {
                mean,
                sigma,
                scale,
                empty,
            } => {
                if rng.random::<f64>() < empty {
                    0.0
                } else {
                    let median = mean * (-sigma * sigma / 2.0).exp();
                    (lognormal(median, sigma, rng) * scale).round()
                }
            }
            Draw::Share { rate } => f64::from(u8::from(rng.random::<f64>() < rate)),
        }
    }
}

/// What a scenario measures: weir's metric, and what the other two rules
/// watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    /// TTFT, higher is worse: `maxIncrease: 10%`, shift, p50, p99.
    Ttft,
    /// Error rate: `maxIncrease: 0.5pp`.
    Errors,
    /// Output tokens per request: `maxChange: 20%`, shift, p50, p99.
    OutputTokens,
    /// Decode speed: `maxDecrease: 25%`, shift, p5, p50.
    DecodeSpeed,
    /// Share of `finish_reason: length`: `maxIncrease: 3pp`.
    FinishLength,
}

/// A window statistic the Flagger-style rule checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Statistic {
    P99,
    Mean,
}

impl Metric {
    fn spec(self) -> MetricSpec {
        let (name, kind, bounds, quantiles) = match self {
            Metric::Ttft => (
                "ttft",
                MetricKind::Latency,
                Bounds::max_increase(Margin::Relative(LATENCY_MARGIN)),
                QUANTILES.to_vec(),
            ),
            Metric::Errors => (
                "errors",
                MetricKind::ErrorRate,
                Bounds::max_increase(Margin::Absolute(ERROR_MARGIN)),
                vec![],
            ),
            Metric::OutputTokens => (
                "tokens",
                MetricKind::Distribution,
                Bounds::max_change(Margin::Relative(TOKENS_MARGIN)),
                QUANTILES.to_vec(),
            ),
            Metric::DecodeSpeed => (
                "decode_speed",
                MetricKind::Distribution,
                Bounds::max_decrease(Margin::Relative(DECODE_MARGIN)),
                DECODE_QUANTILES.to_vec(),
            ),
            Metric::FinishLength => (
                "finish_length",
                MetricKind::ErrorRate,
                Bounds::max_increase(Margin::Absolute(LENGTH_MARGIN)),
                vec![],
            ),
        };
        MetricSpec {
            name: name.into(),
            kind,
            bounds,
            quantiles,
            hard_limit: None,
        }
    }

    /// Whether the observations are 0/1 counts rather than values.
    fn is_share(self) -> bool {
        matches!(self, Metric::Errors | Metric::FinishLength)
    }

    /// The Flagger-style check: a window statistic and the range it must
    /// stay in, from the true healthy value `healthy` of that statistic.
    fn flagger_check(self, healthy: f64) -> (Statistic, f64, f64) {
        match self {
            Metric::Ttft => (Statistic::P99, 0.0, healthy * (1.0 + LATENCY_MARGIN)),
            Metric::Errors => (Statistic::Mean, 0.0, healthy + ERROR_MARGIN),
            Metric::FinishLength => (Statistic::Mean, 0.0, healthy + LENGTH_MARGIN),
            Metric::OutputTokens => (
                Statistic::Mean,
                healthy * (1.0 - TOKENS_MARGIN),
                healthy * (1.0 + TOKENS_MARGIN),
            ),
            Metric::DecodeSpeed => (
                Statistic::Mean,
                healthy * (1.0 - DECODE_MARGIN),
                f64::INFINITY,
            ),
        }
    }

    /// The Kayenta-style rule's bad directions of Mann-Whitney's z: (higher
    /// is bad, lower is bad).
    fn bad_directions(self) -> (bool, bool) {
        match self {
            Metric::Ttft | Metric::Errors | Metric::FinishLength => (true, false),
            Metric::DecodeSpeed => (false, true),
            Metric::OutputTokens => (true, true),
        }
    }
}

/// Whether the canary's true effect is inside the margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    /// Within every margin: aborting is wrong.
    Inside,
    /// Beyond some margin: promoting is wrong.
    Outside,
    /// Exactly at the margin, the hardest case for the guarantee: the canary
    /// is not shown non-inferior, so promoting is wrong.
    AtMargin,
}

impl Truth {
    fn as_str(self) -> &'static str {
        match self {
            Truth::Inside => "inside",
            Truth::Outside => "outside",
            Truth::AtMargin => "at margin",
        }
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    name: &'static str,
    what: &'static str,
    metric: Metric,
    baseline: Draw,
    canary: Draw,
    truth: Truth,
    step: usize,
    max: usize,
}

fn scenarios() -> Vec<Scenario> {
    let ttft = |scale: f64, tail_p: f64| Draw::Lognormal {
        median: 0.2,
        sigma: 0.3,
        scale,
        tail_p,
        tail_factor: 3.0,
    };
    let heavy = Draw::HeavyTail {
        median: 0.2,
        sigma: 0.3,
        p: 0.1,
        pareto_min: 0.3,
        pareto_shape: 1.2,
    };
    let bimodal = Draw::Bimodal {
        p_fast: 0.7,
        fast: 0.05,
        slow: 0.6,
        sigma: 0.25,
    };
    let tokens = |scale: f64| Draw::Tokens {
        mean: 200.0,
        sigma: 0.5,
        scale,
        empty: 0.01,
    };
    let decode = |scale: f64| Draw::Lognormal {
        median: 60.0,
        sigma: 0.2,
        scale,
        tail_p: 0.0,
        tail_factor: 1.0,
    };
    let s = |name, what, baseline: Draw, canary, truth| Scenario {
        name,
        what,
        metric: if matches!(baseline, Draw::Share { .. }) {
            Metric::Errors
        } else {
            Metric::Ttft
        },
        baseline,
        canary,
        truth,
        step: 100,
        max: 10_000,
    };
    vec![
        s(
            "identical",
            "same TTFT distribution (lognormal, median 200 ms, σ 0.3)",
            ttft(1.0, 0.0),
            ttft(1.0, 0.0),
            Truth::Inside,
        ),
        s(
            "shift-5%",
            "canary TTFT 5% slower everywhere, margin 10%",
            ttft(1.0, 0.0),
            ttft(1.05, 0.0),
            Truth::Inside,
        ),
        s(
            "shift-20%",
            "canary TTFT 20% slower everywhere",
            ttft(1.0, 0.0),
            ttft(1.20, 0.0),
            Truth::Outside,
        ),
        s(
            "tail-only",
            "5% of canary requests 3× slower, median unchanged (p99 ≈ +90%)",
            ttft(1.0, 0.0),
            ttft(1.0, 0.05),
            Truth::Outside,
        ),
        s(
            "heavy-tailed",
            "same distribution: lognormal body + 10% Pareto(1.2) tail",
            heavy,
            heavy,
            Truth::Inside,
        ),
        s(
            "bimodal",
            "same distribution: 70% cache hits (50 ms), 30% misses (600 ms)",
            bimodal,
            bimodal,
            Truth::Inside,
        ),
        s(
            "errors-equal",
            "error rate 0.5% in both, margin 0.5pp",
            Draw::Share { rate: 0.005 },
            Draw::Share { rate: 0.005 },
            Truth::Inside,
        ),
        s(
            "errors-rare",
            "error rate 0.1% in both, margin 0.5pp",
            Draw::Share { rate: 0.001 },
            Draw::Share { rate: 0.001 },
            Truth::Inside,
        ),
        s(
            "errors-up",
            "error rate 0.5% → 2%, margin 0.5pp",
            Draw::Share { rate: 0.005 },
            Draw::Share { rate: 0.02 },
            Truth::Outside,
        ),
        s(
            "shift-at-margin",
            "canary TTFT exactly 10% slower everywhere (calibration check)",
            ttft(1.0, 0.0),
            ttft(1.10, 0.0),
            Truth::AtMargin,
        ),
        s(
            "errors-at-margin",
            "error rate 0.5% → 1.0%, exactly the margin (calibration check)",
            Draw::Share { rate: 0.005 },
            Draw::Share { rate: 0.010 },
            Truth::AtMargin,
        ),
        Scenario {
            step: 10,
            max: 500,
            ..s(
                "low-traffic",
                "same TTFT, a look every 10 requests up to 500 per cohort",
                ttft(1.0, 0.0),
                ttft(1.0, 0.0),
                Truth::Inside,
            )
        },
        // Output tokens per request, maxChange 20% (either way is wrong).
        Scenario {
            metric: Metric::OutputTokens,
            ..s(
                "tokens-same",
                "same output length (lognormal, mean 200 tokens, σ 0.5, whole tokens, 1% empty answers), maxChange 20%",
                tokens(1.0),
                tokens(1.0),
                Truth::Inside,
            )
        },
        Scenario {
            metric: Metric::OutputTokens,
            ..s(
                "tokens+10%",
                "canary answers 10% longer, maxChange 20%",
                tokens(1.0),
                tokens(1.10),
                Truth::Inside,
            )
        },
        Scenario {
            metric: Metric::OutputTokens,
            ..s(
                "tokens+40%",
                "canary answers 40% longer (rambling), maxChange 20%",
                tokens(1.0),
                tokens(1.40),
                Truth::Outside,
            )
        },
        Scenario {
            metric: Metric::OutputTokens,
            ..s(
                "tokens-40%",
                "canary answers 40% shorter (truncating), maxChange 20%",
                tokens(1.0),
                tokens(0.60),
                Truth::Outside,
            )
        },
        Scenario {
            metric: Metric::OutputTokens,
            ..s(
                "tokens-at-margin",
                "canary answers exactly 20% longer, maxChange 20% (calibration check)",
                tokens(1.0),
                tokens(1.20),
                Truth::AtMargin,
            )
        },
        // Decode speed, maxDecrease 25% (lower is worse).
        Scenario {
            metric: Metric::DecodeSpeed,
            ..s(
                "decode-same",
                "same decode speed (lognormal, median 60 tokens/s, σ 0.2), maxDecrease 25%",
                decode(1.0),
                decode(1.0),
                Truth::Inside,
            )
        },
        Scenario {
            metric: Metric::DecodeSpeed,
            ..s(
                "decode-10%",
                "canary decodes 10% slower, maxDecrease 25%",
                decode(1.0),
                decode(0.90),
                Truth::Inside,
            )
        },
        Scenario {
            metric: Metric::DecodeSpeed,
            ..s(
                "decode-35%",
                "canary decodes 35% slower, maxDecrease 25%",
                decode(1.0),
                decode(0.65),
                Truth::Outside,
            )
        },
        Scenario {
            metric: Metric::DecodeSpeed,
            ..s(
                "decode-at-margin",
                "canary decodes exactly 25% slower, maxDecrease 25% (calibration check)",
                decode(1.0),
                decode(0.75),
                Truth::AtMargin,
            )
        },
        // Share of finish_reason: length, maxIncrease 3pp.
        Scenario {
            metric: Metric::FinishLength,
            ..s(
                "length-same",
                "finish_reason length in 2% of answers in both, margin 3pp",
                Draw::Share { rate: 0.02 },
                Draw::Share { rate: 0.02 },
                Truth::Inside,
            )
        },
        Scenario {
            metric: Metric::FinishLength,
            ..s(
                "length-up",
                "finish_reason length 2% → 10%, margin 3pp",
                Draw::Share { rate: 0.02 },
                Draw::Share { rate: 0.10 },
                Truth::Outside,
            )
        },
        Scenario {
            metric: Metric::FinishLength,
            ..s(
                "length-at-margin",
                "finish_reason length 2% → 5%, exactly the margin (calibration check)",
                Draw::Share { rate: 0.02 },
                Draw::Share { rate: 0.05 },
                Truth::AtMargin,
            )
        },
    ]
}

/// What one rule did in one rollout.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Decided { verdict: Verdict, samples: usize },
    Inconclusive,
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    wrong: u32,
    decided: u32,
    inconclusive: u32,
}

#[derive(Debug, Default)]
struct RuleStats {
    tally: Tally,
    samples: Vec<usize>,
}

impl RuleStats {
    fn add(&mut self, outcome: Outcome, truth: Truth) {
        match outcome {
            Outcome::Inconclusive => self.tally.inconclusive += 1,
            Outcome::Decided { verdict, samples } => {
                self.tally.decided += 1;
                self.samples.push(samples);
                let wrong = matches!(
                    (verdict, truth),
                    (Verdict::Abort, Truth::Inside)
                        | (Verdict::Promote, Truth::Outside | Truth::AtMargin)
                );
                self.tally.wrong += u32::from(wrong);
            }
        }
    }

    fn median_samples(&mut self) -> Option<usize> {
        if self.samples.is_empty() {
            return None;
        }
        self.samples.sort_unstable();
        Some(self.samples[self.samples.len() / 2])
    }
}

/// The Flagger-style check: the window statistic and the range it must
/// stay in, set from the true healthy value (the baseline's rate, or its
/// p99 or mean from two million draws).
fn flagger_check(scenario: &Scenario, seed: u64) -> (Statistic, f64, f64) {
    if let Draw::Share { rate } = scenario.baseline {
        return scenario.metric.flagger_check(rate);
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut big: Vec<f64> = (0..2_000_000)
        .map(|_| scenario.baseline.sample(&mut rng))
        .collect();
    let (statistic, _, _) = scenario.metric.flagger_check(0.0);
    let healthy = match statistic {
        Statistic::P99 => {
            big.sort_unstable_by(f64::total_cmp);
            big[(big.len() as f64 * 0.99) as usize]
        }
        Statistic::Mean => big.iter().sum::<f64>() / big.len() as f64,
    };
    scenario.metric.flagger_check(healthy)
}

/// One simulated rollout judged by the three rules.
fn rollout(
    scenario: &Scenario,
    spec: &MetricSpec,
    policy: &Policy,
    (statistic, low, high): (Statistic, f64, f64),
    seed: u64,
) -> [Outcome; 3] {
    let mut rng = StdRng::seed_from_u64(seed);
    let baseline: Vec<f64> = (0..scenario.max)
        .map(|_| scenario.baseline.sample(&mut rng))
        .collect();
    let canary: Vec<f64> = (0..scenario.max)
        .map(|_| scenario.canary.sample(&mut rng))
        .collect();
    let errors = scenario.metric.is_share();

    let mut weir = Outcome::Inconclusive;
    let mut flagger = Outcome::Inconclusive;
    let mut kayenta = Outcome::Inconclusive;
    let mut flagger_failures = 0;
    let (mut dist_b, mut dist_c) = (Distribution::new(), Distribution::new());
    let (mut counts_b, mut counts_c) = (
        Counts {
            errors: 0,
            total: 0,
        },
        Counts {
            errors: 0,
            total: 0,
        },
    );

    let looks = scenario.max / scenario.step;
    for look in 1..=looks {
        let (from, to) = ((look - 1) * scenario.step, look * scenario.step);
        for i in from..to {
            if errors {
                counts_b.errors += baseline[i] as u64;
                counts_c.errors += canary[i] as u64;
            } else {
                // Values come from the simulator: finite and positive.
                let _ = dist_b.record(baseline[i]);
                let _ = dist_c.record(canary[i]);
            }
        }
        counts_b.total = to as u64;
        counts_c.total = to as u64;
        let observations = if errors {
            Observations::Errors {
                baseline: counts_b,
                canary: counts_c,
            }
        } else if spec.kind == MetricKind::Distribution {
            Observations::Distribution {
                baseline: dist_b.clone(),
                canary: dist_c.clone(),
            }
        } else {
            Observations::Latency {
                baseline: dist_b.clone(),
                canary: dist_c.clone(),
            }
        };

        if weir == Outcome::Inconclusive {
            // The spec and policy are built above and valid by construction.
            let d = decide(policy, &[(spec.clone(), observations)], None)
                .expect("valid benchmark spec");
            if d.verdict != Verdict::Continue {
                weir = Outcome::Decided {
                    verdict: d.verdict,
                    samples: to,
                };
            }
        }

        if flagger == Outcome::Inconclusive && look as u32 <= FLAGGER_WINDOWS {
            let window = &canary[from..to];
            let value = match statistic {
                Statistic::P99 => window_p99(window),
                Statistic::Mean => window.iter().sum::<f64>() / window.len() as f64,
            };
            let failed = !(low..=high).contains(&value);
            flagger_failures += u32::from(failed);
            if flagger_failures >= FLAGGER_FAILURES {
                flagger = Outcome::Decided {
                    verdict: Verdict::Abort,
                    samples: to,
                };
            } else if look as u32 == FLAGGER_WINDOWS {
                flagger = Outcome::Decided {
                    verdict: Verdict::Promote,
                    samples: to,
                };
            }
        }

        if kayenta == Outcome::Inconclusive {
            let (z, p) = if errors {
                mann_whitney_binary(counts_b, counts_c)
            } else {
                mann_whitney_binned(&dist_b, &dist_c)
            };
            let (higher_bad, lower_bad) = scenario.metric.bad_directions();
            if p < KAYENTA_ALPHA && ((higher_bad && z > 0.0) || (lower_bad && z < 0.0)) {
                kayenta = Outcome::Decided {
                    verdict: Verdict::Abort,
                    samples: to,
                };
            } else if look == looks {
                kayenta = Outcome::Decided {
                    verdict: Verdict::Promote,
                    samples: to,
                };
            }
        }

        if weir != Outcome::Inconclusive
            && flagger != Outcome::Inconclusive
            && kayenta != Outcome::Inconclusive
        {
            break;
        }
    }
    [weir, flagger, kayenta]
}

/// The p99 of a window as a Prometheus-backed check sees it (nearest rank).
fn window_p99(window: &[f64]) -> f64 {
    let mut w = window.to_vec();
    w.sort_unstable_by(f64::total_cmp);
    let rank = ((w.len() as f64 * 0.99).ceil() as usize).clamp(1, w.len());
    w[rank - 1]
}

/// Mann-Whitney on two binned latency distributions (values in one bin tie).
fn mann_whitney_binned(baseline: &Distribution, canary: &Distribution) -> (f64, f64) {
    let b: Vec<_> = baseline.bins().map(|x| (x.index, x.count as f64)).collect();
    let c: Vec<_> = canary.bins().map(|x| (x.index, x.count as f64)).collect();
    let key = |i: Option<usize>| i.map_or(0, |i| i + 1);
    let (mut i, mut j) = (0, 0);
    let (mut below_b, mut u, mut ties) = (0.0, 0.0, 0.0);
    while i < b.len() || j < c.len() {
        let kb = b.get(i).map_or(usize::MAX, |x| key(x.0));
        let kc = c.get(j).map_or(usize::MAX, |x| key(x.0));
        let k = kb.min(kc);
        let nb = if kb == k { b[i].1 } else { 0.0 };
        let nc = if kc == k { c[j].1 } else { 0.0 };
        u += nc * (below_b + 0.5 * nb);
        let t = nb + nc;
        ties += t * t * t - t;
        below_b += nb;
        i += usize::from(kb == k);
        j += usize::from(kc == k);
    }
    mann_whitney_asymptotic(u, baseline.count(), canary.count(), ties)
}

/// Mann-Whitney on 0/1 outcomes (two tie groups).
fn mann_whitney_binary(baseline: Counts, canary: Counts) -> (f64, f64) {
    let (eb, ec) = (baseline.errors as f64, canary.errors as f64);
    let (ob, oc) = (
        (baseline.total - baseline.errors) as f64,
        (canary.total - canary.errors) as f64,
    );
    let u = ec * ob + 0.5 * (ec * eb + oc * ob);
    let tie = |t: f64| t * t * t - t;
    mann_whitney_asymptotic(u, baseline.total, canary.total, tie(eb + ec) + tie(ob + oc))
}

/// Upper end of the 95% Wilson score interval for `k` of `n`: how bad the
/// true wrong-decision rate could be given what the simulation saw.
fn wilson_upper(k: u32, n: u32) -> f64 {
    let (k, n, z) = (f64::from(k), f64::from(n), 1.959_963_984_540_054_f64);
    let p = k / n;
    let centre = p + z * z / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    (centre + spread) / (1.0 + z * z / n)
}

struct Args {
    rollouts: u32,
    seed: u64,
    only: Option<String>,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rollouts: 1000,
        seed: 20261125,
        only: None,
        threads: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--rollouts" => {
                args.rollouts = value()?.parse().map_err(|e| format!("--rollouts: {e}"))?
            }
            "--seed" => args.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--scenario" => args.only = Some(value()?),
            "--threads" => {
                args.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?
            }
            "-h" | "--help" => {
                return Err("usage: weir-bench-decisions [--rollouts N] [--seed S] [--scenario NAME] [--threads T]".into());
            }
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    if args.rollouts == 0 || args.threads == 0 {
        return Err("--rollouts and --threads must be at least 1".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let policy = Policy::default();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "{} rollouts per scenario, seed {}, weir at confidence {} (min {} samples per cohort), \
         latency margin {}%, error margin {}pp, quantiles {:?}; output tokens maxChange {}% \
         (quantiles {:?}), decode speed maxDecrease {}% (quantiles {:?}), finish_reason length \
         share margin {}pp.\n",
        args.rollouts,
        args.seed,
        policy.confidence,
        policy.min_samples,
        LATENCY_MARGIN * 100.0,
        ERROR_MARGIN * 100.0,
        QUANTILES,
        TOKENS_MARGIN * 100.0,
        QUANTILES,
        DECODE_MARGIN * 100.0,
        DECODE_QUANTILES,
        LENGTH_MARGIN * 100.0
    );
    let _ = writeln!(
        report,
        "| scenario | truth | rule | wrong | wrong, 95% upper bound | decided | median samples to decision |\n\
         |---|---|---|---:|---:|---:|---:|"
    );
    let mut worst_weir: f64 = 0.0;
    for (index, scenario) in scenarios().into_iter().enumerate() {
        if args.only.as_deref().is_some_and(|o| o != scenario.name) {
            continue;
        }
        let started = std::time::Instant::now();
        let spec = scenario.metric.spec();
        let check = flagger_check(&scenario, args.seed);
        let scenario_seed = args
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(index as u64 * 7_919);
        let outcomes: Vec<[Outcome; 3]> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..args.threads)
                .map(|t| {
                    let (scenario, spec, policy) = (&scenario, &spec, &policy);
                    let (threads, rollouts) = (args.threads as u32, args.rollouts);
                    scope.spawn(move || {
                        (0..rollouts)
                            .filter(|r| r % threads == t as u32)
                            .map(|r| {
                                rollout(
                                    scenario,
                                    spec,
                                    policy,
                                    check,
                                    scenario_seed ^ (u64::from(r) << 20),
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_default())
                .collect()
        });
        let mut stats: [RuleStats; 3] = Default::default();
        for o in &outcomes {
            for (s, outcome) in stats.iter_mut().zip(o) {
                s.add(*outcome, scenario.truth);
            }
        }
        let n = outcomes.len() as f64;
        for (rule, s) in ["weir", "Flagger-style", "Kayenta-style"]
            .iter()
            .zip(stats.iter_mut())
        {
            let wrong = f64::from(s.tally.wrong) / n;
            if *rule == "weir" {
                worst_weir = worst_weir.max(wrong);
            }
            let median = s
                .median_samples()
                .map_or("—".to_string(), |m| m.to_string());
            let _ = writeln!(
                report,
                "| {} | {} | {} | {:.1}% | {:.1}% | {:.1}% | {} |",
                scenario.name,
                scenario.truth.as_str(),
                rule,
                wrong * 100.0,
                wilson_upper(s.tally.wrong, outcomes.len() as u32) * 100.0,
                f64::from(s.tally.decided) / n * 100.0,
                median
            );
        }
        eprintln!(
            "{:<14} {:>6.1}s  {}",
            scenario.name,
            started.elapsed().as_secs_f64(),
            scenario.what
        );
    }
    let _ = writeln!(report, "\nScenarios:\n");
    for s in scenarios() {
        let _ = writeln!(
            report,
            "- `{}`: {} (look every {} per cohort, up to {}).",
            s.name, s.what, s.step, s.max
        );
    }
    print!("{report}");
    eprintln!("worst weir wrong-decision rate: {:.2}%", worst_weir * 100.0);
    if worst_weir > 0.05 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
