//! weir-controller: the pure rollout engine (`engine/`), the Kubernetes
//! reconciler (`kube/`) and the local-mode runner (`local/`).
//!
//! Not built yet: see issues 4 and 6.
