//! Proxy snapshots: the analysis side of `GET /v1/observations`.
//!
//! Every weir proxy replica serves cumulative, mergeable observations per
//! (route, cohort, revision): latency [`Distribution`]s and outcome counts.
//! A controller polls every replica each analysis interval, takes the
//! delta against the previous poll of the same replica, and merges the
//! replicas; this module does those three steps as pure functions, so the
//! arithmetic is tested without sockets.
//!
//! The wire format is versioned (`schemaVersion`); the proxy's committed
//! example `proxy/tests/fixtures/observations-v1.json` is parsed by this
//! module's tests, so a change on either side that breaks the other fails
//! a test. (The proxy serializes its own types; moving both sides onto these
//! types is a follow-up.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::SourceError;
use crate::dist::Distribution;
use crate::sequential::Counts;

/// The schema version this reader understands.
pub const SCHEMA_VERSION: u32 = 1;

/// Outcomes that count against the cohort that served them. A client's own
/// mistake (`client_error`) or departure (`client_abort`) says nothing about
/// the version, so those are left out of error rates altogether.
pub const ERROR_OUTCOMES: [&str; 5] = [
    "server_error",
    "rate_limited",
    "connect_error",
    "timeout",
    "stream_error",
];
/// Outcomes that are neither errors nor successes of the cohort.
pub const NEUTRAL_OUTCOMES: [&str; 2] = ["client_error", "client_abort"];

/// One replica's observations, as served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The wire format's version.
    pub schema_version: u32,
    /// Names the replica's process life: a new value means its counters
    /// restarted from zero.
    pub instance: String,
    /// One entry per (route, cohort, revision).
    pub cohorts: Vec<CohortSnapshot>,
    /// The traffic generation each route in service was built from
    /// (Kubernetes: the Canary's `status.traffic.generation`); added within
    /// version 1, so absent in older proxies' answers.
    #[serde(default)]
    pub routes: BTreeMap<String, u64>,
}

/// Observations of one (route, cohort, revision).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CohortSnapshot {
    /// Route name.
    pub route: String,
    /// Cohort name (`stable`, `canary`, ...).
    pub cohort: String,
    /// Backend revision, when known.
    pub revision: Option<String>,
    /// Finished requests per outcome label.
    pub requests: BTreeMap<String, u64>,
    /// Time to first token, seconds.
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
}

type Key = (String, String, Option<String>);

impl CohortSnapshot {
    fn key(&self) -> Key {
        (
            self.route.clone(),
            self.cohort.clone(),
            self.revision.clone(),
        )
    }

    /// Error counts for the error-rate comparison: errors are
    /// [`ERROR_OUTCOMES`]; the total leaves out [`NEUTRAL_OUTCOMES`].
    pub fn error_counts(&self) -> Counts {
        let count = |names: &[&str]| {
            names
                .iter()
                .map(|n| self.requests.get(*n).copied().unwrap_or(0))
                .sum::<u64>()
        };
        let all: u64 = self.requests.values().sum();
        Counts {
            errors: count(&ERROR_OUTCOMES),
            total: all - count(&NEUTRAL_OUTCOMES),
        }
    }

    /// Adds `other`'s observations (another replica, interval or revision
    /// of the same cohort).
    pub fn add(&mut self, other: &CohortSnapshot) {
        for (outcome, n) in &other.requests {
            *self.requests.entry(outcome.clone()).or_insert(0) += n;
        }
        self.ttft_seconds.merge(&other.ttft_seconds);
        self.inter_token_seconds.merge(&other.inter_token_seconds);
        self.duration_seconds.merge(&other.duration_seconds);
        self.output_tokens += other.output_tokens;
        self.inflight += other.inflight;
    }

    /// What happened since `earlier`, or `None` when a counter went down
    /// (the caller then takes `self` whole: the replica restarted).
    fn since(&self, earlier: &CohortSnapshot) -> Option<CohortSnapshot> {
        let mut requests = BTreeMap::new();
        for (outcome, n) in &self.requests {
            let before = earlier.requests.get(outcome).copied().unwrap_or(0);
            requests.insert(outcome.clone(), n.checked_sub(before)?);
        }
        Some(CohortSnapshot {
            requests,
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
            ..self.clone()
        })
    }
}

impl Snapshot {
    /// Parses a `/v1/observations` body.
    ///
    /// # Errors
    /// [`SourceError::Parse`] for malformed JSON; [`SourceError::Unsupported`]
    /// for a schema version this build does not know.
    pub fn parse(json: &str) -> Result<Snapshot, SourceError> {
        let snapshot: Snapshot = serde_json::from_str(json).map_err(|e| SourceError::Parse {
            what: "proxy observations".into(),
            line: Some(e.line()),
            reason: e.to_string(),
        })?;
        if snapshot.schema_version != SCHEMA_VERSION {
            return Err(SourceError::Unsupported {
                what: format!(
                    "proxy observations schema version {} (this build reads {SCHEMA_VERSION}): upgrade weir so \
                     the controller and the proxies match",
                    snapshot.schema_version
                ),
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
        cohort: &str,
        outcome: &str,
        n: u64,
        ttft: &[f64],
    ) -> Snapshot {
        let c = s
            .cohorts
            .iter_mut()
            .find(|c| c.cohort == cohort)
            .expect("cohort in example");
        *c.requests.entry(outcome.into()).or_insert(0) += n;
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
            .find(|c| c.cohort == "canary")
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
            canary.requests["ok"] + canary.requests["client_abort"]
        );
    }

    #[test]
    fn deltas_subtract_per_key_and_restarts_take_the_later_whole() {
        let earlier = example();
        let later = with_requests(
            earlier.clone(),
            "canary",
            "stream_error",
            3,
            &[0.2, 0.3, 0.4],
        );
        let delta = later.since(&earlier);
        let canary = delta
            .cohorts
            .iter()
            .find(|c| c.cohort == "canary")
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
            .find(|c| c.cohort == "stable")
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
        let a = with_requests(example(), "stable", "ok", 10, &[0.1; 10]);
        let b = with_requests(example(), "stable", "server_error", 2, &[]);
        let merged = merge_replicas([&a, &b]);
        let stable = merged
            .iter()
            .find(|c| c.cohort == "stable")
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
            .find(|c| c.cohort == "stable")
            .expect("stable")
            .ttft_seconds
            .count();
        let from_b = b
            .cohorts
            .iter()
            .find(|c| c.cohort == "stable")
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
