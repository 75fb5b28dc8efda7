//! [`SimConfig`]: how a simulated inference server behaves.
//!
//! One plain struct with public fields and a [`Default`] that matches the
//! CLI's defaults, validated once by [`SimConfig::validate`] before a server
//! starts: a rate outside `[0, 1]` or a non-finite factor is a
//! [`ConfigError`] naming the field, never a panic in a request.
//!
//! The latency, length and failure fields are the server-wide
//! [`Profile`]; [`SimConfig::models`] declares models served by name, each
//! overriding some of them ([`crate::profile`]).

use std::fmt;
use std::time::Duration;

use crate::forward::Forward;
use crate::profile::{Profile, ServedModel};

/// How a simulated server answers.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Which simulator answered: sent as the `x-weir-sim` header on every
    /// response, as `system_fingerprint` in bodies and as the dcgm
    /// `Hostname` label.
    pub name: String,
    /// With `models` empty, the one model served: listed by `/v1/models`,
    /// and every request is answered whatever `model` it names, with the
    /// server-wide profile (responses echo the name asked for). Always the
    /// `model_name` label of the vLLM metrics, for every model served (as
    /// vLLM labels the requests for its LoRA adapters with the base
    /// model's name).
    pub model: String,
    /// Models served by name, each with its own profile (the server-wide
    /// one with its overrides). When not empty, these are the models
    /// `/v1/models` lists and the only ones answered: a request naming
    /// another gets vLLM's 404. Empty: `model` alone, answering any name.
    pub models: Vec<ServedModel>,
    /// Median time to first token.
    pub ttft: Duration,
    /// Log-space standard deviation of the time to first token (lognormal);
    /// 0 makes every TTFT equal to the median.
    pub ttft_sigma: f64,
    /// Gap between consecutive tokens.
    pub itl: Duration,
    /// Tokens per response (the mean, when `tokens_sigma` spreads them),
    /// unless a request's `max_tokens` is lower.
    pub tokens: u32,
    /// Log-space standard deviation of the output length: each answer's
    /// length is drawn from the lognormal with mean `tokens`, rounded, at
    /// least 1. 0 gives every answer exactly `tokens`.
    pub tokens_sigma: f64,
    /// Fraction of answers that end with `finish_reason: "length"`,
    /// whatever their drawn length: they run to the request's `max_tokens`,
    /// or without one to their drawn length. Answers whose drawn length
    /// exceeds `max_tokens` end with `length` too.
    pub length_share: f64,
    /// Fraction of answers with no content token (`finish_reason: "stop"`,
    /// `completion_tokens: 0`). With `length_share`, at most 1.
    pub empty_share: f64,
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
    /// Relay every API request to this upstream instead of answering it
    /// ([`crate::forward`]): the latency, length and failure fields then
    /// apply to nothing. `None`: answer.
    pub forward: Option<Forward>,
    /// The generation this sim belongs to (a Dynamo namespace, a
    /// revision): stamped on the requests it relays and the `own` label of
    /// [`crate::metrics::GENERATION_REQUESTS`], which it exposes only when
    /// set. Printable ASCII (it is sent as a header).
    pub generation: Option<String>,
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
            models: Vec::new(),
            ttft: Duration::from_millis(200),
            ttft_sigma: 0.3,
            itl: Duration::from_millis(15),
            tokens: 32,
            tokens_sigma: 0.0,
            length_share: 0.0,
            empty_share: 0.0,
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
            forward: None,
            generation: None,
        }
    }
}

/// A [`SimConfig`] field that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    /// The field, spelled as the CLI flag without dashes (`error-rate`).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
    /// The served model whose profile it is in, when it is one of
    /// [`SimConfig::models`]' rather than the server-wide one.
    pub model: Option<String>,
}

impl ConfigError {
    /// A bad server-wide `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            field,
            reason: reason.into(),
            model: None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(model) = &self.model {
            write!(f, "model {model:?}: ")?;
        }
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl SimConfig {
    /// The server-wide profile: the latency, length and failure fields.
    pub fn profile(&self) -> Profile {
        Profile {
            ttft: self.ttft,
            ttft_sigma: self.ttft_sigma,
            itl: self.itl,
            tokens: self.tokens,
            tokens_sigma: self.tokens_sigma,
            length_share: self.length_share,
            empty_share: self.empty_share,
            error_rate: self.error_rate,
            stream_error_rate: self.stream_error_rate,
            tail_prob: self.tail_prob,
            tail_factor: self.tail_factor,
        }
    }

    /// The models served, each with its profile, in the order declared:
    /// [`SimConfig::models`], or `model` with the server-wide profile when
    /// there are none.
    pub fn served(&self) -> Vec<(String, Profile)> {
        let base = self.profile();
        if self.models.is_empty() {
            return vec![(self.model.clone(), base)];
        }
        self.models
            .iter()
            .map(|m| (m.name.clone(), m.profile(&base)))
            .collect()
    }

    /// Whether a request naming any model is answered (with the one
    /// profile): so when no [`SimConfig::models`] are declared, as before
    /// a server could serve several.
    pub fn answers_any_name(&self) -> bool {
        self.models.is_empty()
    }

    /// Checks every field, and every served model's profile.
    ///
    /// # Errors
    /// The first field that is out of range, as a [`ConfigError`] (naming
    /// the model when it is one of [`SimConfig::models`]').
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError::new(field, reason));
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
        self.profile().validate()?;
        for (i, m) in self.models.iter().enumerate() {
            if m.name.is_empty() || m.name.chars().any(char::is_control) {
                return bad(
                    "model",
                    format!("{:?} must be non-empty, without control characters", m.name),
                );
            }
            if self.models[..i].iter().any(|other| other.name == m.name) {
                return bad(
                    "model",
                    format!("{:?} is declared twice: give each model once", m.name),
                );
            }
            m.profile(&self.profile())
                .validate()
                .map_err(|e| ConfigError {
                    model: Some(m.name.clone()),
                    ..e
                })?;
        }
        if let Some(generation) = &self.generation
            && (generation.is_empty() || !generation.bytes().all(|b| (0x20..0x7f).contains(&b)))
        {
            return bad(
                "generation",
                format!(
                    "{generation:?} must be non-empty printable ASCII (it is sent as a header)"
                ),
            );
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
        let cases: [(&str, Mutation); 10] = [
            ("name", |c| c.name = "a\nb".into()),
            ("model", |c| c.model = String::new()),
            ("error-rate", |c| c.error_rate = 1.5),
            ("stream-error-rate", |c| c.stream_error_rate = -0.1),
            ("tail-prob", |c| c.tail_prob = f64::NAN),
            ("ttft-sigma", |c| c.ttft_sigma = -1.0),
            ("tail-factor", |c| c.tail_factor = f64::INFINITY),
            ("tokens", |c| c.tokens = 0),
            ("gpu-util", |c| c.gpu.base_util = 101.0),
            ("generation", |c| c.generation = Some("rev\n2".into())),
        ];
        for (field, mutate) in cases {
            let mut config = SimConfig::default();
            mutate(&mut config);
            let err = config.validate().expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn served_models_get_their_own_profiles_over_the_server_wide_one() {
        use crate::profile::Override;
        let legacy = SimConfig::default();
        assert!(legacy.answers_any_name());
        assert_eq!(
            legacy.served(),
            vec![("weir-sim".to_string(), legacy.profile())]
        );

        let config = SimConfig {
            tokens: 50,
            models: vec![
                ServedModel::new("chat-lora-v7"),
                ServedModel::new("chat-lora-v8")
                    .with(Override::Tokens(100))
                    .with(Override::LengthShare(0.3)),
            ],
            ..SimConfig::default()
        };
        assert!(!config.answers_any_name());
        let served = config.served();
        assert_eq!(served[0], ("chat-lora-v7".to_string(), config.profile()));
        assert_eq!(served[1].0, "chat-lora-v8");
        assert_eq!((served[1].1.tokens, served[1].1.length_share), (100, 0.3));
        assert_eq!(served[1].1.ttft, config.ttft);
    }

    #[test]
    fn a_bad_model_is_named_with_its_key() {
        use crate::profile::Override;
        let config = SimConfig {
            // Fine alone, too much with the model's length share.
            empty_share: 0.5,
            models: vec![
                ServedModel::new("a"),
                ServedModel::new("b").with(Override::LengthShare(0.6)),
            ],
            ..SimConfig::default()
        };
        let err = config.validate().expect_err("shares add up to 1.1");
        assert_eq!(
            (err.field, err.model.as_deref()),
            ("empty-share", Some("b"))
        );
        assert!(
            err.to_string().starts_with("model \"b\": empty-share: "),
            "{err}"
        );

        let twice = SimConfig {
            models: vec![ServedModel::new("a"), ServedModel::new("a")],
            ..SimConfig::default()
        };
        let err = twice.validate().expect_err("declared twice");
        assert_eq!(err.field, "model");
        assert!(err.reason.contains("twice"), "{err}");
    }
}
