//! Fixtures of the Kubernetes tests: a Canary whose `status.traffic` is
//! written through the status subresource (as the controller does),
//! EndpointSlices of its two Services pointing at simulators on the host's
//! own IP (the API server refuses loopback endpoints), and a proxy serving
//! a [`KubeSource`] scoped to the test's namespace (tests of one binary run
//! side by side and must not see each other's Canaries).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use weir_crds::{Canary, Cohort, RouteSpec, Traffic, TrafficBackend, names};
use weir_envtest::TestEnv;
use weir_proxy::config::kube::Scope;
use weir_proxy::{ConfigSource, KubeSource};
use weir_sim::SimHandle;

use super::{Proxy, client, start_proxy};
use weir_test_kit::poll::until;

/// The Canary every test creates.
pub const CANARY: &str = "chat";

/// The Service port written into the traffic (the slices carry the real
/// per-pod ports).
pub const SERVICE_PORT: u16 = 8000;

/// Bound on anything that waits for the API server or a table.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The host's non-loopback IPv4 address, which simulators bind.
pub fn host_ip() -> IpAddr {
    IpAddr::V4(weir_envtest::host_ip().expect("a non-loopback address for the simulators"))
}

/// A simulator on the host's IP that answers at once with one token.
pub async fn host_sim(name: &str) -> SimHandle {
    super::sim_at(host_ip(), name, |c| {
        c.ttft = Duration::ZERO;
        c.itl = Duration::ZERO;
        c.tokens = 1;
    })
    .await
}

/// The route of the test's Canary: `<namespace>.chat`.
pub fn route_name(env: &TestEnv) -> String {
    names::route(&env.namespace, CANARY)
}

/// The Canary, in Kubernetes mode, without status.
pub fn canary() -> Canary {
    weir_envtest::canary(CANARY)
        .spec(serde_json::json!({"service": {"port": SERVICE_PORT}}))
        .build()
}

/// What the controller would write at `canary_percent`, as generation
/// `generation`: both cohorts' Services on [`SERVICE_PORT`].
pub fn traffic(generation: u64, canary_percent: f64) -> Traffic {
    let backend = |cohort: Cohort, weight: f64| TrafficBackend {
        cohort,
        service: Some(names::service(CANARY, cohort)),
        port: Some(SERVICE_PORT),
        url: None,
        weight,
        revision: Some(format!("{}-r{generation}", cohort.as_str())),
        model: None,
    };
    Traffic {
        generation,
        route: RouteSpec::default(),
        sticky: None,
        override_header: false,
        backends: vec![
            backend(Cohort::Stable, 100.0 - canary_percent),
            backend(Cohort::Canary, canary_percent),
        ],
    }
}

/// Creates the Canary in the test's namespace.
pub async fn create_canary(env: &TestEnv) -> Api<Canary> {
    let api: Api<Canary> = Api::namespaced(env.client.clone(), &env.namespace);
    api.create(&PostParams::default(), &canary())
        .await
        .expect("the Canary is created");
    api
}

/// Writes `status.traffic` through the status subresource (merge patch).
pub async fn write_traffic(api: &Api<Canary>, traffic: &Traffic) {
    let patch = serde_json::json!({ "status": { "traffic": traffic } });
    api.patch_status(CANARY, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("the status subresource takes the traffic");
}

/// Creates or replaces (server-side apply) the one-endpoint slice of
/// `cohort`'s Service for `sim`.
pub async fn put_endpoint(env: &TestEnv, cohort: Cohort, sim: &SimHandle, ready: bool) {
    put_endpoint_at(env, cohort, sim.addr(), ready).await;
}

/// [`put_endpoint`] for any address (one nothing listens on, say).
pub async fn put_endpoint_at(env: &TestEnv, cohort: Cohort, addr: SocketAddr, ready: bool) {
    let slice = weir_envtest::endpoint_slice(
        &env.namespace,
        &names::service(CANARY, cohort),
        addr.ip(),
        addr.port(),
        ready,
    );
    let name = slice.metadata.name.clone().expect("the helper names it");
    let api: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(env.client.clone(), &env.namespace);
    api.patch(
        &name,
        &PatchParams::apply("weir-proxy-tests").force(),
        &Patch::Apply(&slice),
    )
    .await
    .expect("the API server takes the EndpointSlice");
}

/// A proxy serving a [`KubeSource`] of the test's namespace; the watch runs
/// on the test's runtime until this is dropped.
#[derive(Debug)]
pub struct KubeProxy {
    pub proxy: Proxy,
    pub source: Arc<KubeSource>,
    watching: tokio::task::JoinHandle<()>,
}

impl Drop for KubeProxy {
    fn drop(&mut self) {
        self.watching.abort();
    }
}

/// Installs the Canary CRD, starts the source and the proxy; returns once
/// the source has listed the namespace (`/readyz` is 200).
pub async fn start_kube_proxy(env: &TestEnv) -> KubeProxy {
    weir_envtest::install_canary_crd(&env.client)
        .await
        .expect("the Canary CRD installs");
    let source = Arc::new(KubeSource::new(
        env.client.clone(),
        Scope {
            namespace: Some(env.namespace.clone()),
            selector: None,
        },
    ));
    let watching = {
        let source = Arc::clone(&source);
        tokio::spawn(async move { source.run().await })
    };
    let proxy = start_proxy(Arc::clone(&source) as Arc<dyn ConfigSource>).await;
    let admin = proxy.admin;
    let client = client();
    until("the proxy to be ready", PATIENCE, || {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://{admin}/readyz"))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
    KubeProxy {
        proxy,
        source,
        watching,
    }
}

/// `GET /v1/routes` as JSON.
pub async fn routes(admin: SocketAddr) -> serde_json::Value {
    super::admin_json(&client(), admin, "/v1/routes").await
}

/// The route named `name` in `/v1/routes`, once its generation is
/// `generation`.
pub async fn wait_for_route(admin: SocketAddr, name: &str, generation: u64) -> serde_json::Value {
    until(
        &format!("route {name} at generation {generation}"),
        PATIENCE,
        || async move {
            let routes = routes(admin).await;
            routes["table"]["routes"]
                .as_array()?
                .iter()
                .find(|r| r["name"] == name && r["generation"] == generation)
                .cloned()
        },
    )
    .await
}

/// The endpoint addresses `/v1/routes` lists for `cohort` of `route`.
pub fn endpoints_of(route: &serde_json::Value, cohort: &str) -> Vec<String> {
    route["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["cohort"] == cohort))
        .and_then(|b| b["endpoints"].as_array())
        .map(|eps| {
            eps.iter()
                .filter_map(|e| e["address"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Requests answered by `cohort` in a [`count_split`](super::count_split).
pub fn by_cohort(seen: &HashMap<(String, String), u64>, cohort: &str) -> u64 {
    seen.iter()
        .filter(|((c, _), _)| c == cohort)
        .map(|(_, n)| n)
        .sum()
}

/// Requests answered by simulator `sim` in a [`count_split`](super::count_split).
pub fn by_sim(seen: &HashMap<(String, String), u64>, sim: &str) -> u64 {
    seen.iter()
        .filter(|((_, s), _)| s == sim)
        .map(|(_, n)| n)
        .sum()
}

/// The usual scene: a proxy on the test's namespace, the Canary with one
/// simulator per cohort (the canary's endpoint ready or not), and its
/// traffic at generation 1 in service.
#[derive(Debug)]
pub struct Scene {
    pub kp: KubeProxy,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub canaries: Api<Canary>,
    pub route: String,
    pub stable: SimHandle,
    pub canary: SimHandle,
}

/// Sets up a [`Scene`] with the canary at `canary_percent`.
pub async fn scene(env: &TestEnv, canary_percent: f64, canary_ready: bool) -> Scene {
    let stable = host_sim("stable-0").await;
    let canary = host_sim("canary-0").await;
    let kp = start_kube_proxy(env).await;
    let canaries = create_canary(env).await;
    put_endpoint(env, Cohort::Stable, &stable, true).await;
    put_endpoint(env, Cohort::Canary, &canary, canary_ready).await;
    write_traffic(&canaries, &traffic(1, canary_percent)).await;
    let route = route_name(env);
    // The Canary and the EndpointSlices come through two watches, in no
    // set order: the route's generation can be in service before its
    // endpoints are.
    let admin = kp.proxy.admin;
    let want = |sim: &SimHandle, ready: bool| {
        if ready {
            vec![sim.addr().to_string()]
        } else {
            Vec::new()
        }
    };
    let (stable_want, canary_want) = (want(&stable, true), want(&canary, canary_ready));
    until("the scene's endpoints in service", PATIENCE, || async {
        let served = wait_for_route(admin, &route, 1).await;
        let (s, c) = (
            endpoints_of(&served, "stable"),
            endpoints_of(&served, "canary"),
        );
        if s == stable_want && c == canary_want {
            Ok(())
        } else {
            Err(served)
        }
    })
    .await;
    Scene {
        listen: kp.proxy.listen,
        admin: kp.proxy.admin,
        kp,
        canaries,
        route,
        stable,
        canary,
    }
}
