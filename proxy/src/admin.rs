//! The admin listener: what operators and the controller ask the proxy.
//!
//! `GET /metrics` (Prometheus text), `GET /v1/observations` (cumulative
//! mergeable histograms and outcome counts per route, cohort and revision),
//! `GET /v1/routes`, `PUT /v1/routes/{name}/weights` (file and in-memory
//! sources only; the Kubernetes source refuses, since the controller owns
//! weights there), `GET /healthz`, `GET /readyz` (503 while draining, and
//! until the config source has its first table). It binds to loopback by
//! default: these endpoints change traffic and must not face clients.
//!
//! A plain hyper server, separate from the proxy's pingora service, so the
//! admin API keeps answering while the proxy drains.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::{ConfigError, ConfigSource, parse_weights_body};
use crate::observe::Observations;
use crate::route::RouteTable;

/// Largest accepted request body (a weights update is a few dozen bytes).
const MAX_BODY: usize = 64 * 1024;

/// What the admin handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The table in service.
    pub table: Arc<ArcSwap<RouteTable>>,
    /// Where tables come from (and weight updates go).
    pub source: Arc<dyn ConfigSource>,
    /// The proxy's observations.
    pub observations: Arc<Observations>,
    /// Cleared when the proxy starts draining: `/readyz` turns 503 so load
    /// balancers stop sending new clients.
    pub ready: Arc<AtomicBool>,
}

type Body = Full<Bytes>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    reply(status, "application/json", value.to_string())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

fn config_status(e: &ConfigError) -> StatusCode {
    match e {
        ConfigError::UnknownRoute { .. } => StatusCode::NOT_FOUND,
        ConfigError::ReadOnly { .. } => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Handles one admin request.
pub async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => reply(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, ["readyz"]) => {
            if !state.ready.load(Ordering::Relaxed) {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n")
            } else if !state.source.ready() {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!(
                        "waiting for the first route table from {}\n",
                        state.source.describe()
                    ),
                )
            } else {
                reply(StatusCode::OK, "text/plain", "ready\n")
            }
        }
        (&Method::GET, ["metrics"]) => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.observations.render_prometheus(&state.table.load()),
        ),
        (&Method::GET, ["v1", "observations"]) => {
            match serde_json::to_value(state.observations.snapshot(&state.table.load())) {
                Ok(v) => json(StatusCode::OK, &v),
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot encode observations: {e}"),
                ),
            }
        }
        (&Method::GET, ["v1", "routes"]) => {
            let table = state.table.load();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "source": state.source.describe(),
                    "table": &**table,
                    "lastError": state.source.last_error().map(|e| e.to_string()),
                }),
            )
        }
        (&Method::PUT, ["v1", "routes", name, "weights"]) => {
            let name = (*name).to_string();
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body: {e}"));
                }
            };
            let weights = match parse_weights_body(&body) {
                Ok(w) => w,
                Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            };
            match state.source.set_weights(&name, &weights) {
                Ok(table) => {
                    // Serve the new weights at once, not when the follower
                    // task next runs, so a PUT's 200 means "in force".
                    state.table.store(Arc::clone(&table));
                    // `lastError` says when the weights are in force but
                    // could not be saved, or a restart is pending.
                    match table.get(&name) {
                        Some(route) => json(
                            StatusCode::OK,
                            &serde_json::json!({
                                "route": &**route,
                                "lastError": state.source.last_error().map(|e| e.to_string()),
                            }),
                        ),
                        None => error(StatusCode::NOT_FOUND, format!("route {name} vanished")),
                    }
                }
                Err(e) => error(config_status(&e), e.to_string()),
            }
        }
        (
            _,
            ["healthz" | "readyz" | "metrics"]
            | ["v1", "observations" | "routes"]
            | ["v1", "routes", _, "weights"],
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no admin endpoint at {path}"),
        ),
    }
}

/// Most admin connections open at once. Its clients are a few scrapers and
/// a controller; past this, new connections are closed at once, so a flood
/// cannot take the proxy's file descriptors through the admin port.
pub const ADMIN_MAX_CONNECTIONS: usize = 128;

/// Serves the admin API on `listener` until `shutdown` turns true.
///
/// `header_timeout` bounds the wait for a request's head, and so for the
/// next request on an idle keep-alive connection: a scrape every 15 s or
/// 30 s keeps its connection, a client that sends nothing (or trickles
/// bytes) loses it. HTTP/1.1 only: its clients (Prometheus, the
/// controller, curl) speak it, and one protocol means one idle rule; an
/// HTTP/2 connection would have none in hyper.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let state = Arc::new(state);
    let slots = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, limit = ADMIN_MAX_CONNECTIONS, "admin connection refused: too many open");
            drop(stream);
            continue;
        };
        let state = Arc::clone(&state);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            }),
        );
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
}

/// What to tell an operator whose admin API listens beyond loopback, or
/// `None` when it is on loopback. `accepts_weights`: whether `PUT
/// /v1/routes/{name}/weights` changes traffic (a file config) or is
/// refused (Kubernetes, where the controller owns weights).
pub fn exposure_warning(admin: SocketAddr, accepts_weights: bool) -> Option<String> {
    if admin.ip().is_loopback() {
        return None;
    }
    let what = if accepts_weights {
        "anyone who can reach it can move traffic between cohorts (PUT /v1/routes/NAME/weights) and read /metrics"
    } else {
        "anyone who can reach it can read /metrics and /v1/observations"
    };
    Some(format!(
        "the admin API listens on {admin}, beyond loopback: {what}; bind it to 127.0.0.1 (admin: in the file, or --admin) unless a firewall or network policy limits who reaches it"
    ))
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_api_beyond_loopback_is_named_with_what_it_exposes() {
        for loopback in ["127.0.0.1:9090", "[::1]:9090", "127.0.0.2:9090"] {
            let addr = loopback.parse().expect("address");
            assert_eq!(exposure_warning(addr, true), None, "{loopback}");
        }
        let all = "0.0.0.0:9090".parse().expect("address");
        let writable = exposure_warning(all, true).expect("a warning");
        assert!(
            writable.starts_with("the admin API listens on 0.0.0.0:9090, beyond loopback: anyone who can reach it can move traffic"),
            "{writable}"
        );
        assert!(writable.contains("bind it to 127.0.0.1"), "{writable}");
        let read_only =
            exposure_warning("10.0.0.7:9090".parse().expect("address"), false).expect("a warning");
        assert!(
            read_only.contains("can read /metrics and /v1/observations"),
            "{read_only}"
        );
        assert!(!read_only.contains("move traffic"), "{read_only}");
    }
}
