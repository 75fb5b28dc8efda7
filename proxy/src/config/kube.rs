//! The route table of a Kubernetes cluster: one route per Canary, built
//! from its `status.traffic` and the ready pods of its cohorts' Services.
//!
//! # What is watched
//!
//! - Canaries (every namespace or one, optionally by label selector): the
//!   controller writes the split it wants into `status.traffic`;
//! - EndpointSlices labelled `app.kubernetes.io/managed-by=weir`: the
//!   EndpointSlice controller copies a Service's labels onto its slices, and
//!   weir's cohort Services carry that label, so this selects exactly the
//!   slices of `<canary>-stable` and `<canary>-canary` and nothing of the
//!   rest of the cluster.
//!
//! Both are kube-runtime watchers feeding reflector stores. Every event
//! rebuilds the whole table from the two stores with the pure [`build`] (a
//! few Canaries and their slices: microseconds), and the table is published
//! only when it differs from the one in service, so status churn (analysis
//! results, messages) and slices of other Services never swap tables.
//!
//! # Why these choices
//!
//! - **Pods, not Service IPs.** The proxy balances over the ready endpoints
//!   itself ([`crate::balance`]): kube-proxy's random choice per connection
//!   cannot see that one pod holds ten long generations and another none,
//!   and pooled keep-alive connections would pin the proxy to a few pods.
//! - **Ports per slice.** A Service whose named target port resolves to a
//!   different container port per pod gets one slice per port; the port is
//!   read from each slice (`http` by name, else the Service's number, else
//!   the only one), never assumed from the Service.
//! - **One bad Canary is one missing route.** Invalid traffic or a route
//!   another (older) Canary already takes is left out and reported through
//!   [`ConfigSource::last_error`] and the log, naming the Canary and field;
//!   every other Canary is served. Routes are ordered by creation time, so a
//!   new Canary can never take over an existing route, and every replica
//!   resolves a conflict the same way.
//! - **An outage changes nothing.** While the API server is unreachable the
//!   stores keep their contents, no table is rebuilt, and the watchers
//!   retry with kube-runtime's default backoff (0.8 s doubling to 30 s, with
//!   jitter, so a fleet of proxies does not reconnect in lockstep).
//!   `last_error` says since when and why. On reconnecting, the watcher
//!   resumes or re-lists, and the store replaces whatever changed meanwhile.
//! - **Read-only.** The controller owns the weights; `PUT .../weights` is
//!   refused with a pointer to `weir promote`, `abort` and `pause`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use weir_core::{Cohort, Weight};
use weir_crds::{Canary, Traffic, TrafficBackend, names};

use super::traffic::{self, Target};
use super::{ConfigError, ConfigSource, Problem};
use crate::balance::{Endpoints, Loads};
use crate::route::{Route, RouteTable, Upstream};

/// Which Canaries the source serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only this namespace; `None` for every namespace.
    pub namespace: Option<String>,
    /// Only Canaries matching this label selector (`team=llm,tier!=dev`).
    pub selector: Option<String>,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "Canaries in namespace {ns}")?,
            None => f.write_str("Canaries in all namespaces")?,
        }
        match &self.selector {
            Some(selector) => write!(f, " matching {selector}"),
            None => Ok(()),
        }
    }
}

/// What [`build`] made of the cluster: the routes to serve, in order, and
/// what it left out or ignored.
#[derive(Debug, Default)]
pub struct Built {
    /// One route per usable Canary, oldest Canary first.
    pub routes: Vec<Route>,
    /// A [`ConfigError::Object`] per Canary left out or EndpointSlice
    /// ignored.
    pub problems: Vec<ConfigError>,
}

/// The routes for `canaries`, each backend balancing over the ready
/// endpoints its Service has in `slices`. Endpoints take their in-flight
/// counters from `loads`, which then forgets the addresses no route uses.
/// No I/O.
pub fn build(canaries: &[Arc<Canary>], slices: &[Arc<EndpointSlice>], loads: &mut Loads) -> Built {
    let index = SliceIndex::new(slices);
    let mut ordered: Vec<(&Canary, &str, &Traffic)> = canaries
        .iter()
        .filter_map(|c| {
            let namespace = c.metadata.namespace.as_deref()?;
            let traffic = c.status.as_ref()?.traffic.as_ref()?;
            Some((&**c, namespace, traffic))
        })
        .collect();
    ordered.sort_by_cached_key(|(c, namespace, _)| {
        (
            c.metadata.creation_timestamp.clone(),
            *namespace,
            c.name_any(),
        )
    });

    let mut built = Built::default();
    // `namespace/name` of the Canary behind each accepted route.
    let mut owners: Vec<String> = Vec::new();
    for (canary, namespace, traffic) in ordered {
        let name = canary.name_any();
        let left_out = |e: ConfigError| ConfigError::Object {
            kind: "Canary",
            namespace: namespace.to_string(),
            name: name.clone(),
            outcome: "is left out of the route table",
            source: Box::new(e),
        };
        let route_name = names::route(namespace, &name);
        let route = traffic::route(&route_name, traffic, |b| {
            service_target(namespace, b, &index, loads, &mut built.problems)
        });
        let route = match route {
            Ok(route) => route,
            Err(e) => {
                built.problems.push(left_out(e.within("status.traffic")));
                continue;
            }
        };
        if let Some(by) = built.routes.iter().position(|r| route.is_shadowed_by(r)) {
            built.problems.push(left_out(ConfigError::invalid(
                "status.traffic.route",
                Problem::ShadowedByCanary {
                    by: owners[by].clone(),
                },
            )));
            continue;
        }
        owners.push(format!("{namespace}/{name}"));
        built.routes.push(route);
    }
    let live: HashSet<SocketAddr> = built
        .routes
        .iter()
        .flat_map(|r| r.backends())
        .filter_map(|b| b.endpoints.as_ref())
        .flat_map(|set| set.as_slice().iter().map(|e| e.addr()))
        .collect();
    loads.prune(&live);
    built
}

/// EndpointSlices by the namespace and Service they belong to.
struct SliceIndex<'a>(HashMap<&'a str, HashMap<&'a str, Vec<&'a EndpointSlice>>>);

impl<'a> SliceIndex<'a> {
    fn new(slices: &'a [Arc<EndpointSlice>]) -> Self {
        let mut index: HashMap<&str, HashMap<&str, Vec<&EndpointSlice>>> = HashMap::new();
        for slice in slices {
            let namespace = slice.metadata.namespace.as_deref();
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(names::SERVICE_NAME_LABEL));
            if let (Some(namespace), Some(service)) = (namespace, service) {
                index
                    .entry(namespace)
                    .or_default()
                    .entry(service)
                    .or_default()
                    .push(slice);
            }
        }
        for slices in index.values_mut().flat_map(HashMap::values_mut) {
            slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        SliceIndex(index)
    }

    fn of(&self, namespace: &str, service: &str) -> &[&'a EndpointSlice] {
        self.0
            .get(namespace)
            .and_then(|services| services.get(service))
            .map_or(&[], Vec::as_slice)
    }
}

/// Kubernetes mode's target: the ready endpoints of the backend's Service,
/// shown as `http://<service>.<namespace>.svc:<port>`. Slices that cannot
/// be read are skipped and reported in `problems`.
fn service_target(
    namespace: &str,
    backend: &TrafficBackend,
    index: &SliceIndex<'_>,
    loads: &mut Loads,
    problems: &mut Vec<ConfigError>,
) -> Result<Target, ConfigError> {
    let missing = |field: &str, hint| ConfigError::invalid(field, Problem::Missing { hint });
    let service = backend.service.as_deref().ok_or_else(|| {
        missing(
            "service",
            "the weir controller writes each cohort's Service here in Kubernetes mode",
        )
    })?;
    let port = backend.port.ok_or_else(|| {
        missing(
            "port",
            "the weir controller writes the Service's port here in Kubernetes mode",
        )
    })?;
    let upstream = Upstream::parse(&format!("http://{service}.{namespace}.svc:{port}"))
        .map_err(|p| ConfigError::invalid("service", p))?;
    let mut endpoints = Vec::new();
    for slice in index.of(namespace, service) {
        match ready_addresses(slice, port) {
            Ok(addrs) => endpoints.extend(addrs.into_iter().map(|a| loads.endpoint(a))),
            Err(e) => problems.push(ConfigError::Object {
                kind: "EndpointSlice",
                namespace: namespace.to_string(),
                name: slice.name_any(),
                outcome: "is ignored",
                source: Box::new(e),
            }),
        }
    }
    Ok(Target {
        upstream,
        endpoints: Some(Endpoints::new(endpoints)),
    })
}

/// The addresses of the slice's endpoints that are not known to be unready
/// (Kubernetes: a missing `ready` means ready), on the slice's port.
fn ready_addresses(
    slice: &EndpointSlice,
    service_port: u16,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let port = slice_port(slice.ports.as_deref().unwrap_or_default(), service_port)
        .map_err(|p| ConfigError::invalid("ports", p))?;
    let mut out = Vec::new();
    for (i, endpoint) in slice.endpoints.iter().enumerate() {
        if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
            continue;
        }
        for (j, address) in endpoint.addresses.iter().enumerate() {
            let ip: IpAddr = address.parse().map_err(|_| {
                ConfigError::invalid(
                    format!("endpoints[{i}].addresses[{j}]"),
                    Problem::NotAnIp {
                        value: address.clone(),
                    },
                )
            })?;
            out.push(SocketAddr::new(ip, port));
        }
    }
    Ok(out)
}

/// The slice's port for the Service: the TCP port named `http`, else the
/// one numbered `service_port`, else the only one.
fn slice_port(ports: &[EndpointPort], service_port: u16) -> Result<u16, Problem> {
    let tcp: Vec<(Option<&str>, u16)> = ports
        .iter()
        .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
        .filter_map(|p| Some((p.name.as_deref(), u16::try_from(p.port?).ok()?)))
        .collect();
    if let Some(&(_, n)) = tcp
        .iter()
        .find(|(name, _)| *name == Some(names::SERVICE_PORT))
    {
        return Ok(n);
    }
    if tcp.iter().any(|&(_, n)| n == service_port) {
        return Ok(service_port);
    }
    match tcp.as_slice() {
        [(_, n)] => Ok(*n),
        _ => Err(Problem::NoSlicePort {
            port: service_port,
            found: tcp.len(),
        }),
    }
}

/// The two watches, by index into [`State::outages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    Canaries = 0,
    Slices = 1,
}

/// A watch that keeps failing.
#[derive(Debug, Clone)]
struct Outage {
    since: jiff::Timestamp,
    reason: String,
}

/// What a watcher event means for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// A (re-)list is under way: the store changes at its end.
    Listing,
    /// A (re-)list ended: the store holds all objects.
    Listed,
    /// One object changed.
    Changed,
}

impl<K> From<&watcher::Event<K>> for Seen {
    fn from(event: &watcher::Event<K>) -> Self {
        match event {
            watcher::Event::Init | watcher::Event::InitApply(_) => Seen::Listing,
            watcher::Event::InitDone => Seen::Listed,
            watcher::Event::Apply(_) | watcher::Event::Delete(_) => Seen::Changed,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Of the table in service; +1 per published table.
    generation: u64,
    loads: Loads,
    /// From the last build.
    problems: Vec<Arc<ConfigError>>,
    outages: [Option<Outage>; 2],
}

/// A [`ConfigSource`] that serves the Canaries of a Kubernetes cluster.
/// [`KubeSource::run`] does the watching; until its first full list the
/// table is empty and [`ConfigSource::ready`] is false.
pub struct KubeSource {
    client: Client,
    scope: Scope,
    tx: watch::Sender<Arc<RouteTable>>,
    synced: watch::Sender<bool>,
    state: Mutex<State>,
}

impl fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeSource")
            .field("scope", &self.scope)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl KubeSource {
    /// A source watching `scope` through `client`, serving an empty table
    /// until [`KubeSource::run`] has listed everything once.
    pub fn new(client: Client, scope: Scope) -> Self {
        let empty = RouteTable::new(Vec::new(), false, 0)
            .unwrap_or_else(|_| unreachable!("an empty table has no duplicate or shadowed route"));
        KubeSource {
            client,
            scope,
            tx: watch::channel(Arc::new(empty)).0,
            synced: watch::channel(false).0,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every write under the lock is a whole assignment: a panic cannot
        // leave the state half-updated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves once the first full list of Canaries and EndpointSlices
    /// has been turned into a table.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// Watches Canaries and EndpointSlices and publishes a table whenever
    /// what they route changes. Runs until the returned future is dropped.
    pub async fn run(&self) {
        let (canary_api, slice_api) = match &self.scope.namespace {
            Some(ns) => (
                Api::<Canary>::namespaced(self.client.clone(), ns),
                Api::<EndpointSlice>::namespaced(self.client.clone(), ns),
            ),
            None => (
                Api::<Canary>::all(self.client.clone()),
                Api::<EndpointSlice>::all(self.client.clone()),
            ),
        };
        let mut canary_config = watcher::Config::default();
        if let Some(selector) = &self.scope.selector {
            canary_config = canary_config.labels(selector);
        }
        let slice_config =
            watcher::Config::default().labels(&format!("{}={}", names::MANAGED_BY, names::MANAGER));
        let (canaries, canary_writer) = reflector::store::<Canary>();
        let (slices, slice_writer) = reflector::store::<EndpointSlice>();
        let canary_events = watcher(canary_api, canary_config)
            .default_backoff()
            .modify(|c: &mut Canary| c.managed_fields_mut().clear())
            .reflect(canary_writer)
            .map(|e| (Feed::Canaries, e.map(|event| Seen::from(&event))));
        let slice_events = watcher(slice_api, slice_config)
            .default_backoff()
            .modify(|s: &mut EndpointSlice| s.managed_fields_mut().clear())
            .reflect(slice_writer)
            .map(|e| (Feed::Slices, e.map(|event| Seen::from(&event))));
        let mut events = pin!(futures::stream::select(canary_events, slice_events));
        let mut listed = [false; 2];
        while let Some((feed, event)) = events.next().await {
            match event {
                Err(e) => self.watch_failed(feed, &e),
                Ok(seen) => {
                    self.watch_answered(feed);
                    if seen == Seen::Listed {
                        listed[feed as usize] = true;
                    }
                    if seen != Seen::Listing && listed == [true, true] {
                        self.rebuild(&canaries, &slices);
                    }
                }
            }
        }
        tracing::error!(
            "the Kubernetes watches ended; the route table no longer follows the cluster"
        );
    }

    fn watch_failed(&self, feed: Feed, e: &watcher::Error) {
        // An expired resourceVersion is routine: the watcher re-lists.
        if let watcher::Error::WatchError(status) = e
            && status.code == 410
        {
            tracing::debug!(?feed, error = %e, "watch expired; re-listing");
            return;
        }
        let reason = e.to_string();
        let mut state = self.state();
        match &mut state.outages[feed as usize] {
            Some(outage) => {
                tracing::debug!(?feed, error = %reason, "Kubernetes watch still failing");
                outage.reason = reason;
            }
            slot @ None => {
                tracing::warn!(?feed, error = %reason, "Kubernetes watch failed; keeping the last good route table and retrying with backoff");
                *slot = Some(Outage {
                    since: jiff::Timestamp::now(),
                    reason,
                });
            }
        }
    }

    fn watch_answered(&self, feed: Feed) {
        if let Some(outage) = self.state().outages[feed as usize].take() {
            tracing::info!(?feed, since = %outage.since, "Kubernetes watch answers again");
        }
    }

    /// Builds the table from the stores; publishes it if it routes
    /// differently from the one in service.
    fn rebuild(&self, canaries: &Store<Canary>, slices: &Store<EndpointSlice>) {
        let mut state = self.state();
        let built = build(&canaries.state(), &slices.state(), &mut state.loads);
        let problems: Vec<Arc<ConfigError>> = built.problems.into_iter().map(Arc::new).collect();
        let known: HashSet<String> = state.problems.iter().map(|p| p.to_string()).collect();
        for p in &problems {
            let text = p.to_string();
            if !known.contains(&text) {
                tracing::warn!(problem = %text, "Kubernetes object not served as it is");
            }
        }
        state.problems = problems;
        let table = match RouteTable::new(built.routes, false, state.generation) {
            Ok(table) => table,
            Err(e) => {
                // build() leaves out shadowed routes and names are unique
                // per namespace: a bug, not a cluster problem.
                tracing::error!(error = %e, "route table refused; keeping the last good one");
                return;
            }
        };
        if self.tx.borrow().routes() != table.routes() {
            state.generation += 1;
            let generation = state.generation;
            let routes = table.routes().len();
            self.tx
                .send_replace(Arc::new(table.with_generation(generation)));
            tracing::info!(generation, routes, "route table rebuilt from the cluster");
        }
        drop(state);
        self.synced.send_replace(true);
    }
}

impl ConfigSource for KubeSource {
    fn subscribe(&self) -> watch::Receiver<Arc<RouteTable>> {
        self.tx.subscribe()
    }

    /// The oldest failing watch (since when, and its last error), then
    /// every Canary left out and EndpointSlice ignored.
    fn last_error(&self) -> Option<Arc<ConfigError>> {
        let state = self.state();
        let outage = state
            .outages
            .iter()
            .flatten()
            .min_by_key(|o| o.since)
            .map(|o| {
                Arc::new(ConfigError::WatchFailing {
                    since: o.since,
                    reason: o.reason.clone(),
                })
            });
        ConfigError::combine(
            outage
                .into_iter()
                .chain(state.problems.iter().cloned())
                .collect(),
        )
    }

    fn set_weights(
        &self,
        _route: &str,
        _weights: &[(Cohort, Weight)],
    ) -> Result<Arc<RouteTable>, ConfigError> {
        Err(ConfigError::ReadOnly {
            reason: "the weir controller owns the weights in Kubernetes mode: use weir promote / abort / pause",
        })
    }

    fn describe(&self) -> String {
        format!("Kubernetes: {}", self.scope)
    }

    fn ready(&self) -> bool {
        *self.synced.borrow()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use weir_crds::{CanarySpec, CanaryStatus, RouteSpec};

    use super::*;

    /// A Canary `ns/name` created at second `created`, with traffic at
    /// `canary` percent to its two cohort Services on port 8000.
    fn canary(ns: &str, name: &str, created: i64, canary: f64) -> Arc<Canary> {
        let backend = |cohort: weir_crds::Cohort, weight| TrafficBackend {
            cohort,
            service: Some(names::service(name, cohort)),
            port: Some(8000),
            url: None,
            weight,
            revision: Some(format!("{}-rev", cohort.as_str())),
            model: None,
        };
        let spec: CanarySpec = serde_json::from_value(serde_json::json!({
            "targetRef": {"name": name},
            "service": {"port": 8000},
            "strategy": {"canary": {"steps": [{"setWeight": 20}]}},
            "analysis": {"metrics": [{"name": "ttft", "kind": "latency", "maxIncrease": "10%"}]}
        }))
        .expect("a valid spec");
        let mut c = Canary::new(name, spec);
        c.metadata.namespace = Some(ns.into());
        c.metadata.creation_timestamp = Some(Time(
            jiff::Timestamp::from_second(1_700_000_000 + created).expect("a time"),
        ));
        c.status = Some(CanaryStatus {
            traffic: Some(Traffic {
                generation: 7,
                route: RouteSpec {
                    hosts: vec![format!("{name}.example.com")],
                    path_prefix: "/v1".into(),
                    model: None,
                },
                sticky: None,
                override_header: false,
                backends: vec![
                    backend(weir_crds::Cohort::Stable, 100.0 - canary),
                    backend(weir_crds::Cohort::Canary, canary),
                ],
            }),
            ..CanaryStatus::default()
        });
        Arc::new(c)
    }

    /// An EndpointSlice of `service` named `<service>-<suffix>`, labelled
    /// like the envtest helper's, with `(ip, ready)` endpoints and
    /// `(name, number)` ports.
    fn slice(
        ns: &str,
        service: &str,
        suffix: &str,
        endpoints: &[(&str, Option<bool>)],
        ports: &[(Option<&str>, i32)],
    ) -> Arc<EndpointSlice> {
        let mut slice =
            weir_envtest::endpoint_slice(ns, service, IpAddr::from([192, 0, 2, 1]), 1, true);
        slice.metadata.name = Some(format!("{service}-{suffix}"));
        slice.endpoints = endpoints
            .iter()
            .map(|(ip, ready)| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            })
            .collect();
        slice.ports = Some(
            ports
                .iter()
                .map(|(name, port)| EndpointPort {
                    name: name.map(String::from),
                    port: Some(*port),
                    ..EndpointPort::default()
                })
                .collect(),
        );
        Arc::new(slice)
    }

    fn addrs(route: &Route, cohort: Cohort) -> Vec<String> {
        route
            .backend_for(&cohort)
            .and_then(|(_, b)| b.endpoints.as_ref())
            .map(|set| {
                set.as_slice()
                    .iter()
                    .map(|e| e.addr().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn canaries_and_slices_become_routes_over_ready_pods() {
        let canaries = [canary("llm", "chat", 0, 10.0)];
        let slices = [
            slice(
                "llm",
                "chat-stable",
                "a",
                &[
                    ("10.0.0.1", Some(true)),
                    ("10.0.0.2", None),
                    ("10.0.0.3", Some(false)),
                ],
                &[(Some("http"), 8000)],
            ),
            // Another pod of the same Service listens on another port.
            slice(
                "llm",
                "chat-stable",
                "b",
                &[("10.0.0.1", Some(true))],
                &[(Some("http"), 8001)],
            ),
            slice(
                "llm",
                "chat-canary",
                "a",
                &[("10.0.1.1", Some(true))],
                &[(Some("http"), 8000)],
            ),
            // Same Service name in another namespace: not this Canary's.
            slice(
                "other",
                "chat-canary",
                "a",
                &[("10.9.9.9", None)],
                &[(None, 8000)],
            ),
        ];
        let built = build(&canaries, &slices, &mut Loads::default());
        assert!(built.problems.is_empty(), "{:?}", built.problems);
        let [route] = built.routes.as_slice() else {
            panic!("one route: {:?}", built.routes);
        };
        assert_eq!(route.name(), "llm.chat");
        assert_eq!(route.generation(), 7);
        assert_eq!(route.hosts(), ["chat.example.com"]);
        assert_eq!(
            addrs(route, Cohort::Stable),
            ["10.0.0.1:8000", "10.0.0.1:8001", "10.0.0.2:8000"],
            "not-ready 10.0.0.3 is out; a missing condition counts as ready"
        );
        assert_eq!(addrs(route, Cohort::Canary), ["10.0.1.1:8000"]);
        let (_, stable) = route.backend_for(&Cohort::Stable).expect("stable");
        assert_eq!(stable.upstream.url(), "http://chat-stable.llm.svc:8000");
        assert_eq!(stable.weight.basis_points(), 9000);
        assert_eq!(stable.revision.as_deref(), Some("stable-rev"));
    }

    #[test]
    fn a_service_without_slices_has_an_empty_endpoint_set() {
        let built = build(
            &[canary("llm", "chat", 0, 10.0)],
            &[],
            &mut Loads::default(),
        );
        let (_, canary) = built.routes[0]
            .backend_for(&Cohort::Canary)
            .expect("canary");
        assert_eq!(
            canary.endpoints.as_ref().map(Endpoints::is_empty),
            Some(true)
        );
    }

    #[test]
    fn the_slice_port_is_http_else_the_service_port_else_the_only_one() {
        let port = |name: Option<&str>, number| EndpointPort {
            name: name.map(String::from),
            port: Some(number),
            ..EndpointPort::default()
        };
        let udp = EndpointPort {
            protocol: Some("UDP".into()),
            ..port(Some("http"), 53)
        };
        assert_eq!(
            slice_port(
                &[port(Some("metrics"), 9400), port(Some("http"), 8123)],
                8000
            ),
            Ok(8123)
        );
        assert_eq!(
            slice_port(
                &[port(Some("metrics"), 9400), port(Some("web"), 8000)],
                8000
            ),
            Ok(8000)
        );
        assert_eq!(slice_port(&[port(Some("web"), 8123)], 8000), Ok(8123));
        assert_eq!(slice_port(&[udp.clone(), port(None, 8124)], 8000), Ok(8124));
        assert_eq!(
            slice_port(&[port(Some("a"), 1), port(Some("b"), 2)], 8000),
            Err(Problem::NoSlicePort {
                port: 8000,
                found: 2
            })
        );
        assert_eq!(
            slice_port(&[udp], 8000),
            Err(Problem::NoSlicePort {
                port: 8000,
                found: 0
            })
        );
    }

    #[test]
    fn an_unreadable_slice_is_ignored_and_reported_while_the_route_is_served() {
        let slices = [
            slice(
                "llm",
                "chat-stable",
                "a",
                &[("10.0.0.1", None)],
                &[(Some("a"), 1), (Some("b"), 2)],
            ),
            slice(
                "llm",
                "chat-stable",
                "b",
                &[("10.0.0.2", None)],
                &[(Some("http"), 8000)],
            ),
            slice(
                "llm",
                "chat-canary",
                "a",
                &[("pod.example", None)],
                &[(Some("http"), 8000)],
            ),
        ];
        let built = build(
            &[canary("llm", "chat", 0, 10.0)],
            &slices,
            &mut Loads::default(),
        );
        assert_eq!(built.routes.len(), 1);
        assert_eq!(addrs(&built.routes[0], Cohort::Stable), ["10.0.0.2:8000"]);
        let texts: Vec<String> = built.problems.iter().map(ToString::to_string).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(
            texts[0].starts_with(
                "EndpointSlice llm/chat-stable-a is ignored: ports: no port named http"
            ),
            "{texts:?}"
        );
        assert!(
            texts[1].starts_with("EndpointSlice llm/chat-canary-a is ignored: endpoints[0].addresses[0]: \"pod.example\" is not an IP address"),
            "{texts:?}"
        );
    }

    #[test]
    fn a_shadowed_canary_is_left_out_while_the_others_are_served() {
        let mut copy = (*canary("team-b", "chat", 5, 50.0)).clone();
        // Same hosts and prefix as team-a's older Canary.
        if let Some(t) = copy.status.as_mut().and_then(|s| s.traffic.as_mut()) {
            t.route.hosts = vec!["chat.example.com".into()];
        }
        let canaries = [
            Arc::new(copy),
            canary("team-a", "embed", 1, 0.0),
            canary("team-a", "chat", 0, 10.0),
        ];
        let built = build(&canaries, &[], &mut Loads::default());
        let served: Vec<&str> = built.routes.iter().map(Route::name).collect();
        assert_eq!(served, ["team-a.chat", "team-a.embed"], "oldest first");
        let [problem] = built.problems.as_slice() else {
            panic!("one problem: {:?}", built.problems);
        };
        assert_eq!(
            problem.to_string(),
            "Canary team-b/chat is left out of the route table: status.traffic.route: Canary team-a/chat already routes the same hosts and pathPrefix, so this route would never be chosen; give one of them other hosts or another pathPrefix"
        );
        // Its table is valid as a whole.
        assert!(RouteTable::new(built.routes, false, 1).is_ok());
    }

    #[test]
    fn invalid_traffic_is_reported_with_the_canary_and_field() {
        let mut bad = (*canary("llm", "bad", 0, 10.0)).clone();
        if let Some(t) = bad.status.as_mut().and_then(|s| s.traffic.as_mut()) {
            t.backends[1].weight = 150.0;
            t.route.hosts = vec!["bad.example.com".into()];
        }
        let mut no_service = (*canary("llm", "lost", 0, 10.0)).clone();
        if let Some(t) = no_service.status.as_mut().and_then(|s| s.traffic.as_mut()) {
            t.backends[0].service = None;
        }
        let mut no_traffic = (*canary("llm", "new", 0, 10.0)).clone();
        no_traffic.status = None;
        let canaries = [
            Arc::new(bad),
            Arc::new(no_service),
            Arc::new(no_traffic),
            canary("llm", "good", 1, 10.0),
        ];
        let built = build(&canaries, &[], &mut Loads::default());
        assert_eq!(built.routes.len(), 1);
        assert_eq!(built.routes[0].name(), "llm.good");
        let texts: Vec<String> = built.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "Canary llm/bad is left out of the route table: status.traffic.backends[1].weight: 150 is not a weight; use a number between 0 and 100 (percent, resolution 0.01)",
                "Canary llm/lost is left out of the route table: status.traffic.backends[0].service: is missing; the weir controller writes each cohort's Service here in Kubernetes mode",
            ]
        );
    }

    /// A source whose client points nowhere: `run` is never called, the
    /// test drives the bookkeeping the watch loop drives.
    fn offline_source() -> KubeSource {
        let uri = "http://127.0.0.1:9".parse().expect("a URI");
        // One crypto provider for the process (see the workspace's rustls).
        #[cfg(feature = "tls")]
        pingora::tls::install_default_crypto_provider();
        let client = Client::try_from(kube::Config::new(uri)).expect("a client");
        KubeSource::new(
            client,
            Scope {
                namespace: Some("llm".into()),
                selector: Some("team=chat".into()),
            },
        )
    }

    #[tokio::test]
    async fn failing_watches_are_reported_since_the_first_failure_until_answered() {
        let source = offline_source();
        assert_eq!(
            source.describe(),
            "Kubernetes: Canaries in namespace llm matching team=chat"
        );
        assert!(!source.ready(), "not ready before the first list");
        assert!(source.last_error().is_none());
        let gone =
            kube::core::Status::failure("too old resource version", "Expired").with_code(410);
        source.watch_failed(Feed::Canaries, &watcher::Error::WatchError(Box::new(gone)));
        assert!(source.last_error().is_none(), "an expired watch is routine");

        source.watch_failed(Feed::Slices, &watcher::Error::NoResourceVersion);
        let first = source.last_error().expect("an outage").to_string();
        assert!(
            first.starts_with("cannot watch the Kubernetes API since "),
            "{first}"
        );
        assert!(first.contains("no metadata.resourceVersion"), "{first}");
        let since = first
            .strip_prefix("cannot watch the Kubernetes API since ")
            .and_then(|rest| rest.split_once(": "))
            .map(|(since, _)| since)
            .expect("a timestamp");
        let parsed: jiff::Timestamp = since.parse().expect("an RFC 3339 timestamp");
        assert_eq!(parsed.subsec_nanosecond(), 0, "to the second: {since}");
        source.watch_failed(Feed::Slices, &watcher::Error::NoResourceVersion);
        assert_eq!(
            source.last_error().expect("still out").to_string(),
            first,
            "since stays the first failure"
        );
        source.watch_answered(Feed::Slices);
        assert!(source.last_error().is_none());

        let err = source.set_weights("llm.chat", &[]).expect_err("read-only");
        assert_eq!(
            err.to_string(),
            "weights cannot be set here: the weir controller owns the weights in Kubernetes mode: use weir promote / abort / pause"
        );
    }

    #[tokio::test]
    async fn a_table_is_published_only_when_routing_changes() {
        let source = offline_source();
        let mut rx = source.subscribe();
        let (canaries, mut canary_writer) = reflector::store::<Canary>();
        let (slices, mut slice_writer) = reflector::store::<EndpointSlice>();
        let mut apply = |c: &Arc<Canary>| {
            canary_writer.apply_watcher_event(&watcher::Event::Apply((**c).clone()));
        };
        // The first list: no Canary. Ready, with the empty table.
        source.rebuild(&canaries, &slices);
        assert!(source.ready());
        assert!(!rx.has_changed().expect("open"));

        apply(&canary("llm", "chat", 0, 10.0));
        source.rebuild(&canaries, &slices);
        assert_eq!(rx.borrow_and_update().generation(), 1);

        // Status churn that leaves the traffic alone: nothing published.
        let mut busy = (*canary("llm", "chat", 0, 10.0)).clone();
        if let Some(status) = busy.status.as_mut() {
            status.message = "step 2/7: analysis, 812/1000 samples".into();
        }
        apply(&Arc::new(busy));
        // A slice of a Service no Canary routes to: nothing published.
        let other = slice(
            "llm",
            "unrelated",
            "a",
            &[("10.0.9.9", None)],
            &[(None, 80)],
        );
        slice_writer.apply_watcher_event(&watcher::Event::Apply((*other).clone()));
        source.rebuild(&canaries, &slices);
        assert!(!rx.has_changed().expect("open"));

        // A ready pod for the canary: published.
        let pod = slice(
            "llm",
            "chat-canary",
            "a",
            &[("10.0.1.1", None)],
            &[(None, 8000)],
        );
        slice_writer.apply_watcher_event(&watcher::Event::Apply((*pod).clone()));
        source.rebuild(&canaries, &slices);
        assert_eq!(rx.borrow_and_update().generation(), 2);
        // A weight change: published.
        apply(&canary("llm", "chat", 0, 30.0));
        source.rebuild(&canaries, &slices);
        let table = rx.borrow_and_update().clone();
        assert_eq!(table.generation(), 3);
        let (_, c) = table.routes()[0]
            .backend_for(&Cohort::Canary)
            .expect("canary");
        assert_eq!(c.weight.basis_points(), 3000);
    }

    #[test]
    fn rebuilds_keep_the_in_flight_counts_of_pods_that_stay() {
        let canaries = [canary("llm", "chat", 0, 10.0)];
        let pods = |ips: &[&'static str]| {
            let eps: Vec<(&str, Option<bool>)> = ips.iter().map(|ip| (*ip, None)).collect();
            vec![slice(
                "llm",
                "chat-stable",
                "a",
                &eps,
                &[(Some("http"), 8000)],
            )]
        };
        let mut loads = Loads::default();
        let first = build(&canaries, &pods(&["10.0.0.1", "10.0.0.2"]), &mut loads);
        let (_, stable) = first.routes[0]
            .backend_for(&Cohort::Stable)
            .expect("stable");
        let busy = stable.endpoints.as_ref().expect("endpoints").as_slice()[0].acquire();
        let second = build(&canaries, &pods(&["10.0.0.1", "10.0.0.3"]), &mut loads);
        let (_, stable) = second.routes[0]
            .backend_for(&Cohort::Stable)
            .expect("stable");
        let inflight: Vec<u64> = stable
            .endpoints
            .as_ref()
            .expect("endpoints")
            .as_slice()
            .iter()
            .map(|e| e.inflight())
            .collect();
        assert_eq!(inflight, [1, 0]);
        assert_eq!(loads.len(), 2, "10.0.0.2 is forgotten");
        drop(busy);
    }
}
