//! How a bundle goes back into a cluster, decided without one: the order
//! of the writes, the field manager of each, owner references pointed at
//! the restored owners, and what a write would change.
//!
//! # Order
//!
//! What an object needs exists before it: ConfigMaps and Secrets, then
//! the Deployments the user owns (the targets), then the Canaries (spec,
//! then status), then what the Canaries own (the stable copies, the
//! Services, the ControllerRevisions, each needing its owner's new uid),
//! then the HPAs, which would otherwise scale a Deployment that is not
//! there yet.
//!
//! # Field managers
//!
//! What weir's controller wrote goes back under the controller's own field
//! manager ([`CONTROLLER`]), forced: the objects it owns and the Canary's
//! status. So after a restore the controller owns exactly the fields it
//! owned before, and its next apply can still remove one (under another
//! manager a field the controller drops would stay forever). Everything
//! else is the user's and goes back under [`RESTORE`], unforced unless
//! asked: a conflict then says which other manager set a field since.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value};

use super::{Key, Kind};

/// The field manager of what the user owns.
pub const RESTORE: &str = "weir-restore";
/// The field manager of what weir's controller owns.
pub const CONTROLLER: &str = weir_controller::kube::reconcile::MANAGER;

/// When an object is written, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// ConfigMaps and Secrets.
    Config,
    /// Objects that need nothing in the bundle (the targets).
    Workloads,
    /// Canaries: spec, then status.
    Canaries,
    /// Objects owned by a bundled object (the stable copies, Services,
    /// ControllerRevisions).
    Owned,
    /// HPAs, once what they scale exists.
    Autoscalers,
}

/// The owners of `object` (kind and name; owners share its namespace).
fn owners(object: &Value) -> Vec<(String, String)> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                r.get("kind")?.as_str()?.to_string(),
                r.get("name")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The bundled owner of `object` named by an owner reference, if any.
fn bundled_owner(object: &Value, keys: &BTreeSet<Key>) -> Option<Key> {
    let namespace = object.pointer("/metadata/namespace")?.as_str()?;
    owners(object).into_iter().find_map(|(kind, name)| {
        let key = Key {
            kind: Kind::parse(&kind)?,
            namespace: namespace.to_string(),
            name,
        };
        keys.contains(&key).then_some(key)
    })
}

/// The stage of `object` in a bundle whose objects are `keys`.
pub fn stage(object: &Value, keys: &BTreeSet<Key>) -> Stage {
    match Key::of(object).map(|k| k.kind) {
        Some(Kind::ConfigMap | Kind::Secret) => Stage::Config,
        Some(Kind::Canary) => Stage::Canaries,
        Some(Kind::HorizontalPodAutoscaler) => Stage::Autoscalers,
        _ if bundled_owner(object, keys).is_some() => Stage::Owned,
        _ => Stage::Workloads,
    }
}

/// The indices of `objects` in the order a restore writes them: by
/// stage, then namespace, kind and name.
pub fn restore_order(objects: &[Value]) -> Vec<usize> {
    let keys: BTreeSet<Key> = objects.iter().filter_map(Key::of).collect();
    let mut order: Vec<(Stage, Option<Key>, usize)> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| (stage(o, &keys), Key::of(o), i))
        .collect();
    order.sort();
    order.into_iter().map(|(_, _, i)| i).collect()
}

/// The Canary that controls `object` (an owner reference to a Canary
/// with `controller: true`), if any: what weir's controller owns goes
/// back under [`CONTROLLER`].
pub fn canary_owner(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|r| {
            r.get("kind").and_then(Value::as_str) == Some(Kind::Canary.as_str())
                && r.get("controller").and_then(Value::as_bool) == Some(true)
        })
        .and_then(|r| r.get("name")?.as_str())
}

/// `object` moved to namespace `namespace` (`-n`), owner references and
/// all (owners share their dependents' namespace).
pub fn retarget(object: &Value, namespace: &str) -> Value {
    let mut out = object.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("namespace".into(), Value::String(namespace.to_string()));
    }
    out
}

/// `object` ready to apply: owner references get the uids of `uids` (by
/// owner key); a reference to an owner not in `uids` is dropped, since an
/// owner reference to nothing would have the garbage collector delete the
/// object. Returns the object and the owners dropped.
pub fn prepare(object: &Value, uids: &HashMap<Key, String>) -> (Value, Vec<String>) {
    let mut out = object.clone();
    let mut dropped = Vec::new();
    let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) else {
        return (out, dropped);
    };
    let ns = meta
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let Some(refs) = meta
        .get_mut("ownerReferences")
        .and_then(Value::as_array_mut)
    {
        refs.retain_mut(|r| {
            let field = |f: &str| {
                r.get(f)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let (kind, name) = (field("kind"), field("name"));
            let uid = Kind::parse(&kind).and_then(|kind| {
                uids.get(&Key {
                    kind,
                    namespace: ns.clone(),
                    name: name.clone(),
                })
            });
            match (uid, r.as_object_mut()) {
                (Some(uid), Some(r)) => {
                    r.insert("uid".into(), Value::String(uid.clone()));
                    true
                }
                _ => {
                    dropped.push(format!("{kind}/{name}"));
                    false
                }
            }
        });
        if refs.is_empty() {
            meta.remove("ownerReferences");
        }
    }
    (out, dropped)
}

/// A Canary as two writes: the object without status, and the status
/// subresource's body (None when it has no status).
pub fn split_status(canary: &Value) -> (Value, Option<Value>) {
    let mut main = canary.clone();
    let status = main.as_object_mut().and_then(|o| o.remove("status"));
    let body = status.map(|status| {
        let mut body = Map::new();
        for field in ["apiVersion", "kind"] {
            if let Some(v) = canary.get(field) {
                body.insert(field.into(), v.clone());
            }
        }
        let mut meta = Map::new();
        for field in ["name", "namespace"] {
            if let Some(v) = canary.pointer(&format!("/metadata/{field}")) {
                meta.insert(field.into(), v.clone());
            }
        }
        body.insert("metadata".into(), Value::Object(meta));
        body.insert("status".into(), status);
        Value::Object(body)
    });
    (main, body)
}

/// `metadata` fields that change on every write or are bookkeeping: not
/// a change of the object.
const BOOKKEEPING: [&str; 3] = ["resourceVersion", "managedFields", "generation"];

/// The fields that differ between the live object and what a write would
/// leave (`after`), as paths (`spec.template.spec.containers[0].image`);
/// empty when the write changes nothing.
pub fn diff(live: &Value, after: &Value) -> Vec<String> {
    let mut paths = Vec::new();
    let (mut live, mut after) = (live.clone(), after.clone());
    for o in [&mut live, &mut after] {
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in BOOKKEEPING {
                meta.remove(f);
            }
        }
    }
    walk("", &live, &after, &mut paths);
    paths
}

fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => walk(&join(k), p, q, out),
                    _ => out.push(join(k)),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                walk(&format!("{path}[{i}]"), p, q, out);
            }
        }
        (x, y) if x == y => {}
        _ => out.push(path.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(kind: &str, name: &str, owner: Option<(&str, &str)>) -> Value {
        let mut o = json!({"kind": kind, "metadata": {"name": name, "namespace": "llm"}});
        if let Some((k, n)) = owner {
            o["metadata"]["ownerReferences"] =
                json!([{"apiVersion": "x", "kind": k, "name": n, "controller": true}]);
        }
        o
    }

    #[test]
    fn owners_come_before_what_they_own_and_hpas_last() {
        let objects = vec![
            obj("HorizontalPodAutoscaler", "chat-frontend", None),
            obj(
                "ControllerRevision",
                "chat-5d8f9c",
                Some(("Canary", "chat")),
            ),
            obj("Service", "chat-stable", Some(("Canary", "chat"))),
            obj(
                "Deployment",
                "chat-frontend-stable",
                Some(("Canary", "chat")),
            ),
            obj("Canary", "chat", None),
            obj("Deployment", "chat-frontend", None),
            obj("Secret", "hf-token", None),
            obj("ConfigMap", "models", None),
            // Owned by something not in the bundle: nothing to wait for.
            obj("Deployment", "other", Some(("Canary", "elsewhere"))),
        ];
        let names: Vec<&str> = restore_order(&objects)
            .into_iter()
            .map(|i| objects[i]["metadata"]["name"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            [
                "models",
                "hf-token",
                "chat-frontend",
                "other",
                "chat",
                "chat-frontend-stable",
                "chat-stable",
                "chat-5d8f9c",
                "chat-frontend",
            ]
        );
    }

    #[test]
    fn owner_references_get_the_new_uids_and_dangling_ones_go() {
        let mut o = obj(
            "Deployment",
            "chat-frontend-stable",
            Some(("Canary", "chat")),
        );
        o["metadata"]["ownerReferences"]
            .as_array_mut()
            .expect("refs")
            .push(json!({"apiVersion": "v1", "kind": "Pod", "name": "gone"}));
        let uids = HashMap::from([(
            Key {
                kind: Kind::Canary,
                namespace: "restored".into(),
                name: "chat".into(),
            },
            "new-uid".to_string(),
        )]);
        let (ready, dropped) = prepare(&retarget(&o, "restored"), &uids);
        assert_eq!(ready["metadata"]["namespace"], "restored");
        assert_eq!(
            ready["metadata"]["ownerReferences"],
            json!([{"apiVersion": "x", "kind": "Canary", "name": "chat", "controller": true, "uid": "new-uid"}])
        );
        assert_eq!(dropped, ["Pod/gone"]);
        assert_eq!(canary_owner(&ready), Some("chat"));

        let (alone, dropped) = prepare(&o, &HashMap::new());
        assert!(alone["metadata"].get("ownerReferences").is_none());
        assert_eq!(dropped, ["Canary/chat", "Pod/gone"]);
        assert_eq!(
            canary_owner(&obj("Deployment", "chat-frontend", None)),
            None
        );
    }

    #[test]
    fn a_canary_splits_into_spec_and_status_writes() {
        let c = json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Canary",
                       "metadata": {"name": "chat", "namespace": "llm", "labels": {"a": "b"}},
                       "spec": {"targetRef": {"name": "t"}}, "status": {"phase": "Paused"}});
        let (main, status) = split_status(&c);
        assert!(main.get("status").is_none());
        assert_eq!(main["spec"], c["spec"]);
        assert_eq!(
            status,
            Some(json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Canary",
                        "metadata": {"name": "chat", "namespace": "llm"},
                        "status": {"phase": "Paused"}}))
        );
        let mut bare = c.clone();
        bare.as_object_mut().map(|o| o.remove("status"));
        assert_eq!(split_status(&bare).1, None);
    }

    #[test]
    fn diffs_name_the_changed_fields_and_ignore_bookkeeping() {
        let live = json!({"metadata": {"name": "a", "resourceVersion": "1", "generation": 1,
                                        "managedFields": [], "labels": {"x": "1"}},
                          "spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": "v1"}]}}},
                          "status": {"readyReplicas": 2}});
        let mut same = live.clone();
        same["metadata"]["resourceVersion"] = json!("2");
        same["metadata"]["managedFields"] = json!([{"manager": "weir-restore"}]);
        assert!(diff(&live, &same).is_empty());

        let mut changed = live.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2");
        changed["metadata"]["labels"]["y"] = json!("2");
        assert_eq!(
            diff(&live, &changed),
            [
                "metadata.labels.y",
                "spec.template.spec.containers[0].image"
            ]
        );
        let mut longer = live.clone();
        longer["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(json!({"image": "sidecar"}));
        assert_eq!(diff(&live, &longer), ["spec.template.spec.containers"]);
    }
}
