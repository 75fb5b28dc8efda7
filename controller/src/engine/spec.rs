//! The validated rollout: `CanarySpec` converted once into domain types.
//!
//! The CRD's schema catches what a schema can say; everything else is
//! checked here, before any traffic moves: durations and margins parse,
//! weights are percentages with 0.01 resolution, steps make sense in order
//! (an analysis needs canary traffic to look at, a window must open before
//! the analysis ends), and in local mode every analysis runs at a split where
//! the per-replica load of the two cohorts can be compared. Each error names
//! the field path as written in YAML and says how to fix it.

use std::time::Duration;

use weir_analysis::{Bounds, Margin, MetricKind, MetricSpec, Policy};
use weir_core::is_model_name;
use weir_crds as crds;

/// A spec that cannot run, with the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SpecError {
    /// Path of the offending field, e.g. `spec.strategy.canary.steps[2].setWeight`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

fn bad<T>(field: impl Into<String>, problem: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError {
        field: field.into(),
        problem: problem.into(),
    })
}

/// A share of traffic in basis points (1/100 of a percent), `0..=10000`:
/// the one weight type of weir ([`weir_core::Weight`]), which the proxy and
/// the Canary's `status.traffic` use too, under the engine's name.
pub use weir_core::Weight as Share;

/// Where the cohorts run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Kubernetes: a target Deployment; replicas are scaled.
    Kubernetes {
        /// The target Deployment.
        target: String,
        /// The Canary's name: its cohorts' Services are
        /// `weir_crds::names::service(canary, cohort)`.
        canary: String,
        /// The port the frontend serves on (the Services' port).
        port: u16,
    },
    /// Local: two fixed frontends; nothing is scaled.
    Local {
        /// The stable frontend.
        stable: crds::Backend,
        /// The canary frontend.
        canary: crds::Backend,
    },
}

/// One canary step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Move the canary to this share.
    SetWeight(Share),
    /// Wait this long, or until promoted by hand.
    Pause(Option<Duration>),
    /// Judge until a verdict, within these bounds.
    Analysis(AnalysisBounds),
}

/// How long an analysis may and must run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalysisBounds {
    /// No promote verdict before this.
    pub min: Duration,
    /// `onInconclusive` after this.
    pub max: Duration,
}

impl AnalysisBounds {
    /// An analysis with no bounds written gets these.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(15 * 60);
}

/// The strategy.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Weighted steps.
    Canary {
        /// Canary replicas follow the weight (`None`) or are fixed.
        fixed_replicas: Option<u32>,
        /// The steps.
        steps: Vec<Step>,
    },
    /// Preview, cutover, post-promotion window.
    BlueGreen(BlueGreen),
}

/// Blue-green settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BlueGreen {
    /// Preview replicas (None: as many as stable).
    pub preview_replicas: Option<u32>,
    /// Cut over on a passing pre-promotion analysis without a person.
    pub auto_promote: bool,
    /// How long the old side stays warm after cutover.
    pub scale_down_delay: Duration,
    /// Analysis of the preview.
    pub pre: Option<AnalysisBounds>,
    /// Analysis after cutover; abort rolls back.
    pub post: Option<AnalysisBounds>,
}

impl BlueGreen {
    /// Default warm period of the old side.
    pub const DEFAULT_SCALE_DOWN_DELAY: Duration = Duration::from_secs(10 * 60);
}

/// One metric with where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// What the analysis judges.
    pub spec: MetricSpec,
    /// What the user asked to compare: says which of the proxy's
    /// measurements feed an answer-shape metric (the analysis judges
    /// `outputTokens` and `decodeSpeed` as distributions, the two shares
    /// as error-rate-like proportions).
    pub kind: crds::MetricKind,
    /// Where the values come from.
    pub source: crds::MetricSource,
    /// Which proxy latency (latency from the proxy only).
    pub signal: crds::Signal,
    /// Gauge per unit of throughput.
    pub per_request: bool,
}

/// Analysis settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Time between verdicts.
    pub interval: Duration,
    /// Evidence ignored after a traffic change.
    pub warmup: Duration,
    /// Requests per canary replica before the evidence counts, as well as
    /// `warmup` (0: time alone).
    pub warmup_requests: u64,
    /// Confidence, minimum samples, load balance.
    pub policy: Policy,
    /// What an undecided analysis leads to.
    pub on_inconclusive: crds::OnInconclusive,
    /// The metrics.
    pub metrics: Vec<Metric>,
}

/// A validated Canary spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Kubernetes or local.
    pub mode: Mode,
    /// Steps or blue-green.
    pub strategy: Strategy,
    /// How cohorts are compared.
    pub analysis: Analysis,
    /// Which requests.
    pub route: crds::RouteSpec,
    /// A model canary: the model each cohort asks the shared backends for.
    pub models: Option<crds::ModelVersions>,
    /// Session affinity.
    pub sticky: Option<crds::StickySpec>,
    /// No progress for this long aborts.
    pub progress_deadline: Duration,
    /// Total replicas both cohorts may hold (a graph: units, resolved by
    /// the Kubernetes shell from `graph.gpuBudget` and the GPUs each
    /// component's pods hold, [`super::graph::Graph::budget`]).
    pub gpu_budget: Option<u32>,
    /// How stable takes the promoted version.
    pub promotion: crds::Promotion,
    /// Held by `weir pause`.
    pub paused: bool,
    /// Kubernetes, a graph: every component in start order.
    pub graph: Option<super::graph::Graph>,
}

impl Rollout {
    /// The most pods both cohorts may hold while a promotion of `total`
    /// replicas runs: the GPU budget, and `total` plus the promotion's
    /// `maxSurge` when the user set one (the canary's pods count against
    /// it). `None`: no limit, and the proven canary grows to full size
    /// beside stable.
    pub fn promotion_limit(&self, total: u32) -> Option<u32> {
        let surge = self
            .promotion
            .surge_set(total)
            .map(|s| total.saturating_add(s));
        match (self.gpu_budget, surge) {
            (Some(b), Some(s)) => Some(b.min(s)),
            (b, s) => b.or(s),
        }
    }

    /// The canary steps (empty for blue-green).
    pub fn steps(&self) -> &[Step] {
        match &self.strategy {
            Strategy::Canary { steps, .. } => steps,
            Strategy::BlueGreen(_) => &[],
        }
    }

    /// Whether this is local mode.
    pub fn is_local(&self) -> bool {
        matches!(self.mode, Mode::Local { .. })
    }
}

/// Parses `500ms`, `30s`, `2m`, `1h30m`.
///
/// # Errors
/// A sentence naming the accepted forms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || {
        format!(
            "{text:?} is not a duration: write a number with a unit (ms, s, m, h), e.g. 30s, 2m or 1h30m"
        )
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(err()),
        };
        total += unit
            .checked_mul(u32::try_from(n).map_err(|_| err())?)
            .ok_or_else(err)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut s = (ms / 1000) as u64;
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if s >= size {
            out.push_str(&format!("{}{unit}", s / size));
            s %= size;
        }
    }
    out
}

fn duration_at(field: &str, text: &str) -> Result<Duration, SpecError> {
    parse_duration(text).or_else(|e| bad(field, e))
}

fn fraction_at(field: &str, text: &str, example: &str) -> Result<f64, SpecError> {
    match text.parse::<Margin>() {
        Ok(Margin::Relative(f)) | Ok(Margin::Absolute(f)) if text.trim().ends_with(['%', 'p']) => {
            Ok(f)
        }
        _ => bad(
            field,
            format!("{text:?} is not a percentage; write it like {example}"),
        ),
    }
}

/// The model fields: `route.model` a name, and a model canary's two names
/// distinct names with `route.model` to match on.
fn check_models(spec: &crds::CanarySpec) -> Result<(), SpecError> {
    if let Some(m) = &spec.route.model
        && !is_model_name(m)
    {
        return bad(
            "spec.route.model",
            format!("{m:?} is not a model name: give the name clients ask for, e.g. chat"),
        );
    }
    let Some(models) = &spec.models else {
        return Ok(());
    };
    if spec.route.model.is_none() {
        return bad(
            "spec.models",
            "a model canary needs the name clients ask for: add route: {model: chat}",
        );
    }
    if spec.gpu_budget.is_some() {
        return bad(
            "spec.gpuBudget",
            "a model canary scales nothing (both cohorts are the same pods): remove gpuBudget",
        );
    }
    for (field, name) in [("stable", &models.stable), ("canary", &models.canary)] {
        if !is_model_name(name) {
            return bad(
                format!("spec.models.{field}"),
                format!(
                    "{name:?} is not a model name: give the name the server serves, e.g. chat-lora-v8"
                ),
            );
        }
    }
    if models.stable == models.canary {
        return bad(
            "spec.models.canary",
            "is the same as stable's: name the model on trial",
        );
    }
    Ok(())
}

impl Rollout {
    /// Whether this is a model canary: both cohorts on the same backends,
    /// told apart by the model they ask for.
    pub fn is_model(&self) -> bool {
        self.models.is_some()
    }

    /// Whether weir runs pods for this rollout: Kubernetes mode with a
    /// Deployment per cohort. Local mode and model canaries (both cohorts
    /// on the same servers) scale and copy nothing.
    pub fn manages_pods(&self) -> bool {
        !self.is_local() && !self.is_model()
    }

    /// The model `cohort` asks for when a model canary starts (the spec's
    /// names; once one is promoted, the cohorts' revisions in status).
    pub fn model_of(&self, cohort: crds::Cohort) -> Option<&str> {
        self.models.as_ref().map(|m| match cohort {
            crds::Cohort::Stable => m.stable.as_str(),
            crds::Cohort::Canary => m.canary.as_str(),
        })
    }

    /// Validates the spec of Canary `name` once, into domain types.
    ///
    /// # Errors
    /// The first problem found, as a [`SpecError`] naming the field and the
    /// fix.
    pub fn new(name: &str, spec: &crds::CanarySpec) -> Result<Self, SpecError> {
        let mode = match (&spec.target_ref, &spec.backends) {
            (Some(t), None) => {
                if t.kind != "Deployment" {
                    return bad(
                        "spec.targetRef.kind",
                        format!(
                            "{:?} is not supported; point targetRef at a Deployment",
                            t.kind
                        ),
                    );
                }
                let Some(service) = spec.service else {
                    return bad(
                        "spec.service",
                        "Kubernetes mode needs the frontend's port: add service: {port: 8000}",
                    );
                };
                Mode::Kubernetes {
                    target: t.name.clone(),
                    canary: name.to_string(),
                    port: service.port,
                }
            }
            (None, Some(b)) => {
                for (cohort, backend) in [("stable", &b.stable), ("canary", &b.canary)] {
                    check_url(&format!("spec.backends.{cohort}.url"), &backend.url)?;
                    if let Some(m) = &backend.metrics {
                        check_url(&format!("spec.backends.{cohort}.metrics"), m)?;
                    }
                    if backend.replicas == 0 {
                        return bad(
                            format!("spec.backends.{cohort}.replicas"),
                            "must be at least 1 (the servers behind the URL)",
                        );
                    }
                }
                if b.stable.url == b.canary.url && spec.models.is_none() {
                    return bad(
                        "spec.backends.canary.url",
                        "is the same as stable's: point the canary at the new version's frontend",
                    );
                }
                Mode::Local {
                    stable: b.stable.clone(),
                    canary: b.canary.clone(),
                }
            }
            (Some(_), Some(_)) => {
                return bad(
                    "spec",
                    "has both targetRef and backends: use targetRef on Kubernetes, backends with weir run",
                );
            }
            (None, None) => {
                return bad(
                    "spec",
                    "needs targetRef (Kubernetes) or backends (weir run) to know what to roll out",
                );
            }
        };
        if let Some(s) = &spec.sticky {
            match (&s.header, &s.cookie) {
                (Some(h), None) | (None, Some(h)) if !h.trim().is_empty() => {}
                _ => {
                    return bad(
                        "spec.sticky",
                        "give exactly one of header or cookie, e.g. sticky: {header: x-session-id}",
                    );
                }
            }
        }
        if !spec.route.path_prefix.starts_with('/') {
            return bad(
                "spec.route.pathPrefix",
                format!("{:?} must start with /", spec.route.path_prefix),
            );
        }
        check_models(spec)?;
        let graph = match (&spec.graph, &spec.target_ref) {
            (None, _) => None,
            (Some(_), None) => {
                return bad(
                    "spec.graph",
                    "a graph is Kubernetes mode: give targetRef (its serving component)",
                );
            }
            (Some(_), Some(_)) if spec.models.is_some() => {
                return bad(
                    "spec.graph",
                    "a model canary runs no copies of anything: remove graph or models",
                );
            }
            (Some(_), Some(_)) if spec.gpu_budget.is_some() => {
                return bad(
                    "spec.gpuBudget",
                    "counts one Deployment's pods, and a graph's pods hold different numbers of GPUs: set spec.graph.gpuBudget (nvidia.com/gpu over every component) instead",
                );
            }
            (Some(_), Some(_)) if spec.promotion.max_surge.is_some() => {
                return bad(
                    "spec.promotion.maxSurge",
                    "is not supported with a graph: a graph's promotion moves all traffic to the canary graph at full size before the stable copies are replaced in order (a bounded surge would keep old and new workers serving one stable cohort): remove it",
                );
            }
            (Some(g), Some(t)) => Some(super::graph::Graph::new(name, &t.name, g)?),
        };
        let analysis = analysis(&spec.analysis)?;
        let strategy = strategy(&spec.strategy)?;
        let rollout = Rollout {
            mode,
            strategy,
            analysis,
            route: spec.route.clone(),
            models: spec.models.clone(),
            sticky: spec.sticky.clone(),
            progress_deadline: Duration::from_secs(u64::from(spec.progress_deadline_seconds)),
            gpu_budget: spec.gpu_budget,
            promotion: spec.promotion.clone(),
            paused: spec.paused,
            graph,
        };
        check_steps(&rollout)?;
        if rollout.is_local() {
            for (i, m) in rollout.analysis.metrics.iter().enumerate() {
                if let crds::MetricSource::Scrape(s) = &m.source
                    && s.exporter.is_some()
                {
                    return bad(
                        format!("spec.analysis.metrics[{i}].source.scrape.exporter"),
                        "selects DCGM exporter pods, which only exist on Kubernetes: remove it and give backends.*.metrics instead",
                    );
                }
            }
        }
        if spec.progress_deadline_seconds == 0 {
            return bad("spec.progressDeadlineSeconds", "must be positive, e.g. 900");
        }
        Ok(rollout)
    }
}

fn check_url(field: &str, url: &str) -> Result<(), SpecError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(()),
        _ => bad(
            field,
            format!("{url:?} is not an http(s) URL; write it like http://127.0.0.1:8001"),
        ),
    }
}

/// Most requests per replica a warm-up may wait for: beyond this a step
/// would spend its time warming up, not judging.
const MAX_WARMUP_REQUESTS: i64 = 100_000;

fn warmup_requests(n: i64) -> Result<u64, SpecError> {
    match u64::try_from(n) {
        Ok(n) if n <= MAX_WARMUP_REQUESTS.unsigned_abs() => Ok(n),
        Ok(_) => bad(
            "spec.analysis.warmupRequests",
            format!(
                "{n} requests per canary replica is more than a warm-up needs (at most {MAX_WARMUP_REQUESTS}); tens cover a cold replica, e.g. {}",
                crds::analysis::DEFAULT_WARMUP_REQUESTS
            ),
        ),
        Err(_) => bad(
            "spec.analysis.warmupRequests",
            format!(
                "{n} is negative: give the requests each canary replica serves before evidence counts, e.g. {}, or 0 for a warm-up by time alone",
                crds::analysis::DEFAULT_WARMUP_REQUESTS
            ),
        ),
    }
}

fn analysis(a: &crds::AnalysisSpec) -> Result<Analysis, SpecError> {
    let interval = duration_at("spec.analysis.interval", &a.interval)?;
    if interval < Duration::from_millis(100) {
        return bad(
            "spec.analysis.interval",
            "must be at least 100ms; verdicts every 10s–60s are typical",
        );
    }
    let warmup = duration_at("spec.analysis.warmup", &a.warmup)?;
    let warmup_requests = warmup_requests(a.warmup_requests)?;
    if !(a.confidence > 0.5 && a.confidence < 1.0) {
        return bad(
            "spec.analysis.confidence",
            format!("{} must be between 0.5 and 1, e.g. 0.95", a.confidence),
        );
    }
    let max_load_imbalance = fraction_at(
        "spec.analysis.maxLoadImbalance",
        &a.max_load_imbalance,
        "20%",
    )?;
    let policy = Policy {
        confidence: a.confidence,
        min_samples: a.min_samples,
        max_load_imbalance,
        ..Policy::default()
    };
    let mut metrics = Vec::with_capacity(a.metrics.len());
    for (i, m) in a.metrics.iter().enumerate() {
        let at = |f: &str| format!("spec.analysis.metrics[{i}].{f}");
        if m.name.trim().is_empty() {
            return bad(at("name"), "give the metric a name, e.g. ttft");
        }
        if let Some(j) = a.metrics[..i].iter().position(|o| o.name == m.name) {
            return bad(
                at("name"),
                format!(
                    "{:?} is already the name of metrics[{j}]; names must differ",
                    m.name
                ),
            );
        }
        let kind = match m.kind {
            crds::MetricKind::Latency => MetricKind::Latency,
            crds::MetricKind::ErrorRate
            | crds::MetricKind::TruncationRate
            | crds::MetricKind::EmptyRate => MetricKind::ErrorRate,
            crds::MetricKind::Gauge => MetricKind::Gauge,
            crds::MetricKind::OutputTokens | crds::MetricKind::DecodeSpeed => {
                MetricKind::Distribution
            }
        };
        let margin = |field: &str, text: &Option<String>| -> Result<Option<Margin>, SpecError> {
            match text {
                Some(t) => t.parse().map(Some).or_else(|e| bad(at(field), e)),
                None => Ok(None),
            }
        };
        let margins = match (
            margin("maxIncrease", &m.max_increase)?,
            margin("maxDecrease", &m.max_decrease)?,
            margin("maxChange", &m.max_change)?,
        ) {
            (None, None, Some(change)) => Bounds::max_change(change),
            (increase @ Some(_), decrease, None) | (increase, decrease @ Some(_), None) => {
                Bounds { increase, decrease }
            }
            (_, _, Some(_)) => {
                return bad(
                    at("maxChange"),
                    "is both ways already: give maxChange alone, or maxIncrease and maxDecrease",
                );
            }
            (None, None, None) => {
                return bad(
                    at("maxIncrease"),
                    "is missing: give the margin as maxIncrease, maxDecrease or maxChange, e.g. maxIncrease: 10%",
                );
            }
        };
        let hard_limit = match &m.hard_limit {
            Some(h) => Some(fraction_at(&at("hardLimit"), h, "5%")?),
            None => None,
        };
        match (kind, &m.source) {
            (
                MetricKind::Distribution,
                crds::MetricSource::Scrape(_) | crds::MetricSource::Prometheus(_),
            )
            | (
                MetricKind::ErrorRate,
                crds::MetricSource::Scrape(_) | crds::MetricSource::Prometheus(_),
            ) if m.kind != crds::MetricKind::ErrorRate => {
                return bad(
                    at("source"),
                    "what the answers look like is measured by the weir proxy on every request: use source: proxy (the default)",
                );
            }
            (MetricKind::Gauge, crds::MetricSource::Proxy) => {
                return bad(
                    at("source"),
                    "the proxy measures requests, not gauges: use source: {scrape: {metric: DCGM_FI_DEV_GPU_UTIL}} or a prometheus query",
                );
            }
            // Latency and error rates are the proxy's: it sees every request
            // of both cohorts with the cohort it went to. The engine reads
            // scrape and prometheus sources as one gauge value per cohort
            // and interval, so accepting them here would silently judge the
            // proxy's data under a source the user did not ask for.
            (
                MetricKind::ErrorRate | MetricKind::Latency,
                crds::MetricSource::Scrape(_) | crds::MetricSource::Prometheus(_),
            ) => {
                return bad(
                    at("source"),
                    "scrape and prometheus sources are read as gauges (kind: gauge); latency and error rates come from the weir proxy, which sees every request of both cohorts: use source: proxy (the default)",
                );
            }
            _ => {}
        }
        if m.signal.is_some() && kind != MetricKind::Latency {
            return bad(
                at("signal"),
                "only latency metrics take a signal (ttft, itl, duration)",
            );
        }
        if m.per_request && kind != MetricKind::Gauge {
            return bad(at("perRequest"), "only gauges can be divided by throughput");
        }
        if !m.quantiles.is_empty() && kind != MetricKind::Latency {
            return bad(at("quantiles"), "only latency metrics take quantiles");
        }
        let metric = MetricSpec {
            name: m.name.clone(),
            kind,
            bounds: margins,
            quantiles: m.quantiles.clone(),
            hard_limit,
        };
        // The analysis crate knows its own rules (margin kinds, quantile
        // ranges); ask it now rather than at the first verdict.
        if let Err(e) = weir_analysis::decide(&policy, &[(metric.clone(), empty(kind))], None) {
            return match e {
                // The crate names a metric's field `metrics[name].field`,
                // a policy field by itself; a margin the user wrote as
                // maxChange is both of the crate's directions.
                weir_analysis::decision::AnalysisError::InvalidPolicy { field, reason } => {
                    match field.split_once("].") {
                        Some((_, "maxIncrease" | "maxDecrease")) if m.max_change.is_some() => {
                            bad(at("maxChange"), reason)
                        }
                        Some((_, f)) => bad(at(f), reason),
                        None => bad(format!("spec.analysis.{field}"), reason),
                    }
                }
                other => bad(at("kind"), other.to_string()),
            };
        }
        metrics.push(Metric {
            spec: metric,
            kind: m.kind,
            source: m.source.clone(),
            signal: m.signal.unwrap_or(crds::Signal::Ttft),
            per_request: m.per_request,
        });
    }
    Ok(Analysis {
        interval,
        warmup,
        warmup_requests,
        policy,
        on_inconclusive: a.on_inconclusive,
        metrics,
    })
}

fn empty(kind: MetricKind) -> weir_analysis::Observations {
    use weir_analysis::Observations;
    match kind {
        MetricKind::Latency => Observations::Latency {
            baseline: weir_analysis::Distribution::new(),
            canary: weir_analysis::Distribution::new(),
        },
        MetricKind::Distribution => Observations::Distribution {
            baseline: weir_analysis::Distribution::new(),
            canary: weir_analysis::Distribution::new(),
        },
        MetricKind::ErrorRate => Observations::Errors {
            baseline: weir_analysis::Counts {
                errors: 0,
                total: 0,
            },
            canary: weir_analysis::Counts {
                errors: 0,
                total: 0,
            },
        },
        MetricKind::Gauge => Observations::Gauge {
            baseline: Vec::new(),
            canary: Vec::new(),
            per_unit: false,
        },
    }
}

fn bounds(field: &str, a: &crds::AnalysisStep) -> Result<AnalysisBounds, SpecError> {
    let min = match &a.min_duration {
        Some(t) => duration_at(&format!("{field}.minDuration"), t)?,
        None => Duration::ZERO,
    };
    let max = match &a.max_duration {
        Some(t) => duration_at(&format!("{field}.maxDuration"), t)?,
        None => AnalysisBounds::DEFAULT_MAX.max(min),
    };
    if max < min {
        return bad(
            format!("{field}.maxDuration"),
            format!(
                "{} is shorter than minDuration {}; make maxDuration at least minDuration",
                format_duration(max),
                format_duration(min)
            ),
        );
    }
    Ok(AnalysisBounds { min, max })
}

fn strategy(s: &crds::Strategy) -> Result<Strategy, SpecError> {
    match (&s.canary, &s.blue_green) {
        (Some(c), None) => {
            let fixed_replicas = match c.replicas {
                crds::ReplicaPolicy::MatchWeight => None,
                crds::ReplicaPolicy::Fixed(n) => Some(n),
            };
            let mut steps = Vec::with_capacity(c.steps.len());
            for (i, step) in c.steps.iter().enumerate() {
                let field = format!("spec.strategy.canary.steps[{i}]");
                steps.push(match step {
                    crds::Step::SetWeight(w) => match Share::from_percent(*w) {
                        Ok(s) => Step::SetWeight(s),
                        // The step's own wording (the fix a rollout author
                        // needs); the check is the one of `Weight`.
                        Err(_) => {
                            return bad(
                                format!("{field}.setWeight"),
                                format!(
                                    "{w} is not a weight: use a percentage between 0 and 100 with at most two decimals"
                                ),
                            );
                        }
                    },
                    crds::Step::Pause(p) => Step::Pause(match &p.duration {
                        Some(d) => Some(duration_at(&format!("{field}.pause.duration"), d)?),
                        None => None,
                    }),
                    crds::Step::Analysis(a) => {
                        Step::Analysis(bounds(&format!("{field}.analysis"), a)?)
                    }
                });
            }
            if steps.is_empty() {
                return bad(
                    "spec.strategy.canary.steps",
                    "is empty: give at least one step, e.g. - setWeight: 10 then - analysis: {}",
                );
            }
            Ok(Strategy::Canary {
                fixed_replicas,
                steps,
            })
        }
        (None, Some(b)) => {
            let scale_down_delay = match &b.scale_down_delay {
                Some(t) => duration_at("spec.strategy.blueGreen.scaleDownDelay", t)?,
                None => BlueGreen::DEFAULT_SCALE_DOWN_DELAY,
            };
            let pre = match &b.pre_promotion_analysis {
                Some(a) => Some(bounds("spec.strategy.blueGreen.prePromotionAnalysis", a)?),
                None => None,
            };
            let post = match &b.post_promotion_analysis {
                Some(a) => Some(bounds("spec.strategy.blueGreen.postPromotionAnalysis", a)?),
                None => None,
            };
            if let Some(p) = post
                && p.max > scale_down_delay
            {
                return bad(
                    "spec.strategy.blueGreen.postPromotionAnalysis.maxDuration",
                    format!(
                        "{} outlasts scaleDownDelay {}: a rollback needs the old side still warm; raise scaleDownDelay or shorten the analysis",
                        format_duration(p.max),
                        format_duration(scale_down_delay)
                    ),
                );
            }
            if matches!(b.preview_replicas, Some(0)) {
                return bad(
                    "spec.strategy.blueGreen.previewReplicas",
                    "must be at least 1 (the preview must run to be judged)",
                );
            }
            Ok(Strategy::BlueGreen(BlueGreen {
                preview_replicas: b.preview_replicas,
                auto_promote: b.auto_promote,
                scale_down_delay,
                pre,
                post,
            }))
        }
        (Some(_), Some(_)) => bad("spec.strategy", "has both canary and blueGreen: choose one"),
        (None, None) => bad(
            "spec.strategy",
            "is empty: give canary: {steps: [...]} or blueGreen: {...}",
        ),
    }
}

/// Checks that the steps make sense in order.
fn check_steps(r: &Rollout) -> Result<(), SpecError> {
    let has_analysis = match &r.strategy {
        Strategy::Canary { steps, .. } => steps.iter().any(|s| matches!(s, Step::Analysis(_))),
        Strategy::BlueGreen(b) => b.pre.is_some() || b.post.is_some(),
    };
    if has_analysis && r.analysis.metrics.is_empty() {
        return bad(
            "spec.analysis.metrics",
            "is empty but the strategy has analysis steps: add a metric, e.g. {name: ttft, kind: latency, maxIncrease: 10%}",
        );
    }
    let Strategy::Canary { steps, .. } = &r.strategy else {
        return Ok(());
    };
    let mut weight = Share::NONE;
    for (i, step) in steps.iter().enumerate() {
        let field = format!("spec.strategy.canary.steps[{i}]");
        match *step {
            Step::SetWeight(w) => weight = w,
            Step::Pause(_) => {}
            Step::Analysis(b) => {
                if weight == Share::NONE {
                    return bad(
                        format!("{field}.analysis"),
                        "runs while the canary has no traffic: put a setWeight above 0 before it",
                    );
                }
                if weight == Share::ALL {
                    return bad(
                        format!("{field}.analysis"),
                        "runs with all traffic on the canary, so stable has nothing to compare against: analyse below 100",
                    );
                }
                if r.analysis.warmup >= b.max {
                    return bad(
                        format!("{field}.analysis.maxDuration"),
                        format!(
                            "{} ends before the {} warm-up after the weight change does, so no evidence would count: raise maxDuration or shorten spec.analysis.warmup",
                            format_duration(b.max),
                            format_duration(r.analysis.warmup)
                        ),
                    );
                }
                if let Mode::Local { stable, canary } = &r.mode {
                    let b = weight.complement().fraction() / f64::from(stable.replicas);
                    let c = weight.fraction() / f64::from(canary.replicas);
                    let imbalance = (b - c).abs() / b.max(c);
                    if imbalance > r.analysis.policy.max_load_imbalance {
                        let fair = 100.0 * f64::from(canary.replicas)
                            / f64::from(stable.replicas + canary.replicas);
                        return bad(
                            format!("{field}.analysis"),
                            format!(
                                "runs at {weight}% where each canary server takes {:.0}% of the load of a stable one, beyond maxLoadImbalance {:.0}%; \
                                 a lightly loaded canary looks faster than it is, so it would never be judged. \
                                 Analyse at setWeight {fair:.0} (the fair split for {} stable and {} canary servers), or set backends.*.replicas",
                                100.0 * c / b,
                                100.0 * r.analysis.policy.max_load_imbalance,
                                stable.replicas,
                                canary.replicas
                            ),
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for (text, secs) in [
            ("30s", 30.0),
            ("2m", 120.0),
            ("1h30m", 5400.0),
            ("250ms", 0.25),
        ] {
            let d = parse_duration(text).expect(text);
            assert_eq!(d.as_secs_f64(), secs, "{text}");
            assert_eq!(format_duration(d), text);
        }
        for bad in ["", "30", "s", "3x", "1.5m", "-1s", "99999999999h"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains("30s"), "{bad}: {e}");
        }
    }

    /// The example at the top of docs/analysis.md is what users copy: it
    /// must be a valid `spec.analysis` as written.
    #[test]
    fn the_analysis_reference_example_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/analysis.md");
        let doc = std::fs::read_to_string(path).expect("docs/analysis.md");
        let block = doc
            .split("```yaml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a yaml block in docs/analysis.md");
        assert!(block.starts_with("analysis:"), "{block}");
        let indented: String = block.lines().map(|l| format!("  {l}\n")).collect();
        let text = format!(
            "spec:\n  targetRef: {{name: chat}}\n  service: {{port: 8000}}\n  strategy:\n    canary:\n      steps: [{{setWeight: 50}}, {{analysis: {{}}}}]\n{indented}"
        );
        let value: serde_json::Value = serde_saphyr::from_str(&text).expect("yaml");
        let spec: crds::CanarySpec =
            serde_json::from_value(value["spec"].clone()).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let rollout = Rollout::new("chat", &spec).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let a = &rollout.analysis;
        assert_eq!(a.metrics.len(), 4);
        assert_eq!(a.interval, Duration::from_secs(30));
        assert_eq!(a.policy.max_load_imbalance, 0.2);
        assert!(a.metrics.iter().any(|m| m.per_request));
    }

    #[test]
    fn shares_have_two_decimals() {
        assert_eq!(Share::from_percent(0.01).map(Share::basis_points), Ok(1));
        assert_eq!(
            Share::from_percent(33.33).map(Share::basis_points),
            Ok(3333)
        );
        assert!(Share::from_percent(33.333).is_err());
        assert!(Share::from_percent(-1.0).is_err());
        assert!(Share::from_percent(100.5).is_err());
        assert!(Share::from_percent(f64::NAN).is_err());
    }
}
