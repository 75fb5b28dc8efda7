//! `weir sim --services-kubeconfig PATH` / `--services-from-cluster`: the
//! forward URL's Service name resolved through the Kubernetes API, standing
//! in for cluster DNS and kube-proxy where a test cluster has neither (the
//! node agent's pods run on the host's resolver, and nothing maps a
//! Service's IP to its pods). From a pod, `--services-from-cluster` takes
//! the client config kube infers (`$KUBECONFIG`, which the node agent sets
//! to its API server relay, else in-cluster) and the namespace from
//! `$POD_NAMESPACE` when nothing names one.
//!
//! The sim watches the EndpointSlices of that one Service
//! (`kubernetes.io/service-name=<svc>` in its namespace, a kube-runtime
//! reflector) and picks a ready endpoint at random for each request, as
//! kube-proxy's iptables mode does. Which host is a Service and which
//! endpoint a request goes to are pure functions ([`service_of`],
//! [`endpoints`], [`namespace`]); the reflector only keeps the slices
//! current.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};
use weir_core::is_dns_label;

/// The label the EndpointSlice controller puts on a Service's slices.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The pod's namespace, as the downward API convention (and the node
/// agent) names it.
pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
/// The slice port preferred when none has the URL's port.
const HTTP_PORT_NAME: &str = "http";
/// How long start-up waits for the first list of the slices.
const FIRST_LIST: Duration = Duration::from_secs(30);

/// Where the API server's client config comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--services-kubeconfig PATH`: that file's current context.
    Kubeconfig(PathBuf),
    /// `--services-from-cluster`: what `kube::Config::infer` finds
    /// (`$KUBECONFIG` or `~/.kube/config`, else the in-cluster config).
    Inferred,
}

/// The namespace of the Service: the host's (`svc.ns`), else
/// `--services-namespace`, else the kubeconfig context's, else
/// `$POD_NAMESPACE`, else `fallback` (kube's default namespace: `default`,
/// or in a pod with a ServiceAccount, the pod's).
pub fn namespace(
    host: Option<&str>,
    flag: Option<&str>,
    context: Option<&str>,
    pod: Option<&str>,
    fallback: &str,
) -> String {
    [host, flag, context, pod]
        .into_iter()
        .flatten()
        .find(|ns| !ns.is_empty())
        .unwrap_or(fallback)
        .to_string()
}

/// The namespace `kubeconfig`'s current context names, if any.
pub fn context_namespace(kubeconfig: &Kubeconfig) -> Option<String> {
    let current = kubeconfig.current_context.as_deref()?;
    kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == current)?
        .context
        .as_ref()?
        .namespace
        .clone()
}

/// A Service a forward URL's host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName {
    /// The Service.
    pub name: String,
    /// Its namespace, when the host names one.
    pub namespace: Option<String>,
}

/// The Service `host` names, as cluster DNS would read it: `svc`,
/// `svc.ns`, `svc.ns.svc` or `svc.ns.svc.cluster.local`, each part a DNS
/// label. `None` for an IP literal, `localhost` or any other name (left to
/// the system resolver).
pub fn service_of(host: &str) -> Option<ServiceName> {
    if host == "localhost" || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
        return None;
    }
    let labels: Vec<&str> = host.split('.').collect();
    if !labels.iter().all(|l| is_dns_label(l)) {
        return None;
    }
    let (name, namespace) = match labels.as_slice() {
        [svc] => (svc, None),
        [svc, ns] | [svc, ns, "svc"] | [svc, ns, "svc", "cluster", "local"] => (svc, Some(ns)),
        _ => return None,
    };
    Some(ServiceName {
        name: (*name).to_string(),
        namespace: namespace.map(|ns| (*ns).to_string()),
    })
}

/// The ready endpoints of `slices` for a URL with `port`: each ready
/// endpoint's first address, at the slice's port equal to `port`, else its
/// port named `http`, else its first port (`port` when it lists none). An
/// endpoint whose readiness is not given counts as ready (the API's rule);
/// FQDN addresses are skipped.
pub fn endpoints(slices: &[Arc<EndpointSlice>], port: u16) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for slice in slices {
        let ports = slice.ports.as_deref().unwrap_or_default();
        let number = |p: &k8s_openapi::api::discovery::v1::EndpointPort| {
            p.port.and_then(|n| u16::try_from(n).ok())
        };
        let slice_port = ports
            .iter()
            .filter_map(number)
            .find(|n| *n == port)
            .or_else(|| {
                ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(HTTP_PORT_NAME))
                    .and_then(number)
            })
            .or_else(|| ports.first().and_then(number))
            .unwrap_or(port);
        for endpoint in &slice.endpoints {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(false);
            let ip = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok());
            if let (true, Some(ip)) = (ready, ip) {
                out.push(SocketAddr::new(ip, slice_port));
            }
        }
    }
    out
}

/// One Service's endpoints, kept current by a reflector.
#[derive(Debug)]
pub struct Endpoints {
    service: String,
    namespace: String,
    slices: Store<EndpointSlice>,
}

impl weir_sim::Resolve for Endpoints {
    fn resolve(&self, _host: &str, port: u16) -> Result<SocketAddr, String> {
        let ready = endpoints(&self.slices.state(), port);
        if ready.is_empty() {
            return Err(format!(
                "Service {}/{} has no ready endpoint in its EndpointSlices",
                self.namespace, self.service
            ));
        }
        Ok(ready[rand::random_range(0..ready.len())])
    }
}

/// The client config from `source`, and the namespace its kubeconfig's
/// context names (none in-cluster).
async fn load(source: &Source) -> Result<(Config, Option<String>)> {
    match source {
        Source::Kubeconfig(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read --services-kubeconfig {}", path.display()))?;
            let context = context_namespace(&file);
            let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("cannot use --services-kubeconfig {}", path.display()))?;
            Ok((config, context))
        }
        Source::Inferred => {
            let config = Config::infer().await.context(
                "--services-from-cluster: no client config (set KUBECONFIG, or run in a pod \
                 with a ServiceAccount token)",
            )?;
            // What infer read, if it read a kubeconfig: its context's
            // namespace (kube folds a missing one into "default").
            let context = Kubeconfig::read().ok().as_ref().and_then(context_namespace);
            Ok((config, context))
        }
    }
}

/// Starts watching the slices of `service` with the client config from
/// `source`, in the namespace [`namespace`] picks (`flag` is
/// `--services-namespace`, `pod` is `$POD_NAMESPACE`), and waits for
/// their first list.
///
/// # Errors
/// No usable client config, or no first list within 30 s.
pub async fn watch(
    source: &Source,
    flag: Option<&str>,
    pod: Option<&str>,
    service: &ServiceName,
) -> Result<Endpoints> {
    let (config, context) = load(source).await?;
    let namespace = namespace(
        service.namespace.as_deref(),
        flag,
        context.as_deref(),
        pod,
        &config.default_namespace,
    );
    let server = config.cluster_url.clone();
    let client = Client::try_from(config).context("cannot make a Kubernetes client")?;
    let api = Api::<EndpointSlice>::namespaced(client, &namespace);
    let selector = format!("{SERVICE_NAME_LABEL}={}", service.name);
    let (slices, writer) = reflector::store::<EndpointSlice>();
    let events = watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .reflect(writer);
    let what = format!(
        "EndpointSlices of Service {namespace}/{} (API server {server})",
        service.name
    );
    let watched = what.clone();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            if let Err(e) = event {
                eprintln!("weir sim: watching the {watched}: {e} (retrying)");
            }
        }
    });
    tokio::time::timeout(FIRST_LIST, slices.wait_until_ready())
        .await
        .map_err(|_| anyhow::anyhow!("the {what} were not listed within {FIRST_LIST:?}"))?
        .with_context(|| format!("watching the {what}"))?;
    Ok(Endpoints {
        service: service.name.clone(),
        namespace,
        slices,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    use super::*;

    #[test]
    fn the_namespace_is_the_hosts_then_the_flags_then_the_contexts_then_the_pods() {
        let all = (Some("host"), Some("flag"), Some("context"), Some("pod"));
        for ((host, flag, context, pod), want) in [
            (all, "host"),
            ((None, all.1, all.2, all.3), "flag"),
            ((None, None, all.2, all.3), "context"),
            ((None, None, None, all.3), "pod"),
            ((None, None, None, Some("")), "default"),
            ((None, None, None, None), "default"),
        ] {
            assert_eq!(namespace(host, flag, context, pod, "default"), want);
        }
    }

    #[test]
    fn the_contexts_namespace_only_when_it_names_one() {
        let kubeconfig = |ns: &str| {
            Kubeconfig::from_yaml(&format!(
                "
clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:1'}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u{ns}}}}}]
current-context: x
"
            ))
            .expect("a kubeconfig")
        };
        assert_eq!(
            context_namespace(&kubeconfig(", namespace: team-a")).as_deref(),
            Some("team-a")
        );
        assert_eq!(context_namespace(&kubeconfig("")), None);
        assert_eq!(context_namespace(&Kubeconfig::default()), None);
    }

    #[test]
    fn service_names_are_read_as_cluster_dns_reads_them() {
        let svc = |name: &str, ns: Option<&str>| {
            Some(ServiceName {
                name: name.into(),
                namespace: ns.map(String::from),
            })
        };
        for (host, want) in [
            ("chat-decode-canary", svc("chat-decode-canary", None)),
            ("chat-decode.team-a", svc("chat-decode", Some("team-a"))),
            ("chat-decode.team-a.svc", svc("chat-decode", Some("team-a"))),
            (
                "chat-decode.team-a.svc.cluster.local",
                svc("chat-decode", Some("team-a")),
            ),
            ("localhost", None),
            ("127.0.0.1", None),
            ("[::1]", None),
            ("::1", None),
            ("a.b.c", None),
            ("a.b.svc.cluster", None),
            ("a.b.svc.example.com", None),
            ("Chat", None),
            ("-chat", None),
            ("chat..ns", None),
        ] {
            assert_eq!(service_of(host), want, "{host}");
        }
    }

    fn slice(
        ports: &[(Option<&str>, i32)],
        endpoints: &[(&str, Option<bool>)],
    ) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: endpoints
                .iter()
                .map(|(ip, ready)| Endpoint {
                    addresses: vec![(*ip).into()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| EndpointPort {
                        name: name.map(String::from),
                        port: Some(*port),
                        ..EndpointPort::default()
                    })
                    .collect(),
            ),
            ..EndpointSlice::default()
        })
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().expect("addr")).collect()
    }

    #[test]
    fn ready_endpoints_at_the_urls_port_else_http_else_the_first() {
        let slices = [
            slice(
                &[(Some("metrics"), 9100), (Some("http"), 8000)],
                &[
                    ("10.0.0.1", Some(true)),
                    ("10.0.0.2", Some(false)),
                    ("10.0.0.3", None),
                ],
            ),
            slice(&[(Some("http"), 9000)], &[("10.0.1.1", Some(true))]),
            slice(
                &[(Some("grpc"), 7000), (None, 7001)],
                &[("10.0.2.1", Some(true))],
            ),
            slice(&[], &[("not-an-ip", Some(true)), ("10.0.3.1", Some(true))]),
        ];
        assert_eq!(
            endpoints(&slices, 8000),
            addrs(&[
                "10.0.0.1:8000",
                "10.0.0.3:8000",
                "10.0.1.1:9000",
                "10.0.2.1:7000",
                "10.0.3.1:8000"
            ])
        );
        assert_eq!(endpoints(&slices, 9100)[0], addrs(&["10.0.0.1:9100"])[0]);
        assert!(endpoints(&[], 8000).is_empty());
    }
}
