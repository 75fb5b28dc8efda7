//! [`PrometheusApi`]: the Prometheus HTTP API (`/api/v1/query`,
//! `/api/v1/query_range`), for metrics that a Prometheus server already
//! scrapes (DCGM exporter, inference servers behind a ServiceMonitor).
//!
//! The JSON envelope is parsed here with serde ([`parse_response`]), so the
//! parsing is pure and tested on real Prometheus bodies, and the HTTP part is
//! a thin shell. What each [`Query`] becomes:
//!
//! | query | PromQL | answer |
//! |---|---|---|
//! | `Histogram{F, sel}` | `sum by (le) (increase(F_bucket{sel}[W]))` and `sum(increase(F_sum{sel}[W]))`, instant at `at` | a [`Distribution`](crate::Distribution) of the observations in the window |
//! | `Counter{F, sel}` | `sum(increase(F{sel}[W]))` (matching `F(_total)?` when `F` lacks `_total`), instant | [`Reading::Count`]: the increase over the window |
//! | `Gauge{F, sel}` | `avg(F{sel})`, range over `[at - W, at]` every step | [`Reading::Gauge`] |
//! | `PromQl{expr}` | `expr`, instant | a vector whose series all carry `le` becomes a Distribution; other vectors, scalars and matrices become gauge points averaged per timestamp |
//!
//! `increase` (not `rate`) is used because the analysis wants *counts* of
//! observations; because it extrapolates to the window's edges, the summed
//! buckets can be fractional and, across series, slightly non-monotone:
//! they are made monotone with a running maximum, as `histogram_quantile`
//! does, before building the distribution.
//!
//! Native histograms (`"histogram"` / `"histograms"` in a result) are
//! recognised and refused with [`SourceError::Unsupported`]; weir reads
//! classic `_bucket` histograms.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::{
    BucketSeries, GaugePoint, MetricSource, Query, Reading, Selector, SourceError,
    average_by_timestamp, http, merge_histograms, parse_float,
};

/// Largest API response accepted.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// A successful answer's `data`.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    /// `resultType: "vector"`: one sample per series.
    Vector(Vec<InstantSeries>),
    /// `resultType: "matrix"`: many samples per series.
    Matrix(Vec<RangeSeries>),
    /// `resultType: "scalar"` (also a bare `[ts, "v"]` `data`).
    Scalar(GaugePoint),
    /// `resultType: "string"`.
    String {
        /// Evaluation time, Unix seconds.
        at_seconds: f64,
        /// The string.
        value: String,
    },
}

/// One series of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantSeries {
    /// The series labels (with `__name__` when Prometheus kept it).
    pub labels: BTreeMap<String, String>,
    /// The float sample; `None` when the series holds a native histogram.
    pub sample: Option<GaugePoint>,
}

/// One series of a range matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// The series labels.
    pub labels: BTreeMap<String, String>,
    /// Float samples in time order.
    pub samples: Vec<GaugePoint>,
    /// Number of native-histogram samples (not decoded).
    pub native_histograms: usize,
}

/// A parsed successful response.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiAnswer {
    /// The result.
    pub result: QueryResult,
    /// Prometheus's `warnings` and `infos`, if any.
    pub warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(rename = "errorType", default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    infos: Vec<String>,
}

#[derive(Deserialize)]
struct TypedData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Option<Vec<(f64, String)>>,
    #[serde(default)]
    histogram: Option<serde_json::Value>,
    #[serde(default)]
    histograms: Option<Vec<serde_json::Value>>,
}

fn parse_error(reason: impl Into<String>) -> SourceError {
    SourceError::Parse {
        what: "Prometheus API response".to_string(),
        line: None,
        reason: reason.into(),
    }
}

fn point((at_seconds, value): (f64, String)) -> Result<GaugePoint, SourceError> {
    let value = parse_float(&value).map_err(parse_error)?;
    Ok(GaugePoint { at_seconds, value })
}

/// Parses a Prometheus API response body.
///
/// # Errors
/// [`SourceError::Api`] for an error envelope (`"status": "error"`, with
/// `errorType` and `error`; a `data` field next to them is ignored);
/// [`SourceError::Parse`] for anything that is not a Prometheus envelope.
pub fn parse_response(body: &str) -> Result<ApiAnswer, SourceError> {
    let envelope: Envelope = serde_json::from_str(body)
        .map_err(|e| parse_error(format!("not a Prometheus envelope: {e}")))?;
    match envelope.status.as_str() {
        "success" => {}
        "error" => {
            return Err(SourceError::Api {
                error_type: envelope.error_type.unwrap_or_else(|| "unknown".to_string()),
                message: envelope.error.unwrap_or_default(),
            });
        }
        other => {
            return Err(parse_error(format!(
                "status {other:?} is neither success nor error"
            )));
        }
    }
    let data = envelope
        .data
        .ok_or_else(|| parse_error("a success envelope without data"))?;
    let mut warnings = envelope.warnings;
    warnings.extend(envelope.infos);
    let result = if data.is_array() {
        // A bare `[ts, "v"]`: the shape of a scalar result.
        let raw: (f64, String) =
            serde_json::from_value(data).map_err(|e| parse_error(format!("data: {e}")))?;
        QueryResult::Scalar(point(raw)?)
    } else {
        let typed: TypedData =
            serde_json::from_value(data).map_err(|e| parse_error(format!("data: {e}")))?;
        parse_typed(typed)?
    };
    Ok(ApiAnswer { result, warnings })
}

fn parse_typed(typed: TypedData) -> Result<QueryResult, SourceError> {
    let result = typed.result;
    let series = |result: serde_json::Value| -> Result<Vec<RawSeries>, SourceError> {
        serde_json::from_value(result).map_err(|e| parse_error(format!("result: {e}")))
    };
    match typed.result_type.as_str() {
        "vector" => series(result)?
            .into_iter()
            .map(|s| {
                let sample = match (s.value, s.histogram) {
                    (Some(v), _) => Some(point(v)?),
                    (None, Some(_)) => None,
                    (None, None) => {
                        return Err(parse_error("a vector series without value or histogram"));
                    }
                };
                Ok(InstantSeries {
                    labels: s.metric,
                    sample,
                })
            })
            .collect::<Result<_, _>>()
            .map(QueryResult::Vector),
        "matrix" => series(result)?
            .into_iter()
            .map(|s| {
                let samples = s
                    .values
                    .unwrap_or_default()
                    .into_iter()
                    .map(point)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(RangeSeries {
                    labels: s.metric,
                    samples,
                    native_histograms: s.histograms.map_or(0, |h| h.len()),
                })
            })
            .collect::<Result<_, _>>()
            .map(QueryResult::Matrix),
        "scalar" => {
            let raw: (f64, String) =
                serde_json::from_value(result).map_err(|e| parse_error(format!("scalar: {e}")))?;
            point(raw).map(QueryResult::Scalar)
        }
        "string" => {
            let (at_seconds, value): (f64, String) =
                serde_json::from_value(result).map_err(|e| parse_error(format!("string: {e}")))?;
            Ok(QueryResult::String { at_seconds, value })
        }
        other => Err(parse_error(format!("unknown resultType {other:?}"))),
    }
}

fn native_histograms(result: &QueryResult, expr: &str) -> Result<(), SourceError> {
    let found = match result {
        QueryResult::Vector(v) => v.iter().filter(|s| s.sample.is_none()).count(),
        QueryResult::Matrix(m) => m.iter().map(|s| s.native_histograms).sum(),
        _ => 0,
    };
    if found > 0 {
        return Err(SourceError::Unsupported {
            what: format!(
                "native histograms ({found} samples in the answer to {expr}); weir reads classic _bucket histograms"
            ),
        });
    }
    Ok(())
}

fn empty_reason(expr: &str, warnings: &[String]) -> String {
    if warnings.is_empty() {
        format!("Prometheus returned no series for {expr}")
    } else {
        format!(
            "Prometheus returned no series for {expr} (warnings: {})",
            warnings.join("; ")
        )
    }
}

/// Builds the distribution of a `sum by (le)` vector (plus the `_sum`
/// answer, when there is one).
///
/// # Errors
/// [`SourceError::Parse`] for a series without a numeric `le`;
/// [`SourceError::Unsupported`] for native histograms.
pub fn histogram_reading(
    family: &str,
    expr: &str,
    buckets: &ApiAnswer,
    sum: Option<&ApiAnswer>,
) -> Result<Reading, SourceError> {
    native_histograms(&buckets.result, expr)?;
    let QueryResult::Vector(series) = &buckets.result else {
        return Err(parse_error(format!(
            "{expr} did not return an instant vector"
        )));
    };
    let mut pairs = Vec::with_capacity(series.len());
    for s in series {
        let le = s
            .labels
            .get("le")
            .ok_or_else(|| parse_error(format!("a series of {expr} has no le label")))?;
        let le = parse_float(le).map_err(|e| parse_error(format!("le: {e}")))?;
        if let Some(sample) = s.sample.filter(|p| !p.value.is_nan()) {
            pairs.push((le, sample.value.max(0.0)));
        }
    }
    if pairs.is_empty() {
        return Ok(Reading::no_data(empty_reason(expr, &buckets.warnings)));
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut running = 0.0_f64;
    for pair in &mut pairs {
        running = running.max(pair.1);
        pair.1 = running;
    }
    let sum = sum.and_then(|answer| match &answer.result {
        QueryResult::Vector(v) => v.first().and_then(|s| s.sample).map(|p| p.value),
        QueryResult::Scalar(p) => Some(p.value),
        _ => None,
    });
    merge_histograms(
        family,
        [BucketSeries {
            buckets: pairs,
            sum: sum.filter(|s| s.is_finite()),
        }],
    )
    .map(Reading::Distribution)
}

/// A count from an instant answer: the vector's values summed (NaN skipped).
///
/// # Errors
/// [`SourceError::Unsupported`] for a matrix, a string or native histograms.
pub fn count_reading(expr: &str, answer: &ApiAnswer) -> Result<Reading, SourceError> {
    native_histograms(&answer.result, expr)?;
    let values: Vec<f64> = match &answer.result {
        QueryResult::Vector(v) => v.iter().filter_map(|s| s.sample).map(|p| p.value).collect(),
        QueryResult::Scalar(p) => vec![p.value],
        QueryResult::Matrix(_) | QueryResult::String { .. } => {
            return Err(SourceError::Unsupported {
                what: format!("a count from {expr}, which is not an instant vector or scalar"),
            });
        }
    };
    let values: Vec<f64> = values.into_iter().filter(|v| !v.is_nan()).collect();
    if values.is_empty() {
        return Ok(Reading::no_data(empty_reason(expr, &answer.warnings)));
    }
    Ok(Reading::Count(values.iter().sum()))
}

/// Gauge points from any float answer, averaged per timestamp (NaN skipped).
///
/// # Errors
/// [`SourceError::Unsupported`] for a string or native histograms.
pub fn gauge_reading(expr: &str, answer: &ApiAnswer) -> Result<Reading, SourceError> {
    native_histograms(&answer.result, expr)?;
    let points: Vec<GaugePoint> = match &answer.result {
        QueryResult::Vector(v) => v.iter().filter_map(|s| s.sample).collect(),
        QueryResult::Matrix(m) => m.iter().flat_map(|s| s.samples.iter().copied()).collect(),
        QueryResult::Scalar(p) => vec![*p],
        QueryResult::String { .. } => {
            return Err(SourceError::Unsupported {
                what: format!("{expr} returned a string, not numbers"),
            });
        }
    };
    let points = average_by_timestamp(points);
    if points.is_empty() {
        return Ok(Reading::no_data(empty_reason(expr, &answer.warnings)));
    }
    Ok(Reading::Gauge(points))
}

/// A free-form PromQL answer: a vector whose series all carry `le` is read
/// as histogram buckets, anything else as gauge points.
///
/// # Errors
/// As [`histogram_reading`] and [`gauge_reading`].
pub fn promql_reading(expr: &str, answer: &ApiAnswer) -> Result<Reading, SourceError> {
    match &answer.result {
        QueryResult::Vector(v)
            if !v.is_empty() && v.iter().all(|s| s.labels.contains_key("le")) =>
        {
            histogram_reading(expr, expr, answer, None)
        }
        _ => gauge_reading(expr, answer),
    }
}

/// A duration as PromQL writes it: `5m`, `30s`, `1500ms`.
pub fn promql_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// The two expressions behind a histogram query: buckets by `le`, and sum.
pub fn histogram_exprs(family: &str, selector: &Selector, window: Duration) -> (String, String) {
    let w = promql_duration(window);
    (
        format!(
            "sum by (le) (increase({}[{w}]))",
            selector.promql(&format!("{family}_bucket"))
        ),
        format!(
            "sum(increase({}[{w}]))",
            selector.promql(&format!("{family}_sum"))
        ),
    )
}

/// The expression behind a counter query. A name without `_total` also
/// matches `<name>_total`, as it does in a scrape.
pub fn counter_expr(family: &str, selector: &Selector, window: Duration) -> String {
    let series = if family.ends_with("_total") {
        selector.promql(family)
    } else {
        let mut matchers = vec![format!("__name__=~\"{family}(_total)?\"")];
        matchers.extend(selector.matchers().iter().map(ToString::to_string));
        format!("{{{}}}", matchers.join(","))
    };
    format!("sum(increase({series}[{}]))", promql_duration(window))
}

/// The expression behind a gauge query.
pub fn gauge_expr(family: &str, selector: &Selector) -> String {
    format!("avg({})", selector.promql(family))
}

/// A Prometheus server's HTTP API.
///
/// The real-Prometheus test arrives with the Prometheus integration (issue 7);
/// until then `tests/sources.rs` checks the HTTP path against a loopback
/// server replaying real Prometheus bodies (from `shared/fixtures`) with the
/// status codes Prometheus uses for them.
#[derive(Debug, Clone)]
pub struct PrometheusApi {
    base: url::Url,
    shown: String,
    client: reqwest::Client,
    timeout: Duration,
    window: Duration,
    step: Duration,
    at: Option<f64>,
}

impl PrometheusApi {
    /// Default request timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default window for `increase` and gauge ranges.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
    /// Default step of gauge range queries.
    pub const DEFAULT_STEP: Duration = Duration::from_secs(15);

    /// A client for the server at `base_url` (`http://prometheus:9090`, or
    /// with a path prefix such as `http://host/prometheus`).
    ///
    /// # Errors
    /// [`SourceError::InvalidUrl`] for a URL that is not http(s);
    /// [`SourceError::Unreachable`] when no HTTP client can be built.
    pub fn new(base_url: &str) -> Result<Self, SourceError> {
        let mut base = http::parse_url(base_url)?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let shown = http::display_url(&base);
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| SourceError::Unreachable {
                url: shown.clone(),
                reason: format!("cannot build an HTTP client: {e}"),
            })?;
        Ok(Self {
            base,
            shown,
            client,
            timeout: Self::DEFAULT_TIMEOUT,
            window: Self::DEFAULT_WINDOW,
            step: Self::DEFAULT_STEP,
            at: None,
        })
    }

    /// Sets the per-request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the window of `increase` and of gauge ranges (the analysis
    /// interval).
    #[must_use]
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Sets the step of gauge range queries.
    #[must_use]
    pub fn with_step(mut self, step: Duration) -> Self {
        self.step = step;
        self
    }

    /// Evaluates queries at `unix_seconds` instead of the server's "now".
    #[must_use]
    pub fn at(mut self, unix_seconds: f64) -> Self {
        self.at = Some(unix_seconds);
        self
    }

    /// Uses the caller's HTTP client (shared connection pool, proxies, TLS).
    #[must_use]
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    /// `GET /api/v1/query?query=expr[&time=t]`.
    ///
    /// # Errors
    /// [`SourceError::Unreachable`], [`SourceError::Timeout`],
    /// [`SourceError::Api`] for Prometheus errors (whatever the HTTP
    /// status), [`SourceError::Http`] for a non-2xx answer that is not a
    /// Prometheus envelope, [`SourceError::Parse`].
    pub async fn query(&self, expr: &str, time: Option<f64>) -> Result<ApiAnswer, SourceError> {
        let mut params = vec![("query", expr.to_string())];
        if let Some(t) = time {
            params.push(("time", format_time(t)));
        }
        self.call("api/v1/query", &params).await
    }

    /// `GET /api/v1/query_range?query=expr&start=..&end=..&step=..`.
    ///
    /// # Errors
    /// As [`PrometheusApi::query`].
    pub async fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Result<ApiAnswer, SourceError> {
        let params = [
            ("query", expr.to_string()),
            ("start", format_time(start)),
            ("end", format_time(end)),
            ("step", format!("{}", step.as_secs_f64())),
        ];
        self.call("api/v1/query_range", &params).await
    }

    async fn call(&self, path: &str, params: &[(&str, String)]) -> Result<ApiAnswer, SourceError> {
        let mut url = self.base.join(path).map_err(|e| SourceError::InvalidUrl {
            url: self.shown.clone(),
            reason: e.to_string(),
        })?;
        url.query_pairs_mut()
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
        let shown = http::display_url(&url);
        let (status, body) = http::get(
            &self.client,
            url,
            &shown,
            self.timeout,
            "application/json",
            MAX_RESPONSE_BYTES,
        )
        .await?;
        match parse_response(&body) {
            Ok(answer) if (200..300).contains(&status) => Ok(answer),
            Err(api @ SourceError::Api { .. }) => Err(api),
            Err(e) if (200..300).contains(&status) => Err(e),
            _ => Err(SourceError::Http {
                url: shown,
                status,
                body_excerpt: super::excerpt(&body, 200),
            }),
        }
    }

    fn end_time(&self) -> f64 {
        self.at.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        })
    }

    /// Answers one query (see the module table).
    ///
    /// # Errors
    /// As [`PrometheusApi::query`], plus [`SourceError::Unsupported`] for
    /// native histograms and string results.
    pub async fn read_query(&self, query: &Query) -> Result<Reading, SourceError> {
        match query {
            Query::Histogram { family, selector } => {
                let (buckets_expr, sum_expr) = histogram_exprs(family, selector, self.window);
                let buckets = self.query(&buckets_expr, self.at).await?;
                if let QueryResult::Vector(v) = &buckets.result
                    && v.is_empty()
                {
                    return Ok(Reading::no_data(empty_reason(
                        &buckets_expr,
                        &buckets.warnings,
                    )));
                }
                let sum = self.query(&sum_expr, self.at).await?;
                histogram_reading(family, &buckets_expr, &buckets, Some(&sum))
            }
            Query::Counter { family, selector } => {
                let expr = counter_expr(family, selector, self.window);
                count_reading(&expr, &self.query(&expr, self.at).await?)
            }
            Query::Gauge { family, selector } => {
                let expr = gauge_expr(family, selector);
                let end = self.end_time();
                let start = end - self.window.as_secs_f64();
                gauge_reading(
                    &expr,
                    &self.query_range(&expr, start, end, self.step).await?,
                )
            }
            Query::PromQl { expr } => promql_reading(expr, &self.query(expr, self.at).await?),
        }
    }
}

fn format_time(t: f64) -> String {
    format!("{t:.3}")
}

impl MetricSource for PrometheusApi {
    fn read(&self, query: &Query) -> impl Future<Output = Result<Reading, SourceError>> + Send {
        self.read_query(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::source::fixtures::{dir as fixtures_dir, read as fixture};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn p(at_seconds: f64, value: f64) -> GaugePoint {
        GaugePoint { at_seconds, value }
    }

    #[test]
    fn every_json_fixture_is_understood() {
        let mut seen = 0;
        for entry in std::fs::read_dir(fixtures_dir()).expect("fixtures directory exists") {
            let path = entry.expect("readable entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let bodies: Vec<String> = match path.extension().and_then(|e| e.to_str()) {
                Some("json") => vec![std::fs::read_to_string(&path).expect("readable")],
                Some("jsonl") => std::fs::read_to_string(&path)
                    .expect("readable")
                    .lines()
                    .map(str::to_string)
                    .collect(),
                _ => continue,
            };
            for body in bodies {
                match parse_response(&body) {
                    Ok(_) => assert!(!name.contains("error"), "{name} should be an error"),
                    Err(SourceError::Api { .. }) => assert!(name.contains("error"), "{name}"),
                    Err(e) => panic!("{name}: {e}"),
                }
                seen += 1;
            }
        }
        // 6 .json files + 3 lines of the .jsonl file.
        assert_eq!(seen, 9);
    }

    #[test]
    fn documented_instant_vector() {
        let answer = parse_response(&fixture("prometheus-query-vector.json")).expect("parses");
        assert_eq!(
            answer.result,
            QueryResult::Vector(vec![
                InstantSeries {
                    labels: labels(&[
                        ("__name__", "up"),
                        ("job", "prometheus"),
                        ("instance", "localhost:9090")
                    ]),
                    sample: Some(p(1435781451.781, 1.0)),
                },
                InstantSeries {
                    labels: labels(&[
                        ("__name__", "up"),
                        ("job", "node"),
                        ("instance", "localhost:9100")
                    ]),
                    sample: Some(p(1435781451.781, 0.0)),
                },
            ])
        );
        assert!(answer.warnings.is_empty());
        // As a gauge: the two `up` values averaged; as a count: summed.
        assert_eq!(
            gauge_reading("up", &answer).expect("reads"),
            Reading::Gauge(vec![p(1435781451.781, 0.5)])
        );
        assert_eq!(
            count_reading("up", &answer).expect("reads"),
            Reading::Count(1.0)
        );
    }

    #[test]
    fn documented_range_matrix() {
        let answer =
            parse_response(&fixture("prometheus-query-range-matrix.json")).expect("parses");
        let QueryResult::Matrix(series) = &answer.result else {
            panic!("expected a matrix");
        };
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0].labels.get("job").map(String::as_str),
            Some("prometheus")
        );
        assert_eq!(
            series[1].samples,
            vec![
                p(1435781430.781, 0.0),
                p(1435781445.781, 0.0),
                p(1435781460.781, 1.0)
            ]
        );
        // Averaged per timestamp across the two series: 0.5, 0.5, 1.0.
        assert_eq!(
            gauge_reading("up", &answer).expect("reads"),
            Reading::Gauge(vec![
                p(1435781430.781, 0.5),
                p(1435781445.781, 0.5),
                p(1435781460.781, 1.0)
            ])
        );
        assert!(matches!(
            count_reading("up", &answer),
            Err(SourceError::Unsupported { .. })
        ));
    }

    #[test]
    fn compact_vector_with_integer_timestamps() {
        let answer =
            parse_response(&fixture("prometheus-codec-vector-compact.json")).expect("parses");
        let QueryResult::Vector(v) = &answer.result else {
            panic!("expected a vector");
        };
        assert_eq!(v[0].labels, labels(&[("__name__", "foo")]));
        assert_eq!(v[0].sample, Some(p(1.0, 1.0)));
        assert_eq!(v[1].sample, Some(p(2.0, 2.0)));
        // Different timestamps are different points.
        assert_eq!(
            promql_reading("{__name__=~\"foo|bar\"}", &answer).expect("reads"),
            Reading::Gauge(vec![p(1.0, 1.0), p(2.0, 2.0)])
        );
    }

    #[test]
    fn special_float_values_in_bare_scalar_data() {
        let lines: Vec<String> = fixture("prometheus-codec-special-float-values.jsonl")
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(lines.len(), 3);
        let values: Vec<f64> = lines
            .iter()
            .map(|l| match parse_response(l).expect("parses").result {
                QueryResult::Scalar(point) => {
                    assert_eq!(point.at_seconds, 0.0);
                    point.value
                }
                other => panic!("expected a scalar, got {other:?}"),
            })
            .collect();
        assert!(values[0].is_nan());
        assert_eq!(values[1], f64::INFINITY);
        assert_eq!(values[2], f64::NEG_INFINITY);
        // A NaN scalar is no data; +Inf is a value.
        let nan = parse_response(&lines[0]).expect("parses");
        assert!(gauge_reading("0/0", &nan).expect("reads").is_no_data());
        let inf = parse_response(&lines[1]).expect("parses");
        assert_eq!(
            gauge_reading("1/0", &inf).expect("reads"),
            Reading::Gauge(vec![p(0.0, f64::INFINITY)])
        );
    }

    #[test]
    fn native_histogram_matrix_is_tolerated_then_refused() {
        let answer = parse_response(&fixture("prometheus-codec-matrix-native-histogram.json"))
            .expect("parses");
        let QueryResult::Matrix(series) = &answer.result else {
            panic!("expected a matrix");
        };
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].native_histograms, 1);
        assert!(series[0].samples.is_empty());
        for reading in [
            gauge_reading("foo", &answer),
            promql_reading("foo", &answer),
        ] {
            match reading {
                Err(SourceError::Unsupported { what }) => {
                    assert!(what.contains("native histograms"), "{what}")
                }
                other => panic!("expected unsupported, got {other:?}"),
            }
        }
        // The same inside an instant vector (`"histogram"` key).
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"1","sum":"1","buckets":[]}]}]}}"#;
        let answer = parse_response(vector).expect("parses");
        assert!(matches!(
            count_reading("foo", &answer),
            Err(SourceError::Unsupported { .. })
        ));
    }

    #[test]
    fn error_envelopes_become_api_errors() {
        match parse_response(&fixture("prometheus-error-timeout.json")) {
            Err(SourceError::Api {
                error_type,
                message,
            }) => {
                assert_eq!(error_type, "timeout");
                assert_eq!(message, "message");
            }
            other => panic!("expected an API error, got {other:?}"),
        }
        match parse_response(&fixture("prometheus-error-not-acceptable.json")) {
            Err(e @ SourceError::Api { .. }) => assert_eq!(
                e.to_string(),
                "Prometheus error not_acceptable: cannot encode response as application/default-format"
            ),
            other => panic!("expected an API error, got {other:?}"),
        }
        for garbage in [
            "",
            "<html>502</html>",
            r#"{"status":"weird"}"#,
            r#"{"status":"success"}"#,
            r#"{"status":"success","data":{"resultType":"tensor","result":[]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"one"]}]}}"#,
        ] {
            assert!(
                matches!(parse_response(garbage), Err(SourceError::Parse { .. })),
                "{garbage}"
            );
        }
    }

    #[test]
    fn empty_results_are_no_data_naming_the_query() {
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["PromQL info: metric might not be a counter"]}"#;
        let answer = parse_response(empty).expect("parses");
        let expr = r#"sum(increase(vllm:request_success_total{pod=~"x"}[1m]))"#;
        assert_eq!(
            count_reading(expr, &answer).expect("reads"),
            Reading::no_data(format!(
                "Prometheus returned no series for {expr} (warnings: PromQL info: metric might not be a counter)"
            ))
        );
        assert!(gauge_reading(expr, &answer).expect("reads").is_no_data());
        assert!(
            histogram_reading("f", expr, &answer, None)
                .expect("reads")
                .is_no_data()
        );
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(
            gauge_reading("x", &parse_response(matrix).expect("parses"))
                .expect("reads")
                .is_no_data()
        );
    }

    #[test]
    fn histogram_from_increase_buckets() {
        // What `sum by (le) (increase(x_bucket[1m]))` returns: fractional,
        // extrapolated counts, one slightly out of order (le=1 < le=0.5).
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"le":"0.1"},"value":[100,"10.2"]},
            {"metric":{"le":"0.5"},"value":[100,"60.1"]},
            {"metric":{"le":"1"},"value":[100,"60.0"]},
            {"metric":{"le":"+Inf"},"value":[100,"100"]}]}}"#;
        let buckets = parse_response(body).expect("parses");
        let sum = parse_response(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[100,"40.5"]}]}}"#)
            .expect("parses");
        let Reading::Distribution(d) =
            histogram_reading("x", "q", &buckets, Some(&sum)).expect("reads")
        else {
            panic!("expected a distribution");
        };
        // Counts: 10 ≤ 0.1, 50 in (0.1, 0.5], 0 in (0.5, 1] after the
        // monotone fix, 40 above 1 (placed at 1).
        assert_eq!(d.count(), 100);
        assert_eq!(d.sum(), 40.5);
        // Median: rank 50 is 40 into the 50 of (0.1, 0.5]: 0.1 + 0.4 * 0.8 = 0.42.
        let q = d.quantile(0.5).expect("not empty");
        assert!((q - 0.42).abs() / 0.42 < 0.02, "q={q}");
        // Free-form PromQL with `le` labels reads the same way.
        let Reading::Distribution(same) = promql_reading("q", &buckets).expect("reads") else {
            panic!("expected a distribution");
        };
        assert_eq!(same.count(), 100);
        let no_le = parse_response(&fixture("prometheus-query-vector.json")).expect("parses");
        assert!(matches!(
            histogram_reading("up", "q", &no_le, None),
            Err(SourceError::Parse { .. })
        ));
    }

    #[test]
    fn expressions_for_each_query_kind() {
        let selector =
            Selector::parse(r#"{pod=~"chat-canary-.*",namespace="llm"}"#).expect("valid");
        let (buckets, sum) = histogram_exprs(
            "vllm:time_to_first_token_seconds",
            &selector,
            Duration::from_secs(300),
        );
        assert_eq!(
            buckets,
            r#"sum by (le) (increase(vllm:time_to_first_token_seconds_bucket{pod=~"chat-canary-.*",namespace="llm"}[5m]))"#
        );
        assert_eq!(
            sum,
            r#"sum(increase(vllm:time_to_first_token_seconds_sum{pod=~"chat-canary-.*",namespace="llm"}[5m]))"#
        );
        assert_eq!(
            counter_expr(
                "dynamo_frontend_requests_total",
                &Selector::any().eq("status", "error"),
                Duration::from_secs(30)
            ),
            r#"sum(increase(dynamo_frontend_requests_total{status="error"}[30s]))"#
        );
        assert_eq!(
            gauge_expr("DCGM_FI_DEV_GPU_UTIL", &Selector::any()),
            "avg(DCGM_FI_DEV_GPU_UTIL)"
        );
        assert_eq!(promql_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(promql_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(promql_duration(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn base_urls_keep_their_path_prefix_and_lose_credentials() {
        let api = PrometheusApi::new("http://user:secret@host:9090/prometheus").expect("valid");
        assert_eq!(
            api.base.as_str(),
            "http://user:secret@host:9090/prometheus/"
        );
        assert_eq!(api.shown, "http://host:9090/prometheus/");
        assert_eq!(
            api.base.join("api/v1/query").expect("joins").path(),
            "/prometheus/api/v1/query"
        );
        assert!(matches!(
            PrometheusApi::new("prometheus:9090"),
            Err(SourceError::InvalidUrl { .. })
        ));
        assert!(matches!(
            PrometheusApi::new("ftp://host/"),
            Err(SourceError::InvalidUrl { .. })
        ));
    }
}
