//! Two-cohort comparisons, one file per kind of metric. Each returns the
//! estimates and standard errors the decision needs plus the classical
//! fixed-sample tests a person expects to see; none of them decides.

pub mod errors;
pub mod gauge;
pub mod latency;
pub mod trend;

pub use errors::{ErrorComparison, compare_errors};
pub use gauge::{GaugeComparison, GaugeInterval, compare_gauges};
pub use latency::{LatencyComparison, QuantileComparison, QuantileEstimate, compare_latency};
pub use trend::{Trend, trend};
