//! [`SampleSource`]: raw numbers held in memory, behind the same trait.
//!
//! Used by tests, the simulator and local mode, where observations are already
//! in the process: latency samples become a [`Distribution`], 0/1 outcomes a
//! count, gauge points a series. Series carry labels so that the same
//! [`Selector`]s pick cohorts as they would against a real server.

use std::collections::BTreeMap;
use std::future::Future;

use super::{
    GaugePoint, MetricSource, Query, Reading, Selector, SourceError, average_by_timestamp,
    no_match_reason,
};
use crate::dist::Distribution;

#[derive(Debug, Clone, PartialEq)]
enum Data {
    Observations(Distribution),
    Count(f64),
    Gauge(Vec<GaugePoint>),
}

impl Data {
    fn kind(&self) -> &'static str {
        match self {
            Data::Observations(_) => "histogram",
            Data::Count(_) => "counter",
            Data::Gauge(_) => "gauge",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Series {
    family: String,
    labels: BTreeMap<String, String>,
    data: Data,
}

/// Observations held in memory, as labelled series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleSource {
    series: Vec<Series>,
}

fn label_map(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl SampleSource {
    /// An empty source (every query reads [`Reading::NoData`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a series of raw observations (latencies in seconds, token
    /// counts...) to histogram `family`.
    ///
    /// # Errors
    /// [`SourceError::Buckets`] when a value is negative or not finite;
    /// nothing is added then.
    pub fn add_observations(
        &mut self,
        family: &str,
        labels: &[(&str, &str)],
        values: &[f64],
    ) -> Result<&mut Self, SourceError> {
        let dist = Distribution::from_values(values).map_err(|source| SourceError::Buckets {
            family: family.to_string(),
            source,
        })?;
        Ok(self.push(family, labels, Data::Observations(dist)))
    }

    /// Adds an already built distribution to histogram `family`.
    pub fn add_distribution(
        &mut self,
        family: &str,
        labels: &[(&str, &str)],
        dist: Distribution,
    ) -> &mut Self {
        self.push(family, labels, Data::Observations(dist))
    }

    /// Adds 0/1 outcomes to counter `family`: the counter counts the `true`s
    /// (record errors as `true` to count errors).
    pub fn add_outcomes(
        &mut self,
        family: &str,
        labels: &[(&str, &str)],
        outcomes: &[bool],
    ) -> &mut Self {
        let hits = outcomes.iter().filter(|o| **o).count();
        self.push(family, labels, Data::Count(hits as f64))
    }

    /// Adds a counter value to `family`.
    pub fn add_count(&mut self, family: &str, labels: &[(&str, &str)], count: f64) -> &mut Self {
        self.push(family, labels, Data::Count(count))
    }

    /// Adds gauge points to `family`.
    pub fn add_gauge(
        &mut self,
        family: &str,
        labels: &[(&str, &str)],
        points: &[GaugePoint],
    ) -> &mut Self {
        self.push(family, labels, Data::Gauge(points.to_vec()))
    }

    fn push(&mut self, family: &str, labels: &[(&str, &str)], data: Data) -> &mut Self {
        self.series.push(Series {
            family: family.to_string(),
            labels: label_map(labels),
            data,
        });
        self
    }

    /// Answers a query at once (the trait's `read` wraps this).
    ///
    /// # Errors
    /// [`SourceError::Unsupported`] for PromQL; [`SourceError::WrongType`]
    /// when `family` holds another kind of data than asked.
    pub fn read_now(&self, query: &Query) -> Result<Reading, SourceError> {
        let (family, selector, expected) = match query {
            Query::Histogram { family, selector } => (family, selector, "histogram"),
            Query::Counter { family, selector } => (family, selector, "counter"),
            Query::Gauge { family, selector } => (family, selector, "gauge"),
            Query::PromQl { expr } => {
                return Err(SourceError::Unsupported {
                    what: format!("PromQL ({expr}) against in-memory samples"),
                });
            }
        };
        let selected = match self.select(family, selector, expected)? {
            Ok(selected) => selected,
            Err(no_data) => return Ok(no_data),
        };
        Ok(match query {
            Query::Histogram { .. } => {
                let mut dist = Distribution::new();
                for data in selected {
                    if let Data::Observations(d) = data {
                        dist.merge(d);
                    }
                }
                Reading::Distribution(dist)
            }
            Query::Counter { .. } => Reading::Count(
                selected
                    .iter()
                    .map(|d| if let Data::Count(c) = d { *c } else { 0.0 })
                    .sum(),
            ),
            _ => Reading::Gauge(average_by_timestamp(selected.iter().flat_map(
                |d| match d {
                    Data::Gauge(points) => points.clone(),
                    _ => Vec::new(),
                },
            ))),
        })
    }

    /// The data of `family`'s series that `selector` picks, or the NoData
    /// reading that explains why there is none.
    fn select(
        &self,
        family: &str,
        selector: &Selector,
        expected: &'static str,
    ) -> Result<Result<Vec<&Data>, Reading>, SourceError> {
        let of_family: Vec<&Series> = self.series.iter().filter(|s| s.family == family).collect();
        if let Some(other) = of_family.iter().find(|s| s.data.kind() != expected) {
            return Err(SourceError::WrongType {
                family: family.to_string(),
                expected,
                found: other.data.kind(),
            });
        }
        if of_family.is_empty() {
            return Ok(Err(Reading::no_data(format!(
                "no samples of {family} were recorded"
            ))));
        }
        let selected: Vec<&Data> = of_family
            .iter()
            .filter(|s| selector.matches(&s.labels))
            .map(|s| &s.data)
            .collect();
        if selected.is_empty() {
            return Ok(Err(Reading::no_data(no_match_reason(
                family,
                selector,
                of_family.len(),
            ))));
        }
        Ok(Ok(selected))
    }
}

impl MetricSource for SampleSource {
    fn read(&self, query: &Query) -> impl Future<Output = Result<Reading, SourceError>> + Send {
        std::future::ready(self.read_now(query))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort(name: &str) -> Selector {
        Selector::any().eq("cohort", name)
    }

    fn source() -> SampleSource {
        let mut s = SampleSource::new();
        s.add_observations(
            "ttft",
            &[("cohort", "stable"), ("pod", "a")],
            &[0.1, 0.2, 0.3],
        )
        .expect("valid")
        .add_observations("ttft", &[("cohort", "stable"), ("pod", "b")], &[0.4])
        .expect("valid")
        .add_observations("ttft", &[("cohort", "canary")], &[1.0, 2.0])
        .expect("valid");
        s.add_outcomes(
            "errors",
            &[("cohort", "canary")],
            &[false, true, true, false],
        )
        .add_count("errors", &[("cohort", "canary"), ("pod", "c")], 3.0)
        .add_gauge(
            "gpu",
            &[("cohort", "canary"), ("gpu", "0")],
            &[
                GaugePoint {
                    at_seconds: 10.0,
                    value: 50.0,
                },
                GaugePoint {
                    at_seconds: 20.0,
                    value: 70.0,
                },
            ],
        )
        .add_gauge(
            "gpu",
            &[("cohort", "canary"), ("gpu", "1")],
            &[GaugePoint {
                at_seconds: 10.0,
                value: 90.0,
            }],
        );
        s
    }

    #[test]
    fn histograms_merge_the_selected_series() {
        let s = source();
        let Ok(Reading::Distribution(d)) = s.read_now(&Query::histogram("ttft", cohort("stable")))
        else {
            panic!("expected a distribution");
        };
        assert_eq!(d.count(), 4);
        assert!((d.sum() - 1.0).abs() < 1e-12);
        let Ok(Reading::Distribution(d)) = s.read_now(&Query::histogram("ttft", cohort("canary")))
        else {
            panic!("expected a distribution");
        };
        assert_eq!(d.count(), 2);
        assert!((d.mean().expect("not empty") - 1.5).abs() < 1e-12);
    }

    #[test]
    fn outcomes_count_the_trues_and_counters_sum() {
        let s = source();
        assert_eq!(
            s.read_now(&Query::counter("errors", cohort("canary")))
                .expect("reads"),
            Reading::Count(5.0)
        );
    }

    #[test]
    fn gauges_average_across_series_per_timestamp() {
        let s = source();
        let reading = s
            .read_now(&Query::gauge("gpu", cohort("canary")))
            .expect("reads");
        assert_eq!(
            reading,
            Reading::Gauge(vec![
                GaugePoint {
                    at_seconds: 10.0,
                    value: 70.0
                },
                GaugePoint {
                    at_seconds: 20.0,
                    value: 70.0
                },
            ])
        );
    }

    #[test]
    fn empty_is_no_data_and_misuse_is_an_error() {
        let s = source();
        let Ok(Reading::NoData { reason }) =
            s.read_now(&Query::histogram("ttft", cohort("preview")))
        else {
            panic!("expected no data");
        };
        assert_eq!(
            reason,
            r#"no series of ttft match {cohort="preview"} (3 series of ttft have other labels)"#
        );
        let Ok(Reading::NoData { reason }) = s.read_now(&Query::counter("absent", Selector::any()))
        else {
            panic!("expected no data");
        };
        assert!(reason.contains("absent"), "{reason}");
        assert!(matches!(
            s.read_now(&Query::counter("ttft", Selector::any())),
            Err(SourceError::WrongType {
                expected: "counter",
                found: "histogram",
                ..
            })
        ));
        assert!(matches!(
            s.read_now(&Query::promql("up")),
            Err(SourceError::Unsupported { .. })
        ));
        let mut s = SampleSource::new();
        assert!(s.add_observations("ttft", &[], &[0.1, -1.0]).is_err());
        assert!(
            s.read_now(&Query::histogram("ttft", Selector::any()))
                .expect("reads")
                .is_no_data()
        );
    }

    #[test]
    fn the_trait_answers_like_read_now() {
        let s = source();
        let q = Query::counter("errors", cohort("canary"));
        let via_trait = futures_ready(s.read(&q));
        assert_eq!(via_trait.expect("reads"), Reading::Count(5.0));
    }

    /// Polls a future that is ready at once (no runtime needed).
    fn futures_ready<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("the future was not ready"),
        }
    }
}
