//! The server: listeners, the request handler and the drain.
//!
//! `protocols` tells what each client connection speaks (HTTP/1.x, h2c, or
//! what TLS's ALPN chose) and hands every request or HTTP/2 stream to
//! `forward`, the hot path, which takes it from its head to its record on
//! one task. HTTP/1 is weir's own on both sides (`downstream` and
//! [`request`] for clients, `upstream` and [`framing`] for upstreams);
//! HTTP/2 is pingora's. [`headers`] holds the HTTP/1 rules of the hop,
//! pure. This
//! module binds the listeners, runs the service and the admin API, and
//! drains on shutdown.
//!
//! The listener is weir's own accept loop ([`accept`]) rather than pingora's
//! listening service: pingora's task per connection holds its accept-side
//! future (TLS handshake state included, 8.8 KiB) for the connection's
//! whole life, more than anything else an open stream held; here a TLS
//! handshake is boxed for its moment and a connection's task holds only
//! weir's connection future.
//!
//! The service runs inside the caller's tokio runtime rather than under
//! pingora's `Server`, for two reasons: `weir run` embeds the proxy in its
//! own process, and shutdown must end as soon as the last open stream
//! finishes, where pingora's `Server` sleeps for the whole grace period.

mod buffer;
mod client;
mod deadline;
mod downstream;
mod forward;
pub mod framing;
pub mod headers;
mod kept;
mod protocols;
pub mod request;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora::connectors::TransportConnector;
use pingora::server::ShutdownWatch;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::config::{ConfigSource, Timeouts, follow};
use crate::observe::Observations;
use crate::route::RouteTable;

/// How long to wait for a TCP connection to an upstream before giving up on
/// it (and trying the other cohort).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pending connections the proxy listener queues; bursts of thousands of
/// new streams must not be refused by a short kernel queue.
const BACKLOG: i32 = 4096;
/// How long the accept loop pauses when the process is out of file
/// descriptors: `accept` fails at once until one is freed (pingora's
/// choice; with `max_connections` set, as `weir proxy` does by default,
/// this does not happen).
const OUT_OF_FILES_PAUSE: Duration = Duration::from_secs(1);

/// Requests between `request_filter` and the end of `logging`, across all
/// routes: what a drain waits for.
#[derive(Debug, Default)]
struct Active(AtomicUsize);

/// Holds one request in [`Active`] until dropped.
#[derive(Debug)]
struct ActiveGuard(Arc<Active>);

impl ActiveGuard {
    fn enter(active: &Arc<Active>) -> Self {
        active.0.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(Arc::clone(active))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Client connections being served, and the most allowed at once.
#[derive(Debug)]
struct Connections {
    open: AtomicUsize,
    max: usize,
}

/// Holds one client connection in [`Connections`] until dropped.
#[derive(Debug)]
struct ConnectionGuard(Arc<Connections>);

impl Connections {
    /// A slot for one more connection, or `None` at the cap.
    fn enter(self: &Arc<Self>) -> Option<ConnectionGuard> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnectionGuard(Arc::clone(self)))
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
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

/// An upstream's address: an IP literal as parsed when the table was
/// built; a name is resolved without blocking the runtime (pingora's
/// `HttpPeer::new` would call the blocking resolver on this thread).
/// Caching resolutions is a follow-up.
async fn resolve(upstream: &crate::route::Upstream) -> Option<SocketAddr> {
    match upstream.addr() {
        Some(addr) => Some(addr),
        None => tokio::net::lookup_host(upstream.authority())
            .await
            .ok()?
            .next(),
    }
}

/// The TLS acceptor of the listener: every handshake takes the certificate
/// `certificate` holds at that moment, so a renewal needs no restart.
/// ALPN offers HTTP/2 first, then HTTP/1.1.
#[cfg(feature = "tls")]
fn tls_acceptor(certificate: &Arc<crate::tls::Certificate>) -> protocols::TlsAcceptor {
    use pingora::listeners::ALPN;
    // No file paths: the resolver serves the certificate. (`intermediate`
    // only stores its arguments; it reads nothing and cannot fail.)
    let mut settings = pingora::listeners::tls::TlsSettings::intermediate("", "")
        .expect("storing two empty paths cannot fail");
    settings.set_cert_resolver(Arc::new(crate::tls::Resolver(Arc::clone(certificate))));
    settings.set_alpn(ALPN::H2H1);
    // With a resolver set, `build` loads no file and cannot panic.
    settings.build()
}

/// Accepts connections until the service drains; each is served on a task
/// of its own, which holds only its connection's future.
async fn accept(
    listener: tokio::net::TcpListener,
    protocols: Arc<protocols::Protocols>,
    shutdown: ShutdownWatch,
) {
    let mut closing = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            () = forward::draining(&mut closing) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, _)) => {
                let protocols = Arc::clone(&protocols);
                let shutdown = shutdown.clone();
                tokio::spawn(async move { protocols.serve(tcp, &shutdown).await });
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                tracing::warn!(error = %e, "out of file descriptors: not accepting for a second");
                tokio::time::sleep(OUT_OF_FILES_PAUSE).await;
            }
            // A connection that failed between the kernel's accept and
            // ours (reset): nothing to serve.
            Err(e) => tracing::debug!(error = %e, "accept failed"),
        }
    }
}

/// Idle upstream connections kept per connector: pingora's own default
/// (its `DEFAULT_POOL_SIZE`, private), so `--upstream-ca` changes nothing
/// else.
#[cfg(feature = "tls")]
const UPSTREAM_POOL: usize = 128;

/// The upstream connector: pooled connections, TLS verified against
/// `--upstream-ca` when given (checked first: pingora panics on a bundle it
/// cannot load).
fn connector(settings: &Settings) -> Result<TransportConnector, ServeError> {
    #[cfg(feature = "tls")]
    if let Some(ca) = &settings.upstream_ca {
        crate::tls::check_ca_bundle(ca).map_err(ServeError::UpstreamCa)?;
        let mut options = pingora::connectors::ConnectorOptions::new(UPSTREAM_POOL);
        options.ca_file = Some(ca.to_string_lossy().into_owned());
        return Ok(TransportConnector::new(Some(options)));
    }
    let _ = settings;
    Ok(TransportConnector::new(None))
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
    /// Most client connections served at once; `None`: no cap. Past it a
    /// new connection is closed as soon as it is accepted, so a flood of
    /// idle connections cannot take every file descriptor (and with them
    /// the upstream connections and the admin API) or the memory of the
    /// streams being served.
    pub max_connections: Option<usize>,
    /// Terminate TLS on the proxy listener with this certificate (HTTP/2
    /// or HTTP/1.1 over TLS, as ALPN agrees); `None`: plain HTTP/1.x and
    /// h2c. The caller keeps it fresh
    /// ([`crate::tls::Certificate::watch`]).
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<crate::tls::Certificate>>,
    /// The CA bundle that `https` upstreams' certificates are verified
    /// against; `None`: the system's trust store.
    #[cfg(feature = "tls")]
    pub upstream_ca: Option<std::path::PathBuf>,
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
    /// The CA bundle for `https` upstreams cannot be used.
    #[cfg(feature = "tls")]
    #[error("--upstream-ca: {0}")]
    UpstreamCa(#[source] crate::tls::TlsError),
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
    connections: Arc<Connections>,
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
    // A tokio listener must be non-blocking: a blocking accept() would
    // park a runtime worker (and the tasks queued on it) until the next
    // connection arrives.
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
    let connections = Arc::new(Connections {
        open: AtomicUsize::new(0),
        max: settings.max_connections.unwrap_or(usize::MAX),
    });
    let forwarder = forward::Forwarder {
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
        connector: connector(&settings)?,
    };
    let protocols = Arc::new(protocols::Protocols::new(
        forwarder,
        Arc::clone(&connections),
        settings.timeouts.header,
        settings.timeouts.idle,
        #[cfg(feature = "tls")]
        settings.tls.as_ref().map(tls_acceptor),
    ));
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|source| ServeError::Bind {
            addr: settings.listen,
            source,
        })?;
    let (stop_accepting, accepting) = watch::channel(false);
    let service = tokio::spawn(accept(listener, protocols, accepting));

    let ready = Arc::new(AtomicBool::new(true));
    let (stop_admin, admin_running) = watch::channel(false);
    let state = AdminState {
        table: Arc::clone(&table),
        source,
        observations: Arc::clone(&observations),
        ready: Arc::clone(&ready),
    };
    tokio::spawn(admin::serve(
        admin_listener,
        state,
        settings.timeouts.header,
        admin_running,
    ));
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
        connections,
        service,
        grace: settings.timeouts.grace,
    })
}

impl Running {
    /// Requests in flight right now.
    pub fn active(&self) -> usize {
        self.active.0.load(Ordering::Acquire)
    }

    /// Client connections being served right now (waiting for a request
    /// or carrying one).
    pub fn connections(&self) -> usize {
        self.connections.open.load(Ordering::Acquire)
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
