//! What the API server manages, taken off an object before it goes into a
//! bundle: a restore must be able to create it anew (no uid, no resource
//! version), and two exports of the same state must be the same text (no
//! timestamps of writes, no addresses the cluster allocated).
//!
//! Kept: everything a user or weir's controller wrote, including the
//! Canary's status (where its run is) and annotations such as
//! `kubectl.kubernetes.io/last-applied-configuration`.

use serde_json::{Map, Value};

use super::Kind;

/// `metadata` fields the server sets or that only make sense on the live
/// object. Finalizers go too: each controller adds its own back (weir's on
/// its first reconcile), and a restored finalizer whose controller is gone
/// would block deletion forever.
const SERVER_METADATA: [&str; 9] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "finalizers",
];

/// Annotations a controller writes about the live object.
const SERVER_ANNOTATIONS: [&str; 1] = ["deployment.kubernetes.io/revision"];

/// Service fields the cluster allocates or defaults from what it
/// allocated: a restore into another cluster must get new ones.
const SERVICE_ALLOCATED: [&str; 5] = [
    "clusterIP",
    "clusterIPs",
    "ipFamilies",
    "ipFamilyPolicy",
    "healthCheckNodePort",
];

/// Takes off `object` (of `kind`) what the server manages: see the module
/// docs. Owner references keep their owner's kind and name but lose its
/// uid, which a restore fills in with the restored owner's.
pub fn strip(kind: Kind, object: &mut Value) {
    let Some(top) = object.as_object_mut() else {
        return;
    };
    if kind != Kind::Canary {
        top.remove("status");
    }
    if let Some(meta) = top.get_mut("metadata").and_then(Value::as_object_mut) {
        strip_metadata(meta);
    }
    if kind == Kind::Service
        && let Some(spec) = top.get_mut("spec").and_then(Value::as_object_mut)
    {
        for field in SERVICE_ALLOCATED {
            spec.remove(field);
        }
    }
}

fn strip_metadata(meta: &mut Map<String, Value>) {
    for field in SERVER_METADATA {
        meta.remove(field);
    }
    if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        for a in SERVER_ANNOTATIONS {
            annotations.remove(a);
        }
        if annotations.is_empty() {
            meta.remove("annotations");
        }
    }
    if let Some(owners) = meta
        .get_mut("ownerReferences")
        .and_then(Value::as_array_mut)
    {
        for owner in owners.iter_mut().filter_map(Value::as_object_mut) {
            owner.remove("uid");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live_meta() -> Value {
        json!({
            "name": "chat-frontend-stable",
            "namespace": "llm",
            "uid": "5b7c",
            "resourceVersion": "812",
            "generation": 4,
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "managedFields": [{"manager": "weir-controller"}],
            "finalizers": ["weir.dev/finalizer"],
            "labels": {"app": "chat-stable"},
            "annotations": {
                "deployment.kubernetes.io/revision": "3",
                "weir.dev/revision": "5d8f9c"
            },
            "ownerReferences": [{"apiVersion": "weir.dev/v1alpha1", "kind": "Canary",
                                 "name": "chat", "uid": "9a1e", "controller": true}]
        })
    }

    #[test]
    fn each_kind_loses_what_the_server_manages_and_keeps_the_rest() {
        struct Case {
            kind: Kind,
            live: Value,
            kept: Value,
        }
        let kept_meta = json!({
            "name": "chat-frontend-stable",
            "namespace": "llm",
            "labels": {"app": "chat-stable"},
            "annotations": {"weir.dev/revision": "5d8f9c"},
            "ownerReferences": [{"apiVersion": "weir.dev/v1alpha1", "kind": "Canary",
                                 "name": "chat", "controller": true}]
        });
        let cases = [
            Case {
                kind: Kind::Deployment,
                live: json!({"kind": "Deployment", "metadata": live_meta(),
                             "spec": {"replicas": 2}, "status": {"readyReplicas": 2}}),
                kept: json!({"kind": "Deployment", "metadata": kept_meta,
                             "spec": {"replicas": 2}}),
            },
            Case {
                kind: Kind::Canary,
                live: json!({"kind": "Canary", "metadata": {"name": "chat", "uid": "9a1e"},
                             "spec": {}, "status": {"phase": "Paused", "currentStep": 1}}),
                kept: json!({"kind": "Canary", "metadata": {"name": "chat"},
                             "spec": {}, "status": {"phase": "Paused", "currentStep": 1}}),
            },
            Case {
                kind: Kind::Service,
                live: json!({"kind": "Service", "metadata": {"name": "chat-stable"},
                             "spec": {"clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"],
                                      "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                                      "selector": {"app": "chat-stable"}, "type": "ClusterIP"},
                             "status": {"loadBalancer": {}}}),
                kept: json!({"kind": "Service", "metadata": {"name": "chat-stable"},
                             "spec": {"selector": {"app": "chat-stable"}, "type": "ClusterIP"}}),
            },
            Case {
                kind: Kind::ConfigMap,
                live: json!({"kind": "ConfigMap",
                             "metadata": {"name": "c", "annotations": {"deployment.kubernetes.io/revision": "1"}},
                             "data": {"a": "1"}}),
                kept: json!({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}),
            },
        ];
        for Case {
            kind,
            mut live,
            kept,
        } in cases
        {
            strip(kind, &mut live);
            assert_eq!(live, kept, "{kind}");
        }
    }

    #[test]
    fn stripping_twice_changes_nothing() {
        let mut once = json!({"kind": "Deployment", "metadata": live_meta(), "status": {}});
        strip(Kind::Deployment, &mut once);
        let mut twice = once.clone();
        strip(Kind::Deployment, &mut twice);
        assert_eq!(once, twice);
    }
}
