//! weir-controller: the pure rollout engine (`engine/`), the Kubernetes
//! reconciler (`kube/`: builders now, the reconciler with issue 6) and the local-mode runner (`local/`).

pub mod engine;
pub mod kube;
pub mod local;
