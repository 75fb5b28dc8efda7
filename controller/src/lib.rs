//! weir-controller: the pure rollout engine (`engine/`), the evidence both
//! shells gather for it (`evidence`), the Kubernetes reconciler (`kube/`)
//! and the local-mode runner (`local/`).

pub mod engine;
pub mod evidence;
pub mod kube;
pub mod local;
