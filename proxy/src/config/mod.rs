//! Where the proxy's routes come from, and how they change while it runs.
//!
//! A [`ConfigSource`] yields validated [`RouteTable`]s over time through a
//! `tokio::sync::watch` channel: the proxy keeps the latest in an `ArcSwap`
//! ([`follow`]) and never sees a table that failed validation. A rejected
//! update keeps the last good table in service and is reported through
//! [`ConfigSource::last_error`] and the log, as DESIGN.md asks of every
//! source ("if the API server is unreachable it keeps the last good table").
//!
//! One implementation per file, like every extension point in weir:
//!
//! - [`mod@file`]: the YAML file of `weir proxy -f`, reloaded when it changes;
//!   `PUT /v1/routes/{name}/weights` writes back into it;
//! - [`memory`]: a table held in memory and replaced by the caller (local
//!   mode's in-process runner, tests);
//! - `kube` (cargo feature `kube`): every Canary's `status.traffic` from the
//!   Kubernetes API, with the ready pods of each cohort's Service.
//!
//! Wire types are not domain types: each source parses its own format and
//! converts with `TryFrom` into [`ProxyConfig`] / [`RouteTable`], whose
//! constructors check every rule once; a Canary's traffic becomes a route
//! in one place, `traffic` (cargo feature `crds`), for local mode and
//! Kubernetes alike. Errors name the field path and say how to fix it
//! ([`ConfigError`], [`Problem`], defined in [`crate::error`] because the
//! route table reports through them too).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use weir_core::{Cohort, Weight};

pub use crate::error::{ConfigError, Problem};
use crate::route::RouteTable;

pub mod file;
#[cfg(feature = "kube")]
pub mod kube;
pub mod memory;
#[cfg(feature = "crds")]
pub mod traffic;

pub use file::FileSource;
#[cfg(feature = "kube")]
pub use kube::KubeSource;
pub use memory::MemorySource;

/// Settings read once at startup. Only the route table changes at runtime;
/// a reload that changes these is applied to routes and reported as needing
/// a restart for the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// The proxy listener.
    pub listen: SocketAddr,
    /// The admin listener (`/metrics`, `/v1/observations`, `/v1/routes`...).
    pub admin: SocketAddr,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// The routes (the override-header switch lives in the table).
    pub table: RouteTable,
}

/// Connection timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait for the next byte from an upstream. Must exceed the worst
    /// inter-token gap, or long generations are cut.
    pub read: Duration,
    /// How long an idle pooled upstream connection is kept. Must be shorter
    /// than the upstream's keep-alive (vLLM closes after 5 s), or requests are
    /// sent on connections the upstream is closing.
    pub idle: Duration,
    /// On SIGTERM, how long open streams may run before the proxy exits.
    pub grace: Duration,
    /// How long a client may take to send a whole request head, from the
    /// moment its connection is ready for one: a kept-alive connection
    /// waits this long for its next request too. A deadline on the whole
    /// head, not on each read, so a client trickling a byte a second is cut
    /// as well. The admin listener uses it too.
    pub header: Duration,
}

impl Timeouts {
    /// Default read timeout.
    pub const DEFAULT_READ: Duration = Duration::from_secs(300);
    /// Default idle timeout (below vLLM's 5 s keep-alive).
    pub const DEFAULT_IDLE: Duration = Duration::from_secs(4);
    /// Default grace period.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
    /// Default request-head deadline (nginx's `client_header_timeout`).
    pub const DEFAULT_HEADER: Duration = Duration::from_secs(60);
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            read: Self::DEFAULT_READ,
            idle: Self::DEFAULT_IDLE,
            grace: Self::DEFAULT_GRACE,
            header: Self::DEFAULT_HEADER,
        }
    }
}

/// A place route tables come from. Implementations are cheap to share
/// (`Arc<dyn ConfigSource>`) and safe to call from any thread.
pub trait ConfigSource: Send + Sync + fmt::Debug {
    /// The current table, and every later accepted one. The receiver starts
    /// marked as seen; `changed()` resolves on the next update.
    fn subscribe(&self) -> watch::Receiver<Arc<RouteTable>>;

    /// The latest refused update, cleared when an update is accepted. The
    /// table in service is always the last good one.
    fn last_error(&self) -> Option<Arc<ConfigError>>;

    /// Replaces the weights of route `route` (`PUT /v1/routes/{name}/weights`)
    /// and publishes the new table, which it returns.
    ///
    /// # Errors
    /// As [`set_weights`]; [`ConfigError::ReadOnly`] for sources whose
    /// weights are owned elsewhere (Kubernetes: the controller); I/O errors
    /// for sources that persist the change.
    fn set_weights(
        &self,
        route: &str,
        weights: &[(Cohort, Weight)],
    ) -> Result<Arc<RouteTable>, ConfigError>;

    /// What the source reads, for logs and `/v1/routes` (`file proxy.yaml`).
    fn describe(&self) -> String;

    /// Whether the source has produced its first real table (`/readyz`):
    /// a source that must first list a cluster serves an empty table until
    /// then, and load balancers should not send it clients yet.
    fn ready(&self) -> bool {
        true
    }
}

/// `table` with the weights of route `route` replaced: one `(cohort,
/// weight)` per cohort of the route, in any order. The generation is
/// unchanged (the source that publishes the table sets it). Pure.
///
/// # Errors
/// [`ConfigError::UnknownRoute`]; [`ConfigError::WeightsMismatch`] for a
/// missing, unknown or repeated cohort; [`ConfigError::Invalid`] with
/// [`Problem::AllWeightsZero`] when every weight is zero.
pub fn set_weights(
    table: &RouteTable,
    route: &str,
    weights: &[(Cohort, Weight)],
) -> Result<RouteTable, ConfigError> {
    let Some(index) = table.routes().iter().position(|r| r.name() == route) else {
        return Err(ConfigError::UnknownRoute {
            route: route.to_string(),
            known: table
                .routes()
                .iter()
                .map(|r| r.name().to_string())
                .collect(),
        });
    };
    let current = &table.routes()[index];
    let mismatch = |reason: String| ConfigError::WeightsMismatch {
        route: route.to_string(),
        reason,
        cohorts: current
            .backends()
            .iter()
            .map(|b| b.cohort.to_string())
            .collect(),
    };
    let mut new = vec![None; current.backends().len()];
    for (cohort, weight) in weights {
        let Some((i, _)) = current.backend_for(cohort) else {
            return Err(mismatch(format!("it has no cohort {cohort}")));
        };
        if new[i].replace(*weight).is_some() {
            return Err(mismatch(format!("cohort {cohort} is given twice")));
        }
    }
    let missing: Vec<String> = current
        .backends()
        .iter()
        .zip(&new)
        .filter(|(_, w)| w.is_none())
        .map(|(b, _)| b.cohort.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(mismatch(format!("no weight for {}", missing.join(", "))));
    }
    let new: Vec<Weight> = new.into_iter().flatten().collect();
    let updated = current
        .with_weights(&new)
        .map_err(|e| e.within(&format!("routes[{index}]")))?;
    Ok(table.with_route(index, updated))
}

/// The body of `PUT /v1/routes/{name}/weights`:
/// `{"weights": {"stable": 90, "canary": 10}}` (percent, resolution 0.01).
///
/// # Errors
/// [`ConfigError::Body`] for malformed JSON, an invalid cohort name or weight.
pub fn parse_weights_body(body: &[u8]) -> Result<Vec<(Cohort, Weight)>, ConfigError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        weights: Pairs,
    }
    let body: Body = serde_json::from_slice(body).map_err(|e| ConfigError::Body {
        reason: e.to_string(),
    })?;
    body.weights
        .0
        .into_iter()
        .map(|(name, value)| {
            let cohort = Cohort::parse(&name).map_err(|p| ConfigError::Body {
                reason: p.to_string(),
            })?;
            let percent = value.as_f64().ok_or_else(|| ConfigError::Body {
                reason: format!("weight of {name} is {value}, not a number"),
            })?;
            let weight = Weight::from_percent(percent).map_err(|p| ConfigError::Body {
                reason: format!("weight of {name}: {p}"),
            })?;
            Ok((cohort, weight))
        })
        .collect()
}

/// A JSON object's entries in order, repeated keys kept (a map would keep
/// only the last and hide the mistake).
struct Pairs(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of cohort: weight")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Pairs, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Pairs(out))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Copies every table `source` publishes into `target` until the source is
/// dropped. The proxy runs this as a background task next to its server;
/// request handlers `load()` from `target` without waiting on anything.
pub async fn follow(
    mut updates: watch::Receiver<Arc<RouteTable>>,
    target: Arc<ArcSwap<RouteTable>>,
) {
    target.store(Arc::clone(&updates.borrow_and_update()));
    while updates.changed().await.is_ok() {
        let table = Arc::clone(&updates.borrow_and_update());
        tracing::info!(generation = table.generation(), "route table updated");
        target.store(table);
    }
}

/// Parses a listen address.
pub(crate) fn parse_addr(field: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.trim().parse().map_err(|_| {
        ConfigError::invalid(
            field,
            Problem::InvalidAddress {
                value: value.to_string(),
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::two_cohorts;

    fn w(p: f64) -> Weight {
        Weight::from_percent(p).expect("valid")
    }

    fn table() -> RouteTable {
        RouteTable::new(
            vec![
                two_cohorts("chat", 80.0, 20.0),
                crate::route::Route::new(
                    "embed",
                    crate::route::RouteMatch {
                        hosts: vec!["embed.example".into()],
                        path_prefix: "/".into(),
                        model: None,
                    },
                    None,
                    vec![crate::route::tests::backend("stable", 9003, 100.0)],
                )
                .expect("valid"),
            ],
            true,
            7,
        )
        .expect("valid")
    }

    #[test]
    fn set_weights_replaces_one_route_and_keeps_the_rest() {
        let t = table();
        let new = set_weights(
            &t,
            "chat",
            &[(Cohort::Canary, w(50.0)), (Cohort::Stable, w(50.0))],
        )
        .expect("valid update");
        let chat = new.get("chat").expect("exists");
        assert_eq!(chat.backends()[0].weight, w(50.0));
        assert_eq!(chat.backends()[1].weight, w(50.0));
        assert_eq!(chat.backends()[1].revision.as_deref(), Some("c1"));
        assert!(
            Arc::ptr_eq(&new.routes()[1], &t.routes()[1]),
            "other routes are shared"
        );
        assert_eq!(new.generation(), 7);
        // The original is untouched.
        assert_eq!(t.get("chat").expect("exists").backends()[1].weight, w(20.0));
    }

    #[test]
    fn set_weights_refuses_unknown_missing_repeated_and_all_zero() {
        let t = table();
        let err = set_weights(&t, "nope", &[]).expect_err("unknown route");
        assert_eq!(
            err.to_string(),
            "no route named \"nope\"; the routes are chat, embed"
        );
        let err = set_weights(&t, "chat", &[(Cohort::Canary, w(10.0))]).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "route chat: no weight for stable; give one weight for each of its cohorts (stable, canary)"
        );
        let preview = Cohort::parse("preview").expect("valid");
        let err = set_weights(&t, "chat", &[(preview, w(10.0))]).expect_err("unknown cohort");
        assert!(
            err.to_string().contains("it has no cohort preview"),
            "{err}"
        );
        let err = set_weights(
            &t,
            "chat",
            &[(Cohort::Canary, w(10.0)), (Cohort::Canary, w(10.0))],
        )
        .expect_err("repeated");
        assert!(err.to_string().contains("given twice"), "{err}");
        let err = set_weights(
            &t,
            "chat",
            &[
                (Cohort::Canary, Weight::NONE),
                (Cohort::Stable, Weight::NONE),
            ],
        )
        .expect_err("all zero");
        assert!(
            matches!(
                err.problem(),
                Some(("routes[0].backends", Problem::AllWeightsZero))
            ),
            "{err}"
        );
    }

    #[test]
    fn weights_body_parses_percentages() {
        let got =
            parse_weights_body(br#"{"weights": {"stable": 90, "canary": 10.5}}"#).expect("valid");
        assert_eq!(
            got,
            vec![(Cohort::Stable, w(90.0)), (Cohort::Canary, w(10.5))]
        );
        for bad in [
            &br#"{"weights": {"stable": -1}}"#[..],
            br#"{"weights": {"Stable": 1}}"#,
            br#"{"weights": {"stable": "1"}}"#,
            br#"{"weight": {}}"#,
            b"nope",
        ] {
            let err = parse_weights_body(bad).expect_err("invalid");
            assert!(err.to_string().starts_with("invalid weights body"), "{err}");
        }
    }

    #[test]
    fn within_builds_field_paths() {
        let e = ConfigError::invalid("backends[1].weight", Problem::NoRoutes).within("routes[0]");
        assert!(matches!(
            e.problem(),
            Some(("routes[0].backends[1].weight", _))
        ));
        let e = ConfigError::invalid("", Problem::NoRoutes).within("routes[2]");
        assert!(matches!(e.problem(), Some(("routes[2]", _))));
        let e = ConfigError::invalid("[3]", Problem::NoRoutes).within("hosts");
        assert!(matches!(e.problem(), Some(("hosts[3]", _))));
    }

    #[tokio::test]
    async fn follow_stores_every_published_table() {
        let (tx, rx) = watch::channel(Arc::new(table()));
        let target = Arc::new(ArcSwap::from_pointee(table().with_generation(0)));
        let task = tokio::spawn(follow(rx, Arc::clone(&target)));
        tokio::task::yield_now().await;
        tx.send_replace(Arc::new(table().with_generation(8)));
        drop(tx);
        task.await.expect("task ends when the source is dropped");
        assert_eq!(target.load().generation(), 8);
    }
}
