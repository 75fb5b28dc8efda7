//! [`SimConfig`]: how a simulated inference server behaves.
//!
//! One plain struct with public fields and a [`Default`] that matches the
//! CLI's defaults, validated once by [`SimConfig::validate`] before a server
//! starts: a rate outside `[0, 1]` or a non-finite factor is a
//! [`ConfigError`] naming the field, never a panic in a request.

use std::time::Duration;

/// How a simulated server answers.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Which simulator answered: sent as the `x-weir-sim` header on every
    /// response, as `system_fingerprint` in bodies and as the dcgm
    /// `Hostname` label.
    pub name: String,
    /// The one model served: listed by `/v1/models` and used as the
    /// `model_name` label. Responses echo the model a request asked for.
    pub model: String,
    /// Median time to first token.
    pub ttft: Duration,
    /// Log-space standard deviation of the time to first token (lognormal);
    /// 0 makes every TTFT equal to the median.
    pub ttft_sigma: f64,
    /// Gap between consecutive tokens.
    pub itl: Duration,
    /// Tokens per response, unless a request's `max_tokens` is lower.
    pub tokens: u32,
    /// Fraction of requests answered with HTTP 500 before any token.
    pub error_rate: f64,
    /// Fraction of streaming requests that send an SSE error event
    /// mid-stream and end without `finish_reason` or `[DONE]`.
    pub stream_error_rate: f64,
    /// Fraction of requests whose TTFT is multiplied by `tail_factor`.
    pub tail_prob: f64,
    /// TTFT multiplier of the slow tail.
    pub tail_factor: f64,
    /// Simulated GPU.
    pub gpu: GpuModel,
    /// Seed of every random draw; `None` draws one at start-up.
    pub seed: Option<u64>,
    /// How long open streams may run after shutdown is asked before they
    /// are cut.
    pub shutdown_grace: Duration,
    /// Idle keep-alive connections are closed after this, as vLLM's
    /// uvicorn does after 5 s, so clients that pool connections meet the
    /// same races they would in production.
    pub keep_alive: Duration,
    /// Whose stream framing the answers copy.
    pub framing: Framing,
    /// Whether `POST /control` may change how later requests are answered
    /// (a running version that turns slow, for tests and demos). Off, the
    /// path does not exist.
    pub control: bool,
}

/// Whose stream framing the simulator copies. Clients of the OpenAI API
/// read both; they differ exactly where a meter can go wrong (compared
/// field by field with recorded llama.cpp responses in
/// tests/fixtures/llama).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// The OpenAI API's: the first chat chunk carries the role and the
    /// first token, every token chunk has text, and a usage chunk follows
    /// the finish when `stream_options.include_usage` asks for it.
    #[default]
    OpenAi,
    /// llama.cpp's server (`llama-cpp-python` 0.3.36): a chat stream starts
    /// with a chunk carrying only the role, every fourth token streams as
    /// `""` (a token that ends inside a UTF-8 character) and no usage chunk
    /// comes, even when asked. Non-streamed bodies still carry `usage`.
    LlamaCpp,
}

/// The simulated GPU's utilization: a baseline plus a fixed amount per
/// request in flight, capped at 100%:
///
/// `util = min(100, base_util + util_per_request × load)`
///
/// where `load` is the number of requests in flight averaged over about a
/// second (an exponentially weighted mean sampled every 100 ms), the way
/// dcgm-exporter reports utilization over its sampling period rather than
/// at an instant. Power follows utilization linearly between idle and board
/// power; framebuffer use is constant because vLLM preallocates its KV cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuModel {
    /// Utilization with nothing in flight, percent.
    pub base_util: f64,
    /// Utilization added per request in flight, percentage points.
    pub util_per_request: f64,
}

impl Default for GpuModel {
    fn default() -> Self {
        GpuModel {
            base_util: 50.0,
            util_per_request: 2.0,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            name: "sim".to_string(),
            model: "weir-sim".to_string(),
            ttft: Duration::from_millis(200),
            ttft_sigma: 0.3,
            itl: Duration::from_millis(15),
            tokens: 32,
            error_rate: 0.0,
            stream_error_rate: 0.0,
            tail_prob: 0.0,
            tail_factor: 3.0,
            gpu: GpuModel::default(),
            seed: None,
            shutdown_grace: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            framing: Framing::OpenAi,
            control: false,
        }
    }
}

/// A [`SimConfig`] field that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The field, spelled as the CLI flag without dashes (`error-rate`).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl SimConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// The first field that is out of range, as a [`ConfigError`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError { field, reason });
        if self.name.is_empty() || !self.name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return bad(
                "name",
                format!(
                    "{:?} must be non-empty printable ASCII (it is sent as a header)",
                    self.name
                ),
            );
        }
        if self.model.is_empty() {
            return bad("model", "must not be empty".into());
        }
        for (field, rate) in [
            ("error-rate", self.error_rate),
            ("stream-error-rate", self.stream_error_rate),
            ("tail-prob", self.tail_prob),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return bad(field, format!("{rate} is not a fraction in [0, 1]"));
            }
        }
        if !self.ttft_sigma.is_finite() || self.ttft_sigma < 0.0 || self.ttft_sigma > 5.0 {
            return bad(
                "ttft-sigma",
                format!("{} must be in [0, 5] (a log-space sd)", self.ttft_sigma),
            );
        }
        if !self.tail_factor.is_finite() || self.tail_factor < 0.0 || self.tail_factor > 1000.0 {
            return bad(
                "tail-factor",
                format!("{} must be in [0, 1000]", self.tail_factor),
            );
        }
        if self.tokens == 0 {
            return bad("tokens", "must be at least 1".into());
        }
        if self.ttft > Duration::from_secs(3600) || self.itl > Duration::from_secs(3600) {
            return bad("ttft/itl", "must be at most 1h".into());
        }
        if self.keep_alive.is_zero() {
            return bad("keep-alive", "must be longer than 0".into());
        }
        if !(0.0..=100.0).contains(&self.gpu.base_util) {
            return bad(
                "gpu-util",
                format!("{} is not a percentage in [0, 100]", self.gpu.base_util),
            );
        }
        if !self.gpu.util_per_request.is_finite() || self.gpu.util_per_request < 0.0 {
            return bad(
                "gpu-util-per-request",
                format!("{} must be finite and >= 0", self.gpu.util_per_request),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(SimConfig::default().validate(), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = fn(&mut SimConfig);
        let cases: [(&str, Mutation); 9] = [
            ("name", |c| c.name = "a\nb".into()),
            ("model", |c| c.model = String::new()),
            ("error-rate", |c| c.error_rate = 1.5),
            ("stream-error-rate", |c| c.stream_error_rate = -0.1),
            ("tail-prob", |c| c.tail_prob = f64::NAN),
            ("ttft-sigma", |c| c.ttft_sigma = -1.0),
            ("tail-factor", |c| c.tail_factor = f64::INFINITY),
            ("tokens", |c| c.tokens = 0),
            ("gpu-util", |c| c.gpu.base_util = 101.0),
        ];
        for (field, mutate) in cases {
            let mut config = SimConfig::default();
            mutate(&mut config);
            let err = config.validate().expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
    }
}
