//! A graph canary on the cluster: what each component's Deployments
//! should be. Pure, like [`super::desired`], which calls it for a Canary
//! with `spec.graph`.
//!
//! Every component works like a single target: the user's Deployment is
//! the canary cohort, `<name>-stable` the stable copy. The engine's
//! replica counts are in the graph's units (its largest component's
//! replicas, [`crate::engine::graph::unit`]); each component gets the
//! same share of its own replicas ([`crate::engine::graph::scaled`]). What
//! the graph adds is order:
//!
//! - a component's cohort grows only once every component before it in
//!   `graph.order` has that cohort's replicas ready (workers before the
//!   frontend that sends them requests);
//! - it shrinks only once every component after it has shrunk (the
//!   frontend's pods are gone before the workers they call go);
//! - while promoting, a stable copy takes the new template only once
//!   every copy before it has rolled it out.
//!
//! Under `graph.gpuBudget` each component grows only into its share of
//! the GPUs that no pod of it holds ([`within_budget`], as a single
//! target does under `gpuBudget`); the shares hold every split of the
//! engine's units ([`crate::engine::graph::Graph::budget`]), so a share
//! binds only while pods leaving still hold their GPUs.
//!
//! Anything held back by order sets [`GraphChanges::held`], so the shell
//! looks again soon: pods becoming ready change Deployments, which wake a
//! reconcile anyway, but the order is kept by this function alone.
//!
//! Isolation: each cohort's containers get the graph's environment for
//! its revision ([`crate::engine::graph::Graph::env`]). The stable copies
//! are weir's and get it in their template; the user's Deployments get it
//! by a patch of those variables only, made while they run no pods (a
//! settled canary is at zero), so no pod is restarted for it. The
//! variables are left out of a revision, so the patch is not a new version.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, PodTemplateSpec};
use kube::ResourceExt;
use weir_crds::{CanaryStatus, Cohort, CohortReplicas, Phase, names};

use super::builders::{self, Owner};
use super::desired::{
    DesiredError, PodCount, StableChange, spec_replicas, template, within_budget,
};
use crate::engine::graph::{Graph, Part, carried, scaled};
use crate::engine::{Cohorts, Rollout};

/// One component as read.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// Its place in the graph.
    pub part: &'a Part,
    /// The user's Deployment (the canary cohort).
    pub target: &'a Deployment,
    /// Its `-stable` copy, when it exists.
    pub stable: Option<&'a Deployment>,
    /// The user's Deployment's `matchLabels`.
    pub selector: &'a BTreeMap<String, String>,
    /// The replicas the user asked of it.
    pub total: u32,
    /// Its share of `graph.gpuBudget`, in its pods
    /// ([`crate::engine::graph::Budget::pods`]); `None`: unbounded.
    pub budget: Option<u32>,
    /// The pods each of its cohorts holds, read only under a budget.
    pub pods: Option<Cohorts<PodCount>>,
}

/// What one component needs, in the order the applier writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The user's Deployment.
    pub name: String,
    /// A strategic-merge patch of its containers' graph variables (None:
    /// they are right, or it runs pods that must not restart for them).
    pub env: Option<serde_json::Value>,
    /// Its stable copy's name.
    pub stable_name: String,
    /// What the stable copy needs.
    pub stable: Option<StableChange>,
    /// The replicas the user's Deployment should be scaled to.
    pub target_replicas: Option<u32>,
    /// What each cohort is given now: what the engine asks, less what
    /// order and the GPU budget hold back (`status.components`).
    pub given: CohortReplicas,
}

/// Every component's changes.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphChanges {
    /// In start order.
    pub changes: Vec<Change>,
    /// Something waits on the order: look again soon.
    pub held: bool,
}

/// `template` without the graph's variables `managed`.
pub fn strip(template: &PodTemplateSpec, managed: &[&str]) -> PodTemplateSpec {
    let mut t = template.clone();
    for c in t.spec.iter_mut().flat_map(|s| s.containers.iter_mut()) {
        if let Some(env) = c.env.as_mut() {
            env.retain(|v| !managed.contains(&v.name.as_str()));
            if env.is_empty() {
                c.env = None;
            }
        }
    }
    t
}

/// `template` with `env` set on every container (replacing a variable of
/// the same name, appending the others).
pub fn with_env(template: &PodTemplateSpec, env: &[(String, String)]) -> PodTemplateSpec {
    let mut t = template.clone();
    for c in t.spec.iter_mut().flat_map(|s| s.containers.iter_mut()) {
        let vars = c.env.get_or_insert_with(Vec::new);
        for (name, value) in env {
            match vars.iter_mut().find(|v| &v.name == name) {
                Some(v) => {
                    v.value = Some(value.clone());
                    v.value_from = None;
                }
                None => vars.push(EnvVar {
                    name: name.clone(),
                    value: Some(value.clone()),
                    value_from: None,
                }),
            }
        }
    }
    t
}

/// Whether every container of `template` has exactly `env` among `managed`.
fn has_env(template: &PodTemplateSpec, managed: &[&str], env: &[(String, String)]) -> bool {
    template
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .all(|c| {
            let mut set: Vec<(String, String)> = c
                .env
                .iter()
                .flatten()
                .filter(|v| managed.contains(&v.name.as_str()))
                .map(|v| (v.name.clone(), v.value.clone().unwrap_or_default()))
                .collect();
            set.sort();
            set == env
        })
}

/// The patch that sets `env` on every container of `target`.
fn env_patch(target: &Deployment, env: &[(String, String)]) -> serde_json::Value {
    let containers: Vec<serde_json::Value> = template(target)
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            let vars: Vec<serde_json::Value> = env
                .iter()
                .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
                .collect();
            serde_json::json!({"name": c.name, "env": vars})
        })
        .collect();
    serde_json::json!({"spec": {"template": {"spec": {"containers": containers}}}})
}

/// The graph's revision: one id for the set of templates, the graph's
/// variables left out. As for a single target, the revision recorded on
/// the stable copies when every copy runs exactly its target's template
/// (so a defaulted new template field does not look like a new version).
pub fn revision(seen: &[Seen<'_>], graph: &Graph) -> String {
    let managed = graph.managed_env();
    let mut stripped: Vec<(&str, PodTemplateSpec)> = seen
        .iter()
        .map(|s| (s.part.name.as_str(), strip(&template(s.target), &managed)))
        .collect();
    stripped.sort_by(|a, b| a.0.cmp(b.0));
    let hash = builders::templates_revision(&stripped);
    let same = seen.iter().all(|s| {
        s.stable.and_then(|d| d.spec.as_ref()).is_some_and(|spec| {
            strip(
                &builders::unlabel_stable(&spec.template, s.selector),
                &managed,
            ) == strip(&template(s.target), &managed)
        })
    });
    match carries(seen) {
        Some(recorded) if same => recorded,
        _ => hash,
    }
}

/// The revision every stable copy carries, when they agree.
pub fn carries(seen: &[Seen<'_>]) -> Option<String> {
    common(seen.iter().map(|s| {
        s.stable
            .and_then(|d| d.annotations().get(names::REVISION_ANNOTATION).cloned())
    }))
}

/// The revision every stable copy has rolled out, when they agree.
pub fn rolled_out(seen: &[Seen<'_>]) -> Option<String> {
    common(
        seen.iter()
            .map(|s| s.stable.and_then(super::reconcile::rolled_out)),
    )
}

fn common(mut each: impl Iterator<Item = Option<String>>) -> Option<String> {
    let first = each.next()??;
    each.all(|r| r.as_ref() == Some(&first)).then_some(first)
}

/// Ready replicas of each cohort of one component.
pub fn ready_of(s: &Seen<'_>) -> CohortReplicas {
    CohortReplicas {
        stable: super::reconcile::ready_replicas(s.stable),
        canary: super::reconcile::ready_replicas(Some(s.target)),
    }
}

/// The graph's ready replicas per cohort, in the graph's units (`total`
/// of them): what its least ready component can carry.
pub fn ready(seen: &[Seen<'_>], total: u32) -> CohortReplicas {
    seen.iter()
        .map(|s| {
            let r = ready_of(s);
            CohortReplicas {
                stable: carried(r.stable, total, s.total),
                canary: carried(r.canary, total, s.total),
            }
        })
        .reduce(|a, b| CohortReplicas {
            stable: a.stable.min(b.stable),
            canary: a.canary.min(b.canary),
        })
        .unwrap_or_default()
}

/// What status asks of one component: the graph's units in
/// proportion.
pub fn asked_of(asked: CohortReplicas, total: u32, part_total: u32) -> CohortReplicas {
    CohortReplicas {
        stable: scaled(asked.stable, total, part_total),
        canary: scaled(asked.canary, total, part_total),
    }
}

/// Whether a Deployment has no more than `n` pods left, as its controller
/// last counted (terminating pods no longer count: they get no new work
/// and are draining what they had).
fn down_to(d: Option<&Deployment>, n: u32) -> bool {
    let Some(d) = d else { return true };
    let Some(st) = d.status.as_ref() else {
        return spec_replicas(d).unwrap_or(1) <= n;
    };
    let seen = st.observed_generation >= d.metadata.generation;
    let pods = u32::try_from(st.replicas.unwrap_or(0)).unwrap_or(0);
    seen && spec_replicas(d).unwrap_or(1) <= n && pods <= n
}

/// What the graph's changes depend on besides the objects.
#[derive(Debug, Clone, Copy)]
pub struct Moment<'a> {
    /// The status just written.
    pub status: &'a CanaryStatus,
    /// The graph's units (its largest component's replicas).
    pub total: u32,
    /// The revision the user wants.
    pub revision: &'a str,
    /// Every proxy serves the table in status and the stable cohort has
    /// no open request.
    pub stable_idle: bool,
}

/// The graph's changes at `now`.
///
/// While promoting, the stable copies are replaced only once the canary
/// graph carries all traffic, every proxy serves that table and stable's
/// last requests are done: a copy replaced while stable still served
/// would have the stable cohort's old components call new ones.
///
/// # Errors
/// [`DesiredError::Selector`] when a stable copy cannot select its pods.
pub fn changes(
    owner: &Owner,
    rollout: &Rollout,
    graph: &Graph,
    seen: &[Seen<'_>],
    now: Moment<'_>,
) -> Result<GraphChanges, DesiredError> {
    let Moment {
        status,
        total,
        revision,
        stable_idle,
    } = now;
    let managed = graph.managed_env();
    let asked = status.replicas.unwrap_or(CohortReplicas {
        stable: total,
        canary: 0,
    });
    let asked: Vec<CohortReplicas> = seen
        .iter()
        .map(|s| asked_of(asked, total, s.total))
        .collect();
    let ready: Vec<CohortReplicas> = seen.iter().map(ready_of).collect();
    let promoting_to = crate::engine::stable_takes_template(rollout, status)
        .then_some(status.canary_revision.as_deref())
        .flatten();
    // All of it: the canary's weight is the table's, in percent.
    let canary_serves_all = status.traffic.is_some() && status.canary_weight >= 100.0;
    let replace_stable = canary_serves_all && stable_idle;
    let running = matches!(
        status.phase,
        Phase::Progressing | Phase::Paused | Phase::Promoting
    );
    let mut held = false;
    let mut out = Vec::with_capacity(seen.len());
    for (i, s) in seen.iter().enumerate() {
        let spec = CohortReplicas {
            stable: s.stable.and_then(spec_replicas).unwrap_or(0),
            canary: spec_replicas(s.target).unwrap_or(1),
        };
        // Growth only into GPUs no pod of this component holds.
        let budgeted = within_budget(asked[i], spec, s.pods, s.budget);
        held |= budgeted != asked[i];
        let mut wanted = CohortReplicas::default();
        for cohort in [Cohort::Stable, Cohort::Canary] {
            let want = budgeted.get(cohort);
            let now = spec.get(cohort);
            let allowed = if want > now {
                (0..i).all(|j| ready[j].get(cohort) >= asked[j].get(cohort))
            } else if want < now {
                (i + 1..seen.len()).all(|j| {
                    let d = match cohort {
                        Cohort::Stable => seen[j].stable,
                        Cohort::Canary => Some(seen[j].target),
                    };
                    down_to(d, asked[j].get(cohort))
                })
            } else {
                true
            };
            held |= !allowed;
            *wanted.get_mut(cohort) = if allowed { want } else { now };
        }

        let target_template = strip(&template(s.target), &managed);
        let canary_env = graph.env(&owner.name, Cohort::Canary, revision);
        let env_right = has_env(&template(s.target), &managed, &canary_env);
        // A user's Deployment that runs pods outside a run is serving as
        // stable (adoption): it is patched once it is at zero.
        let env =
            (!env_right && (spec.canary == 0 || running)).then(|| env_patch(s.target, &canary_env));
        if !env_right && env.is_none() {
            wanted.canary = wanted.canary.min(spec.canary);
        }

        let copy = |template: &PodTemplateSpec, revision: &str, replicas: u32| {
            let env = graph.env(&owner.name, Cohort::Stable, revision);
            // A graph has no maxSurge: its limit is its GPU share.
            let room = s
                .budget
                .map(|limit| limit.saturating_sub(wanted.stable + wanted.canary));
            let strategy =
                builders::promotion_strategy(&rollout.promotion, replicas, room, wanted.canary);
            builders::stable_deployment(
                owner,
                s.target,
                &with_env(template, &env),
                revision,
                replicas,
                strategy,
            )
            .map(|d| StableChange::Apply(Box::new(d)))
            .map_err(|source| DesiredError::Selector {
                target: s.part.name.clone(),
                source,
            })
        };
        let stable = match s.stable {
            None => {
                let first = status.stable_revision.as_deref().unwrap_or(revision);
                Some(copy(&target_template, first, wanted.stable)?)
            }
            Some(d) => {
                let carried = d.annotations().get(names::REVISION_ANNOTATION).cloned();
                let own = strip(
                    &builders::unlabel_stable(&template(d), s.selector),
                    &managed,
                );
                match (promoting_to, carried) {
                    (Some(to), carried) if carried.as_deref() != Some(to) => {
                        let before_done = seen[..i].iter().all(|p| {
                            p.stable.and_then(super::reconcile::rolled_out).as_deref() == Some(to)
                        });
                        // Under a GPU budget a copy is never replaced in
                        // place: the Deployment controller creates the new
                        // pod while the old one still holds its GPUs.
                        let empty = s.budget.is_none() || down_to(Some(d), 0);
                        let now = before_done && replace_stable && empty;
                        held |= !now;
                        if now {
                            Some(copy(&target_template, to, wanted.stable)?)
                        } else {
                            scale(d, wanted.stable)
                        }
                    }
                    (_, Some(carried))
                        if !has_env(
                            &template(d),
                            &managed,
                            &graph.env(&owner.name, Cohort::Stable, &carried),
                        ) =>
                    {
                        // The graph's variables changed (isolation added):
                        // the copy keeps its version and takes them.
                        Some(copy(&own, &carried, wanted.stable)?)
                    }
                    _ => scale(d, wanted.stable),
                }
            }
        };
        let target_replicas =
            (spec_replicas(s.target) != Some(wanted.canary)).then_some(wanted.canary);
        out.push(Change {
            name: s.part.name.clone(),
            env,
            stable_name: names::stable_deployment(&s.part.name),
            stable,
            target_replicas,
            given: wanted,
        });
    }
    Ok(GraphChanges { changes: out, held })
}

fn scale(d: &Deployment, replicas: u32) -> Option<StableChange> {
    (spec_replicas(d) != Some(replicas)).then_some(StableChange::Scale(replicas))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    use super::*;
    use crate::kube::fixtures::{owner, template};

    const SPEC: &str = r#"
targetRef: {name: frontend}
service: {port: 8000}
graph:
  components:
    - {name: prefill, port: 8000, urlEnv: PREFILL_URL}
    - {name: decode, port: 8000, urlEnv: DECODE_URL}
  order: [decode, prefill, frontend]
  isolation: {env: DYN_NAMESPACE}
strategy:
  canary:
    steps: [{setWeight: 50}, {pause: {}}]
analysis:
  metrics:
    - {name: ttft, kind: latency, maxIncrease: 10%}
"#;

    fn rollout() -> Rollout {
        let spec: weir_crds::CanarySpec = serde_saphyr::from_str(SPEC).expect("spec");
        Rollout::new("chat", &spec).expect("valid")
    }

    /// Deployment `name` of `image` at `replicas`, all of them ready and
    /// rolled out when `settled`, none otherwise.
    fn dep(name: &str, image: &str, replicas: i32, settled: bool) -> Deployment {
        let mut d = crate::kube::fixtures::target(image, Some(replicas));
        d.metadata.name = Some(name.into());
        d.metadata.generation = Some(1);
        let up = if settled { replicas } else { 0 };
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(up),
            updated_replicas: Some(up),
            ready_replicas: Some(up),
            ..DeploymentStatus::default()
        });
        d
    }

    /// The graph as weir left it after adoption of `stable_image`: each
    /// copy at 2 replicas ready, carrying `rev`, each user Deployment of
    /// `canary_image` at `canary` replicas (ready when `ready`).
    struct World {
        rollout: Rollout,
        targets: Vec<Deployment>,
        copies: Vec<Option<Deployment>>,
        selector: BTreeMap<String, String>,
        stable_idle: bool,
        /// Each component's GPU share and its pods (none by default).
        budget: Vec<Option<u32>>,
        pods: Vec<Option<Cohorts<PodCount>>>,
    }

    impl World {
        fn new(canary_image: &str, canary: i32, ready: bool) -> World {
            let rollout = rollout();
            let graph = rollout.graph.clone().expect("graph");
            let mut targets = Vec::new();
            let mut copies = Vec::new();
            for p in &graph.parts {
                let env = graph.env("chat", Cohort::Canary, "rev2");
                let mut t = dep(&p.name, canary_image, canary, ready);
                if let Some(s) = t.spec.as_mut() {
                    s.template = with_env(&s.template, &env);
                }
                targets.push(t);
                let env = graph.env("chat", Cohort::Stable, "rev1");
                let mut c = dep(&names::stable_deployment(&p.name), "v1", 2, true);
                if let Some(s) = c.spec.as_mut() {
                    s.template = with_env(&template("v1"), &env);
                }
                c.metadata.annotations = Some(BTreeMap::from([(
                    names::REVISION_ANNOTATION.to_string(),
                    "rev1".to_string(),
                )]));
                copies.push(Some(c));
            }
            World {
                rollout,
                targets,
                copies,
                selector: crate::kube::fixtures::selector(),
                stable_idle: true,
                budget: vec![None; graph.parts.len()],
                pods: vec![None; graph.parts.len()],
            }
        }

        fn changes(&self, status: &CanaryStatus) -> GraphChanges {
            let graph = self.rollout.graph.as_ref().expect("graph");
            let seen: Vec<Seen<'_>> = graph
                .parts
                .iter()
                .enumerate()
                .map(|(i, part)| Seen {
                    part,
                    target: &self.targets[i],
                    stable: self.copies[i].as_ref(),
                    selector: &self.selector,
                    total: 2,
                    budget: self.budget[i],
                    pods: self.pods[i],
                })
                .collect();
            let now = Moment {
                status,
                total: 2,
                revision: "rev2",
                stable_idle: self.stable_idle,
            };
            changes(&owner(), &self.rollout, graph, &seen, now).expect("buildable")
        }

        fn index(&self, name: &str) -> usize {
            self.targets
                .iter()
                .position(|t| t.metadata.name.as_deref() == Some(name))
                .expect("component")
        }

        /// `name`'s user Deployment at `replicas`, all ready or none.
        fn set(&mut self, name: &str, replicas: i32, ready: bool) {
            let i = self.index(name);
            let env = self.targets[i].spec.as_ref().map(|s| s.template.clone());
            let mut d = dep(name, "v2", replicas, ready);
            if let (Some(s), Some(t)) = (d.spec.as_mut(), env) {
                s.template = t;
            }
            self.targets[i] = d;
        }
    }

    fn status(phase: Phase, canary: u32) -> CanaryStatus {
        CanaryStatus {
            phase,
            stable_revision: Some("rev1".into()),
            canary_revision: Some("rev2".into()),
            replicas: Some(CohortReplicas { stable: 2, canary }),
            ..CanaryStatus::default()
        }
    }

    /// `status` with the canary's share of traffic.
    fn serving(mut status: CanaryStatus, percent: f64) -> CanaryStatus {
        status.canary_weight = percent;
        status.traffic = Some(weir_crds::Traffic {
            generation: 3,
            route: weir_crds::RouteSpec::default(),
            sticky: None,
            override_header: false,
            backends: Vec::new(),
        });
        status
    }

    fn grows(g: &GraphChanges) -> Vec<(&str, u32)> {
        g.changes
            .iter()
            .filter_map(|c| c.target_replicas.map(|n| (c.name.as_str(), n)))
            .collect()
    }

    #[test]
    fn a_cohort_starts_in_order_each_component_once_the_ones_before_are_ready() {
        let mut w = World::new("v2", 0, false);
        let run = status(Phase::Progressing, 1);
        let g = w.changes(&run);
        assert_eq!(grows(&g), [("decode", 1)], "decode first");
        assert!(g.held);
        w.set("decode", 1, false);
        assert_eq!(
            grows(&w.changes(&run)),
            [],
            "prefill waits for decode to be ready"
        );
        w.set("decode", 1, true);
        assert_eq!(grows(&w.changes(&run)), [("prefill", 1)]);
        w.set("prefill", 1, true);
        let g = w.changes(&run);
        assert_eq!(grows(&g), [("frontend", 1)]);
        assert!(!g.held, "nothing waits once the last one is asked");
    }

    #[test]
    fn under_a_gpu_budget_a_component_grows_only_into_gpus_its_own_pods_do_not_hold() {
        // Decode and prefill hold GPUs, 2 pods' worth each (their share:
        // no room beside a whole stable); the frontend holds none.
        let mut w = World::new("v2", 0, false);
        w.budget = ["decode", "prefill", "frontend"]
            .map(|n| (n != "frontend").then_some(2))
            .to_vec();
        let pods = |stable_held: u32, stable_live: u32, canary: u32| {
            Some(Cohorts {
                stable: PodCount {
                    held: stable_held,
                    live: stable_live,
                },
                canary: PodCount {
                    held: canary,
                    live: canary,
                },
            })
        };
        let d = w.index("decode");
        w.pods[d] = pods(2, 2, 0);
        // The engine moved one unit: stable 1, canary 1 of 2.
        let mut run = status(Phase::Progressing, 1);
        run.replicas = Some(CohortReplicas {
            stable: 1,
            canary: 1,
        });
        // The copies after decode already gave theirs up (reverse order).
        for name in ["prefill", "frontend"] {
            let i = w.index(name);
            if let Some(c) = w.copies[i].as_mut() {
                c.spec.as_mut().expect("spec").replicas = Some(1);
                let st = c.status.as_mut().expect("status");
                (st.replicas, st.ready_replicas) = (Some(1), Some(1));
            }
        }
        let g = w.changes(&run);
        assert_eq!(grows(&g), [], "both stable decode pods hold their GPUs");
        assert!(g.held);
        assert_eq!(
            g.changes[d].stable,
            Some(StableChange::Scale(1)),
            "stable decode gives one up"
        );
        // Scaled down, the pod still terminating: its GPU is not free.
        w.pods[d] = pods(2, 1, 0);
        assert_eq!(grows(&w.changes(&run)), []);
        // Gone: the canary takes it.
        w.pods[d] = pods(1, 1, 0);
        assert_eq!(grows(&w.changes(&run)), [("decode", 1)]);
        // The frontend holds no GPU: only order holds it back.
        w.set("decode", 1, true);
        let p = w.index("prefill");
        w.pods[p] = pods(1, 1, 0);
        w.set("prefill", 1, true);
        assert_eq!(grows(&w.changes(&run)), [("frontend", 1)]);
    }

    #[test]
    fn under_a_gpu_budget_a_stable_copy_takes_the_new_version_only_with_no_pods_left() {
        let mut w = World::new("v2", 2, true);
        w.rollout.gpu_budget = Some(2);
        w.budget = ["decode", "prefill", "frontend"]
            .map(|n| (n != "frontend").then_some(2))
            .to_vec();
        // Capacity moved to the canary: the engine asks nothing of stable.
        let mut promoting = serving(status(Phase::Promoting, 2), 100.0);
        promoting.replicas = Some(CohortReplicas {
            stable: 0,
            canary: 2,
        });
        let decode = |g: &GraphChanges| g.changes[0].stable.clone();
        // decode-stable still runs 2 pods (the copies after it go first).
        assert_eq!(decode(&w.changes(&promoting)), None);
        for name in ["prefill", "frontend"] {
            let i = w.index(name);
            w.copies[i] = Some(dep(&names::stable_deployment(name), "v1", 0, true));
        }
        assert_eq!(
            decode(&w.changes(&promoting)),
            Some(StableChange::Scale(0)),
            "scaled to zero, not replaced in place"
        );
        // At zero, its last pod still terminating: it waits.
        let mut copy = w.copies[0].clone().expect("copy");
        copy.spec.as_mut().expect("spec").replicas = Some(0);
        w.copies[0] = Some(copy.clone());
        assert_eq!(decode(&w.changes(&promoting)), None);
        // Gone: the new version, at zero.
        let st = copy.status.as_mut().expect("status");
        (st.replicas, st.ready_replicas, st.updated_replicas) = (Some(0), Some(0), Some(0));
        w.copies[0] = Some(copy);
        let Some(StableChange::Apply(d)) = decode(&w.changes(&promoting)) else {
            panic!("decode-stable takes the new version once empty")
        };
        assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(0));
    }

    #[test]
    fn a_cohort_shrinks_in_reverse_order_each_once_the_ones_after_are_gone() {
        let mut w = World::new("v2", 1, true);
        let aborted = status(Phase::Aborted, 0);
        assert_eq!(grows(&w.changes(&aborted)), [("frontend", 0)]);
        // Scaled to zero, its pods not yet gone.
        let f = w.index("frontend");
        if let Some(s) = w.targets[f].spec.as_mut() {
            s.replicas = Some(0);
        }
        assert_eq!(
            grows(&w.changes(&aborted)),
            [],
            "prefill waits for the frontend's pods"
        );
        w.set("frontend", 0, true);
        assert_eq!(grows(&w.changes(&aborted)), [("prefill", 0)]);
        w.set("prefill", 0, true);
        assert_eq!(grows(&w.changes(&aborted)), [("decode", 0)]);
    }

    #[test]
    fn promotion_updates_the_stable_copies_in_order_each_rolled_out_first() {
        let mut w = World::new("v2", 2, true);
        let applied = |g: &GraphChanges| -> Vec<String> {
            g.changes
                .iter()
                .filter(|c| matches!(c.stable, Some(StableChange::Apply(_))))
                .map(|c| c.stable_name.clone())
                .collect()
        };
        // Stable still serves, or a proxy has not caught up: nothing is
        // replaced yet.
        let split = serving(status(Phase::Promoting, 2), 50.0);
        let g = w.changes(&split);
        assert!(applied(&g).is_empty() && g.held, "{g:?}");
        let promoting = serving(status(Phase::Promoting, 2), 100.0);
        w.stable_idle = false;
        assert!(applied(&w.changes(&promoting)).is_empty());
        w.stable_idle = true;
        let g = w.changes(&promoting);
        assert_eq!(applied(&g), ["decode-stable"]);
        let Some(StableChange::Apply(copy)) = &g.changes[0].stable else {
            unreachable!()
        };
        // The new stable decode is the new version's generation, and
        // calls the stable cohort's Services.
        let env = &copy
            .spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .as_ref()
            .expect("pod")
            .containers[0]
            .env;
        let env: Vec<(String, String)> = env
            .iter()
            .flatten()
            .map(|v| (v.name.clone(), v.value.clone().unwrap_or_default()))
            .collect();
        assert!(
            env.contains(&("DYN_NAMESPACE".into(), "chat-rev2".into())),
            "{env:?}"
        );
        assert!(env.contains(&("DECODE_URL".into(), "http://chat-decode-stable:8000".into())));

        // decode-stable carries rev2 but is still rolling: prefill waits.
        let mut rolling = (**copy).clone();
        rolling.metadata.generation = Some(2);
        w.copies[0] = Some(rolling.clone());
        assert_eq!(applied(&w.changes(&promoting)), Vec::<String>::new());
        rolling.status = dep("x", "v2", 2, true).status;
        rolling.metadata.generation = Some(1);
        w.copies[0] = Some(rolling);
        assert_eq!(applied(&w.changes(&promoting)), ["prefill-stable"]);
    }

    #[test]
    fn the_variables_are_set_while_a_component_runs_no_pods_and_are_no_new_version() {
        let rollout = rollout();
        let graph = rollout.graph.as_ref().expect("graph");
        let mut w = World::new("v2", 0, false);
        // The user's Deployments without weir's variables.
        for t in &mut w.targets {
            if let Some(s) = t.spec.as_mut() {
                s.template = template("v2");
            }
        }
        let idle = status(Phase::Idle, 0);
        let g = w.changes(&idle);
        assert!(g.changes.iter().all(|c| c.env.is_some()), "patched at zero");
        let patch = g.changes[0].env.as_ref().expect("patch");
        assert_eq!(
            patch["spec"]["template"]["spec"]["containers"][0]["env"],
            serde_json::json!([
                {"name": "DECODE_URL", "value": "http://chat-decode-canary:8000"},
                {"name": "DYN_NAMESPACE", "value": "chat-rev2"},
                {"name": "PREFILL_URL", "value": "http://chat-prefill-canary:8000"},
            ])
        );
        // Running pods outside a run (adoption): left as they are.
        for t in &mut w.targets {
            if let Some(s) = t.spec.as_mut() {
                s.replicas = Some(2);
            }
        }
        assert!(w.changes(&idle).changes.iter().all(|c| c.env.is_none()));

        // The revision leaves the variables out.
        let seen = |w: &World| -> String {
            let s: Vec<Seen<'_>> = graph
                .parts
                .iter()
                .enumerate()
                .map(|(i, part)| Seen {
                    part,
                    target: &w.targets[i],
                    stable: None,
                    selector: &w.selector,
                    total: 2,
                    budget: None,
                    pods: None,
                })
                .collect();
            revision(&s, graph)
        };
        let bare = seen(&w);
        let with = World::new("v2", 0, false);
        assert_eq!(seen(&with), bare, "weir's variables are no new version");
        let other = World::new("v3", 0, false);
        assert_ne!(seen(&other), bare, "an image is");
    }
}
