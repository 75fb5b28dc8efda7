//! A Canary's `status.traffic` as a proxy [`Route`], in one place.
//!
//! The controller (Kubernetes) and the local runner (`weir run`) both
//! describe the split they want as a `weir_crds::Traffic`; the proxy turns
//! it into a route here, so hosts, sticky keys, weights and revisions mean
//! the same in both modes. Only where a backend's requests go differs, and
//! the caller says that with a function from a traffic backend to a
//! [`Target`]: local mode reads its URL ([`url_target`]), the Kubernetes
//! source looks up the ready pods of its Service.
//!
//! Field paths in errors are relative to the traffic (`backends[1].weight`,
//! `route.hosts[0]`); the caller places them (`status.traffic`).

use weir_core::Weight;
use weir_crds::{Traffic, TrafficBackend};

use super::{ConfigError, Problem};
use crate::balance::Endpoints;
use crate::route::{Backend, Route, RouteMatch, RouteTable, Sticky, Upstream};

/// Where one traffic backend's requests go.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The URL connected to, or the Service's name shown to people.
    pub upstream: Upstream,
    /// The Service's ready pods, when known.
    pub endpoints: Option<Endpoints>,
}

/// Local mode's target: the backend's `url`.
///
/// # Errors
/// [`Problem::Missing`] without a URL, or the URL's own problem, at `url`.
pub fn url_target(backend: &TrafficBackend) -> Result<Target, ConfigError> {
    let url = backend.url.as_deref().ok_or_else(|| {
        ConfigError::invalid(
            "url",
            Problem::Missing {
                hint: "local mode sends requests to the URL of spec.backends",
            },
        )
    })?;
    Ok(Target {
        upstream: Upstream::parse(url).map_err(|p| ConfigError::invalid("url", p))?,
        endpoints: None,
    })
}

/// The route named `name` for `traffic`, its generation that of the
/// traffic, each backend sent where `target` says.
///
/// # Errors
/// The first field that cannot be used, with its path relative to the
/// traffic: a weight, a host, the path prefix, the sticky key, what
/// `target` refuses (at `backends[i]...`), or the route's own rules (every
/// weight zero, a cohort twice).
pub fn route(
    name: &str,
    traffic: &Traffic,
    mut target: impl FnMut(&TrafficBackend) -> Result<Target, ConfigError>,
) -> Result<Route, ConfigError> {
    let mut backends = Vec::with_capacity(traffic.backends.len());
    for (i, b) in traffic.backends.iter().enumerate() {
        let at = |e: ConfigError| e.within(&format!("backends[{i}]"));
        let weight =
            Weight::from_percent(b.weight).map_err(|p| at(ConfigError::invalid("weight", p)))?;
        let Target {
            upstream,
            endpoints,
        } = target(b).map_err(at)?;
        let mut backend = Backend::new(b.cohort.into(), upstream, weight);
        if let Some(revision) = b.revision.as_deref().filter(|r| !r.is_empty()) {
            backend = backend.with_revision(revision);
        }
        if let Some(endpoints) = endpoints {
            backend = backend.with_endpoints(endpoints);
        }
        if let Some(model) = &b.model {
            backend = backend.with_model(model.as_str());
        }
        backends.push(backend);
    }
    let sticky = match &traffic.sticky {
        None => None,
        Some(s) => match (&s.header, &s.cookie) {
            (Some(h), None) => Some(Sticky::Header(h.clone())),
            (None, Some(c)) => Some(Sticky::Cookie(c.clone())),
            // The CRD refuses both; an empty sticky asks for nothing.
            (Some(_), Some(_)) => return Err(ConfigError::invalid("sticky", Problem::StickyKey)),
            (None, None) => None,
        },
    };
    let matches = RouteMatch {
        hosts: traffic.route.hosts.clone(),
        path_prefix: traffic.route.path_prefix.clone(),
        model: traffic.route.model.clone(),
    };
    let route = Route::new(name, matches, sticky, backends).map_err(match_is_route)?;
    Ok(route
        .with_generation(traffic.generation)
        .with_override_header(traffic.override_header))
}

/// [`Route::new`] calls the match `match` (the file's name for it); in
/// traffic it is `route`.
fn match_is_route(e: ConfigError) -> ConfigError {
    match e {
        ConfigError::Invalid { field, problem } => {
            let field = match field.strip_prefix("match") {
                Some(rest) => format!("route{rest}"),
                None => field,
            };
            ConfigError::Invalid { field, problem }
        }
        other => other,
    }
}

/// Local mode's table: one route named `name` to the URLs of `traffic`.
///
/// # Errors
/// As [`route`].
pub fn url_table(name: &str, traffic: &Traffic) -> Result<RouteTable, ConfigError> {
    RouteTable::new(vec![route(name, traffic, url_target)?], false, 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use weir_core::Cohort;
    use weir_crds::{RouteSpec, StickySpec};

    use super::*;

    /// Traffic at `canary` percent, generation `generation`, with URLs.
    pub(crate) fn traffic(generation: u64, canary: f64) -> Traffic {
        let backend = |cohort, weight, port: u16, revision: &str| TrafficBackend {
            cohort,
            service: None,
            port: None,
            url: Some(format!("http://127.0.0.1:{port}")),
            weight,
            revision: Some(revision.into()),
            model: None,
        };
        Traffic {
            generation,
            route: RouteSpec {
                hosts: vec!["chat.example.com".into()],
                path_prefix: "/v1".into(),
                model: None,
            },
            sticky: Some(StickySpec {
                header: Some("X-Session-Id".into()),
                cookie: None,
            }),
            override_header: true,
            backends: vec![
                backend(weir_crds::Cohort::Stable, 100.0 - canary, 9001, "5d8f9c"),
                backend(weir_crds::Cohort::Canary, canary, 9002, "7c1a02"),
            ],
        }
    }

    #[test]
    fn traffic_becomes_one_route_with_its_generation() {
        let t = url_table("llm.chat", &traffic(12, 5.0)).expect("valid");
        let r = t.get("llm.chat").expect("the route");
        assert_eq!(r.generation(), 12);
        assert!(r.override_header());
        assert_eq!(r.hosts(), ["chat.example.com"]);
        assert_eq!(r.path_prefix(), "/v1");
        assert_eq!(r.sticky(), Some(&Sticky::Header("x-session-id".into())));
        let canary = r.backend_for(&Cohort::Canary).expect("canary").1;
        assert_eq!(canary.weight.basis_points(), 500);
        assert_eq!(canary.revision.as_deref(), Some("7c1a02"));
        assert_eq!(canary.upstream.url(), "http://127.0.0.1:9002");
        assert_eq!(canary.endpoints, None);
    }

    #[test]
    fn errors_name_the_traffic_field() {
        let mut t = traffic(1, 5.0);
        t.backends[1].weight = 5.001;
        let err = url_table("r", &t).expect_err("bad weight");
        assert_eq!(err.problem().map(|(f, _)| f), Some("backends[1].weight"));
        let mut t = traffic(1, 5.0);
        t.backends[0].url = None;
        let err = url_table("r", &t).expect_err("no url");
        assert_eq!(
            err.to_string(),
            "backends[0].url: is missing; local mode sends requests to the URL of spec.backends"
        );
        let mut t = traffic(1, 5.0);
        t.route.hosts = vec!["http://x".into()];
        let err = url_table("r", &t).expect_err("bad host");
        assert_eq!(err.problem().map(|(f, _)| f), Some("route.hosts[0]"));
        let mut t = traffic(1, 0.0);
        t.backends[0].weight = 0.0;
        let err = url_table("r", &t).expect_err("all zero");
        assert!(matches!(err.problem(), Some((_, Problem::AllWeightsZero))));
    }

    /// A Canary's two cohorts are the core's, by name and on the wire.
    #[test]
    fn canary_cohorts_convert_to_the_same_names() {
        for c in weir_crds::Cohort::BOTH {
            let core = Cohort::from(c);
            assert_eq!(core.as_str(), c.as_str());
            assert_eq!(
                serde_json::to_string(&core).expect("serializes"),
                serde_json::to_string(&c).expect("serializes")
            );
        }
    }
}
