//! What a request is matched on: its host, its path and its headers, as
//! plain string functions with no table in sight.
//!
//! A route matches when its host list is empty or contains the request's host
//! (ASCII case-insensitive, port and trailing dot removed), and its
//! `pathPrefix` is a prefix of the request path *on a segment boundary*
//! (`/v1` matches `/v1` and `/v1/chat`, not `/v1beta`), as Gateway API's
//! `PathPrefix` does. Which of several matching routes wins is the rule of
//! `route::route`.

/// A host as sent in `Host` or `:authority`, without port and trailing dot.
/// `None` for an empty host.
pub fn normalize_host(host: &str) -> Option<&str> {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        // [v6]:port or [v6]
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rfind(':') {
            // A single colon is a port separator; more would be a bare IPv6.
            Some(i) if host[..i].find(':').is_none() => &host[..i],
            _ => host,
        }
    };
    let h = without_port.strip_suffix('.').unwrap_or(without_port);
    (!h.is_empty()).then_some(h)
}

/// `/` for empty or `/`, otherwise the prefix without trailing slashes;
/// `None` unless it starts with `/` and has no query, fragment or whitespace.
pub(super) fn normalize_prefix(prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        return Some("/".to_string());
    }
    if !prefix.starts_with('/')
        || prefix
            .bytes()
            .any(|c| c == b'?' || c == b'#' || c.is_ascii_whitespace() || c.is_ascii_control())
    {
        return None;
    }
    let trimmed = prefix.trim_end_matches('/');
    Some(if trimmed.is_empty() { "/" } else { trimmed }.to_string())
}

/// Whether normalized `prefix` matches `path` on a segment boundary.
pub(super) fn prefix_matches(prefix: &str, path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Read access to request headers, so `route::route` works on `http::HeaderMap`
/// (pingora's) and on plain slices in tests alike.
pub trait Headers {
    /// The first value of header `name` (lower-case), if it is valid text.
    fn get(&self, name: &str) -> Option<&str>;

    /// The value of cookie `name` in the `cookie` header.
    fn cookie(&self, name: &str) -> Option<&str> {
        self.get("cookie").and_then(|c| find_cookie(c, name))
    }
}

impl Headers for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }

    /// Looks through every `cookie` header (HTTP/2 sends one per cookie).
    fn cookie(&self, name: &str) -> Option<&str> {
        self.get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| find_cookie(c, name))
    }
}

impl Headers for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

impl<const N: usize> Headers for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<&str> {
        Headers::get(self.as_slice(), name)
    }
}

/// The value of cookie `name` in a `cookie` header value.
fn find_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// What `route::route` needs of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a, H: ?Sized> {
    /// `Host` header or `:authority`, as received (port allowed).
    pub host: Option<&'a str>,
    /// The request path (a query string is ignored).
    pub path: &'a str,
    /// The request headers.
    pub headers: &'a H,
    /// The request body's top-level `model`, when it has one and some
    /// route matches models.
    pub model: Option<&'a str>,
}

impl<'a, H: Headers + ?Sized> RequestInfo<'a, H> {
    /// Request information from its parts.
    pub fn new(host: Option<&'a str>, path: &'a str, headers: &'a H) -> Self {
        RequestInfo {
            host,
            path,
            headers,
            model: None,
        }
    }

    /// The same request naming `model` in its body.
    #[must_use]
    pub fn with_model(mut self, model: Option<&'a str>) -> Self {
        self.model = model;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(
            normalize_host("Chat.Example.com:8080"),
            Some("Chat.Example.com")
        );
        assert_eq!(
            normalize_host("chat.example.com."),
            Some("chat.example.com")
        );
        assert_eq!(normalize_host("[::1]:80"), Some("[::1]"));
        assert_eq!(normalize_host("::1"), Some("::1"));
        assert_eq!(normalize_host(""), None);
    }
    #[test]
    fn header_map_cookies_are_found_in_any_cookie_header() {
        let mut h = http::HeaderMap::new();
        h.append("cookie", http::HeaderValue::from_static("a=1"));
        h.append("cookie", http::HeaderValue::from_static("sid=xyz"));
        h.insert("x-weir-cohort", http::HeaderValue::from_static("canary"));
        assert_eq!(Headers::cookie(&h, "sid"), Some("xyz"));
        assert_eq!(Headers::get(&h, "x-weir-cohort"), Some("canary"));
        assert_eq!(Headers::cookie(&h, "b"), None);
    }
}
