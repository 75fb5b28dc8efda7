//! GPUs: nodes with allocatable `nvidia.com/gpu`, and whether they have
//! room for what the rollout adds at its peak.
//!
//! The peak follows the engine's own arithmetic, phase by phase:
//!
//! - adoption (a Canary the controller has not seen yet): the stable copy
//!   is created at full size beside the target, which is scaled to zero
//!   only once the copy is ready;
//! - each `setWeight` step: replicas per cohort from
//!   `weir_controller::engine::replicas::for_share` (`matchWeight`, fixed
//!   canary replicas, or a GPU budget); blue-green: `previewReplicas`
//!   (default: a full copy) beside stable, grown to a full copy for the
//!   cutover;
//! - promotion: the proven canary grows to full size (when a GPU budget
//!   and a `maxSurge` the user set leave room:
//!   `weir_controller::engine::Rollout::promotion_limit`) while stable is
//!   replaced: `RollingUpdate` adds its surge
//!   (`weir_controller::kube::builders::promotion_strategy`, capped by that
//!   limit), `Recreate` none. Under `gpuBudget` nothing rolls: capacity
//!   moves between the cohorts one replica at a time (adoption and
//!   promotion alike), never beyond the budget.
//!
//! Free GPUs are what Kubernetes' scheduler would see: per schedulable,
//! Ready node, allocatable minus the GPU requests of the pods bound to it
//! (not Succeeded or Failed). A pod needs all its GPUs on one node, so the
//! room is counted in pods per node.

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weir_controller::engine::graph::{Budget, PartSize, held_at_most, unit};
use weir_controller::engine::replicas::for_share;
use weir_controller::engine::spec::SpecError;
use weir_controller::engine::spec::{Step, Strategy};
use weir_controller::engine::{Rollout, Share};
use weir_controller::kube::builders::promotion_strategy;
use weir_crds::PromotionStrategy;

use super::check::{Check, Read, names};

pub use weir_controller::kube::pods::{GPU, pod_gpus, whole};

/// A node with allocatable GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuNode {
    /// Its name.
    pub name: String,
    /// `status.allocatable["nvidia.com/gpu"]`.
    pub allocatable: u32,
    /// GPUs requested by the pods bound to it.
    pub requested: u32,
    /// Schedulable (not cordoned) and Ready.
    pub usable: bool,
}

impl GpuNode {
    /// GPUs not requested by any pod.
    pub fn free(&self) -> u32 {
        self.allocatable.saturating_sub(self.requested)
    }
}

/// The nodes with allocatable GPUs, each with what `pods` request on it.
pub fn gpu_nodes(nodes: &[Node], pods: &[Pod]) -> Vec<GpuNode> {
    let mut out: Vec<GpuNode> = nodes
        .iter()
        .filter_map(|n| {
            let allocatable = n
                .status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get(GPU))
                .and_then(whole)
                .filter(|&g| g > 0)?;
            let cordoned = n
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            Some(GpuNode {
                name: n.metadata.name.clone().unwrap_or_default(),
                allocatable,
                requested: 0,
                usable: ready && !cordoned,
            })
        })
        .collect();
    for pod in pods {
        let finished = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let Some(spec) = pod.spec.as_ref() else {
            continue;
        };
        let Some(node) = spec.node_name.as_deref() else {
            continue;
        };
        if finished {
            continue;
        }
        if let Some(n) = out.iter_mut().find(|n| n.name == node) {
            let init = spec.init_containers.as_deref().unwrap_or_default();
            n.requested += pod_gpus(&spec.containers, init);
        }
    }
    out
}

/// The verdict on the cluster's GPU nodes. `wants_gpus`: whether the
/// target's pods request GPUs (None: unknown, no `--canary`).
pub fn nodes(read: &Read<Vec<GpuNode>>, wants_gpus: Option<bool>) -> Check {
    let nodes = match read {
        Ok(n) => n,
        Err(e) => return e.warn(names::GPU_NODES, "the nodes and their pods"),
    };
    let fix = "install NVIDIA's device plugin on the GPU nodes (the GPU Operator: helm install \
               gpu-operator nvidia/gpu-operator -n gpu-operator --create-namespace), then check \
               kubectl get nodes -o custom-columns=NAME:.metadata.name,GPUS:.status.allocatable.nvidia\\.com/gpu";
    if nodes.is_empty() {
        return if wants_gpus == Some(false) {
            Check::warn(
                names::GPU_NODES,
                "no node has allocatable nvidia.com/gpu (the target's pods request none)",
                fix,
            )
        } else {
            Check::fail(
                names::GPU_NODES,
                "no node has allocatable nvidia.com/gpu",
                fix,
            )
        };
    }
    let usable: Vec<&GpuNode> = nodes.iter().filter(|n| n.usable).collect();
    if usable.is_empty() {
        let names_: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        return Check::fail(
            names::GPU_NODES,
            format!(
                "every GPU node is cordoned or not Ready: {}",
                names_.join(", ")
            ),
            format!(
                "kubectl uncordon {} (and kubectl describe node for why one is not Ready)",
                names_.join(" ")
            ),
        );
    }
    let allocatable: u32 = usable.iter().map(|n| n.allocatable).sum();
    let free: u32 = usable.iter().map(|n| n.free()).sum();
    let mut detail = format!(
        "{} GPU nodes, {allocatable} nvidia.com/gpu allocatable, {free} free",
        usable.len()
    );
    let unusable = nodes.len() - usable.len();
    if unusable > 0 {
        detail.push_str(&format!(" ({unusable} more cordoned or not Ready)"));
    }
    Check::pass(names::GPU_NODES, detail)
}

/// Which part of a rollout a [`Phase`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The stable copy starts beside the target (a Canary not yet run).
    Adoption,
    /// A `setWeight` step, or the blue-green preview.
    Step,
    /// The canary at full size while stable is replaced.
    Promotion,
}

/// One phase of a rollout: the replicas both cohorts hold in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// Which part of the rollout.
    pub stage: Stage,
    /// What happens then, e.g. `setWeight 50%`.
    pub name: String,
    /// Stable's replicas.
    pub stable: u32,
    /// The canary's.
    pub canary: u32,
    /// Extra pods of stable's rolling update.
    pub surge: u32,
}

impl Phase {
    /// Pods held in this phase.
    pub fn pods(&self) -> u32 {
        self.stable + self.canary + self.surge
    }
}

/// The phases of a rollout of `rollout` at `total` replicas (the user's
/// count); `adopted`: the controller already runs the stable copy.
pub fn phases(rollout: &Rollout, total: u32, adopted: bool) -> Vec<Phase> {
    let promotion = &rollout.promotion;
    let total = total.max(1);
    let budget = rollout.gpu_budget;
    let full_stable = budget.map_or(total, |b| total.min(b.max(1)));
    let mut out = Vec::new();
    if !adopted {
        // Under a budget too small for both, the target's replicas move to
        // the copy one at a time: never more than the budget.
        let (name, stable) = match budget {
            Some(b) if b < total.saturating_mul(2) => (
                "adoption (the target's replicas move to the stable copy within the budget)",
                b.saturating_sub(total),
            ),
            _ => (
                "adoption (the stable copy starts beside the target)",
                full_stable,
            ),
        };
        out.push(Phase {
            stage: Stage::Adoption,
            name: name.into(),
            stable,
            canary: total,
            surge: 0,
        });
    }
    let (mut stable, mut canary, mut grows) = (full_stable, 0, true);
    match &rollout.strategy {
        Strategy::Canary {
            fixed_replicas,
            steps,
        } => {
            for step in steps {
                if let Step::SetWeight(share) = step {
                    if *share == Share::NONE {
                        continue;
                    }
                    let r = for_share(total, *share, *fixed_replicas, budget);
                    (stable, canary) = (r.stable, r.canary);
                    grows = *share < Share::ALL;
                    out.push(Phase {
                        stage: Stage::Step,
                        name: format!("setWeight {share}%"),
                        stable,
                        canary,
                        surge: 0,
                    });
                }
            }
        }
        Strategy::BlueGreen(bg) => {
            canary = bg.preview_replicas.unwrap_or(total);
            // The preview grows to a full copy before the cutover.
            grows = true;
            out.push(Phase {
                stage: Stage::Step,
                name: format!("blue-green preview ({canary} replicas)"),
                stable,
                canary,
                surge: 0,
            });
        }
    }
    let limit = rollout.promotion_limit(total);
    if let Some(b) = budget {
        // Capacity moves to the canary one replica at a time, stable takes
        // the new template at zero and gets it back: at the peak the
        // canary carries everything the budget allows, and nothing rolls.
        canary = total.min(b);
        out.push(Phase {
            stage: Stage::Promotion,
            name: "promotion (within the GPU budget)".into(),
            stable: b.saturating_sub(canary).min(stable),
            canary,
            surge: 0,
        });
        return out;
    }
    if grows && limit.is_none_or(|l| l >= total + stable) {
        canary = total;
    }
    let room = limit.map(|l| l.saturating_sub(stable + canary));
    let surge = match promotion_strategy(promotion, stable, room, canary).rolling_update {
        Some(ru) => match ru.max_surge {
            Some(IntOrString::Int(n)) => u32::try_from(n).unwrap_or(0),
            _ => 0,
        },
        None => 0,
    };
    let how = match promotion.strategy {
        PromotionStrategy::RollingUpdate => format!("RollingUpdate, surge {surge}"),
        PromotionStrategy::Recreate => "Recreate".to_string(),
    };
    out.push(Phase {
        stage: Stage::Promotion,
        name: format!("promotion ({how})"),
        stable,
        canary,
        surge,
    });
    out
}

/// The phase that holds the most pods (the earliest of equals).
pub fn peak(phases: &[Phase]) -> Option<&Phase> {
    phases
        .iter()
        .fold(None, |best: Option<&Phase>, p| match best {
            Some(b) if b.pods() >= p.pods() => Some(b),
            _ => Some(p),
        })
}

/// What the capacity check needs to know of the Canary and its target.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The phases of its rollout.
    pub phases: Vec<Phase>,
    /// Pods both cohorts hold now (their GPUs are already requested).
    pub held: u32,
    /// GPUs per pod of the target.
    pub gpus_per_pod: u32,
    /// A graph canary: every component, the target included (the phases
    /// are in the graph's unit, `total` of them; each component holds its
    /// share, `weir_controller::engine::graph::scaled`).
    pub graph: Vec<Component>,
    /// A graph's `gpuBudget` resolved against its components
    /// (`Ok(None)`: none, or a single target).
    pub graph_budget: Result<Option<Budget>, SpecError>,
    /// The target's replicas, a graph's unit (the phases' scale).
    pub total: u32,
}

/// One component of a graph, for the capacity check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// Its Deployment.
    pub name: String,
    /// The replicas the user asked of it.
    pub total: u32,
    /// Pods both its cohorts hold now.
    pub held: u32,
    /// GPUs per pod.
    pub gpus_per_pod: u32,
}

/// The phases' scale for `rollout` of `total` replicas: a graph's is its
/// unit, under its `gpuBudget` resolved on `rollout` as the controller
/// resolves it (`weir_controller::engine::graph::Graph::budget`) from
/// its components. A single target: `total`, no graph budget.
pub fn in_units(
    rollout: &mut Rollout,
    graph: &[Component],
    total: u32,
) -> (u32, Result<Option<Budget>, SpecError>) {
    let Some(g) = &rollout.graph else {
        return (total, Ok(None));
    };
    let sizes: Vec<PartSize> = graph
        .iter()
        .map(|c| PartSize {
            total: c.total,
            gpus_per_pod: c.gpus_per_pod,
        })
        .collect();
    let budget = g.budget(&sizes);
    if let Ok(Some(b)) = &budget {
        rollout.gpu_budget = Some(b.units);
    }
    (unit(sizes.iter().map(|p| p.total)), budget)
}

/// A graph's pods of `c` in `phase` (the surge of a rolling update is
/// one copy's at a time; counted for every component, as the worst case).
fn component_pods(phase: &Phase, total: u32, c: &Component) -> u32 {
    use weir_controller::engine::graph::scaled;
    scaled(phase.stable, total, c.total)
        + scaled(phase.canary, total, c.total)
        + scaled(phase.surge, total, c.total)
}

/// `1 GPU`, `4 GPUs`.
fn gpu_count(n: u32) -> String {
    if n == 1 {
        "1 GPU".into()
    } else {
        format!("{n} GPUs")
    }
}

/// The verdict on spare capacity for a graph: at the phase that holds the
/// most GPUs, the pods each component adds are placed on the nodes' free
/// GPUs, largest pods first (a pod needs all its GPUs on one node).
fn graph_capacity(plan: &Plan, nodes: &Read<Vec<GpuNode>>) -> Check {
    let gpus = |phase: &Phase| -> u32 {
        plan.graph
            .iter()
            .map(|c| component_pods(phase, plan.total, c) * c.gpus_per_pod)
            .sum()
    };
    if plan.graph.iter().all(|c| c.gpus_per_pod == 0) {
        return Check::skip(
            names::GPU_CAPACITY,
            "no component of the graph requests nvidia.com/gpu",
        );
    }
    let budget = match &plan.graph_budget {
        Ok(b) => b.as_ref(),
        Err(e) => {
            return Check::fail(
                names::GPU_CAPACITY,
                e.to_string(),
                "raise spec.graph.gpuBudget, or remove it and give the canary graph room of its own",
            );
        }
    };
    let nodes = match nodes {
        Ok(n) => n,
        Err(e) => return e.warn(names::GPU_CAPACITY, "the nodes and their pods"),
    };
    let Some(peak) = plan
        .phases
        .iter()
        .fold(None, |best: Option<&Phase>, p| match best {
            Some(b) if gpus(b) >= gpus(p) => Some(b),
            _ => Some(p),
        })
    else {
        return Check::skip(names::GPU_CAPACITY, "the rollout has no phases");
    };
    let mut extra: Vec<(&Component, u32)> = plan
        .graph
        .iter()
        .filter(|c| c.gpus_per_pod > 0)
        .map(|c| {
            (
                c,
                component_pods(peak, plan.total, c).saturating_sub(c.held),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    extra.sort_by_key(|(c, _)| std::cmp::Reverse(c.gpus_per_pod));
    let mut free: Vec<u32> = nodes
        .iter()
        .filter(|n| n.usable)
        .map(GpuNode::free)
        .collect();
    let mut unplaced: Vec<String> = Vec::new();
    for (c, n) in &extra {
        let mut left = *n;
        for f in free.iter_mut() {
            while left > 0 && *f >= c.gpus_per_pod {
                *f -= c.gpus_per_pod;
                left -= 1;
            }
        }
        if left > 0 {
            unplaced.push(format!(
                "{left} pod(s) of {} ({} each)",
                c.name,
                gpu_count(c.gpus_per_pod)
            ));
        }
    }
    let wanted: Vec<String> = extra
        .iter()
        .map(|(c, n)| format!("{n} of {} ({} each)", c.name, gpu_count(c.gpus_per_pod)))
        .collect();
    let at_peak = format!(
        "at its peak, {}, the graph holds {} nvidia.com/gpu over its components; the pods it adds: {}",
        peak.name,
        gpus(peak),
        if wanted.is_empty() {
            "none".to_string()
        } else {
            wanted.join(", ")
        }
    );
    let within = budget.map(|b| {
        format!(
            "; within spec.graph.gpuBudget (both cohorts hold at most {} of the graph's {} units, {} nvidia.com/gpu)",
            b.units, plan.total, b.gpus
        )
    });
    let at_peak = format!("{at_peak}{}", within.unwrap_or_default());
    if let Some(b) = budget.filter(|b| b.units < plan.total)
        && unplaced.is_empty()
    {
        // Each cohort needs a pod of every component, and each rounds
        // on its own: a budget equal to what stable holds can leave no
        // room for a split, and stable then runs short.
        let whole: u32 = plan
            .graph
            .iter()
            .map(|c| c.gpus_per_pod * held_at_most(plan.total, plan.total, c.total))
            .sum();
        return Check::warn(
            names::GPU_CAPACITY,
            format!(
                "{at_peak}: stable runs {} of its {} units while no run is in progress",
                b.units, plan.total
            ),
            format!(
                "set spec.graph.gpuBudget to at least {whole} so every split of the graph between the cohorts fits beside a whole stable"
            ),
        );
    }
    if unplaced.is_empty() {
        return Check::pass(
            names::GPU_CAPACITY,
            format!("{at_peak}: GPU nodes have room"),
        );
    }
    Check::fail(
        names::GPU_CAPACITY,
        format!(
            "{at_peak}, but no node has room for {}",
            unplaced.join(", ")
        ),
        "add GPU node capacity, or use promotion: {strategy: Recreate} to need no surge",
    )
}

/// The verdict on spare capacity for `plan` on `nodes`.
pub fn capacity(plan: &Plan, nodes: &Read<Vec<GpuNode>>) -> Check {
    if !plan.graph.is_empty() {
        return graph_capacity(plan, nodes);
    }
    let per_pod = plan.gpus_per_pod;
    if per_pod == 0 {
        return Check::skip(
            names::GPU_CAPACITY,
            "the target's pods request no nvidia.com/gpu",
        );
    }
    let nodes = match nodes {
        Ok(n) => n,
        Err(e) => return e.warn(names::GPU_CAPACITY, "the nodes and their pods"),
    };
    let Some(peak) = peak(&plan.phases) else {
        return Check::skip(names::GPU_CAPACITY, "the rollout has no phases");
    };
    let extra = peak.pods().saturating_sub(plan.held);
    let usable: Vec<&GpuNode> = nodes.iter().filter(|n| n.usable).collect();
    let room: u32 = usable.iter().map(|n| n.free() / per_pod).sum();
    let free: Vec<String> = usable
        .iter()
        .map(|n| format!("{} {}", n.name, n.free()))
        .collect();
    let at_peak = format!(
        "at its peak, {}, the rollout holds {} pods ({} stable + {} canary + {} surge) of \
         {per_pod} nvidia.com/gpu each; {} are running, so it needs {extra} more",
        peak.name,
        peak.pods(),
        peak.stable,
        peak.canary,
        peak.surge,
        plan.held
    );
    if extra <= room {
        return Check::pass(
            names::GPU_CAPACITY,
            format!("{at_peak}: GPU nodes have room for {room}"),
        );
    }
    let short = extra - room;
    let mut fixes = vec![format!(
        "add {} nvidia.com/gpu of node capacity",
        short * per_pod
    )];
    fixes.push(format!(
        "or set spec.gpuBudget: {} so both cohorts share the GPUs they can get (adoption and \
         promotion move replicas one at a time; stable gives replicas up as the canary grows)",
        plan.held + room
    ));
    if peak.surge > 0 {
        fixes.push("or use promotion: {strategy: Recreate} to need no surge".to_string());
    }
    Check::fail(
        names::GPU_CAPACITY,
        format!(
            "{at_peak}, but GPU nodes have room for {room} (free GPUs: {})",
            if free.is_empty() {
                "none".to_string()
            } else {
                free.join(", ")
            }
        ),
        fixes.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::check::Status;
    use weir_crds::Canary;
    use weir_crds::Promotion;

    fn rollout(spec: serde_json::Value) -> Rollout {
        let mut c: Canary =
            serde_json::from_str(include_str!("../../tests/fixtures/canary.json")).expect("canary");
        let mut value = serde_json::to_value(&c.spec).expect("spec");
        json_merge(&mut value, spec);
        c.spec = serde_json::from_value(value).expect("spec");
        crate::cluster::rollout_of(&c).expect("valid")
    }

    fn json_merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    json_merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn promotion(value: serde_json::Value) -> Promotion {
        serde_json::from_value(value).expect("promotion")
    }

    fn peak_of(phases: &[Phase]) -> (String, u32) {
        let p = peak(phases).expect("a phase");
        (p.name.clone(), p.pods())
    }

    #[test]
    fn the_peak_follows_the_engines_replicas_for_each_strategy() {
        let rolling = promotion(serde_json::json!({}));
        let recreate = promotion(serde_json::json!({"strategy": "Recreate"}));
        let surge_1 = promotion(serde_json::json!({"maxSurge": 1, "maxUnavailable": 0}));
        // (spec change, promotion, total, adopted, phase at peak, pods at peak)
        let steps =
            |w: f64| serde_json::json!({"strategy": {"canary": {"steps": [{"setWeight": w}]}}});
        let table = [
            // 4 replicas, canary to full size at promotion, surge 25% of 4 = 1.
            (
                steps(20.0),
                &rolling,
                4,
                true,
                "promotion (RollingUpdate, surge 1)",
                9,
            ),
            (steps(20.0), &recreate, 4, true, "promotion (Recreate)", 8),
            // A maxSurge the user set bounds both cohorts: 4 + 1 pods at
            // most, so the canary of 1 does not grow and covers stable's
            // surge; the step already holds the peak.
            (steps(25.0), &surge_1, 4, true, "setWeight 25%", 5),
            // Not yet adopted: the stable copy beside the target (here
            // more than a promotion's canary of 1 beside stable).
            (
                serde_json::json!({"strategy": {"canary": null, "blueGreen": {"previewReplicas": 1}}}),
                &recreate,
                4,
                false,
                "adoption (the stable copy starts beside the target)",
                8,
            ),
            // Adoption within a budget: the target's replicas move over.
            (
                serde_json::json!({"gpuBudget": 4, "strategy": {"canary": {"steps": [{"setWeight": 25}]}}}),
                &rolling,
                4,
                false,
                "adoption (the target's replicas move to the stable copy within the budget)",
                4,
            ),
            // A budget equal to the replicas: nothing extra, ever.
            (
                serde_json::json!({"gpuBudget": 4, "strategy": {"canary": {"steps": [{"setWeight": 50}]}}}),
                &rolling,
                4,
                true,
                "setWeight 50%",
                4,
            ),
            // Blue-green: a preview of 2 beside 4, grown to 4 for the
            // cutover, promoted with a surge of 1.
            (
                serde_json::json!({"strategy": {"canary": null, "blueGreen": {"previewReplicas": 2}}}),
                &rolling,
                4,
                true,
                "promotion (RollingUpdate, surge 1)",
                9,
            ),
            // Blue-green without previewReplicas: a full copy.
            (
                serde_json::json!({"strategy": {"canary": null, "blueGreen": {}}}),
                &recreate,
                4,
                true,
                "blue-green preview (4 replicas)",
                8,
            ),
        ];
        for (spec, promo, total, adopted, name, pods) in table {
            let r = rollout(spec.clone());
            let mut r = r;
            r.promotion = promo.clone();
            let got = peak_of(&phases(&r, total, adopted));
            assert_eq!(got, (name.to_string(), pods), "{spec}");
        }
        // matchWeight at 20% of 10 is 3 canaries (the engine's own table).
        let r = rollout(steps(20.0));
        let mut r = r;
        r.promotion = recreate.clone();
        let p = phases(&r, 10, true);
        assert_eq!((p[0].stable, p[0].canary), (10, 3), "{p:?}");
    }

    fn node(name: &str, allocatable: u32, requested: u32) -> GpuNode {
        GpuNode {
            name: name.into(),
            allocatable,
            requested,
            usable: true,
        }
    }

    #[test]
    fn capacity_counts_whole_pods_per_node() {
        let plan = Plan {
            phases: vec![Phase {
                stage: Stage::Promotion,
                name: "promotion (Recreate)".into(),
                stable: 4,
                canary: 4,
                surge: 0,
            }],
            held: 4,
            gpus_per_pod: 2,
            graph: Vec::new(),
            graph_budget: Ok(None),
            total: 4,
        };
        // 4 more pods of 2 GPUs: 3 + 3 + 2 free GPUs hold only 1 + 1 + 1.
        let tight = Ok(vec![node("a", 8, 5), node("b", 8, 5), node("c", 2, 0)]);
        let got = capacity(&plan, &tight);
        assert_eq!(got.status, Status::Fail, "{got:?}");
        assert!(got.detail.contains("needs 4 more"), "{got:?}");
        assert!(got.detail.contains("room for 3"), "{got:?}");
        assert!(got.fix.contains("add 2 nvidia.com/gpu"), "{got:?}");
        assert!(got.fix.contains("spec.gpuBudget: 7"), "{got:?}");
        let roomy = Ok(vec![node("a", 8, 0)]);
        assert_eq!(capacity(&plan, &roomy).status, Status::Pass);
        let cpu = Plan {
            gpus_per_pod: 0,
            ..plan
        };
        assert_eq!(capacity(&cpu, &roomy).status, Status::Skip);
    }

    #[test]
    fn a_graph_places_each_components_new_pods_largest_first() {
        let component = |name: &str, total: u32, gpus: u32| Component {
            name: name.into(),
            total,
            held: total,
            gpus_per_pod: gpus,
        };
        // Promotion: the canary graph at full size beside stable, no surge.
        let plan = Plan {
            phases: vec![Phase {
                stage: Stage::Promotion,
                name: "promotion (Recreate)".into(),
                stable: 2,
                canary: 2,
                surge: 0,
            }],
            held: 2,
            gpus_per_pod: 0,
            graph: vec![
                component("frontend", 2, 0),
                component("prefill", 2, 2),
                component("decode", 4, 4),
            ],
            graph_budget: Ok(None),
            total: 2,
        };
        // 4 decode pods of 4 GPUs and 2 prefill pods of 2: 20 GPUs more.
        let roomy = Ok(vec![node("a", 16, 0), node("b", 8, 4)]);
        let got = capacity(&plan, &roomy);
        assert_eq!(got.status, Status::Pass, "{got:?}");
        assert!(got.detail.contains("holds 40 nvidia.com/gpu"), "{got:?}");
        assert!(
            got.detail
                .contains("4 of decode (4 GPUs each), 2 of prefill"),
            "{got:?}"
        );
        // 20 free GPUs in all, but one decode pod fits on no node.
        let split = Ok(vec![node("a", 11, 0), node("b", 3, 0), node("c", 6, 0)]);
        let got = capacity(&plan, &split);
        assert_eq!(got.status, Status::Fail, "{got:?}");
        assert!(
            got.detail
                .contains("no node has room for 1 pod(s) of decode"),
            "{got:?}"
        );
        let cpu = Plan {
            graph: vec![component("frontend", 2, 0)],
            graph_budget: Ok(None),
            ..plan
        };
        assert_eq!(capacity(&cpu, &roomy).status, Status::Skip);
    }

    #[test]
    fn a_graph_within_its_gpu_budget_is_planned_in_units_and_a_short_budget_said() {
        // decode and prefill 2 pods of 1 GPU, the target (a frontend) 1
        // pod of none: stable holds 4 GPUs, all the nodes have.
        let components = vec![
            Component {
                name: "decode".into(),
                total: 2,
                held: 2,
                gpus_per_pod: 1,
            },
            Component {
                name: "prefill".into(),
                total: 2,
                held: 2,
                gpus_per_pod: 1,
            },
            Component {
                name: "chat".into(),
                total: 1,
                held: 1,
                gpus_per_pod: 0,
            },
        ];
        let plan_for = |budget: u32| {
            let mut r = rollout(serde_json::json!({
                "graph": {"components": [{"name": "decode"}, {"name": "prefill"}], "gpuBudget": budget},
                "strategy": {"canary": {"steps": [{"setWeight": 50}]}}
            }));
            let (total, graph_budget) = in_units(&mut r, &components, 1);
            Plan {
                phases: phases(&r, total, true),
                held: 0,
                gpus_per_pod: 0,
                graph: components.clone(),
                graph_budget,
                total,
            }
        };
        let full = Ok(vec![node("a", 2, 2), node("b", 2, 2)]);
        // What stable holds: every phase fits in the GPUs stable gives up.
        let got = capacity(&plan_for(4), &full);
        assert_eq!(got.status, Status::Pass, "{got:?}");
        assert!(
            got.detail.contains("holds 4 nvidia.com/gpu")
                && got.detail.contains("2 of the graph's 2 units"),
            "{got:?}"
        );
        // Less: stable is short while idle, and the fix says what is whole.
        let got = capacity(&plan_for(3), &full);
        assert_eq!(got.status, Status::Warn, "{got:?}");
        assert!(
            got.detail.contains("stable runs 1 of its 2 units"),
            "{got:?}"
        );
        assert!(
            got.fix.contains("spec.graph.gpuBudget to at least 4"),
            "{got:?}"
        );
        // Not one unit: refused with the field.
        let got = capacity(&plan_for(1), &full);
        assert_eq!(got.status, Status::Fail, "{got:?}");
        assert!(
            got.detail
                .starts_with("spec.graph.gpuBudget: 1 GPUs cannot hold"),
            "{got:?}"
        );
    }

    #[test]
    fn gpu_nodes_are_those_with_allocatable_gpus_less_their_pods_requests() {
        let gpu: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gpu-1"},
            "status": {"allocatable": {"nvidia.com/gpu": "8", "cpu": "64"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("node");
        let cpu: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cpu-1"}, "status": {"allocatable": {"cpu": "64"}}
        }))
        .expect("node");
        let pod = |node: &str, gpus: &str, phase: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "spec": {"nodeName": node, "containers": [
                    {"name": "a", "resources": {"limits": {"nvidia.com/gpu": gpus}}},
                    {"name": "b"}
                ]},
                "status": {"phase": phase}
            }))
            .expect("pod")
        };
        let got = gpu_nodes(
            &[gpu, cpu],
            &[
                pod("gpu-1", "2", "Running"),
                pod("gpu-1", "4", "Succeeded"),
                pod("cpu-1", "1", "Running"),
            ],
        );
        assert_eq!(
            got,
            vec![GpuNode {
                name: "gpu-1".into(),
                allocatable: 8,
                requested: 2,
                usable: true
            }]
        );
        assert_eq!(nodes(&Ok(got), None).status, Status::Pass);
        assert_eq!(nodes(&Ok(vec![]), None).status, Status::Fail);
        assert_eq!(nodes(&Ok(vec![]), Some(false)).status, Status::Warn);
        let cordoned = GpuNode {
            usable: false,
            ..node("x", 8, 0)
        };
        assert_eq!(nodes(&Ok(vec![cordoned]), Some(true)).status, Status::Fail);
    }
}
