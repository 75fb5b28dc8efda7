//! A route's backends: where a cohort's requests go, and how many of them.
//!
//! An [`Upstream`] is parsed and normalized once, when a table is built, so
//! the per-request path only copies a ready `host:port`.

use std::sync::Arc;

use weir_core::{Cohort, Weight};

use crate::balance::Endpoints;
use crate::error::Problem;

/// Where a backend's requests go: a plain-HTTP upstream `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The URL as configured, normalized (`http://host:port`).
    url: String,
    /// `host:port`, ready for a connector (DNS names are resolved there).
    authority: String,
}

impl Upstream {
    /// Parses an upstream URL: `http://host[:port][/]`, port 80 by default.
    ///
    /// # Errors
    /// [`Problem::UnsupportedScheme`] for `https` (not supported yet) and
    /// anything but `http`; [`Problem::InvalidUrl`] for an unparsable URL, one
    /// without a host, or one with credentials, a path, query or fragment.
    pub fn parse(value: &str) -> Result<Upstream, Problem> {
        let invalid = |reason: &'static str| Problem::InvalidUrl {
            value: value.to_string(),
            reason,
        };
        let url = url::Url::parse(value).map_err(|_| invalid("it does not parse as a URL"))?;
        if url.scheme() != "http" {
            return Err(Problem::UnsupportedScheme {
                scheme: url.scheme().to_string(),
            });
        }
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
            url: format!("http://{authority}"),
            authority,
        })
    }

    /// The normalized URL, `http://host:port`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `host:port` (IPv6 hosts in brackets), for the upstream connector.
    pub fn authority(&self) -> &str {
        &self.authority
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
            endpoints: None,
        }
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
    fn upstreams_are_plain_http_host_and_port() {
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
        assert!(matches!(
            Upstream::parse("https://a:1"),
            Err(Problem::UnsupportedScheme { scheme }) if scheme == "https"
        ));
        let err = Upstream::parse("https://a:1").expect_err("https");
        assert!(err.to_string().contains("not supported yet"), "{err}");
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
