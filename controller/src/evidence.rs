//! Evidence for the engine, gathered the same way by both shells.
//!
//! The engine judges an analysis window: observations count only once the
//! window opens (a warm-up after the last traffic change, in time and in
//! requests per canary replica; the engine decides when), and a window has
//! an id so evidence of an older one is never mixed in. The proxy serves
//! *cumulative* observations (since its process started), so a
//! [`Collector`] keeps, per window, the snapshot when it first saw the
//! window (the traffic change: the warm-up's requests count from there)
//! and the snapshot at the moment the window opened as its baseline;
//! evidence is the difference since then. Each latency metric's canary
//! distribution is also kept per slice of the window (a fraction of the
//! analysis interval), so the engine can tell a canary whose latency is
//! still falling from a slow one. Gauges
//! (GPU utilization) have no history in the proxy: they are read once per
//! analysis interval inside the window and kept as a series, each value
//! with the cohort's per-replica request rate over the same interval, so a
//! gauge can be judged per unit of throughput.
//!
//! Local mode feeds it the in-process proxy's snapshot; Kubernetes mode
//! feeds it the fleet's (every proxy replica's deltas accumulated, see
//! `kube::fleet`), so one Collector serves both.
//!
//! Blue-green after the cutover has no live stable traffic to compare with:
//! the post-promotion window compares the new side with the stable
//! cohort's evidence of the window just before it, frozen.

use std::future::Future;
use std::time::Instant;

use jiff::Timestamp;
use weir_analysis::compare::gauge::GaugeInterval;
use weir_analysis::decision::Load;
use weir_analysis::observations::{CohortSnapshot, Snapshot};
use weir_analysis::{Counts, Distribution, MetricKind, Observations};
use weir_crds::AnalysisWindow;
use weir_crds::{
    CanaryStatus, Cohort, MetricKind as MetricKindSpec, MetricSource, Signal, WindowPurpose,
};

pub use crate::engine::Cohorts;
use crate::engine::Evidence;
use crate::engine::spec::{Metric, Rollout};

/// Reads a gauge metric of one cohort now (GPU utilization averaged over
/// the cohort's GPUs). `None` when it cannot be read this time: the
/// interval is skipped, never counted as zero.
pub trait GaugeReader {
    /// The cohort's current value of gauge `metric`.
    fn read(&self, metric: &Metric, cohort: Cohort) -> impl Future<Output = Option<f64>> + Send;
}

/// One cohort's totals in a (delta) snapshot, all revisions merged; only
/// the entries of `route` when given.
pub fn totals(snapshot: &Snapshot, route: Option<&str>, cohort: Cohort) -> Option<CohortSnapshot> {
    let mut parts = snapshot
        .cohorts
        .iter()
        .filter(|c| c.cohort == cohort.into() && route.is_none_or(|r| c.route == r));
    let mut merged = parts.next()?.clone();
    for c in parts {
        merged.add(c);
    }
    Some(merged)
}

/// One latency signal of a cohort's totals (empty when it has none).
fn latency(c: Option<&CohortSnapshot>, signal: Signal) -> Distribution {
    c.map_or_else(Distribution::new, |c| match signal {
        Signal::Ttft => c.ttft_seconds.clone(),
        Signal::Itl => c.inter_token_seconds.clone(),
        Signal::Duration => c.duration_seconds.clone(),
    })
}

/// One answer-shape distribution of a cohort's totals: output tokens or
/// decode speed (empty when it has none).
fn answers(c: Option<&CohortSnapshot>, kind: MetricKindSpec) -> Distribution {
    c.map_or_else(Distribution::new, |c| match kind {
        MetricKindSpec::DecodeSpeed => c.decode_tokens_per_second.clone(),
        _ => c.output_tokens_per_request.clone(),
    })
}

/// Slices of the window per analysis interval for the trend test: enough
/// that the first verdict already has two halves to compare.
const SLICES_PER_INTERVAL: u32 = 4;

/// Finished requests in a cohort's totals.
pub fn requests(c: Option<&CohortSnapshot>) -> u64 {
    c.map_or(0, |c| c.requests.total())
}

/// Per-window evidence of one Canary.
#[derive(Debug)]
pub struct Collector {
    /// The proxy route of the Canary (None: every route, local mode).
    route: Option<String>,
    /// The window the baseline belongs to.
    window: Option<u64>,
    /// The snapshot when the window was first seen: the traffic change.
    since_change: Option<Snapshot>,
    /// The snapshot when the window opened (None while it warms up).
    baseline: Option<Snapshot>,
    opened: Option<Instant>,
    gauges: Vec<(String, Cohorts<Vec<GaugeInterval>>)>,
    /// Per latency metric, the canary's distribution per slice.
    slices: Vec<(String, Vec<Distribution>)>,
    /// The snapshot that ended the last slice.
    last_slice: Option<(Instant, Snapshot)>,
    /// The previous gauge reading, for per-interval throughput.
    last_gauge: Option<(Instant, Snapshot)>,
    /// Stable's evidence of the latest window, kept as the reference of a
    /// blue-green post-promotion window.
    last_stable: Option<CohortSnapshot>,
    /// The frozen reference of the window in progress, if it has one.
    reference: Option<CohortSnapshot>,
}

impl Collector {
    /// A collector for the observations of `route` (None: all routes).
    pub fn new(route: Option<String>) -> Self {
        Collector {
            route,
            window: None,
            since_change: None,
            baseline: None,
            opened: None,
            gauges: Vec::new(),
            slices: Vec::new(),
            last_slice: None,
            last_gauge: None,
            last_stable: None,
            reference: None,
        }
    }

    fn totals(&self, snapshot: &Snapshot, cohort: Cohort) -> Option<CohortSnapshot> {
        totals(snapshot, self.route.as_deref(), cohort)
    }

    /// Marks the traffic change when a window is first seen, takes its
    /// baseline once it opens; inside it, cuts latency slices and reads
    /// gauges once per analysis interval. `replicas` are each cohort's
    /// serving replicas now (per-replica throughput).
    pub async fn gather<G: GaugeReader>(
        &mut self,
        rollout: &Rollout,
        status: &CanaryStatus,
        now: Timestamp,
        current: Option<&Snapshot>,
        replicas: Cohorts<f64>,
        gauges: &G,
    ) {
        let Some(window) = &status.window else {
            self.window = None;
            return;
        };
        if self.window != Some(window.id) {
            self.first_sight(window, current);
        }
        if window.warmup.is_some() || now < window.opens_at.0 {
            return;
        }
        if self.baseline.is_none() {
            // A failed snapshot leaves it for the next call.
            self.baseline = current.cloned();
            self.opened = Some(Instant::now());
            self.last_gauge = current.map(|s| (Instant::now(), s.clone()));
            self.last_slice.clone_from(&self.last_gauge);
            return;
        }
        self.slice(rollout, current);
        let due = self
            .last_gauge
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= rollout.analysis.interval);
        let Some(current) = current.filter(|_| due) else {
            return;
        };
        let (since, previous) = match self.last_gauge.take() {
            Some((at, s)) => (at.elapsed().as_secs_f64(), Some(s)),
            None => (rollout.analysis.interval.as_secs_f64(), None),
        };
        let delta = previous
            .as_ref()
            .map_or_else(|| current.clone(), |p| current.since(p));
        for m in &rollout.analysis.metrics {
            if !matches!(
                m.source,
                MetricSource::Scrape(_) | MetricSource::Prometheus(_)
            ) {
                continue;
            }
            let (Some(sv), Some(cv)) = (
                gauges.read(m, Cohort::Stable).await,
                gauges.read(m, Cohort::Canary).await,
            ) else {
                continue;
            };
            let rate = |cohort: Cohort| {
                requests(self.totals(&delta, cohort).as_ref()) as f64
                    / since.max(1e-3)
                    / replicas.get(cohort).max(1.0)
            };
            let interval = Cohorts {
                stable: GaugeInterval {
                    value: sv,
                    throughput: Some(rate(Cohort::Stable)),
                },
                canary: GaugeInterval {
                    value: cv,
                    throughput: Some(rate(Cohort::Canary)),
                },
            };
            match self.gauges.iter_mut().find(|(n, _)| *n == m.spec.name) {
                Some((_, series)) => {
                    series.stable.push(interval.stable);
                    series.canary.push(interval.canary);
                }
                None => self.gauges.push((
                    m.spec.name.clone(),
                    Cohorts {
                        stable: vec![interval.stable],
                        canary: vec![interval.canary],
                    },
                )),
            }
        }
        self.last_gauge = Some((Instant::now(), current.clone()));
    }

    /// A new window: forget the old one's evidence, keep the snapshot of
    /// the traffic change.
    fn first_sight(&mut self, window: &AnalysisWindow, current: Option<&Snapshot>) {
        self.window = Some(window.id);
        self.reference = match window.purpose {
            WindowPurpose::PostPromotion => self.last_stable.clone(),
            WindowPurpose::Step | WindowPurpose::PrePromotion => None,
        };
        self.since_change = current.cloned();
        self.baseline = None;
        self.opened = None;
        self.gauges.clear();
        self.slices.clear();
        self.last_gauge = None;
        self.last_slice = None;
    }

    /// Cuts a slice of each latency metric's canary distribution when one
    /// is due.
    fn slice(&mut self, rollout: &Rollout, current: Option<&Snapshot>) {
        let every = rollout.analysis.interval / SLICES_PER_INTERVAL;
        let due = self
            .last_slice
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= every);
        let Some(current) = current.filter(|_| due) else {
            return;
        };
        let delta = self
            .last_slice
            .as_ref()
            .map_or_else(|| current.clone(), |(_, p)| current.since(p));
        let canary = self.totals(&delta, Cohort::Canary);
        for m in &rollout.analysis.metrics {
            if m.spec.kind != MetricKind::Latency {
                continue;
            }
            let d = latency(canary.as_ref(), m.signal);
            match self.slices.iter_mut().find(|(n, _)| *n == m.spec.name) {
                Some((_, series)) => series.push(d),
                None => self.slices.push((m.spec.name.clone(), vec![d])),
            }
        }
        self.last_slice = Some((Instant::now(), current.clone()));
    }

    /// Requests per canary replica since the traffic change.
    fn warmup_requests(&self, current: &Snapshot, replicas: Cohorts<f64>) -> u64 {
        let Some(change) = &self.since_change else {
            return 0;
        };
        let served = requests(self.totals(&current.since(change), Cohort::Canary).as_ref());
        (served as f64 / replicas.canary.max(1.0)).floor() as u64
    }

    /// Evidence for the engine: everything since the window's baseline;
    /// while the window warms up, only the canary's requests since the
    /// traffic change.
    pub fn evidence(
        &mut self,
        rollout: &Rollout,
        status: &CanaryStatus,
        current: Option<&Snapshot>,
        replicas: Cohorts<f64>,
    ) -> Option<Evidence> {
        let window = status.window.as_ref()?;
        if self.window != Some(window.id) {
            return None;
        }
        let current = current?;
        let warmup_requests = self.warmup_requests(current, replicas);
        let Some(baseline) = &self.baseline else {
            return Some(Evidence {
                window: window.id,
                warmup_requests,
                metrics: Vec::new(),
                load: None,
                slices: Vec::new(),
            });
        };
        let delta = current.since(baseline);
        let canary = self.totals(&delta, Cohort::Canary);
        let stable = match &self.reference {
            Some(frozen) => Some(frozen.clone()),
            None => {
                let stable = self.totals(&delta, Cohort::Stable);
                self.last_stable.clone_from(&stable);
                stable
            }
        };
        let metrics = rollout
            .analysis
            .metrics
            .iter()
            .map(|m| {
                let obs = match m.spec.kind {
                    MetricKind::Latency => Observations::Latency {
                        baseline: latency(stable.as_ref(), m.signal),
                        canary: latency(canary.as_ref(), m.signal),
                    },
                    MetricKind::Distribution => Observations::Distribution {
                        baseline: answers(stable.as_ref(), m.kind),
                        canary: answers(canary.as_ref(), m.kind),
                    },
                    MetricKind::ErrorRate => {
                        // The error rate, or a share of the answers.
                        let share = match m.kind {
                            MetricKindSpec::TruncationRate => CohortSnapshot::length_counts,
                            MetricKindSpec::EmptyRate => CohortSnapshot::empty_counts,
                            _ => CohortSnapshot::error_counts,
                        };
                        let counts = |c: Option<&CohortSnapshot>| {
                            c.map_or(
                                Counts {
                                    errors: 0,
                                    total: 0,
                                },
                                share,
                            )
                        };
                        Observations::Errors {
                            baseline: counts(stable.as_ref()),
                            canary: counts(canary.as_ref()),
                        }
                    }
                    MetricKind::Gauge => {
                        let series = self.gauges.iter().find(|(n, _)| *n == m.spec.name);
                        Observations::Gauge {
                            baseline: series.map(|(_, s)| s.stable.clone()).unwrap_or_default(),
                            canary: series.map(|(_, s)| s.canary.clone()).unwrap_or_default(),
                            per_unit: m.per_request,
                        }
                    }
                };
                (m.spec.name.clone(), obs)
            })
            .collect();
        let secs = self
            .opened
            .map_or(0.0, |o| o.elapsed().as_secs_f64())
            .max(1e-3);
        let load = Load {
            baseline_per_replica: requests(stable.as_ref()) as f64
                / secs
                / replicas.stable.max(1.0),
            canary_per_replica: requests(canary.as_ref()) as f64 / secs / replicas.canary.max(1.0),
        };
        Some(Evidence {
            window: window.id,
            warmup_requests,
            metrics,
            // A model canary's cohorts share the same servers: their
            // per-replica load is one and the same by construction.
            load: (!rollout.is_model()).then_some(load),
            slices: self.slices.clone(),
        })
    }
}
