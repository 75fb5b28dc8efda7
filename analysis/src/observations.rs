//! The observations document, `GET /v1/observations`: what every weir proxy
//! replica serves and the controller reads, defined once.
//!
//! The proxy builds a [`Snapshot`] from its counters and serializes it; the
//! controller (and local mode, in-process, without JSON) reads the same
//! type, takes the delta against the previous poll of the same replica
//! ([`Snapshot::since`]) and merges the replicas ([`merge_replicas`]); this
//! module does those steps as pure functions, so the arithmetic is tested
//! without sockets. It does no I/O and needs none of the crate's metric
//! sources, so the proxy depends on it with `default-features = false`.
//!
//! Why here and not in `weir-core`: the document is made of the analysis's
//! [`Distribution`]s, and its delta and merge are the analysis's arithmetic.
//! The names inside it ([`Cohort`], [`Outcome`] through [`RequestCounts`])
//! come from `weir-core`, which the proxy's meter shares.
//!
//! # Schema (version 1)
//!
//! ```json
//! {
//!   "schemaVersion": 1,
//!   "instance": "weir-proxy-7d9f-1",
//!   "cohorts": [
//!     {
//!       "route": "chat", "cohort": "canary", "revision": "7c1a02",
//!       "requests": {"ok": 812, "client_error": 3, "server_error": 1,
//!                    "rate_limited": 0, "connect_error": 0, "timeout": 0,
//!                    "stream_error": 2, "client_abort": 5},
//!       "ttftSeconds": {"layout": "log-linear/64/-30", "zero": 0, "sum": 81.2, "bins": [[1890, 3], ...]},
//!       "interTokenSeconds": {...},
//!       "durationSeconds": {...},
//!       "outputTokens": 120344,
//!       "inflight": 4,
//!       "outputTokensPerRequest": {...},
//!       "decodeTokensPerSecond": {...},
//!       "lengthFinishes": 12,
//!       "emptyAnswers": 0,
//!       "tokensFromUsage": 812
//!     }
//!   ],
//!   "routes": {"llm.chat": 12}
//! }
//! ```
//!
//! - Everything but `inflight` is cumulative since `instance` started: the
//!   collector takes deltas between scrapes ([`Distribution::delta_since`])
//!   and treats a new `instance` (or a decreasing count) as a restart.
//! - `revision` is `null` when the backend has none; one cohort may appear
//!   with several revisions after a rollout step.
//! - The `requests` keys are the names of every [`Outcome`], all always
//!   present.
//! - Distributions are [`Distribution`]'s own JSON, in seconds: TTFT
//!   (requests that got a body), one inter-token sample per gap between SSE
//!   content events, and the duration of every request.
//! - The answer's shape (added within version 1, so absent — empty — in
//!   older proxies' answers), over `ok` requests only: a cut or failed
//!   answer says nothing about how long the model's answers are.
//!   `outputTokensPerRequest` holds each one's output tokens (0 in the
//!   distribution's zero bin), `decodeTokensPerSecond` each streamed
//!   one's tokens after the first over the time from its first content
//!   event to its last, `lengthFinishes` counts those cut at the token
//!   limit (`finish_reason: "length"`), `emptyAnswers` those with no
//!   output token, and `tokensFromUsage` those whose count is the
//!   server's own `usage` (the rest are counted from stream events, which
//!   undercounts a server that sends several tokens per event).
//! - `routes` (added within version 1) maps every route in service *now* to
//!   the traffic generation it was built from (Kubernetes: the Canary's
//!   `status.traffic.generation`; 0 for file and in-process sources). The
//!   controller reads it as "which generation does every replica serve"
//!   before it scales a cohort down. Unlike the rest it is not cumulative,
//!   and it lists routes that have no requests yet.
//! - A reader must refuse a `schemaVersion` it does not know
//!   ([`Snapshot::parse`]); fields may be added within a version, never
//!   removed or changed.
//!
//! The proxy's test `snapshot_matches_the_committed_fixture` writes an
//! example to `proxy/tests/fixtures/observations-v1.json`, and this
//! module's tests read it, so the committed example is what the code writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
#[cfg(doc)]
use weir_core::Outcome;
use weir_core::{Cohort, RequestCounts};

use crate::dist::Distribution;
use crate::sequential::Counts;

/// The version of the document this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// One replica's observations, as served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Names the replica's process life: a new value means its counters
    /// restarted from zero.
    pub instance: String,
    /// One entry per (route, cohort, revision) seen, sorted.
    pub cohorts: Vec<CohortSnapshot>,
    /// The traffic generation each route in service was built from
    /// (Kubernetes: the Canary's `status.traffic.generation`); added within
    /// version 1, so absent (empty) in older proxies' answers.
    #[serde(default)]
    pub routes: BTreeMap<String, u64>,
}

/// Cumulative observations of one (route, cohort, revision).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CohortSnapshot {
    /// Route name.
    pub route: String,
    /// The cohort.
    pub cohort: Cohort,
    /// Backend revision, when known.
    pub revision: Option<String>,
    /// Finished requests per outcome.
    pub requests: RequestCounts,
    /// Time to first body chunk, seconds.
    pub ttft_seconds: Distribution,
    /// Gaps between streamed tokens, seconds.
    pub inter_token_seconds: Distribution,
    /// Request durations, seconds.
    pub duration_seconds: Distribution,
    /// Output tokens.
    pub output_tokens: u64,
    /// Requests in flight when the snapshot was taken (a gauge: not summed
    /// over time, summed over replicas).
    pub inflight: u64,
    /// Output tokens of each `ok` request.
    #[serde(default)]
    pub output_tokens_per_request: Distribution,
    /// Decode speed of each `ok` streamed request, tokens per second after
    /// the first token.
    #[serde(default)]
    pub decode_tokens_per_second: Distribution,
    /// `ok` requests cut at the token limit (`finish_reason: "length"`).
    #[serde(default)]
    pub length_finishes: u64,
    /// `ok` requests with no output token.
    #[serde(default)]
    pub empty_answers: u64,
    /// `ok` requests whose output tokens are the server's `usage`.
    #[serde(default)]
    pub tokens_from_usage: u64,
}

/// What entries are kept and merged per: (route, cohort, revision).
pub type Key = (String, Cohort, Option<String>);

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or not the document's shape.
    #[error("cannot parse proxy observations at line {line}: {reason}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// What the parser said.
        reason: String,
    },
    /// A schema version this build does not know.
    #[error(
        "unsupported: proxy observations schema version {found} (this build reads {SCHEMA_VERSION}): upgrade weir so the controller and the proxies match"
    )]
    Version {
        /// The version the document declares.
        found: u32,
    },
}

impl CohortSnapshot {
    /// The entry's key.
    pub fn key(&self) -> Key {
        (
            self.route.clone(),
            self.cohort.clone(),
            self.revision.clone(),
        )
    }

    /// Error counts for the error-rate comparison: errors are the outcomes
    /// that count against the cohort ([`Outcome::is_error`]); the total
    /// leaves out the neutral ones ([`Outcome::is_neutral`]).
    pub fn error_counts(&self) -> Counts {
        Counts {
            errors: self.requests.errors(),
            total: self.requests.judged(),
        }
    }

    /// Adds `other`'s observations (another replica, interval or revision
    /// of the same cohort).
    pub fn add(&mut self, other: &CohortSnapshot) {
        self.requests.add(&other.requests);
        self.ttft_seconds.merge(&other.ttft_seconds);
        self.inter_token_seconds.merge(&other.inter_token_seconds);
        self.duration_seconds.merge(&other.duration_seconds);
        self.output_tokens += other.output_tokens;
        self.inflight += other.inflight;
        self.output_tokens_per_request
            .merge(&other.output_tokens_per_request);
        self.decode_tokens_per_second
            .merge(&other.decode_tokens_per_second);
        self.length_finishes += other.length_finishes;
        self.empty_answers += other.empty_answers;
        self.tokens_from_usage += other.tokens_from_usage;
    }

    /// Answers cut at the token limit, out of `ok` answers, for a
    /// proportion comparison like the error rate's.
    pub fn length_counts(&self) -> Counts {
        Counts {
            errors: self.length_finishes,
            total: self.requests[weir_core::Outcome::Ok],
        }
    }

    /// Empty answers, out of `ok` answers.
    pub fn empty_counts(&self) -> Counts {
        Counts {
            errors: self.empty_answers,
            total: self.requests[weir_core::Outcome::Ok],
        }
    }

    /// What happened since `earlier`, or `None` when a counter went down
    /// (the caller then takes `self` whole: the replica restarted).
    fn since(&self, earlier: &CohortSnapshot) -> Option<CohortSnapshot> {
        Some(CohortSnapshot {
            requests: self.requests.since(&earlier.requests)?,
            ttft_seconds: self.ttft_seconds.delta_since(&earlier.ttft_seconds).ok()?,
            inter_token_seconds: self
                .inter_token_seconds
                .delta_since(&earlier.inter_token_seconds)
                .ok()?,
            duration_seconds: self
                .duration_seconds
                .delta_since(&earlier.duration_seconds)
                .ok()?,
            output_tokens: self.output_tokens.checked_sub(earlier.output_tokens)?,
            inflight: self.inflight,
            output_tokens_per_request: self
                .output_tokens_per_request
                .delta_since(&earlier.output_tokens_per_request)
                .ok()?,
            decode_tokens_per_second: self
                .decode_tokens_per_second
                .delta_since(&earlier.decode_tokens_per_second)
                .ok()?,
            length_finishes: self.length_finishes.checked_sub(earlier.length_finishes)?,
            empty_answers: self.empty_answers.checked_sub(earlier.empty_answers)?,
            tokens_from_usage: self
                .tokens_from_usage
                .checked_sub(earlier.tokens_from_usage)?,
            ..self.clone()
        })
    }
}

impl Snapshot {
    /// Parses a `/v1/observations` body.
    ///
    /// # Errors
    /// [`ParseError::Json`] for malformed JSON; [`ParseError::Version`] for
    /// a schema version this build does not know.
    pub fn parse(json: &str) -> Result<Snapshot, ParseError> {
        let snapshot: Snapshot = serde_json::from_str(json).map_err(|e| ParseError::Json {
            line: e.line(),
            reason: e.to_string(),
        })?;
        if snapshot.schema_version != SCHEMA_VERSION {
            return Err(ParseError::Version {
                found: snapshot.schema_version,
            });
        }
        Ok(snapshot)
    }

    /// What this replica observed since `earlier` (its previous snapshot).
    /// Per key: the difference; the whole of `self` when the replica
    /// restarted (another `instance`) or a counter went down; keys new
    /// since `earlier` as they are.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let restarted = self.instance != earlier.instance;
        let before: BTreeMap<Key, &CohortSnapshot> =
            earlier.cohorts.iter().map(|c| (c.key(), c)).collect();
        let cohorts = self
            .cohorts
            .iter()
            .map(|c| match before.get(&c.key()) {
                Some(prev) if !restarted => c.since(prev).unwrap_or_else(|| c.clone()),
                _ => c.clone(),
            })
            .collect();
        Snapshot {
            cohorts,
            ..self.clone()
        }
    }
}

/// Merges the snapshots (or deltas) of several replicas into one entry per
/// (route, cohort, revision), in key order.
pub fn merge_replicas<'a>(
    snapshots: impl IntoIterator<Item = &'a Snapshot>,
) -> Vec<CohortSnapshot> {
    let mut merged: BTreeMap<Key, CohortSnapshot> = BTreeMap::new();
    for snapshot in snapshots {
        for c in &snapshot.cohorts {
            match merged.get_mut(&c.key()) {
                Some(acc) => acc.add(c),
                None => {
                    merged.insert(c.key(), c.clone());
                }
            }
        }
    }
    merged.into_values().collect()
}

#[cfg(test)]
mod tests {
    use weir_core::Outcome;

    use super::*;

    fn example() -> Snapshot {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../proxy/tests/fixtures/observations-v1.json"
        );
        let text = std::fs::read_to_string(path).expect("the proxy's committed example");
        Snapshot::parse(&text).expect("the proxy's own example parses")
    }

    fn with_requests(
        mut s: Snapshot,
        cohort: Cohort,
        outcome: Outcome,
        n: u64,
        ttft: &[f64],
    ) -> Snapshot {
        let c = s
            .cohorts
            .iter_mut()
            .find(|c| c.cohort == cohort)
            .expect("cohort in example");
        c.requests[outcome] += n;
        for v in ttft {
            c.ttft_seconds.record(*v).expect("finite");
        }
        s
    }

    #[test]
    fn the_proxys_example_parses_and_error_counts_leave_out_client_outcomes() {
        let s = example();
        assert_eq!(s.schema_version, 1);
        let canary = s
            .cohorts
            .iter()
            .find(|c| c.cohort == Cohort::Canary)
            .expect("canary");
        // 1 ok, 1 client_abort: the abort is neither an error nor a success.
        assert_eq!(
            canary.error_counts(),
            Counts {
                errors: 0,
                total: 1
            }
        );
        // Both canary requests got a first token; the client left the
        // second one later. TTFT counts every request that got that far.
        assert_eq!(
            canary.ttft_seconds.count(),
            canary.requests[Outcome::Ok] + canary.requests[Outcome::ClientAbort]
        );
    }

    #[test]
    fn the_example_is_written_back_byte_for_byte() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../proxy/tests/fixtures/observations-v1.json"
        );
        let text = std::fs::read_to_string(path).expect("the proxy's committed example");
        let written = serde_json::to_string_pretty(&example()).expect("serializes") + "\n";
        assert_eq!(written, text);
    }

    #[test]
    fn deltas_subtract_per_key_and_restarts_take_the_later_whole() {
        let earlier = example();
        let later = with_requests(
            earlier.clone(),
            Cohort::Canary,
            Outcome::StreamError,
            3,
            &[0.2, 0.3, 0.4],
        );
        let delta = later.since(&earlier);
        let canary = delta
            .cohorts
            .iter()
            .find(|c| c.cohort == Cohort::Canary)
            .expect("canary");
        assert_eq!(
            canary.error_counts(),
            Counts {
                errors: 3,
                total: 3
            }
        );
        assert_eq!(canary.ttft_seconds.count(), 3);
        let stable = delta
            .cohorts
            .iter()
            .find(|c| c.cohort == Cohort::Stable)
            .expect("stable");
        assert_eq!(
            stable.error_counts(),
            Counts {
                errors: 0,
                total: 0
            }
        );

        let restarted = Snapshot {
            instance: "weir-proxy-example-2".into(),
            ..later.clone()
        };
        let whole = restarted.since(&earlier);
        assert_eq!(whole.cohorts, later.cohorts);
    }

    #[test]
    fn replicas_merge_by_key() {
        let a = with_requests(example(), Cohort::Stable, Outcome::Ok, 10, &[0.1; 10]);
        let b = with_requests(example(), Cohort::Stable, Outcome::ServerError, 2, &[]);
        let merged = merge_replicas([&a, &b]);
        let stable = merged
            .iter()
            .find(|c| c.cohort == Cohort::Stable)
            .expect("stable");
        assert_eq!(
            stable.error_counts(),
            Counts {
                errors: 2,
                total: 1 + 10 + 1 + 2
            }
        );
        let from_a = a
            .cohorts
            .iter()
            .find(|c| c.cohort == Cohort::Stable)
            .expect("stable")
            .ttft_seconds
            .count();
        let from_b = b
            .cohorts
            .iter()
            .find(|c| c.cohort == Cohort::Stable)
            .expect("stable")
            .ttft_seconds
            .count();
        assert_eq!(stable.ttft_seconds.count(), from_a + from_b);
        assert_eq!(merged.len(), 2);
    }

    #[test]
    fn unknown_versions_and_bad_json_are_clear_errors() {
        let text = serde_json::to_string(&Snapshot {
            schema_version: 2,
            ..example()
        })
        .expect("serializes");
        let err = Snapshot::parse(&text).expect_err("version 2");
        assert!(
            err.to_string()
                .contains("schema version 2 (this build reads 1)"),
            "{err}"
        );
        let err = Snapshot::parse("{\"schemaVersion\": 1,").expect_err("truncated");
        assert!(err.to_string().contains("proxy observations"), "{err}");
    }
}
