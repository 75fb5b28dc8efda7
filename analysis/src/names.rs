//! Metric names the analysis reads, in one place.
//!
//! Inference servers name the same signal differently (`vllm:` prefixes with
//! a colon, `trtllm_` with an underscore, Dynamo's frontend its own way), and
//! a typo in a family name does not fail: it silently reads "no data". So every
//! name lives here once, checked by a test against the real scrapes in
//! `shared/fixtures/`, and callers ask for "vLLM TTFT" through
//! [`histogram_name`] instead of spelling strings.
//!
//! Names are the exposition names: histogram *families* (without `_bucket`,
//! `_sum`, `_count`) and counter *samples* (with their `_total`).

/// vLLM (V1 engine) metrics. Labels: `model_name`, `engine`; the success
/// counter also has `finished_reason`.
pub mod vllm {
    /// Histogram: time to first token, seconds.
    pub const TTFT: &str = "vllm:time_to_first_token_seconds";
    /// Histogram: time between consecutive output tokens, seconds.
    pub const INTER_TOKEN: &str = "vllm:inter_token_latency_seconds";
    /// Histogram: end-to-end request latency, seconds.
    pub const E2E: &str = "vllm:e2e_request_latency_seconds";
    /// Gauge: requests waiting to be scheduled.
    pub const REQUESTS_WAITING: &str = "vllm:num_requests_waiting";
    /// Gauge: requests being processed.
    pub const REQUESTS_RUNNING: &str = "vllm:num_requests_running";
    /// Gauge: KV-cache usage, 0..=1 (V1 name; V0 called it `gpu_cache_usage_perc`).
    pub const KV_CACHE_USAGE: &str = "vllm:kv_cache_usage_perc";
    /// Counter: finished requests, labelled by `finished_reason`
    /// (`stop`, `length`, `abort`, `error`).
    pub const REQUEST_SUCCESS: &str = "vllm:request_success_total";
    /// Label on [`REQUEST_SUCCESS`] saying why a request finished.
    pub const FINISHED_REASON_LABEL: &str = "finished_reason";
}

/// SGLang metrics. Labels: `model_name` (recent versions add `engine_type`,
/// `tp_rank`, `pp_rank`, `moe_ep_rank`).
pub mod sglang {
    /// Histogram: time to first token, seconds.
    pub const TTFT: &str = "sglang:time_to_first_token_seconds";
    /// Histogram: time between consecutive output tokens, seconds.
    pub const INTER_TOKEN: &str = "sglang:inter_token_latency_seconds";
    /// Histogram: end-to-end request latency, seconds.
    pub const E2E: &str = "sglang:e2e_request_latency_seconds";
    /// Gauge: requests waiting in the queue.
    pub const QUEUE_REQUESTS: &str = "sglang:num_queue_reqs";
    /// Gauge: requests running.
    pub const RUNNING_REQUESTS: &str = "sglang:num_running_reqs";
}

/// TensorRT-LLM metrics (as exported by a Dynamo TensorRT-LLM worker).
/// Labels: `engine_type="trtllm"`, `model_name`.
pub mod trtllm {
    /// Histogram: time to first token, seconds.
    pub const TTFT: &str = "trtllm_time_to_first_token_seconds";
    /// Histogram: end-to-end request latency, seconds.
    pub const E2E: &str = "trtllm_e2e_request_latency_seconds";
    /// Counter: finished requests, labelled by `finished_reason`.
    pub const REQUEST_SUCCESS: &str = "trtllm_request_success_total";
}

/// NVIDIA Dynamo HTTP frontend metrics. Label: `model` (lower-cased on the
/// request metrics).
pub mod dynamo {
    /// Histogram: time to first token, seconds.
    pub const TTFT: &str = "dynamo_frontend_time_to_first_token_seconds";
    /// Histogram: time between consecutive output tokens, seconds.
    pub const INTER_TOKEN: &str = "dynamo_frontend_inter_token_latency_seconds";
    /// Histogram: whole request duration, seconds.
    pub const REQUEST_DURATION: &str = "dynamo_frontend_request_duration_seconds";
    /// Counter: requests, labelled by [`STATUS_LABEL`].
    pub const REQUESTS: &str = "dynamo_frontend_requests_total";
    /// Label on [`REQUESTS`]: `success` or an error kind.
    pub const STATUS_LABEL: &str = "status";
    /// Value of [`STATUS_LABEL`] for a request that succeeded.
    pub const STATUS_SUCCESS: &str = "success";
}

/// NVIDIA dcgm-exporter fields. On Kubernetes, series carry `pod`,
/// `namespace` and `container` of the workload using the GPU.
pub mod dcgm {
    /// Gauge: GPU utilization, percent (0..=100).
    pub const GPU_UTIL: &str = "DCGM_FI_DEV_GPU_UTIL";
    /// Gauge: graphics engine active ratio (0..=1), a profiling field that
    /// tracks real work better than `GPU_UTIL`.
    pub const GR_ENGINE_ACTIVE: &str = "DCGM_FI_PROF_GR_ENGINE_ACTIVE";
    /// Gauge: framebuffer memory used, MiB.
    pub const FB_USED: &str = "DCGM_FI_DEV_FB_USED";
    /// Gauge: power draw, watts.
    pub const POWER_USAGE: &str = "DCGM_FI_DEV_POWER_USAGE";
    /// Label: the Kubernetes pod using the GPU.
    pub const POD_LABEL: &str = "pod";
    /// Label: the namespace of [`POD_LABEL`].
    pub const NAMESPACE_LABEL: &str = "namespace";
    /// The node name label, in both spellings seen in the wild: dcgm-exporter
    /// writes `Hostname`; relabelled Prometheus setups often carry
    /// `hostname`. Selectors match label names exactly, so callers that
    /// select by node must pick the spelling their series use (see
    /// [`hostname_label`]).
    pub const HOSTNAME_LABELS: [&str; 2] = ["Hostname", "hostname"];

    /// The node-name label present in `labels`, preferring dcgm-exporter's
    /// own `Hostname`; `None` when neither spelling is present.
    pub fn hostname_label<'a, I>(labels: I) -> Option<&'static str>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let present: Vec<&str> = labels.into_iter().collect();
        HOSTNAME_LABELS
            .into_iter()
            .find(|name| present.contains(name))
    }
}

/// weir's own proxy metrics (DESIGN.md, "Metric names"). The proxy crate
/// defines what it exports; these are the names the analysis reads back.
pub mod weir_proxy {
    /// Counter: requests, labelled `route`, `cohort`, `outcome`.
    pub const REQUESTS: &str = "weir_proxy_requests_total";
    /// Histogram: time to first token, seconds; labelled `route`, `cohort`.
    pub const TTFT: &str = "weir_proxy_ttft_seconds";
    /// Histogram: gaps between SSE events, seconds.
    pub const INTER_TOKEN: &str = "weir_proxy_inter_token_seconds";
    /// Histogram: whole request duration, seconds.
    pub const REQUEST_DURATION: &str = "weir_proxy_request_duration_seconds";
    /// Counter: output tokens.
    pub const OUTPUT_TOKENS: &str = "weir_proxy_output_tokens_total";
    /// Gauge: requests in flight.
    pub const INFLIGHT_REQUESTS: &str = "weir_proxy_inflight_requests";
    /// Gauge: the weight the proxy applies, per `route` and `cohort`.
    pub const ROUTE_WEIGHT: &str = "weir_proxy_route_weight";
    /// Label: route name.
    pub const ROUTE_LABEL: &str = "route";
    /// Label: `stable` or `canary`.
    pub const COHORT_LABEL: &str = "cohort";
    /// Label: request outcome (`ok`, `server_error`, ...).
    pub const OUTCOME_LABEL: &str = "outcome";
}

/// An inference server whose own metrics the analysis can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Server {
    /// vLLM (V1 engine metric names).
    Vllm,
    /// SGLang.
    Sglang,
    /// TensorRT-LLM (as exported through Dynamo).
    TensorRtLlm,
    /// The NVIDIA Dynamo HTTP frontend.
    Dynamo,
}

/// A latency signal measured per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Time to first token.
    Ttft,
    /// Time between consecutive tokens.
    InterToken,
    /// Whole request, first byte in to last byte out.
    EndToEnd,
}

impl Server {
    /// Every server, for tables and tests.
    pub const ALL: [Server; 4] = [
        Server::Vllm,
        Server::Sglang,
        Server::TensorRtLlm,
        Server::Dynamo,
    ];
}

impl Signal {
    /// Every signal, for tables and tests.
    pub const ALL: [Signal; 3] = [Signal::Ttft, Signal::InterToken, Signal::EndToEnd];
}

/// The histogram family a server exports for a signal, `None` when it
/// exports none (TensorRT-LLM has no inter-token histogram, only
/// `time_per_output_token`, which is a per-request average, not a gap).
pub fn histogram_name(server: Server, signal: Signal) -> Option<&'static str> {
    match (server, signal) {
        (Server::Vllm, Signal::Ttft) => Some(vllm::TTFT),
        (Server::Vllm, Signal::InterToken) => Some(vllm::INTER_TOKEN),
        (Server::Vllm, Signal::EndToEnd) => Some(vllm::E2E),
        (Server::Sglang, Signal::Ttft) => Some(sglang::TTFT),
        (Server::Sglang, Signal::InterToken) => Some(sglang::INTER_TOKEN),
        (Server::Sglang, Signal::EndToEnd) => Some(sglang::E2E),
        (Server::TensorRtLlm, Signal::Ttft) => Some(trtllm::TTFT),
        (Server::TensorRtLlm, Signal::InterToken) => None,
        (Server::TensorRtLlm, Signal::EndToEnd) => Some(trtllm::E2E),
        (Server::Dynamo, Signal::Ttft) => Some(dynamo::TTFT),
        (Server::Dynamo, Signal::InterToken) => Some(dynamo::INTER_TOKEN),
        (Server::Dynamo, Signal::EndToEnd) => Some(dynamo::REQUEST_DURATION),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_signal_pair_has_the_documented_name() {
        let table = [
            (
                Server::Vllm,
                Signal::Ttft,
                Some("vllm:time_to_first_token_seconds"),
            ),
            (
                Server::Vllm,
                Signal::InterToken,
                Some("vllm:inter_token_latency_seconds"),
            ),
            (
                Server::Vllm,
                Signal::EndToEnd,
                Some("vllm:e2e_request_latency_seconds"),
            ),
            (
                Server::Sglang,
                Signal::Ttft,
                Some("sglang:time_to_first_token_seconds"),
            ),
            (
                Server::Sglang,
                Signal::InterToken,
                Some("sglang:inter_token_latency_seconds"),
            ),
            (
                Server::Sglang,
                Signal::EndToEnd,
                Some("sglang:e2e_request_latency_seconds"),
            ),
            (
                Server::TensorRtLlm,
                Signal::Ttft,
                Some("trtllm_time_to_first_token_seconds"),
            ),
            (Server::TensorRtLlm, Signal::InterToken, None),
            (
                Server::TensorRtLlm,
                Signal::EndToEnd,
                Some("trtllm_e2e_request_latency_seconds"),
            ),
            (
                Server::Dynamo,
                Signal::Ttft,
                Some("dynamo_frontend_time_to_first_token_seconds"),
            ),
            (
                Server::Dynamo,
                Signal::InterToken,
                Some("dynamo_frontend_inter_token_latency_seconds"),
            ),
            (
                Server::Dynamo,
                Signal::EndToEnd,
                Some("dynamo_frontend_request_duration_seconds"),
            ),
        ];
        assert_eq!(table.len(), Server::ALL.len() * Signal::ALL.len());
        for (server, signal, want) in table {
            assert_eq!(
                histogram_name(server, signal),
                want,
                "{server:?} {signal:?}"
            );
        }
    }

    #[test]
    fn hostname_label_prefers_the_exporter_spelling() {
        assert_eq!(dcgm::hostname_label(["gpu", "Hostname"]), Some("Hostname"));
        assert_eq!(dcgm::hostname_label(["hostname", "pod"]), Some("hostname"));
        assert_eq!(
            dcgm::hostname_label(["hostname", "Hostname"]),
            Some("Hostname")
        );
        assert_eq!(dcgm::hostname_label(["pod"]), None);
    }
}
