//! weir-core: the contracts that more than one part of weir speaks, each
//! defined once.
//!
//! - [`Cohort`]: which group of backends a request is judged with; its name
//!   is a metric label, a header value, a Service suffix and a key of the
//!   observations document.
//! - [`Weight`]: a share of traffic in basis points, the one type behind the
//!   proxy's route weights, the engine's steps and the Canary's
//!   `status.traffic` percentages (converted from and to the CRD's `f64`
//!   percent here, once, with [`WeightError`]).
//! - [`Outcome`] and [`RequestCounts`]: how a request ended, with the label
//!   and wire names and the set of outcomes that count as the cohort's
//!   errors; the proxy counts them, `/metrics` labels them, the analysis
//!   judges them.
//! - [`is_model_name`]: what a request's `model` may be, checked by the
//!   proxy's route table and the Canary's spec alike.
//! - [`Excerpt`]: how a message quotes a value that came from input, bounded
//!   so that one bad value cannot fill a terminal or a log.
//!
//! Why a crate of its own: the CRD types, the engine, the proxy and the
//! analysis all need these, and none of them should depend on another just
//! for a name or a number (the proxy would pull in Kubernetes, the CRDs would
//! pull in statistics). The crate depends on serde and thiserror only, does
//! no I/O, and has no features.
//!
//! The observations document itself (`GET /v1/observations`) is not here:
//! it is built from the analysis's `Distribution`, and the delta and merge
//! arithmetic on it is the analysis's, so it lives in the no-I/O module
//! `weir_analysis::observations`, which the proxy takes without the
//! analysis's metric sources (`default-features = false`).

mod cohort;
mod excerpt;
mod model;
mod names;
mod outcome;
mod weight;

pub use cohort::{CANARY, Cohort, CohortError, STABLE};
pub use excerpt::Excerpt;
pub use model::is_model_name;
pub use names::is_dns_label;
pub use outcome::{Outcome, RequestCounts};
pub use weight::{Weight, WeightError};
