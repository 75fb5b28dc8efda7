//! The controller's own metrics (DESIGN.md "Metric names"), their names in
//! one place, and the small HTTP server for `/metrics`, `/healthz` and
//! `/readyz`.
//!
//! Rendered by hand in the Prometheus text format (0.0.4): a few families
//! with bounded label sets (one series per Canary), so a metrics registry
//! crate would add more than it saves.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use weir_crds::Phase;

/// Metric names.
pub mod names {
    /// 1 for the phase a Canary is in, 0 for the others.
    pub const PHASE: &str = "weir_canary_phase";
    /// The canary's share of traffic, percent.
    pub const WEIGHT: &str = "weir_canary_weight";
    /// Verdicts taken, by verdict.
    pub const ANALYSIS: &str = "weir_canary_analysis_total";
    /// Runs promoted.
    pub const PROMOTIONS: &str = "weir_canary_promotions_total";
    /// Runs aborted, by reason.
    pub const ABORTS: &str = "weir_canary_aborts_total";
    /// Time one reconcile took.
    pub const RECONCILE_DURATION: &str = "weir_reconcile_duration_seconds";
    /// Reconciles that failed.
    pub const RECONCILE_ERRORS: &str = "weir_reconcile_errors_total";
    /// 1 while this replica holds the leader lease.
    pub const LEADER: &str = "weir_controller_leader";
}

/// Bucket bounds of the reconcile duration histogram, seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

type Key = (String, String);

#[derive(Debug, Default)]
struct Families {
    phase: BTreeMap<Key, Phase>,
    weight: BTreeMap<Key, f64>,
    analysis: BTreeMap<(Key, &'static str), u64>,
    promotions: BTreeMap<Key, u64>,
    aborts: BTreeMap<(Key, String), u64>,
    errors: BTreeMap<Key, u64>,
    /// Cumulative bucket counts, then count and sum.
    duration_buckets: [u64; BUCKETS.len()],
    duration_count: u64,
    duration_sum: f64,
}

/// The controller's metrics and health.
#[derive(Debug, Default)]
pub struct Metrics {
    families: Mutex<Families>,
    leader: AtomicBool,
    /// Unix milliseconds of the last successful call to the API server.
    api_ok_at: AtomicU64,
}

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_string(), name.to_string())
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Families> {
        self.families.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a Canary's phase and weight after a reconcile.
    pub fn canary(&self, namespace: &str, name: &str, phase: Phase, weight: f64) {
        let mut f = self.lock();
        f.phase.insert(key(namespace, name), phase);
        f.weight.insert(key(namespace, name), weight);
    }

    /// Forgets a deleted Canary's gauges (its counters stay until restart,
    /// as Prometheus counters should).
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut f = self.lock();
        f.phase.remove(&key(namespace, name));
        f.weight.remove(&key(namespace, name));
    }

    /// Counts a verdict (`Promote`, `Continue`, `Abort`).
    pub fn verdict(&self, namespace: &str, name: &str, verdict: &'static str) {
        *self
            .lock()
            .analysis
            .entry((key(namespace, name), verdict))
            .or_insert(0) += 1;
    }

    /// Counts a promotion.
    pub fn promoted(&self, namespace: &str, name: &str) {
        *self
            .lock()
            .promotions
            .entry(key(namespace, name))
            .or_insert(0) += 1;
    }

    /// Counts an abort with its reason constant.
    pub fn aborted(&self, namespace: &str, name: &str, reason: &str) {
        *self
            .lock()
            .aborts
            .entry((key(namespace, name), reason.to_string()))
            .or_insert(0) += 1;
    }

    /// Records one reconcile's duration and whether it failed.
    pub fn reconciled(&self, namespace: &str, name: &str, took: Duration, failed: bool) {
        let mut f = self.lock();
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                f.duration_buckets[i] += 1;
            }
        }
        f.duration_count += 1;
        f.duration_sum += secs;
        if failed {
            *f.errors.entry(key(namespace, name)).or_insert(0) += 1;
        }
    }

    /// Whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.store(leading, Ordering::Relaxed);
    }

    /// Notes a successful call to the API server (for `/readyz`).
    pub fn api_ok(&self) {
        let ms = jiff::Timestamp::now().as_millisecond();
        self.api_ok_at
            .store(u64::try_from(ms).unwrap_or(0), Ordering::Relaxed);
    }

    /// Whether the API server answered within `within`.
    pub fn api_recent(&self, within: Duration) -> bool {
        let at = self.api_ok_at.load(Ordering::Relaxed);
        let now = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
        at > 0 && now.saturating_sub(at) <= u64::try_from(within.as_millis()).unwrap_or(u64::MAX)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let f = self.lock();
        let mut out = String::new();
        let label = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        header(
            &mut out,
            names::PHASE,
            "gauge",
            "1 for the phase the Canary is in.",
        );
        for ((ns, name), phase) in &f.phase {
            for p in Phase::ALL {
                let _ = writeln!(
                    out,
                    "{}{{namespace=\"{}\",name=\"{}\",phase=\"{p}\"}} {}",
                    names::PHASE,
                    label(ns),
                    label(name),
                    u8::from(p == *phase)
                );
            }
        }
        header(
            &mut out,
            names::WEIGHT,
            "gauge",
            "The canary's share of traffic, percent.",
        );
        for ((ns, name), w) in &f.weight {
            let _ = writeln!(
                out,
                "{}{{namespace=\"{}\",name=\"{}\"}} {w}",
                names::WEIGHT,
                label(ns),
                label(name)
            );
        }
        header(
            &mut out,
            names::ANALYSIS,
            "counter",
            "Analysis verdicts taken.",
        );
        for (((ns, name), verdict), n) in &f.analysis {
            let _ = writeln!(
                out,
                "{}{{namespace=\"{}\",name=\"{}\",verdict=\"{verdict}\"}} {n}",
                names::ANALYSIS,
                label(ns),
                label(name)
            );
        }
        header(&mut out, names::PROMOTIONS, "counter", "Runs promoted.");
        for ((ns, name), n) in &f.promotions {
            let _ = writeln!(
                out,
                "{}{{namespace=\"{}\",name=\"{}\"}} {n}",
                names::PROMOTIONS,
                label(ns),
                label(name)
            );
        }
        header(
            &mut out,
            names::ABORTS,
            "counter",
            "Runs aborted, by reason.",
        );
        for (((ns, name), reason), n) in &f.aborts {
            let _ = writeln!(
                out,
                "{}{{namespace=\"{}\",name=\"{}\",reason=\"{}\"}} {n}",
                names::ABORTS,
                label(ns),
                label(name),
                label(reason)
            );
        }
        header(
            &mut out,
            names::RECONCILE_ERRORS,
            "counter",
            "Reconciles that failed.",
        );
        for ((ns, name), n) in &f.errors {
            let _ = writeln!(
                out,
                "{}{{namespace=\"{}\",name=\"{}\"}} {n}",
                names::RECONCILE_ERRORS,
                label(ns),
                label(name)
            );
        }
        header(
            &mut out,
            names::RECONCILE_DURATION,
            "histogram",
            "Time one reconcile took, seconds.",
        );
        for (bound, n) in BUCKETS.iter().zip(f.duration_buckets) {
            let _ = writeln!(
                out,
                "{}_bucket{{le=\"{bound}\"}} {n}",
                names::RECONCILE_DURATION
            );
        }
        let _ = writeln!(
            out,
            "{0}_bucket{{le=\"+Inf\"}} {1}\n{0}_sum {2}\n{0}_count {1}",
            names::RECONCILE_DURATION,
            f.duration_count,
            f.duration_sum
        );
        header(
            &mut out,
            names::LEADER,
            "gauge",
            "1 while this replica leads.",
        );
        let _ = writeln!(
            out,
            "{} {}",
            names::LEADER,
            u8::from(self.leader.load(Ordering::Relaxed))
        );
        out
    }
}

/// How recently the API server must have answered for `/readyz`.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task
/// is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let started = Instant::now();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, Infallible>(handle(&metrics, req.uri().path(), started)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn handle(metrics: &Metrics, path: &str, started: Instant) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if metrics.api_recent(READY_WITHIN) => {
            (StatusCode::OK, "text/plain", "ready\n".to_string())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!(
                "the Kubernetes API has not answered in the last {}s (up {}s)\n",
                READY_WITHIN.as_secs(),
                started.elapsed().as_secs()
            ),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Binds the metrics listener.
///
/// # Errors
/// The bind error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_each_canary_and_counts_reconciles() {
        let m = Metrics::default();
        m.canary("llm", "chat", Phase::Progressing, 25.0);
        m.verdict("llm", "chat", "Continue");
        m.verdict("llm", "chat", "Continue");
        m.aborted("llm", "chat", "AnalysisFailed");
        m.reconciled("llm", "chat", Duration::from_millis(3), false);
        m.reconciled("llm", "chat", Duration::from_millis(30), true);
        let text = m.render();
        assert!(text.contains(
            "weir_canary_phase{namespace=\"llm\",name=\"chat\",phase=\"Progressing\"} 1"
        ));
        assert!(
            text.contains("weir_canary_phase{namespace=\"llm\",name=\"chat\",phase=\"Idle\"} 0")
        );
        assert!(text.contains("weir_canary_weight{namespace=\"llm\",name=\"chat\"} 25"));
        assert!(text.contains(
            "weir_canary_analysis_total{namespace=\"llm\",name=\"chat\",verdict=\"Continue\"} 2"
        ));
        assert!(text.contains("weir_reconcile_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("weir_reconcile_duration_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("weir_reconcile_duration_seconds_count 2"));
        assert!(text.contains("weir_reconcile_errors_total{namespace=\"llm\",name=\"chat\"} 1"));
        // Every sample line parses as the text format (the analysis's own
        // parser reads it).
        let parsed = weir_analysis::source::PrometheusText::from_text(&text).expect("parses");
        assert!(parsed.names().contains(&"weir_canary_weight"));
    }
}
