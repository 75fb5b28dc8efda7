//! Request outcomes: how a request ended, and which endings count against
//! the cohort that served it.
//!
//! The proxy decides the outcome of every request, counts it per cohort,
//! exports it as the `outcome` label of `weir_proxy_requests_total` and as
//! the keys of `requests` in `/v1/observations`; the analysis compares
//! error rates from those counts. All of those names and the error set come
//! from [`Outcome`], so a new outcome is one new variant.

use std::fmt;
use std::ops::{Index, IndexMut};

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The outcome of a request (DESIGN.md's `ok | client_error | ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Succeeded: a complete stream, or a 1xx-3xx response.
    Ok,
    /// 4xx other than 429: the request was at fault.
    ClientError,
    /// 5xx, or the upstream closed before answering.
    ServerError,
    /// 429: the upstream shed load.
    RateLimited,
    /// No connection to the upstream.
    ConnectError,
    /// The upstream went silent past the read timeout.
    Timeout,
    /// A 2xx stream with an error event, without `[DONE]` or
    /// `finish_reason`, or cut by the upstream: the errors a status code
    /// hides.
    StreamError,
    /// The client left before the response was complete.
    ClientAbort,
}

impl Outcome {
    /// How many outcomes there are.
    pub const COUNT: usize = 8;

    /// Every outcome, in label order (the order of the `requests` keys in
    /// `/v1/observations`).
    pub const ALL: [Outcome; Outcome::COUNT] = [
        Outcome::Ok,
        Outcome::ClientError,
        Outcome::ServerError,
        Outcome::RateLimited,
        Outcome::ConnectError,
        Outcome::Timeout,
        Outcome::StreamError,
        Outcome::ClientAbort,
    ];

    /// The name on the wire and in the `outcome` metric label: `ok`,
    /// `client_error`, `server_error`, `rate_limited`, `connect_error`,
    /// `timeout`, `stream_error`, `client_abort`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
            Outcome::RateLimited => "rate_limited",
            Outcome::ConnectError => "connect_error",
            Outcome::Timeout => "timeout",
            Outcome::StreamError => "stream_error",
            Outcome::ClientAbort => "client_abort",
        }
    }

    /// The outcome named `name` ([`Outcome::as_str`]).
    pub fn from_label(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == name)
    }

    /// Index in [`Outcome::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the outcome counts against the cohort that served it: the
    /// upstream failed, shed load, could not be reached, went silent, or
    /// broke its stream.
    pub const fn is_error(self) -> bool {
        matches!(
            self,
            Outcome::ServerError
                | Outcome::RateLimited
                | Outcome::ConnectError
                | Outcome::Timeout
                | Outcome::StreamError
        )
    }

    /// Whether the outcome says nothing about the version that served it:
    /// the client's own mistake (`client_error`) or departure
    /// (`client_abort`). Neutral outcomes are left out of error rates
    /// altogether, as neither errors nor successes.
    pub const fn is_neutral(self) -> bool {
        matches!(self, Outcome::ClientError | Outcome::ClientAbort)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Finished requests per [`Outcome`]. Serialized as an object with every
/// outcome's name as a key, in [`Outcome::ALL`] order; read back leniently
/// (a missing outcome is 0, an outcome this build does not know is
/// ignored), since fields may be added within a schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct RequestCounts([u64; Outcome::COUNT]);

impl RequestCounts {
    /// The count of `outcome`.
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.0[outcome.index()]
    }

    /// Counts one more request with `outcome`.
    pub fn record(&mut self, outcome: Outcome) {
        self.0[outcome.index()] += 1;
    }

    /// Every outcome with its count, in [`Outcome::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Outcome, u64)> + '_ {
        Outcome::ALL.into_iter().map(|o| (o, self.get(o)))
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Requests whose outcome counts against the cohort
    /// ([`Outcome::is_error`]).
    pub fn errors(&self) -> u64 {
        self.sum_where(Outcome::is_error)
    }

    /// Requests that judge the cohort: all but the neutral ones
    /// ([`Outcome::is_neutral`]); the denominator of an error rate.
    pub fn judged(&self) -> u64 {
        self.sum_where(|o| !o.is_neutral())
    }

    fn sum_where(&self, pick: impl Fn(Outcome) -> bool) -> u64 {
        self.iter().filter(|&(o, _)| pick(o)).map(|(_, n)| n).sum()
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &RequestCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    /// What was counted since `earlier`; `None` when some count went down
    /// (the counter restarted).
    pub fn since(&self, earlier: &RequestCounts) -> Option<RequestCounts> {
        let mut out = RequestCounts::default();
        for o in Outcome::ALL {
            out[o] = self.get(o).checked_sub(earlier.get(o))?;
        }
        Some(out)
    }
}

impl Index<Outcome> for RequestCounts {
    type Output = u64;
    fn index(&self, outcome: Outcome) -> &u64 {
        &self.0[outcome.index()]
    }
}

impl IndexMut<Outcome> for RequestCounts {
    fn index_mut(&mut self, outcome: Outcome) -> &mut u64 {
        &mut self.0[outcome.index()]
    }
}

/// Counts from `(outcome, count)` pairs; an outcome given twice adds up.
impl FromIterator<(Outcome, u64)> for RequestCounts {
    fn from_iter<I: IntoIterator<Item = (Outcome, u64)>>(iter: I) -> Self {
        let mut out = RequestCounts::default();
        for (o, n) in iter {
            out[o] += n;
        }
        out
    }
}

impl Serialize for RequestCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Outcome::COUNT))?;
        for (o, n) in self.iter() {
            map.serialize_entry(o.as_str(), &n)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for RequestCounts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountsVisitor;
        impl<'de> Visitor<'de> for CountsVisitor {
            type Value = RequestCounts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("request counts by outcome")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestCounts, A::Error> {
                let mut out = RequestCounts::default();
                while let Some(name) = map.next_key::<String>()? {
                    match Outcome::from_label(&name) {
                        Some(o) => out[o] = map.next_value()?,
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(CountsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_parse_back() {
        for (i, o) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(o.index(), i);
            assert_eq!(Outcome::from_label(o.as_str()), Some(o));
            assert!(
                o.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{o}"
            );
        }
        assert_eq!(Outcome::from_label("Ok"), None);
        assert_eq!(Outcome::from_label("nope"), None);
    }

    #[test]
    fn errors_and_neutral_outcomes_are_the_analysis_sets() {
        let errors: Vec<&str> = Outcome::ALL
            .into_iter()
            .filter(|o| o.is_error())
            .map(Outcome::as_str)
            .collect();
        assert_eq!(
            errors,
            [
                "server_error",
                "rate_limited",
                "connect_error",
                "timeout",
                "stream_error"
            ]
        );
        let neutral: Vec<&str> = Outcome::ALL
            .into_iter()
            .filter(|o| o.is_neutral())
            .map(Outcome::as_str)
            .collect();
        assert_eq!(neutral, ["client_error", "client_abort"]);
        assert!(!Outcome::Ok.is_error() && !Outcome::Ok.is_neutral());
    }

    #[test]
    fn counts_serialize_every_outcome_in_label_order() {
        let counts: RequestCounts = [(Outcome::Ok, 3), (Outcome::ClientAbort, 1)]
            .into_iter()
            .collect();
        assert_eq!(
            serde_json::to_string(&counts).expect("serializes"),
            r#"{"ok":3,"client_error":0,"server_error":0,"rate_limited":0,"connect_error":0,"timeout":0,"stream_error":0,"client_abort":1}"#
        );
        let back: RequestCounts =
            serde_json::from_str(r#"{"client_abort":1,"ok":3,"teapot":9}"#).expect("lenient");
        assert_eq!(back, counts);
        assert!(serde_json::from_str::<RequestCounts>(r#"{"ok":-1}"#).is_err());
    }

    #[test]
    fn counts_add_subtract_and_judge() {
        let mut a: RequestCounts = [
            (Outcome::Ok, 10),
            (Outcome::ServerError, 2),
            (Outcome::ClientError, 3),
            (Outcome::ClientAbort, 1),
        ]
        .into_iter()
        .collect();
        assert_eq!((a.total(), a.errors(), a.judged()), (16, 2, 12));
        let before = a;
        a.record(Outcome::StreamError);
        a.add(&[(Outcome::Ok, 4)].into_iter().collect());
        let delta = a.since(&before).expect("only grew");
        assert_eq!((delta[Outcome::Ok], delta[Outcome::StreamError]), (4, 1));
        assert_eq!(delta.total(), 5);
        assert_eq!(before.since(&a), None, "went down: a restart");
    }
}
