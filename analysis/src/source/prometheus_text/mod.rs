//! [`PrometheusText`]: a `/metrics` scrape in the Prometheus text exposition
//! format (0.0.4), read with the `prometheus-parse` crate.
//!
//! # Why there is a pre-pass in front of `prometheus-parse`
//!
//! The crate does the format's bookkeeping well (`# TYPE` lines, grouping
//! `_bucket` lines into one histogram per label set in any order), but its
//! line regexes are narrower than the format, and it drops what it cannot read
//! *silently*:
//!
//! 1. metric names are matched with `\w+`, so **every name containing a colon
//!    is ignored** — all of `vllm:*` and `sglang:*`;
//! 2. labels are split naively on `,` and `=`, so a value containing either is
//!    cut or dropped, a `}` in a value ends the label set, and escaped quotes
//!    are mangled;
//! 3. `name{} 1` (empty braces) is ignored;
//! 4. a bad value, timestamp or `le` skips the line without an error.
//!
//! So [`PrometheusText::from_text`] first tokenizes every line itself (name,
//! labels with escapes, value, timestamp), reports malformed lines as
//! [`SourceError::Parse`] with their line number, and hands the crate a
//! rewritten text it cannot misread: colons in names become `ː` (U+02D0, a
//! "word" character that cannot occur in a valid name) and label values are
//! percent-encoded where they contain `%`, `,`, `=`, `}`, `"`, `\` or a
//! newline. Names and values are decoded again on the way out.
//!
//! Two more quirks are handled after parsing: a `# TYPE x counter` whose
//! samples are named `x_total` (OpenMetrics style) comes back untyped and is
//! re-typed as a counter; histogram `_sum` / `_count` lines come back as
//! separate untyped samples and are attached to their histogram series.
//!
//! The parts: `lexer` (the pre-pass), `families` (the typed series and
//! the delta between two scrapes), `query` (what a selector picks, per
//! kind). The public types are re-exported here.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_parse::{Scrape, Value as ParsedValue};

use super::{MetricSource, Query, Reading, SourceError, excerpt, http};

mod families;
mod lexer;
mod query;

pub use families::{BucketDelta, HistogramSeries, bucket_delta};
use families::{Series, Value, attach_sums_and_counts};
use lexer::{decode_name, decode_value, sanitize};

/// Largest `/metrics` body accepted (vLLM with many LoRA adapters is a few MB).
pub const MAX_SCRAPE_BYTES: usize = 32 << 20;

/// A parsed `/metrics` scrape. Parse once, then answer any number of queries.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusText {
    series: Vec<Series>,
    /// "the scrape" or "the scrape of `url`", for NoData reasons.
    origin: String,
    /// Series that went down since the earlier scrape (set by `delta_since`).
    resets: Vec<String>,
}

impl PrometheusText {
    /// Parses exposition text. Samples without a timestamp are dated 0 (see
    /// [`PrometheusText::from_text_at`] to date them).
    ///
    /// # Errors
    /// [`SourceError::Parse`] naming the first malformed line.
    pub fn from_text(text: &str) -> Result<Self, SourceError> {
        Self::from_text_at(text, 0.0)
    }

    /// Parses exposition text scraped at `at_seconds` (Unix time): samples
    /// without their own timestamp are dated then.
    ///
    /// # Errors
    /// [`SourceError::Parse`] naming the first malformed line.
    pub fn from_text_at(text: &str, at_seconds: f64) -> Result<Self, SourceError> {
        Self::parse(text, at_seconds, "the scrape".to_string())
    }

    fn parse(text: &str, at_seconds: f64, origin: String) -> Result<Self, SourceError> {
        let what = origin.clone();
        let (safe, counter_families) =
            sanitize(text).map_err(|(line, reason)| SourceError::Parse {
                what: what.clone(),
                line: Some(line),
                reason,
            })?;
        let at_millis = (at_seconds * 1000.0).round() as i64;
        let at = chrono::DateTime::from_timestamp_millis(at_millis).ok_or_else(|| {
            SourceError::Parse {
                what: what.clone(),
                line: None,
                reason: format!("scrape time {at_seconds} is out of range"),
            }
        })?;
        let scrape =
            Scrape::parse_at(safe.lines().map(|l| Ok(l.to_string())), at).map_err(|e| {
                SourceError::Parse {
                    what: what.clone(),
                    line: None,
                    reason: e.to_string(),
                }
            })?;
        let mut series: Vec<Series> = scrape
            .samples
            .into_iter()
            .map(|s| Series {
                name: decode_name(&s.metric),
                labels: s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), decode_value(v)))
                    .collect(),
                at_seconds: s.timestamp.timestamp_millis() as f64 / 1000.0,
                value: match s.value {
                    ParsedValue::Counter(v) => Value::Counter(v),
                    ParsedValue::Gauge(v) => Value::Gauge(v),
                    ParsedValue::Untyped(v) => Value::Untyped(v),
                    ParsedValue::Histogram(h) => Value::Histogram {
                        buckets: h.iter().map(|b| (b.less_than, b.count)).collect(),
                        sum: None,
                        count: None,
                    },
                    ParsedValue::Summary(q) => Value::Summary(q.len()),
                },
            })
            .collect();
        // OpenMetrics style: `# TYPE x counter` with samples `x_total`.
        for s in &mut series {
            if let Value::Untyped(v) = s.value
                && let Some(family) = s.name.strip_suffix("_total")
                && counter_families.contains(family)
            {
                s.value = Value::Counter(v);
            }
        }
        attach_sums_and_counts(&mut series);
        series.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.labels.cmp(&b.labels)));
        Ok(Self {
            series,
            origin,
            resets: Vec::new(),
        })
    }

    /// Scrapes `url` (GET, `Accept: text/plain;version=0.0.4`) and parses the
    /// body; samples are dated at the time of the scrape.
    ///
    /// # Errors
    /// [`SourceError::Unreachable`] (connection refused, DNS...),
    /// [`SourceError::Timeout`], [`SourceError::Http`] for a non-2xx status
    /// (with the start of the body), [`SourceError::Parse`].
    pub async fn scrape(url: &str, timeout: Duration) -> Result<Self, SourceError> {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| SourceError::Unreachable {
                url: url.to_string(),
                reason: format!("cannot build an HTTP client: {e}"),
            })?;
        Self::scrape_with(&client, url, timeout).await
    }

    /// [`PrometheusText::scrape`] with a caller's client (to reuse its
    /// connection pool across scrapes).
    ///
    /// # Errors
    /// As [`PrometheusText::scrape`].
    pub async fn scrape_with(
        client: &reqwest::Client,
        url: &str,
        timeout: Duration,
    ) -> Result<Self, SourceError> {
        let parsed = http::parse_url(url)?;
        let shown = http::display_url(&parsed);
        let (status, body) = http::get(
            client,
            parsed,
            &shown,
            timeout,
            "text/plain;version=0.0.4;q=1,*/*;q=0.1",
            MAX_SCRAPE_BYTES,
        )
        .await?;
        if !(200..300).contains(&status) {
            return Err(SourceError::Http {
                url: shown,
                status,
                body_excerpt: excerpt(&body, 200),
            });
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Self::parse(&body, now, format!("the scrape of {shown}"))
    }

    /// Number of exposition sample lines this scrape holds (buckets, `_sum`
    /// and `_count` lines included): lets tests prove nothing was dropped.
    pub fn sample_lines(&self) -> usize {
        self.series
            .iter()
            .map(|s| match &s.value {
                Value::Histogram {
                    buckets,
                    sum,
                    count,
                } => buckets.len() + usize::from(sum.is_some()) + usize::from(count.is_some()),
                Value::Summary(n) => *n,
                _ => 1,
            })
            .sum()
    }

    /// Distinct metric names (histograms by family), sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.series.iter().map(|s| s.name.as_str()).collect();
        names.dedup();
        names
    }

    /// Series that went down between the scrapes given to
    /// [`PrometheusText::delta_since`] (the source restarted), as
    /// `name{labels}`; empty for a plain scrape.
    pub fn resets(&self) -> &[String] {
        &self.resets
    }
}

impl MetricSource for PrometheusText {
    fn read(&self, query: &Query) -> impl Future<Output = Result<Reading, SourceError>> + Send {
        std::future::ready(self.read_now(query))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{dcgm, dynamo, sglang, trtllm, vllm};
    use crate::source::{GaugePoint, Selector};

    use crate::source::fixtures::{dir as fixtures_dir, read as fixture};

    fn parse(name: &str) -> PrometheusText {
        PrometheusText::from_text(&fixture(name)).expect("fixture parses")
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).expect("valid selector")
    }

    fn dist(text: &PrometheusText, family: &str, selector: &str) -> crate::Distribution {
        match text.read_now(&Query::histogram(family, sel(selector))) {
            Ok(Reading::Distribution(d)) => d,
            other => panic!("{family}{selector}: expected a distribution, got {other:?}"),
        }
    }

    fn count(text: &PrometheusText, family: &str, selector: &str) -> f64 {
        match text.read_now(&Query::counter(family, sel(selector))) {
            Ok(Reading::Count(c)) => c,
            other => panic!("{family}{selector}: expected a count, got {other:?}"),
        }
    }

    fn gauge(text: &PrometheusText, family: &str, selector: &str) -> Vec<GaugePoint> {
        match text.read_now(&Query::gauge(family, sel(selector))) {
            Ok(Reading::Gauge(points)) => points,
            other => panic!("{family}{selector}: expected gauge points, got {other:?}"),
        }
    }

    fn no_data(text: &PrometheusText, query: Query) -> String {
        match text.read_now(&query) {
            Ok(Reading::NoData { reason }) => reason,
            other => panic!("{query}: expected no data, got {other:?}"),
        }
    }

    fn close(actual: f64, expected: f64, rel: f64) -> bool {
        (actual - expected).abs() <= rel * expected.abs()
    }

    #[test]
    fn every_fixture_parses_without_dropping_a_sample_line() {
        let mut seen = 0;
        for entry in std::fs::read_dir(fixtures_dir()).expect("fixtures directory exists") {
            let path = entry.expect("readable entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("txt") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable fixture");
            let parsed = PrometheusText::from_text(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let sample_lines = text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .count();
            assert_eq!(
                parsed.sample_lines(),
                sample_lines,
                "{}: every sample line is accounted for",
                path.display()
            );
            seen += 1;
        }
        assert_eq!(seen, 7, "all seven exposition fixtures were read");
    }

    #[test]
    fn raw_prometheus_parse_drops_colon_names_which_is_why_we_pre_escape() {
        let text = fixture("vllm-metrics.txt");
        let raw = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
        assert_eq!(
            raw.samples.len(),
            0,
            "the crate alone ignores every vllm: line"
        );
        let ours = PrometheusText::from_text(&text).expect("parses");
        assert!(ours.names().contains(&vllm::TTFT));
    }

    #[test]
    fn vllm_ttft_itl_e2e_success_and_gauges() {
        let text = parse("vllm-metrics.txt");
        // TTFT: 1 request in (0.01, 0.02], 1 in (0.25, 0.5]; _count 2.0,
        // _sum 0.4143967628479004 (lines 208, 214, 228, 229).
        let ttft = dist(&text, vllm::TTFT, r#"{model_name="Qwen/Qwen3-0.6B"}"#);
        assert_eq!(ttft.count(), 2);
        assert_eq!(ttft.sum(), 0.4143967628479004);
        let p50 = ttft.quantile(0.5).expect("not empty");
        assert!(p50 > 0.01 && p50 <= 0.0202, "p50={p50}");
        let max = ttft.quantile(1.0).expect("not empty");
        assert!(max > 0.25 && max <= 0.505, "max={max}");
        // ITL: 597 gaps ≤ 0.01, 1 in (0.025, 0.05]; sum 3.1598554495722055.
        // histogram_quantile(0.5) = 0.01 * 299/597 = 0.005008.
        let itl = dist(&text, vllm::INTER_TOKEN, r#"{engine="0"}"#);
        assert_eq!(itl.count(), 598);
        assert_eq!(itl.sum(), 3.1598554495722055);
        assert!(close(itl.quantile(0.5).expect("not empty"), 0.005008, 0.02));
        // E2E: both requests in (1.5, 2.0]; sum 3.5736520290374756.
        let e2e = dist(&text, vllm::E2E, "{}");
        assert_eq!(e2e.count(), 2);
        let p50 = e2e.quantile(0.5).expect("not empty");
        assert!(p50 > 1.5 && p50 <= 2.0 * 1.01, "p50={p50}");
        // request_success_total: stop 0, length 2, abort 0, error 0.
        assert_eq!(count(&text, vllm::REQUEST_SUCCESS, "{}"), 2.0);
        assert_eq!(
            count(
                &text,
                vllm::REQUEST_SUCCESS,
                r#"{finished_reason="length"}"#
            ),
            2.0
        );
        assert_eq!(
            count(
                &text,
                vllm::REQUEST_SUCCESS,
                r#"{finished_reason=~"stop|abort"}"#
            ),
            0.0
        );
        // The family name without `_total` finds the same series, but not
        // the `_created` gauges next to it.
        assert_eq!(count(&text, "vllm:request_success", "{}"), 2.0);
        assert_eq!(
            gauge(&text, vllm::REQUESTS_WAITING, "{}"),
            vec![GaugePoint {
                at_seconds: 0.0,
                value: 0.0
            }]
        );
        assert_eq!(gauge(&text, vllm::KV_CACHE_USAGE, "{}")[0].value, 0.0);
        // The info gauge with 23 labels keeps them all.
        assert_eq!(
            gauge(
                &text,
                "vllm:cache_config_info",
                r#"{num_gpu_blocks="5943",swap_space="4.0"}"#
            )[0]
            .value,
            1.0
        );
        // `engine="1"` exists nowhere.
        let reason = no_data(&text, Query::histogram(vllm::TTFT, sel(r#"{engine="1"}"#)));
        assert_eq!(
            reason,
            r#"no series of vllm:time_to_first_token_seconds match {engine="1"} (1 series of vllm:time_to_first_token_seconds have other labels)"#
        );
    }

    #[test]
    fn sglang_sum_before_buckets_and_long_float_bounds() {
        let text = parse("sglang-metrics.txt");
        // `_sum` (line 180) precedes the buckets: 1 request in (1.0, 2.0],
        // sum 1.5573770999908447.
        let ttft = dist(&text, sglang::TTFT, "{}");
        assert_eq!(ttft.count(), 1);
        assert_eq!(ttft.sum(), 1.5573770999908447);
        let q = ttft.quantile(0.5).expect("not empty");
        assert!(q > 1.0 && q <= 2.0, "q={q}");
        // ITL: 57 ≤ 0.002, 242 in (0.002, 0.004]; count 299.
        // histogram_quantile(0.5) = 0.002 + 0.002 * (149.5 - 57) / 242 = 0.0027645
        let itl = dist(&text, sglang::INTER_TOKEN, "{}");
        assert_eq!(itl.count(), 299);
        assert!(close(
            itl.quantile(0.5).expect("not empty"),
            0.0027645,
            0.02
        ));
        assert_eq!(dist(&text, sglang::E2E, "{}").count(), 1);
        // Long float bounds survive exactly.
        let series = text.histogram_series(
            "sglang:per_stage_req_latency_seconds",
            &sel(r#"{stage="prefill_waiting",tp_rank="0"}"#),
        );
        assert_eq!(series.len(), 1);
        let bounds: Vec<f64> = series[0].buckets.iter().map(|b| b.0).collect();
        assert_eq!(bounds[1], 0.0016200000000000001);
        assert_eq!(bounds[4], 0.006887475360000002);
        assert_eq!(bounds.len(), 31, "30 finite bounds and +Inf");
        assert_eq!(series[0].sum, Some(0.00017487071454524994));
        assert_eq!(series[0].count, Some(1.0));
        // Bucket `le="0.0"` of the queue-time histogram.
        let queue = text.histogram_series("sglang:queue_time_seconds", &Selector::any());
        assert_eq!(queue[0].buckets[0], (0.0, 0.0));
        assert_eq!(
            count(&text, "sglang:realtime_tokens_total", r#"{mode="decode"}"#),
            300.0
        );
        assert_eq!(gauge(&text, "sglang:new_token_ratio", "{}")[0].value, 0.7);
    }

    #[test]
    fn sglang_docs_under_load_with_scientific_notation() {
        let text = parse("sglang-metrics-docs-loaded.txt");
        // 11008 TTFT observations; 2513 ≤ 30 s, the other 8495 in +Inf.
        let ttft = dist(
            &text,
            sglang::TTFT,
            r#"{model_name="meta-llama/Llama-3.1-8B-Instruct"}"#,
        );
        assert_eq!(ttft.count(), 11008);
        assert_eq!(ttft.sum(), 2.3518979474117756e6);
        // p10: rank 1100.8 lies between le=7.5 (941) and le=10 (1330):
        // 7.5 + 2.5 * (1100.8 - 941) / 389 = 8.527.
        assert!(close(ttft.quantile(0.1).expect("not empty"), 8.527, 0.015));
        // The median is in +Inf, reported at the last finite bound.
        assert!(close(ttft.quantile(0.5).expect("not empty"), 30.0, 0.01));
        // Counts in scientific notation: 7.400757e+06 observations.
        let tpot = dist(&text, "sglang:time_per_output_token_seconds", "{}");
        assert_eq!(tpot.count(), 7_400_757);
        assert_eq!(dist(&text, sglang::E2E, "{}").count(), 11228);
        assert_eq!(
            dist(
                &text,
                "sglang:func_latency_seconds",
                r#"{name="generate_request"}"#
            )
            .count(),
            14007
        );
        assert_eq!(count(&text, "sglang:prompt_tokens_total", "{}"), 8.128902e6);
        assert_eq!(gauge(&text, sglang::RUNNING_REQUESTS, "{}")[0].value, 162.0);
        assert_eq!(gauge(&text, sglang::QUEUE_REQUESTS, "{}")[0].value, 2826.0);
    }

    #[test]
    fn sglang_docs_single_request() {
        let text = parse("sglang-metrics-docs-single-request.txt");
        // One request with TTFT in (0.25, 0.5], sum 0.30457592010498047.
        let ttft = dist(&text, sglang::TTFT, "{}");
        assert_eq!(ttft.count(), 1);
        assert_eq!(ttft.sum(), 0.30457592010498047);
        let q = ttft.quantile(1.0).expect("not empty");
        assert!(q > 0.25 && q <= 0.5, "q={q}");
    }

    #[test]
    fn trtllm_ttft_e2e_and_success() {
        let text = parse("trtllm-metrics.txt");
        // TTFT: 1 in (0.02, 0.04], 1 in (0.04, 0.06]; sum 0.06795299984514713.
        let ttft = dist(&text, trtllm::TTFT, r#"{engine_type="trtllm"}"#);
        assert_eq!(ttft.count(), 2);
        assert_eq!(ttft.sum(), 0.06795299984514713);
        let p50 = ttft.quantile(0.5).expect("not empty");
        assert!(p50 > 0.02 && p50 <= 0.0404, "p50={p50}");
        let max = ttft.quantile(1.0).expect("not empty");
        assert!(max > 0.04 && max <= 0.0606, "max={max}");
        // E2E: both in (0.8, 1.0]; sum 1.7300310004502535.
        let e2e = dist(&text, trtllm::E2E, "{}");
        assert_eq!(e2e.count(), 2);
        assert_eq!(e2e.sum(), 1.7300310004502535);
        assert_eq!(
            count(
                &text,
                trtllm::REQUEST_SUCCESS,
                r#"{finished_reason="length"}"#
            ),
            2.0
        );
        // The Dynamo runtime part of the same file: integer counts, le="1".
        assert!(
            text.names()
                .contains(&"dynamo_component_request_duration_seconds")
        );
    }

    #[test]
    fn dynamo_le_zero_and_requests_by_status() {
        let text = parse("dynamo-frontend-metrics.txt");
        // TTFT buckets start at le="0"; 1 request in (1, 2.2]; sum 1.5625701570000001.
        let series = text.histogram_series(dynamo::TTFT, &Selector::any());
        assert_eq!(series[0].buckets[0], (0.0, 0.0));
        let ttft = dist(&text, dynamo::TTFT, r#"{model="qwen/qwen3-0.6b"}"#);
        assert_eq!(ttft.count(), 1);
        assert_eq!(ttft.sum(), 1.5625701570000001);
        let q = ttft.quantile(0.5).expect("not empty");
        assert!(q > 1.0 && q <= 2.2, "q={q}");
        // ITL: 21 ≤ 0.0019, 277 in (0.0019, 0.0035], 1 above; count 299.
        // histogram_quantile(0.5) = 0.0019 + 0.0016 * (149.5 - 21) / 277 = 0.0026422
        let itl = dist(&text, dynamo::INTER_TOKEN, "{}");
        assert_eq!(itl.count(), 299);
        assert!(close(
            itl.quantile(0.5).expect("not empty"),
            0.0026422,
            0.02
        ));
        assert_eq!(dist(&text, dynamo::REQUEST_DURATION, "{}").count(), 1);
        // requests_total per status: success 1; no error series at all.
        assert_eq!(count(&text, dynamo::REQUESTS, r#"{status="success"}"#), 1.0);
        let reason = no_data(
            &text,
            Query::counter(dynamo::REQUESTS, sel(r#"{status!="success"}"#)),
        );
        assert!(reason.contains(r#"{status!="success"}"#), "{reason}");
        // The model label is lower-cased on request metrics only.
        assert!(
            no_data(
                &text,
                Query::histogram(dynamo::TTFT, sel(r#"{model="Qwen/Qwen3-0.6B"}"#))
            )
            .contains("no series")
        );
        assert_eq!(
            gauge(
                &text,
                "dynamo_frontend_model_total_kv_blocks",
                r#"{model="Qwen/Qwen3-0.6B"}"#
            )[0]
            .value,
            92962.0
        );
        assert_eq!(
            gauge(&text, "dynamo_frontend_disconnected_clients", "{}")[0].value,
            0.0
        );
    }

    #[test]
    fn dcgm_gauges_by_pod_namespace_and_hostname() {
        let text = parse("dcgm-exporter-k8s.txt");
        let pod = r#"{pod="cuda-75454ffb9f-8ljq7",namespace="default"}"#;
        assert_eq!(gauge(&text, dcgm::GPU_UTIL, pod)[0].value, 0.0);
        assert_eq!(gauge(&text, dcgm::GR_ENGINE_ACTIVE, pod)[0].value, 0.004656);
        assert_eq!(gauge(&text, dcgm::FB_USED, pod)[0].value, 1.0);
        assert_eq!(
            gauge(&text, dcgm::POWER_USAGE, r#"{pod=~"cuda-.*"}"#)[0].value,
            40.979
        );
        // The fixture spells the node label `Hostname`.
        let host = r#"{Hostname="lke529760-766837-0a634ab30000"}"#;
        assert_eq!(gauge(&text, dcgm::GPU_UTIL, host)[0].value, 0.0);
        let series = text.histogram_series(dcgm::GPU_UTIL, &Selector::any());
        assert!(series.is_empty(), "a gauge is not a histogram");
        let lower = r#"{hostname="lke529760-766837-0a634ab30000"}"#;
        assert!(no_data(&text, Query::gauge(dcgm::GPU_UTIL, sel(lower))).contains("no series"));
        // The same scrape with the other spelling answers the other selector.
        let relabelled = PrometheusText::from_text(
            &fixture("dcgm-exporter-k8s.txt").replace("Hostname=", "hostname="),
        )
        .expect("parses");
        assert_eq!(gauge(&relabelled, dcgm::GPU_UTIL, lower)[0].value, 0.0);
        // Empty label values and values with spaces survive.
        assert_eq!(
            gauge(
                &text,
                "DCGM_FI_DEV_XID_ERRORS",
                r#"{pod_uid="",err_msg="No Error"}"#
            )[0]
            .value,
            0.0
        );
        // A counter read as a counter.
        assert_eq!(
            count(&text, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", pod),
            455497156.0
        );
        // Nothing in another namespace.
        let reason = no_data(
            &text,
            Query::gauge(dcgm::GPU_UTIL, sel(r#"{namespace="llm"}"#)),
        );
        assert_eq!(
            reason,
            r#"no series of DCGM_FI_DEV_GPU_UTIL match {namespace="llm"} (1 series of DCGM_FI_DEV_GPU_UTIL have other labels)"#
        );
        let reason = no_data(
            &text,
            Query::gauge("DCGM_FI_DEV_NOT_THERE", Selector::any()),
        );
        assert_eq!(
            reason,
            "the scrape has no gauge named DCGM_FI_DEV_NOT_THERE"
        );
    }

    #[test]
    fn label_values_with_commas_equals_braces_and_escapes() {
        // Synthetic (no fixture has such values): what the naive splitting
        // in prometheus-parse gets wrong.
        let text = r#"# TYPE weird_total counter
weird_total{path="/v1/chat,completions",query="a=b"} 3
weird_total{note="say \"hi\", {ok}",nl="x\ny",pct="100%"} 4
weird_total{path="/v1/embeddings"} 5
"#;
        let raw = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
        assert_eq!(
            raw.samples.len(),
            2,
            "the crate drops the line with a brace in a value"
        );
        let first = raw
            .samples
            .iter()
            .find(|s| s.value == ParsedValue::Counter(3.0))
            .expect("the crate keeps the first line");
        assert_eq!(
            first.labels.get("path"),
            Some("/v1/chat"),
            "the crate cuts at the comma"
        );
        assert_eq!(
            first.labels.get("query"),
            None,
            "and drops a value with '='"
        );

        let ours = PrometheusText::from_text(text).expect("parses");
        let first = Selector::any()
            .eq("path", "/v1/chat,completions")
            .eq("query", "a=b");
        assert_eq!(
            ours.read_now(&Query::counter("weird_total", first))
                .expect("reads"),
            Reading::Count(3.0)
        );
        let second = Selector::any()
            .eq("note", "say \"hi\", {ok}")
            .eq("nl", "x\ny")
            .eq("pct", "100%");
        assert_eq!(
            ours.read_now(&Query::counter("weird_total", second))
                .expect("reads"),
            Reading::Count(4.0)
        );
        assert_eq!(count(&ours, "weird_total", "{}"), 12.0);
    }

    #[test]
    fn openmetrics_style_counters_and_untyped_histograms() {
        // `# TYPE x counter` with samples `x_total` comes back untyped from
        // the crate; a histogram without a TYPE line is plain `_bucket` lines.
        let text = "# TYPE reqs counter
reqs_total{code=\"200\"} 10
reqs_total{code=\"500\"} 2
reqs_created{code=\"200\"} 1.7e9
lat_bucket{le=\"0.1\"} 1
lat_bucket{le=\"1\"} 3
lat_bucket{le=\"+Inf\"} 4
lat_sum 2.5
lat_count 4
";
        let parsed = PrometheusText::from_text(text).expect("parses");
        assert_eq!(count(&parsed, "reqs", "{}"), 12.0);
        assert_eq!(count(&parsed, "reqs_total", r#"{code="500"}"#), 2.0);
        let lat = dist(&parsed, "lat", "{}");
        assert_eq!(lat.count(), 4);
        assert_eq!(lat.sum(), 2.5);
    }

    #[test]
    fn malformed_lines_are_errors_with_line_numbers() {
        let cases = [
            ("ok 1\nbad{le=\"x\"} 1\n", 2, "le"),
            ("# HELP a b\na{x=\"1\" 1\n", 2, "expected ','"),
            ("a{x=\"1} 1\n", 1, "unterminated"),
            ("a 1 notatime\n", 1, "timestamp"),
            ("a one\n", 1, "not a number"),
            ("a{x=\"1\",x=\"2\"} 1\n", 1, "twice"),
            ("9a 1\n", 1, "metric name"),
            ("a{}\n", 1, "missing sample value"),
            (
                "# TYPE h histogram\nh_bucket{x=\"1\"} 1\n",
                2,
                "no le label",
            ),
        ];
        for (text, line, fragment) in cases {
            match PrometheusText::from_text(text) {
                Err(SourceError::Parse {
                    line: Some(l),
                    reason,
                    ..
                }) => {
                    assert_eq!(l, line, "{text:?}");
                    assert!(reason.contains(fragment), "{text:?}: {reason}");
                }
                other => panic!("{text:?}: expected a parse error, got {other:?}"),
            }
        }
        // Empty braces, explicit timestamps, NaN and ±Inf values are fine.
        let ok = PrometheusText::from_text("a{} 1 1500000000000\nb NaN\nc +Inf\nd -Inf\n")
            .expect("parses");
        assert_eq!(
            gauge(&ok, "a", "{}"),
            vec![GaugePoint {
                at_seconds: 1.5e9,
                value: 1.0
            }]
        );
        assert!(matches!(
            ok.read_now(&Query::gauge("b", Selector::any())),
            Ok(Reading::NoData { .. })
        ));
        assert_eq!(gauge(&ok, "c", "{}")[0].value, f64::INFINITY);
    }

    #[test]
    fn wrong_kinds_and_promql_are_errors_not_no_data() {
        let text = parse("vllm-metrics.txt");
        assert!(matches!(
            text.read_now(&Query::histogram(vllm::REQUESTS_WAITING, Selector::any())),
            Err(SourceError::WrongType {
                expected: "histogram",
                found: "gauge",
                ..
            })
        ));
        assert!(matches!(
            text.read_now(&Query::counter(vllm::KV_CACHE_USAGE, Selector::any())),
            Err(SourceError::WrongType {
                expected: "counter",
                found: "gauge",
                ..
            })
        ));
        assert!(matches!(
            text.read_now(&Query::gauge(vllm::TTFT, Selector::any())),
            Err(SourceError::WrongType {
                expected: "gauge",
                found: "histogram",
                ..
            })
        ));
        assert!(matches!(
            text.read_now(&Query::promql("up")),
            Err(SourceError::Unsupported { .. })
        ));
        // V0-era names are absent from a V1 scrape: no data, not an error.
        let reason = no_data(
            &text,
            Query::gauge("vllm:gpu_cache_usage_perc", Selector::any()),
        );
        assert_eq!(
            reason,
            "the scrape has no gauge named vllm:gpu_cache_usage_perc"
        );
    }

    #[test]
    fn delta_between_two_scrapes_is_per_series() {
        // Two pods; between the scrapes pod a served 3 more requests and
        // pod b restarted and served 1.
        let earlier = "# TYPE ttft histogram
ttft_bucket{pod=\"a\",le=\"0.1\"} 5
ttft_bucket{pod=\"a\",le=\"1\"} 9
ttft_bucket{pod=\"a\",le=\"+Inf\"} 10
ttft_sum{pod=\"a\"} 3.0
ttft_count{pod=\"a\"} 10
ttft_bucket{pod=\"b\",le=\"0.1\"} 7
ttft_bucket{pod=\"b\",le=\"1\"} 7
ttft_bucket{pod=\"b\",le=\"+Inf\"} 7
ttft_sum{pod=\"b\"} 0.5
ttft_count{pod=\"b\"} 7
# TYPE errors_total counter
errors_total{pod=\"a\"} 4
errors_total{pod=\"b\"} 9
# TYPE util gauge
util{pod=\"a\"} 50
";
        let later = "# TYPE ttft histogram
ttft_bucket{pod=\"a\",le=\"0.1\"} 6
ttft_bucket{pod=\"a\",le=\"1\"} 12
ttft_bucket{pod=\"a\",le=\"+Inf\"} 13
ttft_sum{pod=\"a\"} 5.0
ttft_count{pod=\"a\"} 13
ttft_bucket{pod=\"b\",le=\"0.1\"} 0
ttft_bucket{pod=\"b\",le=\"1\"} 1
ttft_bucket{pod=\"b\",le=\"+Inf\"} 1
ttft_sum{pod=\"b\"} 0.4
ttft_count{pod=\"b\"} 1
# TYPE errors_total counter
errors_total{pod=\"a\"} 6
errors_total{pod=\"b\"} 1
# TYPE util gauge
util{pod=\"a\"} 70
";
        let a = PrometheusText::from_text_at(earlier, 100.0).expect("parses");
        let b = PrometheusText::from_text_at(later, 130.0).expect("parses");
        let delta = b.delta_since(&a);
        let d = dist(&delta, "ttft", "{}");
        assert_eq!(d.count(), 3 + 1);
        assert!((d.sum() - (2.0 + 0.4)).abs() < 1e-12);
        assert_eq!(dist(&delta, "ttft", r#"{pod="a"}"#).count(), 3);
        assert_eq!(count(&delta, "errors_total", "{}"), 2.0 + 1.0);
        assert_eq!(
            gauge(&delta, "util", "{}"),
            vec![GaugePoint {
                at_seconds: 130.0,
                value: 70.0
            }]
        );
        assert_eq!(
            delta.resets(),
            [
                r#"errors_total{pod="b"}"#.to_string(),
                r#"ttft{pod="b"}"#.to_string()
            ]
        );
        // The same scrape twice: nothing happened.
        let none = b.delta_since(&b);
        assert_eq!(dist(&none, "ttft", "{}").count(), 0);
        assert!(none.resets().is_empty());
    }

    #[test]
    fn names_module_matches_the_fixtures() {
        let cases: [(&str, &[&str]); 6] = [
            (
                "vllm-metrics.txt",
                &[
                    vllm::TTFT,
                    vllm::INTER_TOKEN,
                    vllm::E2E,
                    vllm::REQUESTS_WAITING,
                    vllm::REQUESTS_RUNNING,
                    vllm::KV_CACHE_USAGE,
                    vllm::REQUEST_SUCCESS,
                ],
            ),
            (
                "sglang-metrics.txt",
                &[
                    sglang::TTFT,
                    sglang::INTER_TOKEN,
                    sglang::E2E,
                    sglang::QUEUE_REQUESTS,
                    sglang::RUNNING_REQUESTS,
                ],
            ),
            (
                "trtllm-metrics.txt",
                &[trtllm::TTFT, trtllm::E2E, trtllm::REQUEST_SUCCESS],
            ),
            (
                "dynamo-frontend-metrics.txt",
                &[
                    dynamo::TTFT,
                    dynamo::INTER_TOKEN,
                    dynamo::REQUEST_DURATION,
                    dynamo::REQUESTS,
                ],
            ),
            (
                "dcgm-exporter-k8s.txt",
                &[
                    dcgm::GPU_UTIL,
                    dcgm::GR_ENGINE_ACTIVE,
                    dcgm::FB_USED,
                    dcgm::POWER_USAGE,
                ],
            ),
            (
                "sglang-metrics-docs-loaded.txt",
                &[sglang::TTFT, sglang::E2E],
            ),
        ];
        for (file, names) in cases {
            let text = parse(file);
            for name in names {
                assert!(text.names().contains(name), "{file} has {name}");
            }
        }
    }
}
