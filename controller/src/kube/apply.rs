//! The applier: writes a [`Desired`] to the API server, and nothing else.
//!
//! Every decision was taken by [`super::desired`]; this module only makes
//! the calls, in an order that is safe to interrupt (Services, the stable
//! copy, the target, the revision record), and skips the two writes that
//! are idempotent but costly to repeat every reconcile (Services once per
//! spec generation, the revision record once per revision) by remembering
//! them in [`Written`].

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use weir_crds::names;

use super::MANAGER;
use super::builders::{self, Owner};
use super::desired::{Desired, StableChange};

/// A call the API server refused or failed, and what it was for.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct ApiError {
    /// What was being done.
    pub what: String,
    /// The client's error.
    pub source: kube::Error,
}

/// Wraps a client error with what was being done.
pub(super) fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ApiError {
    let what = what.into();
    move |source| ApiError { what, source }
}

/// What this process wrote already and need not write again.
#[derive(Debug, Default)]
pub(super) struct Written {
    /// Canaries (uid, generation) whose Services were applied: they are
    /// applied once per spec change, not per reconcile.
    services: Mutex<HashSet<(String, i64)>>,
    /// Per Canary uid, the stable revision last kept as the newest
    /// ControllerRevision (a revision promoted again is renumbered).
    revisions: Mutex<HashMap<String, String>>,
}

/// Promoted templates kept per Canary for `weir undo`.
const REVISION_HISTORY: usize = 10;

/// Brings the owned objects to `desired`. `generation` is the Canary's
/// spec generation (Services are applied once per generation).
pub(super) async fn converge(
    client: &Client,
    written: &Written,
    desired: &Desired,
    generation: i64,
) -> Result<(), ApiError> {
    let owner = &desired.owner;
    let ssa = PatchParams::apply(MANAGER).force();
    let services_key = (owner.uid.clone(), generation);
    let applied = written
        .services
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&services_key);
    if !applied {
        let services: Api<Service> = Api::namespaced(client.clone(), &owner.namespace);
        for (name, svc) in &desired.services {
            services
                .patch(name, &ssa, &Patch::Apply(svc))
                .await
                .map_err(api_error(format!("apply service {name}")))?;
        }
        written
            .services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(services_key);
    }

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &owner.namespace);
    match &desired.stable {
        Some(StableChange::Apply(copy)) => {
            let name = &desired.stable_name;
            deployments
                .patch(name, &ssa, &Patch::Apply(copy.as_ref()))
                .await
                .map_err(api_error(format!("apply {name}")))?;
        }
        Some(StableChange::Scale(n)) => scale(&deployments, &desired.stable_name, *n).await?,
        None => {}
    }
    if let Some(n) = desired.target_replicas {
        scale(&deployments, &desired.target_name, n).await?;
    }
    // A graph's components in start order; each one's variables before
    // its replicas, so no pod starts without them.
    for part in &desired.parts {
        if let Some(patch) = &part.env {
            deployments
                .patch(
                    &part.name,
                    &PatchParams::default(),
                    &Patch::Strategic(patch),
                )
                .await
                .map_err(api_error(format!(
                    "set the graph's variables on {}",
                    part.name
                )))?;
        }
        match &part.stable {
            Some(StableChange::Apply(copy)) => {
                deployments
                    .patch(&part.stable_name, &ssa, &Patch::Apply(copy.as_ref()))
                    .await
                    .map_err(api_error(format!("apply {}", part.stable_name)))?;
            }
            Some(StableChange::Scale(n)) => scale(&deployments, &part.stable_name, *n).await?,
            None => {}
        }
        if let Some(n) = part.target_replicas {
            scale(&deployments, &part.name, n).await?;
        }
    }

    if let Some(kept) = &desired.keep {
        let recorded = written
            .revisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&owner.uid)
            == Some(&kept.revision);
        if !recorded {
            record_revision(client, owner, &kept.template, &kept.revision).await?;
            written
                .revisions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(owner.uid.clone(), kept.revision.clone());
        }
    }
    Ok(())
}

async fn scale(deployments: &Api<Deployment>, name: &str, replicas: u32) -> Result<(), ApiError> {
    let body = serde_json::json!({"spec": {"replicas": replicas}});
    deployments
        .patch_scale(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(api_error(format!("scale {name} to {replicas}")))?;
    Ok(())
}

/// Keeps the template as a `ControllerRevision` (for `weir undo`), numbered
/// after the newest one; an existing record of the same template is
/// renumbered as the newest, as Deployments do with ReplicaSets.
async fn record_revision(
    client: &Client,
    owner: &Owner,
    template: &PodTemplateSpec,
    revision: &str,
) -> Result<(), ApiError> {
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), &owner.namespace);
    let existing = revisions
        .list(&ListParams::default().labels(&format!("{}={}", names::CANARY_LABEL, owner.name)))
        .await
        .map_err(api_error("list controller revisions"))?;
    let newest = existing.items.iter().map(|r| r.revision).max().unwrap_or(0);
    let mine = existing.items.iter().find(|r| {
        r.annotations()
            .get(names::REVISION_ANNOTATION)
            .map(String::as_str)
            == Some(revision)
    });
    match mine {
        Some(r) if r.revision == newest => Ok(()),
        Some(r) => {
            let name = r.name_any();
            let body = serde_json::json!({"revision": newest + 1});
            revisions
                .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .map_err(api_error(format!("renumber controller revision {name}")))?;
            Ok(())
        }
        None => {
            let cr = builders::controller_revision(owner, template, revision, newest + 1);
            match revisions.create(&PostParams::default(), &cr).await {
                Ok(_) => {}
                // Another reconcile recorded it a moment ago.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(api_error("record controller revision")(e)),
            }
            // Keep the newest REVISION_HISTORY (the list above lacks the
            // one just made, which is the newest).
            let mut older: Vec<&ControllerRevision> = existing.items.iter().collect();
            older.sort_by_key(|r| std::cmp::Reverse(r.revision));
            for old in older.into_iter().skip(REVISION_HISTORY - 1) {
                let name = old.name_any();
                match revisions.delete(&name, &Default::default()).await {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => {
                        return Err(api_error(format!("prune controller revision {name}"))(e));
                    }
                }
            }
            Ok(())
        }
    }
}
