//! The typed families of a scrape: each series as a counter, gauge,
//! untyped sample, histogram (buckets with their `_sum` and `_count`) or
//! summary, and the delta between two scrapes of the same target, series
//! by series, with counter resets detected.

use std::collections::{BTreeMap, HashMap};

use super::PrometheusText;
use crate::source::Selector;

/// How one parsed series is typed.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Counter(f64),
    Gauge(f64),
    Untyped(f64),
    Histogram {
        /// `(le, cumulative count)` in exposition order.
        buckets: Vec<(f64, f64)>,
        sum: Option<f64>,
        count: Option<f64>,
    },
    /// Quantiles of a summary (not used by the analysis, kept for counts).
    Summary(usize),
}

impl Value {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Counter(_) => "counter",
            Value::Gauge(_) => "gauge",
            Value::Untyped(_) => "untyped metric",
            Value::Histogram { .. } => "histogram",
            Value::Summary(_) => "summary",
        }
    }

    pub(super) fn scalar(&self) -> Option<f64> {
        match self {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            Value::Histogram { .. } | Value::Summary(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Series {
    pub(super) name: String,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) at_seconds: f64,
    pub(super) value: Value,
}

/// One histogram series as scraped: its labels (without `le`), cumulative
/// buckets and, when exposed, `_sum` and `_count`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSeries {
    /// Labels other than `le`.
    pub labels: BTreeMap<String, String>,
    /// `(le, cumulative count)` in exposition order.
    pub buckets: Vec<(f64, f64)>,
    /// The `_sum` line's value.
    pub sum: Option<f64>,
    /// The `_count` line's value.
    pub count: Option<f64>,
}

/// The observations between two cumulative snapshots of one histogram series.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketDelta {
    /// `(le, cumulative count)` of the observations made in between.
    pub buckets: Vec<(f64, f64)>,
    /// True when a bucket went down or the bucket layout changed: the source
    /// restarted, and `buckets` is the later snapshot as a whole.
    pub reset: bool,
}

/// Later minus earlier, per `le`; on a counter reset (any bucket decreased)
/// or a changed bucket layout, the later snapshot is the delta.
pub fn bucket_delta(earlier: &[(f64, f64)], later: &[(f64, f64)]) -> BucketDelta {
    let mut a = earlier.to_vec();
    let mut b = later.to_vec();
    a.sort_by(|x, y| x.0.total_cmp(&y.0));
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let same_layout = a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.0 == y.0);
    if !same_layout || a.iter().zip(&b).any(|(x, y)| y.1 < x.1) {
        return BucketDelta {
            buckets: later.to_vec(),
            reset: true,
        };
    }
    BucketDelta {
        buckets: a.iter().zip(&b).map(|(x, y)| (y.0, y.1 - x.1)).collect(),
        reset: false,
    }
}

impl PrometheusText {
    /// What happened between `earlier` and this (later) scrape of the same
    /// target: histograms and counters become per-series deltas, gauges keep
    /// the later value. Each series is handled on its own, so one restarted
    /// pod does not spoil the others: a series that went down (or whose
    /// buckets changed) counts from zero, i.e. its later value is the delta,
    /// and is listed in [`PrometheusText::resets`]. Series new in the later
    /// scrape are taken whole. Untyped samples named `*_total`, `*_count`,
    /// `*_sum` or `*_bucket` are treated as counters, other untyped samples as
    /// gauges.
    pub fn delta_since(&self, earlier: &PrometheusText) -> PrometheusText {
        let before: HashMap<(&str, &BTreeMap<String, String>), &Value> = earlier
            .series
            .iter()
            .map(|s| ((s.name.as_str(), &s.labels), &s.value))
            .collect();
        let mut resets = Vec::new();
        let series = self
            .series
            .iter()
            .map(|s| {
                let old = before.get(&(s.name.as_str(), &s.labels));
                let (value, reset) = delta_value(&s.name, &s.value, old.copied());
                if reset {
                    let labels = Selector::exact(&s.labels);
                    resets.push(format!("{}{labels}", s.name));
                }
                Series { value, ..s.clone() }
            })
            .collect();
        PrometheusText {
            series,
            origin: format!("the change since the previous scrape ({})", self.origin),
            resets,
        }
    }
}

/// The delta of one series value and whether it was a reset.
fn delta_value(name: &str, later: &Value, earlier: Option<&Value>) -> (Value, bool) {
    let counter_like = |v: &Value| match v {
        Value::Counter(_) => true,
        Value::Untyped(_) => ["_total", "_count", "_sum", "_bucket"]
            .iter()
            .any(|suffix| name.ends_with(suffix)),
        _ => false,
    };
    match (later, earlier) {
        (
            Value::Histogram {
                buckets,
                sum,
                count,
            },
            Some(Value::Histogram {
                buckets: old_buckets,
                sum: old_sum,
                count: old_count,
            }),
        ) => {
            let d = bucket_delta(old_buckets, buckets);
            let count_down = matches!((count, old_count), (Some(c), Some(o)) if c < o);
            if d.reset || count_down {
                return (later.clone(), true);
            }
            let minus = |a: &Option<f64>, b: &Option<f64>| match (a, b) {
                (Some(a), Some(b)) => Some(a - b),
                _ => None,
            };
            (
                Value::Histogram {
                    buckets: d.buckets,
                    sum: minus(sum, old_sum),
                    count: minus(count, old_count),
                },
                false,
            )
        }
        (v, Some(old)) if counter_like(v) => match (v.scalar(), old.scalar()) {
            (Some(now), Some(before)) if now >= before => (with_scalar(v, now - before), false),
            (Some(_), Some(_)) => (v.clone(), true),
            _ => (v.clone(), false),
        },
        (v, _) => (v.clone(), false),
    }
}

fn with_scalar(v: &Value, x: f64) -> Value {
    match v {
        Value::Counter(_) => Value::Counter(x),
        Value::Gauge(_) => Value::Gauge(x),
        _ => Value::Untyped(x),
    }
}

/// Moves `F_sum` / `F_count` samples into the histogram series `F` with the
/// same labels.
pub(super) fn attach_sums_and_counts(series: &mut Vec<Series>) {
    let mut extra: HashMap<(String, BTreeMap<String, String>), (f64, f64)> = HashMap::new();
    let histogram_families: Vec<String> = series
        .iter()
        .filter(|s| matches!(s.value, Value::Histogram { .. }))
        .map(|s| s.name.clone())
        .collect();
    series.retain(|s| {
        let is_part = ["_sum", "_count"].iter().any(|suffix| {
            s.name
                .strip_suffix(suffix)
                .is_some_and(|f| histogram_families.iter().any(|h| h == f))
        });
        match (is_part, &s.value) {
            (true, Value::Untyped(v)) => {
                extra.insert((s.name.clone(), s.labels.clone()), (*v, s.at_seconds));
                false
            }
            _ => true,
        }
    });
    for s in series.iter_mut() {
        if let Value::Histogram { sum, count, .. } = &mut s.value {
            *sum = extra
                .remove(&(format!("{}_sum", s.name), s.labels.clone()))
                .map(|(v, _)| v);
            *count = extra
                .remove(&(format!("{}_count", s.name), s.labels.clone()))
                .map(|(v, _)| v);
        }
    }
    // `_sum`/`_count` lines with no matching bucket series stay visible.
    for ((name, labels), (v, at_seconds)) in extra {
        series.push(Series {
            name,
            labels,
            at_seconds,
            value: Value::Untyped(v),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_delta_subtracts_and_detects_resets() {
        let earlier = [(0.1, 1.0), (0.5, 3.0), (f64::INFINITY, 4.0)];
        let later = [(f64::INFINITY, 10.0), (0.1, 2.0), (0.5, 8.0)];
        assert_eq!(
            bucket_delta(&earlier, &later),
            BucketDelta {
                buckets: vec![(0.1, 1.0), (0.5, 5.0), (f64::INFINITY, 6.0)],
                reset: false
            }
        );
        let restarted = [(0.1, 0.0), (0.5, 1.0), (f64::INFINITY, 1.0)];
        let d = bucket_delta(&earlier, &restarted);
        assert!(d.reset);
        assert_eq!(d.buckets, restarted.to_vec());
        let relaid = [(0.2, 5.0), (f64::INFINITY, 9.0)];
        assert!(bucket_delta(&earlier, &relaid).reset);
    }
}
