//! The verdict: promote, continue or abort, with the rule that fired.
//!
//! Every metric is a non-inferiority question with margins in one or both
//! directions ([`Bounds`]): `maxIncrease` ("is the canary at most this much
//! higher than the baseline?"), `maxDecrease` ("at most this much lower?"),
//! or both (`maxChange`, a regression either way: an adapter that rambles or
//! one that truncates). Each metric contributes one or more *effects* (a
//! latency or distribution metric: the shift and each requested quantile;
//! an error metric: the difference of rates and, optionally, a hard limit on
//! the canary's rate; a gauge: the ratio or difference of means), and each
//! effect is judged once per direction that has a margin: an effect with
//! both margins is two entries, `name.up` and `name.down`, each with its own
//! interval and finding.
//!
//! On the test scale (log ratio canary/baseline for relative margins, the
//! raw difference for absolute ones) a margin is a boundary: `ln(1 + u)` or
//! `u` above zero for an increase margin `u`, `ln(1 − d)` or `−d` below zero
//! for a decrease margin `d`. For each effect and direction the analysis
//! builds a confidence sequence (see [`crate::sequential`]) whose
//! *abort-side* end errs with probability at most `α / m` and whose
//! *promote-side* end errs with probability at most `α`, where
//! `α = 1 − confidence` and `m` counts every judged effect-direction (a
//! latency metric with two quantiles and only `maxIncrease` adds 3; with
//! `maxChange` it adds 6; a hard limit adds 1). For an increase effect the
//! abort side is the lower end (it aborts when the lower end is above the
//! boundary); for a decrease effect it is the upper end (it aborts when the
//! upper end is below the boundary), so the two ends' levels are swapped.
//! Then:
//!
//! - **abort** when any effect is shown beyond its boundary (its abort-side
//!   end is past it), or a hard limit is shown breached;
//! - **promote** when every effect is shown inside its boundary (its
//!   promote-side end is on the inside);
//! - **continue** otherwise, naming what is still undecided.
//!
//! Guarantee: a rollout judged at every interval aborts a canary that is
//! within all its margins with probability at most `α` (an abort needs some
//! abort-side end on the wrong side of the truth: `m` chances of `α/m`; a
//! metric judged both ways offers two such chances per effect, one per
//! direction, and counts twice in `m`), and promotes a canary that is beyond
//! some margin with probability at most `α` (a promotion needs the
//! promote-side end of *that* effect-direction on the wrong side of the
//! truth: one chance of `α`; an intersection-union argument, so no
//! correction is needed on this side). Exactly for error rates,
//! asymptotically for latencies, distributions and gauges;
//! `bench/decisions` and `tests/guarantee.rs` measure it.
//!
//! The decision is stateless: each call sees the cumulative observations
//! since the analysis began and needs nothing from earlier calls, so a
//! controller restart cannot corrupt it.
//!
//! One module per concern: `distribution` (latencies and other positive
//! per-request quantities), `errors` and `gauge` judge a metric's effects,
//! `effect` holds what they share, and `verdict` combines the findings.
//! The types and [`decide`] are here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::compare::{GaugeInterval, gauge::normalized};
use crate::dist::Distribution;
use crate::sequential::{Counts, Sides};

mod distribution;
mod effect;
mod errors;
mod gauge;
mod verdict;

use distribution::judge_distribution;
pub use distribution::quantile_label;
use errors::judge_errors;
use gauge::judge_gauge;
use verdict::verdict;

/// Errors in how the analysis was asked for.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AnalysisError {
    /// A setting is out of range.
    #[error("{field}: {reason}")]
    InvalidPolicy {
        /// The setting, as a user writes it (e.g. `confidence`).
        field: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A metric's observations are not of the metric's kind.
    #[error("metric {metric}: observations are {found}, but the metric is {expected}")]
    MismatchedObservations {
        /// The metric's name.
        metric: String,
        /// The kind the metric was configured with.
        expected: &'static str,
        /// The kind of observations supplied.
        found: &'static str,
    },
    /// Nothing to judge.
    #[error("no metrics to analyze: configure at least one metric")]
    NoMetrics,
}

/// How far the canary may move in one direction: `maxIncrease` or
/// `maxDecrease` (always written as a non-negative amount).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Margin {
    /// A fraction of the baseline: `10%` is `Relative(0.10)`.
    Relative(f64),
    /// In the metric's own units: `0.5pp` is `Absolute(0.005)` for an error
    /// rate; a bare number for a gauge.
    Absolute(f64),
}

impl FromStr for Margin {
    type Err = String;

    /// Parses `10%`, `0.5pp` or a bare number.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let parse = |n: &str| -> Result<f64, String> {
            let v: f64 = n.trim().parse().map_err(|_| {
                format!("{s:?} is not a margin: write a relative margin like 10% or an absolute one like 0.5pp")
            })?;
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("margin {s:?} must be a finite number ≥ 0"));
            }
            Ok(v)
        };
        if let Some(n) = t.strip_suffix('%') {
            Ok(Margin::Relative(parse(n)? / 100.0))
        } else if let Some(n) = t.strip_suffix("pp") {
            Ok(Margin::Absolute(parse(n)? / 100.0))
        } else {
            Ok(Margin::Absolute(parse(t)?))
        }
    }
}

impl fmt::Display for Margin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Margin::Relative(r) => write!(f, "{}%", trim_float(r * 100.0)),
            Margin::Absolute(a) => write!(f, "{}", trim_float(*a)),
        }
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Which way an effect is judged: the side of the baseline its margin is
/// on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Higher is worse (`maxIncrease`): aborts when the interval's lower
    /// end is above the boundary, promotes when its upper end is below.
    Increase,
    /// Lower is worse (`maxDecrease`): aborts when the interval's upper
    /// end is below the boundary, promotes when its lower end is above.
    Decrease,
}

impl Direction {
    /// The suffix of an effect's name when a metric is judged both ways:
    /// `up` or `down` (`tokens.shift.up`).
    pub const fn suffix(self) -> &'static str {
        match self {
            Direction::Increase => "up",
            Direction::Decrease => "down",
        }
    }

    /// The setting a user writes for this direction's margin.
    pub const fn field(self) -> &'static str {
        match self {
            Direction::Increase => "maxIncrease",
            Direction::Decrease => "maxDecrease",
        }
    }

    /// A margin amount as a signed bound on the effect's own scale:
    /// `+amount` for an increase, `−amount` for a decrease.
    pub fn signed(self, amount: f64) -> f64 {
        match self {
            Direction::Increase => amount,
            Direction::Decrease => -amount,
        }
    }

    /// The error levels of an effect's two ends in this direction, from
    /// the levels of an increase effect (`lower` aborts at `α/m`, `upper`
    /// promotes at `α`): a decrease effect aborts on its upper end, so the
    /// levels swap.
    pub fn sides(self, increase: Sides) -> Sides {
        match self {
            Direction::Increase => increase,
            Direction::Decrease => Sides {
                lower: increase.upper,
                upper: increase.lower,
            },
        }
    }
}

/// The margins of one metric, one per direction; at least one is set.
///
/// `maxChange: 20%` is [`Bounds::max_change`]: both directions with the
/// same margin. Different margins per direction are both fields set.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bounds {
    /// `maxIncrease`: how much higher than the baseline the canary may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increase: Option<Margin>,
    /// `maxDecrease`: how much lower than the baseline the canary may be.
    /// A relative decrease margin is below 100%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decrease: Option<Margin>,
}

impl Bounds {
    /// Higher is worse: `maxIncrease`.
    pub const fn max_increase(margin: Margin) -> Self {
        Self {
            increase: Some(margin),
            decrease: None,
        }
    }

    /// Lower is worse: `maxDecrease`.
    pub const fn max_decrease(margin: Margin) -> Self {
        Self {
            increase: None,
            decrease: Some(margin),
        }
    }

    /// Either way is worse, by the same margin: `maxChange`.
    pub const fn max_change(margin: Margin) -> Self {
        Self {
            increase: Some(margin),
            decrease: Some(margin),
        }
    }

    /// The directions with a margin, increase first.
    pub fn directions(&self) -> impl Iterator<Item = (Direction, Margin)> {
        [
            (Direction::Increase, self.increase),
            (Direction::Decrease, self.decrease),
        ]
        .into_iter()
        .filter_map(|(d, m)| Some((d, m?)))
    }

    /// Whether both directions are judged (each effect then carries an
    /// `.up` / `.down` suffix).
    pub fn both(&self) -> bool {
        self.increase.is_some() && self.decrease.is_some()
    }

    fn count(&self) -> usize {
        self.directions().count()
    }
}

/// What kind of signal a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MetricKind {
    /// A latency distribution (TTFT, inter-token latency, duration).
    Latency,
    /// A distribution of some other positive per-request quantity (output
    /// tokens, decode speed in tokens per second), judged exactly like a
    /// latency: the shift and quantiles on a log scale. Zeros (an empty
    /// answer's 0 tokens) are kept as the smallest values; see
    /// [`crate::compare::latency`].
    Distribution,
    /// A proportion of failed requests.
    ErrorRate,
    /// A per-interval gauge (GPU utilization, KV-cache usage).
    Gauge,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Latency => "latency",
            MetricKind::Distribution => "distribution",
            MetricKind::ErrorRate => "errorRate",
            MetricKind::Gauge => "gauge",
        }
    }
}

/// One metric to judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricSpec {
    /// Name shown in verdicts, e.g. `ttft`.
    pub name: String,
    /// The kind of signal.
    pub kind: MetricKind,
    /// How far the canary may move, per direction.
    pub bounds: Bounds,
    /// Latency and distribution only: quantiles compared besides the shift
    /// (e.g. 0.5, 0.99).
    #[serde(default)]
    pub quantiles: Vec<f64>,
    /// Error rate only: abort as soon as the canary's own rate is shown
    /// above this (a fraction, `0.05` for 5%), whatever the baseline does.
    #[serde(default)]
    pub hard_limit: Option<f64>,
}

/// Settings that apply to the whole analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Probability that no verdict of the whole run is wrong (0.95).
    pub confidence: f64,
    /// Requests per cohort before latency and error effects are judged.
    pub min_samples: u64,
    /// Intervals per cohort before a gauge is judged.
    pub min_intervals: u64,
    /// Largest relative difference in per-replica load between cohorts
    /// under which the comparison is fair (0.2 = 20%).
    pub max_load_imbalance: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            confidence: 0.95,
            min_samples: 200,
            min_intervals: 5,
            max_load_imbalance: 0.2,
        }
    }
}

/// Observations of one metric for both cohorts, cumulative since the
/// analysis began.
#[derive(Debug, Clone, PartialEq)]
pub enum Observations {
    /// Latency distributions.
    Latency {
        /// The baseline (stable) cohort.
        baseline: Distribution,
        /// The canary cohort.
        canary: Distribution,
    },
    /// Distributions of another positive per-request quantity (output
    /// tokens, decode speed).
    Distribution {
        /// The baseline (stable) cohort.
        baseline: Distribution,
        /// The canary cohort.
        canary: Distribution,
    },
    /// Error counts.
    Errors {
        /// The baseline (stable) cohort.
        baseline: Counts,
        /// The canary cohort.
        canary: Counts,
    },
    /// Per-interval gauge values; `per_unit` divides each by its throughput.
    Gauge {
        /// The baseline (stable) cohort.
        baseline: Vec<GaugeInterval>,
        /// The canary cohort.
        canary: Vec<GaugeInterval>,
        /// Normalize by throughput.
        per_unit: bool,
    },
}

impl Observations {
    fn kind(&self) -> MetricKind {
        match self {
            Observations::Latency { .. } => MetricKind::Latency,
            Observations::Distribution { .. } => MetricKind::Distribution,
            Observations::Errors { .. } => MetricKind::ErrorRate,
            Observations::Gauge { .. } => MetricKind::Gauge,
        }
    }
}

/// Per-replica load of each cohort (requests per second per replica).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Load {
    /// The baseline's requests per second per replica.
    pub baseline_per_replica: f64,
    /// The canary's requests per second per replica.
    pub canary_per_replica: f64,
}

impl Load {
    /// Relative difference: `|c − b| / max(b, c)`.
    pub fn imbalance(&self) -> f64 {
        let (b, c) = (self.baseline_per_replica, self.canary_per_replica);
        let top = b.max(c);
        if top <= 0.0 { 0.0 } else { (c - b).abs() / top }
    }
}

/// The analysis's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every effect is shown within its margin.
    Promote,
    /// Not enough evidence either way yet.
    Continue,
    /// Some effect is shown beyond its margin.
    Abort,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Promote => "promote",
            Verdict::Continue => "continue",
            Verdict::Abort => "abort",
        })
    }
}

/// What part an entry plays in the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Must be within its margin to promote; beyond it aborts.
    Decision,
    /// Aborts when breached; otherwise does not hold promotion back.
    Guard,
    /// A classical fixed-sample test, shown for reference; never decides.
    Reference,
}

/// Where an effect stands against its margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Finding {
    /// The whole interval is below the margin.
    Within,
    /// The whole interval is above the margin.
    Exceeds,
    /// The interval contains the margin.
    Undecided,
    /// Too few observations to judge yet.
    Insufficient,
    /// Reference entries have no finding.
    None,
}

impl Finding {
    /// The name as serialized (`within`, `exceeds`, …), for status and
    /// reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Finding::Within => "within",
            Finding::Exceeds => "exceeds",
            Finding::Undecided => "undecided",
            Finding::Insufficient => "insufficient",
            Finding::None => "none",
        }
    }
}

/// One line of the analysis: an effect that decides, or a reference test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    /// `metric` or `metric.effect`, e.g. `ttft.p99`.
    pub name: String,
    /// The metric's kind.
    pub kind: MetricKind,
    /// The method: `mann-whitney`, `hodges-lehmann`, `quantile-ratio`,
    /// `fisher-exact`, `beta-binomial-mixture`, `welch-t`, `mean-ratio`,
    /// `mean-difference`, `rate-limit`.
    pub test: String,
    /// The test's statistic (U, t, odds ratio, or the effect on its test
    /// scale, e.g. the log shift).
    pub statistic: Option<f64>,
    /// Reference entries: the fixed-sample two-sided p-value. Effects: the
    /// anytime-valid p-value for "no change".
    pub p_value: Option<f64>,
    /// The effect: relative (`0.05` = canary 5% higher) for relative
    /// margins, in the metric's units for absolute ones.
    pub estimate: Option<f64>,
    /// Lower end of the interval (anytime-valid for effects: at `α/m` for
    /// an increase effect, where it is the end that aborts, at `α` for a
    /// decrease effect; fixed-sample at the confidence for reference
    /// entries).
    pub ci_low: Option<f64>,
    /// Upper end of the interval (at `α` for an increase effect, `α/m` for
    /// a decrease effect).
    pub ci_high: Option<f64>,
    /// Baseline observations.
    pub baseline_n: u64,
    /// Canary observations.
    pub canary_n: u64,
    /// The baseline's value (quantile, rate, mean) when meaningful.
    pub baseline_value: Option<f64>,
    /// The canary's value.
    pub canary_value: Option<f64>,
    /// The margin as a signed bound in the estimate's units: `+0.10` for
    /// `maxIncrease: 10%`, `-0.25` for `maxDecrease: 25%`; a guard's limit.
    pub margin: Option<f64>,
    /// Which way the effect is judged; `None` for reference entries (and
    /// in documents written before directions existed, whose effects were
    /// all increases). A guard is an increase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Whether `estimate` and `margin` are relative (fractions of the
    /// baseline) rather than absolute.
    pub relative: bool,
    /// The entry's part in the verdict.
    pub role: Role,
    /// Where the effect stands.
    pub finding: Finding,
    /// Why, in a sentence, when the finding needs it (e.g. too few samples).
    pub note: Option<String>,
}

impl MetricResult {
    /// `ttft.p99 +92.1% [+71.0%, +116.3%] vs margin +10.0%`, or for a
    /// decrease effect `decode_speed.shift -31.0% [-35.2%, -26.5%] vs
    /// margin -25.0%` (the margin is signed, so it reads as the bound the
    /// interval is held against), for verdict rules.
    pub fn describe(&self) -> String {
        let fmt = |v: Option<f64>| match v {
            None => "?".to_string(),
            Some(v) if v.is_infinite() => {
                if v > 0.0 {
                    "+∞".into()
                } else {
                    "−∞".into()
                }
            }
            Some(v) if self.relative => format!("{:+.1}%", v * 100.0),
            Some(v) if self.kind == MetricKind::ErrorRate => format!("{:+.2}pp", v * 100.0),
            Some(v) => format!("{v:+.4}"),
        };
        let mut s = format!(
            "{} {} [{}, {}]",
            self.name,
            fmt(self.estimate),
            fmt(self.ci_low),
            fmt(self.ci_high)
        );
        if self.margin.is_some() {
            let what = if self.role == Role::Guard {
                "limit"
            } else {
                "margin"
            };
            let margin = match (self.role, self.margin) {
                (Role::Guard, Some(m)) => format!("{:.2}%", m * 100.0),
                (_, m) => fmt(m),
            };
            s.push_str(&format!(" vs {what} {margin}"));
        }
        s
    }
}

/// The verdict with everything that led to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// promote, continue or abort.
    pub verdict: Verdict,
    /// The rule that fired, in a sentence a person can act on.
    pub rule: String,
    /// Error probability of each end of an *increase* effect's interval:
    /// `lower` (the end that aborts) at `α / m`, `upper` (the end that
    /// promotes) at `α`, with `m` the number of judged effect-directions. A
    /// decrease effect uses the same two levels swapped (its upper end
    /// aborts, at `lower`; its lower end promotes, at `upper`): in every
    /// effect the abort-side end errs with probability `sides.lower` and
    /// the promote-side end with `sides.upper`.
    pub sides: Sides,
    /// Per-replica load, when given.
    pub load: Option<Load>,
    /// Effects and reference tests, grouped by metric in configuration order.
    pub metrics: Vec<MetricResult>,
}

impl Policy {
    fn validate(&self) -> Result<(), AnalysisError> {
        let bad = |field: &str, reason: &str| {
            Err(AnalysisError::InvalidPolicy {
                field: field.into(),
                reason: reason.into(),
            })
        };
        if !(self.confidence > 0.5 && self.confidence < 1.0) {
            return bad(
                "confidence",
                "must be between 0.5 and 1 (exclusive), e.g. 0.95",
            );
        }
        if !(self.max_load_imbalance >= 0.0 && self.max_load_imbalance.is_finite()) {
            return bad(
                "maxLoadImbalance",
                "must be a fraction ≥ 0, e.g. 0.2 for 20%",
            );
        }
        Ok(())
    }
}

impl MetricSpec {
    fn validate(&self) -> Result<(), AnalysisError> {
        let bad = |field: &str, reason: String| {
            Err(AnalysisError::InvalidPolicy {
                field: format!("metrics[{}].{field}", self.name),
                reason,
            })
        };
        if let Some(p) = self.quantiles.iter().find(|p| !(**p > 0.0 && **p < 1.0)) {
            return bad(
                "quantiles",
                format!("{p} is not a quantile: use values between 0 and 1, e.g. 0.99"),
            );
        }
        if self.bounds.increase.is_none() && self.bounds.decrease.is_none() {
            return bad(
                "maxIncrease",
                "the metric has no margin: set maxIncrease (higher is worse), maxDecrease \
                 (lower is worse) or maxChange (both), e.g. maxIncrease: 10%"
                    .into(),
            );
        }
        for (direction, margin) in self.bounds.directions() {
            let field = direction.field();
            let (Margin::Relative(v) | Margin::Absolute(v)) = margin;
            if !(v.is_finite() && v >= 0.0) {
                return bad(field, format!("{v} must be a finite number ≥ 0"));
            }
            match (self.kind, margin) {
                (MetricKind::Latency, Margin::Absolute(_)) => {
                    return bad(
                        field,
                        "latency margins are relative (e.g. 10%): latency is compared on a log scale"
                            .into(),
                    );
                }
                (MetricKind::Distribution, Margin::Absolute(_)) => {
                    return bad(
                        field,
                        "distribution margins are relative (e.g. 20%): the values are compared \
                         as ratios to the baseline, on a log scale"
                            .into(),
                    );
                }
                (_, Margin::Relative(r)) if direction == Direction::Decrease && r >= 1.0 => {
                    return bad(
                        field,
                        format!(
                            "{}% would let the canary fall to nothing: a relative decrease \
                             margin is below 100%, e.g. 25%",
                            trim_float(r * 100.0)
                        ),
                    );
                }
                _ => {}
            }
        }
        if let Some(h) = self.hard_limit {
            if self.kind != MetricKind::ErrorRate {
                return bad(
                    "hardLimit",
                    "only error-rate metrics take a hard limit".into(),
                );
            }
            if !(h > 0.0 && h < 1.0) {
                return bad(
                    "hardLimit",
                    format!("{h} must be a fraction between 0 and 1, e.g. 0.05 for 5%"),
                );
            }
        }
        Ok(())
    }

    /// Number of effect-directions this metric contributes to the
    /// Bonferroni count `m`: each effect once per direction with a margin,
    /// plus the hard limit.
    fn effect_count(&self) -> usize {
        let directions = self.bounds.count();
        match self.kind {
            MetricKind::Latency | MetricKind::Distribution => {
                (1 + self.quantiles.len()) * directions
            }
            MetricKind::ErrorRate => directions + usize::from(self.hard_limit.is_some()),
            MetricKind::Gauge => directions,
        }
    }
}

/// Tail observations a quantile needs in each cohort before its standard
/// error (read off order statistics) is trusted.
pub const MIN_TAIL_OBSERVATIONS: f64 = 10.0;

/// Judges every metric and returns the verdict.
///
/// # Errors
/// [`AnalysisError`] when the policy or a metric is invalid, or a metric's
/// observations do not match its kind. Missing or scarce data is never an
/// error: it yields [`Verdict::Continue`] with the reason.
pub fn decide(
    policy: &Policy,
    metrics: &[(MetricSpec, Observations)],
    load: Option<Load>,
) -> Result<Decision, AnalysisError> {
    policy.validate()?;
    if metrics.is_empty() {
        return Err(AnalysisError::NoMetrics);
    }
    for (spec, obs) in metrics {
        spec.validate()?;
        if spec.kind != obs.kind() {
            return Err(AnalysisError::MismatchedObservations {
                metric: spec.name.clone(),
                expected: spec.kind.as_str(),
                found: obs.kind().as_str(),
            });
        }
    }
    let effects: usize = metrics.iter().map(|(s, _)| s.effect_count()).sum();
    // Abort needs one effect's abort-side end past its boundary: any of the
    // m can err, so each abort-side end gets α/m. Promote needs every
    // promote-side end inside its boundary: a wrong promotion needs the one
    // effect that is truly beyond its margin to err, so each promote-side
    // end may use all of α. `sides` is written for an increase effect
    // (lower end aborts); `Direction::sides` swaps it for a decrease.
    let alpha = 1.0 - policy.confidence;
    let sides = Sides {
        lower: alpha / effects as f64,
        upper: alpha,
    };

    let mut results = Vec::new();
    for (spec, obs) in metrics {
        match obs {
            Observations::Latency { baseline, canary }
            | Observations::Distribution { baseline, canary } => {
                judge_distribution(spec, policy, sides, baseline, canary, &mut results)
            }
            Observations::Errors { baseline, canary } => {
                judge_errors(spec, policy, sides, *baseline, *canary, &mut results)
            }
            Observations::Gauge {
                baseline,
                canary,
                per_unit,
            } => judge_gauge(
                spec,
                policy,
                sides,
                &normalized(baseline, *per_unit),
                &normalized(canary, *per_unit),
                &mut results,
            ),
        }
    }
    let (verdict, rule) = verdict(policy, &results, load);
    Ok(Decision {
        verdict,
        rule,
        sides,
        load,
        metrics: results,
    })
}

#[cfg(test)]
mod finding_names {
    use super::Finding;

    #[test]
    fn as_str_is_the_serialized_name() {
        use Finding::*;
        for f in [Within, Exceeds, Undecided, Insufficient, None] {
            assert_eq!(serde_json::to_value(f).ok(), Some(f.as_str().into()));
        }
    }
}

#[cfg(test)]
mod describe {
    use super::{Direction, Finding, MetricKind, MetricResult, Role};

    fn result(
        name: &str,
        kind: MetricKind,
        (estimate, low, high): (f64, f64, f64),
        margin: f64,
        direction: Direction,
        relative: bool,
    ) -> MetricResult {
        MetricResult {
            name: name.into(),
            kind,
            test: "hodges-lehmann".into(),
            statistic: None,
            p_value: None,
            estimate: Some(estimate),
            ci_low: Some(low),
            ci_high: Some(high),
            baseline_n: 1000,
            canary_n: 1000,
            baseline_value: None,
            canary_value: None,
            margin: Some(margin),
            direction: Some(direction),
            relative,
            role: Role::Decision,
            finding: Finding::Exceeds,
            note: None,
        }
    }

    #[test]
    fn effects_read_against_their_signed_margin() {
        use Direction::{Decrease, Increase};
        use MetricKind::{Distribution, ErrorRate, Gauge, Latency};
        let table = [
            (
                result(
                    "ttft.p99",
                    Latency,
                    (0.921, 0.71, 1.163),
                    0.10,
                    Increase,
                    true,
                ),
                "ttft.p99 +92.1% [+71.0%, +116.3%] vs margin +10.0%",
            ),
            (
                result(
                    "decode_speed.shift",
                    Distribution,
                    (-0.31, -0.352, -0.265),
                    -0.25,
                    Decrease,
                    true,
                ),
                "decode_speed.shift -31.0% [-35.2%, -26.5%] vs margin -25.0%",
            ),
            (
                result(
                    "tokens.shift.down",
                    Distribution,
                    (-0.03, -0.081, 0.02),
                    -0.20,
                    Decrease,
                    true,
                ),
                "tokens.shift.down -3.0% [-8.1%, +2.0%] vs margin -20.0%",
            ),
            (
                result(
                    "cited.difference",
                    ErrorRate,
                    (-0.10, -0.11, -0.09),
                    -0.05,
                    Decrease,
                    false,
                ),
                "cited.difference -10.00pp [-11.00pp, -9.00pp] vs margin -5.00pp",
            ),
            (
                result(
                    "gpu.mean.down",
                    Gauge,
                    (-6.0, -7.5, -4.5),
                    -3.0,
                    Decrease,
                    false,
                ),
                "gpu.mean.down -6.0000 [-7.5000, -4.5000] vs margin -3.0000",
            ),
        ];
        for (r, expected) in table {
            assert_eq!(r.describe(), expected);
        }
    }

    #[test]
    fn a_guard_reads_against_its_limit() {
        let mut r = result(
            "errors.hard-limit",
            MetricKind::ErrorRate,
            (0.6, 0.4, 0.75),
            0.05,
            Direction::Increase,
            false,
        );
        r.role = Role::Guard;
        assert_eq!(
            r.describe(),
            "errors.hard-limit +60.00pp [+40.00pp, +75.00pp] vs limit 5.00%"
        );
    }
}
