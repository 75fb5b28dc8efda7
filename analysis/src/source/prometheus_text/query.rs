//! Answering queries from a parsed scrape: the series of a family that a
//! [`Selector`] picks, checked against the kind the query asks for, then
//! merged (histograms), summed (counters) or averaged per timestamp
//! (gauges).

use std::collections::BTreeMap;

use super::PrometheusText;
use super::families::{HistogramSeries, Series, Value};
use crate::source::{
    BucketSeries, GaugePoint, Query, Reading, Selector, SourceError, average_by_timestamp,
    merge_histograms, no_match_reason, parse_float,
};

impl PrometheusText {
    /// The histogram series of `family` that `selector` picks, as scraped.
    /// Histograms exposed without a `# TYPE` line (plain `_bucket` samples)
    /// are found too.
    pub fn histogram_series(&self, family: &str, selector: &Selector) -> Vec<HistogramSeries> {
        self.all_histogram_series(family)
            .into_iter()
            .filter(|h| selector.matches(&h.labels))
            .collect()
    }

    fn all_histogram_series(&self, family: &str) -> Vec<HistogramSeries> {
        let typed: Vec<HistogramSeries> = self
            .series
            .iter()
            .filter(|s| s.name == family)
            .filter_map(|s| match &s.value {
                Value::Histogram {
                    buckets,
                    sum,
                    count,
                } => Some(HistogramSeries {
                    labels: s.labels.clone(),
                    buckets: buckets.clone(),
                    sum: *sum,
                    count: *count,
                }),
                _ => None,
            })
            .collect();
        if !typed.is_empty() {
            return typed;
        }
        // No `# TYPE family histogram`: group untyped `_bucket` samples.
        let bucket_name = format!("{family}_bucket");
        let mut groups: BTreeMap<BTreeMap<String, String>, HistogramSeries> = BTreeMap::new();
        for s in self.series.iter().filter(|s| s.name == bucket_name) {
            let (Some(v), Some(le)) = (s.value.scalar(), s.labels.get("le")) else {
                continue;
            };
            let Ok(le) = parse_float(le) else { continue };
            let mut labels = s.labels.clone();
            labels.remove("le");
            groups
                .entry(labels.clone())
                .or_insert_with(|| HistogramSeries {
                    labels,
                    buckets: Vec::new(),
                    sum: None,
                    count: None,
                })
                .buckets
                .push((le, v));
        }
        let scalar = |name: &str, labels: &BTreeMap<String, String>| {
            self.series
                .iter()
                .find(|s| s.name == name && &s.labels == labels)
                .and_then(|s| s.value.scalar())
        };
        groups
            .into_values()
            .map(|mut h| {
                h.sum = scalar(&format!("{family}_sum"), &h.labels);
                h.count = scalar(&format!("{family}_count"), &h.labels);
                h
            })
            .collect()
    }

    /// Answers a query at once (the trait's `read` wraps this).
    ///
    /// - Histogram: the matching series merged (see the module contract), as
    ///   cumulative since the server started (or since the earlier scrape,
    ///   after [`PrometheusText::delta_since`]).
    /// - Counter: `family` or `family_total` samples, summed.
    /// - Gauge: one point per timestamp, averaged over the matching series.
    ///
    /// # Errors
    /// [`SourceError::Unsupported`] for PromQL; [`SourceError::WrongType`]
    /// when the name holds another kind of metric; [`SourceError::Buckets`]
    /// for malformed buckets.
    pub fn read_now(&self, query: &Query) -> Result<Reading, SourceError> {
        match query {
            Query::Histogram { family, selector } => self.read_histogram(family, selector),
            Query::Counter { family, selector } => self.read_counter(family, selector),
            Query::Gauge { family, selector } => self.read_gauge(family, selector),
            Query::PromQl { expr } => Err(SourceError::Unsupported {
                what: format!(
                    "PromQL ({expr}) against {}: a scrape answers histogram, counter and gauge queries",
                    self.origin
                ),
            }),
        }
    }

    fn absent(&self, kind: &str, family: &str) -> Reading {
        Reading::no_data(format!("{} has no {kind} named {family}", self.origin))
    }

    fn read_histogram(&self, family: &str, selector: &Selector) -> Result<Reading, SourceError> {
        let all = self.all_histogram_series(family);
        if all.is_empty() {
            if let Some(other) = self.series.iter().find(|s| s.name == family) {
                return Err(SourceError::WrongType {
                    family: family.to_string(),
                    expected: "histogram",
                    found: other.value.kind(),
                });
            }
            return Ok(self.absent("histogram", family));
        }
        let total = all.len();
        let picked: Vec<BucketSeries> = all
            .into_iter()
            .filter(|h| selector.matches(&h.labels))
            .map(|h| {
                let mut buckets = h.buckets;
                // `+Inf` is mandatory, but `_count` says the same thing.
                if let Some(count) = h.count
                    && !buckets.iter().any(|b| b.0 == f64::INFINITY)
                {
                    buckets.push((f64::INFINITY, count));
                }
                BucketSeries {
                    buckets,
                    sum: h.sum,
                }
            })
            .collect();
        if picked.is_empty() {
            return Ok(Reading::no_data(no_match_reason(family, selector, total)));
        }
        merge_histograms(family, picked).map(Reading::Distribution)
    }

    /// Scalar series named `name`, checked against the kinds a query accepts.
    fn scalars(
        &self,
        names: &[&str],
        family: &str,
        expected: &'static str,
        accept: fn(&Value) -> bool,
    ) -> Result<Vec<&Series>, SourceError> {
        let found: Vec<&Series> = self
            .series
            .iter()
            .filter(|s| names.contains(&s.name.as_str()))
            .collect();
        if let Some(bad) = found.iter().find(|s| !accept(&s.value)) {
            return Err(SourceError::WrongType {
                family: family.to_string(),
                expected,
                found: bad.value.kind(),
            });
        }
        Ok(found)
    }

    fn read_counter(&self, family: &str, selector: &Selector) -> Result<Reading, SourceError> {
        let with_total = format!("{family}_total");
        let names: Vec<&str> = if family.ends_with("_total") {
            vec![family]
        } else {
            vec![family, &with_total]
        };
        let found = self.scalars(&names, family, "counter", |v| {
            matches!(v, Value::Counter(_) | Value::Untyped(_))
        })?;
        if found.is_empty() {
            return Ok(self.absent("counter", family));
        }
        let picked: Vec<f64> = found
            .iter()
            .filter(|s| selector.matches(&s.labels))
            .filter_map(|s| s.value.scalar())
            .collect();
        if picked.is_empty() {
            return Ok(Reading::no_data(no_match_reason(
                family,
                selector,
                found.len(),
            )));
        }
        Ok(Reading::Count(picked.iter().sum()))
    }

    fn read_gauge(&self, family: &str, selector: &Selector) -> Result<Reading, SourceError> {
        let found = self.scalars(&[family], family, "gauge", |v| v.scalar().is_some())?;
        if found.is_empty() {
            return Ok(self.absent("gauge", family));
        }
        let picked: Vec<GaugePoint> = found
            .iter()
            .filter(|s| selector.matches(&s.labels))
            .filter_map(|s| {
                s.value.scalar().map(|value| GaugePoint {
                    at_seconds: s.at_seconds,
                    value,
                })
            })
            .collect();
        if picked.is_empty() {
            return Ok(Reading::no_data(no_match_reason(
                family,
                selector,
                found.len(),
            )));
        }
        let points = average_by_timestamp(picked);
        if points.is_empty() {
            return Ok(Reading::no_data(format!(
                "every series of {family} matching {selector} is NaN"
            )));
        }
        Ok(Reading::Gauge(points))
    }
}
