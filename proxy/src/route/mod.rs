//! The route table and the per-request cohort decision.
//!
//! Everything here is pure: [`route`] takes the table, what it needs of the
//! request, and a random `draw` supplied by the caller, and returns a
//! [`Decision`]. The proxy's `request_filter` calls it once per request and
//! keeps the decision in its context; retries never re-draw it. Tests can
//! therefore check selection exactly (sticky keys, override, fallbacks) and
//! statistically (weighted draws) without a socket.
//!
//! One private submodule per concern; they import each other one way
//! (`table` uses `backend`, `matching` and `choice`; `choice` uses
//! `backend`) and never this module:
//!
//! - `backend`: where a cohort's requests go ([`Upstream`], [`Backend`]);
//! - `matching`: hosts, path prefixes and headers as plain strings
//!   ([`Headers`], [`RequestInfo`], [`normalize_host`]);
//! - `choice`: the selection line that turns a point of `[0, 2^64)` into a
//!   backend, and where sticky keys land ([`sticky_point`]);
//! - `table`: validated [`Route`]s and the [`RouteTable`].
//!
//! This module puts them together: the longest matching prefix wins; on
//! equal prefixes a route that matches the body's `model` beats one that
//! takes any model, then a route that names hosts beats a catch-all, then
//! the earlier route wins; then the override header, the sticky key or the draw
//! picks the backend.

use std::sync::Arc;

use weir_core::Cohort;

mod backend;
mod choice;
mod matching;
mod table;

pub use backend::{Backend, Upstream};
pub use choice::{Selected, sticky_point};
pub use matching::{Headers, RequestInfo, normalize_host};
pub use table::{Route, RouteMatch, RouteTable, Sticky};

/// Name of the request header that forces a cohort when the table enables it;
/// the response carries it too, naming the cohort that served.
pub const COHORT_HEADER: &str = "x-weir-cohort";

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
        &self.route.backends()[self.backend]
    }

    /// The chosen cohort.
    pub fn cohort(&self) -> &Cohort {
        &self.backend().cohort
    }

    /// The fallback backend, if any.
    pub fn fallback_backend(&self) -> Option<&Backend> {
        self.fallback.map(|i| &self.route.backends()[i])
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
    /// No route matches the host and path (and model); the proxy answers
    /// 404.
    #[error("no route matches host {host} and path {path}{}", model.as_ref().map(|m| format!(" for model {m}")).unwrap_or_default())]
    NoRoute {
        /// The model asked for (shortened), when the body named one.
        model: Option<String>,
        /// The host asked for (shortened), or `(none)`.
        host: String,
        /// The path asked for (shortened).
        path: String,
    },
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
    // (prefix length, matches a model, names hosts): higher is more specific.
    type Score = (usize, bool, bool);
    let mut best: Option<(&Arc<Route>, Score)> = None;
    for r in table.routes() {
        if let Some(len) = r.matches(host, req.path, req.model) {
            let score = (len, r.model().is_some(), !r.hosts().is_empty());
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((r, score));
            }
        }
    }
    let Some((r, _)) = best else {
        return Err(RouteError::NoRoute {
            model: req.model.map(shorten),
            host: shorten(req.host.unwrap_or("(none)")),
            path: shorten(req.path),
        });
    };
    let forced = (table.override_header() || r.override_header())
        .then(|| req.headers.get(COHORT_HEADER))
        .flatten()
        .map(str::trim)
        .and_then(|name| {
            r.backends()
                .iter()
                .position(|b| b.cohort.as_str().eq_ignore_ascii_case(name))
        });
    let sticky_key = match r.sticky() {
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
    use proptest::prelude::*;
    use weir_core::Weight;

    use super::*;
    use crate::error::{ConfigError, Problem};

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
    fn a_model_route_takes_only_its_model_and_beats_any_model_routes() {
        let mk = |name: &str, hosts: &[&str], model: Option<&str>| {
            let mut canary = backend("canary", 9002, 100.0);
            if model.is_some() {
                canary = canary.with_model("chat-lora-v8");
            }
            Route::new(
                name,
                RouteMatch {
                    hosts: hosts.iter().map(|h| h.to_string()).collect(),
                    path_prefix: "/v1".into(),
                    model: model.map(str::to_string),
                },
                None,
                vec![canary],
            )
            .expect("valid")
        };
        let t = table(vec![
            mk("pool", &["a.example.com"], None),
            mk("adapter", &[], Some("chat")),
            mk("other", &[], Some("code")),
        ]);
        assert!(t.model_routes());
        let pick = |model: Option<&str>| {
            let info = RequestInfo::new(Some("a.example.com"), "/v1/chat/completions", &[])
                .with_model(model);
            route(&t, &info, 0).map(|d| d.route.name().to_string())
        };
        // The model is more specific than the host.
        assert_eq!(pick(Some("chat")).as_deref(), Ok("adapter"));
        assert_eq!(pick(Some("code")).as_deref(), Ok("other"));
        assert_eq!(pick(Some("chat-base")).as_deref(), Ok("pool"));
        assert_eq!(pick(None).as_deref(), Ok("pool"));
        // Without a route for any model, another model has none.
        let only = table(vec![mk("adapter", &[], Some("chat"))]);
        let info = RequestInfo::new(None, "/v1/x", &[]).with_model(Some("code"));
        let err = route(&only, &info, 0).expect_err("no route");
        assert_eq!(
            err.to_string(),
            "no route matches host (none) and path /v1/x for model code"
        );
        // Same prefix, hosts and model twice: the second could never serve.
        let err = RouteTable::new(
            vec![mk("a", &[], Some("chat")), mk("b", &[], Some("chat"))],
            false,
            0,
        )
        .expect_err("shadowed");
        assert!(err.to_string().starts_with("routes[1].match"), "{err}");
        assert!(!table(vec![mk("pool", &[], None)]).model_routes());
    }

    #[test]
    fn longest_prefix_on_a_segment_boundary_wins_and_hosts_narrow() {
        let mk = |name: &str, hosts: &[&str], prefix: &str| {
            Route::new(
                name,
                RouteMatch {
                    hosts: hosts.iter().map(|h| h.to_string()).collect(),
                    path_prefix: prefix.to_string(),
                    model: None,
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
                model: None,
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
    fn sticky_keys_come_from_the_header_or_cookie_and_decide_alone() {
        let header = Route::new(
            "h",
            RouteMatch {
                hosts: vec!["h.example".into()],
                path_prefix: "/".into(),
                model: None,
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
                model: None,
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
                    model: None,
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
                model: None,
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
