//! Forward mode: the sim as a frontend or middle tier of an inference graph
//! (a Dynamo-style frontend → prefill → decode chain), relaying each API
//! request to one upstream instead of answering it.
//!
//! Why: a graph canary must show *generation isolation* (canary frontends
//! reach only canary workers). A chain of sims, each forwarding to the
//! worker Service its cohort names and stamping [`GENERATION_HEADER`] with
//! its own generation, lets a test read on every worker which generations
//! sent it requests ([`crate::metrics::GENERATION_REQUESTS`]).
//!
//! The relay is a plain streaming proxy: method, path and query, body and
//! `content-type`/`accept` go up; status, `content-type`/`cache-control`
//! and the body come back frame by frame as the upstream sends them, so
//! SSE events pass through as they arrive. The sim's own operational
//! endpoints (`/health`, `/metrics`, `/control`) stay its own; every other
//! path, `/v1/models` included, is the upstream's (a frontend lists what
//! its workers serve). An upstream that cannot be reached is a 502, a
//! Service with no ready endpoint a 503, both as OpenAI error bodies.
//!
//! Where the upstream is: [`Forward`] is the base URL, parsed and checked
//! once; a [`Resolve`] may pick the address of each request (the `weir`
//! binary's Kubernetes EndpointSlice resolver, standing in for cluster DNS
//! and kube-proxy in test clusters), otherwise the system resolver does.
//! This crate knows no Kubernetes: the resolver is injected.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::metrics::FinishedReason;
use crate::openai::Endpoint;
use crate::server::Running;

/// Request header a forwarding sim sets to its own generation (the
/// upstream counts it as `from`).
pub const GENERATION_HEADER: &str = "x-weir-generation";

/// How long connecting to the upstream may take before the request is a
/// 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections to the upstream are closed after this (below
/// the 5 s keep-alive of vLLM and of the sim itself).
const POOL_IDLE: Duration = Duration::from_secs(4);

/// Picks the address of one forwarded request.
pub trait Resolve: Send + Sync + fmt::Debug {
    /// The address a request to `host:port` (the forward URL's) connects
    /// to, chosen anew for each request.
    ///
    /// # Errors
    /// Why no address is ready now, in words: the client gets a 503 that
    /// says so.
    fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, String>;
}

/// Where a forwarding sim relays: an `http://` base URL (a path prefix,
/// if any, goes before each request's path), and optionally the resolver
/// of its host.
#[derive(Clone)]
pub struct Forward {
    scheme: Scheme,
    authority: Authority,
    /// Without a trailing `/` (empty for none).
    prefix: String,
    resolver: Option<Arc<dyn Resolve>>,
}

/// A forward URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?}: {reason}")]
pub struct ForwardUrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Forward {
    /// Parses a base URL: `http://HOST[:PORT][/PREFIX]`, port 80 when not
    /// given.
    ///
    /// # Errors
    /// [`ForwardUrlError`] for anything else (another scheme, no host, a
    /// query or fragment, user info).
    pub fn parse(url: &str) -> Result<Forward, ForwardUrlError> {
        let bad = |reason| ForwardUrlError {
            url: url.to_string(),
            reason,
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| bad("not a URL (write http://HOST[:PORT])"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(bad("only http:// upstreams are supported"));
        }
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?.clone();
        if authority.host().is_empty() {
            return Err(bad("has no host"));
        }
        if authority.as_str().contains('@') {
            return Err(bad("user info is not supported"));
        }
        if uri.query().is_some() || url.contains('#') {
            return Err(bad("a base URL has no query or fragment"));
        }
        Ok(Forward {
            scheme: Scheme::HTTP,
            authority,
            prefix: uri.path().trim_end_matches('/').to_string(),
            resolver: None,
        })
    }

    /// The same URL with its host resolved by `resolver` for each request.
    #[must_use]
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Forward {
        self.resolver = Some(resolver);
        self
    }

    /// The URL's host (without brackets for an IPv6 literal).
    pub fn host(&self) -> &str {
        self.authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
    }

    /// The URL's port (80 when not given).
    pub fn port(&self) -> u16 {
        self.authority.port_u16().unwrap_or(80)
    }

    /// Whether a resolver picks the address of each request.
    pub fn resolves(&self) -> bool {
        self.resolver.is_some()
    }

    /// The URI of the upstream request for `path_and_query` (the incoming
    /// request's), sent to `addr` when one was resolved, else to the URL's
    /// own host.
    fn upstream_uri(
        &self,
        path_and_query: Option<&PathAndQuery>,
        addr: Option<SocketAddr>,
    ) -> Result<Uri, http::Error> {
        let authority = match addr {
            Some(addr) => Authority::try_from(addr.to_string())?,
            None => self.authority.clone(),
        };
        let tail = path_and_query.map_or("/", PathAndQuery::as_str);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(authority)
            .path_and_query(format!("{}{tail}", self.prefix))
            .build()
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

impl fmt::Debug for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forward")
            .field("url", &self.to_string())
            .field("resolver", &self.resolver)
            .finish()
    }
}

/// Equal URLs with the same resolver (the same instance, or none).
impl PartialEq for Forward {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
            && match (&self.resolver, &other.resolver) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

/// A forwarding server's upstream: where, the client that goes there, and
/// the generation it stamps on each request.
#[derive(Debug)]
pub(crate) struct Upstream {
    forward: Forward,
    client: Client<HttpConnector, Incoming>,
    generation: Option<HeaderValue>,
}

impl Upstream {
    pub(crate) fn new(forward: Forward, generation: Option<HeaderValue>) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Upstream {
            forward,
            client,
            generation,
        }
    }

    /// The request sent upstream for `req`: its method, path, query and
    /// body, the headers a completion needs, `host` the URL's and the
    /// generation header.
    fn request(
        &self,
        req: Request<Incoming>,
        addr: Option<SocketAddr>,
    ) -> Result<Request<Incoming>, http::Error> {
        let (parts, body) = req.into_parts();
        let uri = self
            .forward
            .upstream_uri(parts.uri.path_and_query(), addr)?;
        let mut builder = Request::builder().method(parts.method).uri(uri);
        if let Ok(host) = HeaderValue::from_str(self.forward.authority.as_str()) {
            builder = builder.header(header::HOST, host);
        }
        for name in [header::CONTENT_TYPE, header::ACCEPT] {
            if let Some(value) = parts.headers.get(&name) {
                builder = builder.header(name, value);
            }
        }
        if let Some(generation) = &self.generation {
            builder = builder.header(GENERATION_HEADER, generation);
        }
        builder.body(body)
    }
}

/// The completion endpoint `method path` is, if it is one: the requests
/// that are metered and counted by generation, answered or relayed.
pub(crate) fn inference_endpoint(method: &Method, path: &str) -> Option<Endpoint> {
    match (method, path) {
        (&Method::POST, "/v1/chat/completions") => Some(Endpoint::Chat),
        (&Method::POST, "/v1/completions") => Some(Endpoint::Completions),
        _ => None,
    }
}

/// What [`relay`] answers: the upstream's response, streamed, or the error
/// that stood in for it.
pub(crate) enum Relayed {
    /// The upstream answered: its status and headers, and its body to
    /// stream.
    Answered(Response<RelayBody>),
    /// No response came: the status and message to answer with.
    Failed(StatusCode, String),
}

/// Relays `req` to `upstream`. `running` meters a completion request (its
/// end is the end of the relayed body); other requests pass unmetered.
pub(crate) async fn relay(
    upstream: &Upstream,
    req: Request<Incoming>,
    mut running: Option<Running>,
) -> Relayed {
    let mut fail = |status: StatusCode, message: String| {
        if let Some(running) = running.as_mut() {
            running.finish(FinishedReason::Error);
        }
        Relayed::Failed(status, message)
    };
    let forward = &upstream.forward;
    let addr = match &forward.resolver {
        None => None,
        Some(resolver) => match resolver.resolve(forward.host(), forward.port()) {
            Ok(addr) => Some(addr),
            Err(reason) => {
                return fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("no ready endpoint for upstream {forward}: {reason}"),
                );
            }
        },
    };
    let request = match upstream.request(req, addr) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("cannot relay this request to {forward}: {e}"),
            );
        }
    };
    let response = match upstream.client.request(request).await {
        Ok(r) => r,
        Err(e) => {
            let at = addr.map_or_else(String::new, |a| format!(" (at {a})"));
            return fail(
                StatusCode::BAD_GATEWAY,
                format!("cannot reach upstream {forward}{at}: {}", chain(&e)),
            );
        }
    };
    let (parts, body) = response.into_parts();
    let mut relayed = Response::new(RelayBody::new(body, parts.status, running));
    *relayed.status_mut() = parts.status;
    for name in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
        if let Some(value) = parts.headers.get(&name) {
            relayed.headers_mut().insert(name, value.clone());
        }
    }
    Relayed::Answered(relayed)
}

/// An error and its sources, joined by `: ` (hyper's client error says
/// only "client error (Connect)" at the top).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The upstream's body, passed through frame by frame. A metered request
/// finishes when it ends: `stop` after a success status, `error` after
/// another or when the upstream breaks off (an abort when the client
/// leaves first, by [`Running`]'s drop).
#[derive(Debug)]
pub(crate) struct RelayBody {
    body: Incoming,
    ok: bool,
    running: Option<Running>,
}

impl RelayBody {
    fn new(body: Incoming, status: StatusCode, running: Option<Running>) -> RelayBody {
        let mut relayed = RelayBody {
            body,
            ok: status.is_success(),
            running,
        };
        // hyper polls no further once the body says it has ended: an
        // empty one is never polled at all.
        relayed.finish_if_ended();
        relayed
    }

    fn finish(&mut self, reason: FinishedReason) {
        if let Some(running) = self.running.as_mut() {
            running.finish(reason);
        }
    }

    /// How the request finished when the body ended whole.
    fn ended(&mut self) {
        let reason = if self.ok {
            FinishedReason::Stop
        } else {
            FinishedReason::Error
        };
        self.finish(reason);
    }

    fn finish_if_ended(&mut self) {
        if self.body.is_end_stream() {
            self.ended();
        }
    }
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended(),
            // A body of known length has ended with its last frame.
            Poll::Ready(Some(Ok(_))) => self.finish_if_ended(),
            Poll::Ready(Some(Err(_))) => self.finish(FinishedReason::Error),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(forward: &Forward, path: &str, addr: Option<SocketAddr>) -> String {
        let pq: PathAndQuery = path.parse().expect("path");
        forward
            .upstream_uri(Some(&pq), addr)
            .expect("uri")
            .to_string()
    }

    #[test]
    fn the_request_path_and_query_follow_the_base_url() {
        let plain = Forward::parse("http://chat-decode-canary:8000").expect("valid");
        assert_eq!((plain.host(), plain.port()), ("chat-decode-canary", 8000));
        assert_eq!(
            uri(&plain, "/v1/chat/completions?x=1", None),
            "http://chat-decode-canary:8000/v1/chat/completions?x=1"
        );
        let prefixed = Forward::parse("http://worker/api/").expect("valid");
        assert_eq!(prefixed.port(), 80);
        assert_eq!(prefixed.to_string(), "http://worker/api");
        let addr: SocketAddr = "10.244.1.7:9000".parse().expect("addr");
        assert_eq!(
            uri(&prefixed, "/v1/models", Some(addr)),
            "http://10.244.1.7:9000/api/v1/models"
        );
        let v6 = Forward::parse("http://[::1]:8000").expect("valid");
        assert_eq!(v6.host(), "::1");
    }

    #[test]
    fn unusable_urls_say_why() {
        for (url, why) in [
            ("https://worker:8443", "only http://"),
            ("worker:8000", "only http://"),
            ("http://", "not a URL"),
            ("http://u:p@worker", "user info"),
            ("http://worker/?a=b", "no query"),
            ("not a url", "not a URL"),
        ] {
            let err = Forward::parse(url).expect_err(url);
            assert!(err.to_string().contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn only_completions_are_inference() {
        assert_eq!(
            inference_endpoint(&Method::POST, "/v1/chat/completions"),
            Some(Endpoint::Chat)
        );
        assert_eq!(
            inference_endpoint(&Method::POST, "/v1/completions"),
            Some(Endpoint::Completions)
        );
        assert_eq!(inference_endpoint(&Method::GET, "/v1/completions"), None);
        assert_eq!(inference_endpoint(&Method::GET, "/v1/models"), None);
    }
}
