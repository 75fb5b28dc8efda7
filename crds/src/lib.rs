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

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// Names the parts agree on: the objects the controller owns, the labels and
/// annotations it sets, and the route a proxy builds for a Canary. The
/// controller writes them, the proxies and the CLI read them; defining them
/// once here keeps the three in step.
pub mod names {
    use super::Cohort;

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
}

/// Annotations through which `weir promote`, `abort` and `retry` ask the
/// controller to act. Each holds a request id (a timestamp); the controller
/// acts once per new id and records it in `status.acknowledged`, so a
/// command is never applied twice and never by editing status behind the
/// controller's back.
pub mod annotations {
    /// Promote now: skip the remaining steps (`full`) or end the current
    /// pause or analysis (`step`). Value: `<id>` or `<id>;full`.
    pub const PROMOTE: &str = "weir.dev/promote";
    /// Abort the run: traffic back to stable first.
    pub const ABORT: &str = "weir.dev/abort";
    /// Restart an aborted run from its first step.
    pub const RETRY: &str = "weir.dev/retry";
    /// Set by `weir restore` while it puts a Canary back (its status, the
    /// objects it owns): the controller leaves the Canary alone until the
    /// annotation is gone, so that it never acts on half a restore (a
    /// Canary without its status would be adopted anew). Value: when the
    /// restore began.
    pub const RESTORING: &str = "weir.dev/restoring";
}

/// A progressive rollout of an inference frontend: the stable and canary
/// cohorts, the steps that move traffic between them, and the analysis that
/// decides whether the canary may continue.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Canary",
    namespaced,
    status = "CanaryStatus",
    shortname = "wcan",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"number","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"Step","type":"integer","jsonPath":".status.currentStep"}"#,
    printcolumn = r#"{"name":"Stable","type":"string","jsonPath":".status.stableRevision"}"#,
    printcolumn = r#"{"name":"Canary","type":"string","jsonPath":".status.canaryRevision"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.targetRef) != has(self.backends)",
        "message": "give exactly one of targetRef (Kubernetes mode) and backends (local mode)",
    },
    {
        "rule": "!has(self.targetRef) || has(self.service)",
        "message": "Kubernetes mode needs the frontend's port: add service: {port: 8000}",
    },
]))]
pub struct CanarySpec {
    /// Kubernetes mode: the Deployment whose template is the desired version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    /// Local mode: the two running frontends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Backends>,
    /// Kubernetes mode: the port the frontend serves on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServicePort>,
    /// Which requests the proxy routes through this Canary.
    #[serde(default)]
    pub route: RouteSpec,
    /// Keep sessions on one cohort (monotone: raising the canary weight only
    /// moves sessions onto the canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickySpec>,
    /// How traffic moves: canary steps or a blue-green cutover.
    pub strategy: Strategy,
    /// How the cohorts are compared.
    pub analysis: AnalysisSpec,
    /// How stable becomes the canary's version once it has won.
    #[serde(default)]
    pub promotion: Promotion,
    /// A run that makes no progress for this long is aborted.
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: u32,
    /// Kubernetes mode: when the Canary is deleted, restore the stable
    /// version on the target before letting go.
    #[serde(default = "default_true")]
    pub revert_on_deletion: bool,
    /// Kubernetes mode: total replicas (GPUs' worth of pods) the two cohorts
    /// may hold together; stable scales down as the canary scales up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_budget: Option<u32>,
    /// Hold the run where it is (`weir pause` / `weir resume`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

fn default_progress_deadline() -> u32 {
    900
}

fn default_true() -> bool {
    true
}

/// The workload that carries the desired version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// `apps/v1`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// `Deployment`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// The Deployment's name.
    pub name: String,
}

fn default_api_version() -> String {
    "apps/v1".into()
}

fn default_kind() -> String {
    "Deployment".into()
}

/// Local mode: the stable and canary frontends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backends {
    /// The version serving now.
    pub stable: Backend,
    /// The version on trial.
    pub canary: Backend,
}

/// One local-mode frontend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    /// Base URL the proxy sends requests to, e.g. `http://127.0.0.1:8001`.
    pub url: String,
    /// Prometheus text endpoint of the frontend or its DCGM exporter, for
    /// `scrape` metrics, e.g. `http://127.0.0.1:8001/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// Servers (GPUs' worth of capacity) behind the URL; per-replica load is
    /// the cohort's request rate divided by this.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1))]
    pub replicas: u32,
}

fn default_one() -> u32 {
    1
}

/// Kubernetes mode: the Services' port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// The port the frontend serves on.
    #[schemars(range(min = 1))]
    pub port: u16,
}

/// Which requests belong to this Canary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// Host names matched (empty: any host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path prefix matched.
    #[serde(default = "default_path_prefix")]
    #[schemars(pattern(r"^/"))]
    pub path_prefix: String,
}

impl Default for RouteSpec {
    fn default() -> Self {
        RouteSpec {
            hosts: Vec::new(),
            path_prefix: default_path_prefix(),
        }
    }
}

fn default_path_prefix() -> String {
    "/".into()
}

/// Where the session key is read. Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.header) != has(self.cookie)",
    "message": "give exactly one of header or cookie, e.g. sticky: {header: x-session-id}",
}]))]
pub struct StickySpec {
    /// A request header, e.g. `x-session-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

/// The strategy. Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.canary) != has(self.blueGreen)",
    "message": "give exactly one of canary and blueGreen",
}]))]
pub struct Strategy {
    /// Weighted steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStrategy>,
    /// A preview, then one atomic cutover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStrategy>,
}

/// Weighted steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryStrategy {
    /// How many canary replicas run at each weight.
    #[serde(default)]
    pub replicas: ReplicaPolicy,
    /// The steps, in order.
    #[schemars(length(min = 1))]
    pub steps: Vec<Step>,
}

/// Canary replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = string_or_object)]
pub enum ReplicaPolicy {
    /// Canary replicas follow the weight, so per-replica load is the same in
    /// both cohorts and the comparison is fair.
    #[default]
    MatchWeight,
    /// A fixed number of canary replicas.
    Fixed(u32),
}

/// One step of a canary strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    /// Send this percentage of traffic to the canary (0–100, resolution
    /// 0.01).
    SetWeight(#[schemars(range(min = 0, max = 100))] f64),
    /// Wait: for `duration`, or until promoted by hand.
    Pause(PauseStep),
    /// Compare the cohorts until a verdict, within min/max durations.
    Analysis(AnalysisStep),
}

/// A pause.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PauseStep {
    /// How long, e.g. `5m`; absent: until `weir promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// An analysis step.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisStep {
    /// No promote verdict is taken before this, e.g. `2m` (an abort is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duration: Option<String>,
    /// Without a verdict by then, `onInconclusive` applies, e.g. `15m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
}

/// Blue-green: the canary runs as a preview, then takes all traffic at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlueGreenStrategy {
    /// Replicas of the preview before cutover (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub preview_replicas: Option<u32>,
    /// Cut over once pre-promotion analysis passes; otherwise wait for
    /// `weir promote`.
    #[serde(default = "default_true")]
    pub auto_promote: bool,
    /// How long the old side stays warm after cutover, e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay: Option<String>,
    /// Analysis of the preview (override-header traffic only) before cutover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<AnalysisStep>,
    /// Analysis after cutover; an abort verdict rolls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<AnalysisStep>,
}

/// How the cohorts are compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisSpec {
    /// How often a verdict is taken, e.g. `30s`.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Samples right after a weight or replica change are ignored for this
    /// long, e.g. `60s`.
    #[serde(default = "default_warmup")]
    pub warmup: String,
    /// Probability that no verdict of the run is wrong, above 0.5 and
    /// below 1.
    #[serde(default = "default_confidence")]
    #[schemars(extend("minimum" = 0.5, "exclusiveMinimum" = true, "maximum" = 1.0, "exclusiveMaximum" = true))]
    pub confidence: f64,
    /// Requests per cohort before latency and error effects are judged.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Largest difference in per-replica request rate between the cohorts
    /// under which they are judged, e.g. `20%`.
    #[serde(default = "default_max_load_imbalance")]
    pub max_load_imbalance: String,
    /// What happens when an analysis reaches `maxDuration` undecided.
    #[serde(default)]
    pub on_inconclusive: OnInconclusive,
    /// The metrics compared.
    pub metrics: Vec<MetricSpec>,
}

fn default_interval() -> String {
    "30s".into()
}

fn default_warmup() -> String {
    "60s".into()
}

fn default_confidence() -> f64 {
    0.95
}

fn default_min_samples() -> u64 {
    200
}

fn default_max_load_imbalance() -> String {
    "20%".into()
}

/// What an undecided analysis leads to at its `maxDuration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnInconclusive {
    /// Abort: traffic back to stable.
    #[default]
    Abort,
    /// Continue to the next step as if promoted.
    Promote,
    /// Pause until a person promotes or aborts.
    Pause,
}

/// One compared metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSpec {
    /// Name shown in verdicts, e.g. `ttft`.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The kind of signal.
    pub kind: MetricKind,
    /// Where the values come from: `proxy` (the default; latency and
    /// error rates), or `{prometheus: {...}}` / `{scrape: {...}}` (gauges).
    #[serde(default)]
    pub source: MetricSource,
    /// Latency from the proxy: which one (default `ttft`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
    /// Latency: quantiles compared besides the shift, e.g. `[0.5, 0.95]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 0, max = 1)))]
    pub quantiles: Vec<f64>,
    /// How much worse the canary may be: `10%` (relative) or `0.5pp`
    /// (percentage points, error rates).
    pub max_increase: String,
    /// Error rate: abort as soon as the canary's own rate is shown above
    /// this, e.g. `5%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_limit: Option<String>,
    /// Gauge: divide each interval's value by the cohort's throughput
    /// (utilization per request served).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_request: bool,
}

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MetricKind {
    /// A latency distribution.
    Latency,
    /// A proportion of failed requests.
    ErrorRate,
    /// A per-interval gauge (GPU utilization).
    Gauge,
}

/// Which latency the proxy measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Signal {
    /// Time to first token.
    Ttft,
    /// Gaps between streamed events.
    Itl,
    /// Whole request duration.
    Duration,
}

/// Where a metric's values come from: `proxy`, `{prometheus: {...}}` or
/// `{scrape: {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = string_or_object)]
pub enum MetricSource {
    /// The weir proxy's own per-request measurements.
    #[default]
    Proxy,
    /// A PromQL query; `$pods` and `$cohort` are replaced per cohort.
    Prometheus(PrometheusSource),
    /// A gauge scraped from each cohort's Prometheus text endpoint (local
    /// mode: `backends.*.metrics`; Kubernetes: the cohort's pods on `port`).
    Scrape(ScrapeSource),
}

/// A Prometheus query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusSource {
    /// e.g. `http://prometheus:9090`.
    pub address: String,
    /// e.g. `avg(DCGM_FI_DEV_GPU_UTIL{pod=~"$pods"})`.
    pub query: String,
}

/// A directly scraped gauge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScrapeSource {
    /// Kubernetes mode: the metrics port (DCGM exporter: 9400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The metric, e.g. `DCGM_FI_DEV_GPU_UTIL`; series are averaged.
    pub metric: String,
    /// Kubernetes mode: a label selector of the DCGM exporter pods (the
    /// GPU Operator's DaemonSet, e.g. `app=nvidia-dcgm-exporter`). The
    /// exporters on the nodes running a cohort's pods are scraped and only
    /// the series whose `pod` and `namespace` labels name those pods count.
    /// Without it, the cohort's own pods are scraped on `port` (a sidecar
    /// exporter, or the frontend's own `/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<String>,
}

/// A structural CRD schema cannot say "a string or an object" (serde's
/// externally tagged enum with unit and data variants), so such a field is
/// left open in the schema (`x-kubernetes-preserve-unknown-fields`). CEL
/// cannot check it either (the API server gives untyped fields no CEL type),
/// so the controller's spec conversion is what names a bad value.
fn string_or_object(schema: &mut schemars::Schema) {
    let description = schema.get("description").cloned();
    let mut open = schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true });
    if let Some(d) = description {
        open.insert("description".into(), d);
    }
    *schema = open;
}

/// How stable takes on the canary's version after a win.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Promotion {
    /// `RollingUpdate` or `Recreate`.
    #[serde(default)]
    pub strategy: PromotionStrategy,
    /// RollingUpdate: extra pods during the update (default: computed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// RollingUpdate: pods that may be down (default: computed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

impl Default for Promotion {
    fn default() -> Self {
        Promotion {
            strategy: PromotionStrategy::RollingUpdate,
            max_surge: None,
            max_unavailable: None,
        }
    }
}

/// The promotion strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum PromotionStrategy {
    /// Replace stable's pods a few at a time; traffic stays on the canary
    /// until stable is ready.
    #[default]
    RollingUpdate,
    /// Replace all of stable's pods at once (no surge GPUs needed).
    Recreate,
}

/// What the controller reports, and the traffic contract with the proxies.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// The spec generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the run is.
    #[serde(default)]
    pub phase: Phase,
    /// One line for people, e.g. `step 2/7: analysis, 812/1000 samples`.
    #[serde(default)]
    pub message: String,
    /// Index of the current step.
    #[serde(default)]
    pub current_step: u32,
    /// Fingerprint of the steps up to and including the current one, as
    /// the run took them. An edit that changes them during the run (a step
    /// removed, inserted or changed before or at the current one) restarts
    /// the run from its first step, so no step is skipped or judged twice
    /// under a plan nobody wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_hash: Option<String>,
    /// When the current step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// Why the run is paused (phase `Paused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<PausedReason>,
    /// The canary's share of traffic now, in percent (for `kubectl get`).
    #[serde(default)]
    pub canary_weight: f64,
    /// The version stable serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// The version on trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,
    /// When the run made its last progress (for `progressDeadlineSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_at: Option<Time>,
    /// Ready, Progressing, AnalysisPassing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Replicas the engine wants per cohort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<CohortReplicas>,
    /// Kubernetes mode: the replicas the user asked of the target. The
    /// controller scales the target as the canary cohort, so the user's
    /// count is kept here: recorded at first sight, and again when the user
    /// scales the target while no run is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_replicas: Option<u32>,
    /// The contract with every proxy replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
    /// The analysis window in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<AnalysisWindow>,
    /// The latest verdict with its numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<AnalysisStatus>,
    /// Blue-green progress after cutover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover: Option<Cutover>,
    /// Why the run was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortStatus>,
    /// Commands already acted on.
    #[serde(default)]
    pub acknowledged: Acknowledged,
    /// Promotions, aborts and rollbacks, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Nothing recorded yet: the first reconcile adopts the current version
    /// as stable.
    #[default]
    Initializing,
    /// Stable serves everything; no canary.
    Idle,
    /// Steps are running.
    Progressing,
    /// Held by a pause step, `spec.paused` or `onInconclusive: pause`.
    Paused,
    /// The canary has won; stable is being updated to its version.
    Promoting,
    /// The canary's version is stable now.
    Succeeded,
    /// Traffic is back on stable; the canary lost or was stopped.
    Aborted,
}

impl Phase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Phase; 7] = [
        Phase::Initializing,
        Phase::Idle,
        Phase::Progressing,
        Phase::Paused,
        Phase::Promoting,
        Phase::Succeeded,
        Phase::Aborted,
    ];

    /// The name as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Initializing => "Initializing",
            Phase::Idle => "Idle",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Promoting => "Promoting",
            Phase::Succeeded => "Succeeded",
            Phase::Aborted => "Aborted",
        }
    }

    /// Whether the run is over (nothing moves until a new revision or a
    /// retry).
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Aborted | Phase::Idle)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PausedReason {
    /// A `pause` step without a duration: until `weir promote`.
    Step,
    /// `spec.paused` (`weir pause`): until `weir resume`.
    Manual,
    /// An analysis reached `maxDuration` undecided with
    /// `onInconclusive: pause`: until `weir promote` or `weir abort`.
    Inconclusive,
    /// Blue-green with `autoPromote: false`: until `weir promote`.
    AwaitingPromotion,
}

/// Replicas per cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CohortReplicas {
    /// Stable replicas.
    pub stable: u32,
    /// Canary replicas.
    pub canary: u32,
}

/// The route every proxy replica builds from this Canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// Increases with every change; proxies ignore older ones.
    pub generation: u64,
    /// Which requests.
    pub route: RouteSpec,
    /// Session affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickySpec>,
    /// Whether `x-weir-cohort` may pick the cohort (blue-green preview).
    #[serde(default)]
    pub override_header: bool,
    /// The cohorts and their weights.
    pub backends: Vec<TrafficBackend>,
}

/// One cohort of a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficBackend {
    /// stable or canary.
    pub cohort: Cohort,
    /// Kubernetes mode: the cohort's Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Kubernetes mode: its port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Local mode: the upstream URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Share of traffic in percent (resolution 0.01).
    pub weight: f64,
    /// The version this cohort serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// A cohort of a Canary: the two of [`weir_core::Cohort`] a Canary has (the
/// schema allows exactly these), converted with `From` where the proxy and
/// the analysis take the open `weir_core::Cohort`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Cohort {
    /// The version serving now.
    Stable,
    /// The version on trial.
    Canary,
}

impl Cohort {
    /// Both cohorts.
    pub const BOTH: [Cohort; 2] = [Cohort::Stable, Cohort::Canary];

    /// `stable` or `canary` ([`weir_core::STABLE`], [`weir_core::CANARY`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Cohort::Stable => weir_core::STABLE,
            Cohort::Canary => weir_core::CANARY,
        }
    }
}

impl From<Cohort> for weir_core::Cohort {
    fn from(c: Cohort) -> Self {
        match c {
            Cohort::Stable => weir_core::Cohort::Stable,
            Cohort::Canary => weir_core::Cohort::Canary,
        }
    }
}

impl fmt::Display for Cohort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The evidence window of the analysis in progress. Observations count only
/// from `opensAt` (the end of the warm-up after the last traffic change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisWindow {
    /// Changes whenever the window restarts; evidence of another id is stale.
    pub id: u64,
    /// Evidence before this is warm-up and is ignored.
    pub opens_at: Time,
    /// Which analysis this window serves.
    pub purpose: WindowPurpose,
}

/// Which analysis a window serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WindowPurpose {
    /// A canary `analysis` step.
    Step,
    /// Blue-green, before cutover (override-header traffic).
    PrePromotion,
    /// Blue-green, after cutover.
    PostPromotion,
}

/// The latest verdict with its numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// Promote, Continue or Abort.
    pub verdict: VerdictStatus,
    /// When it was taken.
    pub at: Time,
    /// The rule that fired, in a sentence.
    pub rule: String,
    /// Each effect: estimate, interval, samples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<EffectStatus>,
}

/// A verdict as reported in status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VerdictStatus {
    /// Every effect is within its margin.
    Promote,
    /// Not enough evidence yet.
    Continue,
    /// An effect is beyond its margin.
    Abort,
}

/// One judged effect, as reported in status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectStatus {
    /// e.g. `ttft p95`.
    pub name: String,
    /// within, exceeds, undecided, insufficient.
    pub finding: String,
    /// Canary against stable, e.g. `+4.1% [−1.2%, +9.8%] (n 812/3130)`.
    pub summary: String,
    /// The point estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<f64>,
    /// Lower end of the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    /// Upper end of the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
    /// The margin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// Samples in stable.
    pub stable_n: u64,
    /// Samples in the canary.
    pub canary_n: u64,
}

/// Blue-green after cutover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cutover {
    /// When all traffic moved to the new side.
    pub at: Time,
    /// When the old side may be scaled down (once drained).
    pub scale_down_at: Time,
}

/// Why a run was aborted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortStatus {
    /// A reason constant, e.g. `AnalysisFailed`.
    pub reason: String,
    /// What happened, naming the metric when there is one.
    pub message: String,
    /// When.
    pub at: Time,
}

/// Command ids already acted on (see [`annotations`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Acknowledged {
    /// Last promote request handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<String>,
    /// Last abort request handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<String>,
    /// Last retry request handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
}

/// One line of history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// What happened.
    pub event: HistoryEvent,
    /// The canary revision concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Why, in a sentence.
    pub reason: String,
    /// When.
    pub at: Time,
}

/// A history event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HistoryEvent {
    /// The canary's version became stable.
    Promoted,
    /// The run was aborted.
    Aborted,
    /// A newer revision replaced the run.
    Superseded,
    /// Blue-green: post-promotion analysis rolled the cutover back.
    RolledBack,
}
