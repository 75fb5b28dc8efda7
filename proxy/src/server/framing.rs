//! An upstream's HTTP/1 response, pure: its head parsed, its body's framing
//! decided (RFC 9112 §6.3), and the body decoded from whatever bytes have
//! arrived, without copying them.
//!
//! This is weir's own rather than pingora's client session because of the
//! shape of inference traffic: pingora's session allocates a 64 KiB body
//! buffer for every response (its size is a field of a private member), and
//! a proxy holding thousands of open streams pays that per stream, while an
//! SSE event is a few hundred bytes. Here the bytes stay in the connection's
//! read buffer (`upstream.rs`, small and grown only for bulk bodies) and the
//! decoder hands out ranges of it.
//!
//! The upstream is trusted no more than a client: a head or a chunk size
//! that does not parse, a `Content-Length` that is not one number, or an
//! endless size or trailer line ends the response as malformed, and a
//! response with both `Transfer-Encoding` and `Content-Length` (framed by
//! the former, as the RFC says) never leaves its connection for reuse.
//!
//! [`Body`] decodes a client's request body too (`downstream.rs`; its head
//! is `request.rs`'s): the chunked rules are the same both ways.

use std::ops::Range;

use bytes::Bytes;

use http::header::{HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use pingora::http::ResponseHeader;

use super::headers;

/// Most fields a response head may carry.
const MAX_HEADERS: usize = 128;
/// Longest response head.
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line (extensions included) or trailer field line.
const MAX_LINE: usize = 4 * 1024;

/// What makes an upstream's response unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The head is not an HTTP/1 response head.
    #[error("the head is not valid HTTP/1")]
    Head,
    /// The head did not end within [`MAX_HEAD`] bytes or has more than
    /// [`MAX_HEADERS`] fields.
    #[error("the head is longer than 64 KiB or has more than 128 fields")]
    HeadTooLarge,
    /// `Content-Length` is not one non-negative number.
    #[error("Content-Length is not one number")]
    Length,
    /// A chunk-size line is not a hex size (with optional extensions).
    #[error("a chunk size is invalid")]
    ChunkSize,
    /// A chunk's data is not followed by CRLF.
    #[error("a chunk does not end with CRLF")]
    ChunkEnd,
    /// A chunk-size or trailer line is longer than 4 KiB.
    #[error("a chunk-size or trailer line is longer than 4 KiB")]
    LineTooLong,
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a response to HEAD; 1xx, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A parsed response head. Its fields stay as the upstream sent them, as
/// ranges of one copy of the head's bytes: an HTTP/1 client gets them
/// written back as they are (`headers::downstream_head`), and only an
/// HTTP/2 client's response is built into a header map
/// ([`Head::to_header`]). Building that map for every response (an
/// allocation and a hash per field) was a fifth of a small request's cost.
#[derive(Debug)]
pub struct Head {
    raw: Bytes,
    /// (name, value) ranges of `raw`, in order.
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// The reason phrase's range of `raw` (empty when none came).
    reason: Range<usize>,
    /// The status.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The head's length in the input, blank line included.
    pub len: usize,
    /// How its body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request once the body is
    /// read.
    pub keep_alive: bool,
}

impl Head {
    /// A head of weir's own (an error it answers with), of `fields`.
    pub fn own(status: StatusCode, fields: &[(&str, &[u8])]) -> Head {
        let mut raw = Vec::new();
        let mut ranges = Vec::with_capacity(fields.len());
        for (name, value) in fields {
            let name_at = raw.len();
            raw.extend_from_slice(name.as_bytes());
            let value_at = raw.len();
            raw.extend_from_slice(value);
            ranges.push((name_at..value_at, value_at..raw.len()));
        }
        Head {
            raw: Bytes::from(raw),
            fields: ranges,
            reason: 0..0,
            status,
            version: Version::HTTP_11,
            len: 0,
            framing: Framing::Empty,
            keep_alive: true,
        }
    }

    /// An interim response (1xx other than 101): the real one follows.
    pub fn is_interim(&self) -> bool {
        self.status.is_informational() && self.status != StatusCode::SWITCHING_PROTOCOLS
    }

    /// The fields, (name, value), in order; names as sent.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|(name, value)| (&self.raw[name.clone()], &self.raw[value.clone()]))
    }

    /// The values of the fields named `name` (lowercase ASCII), in order.
    pub fn values<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| self.raw[n.clone()].eq_ignore_ascii_case(name))
            .map(|(_, value)| &self.raw[value.clone()])
    }

    /// The first value of the field `name` (lowercase ASCII).
    pub fn value<'a>(&'a self, name: &'a [u8]) -> Option<&'a [u8]> {
        self.values(name).next()
    }

    /// The reason phrase: the upstream's, or the status's own when it sent
    /// none.
    pub fn reason(&self) -> &[u8] {
        if self.reason.is_empty() {
            self.status
                .canonical_reason()
                .unwrap_or_default()
                .as_bytes()
        } else {
            &self.raw[self.reason.clone()]
        }
    }

    /// The head as pingora's response header (field names lowercase), for
    /// an HTTP/2 client; values are slices of the head's bytes.
    ///
    /// # Errors
    /// [`Malformed::Head`] for a field `http` refuses.
    pub fn to_header(&self) -> Result<ResponseHeader, Malformed> {
        let mut header = ResponseHeader::build_no_case(self.status, Some(self.fields.len()))
            .map_err(|_| Malformed::Head)?;
        header.set_version(self.version);
        for (name, value) in &self.fields {
            let name =
                HeaderName::from_bytes(&self.raw[name.clone()]).map_err(|_| Malformed::Head)?;
            let value = HeaderValue::from_maybe_shared(self.raw.slice(value.clone()))
                .map_err(|_| Malformed::Head)?;
            header
                .append_header(name, value)
                .map_err(|_| Malformed::Head)?;
        }
        Ok(header)
    }
}

/// Parses the response head at the start of `input`, for a request of
/// `method`. `Ok(None)`: the head is not complete yet.
///
/// # Errors
/// [`Malformed`] when the head does not parse, is too large, or its
/// framing fields are invalid.
pub fn parse_head(input: &[u8], method: &Method) -> Result<Option<Head>, Malformed> {
    let mut parsed = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut parsed);
    let len = match response.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
            return Err(Malformed::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Malformed::HeadTooLarge),
        Err(_) => return Err(Malformed::Head),
    };
    if len > MAX_HEAD {
        return Err(Malformed::HeadTooLarge);
    }
    let code = response.code.ok_or(Malformed::Head)?;
    let status = StatusCode::from_u16(code).map_err(|_| Malformed::Head)?;
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // httparse's slices point into `input`; the copy below has the same
    // offsets. (httparse has checked the names are tokens and the values
    // hold no CR, LF or other control bytes.)
    let base = input.as_ptr() as usize;
    let at = |part: &[u8]| {
        if part.is_empty() {
            return 0..0;
        }
        let start = part.as_ptr() as usize - base;
        start..start + part.len()
    };
    let reason = response.reason.map_or(0..0, |r| at(r.as_bytes()));
    let fields = response
        .headers
        .iter()
        .map(|f| (at(f.name.as_bytes()), at(f.value)))
        .collect();
    let mut head = Head {
        raw: Bytes::copy_from_slice(&input[..len]),
        fields,
        reason,
        status,
        version,
        len,
        framing: Framing::Empty,
        keep_alive: false,
    };
    let (framing, definite) = framing(&head, method)?;
    // After a 101 the connection speaks another protocol: never reused
    // (weir sends no `Upgrade`, so only a misbehaving upstream sends one).
    head.keep_alive = definite
        && framing != Framing::UntilClose
        && status != StatusCode::SWITCHING_PROTOCOLS
        && keeps_alive(head.values(b"connection"), version);
    head.framing = framing;
    Ok(Some(head))
}

/// The body's framing (RFC 9112 §6.3), and whether it is unambiguous
/// (false when `Transfer-Encoding` and `Content-Length` both came).
fn framing(head: &Head, method: &Method) -> Result<(Framing, bool), Malformed> {
    if !headers::has_body(method, head.status) {
        return Ok((Framing::Empty, true));
    }
    if head.value(b"transfer-encoding").is_some() {
        let definite = head.value(b"content-length").is_none() && head.version == Version::HTTP_11;
        let framing = if headers::is_chunked(head.values(b"transfer-encoding")) {
            Framing::Chunked
        } else {
            Framing::UntilClose
        };
        return Ok((framing, definite));
    }
    let length = content_length(head.values(b"content-length"))?;
    Ok((length.map_or(Framing::UntilClose, Framing::Length), true))
}

/// The `Content-Length` that `values` (every value of the field) give, if
/// any: one non-negative number, which may repeat (RFC 9110 §8.6 lets a
/// recipient take `4, 4` or two equal fields as 4); anything else is
/// refused.
///
/// # Errors
/// [`Malformed::Length`] for a value that is not a number, or two that
/// differ.
pub(super) fn content_length<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<u64>, Malformed> {
    let mut length: Option<u64> = None;
    for value in values {
        for item in value.split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(Malformed::Length);
            }
            let n = item.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|l| l != n) {
                return Err(Malformed::Length);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Whether the peer lets the connection stay open, from its `Connection`
/// values: HTTP/1.1 unless it says `close`, HTTP/1.0 only when it says
/// `keep-alive`.
pub(super) fn keeps_alive<'a>(
    connection: impl Iterator<Item = &'a [u8]>,
    version: Version,
) -> bool {
    let (mut close, mut keep_alive) = (false, false);
    for token in connection.flat_map(|v| v.split(|&b| b == b',')) {
        let token = token.trim_ascii();
        close |= token.eq_ignore_ascii_case(b"close");
        keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
    }
    if version == Version::HTTP_11 {
        !close
    } else {
        keep_alive
    }
}

/// What the next bytes of a body held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Body data: this range of the input.
    Data(Range<usize>),
    /// Nothing more can be decoded without more input.
    More,
    /// The body is complete.
    End,
}

/// A response body being decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes of a `Content-Length` body are left.
    Length(u64),
    /// Reading a chunk-size line.
    Size,
    /// This many bytes of the current chunk's data are left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer field lines after the last chunk, up to a blank line.
    Trailer,
    /// Until the connection closes.
    UntilClose,
    /// Complete.
    Done,
}

impl Body {
    /// A body delimited by `framing`.
    pub fn new(framing: Framing) -> Body {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size,
            Framing::UntilClose => State::UntilClose,
        };
        Body { state }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The connection closed: whether that completes the body (it does only
    /// for a body delimited by the close).
    pub fn on_close(&mut self) -> bool {
        if self.state == State::UntilClose {
            self.state = State::Done;
        }
        self.state == State::Done
    }

    /// Decodes from `input`, the bytes not consumed yet: returns how many
    /// of them are consumed (framing and data) and what they held. Data is
    /// handed out as soon as any of it is there, not a whole chunk at a
    /// time; framing is consumed only when whole.
    ///
    /// # Errors
    /// [`Malformed`] for chunk framing that is invalid.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Decoded), Malformed> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                State::Done => return Ok((at, Decoded::End)),
                State::Length(left) | State::Data(left) => {
                    if rest.is_empty() {
                        return Ok((at, Decoded::More));
                    }
                    let take = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                    let left = left - take as u64;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::DataEnd,
                        _ => State::Data(left),
                    };
                    return Ok((at + take, Decoded::Data(at..at + take)));
                }
                State::UntilClose => {
                    if rest.is_empty() {
                        return Ok((at, Decoded::More));
                    }
                    return Ok((input.len(), Decoded::Data(at..input.len())));
                }
                State::Size => {
                    let Some(line) = line(rest)? else {
                        return Ok((at, Decoded::More));
                    };
                    let size = chunk_size(&rest[..line.content])?;
                    at += line.len;
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::Data(size)
                    };
                }
                State::DataEnd => match rest {
                    [] | [b'\r'] => return Ok((at, Decoded::More)),
                    [b'\r', b'\n', ..] => {
                        at += 2;
                        self.state = State::Size;
                    }
                    [b'\n', ..] => {
                        at += 1;
                        self.state = State::Size;
                    }
                    _ => return Err(Malformed::ChunkEnd),
                },
                State::Trailer => {
                    let Some(line) = line(rest)? else {
                        return Ok((at, Decoded::More));
                    };
                    at += line.len;
                    if line.content == 0 {
                        self.state = State::Done;
                    }
                }
            }
        }
    }
}

/// A line at the start of some input: its content (without CR LF or LF)
/// and its whole length.
struct Line {
    content: usize,
    len: usize,
}

/// The line at the start of `input`, `None` when it has not ended yet.
fn line(input: &[u8]) -> Result<Option<Line>, Malformed> {
    let Some(lf) = memchr::memchr(b'\n', input) else {
        return if input.len() > MAX_LINE {
            Err(Malformed::LineTooLong)
        } else {
            Ok(None)
        };
    };
    if lf > MAX_LINE {
        return Err(Malformed::LineTooLong);
    }
    let content = if lf > 0 && input[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    Ok(Some(Line {
        content,
        len: lf + 1,
    }))
}

/// A chunk-size line's size: hex digits, then optionally whitespace and
/// `;` extensions (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(Malformed::ChunkSize);
    }
    let rest = &line[digits..];
    let rest_ok = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .is_none_or(|i| rest[i] == b';');
    if !rest_ok {
        return Err(Malformed::ChunkSize);
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        // At most 15 hex digits: no overflow.
        size = size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        parse_head(raw.as_bytes(), &Method::POST)
            .expect("parses")
            .expect("complete")
    }

    /// The data `body` decodes from `input` fed in pieces of `step` bytes,
    /// as a connection's read buffer would hold them, and whether it ended.
    fn decode_in_steps(framing: Framing, input: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut body = Body::new(framing);
        let mut data = Vec::new();
        let (mut start, mut end) = (0, 0);
        loop {
            let (used, decoded) = body.decode(&input[start..end]).expect("decodes");
            match decoded {
                Decoded::Data(r) => data.extend_from_slice(&input[start + r.start..start + r.end]),
                Decoded::End => return (data, true),
                Decoded::More if end == input.len() => return (data, body.on_close()),
                Decoded::More => end = (end + step).min(input.len()),
            }
            start += used;
        }
    }

    #[test]
    fn a_head_gives_status_fields_framing_and_keep_alive() {
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\ndata",
        );
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.len, 80);
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.keep_alive);
        assert_eq!(h.value(b"content-type"), Some(&b"text/event-stream"[..]));
        let names: Vec<&[u8]> = h.fields().map(|(name, _)| name).collect();
        assert_eq!(
            names,
            [&b"Content-Type"[..], b"Transfer-Encoding"],
            "as sent"
        );
        assert_eq!(h.reason(), b"OK");
        let header = h.to_header().expect("a header map");
        assert_eq!(header.headers["content-type"], "text/event-stream");
        assert_eq!(header.status, StatusCode::OK);

        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), false));
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), false));
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: Keep-Alive\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
        let h = head("HTTP/1.1 100 Continue\r\n\r\n");
        assert!(h.is_interim());
        let h = head("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n");
        assert!(!h.is_interim() && !h.keep_alive);
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            &Method::HEAD,
        )
        .expect("parses")
        .expect("complete");
        assert_eq!(h.framing, Framing::Empty);
        let h = head("HTTP/1.1 418 Brewing\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.reason(), b"Brewing");
        let h = head("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.reason(), b"Not Found", "the status's own when none came");
    }

    #[test]
    fn content_length_must_be_one_number_and_te_beside_it_ends_reuse() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(7));
        for bad in ["7, 8", "-1", "+7", "0x7", "", "99999999999999999999"] {
            let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                parse_head(raw.as_bytes(), &Method::GET).err(),
                Some(Malformed::Length),
                "{bad:?}"
            );
        }
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
    }

    #[test]
    fn an_incomplete_head_waits_and_a_bad_or_endless_one_is_refused() {
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", &Method::GET),
            Ok(None)
        ));
        assert_eq!(
            parse_head(b"HTTP/1.1 2x0 OK\r\n\r\n", &Method::GET).err(),
            Some(Malformed::Head)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", &Method::GET).err(),
            Some(Malformed::Head)
        );
        let mut endless = b"HTTP/1.1 200 OK\r\n".to_vec();
        while endless.len() <= MAX_HEAD {
            endless.extend_from_slice(b"x-filler: 0123456789012345678901234567890123456789\r\n");
        }
        assert_eq!(
            parse_head(&endless, &Method::GET).err(),
            Some(Malformed::HeadTooLarge)
        );
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_head(&many, &Method::GET).err(),
            Some(Malformed::HeadTooLarge)
        );
    }

    #[test]
    fn chunked_bodies_decode_the_same_whatever_the_reads_bring() {
        let input =
            b"5;ext=1\r\nhello\r\n18\r\n data: {\"a\":1}\n\ndata: x\n\r\n0\r\nx-trailer: 1\r\n\r\n";
        let want = b"hello data: {\"a\":1}\n\ndata: x\n".to_vec();
        for step in 1..=input.len() {
            assert_eq!(
                decode_in_steps(Framing::Chunked, input, step),
                (want.clone(), true),
                "step {step}"
            );
        }
        // Bare LF line ends, as some servers write them.
        assert_eq!(
            decode_in_steps(Framing::Chunked, b"3\nabc\n0\n\n", 4),
            (b"abc".to_vec(), true)
        );
        // Cut off before the last chunk: not complete.
        assert_eq!(
            decode_in_steps(Framing::Chunked, b"3\r\nabc\r\n", 3),
            (b"abc".to_vec(), false)
        );
    }

    #[test]
    fn length_and_close_delimited_bodies_stop_where_they_should() {
        for step in 1..=12 {
            assert_eq!(
                decode_in_steps(Framing::Length(5), b"helloEXTRA", step),
                (b"hello".to_vec(), true),
                "step {step}"
            );
            assert_eq!(
                decode_in_steps(Framing::UntilClose, b"all of it", step),
                (b"all of it".to_vec(), true),
                "step {step}"
            );
        }
        assert_eq!(
            decode_in_steps(Framing::Length(9), b"short", 2),
            (b"short".to_vec(), false)
        );
        assert_eq!(decode_in_steps(Framing::Empty, b"", 1), (Vec::new(), true));
        let mut body = Body::new(Framing::Length(5));
        assert_eq!(body.decode(b"helloEXTRA"), Ok((5, Decoded::Data(0..5))));
        assert_eq!(body.decode(b"EXTRA"), Ok((0, Decoded::End)));
    }

    #[test]
    fn broken_chunk_framing_is_malformed() {
        let cases: [(&[u8], Malformed); 7] = [
            (b"zz\r\n", Malformed::ChunkSize),
            (b"\r\n", Malformed::ChunkSize),
            (b"-1\r\n", Malformed::ChunkSize),
            (b"5 x\r\n", Malformed::ChunkSize),
            (b"1000000000000000\r\n", Malformed::ChunkSize),
            (b"3\r\nabcXY", Malformed::ChunkEnd),
            (&[b'1'; MAX_LINE + 2], Malformed::LineTooLong),
        ];
        for (input, want) in cases {
            let mut body = Body::new(Framing::Chunked);
            let mut rest: &[u8] = input;
            let got = loop {
                match body.decode(rest) {
                    Ok((used, Decoded::Data(_))) => rest = &rest[used..],
                    Ok(other) => break Ok(other),
                    Err(e) => break Err(e),
                }
            };
            assert_eq!(got, Err(want), "{:?}", String::from_utf8_lossy(input));
        }
        // Whitespace before extensions is allowed; a long extension line
        // within the limit is fine.
        let mut body = Body::new(Framing::Chunked);
        assert_eq!(
            body.decode(b"2 \t;a=b\r\nok"),
            Ok((11, Decoded::Data(9..11)))
        );
    }
}
