//! The read buffer of one HTTP/1 connection, either side: bytes read and
//! not yet consumed, parsed in place.
//!
//! It starts empty: the first read takes only what came (see
//! [`ReadBuffer::poll_extend`]); when more must be read it takes
//! [`INITIAL`], enough for a request or response head and a burst of SSE
//! events, and doubles (up to the caller's limit) only when a read fills
//! it: an open stream holds a few KiB, and a bulk body still moves in large
//! reads.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use pingora::protocols::Stream;
use tokio::io::{AsyncRead, AsyncReadExt as _, ReadBuf};

/// The buffer's first size.
pub(super) const INITIAL: usize = 4 * 1024;
/// The stack buffer of a released buffer's first read.
const SCRATCH: usize = 2 * 1024;

/// [`ReadBuffer::fill`] read nothing: the buffer is at its limit with
/// nothing consumed, so the unfinished head or line in it is too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Full;

/// `buf[start..end]` is read and not consumed.
#[derive(Debug, Default)]
pub(super) struct ReadBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The last read filled the buffer: the next grows it.
    filled: bool,
}

impl ReadBuffer {
    /// The bytes read and not consumed.
    pub(super) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Whether every byte read has been consumed.
    pub(super) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks the first `n` bytes of [`ReadBuffer::data`] consumed.
    pub(super) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start += n;
    }

    /// Appends bytes read elsewhere.
    fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.truncate(self.end);
        self.buf.extend_from_slice(bytes);
        self.end = self.buf.len();
    }

    /// Gives the memory back when nothing is left in it: a connection
    /// waiting on a long response, or for its next request, holds none.
    pub(super) fn release(&mut self) {
        if self.is_empty() {
            *self = ReadBuffer::default();
        }
    }

    /// Reads more from `stream`, growing the buffer up to `limit` bytes;
    /// returns how many came (0: the connection ended; a reset counts as
    /// an end).
    ///
    /// # Errors
    /// [`Full`] when the buffer is at `limit` and nothing was consumed.
    pub(super) async fn fill(&mut self, stream: &mut Stream, limit: usize) -> Result<usize, Full> {
        if self.buf.capacity() == 0 {
            // The first read into a released buffer: see `poll_extend`.
            return Ok(poll_fn(|cx| self.poll_extend(cx, stream)).await);
        }
        self.compact();
        let full = self.end == self.buf.len();
        if full || (self.filled && self.buf.len() < limit) {
            let grown = (self.buf.len() * 2).clamp(INITIAL, limit.max(INITIAL));
            if grown == self.buf.len() {
                return Err(Full);
            }
            self.buf.resize(grown, 0);
        }
        // A reset or other error ends the connection like a close.
        let n = stream.read(&mut self.buf[self.end..]).await.unwrap_or(0);
        self.filled = n > 0 && self.end + n == self.buf.len();
        self.end += n;
        Ok(n)
    }

    /// Polls one read from `stream` into a buffer on the stack, held only
    /// for this poll, and appends what came; ready with how many bytes
    /// came (0: the connection ended; a reset counts as an end). Nothing
    /// waits on a buffer meanwhile: a connection waiting for its next
    /// request, or watching for its client to leave, holds none, and a
    /// small request takes an allocation of its own size.
    pub(super) fn poll_extend(&mut self, cx: &mut Context<'_>, stream: &mut Stream) -> Poll<usize> {
        let mut scratch = [0u8; SCRATCH];
        let mut read = ReadBuf::new(&mut scratch);
        match Pin::new(stream).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                self.extend(read.filled());
                Poll::Ready(read.filled().len())
            }
            Poll::Ready(Err(_)) => Poll::Ready(0),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Moves what is left to the front when the buffer is full, and starts
    /// over when it is empty.
    fn compact(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumed_bytes_leave_and_appended_ones_follow_the_rest() {
        let mut b = ReadBuffer::default();
        b.extend(b"hello world");
        b.consume(6);
        assert_eq!(b.data(), b"world");
        b.extend(b"!");
        assert_eq!(b.data(), b"world!");
        b.release();
        assert_eq!(b.data(), b"world!", "kept while unconsumed");
        b.consume(6);
        assert!(b.is_empty());
        b.release();
        assert_eq!(b.buf.capacity(), 0, "released");
    }
}
