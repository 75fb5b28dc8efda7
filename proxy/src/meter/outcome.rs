//! A request's [`Outcome`], from how it ended, its status and what its
//! stream said: the one decision of the meter worth a table of its own.

use weir_core::Outcome;

/// How a request ended, as the proxy saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum End {
    /// The upstream finished the response and it was delivered.
    Complete,
    /// The client closed the connection first.
    ClientAbort,
    /// The upstream closed or reset the connection mid-response (or before
    /// answering).
    UpstreamReset,
    /// The upstream was silent for longer than the read timeout.
    Timeout,
    /// No connection to the upstream could be made (refused, unreachable,
    /// connect timeout); nothing was sent.
    ConnectError,
}

/// What the stream said about how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamEnd {
    /// `data: [DONE]` arrived.
    pub done: bool,
    /// Some choice had a non-null `finish_reason`.
    pub finished: bool,
    /// An error event arrived (`data: {"error": ...}` or `event: error`).
    pub error_event: bool,
    /// Some choice finished with `finish_reason: "length"`.
    pub length: bool,
}

/// The outcome of a request from how it ended, the upstream's status (if a
/// response header arrived) and, for SSE responses, what the stream said.
///
/// In order: a connect error is a connect error; an upstream status of 429,
/// 5xx or 4xx decides; then an error event makes a `stream_error`; an SSE
/// stream that reached `[DONE]` or a `finish_reason` is `ok` however the
/// connection closed afterwards; otherwise timeout, client abort, or an
/// upstream reset (`server_error` before a response, `stream_error` after)
/// decide; a completed SSE stream without `[DONE]`/`finish_reason` is a
/// `stream_error`.
pub fn classify(end: End, status: Option<u16>, sse: Option<StreamEnd>) -> Outcome {
    if end == End::ConnectError {
        return Outcome::ConnectError;
    }
    match status {
        Some(429) => return Outcome::RateLimited,
        Some(s) if s >= 500 => return Outcome::ServerError,
        Some(s) if s >= 400 => return Outcome::ClientError,
        _ => {}
    }
    if let Some(stream) = sse {
        if stream.error_event {
            return Outcome::StreamError;
        }
        if stream.done || stream.finished {
            return Outcome::Ok;
        }
    }
    match (end, status) {
        (End::Timeout, _) => Outcome::Timeout,
        (End::ClientAbort, _) => Outcome::ClientAbort,
        (End::UpstreamReset | End::Complete, None) => Outcome::ServerError,
        (End::UpstreamReset, Some(_)) => Outcome::StreamError,
        (End::Complete, Some(_)) if sse.is_some() => Outcome::StreamError,
        (End::Complete, Some(_)) => Outcome::Ok,
        (End::ConnectError, _) => Outcome::ConnectError,
    }
}
