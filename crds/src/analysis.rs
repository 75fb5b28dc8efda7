//! `spec.analysis`: how the cohorts are compared, metric by metric, and
//! where each metric's values come from (the proxy, Prometheus, a scrape).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::string_or_object;

/// How the cohorts are compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisSpec {
    /// How often a verdict is taken, e.g. `30s`.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Samples right after a weight or replica change are ignored for this
    /// long, e.g. `60s`.
    #[serde(default = "default_warmup")]
    pub warmup: String,
    /// Requests each canary replica must have served since the change
    /// before evidence counts, as well as `warmup` (whichever ends later):
    /// a new replica is cold (allocators, caches, compiled graphs) for its
    /// first requests however long they take to arrive. `0` leaves the
    /// warm-up to time alone.
    #[serde(default = "default_warmup_requests")]
    #[schemars(range(min = 0, max = 100_000))]
    pub warmup_requests: i64,
    /// Probability that no verdict of the run is wrong, above 0.5 and
    /// below 1.
    #[serde(default = "default_confidence")]
    #[schemars(extend("minimum" = 0.5, "exclusiveMinimum" = true, "maximum" = 1.0, "exclusiveMaximum" = true))]
    pub confidence: f64,
    /// Requests per cohort before latency and error effects are judged.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Largest difference in per-replica request rate between the cohorts
    /// under which they are judged, e.g. `20%`.
    #[serde(default = "default_max_load_imbalance")]
    pub max_load_imbalance: String,
    /// What happens when an analysis reaches `maxDuration` undecided.
    #[serde(default)]
    pub on_inconclusive: OnInconclusive,
    /// The metrics compared.
    pub metrics: Vec<MetricSpec>,
}

fn default_interval() -> String {
    "30s".into()
}

fn default_warmup() -> String {
    "60s".into()
}

/// Tens of requests carry a new replica's cold costs (a llama.cpp server's
/// first requests are slower by half; 20 were enough to warm it); 50 leaves
/// a margin and stays a quarter of the default `minSamples`.
pub const DEFAULT_WARMUP_REQUESTS: i64 = 50;

fn default_warmup_requests() -> i64 {
    DEFAULT_WARMUP_REQUESTS
}

fn default_confidence() -> f64 {
    0.95
}

fn default_min_samples() -> u64 {
    200
}

fn default_max_load_imbalance() -> String {
    "20%".into()
}

/// What an undecided analysis leads to at its `maxDuration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnInconclusive {
    /// Abort: traffic back to stable.
    #[default]
    Abort,
    /// Continue to the next step as if promoted.
    Promote,
    /// Pause until a person promotes or aborts.
    Pause,
}

/// One compared metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.maxChange) ? !has(self.maxIncrease) && !has(self.maxDecrease) : has(self.maxIncrease) || has(self.maxDecrease)",
    "message": "give the margin as maxIncrease, maxDecrease (or both), or maxChange (either way), e.g. maxIncrease: 10%",
}]))]
pub struct MetricSpec {
    /// Name shown in verdicts, e.g. `ttft`.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The kind of signal.
    pub kind: MetricKind,
    /// Where the values come from: `proxy` (the default; latency and
    /// error rates), or `{prometheus: {...}}` / `{scrape: {...}}` (gauges).
    #[serde(default)]
    pub source: MetricSource,
    /// Latency from the proxy: which one (default `ttft`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
    /// Latency: quantiles compared besides the shift, e.g. `[0.5, 0.95]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 0, max = 1)))]
    pub quantiles: Vec<f64>,
    /// How much higher the canary may be: `10%` (relative) or `0.5pp`
    /// (percentage points, error rates and shares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<String>,
    /// How much lower the canary may be, for metrics where lower is worse
    /// (`decodeSpeed`): `15%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_decrease: Option<String>,
    /// How far the canary may move either way (`outputTokens`: an adapter
    /// that rambles or one that truncates): `20%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_change: Option<String>,
    /// Error rate: abort as soon as the canary's own rate is shown above
    /// this, e.g. `5%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_limit: Option<String>,
    /// Gauge: divide each interval's value by the cohort's throughput
    /// (utilization per request served).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_request: bool,
}

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MetricKind {
    /// A latency distribution.
    Latency,
    /// A proportion of failed requests.
    ErrorRate,
    /// A per-interval gauge (GPU utilization).
    Gauge,
    /// Output tokens per answer (the server's `usage`, else the stream's
    /// token events), from the proxy; usually `maxChange`.
    OutputTokens,
    /// Decode speed, tokens per second after the first token, from the
    /// proxy; `maxDecrease`.
    DecodeSpeed,
    /// The share of answers cut at the token limit
    /// (`finish_reason: "length"`), from the proxy; `maxIncrease` in `pp`.
    TruncationRate,
    /// The share of answers with no output token, from the proxy;
    /// `maxIncrease` in `pp`.
    EmptyRate,
}

/// Which latency the proxy measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Signal {
    /// Time to first token.
    Ttft,
    /// Gaps between streamed events.
    Itl,
    /// Whole request duration.
    Duration,
}

/// Where a metric's values come from: `proxy`, `{prometheus: {...}}` or
/// `{scrape: {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = string_or_object)]
pub enum MetricSource {
    /// The weir proxy's own per-request measurements.
    #[default]
    Proxy,
    /// A PromQL query; `$pods` and `$cohort` are replaced per cohort.
    Prometheus(PrometheusSource),
    /// A gauge scraped from each cohort's Prometheus text endpoint (local
    /// mode: `backends.*.metrics`; Kubernetes: the cohort's pods on `port`).
    Scrape(ScrapeSource),
}

/// A Prometheus query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusSource {
    /// e.g. `http://prometheus:9090`.
    pub address: String,
    /// e.g. `avg(DCGM_FI_DEV_GPU_UTIL{pod=~"$pods"})`.
    pub query: String,
}

/// A directly scraped gauge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScrapeSource {
    /// Kubernetes mode: the metrics port (DCGM exporter: 9400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The metric, e.g. `DCGM_FI_DEV_GPU_UTIL`; series are averaged.
    pub metric: String,
    /// Kubernetes mode: a label selector of the DCGM exporter pods (the
    /// GPU Operator's DaemonSet, e.g. `app=nvidia-dcgm-exporter`). The
    /// exporters on the nodes running a cohort's pods are scraped and only
    /// the series whose `pod` and `namespace` labels name those pods count.
    /// Without it, the cohort's own pods are scraped on `port` (a sidecar
    /// exporter, or the frontend's own `/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<String>,
}
