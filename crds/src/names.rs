//! Names the parts agree on: the objects the controller owns, the labels and
//! annotations it sets, and the route a proxy builds for a Canary. The
//! controller writes them, the proxies and the CLI read them; defining them
//! once here keeps the three in step.

use crate::Cohort;

/// `app.kubernetes.io/managed-by`.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value on everything weir owns (the EndpointSlice controller
/// copies a Service's labels onto its slices, so the proxies select the
/// slices of weir's Services with `MANAGED_BY=MANAGER`).
pub const MANAGER: &str = "weir";
/// The Canary an object belongs to.
pub const CANARY_LABEL: &str = "weir.dev/canary";
/// The cohort an object serves (`stable`, `canary`).
pub const COHORT_LABEL: &str = "weir.dev/cohort";
/// The pod-template revision an object carries.
pub const REVISION_ANNOTATION: &str = "weir.dev/revision";
/// The finalizer that lets the controller restore the target before a
/// Canary is deleted (`spec.revertOnDeletion`).
pub const FINALIZER: &str = "weir.dev/finalizer";
/// The name of the one port of weir's Services (and so of their
/// EndpointSlices' port, which the proxies connect to).
pub const SERVICE_PORT: &str = "http";
/// The label the EndpointSlice controller puts on every slice, naming
/// its Service (Kubernetes' own, `discovery.k8s.io/v1`).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Lease the controller replicas elect their leader on (in the
/// controller's namespace).
pub const LEASE: &str = "weir-controller";

/// The stable copy of target Deployment `target`.
pub fn stable_deployment(target: &str) -> String {
    format!("{target}-stable")
}

/// The Service of one cohort of Canary `canary`.
pub fn service(canary: &str, cohort: Cohort) -> String {
    format!("{canary}-{}", cohort.as_str())
}

/// The blue-green preview Service of Canary `canary`.
pub fn preview_service(canary: &str) -> String {
    format!("{canary}-preview")
}

/// The proxy route of Canary `namespace/name`: `namespace.name`. A
/// namespace has no dots (it is a DNS label), so the first dot splits
/// the two; route names appear in URLs and metric labels, where `/`
/// would need escaping.
pub fn route(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

/// The Service of one cohort of graph component `component` of Canary
/// `canary`.
pub fn component_service(canary: &str, component: &str, cohort: Cohort) -> String {
    format!("{canary}-{component}-{}", cohort.as_str())
}
