//! The HTTP side of the simulator: routing, the streaming body, start-up and
//! graceful shutdown.
//!
//! A request is answered with the profile of the model it names (one
//! [`Served`] per model, found by name; a name the server does not serve
//! gets vLLM's 404). Its whole fate is drawn up front
//! ([`RequestPlan::draw`]); the streaming response is then a hand-written
//! [`Body`] that sleeps until each token's absolute deadline (`arrival +
//! ttft + i × itl`, so timer slack never accumulates) and hands hyper one
//! pre-rendered chunk per token. No task, channel or lock per stream: a
//! stream costs one boxed timer, one small allocation per chunk and a few
//! relaxed atomics.
//!
//! Metering follows vLLM: TTFT is observed when the first token is emitted,
//! each gap when the next one is, the end-to-end latency when the response
//! finishes. A [`Running`] guard keeps the running-requests and KV gauges
//! honest whichever way a request ends, including a client that hangs up
//! (counted as `finished_reason="abort"`).
//!
//! A forwarding server ([`SimConfig::forward`]) routes the same way but
//! relays every path that is not its own ([`crate::forward`]); its
//! completion requests are metered from arrival to the end of the relayed
//! body. Completion requests are counted by the generation that sent them,
//! answered or relayed, when the server has one.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, Sleep};

use crate::config::{ConfigError, Framing, SimConfig};
use crate::forward::{self, GENERATION_HEADER, RelayBody, Relayed, Upstream};
use crate::metrics::{FinishedReason, GenerationCounter, Labels, Metrics};
use crate::model::{self, Fault, RequestPlan};
use crate::openai::{self, Endpoint, Finish, Renderer, Usage};
use crate::profile::Profile;
use crate::text;

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 16 << 20;
/// How often the GPU load average is sampled.
const LOAD_SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Time constant of the GPU load average.
const LOAD_TAU: Duration = Duration::from_secs(1);

/// Why the simulator could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The listener's own address could not be read.
    #[error("cannot read the listening address: {0}")]
    LocalAddr(io::Error),
    /// The server task panicked or was cancelled.
    #[error("the simulator's server task failed: {0}")]
    Task(String),
}

/// How a server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeSummary {
    /// Completion requests received (valid ones, including simulated failures).
    pub requests: u64,
    /// Requests still running when shutdown began.
    pub open_at_shutdown: u64,
    /// Whether every connection finished within the grace period.
    pub drained: bool,
}

/// One model the server answers for.
#[derive(Debug)]
struct Served {
    name: String,
    profile: Profile,
    /// `POST /control`'s multiplier of its later requests' time to first
    /// token (f64 bits; 1 until changed).
    ttft_factor: AtomicU64,
}

impl Served {
    fn ttft_factor(&self) -> f64 {
        f64::from_bits(self.ttft_factor.load(Relaxed))
    }
}

/// State shared by every connection of one server.
#[derive(Debug)]
struct Shared {
    config: SimConfig,
    seed: u64,
    next_index: AtomicU64,
    metrics: Metrics,
    labels: Labels,
    sim_header: HeaderValue,
    models_body: Bytes,
    /// The models served, in the order declared (a handful: found by a
    /// linear scan).
    served: Box<[Served]>,
    /// Whether any requested name gets the one model's profile.
    any_name: bool,
    /// Where every request that is not the server's own goes, when it
    /// forwards.
    upstream: Option<Upstream>,
    /// Completion requests by sender, when the server has a generation.
    generations: Option<GenerationCounter>,
}

impl Shared {
    fn new(config: SimConfig) -> Result<Self, SimError> {
        config.validate()?;
        let sim_header = HeaderValue::from_str(&config.name)
            .map_err(|_| ConfigError::new("name", "is not a valid header value"))?;
        let served: Box<[Served]> = config
            .served()
            .into_iter()
            .map(|(name, profile)| Served {
                name,
                profile,
                ttft_factor: AtomicU64::new(1.0_f64.to_bits()),
            })
            .collect();
        let generation = config
            .generation
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| ConfigError::new("generation", "is not a valid header value"))?;
        Ok(Shared {
            seed: config.seed.unwrap_or_else(rand::random),
            next_index: AtomicU64::new(0),
            metrics: Metrics::default(),
            labels: Labels::new(&config.name, &config.model),
            sim_header,
            models_body: openai::models_body(
                served.iter().map(|m| m.name.as_str()),
                unix_seconds(),
            ),
            any_name: config.answers_any_name(),
            served,
            upstream: config.forward.clone().map(|f| Upstream::new(f, generation)),
            generations: config.generation.as_deref().map(GenerationCounter::new),
            config,
        })
    }

    /// The `/metrics` text.
    fn metrics_text(&self) -> String {
        let mut text = self.metrics.render(&self.labels, &self.config.gpu);
        if let Some(generations) = &self.generations {
            generations.render(&mut text);
        }
        text
    }

    /// The model that answers a request naming `requested`; `None` when
    /// the server does not serve it.
    fn model(&self, requested: &str) -> Option<&Served> {
        if self.any_name {
            self.served.first()
        } else {
            self.served.iter().find(|m| m.name == requested)
        }
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A running simulator started by [`spawn`]. Dropping the handle asks the
/// server to shut down gracefully in the background.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<ServeSummary>,
    shared: Arc<Shared>,
}

impl SimHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base URL clients use (append `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Completion requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.next_index.load(Relaxed)
    }

    /// Requests running now.
    pub fn running(&self) -> u64 {
        self.shared.metrics.running()
    }

    /// The `/metrics` text, without an HTTP round trip.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics_text()
    }

    /// Stops accepting connections, lets open streams finish (up to the
    /// configured grace) and waits for the server to end.
    ///
    /// # Errors
    /// [`SimError::Task`] if the server task panicked.
    pub async fn shutdown(mut self) -> Result<ServeSummary, SimError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| SimError::Task(e.to_string()))
    }
}

/// Starts a simulator on `listener` in a background task of the current
/// tokio runtime.
///
/// # Errors
/// [`SimError::Config`] for an invalid configuration,
/// [`SimError::LocalAddr`] if the listener has no address.
pub fn spawn(config: SimConfig, listener: TcpListener) -> Result<SimHandle, SimError> {
    let shared = Arc::new(Shared::new(config)?);
    let addr = listener.local_addr().map_err(SimError::LocalAddr)?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run(Arc::clone(&shared), listener, async move {
        let _ = rx.await;
    }));
    Ok(SimHandle {
        addr,
        shutdown: Some(tx),
        task,
        shared,
    })
}

/// Binds `addr` and [`spawn`]s a simulator on it (port 0 picks a free port;
/// see [`SimHandle::addr`]).
///
/// # Errors
/// As [`spawn`], and [`SimError::Bind`] when the address cannot be bound.
pub async fn bind(config: SimConfig, addr: SocketAddr) -> Result<SimHandle, SimError> {
    config.validate()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Bind { addr, source })?;
    spawn(config, listener)
}

/// Serves on `listener` until `shutdown` completes, then stops accepting,
/// lets open streams finish (up to [`SimConfig::shutdown_grace`]) and
/// returns.
///
/// # Errors
/// [`SimError::Config`] for an invalid configuration.
pub async fn serve(
    config: SimConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<ServeSummary, SimError> {
    let shared = Arc::new(Shared::new(config)?);
    Ok(run(shared, listener, shutdown).await)
}

async fn run(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> ServeSummary {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let sampler = tokio::spawn(sample_load(Arc::clone(&shared)));
    let mut builder = http1::Builder::new();
    // hyper's header read timeout runs whenever a connection waits for a
    // request head, so it is also the idle keep-alive timeout.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.keep_alive);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    // Out of file descriptors and the like: back off, retry.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                // Tokens are small writes that must leave at once.
                let _ = stream.set_nodelay(true);
                let conn_shared = Arc::clone(&shared);
                let service = service_fn(move |req| handle(Arc::clone(&conn_shared), req));
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                connections.spawn(async move {
                    let _ = conn.await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let open_at_shutdown = shared.metrics.running();
    let drained = tokio::time::timeout(shared.config.shutdown_grace, graceful.shutdown())
        .await
        .is_ok();
    connections.shutdown().await;
    sampler.abort();
    ServeSummary {
        requests: shared.next_index.load(Relaxed),
        open_at_shutdown,
        drained,
    }
}

async fn sample_load(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(LOAD_SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let running = shared.metrics.running() as f64;
        let load = model::smooth_load(shared.metrics.load(), running, now - last, LOAD_TAU);
        shared.metrics.set_load(load);
        last = now;
    }
}

const SIM_HEADER: HeaderName = HeaderName::from_static(crate::SIM_HEADER);
const GENERATION: HeaderName = HeaderName::from_static(GENERATION_HEADER);

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Infallible> {
    let arrival = Instant::now();
    let mut response = route(&shared, req, arrival).await;
    response
        .headers_mut()
        .insert(SIM_HEADER, shared.sim_header.clone());
    Ok(response)
}

async fn route(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    arrival: Instant,
) -> Response<SimBody> {
    let inference = forward::inference_endpoint(req.method(), req.uri().path());
    if let (Some(generations), Some(_)) = (&shared.generations, inference) {
        let from = req
            .headers()
            .get(GENERATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        generations.count(from.as_deref().unwrap_or(""));
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/health") => {
            full(StatusCode::OK, "text/plain", Bytes::new())
        }
        (&Method::GET, "/metrics") => full(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            Bytes::from(shared.metrics_text()),
        ),
        (&Method::GET, "/control") if shared.config.control => control_state(shared),
        (&Method::POST, "/control") if shared.config.control => control(shared, req).await,
        (_, "/control") if shared.config.control => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            "invalid_request_error",
            None,
        ),
        (_, "/health" | "/metrics") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            "invalid_request_error",
            None,
        ),
        _ if let Some(upstream) = &shared.upstream => {
            relay(shared, upstream, req, inference.is_some(), arrival).await
        }
        (&Method::POST, "/v1/chat/completions") => {
            completion(shared, req, Endpoint::Chat, arrival).await
        }
        (&Method::POST, "/v1/completions") => {
            completion(shared, req, Endpoint::Completions, arrival).await
        }
        (&Method::GET, "/v1/models") => full(
            StatusCode::OK,
            "application/json",
            shared.models_body.clone(),
        ),
        (_, "/v1/chat/completions" | "/v1/completions" | "/v1/models") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            "invalid_request_error",
            None,
        ),
        (_, path) => error(
            StatusCode::NOT_FOUND,
            &format!("Not Found: {path}"),
            "invalid_request_error",
            None,
        ),
    }
}

/// Relays `req` to `upstream`; a completion request (`metered`) counts as
/// a request of this server and runs from `arrival` to the end of the
/// relayed body.
async fn relay(
    shared: &Arc<Shared>,
    upstream: &Upstream,
    req: Request<Incoming>,
    metered: bool,
    arrival: Instant,
) -> Response<SimBody> {
    let running = metered.then(|| {
        shared.next_index.fetch_add(1, Relaxed);
        Running::start(Arc::clone(shared), arrival, 0)
    });
    match forward::relay(upstream, req, running).await {
        Relayed::Answered(response) => response.map(|body| SimBody::Relay(Box::new(body))),
        Relayed::Failed(status, message) => error(status, &message, "server_error", None),
    }
}

/// The body of `POST /control`: what changes for requests from now on.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Control {
    /// Multiplier of the time to first token, in (0, 1000].
    ttft_factor: f64,
    /// The one model it applies to; every model when absent.
    #[serde(default)]
    model: Option<String>,
}

/// Largest `POST /control` body.
const MAX_CONTROL_BYTES: usize = 4096;

async fn control(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<SimBody> {
    let body = match Limited::new(req.into_body(), MAX_CONTROL_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body must be JSON of at most {MAX_CONTROL_BYTES} bytes"),
                "invalid_request_error",
                None,
            );
        }
    };
    let control: Control = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "expected {{\"ttftFactor\": <number>}}, optionally with \
                     \"model\": <a served model>: {e}"
                ),
                "invalid_request_error",
                None,
            );
        }
    };
    if !(control.ttft_factor > 0.0 && control.ttft_factor <= 1000.0) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "ttftFactor must be in (0, 1000], not {}",
                control.ttft_factor
            ),
            "invalid_request_error",
            Some("ttftFactor"),
        );
    }
    let targets: Vec<&Served> = match &control.model {
        None => shared.served.iter().collect(),
        Some(name) => match shared.served.iter().find(|m| &m.name == name) {
            Some(m) => vec![m],
            None => {
                let names: Vec<&str> = shared.served.iter().map(|m| m.name.as_str()).collect();
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "model {name:?} is not served here (served: {})",
                        names.join(", ")
                    ),
                    "invalid_request_error",
                    Some("model"),
                );
            }
        },
    };
    for m in targets {
        m.ttft_factor.store(control.ttft_factor.to_bits(), Relaxed);
    }
    control_state(shared)
}

/// `{"ttftFactor": F}`; with several models declared, also each model's
/// factor under `models`, and `ttftFactor` is the one they share (`null`
/// when they differ).
fn control_state(shared: &Shared) -> Response<SimBody> {
    let first = shared.served.first().map_or(1.0, Served::ttft_factor);
    let shared_factor = shared
        .served
        .iter()
        .all(|m| m.ttft_factor() == first)
        .then_some(first);
    let mut state = serde_json::json!({ "ttftFactor": shared_factor });
    if !shared.any_name {
        state["models"] = shared
            .served
            .iter()
            .map(|m| (m.name.clone(), serde_json::Value::from(m.ttft_factor())))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    full(
        StatusCode::OK,
        "application/json",
        Bytes::from(state.to_string()),
    )
}

fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<SimBody> {
    let mut response = Response::new(SimBody::Full(Some(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn error(status: StatusCode, message: &str, kind: &str, param: Option<&str>) -> Response<SimBody> {
    full(
        status,
        "application/json",
        openai::error_body(message, kind, param, Some(status.as_u16())),
    )
}

async fn completion(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    endpoint: Endpoint,
    arrival: Instant,
) -> Response<SimBody> {
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body exceeds {MAX_BODY_BYTES} bytes"),
                "invalid_request_error",
                None,
            );
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("could not read the request body: {e}"),
                "invalid_request_error",
                None,
            );
        }
    };
    let request = match openai::parse_request(endpoint, &body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &e.message,
                "invalid_request_error",
                e.param,
            );
        }
    };
    let Some(model) = shared.model(&request.model) else {
        return error(
            StatusCode::NOT_FOUND,
            &openai::model_not_found_message(&request.model),
            openai::NOT_FOUND_TYPE,
            None,
        );
    };
    let index = shared.next_index.fetch_add(1, Relaxed);
    let mut plan = RequestPlan::draw(
        &model.profile,
        shared.seed,
        index,
        request.max_tokens,
        request.stream,
    );
    let factor = model.ttft_factor();
    if factor != 1.0 {
        // In (0, 1000] (checked by `control`), of a TTFT of at most an
        // hour: representable.
        plan.ttft = plan.ttft.mul_f64(factor);
    }
    if plan.fault == Fault::Http500 {
        shared.metrics.finished(FinishedReason::Error);
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "simulated server error",
            "server_error",
            None,
        );
    }
    // The name asked for: the served one's, or any with one model.
    let renderer = Renderer::new(
        endpoint,
        model::mix(shared.seed, index),
        unix_seconds(),
        &request.model,
        &shared.config.name,
    );
    let finish = plan.finish;
    let itl = model.profile.itl;
    let mut running = Running::start(Arc::clone(shared), arrival, request.prompt_tokens);
    let first_at = arrival + plan.ttft;
    if request.stream {
        let fail_after = match plan.fault {
            Fault::StreamError { after_tokens } => Some(after_tokens),
            Fault::None | Fault::Http500 => None,
        };
        let stream = SseStream {
            sleep: Box::pin(tokio::time::sleep_until(first_at)),
            first_at,
            itl,
            next: 0,
            tokens: plan.tokens,
            fail_after,
            last_token_at: None,
            finish,
            include_usage: request.include_usage,
            prompt_tokens: request.prompt_tokens,
            framing: shared.config.framing,
            phase: match shared.config.framing {
                Framing::OpenAi => Phase::Tokens,
                Framing::LlamaCpp => Phase::Role,
            },
            renderer,
            running,
        };
        let mut response = Response::new(SimBody::Stream(Box::new(stream)));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return response;
    }

    // Non-streaming: the same timeline, answered at its end.
    tokio::time::sleep_until(first_at).await;
    let first = Instant::now();
    shared.metrics.ttft.observe(first - arrival);
    running.tokens(u64::from(plan.tokens));
    let gaps = plan.tokens.saturating_sub(1);
    if gaps > 0 {
        tokio::time::sleep_until(first_at + itl * gaps).await;
        let per_gap = (Instant::now() - first) / gaps;
        for _ in 0..gaps {
            shared.metrics.inter_token.observe(per_gap);
        }
    }
    let usage = Usage {
        prompt_tokens: request.prompt_tokens,
        completion_tokens: plan.tokens,
    };
    let body = renderer.full_body(&text::completion_text(plan.tokens), finish, usage);
    running.finish(finished_reason(finish));
    full(StatusCode::OK, "application/json", body)
}

fn finished_reason(finish: Finish) -> FinishedReason {
    match finish {
        Finish::Stop => FinishedReason::Stop,
        Finish::Length => FinishedReason::Length,
    }
}

/// A request between its start and its end: keeps the running and KV
/// gauges right however it ends, and counts a request dropped before it
/// finished (the client went away) as aborted.
#[derive(Debug)]
pub(crate) struct Running {
    shared: Arc<Shared>,
    arrival: Instant,
    kv_tokens: u64,
    finished: bool,
}

impl Running {
    fn start(shared: Arc<Shared>, arrival: Instant, prompt_tokens: u32) -> Self {
        shared.metrics.started(prompt_tokens);
        Running {
            shared,
            arrival,
            kv_tokens: u64::from(prompt_tokens),
            finished: false,
        }
    }

    fn tokens(&mut self, n: u64) {
        self.shared.metrics.tokens(n);
        self.kv_tokens += n;
    }

    /// Ends the request for `reason`; later calls change nothing.
    pub(crate) fn finish(&mut self, reason: FinishedReason) {
        if !self.finished {
            self.finished = true;
            self.shared.metrics.finished(reason);
            self.shared.metrics.e2e.observe(self.arrival.elapsed());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.metrics.finished(FinishedReason::Abort);
        }
        self.shared.metrics.ended(self.kv_tokens);
    }
}

/// Where a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The role-only chunk is next, at the first token's time
    /// ([`Framing::LlamaCpp`] chat streams).
    Role,
    /// Emitting tokens (or the error event that replaces one).
    Tokens,
    /// The chunk with `finish_reason` is next.
    Finish,
    /// The usage chunk is next.
    Usage,
    /// `[DONE]` is next.
    Done,
    /// Nothing more.
    Ended,
}

/// A streaming response body: one SSE event per poll, each token at its
/// deadline.
#[derive(Debug)]
struct SseStream {
    sleep: Pin<Box<Sleep>>,
    first_at: Instant,
    itl: Duration,
    next: u32,
    tokens: u32,
    fail_after: Option<u32>,
    last_token_at: Option<Instant>,
    finish: Finish,
    include_usage: bool,
    prompt_tokens: u32,
    framing: Framing,
    phase: Phase,
    renderer: Renderer,
    running: Running,
}

impl SseStream {
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let event = match self.phase {
            Phase::Role => {
                if Instant::now() < self.first_at {
                    ready!(self.sleep.as_mut().poll(cx));
                }
                self.phase = Phase::Tokens;
                match self.renderer.role_chunk() {
                    Some(chunk) => chunk,
                    None => return self.poll_event(cx),
                }
            }
            Phase::Tokens => {
                let due = self.first_at + self.itl * self.next;
                if Instant::now() < due {
                    if self.sleep.deadline() != due {
                        self.sleep.as_mut().reset(due);
                    }
                    ready!(self.sleep.as_mut().poll(cx));
                }
                if self.fail_after == Some(self.next) {
                    self.phase = Phase::Ended;
                    self.running.finish(FinishedReason::Error);
                    return Poll::Ready(Some(Bytes::from_static(openai::STREAM_ERROR_EVENT)));
                }
                let now = Instant::now();
                let metrics = &self.running.shared.metrics;
                match self.last_token_at {
                    None => metrics.ttft.observe(now - self.running.arrival),
                    Some(previous) => metrics.inter_token.observe(now - previous),
                }
                self.last_token_at = Some(now);
                if self.tokens == 0 {
                    // An empty answer: one chunk without text (the role's,
                    // in chat), then the finish.
                    self.phase = Phase::Finish;
                    let chunk = match self.framing {
                        Framing::OpenAi => self.renderer.token_chunk(0, ""),
                        Framing::LlamaCpp => self.renderer.piece_chunk(""),
                    };
                    return Poll::Ready(Some(chunk));
                }
                self.running.tokens(1);
                let chunk = match self.framing {
                    Framing::OpenAi => self.renderer.token_chunk(self.next, text::token(self.next)),
                    // Every fourth token ends inside a character.
                    Framing::LlamaCpp if self.next % 4 == 1 => self.renderer.piece_chunk(""),
                    Framing::LlamaCpp => self.renderer.piece_chunk(text::token(self.next)),
                };
                self.next += 1;
                if self.next >= self.tokens {
                    self.phase = Phase::Finish;
                }
                chunk
            }
            Phase::Finish => {
                self.phase = if self.include_usage && self.framing == Framing::OpenAi {
                    Phase::Usage
                } else {
                    Phase::Done
                };
                self.renderer.finish_chunk(self.finish)
            }
            Phase::Usage => {
                self.phase = Phase::Done;
                self.renderer.usage_chunk(Usage {
                    prompt_tokens: self.prompt_tokens,
                    completion_tokens: self.tokens,
                })
            }
            Phase::Done => {
                self.phase = Phase::Ended;
                self.running.finish(finished_reason(self.finish));
                Bytes::from_static(openai::DONE_EVENT)
            }
            Phase::Ended => return Poll::Ready(None),
        };
        Poll::Ready(Some(event))
    }
}

/// Every response body the simulator sends.
#[derive(Debug)]
enum SimBody {
    /// A whole body (taken on the first poll).
    Full(Option<Bytes>),
    /// An SSE stream.
    Stream(Box<SseStream>),
    /// An upstream's body, relayed (its error, when it breaks off, cuts
    /// the response).
    Relay(Box<RelayBody>),
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            SimBody::Full(body) => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
            SimBody::Stream(stream) => stream
                .poll_event(cx)
                .map(|event| event.map(|b| Ok(Frame::data(b)))),
            SimBody::Relay(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            SimBody::Full(body) => body.is_none(),
            SimBody::Stream(stream) => stream.phase == Phase::Ended,
            SimBody::Relay(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            SimBody::Full(None) => SizeHint::with_exact(0),
            SimBody::Stream(_) => SizeHint::default(),
            SimBody::Relay(body) => body.size_hint(),
        }
    }
}
