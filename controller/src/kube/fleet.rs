//! The proxy fleet as one source of observations.
//!
//! Every proxy replica serves cumulative observations since its own start
//! (`GET /v1/observations`) and the traffic generation of each route it
//! serves. The controller polls every replica (the ready endpoints of the
//! proxy Service's EndpointSlices) once per poll interval and keeps:
//!
//! - one *accumulated* snapshot for the whole fleet: each replica's delta
//!   since its previous poll ([`Snapshot::since`], which treats a new
//!   `instance` as a restart from zero) added to a running total. The total
//!   only grows, whatever replicas come, go or restart, so the per-Canary
//!   [`crate::evidence::Collector`] takes window deltas from it exactly as
//!   local mode does from its one in-process proxy;
//! - per route, the oldest traffic generation any answering replica serves,
//!   which the engine waits for before it scales a cohort down;
//! - per route and cohort, the requests open right now (summed over
//!   replicas), which a drain waits for.
//!
//! [`Accumulator`] is the pure part (tested without sockets); [`Fleet`]
//! wraps it with the polling.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use weir_analysis::observations::{CohortSnapshot, Key, Snapshot};
use weir_crds::CohortReplicas;

/// The fleet's accumulated observations.
#[derive(Debug, Default)]
pub struct Accumulator {
    /// The last snapshot seen of each replica, by its address.
    replicas: HashMap<String, Snapshot>,
    /// Every replica's deltas, added up; `inflight` is the latest sum.
    total: BTreeMap<Key, CohortSnapshot>,
    /// Per route: the generation each replica that answered the latest
    /// round serves (absent: the replica has no such route yet).
    generations: BTreeMap<String, Vec<u64>>,
    /// Replicas that answered the latest round.
    answered: usize,
}

impl Accumulator {
    /// Takes one polling round: the snapshot of every replica that
    /// answered, by address. Replicas that did not answer keep their
    /// earlier contribution and count for nothing else this round.
    pub fn round(&mut self, answers: Vec<(String, Snapshot)>) {
        self.generations.clear();
        self.answered = answers.len();
        let mut inflight: BTreeMap<Key, u64> = BTreeMap::new();
        for (addr, snapshot) in answers {
            let delta = match self.replicas.get(&addr) {
                Some(previous) => snapshot.since(previous),
                None => snapshot.clone(),
            };
            for c in &delta.cohorts {
                let key = c.key();
                match self.total.get_mut(&key) {
                    Some(acc) => {
                        let open = acc.inflight;
                        acc.add(c);
                        acc.inflight = open;
                    }
                    None => {
                        self.total.insert(key.clone(), c.clone());
                    }
                }
                *inflight.entry(key).or_insert(0) += c.inflight;
            }
            for (route, generation) in &snapshot.routes {
                self.generations
                    .entry(route.clone())
                    .or_default()
                    .push(*generation);
            }
            self.replicas.insert(addr, snapshot);
        }
        for (key, c) in &mut self.total {
            c.inflight = inflight.get(key).copied().unwrap_or(0);
        }
    }

    /// The fleet's cumulative observations.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            schema_version: weir_analysis::observations::SCHEMA_VERSION,
            instance: "fleet".into(),
            cohorts: self.total.values().cloned().collect(),
            routes: BTreeMap::new(),
        }
    }

    /// The oldest generation of `route` that every replica of the latest
    /// round serves; `Some(0)` when one of them lacks the route; `None`
    /// when no replica answered (unknown: nothing may be scaled down).
    pub fn applied(&self, route: &str) -> Option<u64> {
        if self.answered == 0 {
            return None;
        }
        match self.generations.get(route) {
            Some(g) if g.len() == self.answered => g.iter().min().copied(),
            _ => Some(0),
        }
    }

    /// Requests open now per cohort of `route`, over the latest round.
    pub fn open(&self, route: &str) -> Option<CohortReplicas> {
        if self.answered == 0 {
            return None;
        }
        let mut open = CohortReplicas::default();
        for ((r, cohort, _), c) in &self.total {
            if r != route {
                continue;
            }
            let n = u32::try_from(c.inflight).unwrap_or(u32::MAX);
            match cohort.as_str() {
                "stable" => open.stable += n,
                "canary" => open.canary += n,
                _ => {}
            }
        }
        Some(open)
    }
}

/// Where the proxies are.
#[derive(Debug, Clone)]
pub struct ProxyService {
    /// The proxy Service's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The proxies' admin port (`/v1/observations`).
    pub admin_port: u16,
}

/// The proxy fleet, polled in the background.
#[derive(Debug, Default)]
pub struct Fleet {
    state: Mutex<Accumulator>,
}

impl Fleet {
    /// The fleet's cumulative observations now.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().snapshot()
    }

    /// See [`Accumulator::applied`].
    pub fn applied(&self, route: &str) -> Option<u64> {
        self.lock().applied(route)
    }

    /// See [`Accumulator::open`].
    pub fn open(&self, route: &str) -> Option<CohortReplicas> {
        self.lock().open(route)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Accumulator> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Polls the proxies every `every` until the task is dropped.
    pub async fn run(&self, client: kube::Client, proxies: ProxyService, every: Duration) {
        let http = reqwest::Client::builder()
            .timeout(every.max(Duration::from_secs(1)))
            .build()
            .unwrap_or_default();
        let slices: Api<EndpointSlice> = Api::namespaced(client, &proxies.namespace);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let addrs = match endpoints(&slices, &proxies).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the proxy endpoints; keeping the last observations");
                    continue;
                }
            };
            let polls = addrs.into_iter().map(|addr| {
                let http = http.clone();
                async move {
                    let url = format!("http://{addr}/v1/observations");
                    let body = http.get(&url).send().await.ok()?.text().await.ok()?;
                    match Snapshot::parse(&body) {
                        Ok(s) => Some((addr.to_string(), s)),
                        Err(e) => {
                            tracing::warn!(proxy = %addr, error = %e, "unreadable observations");
                            None
                        }
                    }
                }
            });
            let answers: Vec<_> = futures::future::join_all(polls)
                .await
                .into_iter()
                .flatten()
                .collect();
            self.lock().round(answers);
        }
    }
}

/// The name of the proxy Service's admin port, when it has one.
pub const ADMIN_PORT_NAME: &str = "admin";

/// The ready endpoints of the proxy Service, on the admin port.
async fn endpoints(
    slices: &Api<EndpointSlice>,
    proxies: &ProxyService,
) -> Result<Vec<SocketAddr>, kube::Error> {
    let list = slices.list(&proxy_slices(&proxies.name)).await?;
    Ok(admin_endpoints(&list.items, proxies.admin_port).ready)
}

/// The list parameters that select the EndpointSlices of Service `service`.
pub fn proxy_slices(service: &str) -> ListParams {
    ListParams::default().labels(&format!(
        "{}={service}",
        weir_crds::names::SERVICE_NAME_LABEL
    ))
}

/// The proxy Service's endpoints on their admin port, split by readiness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminEndpoints {
    /// Ready endpoints (or of unknown readiness, which Kubernetes treats as
    /// ready), sorted, without duplicates.
    pub ready: Vec<SocketAddr>,
    /// Endpoints marked not ready.
    pub not_ready: Vec<SocketAddr>,
}

/// The endpoints of `slices` on each slice's port named `admin` (the
/// proxy Service may expose it), else on `default_port`.
pub fn admin_endpoints(slices: &[EndpointSlice], default_port: u16) -> AdminEndpoints {
    let mut out = AdminEndpoints::default();
    for slice in slices {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(ADMIN_PORT_NAME))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(default_port);
        for ep in &slice.endpoints {
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse().ok()) else {
                continue;
            };
            let addr = SocketAddr::new(ip, port);
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                out.not_ready.push(addr);
            } else {
                out.ready.push(addr);
            }
        }
    }
    for list in [&mut out.ready, &mut out.not_ready] {
        list.sort();
        list.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use weir_analysis::Distribution;
    use weir_core::{Cohort, Outcome};

    use super::*;

    fn snap(
        instance: &str,
        route_gen: &[(&str, u64)],
        entries: &[(&str, &str, u64, u64)],
    ) -> Snapshot {
        Snapshot {
            schema_version: 1,
            instance: instance.into(),
            cohorts: entries
                .iter()
                .map(|(route, cohort, ok, inflight)| CohortSnapshot {
                    route: (*route).into(),
                    cohort: Cohort::parse(cohort).expect("a cohort name"),
                    revision: None,
                    requests: [(Outcome::Ok, *ok)].into_iter().collect(),
                    ttft_seconds: Distribution::new(),
                    inter_token_seconds: Distribution::new(),
                    duration_seconds: Distribution::new(),
                    output_tokens: 0,
                    inflight: *inflight,
                    output_tokens_per_request: Distribution::new(),
                    decode_tokens_per_second: Distribution::new(),
                    length_finishes: 0,
                    empty_answers: 0,
                    tokens_from_usage: 0,
                })
                .collect(),
            routes: route_gen
                .iter()
                .map(|(r, g)| ((*r).to_string(), *g))
                .collect(),
        }
    }

    fn ok(acc: &Accumulator, cohort: &str) -> u64 {
        acc.snapshot()
            .cohorts
            .iter()
            .filter(|c| c.cohort.as_str() == cohort)
            .map(|c| c.requests[Outcome::Ok])
            .sum()
    }

    #[test]
    fn deltas_of_every_replica_add_up_across_restarts_and_departures() {
        let mut acc = Accumulator::default();
        acc.round(vec![
            (
                "a".into(),
                snap("a1", &[("ns.chat", 3)], &[("ns.chat", "stable", 10, 2)]),
            ),
            (
                "b".into(),
                snap("b1", &[("ns.chat", 3)], &[("ns.chat", "stable", 5, 1)]),
            ),
        ]);
        assert_eq!(ok(&acc, "stable"), 15);
        assert_eq!(acc.open("ns.chat").map(|o| o.stable), Some(3));
        // a grows by 4; b restarted (new instance) and served 2 since.
        acc.round(vec![
            (
                "a".into(),
                snap("a1", &[("ns.chat", 4)], &[("ns.chat", "stable", 14, 0)]),
            ),
            (
                "b".into(),
                snap("b2", &[("ns.chat", 4)], &[("ns.chat", "stable", 2, 1)]),
            ),
        ]);
        assert_eq!(ok(&acc, "stable"), 21, "10+5, then +4 and +2");
        assert_eq!(
            acc.open("ns.chat").map(|o| o.stable),
            Some(1),
            "inflight is the latest sum"
        );
        assert_eq!(acc.applied("ns.chat"), Some(4));
        // b leaves: what it served stays counted; the total never shrinks.
        acc.round(vec![(
            "a".into(),
            snap("a1", &[("ns.chat", 5)], &[("ns.chat", "stable", 20, 0)]),
        )]);
        assert_eq!(ok(&acc, "stable"), 27);
        assert_eq!(acc.applied("ns.chat"), Some(5));
    }

    #[test]
    fn applied_is_the_oldest_generation_and_unknown_without_answers() {
        let mut acc = Accumulator::default();
        assert_eq!(acc.applied("ns.chat"), None, "nobody answered yet");
        acc.round(vec![
            ("a".into(), snap("a1", &[("ns.chat", 7)], &[])),
            ("b".into(), snap("b1", &[("ns.chat", 6)], &[])),
        ]);
        assert_eq!(acc.applied("ns.chat"), Some(6));
        acc.round(vec![
            ("a".into(), snap("a1", &[("ns.chat", 7)], &[])),
            ("c".into(), snap("c1", &[], &[])),
        ]);
        assert_eq!(acc.applied("ns.chat"), Some(0), "c has no route yet");
        acc.round(vec![]);
        assert_eq!(acc.applied("ns.chat"), None);
        assert_eq!(acc.open("ns.chat"), None);
    }

    #[test]
    fn admin_endpoints_use_the_port_named_admin_and_split_by_readiness() {
        let slice = |ports: serde_json::Value, endpoints: serde_json::Value| -> EndpointSlice {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "s"}, "addressType": "IPv4",
                "ports": ports, "endpoints": endpoints
            }))
            .expect("slice")
        };
        let named = slice(
            serde_json::json!([{"name": "http", "port": 8080}, {"name": "admin", "port": 9191}]),
            serde_json::json!([
                {"addresses": ["10.0.0.2"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.1"]},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false}},
                {"addresses": ["not-an-ip"]}
            ]),
        );
        let unnamed = slice(
            serde_json::json!([{"name": "http", "port": 8080}]),
            serde_json::json!([{"addresses": ["10.0.0.2"]}]),
        );
        let got = admin_endpoints(&[named, unnamed], 9090);
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(
            got.ready,
            [
                addr("10.0.0.1:9191"),
                addr("10.0.0.2:9090"),
                addr("10.0.0.2:9191")
            ]
        );
        assert_eq!(got.not_ready, [addr("10.0.0.3:9191")]);
    }
}
