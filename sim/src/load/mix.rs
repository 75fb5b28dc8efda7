//! What varies from one load request to the next: which model it asks for
//! ([`ModelWeight`], drawn by weight with [`ModelMix`]) and how long its
//! prompt is ([`PromptTokens`]).
//!
//! A canary of a model name is judged on a realistic mix: clients asking
//! for several names through one proxy, with prompts of many lengths. The
//! draws are pure functions of a uniform number or an RNG the caller
//! seeds, so a seeded run sends the same mix request by request.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, RngExt};

/// Longest prompt [`PromptTokens`] accepts, tokens (about 4 MB of text).
pub const MAX_PROMPT_TOKENS: u32 = 1_000_000;

/// A model name and its share of the requests.
///
/// Read from `NAME` (weight 1) or `NAME=WEIGHT`; the weight follows the
/// last `=`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelWeight {
    /// The `model` of its requests.
    pub name: String,
    /// Its weight: requests ask for it with probability weight / total.
    pub weight: f64,
}

impl ModelWeight {
    /// `name` with weight `weight`.
    pub fn new(name: impl Into<String>, weight: f64) -> Self {
        ModelWeight {
            name: name.into(),
            weight,
        }
    }
}

impl FromStr for ModelWeight {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, weight) = match s.rsplit_once('=') {
            Some((name, w)) => {
                let weight = w.trim().parse::<f64>().map_err(|_| {
                    format!("{s:?}: {w:?} is not a weight (write NAME=WEIGHT, e.g. chat=3)")
                })?;
                (name.trim(), weight)
            }
            None => (s.trim(), 1.0),
        };
        let model = ModelWeight::new(name, weight);
        model.check()?;
        Ok(model)
    }
}

impl ModelWeight {
    fn check(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("the model name is empty (write NAME or NAME=WEIGHT)".into());
        }
        if !(self.weight.is_finite() && self.weight > 0.0) {
            return Err(format!(
                "model {:?}: the weight {} must be a positive number",
                self.name, self.weight
            ));
        }
        Ok(())
    }
}

/// Picks a model by weight.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMix {
    /// Running totals of the weights, in the order given.
    cumulative: Vec<f64>,
}

impl ModelMix {
    /// The mix of `models`.
    ///
    /// # Errors
    /// What is wrong: no models, an empty name, a weight that is not
    /// positive and finite, a name given twice.
    pub fn new(models: &[ModelWeight]) -> Result<Self, String> {
        if models.is_empty() {
            return Err("no models".into());
        }
        let mut cumulative = Vec::with_capacity(models.len());
        let mut total = 0.0;
        for (i, m) in models.iter().enumerate() {
            m.check()?;
            if models[..i].iter().any(|other| other.name == m.name) {
                return Err(format!("model {:?} is given twice", m.name));
            }
            total += m.weight;
            cumulative.push(total);
        }
        Ok(ModelMix { cumulative })
    }

    /// The index of the model a uniform `u` in `[0, 1)` picks.
    pub fn pick(&self, u: f64) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = u * total;
        self.cumulative
            .partition_point(|&c| c <= x)
            .min(self.cumulative.len().saturating_sub(1))
    }
}

/// How many tokens each request's prompt has.
///
/// Read from `N`, `MIN..MAX` (each length in the range equally likely) or
/// `A,B,C` (one of them, equally likely).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptTokens {
    /// Uniform over `min..=max` (equal for a fixed length).
    Range {
        /// Shortest.
        min: u32,
        /// Longest.
        max: u32,
    },
    /// One of these, equally likely.
    OneOf(Vec<u32>),
}

impl PromptTokens {
    /// Draws one request's prompt length.
    pub fn draw(&self, rng: &mut impl Rng) -> u32 {
        match self {
            PromptTokens::Range { min, max } => rng.random_range(*min..=*max),
            PromptTokens::OneOf(lengths) => lengths[rng.random_range(0..lengths.len())],
        }
    }

    /// Checks the lengths.
    ///
    /// # Errors
    /// What is wrong, for a person.
    pub fn check(&self) -> Result<(), String> {
        let (lowest, highest) = match self {
            PromptTokens::Range { min, max } if min > max => {
                return Err(format!(
                    "{min}..{max} is empty: write MIN..MAX with MIN <= MAX"
                ));
            }
            PromptTokens::Range { min, max } => (*min, *max),
            PromptTokens::OneOf(lengths) => match (lengths.iter().min(), lengths.iter().max()) {
                (Some(&lo), Some(&hi)) => (lo, hi),
                _ => return Err("no lengths given".into()),
            },
        };
        if lowest == 0 {
            return Err("a prompt has at least 1 token".into());
        }
        if highest > MAX_PROMPT_TOKENS {
            return Err(format!(
                "{highest} tokens is more than the {MAX_PROMPT_TOKENS} allowed"
            ));
        }
        Ok(())
    }
}

impl FromStr for PromptTokens {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let count = |t: &str| {
            t.trim().parse::<u32>().map_err(|_| {
                format!("{t:?} is not a number of tokens (write N, MIN..MAX or A,B,C)")
            })
        };
        let lengths = if let Some((min, max)) = s.split_once("..") {
            PromptTokens::Range {
                min: count(min)?,
                max: count(max)?,
            }
        } else if s.contains(',') {
            PromptTokens::OneOf(s.split(',').map(count).collect::<Result<_, _>>()?)
        } else {
            let n = count(s)?;
            PromptTokens::Range { min: n, max: n }
        };
        lengths.check()?;
        Ok(lengths)
    }
}

impl fmt::Display for PromptTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromptTokens::Range { min, max } if min == max => write!(f, "{min}"),
            PromptTokens::Range { min, max } => write!(f, "{min}..{max}"),
            PromptTokens::OneOf(lengths) => {
                let parts: Vec<String> = lengths.iter().map(u32::to_string).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::request_rng;

    /// Binomial band: `k` of `n` at `p`, within 4.5 sd.
    fn within_binomial(k: usize, n: usize, p: f64) -> bool {
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        (k as f64 - n as f64 * p).abs() <= 4.5 * sd + 1.0
    }

    #[test]
    fn models_read_with_and_without_weights() {
        assert_eq!("chat".parse(), Ok(ModelWeight::new("chat", 1.0)));
        assert_eq!("chat=3".parse(), Ok(ModelWeight::new("chat", 3.0)));
        assert_eq!("a=b=0.5".parse(), Ok(ModelWeight::new("a=b", 0.5)));
        for (bad, want) in [
            ("chat=x", "not a weight"),
            ("chat=0", "positive"),
            ("chat=-1", "positive"),
            ("chat=inf", "positive"),
            ("=2", "empty"),
        ] {
            let err = bad.parse::<ModelWeight>().expect_err(bad);
            assert!(err.contains(want), "{bad}: {err}");
        }
        let twice = [ModelWeight::new("a", 1.0), ModelWeight::new("a", 2.0)];
        assert!(ModelMix::new(&twice).expect_err("twice").contains("twice"));
    }

    #[test]
    fn the_mix_honours_the_weights() {
        let mix = ModelMix::new(&[
            ModelWeight::new("a", 3.0),
            ModelWeight::new("b", 1.0),
            ModelWeight::new("c", 0.5),
        ])
        .expect("valid");
        // Edges: each model owns its slice of [0, 1).
        assert_eq!(
            [0.0, 0.66, 0.67, 0.88, 0.9, 0.999_999].map(|u| mix.pick(u)),
            [0, 0, 1, 1, 2, 2]
        );
        let mut rng = request_rng(5, 0);
        let n = 9_000;
        let mut counts = [0usize; 3];
        for _ in 0..n {
            counts[mix.pick(rng.random())] += 1;
        }
        for (k, p) in counts.iter().zip([3.0 / 4.5, 1.0 / 4.5, 0.5 / 4.5]) {
            assert!(within_binomial(*k, n, p), "{counts:?}");
        }
    }

    #[test]
    fn prompt_lengths_read_and_draw_within_their_range() {
        assert_eq!(
            "50..2000".parse(),
            Ok(PromptTokens::Range { min: 50, max: 2000 })
        );
        assert_eq!(
            "300".parse(),
            Ok(PromptTokens::Range { min: 300, max: 300 })
        );
        assert_eq!(
            "100, 500,2000".parse(),
            Ok(PromptTokens::OneOf(vec![100, 500, 2000]))
        );
        for text in ["50..2000", "300", "100,500,2000"] {
            let p: PromptTokens = text.parse().expect(text);
            assert_eq!(p.to_string().replace(' ', ""), text);
        }
        for (bad, want) in [
            ("2000..50", "is empty"),
            ("0", "at least 1"),
            ("1..2000000", "more than"),
            ("many", "not a number"),
            ("1,,2", "not a number"),
        ] {
            let err = bad.parse::<PromptTokens>().expect_err(bad);
            assert!(err.contains(want), "{bad}: {err}");
        }

        let range = PromptTokens::Range { min: 50, max: 2000 };
        let mut rng = request_rng(1, 0);
        let n = 4_000;
        let draws: Vec<u32> = (0..n).map(|_| range.draw(&mut rng)).collect();
        assert!(draws.iter().all(|d| (50..=2000).contains(d)));
        // Uniform: mean 1025, sd 563; the mean of 4000 within 4.5 · 8.9.
        let mean = draws.iter().map(|&d| f64::from(d)).sum::<f64>() / n as f64;
        assert!(
            (mean - 1025.0).abs() < 4.5 * 563.0 / (n as f64).sqrt(),
            "{mean}"
        );

        let list = PromptTokens::OneOf(vec![100, 500]);
        let short = (0..n).filter(|_| list.draw(&mut rng) == 100).count();
        assert!(within_binomial(short, n, 0.5), "{short}");
    }
}
