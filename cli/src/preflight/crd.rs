//! The installed Canary CRD against the one this binary generates
//! (`weir crds`, `weir_crds::Canary::crd()`, committed as
//! `crds/yaml/canary.yaml`): names, scope, and per version whether it is
//! served, its schema, subresources and printer columns. A schema that
//! differs means the API server accepts or refuses other Canaries than the
//! controller reads, so it fails, naming the first field that differs.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion,
};
use serde_json::Value;

use super::check::{Check, Read, names};
use crate::cluster::program;

/// The command that installs (or updates) this binary's CRD.
pub fn apply_command() -> String {
    format!("{} crds | kubectl apply --server-side -f -", program())
}

/// The verdict on the installed CRD (`None`: not installed), compared with
/// `ours`.
pub fn check(
    installed: &Read<Option<CustomResourceDefinition>>,
    ours: &CustomResourceDefinition,
) -> Check {
    let name = ours.metadata.name.as_deref().unwrap_or_default();
    let installed = match installed {
        Ok(Some(crd)) => crd,
        Ok(None) => {
            return Check::fail(
                names::CRD,
                format!("the Canary CRD ({name}) is not installed"),
                apply_command(),
            );
        }
        Err(e) => return e.warn(names::CRD, &format!("CustomResourceDefinition {name}")),
    };
    let drift = |what: String| {
        Check::fail(
            names::CRD,
            format!("the installed {name} differs from this weir's: {what}"),
            format!(
                "{} (or, if a newer weir installed it, use that release's weir)",
                apply_command()
            ),
        )
    };
    let (theirs, mine) = (&installed.spec, &ours.spec);
    if theirs.group != mine.group
        || theirs.scope != mine.scope
        || theirs.names.kind != mine.names.kind
        || theirs.names.plural != mine.names.plural
    {
        return drift(format!(
            "it defines {} {}/{} ({}), this weir {} {}/{} ({})",
            theirs.names.kind,
            theirs.group,
            theirs.names.plural,
            theirs.scope,
            mine.names.kind,
            mine.group,
            mine.names.plural,
            mine.scope
        ));
    }
    for version in &mine.versions {
        let Some(found) = theirs.versions.iter().find(|v| v.name == version.name) else {
            return drift(format!("it has no version {}", version.name));
        };
        if !found.served {
            return drift(format!("version {} is not served", version.name));
        }
        if let Some(diff) = version_difference(found, version) {
            return drift(format!("version {}: {diff}", version.name));
        }
    }
    let established = installed
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Established"));
    if let Some(c) = established.filter(|c| c.status != "True") {
        return Check::fail(
            names::CRD,
            format!(
                "{name} is not Established: {}",
                c.message.as_deref().unwrap_or("no reason given")
            ),
            format!(
                "kubectl describe crd {name}, fix what it says, then {}",
                apply_command()
            ),
        );
    }
    let known: Vec<&str> = mine.versions.iter().map(|v| v.name.as_str()).collect();
    let others: Vec<&str> = theirs
        .versions
        .iter()
        .map(|v| v.name.as_str())
        .filter(|v| !known.contains(v))
        .collect();
    if !others.is_empty() {
        return Check::warn(
            names::CRD,
            format!(
                "{name} matches this weir's {}, and also serves {}, which this weir does not know",
                known.join(", "),
                others.join(", ")
            ),
            "use the weir release that installed the newer CRD",
        );
    }
    Check::pass(
        names::CRD,
        format!(
            "{name} {} installed, served and identical to this weir's",
            known.join(", ")
        ),
    )
}

/// The first difference of an installed version from ours, in words.
fn version_difference(
    installed: &CustomResourceDefinitionVersion,
    ours: &CustomResourceDefinitionVersion,
) -> Option<String> {
    let parts = [
        (
            "schema",
            to_value(&installed.schema),
            to_value(&ours.schema),
        ),
        (
            "subresources",
            to_value(&installed.subresources),
            to_value(&ours.subresources),
        ),
        (
            "additionalPrinterColumns",
            to_value(&installed.additional_printer_columns),
            to_value(&ours.additional_printer_columns),
        ),
    ];
    parts
        .into_iter()
        .find_map(|(what, theirs, mine)| first_difference(&theirs, &mine, what.to_string()))
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Where `installed` and `ours` first differ, as a path with what each
/// holds there; None when they are equal.
pub fn first_difference(installed: &Value, ours: &Value, path: String) -> Option<String> {
    match (installed, ours) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let at = format!("{path}.{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => first_difference(x, y, at),
                    (Some(_), None) => Some(format!("{at} is only in the installed CRD")),
                    (None, Some(_)) => Some(format!("{at} is missing from the installed CRD")),
                    (None, None) => None,
                }
            })
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, format!("{path}[{i}]"))),
        // The API server writes 0.0 back as 0.
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => None,
        (a, b) if a == b => None,
        (a, b) => Some(format!(
            "{path} is {} installed, {} in this weir",
            short(a),
            short(b)
        )),
    }
}

/// A value in a few characters.
fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::check::{Status, Unread};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceDefinitionCondition, CustomResourceDefinitionStatus,
    };
    use kube::CustomResourceExt as _;
    use weir_crds::Canary;

    fn established(mut crd: CustomResourceDefinition, status: &str) -> CustomResourceDefinition {
        crd.status = Some(CustomResourceDefinitionStatus {
            conditions: Some(vec![CustomResourceDefinitionCondition {
                type_: "Established".into(),
                status: status.into(),
                message: Some("the initial names have been accepted".into()),
                ..CustomResourceDefinitionCondition::default()
            }]),
            ..CustomResourceDefinitionStatus::default()
        });
        crd
    }

    #[test]
    fn the_crd_this_binary_generates_passes() {
        let ours = Canary::crd();
        let got = check(&Ok(Some(established(ours.clone(), "True"))), &ours);
        assert_eq!(got.status, Status::Pass, "{got:?}");
        assert!(got.detail.contains("canaries.weir.dev v1alpha1"), "{got:?}");
    }

    #[test]
    fn missing_drifted_unserved_and_unestablished_crds_fail_with_the_apply_command() {
        let ours = Canary::crd();
        let missing = check(&Ok(None), &ours);
        assert_eq!(missing.status, Status::Fail);
        assert_eq!(missing.fix, "weir crds | kubectl apply --server-side -f -");

        // An older weir's schema, without spec.gpuBudget.
        let mut old = established(ours.clone(), "True");
        let schema = old.spec.versions[0]
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("spec"))
            .and_then(|s| s.properties.as_mut())
            .expect("spec properties");
        schema.remove("gpuBudget");
        let got = check(&Ok(Some(old)), &ours);
        assert_eq!(got.status, Status::Fail, "{got:?}");
        assert!(
            got.detail.contains(
                "version v1alpha1: schema.openAPIV3Schema.properties.spec.properties.gpuBudget \
                 is missing from the installed CRD"
            ),
            "{got:?}"
        );
        assert!(got.fix.starts_with("weir crds | kubectl apply"), "{got:?}");

        let mut unserved = established(ours.clone(), "True");
        unserved.spec.versions[0].served = false;
        let got = check(&Ok(Some(unserved)), &ours);
        assert!(
            got.detail.contains("version v1alpha1 is not served"),
            "{got:?}"
        );

        let mut renamed = established(ours.clone(), "True");
        renamed.spec.versions[0].name = "v1alpha0".into();
        let got = check(&Ok(Some(renamed)), &ours);
        assert!(got.detail.contains("it has no version v1alpha1"), "{got:?}");

        let got = check(&Ok(Some(established(ours.clone(), "False"))), &ours);
        assert_eq!(got.status, Status::Fail);
        assert!(got.detail.contains("not Established"), "{got:?}");
    }

    #[test]
    fn a_newer_extra_version_warns_and_an_unreadable_crd_warns() {
        let ours = Canary::crd();
        let mut newer = established(ours.clone(), "True");
        let mut v2 = newer.spec.versions[0].clone();
        v2.name = "v1beta1".into();
        newer.spec.versions.push(v2);
        let got = check(&Ok(Some(newer)), &ours);
        assert_eq!(got.status, Status::Warn, "{got:?}");
        assert!(got.detail.contains("also serves v1beta1"), "{got:?}");

        let got = check(&Err(Unread::Forbidden("forbidden".into())), &ours);
        assert_eq!(got.status, Status::Warn);
    }

    #[test]
    fn differences_are_named_by_path() {
        let a = serde_json::json!({"x": {"y": [1, 2], "z": "a"}});
        assert_eq!(first_difference(&a, &a, "s".into()), None);
        let b = serde_json::json!({"x": {"y": [1, 3], "z": "a"}});
        assert_eq!(
            first_difference(&a, &b, "s".into()).as_deref(),
            Some("s.x.y[1] is 2 installed, 3 in this weir")
        );
        let float = serde_json::json!({"x": {"y": [1.0, 2], "z": "a"}});
        assert_eq!(first_difference(&a, &float, "s".into()), None);
        let c = serde_json::json!({"x": {"y": [1, 2], "z": "a", "w": true}});
        assert_eq!(
            first_difference(&a, &c, "s".into()).as_deref(),
            Some("s.x.w is missing from the installed CRD")
        );
    }
}
