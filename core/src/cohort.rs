//! Cohorts: the groups of backends whose requests are judged together.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};

/// The name of [`Cohort::Stable`].
pub const STABLE: &str = "stable";
/// The name of [`Cohort::Canary`].
pub const CANARY: &str = "canary";

/// A cohort: the group of backends a request is judged with. DESIGN's
/// cohorts are `stable` and `canary`; any other name (a blue-green
/// `preview`, a third arm of a file-configured proxy) is allowed.
///
/// Names are 1 to 63 characters of `a-z`, `0-9` and `-`, starting and ending
/// with a letter or digit (a DNS label), because they become metric label
/// values, header values and Service name suffixes. Serialized as the name.
///
/// The order (`Stable`, `Canary`, then others by name) is the order of the
/// proxy's observations; it is not the proxy's selection order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cohort {
    /// The version everyone trusts.
    Stable,
    /// The version under test.
    Canary,
    /// Any other cohort, by name (never `stable` or `canary`).
    Other(Arc<str>),
}

/// A cohort name that is not a DNS label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} is not a valid cohort name; use 1-63 lower-case letters, digits and '-', e.g. stable, canary",
    crate::Excerpt::quoted(value)
)]
pub struct CohortError {
    /// The name as written.
    pub value: String,
}

impl Cohort {
    /// The cohort named `name`.
    ///
    /// # Errors
    /// [`CohortError`] for a name that is not a DNS label.
    pub fn parse(name: &str) -> Result<Cohort, CohortError> {
        match name {
            STABLE => Ok(Cohort::Stable),
            CANARY => Ok(Cohort::Canary),
            _ if is_dns_label(name) => Ok(Cohort::Other(name.into())),
            _ => Err(CohortError {
                value: name.to_string(),
            }),
        }
    }

    /// The cohort's name.
    pub fn as_str(&self) -> &str {
        match self {
            Cohort::Stable => STABLE,
            Cohort::Canary => CANARY,
            Cohort::Other(name) => name,
        }
    }
}

impl fmt::Display for Cohort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Cohort {
    type Err = CohortError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cohort::parse(s)
    }
}

impl Serialize for Cohort {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Cohort {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Cohort::parse(&name).map_err(serde::de::Error::custom)
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_the_named_variants_and_round_trip() {
        assert_eq!(Cohort::parse("stable"), Ok(Cohort::Stable));
        assert_eq!(Cohort::parse("canary"), Ok(Cohort::Canary));
        let preview = Cohort::parse("preview").expect("a DNS label");
        assert_eq!(preview, Cohort::Other("preview".into()));
        for c in [Cohort::Stable, Cohort::Canary, preview] {
            let json = serde_json::to_string(&c).expect("serializes");
            assert_eq!(json, format!("\"{c}\""));
            assert_eq!(serde_json::from_str::<Cohort>(&json).expect("parses"), c);
            assert_eq!(c.as_str().parse::<Cohort>(), Ok(c.clone()));
        }
    }

    #[test]
    fn names_must_be_dns_labels() {
        for bad in [
            "",
            "Stable",
            "Canary",
            "-a",
            "a-",
            "a_b",
            "a.b",
            &"x".repeat(64),
        ] {
            let err = Cohort::parse(bad).expect_err(bad);
            assert_eq!(err.value, bad);
        }
        assert!(Cohort::parse(&"x".repeat(63)).is_ok());
        let err = serde_json::from_str::<Cohort>("\"Bad\"").expect_err("upper case");
        assert!(
            err.to_string()
                .starts_with("\"Bad\" is not a valid cohort name; use 1-63 lower-case"),
            "{err}"
        );
    }
}
