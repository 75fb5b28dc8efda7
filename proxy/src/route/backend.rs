//! A route's backends: where a cohort's requests go, and how many of them.
//!
//! An [`Upstream`] is parsed and normalized once, when a table is built, so
//! the per-request path only copies a ready `host:port`.

use std::net::SocketAddr;
use std::sync::Arc;

use weir_core::{Cohort, Weight};

use crate::balance::Endpoints;
use crate::error::Problem;

/// Where a backend's requests go: an upstream `host:port`, spoken to in
/// HTTP/1.1, plain or over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The URL as configured, normalized (`http://host:port`).
    url: String,
    /// `host:port`, ready for a connector (DNS names are resolved there).
    authority: String,
    /// The authority as an address, when its host is an IP literal: parsed
    /// once here, not on every request.
    addr: Option<SocketAddr>,
    /// The host the upstream's certificate must name (and the SNI sent):
    /// `Some` for an `https` upstream.
    tls_name: Option<String>,
}

impl Upstream {
    /// Parses an upstream URL: `http://host[:port][/]`, port 80 by default,
    /// or `https://host[:port][/]`, port 443 by default.
    ///
    /// # Errors
    /// [`Problem::UnsupportedScheme`] for any other scheme (and for `https`
    /// in a build without the `tls` feature); [`Problem::InvalidUrl`] for an
    /// unparsable URL, one without a host, or one with credentials, a path,
    /// query or fragment.
    pub fn parse(value: &str) -> Result<Upstream, Problem> {
        let invalid = |reason: &'static str| Problem::InvalidUrl {
            value: value.to_string(),
            reason,
        };
        let url = url::Url::parse(value).map_err(|_| invalid("it does not parse as a URL"))?;
        let tls = match url.scheme() {
            "http" => false,
            "https" if cfg!(feature = "tls") => true,
            other => {
                return Err(Problem::UnsupportedScheme {
                    scheme: other.to_string(),
                });
            }
        };
        let host = url.host_str().ok_or_else(|| invalid("it has no host"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("it carries credentials"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "it has a path, query or fragment, and the proxy does not rewrite paths",
            ));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let authority = format!("{host}:{port}");
        Ok(Upstream {
            url: format!("{}://{authority}", url.scheme()),
            addr: authority.parse().ok(),
            authority,
            // A certificate names an IPv6 address without brackets.
            tls_name: tls.then(|| {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string()
            }),
        })
    }

    /// The normalized URL, `http://host:port` or `https://host:port`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// For an `https` upstream, the name its certificate must carry.
    pub fn tls_name(&self) -> Option<&str> {
        self.tls_name.as_deref()
    }

    /// `host:port` (IPv6 hosts in brackets), for the upstream connector.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The address to connect to when the host is an IP literal; `None` for
    /// a name, which is resolved when connecting.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }
}

/// One backend of a route: where a cohort's requests go and how many.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    /// The cohort this backend serves.
    pub cohort: Cohort,
    /// Where requests go: the URL to connect to, or, with `endpoints`, the
    /// Service's name for people (`http://chat-canary.llm.svc:8000`).
    pub upstream: Upstream,
    /// Its weight.
    pub weight: Weight,
    /// The version it runs, when known (a pod-template hash, a git SHA).
    pub revision: Option<Arc<str>>,
    /// The model name this cohort's requests ask the upstream for, on a
    /// route that matches a `model` (a LoRA adapter or a model behind the
    /// route's name): the request body's `model` is rewritten to it, and
    /// back in the response. `None` forwards the name as asked.
    pub model: Option<Arc<str>>,
    /// The Service's ready pods, when the source knows them (Kubernetes):
    /// each request goes to one of them ([`Endpoints::pick`]) instead of to
    /// `upstream`. An empty set refuses every request like a connection
    /// refused.
    pub endpoints: Option<Endpoints>,
}

impl Backend {
    /// A backend without a revision that connects to `upstream`.
    pub fn new(cohort: Cohort, upstream: Upstream, weight: Weight) -> Self {
        Backend {
            cohort,
            upstream,
            weight,
            revision: None,
            model: None,
            endpoints: None,
        }
    }

    /// The same backend asking the upstream for model `model`.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<Arc<str>>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// The same backend with a revision.
    #[must_use]
    pub fn with_revision(mut self, revision: impl Into<Arc<str>>) -> Self {
        self.revision = Some(revision.into());
        self
    }

    /// The same backend balancing over `endpoints`.
    #[must_use]
    pub fn with_endpoints(mut self, endpoints: Endpoints) -> Self {
        self.endpoints = Some(endpoints);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_http_or_https_host_and_port() {
        let u = Upstream::parse("http://127.0.0.1:9001").expect("valid");
        assert_eq!(u.authority(), "127.0.0.1:9001");
        assert_eq!(
            Upstream::parse("http://vllm/").expect("valid").authority(),
            "vllm:80"
        );
        assert_eq!(
            Upstream::parse("http://[::1]:8000")
                .expect("valid")
                .authority(),
            "[::1]:8000"
        );
        assert_eq!(
            Upstream::parse("http://a:1").expect("valid").tls_name(),
            None
        );
        let secure = Upstream::parse("https://vllm.llm.svc").expect("valid");
        assert_eq!(
            (secure.url(), secure.authority(), secure.tls_name()),
            (
                "https://vllm.llm.svc:443",
                "vllm.llm.svc:443",
                Some("vllm.llm.svc")
            )
        );
        assert_eq!(
            Upstream::parse("https://[::1]:8443")
                .expect("valid")
                .tls_name(),
            Some("::1")
        );
        let err = Upstream::parse("ftp://a:1").expect_err("ftp");
        assert!(err.to_string().contains("use http://host:port"), "{err}");
        for bad in [
            "http://a:1/v1",
            "http://u:p@a:1",
            "127.0.0.1:9001",
            "http://a:1/?x=1",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }
}
