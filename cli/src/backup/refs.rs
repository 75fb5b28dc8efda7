//! What a pod template needs to exist before its pods can start: the
//! ConfigMaps and Secrets it reads (env, envFrom, volumes, projected
//! volumes, image pull secrets), its ServiceAccount and the
//! PersistentVolumeClaims it mounts.
//!
//! ConfigMaps go into a bundle in full; Secrets only with
//! `--include-secrets`. The rest (and Secrets without that flag) are
//! recorded by name, and a restore checks that they exist.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use serde::{Deserialize, Serialize};

/// A kind a pod template refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RefKind {
    /// env, envFrom, volumes, projected volumes.
    ConfigMap,
    /// env, envFrom, volumes, projected volumes, imagePullSecrets.
    Secret,
    /// `serviceAccountName` (other than `default`).
    ServiceAccount,
    /// `persistentVolumeClaim` volumes.
    PersistentVolumeClaim,
}

impl RefKind {
    /// The name as in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::ConfigMap => "ConfigMap",
            RefKind::Secret => "Secret",
            RefKind::ServiceAccount => "ServiceAccount",
            RefKind::PersistentVolumeClaim => "PersistentVolumeClaim",
        }
    }
}

impl fmt::Display for RefKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object a template refers to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Used {
    /// Its kind.
    pub kind: RefKind,
    /// Its name (in the template's namespace).
    pub name: String,
    /// Marked `optional: true` where it is used (pods start without it).
    pub optional: bool,
}

/// Every object `template` refers to, sorted, each once (required wins
/// over optional when both uses occur).
pub fn used_by(template: &PodTemplateSpec) -> Vec<Used> {
    let mut found = BTreeSet::new();
    if let Some(spec) = &template.spec {
        pod_spec(spec, &mut found);
    }
    let mut out: Vec<Used> = Vec::new();
    for u in found {
        match out.last_mut() {
            Some(last) if last.kind == u.kind && last.name == u.name => {
                last.optional &= u.optional;
            }
            _ => out.push(u),
        }
    }
    out
}

fn add(found: &mut BTreeSet<Used>, kind: RefKind, name: Option<&str>, optional: Option<bool>) {
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        found.insert(Used {
            kind,
            name: name.to_string(),
            optional: optional.unwrap_or(false),
        });
    }
}

fn pod_spec(spec: &PodSpec, found: &mut BTreeSet<Used>) {
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        container(c, found);
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        for e in c.env.iter().flatten() {
            env_source(e.value_from.as_ref(), found);
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        add(found, RefKind::Secret, Some(&s.name), None);
    }
    let account = spec
        .service_account_name
        .as_deref()
        .filter(|a| *a != "default");
    add(found, RefKind::ServiceAccount, account, None);
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            add(found, RefKind::ConfigMap, Some(&cm.name), cm.optional);
        }
        if let Some(s) = &v.secret {
            add(found, RefKind::Secret, s.secret_name.as_deref(), s.optional);
        }
        if let Some(pvc) = &v.persistent_volume_claim {
            add(
                found,
                RefKind::PersistentVolumeClaim,
                Some(&pvc.claim_name),
                None,
            );
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                add(found, RefKind::ConfigMap, Some(&cm.name), cm.optional);
            }
            if let Some(s) = &source.secret {
                add(found, RefKind::Secret, Some(&s.name), s.optional);
            }
        }
    }
}

fn container(c: &Container, found: &mut BTreeSet<Used>) {
    for e in c.env.iter().flatten() {
        env_source(e.value_from.as_ref(), found);
    }
    for from in c.env_from.iter().flatten() {
        if let Some(cm) = &from.config_map_ref {
            add(found, RefKind::ConfigMap, Some(&cm.name), cm.optional);
        }
        if let Some(s) = &from.secret_ref {
            add(found, RefKind::Secret, Some(&s.name), s.optional);
        }
    }
}

fn env_source(
    source: Option<&k8s_openapi::api::core::v1::EnvVarSource>,
    found: &mut BTreeSet<Used>,
) {
    let Some(source) = source else { return };
    if let Some(k) = &source.config_map_key_ref {
        add(found, RefKind::ConfigMap, Some(&k.name), k.optional);
    }
    if let Some(k) = &source.secret_key_ref {
        add(found, RefKind::Secret, Some(&k.name), k.optional);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(spec: serde_json::Value) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({"spec": spec})).expect("template")
    }

    /// (kind, name, optional)
    type Found<'a> = Vec<(RefKind, &'a str, bool)>;

    fn names(used: &[Used]) -> Found<'_> {
        used.iter()
            .map(|u| (u.kind, u.name.as_str(), u.optional))
            .collect()
    }

    #[test]
    fn every_place_a_template_names_an_object_is_found() {
        use RefKind::*;
        let cases: [(&str, serde_json::Value, Found<'_>); 7] = [
            (
                "env valueFrom",
                serde_json::json!({"containers": [{"name": "a", "env": [
                    {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "x"}}},
                    {"name": "T", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "t", "optional": true}}},
                    {"name": "P", "value": "plain"}]}]}),
                vec![(ConfigMap, "cfg", false), (Secret, "hf-token", true)],
            ),
            (
                "envFrom, init containers too",
                serde_json::json!({"containers": [{"name": "a", "envFrom": [{"configMapRef": {"name": "env"}}]}],
                                   "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-creds"}}]}]}),
                vec![(ConfigMap, "env", false), (Secret, "init-creds", false)],
            ),
            (
                "volumes",
                serde_json::json!({"containers": [{"name": "a"}], "volumes": [
                    {"name": "c", "configMap": {"name": "models"}},
                    {"name": "s", "secret": {"secretName": "tls", "optional": true}},
                    {"name": "d", "persistentVolumeClaim": {"claimName": "weights"}},
                    {"name": "e", "emptyDir": {}}]}),
                vec![
                    (ConfigMap, "models", false),
                    (Secret, "tls", true),
                    (PersistentVolumeClaim, "weights", false),
                ],
            ),
            (
                "projected volumes",
                serde_json::json!({"containers": [{"name": "a"}], "volumes": [{"name": "p", "projected": {"sources": [
                    {"configMap": {"name": "p-cfg"}}, {"secret": {"name": "p-sec"}},
                    {"serviceAccountToken": {"path": "token"}}]}}]}),
                vec![(ConfigMap, "p-cfg", false), (Secret, "p-sec", false)],
            ),
            (
                "image pull secrets and the service account",
                serde_json::json!({"containers": [{"name": "a"}], "imagePullSecrets": [{"name": "registry"}],
                                   "serviceAccountName": "vllm"}),
                vec![(Secret, "registry", false), (ServiceAccount, "vllm", false)],
            ),
            (
                "the default service account is always there",
                serde_json::json!({"containers": [{"name": "a"}], "serviceAccountName": "default"}),
                vec![],
            ),
            (
                "used twice, once required: required",
                serde_json::json!({"containers": [{"name": "a",
                    "envFrom": [{"configMapRef": {"name": "cfg", "optional": true}}],
                    "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "x"}}}]}]}),
                vec![(ConfigMap, "cfg", false)],
            ),
        ];
        for (what, spec, want) in cases {
            assert_eq!(names(&used_by(&template(spec))), want, "{what}");
        }
    }
}
