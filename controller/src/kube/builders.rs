//! One builder per object the controller owns, so names, labels, selectors
//! and owner references are decided in one place.
//!
//! Kubernetes mode works like Flagger, which users know: the user's
//! Deployment (the target) carries the desired version and serves as the
//! canary cohort; the controller keeps `<target>-stable`, a copy of the last
//! promoted template. The stable copy's selector labels get a `-stable`
//! suffix on their values so that the two cohorts' pods never match each
//! other's selectors (a Service selector cannot say "not stable"), and the
//! Services `<canary>-stable` / `<canary>-canary` (and `<canary>-preview`
//! for blue-green) select one cohort each. Promoted templates are kept as
//! `ControllerRevision`s for `weir undo`.
//!
//! Pure functions of their inputs: tested here without an API server.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weir_crds::Cohort;

use weir_crds::names;

/// What every builder needs to know about the Canary that owns the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The Canary's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its UID (for the owner reference).
    pub uid: String,
}

impl Owner {
    fn reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: format!("{}/{}", weir_crds::GROUP, weir_crds::VERSION),
            kind: "Canary".into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// Metadata of an owned object: name, namespace, owner, weir's labels.
    fn meta(&self, name: String, cohort: Option<Cohort>) -> ObjectMeta {
        let mut labels = BTreeMap::from([
            (names::MANAGED_BY.to_string(), names::MANAGER.to_string()),
            (names::CANARY_LABEL.to_string(), self.name.clone()),
        ]);
        if let Some(c) = cohort {
            labels.insert(names::COHORT_LABEL.into(), c.as_str().into());
        }
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![self.reference()]),
            ..ObjectMeta::default()
        }
    }
}

/// The stable cohort's version of a label map: every value gets `-stable`.
pub fn stable_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (k.clone(), format!("{v}-stable")))
        .collect()
}

/// The target's selector labels (`matchLabels`), the canary cohort's.
///
/// # Errors
/// [`NoMatchLabels`] when the target selects with expressions only, which
/// weir cannot rewrite for the stable copy.
pub fn target_selector(target: &Deployment) -> Result<BTreeMap<String, String>, NoMatchLabels> {
    let selector = target.spec.as_ref().map(|s| &s.selector);
    match selector.and_then(|s| s.match_labels.clone()) {
        Some(labels) if !labels.is_empty() => Ok(labels),
        _ => Err(NoMatchLabels),
    }
}

/// A target Deployment whose selector has no `matchLabels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the target Deployment's selector has no matchLabels; weir needs them to tell the cohorts apart"
)]
pub struct NoMatchLabels;

/// The pod-template revision: a short stable hash of the template, the
/// way Kubernetes names ReplicaSets (`pod-template-hash`), so the same
/// template always gives the same revision across restarts.
pub fn template_revision(template: &PodTemplateSpec) -> String {
    // serde_json's maps are ordered, so the text is canonical.
    revision_of(&serde_json::to_string(template).unwrap_or_default())
}

/// The revision of a graph: one hash over every component's template,
/// given by name in name order.
pub fn templates_revision(templates: &[(&str, PodTemplateSpec)]) -> String {
    revision_of(&serde_json::to_string(templates).unwrap_or_default())
}

fn revision_of(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", hash & 0xff_ffff_ffff)
}

/// `<target>-stable`: the target with `template` (the last promoted one,
/// whose revision is `revision`), relabelled so its pods are the stable
/// cohort only, rolled out with `strategy`.
///
/// # Errors
/// [`NoMatchLabels`], see [`target_selector`].
pub fn stable_deployment(
    owner: &Owner,
    target: &Deployment,
    template: &PodTemplateSpec,
    revision: &str,
    replicas: u32,
    strategy: DeploymentStrategy,
) -> Result<Deployment, NoMatchLabels> {
    let selector = target_selector(target)?;
    let target_name = target.metadata.name.clone().unwrap_or_default();
    let mut template = template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    let mut labels = meta.labels.clone().unwrap_or_default();
    for (k, v) in stable_labels(&selector) {
        labels.insert(k, v);
    }
    labels.insert(names::COHORT_LABEL.into(), Cohort::Stable.as_str().into());
    meta.labels = Some(labels);
    let mut metadata = owner.meta(names::stable_deployment(&target_name), Some(Cohort::Stable));
    metadata.annotations = Some(BTreeMap::from([(
        names::REVISION_ANNOTATION.to_string(),
        revision.to_string(),
    )]));
    let spec = target.spec.clone().unwrap_or_default();
    Ok(Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(stable_labels(&selector)),
                match_expressions: None,
            },
            template,
            strategy: Some(strategy),
            min_ready_seconds: spec.min_ready_seconds,
            progress_deadline_seconds: spec.progress_deadline_seconds,
            revision_history_limit: Some(2),
            paused: None,
        }),
        status: None,
    })
}

/// The target's template as the stable copy's template was made from it:
/// weir's labels taken off again. Compared with the target's template, it
/// tells whether the target asks for the version stable already runs.
pub fn unlabel_stable(
    stable_template: &PodTemplateSpec,
    selector: &BTreeMap<String, String>,
) -> PodTemplateSpec {
    let mut template = stable_template.clone();
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(names::COHORT_LABEL);
        for (k, v) in selector {
            labels.insert(k.clone(), v.clone());
        }
    }
    template
}

/// How stable's pods are replaced when it takes a promoted version
/// (`spec.promotion`). RollingUpdate defaults: a surge of 25% rounded up
/// and no pod unavailable ([`weir_crds::Promotion::surge`]). A surge beyond
/// `room` (what the promotion's pod limit leaves free: the GPU budget, or
/// the replicas plus a `maxSurge` the user set, less both cohorts' pods)
/// is cut to it, and the canary's `covering` pods, ready on the same
/// version, stand in for the pods cut: that many more of stable's may be
/// unavailable, so capacity stays where the surge would have kept it. The
/// two are never both zero, or the rollout could not move: then one pod
/// may be unavailable.
pub fn promotion_strategy(
    promotion: &weir_crds::Promotion,
    replicas: u32,
    room: Option<u32>,
    covering: u32,
) -> DeploymentStrategy {
    use weir_crds::PromotionStrategy;
    if promotion.strategy == PromotionStrategy::Recreate {
        return DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        };
    }
    let wanted = promotion.surge(replicas);
    let surge = room.map_or(wanted, |room| wanted.min(room));
    let mut unavailable = promotion.unavailable(replicas) + (wanted - surge).min(covering);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(i32::try_from(surge).unwrap_or(i32::MAX))),
            max_unavailable: Some(IntOrString::Int(
                i32::try_from(unavailable).unwrap_or(i32::MAX),
            )),
        }),
    }
}

/// A cohort's Service (or the preview's, with `preview`).
pub fn service(
    owner: &Owner,
    cohort: Cohort,
    preview: bool,
    selector: BTreeMap<String, String>,
    port: u16,
) -> Service {
    let name = if preview {
        names::preview_service(&owner.name)
    } else {
        names::service(&owner.name, cohort)
    };
    service_named(owner, name, cohort, selector, port)
}

/// The Service of one cohort of a graph component (for the components
/// that address it by URL).
pub fn component_service(
    owner: &Owner,
    component: &str,
    cohort: Cohort,
    selector: BTreeMap<String, String>,
    port: u16,
) -> Service {
    let name = names::component_service(&owner.name, component, cohort);
    service_named(owner, name, cohort, selector, port)
}

fn service_named(
    owner: &Owner,
    name: String,
    cohort: Cohort,
    selector: BTreeMap<String, String>,
    port: u16,
) -> Service {
    Service {
        metadata: owner.meta(name, Some(cohort)),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(names::SERVICE_PORT.into()),
                port: i32::from(port),
                target_port: Some(IntOrString::Int(i32::from(port))),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The history entry of a promoted template (`weir undo` writes it back
/// into the target): number `number`, the template exactly as the target
/// had it, its revision in an annotation.
pub fn controller_revision(
    owner: &Owner,
    template: &PodTemplateSpec,
    revision: &str,
    number: i64,
) -> ControllerRevision {
    let mut metadata = owner.meta(format!("{}-{revision}", owner.name), None);
    metadata.annotations = Some(BTreeMap::from([(
        names::REVISION_ANNOTATION.to_string(),
        revision.to_string(),
    )]));
    ControllerRevision {
        metadata,
        revision: number,
        // Stored as a JSON object, readable with kubectl.
        data: Some(RawExtension(
            serde_json::to_value(template).unwrap_or(serde_json::Value::Null),
        )),
    }
}

/// The template stored in a ControllerRevision.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let data = revision.data.as_ref()?;
    serde_json::from_value(data.0.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{owner, template};
    use super::*;

    fn target(image: &str) -> Deployment {
        super::super::fixtures::target(image, Some(4))
    }

    fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    #[test]
    fn the_cohorts_never_select_each_others_pods() {
        let t = target("vllm:v2");
        let stable = stable_deployment(
            &owner(),
            &t,
            &template("vllm:v1"),
            "rev1",
            4,
            DeploymentStrategy::default(),
        )
        .expect("builds");
        let stable_pods = stable
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .expect("labels");
        let canary_pods = t
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .expect("labels");
        let canary_selector = target_selector(&t).expect("selector");
        let stable_selector = stable
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone())
            .expect("selector");
        assert!(matches(&stable_selector, &stable_pods));
        assert!(matches(&canary_selector, &canary_pods));
        assert!(
            !matches(&canary_selector, &stable_pods),
            "canary Service would reach stable pods"
        );
        assert!(
            !matches(&stable_selector, &canary_pods),
            "stable Service would reach canary pods"
        );
        assert_eq!(
            stable.metadata.name.as_deref(),
            Some("chat-frontend-stable")
        );
        let image = stable
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|p| p.containers[0].image.clone());
        assert_eq!(
            image,
            Some(Some("vllm:v1".into())),
            "stable runs the promoted template"
        );
        let owners = stable.metadata.owner_references.expect("owned");
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].controller),
            ("Canary", Some(true))
        );
    }

    #[test]
    fn revisions_depend_on_the_template_only() {
        assert_eq!(
            template_revision(&template("a")),
            template_revision(&template("a"))
        );
        assert_ne!(
            template_revision(&template("a")),
            template_revision(&template("b"))
        );
        assert_eq!(template_revision(&template("a")).len(), 10);
    }

    #[test]
    fn controller_revisions_round_trip_the_template() {
        let t = template("vllm:v7");
        let cr = controller_revision(&owner(), &t, &template_revision(&t), 3);
        assert_eq!(cr.revision, 3);
        assert_eq!(template_of(&cr), Some(t.clone()));
        assert_eq!(
            cr.metadata.name,
            Some(format!("chat-{}", template_revision(&t)))
        );
    }

    #[test]
    fn services_select_one_cohort_on_the_canary_port() {
        let s = service(
            &owner(),
            Cohort::Canary,
            false,
            BTreeMap::from([("app".into(), "chat".into())]),
            8000,
        );
        assert_eq!(s.metadata.name.as_deref(), Some("chat-canary"));
        let port = &s
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .expect("ports")[0];
        assert_eq!(port.port, 8000);
        let p = service(&owner(), Cohort::Canary, true, BTreeMap::new(), 8000);
        assert_eq!(p.metadata.name.as_deref(), Some("chat-preview"));
    }

    #[test]
    fn a_selector_without_match_labels_is_refused_with_a_reason() {
        let mut t = target("x");
        if let Some(s) = t.spec.as_mut() {
            s.selector.match_labels = None;
        }
        let e = stable_deployment(
            &owner(),
            &t,
            &template("x"),
            "r",
            1,
            DeploymentStrategy::default(),
        )
        .expect_err("refused");
        assert_eq!(e, NoMatchLabels);
        assert!(e.to_string().contains("matchLabels"), "{e}");
    }
}
