//! GPU (and other gauge) metrics of each cohort in Kubernetes mode.
//!
//! Two sources, as the Canary names them:
//!
//! - `scrape: {port, metric}`: the cohort's running, ready pods (selected by
//!   the cohort's selector labels) are scraped directly on `port` (the DCGM
//!   exporter's 9400, or the frontend's own `/metrics`), and the gauge is
//!   averaged over every series of every pod: utilization per GPU of the
//!   cohort. No Prometheus needed, and the value is as fresh as the scrape.
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

/// The gauges of one Canary's cohorts.
#[derive(Debug, Clone)]
pub struct KubeGauges {
    /// The pods API of the Canary's namespace.
    pub pods: Api<Pod>,
    /// The Canary's namespace.
    pub namespace: String,
    /// Each cohort's pod selector labels.
    pub selectors: Cohorts<BTreeMap<String, String>>,
}

impl KubeGauges {
    /// The cohort's running and ready pods: (name, IP).
    async fn pods(&self, cohort: Cohort) -> Option<Vec<(String, String)>> {
        let labels: Vec<String> = self
            .selectors
            .get(cohort)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if labels.is_empty() {
            return None;
        }
        let list = self
            .pods
            .list(&ListParams::default().labels(&labels.join(",")))
            .await
            .map_err(|e| tracing::debug!(error = %e, %cohort, "cannot list the cohort's pods"))
            .ok()?;
        Some(list.items.iter().filter_map(serving).collect())
    }
}

/// A pod's name and IP when it is running and ready.
fn serving(pod: &Pod) -> Option<(String, String)> {
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let running = status.phase.as_deref() == Some("Running");
    let ip = status.pod_ip.clone()?;
    (ready && running && pod.metadata.deletion_timestamp.is_none())
        .then(|| (pod.metadata.name.clone().unwrap_or_default(), ip))
}

/// The mean of a reading's gauge values; None for no data.
fn mean(reading: Reading) -> Option<f64> {
    let Reading::Gauge(points) = reading else {
        return None;
    };
    let values: Vec<f64> = points
        .iter()
        .map(|p| p.value)
        .filter(|v| v.is_finite())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
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
                let port = s.port.unwrap_or(9400);
                let pods = self.pods(cohort).await?;
                let mut values = Vec::new();
                for (name, ip) in &pods {
                    let url = format!("http://{}/metrics", host_port(ip, port));
                    let value = match PrometheusText::scrape(&url, TIMEOUT).await {
                        Ok(text) => text
                            .read_now(&Query::gauge(s.metric.clone(), Selector::default()))
                            .ok()
                            .and_then(mean),
                        Err(e) => {
                            tracing::debug!(pod = %name, error = %e, "scrape failed");
                            None
                        }
                    };
                    values.extend(value);
                }
                (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
            }
            MetricSource::Prometheus(p) => {
                let pods: Vec<String> = self
                    .pods(cohort)
                    .await?
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect();
                if pods.is_empty() {
                    return None;
                }
                let expr = expand_query(&p.query, &pods, &self.namespace, cohort);
                let api = PrometheusApi::new(&p.address).ok()?.with_timeout(TIMEOUT);
                match api.read_query(&Query::promql(expr.clone())).await {
                    Ok(reading) => mean(reading),
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
fn host_port(ip: &str, port: u16) -> String {
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
}
