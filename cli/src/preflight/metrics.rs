//! The Canary's metrics that come from outside the proxy: a Prometheus
//! query, or a gauge scraped from the DCGM exporters (or the cohort's own
//! pods). Each is probed the way the controller will read it, from where
//! preflight runs, and judged here: the source answers, and the metric the
//! Canary names is there. (Proxy metrics are the proxy check's.)

use super::check::{Check, Read, names};

/// What probing one scrape target found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scraped {
    /// The pod scraped.
    pub pod: String,
    /// Its metrics URL.
    pub url: String,
    /// Whether the metric is in the scrape, or why it could not be read.
    pub found: Result<bool, String>,
}

/// What probing one metric's source found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `source: {prometheus: {address, query}}`.
    Prometheus {
        /// The server.
        address: String,
        /// `GET /-/ready`.
        ready: Result<(), String>,
        /// The query as run (`$pods`, `$namespace`, `$cohort` filled in).
        query: String,
        /// Series it returned, or why it failed (not asked when not ready).
        series: Result<usize, String>,
    },
    /// `source: {scrape: {port, metric, exporter}}`.
    Scrape {
        /// The metric looked for.
        metric: String,
        /// The exporter pods' label selector; None: the target's own pods.
        exporter: Option<String>,
        /// One result per running pod found.
        pods: Read<Vec<Scraped>>,
    },
}

/// One metric of the Canary (`spec.analysis.metrics[index]`), probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricProbe {
    /// Its index in `spec.analysis.metrics`.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// What was found.
    pub probe: Probe,
}

/// The verdict on one metric's source.
pub fn check(m: &MetricProbe) -> Check {
    let id = names::metric(&m.name);
    let field = format!("spec.analysis.metrics[{}].source", m.index);
    match &m.probe {
        Probe::Prometheus {
            address,
            ready,
            query,
            series,
        } => {
            if let Err(e) = ready {
                return Check::fail(
                    id,
                    format!("Prometheus at {address} does not answer GET /-/ready from here: {e}"),
                    format!(
                        "correct {field}.prometheus.address, or start Prometheus there; the \
                         controller must reach it too (kubectl run -it --rm probe --image=curlimages/curl \
                         -- curl {address}/-/ready)"
                    ),
                );
            }
            match series {
                Err(e) => Check::fail(
                    id,
                    format!("Prometheus at {address} refused the query {query}: {e}"),
                    format!("correct {field}.prometheus.query (try it in Prometheus's UI)"),
                ),
                Ok(0) => Check::fail(
                    id,
                    format!(
                        "metric absent: {query} returned no series from Prometheus at {address}"
                    ),
                    "make Prometheus scrape the exporter the query reads (DCGM: a ServiceMonitor or \
                     PodMonitor for dcgm-exporter), and check the labels the query names",
                ),
                Ok(n) => Check::pass(
                    id,
                    format!("Prometheus at {address} is ready; {query} returned {n} series"),
                ),
            }
        }
        Probe::Scrape {
            metric,
            exporter,
            pods,
        } => {
            let pods = match pods {
                Ok(p) => p,
                Err(e) => return e.warn(&id, "the pods to scrape"),
            };
            let whose = match exporter {
                Some(sel) => format!("DCGM exporter pods ({sel})"),
                None => "the target's pods".to_string(),
            };
            if pods.is_empty() {
                return match exporter {
                    Some(sel) => Check::fail(
                        id,
                        format!(
                            "no running, ready pod matches {field}.scrape.exporter {sel} in any namespace"
                        ),
                        format!(
                            "install NVIDIA's dcgm-exporter DaemonSet (the GPU Operator deploys it), \
                             or set {field}.scrape.exporter to its pods' labels \
                             (kubectl get pods -A -l {sel})"
                        ),
                    ),
                    None => Check::warn(
                        id,
                        "none of the target's pods is running and ready, so none could be scraped",
                        "run preflight again once the target's pods are ready",
                    ),
                };
            }
            let failed: Vec<&Scraped> = pods.iter().filter(|p| p.found.is_err()).collect();
            let absent: Vec<&Scraped> = pods.iter().filter(|p| p.found == Ok(false)).collect();
            let present = pods.len() - failed.len() - absent.len();
            if present == 0 {
                if let Some(first) = failed.first() {
                    let e = first.found.as_ref().err().cloned().unwrap_or_default();
                    return Check::fail(
                        id,
                        format!(
                            "cannot scrape {whose} from here: {} (pod {}): {e}",
                            first.url, first.pod
                        ),
                        format!(
                            "check {field}.scrape.port and that the exporter listens on it \
                             (kubectl port-forward pod/{} PORT, then curl /metrics)",
                            first.pod
                        ),
                    );
                }
                return Check::fail(
                    id,
                    format!(
                        "metric absent: no {metric} in the scrape of {whose} ({})",
                        pods[0].url
                    ),
                    format!(
                        "correct {field}.scrape.metric (dcgm-exporter: DCGM_FI_DEV_GPU_UTIL), or \
                         enable it in the exporter's counters CSV"
                    ),
                );
            }
            if present < pods.len() {
                return Check::warn(
                    id,
                    format!(
                        "{metric} found at {present} of {} {whose}; {} could not be scraped, {} lack it",
                        pods.len(),
                        failed.len(),
                        absent.len()
                    ),
                    "look at the pods that failed: kubectl describe pod",
                );
            }
            Check::pass(id, format!("{metric} found at all {} {whose}", pods.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::check::Status;

    fn prom(ready: Result<(), String>, series: Result<usize, String>) -> MetricProbe {
        MetricProbe {
            index: 2,
            name: "gpu".into(),
            probe: Probe::Prometheus {
                address: "http://prometheus:9090".into(),
                ready,
                query: "avg(DCGM_FI_DEV_GPU_UTIL)".into(),
                series,
            },
        }
    }

    fn scrape(exporter: Option<&str>, found: &[Result<bool, String>]) -> MetricProbe {
        MetricProbe {
            index: 0,
            name: "gpu".into(),
            probe: Probe::Scrape {
                metric: "DCGM_FI_DEV_GPU_UTIL".into(),
                exporter: exporter.map(String::from),
                pods: Ok(found
                    .iter()
                    .enumerate()
                    .map(|(i, f)| Scraped {
                        pod: format!("dcgm-{i}"),
                        url: format!("http://10.0.0.{i}:9400/metrics"),
                        found: f.clone(),
                    })
                    .collect()),
            },
        }
    }

    #[test]
    fn prometheus_must_be_ready_and_return_series() {
        let table = [
            (Ok(()), Ok(3), Status::Pass, "returned 3 series"),
            (
                Err("connection refused".into()),
                Err("not asked".into()),
                Status::Fail,
                "does not answer",
            ),
            (Ok(()), Ok(0), Status::Fail, "metric absent"),
            (
                Ok(()),
                Err("bad_data: parse error".into()),
                Status::Fail,
                "refused the query",
            ),
        ];
        for (ready, series, status, says) in table {
            let got = check(&prom(ready, series));
            assert_eq!(got.status, status, "{got:?}");
            assert_eq!(got.check, "metric/gpu");
            assert!(got.detail.contains(says), "{says}: {got:?}");
            if status == Status::Fail {
                assert!(!got.fix.is_empty());
            }
        }
        let got = check(&prom(Err("refused".into()), Err(String::new())));
        assert!(
            got.fix
                .contains("spec.analysis.metrics[2].source.prometheus.address"),
            "{got:?}"
        );
    }

    #[test]
    fn scraped_metrics_must_be_present_at_every_exporter() {
        let sel = Some("app=nvidia-dcgm-exporter");
        type Found = Vec<Result<bool, String>>;
        let table: [(Option<&str>, Found, Status, &str); 6] = [
            (
                sel,
                vec![Ok(true), Ok(true)],
                Status::Pass,
                "found at all 2",
            ),
            (sel, vec![], Status::Fail, "no running, ready pod matches"),
            (None, vec![], Status::Warn, "none of the target's pods"),
            (
                sel,
                vec![Err("connection refused".into())],
                Status::Fail,
                "cannot scrape",
            ),
            (sel, vec![Ok(false)], Status::Fail, "metric absent"),
            (
                sel,
                vec![Ok(true), Err("timeout".into())],
                Status::Warn,
                "found at 1 of 2",
            ),
        ];
        for (exporter, found, status, says) in table {
            let got = check(&scrape(exporter, &found));
            assert_eq!(got.status, status, "{says}: {got:?}");
            assert!(got.detail.contains(says), "{says}: {got:?}");
        }
    }
}
