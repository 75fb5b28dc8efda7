//! Kubernetes mode: the only place that talks to the API server.
//!
//! Built so far: the builders of the objects the controller owns, the
//! names of its labels, the reading of command annotations, and a first
//! slice of the reconciler (one pass: read, plan, apply, write status). The reconciler, the proxy's cluster config source
//! and the kubectl plugin come with issue 6.

pub mod builders;
pub mod commands;
pub mod names;
pub mod reconcile;
