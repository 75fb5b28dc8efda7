//! weir-analysis: everything weir needs to decide whether a canary is as good
//! as its baseline, and nothing else (no Kubernetes, no proxy, no clock).
//!
//! - [`dist`]: the one input type for latencies, a mergeable log-linear
//!   distribution built from raw samples, proxy snapshots or Prometheus
//!   histogram deltas.
//! - [`stats`]: classical fixed-sample tests (Mann-Whitney, Fisher's exact,
//!   Welch's t) and the special functions behind them, checked against scipy.
//! - [`source`]: where observations come from, behind one trait.

pub mod dist;
pub mod names;
pub mod source;
pub mod stats;

pub use dist::{DistError, Distribution};
pub mod compare;
pub mod decision;
pub mod sequential;

pub use decision::{
    Decision, Margin, MetricKind, MetricResult, MetricSpec, Observations, Policy, Verdict, decide,
};
pub use sequential::Counts;
