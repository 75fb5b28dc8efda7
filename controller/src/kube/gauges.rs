//! GPU (and other gauge) metrics of each cohort in Kubernetes mode.
//!
//! Two sources, as the Canary names them:
//!
//! - `scrape: {port, metric, exporter}`: no Prometheus needed, and the
//!   value is as fresh as the scrape.
//!   - With `exporter` (a label selector of the DCGM exporter DaemonSet, as
//!     NVIDIA's GPU Operator deploys it): the exporter pods on the nodes
//!     that run the cohort's pods are scraped on `port`, and only series
//!     whose `pod` and `namespace` labels name one of the cohort's pods
//!     count (dcgm-exporter attributes each GPU to the pod using it).
//!   - Without: the cohort's own running, ready pods are scraped on `port`
//!     (a sidecar exporter, or the frontend's own `/metrics`), every series
//!     averaged.
//! - `prometheus: {address, query}`: the query runs once per cohort with
//!   `$pods` replaced by a regex of the cohort's pod names, `$namespace` by
//!   the Canary's namespace and `$cohort` by `stable` or `canary`; the
//!   answer's series are averaged.
//!
//! A value that cannot be read this time is `None` (the interval is
//! skipped), never zero: a failed scrape must not look like an idle GPU.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use weir_analysis::source::{PrometheusApi, PrometheusText, Query, Reading, Selector};
use weir_crds::{Cohort, MetricSource};

use crate::engine::spec::Metric;
use crate::evidence::{Cohorts, GaugeReader};

/// How long one scrape or query may take.
const TIMEOUT: Duration = Duration::from_secs(3);
/// dcgm-exporter's port, when `scrape.port` is not given.
pub const DCGM_PORT: u16 = 9400;

/// The gauges of one Canary's cohorts.
#[derive(Debug, Clone)]
pub struct KubeGauges {
    /// The pods API of the Canary's namespace.
    pub pods: Api<Pod>,
    /// The pods API where DCGM exporters run (all namespaces).
    pub exporters: Api<Pod>,
    /// The Canary's namespace.
    pub namespace: String,
    /// Each cohort's pod selector labels: one per Deployment of the
    /// cohort (a graph's cohort is every component's, and its GPUs are
    /// mostly its workers').
    pub selectors: Cohorts<Vec<BTreeMap<String, String>>>,
}

/// A pod that serves: its name, IP and node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    /// The pod's name.
    pub name: String,
    /// Its IP.
    pub ip: String,
    /// The node it runs on.
    pub node: Option<String>,
}

impl KubeGauges {
    /// The cohort's running and ready pods (None when one of its
    /// selectors could not be listed).
    async fn pods(&self, cohort: Cohort) -> Option<Vec<Serving>> {
        let selectors = self.selectors.get(cohort);
        if selectors.is_empty() {
            return None;
        }
        let mut all = Vec::new();
        for selector in selectors {
            let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if labels.is_empty() {
                return None;
            }
            all.extend(list(&self.pods, &labels.join(",")).await?);
        }
        Some(all)
    }

    /// The gauge over the cohort's GPUs, read from the DCGM exporters on
    /// the cohort's nodes.
    async fn read_exporters(
        &self,
        cohort: Cohort,
        exporter: &str,
        port: u16,
        metric: &str,
    ) -> Option<f64> {
        let pods = self.pods(cohort).await?;
        let nodes: Vec<&str> = pods.iter().filter_map(|p| p.node.as_deref()).collect();
        let names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
        let mut values = Vec::new();
        for e in list(&self.exporters, exporter).await? {
            if !e.node.as_deref().is_some_and(|n| nodes.contains(&n)) {
                continue;
            }
            match scrape(&e.ip, port).await {
                Some(text) => values.extend(cohort_values(&text, metric, &names, &self.namespace)),
                None => tracing::debug!(exporter = %e.name, "scrape failed"),
            }
        }
        mean(&values)
    }

    /// The gauge over every series of the cohort's own pods.
    async fn read_pods(&self, cohort: Cohort, port: u16, metric: &str) -> Option<f64> {
        let mut values = Vec::new();
        for p in self.pods(cohort).await? {
            let Some(text) = scrape(&p.ip, port).await else {
                tracing::debug!(pod = %p.name, "scrape failed");
                continue;
            };
            if let Ok(Reading::Gauge(points)) =
                text.read_now(&Query::gauge(metric, Selector::default()))
            {
                values.extend(points.iter().map(|p| p.value).filter(|v| v.is_finite()));
            }
        }
        mean(&values)
    }
}

/// The running, ready pods `selector` matches.
async fn list(api: &Api<Pod>, selector: &str) -> Option<Vec<Serving>> {
    let pods = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| tracing::debug!(error = %e, %selector, "cannot list pods"))
        .ok()?;
    Some(pods.items.iter().filter_map(serving).collect())
}

/// A pod's name, IP and node when it is running and ready.
pub fn serving(pod: &Pod) -> Option<Serving> {
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let running = status.phase.as_deref() == Some("Running");
    let ip = status.pod_ip.clone()?;
    (ready && running && pod.metadata.deletion_timestamp.is_none()).then(|| Serving {
        name: pod.metadata.name.clone().unwrap_or_default(),
        ip,
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
    })
}

async fn scrape(ip: &str, port: u16) -> Option<PrometheusText> {
    let url = format!("http://{}/metrics", host_port(ip, port));
    PrometheusText::scrape(&url, TIMEOUT).await.ok()
}

/// The values of gauge `metric` in an exporter's scrape that belong to the
/// pods `names` of `namespace` (dcgm-exporter's `pod`/`namespace` labels).
pub fn cohort_values(
    text: &PrometheusText,
    metric: &str,
    names: &[String],
    namespace: &str,
) -> Vec<f64> {
    let mut values = Vec::new();
    for name in names {
        let selector = Selector::default()
            .eq("pod", name)
            .eq("namespace", namespace);
        if let Ok(Reading::Gauge(points)) = text.read_now(&Query::gauge(metric, selector)) {
            values.extend(points.iter().map(|p| p.value).filter(|v| v.is_finite()));
        }
    }
    values
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The mean of a reading's gauge values; None for no data.
fn reading_mean(reading: Reading) -> Option<f64> {
    let Reading::Gauge(points) = reading else {
        return None;
    };
    let values: Vec<f64> = points
        .iter()
        .map(|p| p.value)
        .filter(|v| v.is_finite())
        .collect();
    mean(&values)
}

/// A regex matching exactly these pod names, written for a PromQL
/// double-quoted string (whose own escapes double each backslash).
pub fn pods_regex(names: &[String]) -> String {
    let escaped: Vec<String> = names.iter().map(|n| regex_escape(n)).collect();
    format!("({})", escaped.join("|"))
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

/// The query with `$pods`, `$namespace` and `$cohort` filled in.
pub fn expand_query(query: &str, pods: &[String], namespace: &str, cohort: Cohort) -> String {
    query
        .replace("$pods", &pods_regex(pods))
        .replace("$namespace", namespace)
        .replace("$cohort", cohort.as_str())
}

impl GaugeReader for KubeGauges {
    async fn read(&self, metric: &Metric, cohort: Cohort) -> Option<f64> {
        match &metric.source {
            MetricSource::Proxy => None,
            MetricSource::Scrape(s) => {
                let port = s.port.unwrap_or(DCGM_PORT);
                match &s.exporter {
                    Some(exporter) => self.read_exporters(cohort, exporter, port, &s.metric).await,
                    None => self.read_pods(cohort, port, &s.metric).await,
                }
            }
            MetricSource::Prometheus(p) => {
                let pods: Vec<String> = self
                    .pods(cohort)
                    .await?
                    .into_iter()
                    .map(|p| p.name)
                    .collect();
                if pods.is_empty() {
                    return None;
                }
                let expr = expand_query(&p.query, &pods, &self.namespace, cohort);
                let api = PrometheusApi::new(&p.address).ok()?.with_timeout(TIMEOUT);
                match api.read_query(&Query::promql(expr.clone())).await {
                    Ok(reading) => reading_mean(reading),
                    Err(e) => {
                        tracing::debug!(query = %expr, error = %e, "prometheus query failed");
                        None
                    }
                }
            }
        }
    }
}

/// `ip:port`, with brackets for IPv6.
pub fn host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_name_the_cohorts_pods_exactly() {
        let q = expand_query(
            r#"avg(DCGM_FI_DEV_GPU_UTIL{pod=~"$pods", namespace="$namespace"})"#,
            &["chat-7d9f.1".into(), "chat-x2".into()],
            "llm",
            Cohort::Canary,
        );
        assert_eq!(
            q,
            r#"avg(DCGM_FI_DEV_GPU_UTIL{pod=~"(chat-7d9f\\.1|chat-x2)", namespace="llm"})"#
        );
        assert_eq!(host_port("fd00::1", 9400), "[fd00::1]:9400");
        assert_eq!(host_port("10.0.0.7", 9400), "10.0.0.7:9400");
    }

    /// The real dcgm-exporter scrape in shared/fixtures: one GPU used by
    /// pod `cuda-75454ffb9f-8ljq7` in `default`.
    #[test]
    fn exporter_series_count_only_for_the_cohorts_pods() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/dcgm-exporter-k8s.txt"
        );
        let text = std::fs::read_to_string(path).expect("fixture");
        let scrape = PrometheusText::from_text(&text).expect("parses");
        let mine = ["cuda-75454ffb9f-8ljq7".to_string()];
        assert_eq!(
            cohort_values(&scrape, "DCGM_FI_PROF_GR_ENGINE_ACTIVE", &mine, "default"),
            vec![0.004656]
        );
        assert_eq!(
            cohort_values(&scrape, "DCGM_FI_DEV_FB_USED", &mine, "default"),
            vec![1.0]
        );
        assert!(
            cohort_values(&scrape, "DCGM_FI_DEV_GPU_UTIL", &mine, "llm").is_empty(),
            "another namespace's pod of the same name"
        );
        assert!(
            cohort_values(
                &scrape,
                "DCGM_FI_DEV_GPU_UTIL",
                &["other".to_string()],
                "default"
            )
            .is_empty(),
            "a GPU another pod uses"
        );
    }
}
