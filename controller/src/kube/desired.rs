//! What the cluster should look like for one Canary: a pure function from
//! the Canary, the objects just read and the status the engine wrote, to
//! the objects and replica counts the applier writes.
//!
//! The engine keeps its intent as state (DESIGN.md, engine docs):
//! `status.replicas` per cohort, `status.canaryRevision` while `Promoting`
//! for the version stable should run, `status.stableRevision` for the
//! version to keep for `weir undo`. [`desired`] turns that state and what
//! the API server returned into a [`Desired`]; `super::apply` writes it.
//! Every decision (whether the stable copy is created, given a new
//! template or only scaled; with which rollout strategy; whether the
//! target scales; which template is kept as a revision) is made here and
//! table-tested below without an API server.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service};
use kube::ResourceExt;
use weir_crds::names;
use weir_crds::{Canary, CanaryStatus, Cohort, CohortReplicas, Phase};

use super::builders::{self, NoMatchLabels, Owner};
use super::graph::{self, Change, Seen};
use crate::engine::spec::Strategy;
use crate::engine::{Cohorts, Rollout};

/// The objects one reconcile read, besides the Canary's status.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'a> {
    /// The Canary as read.
    pub canary: &'a Canary,
    /// Its validated spec.
    pub rollout: &'a Rollout,
    /// The user's Deployment (the canary cohort).
    pub target: &'a Deployment,
    /// `<target>-stable`, when it exists.
    pub stable: Option<&'a Deployment>,
    /// The target's `matchLabels`.
    pub selector: &'a BTreeMap<String, String>,
    /// The pods each cohort holds, read only under a GPU budget (`None`
    /// otherwise, or when they could not be listed).
    pub pods: Option<Cohorts<PodCount>>,
    /// A graph canary: every component as read, in start order, the
    /// target included (empty otherwise).
    pub parts: &'a [Seen<'a>],
    /// Every proxy serves the table in status and the stable cohort has
    /// no open request: a graph's stable copies may be replaced.
    pub stable_idle: bool,
}

/// The pods of one cohort that hold a node's resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodCount {
    /// Every pod not Succeeded or Failed: pending, running or terminating
    /// (the scheduler counts a terminating pod's GPUs until it is gone).
    pub held: u32,
    /// Those not being deleted.
    pub live: u32,
}

/// What the stable copy needs.
#[derive(Debug, Clone, PartialEq)]
pub enum StableChange {
    /// Create it, or give it a new template: the whole object, applied
    /// with server-side apply.
    Apply(Box<Deployment>),
    /// Only its replica count differs.
    Scale(u32),
}

/// A template to keep as a `ControllerRevision` for `weir undo`.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// The revision (pod-template hash) it is recorded under.
    pub revision: String,
    /// The template exactly as the target had it.
    pub template: PodTemplateSpec,
}

/// The owned objects and replica counts one Canary should have.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Who owns what is written.
    pub owner: Owner,
    /// The cohort Services (and blue-green's preview), by name. Applying
    /// them is idempotent; the applier does it once per spec generation.
    pub services: Vec<(String, Service)>,
    /// `<target>-stable`'s name.
    pub stable_name: String,
    /// What the stable copy needs (None: it is as it should be).
    pub stable: Option<StableChange>,
    /// The target's name.
    pub target_name: String,
    /// The replicas the target should be scaled to (None: it has them).
    pub target_replicas: Option<u32>,
    /// A cohort was given fewer replicas than status asks, to stay within
    /// the GPU budget until pods being removed are gone: reconcile again
    /// soon.
    pub held_back: bool,
    /// The template stable serves, to keep for `weir undo` (None while a
    /// promotion is under way or before adoption). Recording is
    /// idempotent; the applier does it once per revision.
    pub keep: Option<Kept>,
    /// A graph canary: each component's changes in start order (the
    /// target's among them; the fields above are then left empty).
    pub parts: Vec<Change>,
}

/// Why the objects cannot be built as the Canary and its target are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesiredError {
    /// The target's selector cannot be rewritten for the stable copy.
    #[error("Deployment {target}: {source}")]
    Selector {
        /// The target's name.
        target: String,
        /// What is wrong with it, with the fix.
        source: NoMatchLabels,
    },
}

/// The desired state of `cluster` for `status` (the status just written).
/// `total` is the user's replica count (the engine's
/// `Observed::target_replicas`): what stable has when nothing was recorded.
///
/// # Errors
/// [`DesiredError::Selector`] when the stable copy cannot select its pods.
pub fn desired(
    cluster: &Cluster<'_>,
    status: &CanaryStatus,
    total: u32,
) -> Result<Desired, DesiredError> {
    let canary = cluster.canary;
    let name = canary.name_any();
    let owner = Owner {
        name: name.clone(),
        namespace: canary.namespace().unwrap_or_default(),
        uid: canary.uid().unwrap_or_default(),
    };
    let target_name = cluster.target.name_any();
    let stable_name = names::stable_deployment(&target_name);
    let asked = status.replicas.unwrap_or(CohortReplicas {
        stable: total,
        canary: 0,
    });
    let spec = CohortReplicas {
        stable: cluster.stable.and_then(spec_replicas).unwrap_or(0),
        canary: spec_replicas(cluster.target).unwrap_or(1),
    };
    let wanted = within_budget(asked, spec, cluster.pods, cluster.rollout.gpu_budget);
    let target_template = template(cluster.target);
    if cluster.rollout.is_model() {
        // Both cohorts are the target's pods, told apart by the model
        // they ask for: no copy, no scaling, no template to keep.
        return Ok(Desired {
            held_back: false,
            services: services(cluster, &owner),
            stable_name,
            stable: None,
            target_replicas: None,
            keep: None,
            parts: Vec::new(),
            owner,
            target_name,
        });
    }
    if let Some(g) = &cluster.rollout.graph {
        // Every component, the target included, in order; `weir undo`
        // keeps single templates only, so nothing is kept.
        let revision = graph::revision(cluster.parts, g);
        let changes = graph::changes(
            &owner,
            cluster.rollout,
            g,
            cluster.parts,
            graph::Moment {
                status,
                total,
                revision: &revision,
                stable_idle: cluster.stable_idle,
            },
        )?;
        return Ok(Desired {
            held_back: changes.held,
            services: services(cluster, &owner),
            stable_name,
            stable: None,
            target_replicas: None,
            keep: None,
            parts: changes.changes,
            owner,
            target_name,
        });
    }

    let stable = match stable_template(cluster, status, &target_template) {
        Some((template, revision)) => {
            let room = cluster
                .rollout
                .promotion_limit(total)
                .map(|limit| limit.saturating_sub(wanted.stable + wanted.canary));
            let strategy = builders::promotion_strategy(
                &cluster.rollout.promotion,
                wanted.stable,
                room,
                wanted.canary,
            );
            let copy = builders::stable_deployment(
                &owner,
                cluster.target,
                &template,
                &revision,
                wanted.stable,
                strategy,
            )
            .map_err(|source| DesiredError::Selector {
                target: target_name.clone(),
                source,
            })?;
            Some(StableChange::Apply(Box::new(copy)))
        }
        None => cluster
            .stable
            .filter(|s| spec_replicas(s) != Some(wanted.stable))
            .map(|_| StableChange::Scale(wanted.stable)),
    };
    // A target without `replicas` runs 1 by default: say the number.
    let target_replicas =
        (spec_replicas(cluster.target) != Some(wanted.canary)).then_some(wanted.canary);

    Ok(Desired {
        held_back: wanted != asked,
        services: services(cluster, &owner),
        stable_name,
        stable,
        target_replicas,
        keep: kept(cluster, status, &target_template),
        parts: Vec::new(),
        owner,
        target_name,
    })
}

/// The replicas to apply for `asked` (status), given the Deployments'
/// `spec` replicas now. Shrinking applies at once. Under a GPU `budget` a
/// cohort grows only into GPUs nothing claims, so the scheduler is never
/// asked for more than the budget. A cohort claims every pod it holds
/// (terminating ones included, as the scheduler counts them, and live ones
/// its Deployment is about to delete after a scale-down) plus the pods its
/// Deployment is yet to create: a pod that is leaving frees nothing until
/// it is gone, and one not created yet is already spoken for. Without the
/// pod counts (a failed list) nothing grows.
pub fn within_budget(
    asked: CohortReplicas,
    spec: CohortReplicas,
    pods: Option<Cohorts<PodCount>>,
    budget: Option<u32>,
) -> CohortReplicas {
    let Some(budget) = budget else {
        return asked;
    };
    let pods = pods.unwrap_or(Cohorts {
        stable: PodCount {
            held: budget,
            live: 0,
        },
        canary: PodCount::default(),
    });
    // The sizes before anything grows: shrinking applies at once.
    let kept = CohortReplicas {
        stable: asked.stable.min(spec.stable),
        canary: asked.canary.min(spec.canary),
    };
    let claimed = |pods: PodCount, size: u32| pods.held + size.saturating_sub(pods.live);
    let mut free = budget
        .saturating_sub(claimed(pods.stable, kept.stable) + claimed(pods.canary, kept.canary));
    let mut grow = |asked: u32, kept: u32| {
        let given = asked.min(kept + free);
        free -= given - kept;
        given
    };
    CohortReplicas {
        stable: grow(asked.stable, kept.stable),
        canary: grow(asked.canary, kept.canary),
    }
}

/// A Deployment's pod template (empty when it has no spec).
pub(super) fn template(d: &Deployment) -> PodTemplateSpec {
    d.spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default()
}

/// A Deployment's `spec.replicas`, when it says.
pub(super) fn spec_replicas(d: &Deployment) -> Option<u32> {
    d.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .map(|r| u32::try_from(r).unwrap_or(0))
}

/// The template and revision the stable copy must be (re)built with: the
/// target's at first sight (adoption: the target runs the stable version),
/// the canary's while promoting and stable does not carry it yet.
fn stable_template(
    cluster: &Cluster<'_>,
    status: &CanaryStatus,
    target_template: &PodTemplateSpec,
) -> Option<(PodTemplateSpec, String)> {
    let Some(stable) = cluster.stable else {
        let revision = status
            .stable_revision
            .clone()
            .unwrap_or_else(|| builders::template_revision(target_template));
        return Some((target_template.clone(), revision));
    };
    let promoting_to = crate::engine::stable_takes_template(cluster.rollout, status)
        .then_some(status.canary_revision.as_ref())
        .flatten()?;
    let carries = stable.annotations().get(names::REVISION_ANNOTATION);
    (carries != Some(promoting_to)).then(|| (target_template.clone(), promoting_to.clone()))
}

/// The cohort Services, and blue-green's preview.
fn services(cluster: &Cluster<'_>, owner: &Owner) -> Vec<(String, Service)> {
    let port = cluster.canary.spec.service.map_or(8000, |s| s.port);
    let selector = cluster.selector;
    // A model canary's stable cohort is the target's pods too.
    let stable_pods = if cluster.rollout.is_model() {
        selector.clone()
    } else {
        builders::stable_labels(selector)
    };
    let mut wanted = vec![
        (
            names::service(&owner.name, Cohort::Stable),
            builders::service(owner, Cohort::Stable, false, stable_pods, port),
        ),
        (
            names::service(&owner.name, Cohort::Canary),
            builders::service(owner, Cohort::Canary, false, selector.clone(), port),
        ),
    ];
    for s in cluster.parts {
        if let Some(port) = s.part.port {
            for (cohort, pods) in [
                (Cohort::Stable, builders::stable_labels(s.selector)),
                (Cohort::Canary, s.selector.clone()),
            ] {
                wanted.push((
                    names::component_service(&owner.name, &s.part.name, cohort),
                    builders::component_service(owner, &s.part.name, cohort, pods, port),
                ));
            }
        }
    }
    if matches!(cluster.rollout.strategy, Strategy::BlueGreen(_)) {
        wanted.push((
            names::preview_service(&owner.name),
            builders::service(owner, Cohort::Canary, true, selector.clone(), port),
        ));
    }
    wanted
}

/// The version stable serves, once settled or running: from the target
/// when the target carries it, else from the stable copy.
fn kept(
    cluster: &Cluster<'_>,
    status: &CanaryStatus,
    target_template: &PodTemplateSpec,
) -> Option<Kept> {
    let revision = status.stable_revision.clone()?;
    if matches!(status.phase, Phase::Promoting | Phase::Initializing) {
        return None;
    }
    let template = if builders::template_revision(target_template) == revision {
        target_template.clone()
    } else {
        let stable = cluster.stable?.spec.as_ref()?;
        builders::unlabel_stable(&stable.template, cluster.selector)
    };
    Some(Kept { revision, template })
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
