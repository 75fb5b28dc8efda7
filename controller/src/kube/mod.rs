//! Kubernetes mode: the only place that talks to the API server.
//!
//! - [`builders`]: one builder per object the controller owns;
//! - [`commands`]: `weir promote/abort/retry` annotations into engine
//!   commands;
//! - [`reconcile`]: one reconcile of one Canary (read, plan, write status,
//!   converge the owned objects, record Events);
//! - [`desired`]: the owned objects and replica counts a Canary's status
//!   asks for, a pure function; `apply` writes them; [`graph`] the same
//!   for each component of a graph canary;
//! - [`fleet`]: the proxy replicas' observations, accumulated;
//! - [`gauges`]: GPU metrics of each cohort (pod scrape or Prometheus);
//! - [`events`]: one Kubernetes Event per transition;
//! - [`pods`]: why a cohort's pods are not ready, in their own words;
//! - [`metrics`]: the controller's own metrics and health endpoints;
//! - [`rbac`]: the rules of the controller's ClusterRole, in one place;
//! - [`leader`]: leader election on a Lease (only the leader reconciles);
//! - [`backoff`]: retries with exponential backoff and jitter, and the
//!   start-up connection to the API server;
//! - [`run`]: the process: watches, the reconcile loop, the fleet poller.

mod apply;
pub mod backoff;
pub mod builders;
pub mod commands;
pub mod desired;
pub mod events;
#[cfg(test)]
mod fixtures;
pub mod fleet;
pub mod gauges;
pub mod graph;
pub mod leader;
pub mod metrics;
pub mod pods;
pub mod rbac;
pub mod reconcile;
pub mod run;

/// The field manager of every write the controller makes.
pub const MANAGER: &str = "weir-controller";
