//! The verdict: promote, continue or abort, with the rule that fired.
//!
//! Every metric is a non-inferiority question with a margin
//! (`maxIncrease`): "is the canary at most this much worse than the
//! baseline?". Each metric contributes one or more *effects* (a latency
//! metric: the shift and each requested quantile; an error metric: the
//! difference of rates and, optionally, a hard limit on the canary's rate; a
//! gauge: the ratio or difference of means). For each effect the analysis
//! builds a confidence sequence (see [`crate::sequential`]) whose lower end
//! errs with probability at most `α / m` and whose upper end errs with
//! probability at most `α`, where `α = 1 − confidence` and `m` is the number
//! of effects configured, and then:
//!
//! - **abort** when any effect's lower bound is above its margin (the
//!   regression is shown to exceed it), or a hard limit is shown breached;
//! - **promote** when every effect's upper bound is below its margin (the
//!   canary is shown to be no worse than allowed);
//! - **continue** otherwise, naming what is still undecided.
//!
//! Guarantee: a rollout judged at every interval aborts a canary that is
//! within all its margins with probability at most `α` (an abort needs some
//! lower end above the truth: `m` chances of `α/m`), and promotes a canary
//! that is beyond some margin with probability at most `α` (a promotion
//! needs the upper end of *that* effect below the truth: one chance of `α`;
//! an intersection-union argument, so no correction is needed on this
//! side). Exactly for error rates, asymptotically for latencies and gauges;
//! `bench/decisions` measures it.
//!
//! The decision is stateless: each call sees the cumulative observations
//! since the analysis began and needs nothing from earlier calls, so a
//! controller restart cannot corrupt it.
//!
//! One module per concern: `latency`, `errors` and `gauge` judge a
//! metric's effects, `effect` holds what they share, and `verdict`
//! combines the findings. The types and [`decide`] are here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::compare::{GaugeInterval, gauge::normalized};
use crate::dist::Distribution;
use crate::sequential::{Counts, Sides};

mod effect;
mod errors;
mod gauge;
mod latency;
mod verdict;

use errors::judge_errors;
use gauge::judge_gauge;
use latency::judge_latency;
pub use latency::quantile_label;
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

/// How much worse the canary may be: `maxIncrease`.
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

/// What kind of signal a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MetricKind {
    /// A latency distribution (TTFT, inter-token latency, duration).
    Latency,
    /// A proportion of failed requests.
    ErrorRate,
    /// A per-interval gauge (GPU utilization, KV-cache usage).
    Gauge,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Latency => "latency",
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
    /// How much worse the canary may be.
    pub max_increase: Margin,
    /// Latency only: quantiles compared besides the shift (e.g. 0.5, 0.99).
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
    /// Lower end of the interval (anytime-valid at `α/m` for effects,
    /// fixed-sample at the confidence for reference entries).
    pub ci_low: Option<f64>,
    /// Upper end of the interval.
    pub ci_high: Option<f64>,
    /// Baseline observations.
    pub baseline_n: u64,
    /// Canary observations.
    pub canary_n: u64,
    /// The baseline's value (quantile, rate, mean) when meaningful.
    pub baseline_value: Option<f64>,
    /// The canary's value.
    pub canary_value: Option<f64>,
    /// The margin, in the estimate's units.
    pub margin: Option<f64>,
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
    /// "ttft.p99 +92.1% [+71.0%, +116.3%] vs margin +10%", for verdict rules.
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
    /// Error probability of each end of every effect's interval: lower ends
    /// (which abort) at `α / m`, upper ends (which promote) at `α`.
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
        match (self.kind, self.max_increase) {
            (MetricKind::Latency, Margin::Absolute(_)) => {
                return bad(
                    "maxIncrease",
                    "latency margins are relative (e.g. 10%): latency is compared on a log scale"
                        .into(),
                );
            }
            (_, Margin::Relative(r) | Margin::Absolute(r)) if !(r.is_finite() && r >= 0.0) => {
                return bad("maxIncrease", format!("{r} must be a finite number ≥ 0"));
            }
            _ => {}
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

    /// Number of effects this metric contributes to the Bonferroni count.
    fn effect_count(&self) -> usize {
        match self.kind {
            MetricKind::Latency => 1 + self.quantiles.len(),
            MetricKind::ErrorRate => 1 + usize::from(self.hard_limit.is_some()),
            MetricKind::Gauge => 1,
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
    // Abort needs one effect's lower end above its margin: any of the m can
    // err, so each lower end gets α/m. Promote needs every upper end below
    // its margin: a wrong promotion needs the one effect that is truly
    // beyond its margin to err, so each upper end may use all of α.
    let alpha = 1.0 - policy.confidence;
    let sides = Sides {
        lower: alpha / effects as f64,
        upper: alpha,
    };

    let mut results = Vec::new();
    for (spec, obs) in metrics {
        match obs {
            Observations::Latency { baseline, canary } => {
                judge_latency(spec, policy, sides, baseline, canary, &mut results)
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
