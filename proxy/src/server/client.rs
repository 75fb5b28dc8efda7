//! The client side of one request, as the forwarder sees it: a request on
//! weir's own HTTP/1 connection (`downstream.rs`) or one of pingora's
//! HTTP/2 streams. One face for both, so routing, metering and failover
//! are written once.

use bytes::Bytes;
use http::StatusCode;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v1::common::is_expect_continue_req;

use super::downstream::{BodyFailed, Http1};
use super::framing::Head;
use super::headers;
use crate::route::COHORT_HEADER;

/// One request's client.
pub(super) enum Client<'a> {
    H1(&'a mut Http1),
    H2(&'a mut ServerSession),
}

impl Client<'_> {
    /// The request.
    pub(super) fn request(&self) -> &RequestHeader {
        match self {
            Client::H1(c) => c.request(),
            Client::H2(s) => s.req_header(),
        }
    }

    /// Whether the request has a body (asked before any of it is read).
    pub(super) fn has_body(&mut self) -> bool {
        match self {
            Client::H1(c) => !c.body_done(),
            Client::H2(s) => !s.is_body_empty(),
        }
    }

    /// Answers `Expect: 100-continue` where the client waits for it before
    /// its body (HTTP/1 does so itself when the body is first read).
    pub(super) async fn continue_if_expected(&mut self) -> Result<(), BodyFailed> {
        match self {
            Client::H1(_) => Ok(()),
            Client::H2(s) if is_expect_continue_req(s.req_header()) => s
                .write_continue_response()
                .await
                .map_err(|_| BodyFailed::Gone),
            Client::H2(_) => Ok(()),
        }
    }

    /// Appends the next piece of the request body to `to`; `Ok(false)` at
    /// its end.
    pub(super) async fn read_body(&mut self, to: &mut Vec<u8>) -> Result<bool, BodyFailed> {
        match self {
            Client::H1(c) => c.read_body(to).await,
            Client::H2(s) => match s.read_request_body().await {
                Ok(Some(chunk)) => {
                    to.extend_from_slice(&chunk);
                    Ok(true)
                }
                Ok(None) => Ok(false),
                Err(_) => Err(BodyFailed::Gone),
            },
        }
    }

    /// The connection will not carry another request after this one.
    pub(super) fn close_after(&mut self) {
        match self {
            Client::H1(c) => c.close_after(),
            Client::H2(s) => s.set_keepalive(None),
        }
    }

    /// Sends the response head made from `upstream`'s, naming `cohort`.
    /// HTTP/1 queues it to leave with the first body bytes (see
    /// [`Client::flush`]).
    pub(super) async fn write_head(
        &mut self,
        upstream: &Head,
        cohort: &str,
        rewritten: bool,
    ) -> Result<(), ()> {
        match self {
            Client::H1(c) => {
                c.queue_head(upstream, cohort, rewritten);
                Ok(())
            }
            Client::H2(s) => {
                let header = upstream.to_header().map_err(|_| ())?;
                let header = headers::downstream_response(Box::new(header), cohort, rewritten);
                s.write_response_header(header).await.map_err(|_| ())
            }
        }
    }

    /// Whether a response head is queued and not written yet.
    pub(super) fn has_queued(&self) -> bool {
        match self {
            Client::H1(c) => c.has_queued(),
            Client::H2(_) => false,
        }
    }

    /// Writes what is queued.
    pub(super) async fn flush(&mut self) -> Result<(), ()> {
        match self {
            Client::H1(c) => c.flush().await.map_err(|_| ()),
            Client::H2(_) => Ok(()),
        }
    }

    /// Writes `data` of the response body; with `end`, ends it.
    pub(super) async fn write_body(&mut self, data: &[u8], end: bool) -> Result<(), ()> {
        match self {
            Client::H1(c) => c.write_body(data, end).await.map_err(|_| ()),
            Client::H2(s) => s
                .write_response_body(Bytes::copy_from_slice(data), end)
                .await
                .map_err(|_| ()),
        }
    }

    /// Resolves when the client goes away: its connection closes (HTTP/1)
    /// or its stream is reset (HTTP/2).
    pub(super) async fn closed(&mut self) {
        match self {
            Client::H1(c) => c.closed().await,
            Client::H2(s) => {
                let _ = s.read_body_or_idle(true).await;
            }
        }
    }

    /// Answers with a short JSON error, naming the cohort that failed when
    /// one was chosen; returns whether the connection can take another
    /// request.
    pub(super) async fn respond(
        &mut self,
        status: StatusCode,
        message: &str,
        cohort: Option<&str>,
    ) -> bool {
        let body =
            serde_json::json!({ "error": { "message": message, "type": "weir_proxy_error" } })
                .to_string();
        match self {
            Client::H1(c) => c.respond(status, body.as_bytes(), cohort).await,
            Client::H2(s) => respond_h2(s, status, Bytes::from(body), cohort).await,
        }
    }

    /// Whether the connection can take the next request (HTTP/1: the
    /// response and the request body are complete and both sides keep it
    /// open; an HTTP/2 stream ends with its response).
    pub(super) fn reusable(&self) -> bool {
        match self {
            Client::H1(c) => c.reusable(),
            Client::H2(_) => true,
        }
    }
}

async fn respond_h2(
    session: &mut ServerSession,
    status: StatusCode,
    body: Bytes,
    cohort: Option<&str>,
) -> bool {
    let Ok(mut header) = ResponseHeader::build_no_case(status, Some(3)) else {
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
