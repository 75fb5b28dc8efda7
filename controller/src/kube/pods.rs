//! Why a cohort's pods are not ready, in their own words: what the
//! scheduler, the kubelet and the container runtime wrote on them
//! (`Unschedulable: 0/2 nodes are available: 2 Insufficient
//! nvidia.com/gpu.`, `ImagePullBackOff: ...`, a failing readiness probe).
//! A step that waits on replicas says this in status and an Event, so the
//! person watching learns what is missing without `kubectl describe`.
//!
//! [`summarize`] is pure; [`unready`] lists a cohort's pods, and only when
//! it has fewer ready replicas than it was given.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams};

/// The extended resource NVIDIA's device plugin advertises.
pub const GPU: &str = "nvidia.com/gpu";

/// Longest text kept from one pod's message (the scheduler's names every
/// node kind and preemption too).
const MAX_MESSAGE: usize = 200;
/// Most distinct reasons said; the rest are counted.
const MAX_REASONS: usize = 3;

/// What `pods` say about those not ready (terminating pods left out), the
/// most common reason first: `2 pods Unschedulable: 0/2 nodes are
/// available: 2 Insufficient nvidia.com/gpu.`. `None` when every pod is
/// ready or none says anything.
pub fn summarize(pods: &[Pod]) -> Option<String> {
    let mut by_reason: BTreeMap<String, u32> = BTreeMap::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(why) = why_not_ready(pod) {
            *by_reason.entry(why).or_default() += 1;
        }
    }
    let mut reasons: Vec<(String, u32)> = by_reason.into_iter().collect();
    // Most pods first; ties in a stable (alphabetical) order.
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let said = reasons.len().min(MAX_REASONS);
    let mut parts: Vec<String> = reasons[..said]
        .iter()
        .map(|(why, n)| format!("{n} {} {why}", if *n == 1 { "pod" } else { "pods" }))
        .collect();
    let rest: u32 = reasons[said..].iter().map(|(_, n)| n).sum();
    if rest > 0 {
        parts.push(format!("{rest} more for other reasons"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Why one pod is not ready, or `None` when it is. The first that applies:
/// not scheduled, a container waiting (image pull, crash loop) or ended,
/// then the Ready condition's own reason (a failing readiness probe).
fn why_not_ready(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let condition = |kind: &str| conditions.iter().find(|c| c.type_ == kind);
    if condition("Ready").is_some_and(|c| c.status == "True") {
        return None;
    }
    if let Some(c) = condition("PodScheduled").filter(|c| c.status == "False") {
        return Some(said(
            c.reason.as_deref(),
            c.message.as_deref(),
            "not scheduled",
        ));
    }
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    for c in containers.iter().filter(|c| !c.ready) {
        let state = c.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            // Being created is not a problem to report, only slow.
            if w.reason.as_deref() != Some("ContainerCreating") {
                return Some(said(w.reason.as_deref(), w.message.as_deref(), "waiting"));
            }
        }
        if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            let reason = t.reason.as_deref().unwrap_or("Terminated");
            return Some(format!("{reason} (exit code {})", t.exit_code));
        }
        if state.is_some_and(|s| s.running.is_some()) {
            let restarts = match c.restart_count {
                0 => String::new(),
                1 => " after 1 restart".into(),
                n => format!(" after {n} restarts"),
            };
            return Some(format!(
                "running, readiness probe not passing (container {}){restarts}",
                c.name
            ));
        }
    }
    let phase = status.phase.as_deref().unwrap_or("Pending");
    match condition("Ready") {
        Some(c) if c.reason.is_some() || c.message.is_some() => {
            Some(said(c.reason.as_deref(), c.message.as_deref(), phase))
        }
        _ => Some(phase.to_string()),
    }
}

/// `reason: message`, the message cut to [`MAX_MESSAGE`] characters.
fn said(reason: Option<&str>, message: Option<&str>, otherwise: &str) -> String {
    let reason = reason.filter(|r| !r.is_empty()).unwrap_or(otherwise);
    match message.map(str::trim).filter(|m| !m.is_empty()) {
        None => reason.to_string(),
        Some(m) if m.chars().count() > MAX_MESSAGE => {
            let cut: String = m.chars().take(MAX_MESSAGE).collect();
            format!("{reason}: {cut}…")
        }
        Some(m) => format!("{reason}: {m}"),
    }
}

/// What the pods selected by `selector` say, when `ready < wanted` (a
/// cohort with all it was given is not listed). A failed list says nothing:
/// the message is a courtesy, never a reason to fail the reconcile.
pub async fn unready(
    pods: &Api<Pod>,
    selector: &BTreeMap<String, String>,
    ready: u32,
    wanted: u32,
) -> Option<String> {
    if ready >= wanted || selector.is_empty() {
        return None;
    }
    let labels = label_selector(selector);
    match pods.list(&ListParams::default().labels(&labels)).await {
        Ok(list) => summarize(&list.items),
        Err(e) => {
            tracing::debug!(error = %e, selector = %labels, "listing pods to say why they are not ready");
            None
        }
    }
}

/// A model canary's check before a run moves traffic: whether every ready
/// pod of `selector` lists `model` in its `/v1/models` (on `port`, the
/// Services' target port). The first pod that does not, by name and
/// address, with what it lists and how to load the model; `None` when
/// every ready pod does, or there is none (readiness is said elsewhere).
/// A failed list says nothing: the check holds a run back only on what a
/// pod answered or failed to answer.
pub async fn model_missing(
    pods: &Api<Pod>,
    selector: &BTreeMap<String, String>,
    port: u16,
    model: &str,
) -> Option<String> {
    let labels = label_selector(selector);
    let list = match pods.list(&ListParams::default().labels(&labels)).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::debug!(error = %e, selector = %labels, "listing pods to check their models");
            return None;
        }
    };
    let client = reqwest::Client::builder()
        .timeout(MODELS_TIMEOUT)
        .build()
        .ok()?;
    for pod in list.iter().filter(|p| why_not_ready(p).is_none()) {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) else {
            continue;
        };
        let name = pod.metadata.name.as_deref().unwrap_or("?");
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        let url = format!("http://{host}:{port}/v1/models");
        let why = match client.get(&url).send().await {
            Ok(answer) => {
                let body = answer.text().await.unwrap_or_default();
                crate::models::missing(&body, model)
            }
            Err(e) => Some(format!("does not answer {url} ({e})")),
        };
        if let Some(why) = why {
            return Some(format!("pod {name} ({ip}) {why}"));
        }
    }
    None
}

/// How long one pod may take to list its models.
const MODELS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// `k=v,...` for a list call.
fn label_selector(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// How many pods `selector` selects that hold a node's resources (not
/// Succeeded or Failed), and how many of those are not being deleted.
/// `None` when they cannot be listed.
pub async fn held(
    pods: &Api<Pod>,
    selector: &BTreeMap<String, String>,
) -> Option<super::desired::PodCount> {
    let labels = label_selector(selector);
    match pods.list(&ListParams::default().labels(&labels)).await {
        Ok(list) => Some(count_held(&list.items)),
        Err(e) => {
            tracing::warn!(error = %e, selector = %labels, "listing pods for the GPU budget");
            None
        }
    }
}

/// [`held`]'s count of `pods`.
fn count_held(pods: &[Pod]) -> super::desired::PodCount {
    let holding = pods.iter().filter(|p| {
        !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    });
    let mut count = super::desired::PodCount::default();
    for pod in holding {
        count.held += 1;
        if pod.metadata.deletion_timestamp.is_none() {
            count.live += 1;
        }
    }
    count
}

/// A whole number of GPUs; None for anything else (GPUs are not divisible).
pub fn whole(q: &Quantity) -> Option<u32> {
    q.0.trim().parse().ok()
}

/// The GPUs a container asks for: its request, else its limit (for
/// extended resources the two must be equal, and a limit alone sets both).
fn container_gpus(c: &Container) -> u32 {
    let res = c.resources.as_ref();
    let get = |m: Option<&BTreeMap<String, Quantity>>| m.and_then(|m| m.get(GPU)).and_then(whole);
    get(res.and_then(|r| r.requests.as_ref()))
        .or_else(|| get(res.and_then(|r| r.limits.as_ref())))
        .unwrap_or(0)
}

/// The GPUs a pod with these containers holds, as the scheduler counts
/// it: the larger of the sum of its containers and its largest init
/// container.
pub fn pod_gpus(containers: &[Container], init: &[Container]) -> u32 {
    let sum: u32 = containers.iter().map(container_gpus).sum();
    let init = init.iter().map(container_gpus).max().unwrap_or(0);
    sum.max(init)
}

/// The GPUs each pod of `template` holds.
pub fn template_gpus(template: &PodTemplateSpec) -> u32 {
    template.spec.as_ref().map_or(0, |p| {
        pod_gpus(
            &p.containers,
            p.init_containers.as_deref().unwrap_or_default(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).expect("pod")
    }

    fn unschedulable() -> Pod {
        pod(json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
        }]}))
    }

    fn ready() -> Pod {
        pod(json!({"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}
        ]}))
    }

    fn waiting(reason: &str, message: &str) -> Pod {
        pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "vllm", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": reason, "message": message}}}]}),
        )
    }

    fn probe_failing(restarts: i32) -> Pod {
        pod(json!({"phase": "Running", "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                 "message": "containers with unready status: [vllm]"}],
            "containerStatuses": [{"name": "vllm", "image": "x", "imageID": "", "ready": false,
                "restartCount": restarts, "state": {"running": {}}}]}))
    }

    #[test]
    fn each_pods_own_reason_is_said_most_common_first() {
        let pods = [
            ready(),
            unschedulable(),
            probe_failing(0),
            unschedulable(),
            ready(),
        ];
        let said = summarize(&pods).expect("something to say");
        assert!(
            said.starts_with(
                "2 pods Unschedulable: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
            ),
            "{said}"
        );
        assert!(
            said.ends_with("; 1 pod running, readiness probe not passing (container vllm)"),
            "{said}"
        );
    }

    #[test]
    fn ready_and_terminating_pods_say_nothing() {
        assert_eq!(summarize(&[ready(), ready()]), None);
        let mut leaving = unschedulable();
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_eq!(summarize(&[leaving]), None);
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn waiting_containers_give_their_reason_but_creation_is_not_a_problem() {
        let pull = waiting("ImagePullBackOff", "Back-off pulling image \"vllm:v9\"");
        assert_eq!(
            summarize(&[pull]).as_deref(),
            Some("1 pod ImagePullBackOff: Back-off pulling image \"vllm:v9\"")
        );
        // ContainerCreating falls through to the phase.
        assert_eq!(
            summarize(&[waiting("ContainerCreating", "")]).as_deref(),
            Some("1 pod Pending")
        );
        assert_eq!(
            summarize(&[probe_failing(3)]).as_deref(),
            Some("1 pod running, readiness probe not passing (container vllm) after 3 restarts")
        );
    }

    #[test]
    fn long_messages_and_many_reasons_are_bounded() {
        let long = "x".repeat(10_000);
        let said = summarize(&[waiting("ErrImagePull", &long)]).expect("said");
        assert!(
            said.chars().count() < MAX_MESSAGE + 40,
            "{} chars",
            said.len()
        );
        assert!(said.ends_with('…'));
        let pods: Vec<Pod> = (0..6)
            .map(|i| waiting(&format!("Reason{i}"), "m"))
            .collect();
        let said = summarize(&pods).expect("said");
        assert_eq!(said.matches("; ").count(), MAX_REASONS, "{said}");
        assert!(said.ends_with("3 more for other reasons"), "{said}");
    }
}
