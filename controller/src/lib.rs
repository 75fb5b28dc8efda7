//! weir-controller: the pure rollout engine (`engine/`), the Kubernetes
//! reconciler (`kube/`, issue 6) and the local-mode runner (`local/`).

pub mod engine;
pub mod local;
