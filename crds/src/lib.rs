//! weir-crds: the `Canary` resource types (serde + schemars), shared by the
//! Kubernetes and local modes. Nothing else lives here.
//!
//! Not built yet: see issue 4.
