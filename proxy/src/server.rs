//! The pingora glue: phase callbacks that stay thin, and the runner.
//!
//! Each callback does one thing and hands the thinking to a pure module:
//! `request_filter` asks [`crate::route::route`] for a decision and keeps it
//! in the request context (a retry never re-draws it); `upstream_peer` turns
//! it into a peer (an endpoint picked by [`crate::balance`] when the backend
//! has endpoints); the body filter feeds the [`Meter`]; `logging` hands the
//! finished record to the cohort's [`CohortHandle`].
//!
//! The service runs inside the caller's tokio runtime rather than under
//! pingora's `Server`, for two reasons: `weir run` embeds the proxy in its
//! own process, and shutdown must end as soon as the last open stream
//! finishes, where pingora's `Server` sleeps for the whole grace period.

use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::listeners::{DEFAULT_L4_WRITE_BUFFER_SIZE, L4BufferSettings, ListenerConfig};
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::{Fds, ListenFds};
use pingora::services::Service as _;
use pingora::{Error, ErrorSource, ErrorType};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::balance::EndpointGuard;
use crate::config::{ConfigSource, Timeouts, follow};
use crate::meter::{End, Meter};
use crate::observe::{CohortHandle, InflightGuard, Observations};
use crate::route::{Backend, COHORT_HEADER, Decision, RequestInfo, RouteTable, route};

/// How long to wait for a TCP connection to an upstream before giving up on
/// it (and trying the other cohort).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pending connections the proxy listener queues; bursts of thousands of
/// new streams must not be refused by a short kernel queue.
const BACKLOG: i32 = 4096;
/// Read buffer of each client connection. pingora's default is 64 KiB per
/// connection, sized for TLS records and bulk transfer; a client of an
/// inference API sends one small JSON request and then waits on a stream
/// for seconds to minutes, so 4 KiB keeps thousands of open streams cheap.
const CLIENT_READ_BUFFER: usize = 4 * 1024;

/// Requests between `request_filter` and the end of `logging`, across all
/// routes: what a drain waits for.
#[derive(Debug, Default)]
struct Active(AtomicUsize);

/// Holds one request in [`Active`] until dropped with its context.
#[derive(Debug)]
struct ActiveGuard(Arc<Active>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where the uniform draw behind a weighted choice comes from.
#[derive(Debug)]
enum Draws {
    /// The thread-local RNG (production).
    Random,
    /// A fixed sequence: the n-th request gets `splitmix64(seed + n)`. The
    /// set of draws for N requests is then fixed whatever their order, so a
    /// test's cohort counts are reproducible.
    Seeded { seed: u64, next: AtomicU64 },
}

impl Draws {
    fn next(&self) -> u64 {
        match self {
            Draws::Random => rand::random(),
            Draws::Seeded { seed, next } => {
                splitmix64(seed.wrapping_add(next.fetch_add(1, Ordering::Relaxed)))
            }
        }
    }
}

/// SplitMix64's output function: a bijection of u64 that scatters
/// consecutive inputs uniformly.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The proxy's request handler.
#[derive(Debug)]
pub struct Proxy {
    table: Arc<ArcSwap<RouteTable>>,
    observations: Arc<Observations>,
    timeouts: Timeouts,
    active: Arc<Active>,
    draws: Draws,
}

/// Per-request state.
#[derive(Debug)]
pub struct RequestCtx {
    started: Instant,
    decision: Option<Decision>,
    /// The chosen backend refused the connection and the request moved to
    /// the fallback.
    failed_over: bool,
    handle: Option<CohortHandle>,
    meter: Option<Meter>,
    inflight: Option<InflightGuard>,
    /// The endpoint the request was sent to, counted in flight there.
    endpoint: Option<EndpointGuard>,
    _active: Option<ActiveGuard>,
}

impl RequestCtx {
    fn serving(&self) -> Option<&Backend> {
        let d = self.decision.as_ref()?;
        if self.failed_over {
            d.fallback_backend()
        } else {
            Some(d.backend())
        }
    }
}

impl Proxy {
    /// Moves the request to its fallback cohort after a connect failure
    /// (nothing reached the upstream), once: the failure is recorded against
    /// the cohort that failed. Returns whether the request moved.
    fn fail_over(&self, ctx: &mut RequestCtx) -> bool {
        let fallback = ctx.decision.as_ref().and_then(Decision::fallback_key);
        let (false, Some(key), Some(failed)) = (ctx.failed_over, fallback, ctx.handle.take())
        else {
            return false;
        };
        failed.record(&Meter::new(ctx.started).finish(End::ConnectError, Instant::now()));
        let handle = self.observations.cohort(&key);
        ctx.inflight = Some(handle.inflight_guard());
        ctx.handle = Some(handle);
        ctx.endpoint = None;
        ctx.failed_over = true;
        true
    }

    /// Where the serving backend's request goes: one of its endpoints
    /// (counted in flight there from now on), or its URL's address. `None`
    /// for no ready endpoint or a name that does not resolve.
    async fn target(&self, backend: &Backend) -> Option<(SocketAddr, Option<EndpointGuard>)> {
        match &backend.endpoints {
            Some(endpoints) => endpoints
                .pick(self.draws.next())
                .map(|e| (e.addr(), Some(e.acquire()))),
            None => resolve(backend.upstream.authority())
                .await
                .map(|addr| (addr, None)),
        }
    }
}

/// An upstream's address: IP literals parse here; names are resolved
/// without blocking the runtime (pingora's `HttpPeer::new` would call the
/// blocking resolver on this thread). Caching resolutions is a follow-up.
async fn resolve(authority: &str) -> Option<SocketAddr> {
    match authority.parse() {
        Ok(addr) => Some(addr),
        Err(_) => tokio::net::lookup_host(authority).await.ok()?.next(),
    }
}

/// Answers with a short JSON error before any upstream was chosen.
async fn respond(session: &mut Session, status: u16, message: &str) -> pingora::Result<()> {
    let body = Bytes::from(
        serde_json::json!({ "error": { "message": message, "type": "weir_proxy_error" } })
            .to_string(),
    );
    let mut header = ResponseHeader::build(status, Some(2))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

/// How a request ended, from pingora's error (none: it completed).
fn end_of(e: Option<&Error>) -> End {
    let Some(e) = e else { return End::Complete };
    match (e.esource(), e.etype()) {
        (
            _,
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectError
            | ErrorType::ConnectNoRoute,
        ) => End::ConnectError,
        (_, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => End::Timeout,
        (ErrorSource::Downstream, _) => End::ClientAbort,
        _ => End::UpstreamReset,
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    /// No downstream modules: pingora's default adds a (disabled)
    /// compression module, and inference streams must pass untouched.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            decision: None,
            failed_over: false,
            handle: None,
            meter: None,
            inflight: None,
            endpoint: None,
            _active: None,
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(req.uri.host());
        let info = RequestInfo::new(host, req.uri.path(), &req.headers);
        let decided = route(&self.table.load(), &info, self.draws.next());
        match decided {
            Ok(decision) => {
                self.active.0.fetch_add(1, Ordering::AcqRel);
                ctx._active = Some(ActiveGuard(Arc::clone(&self.active)));
                let handle = self.observations.cohort(&decision.key());
                ctx.inflight = Some(handle.inflight_guard());
                ctx.handle = Some(handle);
                ctx.meter = Some(Meter::new(ctx.started));
                ctx.decision = Some(decision);
                Ok(false)
            }
            Err(e) => {
                respond(session, 404, &e.to_string()).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let addr = loop {
            let Some(backend) = ctx.serving() else {
                return Err(Error::explain(
                    ErrorType::InternalError,
                    "no backend was decided for this request",
                ));
            };
            match self.target(backend).await {
                Some((addr, guard)) => {
                    ctx.endpoint = guard;
                    break addr;
                }
                // A name that does not resolve, or a Service without a ready
                // pod, is a connect failure like any other: counted against
                // its cohort, retried on the other.
                None if self.fail_over(ctx) => continue,
                None => {
                    let why = match ctx.serving() {
                        Some(b) if b.endpoints.is_some() => {
                            format!("no ready endpoint behind {}", b.upstream.url())
                        }
                        Some(b) => format!("cannot resolve upstream {}", b.upstream.authority()),
                        None => "no upstream".to_string(),
                    };
                    return Err(Error::explain(ErrorType::ConnectNoRoute, why));
                }
            }
        };
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        peer.options.read_timeout = Some(self.timeouts.read);
        peer.options.idle_timeout = Some(self.timeouts.idle);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if self.fail_over(ctx) {
            e.set_retry(true);
        }
        e
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(backend) = ctx.serving() {
            response.insert_header(COHORT_HEADER, backend.cohort.as_str())?;
        }
        let content_type = response
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if let Some(meter) = ctx.meter.as_mut() {
            meter.on_response(response.status.as_u16(), content_type, Instant::now());
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Option<Duration>> {
        if let (Some(meter), Some(chunk)) = (ctx.meter.as_mut(), body.as_ref()) {
            meter.on_body_chunk(chunk, Instant::now());
        }
        Ok(None)
    }

    async fn logging(&self, _session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let (Some(handle), Some(meter)) = (ctx.handle.as_ref(), ctx.meter.take()) {
            handle.record(&meter.finish(end_of(e), Instant::now()));
        }
        ctx.inflight = None;
        ctx.endpoint = None;
    }
}

/// Where and how to run the proxy.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The proxy listener (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The admin listener (port 0 picks a free port).
    pub admin: SocketAddr,
    /// Timeouts, including the drain's grace period.
    pub timeouts: Timeouts,
    /// Seed for weighted draws (tests); `None` draws from the thread RNG.
    pub draw_seed: Option<u64>,
}

/// Errors starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running proxy. Dropping it without [`Running::shutdown`] leaves the
/// tasks running until the runtime stops.
#[derive(Debug)]
pub struct Running {
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// Where the admin API listens.
    pub admin: SocketAddr,
    /// The table in service (for in-process callers such as `weir run`).
    pub table: Arc<ArcSwap<RouteTable>>,
    /// The proxy's observations.
    pub observations: Arc<Observations>,
    stop_accepting: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
    ready: Arc<AtomicBool>,
    active: Arc<Active>,
    service: JoinHandle<()>,
    grace: Duration,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Requests still open when the grace period ran out (0: all finished).
    pub abandoned: usize,
    /// How long the drain took.
    pub took: Duration,
}

fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    // pingora adopts the descriptor as a tokio listener, which must be
    // non-blocking: a blocking accept() would park a runtime worker (and
    // the tasks queued on it) until the next connection arrives.
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Starts the proxy and its admin API on the current tokio runtime, serving
/// the tables `source` publishes.
///
/// # Errors
/// [`ServeError::Bind`] when a listener cannot be bound; nothing is left
/// running then.
pub async fn start(
    settings: Settings,
    source: Arc<dyn ConfigSource>,
    observations: Arc<Observations>,
) -> Result<Running, ServeError> {
    let updates = source.subscribe();
    let table = Arc::new(ArcSwap::new(Arc::clone(&updates.borrow())));
    tokio::spawn(follow(updates, Arc::clone(&table)));

    // Bind here, not inside pingora, so port 0 works and a bind error is
    // reported to the caller instead of panicking in a task.
    let listener = bind_listener(settings.listen).map_err(|source| ServeError::Bind {
        addr: settings.listen,
        source,
    })?;
    let listen = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: settings.listen,
        source,
    })?;
    let admin_listener = tokio::net::TcpListener::bind(settings.admin)
        .await
        .map_err(|source| ServeError::Bind {
            addr: settings.admin,
            source,
        })?;
    let admin = admin_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: settings.admin,
            source,
        })?;

    let active = Arc::new(Active::default());
    let proxy = Proxy {
        table: Arc::clone(&table),
        observations: Arc::clone(&observations),
        timeouts: settings.timeouts,
        active: Arc::clone(&active),
        draws: settings
            .draw_seed
            .map_or(Draws::Random, |seed| Draws::Seeded {
                seed,
                next: AtomicU64::new(0),
            }),
    };
    let conf = Arc::new(ServerConf::default());
    let mut service = pingora::proxy::http_proxy_service_with_name(&conf, proxy, "weir proxy");
    let bind = listen.to_string();
    service.add_listener(
        ListenerConfig::tcp(bind.clone()).l4_buffer(L4BufferSettings::new(
            CLIENT_READ_BUFFER,
            DEFAULT_L4_WRITE_BUFFER_SIZE,
        )),
    );
    let mut fds = Fds::new();
    fds.add(bind, listener.into_raw_fd());
    let fds: ListenFds = Arc::new(parking_lot::Mutex::new(fds));
    let (stop_accepting, accepting) = watch::channel(false);
    let service = tokio::spawn(async move { service.start_service(Some(fds), accepting, 1).await });

    let ready = Arc::new(AtomicBool::new(true));
    let (stop_admin, admin_running) = watch::channel(false);
    let state = AdminState {
        table: Arc::clone(&table),
        source,
        observations: Arc::clone(&observations),
        ready: Arc::clone(&ready),
    };
    tokio::spawn(admin::serve(admin_listener, state, admin_running));
    tracing::info!(%listen, %admin, "proxy listening");
    Ok(Running {
        listen,
        admin,
        table,
        observations,
        stop_accepting,
        stop_admin,
        ready,
        active,
        service,
        grace: settings.timeouts.grace,
    })
}

impl Running {
    /// Requests in flight right now.
    pub fn active(&self) -> usize {
        self.active.0.load(Ordering::Acquire)
    }

    /// Drains: stops accepting connections (and `/readyz` turns 503), lets
    /// open requests finish for up to the grace period, returns as soon as
    /// none is open, then stops the admin API.
    pub async fn shutdown(self) -> Drained {
        let started = Instant::now();
        self.ready.store(false, Ordering::Release);
        let _ = self.stop_accepting.send(true);
        let _ = self.service.await;
        let open = || self.active.0.load(Ordering::Acquire);
        let deadline = started + self.grace;
        while open() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let abandoned = open();
        let _ = self.stop_admin.send(true);
        let took = started.elapsed();
        tracing::info!(
            abandoned,
            took_ms = took.as_millis() as u64,
            "proxy drained"
        );
        Drained { abandoned, took }
    }
}
