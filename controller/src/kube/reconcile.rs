//! One reconcile of one Canary: read the cluster, call the engine, apply
//! what it asks, write status once.
//!
//! This is the first slice of the reconciler (issue 6): it reads the
//! target and the stable copy, keeps the owned objects (stable copy,
//! cohort Services) in place with server-side apply, scales cohorts through
//! the scale subresource, and writes `status` through its subresource. The
//! watch loop, Events, leader election and observation gathering from the
//! proxies come next.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use weir_crds::{Canary, Cohort, CohortReplicas};

use super::builders::{self, Owner};
use super::commands;
use crate::engine::{self, Action, Observed, Plan, Rollout};

/// The field manager of every write.
pub const MANAGER: &str = "weir-controller";

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a call.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The Canary or its target cannot be used as written.
    #[error("{0}")]
    Invalid(String),
}

fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Api { what, source }
}

/// Reconciles the Canary `namespace/name` once at `now`.
///
/// # Errors
/// [`Error`] when the API server fails a call or the spec cannot run.
pub async fn reconcile_once(
    client: &Client,
    namespace: &str,
    name: &str,
    now: Timestamp,
) -> Result<Plan, Error> {
    let canaries: Api<Canary> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let canary = canaries
        .get(name)
        .await
        .map_err(api(format!("get canary {name}")))?;
    let rollout = Rollout::try_from(&canary.spec).map_err(|e| Error::Invalid(e.to_string()))?;
    let target_name = canary
        .spec
        .target_ref
        .as_ref()
        .map(|t| t.name.clone())
        .ok_or_else(|| {
            Error::Invalid("spec.targetRef: the controller needs a target Deployment".into())
        })?;
    let port = canary.spec.service.map_or(8000, |s| s.port);
    let target = deployments
        .get(&target_name)
        .await
        .map_err(api(format!("get target deployment {target_name}")))?;
    let stable_name = builders::stable_name(&target_name);
    let stable = deployments
        .get_opt(&stable_name)
        .await
        .map_err(api(format!("get {stable_name}")))?;
    let template = target
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .ok_or_else(|| Error::Invalid(format!("deployment {target_name} has no spec")))?;
    let status = canary.status.clone().unwrap_or_default();

    let ready = |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| s.ready_replicas)
            .map_or(0, |r| u32::try_from(r).unwrap_or(0))
    };
    let stable_revision_of = |d: &Deployment| {
        d.annotations()
            .get(super::names::REVISION_ANNOTATION)
            .cloned()
    };
    // The user's total: recorded in status once the controller scales the
    // target (the canary cohort); the target's own count before that.
    let total = status.replicas.map_or_else(
        || {
            target
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .map_or(1, |r| u32::try_from(r).unwrap_or(1))
        },
        |r| r.stable.max(1),
    );
    let stable_rolled_out = stable.as_ref().and_then(|d| {
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let st = d.status.as_ref()?;
        (st.updated_replicas.unwrap_or(0) >= want && st.ready_replicas.unwrap_or(0) >= want)
            .then(|| stable_revision_of(d))
            .flatten()
    });
    let observed = Observed {
        generation: canary.metadata.generation,
        desired_revision: builders::template_revision(&template),
        target_replicas: total,
        ready: CohortReplicas {
            stable: ready(stable.as_ref()),
            canary: ready(Some(&target)),
        },
        stable_rolled_out,
        // Proxies report what they applied once observation gathering
        // lands; until then the table in status is taken as applied.
        applied_generation: status.traffic.as_ref().map(|t| t.generation),
        open_streams: None,
        evidence: None,
        commands: commands::from_annotations(canary.annotations()),
    };
    let plan = engine::plan(&rollout, &status, &observed, now);

    let owner = Owner {
        name: name.to_string(),
        namespace: namespace.to_string(),
        uid: canary.uid().unwrap_or_default(),
    };
    let ssa = PatchParams::apply(MANAGER).force();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: None,
        },
    );
    // Stable with the target's current template: at first sight (the copy
    // exists from the first reconcile) and on promotion.
    let apply_stable = || async {
        let replicas = plan.status.replicas.map_or(total, |r| r.stable);
        let copy = builders::stable_deployment(&owner, &target, &template, replicas)
            .map_err(Error::Invalid)?;
        deployments
            .patch(&stable_name, &ssa, &Patch::Apply(&copy))
            .await
            .map_err(api(format!("apply {stable_name}")))
    };
    if stable.is_none() {
        apply_stable().await?;
    }
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), namespace);
    let canary_selector = builders::target_selector(&target).map_err(Error::Invalid)?;
    for (cohort, selector) in [
        (Cohort::Stable, builders::stable_labels(&canary_selector)),
        (Cohort::Canary, canary_selector.clone()),
    ] {
        let svc = builders::service(&owner, cohort, false, selector, port);
        let svc_name = builders::service_name(name, cohort);
        services
            .patch(&svc_name, &ssa, &Patch::Apply(&svc))
            .await
            .map_err(api(format!("apply service {svc_name}")))?;
    }
    for action in &plan.actions {
        match action {
            Action::Scale { cohort, replicas } => {
                let which = match cohort {
                    Cohort::Stable => stable_name.clone(),
                    Cohort::Canary => target_name.clone(),
                };
                let body = serde_json::json!({"spec": {"replicas": replicas}});
                deployments
                    .patch_scale(&which, &PatchParams::default(), &Patch::Merge(&body))
                    .await
                    .map_err(api(format!("scale {which} to {replicas}")))?;
            }
            Action::PromoteStable { .. } => {
                apply_stable().await?;
            }
            Action::Event {
                warning,
                reason,
                message,
            } => {
                let event = Event {
                    type_: if *warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: (*reason).to_string(),
                    // The API caps a note at 1 kB; verdicts with many
                    // effects can be longer.
                    note: Some(message.chars().take(1000).collect()),
                    action: "Rollout".into(),
                    secondary: None,
                };
                recorder
                    .publish(&event, &canary.object_ref(&()))
                    .await
                    .map_err(api(format!("record event {reason}")))?;
            }
            // Traffic is the status write below.
            Action::SetTraffic(_) | Action::Finish(_) => {}
        }
    }
    let mut status = plan.status.clone();
    if status.replicas.is_none() {
        status.replicas = Some(CohortReplicas {
            stable: total,
            canary: 0,
        });
    }
    let body = serde_json::json!({
        "apiVersion": format!("{}/{}", weir_crds::GROUP, weir_crds::VERSION),
        "kind": "Canary",
        "status": status,
    });
    canaries
        .patch_status(name, &ssa, &Patch::Apply(&body))
        .await
        .map_err(api(format!("write status of {name}")))?;
    Ok(plan)
}
