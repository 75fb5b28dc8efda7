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
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::FutureExt;
use http::{StatusCode, header};
use pingora::connectors::TransportConnector;
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::{HttpPeer, Peer as _};
use tokio::io::AsyncReadExt as _;

use super::client::Client;
use super::deadline::Deadline;
use super::downstream::{BodyFailed, Http1, Read};
use super::headers;
use super::kept::{Kept, Taken};
use super::upstream::{Upstream, UpstreamError};
use super::{Active, ActiveGuard, CONNECT_TIMEOUT, Draws};
use crate::balance::EndpointGuard;
use crate::config::Timeouts;
use crate::meter::{End, Meter};
use crate::model::{self, Lookup};
use crate::observe::{CohortHandle, InflightGuard, Observations};
use crate::route::{Backend, Decision, RequestInfo, RouteTable, route};

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
    /// Serves an HTTP/1 connection's requests, one after another (a
    /// pipelined one after the one before it), until it closes, fails, is
    /// idle past the request-head deadline or the service drains; then
    /// gives the upstream connections it kept to the shared pool.
    pub(super) async fn serve_h1(&self, stream: Stream, shutdown: &ShutdownWatch) {
        let mut connection = Http1::new(stream, self.timeouts.read);
        let mut kept = KeptUpstreams::default();
        let mut deadline = Deadline::new(self.timeouts.header);
        // Registered once for the connection, not once per request.
        let mut closing = shutdown.clone();
        let drain = draining(&mut closing);
        tokio::pin!(drain);
        loop {
            // The deadline covers a kept-alive connection's wait for its
            // next request too, and the whole head, not each read, so a
            // client trickling a byte a second is cut as well.
            deadline.set(Instant::now(), self.timeouts.header);
            let read = tokio::select! {
                biased;
                read = connection.read_request() => read,
                () = &mut drain => break,
                () = deadline.passed() => break,
            };
            match read {
                Read::Request => {}
                Read::Closed => break,
                Read::Bad(bad) => {
                    let mut client = Client::H1(&mut connection);
                    client.respond(bad.status(), &bad.to_string(), None).await;
                    break;
                }
            }
            let mut client = Client::H1(&mut connection);
            if *shutdown.borrow() {
                client.close_after();
            }
            if !self
                .serve(&mut client, Some(&mut kept), &mut deadline)
                .await
            {
                break;
            }
        }
        self.release_kept(&mut kept);
    }

    /// Serves one HTTP/2 stream.
    pub(super) async fn serve_h2(&self, mut session: ServerSession, shutdown: &ShutdownWatch) {
        let mut closing = shutdown.clone();
        let read = tokio::select! {
            biased;
            read = tokio::time::timeout(self.timeouts.header, session.read_request()) => read,
            () = draining(&mut closing) => return,
        };
        if !matches!(read, Ok(Ok(true))) {
            return;
        }
        let mut deadline = Deadline::new(self.timeouts.read);
        self.serve(&mut Client::H2(&mut session), None, &mut deadline)
            .await;
        // pingora's `finish` only ends an HTTP/2 stream.
        let _ = Box::pin(session.finish()).await;
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
    /// the next one. `kept` holds an HTTP/1 connection's upstream
    /// connections between its requests; `deadline` is the connection's
    /// (or the stream's).
    pub(super) async fn serve(
        &self,
        client: &mut Client<'_>,
        kept: Option<&mut KeptUpstreams>,
        deadline: &mut Deadline,
    ) -> bool {
        let started = Instant::now();
        if let Err(refused) = headers::check(client.request()) {
            client.close_after();
            return client
                .respond(StatusCode::BAD_REQUEST, &refused.to_string(), None)
                .await;
        }
        let ahead = match read_ahead(client).await {
            Ok(ahead) => ahead,
            Err(BodyFailed::Malformed(what)) => {
                // The framing is lost: nothing after this on the connection
                // can be trusted to be a request.
                client.close_after();
                let message = format!("the request body is malformed: {what}");
                return client
                    .respond(StatusCode::BAD_REQUEST, &message, None)
                    .await;
            }
            Err(BodyFailed::Gone) => return false,
        };
        let table = self.table.load();
        // Bodies are looked into only when some route matches a model.
        let lookup = (table.model_routes() && !ahead.body.is_empty())
            .then(|| model::find(&ahead.body, ahead.done));
        if let Some(lookup) = &lookup {
            self.observations.count_model_lookup(lookup);
            if *lookup == Lookup::Duplicate {
                // Which one the server would take is its parser's choice:
                // routing on either could meter one model as another.
                let message = "the request body names the top-level model twice: name it once";
                return client.respond(StatusCode::BAD_REQUEST, message, None).await;
            }
        }
        let asked = match lookup {
            Some(Lookup::Found { name, at }) => Some(Asked { name, at }),
            _ => None,
        };
        let decided = {
            let req = client.request();
            let host = req
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or(req.uri.host());
            let info = RequestInfo::new(host, req.uri.path(), &req.headers)
                .with_model(asked.as_ref().map(|a| a.name.as_str()));
            route(&table, &info, self.draws.next())
        };
        drop(table);
        let decision = match decided {
            Ok(decision) => decision,
            Err(e) => {
                return client
                    .respond(StatusCode::NOT_FOUND, &e.to_string(), None)
                    .await;
            }
        };
        // The model is rewritten only on a route that matches it.
        let ahead = Ahead {
            asked: asked.filter(|_| decision.route.model().is_some()),
            ..ahead
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
        let ended = self
            .exchange(client, &mut exchange, ahead, kept, deadline)
            .await;
        let Exchange { handle, meter, .. } = exchange;
        handle.record(&meter.finish(ended.end, Instant::now()));
        ended.reusable
    }

    /// Connects, sends the request and streams the response back.
    async fn exchange(
        &self,
        client: &mut Client<'_>,
        x: &mut Exchange,
        ahead: Ahead,
        mut kept: Option<&mut KeptUpstreams>,
        deadline: &mut Deadline,
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
                    let reusable =
                        Box::pin(client.respond(StatusCode::BAD_GATEWAY, &why, Some(cohort))).await;
                    return Ended {
                        end: End::ConnectError,
                        reusable,
                    };
                }
            };
            let answered = match send(client, &mut upstream, x.serving(), &ahead).await {
                Ok(()) => {
                    deadline.set(Instant::now(), self.timeouts.read);
                    tokio::select! {
                        biased;
                        head = upstream.read_head() => head.map_err(Failed::Upstream),
                        () = deadline.passed() => Err(Failed::Upstream(UpstreamError::Timeout)),
                    }
                }
                Err(failed) => Err(failed),
            };
            match answered {
                Ok(head) => break (upstream, key, head),
                // A pooled connection the upstream had closed: writing into
                // it may still succeed (the kernel takes the bytes), so the
                // close shows as an EOF or reset while waiting for the
                // response head, or as a failed write. No response came, so
                // the request goes again on a new connection (once, and only
                // when its whole body was read ahead and can be sent again),
                // as nginx does for a cached keep-alive connection. A
                // timeout is not retried: the upstream may still be working
                // on the request.
                Err(Failed::Upstream(UpstreamError::ClosedEarly | UpstreamError::Write(_)))
                    if reused && !replay && ahead.done =>
                {
                    replay = true;
                }
                Err(failed) => return Box::pin(failed_early(client, x, failed)).await,
            }
        };
        // The name the upstream echoes goes back to the one asked for.
        let mut rewrite = ahead
            .rewritten_for(x.serving())
            .map(|(asked, to)| Box::new(model::Rewrite::new(to, asked)));
        // Kept for a replay until a response came; not held while it
        // streams.
        drop(ahead);
        let now = Instant::now();
        let content_type = head
            .value(b"content-type")
            .and_then(|v| std::str::from_utf8(v).ok());
        x.meter.on_response(head.status.as_u16(), content_type, now);
        if client
            .write_head(&head, x.serving().cohort.as_str(), rewrite.is_some())
            .await
            .is_err()
        {
            return Ended::broken(End::ClientAbort);
        }
        let ended = stream_body(
            client,
            &mut upstream,
            &mut x.meter,
            rewrite.as_deref_mut(),
            deadline,
            self.timeouts.read,
        )
        .await;
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
    fn release_kept(&self, kept: &mut KeptUpstreams) {
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
    ///
    /// A refused connection to one endpoint is tried again on another
    /// ready endpoint of the same cohort first (up to
    /// [`SAME_COHORT_TRIES`]), as nginx's `proxy_next_upstream error`
    /// does: a pod that has just begun terminating refuses connections
    /// while the endpoint list may still name it for a moment, which is
    /// churn, not the cohort failing. Only a cohort none of whose tried
    /// endpoints answers is counted against and failed over.
    async fn connect(
        &self,
        x: &mut Exchange,
        kept: &mut Option<&mut KeptUpstreams>,
    ) -> Result<(Upstream, bool, u64), String> {
        // Endpoints of the serving cohort that refused (no allocation
        // until one does).
        let mut tried: Vec<SocketAddr> = Vec::new();
        loop {
            let backend = x.serving();
            let why = match target(backend, &self.draws, &tried).await {
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
                            let upstream = Upstream::new(stream);
                            x.endpoint = guard;
                            return Ok((upstream, reused, peer.reuse_hash()));
                        }
                        Err(e) => {
                            tried.push(addr);
                            let ready =
                                backend.endpoints.as_ref().map_or(0, |e| e.as_slice().len());
                            if tried.len() < ready.min(SAME_COHORT_TRIES) {
                                x.handle.count_connect_retry();
                                continue;
                            }
                            format!(
                                "cannot connect to {}: {}",
                                backend.upstream.url(),
                                e.etype().as_str()
                            )
                        }
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
            tried.clear();
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
async fn failed_early(client: &mut Client<'_>, x: &Exchange, failed: Failed) -> Ended {
    let (end, status, message) = match failed {
        Failed::Client => return Ended::broken(End::ClientAbort),
        Failed::Refused(refused) => (
            End::UpstreamReset,
            StatusCode::BAD_REQUEST,
            refused.to_string(),
        ),
        Failed::Upstream(e @ UpstreamError::Timeout) => {
            (End::Timeout, StatusCode::GATEWAY_TIMEOUT, e.to_string())
        }
        Failed::Upstream(e) => (End::UpstreamReset, StatusCode::BAD_GATEWAY, e.to_string()),
    };
    client.close_after();
    let _ = client
        .respond(status, &message, Some(x.serving().cohort.as_str()))
        .await;
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
/// routed and before anything goes upstream. An inference request, a JSON
/// document of a few KiB, is then whole at the proxy first: a body with
/// broken framing is refused with 400 and reaches no upstream, routing may
/// look into it, and it can be sent again if a reused upstream connection
/// turns out closed. A longer body streams on after this part.
const READ_AHEAD: usize = 64 * 1024;

/// The start of a request body, read before anything goes upstream.
struct Ahead {
    body: Vec<u8>,
    /// The whole body is in `body`.
    done: bool,
    /// The model the body asks for, on a route that matches it.
    asked: Option<Asked>,
}

/// The body's top-level `model`: the name and where its JSON string is.
struct Asked {
    name: String,
    at: std::ops::Range<usize>,
}

impl Ahead {
    /// The name asked for and the one `backend` serves it as, when they
    /// differ (the body is then rewritten, and the response back).
    fn rewritten_for<'a>(&'a self, backend: &'a Backend) -> Option<(&'a str, &'a str)> {
        let asked = self.asked.as_ref()?;
        let to = backend.model.as_deref()?;
        (to != asked.name).then_some((asked.name.as_str(), to))
    }
}

/// Reads the request body up to [`READ_AHEAD`].
async fn read_ahead(client: &mut Client<'_>) -> Result<Ahead, BodyFailed> {
    let mut ahead = Ahead {
        body: Vec::new(),
        done: !client.has_body(),
        asked: None,
    };
    if ahead.done {
        return Ok(ahead);
    }
    client.continue_if_expected().await?;
    while ahead.body.len() < READ_AHEAD {
        if !client.read_body(&mut ahead.body).await? {
            ahead.done = true;
            break;
        }
    }
    Ok(ahead)
}

/// Writes the request head and body upstream to `backend`: the part read
/// ahead (its `model` rewritten to the one `backend` asks for), then the
/// rest as it arrives.
async fn send(
    client: &mut Client<'_>,
    upstream: &mut Upstream,
    backend: &Backend,
    ahead: &Ahead,
) -> Result<(), Failed> {
    let has_body = !ahead.body.is_empty() || !ahead.done;
    let request = client.request();
    // Rewritten per send: a failover may go to a cohort that asks for
    // another model.
    let rewritten = ahead.rewritten_for(backend).and_then(|(_, to)| {
        let at = ahead.asked.as_ref()?.at.clone();
        Some(model::rewrite_request(&ahead.body, at, to))
    });
    let content_length = match &rewritten {
        Some(body) => request
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(|length| length - ahead.body.len() as u64 + body.len() as u64),
        None => None,
    };
    let authority = backend.upstream.authority();
    upstream
        .queue_head(&request.method, |out| {
            headers::upstream_request(request, authority, has_body, content_length, out)
        })
        .map_err(Failed::Refused)?;
    if has_body {
        upstream.queue_body(rewritten.as_deref().unwrap_or(&ahead.body));
        // The rest of a body longer than what was read ahead, written as
        // it arrives.
        if !ahead.done {
            let mut piece = Vec::new();
            loop {
                upstream.flush().await.map_err(Failed::Upstream)?;
                piece.clear();
                match client.read_body(&mut piece).await {
                    Ok(true) => upstream.queue_body(&piece),
                    Ok(false) => break,
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
/// that finds nothing is the one the next round would have made. For the
/// same reason an HTTP/1 response head waits for body bytes that are
/// already there (a small response leaves in one write), but never for
/// ones that are not.
async fn stream_body(
    client: &mut Client<'_>,
    upstream: &mut Upstream,
    meter: &mut Meter,
    mut rewrite: Option<&mut model::Rewrite>,
    deadline: &mut Deadline,
    read_timeout: Duration,
) -> Ended {
    let mut batch: Vec<u8> = Vec::new();
    let mut upstream_ended: Option<Result<(), End>> = None;
    // `read_timeout` bounds the upstream's silence: each read moves the
    // deadline on (noting it costs no timer; see `deadline.rs`).
    deadline.set(Instant::now(), read_timeout);
    while upstream_ended.is_none() {
        let ready = if client.has_queued() {
            upstream.read_body().now_or_never()
        } else {
            None
        };
        let read = match ready {
            Some(read) => read,
            None => {
                if client.flush().await.is_err() {
                    return Ended::broken(End::ClientAbort);
                }
                // The client going away shows as its connection closing
                // (HTTP/1) or its stream reset (HTTP/2) while the upstream
                // is quiet.
                tokio::select! {
                    biased;
                    read = upstream.read_body() => read,
                    () = client.closed() => return Ended::broken(End::ClientAbort),
                    () = deadline.passed() => return Ended::broken(End::Timeout),
                }
            }
        };
        let now = Instant::now();
        deadline.set(now, read_timeout);
        batch.clear();
        match read {
            Ok(Some(chunk)) => {
                meter.on_body_chunk(chunk, now);
                pass(&mut rewrite, chunk, &mut batch);
            }
            Ok(None) => upstream_ended = Some(Ok(())),
            Err(e) => return Ended::broken(upstream_failure(&e)),
        }
        while upstream_ended.is_none() && batch.len() < BATCH {
            match upstream.read_body().now_or_never() {
                Some(Ok(Some(chunk))) => {
                    meter.on_body_chunk(chunk, now);
                    pass(&mut rewrite, chunk, &mut batch);
                }
                Some(Ok(None)) => upstream_ended = Some(Ok(())),
                Some(Err(e)) => upstream_ended = Some(Err(upstream_failure(&e))),
                // Nothing decoded and nothing on the socket: write.
                None => break,
            }
        }
        if let Some(Err(end)) = upstream_ended {
            // What came before the failure still reaches the client; the
            // response is then cut (its connection closes).
            let _ = client.write_body(&batch, false).await;
            return Ended::broken(end);
        }
        let end = upstream_ended.is_some();
        if let (true, Some(rewrite)) = (end, rewrite.as_deref_mut()) {
            rewrite.finish(&mut batch);
        }
        if client.write_body(&batch, end).await.is_err() {
            return Ended::broken(End::ClientAbort);
        }
    }
    Ended {
        end: End::Complete,
        reusable: client.reusable(),
    }
}

/// Adds `chunk` to what goes to the client: with the model name it asked
/// for when the response is rewritten (the meter has seen the upstream's
/// bytes).
fn pass(rewrite: &mut Option<&mut model::Rewrite>, chunk: &[u8], batch: &mut Vec<u8>) {
    match rewrite {
        Some(rewrite) => rewrite.feed(chunk, batch),
        None => batch.extend_from_slice(chunk),
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

/// Tries of one cohort's endpoints for a request whose connections are
/// refused, before it fails over: enough to step past a pod or two that
/// are terminating, few enough that a cohort that refuses everywhere is
/// failed over within a few connect attempts.
const SAME_COHORT_TRIES: usize = 3;

/// Where the serving backend's request goes: one of its endpoints other
/// than those at `tried` (counted in flight there from now on), or its
/// URL's address. `None` for no ready endpoint left or a name that does
/// not resolve.
async fn target(
    backend: &Backend,
    draws: &Draws,
    tried: &[SocketAddr],
) -> Option<(SocketAddr, Option<EndpointGuard>)> {
    match &backend.endpoints {
        Some(endpoints) => endpoints
            .pick_untried(draws.next(), tried)
            .map(|e| (e.addr(), Some(e.acquire()))),
        None => super::resolve(&backend.upstream)
            .await
            .map(|addr| (addr, None)),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::route::RouteTable;

    /// A forwarder with no routes.
    pub(in crate::server) fn forwarder() -> Forwarder {
        Forwarder {
            table: Arc::new(ArcSwap::from_pointee(
                RouteTable::new(Vec::new(), false, 0).expect("an empty table"),
            )),
            observations: Arc::new(Observations::new("size".to_string())),
            timeouts: Timeouts::default(),
            active: Arc::default(),
            draws: Draws::Random,
            connector: TransportConnector::new(None),
        }
    }

    /// Every open stream holds its connection's future at its largest
    /// state's size, so a large future on a cold path (pingora's TLS
    /// connect, 8 KiB) costs every stream. Those are boxed; this keeps them
    /// so (14 KiB unboxed with pingora's HTTP/1 session, 3.7 KiB boxed).
    #[tokio::test]
    async fn a_requests_future_stays_small() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(client));
        let forwarder = forwarder();
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let connection = forwarder.serve_h1(stream, &shutdown);
        let size = size_of_val(&connection);
        assert!(size < 5 * 1024, "a request's future takes {size} bytes");
    }
}
