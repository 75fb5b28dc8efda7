//! The local-mode shell around the engine: gathers evidence from the
//! in-process proxy and the backends' metrics endpoints, calls
//! [`engine::plan`], applies the actions, and records the run.
//!
//! The proxy is reached through [`Dataplane`] so this crate does not depend
//! on the proxy crate (the binary wires the two together) and tests can
//! drive the runner against a recording fake or the real proxy alike.
//!
//! Evidence is gathered per analysis window: when a window opens (a warm-up
//! after the last traffic change, in time and canary requests) the runner
//! snapshots the proxy's
//! cumulative observations as the window's baseline; evidence is the
//! difference since then. Gauges are scraped once per analysis interval and
//! kept per window, with each cohort's per-replica request rate over the
//! same interval as throughput.

use std::future::Future;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use weir_analysis::observations::{CohortSnapshot, Snapshot};
use weir_analysis::source::{PrometheusText, Query, Reading, Selector};
use weir_crds::{CanaryStatus, Cohort, CohortReplicas, MetricSource, Phase, Signal, Traffic};

use super::record::{CohortSample, RecordedEvent, RecordedOutcome, RunRecord, Sample};
use crate::engine::spec::{Mode, Rollout, Share, Step, Strategy, format_duration};
use crate::engine::{self, Action, Commands, Observed, Outcome, reasons};
use crate::evidence::{Cohorts, Collector, GaugeReader, requests, totals};

/// The in-process proxy, as the runner needs it.
pub trait Dataplane {
    /// Why the proxy did not take a table or give its observations.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Serves `traffic` from now on; returns once the proxy uses it.
    fn apply(&self, traffic: &Traffic) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// The proxy's cumulative observations.
    fn snapshot(&self) -> Result<Snapshot, Self::Error>;
}

/// Errors of a local run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A backend or metrics endpoint cannot be used; nothing moved.
    #[error("{field}: {problem}")]
    Preflight {
        /// The spec field, e.g. `spec.backends.canary.url`.
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The spec is for Kubernetes.
    #[error(
        "spec.targetRef: weir run drives two local frontends; give spec.backends instead (targetRef is for the Kubernetes controller)"
    )]
    NotLocal,
    /// The proxy refused a table.
    #[error("the proxy refused the traffic table: {0}")]
    Dataplane(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Exit code of a run: 0 promoted, 3 aborted, 4 aborted because the
/// analysis stayed inconclusive (DESIGN.md's table).
pub fn exit_code(outcome: Outcome, reason: Option<&str>) -> i32 {
    match outcome {
        Outcome::Promoted => 0,
        Outcome::Aborted if reason == Some(reasons::INCONCLUSIVE) => 4,
        Outcome::Aborted => 3,
    }
}

/// What the runner reports while it works.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A transition.
    Event(&'a RecordedEvent),
    /// The state at the end of an interval.
    Sample(&'a Sample),
}

/// Checks, before any traffic moves, that both backends answer and that
/// every scraped metric is present on each cohort's metrics endpoint.
///
/// # Errors
/// [`RunError::Preflight`] naming the field and the fix.
pub async fn preflight(rollout: &Rollout) -> Result<(), RunError> {
    let Mode::Local { stable, canary } = &rollout.mode else {
        return Err(RunError::NotLocal);
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| RunError::Preflight {
            field: "spec.backends".into(),
            problem: format!("cannot build an HTTP client: {e}"),
        })?;
    for (cohort, backend) in [(Cohort::Stable, stable), (Cohort::Canary, canary)] {
        let url = format!("{}/v1/models", backend.url.trim_end_matches('/'));
        // Any HTTP answer proves the frontend is there; only a transport
        // error is fatal (some frontends do not serve /v1/models).
        let answer = match client.get(&url).send().await {
            Ok(answer) => answer,
            Err(e) => {
                return Err(RunError::Preflight {
                    field: format!("spec.backends.{cohort}.url"),
                    problem: format!(
                        "{} does not answer ({}); start the {cohort} frontend or fix the URL",
                        backend.url,
                        transport_reason(&e)
                    ),
                });
            }
        };
        // A model canary needs each cohort's model loaded before traffic
        // moves: a request for one that is not gets a 404 from the server,
        // which would abort the run on errors that say nothing of it.
        if let Some(model) = rollout.model_of(cohort) {
            let body = answer.text().await.unwrap_or_default();
            if let Some(why) = crate::models::missing(&body, model) {
                return Err(RunError::Preflight {
                    field: format!("spec.models.{cohort}"),
                    problem: format!("{url} {why}"),
                });
            }
        }
        for m in &rollout.analysis.metrics {
            let MetricSource::Scrape(s) = &m.source else {
                continue;
            };
            let Some(metrics_url) = &backend.metrics else {
                return Err(RunError::Preflight {
                    field: format!("spec.backends.{cohort}.metrics"),
                    problem: format!(
                        "metric {} scrapes {} but the {cohort} backend has no metrics URL; add metrics: http://…/metrics",
                        m.spec.name, s.metric
                    ),
                });
            };
            let text = PrometheusText::scrape(metrics_url, Duration::from_secs(3))
                .await
                .map_err(|e| RunError::Preflight {
                    field: format!("spec.backends.{cohort}.metrics"),
                    problem: format!("{metrics_url} cannot be scraped: {e}"),
                })?;
            if let Ok(Reading::NoData { reason }) =
                text.read_now(&Query::gauge(s.metric.clone(), Selector::default()))
            {
                return Err(RunError::Preflight {
                    field: format!(
                        "spec.analysis.metrics[{}].source.scrape.metric",
                        m.spec.name
                    ),
                    problem: format!(
                        "{reason}; check the name (e.g. DCGM_FI_DEV_GPU_UTIL) and the {cohort} metrics URL"
                    ),
                });
            }
        }
        if rollout
            .analysis
            .metrics
            .iter()
            .any(|m| matches!(m.source, MetricSource::Prometheus(_)))
        {
            return Err(RunError::Preflight {
                field: "spec.analysis.metrics".into(),
                problem: "prometheus sources are not supported by weir run yet; scrape the backends' metrics URLs instead (source: {scrape: {metric: ...}})".into(),
            });
        }
    }
    Ok(())
}

fn transport_reason(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    if e.is_timeout() {
        "timed out".into()
    } else {
        last
    }
}

/// The runner's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Canary's name (for the record).
    pub name: String,
    /// Longest sleep between two engine calls.
    pub tick: Duration,
}

/// Drives one local run to its end, or until `interrupt` resolves (Ctrl-C),
/// in which case the run is aborted: traffic back to stable 100% before
/// this returns.
///
/// # Errors
/// [`RunError`] when the proxy refuses a table.
pub async fn run<D: Dataplane>(
    rollout: &Rollout,
    settings: &Settings,
    dataplane: &D,
    interrupt: impl Future<Output = ()>,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<RunRecord, RunError> {
    let Mode::Local { stable, canary } = &rollout.mode else {
        return Err(RunError::NotLocal);
    };
    let started = Instant::now();
    let mut record = RunRecord {
        name: settings.name.clone(),
        started_at: Timestamp::now()
            .strftime("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
        steps: describe_steps(rollout),
        metrics: rollout
            .analysis
            .metrics
            .iter()
            .map(describe_metric)
            .collect(),
        samples: Vec::new(),
        events: Vec::new(),
        ttft_cdf: Cohorts::default(),
        decision: None,
        outcome: None,
    };
    // A model canary's versions are its model names; else the URLs.
    let revision = |cohort: Cohort, url: &str| {
        rollout
            .model_of(cohort)
            .map_or_else(|| url.to_string(), str::to_string)
    };
    let mut status = CanaryStatus {
        stable_revision: Some(revision(Cohort::Stable, &stable.url)),
        ..CanaryStatus::default()
    };
    let mut observed = Observed {
        desired_revision: revision(Cohort::Canary, &canary.url),
        target_replicas: 1,
        ready: CohortReplicas {
            stable: 1,
            canary: 1,
        },
        applied_generation: Some(0),
        ..Observed::default()
    };
    let replicas = Cohorts {
        stable: f64::from(stable.replicas),
        canary: f64::from(canary.replicas),
    };
    let metrics_urls = Cohorts {
        stable: stable.metrics.clone(),
        canary: canary.metrics.clone(),
    };
    let gauges = LocalGauges {
        urls: metrics_urls.clone(),
    };
    let mut collector = Collector::new(None);
    let mut sampler = Sampler {
        metrics_urls,
        last_sample: None,
    };
    let interval = rollout.analysis.interval;
    let mut next_sample = Instant::now();
    tokio::pin!(interrupt);
    let mut interrupted = false;

    loop {
        let now = Timestamp::now();
        // A failed snapshot only delays evidence; the run goes on.
        let current = dataplane.snapshot().ok();
        collector
            .gather(rollout, &status, now, current.as_ref(), replicas, &gauges)
            .await;
        observed.evidence = collector.evidence(rollout, &status, current.as_ref(), replicas);
        if interrupted {
            observed.commands = Commands {
                abort: Some("interrupt".into()),
                ..Commands::default()
            };
        }
        let plan = engine::plan(rollout, &status, &observed, now);
        let mut finished = None;
        let mut transitioned = false;
        for action in &plan.actions {
            match action {
                Action::SetTraffic(t) => {
                    dataplane
                        .apply(t)
                        .await
                        .map_err(|e| RunError::Dataplane(Box::new(e)))?;
                    observed.applied_generation = Some(t.generation);
                }
                Action::Event {
                    warning,
                    reason,
                    message,
                } => {
                    transitioned = true;
                    let event = RecordedEvent {
                        t: started.elapsed().as_secs_f64(),
                        reason: (*reason).to_string(),
                        message: message.clone(),
                        warning: *warning,
                    };
                    progress(Progress::Event(&event));
                    record.events.push(event);
                }
                Action::Finish(outcome) => finished = Some(*outcome),
            }
        }
        if let Some(d) = plan.decision.clone() {
            record.decision = Some(d);
        }
        status = plan.status;
        if transitioned || finished.is_some() || Instant::now() >= next_sample {
            let sample = sampler
                .sample(
                    rollout,
                    &status,
                    started.elapsed().as_secs_f64(),
                    current.as_ref(),
                )
                .await;
            progress(Progress::Sample(&sample));
            record.samples.push(sample);
            next_sample = Instant::now() + interval;
        }
        if let Some(outcome) = finished {
            if interrupted {
                let event = RecordedEvent {
                    t: started.elapsed().as_secs_f64(),
                    reason: reasons::INTERRUPTED.into(),
                    message: "interrupted: traffic is back on stable 100%".into(),
                    warning: true,
                };
                progress(Progress::Event(&event));
                record.events.push(event);
            }
            let reason = status.abort.as_ref().map(|a| a.reason.as_str());
            record.outcome = Some(RecordedOutcome {
                phase: status.phase.to_string(),
                exit_code: exit_code(outcome, reason),
                message: status
                    .abort
                    .as_ref()
                    .map_or_else(|| status.message.clone(), |a| a.message.clone()),
                t: started.elapsed().as_secs_f64(),
            });
            record.ttft_cdf = cdf(current.as_ref());
            say_what_was_counted(rollout, &mut record, current.as_ref());
            return Ok(record);
        }
        if interrupted {
            // The engine had nothing to abort (the run was settling):
            // still leave stable serving everything.
            dataplane
                .apply(&stable_only(rollout))
                .await
                .map_err(|e| RunError::Dataplane(Box::new(e)))?;
            record.outcome = Some(RecordedOutcome {
                phase: Phase::Aborted.to_string(),
                exit_code: 3,
                message: "interrupted".into(),
                t: started.elapsed().as_secs_f64(),
            });
            record.ttft_cdf = cdf(current.as_ref());
            return Ok(record);
        }
        let sleep = plan
            .requeue_after
            .unwrap_or(settings.tick)
            .min(settings.tick)
            .min(
                next_sample
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(10)),
            );
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = &mut interrupt => interrupted = true,
        }
    }
}

/// The table that sends everything to stable, before the engine wrote any.
pub fn stable_only(rollout: &Rollout) -> Traffic {
    let (stable, canary) = match &rollout.mode {
        Mode::Local { stable, canary } => (Some(stable.url.clone()), Some(canary.url.clone())),
        Mode::Kubernetes { .. } => (None, None),
    };
    Traffic {
        generation: 0,
        route: rollout.route.clone(),
        sticky: rollout.sticky.clone(),
        override_header: false,
        backends: vec![
            weir_crds::TrafficBackend {
                cohort: Cohort::Stable,
                service: None,
                port: None,
                url: stable,
                weight: Share::ALL.percent(),
                revision: None,
                model: rollout.model_of(Cohort::Stable).map(str::to_string),
            },
            weir_crds::TrafficBackend {
                cohort: Cohort::Canary,
                service: None,
                port: None,
                url: canary,
                weight: Share::NONE.percent(),
                revision: None,
                model: rollout.model_of(Cohort::Canary).map(str::to_string),
            },
        ],
    }
}

fn describe_steps(r: &Rollout) -> Vec<String> {
    match &r.strategy {
        Strategy::Canary { steps, .. } => steps
            .iter()
            .map(|s| match s {
                Step::SetWeight(w) => format!("setWeight {}", w.percent()),
                Step::Pause(Some(d)) => format!("pause {}", format_duration(*d)),
                Step::Pause(None) => "pause (until promoted)".into(),
                Step::Analysis(b) => format!(
                    "analysis (min {}, max {})",
                    format_duration(b.min),
                    format_duration(b.max)
                ),
            })
            .collect(),
        Strategy::BlueGreen(_) => engine::BLUE_GREEN_STAGES
            .iter()
            .map(|s| (*s).to_string())
            .collect(),
    }
}

fn describe_metric(m: &engine::spec::Metric) -> String {
    use weir_analysis::MetricKind;
    let quantiles = || {
        let q: Vec<String> = m
            .spec
            .quantiles
            .iter()
            .map(|q| weir_analysis::decision::quantile_label(*q))
            .collect();
        format!(
            "shift{}{}",
            if q.is_empty() { "" } else { ", " },
            q.join(", ")
        )
    };
    match m.spec.kind {
        MetricKind::Latency => {
            let signal = match m.signal {
                Signal::Ttft => "TTFT",
                Signal::Itl => "inter-token",
                Signal::Duration => "duration",
            };
            format!(
                "{}: {signal} latency ({}) may {}",
                m.spec.name,
                quantiles(),
                limits(&m.spec)
            )
        }
        MetricKind::Distribution => format!(
            "{}: {} ({}) may {}",
            m.spec.name,
            match m.kind {
                weir_crds::MetricKind::DecodeSpeed => "decode speed, tokens/s after the first",
                _ => "output tokens per answer",
            },
            quantiles(),
            limits(&m.spec)
        ),
        MetricKind::ErrorRate => format!(
            "{}: {} may {}{}",
            m.spec.name,
            match m.kind {
                weir_crds::MetricKind::TruncationRate => "share of answers cut at the token limit",
                weir_crds::MetricKind::EmptyRate => "share of empty answers",
                _ => "error rate",
            },
            limits(&m.spec),
            m.spec
                .hard_limit
                .map(|h| format!(", hard limit {}%", h * 100.0))
                .unwrap_or_default()
        ),
        MetricKind::Gauge => format!(
            "{}: gauge{} may {}",
            m.spec.name,
            if m.per_request { " per request" } else { "" },
            limits(&m.spec)
        ),
    }
}

/// `rise by at most 10%`, `fall by at most 25%`, or both joined by `and`;
/// an error rate's absolute margin in percentage points.
fn limits(spec: &weir_analysis::MetricSpec) -> String {
    use weir_analysis::{Direction, Margin, MetricKind};
    spec.bounds
        .directions()
        .map(|(direction, margin)| {
            let verb = match direction {
                Direction::Increase => "rise",
                Direction::Decrease => "fall",
            };
            let margin = match (spec.kind, margin) {
                (MetricKind::ErrorRate, Margin::Absolute(a)) => format!("{} pp", a * 100.0),
                (_, other) => other.to_string(),
            };
            format!("{verb} by at most {margin}")
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Gauges of local mode: each backend's metrics URL, scraped.
struct LocalGauges {
    urls: Cohorts<Option<String>>,
}

impl GaugeReader for LocalGauges {
    async fn read(&self, metric: &engine::spec::Metric, cohort: Cohort) -> Option<f64> {
        let MetricSource::Scrape(s) = &metric.source else {
            return None;
        };
        scrape_gauge(self.urls.get(cohort).as_deref()?, &s.metric).await
    }
}

/// Per-interval figures for the progress lines and the report.
struct Sampler {
    metrics_urls: Cohorts<Option<String>>,
    /// The previous sample, for per-interval figures.
    last_sample: Option<(Instant, Snapshot)>,
}

impl Sampler {
    /// Figures over the interval since the previous sample.
    async fn sample(
        &mut self,
        rollout: &Rollout,
        status: &CanaryStatus,
        t: f64,
        current: Option<&Snapshot>,
    ) -> Sample {
        let mut cohorts = Cohorts::<CohortSample>::default();
        if let Some(current) = current {
            let (secs, delta) = match &self.last_sample {
                Some((at, prev)) => (at.elapsed().as_secs_f64(), current.since(prev)),
                None => (t, current.clone()),
            };
            let gpu_metric = rollout
                .analysis
                .metrics
                .iter()
                .find_map(|m| match &m.source {
                    MetricSource::Scrape(s) => Some(s.metric.clone()),
                    _ => None,
                });
            for cohort in Cohort::BOTH {
                let c = totals(&delta, None, cohort);
                let n = requests(c.as_ref());
                let url = match cohort {
                    Cohort::Stable => &self.metrics_urls.stable,
                    Cohort::Canary => &self.metrics_urls.canary,
                };
                let gpu_util = match (url, &gpu_metric) {
                    (Some(u), Some(m)) => scrape_gauge(u, m).await,
                    _ => None,
                };
                let figures = CohortSample {
                    requests: n,
                    rate: n as f64 / secs.max(1e-3),
                    ttft_p50: c.as_ref().and_then(|c| c.ttft_seconds.quantile(0.5)),
                    ttft_p95: c.as_ref().and_then(|c| c.ttft_seconds.quantile(0.95)),
                    error_rate: c
                        .as_ref()
                        .map(CohortSnapshot::error_counts)
                        .and_then(|e| (e.total > 0).then(|| e.errors as f64 / e.total as f64)),
                    gpu_util,
                };
                match cohort {
                    Cohort::Stable => cohorts.stable = figures,
                    Cohort::Canary => cohorts.canary = figures,
                }
            }
            self.last_sample = Some((Instant::now(), current.clone()));
        }
        let analysis = status.last_analysis.as_ref();
        Sample {
            t,
            phase: status.phase.to_string(),
            step: engine::step_label(rollout, status),
            canary_weight: status.canary_weight,
            cohorts,
            verdict: analysis.map(|a| a.verdict.as_str().to_lowercase()),
            rule: analysis.map(|a| a.rule.clone()),
            warmup: status.window.as_ref().and_then(|w| w.warmup),
        }
    }
}

/// The average of `metric` over its series, or None when absent.
async fn scrape_gauge(url: &str, metric: &str) -> Option<f64> {
    let text = PrometheusText::scrape(url, Duration::from_secs(2))
        .await
        .ok()?;
    match text
        .read_now(&Query::gauge(metric, Selector::default()))
        .ok()?
    {
        Reading::Gauge(points) => {
            let values: Vec<f64> = points
                .iter()
                .map(|p| p.value)
                .filter(|v| v.is_finite())
                .collect();
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        }
        _ => None,
    }
}

/// Each cohort's TTFT CDF over the whole run, 199 points.
/// Appends to each token-based metric's line what its tokens were counted
/// from over the run: the server's `usage` is exact, stream events
/// undercount a server that sends several tokens per event, so a reader of
/// the report must know which it was.
fn say_what_was_counted(rollout: &Rollout, record: &mut RunRecord, current: Option<&Snapshot>) {
    let counted = |cohort: Cohort| {
        let c = current.and_then(|s| totals(s, None, cohort))?;
        Some((c.tokens_from_usage, c.requests[weir_core::Outcome::Ok]))
    };
    let (Some(stable), Some(canary)) = (counted(Cohort::Stable), counted(Cohort::Canary)) else {
        return;
    };
    let said = match (stable, canary) {
        ((0, _), (0, _)) => {
            "tokens counted from stream events (the server sent no usage; a server that sends several tokens per event is undercounted, the same way in both cohorts)".to_string()
        }
        ((s, sn), (c, cn)) if s == sn && c == cn => {
            "tokens from the server's usage in every answer".to_string()
        }
        ((s, sn), (c, cn)) => format!(
            "tokens from the server's usage in {s} of {sn} stable and {c} of {cn} canary answers, from stream events in the rest"
        ),
    };
    for (line, metric) in record.metrics.iter_mut().zip(&rollout.analysis.metrics) {
        if matches!(
            metric.kind,
            weir_crds::MetricKind::OutputTokens | weir_crds::MetricKind::DecodeSpeed
        ) {
            line.push_str("; ");
            line.push_str(&said);
        }
    }
}

fn cdf(current: Option<&Snapshot>) -> Cohorts<Vec<[f64; 2]>> {
    let points = |cohort: Cohort| -> Vec<[f64; 2]> {
        let Some(c) = current.and_then(|s| totals(s, None, cohort)) else {
            return Vec::new();
        };
        (1..200)
            .filter_map(|i| {
                let p = f64::from(i) / 200.0;
                c.ttft_seconds.quantile(p).map(|v| [v, p])
            })
            .collect()
    };
    Cohorts {
        stable: points(Cohort::Stable),
        canary: points(Cohort::Canary),
    }
}
