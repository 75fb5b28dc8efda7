//! Metric sources: where cohort observations come from, behind one trait.
//!
//! The analysis asks every source the same questions ([`Query`]) and gets the
//! same answers ([`Reading`]), so a metric configured against vLLM's own
//! `/metrics`, a Prometheus server or in-memory samples is judged the same way.
//! One implementation per file:
//!
//! - [`samples`]: raw numbers in memory (tests, the simulator, local mode);
//! - [`prometheus_text`]: a `/metrics` scrape (text exposition format 0.0.4);
//! - [`prometheus_api`]: the Prometheus HTTP API (PromQL).
//!
//! Weir proxy snapshots (`/v1/observations`) are not a source of this kind:
//! the controller polls them itself and hands them over as
//! [`crate::observations::Snapshot`]s.
//!
//! # The contract
//!
//! - **Empty is "no data", never "failed".** A family absent from a scrape, a
//!   selector that matches nothing, a PromQL query with an empty result: all
//!   are `Ok(Reading::NoData { reason })`, with a reason a person can act on.
//!   Errors ([`SourceError`]) are for a source that could not answer: it was
//!   unreachable, answered garbage, or was asked something it cannot do.
//! - **Histograms** from several matching series (several pods, vLLM's
//!   `engine` label, SGLang's `tp_rank`...) are merged by summing cumulative
//!   buckets per `le`, then building one [`Distribution`]. Series with
//!   different bucket layouts are summed per layout and the resulting
//!   distributions merged, so a fleet mid-upgrade still reads correctly.
//! - **Counters** are summed across matching series.
//! - **Gauges** are averaged across matching series at the same timestamp:
//!   one point per timestamp, which is what the analysis wants (GPU
//!   utilization averaged over a cohort's GPUs). NaN samples are skipped.
//! - What "cumulative" means depends on the source: a scrape returns totals
//!   since the server started (take per-interval deltas with
//!   [`prometheus_text::PrometheusText::delta_since`]); the Prometheus API
//!   returns the increase over its configured window.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::dist::{DistError, Distribution};

mod http;

/// Test helpers: the real scrapes and API bodies in `shared/fixtures`.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::path::PathBuf;

    /// `shared/fixtures`, next to the repository (`WEIR_FIXTURES` overrides).
    pub(crate) fn dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("WEIR_FIXTURES") {
            return PathBuf::from(dir);
        }
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
    }

    /// The text of fixture `name`; panics with the path when it is missing.
    pub(crate) fn read(name: &str) -> String {
        let path = dir().join(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
    }
}
pub mod prometheus_api;
pub mod prometheus_text;
pub mod samples;
pub mod selector;

pub use prometheus_api::PrometheusApi;
pub use prometheus_text::PrometheusText;
pub use samples::SampleSource;
pub use selector::{MatchOp, Matcher, Selector, SelectorError};

/// What a caller asks a source for, for one cohort.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// A latency (or size) histogram family, named without `_bucket`:
    /// `vllm:time_to_first_token_seconds`.
    Histogram {
        /// The family name.
        family: String,
        /// Which series belong to the cohort.
        selector: Selector,
    },
    /// A counter, named as exposed (with `_total`); against a scrape or the
    /// Prometheus API a name without `_total` also finds `<name>_total`.
    Counter {
        /// The counter name.
        family: String,
        /// Which series belong to the cohort.
        selector: Selector,
    },
    /// A gauge, such as `DCGM_FI_DEV_GPU_UTIL`.
    Gauge {
        /// The gauge name.
        family: String,
        /// Which series belong to the cohort.
        selector: Selector,
    },
    /// A PromQL expression, for sources that speak PromQL.
    PromQl {
        /// The expression.
        expr: String,
    },
}

impl Query {
    /// A histogram query.
    pub fn histogram(family: impl Into<String>, selector: Selector) -> Self {
        Query::Histogram {
            family: family.into(),
            selector,
        }
    }

    /// A counter query.
    pub fn counter(family: impl Into<String>, selector: Selector) -> Self {
        Query::Counter {
            family: family.into(),
            selector,
        }
    }

    /// A gauge query.
    pub fn gauge(family: impl Into<String>, selector: Selector) -> Self {
        Query::Gauge {
            family: family.into(),
            selector,
        }
    }

    /// A PromQL query.
    pub fn promql(expr: impl Into<String>) -> Self {
        Query::PromQl { expr: expr.into() }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Query::Histogram { family, selector } => write!(f, "histogram {family}{selector}"),
            Query::Counter { family, selector } => write!(f, "counter {family}{selector}"),
            Query::Gauge { family, selector } => write!(f, "gauge {family}{selector}"),
            Query::PromQl { expr } => write!(f, "PromQL {expr}"),
        }
    }
}

/// One gauge observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaugePoint {
    /// Unix time, seconds.
    pub at_seconds: f64,
    /// The value (averaged over the matching series).
    pub value: f64,
}

/// What came back.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// Observations of a histogram (possibly with count 0: the series exist
    /// but nothing was observed).
    Distribution(Distribution),
    /// A counter value, summed over the matching series.
    Count(f64),
    /// Gauge points in time order, one per timestamp, averaged over series.
    Gauge(Vec<GaugePoint>),
    /// The source answered, but has nothing for this query.
    NoData {
        /// Why, for a person: which name and selector found nothing.
        reason: String,
    },
}

impl Reading {
    /// A [`Reading::NoData`] with this reason.
    pub fn no_data(reason: impl Into<String>) -> Self {
        Reading::NoData {
            reason: reason.into(),
        }
    }

    /// Whether this is [`Reading::NoData`].
    pub fn is_no_data(&self) -> bool {
        matches!(self, Reading::NoData { .. })
    }
}

/// A place cohort observations can be read from.
pub trait MetricSource {
    /// Answers one query.
    ///
    /// # Errors
    /// A [`SourceError`] only when the source could not answer; an empty
    /// answer is `Ok(Reading::NoData { .. })`.
    fn read(&self, query: &Query) -> impl Future<Output = Result<Reading, SourceError>> + Send;
}

/// Why a source could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No connection could be made (refused, DNS, TLS...).
    #[error("{url} is unreachable: {reason}")]
    Unreachable {
        /// The URL asked (without credentials or query string).
        url: String,
        /// What the HTTP client said.
        reason: String,
    },
    /// The request took longer than the configured timeout.
    #[error("{url} did not answer within {after:?}")]
    Timeout {
        /// The URL asked (without credentials or query string).
        url: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The server answered with a non-success HTTP status and a body that is
    /// not a Prometheus error envelope.
    #[error("{url} answered HTTP {status}: {body_excerpt}")]
    Http {
        /// The URL asked (without credentials or query string).
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body_excerpt: String,
    },
    /// The answer could not be read.
    #[error("cannot parse {what}{}: {reason}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Parse {
        /// What was being parsed (a scrape URL, "Prometheus API response"...).
        what: String,
        /// 1-based line number, for line-oriented formats.
        line: Option<usize>,
        /// What was wrong.
        reason: String,
    },
    /// Prometheus answered with an error envelope (`"status": "error"`).
    #[error("Prometheus error {error_type}: {message}")]
    Api {
        /// `errorType`: `bad_data`, `timeout`, `execution`, `not_acceptable`...
        error_type: String,
        /// `error`: Prometheus's message.
        message: String,
    },
    /// The source cannot answer this kind of query.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What was asked that cannot be done.
        what: String,
    },
    /// The name exists but is another kind of metric than the query asked.
    #[error("{family} is a {found}, not a {expected}")]
    WrongType {
        /// The name asked for.
        family: String,
        /// What the query wanted.
        expected: &'static str,
        /// What the source has under that name.
        found: &'static str,
    },
    /// Histogram buckets could not be turned into a distribution.
    #[error("histogram {family}: {source}")]
    Buckets {
        /// The histogram family.
        family: String,
        /// The distribution's complaint.
        source: DistError,
    },
    /// A URL given to a source is not usable.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
}

/// The first `max` characters of `body` on one line, for error messages.
pub(crate) fn excerpt(body: &str, max: usize) -> String {
    let flat: String = body
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max + 1)
        .collect();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// A float as the text format writes it (`NaN`, `+Inf`, `-Inf`, `1e3`...).
pub(crate) fn parse_float(s: &str) -> Result<f64, String> {
    match s {
        "NaN" | "nan" => Ok(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse::<f64>()
            .map_err(|_| format!("{s:?} is not a number")),
    }
}

/// The cumulative buckets of one histogram series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BucketSeries {
    /// `(le, cumulative count)`, any order.
    pub buckets: Vec<(f64, f64)>,
    /// The series' `_sum`, when known.
    pub sum: Option<f64>,
}

/// Merges histogram series into one distribution: cumulative counts are
/// summed per `le` among series that share a bucket layout, and layouts are
/// merged as distributions.
pub(crate) fn merge_histograms(
    family: &str,
    series: impl IntoIterator<Item = BucketSeries>,
) -> Result<Distribution, SourceError> {
    // (sorted bounds, summed counts, summed sum or None if any series lacks one)
    let mut layouts: Vec<(Vec<f64>, Vec<f64>, Option<f64>)> = Vec::new();
    for mut s in series {
        s.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let bounds: Vec<f64> = s.buckets.iter().map(|b| b.0).collect();
        match layouts.iter_mut().find(|(b, _, _)| *b == bounds) {
            Some((_, counts, sum)) => {
                for (c, b) in counts.iter_mut().zip(&s.buckets) {
                    *c += b.1;
                }
                *sum = sum.zip(s.sum).map(|(a, b)| a + b);
            }
            None => layouts.push((bounds, s.buckets.iter().map(|b| b.1).collect(), s.sum)),
        }
    }
    let mut merged = Distribution::new();
    for (bounds, counts, sum) in layouts {
        let pairs: Vec<(f64, f64)> = bounds.into_iter().zip(counts).collect();
        let dist = Distribution::from_prometheus_buckets(&pairs, sum).map_err(|source| {
            SourceError::Buckets {
                family: family.to_string(),
                source,
            }
        })?;
        merged.merge(&dist);
    }
    Ok(merged)
}

/// Averages points that share a timestamp; NaN values are skipped. The result
/// is in time order.
pub(crate) fn average_by_timestamp(
    points: impl IntoIterator<Item = GaugePoint>,
) -> Vec<GaugePoint> {
    let mut points: Vec<GaugePoint> = points.into_iter().filter(|p| !p.value.is_nan()).collect();
    points.sort_by(|a, b| a.at_seconds.total_cmp(&b.at_seconds));
    let mut out: Vec<GaugePoint> = Vec::new();
    let mut n = 0.0;
    for p in points {
        match out.last_mut() {
            Some(last) if last.at_seconds == p.at_seconds => {
                n += 1.0;
                // Running mean keeps the value exact for equal inputs.
                last.value += (p.value - last.value) / n;
            }
            _ => {
                out.push(p);
                n = 1.0;
            }
        }
    }
    out
}

/// The reason for a selector that matched none of a family's series.
pub(crate) fn no_match_reason(family: &str, selector: &Selector, series_seen: usize) -> String {
    format!(
        "no series of {family} match {selector} ({series_seen} series of {family} have other labels)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sums_per_le_within_a_layout() {
        // Two pods with the same layout: 1 + 3 observations in (0.1, 0.2],
        // 1 + 0 in (0.2, 0.4].
        let a = BucketSeries {
            buckets: vec![(0.1, 0.0), (0.2, 1.0), (0.4, 2.0), (f64::INFINITY, 2.0)],
            sum: Some(0.45),
        };
        let b = BucketSeries {
            buckets: vec![(f64::INFINITY, 3.0), (0.4, 3.0), (0.1, 0.0), (0.2, 3.0)],
            sum: Some(0.5),
        };
        let d = merge_histograms("x", [a, b]).expect("valid");
        assert_eq!(d.count(), 5);
        assert!((d.sum() - 0.95).abs() < 1e-12);
        // 4 of 5 are at or below 0.2 (spread over (0.1, 0.2]), 1 above.
        let q = d.quantile(0.8).expect("not empty");
        assert!(q > 0.15 && q <= 0.2, "q={q}");
        let top = d.quantile(1.0).expect("not empty");
        assert!(top > 0.2 && top <= 0.4 * 1.01, "top={top}");
    }

    #[test]
    fn merge_handles_different_layouts_and_missing_sums() {
        let a = BucketSeries {
            buckets: vec![(1.0, 2.0), (f64::INFINITY, 2.0)],
            sum: None,
        };
        let b = BucketSeries {
            buckets: vec![(0.5, 1.0), (2.0, 4.0), (f64::INFINITY, 4.0)],
            sum: Some(3.0),
        };
        let d = merge_histograms("x", [a, b]).expect("valid");
        assert_eq!(d.count(), 6);
        let bad = BucketSeries {
            buckets: vec![(1.0, 5.0), (2.0, 4.0)],
            sum: None,
        };
        let err = merge_histograms("fam", [bad]).expect_err("decreasing");
        assert!(err.to_string().starts_with("histogram fam:"), "{err}");
    }

    #[test]
    fn gauges_average_per_timestamp_and_skip_nan() {
        let p = |t, v| GaugePoint {
            at_seconds: t,
            value: v,
        };
        let out = average_by_timestamp([
            p(2.0, 10.0),
            p(1.0, 4.0),
            p(2.0, 20.0),
            p(1.0, f64::NAN),
            p(2.0, 60.0),
        ]);
        assert_eq!(out, vec![p(1.0, 4.0), p(2.0, 30.0)]);
        assert!(average_by_timestamp([p(1.0, f64::NAN)]).is_empty());
    }

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        assert_eq!(excerpt("  a\nb  ", 10), "a b");
        assert_eq!(excerpt("abcdef", 3), "abc…");
        assert_eq!(excerpt("ééé", 3), "ééé");
    }
}
