//! The route table: validated routes, built once per configuration change
//! and swapped whole.
//!
//! Every rule a table must obey is checked by [`Route::new`] and
//! [`RouteTable::new`], whatever the source (file, memory, Kubernetes), so a
//! table that exists is a table the proxy can serve.

use std::sync::Arc;

use serde::{Serialize, Serializer};
use weir_core::{Cohort, Weight, is_model_name};

use super::backend::Backend;
use super::choice::Split;
use super::matching::{normalize_prefix, prefix_matches};
use crate::error::{ConfigError, Problem};

/// How a route keeps a session on one cohort.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Sticky {
    /// The value of this request header (stored lower-case) is the key.
    Header(String),
    /// The value of this cookie is the key.
    Cookie(String),
}

/// One route: which requests it takes and how it splits them.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    name: Arc<str>,
    hosts: Vec<String>,
    path_prefix: String,
    /// The request body's `model` the route takes; `None` for any request.
    model: Option<String>,
    sticky: Option<Sticky>,
    /// Whether `x-weir-cohort` may force a cohort on this route (besides
    /// the table-wide switch).
    override_header: bool,
    /// The traffic generation the route was built from (0 when its source
    /// has none).
    generation: u64,
    backends: Vec<Backend>,
    /// How requests are split between the backends.
    split: Split,
}

/// What a route matches, as a builder input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteMatch {
    /// Host names; empty means any host.
    pub hosts: Vec<String>,
    /// Path prefix; `/` (or empty) means every path.
    pub path_prefix: String,
    /// The request body's top-level `model` (exactly); `None` takes any
    /// request, with or without one.
    pub model: Option<String>,
}

impl Route {
    /// Builds a validated route. Field paths in errors are relative to the
    /// route (`backends[1].cohort`, `match.hosts[0]`).
    ///
    /// # Errors
    /// A [`ConfigError::Invalid`] for an invalid name, host,
    /// path prefix or sticky header; no backends; two backends with one
    /// cohort; all weights zero.
    pub fn new(
        name: &str,
        matches: RouteMatch,
        sticky: Option<Sticky>,
        backends: Vec<Backend>,
    ) -> Result<Route, ConfigError> {
        if !is_route_name(name) {
            return Err(ConfigError::invalid(
                "name",
                Problem::InvalidRouteName {
                    value: name.to_string(),
                },
            ));
        }
        let mut hosts = Vec::with_capacity(matches.hosts.len());
        for (i, host) in matches.hosts.iter().enumerate() {
            // Configured hosts carry no port: request hosts are compared
            // without theirs.
            let trimmed = host.trim();
            let normalized =
                Some(trimmed.strip_suffix('.').unwrap_or(trimmed)).filter(|h| is_host_name(h));
            match normalized {
                Some(h) => hosts.push(h.to_ascii_lowercase()),
                None => {
                    return Err(ConfigError::invalid(
                        format!("match.hosts[{i}]"),
                        Problem::InvalidHost {
                            value: host.clone(),
                        },
                    ));
                }
            }
        }
        let path_prefix = normalize_prefix(&matches.path_prefix).ok_or_else(|| {
            ConfigError::invalid(
                "match.pathPrefix",
                Problem::InvalidPathPrefix {
                    value: matches.path_prefix.clone(),
                },
            )
        })?;
        let sticky = match sticky {
            Some(Sticky::Header(h)) => {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(ConfigError::invalid(
                        "sticky.header",
                        Problem::InvalidHeaderName { value: h },
                    ));
                }
                Some(Sticky::Header(h.to_ascii_lowercase()))
            }
            Some(Sticky::Cookie(c)) => {
                if c.is_empty() || !c.bytes().all(is_cookie_name_byte) {
                    return Err(ConfigError::invalid(
                        "sticky.cookie",
                        Problem::InvalidCookieName { value: c },
                    ));
                }
                Some(Sticky::Cookie(c))
            }
            None => None,
        };
        if let Some(model) = &matches.model
            && !is_model_name(model)
        {
            return Err(ConfigError::invalid(
                "match.model",
                Problem::InvalidModelName {
                    value: model.clone(),
                },
            ));
        }
        if backends.is_empty() {
            return Err(ConfigError::invalid("backends", Problem::NoBackends));
        }
        for (i, b) in backends.iter().enumerate() {
            match (&b.model, &matches.model) {
                (Some(model), Some(_)) if !is_model_name(model) => {
                    return Err(ConfigError::invalid(
                        format!("backends[{i}].model"),
                        Problem::InvalidModelName {
                            value: model.to_string(),
                        },
                    ));
                }
                // A rewrite on a route that takes any request would turn
                // every model a client asks for into this one.
                (Some(_), None) => {
                    return Err(ConfigError::invalid(
                        format!("backends[{i}].model"),
                        Problem::ModelWithoutMatch,
                    ));
                }
                _ => {}
            }
            if let Some(first) = backends[..i].iter().position(|o| o.cohort == b.cohort) {
                return Err(ConfigError::invalid(
                    format!("backends[{i}].cohort"),
                    Problem::DuplicateCohort {
                        cohort: b.cohort.to_string(),
                        first,
                    },
                ));
            }
        }
        let Some(split) = Split::new(&backends) else {
            return Err(ConfigError::invalid("backends", Problem::AllWeightsZero));
        };
        Ok(Route {
            name: name.into(),
            hosts,
            path_prefix,
            model: matches.model,
            sticky,
            override_header: false,
            generation: 0,
            backends,
            split,
        })
    }

    /// The same route marked as built from traffic generation `generation`
    /// (a Canary's `status.traffic.generation`).
    #[must_use]
    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// The same route with the override header enabled (`true`) or left to
    /// the table's switch (`false`).
    #[must_use]
    pub fn with_override_header(mut self, enabled: bool) -> Self {
        self.override_header = enabled;
        self
    }

    /// The traffic generation the route was built from; 0 for sources
    /// without one (file, memory).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether this route itself enables the override header.
    pub fn override_header(&self) -> bool {
        self.override_header
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The route's name, shared.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// Host names (lower-case); empty means any host.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The path prefix, normalized (`/`, or no trailing slash).
    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    /// The request body's `model` the route takes, if it matches one.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// How sessions are kept on one cohort, if they are.
    pub fn sticky(&self) -> Option<&Sticky> {
        self.sticky.as_ref()
    }

    /// The backends, in configuration order.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The backend serving `cohort`, with its index.
    pub fn backend_for(&self, cohort: &Cohort) -> Option<(usize, &Backend)> {
        self.backends
            .iter()
            .enumerate()
            .find(|(_, b)| &b.cohort == cohort)
    }

    /// The share of traffic `backend` gets, in `[0, 1]`.
    pub fn share(&self, backend: usize) -> f64 {
        self.split.share(backend)
    }

    /// The same route with new weights (`weights[i]` for `backends[i]`).
    ///
    /// # Errors
    /// As [`Route::new`] (all weights zero).
    pub(crate) fn with_weights(&self, weights: &[Weight]) -> Result<Route, ConfigError> {
        let backends = self
            .backends
            .iter()
            .zip(weights)
            .map(|(b, &weight)| Backend {
                weight,
                ..b.clone()
            })
            .collect();
        Ok(Route::new(
            &self.name,
            RouteMatch {
                hosts: self.hosts.clone(),
                path_prefix: self.path_prefix.clone(),
                model: self.model.clone(),
            },
            self.sticky.clone(),
            backends,
        )?
        .with_generation(self.generation)
        .with_override_header(self.override_header))
    }

    /// Whether this route, placed after `earlier`, could never be chosen:
    /// same prefix, and `earlier` takes any host when this one does, or
    /// names every host this one names.
    pub(crate) fn is_shadowed_by(&self, earlier: &Route) -> bool {
        earlier.path_prefix == self.path_prefix
            && earlier.model == self.model
            && earlier.hosts.is_empty() == self.hosts.is_empty()
            && self.hosts.iter().all(|h| earlier.hosts.contains(h))
    }

    /// Whether this route takes a request for `host` (already normalized),
    /// `path` and body `model`; `Some(prefix length)` when it does.
    pub(super) fn matches(
        &self,
        host: Option<&str>,
        path: &str,
        model: Option<&str>,
    ) -> Option<usize> {
        if self.model.is_some() && self.model.as_deref() != model {
            return None;
        }
        if !self.hosts.is_empty() {
            let host = host?;
            if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                return None;
            }
        }
        prefix_matches(&self.path_prefix, path).then_some(self.path_prefix.len())
    }

    /// The backend at point `u` of `[0, 2^64)` (the selection line of the
    /// `choice` module).
    pub(super) fn pick(&self, u: u64) -> usize {
        self.split.pick(u)
    }

    /// The backend a connect failure on `chosen` is retried on: the other
    /// backend with the largest positive weight (ties: later in selection
    /// order, so stable before canary).
    pub(super) fn fallback(&self, chosen: usize) -> Option<usize> {
        self.split.fallback(chosen)
    }
}

impl Serialize for Route {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Match<'a> {
            hosts: &'a [String],
            path_prefix: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            model: Option<&'a str>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct BackendView<'a> {
            cohort: &'a Cohort,
            url: &'a str,
            weight: Weight,
            share_percent: f64,
            revision: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            model: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            endpoints: Option<Vec<EndpointView>>,
        }
        #[derive(Serialize)]
        struct EndpointView {
            address: std::net::SocketAddr,
            inflight: u64,
        }
        let backends: Vec<BackendView<'_>> = self
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| BackendView {
                cohort: &b.cohort,
                url: b.upstream.url(),
                weight: b.weight,
                share_percent: (self.share(i) * 1e4).round() / 1e2,
                revision: b.revision.as_deref(),
                model: b.model.as_deref(),
                endpoints: b.endpoints.as_ref().map(|set| {
                    set.as_slice()
                        .iter()
                        .map(|e| EndpointView {
                            address: e.addr(),
                            inflight: e.inflight(),
                        })
                        .collect()
                }),
            })
            .collect();
        let mut s = serializer.serialize_struct("Route", 6)?;
        s.serialize_field("name", &*self.name)?;
        s.serialize_field("generation", &self.generation)?;
        s.serialize_field(
            "match",
            &Match {
                hosts: &self.hosts,
                path_prefix: &self.path_prefix,
                model: self.model.as_deref(),
            },
        )?;
        s.serialize_field("sticky", &self.sticky)?;
        s.serialize_field("overrideHeader", &self.override_header)?;
        s.serialize_field("backends", &backends)?;
        s.end()
    }
}

/// Route names: 1 to 253 characters of ASCII letters, digits, `-`, `_`, `.`
/// (they appear in URLs, `/v1/routes/{name}/weights`, and metric labels).
fn is_route_name(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Cookie names are RFC 6265 tokens.
fn is_cookie_name_byte(c: u8) -> bool {
    c.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&c)
}

/// A configured host: letters, digits, `-`, `.`, or an IP literal
/// (IPv6 in brackets).
fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && (h
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
            || (h.starts_with('[')
                && h.ends_with(']')
                && h[1..h.len() - 1].parse::<std::net::Ipv6Addr>().is_ok()))
}

/// The routes the proxy serves, immutable once built. The proxy holds it in
/// an `ArcSwap` and replaces it whole when its config source announces a
/// new one, so a request sees one consistent table from start to end.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    override_header: bool,
    generation: u64,
    /// Some route matches a `model`: request bodies are looked into.
    model_routes: bool,
}

impl RouteTable {
    /// A table of validated routes. `override_header` enables the override
    /// header on every route (a route may also enable it for itself). An
    /// empty table is valid: every request gets a 404 (a cluster without
    /// Canaries yet); sources that require routes check that themselves.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for two routes with one name,
    /// or a route that can never match because an earlier one has the same
    /// hosts and prefix. Paths are `routes[i]...`.
    pub fn new(
        routes: Vec<Route>,
        override_header: bool,
        generation: u64,
    ) -> Result<RouteTable, ConfigError> {
        for (i, r) in routes.iter().enumerate() {
            if let Some(first) = routes[..i].iter().position(|o| o.name == r.name) {
                return Err(ConfigError::invalid(
                    format!("routes[{i}].name"),
                    Problem::DuplicateRoute {
                        name: r.name.to_string(),
                        first,
                    },
                ));
            }
            if let Some(by) = routes[..i].iter().position(|o| r.is_shadowed_by(o)) {
                return Err(ConfigError::invalid(
                    format!("routes[{i}].match"),
                    Problem::ShadowedRoute { by },
                ));
            }
        }
        Ok(RouteTable {
            model_routes: routes.iter().any(|r| r.model.is_some()),
            routes: routes.into_iter().map(Arc::new).collect(),
            override_header,
            generation,
        })
    }

    /// The routes, in configuration order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The route named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| &*r.name == name)
    }

    /// Whether some route matches a request body's `model`: only then does
    /// the proxy look into request bodies.
    pub fn model_routes(&self) -> bool {
        self.model_routes
    }

    /// Whether `x-weir-cohort` may force a cohort on every route.
    pub fn override_header(&self) -> bool {
        self.override_header
    }

    /// A counter that increases with every accepted change (file reload,
    /// weight update, `status.traffic.generation`).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The same table with another generation.
    #[must_use]
    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// The same table with route `index` replaced (names and match unchanged).
    pub(crate) fn with_route(&self, index: usize, route: Route) -> RouteTable {
        let mut routes = self.routes.clone();
        routes[index] = Arc::new(route);
        RouteTable {
            routes,
            override_header: self.override_header,
            generation: self.generation,
            model_routes: self.model_routes,
        }
    }
}

/// `GET /v1/routes`: `{"generation", "overrideHeader", "routes": [...]}`.
impl Serialize for RouteTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("RouteTable", 3)?;
        s.serialize_field("generation", &self.generation)?;
        s.serialize_field("overrideHeader", &self.override_header)?;
        let routes: Vec<&Route> = self.routes.iter().map(|r| &**r).collect();
        s.serialize_field("routes", &routes)?;
        s.end()
    }
}
