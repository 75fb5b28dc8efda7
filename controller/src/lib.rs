//! weir-controller: the pure rollout engine (`engine/`), the evidence both
//! shells gather for it (`evidence`), the Kubernetes reconciler (`kube/`),
//! the local-mode runner (`local/`) and the rollout notifications sent to
//! webhooks (`notify/`).

pub mod engine;
pub mod evidence;
pub mod kube;
pub mod local;
pub mod models;
pub mod notify;
