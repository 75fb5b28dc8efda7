//! Everything `weir preflight` reads and probes: the I/O half. Each
//! function returns plain values (or why it could not read them) for the
//! pure checks of the sibling modules; none of them judges.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ListParams, PostParams};
use weir_analysis::source::PrometheusApi;
use weir_analysis::source::PrometheusText;
use weir_analysis::source::prometheus_api::QueryResult;
use weir_controller::kube::backoff::with_causes;
use weir_controller::kube::fleet::{admin_endpoints, proxy_slices};
use weir_controller::kube::gauges::{DCGM_PORT, Serving, expand_query, host_port, serving};
use weir_controller::kube::rbac::{CONTROLLER_RULES, LEASE_RULES, permissions};
use weir_crds::{Canary, Cohort, MetricSource, names};

use super::check::{Read, Unread};
use super::gpu::{GpuNode, gpu_nodes};
use super::metrics::{MetricProbe, Probe, Scraped};
use super::proxy::Proxies;
use super::rbac::Answer;
use crate::cluster::{ApiCall, Cluster};

/// Most exporters scraped for one metric (a large GPU fleet has hundreds;
/// a few show whether the metric is there).
const MAX_SCRAPES: usize = 20;

/// What a failed call means for a check.
fn unread(cluster: &Cluster, err: kube::Error, call: ApiCall<'_>) -> Unread {
    let forbidden = matches!(&err, kube::Error::Api(s) if s.code == 403);
    let message = format!("{:#}", cluster.explain(err, call));
    if forbidden {
        Unread::Forbidden(message)
    } else {
        Unread::Failed(message)
    }
}

/// The installed Canary CRD, None when absent.
pub async fn crd(cluster: &Cluster, name: &str) -> Read<Option<CustomResourceDefinition>> {
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    api.get_opt(name).await.map_err(|e| {
        unread(
            cluster,
            e,
            ApiCall {
                verb: "get",
                resource: "customresourcedefinitions.apiextensions.k8s.io",
                name: Some(name),
                namespace: None,
            },
        )
    })
}

/// The user name the API server knows the caller by.
pub async fn identity(cluster: &Cluster) -> Option<String> {
    let api: Api<SelfSubjectReview> = Api::all(cluster.client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .ok()?;
    review.status?.user_info?.username
}

/// One SelfSubjectAccessReview per permission of the controller's rules:
/// its ClusterRole's in the cluster's namespace, its Lease's in
/// `lease_namespace` (where the controller runs).
pub async fn access(cluster: &Cluster, lease_namespace: &str) -> Vec<Answer> {
    let api: Api<SelfSubjectAccessReview> = Api::all(cluster.client.clone());
    let asked = permissions(CONTROLLER_RULES)
        .into_iter()
        .map(|(p, _)| (p, cluster.namespace.clone()))
        .chain(
            permissions(LEASE_RULES)
                .into_iter()
                .map(|(p, _)| (p, lease_namespace.to_string())),
        );
    let reviews = asked.map(|(p, namespace)| {
        let api = api.clone();
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(p.group.to_string()),
                    resource: Some(p.resource.to_string()),
                    subresource: p.subresource.map(String::from),
                    verb: Some(p.verb.to_string()),
                    namespace: Some(namespace),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        async move {
            let allowed = api
                .create(&PostParams::default(), &review)
                .await
                .map(|r| r.status.is_some_and(|s| s.allowed))
                .map_err(|e| {
                    unread(
                        cluster,
                        e,
                        ApiCall {
                            verb: "create",
                            resource: "selfsubjectaccessreviews.authorization.k8s.io",
                            name: None,
                            namespace: None,
                        },
                    )
                });
            Answer {
                permission: p,
                allowed,
            }
        }
    });
    join_all(reviews).await
}

/// Canary `name`, None when absent.
pub async fn canary(cluster: &Cluster, name: &str) -> Read<Option<Canary>> {
    cluster.canaries().get_opt(name).await.map_err(|e| {
        unread(
            cluster,
            e,
            cluster.call("get", crate::cluster::CANARIES, Some(name)),
        )
    })
}

/// Deployment `name` of the cluster's namespace, None when absent.
pub async fn deployment(cluster: &Cluster, name: &str) -> Read<Option<Deployment>> {
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    api.get_opt(name).await.map_err(|e| {
        unread(
            cluster,
            e,
            cluster.call("get", "deployments.apps", Some(name)),
        )
    })
}

/// The running, ready pods of target `target` and of its stable copy.
pub async fn serving_pods(cluster: &Cluster, target: Option<&Deployment>) -> Read<Vec<Serving>> {
    let Some(target) = target else {
        return Ok(Vec::new());
    };
    let name = target.metadata.name.as_deref().unwrap_or_default();
    let stable = deployment(cluster, &names::stable_deployment(name)).await?;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let mut out = Vec::new();
    for d in std::iter::once(target).chain(stable.as_ref()) {
        let Some(labels) = d
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.as_ref())
        else {
            continue;
        };
        let pods = api
            .list(&ListParams::default().labels(&selector(labels)))
            .await
            .map_err(|e| unread(cluster, e, cluster.call("list", "pods", None)))?;
        out.extend(pods.items.iter().filter_map(serving));
    }
    Ok(out)
}

fn selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Probes the source of each of the Canary's metrics that does not come
/// from the proxy. `pods`: the target's serving pods.
pub async fn metrics(
    cluster: &Cluster,
    canary: &Canary,
    pods: &[Serving],
    http: &reqwest::Client,
    timeout: Duration,
) -> Vec<MetricProbe> {
    let mut out = Vec::new();
    for (index, m) in canary.spec.analysis.metrics.iter().enumerate() {
        let probe = match &m.source {
            MetricSource::Proxy => continue,
            MetricSource::Prometheus(p) => {
                prometheus(
                    &p.address,
                    &p.query,
                    pods,
                    &cluster.namespace,
                    http,
                    timeout,
                )
                .await
            }
            MetricSource::Scrape(s) => {
                let port = s.port.unwrap_or(DCGM_PORT);
                let targets = match &s.exporter {
                    Some(sel) => exporters(cluster, sel, pods).await,
                    None => Ok(pods.to_vec()),
                };
                let pods = match targets {
                    Ok(t) => Ok(join_all(
                        t.iter()
                            .take(MAX_SCRAPES)
                            .map(|p| scrape(p, port, &s.metric, timeout)),
                    )
                    .await),
                    Err(e) => Err(e),
                };
                Probe::Scrape {
                    metric: s.metric.clone(),
                    exporter: s.exporter.clone(),
                    pods,
                }
            }
        };
        out.push(MetricProbe {
            index,
            name: m.name.clone(),
            probe,
        });
    }
    out
}

/// `/-/ready`, then the query as the controller would run it for stable:
/// `$pods` as the target's serving pods, or any pod when none serve.
async fn prometheus(
    address: &str,
    query: &str,
    pods: &[Serving],
    namespace: &str,
    http: &reqwest::Client,
    timeout: Duration,
) -> Probe {
    let names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
    let query = if names.is_empty() {
        expand_query(
            &query.replace("$pods", ".+"),
            &[],
            namespace,
            Cohort::Stable,
        )
    } else {
        expand_query(query, &names, namespace, Cohort::Stable)
    };
    let base = address.trim_end_matches('/');
    let ready = match http.get(format!("{base}/-/ready")).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status())),
        Err(e) => Err(with_causes(&e)),
    };
    let series = if ready.is_err() {
        Err("not asked: Prometheus is not ready".to_string())
    } else {
        match PrometheusApi::new(address) {
            Err(e) => Err(e.to_string()),
            Ok(api) => match api.with_timeout(timeout).query(&query, None).await {
                Err(e) => Err(e.to_string()),
                Ok(answer) => Ok(match answer.result {
                    QueryResult::Vector(v) => v.len(),
                    QueryResult::Matrix(m) => m.len(),
                    QueryResult::Scalar(_) | QueryResult::String { .. } => 1,
                }),
            },
        }
    };
    Probe::Prometheus {
        address: address.to_string(),
        ready,
        query,
        series,
    }
}

/// The running, ready exporter pods `selector` matches in any namespace:
/// those on the target's nodes when its pods run somewhere, else all.
async fn exporters(cluster: &Cluster, selector: &str, pods: &[Serving]) -> Read<Vec<Serving>> {
    let api: Api<Pod> = Api::all(cluster.client.clone());
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| {
            unread(
                cluster,
                e,
                ApiCall {
                    verb: "list",
                    resource: "pods",
                    name: None,
                    namespace: None,
                },
            )
        })?;
    let all: Vec<Serving> = list.items.iter().filter_map(serving).collect();
    let nodes: Vec<&str> = pods.iter().filter_map(|p| p.node.as_deref()).collect();
    let near: Vec<Serving> = all
        .iter()
        .filter(|e| e.node.as_deref().is_some_and(|n| nodes.contains(&n)))
        .cloned()
        .collect();
    Ok(if near.is_empty() { all } else { near })
}

async fn scrape(pod: &Serving, port: u16, metric: &str, timeout: Duration) -> Scraped {
    let url = format!("http://{}/metrics", host_port(&pod.ip, port));
    let found = PrometheusText::scrape(&url, timeout)
        .await
        .map(|text| text.names().contains(&metric))
        .map_err(|e| e.to_string());
    Scraped {
        pod: pod.name.clone(),
        url,
        found,
    }
}

/// The proxies' Service `namespace/name`, its endpoints on the admin port
/// (`default_port` unless a slice names one `admin`), and each ready
/// one's `/readyz`.
pub async fn proxies(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    default_port: u16,
    http: &reqwest::Client,
) -> Proxies {
    let service = format!("{namespace}/{name}");
    let in_ns = |verb, resource, name| ApiCall {
        verb,
        resource,
        name,
        namespace: Some(namespace),
    };
    let services: Api<Service> = Api::namespaced(cluster.client.clone(), namespace);
    let exists = services
        .get_opt(name)
        .await
        .map(|s| s.is_some())
        .map_err(|e| unread(cluster, e, in_ns("get", "services", Some(name))));
    if exists != Ok(true) {
        return Proxies {
            service,
            exists,
            endpoints: Ok(Default::default()),
            answers: Vec::new(),
        };
    }
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), namespace);
    let endpoints = slices
        .list(&proxy_slices(name))
        .await
        .map(|l| admin_endpoints(&l.items, default_port))
        .map_err(|e| {
            unread(
                cluster,
                e,
                in_ns("list", "endpointslices.discovery.k8s.io", None),
            )
        });
    let ready = endpoints
        .as_ref()
        .map(|e| e.ready.clone())
        .unwrap_or_default();
    let answers = join_all(ready.into_iter().map(|addr| async move {
        let answer = match http.get(format!("http://{addr}/readyz")).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("HTTP {}", r.status())),
            Err(e) => Err(with_causes(&e)),
        };
        (addr, answer)
    }))
    .await;
    Proxies {
        service,
        exists,
        endpoints,
        answers,
    }
}

/// The nodes with allocatable GPUs and what the pods bound to them request.
pub async fn gpus(cluster: &Cluster) -> Read<Vec<GpuNode>> {
    let all = |verb, resource| ApiCall {
        verb,
        resource,
        name: None,
        namespace: None,
    };
    let nodes = Api::<Node>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| unread(cluster, e, all("list", "nodes")))?;
    let pods = Api::<Pod>::all(cluster.client.clone())
        .list(&ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed"))
        .await
        .map_err(|e| unread(cluster, e, all("list", "pods")))?;
    Ok(gpu_nodes(&nodes.items, &pods.items))
}
