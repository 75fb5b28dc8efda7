//! What one model's answers look like ([`Profile`]), and the models a
//! server serves by name ([`ServedModel`]), each with the keys in which it
//! differs from the server-wide profile ([`Override`]).
//!
//! One server can serve several models, as vLLM or SGLang serve many LoRA
//! adapters from one pool and pick one by the request's `model`: a canary
//! of `chat-lora-v8` against `chat-lora-v7` runs against one sim. The keys
//! are spelled as the server-wide flags of `weir sim` (`ttft`, `itl`,
//! `length-share`, ...), and [`Override`] is their one definition: its
//! key names, how a value is read, which field it sets. A model declared
//! as `chat-lora-v8:tokens=200,itl=13ms` ([`ServedModel`]'s `FromStr`) is
//! checked while it is read, so a bad key or value is reported naming the
//! model and the key before any server starts.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::config::{ConfigError, SimConfig};

/// How one model answers: latency, output length, finish reasons and
/// failures. Every field has the meaning of the [`SimConfig`] field of the
/// same name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Median time to first token.
    pub ttft: Duration,
    /// Log-space standard deviation of the time to first token.
    pub ttft_sigma: f64,
    /// Gap between consecutive tokens.
    pub itl: Duration,
    /// Mean output tokens of an answer that ends by itself.
    pub tokens: u32,
    /// Log-space standard deviation of the output length (lognormal with
    /// mean `tokens`); 0 gives every answer exactly `tokens`.
    pub tokens_sigma: f64,
    /// Fraction of answers that end with `finish_reason: "length"`: they
    /// run to the request's `max_tokens` (or, without one, to their drawn
    /// length) as if the model would have gone on.
    pub length_share: f64,
    /// Fraction of answers with no content token at all (`finish_reason:
    /// "stop"`, `completion_tokens: 0`).
    pub empty_share: f64,
    /// Fraction of requests answered with HTTP 500 before any token.
    pub error_rate: f64,
    /// Fraction of streams that fail mid-way.
    pub stream_error_rate: f64,
    /// Fraction of requests whose TTFT is multiplied by `tail_factor`.
    pub tail_prob: f64,
    /// TTFT multiplier of the slow tail.
    pub tail_factor: f64,
}

impl Default for Profile {
    /// The server-wide profile of [`SimConfig::default`].
    fn default() -> Self {
        SimConfig::default().profile()
    }
}

/// Largest accepted output-length sigma: e^(3²) makes the mean 90 times
/// the median already.
const MAX_TOKENS_SIGMA: f64 = 3.0;

impl Profile {
    /// Checks every field, naming a bad one by its key.
    ///
    /// # Errors
    /// The first field out of range, as a [`ConfigError`] (without a model;
    /// [`SimConfig::validate`] adds it).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError::new(field, reason));
        for (field, rate) in [
            ("error-rate", self.error_rate),
            ("stream-error-rate", self.stream_error_rate),
            ("tail-prob", self.tail_prob),
            ("length-share", self.length_share),
            ("empty-share", self.empty_share),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return bad(field, format!("{rate} is not a fraction in [0, 1]"));
            }
        }
        if self.length_share + self.empty_share > 1.0 {
            return bad(
                "empty-share",
                format!(
                    "length-share {} and empty-share {} add up to more than 1",
                    self.length_share, self.empty_share
                ),
            );
        }
        if !self.ttft_sigma.is_finite() || self.ttft_sigma < 0.0 || self.ttft_sigma > 5.0 {
            return bad(
                "ttft-sigma",
                format!("{} must be in [0, 5] (a log-space sd)", self.ttft_sigma),
            );
        }
        if !self.tokens_sigma.is_finite()
            || self.tokens_sigma < 0.0
            || self.tokens_sigma > MAX_TOKENS_SIGMA
        {
            return bad(
                "tokens-sigma",
                format!(
                    "{} must be in [0, {MAX_TOKENS_SIGMA}] (a log-space sd)",
                    self.tokens_sigma
                ),
            );
        }
        if !self.tail_factor.is_finite() || self.tail_factor < 0.0 || self.tail_factor > 1000.0 {
            return bad(
                "tail-factor",
                format!("{} must be in [0, 1000]", self.tail_factor),
            );
        }
        if self.tokens == 0 {
            return bad(
                "tokens",
                "must be at least 1 (empty answers: empty-share)".into(),
            );
        }
        for (field, d) in [("ttft", self.ttft), ("itl", self.itl)] {
            if d > Duration::from_secs(3600) {
                return bad(field, "must be at most 1h".into());
            }
        }
        Ok(())
    }
}

/// One key of a model's profile set to its own value. The key names are
/// the server-wide flags' names without dashes in front.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Override {
    /// `ttft`: [`Profile::ttft`].
    Ttft(Duration),
    /// `ttft-sigma`: [`Profile::ttft_sigma`].
    TtftSigma(f64),
    /// `itl`: [`Profile::itl`].
    Itl(Duration),
    /// `tokens`: [`Profile::tokens`].
    Tokens(u32),
    /// `tokens-sigma`: [`Profile::tokens_sigma`].
    TokensSigma(f64),
    /// `length-share`: [`Profile::length_share`].
    LengthShare(f64),
    /// `empty-share`: [`Profile::empty_share`].
    EmptyShare(f64),
    /// `error-rate`: [`Profile::error_rate`].
    ErrorRate(f64),
    /// `stream-error-rate`: [`Profile::stream_error_rate`].
    StreamErrorRate(f64),
    /// `tail-prob`: [`Profile::tail_prob`].
    TailProb(f64),
    /// `tail-factor`: [`Profile::tail_factor`].
    TailFactor(f64),
}

impl Override {
    /// Every key, in the order `--help` lists them.
    pub const KEYS: [&'static str; 11] = [
        "ttft",
        "ttft-sigma",
        "itl",
        "tokens",
        "tokens-sigma",
        "length-share",
        "empty-share",
        "error-rate",
        "stream-error-rate",
        "tail-prob",
        "tail-factor",
    ];

    /// The key this override sets.
    pub fn key(&self) -> &'static str {
        match self {
            Override::Ttft(_) => "ttft",
            Override::TtftSigma(_) => "ttft-sigma",
            Override::Itl(_) => "itl",
            Override::Tokens(_) => "tokens",
            Override::TokensSigma(_) => "tokens-sigma",
            Override::LengthShare(_) => "length-share",
            Override::EmptyShare(_) => "empty-share",
            Override::ErrorRate(_) => "error-rate",
            Override::StreamErrorRate(_) => "stream-error-rate",
            Override::TailProb(_) => "tail-prob",
            Override::TailFactor(_) => "tail-factor",
        }
    }

    /// Reads `key=value`'s value. Ranges are checked by
    /// [`Profile::validate`], not here.
    ///
    /// # Errors
    /// What is wrong, for a person: an unknown key (listing the known
    /// ones), or a value that is not a duration, number or count.
    pub fn parse(key: &str, value: &str) -> Result<Self, String> {
        let value = value.trim();
        let duration = || {
            humantime::parse_duration(value)
                .map_err(|_| format!("{value:?} is not a duration (write e.g. 80ms or 1.5s)"))
        };
        let number = || match value.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(format!("{value:?} is not a number")),
        };
        Ok(match key {
            "ttft" => Override::Ttft(duration()?),
            "ttft-sigma" => Override::TtftSigma(number()?),
            "itl" => Override::Itl(duration()?),
            "tokens" => Override::Tokens(
                value
                    .parse()
                    .map_err(|_| format!("{value:?} is not a whole number of tokens"))?,
            ),
            "tokens-sigma" => Override::TokensSigma(number()?),
            "length-share" => Override::LengthShare(number()?),
            "empty-share" => Override::EmptyShare(number()?),
            "error-rate" => Override::ErrorRate(number()?),
            "stream-error-rate" => Override::StreamErrorRate(number()?),
            "tail-prob" => Override::TailProb(number()?),
            "tail-factor" => Override::TailFactor(number()?),
            _ => {
                return Err(format!(
                    "unknown key {key:?} (keys: {})",
                    Override::KEYS.join(", ")
                ));
            }
        })
    }

    /// Sets this override's field of `profile`.
    pub fn apply(&self, profile: &mut Profile) {
        match *self {
            Override::Ttft(v) => profile.ttft = v,
            Override::TtftSigma(v) => profile.ttft_sigma = v,
            Override::Itl(v) => profile.itl = v,
            Override::Tokens(v) => profile.tokens = v,
            Override::TokensSigma(v) => profile.tokens_sigma = v,
            Override::LengthShare(v) => profile.length_share = v,
            Override::EmptyShare(v) => profile.empty_share = v,
            Override::ErrorRate(v) => profile.error_rate = v,
            Override::StreamErrorRate(v) => profile.stream_error_rate = v,
            Override::TailProb(v) => profile.tail_prob = v,
            Override::TailFactor(v) => profile.tail_factor = v,
        }
    }
}

impl fmt::Display for Override {
    /// `key=value`, readable back by [`Override::parse`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key();
        match *self {
            Override::Ttft(d) | Override::Itl(d) => {
                write!(f, "{key}={}", humantime::format_duration(d))
            }
            Override::Tokens(n) => write!(f, "{key}={n}"),
            Override::TtftSigma(v)
            | Override::TokensSigma(v)
            | Override::LengthShare(v)
            | Override::EmptyShare(v)
            | Override::ErrorRate(v)
            | Override::StreamErrorRate(v)
            | Override::TailProb(v)
            | Override::TailFactor(v) => write!(f, "{key}={v}"),
        }
    }
}

/// A model a server serves by name, with the keys of its profile that
/// differ from the server-wide one.
///
/// Read from `NAME` or `NAME:key=value,key=value,...` (`FromStr`): the
/// keys start after the last `:` when what follows it names a key, so
/// names with a colon (`llama3:8b`) stay whole.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedModel {
    /// The name requests ask for in `model`, and responses echo.
    pub name: String,
    /// Keys set for this model, applied in order over the server-wide
    /// profile.
    pub overrides: Vec<Override>,
}

impl ServedModel {
    /// A model with the server-wide profile.
    pub fn new(name: impl Into<String>) -> Self {
        ServedModel {
            name: name.into(),
            overrides: Vec::new(),
        }
    }

    /// This model with `key` set as well.
    #[must_use]
    pub fn with(mut self, key: Override) -> Self {
        self.overrides.push(key);
        self
    }

    /// Its profile: `base` with the overrides applied.
    pub fn profile(&self, base: &Profile) -> Profile {
        let mut profile = *base;
        for o in &self.overrides {
            o.apply(&mut profile);
        }
        profile
    }
}

/// A `--model NAME[:key=value,...]` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model {model:?}: {reason}")]
pub struct ModelSpecError {
    /// The model's name as written (may be empty).
    pub model: String,
    /// What is wrong and how to write it instead.
    pub reason: String,
}

impl FromStr for ServedModel {
    type Err = ModelSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, keys) = split_spec(s);
        let err = |reason: String| ModelSpecError {
            model: name.to_string(),
            reason,
        };
        if name.trim().is_empty() {
            return Err(err(
                "the name is empty: write NAME or NAME:key=value,...".into()
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(err("the name has control characters".into()));
        }
        let mut model = ServedModel::new(name);
        for item in keys.into_iter().flat_map(|k| k.split(',')) {
            let item = item.trim();
            let Some((key, value)) = item.split_once('=') else {
                return Err(err(format!(
                    "{item:?} needs a value: write key=value, e.g. tokens=200"
                )));
            };
            let key = key.trim();
            let o = Override::parse(key, value).map_err(|reason| {
                if reason.starts_with("unknown key") {
                    err(reason)
                } else {
                    err(format!("{key}: {reason}"))
                }
            })?;
            if model.overrides.iter().any(|m| m.key() == o.key()) {
                return Err(err(format!("{key} is set twice")));
            }
            model.overrides.push(o);
        }
        // Ranges and shares that add up to more than 1, checked over the
        // default profile: the server-wide one is checked again with the
        // whole configuration.
        model
            .profile(&Profile::default())
            .validate()
            .map_err(|e| err(format!("{}: {}", e.field, e.reason)))?;
        Ok(model)
    }
}

/// `NAME:keys` into the name and, when the part after the last `:` starts
/// with a key (`tokens=...`, or a bare key missing its value), the keys.
fn split_spec(s: &str) -> (&str, Option<&str>) {
    if let Some((name, rest)) = s.rsplit_once(':') {
        let first = rest.split([',', '=']).next().unwrap_or("").trim();
        if rest.contains('=') || Override::KEYS.contains(&first) {
            return (name, Some(rest));
        }
    }
    (s, None)
}

impl fmt::Display for ServedModel {
    /// `NAME[:key=value,...]`, readable back by `FromStr`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (i, o) in self.overrides.iter().enumerate() {
            write!(f, "{}{o}", if i == 0 { ':' } else { ',' })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_model_with_keys_reads_and_prints_back() {
        let m: ServedModel = "chat-lora-v8:tokens=200, itl=13ms,length-share=0.3,ttft=80ms"
            .parse()
            .expect("valid");
        assert_eq!(
            m,
            ServedModel::new("chat-lora-v8")
                .with(Override::Tokens(200))
                .with(Override::Itl(ms(13)))
                .with(Override::LengthShare(0.3))
                .with(Override::Ttft(ms(80)))
        );
        assert_eq!(
            m.to_string(),
            "chat-lora-v8:tokens=200,itl=13ms,length-share=0.3,ttft=80ms"
        );
        assert_eq!(m.to_string().parse::<ServedModel>(), Ok(m.clone()));
        let p = m.profile(&Profile::default());
        assert_eq!((p.tokens, p.itl, p.ttft), (200, ms(13), ms(80)));
        assert_eq!(p.length_share, 0.3);
        // Keys not set keep the base's values.
        assert_eq!(p.ttft_sigma, Profile::default().ttft_sigma);
    }

    #[test]
    fn every_key_reads_back_what_it_prints() {
        let all = [
            Override::Ttft(ms(80)),
            Override::TtftSigma(0.2),
            Override::Itl(ms(13)),
            Override::Tokens(7),
            Override::TokensSigma(0.5),
            Override::LengthShare(0.25),
            Override::EmptyShare(0.05),
            Override::ErrorRate(0.01),
            Override::StreamErrorRate(0.02),
            Override::TailProb(0.1),
            Override::TailFactor(4.0),
        ];
        assert_eq!(all.map(|o| o.key()), Override::KEYS);
        for o in all {
            let text = o.to_string();
            let (key, value) = text.split_once('=').expect("key=value");
            assert_eq!(Override::parse(key, value), Ok(o), "{text}");
        }
    }

    #[test]
    fn names_keep_their_colons_unless_keys_follow() {
        let plain: ServedModel = "llama3:8b".parse().expect("a name with a colon");
        assert_eq!(plain, ServedModel::new("llama3:8b"));
        let keyed: ServedModel = "llama3:8b:tokens=9".parse().expect("keys");
        assert_eq!(
            keyed,
            ServedModel::new("llama3:8b").with(Override::Tokens(9))
        );
        let bare: ServedModel = "org/model".parse().expect("plain");
        assert_eq!(bare.overrides, vec![]);
    }

    #[test]
    fn bad_specs_name_the_model_the_key_and_the_fix() {
        for (spec, wants) in [
            (
                "chat:itll=3ms",
                &["\"chat\"", "unknown key \"itll\"", "keys: ttft"][..],
            ),
            (
                "chat:tokens",
                &["\"chat\"", "\"tokens\" needs a value", "key=value"],
            ),
            (
                "chat:itl=fast",
                &["\"chat\"", "itl:", "not a duration", "80ms"],
            ),
            ("chat:tokens=-3", &["tokens:", "whole number"]),
            ("chat:length-share=1.5", &["length-share:", "fraction"]),
            ("chat:tokens=0", &["tokens:", "at least 1"]),
            ("chat:ttft-sigma=9", &["ttft-sigma:", "[0, 5]"]),
            ("chat:tokens=1,tokens=2", &["tokens is set twice"]),
            (
                "chat:length-share=0.7,empty-share=0.5",
                &["empty-share:", "more than 1"],
            ),
            (":tokens=3", &["name is empty"]),
            ("", &["name is empty"]),
        ] {
            let err = spec.parse::<ServedModel>().expect_err(spec).to_string();
            for want in wants {
                assert!(
                    err.contains(want),
                    "{spec:?}: {want:?} missing from {err:?}"
                );
            }
        }
    }

    #[test]
    fn each_bad_profile_field_is_named() {
        type Mutation = fn(&mut Profile);
        let cases: [(&str, Mutation); 9] = [
            ("error-rate", |p| p.error_rate = 1.5),
            ("length-share", |p| p.length_share = -0.1),
            ("empty-share", |p| p.empty_share = 2.0),
            ("empty-share", |p| {
                p.length_share = 0.6;
                p.empty_share = 0.6;
            }),
            ("tokens-sigma", |p| p.tokens_sigma = f64::NAN),
            ("tokens-sigma", |p| p.tokens_sigma = 3.5),
            ("tokens", |p| p.tokens = 0),
            ("ttft", |p| p.ttft = Duration::from_secs(7200)),
            ("itl", |p| p.itl = Duration::from_secs(7200)),
        ];
        for (field, mutate) in cases {
            let mut p = Profile::default();
            mutate(&mut p);
            let err = p.validate().expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
        assert_eq!(Profile::default().validate(), Ok(()));
    }
}
