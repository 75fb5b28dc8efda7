//! weir-proxy: the embedded L7 proxy that splits traffic between cohorts,
//! meters every request and stream, and serves observations.
//!
//! This crate's core is pure and has no sockets, so every rule can be tested
//! on its own; the pingora server wires it together:
//!
//! - [`config`]: where route tables come from (a YAML file, memory, later
//!   Kubernetes), validated once, published over a `watch` channel.
//! - [`route`]: the route table and the per-request decision
//!   [`route::route`]`(&table, &request, draw)`.
//! - [`meter`]: what one request did (TTFT, inter-token gaps, tokens,
//!   outcome), from its status and body chunks.
//! - [`observe`]: cumulative per-(route, cohort, revision) aggregates for
//!   `/v1/observations` and `/metrics`.
//! - [`metrics`]: the exported metric names and label values, in one place.

pub mod config;
pub mod meter;
pub mod metrics;
pub mod observe;
pub mod route;
