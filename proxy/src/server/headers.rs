//! What goes upstream and what goes back: the HTTP/1 header rules of a
//! forwarding hop, pure so every rule has a table test.
//!
//! A proxy is one hop: the fields that describe a connection (RFC 9110
//! §7.6.1: `Connection` and every field it names, `Keep-Alive`, `TE`,
//! `Trailer`, `Transfer-Encoding`, `Upgrade`, and the non-standard
//! `Proxy-Connection`) are the two connections' own business and are not
//! forwarded. Framing is then set for the next hop: a request body without
//! a length goes chunked, and a response without a length goes chunked to
//! an HTTP/1.1 client (so its connection can be kept) and close-delimited to
//! an HTTP/1.0 one. pingora's session writers derive their body framing
//! from exactly these fields.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use pingora::http::{RequestHeader, ResponseHeader};

use super::framing::Head;
use crate::route::COHORT_HEADER;

/// Why a request is refused before it is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// RFC 9112 §3.2: a server must answer 400 to an HTTP/1.1 request
    /// without exactly one `Host`.
    #[error("an HTTP/1.1 request needs exactly one Host header")]
    Host,
    /// A header value that cannot be sent upstream as it is.
    #[error("a header value cannot be forwarded: {0}")]
    Header(&'static str),
    /// HTTP/1 body framing two parsers could read differently: the root
    /// of request smuggling (RFC 9112 §6.1, §6.3), so refused outright.
    #[error("ambiguous body framing: {0}")]
    Framing(&'static str),
}

/// Connection-specific fields that never cross the proxy.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The fields `headers`' `Connection` names (usually none, and then no
/// allocation). pingora's header types keep the map read-only, so callers
/// remove these and [`HOP_BY_HOP`] themselves.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    let values = headers.get_all(header::CONNECTION).iter();
    connection_tokens(values.map(HeaderValue::as_bytes))
        .into_iter()
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .filter(|name| !HOP_BY_HOP.contains(name))
        .collect()
}

/// The tokens of `Connection` values (usually none, and then no
/// allocation).
fn connection_tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<&'a [u8]> {
    values
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
        .collect()
}

/// Whether the field `name` (any case) is one of [`HOP_BY_HOP`].
fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|hop| name.eq_ignore_ascii_case(hop.as_str().as_bytes()))
}

/// Checks a request before it is routed: an HTTP/1.1 request must carry
/// exactly one `Host` (HTTP/2 carries `:authority` instead), and an HTTP/1
/// body's framing must be unambiguous: RFC 9112 §6.3 lets a server take
/// `Transfer-Encoding` over a `Content-Length` beside it, but the next
/// parser along the way (a server behind the upstream, a cache) may pick
/// the other, so weir refuses the pair, as the RFC also allows.
///
/// # Errors
/// [`Refused::Host`] for an HTTP/1.1 request without one `Host`;
/// [`Refused::Framing`] for `Transfer-Encoding` beside `Content-Length`,
/// in HTTP/1.0, or other than one `chunked`.
pub fn check(request: &RequestHeader) -> Result<(), Refused> {
    if request.version == Version::HTTP_11
        && request.headers.get_all(header::HOST).iter().count() != 1
    {
        return Err(Refused::Host);
    }
    let mut codings = request.headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(coding) = codings.next() {
        if codings.next().is_some() || !coding.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(Refused::Framing(
                "Transfer-Encoding must be exactly `chunked` (no other coding, no list)",
            ));
        }
        if request.headers.contains_key(header::CONTENT_LENGTH) {
            return Err(Refused::Framing(
                "Transfer-Encoding and Content-Length in one request",
            ));
        }
        // RFC 9112 §6.1: an HTTP/1.0 recipient cannot know chunked.
        if request.version == Version::HTTP_10 {
            return Err(Refused::Framing("Transfer-Encoding in an HTTP/1.0 request"));
        }
    }
    Ok(())
}

/// The request head sent to an upstream at `authority` (`host:port`),
/// written to `out` in HTTP/1.1 wire form: hop-by-hop fields and `Expect`
/// left out, the client's `Host` kept (an HTTP/1.0 request without one, or
/// an HTTP/2 request, gets its authority or the upstream's), a target in
/// origin form, and a body without `Content-Length` sent chunked.
/// `content_length` replaces the client's `Content-Length` when the proxy
/// changed the body (a model name rewritten). Returns whether the body
/// goes chunked.
///
/// Written straight from the client's head rather than from a modified
/// copy of it: a copy, its removals and its serialisation were a tenth of
/// a small request's cost. Field names go lowercase, as HTTP/2 has them.
///
/// # Errors
/// [`Refused::Header`] when the target or the `Host` to send cannot be
/// written as HTTP/1 (a NUL, CR, LF or space in it).
pub fn upstream_request(
    downstream: &RequestHeader,
    authority: &str,
    has_body: bool,
    content_length: Option<u64>,
    out: &mut Vec<u8>,
) -> Result<bool, Refused> {
    let forbidden = |bytes: &[u8]| bytes.iter().any(|b| matches!(b, 0 | b'\r' | b'\n' | b' '));
    let target = if downstream.uri.authority().is_some() {
        // An HTTP/2 request (or an absolute-form HTTP/1 target) names its
        // authority in the URI; HTTP/1 upstreams get origin-form and Host.
        downstream
            .uri
            .path_and_query()
            .map_or(&b"/"[..], |p| p.as_str().as_bytes())
    } else {
        downstream.raw_path()
    };
    if target.is_empty() || forbidden(target) {
        return Err(Refused::Header("path"));
    }
    // Sized once: growing the buffer field by field cost more than writing.
    let fields: usize = downstream
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    out.reserve(target.len() + fields + authority.len() + 64);
    out.extend_from_slice(downstream.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // `Expect: 100-continue` was answered at this hop (the proxy reads the
    // body before it connects), so the upstream gets the body at once.
    let named = connection_named(&downstream.headers);
    let skipped = |name: &HeaderName| {
        HOP_BY_HOP.contains(name)
            || named.contains(name)
            || name == header::EXPECT
            || (content_length.is_some() && name == header::CONTENT_LENGTH)
    };
    for (name, value) in &downstream.headers {
        if skipped(name) {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !downstream.headers.contains_key(header::HOST) {
        let host = downstream.uri.authority().map_or(authority, |a| a.as_str());
        if forbidden(host.as_bytes()) {
            return Err(Refused::Header("host"));
        }
        field(out, b"host", host.as_bytes());
    }
    if let Some(length) = content_length {
        field(out, b"content-length", length.to_string().as_bytes());
    }
    let chunked = has_body && !downstream.headers.contains_key(header::CONTENT_LENGTH);
    if chunked {
        field(out, b"transfer-encoding", b"chunked");
    }
    out.extend_from_slice(b"\r\n");
    Ok(chunked)
}

/// One field line. Values are `HeaderValue`s, which hold no CR or LF.
fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether a response to `method` with `status` has a body (RFC 9112
/// §6.3: never for HEAD, 1xx, 204 and 304).
pub(super) fn has_body(method: &Method, status: StatusCode) -> bool {
    method != Method::HEAD
        && !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// How a response body goes to an HTTP/1 client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOut {
    /// No body (a response to HEAD; 1xx, 204, 304).
    None,
    /// As the upstream's bytes come: its `Content-Length` of them, or, for
    /// an HTTP/1.0 client, until the connection closes.
    Plain,
    /// Chunked: an HTTP/1.1 client, and a length the upstream did not give.
    Chunked,
}

/// The response head sent back to an HTTP/1 client of `version` that asked
/// `method`, written to `out` in wire form from `upstream`'s: hop-by-hop
/// fields left out, [`COHORT_HEADER`] naming `cohort` (when the request got
/// as far as a cohort), and a body of unknown
/// length chunked for an HTTP/1.1 client or close-delimited for an HTTP/1.0
/// one. `keep_alive` is whether the client's connection stays open after
/// it (said in `Connection` when that is not the version's default).
/// `rewritten` says the proxy changes the body (a model name rewritten
/// back), so the upstream's length does not hold and is left out.
/// Returns how the body goes, and whether the connection stays open.
pub fn downstream_head(
    upstream: &Head,
    cohort: Option<&str>,
    method: &Method,
    version: Version,
    keep_alive: bool,
    rewritten: bool,
    out: &mut Vec<u8>,
) -> (BodyOut, bool) {
    let length_known = !rewritten
        && upstream.value(b"transfer-encoding").is_none()
        && upstream.value(b"content-length").is_some();
    let (body, keep_alive) = if !has_body(method, upstream.status) {
        (BodyOut::None, keep_alive)
    } else if length_known {
        (BodyOut::Plain, keep_alive)
    } else if version == Version::HTTP_11 {
        (BodyOut::Chunked, keep_alive)
    } else {
        (BodyOut::Plain, false)
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(upstream.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(upstream.reason());
    out.extend_from_slice(b"\r\n");
    let named = connection_tokens(upstream.values(b"connection"));
    for (name, value) in upstream.fields() {
        let length_dropped =
            (body == BodyOut::Chunked || rewritten) && name.eq_ignore_ascii_case(b"content-length");
        let ours = name.eq_ignore_ascii_case(COHORT_HEADER.as_bytes());
        let connection_named = named.iter().any(|n| n.eq_ignore_ascii_case(name));
        if is_hop_by_hop(name) || connection_named || length_dropped || ours {
            continue;
        }
        field(out, name, value);
    }
    if body == BodyOut::Chunked {
        field(out, b"transfer-encoding", b"chunked");
    }
    if let Some(cohort) = cohort {
        field(out, COHORT_HEADER.as_bytes(), cohort.as_bytes());
    }
    if !keep_alive {
        field(out, b"connection", b"close");
    } else if version == Version::HTTP_10 {
        field(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    (body, keep_alive)
}

/// `upstream`'s response header made the one sent back to an HTTP/2
/// client: hop-by-hop fields removed (HTTP/2 frames bodies itself) and
/// [`COHORT_HEADER`] naming `cohort`; without `Content-Length` when the
/// proxy rewrites the body (`rewritten`).
pub fn downstream_response(
    mut response: Box<ResponseHeader>,
    cohort: &str,
    rewritten: bool,
) -> Box<ResponseHeader> {
    for name in connection_named(&response.headers)
        .iter()
        .chain(&HOP_BY_HOP)
    {
        response.remove_header(name);
    }
    if rewritten {
        response.remove_header(&header::CONTENT_LENGTH);
    }
    // Infallible: static name, and cohort names are validated tokens.
    let _ = response.insert_header(COHORT_HEADER, cohort);
    response
}

/// Whether `Transfer-Encoding` `values` frame the body chunked: the last
/// transfer coding is `chunked` (RFC 9112 §6.3).
pub(super) fn is_chunked<'a>(values: impl Iterator<Item = &'a [u8]>) -> bool {
    values
        .flat_map(|v| v.split(|&b| b == b','))
        .last()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/v1/chat/completions", None).expect("request");
        r.set_version(version);
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    #[test]
    fn an_http11_request_needs_exactly_one_host() {
        assert_eq!(check(&request(Version::HTTP_11, &[("host", "a")])), Ok(()));
        assert_eq!(
            check(&request(Version::HTTP_11, &[])),
            Err(Refused::Host),
            "none"
        );
        assert_eq!(
            check(&request(Version::HTTP_11, &[("host", "a"), ("host", "b")])),
            Err(Refused::Host),
            "two"
        );
        assert_eq!(check(&request(Version::HTTP_10, &[])), Ok(()), "1.0");
    }

    #[test]
    fn body_framing_must_be_one_length_or_plain_chunked() {
        let te = |value: &str| {
            request(
                Version::HTTP_11,
                &[("host", "a"), ("transfer-encoding", value)],
            )
        };
        assert_eq!(check(&te("chunked")), Ok(()), "plain chunked");
        assert_eq!(
            check(&te("Chunked")),
            Ok(()),
            "a coding is case-insensitive"
        );
        let mut with_length = te("chunked");
        with_length
            .append_header("content-length", "4")
            .expect("header");
        let mut in_http10 = te("chunked");
        in_http10.set_version(Version::HTTP_10);
        for (what, req) in [
            ("Content-Length beside it", with_length),
            ("in HTTP/1.0", in_http10),
            ("chunked, identity", te("chunked, identity")),
            ("identity, chunked", te("identity, chunked")),
            ("gzip", te("gzip")),
            ("xchunked", te("xchunked")),
            (
                "two fields",
                request(
                    Version::HTTP_11,
                    &[
                        ("host", "a"),
                        ("transfer-encoding", "chunked"),
                        ("transfer-encoding", "chunked"),
                    ],
                ),
            ),
        ] {
            assert!(matches!(check(&req), Err(Refused::Framing(_))), "{what}");
        }
    }

    /// The head [`upstream_request`] writes: its request line, its fields
    /// (name, value) in order, and whether the body goes chunked.
    fn upstream(
        down: &RequestHeader,
        authority: &str,
        has_body: bool,
    ) -> (String, Vec<(String, String)>, bool) {
        let mut out = Vec::new();
        let chunked = upstream_request(down, authority, has_body, None, &mut out).expect("request");
        let (line, fields) = split(out);
        (line, fields, chunked)
    }

    /// A written head's first line and its fields (name, value) in order.
    fn split(head: Vec<u8>) -> (String, Vec<(String, String)>) {
        let text = String::from_utf8(head).expect("ASCII");
        let head = text
            .strip_suffix("\r\n\r\n")
            .expect("ends with a blank line");
        let mut lines = head.split("\r\n");
        let line = lines.next().expect("first line").to_string();
        let fields = lines
            .map(|l| {
                let (k, v) = l.split_once(": ").expect("name: value");
                (k.to_string(), v.to_string())
            })
            .collect();
        (line, fields)
    }

    fn value<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn hop_by_hop_fields_and_the_ones_connection_names_stay_behind() {
        let down = request(
            Version::HTTP_11,
            &[
                ("host", "chat.example"),
                ("connection", "keep-alive, x-secret-hop"),
                ("x-secret-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("upgrade", "h2c"),
                ("proxy-connection", "keep-alive"),
                ("expect", "100-continue"),
                ("authorization", "Bearer k"),
                ("content-length", "2"),
            ],
        );
        let (line, fields, chunked) = upstream(&down, "10.0.0.1:8000", true);
        assert_eq!(line, "POST /v1/chat/completions HTTP/1.1");
        let mut names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["authorization", "content-length", "host"],
            "{fields:?}"
        );
        assert_eq!(
            value(&fields, "host"),
            Some("chat.example"),
            "the client's Host kept"
        );
        assert!(!chunked, "a length is kept");
    }

    #[test]
    fn a_body_without_a_length_goes_chunked_and_http10_gets_a_host() {
        let down = request(Version::HTTP_10, &[("transfer-encoding", "chunked")]);
        let (line, fields, chunked) = upstream(&down, "10.0.0.1:8000", true);
        assert!(line.ends_with(" HTTP/1.1"), "{line}");
        assert_eq!(value(&fields, "host"), Some("10.0.0.1:8000"));
        assert_eq!(value(&fields, "transfer-encoding"), Some("chunked"));
        assert!(chunked);
        let get = request(Version::HTTP_11, &[("host", "h")]);
        let (_, fields, chunked) = upstream(&get, "u:1", false);
        assert_eq!(value(&fields, "transfer-encoding"), None, "no body");
        assert!(!chunked);
    }

    #[test]
    fn an_http2_request_goes_upstream_in_origin_form_with_its_authority_as_host() {
        let mut down =
            RequestHeader::build("POST", b"/v1/chat/completions?x=1", None).expect("request");
        down.set_uri(
            "http://chat.example/v1/chat/completions?x=1"
                .parse()
                .expect("uri"),
        );
        down.set_version(Version::HTTP_2);
        let (line, fields, _) = upstream(&down, "10.0.0.1:8000", true);
        assert_eq!(line, "POST /v1/chat/completions?x=1 HTTP/1.1");
        assert_eq!(value(&fields, "host"), Some("chat.example"));
        assert_eq!(check(&down), Ok(()), ":authority stands for Host");
    }

    #[test]
    fn a_host_that_http1_cannot_carry_is_refused() {
        let down = request(Version::HTTP_10, &[]);
        let mut out = Vec::new();
        assert_eq!(
            upstream_request(&down, "bad host", false, None, &mut out),
            Err(Refused::Header("host"))
        );
    }

    /// The head [`downstream_head`] writes for the upstream head `raw`:
    /// its status line, its fields (name, value) in order, how the body
    /// goes and whether the connection stays open.
    fn downstream(
        raw: &str,
        method: &Method,
        version: Version,
    ) -> (String, Vec<(String, String)>, BodyOut, bool) {
        let up = super::super::framing::parse_head(raw.as_bytes(), method)
            .expect("parses")
            .expect("complete");
        let mut out = Vec::new();
        let (body, keep_alive) =
            downstream_head(&up, Some("canary"), method, version, true, false, &mut out);
        let (line, fields) = split(out);
        (line, fields, body, keep_alive)
    }

    #[test]
    fn responses_name_the_cohort_and_keep_http11_connections_reusable() {
        let up = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                  Connection: close, X-Hop\r\nx-hop: 1\r\nX-Weir-Cohort: forged\r\n";
        let end = "\r\n";
        let post = Method::POST;
        // Close-delimited upstream body: chunked to 1.1, as-is to 1.0.
        let (line, fields, body, keep) = downstream(&format!("{up}{end}"), &post, Version::HTTP_11);
        assert_eq!(line, "HTTP/1.1 200 OK");
        assert_eq!(body, BodyOut::Chunked);
        assert!(keep, "the upstream's close is its own connection's");
        assert_eq!(value(&fields, "transfer-encoding"), Some("chunked"));
        assert_eq!(value(&fields, COHORT_HEADER), Some("canary"));
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["Content-Type", "transfer-encoding", COHORT_HEADER],
            "names as the upstream sent them"
        );
        let (_, fields, body, keep) = downstream(&format!("{up}{end}"), &post, Version::HTTP_10);
        assert_eq!(body, BodyOut::Plain);
        assert!(!keep, "an HTTP/1.0 client reads to the close");
        assert_eq!(value(&fields, "connection"), Some("close"));
        assert_eq!(value(&fields, "transfer-encoding"), None);
        // A length is kept, and a kept-alive 1.0 client is told so.
        let sized = format!("{up}Content-Length: 12\r\n{end}");
        let (_, fields, body, _) = downstream(&sized, &post, Version::HTTP_11);
        assert_eq!(body, BodyOut::Plain);
        assert_eq!(value(&fields, "Content-Length"), Some("12"));
        assert_eq!(value(&fields, "transfer-encoding"), None);
        let (_, fields, _, keep) = downstream(&sized, &post, Version::HTTP_10);
        assert!(keep);
        assert_eq!(value(&fields, "connection"), Some("keep-alive"));
        // Chunked with a length beside it: chunked wins, the length goes.
        let both = format!("{up}Content-Length: 12\r\nTransfer-Encoding: chunked\r\n{end}");
        let (_, fields, body, _) = downstream(&both, &post, Version::HTTP_11);
        assert_eq!(body, BodyOut::Chunked);
        assert_eq!(value(&fields, "Content-Length"), None);
        assert_eq!(value(&fields, "Transfer-Encoding"), None, "its own, once");
        // No body: nothing to frame; HEAD keeps the length it describes.
        let empty = "HTTP/1.1 204 No Content\r\n\r\n";
        let (line, fields, body, _) = downstream(empty, &post, Version::HTTP_11);
        assert_eq!(line, "HTTP/1.1 204 No Content");
        assert_eq!(body, BodyOut::None);
        assert_eq!(value(&fields, "transfer-encoding"), None);
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n";
        let (_, fields, body, _) = downstream(head, &Method::HEAD, Version::HTTP_11);
        assert_eq!(body, BodyOut::None);
        assert_eq!(value(&fields, "content-length"), Some("12"));
        // HTTP/2: hop-by-hop fields go, the cohort is named.
        let up = super::super::framing::parse_head(both.as_bytes(), &post)
            .expect("parses")
            .expect("complete")
            .to_header()
            .expect("a header map");
        let r = downstream_response(Box::new(up), "stable", false);
        assert_eq!(r.headers[COHORT_HEADER], "stable");
        assert!(!r.headers.contains_key("connection"));
        assert!(!r.headers.contains_key("x-hop"));
        assert!(!r.headers.contains_key("transfer-encoding"));
    }
}
