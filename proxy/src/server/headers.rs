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

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode, Version};
use pingora::http::{RequestHeader, ResponseHeader};

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
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| !HOP_BY_HOP.contains(name))
        .collect()
}

/// Checks a request before it is routed: an HTTP/1.1 request must carry
/// exactly one `Host` (HTTP/2 carries `:authority` instead), and an HTTP/1
/// body's framing must be unambiguous.
///
/// `raw_head` is the HTTP/1 request head as it arrived (`None` for
/// HTTP/2): pingora drops `Content-Length` from the parsed head when
/// `Transfer-Encoding` is present too, which RFC 9112 §6.3 allows; weir
/// refuses such a request instead, as the RFC also allows, because the
/// next parser along the way (a server behind the upstream, a cache) may
/// pick the other length.
///
/// # Errors
/// [`Refused::Host`] for an HTTP/1.1 request without one `Host`;
/// [`Refused::Framing`] for `Transfer-Encoding` beside `Content-Length`,
/// or any `Transfer-Encoding` other than one `chunked`.
pub fn check(request: &RequestHeader, raw_head: Option<&[u8]>) -> Result<(), Refused> {
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
        if raw_head.is_some_and(|raw| has_field(raw, b"content-length")) {
            return Err(Refused::Framing(
                "Transfer-Encoding and Content-Length in one request",
            ));
        }
    }
    Ok(())
}

/// Whether the raw HTTP/1 head `raw` has a field `name` (lowercase ASCII).
/// The request line is skipped; a field line starts after a CR LF or LF.
fn has_field(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
    })
}

/// The request head sent to an upstream at `authority` (`host:port`),
/// written to `out` in HTTP/1.1 wire form: hop-by-hop fields and `Expect`
/// left out, the client's `Host` kept (an HTTP/1.0 request without one, or
/// an HTTP/2 request, gets its authority or the upstream's), a target in
/// origin form, and a body without `Content-Length` sent chunked. Returns
/// whether the body goes chunked.
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
    out.extend_from_slice(downstream.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // `Expect: 100-continue` was answered at this hop (the proxy reads the
    // body before it connects), so the upstream gets the body at once.
    let named = connection_named(&downstream.headers);
    let skipped = |name: &HeaderName| {
        HOP_BY_HOP.contains(name) || named.contains(name) || name == header::EXPECT
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

/// `upstream`'s response header made the one sent back to a client of
/// `version` that asked `method`: hop-by-hop fields removed,
/// [`COHORT_HEADER`] naming `cohort`, and a body of unknown length chunked
/// for an HTTP/1.1 client.
pub fn downstream_response(
    mut response: Box<ResponseHeader>,
    cohort: &str,
    method: &Method,
    version: Version,
) -> Box<ResponseHeader> {
    let chunked = is_chunked(&response.headers);
    for name in connection_named(&response.headers)
        .iter()
        .chain(&HOP_BY_HOP)
    {
        response.remove_header(name);
    }
    let unknown_length = chunked || !response.headers.contains_key(header::CONTENT_LENGTH);
    if version == Version::HTTP_11 && unknown_length && has_body(method, response.status) {
        response.remove_header(&header::CONTENT_LENGTH);
        // Infallible: static name and value.
        let _ = response.insert_header(header::TRANSFER_ENCODING, "chunked");
    }
    // Infallible: static name, and cohort names are validated tokens.
    let _ = response.insert_header(COHORT_HEADER, cohort);
    response
}

/// Whether `headers` frame the body chunked: the last transfer coding is
/// `chunked` (RFC 9112 §6.3).
pub(super) fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
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
        assert_eq!(
            check(&request(Version::HTTP_11, &[("host", "a")]), None),
            Ok(())
        );
        assert_eq!(
            check(&request(Version::HTTP_11, &[]), None),
            Err(Refused::Host),
            "none"
        );
        assert_eq!(
            check(
                &request(Version::HTTP_11, &[("host", "a"), ("host", "b")]),
                None
            ),
            Err(Refused::Host),
            "two"
        );
        assert_eq!(check(&request(Version::HTTP_10, &[]), None), Ok(()), "1.0");
    }

    #[test]
    fn body_framing_must_be_one_length_or_plain_chunked() {
        let te = |value: &str| {
            request(
                Version::HTTP_11,
                &[("host", "a"), ("transfer-encoding", value)],
            )
        };
        let raw_cl = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        let raw_te = b"POST / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(check(&te("chunked"), Some(raw_te)), Ok(()), "plain chunked");
        assert_eq!(
            check(&te("Chunked"), None),
            Ok(()),
            "a coding is case-insensitive"
        );
        for (what, req, raw) in [
            ("Content-Length beside it", te("chunked"), Some(&raw_cl[..])),
            ("chunked, identity", te("chunked, identity"), None),
            ("identity, chunked", te("identity, chunked"), None),
            ("gzip", te("gzip"), None),
            ("xchunked", te("xchunked"), None),
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
                None,
            ),
        ] {
            assert!(
                matches!(check(&req, raw), Err(Refused::Framing(_))),
                "{what}"
            );
        }
        // The request line is not a field, whatever its target says.
        assert!(!has_field(
            b"GET /content-length: HTTP/1.1\r\n\r\n",
            b"content-length"
        ));
        assert!(has_field(
            b"GET / HTTP/1.1\nCONTENT-LENGTH: 1\n\n",
            b"content-length"
        ));
    }

    /// `expect` too: the proxy answers `100 Continue` itself and has the
    /// body before it connects.
    /// The head [`upstream_request`] writes: its request line, its fields
    /// (name, value) in order, and whether the body goes chunked.
    fn upstream(
        down: &RequestHeader,
        authority: &str,
        has_body: bool,
    ) -> (String, Vec<(String, String)>, bool) {
        let mut out = Vec::new();
        let chunked = upstream_request(down, authority, has_body, &mut out).expect("request");
        let text = String::from_utf8(out).expect("ASCII");
        let head = text
            .strip_suffix("\r\n\r\n")
            .expect("ends with a blank line");
        let mut lines = head.split("\r\n");
        let line = lines.next().expect("request line").to_string();
        let fields = lines
            .map(|l| {
                let (k, v) = l.split_once(": ").expect("name: value");
                (k.to_string(), v.to_string())
            })
            .collect();
        (line, fields, chunked)
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
        assert_eq!(check(&down, None), Ok(()), ":authority stands for Host");
    }

    #[test]
    fn a_host_that_http1_cannot_carry_is_refused() {
        let down = request(Version::HTTP_10, &[]);
        let mut out = Vec::new();
        assert_eq!(
            upstream_request(&down, "bad host", false, &mut out),
            Err(Refused::Header("host"))
        );
    }

    #[test]
    fn responses_name_the_cohort_and_keep_http11_connections_reusable() {
        let mut up = ResponseHeader::build(200, None).expect("response");
        up.append_header("content-type", "text/event-stream")
            .expect("header");
        up.append_header("connection", "close").expect("header");
        let post = Method::POST;
        // Close-delimited upstream body: chunked to 1.1, as-is to 1.0.
        let r = downstream_response(Box::new(up.clone()), "canary", &post, Version::HTTP_11);
        assert_eq!(r.headers["transfer-encoding"], "chunked");
        assert_eq!(r.headers[COHORT_HEADER], "canary");
        assert!(!r.headers.contains_key("connection"));
        let r = downstream_response(Box::new(up.clone()), "stable", &post, Version::HTTP_10);
        assert!(!r.headers.contains_key("transfer-encoding"));
        // A length is kept; chunked stays chunked.
        up.append_header("content-length", "12").expect("header");
        let r = downstream_response(Box::new(up.clone()), "stable", &post, Version::HTTP_11);
        assert_eq!(r.headers["content-length"], "12");
        assert!(!r.headers.contains_key("transfer-encoding"));
        let mut chunked = ResponseHeader::build(200, None).expect("response");
        chunked
            .append_header("transfer-encoding", "chunked")
            .expect("header");
        let r = downstream_response(Box::new(chunked.clone()), "stable", &post, Version::HTTP_11);
        assert_eq!(r.headers["transfer-encoding"], "chunked");
        // No body: nothing to frame.
        let empty = ResponseHeader::build(204, None).expect("response");
        let r = downstream_response(Box::new(empty.clone()), "stable", &post, Version::HTTP_11);
        assert!(!r.headers.contains_key("transfer-encoding"));
        let r = downstream_response(
            Box::new(up.clone()),
            "stable",
            &Method::HEAD,
            Version::HTTP_11,
        );
        assert_eq!(r.headers["content-length"], "12");
    }
}
