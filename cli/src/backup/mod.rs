//! `weir export` and `weir restore`: a Canary's whole world as one file,
//! and back.
//!
//! A bundle holds every Canary (spec *and* status: a restored Canary
//! continues from its recorded step) with the objects its run depends on:
//! the target Deployment, the controller's `<target>-stable` copy, the
//! cohorts' Services, HPAs that scale those Deployments, the ConfigMaps
//! (and, with `--include-secrets`, Secrets) their pod templates use, and
//! the ControllerRevision history `weir undo` reads. Objects are stored
//! as the API server returned them minus what the server manages (uids,
//! resource versions, cluster IPs, Deployment status…), in one canonical
//! order, under a sha256 checksum of their canonical JSON: two exports of
//! the same state are the same file but for `exportedAt`.
//!
//! The logic is pure and tested here without a cluster: [`strip`] (what
//! the server manages), [`refs`] (what a pod template uses), [`bundle`]
//! (canonical form, checksum, YAML, parsing with line numbers), [`plan`]
//! (restore order, owner references, diffs). [`export`] and [`restore`]
//! are the thin I/O around them.

use std::fmt;

use kube::discovery::ApiResource;
use serde_json::Value;

pub mod bundle;
pub mod export;
pub mod plan;
pub mod refs;
pub mod restore;
pub mod strip;

/// The kinds a bundle may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Configuration the pod templates use (in full).
    ConfigMap,
    /// Credentials the pod templates use (with `--include-secrets`).
    Secret,
    /// The target and its stable copy.
    Deployment,
    /// The rollout itself, with its status.
    Canary,
    /// The cohorts' Services.
    Service,
    /// Promoted templates, for `weir undo`.
    ControllerRevision,
    /// Autoscalers of the target or the stable copy.
    HorizontalPodAutoscaler,
}

impl Kind {
    /// Every kind, in the bundle's canonical order.
    pub const ALL: [Kind; 7] = [
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Deployment,
        Kind::Canary,
        Kind::Service,
        Kind::ControllerRevision,
        Kind::HorizontalPodAutoscaler,
    ];

    /// The name as in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::Deployment => "Deployment",
            Kind::Canary => "Canary",
            Kind::Service => "Service",
            Kind::ControllerRevision => "ControllerRevision",
            Kind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
        }
    }

    /// The kind called `name`, if a bundle may hold it.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The `apiVersion` a bundle stores it in.
    pub fn api_version(self) -> String {
        match self {
            Kind::ConfigMap | Kind::Secret | Kind::Service => "v1".into(),
            Kind::Deployment | Kind::ControllerRevision => "apps/v1".into(),
            Kind::Canary => format!("{}/{}", weir_crds::GROUP, weir_crds::VERSION),
            Kind::HorizontalPodAutoscaler => "autoscaling/v2".into(),
        }
    }

    /// The resource with its group, for messages (`deployments.apps`).
    pub fn resource(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
            Kind::Deployment => "deployments.apps",
            Kind::Canary => crate::cluster::CANARIES,
            Kind::Service => "services",
            Kind::ControllerRevision => "controllerrevisions.apps",
            Kind::HorizontalPodAutoscaler => "horizontalpodautoscalers.autoscaling",
        }
    }

    /// What the dynamic client needs to address it.
    pub fn api_resource(self) -> ApiResource {
        use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
        use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
        use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
        match self {
            Kind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            Kind::Secret => ApiResource::erase::<Secret>(&()),
            Kind::Deployment => ApiResource::erase::<Deployment>(&()),
            Kind::Canary => ApiResource::erase::<weir_crds::Canary>(&()),
            Kind::Service => ApiResource::erase::<Service>(&()),
            Kind::ControllerRevision => ApiResource::erase::<ControllerRevision>(&()),
            Kind::HorizontalPodAutoscaler => ApiResource::erase::<HorizontalPodAutoscaler>(&()),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which object: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl Key {
    /// The key of a bundle object (None when its kind, namespace or name is
    /// missing; [`bundle::Bundle::parse`] refuses such objects).
    pub fn of(object: &Value) -> Option<Key> {
        Some(Key {
            kind: Kind::parse(object.get("kind")?.as_str()?)?,
            namespace: object.pointer("/metadata/namespace")?.as_str()?.to_string(),
            name: object.pointer("/metadata/name")?.as_str()?.to_string(),
        })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}
