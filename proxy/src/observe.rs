//! Cumulative observations per (route, cohort, revision), for the analysis
//! (`GET /v1/observations`) and for Prometheus (`GET /metrics`).
//!
//! # Shape
//!
//! Each key owns a cell: a `Mutex` around its aggregates and an atomic
//! in-flight gauge. The map from key to cell sits behind a `RwLock` that is
//! taken for writing only the first time a key is seen; a request looks its
//! cell up once ([`Observations::cohort`]) and then touches only that cell,
//! so requests of different cohorts never wait on each other and requests
//! of one cohort hold its lock for a few hundred nanoseconds.
//!
//! Latencies are kept twice ([`Histogram`]): as a [`Distribution`]
//! (log-linear, ~1% resolution, mergeable across replicas and intervals by
//! the analysis), and as fixed Prometheus buckets ([`crate::metrics`]),
//! counted exactly.
//!
//! # `/v1/observations`
//!
//! [`Observations::snapshot`] is the analysis's own document type,
//! [`weir_analysis::observations::Snapshot`] (its module documents the
//! schema): the proxy fills it in and serializes it, the controller parses
//! the same type, and local mode hands it over in memory. The committed
//! example `tests/fixtures/observations-v1.json` is checked against what
//! this module writes (`WEIR_UPDATE_FIXTURES=1` rewrites it after a
//! deliberate change) and read by the analysis's tests.
//!
//! [`Distribution`]: weir_analysis::Distribution

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use weir_analysis::Distribution;
use weir_analysis::observations::{CohortSnapshot, SCHEMA_VERSION, Snapshot};
use weir_core::{Cohort, Outcome, RequestCounts};

use crate::histogram::Histogram;
use crate::meter::RequestRecord;
use crate::metrics;
use crate::model::Lookup;
use crate::route::{CohortKey, RouteTable};

/// The aggregates of one key.
#[derive(Debug, Clone)]
struct Aggregates {
    requests: RequestCounts,
    ttft: Histogram,
    inter_token: Histogram,
    duration: Histogram,
    output_tokens: u64,
    shape: Shape,
}

/// What the `ok` answers looked like (see the observations schema).
#[derive(Debug, Clone, Default)]
struct Shape {
    output_tokens: Distribution,
    decode_rate: Distribution,
    length_finishes: u64,
    empty: u64,
    from_usage: u64,
}

impl Shape {
    fn record(&mut self, r: &RequestRecord) {
        // Finite by construction (a count; a positive count over a
        // positive time), so recording cannot fail.
        let _ = self.output_tokens.record(r.output_tokens as f64);
        if let Some(rate) = r.decode_rate {
            let _ = self.decode_rate.record(rate);
        }
        self.length_finishes += u64::from(r.finish_length);
        self.empty += u64::from(r.output_tokens == 0);
        self.from_usage += u64::from(r.tokens_from_usage);
    }

    fn add(&mut self, other: &Shape) {
        self.output_tokens.merge(&other.output_tokens);
        self.decode_rate.merge(&other.decode_rate);
        self.length_finishes += other.length_finishes;
        self.empty += other.empty;
        self.from_usage += other.from_usage;
    }
}

impl Default for Aggregates {
    fn default() -> Self {
        Aggregates {
            requests: RequestCounts::default(),
            ttft: Histogram::new(metrics::TTFT_BUCKETS),
            inter_token: Histogram::new(metrics::INTER_TOKEN_BUCKETS),
            duration: Histogram::new(metrics::REQUEST_DURATION_BUCKETS),
            output_tokens: 0,
            shape: Shape::default(),
        }
    }
}

impl Aggregates {
    fn add(&mut self, other: &Aggregates) {
        self.requests.add(&other.requests);
        self.ttft.merge(&other.ttft);
        self.inter_token.merge(&other.inter_token);
        self.duration.merge(&other.duration);
        self.output_tokens += other.output_tokens;
        self.shape.add(&other.shape);
    }
}

#[derive(Debug, Default)]
struct Cell {
    aggregates: Mutex<Aggregates>,
    inflight: AtomicU64,
    connect_retries: AtomicU64,
}

impl Cell {
    fn record(&self, r: &RequestRecord) {
        let mut a = self.aggregates.lock().unwrap_or_else(|p| p.into_inner());
        a.requests.record(r.outcome);
        if let Some(ttft) = r.ttft {
            a.ttft.record(ttft.as_secs_f64());
        }
        a.inter_token.merge(&r.inter_token);
        a.duration.record(r.duration.as_secs_f64());
        a.output_tokens += r.output_tokens;
        if r.outcome == Outcome::Ok {
            a.shape.record(r);
        }
    }

    fn read(&self) -> Aggregates {
        self.aggregates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One (route, cohort)'s series in the exposition, summed over revisions.
#[derive(Debug, Default)]
struct Series {
    aggregates: Aggregates,
    inflight: u64,
    connect_retries: u64,
}

/// All observations of one proxy process.
#[derive(Debug)]
pub struct Observations {
    instance: String,
    cells: RwLock<HashMap<CohortKey, Arc<Cell>>>,
    /// Model lookups by what they found, in [`Lookup::NAMES`] order.
    model_lookups: [AtomicU64; Lookup::NAMES.len()],
}

/// A key's cell, looked up once per request.
#[derive(Debug, Clone)]
pub struct CohortHandle {
    key: CohortKey,
    cell: Arc<Cell>,
}

impl CohortHandle {
    /// The key.
    pub fn key(&self) -> &CohortKey {
        &self.key
    }

    /// Adds a finished request.
    pub fn record(&self, record: &RequestRecord) {
        self.cell.record(record);
    }

    /// Counts a connection refused by one endpoint and tried on another
    /// of the same cohort.
    pub fn count_connect_retry(&self) {
        self.cell.connect_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn inflight_guard(&self) -> InflightGuard {
        self.cell.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard {
            cell: Arc::clone(&self.cell),
        }
    }
}

/// Holds one request in a key's in-flight gauge.
#[derive(Debug)]
pub struct InflightGuard {
    cell: Arc<Cell>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.cell.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Observations {
    /// Empty observations. `instance` names this process's life (host, pid
    /// and start time, say) so collectors can tell a restart from a quiet
    /// interval.
    pub fn new(instance: impl Into<String>) -> Self {
        Observations {
            instance: instance.into(),
            cells: RwLock::new(HashMap::new()),
            model_lookups: Default::default(),
        }
    }

    /// Counts a request body looked into for its `model`.
    pub fn count_model_lookup(&self, lookup: &Lookup) {
        self.model_lookups[lookup.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The handle of `key`, created on first use. Call once per request
    /// (per cohort tried) and keep it in the request context.
    pub fn cohort(&self, key: &CohortKey) -> CohortHandle {
        let found = self
            .cells
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        let cell = found.unwrap_or_else(|| {
            let mut cells = self.cells.write().unwrap_or_else(|p| p.into_inner());
            Arc::clone(cells.entry(key.clone()).or_default())
        });
        CohortHandle {
            key: key.clone(),
            cell,
        }
    }

    /// Adds a finished request to `key`.
    pub fn record(&self, record: &RequestRecord, key: &CohortKey) {
        self.cohort(key).record(record);
    }

    /// Counts a request in flight on `key` until the guard is dropped.
    pub fn inflight_guard(&self, key: &CohortKey) -> InflightGuard {
        self.cohort(key).inflight_guard()
    }

    fn cells(&self) -> Vec<(CohortKey, Arc<Cell>)> {
        let mut cells: Vec<(CohortKey, Arc<Cell>)> = self
            .cells
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, c)| (k.clone(), Arc::clone(c)))
            .collect();
        cells.sort_by(|a, b| a.0.cmp(&b.0));
        cells
    }

    /// Everything observed so far, for `GET /v1/observations`, with the
    /// generation of every route of `table` (the table in service).
    pub fn snapshot(&self, table: &RouteTable) -> Snapshot {
        let cohorts = self
            .cells()
            .into_iter()
            .map(|(key, cell)| {
                let a = cell.read();
                CohortSnapshot {
                    route: key.route.to_string(),
                    cohort: key.cohort.clone(),
                    revision: key.revision.as_deref().map(str::to_string),
                    requests: a.requests,
                    ttft_seconds: a.ttft.into_distribution(),
                    inter_token_seconds: a.inter_token.into_distribution(),
                    duration_seconds: a.duration.into_distribution(),
                    output_tokens: a.output_tokens,
                    inflight: cell.inflight.load(Ordering::Relaxed),
                    output_tokens_per_request: a.shape.output_tokens,
                    decode_tokens_per_second: a.shape.decode_rate,
                    length_finishes: a.shape.length_finishes,
                    empty_answers: a.shape.empty,
                    tokens_from_usage: a.shape.from_usage,
                }
            })
            .collect();
        Snapshot {
            schema_version: SCHEMA_VERSION,
            instance: self.instance.clone(),
            cohorts,
            routes: table
                .routes()
                .iter()
                .map(|r| (r.name().to_string(), r.generation()))
                .collect(),
        }
    }

    /// The Prometheus text exposition (format 0.0.4) for `GET /metrics`.
    /// Series are per (route, cohort), summed over revisions; every cohort
    /// of `table` appears, with zeros before its first request, so rates
    /// start from 0 instead of from nothing.
    pub fn render_prometheus(&self, table: &RouteTable) -> String {
        let mut by_cohort: BTreeMap<(String, Cohort), Series> = BTreeMap::new();
        for route in table.routes() {
            for b in route.backends() {
                by_cohort
                    .entry((route.name().to_string(), b.cohort.clone()))
                    .or_default();
            }
        }
        for (key, cell) in self.cells() {
            let entry = by_cohort
                .entry((key.route.to_string(), key.cohort.clone()))
                .or_default();
            entry.aggregates.add(&cell.read());
            entry.inflight += cell.inflight.load(Ordering::Relaxed);
            entry.connect_retries += cell.connect_retries.load(Ordering::Relaxed);
        }
        let mut out = String::with_capacity(4096 + by_cohort.len() * 6000);
        let labels = |route: &str, cohort: &Cohort| {
            format!(
                "{}=\"{}\",{}=\"{}\"",
                metrics::ROUTE,
                escape(route),
                metrics::COHORT,
                escape(cohort.as_str())
            )
        };

        header(
            &mut out,
            metrics::REQUESTS_TOTAL,
            "counter",
            "Requests by route, cohort and outcome.",
        );
        for ((route, cohort), Series { aggregates: a, .. }) in &by_cohort {
            for o in Outcome::ALL {
                let _ = writeln!(
                    out,
                    "{}{{{},{}=\"{}\"}} {}",
                    metrics::REQUESTS_TOTAL,
                    labels(route, cohort),
                    metrics::OUTCOME,
                    o.as_str(),
                    a.requests.get(o)
                );
            }
        }
        type Pick = fn(&Aggregates) -> &Histogram;
        let histograms: [(&str, &str, Pick); 3] = [
            (
                metrics::TTFT_SECONDS,
                "Time from request to the first non-empty response body chunk, seconds.",
                |a| &a.ttft,
            ),
            (
                metrics::INTER_TOKEN_SECONDS,
                "Gaps between consecutive SSE content events, seconds.",
                |a| &a.inter_token,
            ),
            (
                metrics::REQUEST_DURATION_SECONDS,
                "Request duration, first byte in to last byte out, seconds.",
                |a| &a.duration,
            ),
        ];
        for (name, help, get) in histograms {
            header(&mut out, name, "histogram", help);
            for ((route, cohort), series) in &by_cohort {
                let h = get(&series.aggregates);
                let l = labels(route, cohort);
                for (le, count) in h.cumulative() {
                    let le = if le.is_infinite() {
                        "+Inf".to_string()
                    } else {
                        format!("{le}")
                    };
                    let _ = writeln!(out, "{name}_bucket{{{l},le=\"{le}\"}} {count}");
                }
                let _ = writeln!(out, "{name}_sum{{{l}}} {}", h.sum());
                let _ = writeln!(out, "{name}_count{{{l}}} {}", h.count());
            }
        }
        header(
            &mut out,
            metrics::MODEL_LOOKUPS_TOTAL,
            "counter",
            "Request bodies looked into for their top-level model (when a route matches models), by what was found.",
        );
        for (name, count) in Lookup::NAMES.iter().zip(&self.model_lookups) {
            let _ = writeln!(
                out,
                "{}{{{}=\"{name}\"}} {}",
                metrics::MODEL_LOOKUPS_TOTAL,
                metrics::LOOKUP,
                count.load(Ordering::Relaxed)
            );
        }
        // One value per (route, cohort): (name, type, help, the value).
        type Value = fn(&Series) -> u64;
        let single: [(&str, &str, &str, Value); 3] = [
            (
                metrics::OUTPUT_TOKENS_TOTAL,
                "counter",
                "Output tokens: usage.completion_tokens when reported, else SSE token events (one per streamed token chunk, empty partial-character ones included).",
                |s| s.aggregates.output_tokens,
            ),
            (
                metrics::CONNECT_RETRIES_TOTAL,
                "counter",
                "Connections refused by one endpoint and tried again on another of the same cohort (pod churn; not counted as connect_error).",
                |s| s.connect_retries,
            ),
            (
                metrics::INFLIGHT_REQUESTS,
                "gauge",
                "Requests in flight.",
                |s| s.inflight,
            ),
        ];
        for (name, kind, help, value) in single {
            header(&mut out, name, kind, help);
            for ((route, cohort), series) in &by_cohort {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(route, cohort), value(series));
            }
        }
        header(
            &mut out,
            metrics::ROUTE_WEIGHT,
            "gauge",
            "Share of the route's new requests the cohort gets, percent; with the model the cohort asks the upstream for on a model route.",
        );
        for route in table.routes() {
            for (i, b) in route.backends().iter().enumerate() {
                let share = (route.share(i) * 1e6).round() / 1e4;
                let model = b
                    .model
                    .as_deref()
                    .map(|m| format!(",{}=\"{}\"", metrics::MODEL, escape(m)))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{}{{{}{model}}} {}",
                    metrics::ROUTE_WEIGHT,
                    labels(route.name(), &b.cohort),
                    share
                );
            }
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use weir_analysis::source::{PrometheusText, Query, Reading, Selector};

    use super::*;
    use crate::meter::{End, Meter};
    use crate::route::tests::two_cohorts;
    use crate::route::{Backend, Route};

    fn key(route: &str, cohort: Cohort, revision: Option<&str>) -> CohortKey {
        CohortKey {
            route: route.into(),
            cohort,
            revision: revision.map(Into::into),
        }
    }

    /// A streamed request with `tokens` content events 20 ms apart after a
    /// `ttft_ms` wait, ending as `end`.
    fn streamed(ttft_ms: u64, tokens: usize, end: End) -> RequestRecord {
        let t0 = Instant::now();
        let mut m = Meter::new(t0);
        m.on_response(200, Some("text/event-stream"), t0);
        let mut t = t0 + Duration::from_millis(ttft_ms);
        for _ in 0..tokens {
            m.on_body_chunk(
                b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
                t,
            );
            t += Duration::from_millis(20);
        }
        if end == End::Complete {
            m.on_body_chunk(b"data: [DONE]\n\n", t);
        }
        m.finish(end, t)
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![two_cohorts("chat", 80.0, 20.0)], false, 1).expect("valid")
    }

    #[test]
    fn snapshot_round_trips_with_the_recorded_counts() {
        let obs = Observations::new("test-1");
        let canary = key("chat", Cohort::Canary, Some("c1"));
        let stable = key("chat", Cohort::Stable, Some("s1"));
        for _ in 0..3 {
            obs.record(&streamed(100, 5, End::Complete), &canary);
        }
        obs.record(&streamed(300, 2, End::UpstreamReset), &canary);
        obs.record(
            &Meter::new(Instant::now()).finish(End::ConnectError, Instant::now()),
            &stable,
        );
        let guard = obs.inflight_guard(&canary);
        let _second = obs.inflight_guard(&canary);
        drop(guard);

        let json = serde_json::to_string(&obs.snapshot(&table())).expect("serializes");
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value["schemaVersion"], 1);
        let back: Snapshot = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back.instance, "test-1");
        assert_eq!(back.routes, BTreeMap::from([("chat".to_string(), 0)]));
        assert_eq!(back.cohorts.len(), 2);
        let c = back
            .cohorts
            .iter()
            .find(|c| c.cohort == Cohort::Canary)
            .expect("canary present");
        assert_eq!(
            (c.route.as_str(), c.revision.as_deref()),
            ("chat", Some("c1"))
        );
        assert_eq!(c.requests[Outcome::Ok], 3);
        assert_eq!(c.requests[Outcome::StreamError], 1);
        assert_eq!(c.requests.total(), 4);
        assert_eq!(c.ttft_seconds.count(), 4);
        assert_eq!(
            c.inter_token_seconds.count(),
            3 * 4 + 1,
            "one sample per gap"
        );
        assert!((c.inter_token_seconds.mean().expect("samples") - 0.020).abs() < 1e-9);
        assert_eq!(c.duration_seconds.count(), 4);
        assert_eq!(c.output_tokens, 3 * 5 + 2);
        assert_eq!(c.inflight, 1);
        let median = c.ttft_seconds.quantile(0.5).expect("samples");
        assert!((median - 0.1).abs() / 0.1 < 0.01, "{median}");
        // The distributions merge like the analysis will merge replicas.
        let mut merged = c.ttft_seconds.clone();
        merged.merge(&c.ttft_seconds);
        assert_eq!(merged.count(), 8);
        let s = back
            .cohorts
            .iter()
            .find(|c| c.cohort == Cohort::Stable)
            .expect("stable present");
        assert_eq!(
            (
                s.requests[Outcome::ConnectError],
                s.ttft_seconds.count(),
                s.inflight
            ),
            (1, 0, 0)
        );
        // The `requests` keys are exactly the outcome label values.
        let keys: Vec<&str> = value["cohorts"][0]["requests"]
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut want: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        let mut got = keys.clone();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn prometheus_output_parses_with_the_analysis_reader() {
        let obs = Observations::new("test");
        let canary = key("chat", Cohort::Canary, Some("c1"));
        let canary_next = key("chat", Cohort::Canary, Some("c2"));
        for _ in 0..4 {
            obs.record(&streamed(100, 3, End::Complete), &canary);
        }
        obs.record(&streamed(2000, 3, End::Complete), &canary_next);
        obs.record(&streamed(100, 3, End::ClientAbort), &canary_next);
        let _inflight = obs.inflight_guard(&canary);
        obs.cohort(&canary).count_connect_retry();
        obs.cohort(&canary_next).count_connect_retry();
        let text = obs.render_prometheus(&table());
        let scrape = PrometheusText::from_text(&text).expect("valid exposition");

        let sel = |cohort: &str| Selector::any().eq("route", "chat").eq("cohort", cohort);
        let ttft = scrape
            .read_now(&Query::histogram(metrics::TTFT_SECONDS, sel("canary")))
            .expect("readable");
        let Reading::Distribution(d) = ttft else {
            panic!("expected a distribution, got {ttft:?}");
        };
        assert_eq!(d.count(), 6, "summed over both revisions");
        assert!((d.sum() - (5.0 * 0.1 + 2.0)).abs() < 1e-9);

        let requests = |outcome: &str| {
            let q = Query::counter(
                metrics::REQUESTS_TOTAL,
                sel("canary").eq("outcome", outcome),
            );
            match scrape.read_now(&q).expect("readable") {
                Reading::Count(n) => n,
                other => panic!("expected a count, got {other:?}"),
            }
        };
        assert_eq!(requests("ok"), 5.0);
        assert_eq!(requests("client_abort"), 1.0);
        assert_eq!(requests("server_error"), 0.0);
        // Stable has no requests yet but is exported with zeros.
        let q = Query::counter(metrics::REQUESTS_TOTAL, sel("stable").eq("outcome", "ok"));
        assert_eq!(scrape.read_now(&q).expect("readable"), Reading::Count(0.0));

        let q = Query::counter(metrics::OUTPUT_TOKENS_TOTAL, sel("canary"));
        assert_eq!(scrape.read_now(&q).expect("readable"), Reading::Count(18.0));
        let retries = |cohort: &str| {
            let q = Query::counter(metrics::CONNECT_RETRIES_TOTAL, sel(cohort));
            scrape.read_now(&q).expect("readable")
        };
        assert_eq!(
            retries("canary"),
            Reading::Count(2.0),
            "summed over revisions"
        );
        assert_eq!(retries("stable"), Reading::Count(0.0));
        let itl = scrape
            .read_now(&Query::histogram(
                metrics::INTER_TOKEN_SECONDS,
                sel("canary"),
            ))
            .expect("readable");
        assert!(matches!(itl, Reading::Distribution(d) if d.count() == 12));
        let gauge = |name: &str, cohort: &str| match scrape
            .read_now(&Query::gauge(name, sel(cohort)))
            .expect("readable")
        {
            Reading::Gauge(points) => points.first().map(|p| p.value),
            other => panic!("expected a gauge, got {other:?}"),
        };
        assert_eq!(gauge(metrics::INFLIGHT_REQUESTS, "canary"), Some(1.0));
        assert_eq!(gauge(metrics::ROUTE_WEIGHT, "canary"), Some(20.0));
        assert_eq!(gauge(metrics::ROUTE_WEIGHT, "stable"), Some(80.0));
        // Exact buckets: 5 of 6 TTFTs at 0.1 s are in le="0.1".
        assert!(
            text.contains(
                "weir_proxy_ttft_seconds_bucket{route=\"chat\",cohort=\"canary\",le=\"0.1\"} 5\n"
            ),
            "{text}"
        );
    }

    /// The committed example of the schema (for the analysis side and for
    /// people) must be what the code writes. `WEIR_UPDATE_FIXTURES=1`
    /// rewrites it after a deliberate change.
    #[test]
    fn snapshot_matches_the_committed_fixture() {
        let obs = Observations::new("weir-proxy-example-1");
        let canary = key("chat", Cohort::Canary, Some("7c1a02"));
        let stable = key("chat", Cohort::Stable, Some("5d8f9c"));
        obs.record(&streamed(120, 3, End::Complete), &canary);
        obs.record(&streamed(250, 2, End::ClientAbort), &canary);
        obs.record(&streamed(90, 4, End::Complete), &stable);
        let _inflight = obs.inflight_guard(&stable);
        let table = RouteTable::new(
            vec![two_cohorts("chat", 95.0, 5.0).with_generation(12)],
            false,
            3,
        )
        .expect("valid");
        let json = serde_json::to_string_pretty(&obs.snapshot(&table)).expect("serializes") + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/observations-v1.json");
        if std::env::var_os("WEIR_UPDATE_FIXTURES").is_some() {
            std::fs::write(&path, &json).expect("write fixture");
        }
        let committed = std::fs::read_to_string(&path).expect("fixture exists");
        assert_eq!(
            json, committed,
            "run with WEIR_UPDATE_FIXTURES=1 after a deliberate schema change"
        );
        let back: Snapshot = serde_json::from_str(&committed).expect("parses");
        let canary = back
            .cohorts
            .iter()
            .find(|c| c.cohort == Cohort::Canary)
            .expect("canary present");
        assert_eq!(
            (
                canary.requests[Outcome::Ok],
                canary.requests[Outcome::ClientAbort]
            ),
            (1, 1)
        );
        assert_eq!(canary.inter_token_seconds.count(), 2 + 1);
        assert_eq!(back.routes.get("chat"), Some(&12));
        // The analysis side reads the same document, generations included.
        let read = Snapshot::parse(&committed).expect("reads");
        assert_eq!(read.routes.get("chat"), Some(&12));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let r = Route::new(
            "odd.name_1",
            Default::default(),
            None,
            vec![Backend::new(
                Cohort::parse("preview").expect("valid"),
                crate::route::Upstream::parse("http://a:1").expect("valid"),
                weir_core::Weight::ALL,
            )],
        )
        .expect("valid");
        let t = RouteTable::new(vec![r], false, 0).expect("valid");
        let text = Observations::new("x").render_prometheus(&t);
        assert!(PrometheusText::from_text(&text).is_ok(), "{text}");
        assert!(
            text.contains("weir_proxy_route_weight{route=\"odd.name_1\",cohort=\"preview\"} 100\n")
        );
    }

    #[test]
    fn handles_share_cells_across_threads() {
        let obs = Arc::new(Observations::new("t"));
        let k = key("chat", Cohort::Stable, None);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let obs = Arc::clone(&obs);
                let k = k.clone();
                std::thread::spawn(move || {
                    let r = streamed(10, 2, End::Complete);
                    for _ in 0..250 {
                        let h = obs.cohort(&k);
                        let _g = h.inflight_guard();
                        h.record(&r);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        let snap = obs.snapshot(&RouteTable::new(vec![], false, 0).expect("valid"));
        assert_eq!(snap.cohorts.len(), 1);
        assert_eq!(snap.cohorts[0].requests[Outcome::Ok], 1000);
        assert_eq!(snap.cohorts[0].inter_token_seconds.count(), 1000);
        assert_eq!(snap.cohorts[0].inflight, 0);
    }
}
