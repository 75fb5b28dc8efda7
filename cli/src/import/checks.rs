//! The checks of Flagger and Argo Rollouts as weir metrics.
//!
//! Both tools judge the canary alone against fixed thresholds ("success
//! rate at least 99%", "p99 under 500 ms"), query by query. weir compares
//! the canary with stable serving the same traffic, with a margin. So the
//! mapping keeps what carries over: a success-rate floor becomes the error
//! rate's `hardLimit` (a guard on the canary's own rate) next to a margin
//! against stable; a latency threshold becomes a latency metric on the same
//! quantile with a relative margin, measured by weir's proxy. A query whose
//! meaning cannot be told from its text is not guessed at: it is left out,
//! with a note saying what to write instead.

use std::collections::BTreeSet;

use weir_crds::{MetricKind, MetricSource, MetricSpec, PrometheusSource, Signal};

use super::notes::Notes;

/// Margin for latency metrics carried over from a threshold.
const LATENCY_MARGIN: &str = "10%";
/// Margin for error rates carried over from a threshold.
const ERROR_MARGIN: &str = "0.5pp";
/// Margin for GPU gauges (docs/analysis.md's example).
const GAUGE_MARGIN: &str = "15%";

/// What a query measures, as far as its name and text tell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    /// A success ratio (higher is better), e.g. non-5xx over all requests.
    SuccessRate,
    /// An error ratio (lower is better).
    ErrorRate,
    /// A latency; the quantile when the query names one.
    Latency {
        quantile: Option<f64>,
        signal: Signal,
    },
    /// A GPU gauge (DCGM).
    Gpu,
    /// Something else.
    Unknown,
}

/// Reads what a Prometheus query (and the check's name) measures.
pub fn classify(name: &str, query: &str) -> Measure {
    let name = name.to_ascii_lowercase();
    let q = query.to_ascii_lowercase();
    let compact: String = q.chars().filter(|c| !c.is_whitespace()).collect();
    let quantile = compact
        .split_once("histogram_quantile(")
        .and_then(|(_, rest)| rest.split(',').next())
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|q| *q > 0.0 && *q < 1.0);
    let signal = if q.contains("time_to_first_token") || name.contains("ttft") {
        Signal::Ttft
    } else if q.contains("inter_token")
        || q.contains("time_per_output_token")
        || name.contains("itl")
    {
        Signal::Itl
    } else {
        Signal::Duration
    };
    let excludes_5xx = ["!~\"5", "!=\"5", "!~'5"]
        .iter()
        .any(|p| compact.contains(p));
    let selects_5xx = ["=~\"5", "=\"5", "=~'5"]
        .iter()
        .any(|p| compact.contains(p));
    if q.contains("dcgm_") || name.contains("gpu") {
        Measure::Gpu
    } else if quantile.is_some()
        || [
            "latency",
            "duration",
            "ttft",
            "itl",
            "response-time",
            "response_time",
        ]
        .iter()
        .any(|w| name.contains(w))
        || q.contains("_seconds_bucket")
    {
        Measure::Latency { quantile, signal }
    } else if name.contains("success") || (excludes_5xx && !selects_5xx) {
        Measure::SuccessRate
    } else if name.contains("error") || name.contains("5xx") || selects_5xx {
        Measure::ErrorRate
    } else {
        Measure::Unknown
    }
}

/// A threshold of a check: "the value must be at least / at most `value`".
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// Passes at or above.
    AtLeast(f64),
    /// Passes at or below.
    AtMost(f64),
}

/// Reads an Argo condition on the first result: `result[0] >= 0.95`,
/// `result < 0.01`, `0.95 <= result[0]`. `failure` turns a failure
/// condition into the bound that passes. Anything more complex: `None`.
pub fn argo_bound(condition: &str, failure: bool) -> Option<Bound> {
    let c: String = condition.chars().filter(|c| !c.is_whitespace()).collect();
    let c = c.replace("result[0]", "result");
    for (op, at_least) in [(">=", true), ("<=", false), (">", true), ("<", false)] {
        if let Some((left, right)) = c.split_once(op) {
            let (n, at_least) = if left == "result" {
                (right.parse::<f64>().ok()?, at_least)
            } else if right == "result" {
                (left.parse::<f64>().ok()?, !at_least)
            } else {
                return None;
            };
            // A failure condition bounds what fails: the pass is the other side.
            let at_least = at_least != failure;
            return Some(if at_least {
                Bound::AtLeast(n)
            } else {
                Bound::AtMost(n)
            });
        }
    }
    None
}

/// A percentage as weir writes it: `1%`, `0.5%`.
fn percent(p: f64) -> String {
    let rounded = (p * 1000.0).round() / 1000.0;
    format!("{rounded}%")
}

/// A metric of `kind` measured by weir's proxy (gauges: replace the
/// source), with the import's margin for its kind.
fn metric(name: String, kind: MetricKind) -> MetricSpec {
    // (maxIncrease, maxDecrease, maxChange): the imports make the first
    // three kinds; the answer's shape has its own directions.
    let (max_increase, max_decrease, max_change) = match kind {
        MetricKind::Latency => (Some(LATENCY_MARGIN), None, None),
        MetricKind::ErrorRate | MetricKind::TruncationRate | MetricKind::EmptyRate => {
            (Some(ERROR_MARGIN), None, None)
        }
        MetricKind::Gauge => (Some(GAUGE_MARGIN), None, None),
        MetricKind::DecodeSpeed => (None, Some(LATENCY_MARGIN), None),
        MetricKind::OutputTokens => (None, None, Some(LATENCY_MARGIN)),
    };
    MetricSpec {
        name,
        kind,
        source: MetricSource::Proxy,
        signal: None,
        quantiles: Vec::new(),
        max_increase: max_increase.map(str::to_string),
        max_decrease: max_decrease.map(str::to_string),
        max_change: max_change.map(str::to_string),
        hard_limit: None,
        per_request: false,
    }
}

/// The metrics being gathered for one Canary, with unique names.
#[derive(Debug, Default)]
pub struct Checks {
    /// In output order: `spec.analysis.metrics[i]`.
    pub metrics: Vec<MetricSpec>,
    names: BTreeSet<String>,
}

/// One check to carry over.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// The check's name in the source.
    pub name: &'a str,
    /// The source field, for notes.
    pub source: &'a str,
    /// What it measures.
    pub measure: Measure,
    /// Its pass threshold, if one was read.
    pub bound: Option<Bound>,
    /// How the threshold was written, for notes.
    pub threshold_text: &'a str,
    /// Prometheus address and query (gauges keep them).
    pub prometheus: Option<(&'a str, &'a str)>,
    /// How a ratio's threshold is written.
    pub unit: Unit,
}

/// How the threshold of a success or error ratio is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// In percent (Flagger: `thresholdRange: {min: 99}`).
    Percent,
    /// As a ratio from 0 to 1 (Argo: `result[0] >= 0.95`); above 1 it can
    /// only be a percentage.
    Ratio,
}

impl Checks {
    /// The output path of the next metric.
    fn next_at(&self) -> String {
        format!("spec.analysis.metrics[{}]", self.metrics.len())
    }

    fn unique(&mut self, name: &str) -> String {
        let base: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let base = if base.is_empty() {
            "check".to_string()
        } else {
            base
        };
        let mut candidate = base.clone();
        let mut n = 2;
        while !self.names.insert(candidate.clone()) {
            candidate = format!("{base}-{n}");
            n += 1;
        }
        candidate
    }

    fn push(&mut self, spec: MetricSpec) {
        self.metrics.push(spec);
    }

    /// Carries `check` over; notes say how its meaning changed, or why it
    /// was left out.
    pub fn add(&mut self, check: Check<'_>, notes: &mut Notes) {
        let at = self.next_at();
        let threshold = if check.threshold_text.is_empty() {
            String::new()
        } else {
            format!(" ({})", check.threshold_text)
        };
        match check.measure {
            Measure::SuccessRate | Measure::ErrorRate => {
                // A success floor of 99 (Flagger, percent) or 0.99 (Argo,
                // ratio) is an error ceiling of 1%.
                let as_percent = |v: f64| match check.unit {
                    Unit::Ratio if v <= 1.0 => v * 100.0,
                    _ => v,
                };
                let hard_limit = match (check.measure, check.bound) {
                    (Measure::SuccessRate, Some(Bound::AtLeast(v))) => Some(100.0 - as_percent(v)),
                    (Measure::ErrorRate, Some(Bound::AtMost(v))) => Some(as_percent(v)),
                    _ => None,
                }
                .filter(|p| *p > 0.0 && *p < 100.0);
                let name = self.unique(check.name);
                self.push(MetricSpec {
                    hard_limit: hard_limit.map(percent),
                    ..metric(name, MetricKind::ErrorRate)
                });
                let guard = match hard_limit {
                    Some(p) => format!(
                        "the fixed threshold{threshold} is kept as hardLimit {} on the canary's \
                         own error rate",
                        percent(p)
                    ),
                    None => format!("the threshold{threshold} is not a floor weir can keep"),
                };
                notes.changed(
                    &at,
                    check.source,
                    format!(
                        "errors counted by weir's proxy (HTTP errors and failed streams) instead \
                         of the query; {guard}, and the canary must also stay within \
                         {ERROR_MARGIN} of stable's error rate"
                    ),
                );
            }
            Measure::Latency { quantile, signal } => {
                let name = self.unique(check.name);
                self.push(MetricSpec {
                    signal: Some(signal),
                    quantiles: quantile.into_iter().collect(),
                    ..metric(name, MetricKind::Latency)
                });
                notes.changed(
                    &at,
                    check.source,
                    format!(
                        "a fixed latency threshold{threshold} becomes a margin: the canary's \
                         typical latency{} may be at most {LATENCY_MARGIN} above stable's, \
                         measured by weir's proxy; for streamed completions add signal: ttft and \
                         itl metrics",
                        match quantile {
                            Some(q) => format!(" and p{}", q * 100.0),
                            None => String::new(),
                        }
                    ),
                );
            }
            Measure::Gpu => {
                let Some((address, query)) = check.prometheus else {
                    return self.unknown(check, notes);
                };
                if !query.contains("$pods") && !query.contains("$cohort") {
                    notes.dropped(
                        "spec.analysis.metrics",
                        check.source,
                        format!(
                            "a GPU query that does not select a cohort cannot compare them; weir \
                             runs it once per cohort with $pods, $namespace and $cohort filled in: \
                             add {{name: gpu, kind: gauge, maxIncrease: {GAUGE_MARGIN}, source: \
                             {{prometheus: {{address: {address}, query: \
                             'avg(DCGM_FI_DEV_GPU_UTIL{{pod=~\"$pods\"}})'}}}}}}"
                        ),
                    );
                    return;
                }
                let name = self.unique(check.name);
                self.push(MetricSpec {
                    source: MetricSource::Prometheus(PrometheusSource {
                        address: address.into(),
                        query: query.into(),
                    }),
                    ..metric(name, MetricKind::Gauge)
                });
                notes.changed(
                    &at,
                    check.source,
                    format!(
                        "compared between the cohorts with a {GAUGE_MARGIN} margin instead of the \
                         threshold{threshold}"
                    ),
                );
            }
            Measure::Unknown => self.unknown(check, notes),
        }
    }

    fn unknown(&mut self, check: Check<'_>, notes: &mut Notes) {
        notes.dropped(
            "spec.analysis.metrics",
            check.source,
            format!(
                "weir import cannot tell what {:?} measures; weir compares the cohorts on the \
                 proxy's latency (ttft, itl, duration) and error rate, and on per-pod gauges \
                 (kind: gauge with a prometheus query using pod=~\"$pods\"): add the one it stands \
                 for",
                check.name
            ),
        );
    }

    /// Adds weir's usual checks when nothing was carried over: every weir
    /// run is judged, and an analysis needs at least one metric.
    pub fn default_if_empty(&mut self, source: &str, notes: &mut Notes) {
        if !self.metrics.is_empty() {
            return;
        }
        for (name, kind, signal) in [
            ("ttft", MetricKind::Latency, Some(Signal::Ttft)),
            ("errors", MetricKind::ErrorRate, None),
        ] {
            let name = self.unique(name);
            self.push(MetricSpec {
                signal,
                ..metric(name, kind)
            });
        }
        notes.changed(
            "spec.analysis.metrics",
            source,
            "no check could be carried over, so these are weir's usual ones: time to first token \
             at most 10% above stable, error rate within 0.5pp",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_read_by_what_they_select() {
        let success = r#"sum(irate(istio_requests_total{reporter="source",destination_service=~"{{args.service-name}}",response_code!~"5.*"}[5m])) / sum(irate(istio_requests_total{reporter="source",destination_service=~"{{args.service-name}}"}[5m]))"#;
        assert_eq!(classify("success-rate", success), Measure::SuccessRate);
        assert_eq!(classify("x", success), Measure::SuccessRate);
        let errors = r#"sum(rate(http_requests_total{status=~"5.."}[1m])) / \
                        sum(rate(http_requests_total[1m]))"#;
        assert_eq!(classify("x", errors), Measure::ErrorRate);
        let p95 =
            "histogram_quantile(0.95, sum(rate(http_request_duration_seconds_bucket[5m])) by (le))";
        assert_eq!(
            classify("latency", p95),
            Measure::Latency {
                quantile: Some(0.95),
                signal: Signal::Duration
            }
        );
        let ttft = "histogram_quantile(0.99, rate(vllm:time_to_first_token_seconds_bucket[1m]))";
        assert_eq!(
            classify("x", ttft),
            Measure::Latency {
                quantile: Some(0.99),
                signal: Signal::Ttft
            }
        );
        assert_eq!(classify("gpu", "avg(DCGM_FI_DEV_GPU_UTIL)"), Measure::Gpu);
        assert_eq!(classify("queue", "sum(kafka_lag)"), Measure::Unknown);
    }

    #[test]
    fn argo_conditions_become_bounds() {
        for (condition, failure, bound) in [
            ("result[0] >= 0.95", false, Some(Bound::AtLeast(0.95))),
            ("result[0] < 0.01", false, Some(Bound::AtMost(0.01))),
            ("0.95 <= result[0]", false, Some(Bound::AtLeast(0.95))),
            // Fails above 0.05: passes at or below it.
            ("result[0] > 0.05", true, Some(Bound::AtMost(0.05))),
            ("len(result) == 0 || result[0] >= 0.9", false, None),
            ("result.code == 200", false, None),
        ] {
            assert_eq!(argo_bound(condition, failure), bound, "{condition}");
        }
    }

    #[test]
    fn a_success_floor_becomes_a_hard_limit_and_a_margin() {
        let mut checks = Checks::default();
        let mut notes = Notes::default();
        for (name, bound) in [("request-success-rate", 99.0), ("success-rate", 0.95)] {
            checks.add(
                Check {
                    name,
                    source: "s",
                    measure: Measure::SuccessRate,
                    bound: Some(Bound::AtLeast(bound)),
                    threshold_text: "min 99",
                    prometheus: None,
                    unit: if bound > 1.0 {
                        Unit::Percent
                    } else {
                        Unit::Ratio
                    },
                },
                &mut notes,
            );
        }
        let limits: Vec<_> = checks
            .metrics
            .iter()
            .map(|m| m.hard_limit.clone())
            .collect();
        assert_eq!(limits, [Some("1%".to_string()), Some("5%".to_string())]);
        assert!(
            checks
                .metrics
                .iter()
                .all(|m| m.max_increase.as_deref() == Some("0.5pp"))
        );
        assert!(!notes.any_dropped());
    }

    #[test]
    fn unknown_and_cohortless_gpu_queries_are_dropped_with_the_alternative() {
        let mut checks = Checks::default();
        let mut notes = Notes::default();
        for (name, query) in [
            ("lag", "sum(kafka_lag)"),
            ("gpu", "avg(DCGM_FI_DEV_GPU_UTIL)"),
        ] {
            checks.add(
                Check {
                    name,
                    source: "s",
                    measure: classify(name, query),
                    bound: None,
                    threshold_text: "",
                    prometheus: Some(("http://prom:9090", query)),
                    unit: Unit::Ratio,
                },
                &mut notes,
            );
        }
        assert!(checks.metrics.is_empty());
        assert_eq!(notes.0.len(), 2);
        assert!(notes.any_dropped());
        assert!(notes.0[1].text.contains("$pods"), "{}", notes.0[1].text);
    }

    #[test]
    fn names_stay_unique() {
        let mut checks = Checks::default();
        assert_eq!(checks.unique("latency"), "latency");
        assert_eq!(checks.unique("latency"), "latency-2");
        assert_eq!(checks.unique("p99 latency!"), "p99-latency-");
    }
}
