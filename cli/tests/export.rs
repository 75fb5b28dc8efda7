//! `weir export` and `weir restore` as processes against a real control
//! plane (the Deployments' pods run by the node agent): a Canary taken mid-run by the real controller is exported, its
//! namespace emptied, restored, exported again (the same bundle), restored
//! again (nothing written), and continued by a new controller from the
//! step it was at.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use weir_crds::{Canary, Phase};
use weir_envtest::TestEnv;

mod common;
mod stack;

use stack::{PATIENCE, controller, image_of, set_image, wait_phase, weir};
use weir_test_kit::poll::until;
use weir_test_kit::sim::FAST;

fn api<K>(client: &Client, ns: &str) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    Api::namespaced(client.clone(), ns)
}

fn from_json<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

/// The bundle file as a JSON value.
fn read_bundle(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("bundle file");
    serde_saphyr::from_str(&text).expect("bundle YAML")
}

/// Every path where `a` and `b` differ.
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(p1), Some(p2)) => differences(&p, p1, p2, out),
                    _ => out.push(p),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p1, p2)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}[{i}]"), p1, p2, out);
            }
        }
        _ if a == b => {}
        _ => out.push(path.to_string()),
    }
}

/// (kind, name) of every object in a bundle.
fn listing(bundle: &Value) -> Vec<(String, String)> {
    bundle["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or_default().to_string(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// name → resourceVersion of every object a restore writes.
async fn versions(client: &Client, ns: &str) -> BTreeMap<String, String> {
    async fn of<K>(api: Api<K>, kind: &str, out: &mut BTreeMap<String, String>)
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        for o in api.list(&ListParams::default()).await.expect("list").items {
            out.insert(
                format!("{kind}/{}", o.name_any()),
                o.resource_version().unwrap_or_default(),
            );
        }
    }
    let mut out = BTreeMap::new();
    of(api::<Canary>(client, ns), "Canary", &mut out).await;
    of(api::<Deployment>(client, ns), "Deployment", &mut out).await;
    of(api::<Service>(client, ns), "Service", &mut out).await;
    of(
        api::<ControllerRevision>(client, ns),
        "ControllerRevision",
        &mut out,
    )
    .await;
    of(api::<HorizontalPodAutoscaler>(client, ns), "HPA", &mut out).await;
    of(api::<ConfigMap>(client, ns), "ConfigMap", &mut out).await;
    out
}

/// Deletes every object of the namespace that a bundle holds, as a lost
/// namespace would, and waits until they are gone.
async fn delete_all(client: &Client, ns: &str) {
    let canaries = api::<Canary>(client, ns);
    // The controller is stopped, so its finalizer must go by hand.
    let no_finalizers = json!({"metadata": {"finalizers": null}});
    canaries
        .patch(
            "chat",
            &PatchParams::default(),
            &Patch::Merge(&no_finalizers),
        )
        .await
        .expect("finalizer removed");
    async fn every<K>(api: Api<K>)
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let items = api.list(&ListParams::default()).await.expect("list").items;
        for o in items {
            // kube-root-ca.crt is the namespace's own; the rest is ours.
            // The garbage collector may have taken an object owned by one
            // deleted before it (the Canary owns the stable copy).
            if o.name_any() != "kube-root-ca.crt" {
                match api.delete(&o.name_any(), &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(e) => panic!("delete {}: {e}", o.name_any()),
                }
            }
        }
        until("the objects gone", PATIENCE, || async {
            let left = api.list(&ListParams::default()).await.ok()?.items;
            left.iter()
                .all(|o| o.name_any() == "kube-root-ca.crt")
                .then_some(())
        })
        .await;
    }
    every(canaries).await;
    every(api::<Deployment>(client, ns)).await;
    every(api::<Service>(client, ns)).await;
    every(api::<ControllerRevision>(client, ns)).await;
    every(api::<HorizontalPodAutoscaler>(client, ns)).await;
    every(api::<ConfigMap>(client, ns)).await;
    every(api::<Secret>(client, ns)).await;
}

/// The Secret the target reads its token from.
fn token_secret() -> Secret {
    from_json(json!({"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "hf-token"},
                     "stringData": {"token": "hf_do-not-export-me"}}))
}

/// Waits until both Deployments have rolled out (the Deployment controller
/// writes their status until then).
async fn settled(client: &Client, ns: &str) {
    until("the Deployments' status settled", PATIENCE, || async {
        let all = api::<Deployment>(client, ns)
            .list(&ListParams::default())
            .await
            .ok()?
            .items;
        all.iter()
            .all(|d| {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                d.status.as_ref().is_some_and(|s| {
                    s.observed_generation == d.metadata.generation && s.ready_replicas == Some(want)
                })
            })
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_exported_mid_run_is_restored_identical_and_continues_from_its_step() {
    let env = TestEnv::on_cluster("export-restore").await;
    let ns = env.namespace.clone();
    let client = env.client.clone();
    let dir = std::env::temp_dir().join(format!("weir-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = |name: &str| -> PathBuf { dir.join(name) };
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();

    // The world: the target reads a ConfigMap and a Secret, an HPA scales
    // it, and a Canary with two manual pauses rolls it out.
    api::<ConfigMap>(&client, &ns)
        .create(
            &PostParams::default(),
            &from_json(json!({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "chat-config"},
                              "data": {"MODEL": "llama-3-8b", "yes": "no", "multi": "a\nb\n"}})),
        )
        .await
        .expect("configmap");
    api::<Secret>(&client, &ns)
        .create(&PostParams::default(), &token_secret())
        .await
        .expect("secret");
    let mut target = stack::target("sim:v1", 2);
    if let Some(spec) = target.spec.as_mut() {
        let mut container = stack::container("sim:v1", FAST, 0);
        container["envFrom"] = json!([{"configMapRef": {"name": "chat-config"}}]);
        container["env"] = json!([{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}]);
        spec.template.spec = Some(from_json(json!({"containers": [container]})));
    }
    let deployments = api::<Deployment>(&client, &ns);
    deployments
        .create(&PostParams::default(), &target)
        .await
        .expect("target");
    api::<HorizontalPodAutoscaler>(&client, &ns)
        .create(
            &PostParams::default(),
            &from_json(json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                              "metadata": {"name": "chat-frontend"},
                              "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat-frontend"},
                                       "minReplicas": 1, "maxReplicas": 4}})),
        )
        .await
        .expect("hpa");
    let canaries = api::<Canary>(&client, &ns);
    canaries
        .create(
            &PostParams::default(),
            &stack::canary_spec(json!({"canary": {"steps": [
                {"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]}})),
        )
        .await
        .expect("canary");

    // 1. The real controller takes it mid-run: v2 promoted (history), v3
    //    paused at step 2 of 4 with a quarter of the traffic.
    let first = controller(&env, "before-export");
    wait_phase(&client, &ns, "chat", Phase::Idle).await;
    set_image(&deployments, "sim:v2").await;
    wait_phase(&client, &ns, "chat", Phase::Paused).await;
    let (code, out, err) = weir(&env, &["promote", "chat", "-n", &ns, "--full"]).await;
    assert_eq!(code, 0, "{out}{err}");
    wait_phase(&client, &ns, "chat", Phase::Succeeded).await;
    let revisions = api::<ControllerRevision>(&client, &ns);
    until("v1 and v2 recorded", PATIENCE, || async {
        (revisions
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .len()
            == 2)
            .then_some(())
    })
    .await;
    set_image(&deployments, "sim:v3").await;
    let paused = wait_phase(&client, &ns, "chat", Phase::Paused).await;
    assert_eq!((paused.current_step, paused.canary_weight), (1, 25.0));
    // Once paused, the controller has nothing left to converge.
    until("the canary scaled for 25%", PATIENCE, || async {
        let t = deployments.get("chat-frontend").await.ok()?;
        (t.spec?.replicas
            == paused
                .replicas
                .map(|r| i32::try_from(r.canary).unwrap_or(-1)))
        .then_some(())
    })
    .await;
    first.kill();

    // 2. Export.
    let b1 = file("b1.yaml");
    let (code, out, err) = weir(&env, &["export", "-n", &ns, "-o", &path(&b1)]).await;
    assert_eq!(code, 0, "{out}{err}");
    let text1 = std::fs::read_to_string(&b1).expect("bundle");
    let bundle1 = read_bundle(&b1);
    assert!(
        out.contains("exported 1 Canaries: 9 objects, 1 referenced"),
        "{out}{:?}",
        listing(&bundle1)
    );
    assert!(
        err.contains(&format!("[1/1] {ns}/chat: 9 objects")),
        "{err}"
    );
    for server_managed in [
        "uid:",
        "resourceVersion",
        "managedFields",
        "clusterIP",
        "creationTimestamp",
        "deployment.kubernetes.io/revision",
    ] {
        assert!(
            !text1.contains(server_managed),
            "{server_managed} in the bundle:\n{text1}"
        );
    }
    assert!(
        !text1.contains("hf_do-not-export-me") && !text1.contains("aGZf"),
        "the Secret's value leaked"
    );
    let mut kinds = listing(&bundle1);
    kinds.sort();
    let revision_names: Vec<String> = revisions
        .list(&ListParams::default())
        .await
        .expect("revisions")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let mut expected: Vec<(String, String)> = [
        ("Canary", "chat"),
        ("ConfigMap", "chat-config"),
        ("Deployment", "chat-frontend"),
        ("Deployment", "chat-frontend-stable"),
        ("HorizontalPodAutoscaler", "chat-frontend"),
        ("Service", "chat-canary"),
        ("Service", "chat-stable"),
    ]
    .iter()
    .map(|(k, n)| ((*k).to_string(), (*n).to_string()))
    .chain(
        revision_names
            .iter()
            .map(|n| ("ControllerRevision".to_string(), n.clone())),
    )
    .collect();
    expected.sort();
    assert_eq!(kinds, expected);
    assert_eq!(
        bundle1["references"],
        json!([{"kind": "Secret", "namespace": ns, "name": "hf-token",
                "usedBy": ["Deployment/chat-frontend", "Deployment/chat-frontend-stable"]}])
    );
    let exported_canary = bundle1["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["kind"] == "Canary")
        .cloned()
        .expect("the Canary");
    assert_eq!(exported_canary["status"]["phase"], "Paused");
    assert_eq!(exported_canary["status"]["currentStep"], 1);
    let old_uid = canaries.get("chat").await.expect("canary").uid();

    // 3. The namespace loses everything.
    delete_all(&client, &ns).await;

    // 4. A dry run says what it would create, names the missing Secret,
    //    and writes nothing; a real restore refuses while it is missing.
    let (code, out, err) = weir(&env, &["restore", "-f", &path(&b1), "--dry-run"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("would create"))
            .count(),
        9,
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "would create  Canary {ns}/chat (status: Paused, step 2)"
        )),
        "{out}"
    );
    assert!(
        out.contains("dry run: would create 9, change 0, leave 0 unchanged; nothing was written"),
        "{out}"
    );
    assert!(
        err.contains(&format!(
            "Secret {ns}/hf-token (used by Deployment/chat-frontend"
        )),
        "{err}"
    );
    assert!(
        canaries.get_opt("chat").await.expect("get").is_none(),
        "a dry run wrote"
    );
    let (code, out, err) = weir(&env, &["restore", "-f", &path(&b1)]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("hf-token") && err.contains("--include-secrets"),
        "{err}"
    );
    assert!(
        deployments
            .get_opt("chat-frontend")
            .await
            .expect("get")
            .is_none(),
        "wrote despite a missing Secret"
    );

    // 5. With the Secret back (from where Secrets are kept), restore.
    api::<Secret>(&client, &ns)
        .create(&PostParams::default(), &token_secret())
        .await
        .expect("secret again");
    let (code, out, err) = weir(&env, &["restore", "-f", &path(&b1)]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("9 created, 0 changed, 0 unchanged"), "{out}");
    let restored = canaries.get("chat").await.expect("restored canary");
    assert_ne!(restored.uid(), old_uid, "a new object");
    assert!(
        !restored
            .annotations()
            .contains_key(weir_crds::annotations::RESTORING),
        "the guard is gone"
    );
    let status = restored.status.clone().expect("status restored");
    assert_eq!(
        (status.phase, status.current_step, status.canary_weight),
        (Phase::Paused, 1, 25.0)
    );
    let stable = deployments
        .get("chat-frontend-stable")
        .await
        .expect("stable copy");
    assert_eq!(image_of(&stable).as_deref(), Some("sim:v2"));
    let owner = stable
        .owner_references()
        .first()
        .unwrap_or_else(|| panic!("no owner: {stable:?}\n{out}{err}"));
    assert_eq!(
        (owner.kind.as_str(), owner.uid.clone()),
        ("Canary", restored.uid().expect("uid")),
        "owner re-pointed"
    );
    for r in revisions
        .list(&ListParams::default())
        .await
        .expect("revisions")
        .items
    {
        assert_eq!(r.owner_references()[0].uid, restored.uid().expect("uid"));
    }

    // 6. Exported again: the same bundle. What must differ (uids, resource
    //    versions, creation times, cluster IPs) is not in a bundle; only
    //    exportedAt, which the checksum leaves out, may.
    let b2 = file("b2.yaml");
    let (code, out, err) = weir(&env, &["export", "-n", &ns, "-o", &path(&b2)]).await;
    assert_eq!(code, 0, "{out}{err}");
    let bundle2 = read_bundle(&b2);
    let mut diffs = Vec::new();
    differences("", &bundle1, &bundle2, &mut diffs);
    diffs.retain(|d| d != ".exportedAt");
    assert!(diffs.is_empty(), "the bundles differ at {diffs:?}");
    assert_eq!(bundle1["checksum"], bundle2["checksum"]);

    // 7. Restored again: nothing is written.
    settled(&client, &ns).await;
    let before = versions(&client, &ns).await;
    let (code, out, err) = weir(&env, &["restore", "-f", &path(&b1)]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 created, 0 changed, 9 unchanged"), "{out}");
    assert_eq!(
        versions(&client, &ns).await,
        before,
        "a second restore wrote"
    );

    // 8. A tampered bundle is refused, naming both sums.
    let tampered = file("tampered.yaml");
    std::fs::write(
        &tampered,
        text1.replacen("image: sim:v3", "image: sim:evil", 1),
    )
    .expect("write");
    let (code, out, err) = weir(&env, &["restore", "-f", &path(&tampered)]).await;
    assert_eq!(code, 1, "{out}{err}");
    let claimed = bundle1["checksum"].as_str().expect("checksum");
    assert!(
        err.contains("checksum mismatch")
            && err.contains(&format!(
                "the bundle says {claimed} but its content hashes to sha256:"
            )),
        "{err}"
    );
    assert_eq!(
        versions(&client, &ns).await,
        before,
        "a refused bundle wrote"
    );

    // 9. A new controller continues the run from step 2: promote ends the
    //    pause, 50% follows, then the last pause, then promotion.
    let trail = stack::Trail::start(&client, &ns, "chat");
    // The watch's first look is the restored pause, before anything moves.
    trail.until(Phase::Paused).await;
    let _second = controller(&env, "after-restore");
    let (code, out, err) = weir(&env, &["promote", "chat", "-n", &ns]).await;
    assert_eq!(code, 0, "{out}{err}");
    let next = until("the last pause (step 4)", PATIENCE, || async {
        let s = canaries.get("chat").await.ok()?.status?;
        (s.phase == Phase::Paused && s.current_step == 3).then_some(s)
    })
    .await;
    assert_eq!(next.canary_weight, 50.0);
    let (code, out, err) = weir(&env, &["promote", "chat", "-n", &ns]).await;
    assert_eq!(code, 0, "{out}{err}");
    wait_phase(&client, &ns, "chat", Phase::Succeeded).await;
    let stable = deployments
        .get("chat-frontend-stable")
        .await
        .expect("stable copy");
    assert_eq!(image_of(&stable).as_deref(), Some("sim:v3"));
    let steps: Vec<(Phase, u32)> = trail
        .until(Phase::Succeeded)
        .await
        .iter()
        .map(|(p, s, _)| (*p, *s))
        .collect();
    let run: Vec<u32> = steps
        .iter()
        .filter(|(p, _)| matches!(p, Phase::Progressing | Phase::Paused))
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(run.first(), Some(&1), "resumed at step 2: {steps:?}");
    assert!(
        run.windows(2).all(|w| w[0] <= w[1]),
        "a step repeated: {steps:?}"
    );
    // The controller records a transition's Events after writing its
    // status: Succeeded can be read before Promoted is listed.
    let reasons: Vec<String> =
        stack::event_recorded_by(&client, &ns, "chat", "after-restore", "Promoted")
            .await
            .into_iter()
            .filter(|(who, _)| who == "after-restore")
            .map(|(_, r)| r)
            .collect();
    assert!(
        !reasons.iter().any(|r| r == "RolloutStarted"),
        "the run restarted: {reasons:?}"
    );
    assert!(reasons.iter().any(|r| r == "Promoted"), "{reasons:?}");
    // The promoted template's ControllerRevision is applied after the
    // status write that says Succeeded (status first, then the objects it
    // implies), so wait for the third one to be listed.
    let want = [
        (1, Some("sim:v1".to_string())),
        (2, Some("sim:v2".to_string())),
        (3, Some("sim:v3".to_string())),
    ];
    let history = until("the third revision recorded", PATIENCE, || async {
        let listed = revisions.list(&ListParams::default()).await.ok()?.items;
        let history = stack::numbered(&listed);
        (history.len() >= want.len()).then_some(history)
    })
    .await;
    assert_eq!(history, want, "the restored history goes on");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_leaves_a_canary_being_restored_alone_until_the_restore_is_done() {
    let env = TestEnv::on_cluster("restore-guard").await;
    let ns = env.namespace.clone();
    let client = env.client.clone();
    let deployments = api::<Deployment>(&client, &ns);
    deployments
        .create(&PostParams::default(), &stack::target("sim:v1", 2))
        .await
        .expect("target");
    let canaries = api::<Canary>(&client, &ns);
    let steps = json!({"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}});
    // As `weir restore` creates it: with the guard, before its status.
    let mut guarded = stack::canary_spec(steps.clone());
    guarded.metadata.name = Some("restoring".into());
    guarded.annotations_mut().insert(
        weir_crds::annotations::RESTORING.into(),
        "2025-06-01T12:00:00Z".into(),
    );
    canaries
        .create(&PostParams::default(), &guarded)
        .await
        .expect("guarded canary");
    let _controller = controller(&env, "guard-test");
    // A Canary created after it, on the same target, is taken up: by
    // then the controller has looked at the guarded one too (its
    // finalizer is there) and left it without status.
    let mut later = stack::canary_spec(steps);
    later.metadata.name = Some("later".into());
    canaries
        .create(&PostParams::default(), &later)
        .await
        .expect("later canary");
    wait_phase(&client, &ns, "later", Phase::Idle).await;
    let held = until("the guarded Canary's finalizer", PATIENCE, || async {
        let c = canaries.get("restoring").await.ok()?;
        (!c.finalizers().is_empty()).then_some(c)
    })
    .await;
    assert_eq!(
        held.status, None,
        "the controller acted on a Canary being restored"
    );
    // The guard removed: the controller takes it up at once.
    let done = json!({"metadata": {"annotations": {weir_crds::annotations::RESTORING: null}}});
    canaries
        .patch("restoring", &PatchParams::default(), &Patch::Merge(&done))
        .await
        .expect("guard removed");
    wait_phase(&client, &ns, "restoring", Phase::Idle).await;
}
