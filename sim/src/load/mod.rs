//! An open-loop streaming load generator: [`run`] sends streaming chat
//! completions at a constant rate and measures, per request, what a client
//! sees.
//!
//! # Open loop
//!
//! Request `i` is due at `start + i / rate`, whatever happened to earlier
//! ones: a slow server does not slow the offered load down (closed-loop
//! generators hide latency that way, "coordinated omission"). If the
//! scheduler itself falls behind, due requests are sent at once. A request
//! that would exceed the concurrency limit is counted as dropped and never
//! sent later.
//!
//! # What is measured
//!
//! Time to first token is from just before the request is handed to the
//! client to the first SSE event with non-empty content; inter-token
//! latency is the gap between consecutive content events (events that
//! arrive in one read share a timestamp, as they would for any client).
//! Each request ends with one [`Outcome`]. Responses carrying the
//! `x-weir-cohort` header are counted per cohort.
//!
//! # What is sent
//!
//! One model and one prompt, or a mix ([`mix`]): each request's model
//! drawn by weight, its prompt length drawn from a range or a list, both
//! from RNGs seeded with the run's seed (one stream each, drawn for every
//! scheduled request, dropped or not), so a seeded run sends the same
//! sequence whatever the server does. With several models the report
//! breaks the results down per model.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::RngExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::{model, text};

pub mod mix;
pub mod report;
pub mod sse;

pub use mix::{ModelMix, ModelWeight, PromptTokens};
pub use report::{
    CohortReport, LoadReport, ModelReport, Outcome, Outcomes, Percentiles, SessionReport,
};

/// What to send, how fast, for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// Base URL (`http://host:port`, optionally ending in `/v1`), or the
    /// full `.../chat/completions` URL.
    pub url: String,
    /// Requests per second.
    pub rate: f64,
    /// How long requests are sent for; responses still open then are
    /// awaited (up to `request_timeout`).
    pub duration: Duration,
    /// Requests in flight beyond which new ones are dropped.
    pub concurrency_limit: Option<u64>,
    /// Header carrying a session id drawn from a pool, to test stickiness.
    pub session_header: Option<String>,
    /// Size of the session pool.
    pub sessions: u32,
    /// The `model` of every request, unless `models` is set.
    pub model: String,
    /// A weighted mix of models: each request asks for one, drawn by
    /// weight. Empty: every request asks for `model`.
    pub models: Vec<ModelWeight>,
    /// The user message of every request, unless `prompt_tokens` is set.
    pub prompt: String,
    /// Prompt length of each request, drawn per request: the message is
    /// generated text of that many tokens ([`text::prompt_text`]). `None`:
    /// every request sends `prompt`.
    pub prompt_tokens: Option<PromptTokens>,
    /// `max_tokens` of every request.
    pub max_tokens: Option<u32>,
    /// Longest time one request may take.
    pub request_timeout: Duration,
    /// Seed of the session, model and prompt-length draws; `None` draws
    /// one.
    pub seed: Option<u64>,
    /// Extra headers on every request, e.g. `x-weir-cohort: canary` to
    /// reach a blue-green preview through the proxy's override header.
    pub headers: Vec<(String, String)>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            url: "http://127.0.0.1:9001".into(),
            rate: 10.0,
            duration: Duration::from_secs(30),
            concurrency_limit: None,
            session_header: None,
            sessions: 100,
            model: "weir-sim".into(),
            models: Vec::new(),
            prompt: "Say something.".into(),
            prompt_tokens: None,
            max_tokens: None,
            request_timeout: Duration::from_secs(60),
            seed: None,
            headers: Vec::new(),
        }
    }
}

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// A setting is unusable.
    #[error("{field}: {reason}")]
    Config {
        /// The setting, spelled as its CLI flag without dashes.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The URL cannot be used.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing accepts connections at the URL.
    #[error("{url} is unreachable: {reason}")]
    Unreachable {
        /// The URL as given.
        url: String,
        /// What connecting said.
        reason: String,
    },
}

/// A snapshot for progress lines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Since the run started.
    pub elapsed: Duration,
    /// The configured sending window.
    pub duration: Duration,
    /// Requests sent.
    pub sent: u64,
    /// Requests that ended `ok`.
    pub ok: u64,
    /// Requests that ended otherwise.
    pub errors: u64,
    /// Requests dropped by the concurrency limit.
    pub dropped: u64,
    /// Requests in flight.
    pub inflight: u64,
}

/// The chat-completions endpoint for a base URL.
///
/// # Errors
/// [`LoadError::Url`] unless it is an absolute `http://` URL.
pub fn endpoint(url: &str) -> Result<Uri, LoadError> {
    let bad = |reason: &str| LoadError::Url {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(bad("https is not supported: weir load speaks plain HTTP")),
        _ => return Err(bad("expected http://host:port")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| bad("expected http://host:port"))?;
    let path = uri.path().trim_end_matches('/');
    let path = if path.ends_with("/chat/completions") {
        path.to_string()
    } else if path.ends_with("/v1") {
        format!("{path}/chat/completions")
    } else {
        format!("{path}/v1/chat/completions")
    };
    format!("http://{authority}{path}")
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))
}

impl LoadConfig {
    fn validate(&self) -> Result<(), LoadError> {
        let bad = |field, reason: String| Err(LoadError::Config { field, reason });
        if !self.rate.is_finite() || self.rate <= 0.0 {
            return bad("rate", format!("{} must be a positive number", self.rate));
        }
        if self.duration.is_zero() {
            return bad("duration", "must be longer than 0".into());
        }
        if self.concurrency_limit == Some(0) {
            return bad("concurrency-limit", "must be at least 1".into());
        }
        if self.sessions == 0 {
            return bad("sessions", "must be at least 1".into());
        }
        if let Some(name) = &self.session_header
            && HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            return bad("session-header", format!("{name:?} is not a header name"));
        }
        if self.request_timeout.is_zero() {
            return bad("timeout", "must be longer than 0".into());
        }
        if !self.models.is_empty()
            && let Err(reason) = ModelMix::new(&self.models)
        {
            return bad("model", reason);
        }
        if let Some(Err(reason)) = self.prompt_tokens.as_ref().map(PromptTokens::check) {
            return bad("prompt-tokens", reason);
        }
        for (name, value) in &self.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return bad("header", format!("{name:?} is not a header name"));
            }
            if HeaderValue::from_str(value).is_err() {
                return bad("header", format!("{value:?} is not a header value"));
            }
        }
        Ok(())
    }
}

/// Checks that something accepts TCP connections at `uri`.
async fn preflight(url: &str, uri: &Uri) -> Result<(), LoadError> {
    let unreachable = |reason: String| LoadError::Unreachable {
        url: url.to_string(),
        reason,
    };
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(80);
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable("no answer to connect within 5s".into())),
    }
}

/// What one request measured.
#[derive(Debug)]
struct Record {
    outcome: Outcome,
    status: Option<u16>,
    ttft: Option<f64>,
    gaps: Vec<f64>,
    content_events: u64,
    /// The last `finish_reason` the stream carried.
    finish: Option<sse::FinishReason>,
    cohort: Option<String>,
    session: Option<u32>,
    /// Its index in the model mix, when there is one.
    model: Option<usize>,
}

impl Record {
    fn new(session: Option<u32>, model: Option<usize>) -> Self {
        Record {
            outcome: Outcome::Incomplete,
            status: None,
            ttft: None,
            gaps: Vec::new(),
            content_events: 0,
            finish: None,
            cohort: None,
            session,
            model,
        }
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Everything a request task needs, shared.
#[derive(Debug)]
struct Target {
    client: HttpClient,
    uri: Uri,
    session_header: Option<HeaderName>,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    inflight: AtomicU64,
}

/// Runs the load and reports. `on_progress` is called every
/// `progress_every` while it runs.
///
/// # Errors
/// [`LoadError::Config`] / [`LoadError::Url`] for unusable settings,
/// [`LoadError::Unreachable`] when nothing listens at the URL. Failures of
/// individual requests are outcomes in the report, not errors.
pub async fn run(
    config: &LoadConfig,
    progress_every: Duration,
    mut on_progress: impl FnMut(&Progress),
) -> Result<LoadReport, LoadError> {
    config.validate()?;
    let uri = endpoint(&config.url)?;
    preflight(&config.url, &uri).await?;

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    let client = Client::builder(TokioExecutor::new())
        // Below the keep-alive of common servers (vLLM/uvicorn: 5 s), with
        // a timer so idle connections are closed, not just skipped.
        .pool_idle_timeout(Duration::from_secs(4))
        .pool_timer(TokioTimer::new())
        .build(connector);
    let mix = match config.models.as_slice() {
        [] => None,
        models => Some(ModelMix::new(models).map_err(|reason| LoadError::Config {
            field: "model",
            reason,
        })?),
    };
    let fixed_body = request_body(&config.model, &config.prompt, config.max_tokens);
    let target = Arc::new(Target {
        client,
        uri,
        session_header: config
            .session_header
            .as_deref()
            .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
        headers: config
            .headers
            .iter()
            .filter_map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect(),
        timeout: config.request_timeout,
        inflight: AtomicU64::new(0),
    });
    let seed = config.seed.unwrap_or_else(rand::random);
    let session_ids: Vec<HeaderValue> = (0..config.sessions)
        .map(|i| {
            HeaderValue::from_str(&format!("s-{:016x}", model::mix(seed, u64::from(i))))
                .unwrap_or(HeaderValue::from_static("s"))
        })
        .collect();
    let mut rng = model::request_rng(seed, u64::MAX);
    let mut model_rng = model::request_rng(seed, u64::MAX - 1);
    let mut prompt_rng = model::request_rng(seed, u64::MAX - 2);

    let mut tally = Tally {
        models: if config.models.len() > 1 {
            vec![Default::default(); config.models.len()]
        } else {
            Vec::new()
        },
        ..Tally::default()
    };
    let mut tasks: JoinSet<Record> = JoinSet::new();
    let mut progress = tokio::time::interval(progress_every.max(Duration::from_millis(10)));
    progress.reset();
    let start = Instant::now();
    let end = start + config.duration;
    let mut scheduled: u64 = 0;
    let mut sent: u64 = 0;
    let mut dropped: u64 = 0;
    let snapshot = |tally: &Tally, sent, dropped, target: &Target| Progress {
        elapsed: start.elapsed(),
        duration: config.duration,
        sent,
        ok: tally.outcomes.ok,
        errors: tally.outcomes.errors(),
        dropped,
        inflight: target.inflight.load(Relaxed),
    };

    loop {
        let due = start + Duration::from_secs_f64(scheduled as f64 / config.rate);
        if due >= end {
            break;
        }
        let sleep = tokio::time::sleep_until(due);
        let mut sleep = std::pin::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                () = &mut sleep => break,
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => tally.add(joined),
                _ = progress.tick() => on_progress(&snapshot(&tally, sent, dropped, &target)),
            }
        }
        scheduled += 1;
        let model = mix.as_ref().map(|m| m.pick(model_rng.random()));
        let prompt_tokens = config
            .prompt_tokens
            .as_ref()
            .map(|p| p.draw(&mut prompt_rng));
        if config
            .concurrency_limit
            .is_some_and(|limit| target.inflight.load(Relaxed) >= limit)
        {
            dropped += 1;
            continue;
        }
        let session = target.session_header.as_ref().map(|_| {
            let i = rng.random_range(0..config.sessions);
            (i, session_ids[i as usize].clone())
        });
        let body = match (model, prompt_tokens) {
            (None, None) => fixed_body.clone(),
            _ => request_body(
                model.map_or(config.model.as_str(), |i| config.models[i].name.as_str()),
                &prompt_tokens.map_or_else(|| config.prompt.clone(), text::prompt_text),
                config.max_tokens,
            ),
        };
        target.inflight.fetch_add(1, Relaxed);
        sent += 1;
        tasks.spawn(one_request(Arc::clone(&target), session, body, model));
    }
    let sent_window = start.elapsed().max(config.duration);
    while !tasks.is_empty() {
        tokio::select! {
            Some(joined) = tasks.join_next() => tally.add(joined),
            _ = progress.tick() => on_progress(&snapshot(&tally, sent, dropped, &target)),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    on_progress(&snapshot(&tally, sent, dropped, &target));

    Ok(tally.report(config, scheduled, sent, dropped, sent_window, elapsed))
}

/// A streaming chat request's body.
fn request_body(model: &str, prompt: &str, max_tokens: Option<u32>) -> Bytes {
    let mut body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": true,
    });
    if let Some(max) = max_tokens {
        body["max_tokens"] = max.into();
    }
    Bytes::from(body.to_string())
}

async fn one_request(
    target: Arc<Target>,
    session: Option<(u32, HeaderValue)>,
    body: Bytes,
    model: Option<usize>,
) -> Record {
    let mut record = Record::new(session.as_ref().map(|(i, _)| *i), model);
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(target.uri.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "text/event-stream");
    if let (Some(name), Some((_, value))) = (&target.session_header, session) {
        request = request.header(name, value);
    }
    for (name, value) in &target.headers {
        request = request.header(name, value);
    }
    match request.body(Full::new(body)) {
        Ok(request) => {
            let exchanged =
                tokio::time::timeout(target.timeout, exchange(&target, request, &mut record)).await;
            if exchanged.is_err() {
                record.outcome = Outcome::Timeout;
            }
        }
        // The parts were validated up front; count it rather than panic.
        Err(_) => record.outcome = Outcome::Incomplete,
    }
    target.inflight.fetch_sub(1, Relaxed);
    record
}

async fn exchange(target: &Target, request: Request<Full<Bytes>>, record: &mut Record) {
    let sent_at = Instant::now();
    let response = match target.client.request(request).await {
        Ok(r) => r,
        Err(e) => {
            record.outcome = if e.is_connect() {
                Outcome::ConnectError
            } else {
                Outcome::Incomplete
            };
            return;
        }
    };
    record.status = Some(response.status().as_u16());
    record.cohort = response
        .headers()
        .get(crate::COHORT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = response.into_body();
    if !record.status.is_some_and(|s| (200..300).contains(&s)) {
        record.outcome = Outcome::HttpError;
        // Read it out so the connection can be reused.
        while let Some(Ok(_)) = body.frame().await {}
        return;
    }
    let mut parser = sse::SseParser::default();
    let (mut done, mut error) = (false, false);
    let mut last: Option<Instant> = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let now = Instant::now();
        parser.push(data, |event| match event {
            sse::Event::Chunk { content, finish } => {
                if finish.is_some() {
                    record.finish = finish;
                }
                if content {
                    record.content_events += 1;
                    match last {
                        None => record.ttft = Some((now - sent_at).as_secs_f64()),
                        Some(previous) => record.gaps.push((now - previous).as_secs_f64()),
                    }
                    last = Some(now);
                }
            }
            sse::Event::Done => done = true,
            sse::Event::Error | sse::Event::Malformed => error = true,
        });
    }
    record.outcome = if error {
        Outcome::StreamError
    } else if done && record.finish.is_some() {
        Outcome::Ok
    } else {
        Outcome::Incomplete
    };
}

/// Results gathered as requests finish.
#[derive(Debug, Default)]
struct Tally {
    outcomes: Outcomes,
    statuses: BTreeMap<u16, u64>,
    ttft: Vec<f64>,
    gaps: Vec<f64>,
    tokens: u64,
    finished_length: u64,
    cohorts: BTreeMap<String, (CohortReport, Vec<f64>)>,
    /// Per model of the mix, by index, when it has more than one.
    models: Vec<(ModelReport, Vec<f64>)>,
    session_cohort: HashMap<u32, Option<String>>,
    split_sessions: HashSet<u32>,
}

impl Tally {
    fn add(&mut self, joined: Result<Record, tokio::task::JoinError>) {
        // A request task only ends early if it panicked: count it as broken.
        let record = joined.unwrap_or(Record::new(None, None));
        self.outcomes.add(record.outcome);
        if record.outcome == Outcome::HttpError
            && let Some(status) = record.status
        {
            *self.statuses.entry(status).or_default() += 1;
        }
        self.ttft.extend(record.ttft);
        self.gaps.extend_from_slice(&record.gaps);
        self.tokens += record.content_events;
        let length = record.finish == Some(sse::FinishReason::Length);
        self.finished_length += u64::from(length);
        if let Some((m, ttft)) = record.model.and_then(|i| self.models.get_mut(i)) {
            m.requests += 1;
            if record.outcome == Outcome::Ok {
                m.ok += 1;
            } else {
                m.errors += 1;
            }
            m.tokens += record.content_events;
            m.finished_length += u64::from(length);
            ttft.extend(record.ttft);
        }
        if let Some(cohort) = &record.cohort {
            let (c, ttft) = self.cohorts.entry(cohort.clone()).or_default();
            c.requests += 1;
            if record.outcome == Outcome::Ok {
                c.ok += 1;
            } else {
                c.errors += 1;
            }
            ttft.extend(record.ttft);
        }
        if let Some(session) = record.session {
            let first = self
                .session_cohort
                .entry(session)
                .or_insert_with(|| record.cohort.clone());
            if first.is_none() {
                first.clone_from(&record.cohort);
            } else if record.cohort.is_some() && *first != record.cohort {
                self.split_sessions.insert(session);
            }
        }
    }

    fn report(
        mut self,
        config: &LoadConfig,
        scheduled: u64,
        sent: u64,
        dropped: u64,
        sent_window: Duration,
        elapsed: f64,
    ) -> LoadReport {
        let per_second = |n: u64, seconds: f64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        LoadReport {
            url: config.url.clone(),
            rate: config.rate,
            duration_seconds: config.duration.as_secs_f64(),
            elapsed_seconds: elapsed,
            scheduled,
            sent,
            dropped,
            sent_per_second: per_second(sent, sent_window.as_secs_f64()),
            ok_per_second: per_second(self.outcomes.ok, elapsed),
            tokens: self.tokens,
            tokens_per_second: per_second(self.tokens, elapsed),
            finished_length: self.finished_length,
            ttft_seconds: Percentiles::of(&mut self.ttft),
            itl_seconds: Percentiles::of(&mut self.gaps),
            outcomes: self.outcomes,
            http_statuses: self.statuses,
            cohorts: self
                .cohorts
                .into_iter()
                .map(|(name, (mut c, mut ttft))| {
                    c.ttft_seconds = Percentiles::of(&mut ttft);
                    (name, c)
                })
                .collect(),
            models: config
                .models
                .iter()
                .zip(self.models)
                .map(|(m, (mut report, mut ttft))| {
                    report.ttft_seconds = Percentiles::of(&mut ttft);
                    (m.name.clone(), report)
                })
                .collect(),
            sessions: config.session_header.as_ref().map(|header| SessionReport {
                header: header.clone(),
                pool: config.sessions,
                seen: self.session_cohort.len() as u64,
                on_several_cohorts: self.split_sessions.len() as u64,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_accepts_base_urls_and_full_paths() {
        for (given, want) in [
            ("http://h:1", "http://h:1/v1/chat/completions"),
            ("http://h:1/", "http://h:1/v1/chat/completions"),
            ("http://h:1/v1", "http://h:1/v1/chat/completions"),
            ("http://h:1/v1/", "http://h:1/v1/chat/completions"),
            (
                "http://h:1/p/v1/chat/completions",
                "http://h:1/p/v1/chat/completions",
            ),
        ] {
            assert_eq!(endpoint(given).expect(given).to_string(), want);
        }
        for bad in ["https://h", "h:1", "not a url", "/v1"] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }

    fn record(outcome: Outcome, cohort: Option<&str>, session: Option<u32>, ttft: f64) -> Record {
        Record {
            outcome,
            status: Some(200),
            ttft: Some(ttft),
            gaps: vec![0.01],
            content_events: 2,
            cohort: cohort.map(str::to_string),
            ..Record::new(session, None)
        }
    }

    #[test]
    fn tally_counts_cohorts_and_split_sessions() {
        let mut tally = Tally::default();
        for r in [
            record(Outcome::Ok, Some("stable"), Some(0), 0.1),
            record(Outcome::Ok, Some("stable"), Some(0), 0.3),
            record(Outcome::StreamError, Some("canary"), Some(1), 0.2),
            record(Outcome::Ok, Some("canary"), Some(0), 0.2),
            record(Outcome::Ok, None, Some(2), 0.2),
        ] {
            tally.add(Ok(r));
        }
        let config = LoadConfig {
            session_header: Some("x-session-id".into()),
            sessions: 10,
            ..LoadConfig::default()
        };
        let report = tally.report(&config, 5, 5, 0, Duration::from_secs(1), 1.0);
        let stable = &report.cohorts["stable"];
        assert_eq!((stable.requests, stable.ok, stable.errors), (2, 2, 0));
        assert_eq!(stable.ttft_seconds.p50, Some(0.1));
        let canary = &report.cohorts["canary"];
        assert_eq!((canary.requests, canary.ok, canary.errors), (2, 1, 1));
        let sessions = report.sessions.expect("sessions");
        assert_eq!((sessions.seen, sessions.on_several_cohorts), (3, 1));
        assert_eq!((report.outcomes.ok, report.outcomes.stream_error), (4, 1));
        assert_eq!((report.tokens, report.itl_seconds.count), (10, 5));
    }

    #[test]
    fn tally_breaks_a_mix_down_per_model() {
        let mut tally = Tally {
            models: vec![Default::default(); 2],
            ..Tally::default()
        };
        let mut cut = record(Outcome::Ok, None, None, 0.3);
        cut.model = Some(1);
        cut.finish = Some(sse::FinishReason::Length);
        let mut failed = record(Outcome::HttpError, None, None, 0.2);
        failed.model = Some(1);
        failed.ttft = None;
        let mut plain = record(Outcome::Ok, None, None, 0.1);
        plain.model = Some(0);
        plain.finish = Some(sse::FinishReason::Stop);
        for r in [cut, failed, plain] {
            tally.add(Ok(r));
        }
        let config = LoadConfig {
            models: vec![ModelWeight::new("v7", 1.0), ModelWeight::new("v8", 1.0)],
            ..LoadConfig::default()
        };
        let report = tally.report(&config, 3, 3, 0, Duration::from_secs(1), 1.0);
        assert_eq!(report.finished_length, 1);
        let v8 = &report.models["v8"];
        assert_eq!(
            (v8.requests, v8.ok, v8.errors, v8.tokens, v8.finished_length),
            (2, 1, 1, 4, 1)
        );
        assert_eq!(v8.ttft_seconds.count, 1);
        let v7 = &report.models["v7"];
        assert_eq!((v7.requests, v7.finished_length), (1, 0));
    }

    #[test]
    fn bad_settings_are_named() {
        let cases: [(&str, LoadConfig); 6] = [
            (
                "model",
                LoadConfig {
                    models: vec![ModelWeight::new("a", 1.0), ModelWeight::new("b", 0.0)],
                    ..LoadConfig::default()
                },
            ),
            (
                "prompt-tokens",
                LoadConfig {
                    prompt_tokens: Some(PromptTokens::OneOf(Vec::new())),
                    ..LoadConfig::default()
                },
            ),
            (
                "header",
                LoadConfig {
                    headers: vec![("x-weir-cohort".into(), "bad\nvalue".into())],
                    ..LoadConfig::default()
                },
            ),
            (
                "rate",
                LoadConfig {
                    rate: 0.0,
                    ..LoadConfig::default()
                },
            ),
            (
                "concurrency-limit",
                LoadConfig {
                    concurrency_limit: Some(0),
                    ..LoadConfig::default()
                },
            ),
            (
                "session-header",
                LoadConfig {
                    session_header: Some("bad header".into()),
                    ..LoadConfig::default()
                },
            ),
        ];
        for (field, config) in cases {
            match config.validate() {
                Err(LoadError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
