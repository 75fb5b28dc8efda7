//! Shared fixtures of the end-to-end tests: simulated upstreams, a proxy
//! started in-process, an HTTP client, admin API helpers and binomial
//! bands. Condition waits are the test kit's (`weir_test_kit::poll`).
//!
//! Everything listens on 127.0.0.1 with port 0. Every wait is bounded and
//! polls a condition; nothing sleeps to synchronize.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

#[cfg(feature = "kube")]
pub mod kube;
pub mod recorder;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use weir_analysis::observations::{CohortSnapshot, Snapshot};
use weir_analysis::source::{PrometheusText, Query, Reading, Selector};
use weir_core::RequestCounts;
use weir_proxy::{
    ConfigSource, Drained, MemorySource, Observations, RouteTable, Running, Settings, Timeouts,
};
use weir_sim::{SimConfig, SimHandle};

/// The route every fixture table defines.
pub const ROUTE: &str = "chat";

/// Longest any single request of a test may take before the test fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// z for a two-sided 99.9% normal band: Φ⁻¹(0.9995).
pub const Z_999: f64 = 3.290_526_731_491_926;

/// Starts a simulator named `name` on a free loopback port.
pub async fn sim(name: &str, configure: impl FnOnce(&mut SimConfig)) -> SimHandle {
    sim_at(IpAddr::V4(Ipv4Addr::LOCALHOST), name, configure).await
}

/// Starts a simulator named `name` on a free port of `ip`.
pub async fn sim_at(ip: IpAddr, name: &str, configure: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut config = SimConfig {
        name: name.to_string(),
        seed: Some(7),
        ttft_sigma: 0.0,
        ..SimConfig::default()
    };
    configure(&mut config);
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .unwrap_or_else(|e| panic!("bind a port on {ip} for the simulator: {e}"));
    weir_sim::spawn(config, listener).expect("valid simulator config")
}

/// A simulator that answers at once with one token.
pub async fn instant_sim(name: &str) -> SimHandle {
    sim(name, |c| {
        c.ttft = Duration::ZERO;
        c.itl = Duration::ZERO;
        c.tokens = 1;
    })
    .await
}

/// A streaming simulator: `ttft`, then `tokens` tokens `itl` apart.
pub async fn stream_sim(name: &str, ttft: Duration, itl: Duration, tokens: u32) -> SimHandle {
    sim(name, |c| {
        c.ttft = ttft;
        c.itl = itl;
        c.tokens = tokens;
    })
    .await
}

/// Options of the fixture config file.
#[derive(Debug, Clone)]
pub struct Table<'a> {
    pub stable: &'a SimHandle,
    pub canary: &'a SimHandle,
    pub stable_weight: f64,
    pub canary_weight: f64,
    pub override_header: bool,
    pub sticky_header: Option<&'a str>,
    pub hosts: &'a [&'a str],
}

impl<'a> Table<'a> {
    pub fn new(stable: &'a SimHandle, canary: &'a SimHandle, canary_weight: f64) -> Self {
        Table {
            stable,
            canary,
            stable_weight: 100.0 - canary_weight,
            canary_weight,
            override_header: false,
            sticky_header: None,
            hosts: &[],
        }
    }

    /// The YAML text of `weir proxy -f` for this table. The listen and
    /// admin addresses in it are placeholders: tests pass their own
    /// [`Settings`].
    pub fn yaml(&self) -> String {
        let sticky = self
            .sticky_header
            .map(|h| format!("    sticky: {{header: {h}}}\n"))
            .unwrap_or_default();
        let hosts = if self.hosts.is_empty() {
            String::new()
        } else {
            format!("    match: {{hosts: [{}]}}\n", self.hosts.join(", "))
        };
        format!(
            "listen: 127.0.0.1:1\n\
             admin: 127.0.0.1:2\n\
             overrideHeader: {}\n\
             routes:\n\
             \x20 - name: {ROUTE}\n\
             {hosts}{sticky}\
             \x20   backends:\n\
             \x20     - {{cohort: stable, url: {}, weight: {}, revision: s1}}\n\
             \x20     - {{cohort: canary, url: {}, weight: {}, revision: c1}}\n",
            self.override_header,
            self.stable.base_url(),
            self.stable_weight,
            self.canary.base_url(),
            self.canary_weight,
        )
    }

    /// The validated route table.
    pub fn table(&self) -> RouteTable {
        weir_proxy::config::file::parse(&self.yaml())
            .expect("the fixture config is valid")
            .table
    }
}

/// Timeouts for tests: a grace period long enough that a drain ending early
/// is visibly not the grace running out.
pub fn timeouts() -> Timeouts {
    Timeouts {
        read: Duration::from_secs(20),
        idle: Duration::from_secs(2),
        grace: Duration::from_secs(30),
        ..Timeouts::default()
    }
}

/// A proxy running on a tokio runtime of its own.
///
/// Tests drive it from their own runtime, so a proxy that blocks its
/// runtime's threads (as a blocking `accept()` once did) makes requests
/// time out and the test fail with a message, instead of stopping the
/// test's own timers and hanging it.
#[derive(Debug)]
pub struct Proxy {
    running: Option<Running>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::ops::Deref for Proxy {
    type Target = Running;
    fn deref(&self) -> &Running {
        self.running
            .as_ref()
            .expect("the proxy runs until shut down")
    }
}

impl Proxy {
    /// [`Running::shutdown`], run on the proxy's runtime.
    pub async fn shutdown(mut self) -> Drained {
        let running = self.running.take().expect("shut down once");
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the proxy")
            .spawn(running.shutdown())
            .await
            .expect("the drain task ends")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which async tests must not do.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Starts a proxy and its admin API on free loopback ports, on a runtime
/// of its own.
pub async fn start_proxy(source: Arc<dyn ConfigSource>) -> Proxy {
    start_proxy_with(source, |_| {}).await
}

/// [`start_proxy`] with settings changed by `configure`.
pub async fn start_proxy_with(
    source: Arc<dyn ConfigSource>,
    configure: impl FnOnce(&mut Settings),
) -> Proxy {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        admin: "127.0.0.1:0".parse().expect("address"),
        timeouts: timeouts(),
        // Fixed draws: the multiset of weighted choices for N requests is
        // the same on every run, so cohort counts are reproducible.
        draw_seed: Some(20_261_125),
        max_connections: None,
        tls: None,
        upstream_ca: None,
    };
    configure(&mut settings);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("proxy")
        .enable_all()
        .build()
        .expect("a runtime for the proxy");
    let observations = Arc::new(Observations::new("weir-proxy-e2e"));
    let running = runtime
        .spawn(weir_proxy::start(settings, source, observations))
        .await
        .expect("the start task ends")
        .expect("the proxy starts on free ports");
    Proxy {
        running: Some(running),
        runtime: Some(runtime),
    }
}

/// Starts a proxy serving `table` from a writable in-memory source.
pub async fn start_memory_proxy(table: RouteTable) -> (Proxy, Arc<MemorySource>) {
    let source = Arc::new(MemorySource::new(table, true));
    let proxy = start_proxy(Arc::clone(&source) as Arc<dyn ConfigSource>).await;
    (proxy, source)
}

/// An HTTP client that never goes through a system proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("an HTTP client")
}

/// Sends `total` non-streaming requests through `listen`, `concurrency` at a
/// time, and counts `(x-weir-cohort, x-weir-sim)` pairs.
pub async fn count_split(
    listen: SocketAddr,
    total: usize,
    concurrency: usize,
) -> HashMap<(String, String), u64> {
    let client = client();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        // Worker w sends requests w, w + concurrency, ...: `total` in all.
        let mine = (w..total).step_by(concurrency).count();
        let client = client.clone();
        workers.spawn(async move {
            let mut seen: HashMap<(String, String), u64> = HashMap::new();
            for _ in 0..mine {
                let response = chat(&client, listen, false)
                    .send()
                    .await
                    .expect("the proxy answers");
                assert_eq!(response.status(), 200);
                let pair = served_by(&response);
                response.bytes().await.expect("a complete body");
                *seen.entry(pair).or_default() += 1;
            }
            seen
        });
    }
    let mut all: HashMap<(String, String), u64> = HashMap::new();
    while let Some(done) = workers.join_next().await {
        for (pair, n) in done.expect("a worker finished") {
            *all.entry(pair).or_default() += n;
        }
    }
    all
}

/// A chat completion request body.
pub fn chat_body(stream: bool) -> &'static str {
    if stream {
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#
    } else {
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#
    }
}

/// `POST http://LISTEN/v1/chat/completions`, not yet sent.
pub fn chat(client: &reqwest::Client, listen: SocketAddr, stream: bool) -> reqwest::RequestBuilder {
    client
        .post(format!("http://{listen}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat_body(stream))
}

/// A response's `x-weir-cohort` and `x-weir-sim` headers.
pub fn served_by(response: &reqwest::Response) -> (String, String) {
    let get = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(missing)")
            .to_string()
    };
    (get(weir_proxy::COHORT_HEADER), get(weir_sim::SIM_HEADER))
}

/// Reads a response body chunk by chunk (as a streaming client does).
///
/// # Errors
/// The transport error, with the bytes read before it.
pub async fn read_body(
    mut response: reqwest::Response,
) -> Result<String, (String, reqwest::Error)> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok(String::from_utf8_lossy(&body).into_owned()),
            Err(e) => return Err((String::from_utf8_lossy(&body).into_owned(), e)),
        }
    }
}

/// Whether an SSE body is a complete OpenAI stream.
pub fn stream_complete(body: &str) -> bool {
    body.trim_end().ends_with("data: [DONE]")
}

/// `GET http://ADMIN/PATH` as JSON.
pub async fn admin_json(
    client: &reqwest::Client,
    admin: SocketAddr,
    path: &str,
) -> serde_json::Value {
    let response = client
        .get(format!("http://{admin}{path}"))
        .send()
        .await
        .expect("the admin API answers");
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.expect("the admin API answers JSON")
}

/// `PUT /v1/routes/chat/weights` with the canary at `canary` percent (stable
/// gets the rest); asserts the admin API accepted it.
pub async fn put_weights(client: &reqwest::Client, admin: SocketAddr, canary: f64) {
    let body = serde_json::json!({ "weights": { "stable": 100.0 - canary, "canary": canary } });
    let response = client
        .put(format!("http://{admin}/v1/routes/{ROUTE}/weights"))
        .json(&body)
        .send()
        .await
        .expect("the admin API answers");
    let status = response.status();
    let text = response.text().await.expect("a body");
    assert_eq!(status, 200, "PUT weights: {text}");
}

/// `(generation, canary weight in percent)` of the route table in service.
pub async fn routes_state(client: &reqwest::Client, admin: SocketAddr) -> (u64, f64) {
    let routes = admin_json(client, admin, "/v1/routes").await;
    let table = &routes["table"];
    let generation = table["generation"].as_u64().expect("a generation");
    let canary = table["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["name"] == ROUTE))
        .and_then(|r| r["backends"].as_array())
        .and_then(|b| b.iter().find(|b| b["cohort"] == "canary"))
        .and_then(|b| b["weight"].as_f64())
        .expect("the chat route has a canary weight");
    (generation, canary)
}

/// The proxy's `/metrics` text.
pub async fn metrics(admin: SocketAddr) -> String {
    client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Counter `name` of `route`'s `cohort` in a `/metrics` text, read as the
/// analysis reads it. Panics when the text has no such series.
pub fn counter(text: &str, name: &str, route: &str, cohort: &str) -> f64 {
    let scrape = PrometheusText::from_text(text).expect("a valid exposition");
    let selector = Selector::any().eq("route", route).eq("cohort", cohort);
    match scrape.read_now(&Query::counter(name, selector)) {
        Ok(Reading::Count(n)) => n,
        other => panic!("{name} of {route}/{cohort}: {other:?} in:\n{text}"),
    }
}

/// `GET /v1/observations`.
pub async fn observations(client: &reqwest::Client, admin: SocketAddr) -> Snapshot {
    let response = client
        .get(format!("http://{admin}/v1/observations"))
        .send()
        .await
        .expect("the admin API answers");
    assert_eq!(response.status(), 200);
    response.json().await.expect("observations JSON")
}

/// The first `GET /v1/observations` for which `holds` is true, polled for
/// up to [`REQUEST_TIMEOUT`]. The proxy records a request when its exchange
/// ends, after the last write, so a client can read a response's end before
/// the record exists: a test waits for the count it is about to assert on.
pub async fn observations_when(
    admin: SocketAddr,
    what: &str,
    holds: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let (client, holds) = (&client(), &holds);
    weir_test_kit::poll::until(what, REQUEST_TIMEOUT, || async move {
        let snapshot = observations(client, admin).await;
        holds(&snapshot).then_some(snapshot)
    })
    .await
}

/// The observations of `cohort` on the chat route (all revisions merged
/// into one count per outcome; the fixtures have one revision each).
pub fn cohort<'a>(snapshot: &'a Snapshot, cohort: &str) -> Option<&'a CohortSnapshot> {
    snapshot
        .cohorts
        .iter()
        .find(|c| c.route == ROUTE && c.cohort.as_str() == cohort)
}

/// Finished requests of `name` per outcome (all zero when never seen).
pub fn counts(snapshot: &Snapshot, name: &str) -> RequestCounts {
    cohort(snapshot, name)
        .map(|c| c.requests)
        .unwrap_or_default()
}

/// The two-sided band `mean ± z·sd` of a Binomial(n, p) count, by the
/// normal approximation (n·p·(1-p) ≥ 40 in every use): the whole counts
/// inside it.
pub fn binomial_band(n: u64, p: f64, z: f64) -> (u64, u64) {
    let n_f = n as f64;
    let mean = n_f * p;
    let sd = (n_f * p * (1.0 - p)).sqrt();
    let lo = (mean - z * sd).ceil().max(0.0) as u64;
    let hi = (mean + z * sd).floor().min(n_f) as u64;
    (lo, hi)
}

/// Asserts that `count` of `n` lies in the 99.9% [`binomial_band`] of
/// probability `p`.
pub fn assert_in_band(count: u64, n: usize, p: f64, what: &str) {
    let (lo, hi) = binomial_band(n as u64, p, Z_999);
    assert!(
        (lo..=hi).contains(&count),
        "{what}: {count} of {n}, outside [{lo}, {hi}] for p = {p}"
    );
}

/// A streamed chat completion posted to `url` by `curl` with `flags`
/// (run off the runtime's threads): the response head and body as curl
/// printed them. Panics with curl's error when it fails.
pub async fn curl_chat(flags: Vec<std::ffi::OsString>, url: String) -> String {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "-N", "-D", "-"])
            .args(flags)
            .args(["-H", "content-type: application/json", "--data-binary"])
            .args([chat_body(true), &url])
            .output()
            .expect("curl runs")
    })
    .await
    .expect("the curl task ends");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}
