//! Test fixtures for the Kubernetes shell's pure parts: one owner, one pod
//! template and one target Deployment, shared by the builders' and the
//! desired state's tables.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::builders::Owner;

/// The Canary `llm/chat`.
pub fn owner() -> Owner {
    Owner {
        name: "chat".into(),
        namespace: "llm".into(),
        uid: "uid-1".into(),
    }
}

/// The target's selector: `app=chat`.
pub fn selector() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "chat".to_string())])
}

/// A pod template running `image`, labelled `app=chat` (the selector) and
/// `tier=llm` (a label weir must carry over untouched).
pub fn template(image: &str) -> PodTemplateSpec {
    let mut labels = selector();
    labels.insert("tier".into(), "llm".into());
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "vllm".into(),
                image: Some(image.into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
    }
}

/// The user's Deployment `llm/chat-frontend` running `image` with
/// `replicas`.
pub fn target(image: &str, replicas: Option<i32>) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("chat-frontend".into()),
            namespace: Some("llm".into()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector()),
                match_expressions: None,
            },
            template: template(image),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}
