//! Whether the current identity holds every permission of the controller's
//! ClusterRole (`weir_controller::kube::rbac::CONTROLLER_RULES`, which a
//! test keeps equal to the chart's): the answers of one
//! SelfSubjectAccessReview per verb and resource, judged here.
//!
//! Run it as the controller's ServiceAccount (a kubeconfig context with
//! `as: system:serviceaccount:NS:NAME`, or in its pod) to learn whether the
//! controller can work in the namespace; as yourself, to learn whether you
//! could run it.

use weir_controller::kube::rbac::Permission;

use super::check::{Check, Read, names};

/// One permission and the API server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// What was asked.
    pub permission: Permission,
    /// Allowed, or why it could not be asked.
    pub allowed: Read<bool>,
}

/// The verdict on the answers for `identity` (its user name, when the API
/// server said) in `namespace`.
pub fn check(answers: &[Answer], identity: Option<&str>, namespace: &str) -> Check {
    let who = identity.unwrap_or("the current identity");
    let denied: Vec<Permission> = answers
        .iter()
        .filter(|a| a.allowed == Ok(false))
        .map(|a| a.permission)
        .collect();
    let unanswered: Vec<&Answer> = answers.iter().filter(|a| a.allowed.is_err()).collect();
    if !denied.is_empty() {
        return Check::fail(
            names::RBAC,
            format!(
                "{who} may not {} in namespace {namespace} ({} of the controller's {} permissions \
                 missing)",
                by_resource(&denied),
                denied.len(),
                answers.len()
            ),
            grant(identity),
        );
    }
    if let Some(first) = unanswered.first() {
        let why = match &first.allowed {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        };
        return Check::warn(
            names::RBAC,
            format!(
                "{} of {} access reviews could not be asked (first: {}: {why})",
                unanswered.len(),
                answers.len(),
                first.permission
            ),
            "run preflight again; SelfSubjectAccessReview is open to every authenticated user",
        );
    }
    Check::pass(
        names::RBAC,
        format!(
            "{who} holds all {} permissions of the controller's ClusterRole in namespace {namespace}",
            answers.len()
        ),
    )
}

/// `update,patch canaries.weir.dev; create events`: the verbs of each
/// resource together, in the rules' order.
fn by_resource(denied: &[Permission]) -> String {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for p in denied {
        let resource = Permission { verb: "", ..*p }
            .to_string()
            .trim_start()
            .to_string();
        match groups.iter_mut().find(|(r, _)| *r == resource) {
            Some((_, verbs)) => verbs.push(p.verb),
            None => groups.push((resource, vec![p.verb])),
        }
    }
    groups
        .iter()
        .map(|(resource, verbs)| format!("{} {resource}", verbs.join(",")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// How to grant the controller's ClusterRole to `identity`.
fn grant(identity: Option<&str>) -> String {
    let subject = match identity.map(|i| i.split(':').collect::<Vec<_>>()) {
        Some(parts) if parts.len() == 4 && parts[..2] == ["system", "serviceaccount"] => {
            format!("--serviceaccount={}:{}", parts[2], parts[3])
        }
        Some(_) => format!("--user={}", identity.unwrap_or_default()),
        None => "--user=<you>".to_string(),
    };
    format!(
        "install the chart's RBAC (helm install weir charts/weir, rbac.create=true) and bind its \
         ClusterRole: kubectl create clusterrolebinding weir-controller-preflight \
         --clusterrole=weir-controller {subject}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::check::{Status, Unread};
    use weir_controller::kube::rbac::{CONTROLLER_RULES, permissions};

    fn answers(deny: &[&str]) -> Vec<Answer> {
        permissions(CONTROLLER_RULES)
            .into_iter()
            .map(|(p, _)| Answer {
                permission: p,
                allowed: Ok(!deny.contains(&p.to_string().as_str())),
            })
            .collect()
    }

    #[test]
    fn all_allowed_passes() {
        let got = check(
            &answers(&[]),
            Some("system:serviceaccount:weir:weir"),
            "llm",
        );
        assert_eq!(got.status, Status::Pass, "{got:?}");
        assert!(got.detail.contains("namespace llm"), "{got:?}");
    }

    #[test]
    fn each_denied_permission_is_named_with_the_binding_that_grants_it() {
        let denied = [
            "create controllerrevisions.apps",
            "patch canaries.weir.dev/status",
        ];
        let got = check(
            &answers(&denied),
            Some("system:serviceaccount:llm:weir"),
            "llm",
        );
        assert_eq!(got.status, Status::Fail, "{got:?}");
        for d in denied {
            assert!(got.detail.contains(d), "{d}: {got:?}");
        }
        assert!(got.detail.contains("2 of the controller's"), "{got:?}");
        assert!(
            got.fix
                .contains("--clusterrole=weir-controller --serviceaccount=llm:weir"),
            "{got:?}"
        );
        let got = check(&answers(&denied), Some("alice"), "llm");
        assert!(got.fix.ends_with("--user=alice"), "{got:?}");
    }

    #[test]
    fn unanswered_reviews_warn() {
        let mut all = answers(&[]);
        all[0].allowed = Err(Unread::Failed("timeout".into()));
        let got = check(&all, None, "llm");
        assert_eq!(got.status, Status::Warn, "{got:?}");
    }
}
