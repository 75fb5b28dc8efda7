//! weir-proxy: the embedded L7 proxy that splits traffic between cohorts,
//! meters every request and stream, and serves observations.
//!
//! This crate's core is pure and has no sockets, so every rule can be tested
//! on its own; the pingora server only wires it together:
//!
//! - [`config`]: where route tables come from (a YAML file, memory, the
//!   Canaries of a Kubernetes cluster), validated once, published over a
//!   `watch` channel; [`error`]: what is wrong with one, and the fix.
//! - [`mod@route`]: the route table and the per-request decision
//!   [`route::route`]`(&table, &request, draw)`.
//! - [`balance`]: which ready pod of a cohort's Service takes the request
//!   (power of two choices on in-flight requests).
//! - [`meter`]: what one request did (TTFT, inter-token gaps, tokens,
//!   outcome), from its status and body chunks.
//! - [`observe`]: cumulative per-(route, cohort, revision) aggregates for
//!   `/v1/observations` and `/metrics`, latencies kept as [`histogram`]s.
//! - [`metrics`]: the exported metric names and label values, in one place.
//!
//! A request's life in the server ([`server`]'s hot path, one task from
//! head to record; an HTTP/2 stream is a request of its own), in these
//! terms:
//!
//! 1. Read the head (a deadline on the whole head); an HTTP/1.1 request
//!    without one `Host` is answered 400 ([`server::headers::check`]).
//!    `route(&table.load(), &RequestInfo::new(host, path, headers), rand)`;
//!    on [`RouteError::NoRoute`] answer 404 with its text. Keep the
//!    [`Decision`], the [`CohortHandle`] from
//!    `observations.cohort(&decision.key())`, its [`InflightGuard`] and a
//!    [`Meter::new`]`(start)`.
//! 2. Connect to the backend's URL, or, when it has endpoints, to
//!    [`balance::Endpoints::pick`]`(rand)`, holding that endpoint's
//!    [`balance::EndpointGuard`] to the end. A connect failure before any
//!    byte went upstream (an empty endpoint set counts as one): record
//!    `Meter::new(start).finish(End::ConnectError, now)` on that handle, then
//!    try once more on `decision.fallback_backend()` with the fallback's
//!    handle.
//! 3. Send the request ([`server::headers::upstream_request`]); a pooled
//!    connection the upstream closed under it (EOF or reset before the
//!    response head) sends it once more on a new one. The response head
//!    ([`server::framing::parse_head`], weir's own HTTP/1 client):
//!    `meter.on_response(status, content_type, now)`, forwarded with
//!    [`COHORT_HEADER`] naming the cohort
//!    ([`server::headers::downstream_response`]). Each body chunk, decoded
//!    in place ([`server::framing::Body`]): `meter.on_body_chunk(chunk,
//!    now)`, then written to the client.
//! 4. `handle.record(&meter.finish(end, now))`, drop the guards; a pooled
//!    upstream connection goes back to the pool when the response ended
//!    cleanly.

pub mod admin;
pub mod balance;
pub mod config;
pub mod error;
pub mod histogram;
pub mod meter;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod route;
pub mod server;
#[cfg(feature = "tls")]
pub mod tls;

#[cfg(feature = "kube")]
pub use config::KubeSource;
pub use config::{ConfigSource, FileSource, MemorySource, ProxyConfig, Timeouts};
pub use error::{ConfigError, Problem};
pub use meter::{End, Meter, RequestRecord};
pub use observe::{CohortHandle, InflightGuard, Observations};
pub use route::{
    COHORT_HEADER, CohortKey, Decision, Headers, RequestInfo, RouteError, RouteTable, route,
};
pub use server::{Drained, Running, ServeError, Settings, start};
pub use weir_core::{Cohort, Outcome, Weight};
