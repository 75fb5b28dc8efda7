//! The route table and the per-request cohort decision.
//!
//! Everything here is pure: [`route`] takes the table, what it needs of the
//! request, and a random `draw` supplied by the caller, and returns a
//! [`Decision`]. The proxy's `request_filter` calls it once per request and
//! keeps the decision in its context; retries never re-draw it. Tests can
//! therefore check selection exactly (sticky keys, override, fallbacks) and
//! statistically (weighted draws) without a socket.
//!
//! # Matching
//!
//! A route matches when its host list is empty or contains the request's host
//! (ASCII case-insensitive, port and trailing dot removed), and its
//! `pathPrefix` is a prefix of the request path *on a segment boundary*
//! (`/v1` matches `/v1` and `/v1/chat`, not `/v1beta`), as Gateway API's
//! `PathPrefix` does. The longest prefix wins; on equal prefixes a route that
//! names hosts beats a catch-all, then the earlier route wins.
//!
//! # Selection
//!
//! Every request is mapped to a point `u` in `[0, 2^64)` and the backends are
//! laid out on that line in a fixed order, each taking a share proportional
//! to its weight. The order puts `canary` first, other named cohorts next
//! (by name) and `stable` last. The point comes from, in order:
//!
//! 1. the override header (`x-weir-cohort: NAME`, when the table enables it
//!    and the name is a cohort of the route): that backend, whatever its
//!    weight (blue-green previews have weight 0);
//! 2. the sticky key (a header or cookie named by the route), hashed with
//!    XXH64, seed 0 ([`sticky_point`]). XXH64 is a published, frozen
//!    algorithm with implementations in every language, so every replica,
//!    every version and any external tool agree on where a session lands.
//!    Because the canary comes first, a key is on the canary exactly when
//!    `u / 2^64 < canary share`: raising the canary's share only ever moves
//!    sessions *onto* it (DESIGN.md's `[0, 10000)` rule, at full precision);
//! 3. otherwise the caller's uniform random `draw`.
//!
//! The point is scaled exactly (`u * total >> 64`, in 128-bit integers), so a
//! backend's chance is its weight over the sum of weights with no rounding
//! bias, and a backend of weight 0 is never chosen by 2 or 3.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};

use crate::balance::Endpoints;
use crate::config::Problem;

/// Name of the request header that forces a cohort when the table enables it;
/// the response carries it too, naming the cohort that served.
pub const COHORT_HEADER: &str = "x-weir-cohort";

/// A traffic weight: a percentage from 0 to 100 with a resolution of 0.01
/// (one basis point). Weights are relative: a backend's share is its weight
/// over the sum of the route's weights (80/20 and 4/1 split alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Weight(u32);

impl Weight {
    /// No traffic (the backend is reachable only through the override header).
    pub const ZERO: Weight = Weight(0);
    /// The largest weight, 100%.
    pub const MAX: Weight = Weight(10_000);
    /// Basis points per percent.
    const PER_PERCENT: u32 = 100;

    /// A weight from basis points (1/100 of a percent), `None` above 10000.
    pub const fn from_basis_points(bp: u32) -> Option<Weight> {
        if bp <= Self::MAX.0 {
            Some(Weight(bp))
        } else {
            None
        }
    }

    /// A weight from a percentage.
    ///
    /// # Errors
    /// [`Problem::NotAWeight`] unless `percent` is finite, in `[0, 100]` and
    /// a multiple of 0.01 (up to float noise: `33.33` is fine, `33.333` is not).
    pub fn from_percent(percent: f64) -> Result<Weight, Problem> {
        let bad = || Problem::NotAWeight {
            value: format_number(percent),
        };
        if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
            return Err(bad());
        }
        let bp = percent * f64::from(Self::PER_PERCENT);
        let rounded = bp.round();
        if (bp - rounded).abs() > 1e-6 {
            return Err(bad());
        }
        Ok(Weight(rounded as u32))
    }

    /// The weight in basis points, `0..=10000`.
    pub const fn basis_points(self) -> u32 {
        self.0
    }

    /// The weight in percent, `0.0..=100.0`.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / f64::from(Self::PER_PERCENT)
    }

    /// Whether the weight is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// Prints the percentage without trailing zeros: `80`, `12.5`, `0.01`.
impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / Self::PER_PERCENT;
        let frac = self.0 % Self::PER_PERCENT;
        match (frac, frac % 10) {
            (0, _) => write!(f, "{whole}"),
            (_, 0) => write!(f, "{whole}.{}", frac / 10),
            _ => write!(f, "{whole}.{frac:02}"),
        }
    }
}

impl Serialize for Weight {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.percent())
    }
}

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let percent = f64::deserialize(deserializer)?;
        Weight::from_percent(percent).map_err(serde::de::Error::custom)
    }
}

/// Formats a number as a person wrote it (`-5`, not `-5.0`).
pub(crate) fn format_number(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// A cohort: the group of backends a request is judged with. DESIGN's
/// cohorts are `stable` and `canary`; any other name (a blue-green
/// `preview`, a third arm) is allowed.
///
/// Names are 1 to 63 characters of `a-z`, `0-9` and `-`, starting and ending
/// with a letter or digit (a DNS label), because they become metric label
/// values, header values and Service name suffixes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cohort {
    /// The version everyone trusts.
    Stable,
    /// The version under test.
    Canary,
    /// Any other cohort, by name.
    Other(Arc<str>),
}

impl Cohort {
    /// The cohort named `name`.
    ///
    /// # Errors
    /// [`Problem::InvalidName`] for a name that is not a DNS label.
    pub fn parse(name: &str) -> Result<Cohort, Problem> {
        match name {
            "stable" => Ok(Cohort::Stable),
            "canary" => Ok(Cohort::Canary),
            _ if is_dns_label(name) => Ok(Cohort::Other(name.into())),
            _ => Err(Problem::InvalidName {
                what: "cohort",
                value: name.to_string(),
            }),
        }
    }

    /// The cohort's name.
    pub fn as_str(&self) -> &str {
        match self {
            Cohort::Stable => "stable",
            Cohort::Canary => "canary",
            Cohort::Other(name) => name,
        }
    }

    /// Position in the selection order: canary first, stable last.
    fn rank(&self) -> (u8, &str) {
        match self {
            Cohort::Canary => (0, ""),
            Cohort::Other(name) => (1, name),
            Cohort::Stable => (2, ""),
        }
    }
}

impl fmt::Display for Cohort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Cohort {
    type Err = Problem;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cohort::parse(s)
    }
}

impl Serialize for Cohort {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Cohort {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Cohort::parse(&name).map_err(serde::de::Error::custom)
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

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
    sticky: Option<Sticky>,
    /// Whether `x-weir-cohort` may force a cohort on this route (besides
    /// the table-wide switch).
    override_header: bool,
    /// The traffic generation the route was built from (0 when its source
    /// has none).
    generation: u64,
    backends: Vec<Backend>,
    /// Backend indices in selection order (canary first, stable last).
    order: Vec<usize>,
    /// Sum of weights, basis points; > 0.
    total: u64,
}

/// What a route matches, as a builder input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteMatch {
    /// Host names; empty means any host.
    pub hosts: Vec<String>,
    /// Path prefix; `/` (or empty) means every path.
    pub path_prefix: String,
}

impl Route {
    /// Builds a validated route. Field paths in errors are relative to the
    /// route (`backends[1].cohort`, `match.hosts[0]`).
    ///
    /// # Errors
    /// A [`crate::config::ConfigError::Invalid`] for an invalid name, host,
    /// path prefix or sticky header; no backends; two backends with one
    /// cohort; all weights zero.
    pub fn new(
        name: &str,
        matches: RouteMatch,
        sticky: Option<Sticky>,
        backends: Vec<Backend>,
    ) -> Result<Route, crate::config::ConfigError> {
        use crate::config::ConfigError;
        if !is_route_name(name) {
            return Err(ConfigError::invalid(
                "name",
                Problem::InvalidName {
                    what: "route",
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
        if backends.is_empty() {
            return Err(ConfigError::invalid("backends", Problem::NoBackends));
        }
        for (i, b) in backends.iter().enumerate() {
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
        let total: u64 = backends
            .iter()
            .map(|b| u64::from(b.weight.basis_points()))
            .sum();
        if total == 0 {
            return Err(ConfigError::invalid("backends", Problem::AllWeightsZero));
        }
        let mut order: Vec<usize> = (0..backends.len()).collect();
        order.sort_by(|&a, &b| backends[a].cohort.rank().cmp(&backends[b].cohort.rank()));
        Ok(Route {
            name: name.into(),
            hosts,
            path_prefix,
            sticky,
            override_header: false,
            generation: 0,
            backends,
            order,
            total,
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
        self.backends.get(backend).map_or(0.0, |b| {
            f64::from(b.weight.basis_points()) / self.total as f64
        })
    }

    /// The same route with new weights (`weights[i]` for `backends[i]`).
    ///
    /// # Errors
    /// As [`Route::new`] (all weights zero).
    pub(crate) fn with_weights(
        &self,
        weights: &[Weight],
    ) -> Result<Route, crate::config::ConfigError> {
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
            && earlier.hosts.is_empty() == self.hosts.is_empty()
            && self.hosts.iter().all(|h| earlier.hosts.contains(h))
    }

    /// Whether this route takes a request for `host` (already normalized)
    /// and `path`; `Some(prefix length)` when it does.
    fn matches(&self, host: Option<&str>, path: &str) -> Option<usize> {
        if !self.hosts.is_empty() {
            let host = host?;
            if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                return None;
            }
        }
        prefix_matches(&self.path_prefix, path).then_some(self.path_prefix.len())
    }

    /// The backend at point `u` of `[0, 2^64)`.
    fn pick(&self, u: u64) -> usize {
        // floor(u * total / 2^64) < cumulative  ⟺  u / 2^64 < cumulative / total.
        let target = ((u128::from(u) * u128::from(self.total)) >> 64) as u64;
        let mut cumulative = 0u64;
        for &i in &self.order {
            cumulative += u64::from(self.backends[i].weight.basis_points());
            if target < cumulative {
                return i;
            }
        }
        // Unreachable for total > 0 (target < total); the last positive
        // backend is the right answer if it ever were.
        self.order
            .iter()
            .rev()
            .copied()
            .find(|&i| !self.backends[i].weight.is_zero())
            .unwrap_or(0)
    }

    /// The backend a connect failure on `chosen` is retried on: the other
    /// backend with the largest positive weight (ties: later in selection
    /// order, so stable before canary).
    fn fallback(&self, chosen: usize) -> Option<usize> {
        self.order
            .iter()
            .enumerate()
            .filter(|&(_, &i)| i != chosen && !self.backends[i].weight.is_zero())
            .max_by_key(|&(rank, &i)| (self.backends[i].weight, rank))
            .map(|(_, &i)| i)
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
fn normalize_prefix(prefix: &str) -> Option<String> {
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
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The routes the proxy serves, immutable once built. The proxy holds it in
/// an `ArcSwap` and replaces it whole when its config source announces a
/// new one, so a request sees one consistent table from start to end.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    override_header: bool,
    generation: u64,
}

impl RouteTable {
    /// A table of validated routes. `override_header` enables the override
    /// header on every route (a route may also enable it for itself). An
    /// empty table is valid: every request gets a 404 (a cluster without
    /// Canaries yet); sources that require routes check that themselves.
    ///
    /// # Errors
    /// [`crate::config::ConfigError::Invalid`] for two routes with one name,
    /// or a route that can never match because an earlier one has the same
    /// hosts and prefix. Paths are `routes[i]...`.
    pub fn new(
        routes: Vec<Route>,
        override_header: bool,
        generation: u64,
    ) -> Result<RouteTable, crate::config::ConfigError> {
        use crate::config::ConfigError;
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

/// Read access to request headers, so [`route`] works on `http::HeaderMap`
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

/// What [`route`] needs of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a, H: ?Sized> {
    /// `Host` header or `:authority`, as received (port allowed).
    pub host: Option<&'a str>,
    /// The request path (a query string is ignored).
    pub path: &'a str,
    /// The request headers.
    pub headers: &'a H,
}

impl<'a, H: Headers + ?Sized> RequestInfo<'a, H> {
    /// Request information from its parts.
    pub fn new(host: Option<&'a str>, path: &'a str, headers: &'a H) -> Self {
        RequestInfo {
            host,
            path,
            headers,
        }
    }
}

/// Why the backend was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Selected {
    /// The override header named the cohort.
    Override,
    /// The sticky key hashed to it.
    Sticky,
    /// The random draw landed on it.
    Weighted,
}

/// The per-request decision: the route, the backend, and where to retry a
/// connect failure. It holds the route itself, so it stays valid after the
/// table is swapped.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The matched route.
    pub route: Arc<Route>,
    /// Index of the chosen backend in `route.backends()`.
    pub backend: usize,
    /// Index of the backend to retry a connect failure on, if any.
    pub fallback: Option<usize>,
    /// Why the backend was chosen.
    pub selected: Selected,
}

impl Decision {
    /// The chosen backend.
    pub fn backend(&self) -> &Backend {
        &self.route.backends[self.backend]
    }

    /// The chosen cohort.
    pub fn cohort(&self) -> &Cohort {
        &self.backend().cohort
    }

    /// The fallback backend, if any.
    pub fn fallback_backend(&self) -> Option<&Backend> {
        self.fallback.map(|i| &self.route.backends[i])
    }

    /// The observation key of the chosen backend.
    pub fn key(&self) -> CohortKey {
        CohortKey::new(self.route.name_arc(), self.backend())
    }

    /// The observation key of the fallback backend, if any.
    pub fn fallback_key(&self) -> Option<CohortKey> {
        self.fallback_backend()
            .map(|b| CohortKey::new(self.route.name_arc(), b))
    }
}

/// What observations are kept per: route, cohort and revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CohortKey {
    /// The route name.
    pub route: Arc<str>,
    /// The cohort.
    pub cohort: Cohort,
    /// The backend's revision, when known.
    pub revision: Option<Arc<str>>,
}

impl CohortKey {
    /// The key of `backend` on route `route`.
    pub fn new(route: &Arc<str>, backend: &Backend) -> Self {
        CohortKey {
            route: Arc::clone(route),
            cohort: backend.cohort.clone(),
            revision: backend.revision.clone(),
        }
    }
}

/// Why no decision could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No route matches the host and path; the proxy answers 404.
    #[error("no route matches host {host} and path {path}")]
    NoRoute {
        /// The host asked for (shortened), or `(none)`.
        host: String,
        /// The path asked for (shortened).
        path: String,
    },
}

/// Where a sticky key lands on `[0, 2^64)`: XXH64 of its UTF-8 bytes, seed 0.
/// Stable across processes, versions and languages; the key is on the canary
/// exactly when `sticky_point(key) / 2^64 < canary share`.
pub fn sticky_point(key: &str) -> u64 {
    xxhash_rust::xxh64::xxh64(key.as_bytes(), 0)
}

/// Decides where a request goes. `draw` must be uniform on `u64` (the caller
/// owns the randomness, so tests can fix it); it is used only when neither
/// the override header nor a sticky key decides.
///
/// # Errors
/// [`RouteError::NoRoute`] when no route matches.
pub fn route<H: Headers + ?Sized>(
    table: &RouteTable,
    req: &RequestInfo<'_, H>,
    draw: u64,
) -> Result<Decision, RouteError> {
    let host = req.host.and_then(normalize_host);
    let mut best: Option<(&Arc<Route>, (usize, bool))> = None;
    for r in &table.routes {
        if let Some(len) = r.matches(host, req.path) {
            let score = (len, !r.hosts.is_empty());
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((r, score));
            }
        }
    }
    let Some((r, _)) = best else {
        return Err(RouteError::NoRoute {
            host: shorten(req.host.unwrap_or("(none)")),
            path: shorten(req.path),
        });
    };
    let forced = (table.override_header || r.override_header)
        .then(|| req.headers.get(COHORT_HEADER))
        .flatten()
        .map(str::trim)
        .and_then(|name| {
            r.backends
                .iter()
                .position(|b| b.cohort.as_str().eq_ignore_ascii_case(name))
        });
    let sticky_key = match &r.sticky {
        Some(Sticky::Header(h)) => req.headers.get(h),
        Some(Sticky::Cookie(c)) => req.headers.cookie(c),
        None => None,
    }
    .filter(|k| !k.is_empty());
    let (backend, selected) = match (forced, sticky_key) {
        (Some(i), _) => (i, Selected::Override),
        (None, Some(key)) => (r.pick(sticky_point(key)), Selected::Sticky),
        (None, None) => (r.pick(draw), Selected::Weighted),
    };
    Ok(Decision {
        route: Arc::clone(r),
        backend,
        fallback: r.fallback(backend),
        selected,
    })
}

fn shorten(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::ConfigError;
    use proptest::prelude::*;

    pub(crate) fn backend(cohort: &str, port: u16, weight: f64) -> Backend {
        Backend::new(
            Cohort::parse(cohort).expect("valid cohort"),
            Upstream::parse(&format!("http://127.0.0.1:{port}")).expect("valid url"),
            Weight::from_percent(weight).expect("valid weight"),
        )
    }

    pub(crate) fn two_cohorts(name: &str, stable: f64, canary: f64) -> Route {
        Route::new(
            name,
            RouteMatch::default(),
            None,
            vec![
                backend("stable", 9001, stable).with_revision("s1"),
                backend("canary", 9002, canary).with_revision("c1"),
            ],
        )
        .expect("valid route")
    }

    fn table(routes: Vec<Route>) -> RouteTable {
        RouteTable::new(routes, true, 1).expect("valid table")
    }

    fn routed(
        t: &RouteTable,
        host: Option<&str>,
        path: &str,
        headers: &[(&str, &str)],
        draw: u64,
    ) -> Decision {
        route(t, &RequestInfo::new(host, path, headers), draw).expect("a route matches")
    }

    /// SplitMix64: a fixed, dependency-free source of uniform u64s.
    pub(crate) struct SplitMix(pub u64);
    impl SplitMix {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn weights_parse_percent_at_basis_point_resolution() {
        assert_eq!(Weight::from_percent(80.0), Ok(Weight(8000)));
        assert_eq!(Weight::from_percent(0.01), Ok(Weight(1)));
        assert_eq!(Weight::from_percent(33.33), Ok(Weight(3333)));
        assert_eq!(Weight::from_percent(100.0), Ok(Weight::MAX));
        for bad in [-5.0, 100.01, 33.333, f64::NAN, f64::INFINITY] {
            assert!(Weight::from_percent(bad).is_err(), "{bad}");
        }
        let err = Weight::from_percent(-5.0).expect_err("negative");
        assert_eq!(
            err.to_string(),
            "-5 is not a weight; use a number between 0 and 100 (percent, resolution 0.01)"
        );
        assert_eq!(Weight(8000).to_string(), "80");
        assert_eq!(Weight(1250).to_string(), "12.5");
        assert_eq!(Weight(1).to_string(), "0.01");
        assert_eq!(Weight(1205).to_string(), "12.05");
    }

    #[test]
    fn cohort_names_are_dns_labels() {
        assert_eq!(Cohort::parse("stable"), Ok(Cohort::Stable));
        assert_eq!(Cohort::parse("canary"), Ok(Cohort::Canary));
        assert_eq!(
            Cohort::parse("preview"),
            Ok(Cohort::Other("preview".into()))
        );
        for bad in ["", "Stable", "-a", "a-", "a_b", &"x".repeat(64)] {
            assert!(Cohort::parse(bad).is_err(), "{bad:?}");
        }
    }

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
    fn longest_prefix_on_a_segment_boundary_wins_and_hosts_narrow() {
        let mk = |name: &str, hosts: &[&str], prefix: &str| {
            Route::new(
                name,
                RouteMatch {
                    hosts: hosts.iter().map(|h| h.to_string()).collect(),
                    path_prefix: prefix.to_string(),
                },
                None,
                vec![backend("stable", 9001, 100.0)],
            )
            .expect("valid")
        };
        let t = table(vec![
            mk("root", &[], "/"),
            mk("v1", &[], "/v1/"),
            mk("chat-v1", &["Chat.example.com"], "/v1"),
            mk(
                "chat-completions",
                &["chat.example.com"],
                "/v1/chat/completions",
            ),
        ]);
        let name = |host: Option<&str>, path: &str| {
            routed(&t, host, path, &[], 0).route.name().to_string()
        };
        assert_eq!(name(None, "/v1/models"), "v1");
        assert_eq!(name(None, "/v1"), "v1");
        assert_eq!(name(None, "/v1beta/x"), "root");
        assert_eq!(name(Some("CHAT.example.com:443"), "/v1/models"), "chat-v1");
        assert_eq!(
            name(Some("chat.example.com."), "/v1/chat/completions?x=1"),
            "chat-completions"
        );
        assert_eq!(
            name(Some("other.example.com"), "/v1/chat/completions"),
            "v1"
        );
        assert_eq!(name(Some("chat.example.com"), "/health"), "root");

        let only_hosts = table(vec![mk("chat", &["chat.example.com"], "/")]);
        let err = route(
            &only_hosts,
            &RequestInfo::new(Some("x.example.com"), "/a", &[]),
            0,
        )
        .expect_err("no route");
        assert_eq!(
            err,
            RouteError::NoRoute {
                host: "x.example.com".into(),
                path: "/a".into()
            }
        );
        assert!(route(&only_hosts, &RequestInfo::new(None, "/a", &[]), 0).is_err());
    }

    #[test]
    fn override_header_forces_a_cohort_only_when_enabled_and_known() {
        let mut r = two_cohorts("chat", 100.0, 0.0);
        let t = table(vec![r.clone()]);
        let d = routed(&t, None, "/", &[("X-Weir-Cohort", "Canary")], 0);
        assert_eq!(d.cohort(), &Cohort::Canary);
        assert_eq!(d.selected, Selected::Override);
        // Canary has weight 0 here; stable is its fallback.
        assert_eq!(
            d.fallback_backend().map(|b| &b.cohort),
            Some(&Cohort::Stable)
        );
        let d = routed(&t, None, "/", &[("x-weir-cohort", "nope")], u64::MAX);
        assert_eq!(
            (d.cohort(), d.selected),
            (&Cohort::Stable, Selected::Weighted)
        );

        r = two_cohorts("chat", 100.0, 0.0);
        let disabled = RouteTable::new(vec![r], false, 1).expect("valid");
        let d = routed(&disabled, None, "/", &[("x-weir-cohort", "canary")], 0);
        assert_eq!(d.cohort(), &Cohort::Stable);
    }

    #[test]
    fn fallback_is_the_heaviest_other_backend_with_positive_weight() {
        let r = Route::new(
            "r",
            RouteMatch::default(),
            None,
            vec![
                backend("stable", 1, 50.0),
                backend("canary", 2, 25.0),
                backend("preview", 3, 25.0),
                backend("shadow", 4, 0.0),
            ],
        )
        .expect("valid");
        assert_eq!(
            r.fallback(0),
            Some(2),
            "tie between canary and preview: preview ranks later"
        );
        assert_eq!(r.fallback(1), Some(0));
        assert_eq!(r.fallback(3), Some(0));
        let single = Route::new(
            "s",
            RouteMatch::default(),
            None,
            vec![backend("stable", 1, 100.0)],
        )
        .expect("valid");
        assert_eq!(single.fallback(0), None);
        let two = two_cohorts("t", 100.0, 0.0);
        assert_eq!(two.fallback(0), None, "canary has weight 0");
    }

    #[test]
    fn selection_order_puts_canary_first_and_stable_last() {
        let r = Route::new(
            "r",
            RouteMatch::default(),
            None,
            vec![
                backend("stable", 1, 50.0),
                backend("preview", 3, 25.0),
                backend("canary", 2, 25.0),
            ],
        )
        .expect("valid");
        // [0, 1/4) canary, [1/4, 1/2) preview, [1/2, 1) stable.
        assert_eq!(r.pick(0), 2);
        assert_eq!(r.pick(u64::MAX / 4 - 1), 2);
        assert_eq!(r.pick(u64::MAX / 4 + 2), 1);
        assert_eq!(r.pick(u64::MAX / 2 + 2), 0);
        assert_eq!(r.pick(u64::MAX), 0);
    }

    #[test]
    fn zero_weight_backends_are_never_drawn() {
        let r = two_cohorts("r", 100.0, 0.0);
        let mut rng = SplitMix(7);
        assert!((0..10_000).all(|_| r.pick(rng.next()) == 0));
        let r = two_cohorts("r", 0.0, 100.0);
        assert!((0..10_000).all(|_| r.pick(rng.next()) == 1));
    }

    #[test]
    fn weighted_draws_at_80_20_fall_in_the_binomial_band() {
        let t = table(vec![two_cohorts("chat", 80.0, 20.0)]);
        let n = 20_000u32;
        let mut rng = SplitMix(0x5eed);
        let canary = (0..n)
            .filter(|_| routed(&t, None, "/", &[], rng.next()).cohort() == &Cohort::Canary)
            .count() as f64;
        // Normal approximation to Binomial(n, 0.2); z for a two-sided 99.9% band.
        let (p, nf) = (0.2, f64::from(n));
        let z = 3.290_526_731_491_926;
        let half = z * (nf * p * (1.0 - p)).sqrt();
        let (lo, hi) = (nf * p - half, nf * p + half);
        assert!(
            (lo..=hi).contains(&canary),
            "{canary} outside [{lo:.0}, {hi:.0}]"
        );
        // The band is tight enough to catch a 79/21 bug.
        assert!(hi < 0.21 * nf && lo > 0.19 * nf);
    }

    #[test]
    fn relative_weights_split_in_proportion() {
        let r = two_cohorts("r", 4.0, 1.0);
        assert!((r.share(1) - 0.2).abs() < 1e-12);
        // Exact thresholds: canary is [0, 2^64 / 5).
        let edge = ((1u128 << 64) / 5) as u64;
        assert_eq!(r.pick(edge - 1), 1);
        assert_eq!(r.pick(edge + 1), 0);
    }

    #[test]
    fn xxh64_matches_the_published_test_vectors() {
        // From the xxHash reference implementation: the hash must never change.
        assert_eq!(sticky_point(""), 0xEF46_DB37_51D8_E999);
        assert_eq!(sticky_point("a"), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(sticky_point("abc"), 0x44BC_2CF5_AD77_0999);
    }

    #[test]
    fn sticky_keys_come_from_the_header_or_cookie_and_decide_alone() {
        let header = Route::new(
            "h",
            RouteMatch {
                hosts: vec!["h.example".into()],
                path_prefix: "/".into(),
            },
            Some(Sticky::Header("X-Session-Id".into())),
            vec![backend("stable", 1, 50.0), backend("canary", 2, 50.0)],
        )
        .expect("valid");
        let cookie = Route::new(
            "c",
            RouteMatch {
                hosts: vec!["c.example".into()],
                path_prefix: "/".into(),
            },
            Some(Sticky::Cookie("sid".into())),
            vec![backend("stable", 1, 50.0), backend("canary", 2, 50.0)],
        )
        .expect("valid");
        let t = table(vec![header, cookie]);
        for key in ["alice", "bob", "carol", "dave", "erin"] {
            let want = if (sticky_point(key) as f64) / 2f64.powi(64) < 0.5 {
                Cohort::Canary
            } else {
                Cohort::Stable
            };
            let mut seen = Vec::new();
            for draw in [0, u64::MAX / 3, u64::MAX] {
                let d = routed(&t, Some("h.example"), "/", &[("x-session-id", key)], draw);
                assert_eq!(d.selected, Selected::Sticky);
                seen.push(d.cohort().clone());
                let cookie = format!("theme=dark; sid={key}; x=1");
                let d = routed(&t, Some("c.example"), "/", &[("cookie", &cookie)], draw);
                seen.push(d.cohort().clone());
            }
            assert!(seen.iter().all(|c| c == &want), "{key}: {seen:?}");
        }
        // An empty key is no key.
        let d = routed(&t, Some("h.example"), "/", &[("x-session-id", "")], 0);
        assert_eq!(d.selected, Selected::Weighted);
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

    #[test]
    fn table_rejects_duplicates_and_shadowed_routes() {
        let err = RouteTable::new(
            vec![two_cohorts("a", 1.0, 1.0), two_cohorts("a", 1.0, 1.0)],
            false,
            0,
        )
        .expect_err("duplicate");
        assert!(
            matches!(&err, ConfigError::Invalid { field, problem: Problem::DuplicateRoute { first: 0, .. } } if field == "routes[1].name"),
            "{err}"
        );
        let err = RouteTable::new(
            vec![two_cohorts("a", 1.0, 1.0), two_cohorts("b", 1.0, 1.0)],
            false,
            0,
        )
        .expect_err("shadowed");
        assert!(
            matches!(
                &err,
                ConfigError::Invalid {
                    problem: Problem::ShadowedRoute { by: 0 },
                    ..
                }
            ),
            "{err}"
        );
        let hosted = |name: &str, hosts: &[&str]| {
            Route::new(
                name,
                RouteMatch {
                    hosts: hosts.iter().map(|h| h.to_string()).collect(),
                    path_prefix: "/v1".into(),
                },
                None,
                vec![backend("stable", 1, 100.0)],
            )
            .expect("valid")
        };
        // b's only host is already taken by a: shadowed.
        let err = RouteTable::new(
            vec![
                hosted("a", &["x.example", "y.example"]),
                hosted("b", &["y.example"]),
            ],
            false,
            0,
        )
        .expect_err("shadowed by a superset");
        assert_eq!(
            err.problem().map(|(f, _)| f),
            Some("routes[1].match"),
            "{err}"
        );
        // More specific hosts, or a catch-all after hosts, are reachable.
        for routes in [
            vec![hosted("a", &[]), hosted("b", &["y.example"])],
            vec![hosted("a", &["y.example"]), hosted("b", &[])],
            vec![
                hosted("a", &["x.example"]),
                hosted("b", &["x.example", "y.example"]),
            ],
        ] {
            assert!(RouteTable::new(routes, false, 0).is_ok());
        }
        // An empty table is valid and routes nothing (the file source
        // requires a route; Kubernetes may have no Canary yet).
        let empty = RouteTable::new(vec![], false, 3).expect("empty is valid");
        assert!(matches!(
            route(&empty, &RequestInfo::new(None, "/v1/models", &[]), 0),
            Err(RouteError::NoRoute { .. })
        ));
    }

    #[test]
    fn a_route_may_enable_the_override_header_for_itself() {
        let own = Route::new(
            "own",
            RouteMatch {
                hosts: vec!["own.example".into()],
                path_prefix: "/".into(),
            },
            None,
            vec![backend("stable", 1, 100.0), backend("canary", 2, 0.0)],
        )
        .expect("valid")
        .with_override_header(true);
        let other = two_cohorts("other", 100.0, 0.0);
        let t = RouteTable::new(vec![own, other], false, 1).expect("valid");
        let forced = [("x-weir-cohort", "canary")];
        let d = routed(&t, Some("own.example"), "/", &forced, u64::MAX);
        assert_eq!(
            (d.cohort(), d.selected),
            (&Cohort::Canary, Selected::Override)
        );
        let d = routed(&t, Some("else.example"), "/", &forced, u64::MAX);
        assert_eq!(d.cohort(), &Cohort::Stable, "not on a route without it");
    }

    #[test]
    fn route_rejects_duplicate_cohorts_and_all_zero_weights() {
        let err = Route::new(
            "r",
            RouteMatch::default(),
            None,
            vec![backend("stable", 1, 50.0), backend("stable", 2, 50.0)],
        )
        .expect_err("duplicate cohort");
        assert_eq!(
            err.to_string(),
            "backends[1].cohort: cohort stable appears twice (first at backends[0]); give each backend of a route its own cohort"
        );
        let err = Route::new(
            "r",
            RouteMatch::default(),
            None,
            vec![backend("stable", 1, 0.0)],
        )
        .expect_err("zero");
        assert!(matches!(
            &err,
            ConfigError::Invalid {
                problem: Problem::AllWeightsZero,
                ..
            }
        ));
    }

    #[test]
    fn table_serializes_for_the_admin_api() {
        let t = table(vec![two_cohorts("chat", 80.0, 20.0).with_generation(12)]);
        let v = serde_json::to_value(&t).expect("serializes");
        assert_eq!(v["generation"], 1);
        assert_eq!(v["routes"][0]["name"], "chat");
        assert_eq!(v["routes"][0]["generation"], 12);
        assert_eq!(v["routes"][0]["overrideHeader"], false);
        assert!(v["routes"][0]["backends"][1].get("endpoints").is_none());
        assert_eq!(v["routes"][0]["backends"][1]["cohort"], "canary");
        assert_eq!(v["routes"][0]["backends"][1]["weight"], 20.0);
        assert_eq!(v["routes"][0]["backends"][1]["sharePercent"], 20.0);
        assert_eq!(
            v["routes"][0]["backends"][1]["url"],
            "http://127.0.0.1:9002"
        );
        assert_eq!(v["routes"][0]["match"]["pathPrefix"], "/");
    }

    /// A canary weight in basis points (0..=10000) and a stable weight that
    /// may or may not complement it (weights are relative).
    fn weight_sequence() -> impl Strategy<Value = Vec<(u32, u32)>> {
        prop::collection::vec((0u32..=10_000, 0u32..=10_000), 2..12).prop_map(|mut steps| {
            // Sort by canary share so the sequence only raises it.
            steps.retain(|&(c, s)| c + s > 0);
            steps.sort_by(|a, b| {
                let sa = f64::from(a.0) / f64::from(a.0 + a.1);
                let sb = f64::from(b.0) / f64::from(b.0 + b.1);
                sa.total_cmp(&sb)
            });
            steps
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Raising the canary's share only moves sessions onto the canary:
        /// once a key is on the canary it stays there, and a key is on the
        /// canary exactly when its point is below the canary's share.
        #[test]
        fn raising_the_canary_share_only_moves_sessions_onto_it(
            steps in weight_sequence(),
            keys in prop::collection::vec("[a-zA-Z0-9-]{1,24}", 200),
        ) {
            let mut on_canary = vec![false; keys.len()];
            for (canary, stable) in steps {
                let w = |bp| Weight::from_basis_points(bp).expect("in range");
                let r = Route::new(
                    "r",
                    RouteMatch::default(),
                    Some(Sticky::Header("x-session-id".into())),
                    vec![
                        Backend::new(Cohort::Stable, Upstream::parse("http://a:1").expect("url"), w(stable)),
                        Backend::new(Cohort::Canary, Upstream::parse("http://b:1").expect("url"), w(canary)),
                    ],
                ).expect("valid");
                let t = RouteTable::new(vec![r], false, 0).expect("valid");
                let share = f64::from(canary) / f64::from(canary + stable);
                for (i, key) in keys.iter().enumerate() {
                    let d = route(&t, &RequestInfo::new(None, "/", &[("x-session-id", key.as_str())]), 0)
                        .expect("matches");
                    let now = d.cohort() == &Cohort::Canary;
                    prop_assert!(now || !on_canary[i], "{key} left the canary at share {share}");
                    let u = sticky_point(key) as f64 / 2f64.powi(64);
                    // Exact rule, up to float rounding right at the edge.
                    if (u - share).abs() > 1e-12 {
                        prop_assert_eq!(now, u < share);
                    }
                    on_canary[i] = now;
                }
            }
        }
    }
}
