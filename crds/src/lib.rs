//! weir-crds: the `Canary` resource types, shared by the Kubernetes and local
//! modes. Nothing else lives here.
//!
//! These are wire types: they say what a user may write and what the
//! controller reports, with serde for both directions and schemars for the
//! CRD's OpenAPI schema. Values that need parsing (durations, margins) stay
//! strings here; the controller converts the whole spec once into validated
//! domain types and names the field of the first problem it finds
//! (`weir_controller::engine::spec`). Local mode reads the same YAML with
//! `spec.backends` in place of `spec.targetRef`.
//!
//! Spec structs refuse unknown fields: a misspelt `maxIncrese` must be an
//! error, not a silently ignored margin.

//! One module per part of the resource: [`spec`] (the `Canary` kind and its
//! spec), [`analysis`] (`spec.analysis`), [`status`], [`traffic`] (the
//! contract with the proxies, `status.traffic`), and the [`names`] and
//! [`annotations`] the controller, the proxies and the CLI share. Every
//! type is re-exported here, so `weir_crds::Canary` is the path to use.

pub mod analysis;
pub mod annotations;
pub mod names;
pub mod spec;
pub mod status;
pub mod traffic;

pub use analysis::{
    AnalysisSpec, MetricKind, MetricSource, MetricSpec, OnInconclusive, PrometheusSource,
    ScrapeSource, Signal,
};
pub use spec::{
    AnalysisStep, Backend, Backends, BlueGreenStrategy, Canary, CanarySpec, CanaryStrategy,
    GraphComponent, GraphSpec, Isolation, ModelVersions, PauseStep, Promotion, PromotionStrategy,
    ReplicaPolicy, RouteSpec, ServicePort, Step, StickySpec, Strategy, TargetRef,
};
pub use status::{
    AbortStatus, Acknowledged, AnalysisStatus, AnalysisWindow, CanaryStatus, CohortReplicas,
    ComponentStatus, Cutover, EffectStatus, HistoryEntry, HistoryEvent, PausedReason, Phase,
    VerdictStatus, WarmupProgress, WindowPurpose,
};
pub use traffic::{Cohort, Traffic, TrafficBackend};

/// The first lines of `crds/yaml/canary.yaml`.
const CRD_YAML_HEADER: &str = "\
# The Canary CustomResourceDefinition, generated from crds/src/lib.rs.
# Do not edit: regenerate with `weir crds > crds/yaml/canary.yaml`
# (crds/tests/crd_yaml.rs fails when this copy drifts from the types).
";

/// The `Canary` CustomResourceDefinition as YAML, exactly as committed in
/// `crds/yaml/canary.yaml` and printed by `weir crds`.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    use kube::CustomResourceExt;
    let body = serde_saphyr::to_string(&Canary::crd())?;
    Ok(format!("{CRD_YAML_HEADER}{body}"))
}

/// The API group of every weir resource.
pub const GROUP: &str = "weir.dev";
/// The version of the `Canary` resource.
pub const VERSION: &str = "v1alpha1";

/// A structural CRD schema cannot say "a string or an object" (serde's
/// externally tagged enum with unit and data variants), so such a field is
/// left open in the schema (`x-kubernetes-preserve-unknown-fields`). CEL
/// cannot check it either (the API server gives untyped fields no CEL type),
/// so the controller's spec conversion is what names a bad value.
pub(crate) fn string_or_object(schema: &mut schemars::Schema) {
    let description = schema.get("description").cloned();
    let mut open = schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true });
    if let Some(d) = description {
        open.insert("description".into(), d);
    }
    *schema = open;
}
