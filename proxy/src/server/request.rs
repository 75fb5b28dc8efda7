//! A client's HTTP/1 request head, pure: parsed, its framing decided, and
//! whether the connection may carry another request.
//!
//! weir reads requests itself rather than through pingora's server session
//! for the shape of inference traffic: pingora keeps each request's head in
//! a 4 KiB buffer for the life of the request and builds two header maps
//! (one to preserve field-name case), which for a small request was a
//! seventh of the proxy's work and, for an open stream, memory held for
//! minutes. Here the head is copied once into an allocation of its own size
//! and the field values are slices of it ([`fields`]).
//!
//! What is refused here is what makes a head unreadable; the rules of the
//! hop (one `Host`, unambiguous body framing) are `headers::check`'s, for
//! HTTP/1 and HTTP/2 alike.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use pingora::http::RequestHeader;

use super::framing::{self, Framing};

/// Most fields a request head may carry (pingora's limit; an inference
/// client sends a dozen).
const MAX_FIELDS: usize = 256;
/// Longest request head: room for a 64 KiB field (large cookies and
/// tokens), where nginx stops at 8 KiB a line and 32 KiB in all, HAProxy
/// at 16 KiB. A connection's read buffer grows this far only while such a
/// head arrives.
pub const MAX_HEAD: usize = 128 * 1024;

/// Why a request head is refused. The messages name what is wrong and never
/// echo the offending bytes: they go to the client and, counted, to logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// Not an HTTP/1.0 or 1.1 request head.
    #[error("the request head is not valid HTTP/1.1")]
    Head,
    /// Longer than [`MAX_HEAD`] or more than [`MAX_FIELDS`] fields.
    #[error("the request head is longer than 128 KiB or has more than 256 fields")]
    TooLarge,
    /// `Content-Length` is not one number.
    #[error("Content-Length is not one number")]
    Length,
    /// The authority is ambiguous: a `Host` that differs from an absolute
    /// target's, or user information in either.
    #[error("the request's authority is ambiguous: {0}")]
    Authority(&'static str),
}

impl BadRequest {
    /// The status a client gets for it.
    pub fn status(self) -> StatusCode {
        match self {
            BadRequest::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A parsed request head.
#[derive(Debug)]
pub struct Request {
    /// The request header (field names lowercase).
    pub header: RequestHeader,
    /// The head's length in the input, blank line included.
    pub len: usize,
    /// How its body is delimited: a length, chunked, or none.
    pub framing: Framing,
    /// Whether the client lets the connection carry another request.
    pub keep_alive: bool,
    /// An HTTP/1.1 client waits for `100 Continue` before its body.
    pub expects_continue: bool,
}

/// Parses the request head at the start of `input`. `Ok(None)`: the head is
/// not complete yet.
///
/// # Errors
/// [`BadRequest`] when the head does not parse, is too large, or its
/// `Content-Length` or authority is invalid.
pub fn parse(input: &[u8]) -> Result<Option<Request>, BadRequest> {
    let mut parsed = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut parsed);
    let len = match request.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
            return Err(BadRequest::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadRequest::TooLarge),
        Err(_) => return Err(BadRequest::Head),
    };
    if len > MAX_HEAD {
        return Err(BadRequest::TooLarge);
    }
    let (Some(method), Some(path), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(BadRequest::Head);
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| BadRequest::Head)?;
    let mut header =
        RequestHeader::build_no_case(method, path.as_bytes(), Some(request.headers.len()))
            .map_err(|_| BadRequest::Head)?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    header.set_version(version);
    for field in fields(input, len, request.headers) {
        let (name, value) = field.ok_or(BadRequest::Head)?;
        header
            .append_header(name, value)
            .map_err(|_| BadRequest::Head)?;
    }
    pingora::protocols::http::authority::validate_request_authority(&header).map_err(|e| {
        let said = e.context.as_ref().map(|c| c.as_str()).unwrap_or_default();
        BadRequest::Authority(authority_problem(said))
    })?;
    // A `Transfer-Encoding` that is not exactly `chunked` is refused by
    // `headers::check` before any body is read; until then it stands for
    // chunked, the only framing it may mean.
    let framing = if header.headers.contains_key(header::TRANSFER_ENCODING) {
        Framing::Chunked
    } else {
        let lengths = header.headers.get_all(header::CONTENT_LENGTH).iter();
        match framing::content_length(lengths.map(HeaderValue::as_bytes))
            .map_err(|_| BadRequest::Length)?
        {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    };
    let connection = header.headers.get_all(header::CONNECTION).iter();
    let keep_alive = framing::keeps_alive(connection.map(HeaderValue::as_bytes), version);
    let expects_continue = version == Version::HTTP_11
        && framing != Framing::Empty
        && header
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    Ok(Some(Request {
        header,
        len,
        framing,
        keep_alive,
        expects_continue,
    }))
}

/// The fields httparse found in the head that is `input`'s first `len`
/// bytes, as names and values (`None` for one `http` refuses). The head is
/// copied once and every value is a slice of the copy: one allocation per
/// head instead of one per field.
fn fields<'a>(
    input: &'a [u8],
    len: usize,
    parsed: &'a [httparse::Header<'a>],
) -> impl Iterator<Item = Option<(HeaderName, HeaderValue)>> + 'a {
    let head = Bytes::copy_from_slice(&input[..len]);
    let base = input.as_ptr() as usize;
    parsed.iter().map(move |field| {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        let at = field.value.as_ptr() as usize - base;
        let value = HeaderValue::from_maybe_shared(head.slice(at..at + field.value.len())).ok()?;
        Some((name, value))
    })
}

/// pingora's authority checks say what is wrong only in their message: the
/// fixed part of it, never the value.
fn authority_problem(said: &str) -> &'static str {
    [
        "multiple Host header fields",
        "userinfo in Host header",
        "userinfo in URI authority",
        "userinfo in request target",
        "Host header differs from URI authority",
        "Host header differs from request-target authority",
        "ambiguous HTTP absolute-form request target",
        "unparseable absolute-form authority",
    ]
    .into_iter()
    .find(|known| said.starts_with(known))
    .unwrap_or("the Host or the target's authority is invalid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> Request {
        parse(raw.as_bytes()).expect("valid").expect("complete")
    }

    #[test]
    fn a_head_gives_method_target_fields_framing_and_keep_alive() {
        let raw = "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nX-Key: Some Value\r\n\r\nabcd";
        let r = parsed(raw);
        assert_eq!(r.header.method, Method::POST);
        assert_eq!(r.header.raw_path(), b"/v1/chat/completions?x=1");
        assert_eq!(r.header.uri.path(), "/v1/chat/completions");
        assert_eq!(r.header.version, Version::HTTP_11);
        assert_eq!(r.header.headers["host"], "a");
        assert_eq!(r.header.headers["x-key"], "Some Value");
        assert_eq!(r.len, raw.len() - 4, "the body is not the head's");
        assert_eq!(r.framing, Framing::Length(4));
        assert!(r.keep_alive);
        assert!(!r.expects_continue);
    }

    #[test]
    fn framing_and_keep_alive_follow_the_fields_and_the_version() {
        let r = parsed("POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(r.framing, Framing::Chunked);
        let r = parsed("GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
        assert_eq!(r.framing, Framing::Empty);
        assert!(!r.keep_alive);
        assert!(!parsed("GET / HTTP/1.0\r\n\r\n").keep_alive, "1.0 closes");
        assert!(parsed("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").keep_alive);
        let r = parsed("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(r.framing, Framing::Empty, "a zero length is no body");
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 4, 4\r\n\r\n").framing,
            Framing::Length(4),
            "equal lengths are one"
        );
    }

    #[test]
    fn expect_continue_counts_only_for_an_http11_body() {
        let with = |version: &str, length: &str| {
            parsed(&format!(
                "POST / {version}\r\nhost: a\r\nexpect: 100-Continue\r\ncontent-length: {length}\r\n\r\n"
            ))
            .expects_continue
        };
        assert!(with("HTTP/1.1", "2"));
        assert!(!with("HTTP/1.1", "0"), "no body to wait for");
        assert!(!with("HTTP/1.0", "2"), "1.0 has no 100 Continue");
    }

    #[test]
    fn an_incomplete_head_waits_and_a_bad_one_is_refused_without_its_bytes() {
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nhost: a\r\n"), Ok(None)));
        for (what, raw, bad) in [
            ("not HTTP", "HELLO\r\n\r\n", BadRequest::Head),
            (
                "obs-fold",
                "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding:\r\n chunked\r\n\r\n",
                BadRequest::Head,
            ),
            (
                "a space in the target",
                "GET /a b HTTP/1.1\r\nhost: a\r\n\r\n",
                BadRequest::Head,
            ),
            (
                "two lengths",
                "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\ncontent-length: 40\r\n\r\n",
                BadRequest::Length,
            ),
            (
                "a length list",
                "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 4, 40\r\n\r\n",
                BadRequest::Length,
            ),
            (
                "a signed length",
                "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: +4\r\n\r\n",
                BadRequest::Length,
            ),
            (
                "two hosts",
                "GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
                BadRequest::Authority("multiple Host header fields"),
            ),
            (
                "userinfo",
                "GET http://u@a/ HTTP/1.1\r\nhost: a\r\n\r\n",
                BadRequest::Authority("userinfo in request target"),
            ),
        ] {
            assert_eq!(parse(raw.as_bytes()).err(), Some(bad), "{what}");
        }
        let long = format!("GET / HTTP/1.1\r\nx: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(long.as_bytes()).err(), Some(BadRequest::TooLarge));
        let many: String = (0..=MAX_FIELDS).map(|i| format!("x{i}: 1\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(raw.as_bytes()).err(), Some(BadRequest::TooLarge));
        assert_eq!(BadRequest::TooLarge.status(), 431);
        let secret = "GET / HTTP/1.1\r\nhost: a\r\nhost: sk-secret\r\n\r\n";
        let message = parse(secret.as_bytes()).expect_err("refused").to_string();
        assert!(!message.contains("sk-secret"), "{message}");
    }
}
