//! weir-analysis: everything weir needs to decide whether a canary is as good
//! as its baseline, and nothing else (no Kubernetes, no proxy, no clock).
//!
//! - [`dist`]: the one input type for latencies, a mergeable log-linear
//!   distribution built from raw samples, proxy snapshots or Prometheus
//!   histogram deltas.
//! - [`stats`]: classical fixed-sample tests (Mann-Whitney, Fisher's exact,
//!   Welch's t) and the special functions behind them, checked against scipy.
//! - [`compare`]: two-cohort comparisons per kind of metric (latency and
//!   other positive distributions, error rate, gauge): estimates, standard
//!   errors and reference tests.
//! - [`sequential`]: confidence sequences that stay valid however often the
//!   analysis looks.
//! - [`decision`]: margins (per direction), effects and the verdict with
//!   the rule that fired.
//! - [`observations`]: the proxies' `/v1/observations` document, with the
//!   delta and merge arithmetic on it (no I/O).
//! - [`source`] (feature `sources`, on by default): where observations come
//!   from (raw samples, `/metrics` scrapes, the Prometheus HTTP API), behind
//!   one trait; [`names`] holds the metric names of the inference servers it
//!   reads.
//!
//! # Features
//!
//! - `sources` (default): the metric sources, with their HTTP client,
//!   Prometheus text parser and label regexes. Without it the crate is the
//!   statistics and the observations document, and depends on serde,
//!   serde_json, thiserror and `weir-core` only: what the proxy needs to
//!   write the document.

pub mod compare;
pub mod decision;
pub mod dist;
pub mod names;
pub mod observations;
pub mod sequential;
#[cfg(feature = "sources")]
pub mod source;
pub mod stats;

pub use dist::{DistError, Distribution};

pub use decision::{
    Bounds, Decision, Direction, Margin, MetricKind, MetricResult, MetricSpec, Observations,
    Policy, Verdict, decide,
};
pub use sequential::Counts;
