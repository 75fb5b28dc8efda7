//! With `--canary`: the Canary itself (present, valid, Kubernetes mode) and
//! its target Deployment (present, every container with a readiness
//! probe: the controller moves traffic only onto ready pods, and a pod
//! without a probe is "ready" before its model is loaded).

use k8s_openapi::api::apps::v1::Deployment;
use weir_controller::engine::Rollout;
use weir_controller::engine::spec::{Mode, Strategy};
use weir_crds::Canary;

use super::check::{Check, Read, names};
use crate::cluster::rollout_of;

/// The verdict on Canary `name` of `namespace`; with it, its validated
/// spec for the checks that follow.
pub fn canary(
    read: &Read<Option<Canary>>,
    name: &str,
    namespace: &str,
) -> (Check, Option<Rollout>) {
    let canary = match read {
        Ok(Some(c)) => c,
        Ok(None) => {
            return (
                Check::fail(
                    names::CANARY,
                    format!("no Canary {name} in namespace {namespace}"),
                    format!(
                        "kubectl apply -n {namespace} -f your-canary.yaml (see \
                         examples/canary-kubernetes.yaml), or pass the right --canary and -n"
                    ),
                ),
                None,
            );
        }
        Err(e) => return (e.warn(names::CANARY, &format!("Canary {name}")), None),
    };
    match rollout_of(canary) {
        Err(e) => (
            Check::fail(
                names::CANARY,
                format!("Canary {name} cannot run: {e}"),
                format!("kubectl edit canary {name} -n {namespace} and correct that field"),
            ),
            None,
        ),
        Ok(rollout) => match &rollout.mode {
            Mode::Local { .. } => (
                Check::fail(
                    names::CANARY,
                    format!(
                        "Canary {name} names spec.backends (local mode), which the controller does not run"
                    ),
                    "give spec.targetRef: {name: <your Deployment>} and spec.service: {port: N} instead, \
                     or run it locally with weir run -f",
                ),
                None,
            ),
            Mode::Kubernetes { target, .. } => {
                let strategy = match &rollout.strategy {
                    Strategy::Canary { steps, .. } => format!("{} steps", steps.len()),
                    Strategy::BlueGreen(_) => "blue-green".to_string(),
                };
                let detail = format!(
                    "Canary {name}: target Deployment {target}, {strategy}, {} metrics",
                    rollout.analysis.metrics.len()
                );
                (Check::pass(names::CANARY, detail), Some(rollout))
            }
        },
    }
}

/// The verdict on target Deployment `name` (`read`), whose frontend serves
/// on `port`.
pub fn target(read: &Read<Option<Deployment>>, name: &str, namespace: &str, port: u16) -> Check {
    let deployment = match read {
        Ok(Some(d)) => d,
        Ok(None) => {
            return Check::fail(
                names::TARGET,
                format!(
                    "no Deployment {name} in namespace {namespace} (the Canary's spec.targetRef.name)"
                ),
                format!(
                    "create Deployment {name} in {namespace}, or set spec.targetRef.name to one of \
                     kubectl get deployments -n {namespace}"
                ),
            );
        }
        Err(e) => return e.warn(names::TARGET, &format!("Deployment {name}")),
    };
    let containers = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.as_slice())
        .unwrap_or_default();
    let without: Vec<&str> = containers
        .iter()
        .filter(|c| c.readiness_probe.is_none())
        .map(|c| c.name.as_str())
        .collect();
    if containers.is_empty() || !without.is_empty() {
        return Check::fail(
            names::TARGET,
            format!(
                "Deployment {name}: no readinessProbe on container {}: weir moves traffic onto a \
                 cohort once its pods are ready, and without a probe a pod is ready before its \
                 model has loaded",
                if without.is_empty() {
                    "(none)".to_string()
                } else {
                    without.join(", ")
                }
            ),
            format!(
                "add to each container of Deployment {name}: readinessProbe: {{httpGet: {{path: \
                 /health, port: {port}}}, periodSeconds: 5}} (vLLM and SGLang serve /health)"
            ),
        );
    }
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    Check::pass(
        names::TARGET,
        format!(
            "Deployment {name}: {replicas} replicas, a readiness probe on {}",
            containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// The verdict on a graph's other components: each found, each container
/// with a readiness probe (`failed`: the target check of each one that
/// is not).
pub fn graph(graph: &weir_controller::engine::graph::Graph, failed: Vec<Check>) -> Check {
    let order: Vec<&str> = graph.parts.iter().map(|p| p.name.as_str()).collect();
    match failed.into_iter().next() {
        None => Check::pass(
            names::GRAPH,
            format!(
                "{} components, started in this order: {}",
                order.len(),
                order.join(", ")
            ),
        ),
        Some(first) => Check::new(names::GRAPH, first.status, first.detail, first.fix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::check::Status;

    fn canary_fixture() -> Canary {
        serde_json::from_str(include_str!("../../tests/fixtures/canary.json")).expect("canary")
    }

    fn deployment(probes: &[bool]) -> Deployment {
        let containers: Vec<serde_json::Value> = probes
            .iter()
            .enumerate()
            .map(|(i, probe)| {
                let mut c = serde_json::json!({"name": format!("c{i}"), "image": "vllm"});
                if *probe {
                    c["readinessProbe"] =
                        serde_json::json!({"httpGet": {"path": "/health", "port": 8000}});
                }
                c
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "chat-frontend"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "chat"}},
                     "template": {"metadata": {"labels": {"app": "chat"}},
                                  "spec": {"containers": containers}}}
        }))
        .expect("deployment")
    }

    #[test]
    fn a_target_with_probes_on_every_container_passes() {
        let got = target(
            &Ok(Some(deployment(&[true, true]))),
            "chat-frontend",
            "llm",
            8000,
        );
        assert_eq!(got.status, Status::Pass, "{got:?}");
        assert!(got.detail.contains("4 replicas"), "{got:?}");
    }

    #[test]
    fn a_missing_target_or_a_container_without_probe_fails_naming_it() {
        let got = target(&Ok(None), "chat-frontend", "llm", 8000);
        assert_eq!(got.status, Status::Fail);
        assert!(
            got.detail
                .contains("no Deployment chat-frontend in namespace llm"),
            "{got:?}"
        );
        let got = target(
            &Ok(Some(deployment(&[true, false]))),
            "chat-frontend",
            "llm",
            8000,
        );
        assert_eq!(got.status, Status::Fail);
        assert!(
            got.detail.contains("no readinessProbe on container c1"),
            "{got:?}"
        );
        assert!(got.fix.contains("port: 8000"), "{got:?}");
    }

    #[test]
    fn the_canary_must_exist_and_run_in_kubernetes_mode() {
        let c = canary_fixture();
        let (got, rollout) = canary(&Ok(Some(c.clone())), "chat", "llm");
        assert_eq!(got.status, Status::Pass, "{got:?}");
        assert!(rollout.is_some());
        let (got, rollout) = canary(&Ok(None), "chat", "llm");
        assert_eq!(got.status, Status::Fail);
        assert!(rollout.is_none());
        let mut bad = c;
        bad.spec.analysis.interval = "soon".into();
        let (got, _) = canary(&Ok(Some(bad)), "chat", "llm");
        assert_eq!(got.status, Status::Fail);
        assert!(got.detail.contains("interval"), "{got:?}");
    }
}
