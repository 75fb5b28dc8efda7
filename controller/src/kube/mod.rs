//! Kubernetes mode: the only place that talks to the API server.
//!
//! Built so far: the builders of the objects the controller owns and the
//! names of its labels. The reconciler, the proxy's cluster config source
//! and the kubectl plugin come with issue 6.

pub mod builders;
pub mod names;
