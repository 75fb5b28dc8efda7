//! The `Canary` resource and its spec: what to roll out (`targetRef` or
//! local `backends`), which requests it owns, the strategy that moves
//! traffic, and how stable is promoted. The analysis part of the spec is
//! in [`crate::analysis`], the status in [`crate::status`].

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{AnalysisSpec, CanaryStatus, string_or_object};

/// A progressive rollout of an inference frontend: the stable and canary
/// cohorts, the steps that move traffic between them, and the analysis that
/// decides whether the canary may continue.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
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
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new(TARGET_FIXED_RULE).message(TARGET_FIXED_MESSAGE).field_path(".spec.targetRef.name")
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
    {
        "rule": "!has(self.models) || has(self.route.model)",
        "message": "a model canary needs the name clients ask for: add route: {model: chat}",
    },
    {
        "rule": "!has(self.graph) || has(self.targetRef)",
        "message": "a graph is Kubernetes mode: give targetRef (its serving component)",
    },
    {
        "rule": "!has(self.graph) || !has(self.targetRef) || !has(self.graph.order) || self.graph.order.all(n, n == self.targetRef.name || self.graph.components.exists(c, c.name == n))",
        "message": "graph.order names a component that is neither targetRef.name nor in graph.components",
        "fieldPath": ".graph.order",
    },
    {
        "rule": "!has(self.graph) || !has(self.graph.order) || size(self.graph.order) == size(self.graph.components) + 1",
        "message": "graph.order must name every component once: targetRef.name and each of graph.components",
        "fieldPath": ".graph.order",
    },
    {
        "rule": "!has(self.graph) || !has(self.targetRef) || !self.graph.components.exists(c, c.name == self.targetRef.name)",
        "message": "graph.components lists the workers; the serving component is targetRef, not one of them",
        "fieldPath": ".graph.components",
    },
    {
        "rule": "!has(self.graph) || !has(self.gpuBudget)",
        "message": "gpuBudget counts one Deployment's pods; a graph's pods hold different numbers of GPUs: set graph.gpuBudget (nvidia.com/gpu over every component) instead",
        "fieldPath": ".gpuBudget",
    },
]))]
pub struct CanarySpec {
    /// Kubernetes mode: the Deployment whose template is the desired version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    /// Local mode: the two running frontends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Backends>,
    /// Kubernetes mode: an inference graph rolled out as one version. The
    /// target is the component that serves traffic; these are the
    /// Deployments behind it (prefill and decode workers), each copied per
    /// cohort and started, promoted and scaled down in `order`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<GraphSpec>,
    /// Kubernetes mode: the port the frontend serves on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServicePort>,
    /// Which requests the proxy routes through this Canary.
    #[serde(default)]
    pub route: RouteSpec,
    /// A model canary: the model name (a LoRA adapter, a fine-tune, a new
    /// model) each cohort asks the pool for, for requests that ask for
    /// `route.model`. Both cohorts are served by the same backends; steps
    /// set weights only and nothing is scaled or copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<ModelVersions>,
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
    /// Kubernetes mode: webhooks that get this Canary's rollout events, by
    /// name, from the controller's notifications Secret
    /// (docs/notifications.md). Webhooks marked `allCanaries` there get
    /// them without being named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
}

fn default_progress_deadline() -> u32 {
    900
}

fn default_true() -> bool {
    true
}

/// The CEL rule (on the whole Canary: it reads status) that fixes
/// `targetRef.name` once weir holds the target: its pods are then in the
/// stable copy, which a new name would leave behind, serving with nothing
/// managing it. Until then (`status.targetReplicas` unset: the target was
/// never found, e.g. a typo) the name may be corrected in place.
const TARGET_FIXED_RULE: &str = "!has(self.spec.targetRef) || !has(oldSelf.spec.targetRef) || \
     self.spec.targetRef.name == oldSelf.spec.targetRef.name || \
     !has(oldSelf.status) || !has(oldSelf.status.targetReplicas)";
const TARGET_FIXED_MESSAGE: &str = "targetRef.name cannot change: weir holds the target's pods in its stable copy. Delete this Canary (with revertOnDeletion the Deployment gets its stable version and replicas back) and create one for the new target";

/// The workload that carries the desired version. Its name is fixed once
/// weir holds it ([`TARGET_FIXED_RULE`]).
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

/// An inference graph: the Deployments behind the target that make one
/// version together, and how each cohort's components find each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GraphSpec {
    /// The components besides the target, by Deployment name.
    #[schemars(length(min = 1, max = 15))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub components: Vec<GraphComponent>,
    /// The order components start and are updated in, by name, the target
    /// included, each once (as Dynamo's `spec.restart.strategy.order`).
    /// Scale-down runs in reverse. Default: `components` as listed, then
    /// the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 63)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub order: Option<Vec<String>>,
    /// Keeps each version's components to themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// The `nvidia.com/gpu` both cohorts' pods may hold together, over
    /// every component (a pod counts what it requests, else its limits).
    /// Stable gives capacity up as the canary grows, and no component asks
    /// the scheduler for more than its share (docs/graphs.md). Unlike
    /// `spec.gpuBudget`, which counts one Deployment's pods, this counts
    /// GPUs: a graph's pods hold different numbers of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub gpu_budget: Option<u32>,
}

/// One Deployment of a graph, besides the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.urlEnv) || has(self.port)",
    "message": "urlEnv needs the port the component serves on: add port: 8000",
}]))]
pub struct GraphComponent {
    /// The Deployment's name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The port it serves on: weir gives it a Service per cohort,
    /// `<canary>-<name>-stable` and `<canary>-<name>-canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// An environment variable set on every component of a cohort to the
    /// URL of this component's Service of the same cohort, e.g.
    /// `DECODE_URL` = `http://chat-decode-canary:8000`: for stacks that
    /// address their workers by URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub url_env: Option<String>,
}

/// Generation isolation: an environment variable that tells each version's
/// components apart, as Dynamo's operator does for its own rolling updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Isolation {
    /// The variable, e.g. `DYN_NAMESPACE`: set on every container of every
    /// component to `<base>-<revision>`.
    #[schemars(length(min = 1, max = 128), pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub env: String,
    /// The value's prefix (default: the Canary's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 52))]
    pub base: Option<String>,
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
    /// Only requests whose JSON body asks for this model (its top-level
    /// `model`), e.g. `chat`; other requests on the same hosts and path
    /// are left to other routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub model: Option<String>,
}

impl Default for RouteSpec {
    fn default() -> Self {
        RouteSpec {
            hosts: Vec::new(),
            path_prefix: default_path_prefix(),
            model: None,
        }
    }
}

/// The model names a model canary's cohorts ask the pool for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelVersions {
    /// The model serving now, e.g. `chat-lora-v7`.
    #[schemars(length(min = 1, max = 256))]
    pub stable: String,
    /// The model on trial, e.g. `chat-lora-v8`.
    #[schemars(length(min = 1, max = 256))]
    pub canary: String,
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

/// How stable takes on the canary's version after a win.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Promotion {
    /// `RollingUpdate` or `Recreate`.
    #[serde(default)]
    pub strategy: PromotionStrategy,
    /// RollingUpdate: extra pods during the update (default: computed).
    /// When set, it bounds the whole promotion: both cohorts together hold
    /// at most the replicas plus this many pods, the canary's included
    /// (unset, the proven canary grows to full size beside stable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// RollingUpdate: pods that may be down (default: computed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

impl Promotion {
    /// `maxSurge` as a pod count for `replicas` (a percentage rounded up),
    /// when the user set it.
    pub fn surge_set(&self, replicas: u32) -> Option<u32> {
        self.max_surge
            .as_ref()
            .map(|v| count_of(Some(v), replicas, 0.0, true))
    }

    /// `maxSurge` as a pod count for `replicas`: as set, else 25% rounded
    /// up (the Deployment controller's default).
    pub fn surge(&self, replicas: u32) -> u32 {
        count_of(self.max_surge.as_ref(), replicas, 0.25, true)
    }

    /// `maxUnavailable` as a pod count for `replicas`: as set (a percentage
    /// rounded down), else 0.
    pub fn unavailable(&self, replicas: u32) -> u32 {
        count_of(self.max_unavailable.as_ref(), replicas, 0.0, false)
    }
}

/// A Deployment-style count: an integer as it is, a percentage of
/// `replicas` rounded `up` or down; `default_fraction` of `replicas` when
/// unset or unreadable (the API server's schema admits only these forms).
fn count_of(v: Option<&IntOrString>, replicas: u32, default_fraction: f64, up: bool) -> u32 {
    let n = f64::from(replicas);
    let x = match v {
        Some(IntOrString::Int(i)) => return u32::try_from(*i).unwrap_or(0),
        Some(IntOrString::String(s)) => s
            .trim()
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<f64>().ok())
            .map_or(n * default_fraction, |p| n * p / 100.0),
        None => n * default_fraction,
    };
    // Counts of replicas: small non-negative whole numbers.
    let x = if up { x.ceil() } else { x.floor() };
    x.clamp(0.0, f64::from(u32::MAX)) as u32
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
