//! The hot path: one request, start to end, on one task.
//!
//! Inference traffic has one shape: a small JSON request, then a response
//! that streams for seconds to minutes. [`Forwarder`] serves each request
//! (an HTTP/1 request or an HTTP/2 stream, as `protocols` hands it over)
//! built for that shape instead of pingora-proxy's general path (two task
//! channels, `try_join` and a copy of every body chunk per request): it
//! reads the request (its body whole, up to 64 KiB, before anything goes
//! upstream), routes it (the pure
//! [`crate::route::route`]), connects (failing over once to the other
//! cohort), writes the request, forwards the response head, then loops
//! read → meter → write on the same task. The upstream side is weir's own
//! HTTP/1 client (`upstream.rs`) on pingora's connections; the meter reads
//! each chunk in its read buffer, and chunks that arrived together leave in
//! one write to the client.
//!
//! Each request is counted in [`Active`] from routing to its record, which
//! is what a drain waits for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::FutureExt;
use http::header;
use pingora::ErrorType;
use pingora::apps::{HttpPersistentSettings, ReusedHttpStream};
use pingora::connectors::TransportConnector;
use pingora::http::ResponseHeader;
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v1::common::is_expect_continue_req;
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::{HttpPeer, Peer as _};
use tokio::io::AsyncReadExt as _;

use super::headers;
use super::kept::{Kept, Taken};
use super::upstream::{Upstream, UpstreamError};
use super::{Active, ActiveGuard, CONNECT_TIMEOUT, Draws};
use crate::balance::EndpointGuard;
use crate::config::Timeouts;
use crate::meter::{End, Meter};
use crate::observe::{CohortHandle, InflightGuard, Observations};
use crate::route::{Backend, COHORT_HEADER, Decision, RequestInfo, RouteTable, route};

/// The proxy's request handler, one per listener, shared by its tasks.
pub(super) struct Forwarder {
    pub(super) table: Arc<ArcSwap<RouteTable>>,
    pub(super) observations: Arc<Observations>,
    pub(super) timeouts: Timeouts,
    pub(super) active: Arc<Active>,
    pub(super) draws: Draws,
    /// pingora's upstream pool (and TLS). weir takes streams from it and
    /// gives them back itself, so that a client connection can keep the
    /// upstream connections it used ([`KeptUpstreams`]).
    pub(super) connector: TransportConnector,
}

/// The upstream connections one HTTP/1 client connection keeps between its
/// requests (see `kept.rs`).
pub(super) type KeptUpstreams = Kept<Stream>;

/// One request's state: its decision, the cohort it is counted against and
/// what holds it in the in-flight gauges.
struct Exchange {
    started: Instant,
    decision: Decision,
    /// The chosen backend could not be reached and the request moved to
    /// the fallback.
    failed_over: bool,
    handle: CohortHandle,
    meter: Meter,
    _inflight: InflightGuard,
    /// The endpoint the request was sent to, counted in flight there.
    endpoint: Option<EndpointGuard>,
}

impl Exchange {
    fn serving(&self) -> &Backend {
        match self.decision.fallback_backend() {
            Some(fallback) if self.failed_over => fallback,
            _ => self.decision.backend(),
        }
    }

    /// Moves the request to its fallback cohort after a connect failure
    /// (nothing reached the upstream), once: the failure is recorded
    /// against the cohort that failed. Returns whether the request moved.
    fn fail_over(&mut self, observations: &Observations) -> bool {
        let Some(key) = self.decision.fallback_key().filter(|_| !self.failed_over) else {
            return false;
        };
        self.handle
            .record(&Meter::new(self.started).finish(End::ConnectError, Instant::now()));
        let handle = observations.cohort(&key);
        self._inflight = handle.inflight_guard();
        self.handle = handle;
        self.endpoint = None;
        self.failed_over = true;
        true
    }
}

/// How a request's exchange ended, and whether the client's connection may
/// carry another request.
struct Ended {
    end: End,
    reusable: bool,
}

impl Ended {
    fn broken(end: End) -> Self {
        Ended {
            end,
            reusable: false,
        }
    }
}

impl Forwarder {
    /// Serves one request of a connection (HTTP/1) or one stream (HTTP/2);
    /// returns the connection when it can take the next request. `kept`
    /// holds an HTTP/1 connection's upstream connections between requests.
    pub(super) async fn process(
        &self,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
        kept: Option<&mut KeptUpstreams>,
    ) -> Option<ReusedHttpStream> {
        if let ServerSession::H1(h1) = &mut session {
            // A second request in the same packet is kept for the next
            // round instead of dropped with the connection.
            h1.set_pipelining_enabled(true);
        }
        let mut closing = shutdown.clone();
        let read = tokio::select! {
            biased;
            read = tokio::time::timeout(self.timeouts.header, session.read_request()) => read,
            () = draining(&mut closing) => return None,
        };
        match read {
            Ok(Ok(true)) => {}
            // The client closed a kept-alive connection, or took longer
            // than the deadline to send a request head.
            Ok(Ok(false)) | Err(_) => return None,
            Ok(Err(e)) => {
                if e.etype() == &ErrorType::InvalidHTTPHeader {
                    let _ = session.respond_error(400).await;
                }
                session.shutdown().await;
                return None;
            }
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        if !self.serve(&mut session, kept).await {
            return None;
        }
        let persistent = HttpPersistentSettings::for_session(&session);
        // pingora's `finish` future is larger than everything else this
        // future holds while a stream is open: boxed, only for its moment.
        let reusable = Box::pin(session.finish()).await.ok().flatten()?;
        Some(ReusedHttpStream::from_reusable_stream(reusable, persistent))
    }
}

/// Resolves once the service starts shutting down.
pub(super) async fn draining(watch: &mut ShutdownWatch) {
    while !*watch.borrow_and_update() {
        if watch.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Forwarder {
    /// Serves one request; returns whether the client's connection can take
    /// the next one.
    async fn serve(&self, session: &mut ServerSession, kept: Option<&mut KeptUpstreams>) -> bool {
        let started = Instant::now();
        let raw_head = match session {
            ServerSession::H1(h1) => Some(h1.get_headers_raw_bytes()),
            _ => None,
        };
        if let Err(refused) = headers::check(session.req_header(), raw_head.as_deref()) {
            session.set_keepalive(None);
            return respond(session, 400, &refused.to_string(), None).await;
        }
        let ahead = match read_ahead(session).await {
            Ok(ahead) => ahead,
            Err(BodyFailed::Malformed(what)) => {
                // The framing is lost: nothing after this on the connection
                // can be trusted to be a request.
                session.set_keepalive(None);
                let message = format!("the request body is malformed: {what}");
                return respond(session, 400, &message, None).await;
            }
            Err(BodyFailed::Gone) => return false,
        };
        let decided = {
            let req = session.req_header();
            let host = req
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or(req.uri.host());
            let info = RequestInfo::new(host, req.uri.path(), &req.headers);
            route(&self.table.load(), &info, self.draws.next())
        };
        let decision = match decided {
            Ok(decision) => decision,
            Err(e) => return respond(session, 404, &e.to_string(), None).await,
        };
        let _active = ActiveGuard::enter(&self.active);
        let handle = self.observations.cohort(&decision.key());
        let mut exchange = Exchange {
            started,
            decision,
            failed_over: false,
            _inflight: handle.inflight_guard(),
            handle,
            meter: Meter::new(started),
            endpoint: None,
        };
        let ended = self.exchange(session, &mut exchange, &ahead, kept).await;
        let Exchange { handle, meter, .. } = exchange;
        handle.record(&meter.finish(ended.end, Instant::now()));
        ended.reusable
    }

    /// Connects, sends the request and streams the response back.
    async fn exchange(
        &self,
        session: &mut ServerSession,
        x: &mut Exchange,
        ahead: &Ahead,
        mut kept: Option<&mut KeptUpstreams>,
    ) -> Ended {
        let mut replay = false;
        // What an open stream's future holds is its largest state: the
        // paths that end a request early are boxed, so only a request that
        // takes one pays for its state.
        let (mut upstream, key, head) = loop {
            let (mut upstream, reused, key) = match self.connect(x, &mut kept).await {
                Ok(connected) => connected,
                Err(why) => {
                    let cohort = x.serving().cohort.as_str();
                    let reusable = Box::pin(respond(session, 502, &why, Some(cohort))).await;
                    return Ended {
                        end: End::ConnectError,
                        reusable,
                    };
                }
            };
            let authority = x.serving().upstream.authority();
            let answered = match send(session, &mut upstream, authority, ahead, replay).await {
                Ok(()) => upstream.read_head().await.map_err(Failed::Upstream),
                Err(failed) => Err(failed),
            };
            match answered {
                Ok(head) => break (upstream, key, head),
                // A pooled connection the upstream had closed: writing into
                // it may still succeed (the kernel takes the bytes), so the
                // close shows as an EOF or reset while waiting for the
                // response head, or as a failed write. No response came, so
                // the request goes again on a new connection (once, and only
                // with its whole body kept for the replay), as nginx does
                // for a cached keep-alive connection. A timeout is not
                // retried: the upstream may still be working on the request.
                Err(Failed::Upstream(UpstreamError::ClosedEarly | UpstreamError::Write(_)))
                    if reused && !replay && !session.retry_buffer_truncated() =>
                {
                    replay = true;
                }
                Err(failed) => return Box::pin(failed_early(session, x, failed)).await,
            }
        };
        let now = Instant::now();
        let content_type = head
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        x.meter.on_response(head.status.as_u16(), content_type, now);
        let client = session.req_header();
        let response = headers::downstream_response(
            head,
            x.serving().cohort.as_str(),
            &client.method,
            client.version,
        );
        if session.write_response_header(response).await.is_err() {
            return Ended::broken(End::ClientAbort);
        }
        let ended = stream_body(session, &mut upstream, &mut x.meter).await;
        if ended.end == End::Complete {
            self.release(upstream, key, kept);
        }
        ended
    }

    /// Gives an upstream connection whose response ended cleanly back for
    /// reuse: to the client connection's kept ones when it has them, else
    /// (and for what they push out) to the shared pool.
    fn release(&self, upstream: Upstream, key: u64, kept: Option<&mut KeptUpstreams>) {
        let Some(stream) = upstream.into_reusable() else {
            return;
        };
        let spilled = match kept {
            Some(kept) => kept.put(key, stream, Instant::now()),
            None => Some((key, stream)),
        };
        if let Some((key, stream)) = spilled {
            self.connector
                .release_stream(stream, key, Some(self.timeouts.idle));
        }
    }

    /// Gives a client connection's kept upstream connections to the shared
    /// pool when the client connection ends.
    pub(super) fn release_kept(&self, kept: &mut KeptUpstreams) {
        for (key, stream) in kept.drain() {
            self.connector
                .release_stream(stream, key, Some(self.timeouts.idle));
        }
    }

    /// The connection `kept` holds for `peer`, when it is young enough and
    /// still open; anything else it held for `peer` is closed.
    fn take_kept(&self, kept: &mut Option<&mut KeptUpstreams>, peer: &HttpPeer) -> Option<Stream> {
        let kept = kept.as_deref_mut()?;
        match kept.take(peer.reuse_hash(), Instant::now(), self.timeouts.idle) {
            Taken::Fresh(mut stream) => still_open(&mut stream).then_some(stream),
            Taken::None | Taken::Expired(_) => None,
        }
    }

    /// An upstream session for the serving backend: one of its ready
    /// endpoints (or its URL's address), moving once to the fallback cohort
    /// when none is ready or the connection fails; with whether the
    /// connection was reused, and its pool key. The error text says what
    /// could not be reached.
    async fn connect(
        &self,
        x: &mut Exchange,
        kept: &mut Option<&mut KeptUpstreams>,
    ) -> Result<(Upstream, bool, u64), String> {
        loop {
            let backend = x.serving();
            let why = match target(backend, &self.draws).await {
                Some((addr, guard)) => {
                    let peer = self.peer(addr, &backend.upstream);
                    // pingora's connect future holds a TLS handshake's
                    // state (8 KiB): boxed, it is on the heap only while a
                    // connection is made, instead of in every open
                    // request's future.
                    let stream = match self.take_kept(kept, &peer) {
                        Some(stream) => Ok((stream, true)),
                        None => Box::pin(self.connector.get_stream(&peer)).await,
                    };
                    match stream {
                        Ok((stream, reused)) => {
                            let upstream = Upstream::new(stream, self.timeouts.read);
                            x.endpoint = guard;
                            return Ok((upstream, reused, peer.reuse_hash()));
                        }
                        Err(e) => format!(
                            "cannot connect to {}: {}",
                            backend.upstream.url(),
                            e.etype().as_str()
                        ),
                    }
                }
                // A name that does not resolve, or a Service without a
                // ready pod, is a connect failure like any other.
                None if backend.endpoints.is_some() => {
                    format!("no ready endpoint behind {}", backend.upstream.url())
                }
                None => format!("cannot resolve upstream {}", backend.upstream.authority()),
            };
            if !x.fail_over(&self.observations) {
                return Err(why);
            }
        }
    }

    /// The connection target for `addr`, one of `upstream`'s addresses:
    /// over TLS, verifying the name in `upstream`'s URL, for `https`.
    fn peer(&self, addr: SocketAddr, upstream: &crate::route::Upstream) -> HttpPeer {
        let tls_name = upstream.tls_name();
        let mut peer = HttpPeer::new(
            addr,
            tls_name.is_some(),
            tls_name.unwrap_or_default().to_string(),
        );
        // Only the connect timeout is the connector's: weir's own client
        // applies the read timeout, and pooled connections get the idle
        // timeout where they are released.
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        peer
    }
}

/// Ends a request that failed before its response head reached the client:
/// a JSON error when the client is still there.
async fn failed_early(session: &mut ServerSession, x: &Exchange, failed: Failed) -> Ended {
    let (end, status, message) = match failed {
        Failed::Client => return Ended::broken(End::ClientAbort),
        Failed::Refused(refused) => (End::UpstreamReset, 400, refused.to_string()),
        Failed::Upstream(e @ UpstreamError::Timeout) => (End::Timeout, 504, e.to_string()),
        Failed::Upstream(e) => (End::UpstreamReset, 502, e.to_string()),
    };
    let _ = respond(session, status, &message, Some(x.serving().cohort.as_str())).await;
    Ended::broken(end)
}

/// Why sending a request failed.
enum Failed {
    /// The client's side (reading its body) failed.
    Client,
    /// The request cannot be forwarded as it is.
    Refused(headers::Refused),
    /// The upstream's side failed.
    Upstream(UpstreamError),
}

/// Request bodies are read up to this many bytes before the request is
/// routed and before anything goes upstream (pingora's retry buffer holds
/// as much, for the replay on a new connection). An inference request, a
/// JSON document of a few KiB, is then whole at the proxy first: a body
/// with broken framing is refused with 400 and reaches no upstream, and
/// routing may look into it. A longer body streams on after this part.
const READ_AHEAD: usize = 64 * 1024;

/// The start of a request body, read before anything goes upstream.
struct Ahead {
    chunks: Vec<Bytes>,
    /// The whole body is in `chunks`.
    done: bool,
}

/// Why a request body could not be read.
enum BodyFailed {
    /// Its framing is broken (a bad chunk size or chunk end).
    Malformed(&'static str),
    /// The client went away or stalled past the read deadline.
    Gone,
}

/// Reads the request body up to [`READ_AHEAD`], answering an HTTP/1.1
/// `Expect: 100-continue` first (the client waits for it before sending).
async fn read_ahead(session: &mut ServerSession) -> Result<Ahead, BodyFailed> {
    session.enable_retry_buffering();
    let mut ahead = Ahead {
        chunks: Vec::new(),
        done: session.is_body_empty(),
    };
    if ahead.done {
        return Ok(ahead);
    }
    if is_expect_continue_req(session.req_header()) {
        session
            .write_continue_response()
            .await
            .map_err(|_| BodyFailed::Gone)?;
    }
    let mut read = 0;
    while read < READ_AHEAD {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                ahead.chunks.push(chunk);
            }
            Ok(None) => {
                ahead.done = true;
                break;
            }
            // pingora's body reader names its framing errors only by these
            // strings (the constants are crate-private).
            Err(e) => {
                return Err(match e.etype().as_str() {
                    "InvalidChunk" => BodyFailed::Malformed("a chunk size or chunk end is invalid"),
                    "InvalidTrailerEnd" => {
                        BodyFailed::Malformed("the chunked trailer does not end")
                    }
                    _ => BodyFailed::Gone,
                });
            }
        }
    }
    Ok(ahead)
}

/// Writes the request head and body upstream: the part read ahead, then
/// the rest as it arrives. With `replay`, the body read so far comes from
/// the session's retry buffer (the first attempt sent it already).
async fn send(
    session: &mut ServerSession,
    upstream: &mut Upstream,
    authority: &str,
    ahead: &Ahead,
    replay: bool,
) -> Result<(), Failed> {
    let has_body = !session.is_body_empty();
    let request = session.req_header();
    upstream
        .queue_head(&request.method, |out| {
            headers::upstream_request(request, authority, has_body, out)
        })
        .map_err(Failed::Refused)?;
    if has_body {
        if replay && let Some(body) = session.get_retry_buffer() {
            upstream.queue_body(&body);
        } else {
            for chunk in &ahead.chunks {
                upstream.queue_body(chunk);
            }
        }
        // The rest of a body longer than what was read ahead, written as
        // it arrives.
        if !ahead.done {
            loop {
                upstream.flush().await.map_err(Failed::Upstream)?;
                match session.read_request_body().await {
                    Ok(Some(chunk)) => upstream.queue_body(&chunk),
                    Ok(None) => break,
                    Err(_) => return Err(Failed::Client),
                }
            }
        }
    }
    upstream.queue_end();
    upstream.flush().await.map_err(Failed::Upstream)?;
    Ok(())
}

/// Most bytes of body chunks gathered into one write to the client.
const BATCH: usize = 16 * 1024;

/// Streams the response body from `upstream` to the client, metering every
/// chunk, until either side ends. A client that goes away is noticed while
/// waiting on the upstream, so a generation nobody reads is cut at once.
///
/// Chunks that are already decoded when one arrives (events the upstream
/// sent together, or that queued while this task waited for the CPU) go
/// out in one write: a write is a system call and, on a busy proxy, most of
/// the cost of an event. Looking for them costs nothing extra: the read
/// that finds nothing is the one the next round would have made.
async fn stream_body(
    session: &mut ServerSession,
    upstream: &mut Upstream,
    meter: &mut Meter,
) -> Ended {
    let mut batch: Vec<u8> = Vec::new();
    let mut upstream_ended: Option<Result<(), End>> = None;
    // The read timeout as one lazily checked deadline instead of pingora's
    // timer per read (registering one cost about a tenth of an event's
    // instructions): each read only notes the time, and the timer, set
    // once, moves the deadline on when it fires after a read came.
    let read_timeout = upstream.read_timeout();
    let mut last_read = Instant::now();
    let deadline = tokio::time::sleep(read_timeout);
    tokio::pin!(deadline);
    while upstream_ended.is_none() {
        // The client going away shows as its connection closing (HTTP/1)
        // or its stream reset (HTTP/2) while the upstream is quiet.
        let read = tokio::select! {
            biased;
            read = upstream.read_body() => read,
            gone = session.read_body_or_idle(true) => {
                let _ = gone;
                return Ended::broken(End::ClientAbort);
            }
            () = &mut deadline => {
                let due = last_read + read_timeout;
                if Instant::now() >= due {
                    return Ended::broken(End::Timeout);
                }
                deadline.as_mut().reset(due.into());
                continue;
            }
        };
        let now = Instant::now();
        last_read = now;
        match read {
            Ok(Some(chunk)) => {
                meter.on_body_chunk(chunk, now);
                batch.clear();
                batch.extend_from_slice(chunk);
            }
            Ok(None) => break,
            Err(e) => return Ended::broken(upstream_failure(&e)),
        }
        while batch.len() < BATCH {
            match upstream.read_body().now_or_never() {
                Some(Ok(Some(chunk))) => {
                    meter.on_body_chunk(chunk, now);
                    batch.extend_from_slice(chunk);
                }
                Some(Ok(None)) => {
                    upstream_ended = Some(Ok(()));
                    break;
                }
                Some(Err(e)) => {
                    upstream_ended = Some(Err(upstream_failure(&e)));
                    break;
                }
                // Nothing decoded and nothing on the socket: write.
                None => break,
            }
        }
        let written = match &mut *session {
            ServerSession::H1(client) => client.write_body(&batch).await.map(|_| ()),
            other => {
                other
                    .write_response_body(Bytes::copy_from_slice(&batch), false)
                    .await
            }
        };
        if written.is_err() {
            return Ended::broken(End::ClientAbort);
        }
    }
    if let Some(Err(end)) = upstream_ended {
        return Ended::broken(end);
    }
    let finished = match session {
        ServerSession::H1(client) => client.finish_body().await.map(|_| ()),
        other => other.write_response_body(Bytes::new(), true).await,
    };
    Ended {
        end: End::Complete,
        reusable: finished.is_ok(),
    }
}

/// Whether an idle upstream connection is still usable: as pingora's pool
/// checks one it takes back, a connection with something to read while
/// idle was closed (or sent bytes nobody asked for). The read is polled
/// once and makes no system call unless the socket is readable.
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    tokio::task::unconstrained(stream.read(&mut byte))
        .now_or_never()
        .is_none()
}

/// How a failed upstream read ends the request.
fn upstream_failure(e: &UpstreamError) -> End {
    match e {
        UpstreamError::Timeout => End::Timeout,
        _ => End::UpstreamReset,
    }
}

/// Where the serving backend's request goes: one of its endpoints (counted
/// in flight there from now on), or its URL's address. `None` for no ready
/// endpoint or a name that does not resolve.
async fn target(backend: &Backend, draws: &Draws) -> Option<(SocketAddr, Option<EndpointGuard>)> {
    match &backend.endpoints {
        Some(endpoints) => endpoints
            .pick(draws.next())
            .map(|e| (e.addr(), Some(e.acquire()))),
        None => super::resolve(backend.upstream.authority())
            .await
            .map(|addr| (addr, None)),
    }
}

/// Answers with a short JSON error, naming the cohort that failed when one
/// was chosen; returns whether the connection can take another request
/// (pingora drains an unread request body before reusing it).
async fn respond(
    session: &mut ServerSession,
    status: u16,
    message: &str,
    cohort: Option<&str>,
) -> bool {
    let body = Bytes::from(
        serde_json::json!({ "error": { "message": message, "type": "weir_proxy_error" } })
            .to_string(),
    );
    let Ok(mut header) = ResponseHeader::build(status, Some(3)) else {
        return false;
    };
    let built = header
        .insert_header("content-type", "application/json")
        .is_ok()
        && header
            .insert_header("content-length", body.len().to_string())
            .is_ok()
        && cohort.is_none_or(|c| header.insert_header(COHORT_HEADER, c).is_ok());
    built
        && session
            .write_response_header(Box::new(header))
            .await
            .is_ok()
        && session.write_response_body(body, true).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RouteTable;

    /// Every open stream holds its connection's request future at its
    /// largest state's size, so a large future on a cold path (pingora's
    /// TLS connect, 8 KiB; its keep-alive `finish`, 3.7 KiB) costs every
    /// stream. Those are boxed; this keeps them so (14 KiB unboxed, 3.7 KiB
    /// boxed in the test profile).
    #[tokio::test]
    async fn a_requests_future_stays_small() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(client));
        let forwarder = Forwarder {
            table: Arc::new(ArcSwap::from_pointee(
                RouteTable::new(Vec::new(), false, 0).expect("an empty table"),
            )),
            observations: Arc::new(Observations::new("size".to_string())),
            timeouts: Timeouts::default(),
            active: Arc::default(),
            draws: Draws::Random,
            connector: TransportConnector::new(None),
        };
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let request = forwarder.process(ServerSession::new_http1(stream), &shutdown, None);
        let size = size_of_val(&request);
        assert!(size < 5 * 1024, "a request's future takes {size} bytes");
    }
}
