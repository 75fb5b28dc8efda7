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

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

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
                    match table.get(&name) {
                        Some(route) => {
                            json(StatusCode::OK, &serde_json::json!({ "route": &**route }))
                        }
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

/// Serves the admin API on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, state: AdminState, mut shutdown: watch::Receiver<bool>) {
    let state = Arc::new(state);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
