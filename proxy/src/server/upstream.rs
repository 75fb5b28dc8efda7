//! One request's exchange with an upstream over HTTP/1: the request
//! written, the response head read, the body decoded in place.
//!
//! The connection (plain TCP or TLS, pooled or kept) comes from pingora's
//! `TransportConnector`; the HTTP/1 client on it is weir's own
//! ([`super::framing`] says why), reading into a [`ReadBuffer`] of a few
//! KiB that grows only for bulk bodies.
//!
//! The request head and the body read ahead of it leave in one write.

use std::io::Write as _;

use http::Method;
use pingora::protocols::Stream;
use tokio::io::AsyncWriteExt as _;

use super::buffer::{Full, ReadBuffer};
use super::framing::{self, Body, Decoded, Framing, Head, Malformed};

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
    #[error("the upstream's response is malformed: {0}")]
    Malformed(#[from] Malformed),
    /// Writing the request failed.
    #[error("writing to the upstream failed: {0}")]
    Write(std::io::ErrorKind),
}

/// An HTTP/1 exchange on one upstream connection.
pub(super) struct Upstream {
    stream: Stream,
    input: ReadBuffer,
    /// Bytes of the input behind the body slice last handed out, consumed
    /// when the next one is asked for.
    pending: usize,
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
}

impl Upstream {
    /// An exchange on `stream`. Waits have no deadline of their own: the
    /// caller's applies (`deadline.rs`).
    pub(super) fn new(stream: Stream) -> Upstream {
        Upstream {
            stream,
            input: ReadBuffer::default(),
            pending: 0,
            out: Vec::new(),
            method: Method::GET,
            chunked: false,
            answered: false,
            body: Body::new(Framing::Empty),
            keep_alive: false,
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

    /// Reads the response head (interim 1xx responses skipped).
    /// Cancel-safe: bytes read stay for the next call.
    pub(super) async fn read_head(&mut self) -> Result<Head, UpstreamError> {
        // The request is sent: its bytes are not held while the response
        // streams.
        self.out = Vec::new();
        loop {
            if !self.input.is_empty()
                && let Some(head) = framing::parse_head(self.input.data(), &self.method)?
            {
                self.input.consume(head.len);
                if head.is_interim() {
                    continue;
                }
                self.body = Body::new(head.framing);
                self.keep_alive = head.keep_alive;
                return Ok(head);
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
        self.input.consume(std::mem::take(&mut self.pending));
        let data = loop {
            let (used, decoded) = self.body.decode(self.input.data())?;
            match decoded {
                Decoded::Data(range) => {
                    self.pending = used;
                    break range;
                }
                Decoded::End => {
                    self.input.consume(used);
                    return Ok(None);
                }
                Decoded::More => {
                    self.input.consume(used);
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
        Ok(Some(&self.input.data()[data]))
    }

    /// The connection, when the response was read to its end, the upstream
    /// keeps it open, and nothing unasked-for followed the response.
    pub(super) fn into_reusable(self) -> Option<Stream> {
        let clean = self.body.is_done() && self.input.data().len() == self.pending;
        (self.keep_alive && clean).then_some(self.stream)
    }

    /// Reads more into the buffer; returns how many bytes came (0: the
    /// connection ended).
    async fn fill(&mut self) -> Result<usize, UpstreamError> {
        // Full at the largest size with one unfinished head or line: the
        // parsers refuse those well before this.
        let n = self
            .input
            .fill(&mut self.stream, MAX_BUFFER)
            .await
            .map_err(|Full| UpstreamError::Malformed(Malformed::HeadTooLarge))?;
        self.answered |= n > 0;
        Ok(n)
    }
}
