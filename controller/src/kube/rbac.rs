//! What the controller may do in the cluster: the rules of its ClusterRole
//! and of its Role for the leader Lease, once, in code.
//!
//! `charts/weir/templates/rbac.yaml` grants exactly these (a test in
//! `cli/tests/preflight.rs` renders the chart and fails when the two
//! differ), and `weir preflight` asks the API server, one
//! SelfSubjectAccessReview per verb and resource, whether an identity holds
//! them.

/// One rule: these verbs on these resources of one API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// Resources, a subresource after a slash (`canaries/status`).
    pub resources: &'static [&'static str],
    /// The verbs.
    pub verbs: &'static [&'static str],
    /// What the controller does with them, for messages.
    pub why: &'static str,
}

/// One verb on one resource, as a SelfSubjectAccessReview asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The resource, without its subresource.
    pub resource: &'static str,
    /// The subresource (`status`, `scale`), if any.
    pub subresource: Option<&'static str>,
    /// The verb.
    pub verb: &'static str,
}

impl std::fmt::Display for Permission {
    /// kubectl's spelling: `patch canaries.weir.dev/status`, `create events`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if let Some(sub) = self.subresource {
            write!(f, "/{sub}")?;
        }
        Ok(())
    }
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["get", "list", "watch", "create", "update", "patch"];

/// The controller's ClusterRole, rule by rule, as the chart writes it.
pub const CONTROLLER_RULES: &[Rule] = &[
    Rule {
        group: weir_crds::GROUP,
        resources: &["canaries"],
        verbs: &["get", "list", "watch", "update", "patch"],
        why: "reconciles Canaries",
    },
    Rule {
        group: weir_crds::GROUP,
        resources: &["canaries/status"],
        verbs: &["get", "update", "patch"],
        why: "writes each Canary's status",
    },
    Rule {
        group: weir_crds::GROUP,
        resources: &["canaries/finalizers"],
        verbs: &["update"],
        why: "reverts the target before a Canary is deleted",
    },
    Rule {
        group: "apps",
        resources: &["deployments"],
        verbs: WRITE,
        why: "keeps the target and its stable copy",
    },
    Rule {
        group: "apps",
        resources: &["deployments/scale"],
        verbs: &["get", "update", "patch"],
        why: "scales both cohorts",
    },
    Rule {
        group: "apps",
        resources: &["controllerrevisions"],
        verbs: &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        why: "keeps promoted templates for weir undo",
    },
    Rule {
        group: "",
        resources: &["services"],
        verbs: WRITE,
        why: "keeps the cohorts' Services",
    },
    Rule {
        group: "discovery.k8s.io",
        resources: &["endpointslices"],
        verbs: READ,
        why: "finds the cohorts' ready pods and the proxies",
    },
    Rule {
        group: "",
        resources: &["pods"],
        verbs: READ,
        why: "finds the pods to scrape GPU metrics of, and why a cohort's pods are not ready",
    },
    Rule {
        group: "",
        resources: &["events"],
        verbs: &["create", "patch"],
        why: "records Events on Canaries",
    },
    Rule {
        group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
        why: "records Events on Canaries",
    },
];

/// What the controller needs in its own namespace, beside the ClusterRole:
/// its leader Lease (the chart's Role `<release>-controller-local`, which
/// limits `get`/`update` to the one Lease by name).
pub const LEASE_RULES: &[Rule] = &[Rule {
    group: "coordination.k8s.io",
    resources: &["leases"],
    verbs: &["create", "get", "update"],
    why: "elects a leader among controller replicas",
}];

/// Every verb on every resource of `rules`, each with the rule it came
/// from, in the rules' order.
pub fn permissions(rules: &[Rule]) -> Vec<(Permission, &Rule)> {
    let mut out = Vec::new();
    for rule in rules {
        for resource in rule.resources {
            let (resource, subresource) = match resource.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (*resource, None),
            };
            for verb in rule.verbs {
                out.push((
                    Permission {
                        group: rule.group,
                        resource,
                        subresource,
                        verb,
                    },
                    rule,
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_expand_to_one_permission_per_verb_and_resource() {
        let all = permissions(CONTROLLER_RULES);
        let expected: usize = CONTROLLER_RULES
            .iter()
            .map(|r| r.resources.len() * r.verbs.len())
            .sum();
        assert_eq!(all.len(), expected);
        let status = all
            .iter()
            .find(|(p, _)| p.subresource == Some("status") && p.verb == "patch")
            .map(|(p, _)| p.to_string());
        assert_eq!(status.as_deref(), Some("patch canaries.weir.dev/status"));
        assert!(
            all.iter()
                .any(|(p, _)| p.to_string() == "create events" && p.group.is_empty())
        );
    }
}
