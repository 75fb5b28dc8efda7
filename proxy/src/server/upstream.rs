//! One request's exchange with an upstream over HTTP/1: the request
//! written, the response head read, the body decoded in place.
//!
//! The connection (plain TCP or TLS, pooled or kept) comes from pingora's
//! `TransportConnector`; the HTTP/1 client on it is weir's own
//! ([`super::framing`] says why). Its read buffer starts at
//! [`INITIAL_BUFFER`], enough for a response head and a burst of SSE
//! events, and doubles (up to [`MAX_BUFFER`]) only when a read fills it, so
//! an open stream holds a few KiB and a bulk body still moves in large
//! reads.
//!
//! The request head and the body read ahead of it leave in one write.

use std::io::Write as _;
use std::time::Duration;

use http::Method;
use pingora::http::ResponseHeader;
use pingora::protocols::Stream;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::framing::{self, Body, Decoded, Framing, Malformed};

/// The read buffer's first size.
const INITIAL_BUFFER: usize = 4 * 1024;
/// The most the read buffer grows to (a response head must fit).
const MAX_BUFFER: usize = framing::MAX_HEAD + 1024;

/// How an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum UpstreamError {
    /// No response head, or no body bytes, within the read timeout.
    #[error("the upstream did not answer in time")]
    Timeout,
    /// The connection ended before any byte of a response came: on a
    /// reused connection, the upstream had closed it before the request.
    #[error("the upstream closed the connection before answering")]
    ClosedEarly,
    /// The connection ended in the middle of a response.
    #[error("the upstream closed the connection mid-response")]
    Closed,
    /// The response cannot be read.
    #[error("{0}")]
    Malformed(#[from] Malformed),
    /// Writing the request failed.
    #[error("writing to the upstream failed: {0}")]
    Write(std::io::ErrorKind),
}

/// An HTTP/1 exchange on one upstream connection.
pub(super) struct Upstream {
    stream: Stream,
    /// Read buffer: `buf[start..end]` is read and not yet consumed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes of `buf[start..]` behind the body slice last handed out,
    /// consumed when the next one is asked for.
    pending: usize,
    /// The last read filled the buffer: the next grows it.
    filled: bool,
    /// What is written next (the request head and the body read ahead).
    out: Vec<u8>,
    /// The request's method (a response to HEAD has no body).
    method: Method,
    /// The request body goes chunked.
    chunked: bool,
    /// Any byte of the response has arrived.
    answered: bool,
    body: Body,
    keep_alive: bool,
    /// For the response head here, and between body reads as the caller
    /// applies it ([`Upstream::read_timeout`]).
    read_timeout: Duration,
}

impl Upstream {
    /// An exchange on `stream`, waiting at most `read_timeout` for the
    /// response head.
    pub(super) fn new(stream: Stream, read_timeout: Duration) -> Upstream {
        Upstream {
            stream,
            buf: Vec::new(),
            start: 0,
            end: 0,
            pending: 0,
            filled: false,
            out: Vec::new(),
            method: Method::GET,
            chunked: false,
            answered: false,
            body: Body::new(Framing::Empty),
            keep_alive: false,
            read_timeout,
        }
    }

    /// Queues the head of a request of `method` that `write` puts on the
    /// wire (`headers::upstream_request`); it returns whether the body goes
    /// chunked.
    pub(super) fn queue_head<E>(
        &mut self,
        method: &Method,
        write: impl FnOnce(&mut Vec<u8>) -> Result<bool, E>,
    ) -> Result<(), E> {
        self.out.clear();
        self.method = method.clone();
        self.chunked = write(&mut self.out)?;
        Ok(())
    }

    /// Queues part of the request body, framed as the head says.
    pub(super) fn queue_body(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.chunked {
            // Writing to a Vec cannot fail.
            let _ = write!(self.out, "{:x}\r\n", data.len());
            self.out.extend_from_slice(data);
            self.out.extend_from_slice(b"\r\n");
        } else {
            self.out.extend_from_slice(data);
        }
    }

    /// Queues the end of a chunked request body.
    pub(super) fn queue_end(&mut self) {
        if self.chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
    }

    /// Writes what is queued.
    pub(super) async fn flush(&mut self) -> Result<(), UpstreamError> {
        let written = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        }
        .await;
        self.out.clear();
        written.map_err(|e| UpstreamError::Write(e.kind()))
    }

    /// Reads the response head (interim 1xx responses skipped), within the
    /// read timeout.
    pub(super) async fn read_head(&mut self) -> Result<Box<ResponseHeader>, UpstreamError> {
        tokio::time::timeout(self.read_timeout, self.read_head_now())
            .await
            .map_err(|_| UpstreamError::Timeout)?
    }

    /// The longest the upstream may stay silent.
    pub(super) fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    async fn read_head_now(&mut self) -> Result<Box<ResponseHeader>, UpstreamError> {
        loop {
            if self.end > self.start
                && let Some(head) =
                    framing::parse_head(&self.buf[self.start..self.end], &self.method)?
            {
                self.start += head.len;
                if head.is_interim() {
                    continue;
                }
                self.body = Body::new(head.framing);
                self.keep_alive = head.keep_alive;
                return Ok(Box::new(head.header));
            }
            if self.fill().await? == 0 {
                return Err(if self.answered {
                    UpstreamError::Closed
                } else {
                    UpstreamError::ClosedEarly
                });
            }
        }
    }

    /// The next piece of the response body, `None` at its end. Cancel-safe:
    /// dropped while waiting for bytes, nothing is lost.
    pub(super) async fn read_body(&mut self) -> Result<Option<&[u8]>, UpstreamError> {
        self.start += std::mem::take(&mut self.pending);
        let data = loop {
            let (used, decoded) = self.body.decode(&self.buf[self.start..self.end])?;
            match decoded {
                Decoded::Data(range) => {
                    self.pending = used;
                    break self.start + range.start..self.start + range.end;
                }
                Decoded::End => {
                    self.start += used;
                    return Ok(None);
                }
                Decoded::More => {
                    self.start += used;
                    if self.fill().await? == 0 {
                        return if self.body.on_close() {
                            Ok(None)
                        } else {
                            Err(UpstreamError::Closed)
                        };
                    }
                }
            }
        };
        Ok(Some(&self.buf[data]))
    }

    /// The connection, when the response was read to its end, the upstream
    /// keeps it open, and nothing unasked-for followed the response.
    pub(super) fn into_reusable(self) -> Option<Stream> {
        let clean = self.body.is_done() && self.start + self.pending == self.end;
        (self.keep_alive && clean).then_some(self.stream)
    }

    /// Reads more into the buffer; returns how many bytes came (0: the
    /// connection ended; a reset counts as an end).
    async fn fill(&mut self) -> Result<usize, UpstreamError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let full = self.end == self.buf.len();
        if full || (self.filled && self.buf.len() < MAX_BUFFER) {
            let grown = (self.buf.len() * 2).clamp(INITIAL_BUFFER, MAX_BUFFER);
            if grown == self.buf.len() {
                // Full at the largest size with one unfinished head or
                // line: the parsers refuse those well before this.
                return Err(UpstreamError::Malformed(Malformed::HeadTooLarge));
            }
            self.buf.resize(grown, 0);
        }
        let read = self.stream.read(&mut self.buf[self.end..]).await;
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(UpstreamError::Timeout);
            }
            // A reset or other error ends the connection like a close.
            Err(_) => 0,
        };
        self.filled = n > 0 && self.end + n == self.buf.len();
        self.end += n;
        self.answered |= n > 0;
        Ok(n)
    }
}
