//! One HTTP/1 client connection, weir's own: its requests read one after
//! another (pipelined ones kept), each body decoded in place, each response
//! written in as few writes as it can.
//!
//! The connection (plain TCP or TLS) comes from weir's accept loop
//! (`server::accept`); `request.rs` says why the HTTP/1 on it is weir's. What a request costs
//! here: one read for its head (and, usually, its body), and for a small
//! response one write with head and body together. While a response
//! streams, the connection holds no read buffer and no request head bytes
//! beyond the head's own copy: a stream's memory is its upstream's.

use std::future::poll_fn;
use std::io::Write as _;
use std::task::Poll;
use std::time::Duration;

use http::{Method, StatusCode, Version};
use pingora::http::RequestHeader;
use pingora::protocols::Stream;
use tokio::io::AsyncWriteExt as _;

use super::buffer::{Full, ReadBuffer};
use super::framing::{Body, Decoded, Framing, Head, Malformed};
use super::headers::{self, BodyOut};
use super::request::{self, BadRequest};

/// The read buffer's limit: a request head must fit.
const MAX_BUFFER: usize = request::MAX_HEAD + 1024;
/// A request head shorter than this is parsed after every read.
const EAGER_PARSE: usize = 4 * 1024;
/// Most bytes of pipelined requests taken in while a response streams;
/// past it the connection is not read until the response ends.
const MAX_PIPELINED: usize = 64 * 1024;

/// What reading a request head gave.
#[derive(Debug)]
pub(super) enum Read {
    /// A request, ready to be served.
    Request,
    /// The client closed the connection (or reset it) between requests.
    Closed,
    /// A head that cannot be served: answered with its status, then the
    /// connection closes.
    Bad(BadRequest),
}

/// Why a request body could not be read.
#[derive(Debug)]
pub(super) enum BodyFailed {
    /// Its framing is broken (a bad chunk size or chunk end).
    Malformed(Malformed),
    /// The client went away, or sent nothing within the read timeout.
    Gone,
}

/// An HTTP/1 client connection.
pub(super) struct Http1 {
    stream: Stream,
    input: ReadBuffer,
    /// The request being served (`None` before the first).
    request: Option<RequestHeader>,
    body: Body,
    /// `100 Continue` is still owed before the body is read.
    continue_owed: bool,
    /// The connection may carry another request after this one.
    keep_alive: bool,
    /// How the response body is framed.
    body_out: BodyOut,
    /// The response is complete.
    answered: bool,
    /// What is written next.
    out: Vec<u8>,
    /// Longest wait for the next bytes of a request body.
    read_timeout: Duration,
}

impl Http1 {
    /// A connection on `stream`, waiting at most `read_timeout` for each
    /// next piece of a request body (the head has its own deadline, the
    /// caller's).
    pub(super) fn new(stream: Stream, read_timeout: Duration) -> Http1 {
        Http1 {
            stream,
            input: ReadBuffer::default(),
            request: None,
            body: Body::new(Framing::Empty),
            continue_owed: false,
            keep_alive: false,
            body_out: BodyOut::None,
            answered: false,
            out: Vec::new(),
            read_timeout,
        }
    }

    /// Reads the next request head (one that arrived with the last request
    /// first). Cancel-safe: bytes read stay for the next call.
    pub(super) async fn read_request(&mut self) -> Read {
        self.request = None;
        self.answered = false;
        self.out.clear();
        // Bytes at the start of the input known not to end a head. A head
        // is parsed after each read while it is short (so bytes that are
        // not HTTP are refused at once); past that, only once a blank line
        // came, not after each read, which a client sending a large head a
        // byte at a time would make quadratic.
        let mut scanned = 0;
        loop {
            let data = self.input.data();
            if (!data.is_empty() && data.len() <= EAGER_PARSE) || ends_head(data, scanned) {
                match request::parse(self.input.data()) {
                    Ok(Some(parsed)) => {
                        self.input.consume(parsed.len);
                        self.body = Body::new(parsed.framing);
                        self.keep_alive = parsed.keep_alive;
                        self.continue_owed = parsed.expects_continue;
                        self.request = Some(parsed.header);
                        return Read::Request;
                    }
                    Ok(None) => {}
                    Err(bad) => {
                        self.keep_alive = false;
                        return Read::Bad(bad);
                    }
                }
            }
            scanned = self.input.data().len();
            match self.input.fill(&mut self.stream, MAX_BUFFER).await {
                Ok(0) => return Read::Closed,
                Ok(_) => {}
                Err(Full) => {
                    self.keep_alive = false;
                    return Read::Bad(BadRequest::TooLarge);
                }
            }
        }
    }

    /// The request being served.
    ///
    /// # Panics
    /// Before [`Http1::read_request`] gave one.
    pub(super) fn request(&self) -> &RequestHeader {
        self.request
            .as_ref()
            .expect("a request is read before it is served")
    }

    /// Whether the request has no body (left to read).
    pub(super) fn body_done(&self) -> bool {
        self.body.is_done()
    }

    /// Appends the next piece of the request body to `to`; `Ok(false)` at
    /// its end. Answers `Expect: 100-continue` first: the client waits for
    /// that before it sends the body.
    pub(super) async fn read_body(&mut self, to: &mut Vec<u8>) -> Result<bool, BodyFailed> {
        if std::mem::take(&mut self.continue_owed) {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(|_| BodyFailed::Gone)?;
            self.stream.flush().await.map_err(|_| BodyFailed::Gone)?;
        }
        loop {
            let (used, decoded) = self
                .body
                .decode(self.input.data())
                .map_err(BodyFailed::Malformed)?;
            match decoded {
                Decoded::Data(range) => {
                    to.extend_from_slice(&self.input.data()[range]);
                    self.input.consume(used);
                    return Ok(true);
                }
                Decoded::End => {
                    self.input.consume(used);
                    return Ok(false);
                }
                Decoded::More => {
                    self.input.consume(used);
                    let fill = self.input.fill(&mut self.stream, MAX_BUFFER);
                    match tokio::time::timeout(self.read_timeout, fill).await {
                        Ok(Ok(n)) if n > 0 => {}
                        // A chunk-size or trailer line longer than the
                        // decoder allows is refused by it before this.
                        Ok(Err(Full)) => {
                            return Err(BodyFailed::Malformed(Malformed::LineTooLong));
                        }
                        // Closed, reset, or silent past the read timeout.
                        _ => return Err(BodyFailed::Gone),
                    }
                }
            }
        }
    }

    /// The connection will close after this response.
    pub(super) fn close_after(&mut self) {
        self.keep_alive = false;
    }

    /// Queues the response head made from `upstream`'s (see
    /// [`headers::downstream_head`]); it leaves with the first body bytes,
    /// or at [`Http1::flush`].
    pub(super) fn queue_head(&mut self, upstream: &Head, cohort: &str, rewritten: bool) {
        let request = self
            .request
            .as_ref()
            .expect("a request is read before it is answered");
        let (body_out, keep_alive) = headers::downstream_head(
            upstream,
            Some(cohort),
            &request.method,
            request.version,
            self.keep_alive && self.body.is_done(),
            rewritten,
            &mut self.out,
        );
        self.body_out = body_out;
        self.keep_alive = keep_alive;
        // The request is read: a streaming response holds no read buffer.
        self.input.release();
    }

    /// Whether something is queued and not written.
    pub(super) fn has_queued(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes `data` of the response body, framed as the head says, with
    /// whatever is queued before it; with `end`, the body's end too.
    pub(super) async fn write_body(&mut self, data: &[u8], end: bool) -> std::io::Result<()> {
        match self.body_out {
            BodyOut::Chunked => {
                if !data.is_empty() {
                    // Writing to a Vec cannot fail.
                    let _ = write!(self.out, "{:x}\r\n", data.len());
                    self.out.extend_from_slice(data);
                    self.out.extend_from_slice(b"\r\n");
                }
                if end {
                    self.out.extend_from_slice(b"0\r\n\r\n");
                }
            }
            BodyOut::Plain => self.out.extend_from_slice(data),
            BodyOut::None => {}
        }
        self.flush().await?;
        self.answered = end;
        Ok(())
    }

    /// Writes what is queued.
    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        }
        .await;
        self.out.clear();
        written
    }

    /// Answers the request with `body`, a JSON error (naming the cohort
    /// that failed when one was chosen); returns whether the connection can
    /// take another request.
    pub(super) async fn respond(
        &mut self,
        status: StatusCode,
        body: &[u8],
        cohort: Option<&str>,
    ) -> bool {
        let length = body.len().to_string();
        let head = Head::own(
            status,
            &[
                ("content-type", b"application/json"),
                ("content-length", length.as_bytes()),
            ],
        );
        self.out.clear();
        // A head that could not be read is answered as a GET's would be,
        // and closes the connection.
        let (method, version) = self
            .request
            .as_ref()
            .map_or((Method::GET, Version::HTTP_11), |r| {
                (r.method.clone(), r.version)
            });
        let (body_out, keep_alive) = headers::downstream_head(
            &head,
            cohort,
            &method,
            version,
            self.keep_alive && self.body.is_done() && self.request.is_some(),
            false,
            &mut self.out,
        );
        self.body_out = body_out;
        self.keep_alive = keep_alive;
        self.write_body(body, true).await.is_ok() && self.reusable()
    }

    /// Resolves when the client closes the connection (or resets it) while
    /// its response streams. Bytes it sends meanwhile (its next, pipelined
    /// request) are kept, up to [`MAX_PIPELINED`]; past that the
    /// connection is no longer read, and a close goes unseen until the
    /// next write fails. Cancel-safe.
    pub(super) async fn closed(&mut self) {
        let Http1 { stream, input, .. } = self;
        poll_fn(|cx| {
            // Read on until the socket has nothing: the pending read is
            // what registers for the next wake-up.
            while input.data().len() < MAX_PIPELINED {
                match input.poll_extend(cx, stream) {
                    Poll::Ready(0) => return Poll::Ready(()),
                    Poll::Ready(_) => {}
                    Poll::Pending => return Poll::Pending,
                }
            }
            Poll::Pending
        })
        .await;
    }

    /// Whether the connection can take the next request: the response and
    /// the request body are complete and both sides keep it open.
    pub(super) fn reusable(&self) -> bool {
        self.answered && self.keep_alive && self.body.is_done()
    }
}

/// Whether `input` may hold a complete head: a blank line (CRLF CRLF, or
/// LF LF as lenient parsers accept) that ends past its first `scanned`
/// bytes, which were looked at before. Only ever a reason to parse; the
/// parser decides.
fn ends_head(input: &[u8], scanned: usize) -> bool {
    // The blank line may have started in the bytes seen before.
    let from = scanned.saturating_sub(3);
    let mut rest = &input[from.min(input.len())..];
    while let Some(at) = memchr::memchr(b'\n', rest) {
        let after = &rest[at + 1..];
        if after.starts_with(b"\n") || after.starts_with(b"\r\n") {
            return true;
        }
        rest = after;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_end_is_found_wherever_the_reads_split_it() {
        let head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        for seen in 0..head.len() {
            assert!(ends_head(head, seen), "after {seen} bytes seen");
        }
        assert!(ends_head(b"GET / HTTP/1.0\n\n", 15));
        assert!(!ends_head(b"GET / HTTP/1.1\r\nhost: a\r\n", 0));
        assert!(
            !ends_head(b"GET / HTTP/1.1\r\nhost: a\r\n\r", 0),
            "half a blank line"
        );
    }
}
