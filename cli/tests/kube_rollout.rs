//! The controller on a real control plane: each version's pods rolled out
//! by the Deployment controller and run by the node agent (see
//! tests/stack).

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use tokio::sync::watch;
use weir_controller::kube::run::{Handle, Settings};
use weir_crds::{Canary, Phase};
use weir_envtest::TestEnv;

mod common;
mod stack;

use stack::{
    PATIENCE, canary, controller, create_target, events, image_of, set_image, target, wait_phase,
    weir,
};
use weir_test_kit::poll::until;
use weir_test_kit::sim::FAST;

/// Seconds before a pod of a slow-starting version can be ready.
const SLOW_START: u32 = 10;

/// A namespace on the control plane with the target on v1 (`replicas`
/// ready pods) and a Canary `chat` with `strategy`; no controller yet.
struct Scene {
    env: TestEnv,
    deployments: Api<Deployment>,
    canaries: Api<Canary>,
}

impl Scene {
    async fn new(name: &str, replicas: i32, strategy: serde_json::Value) -> Scene {
        let env = TestEnv::on_cluster(name).await;
        let ns = env.namespace.clone();
        let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &ns);
        let canaries: Api<Canary> = Api::namespaced(env.client.clone(), &ns);
        create_target(&deployments, &target("sim:v1", replicas)).await;
        canaries
            .create(&PostParams::default(), &stack::canary_spec(strategy))
            .await
            .expect("canary");
        Scene {
            env,
            deployments,
            canaries,
        }
    }

    /// Starts a controller, waits for adoption, releases v2 and waits for
    /// the run to pause (the strategy must hold an indefinite pause).
    async fn paused_on_v2(&self, identity: &str) -> (Handle, weir_crds::CanaryStatus) {
        let ns = self.env.namespace.as_str();
        let handle = controller(&self.env, identity);
        wait_phase(&self.env.client, ns, "chat", Phase::Idle).await;
        set_image(&self.deployments, "sim:v2").await;
        let paused = wait_phase(&self.env.client, ns, "chat", Phase::Paused).await;
        (handle, paused)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_without_analysis_promote_and_record_the_revision() {
    let scene = Scene::new(
        "kube-steps-promote",
        2,
        serde_json::json!({"canary": {"steps": [ {"setWeight": 50}, {"pause": {"duration": "1s"}} ]}}),
    )
    .await;
    let Scene {
        env,
        deployments,
        canaries: _,
        ..
    } = &scene;
    let ns = env.namespace.as_str();

    let (_lead, leading) = watch::channel(true);
    let settings = Settings {
        namespace: Some(ns.to_string()),
        identity: "test-controller".into(),
        ..Settings::default()
    };
    let controller = Handle::spawn(env.client.clone(), settings, leading);

    // Adoption: stable copy ready, then the target (the canary cohort)
    // scaled to zero.
    until("adoption", PATIENCE, || async {
        let c = canary(&env.client, ns, "chat").await;
        let s = c.status?;
        let target = deployments.get("chat-frontend").await.ok()?;
        (s.phase == Phase::Idle && target.spec?.replicas == Some(0)).then_some(())
    })
    .await;
    let stable = deployments
        .get("chat-frontend-stable")
        .await
        .expect("stable copy");
    assert_eq!(image_of(&stable).as_deref(), Some("sim:v1"));
    assert_eq!(stable.spec.and_then(|s| s.replicas), Some(2));

    set_image(deployments, "sim:v2").await;
    let done = wait_phase(&env.client, ns, "chat", Phase::Succeeded).await;
    let stable = deployments
        .get("chat-frontend-stable")
        .await
        .expect("stable copy");
    assert_eq!(
        image_of(&stable).as_deref(),
        Some("sim:v2"),
        "stable runs the promoted template"
    );
    let traffic = done.traffic.expect("traffic");
    assert_eq!(
        traffic
            .backends
            .iter()
            .map(|b| (b.cohort, b.weight))
            .collect::<Vec<_>>(),
        vec![
            (weir_crds::Cohort::Stable, 100.0),
            (weir_crds::Cohort::Canary, 0.0)
        ]
    );
    assert_eq!(traffic.backends[0].service.as_deref(), Some("chat-stable"));
    assert_eq!(traffic.backends[0].port, Some(8000));
    until("the canary scaled to zero", PATIENCE, || async {
        let t = deployments.get("chat-frontend").await.ok()?;
        (t.spec?.replicas == Some(0)).then_some(())
    })
    .await;
    let revisions: Api<ControllerRevision> = Api::namespaced(env.client.clone(), ns);
    let list = until("two ControllerRevisions", PATIENCE, || async {
        let l = revisions.list(&ListParams::default()).await.ok()?;
        (l.items.len() == 2).then_some(l)
    })
    .await;
    assert_eq!(
        stack::numbered(&list.items),
        vec![(1, Some("sim:v1".into())), (2, Some("sim:v2".into()))]
    );
    // Events follow the status they record: Succeeded is read first.
    let reasons: Vec<String> = stack::event_recorded(&env.client, ns, "chat", "Promoted")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    let expected = ["RolloutStarted", "WeightSet", "Promoting", "Promoted"];
    let mut at = 0;
    for r in &reasons {
        if at < expected.len() && r == expected[at] {
            at += 1;
        }
    }
    assert_eq!(at, expected.len(), "events in order: {reasons:?}");
    assert_eq!(
        reasons.iter().filter(|r| *r == "WeightSet").count(),
        1,
        "each step once: {reasons:?}"
    );
    drop(controller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_in_every_phase_resumes_without_repeating_or_skipping_a_step() {
    let scene = Scene::new(
        "kube-restart",
        4,
        serde_json::json!({"canary": {"steps": [ {"setWeight": 25}, {"pause": {"duration": "4s"}}, {"setWeight": 50}, {"pause": {}} ]}}),
    )
    .await;
    let Scene {
        env,
        deployments,
        canaries,
        ..
    } = &scene;
    let ns = env.namespace.as_str();
    let trail = stack::Trail::start(&env.client, ns, "chat");

    let first = controller(env, "first");
    wait_phase(&env.client, ns, "chat", Phase::Idle).await;
    // v2's pods are ready no sooner than 10 s after they start (their
    // readiness probe's initial delay): stable's rollout to v2 in step 3
    // takes at least that long.
    stack::set_version(deployments, "sim:v2", FAST, SLOW_START).await;

    // 1. Killed during a timed pause: the pause keeps the start time status
    // recorded. Checked on each restarted controller's first reconcile,
    // not on how long the pause took: a restart's speed does not decide it.
    let paused_at = until("the timed pause", PATIENCE, || async {
        let s = canary(&env.client, ns, "chat").await.status?;
        (s.phase == Phase::Progressing && s.current_step == 1).then_some(s.step_started_at)
    })
    .await
    .expect("step start")
    .0;
    let pause_ends = paused_at + jiff::SignedDuration::from_secs(4);
    let step_now = || async {
        canary(&env.client, ns, "chat")
            .await
            .status
            .map(|s| s.current_step)
    };
    first.kill();
    // Down 1.5 s, back before the pause ends: it is not cut short. (When
    // the first reconcile comes after the pause's end, there is nothing
    // left to check here.)
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let second = controller(env, "second");
    stack::reconciled(&second, ns, "chat").await;
    let (step, at) = (step_now().await, jiff::Timestamp::now());
    if at < pause_ends {
        assert_eq!(step, Some(1), "the pause was cut short across a restart");
    }
    // Down again until past the pause's end: a controller that timed the
    // pause from its own start would hold step 1 for another 4 s; this
    // one ends it on its first reconcile.
    second.kill();
    let past = pause_ends + jiff::SignedDuration::from_millis(500);
    if let Ok(left) = std::time::Duration::try_from(past.duration_since(jiff::Timestamp::now())) {
        tokio::time::sleep(left).await;
    }
    let second = controller(env, "second-again");
    stack::reconciled(&second, ns, "chat").await;
    let step = step_now().await;
    assert!(
        step.is_some_and(|s| s >= 2),
        "step {step:?} after the pause's end: the restart began the pause anew"
    );

    // 2. Killed while paused until promoted: it stays paused.
    let paused = wait_phase(&env.client, ns, "chat", Phase::Paused).await;
    assert_eq!(paused.current_step, 3);
    second.kill();
    let third = controller(env, "third");
    stack::reconciled(&third, ns, "chat").await;
    let still = canary(&env.client, ns, "chat")
        .await
        .status
        .expect("status");
    assert_eq!((still.phase, still.current_step), (Phase::Paused, 3));

    // 3. Killed while promoting, as soon as stable has v2's template: none
    // of its new pods can be ready for 10 s.
    let promote = serde_json::json!({"metadata": {"annotations": {"weir.dev/promote": "p1"}}});
    canaries
        .patch("chat", &PatchParams::default(), &Patch::Merge(&promote))
        .await
        .expect("promote");
    wait_phase(&env.client, ns, "chat", Phase::Promoting).await;
    until("the stable copy on v2", PATIENCE, || async {
        let d = deployments.get("chat-frontend-stable").await.ok()?;
        (image_of(&d).as_deref() == Some("sim:v2")).then_some(())
    })
    .await;
    third.kill();
    let fourth = controller(env, "fourth");
    stack::reconciled(&fourth, ns, "chat").await;
    assert_eq!(
        canary(&env.client, ns, "chat")
            .await
            .status
            .map(|s| s.phase),
        Some(Phase::Promoting),
        "stable has not rolled out yet"
    );
    wait_phase(&env.client, ns, "chat", Phase::Succeeded).await;

    // The whole run as a watch saw it (once the watch too has seen the
    // end): steps in order, none repeated or skipped, weights 0 → 25 → 50
    // → 100 (the proven canary carries everything while stable is
    // replaced) → 0 (stable on v2).
    let seen = trail.until(Phase::Succeeded).await;
    let run: Vec<_> = seen
        .iter()
        .skip_while(|(p, _, _)| *p != Phase::Progressing)
        .collect();
    let steps: Vec<u32> = run
        .iter()
        .filter(|(p, _, _)| matches!(p, Phase::Progressing | Phase::Paused))
        .map(|(_, s, _)| *s)
        .collect();
    assert!(
        steps.windows(2).all(|w| w[0] <= w[1]),
        "steps went back: {seen:?}"
    );
    for step in [1, 3] {
        assert!(steps.contains(&step), "step {step} never seen: {seen:?}");
    }
    // Weights over the whole trail, Idle included: when the canary's pods
    // are ready at once, the first Progressing status already carries 25
    // (Idle's 0 is the "before").
    let mut weights: Vec<f64> = seen.iter().map(|(_, _, w)| *w).collect();
    weights.dedup();
    assert_eq!(weights, vec![0.0, 25.0, 50.0, 100.0, 0.0], "{seen:?}");
    // Events are written after status, so a kill may lose one, but none
    // is ever written twice. The last (fourth, never killed) records
    // Promoted after the status read above. (WaitingForReplicas reports
    // progress, and says the same again when the pods come back to a
    // state it reported before: it is not a transition.)
    let all = stack::event_recorded(&env.client, ns, "chat", "Promoted").await;
    let mut notes: Vec<&(String, String)> = all
        .iter()
        .filter(|(reason, _)| reason != "WaitingForReplicas")
        .collect();
    notes.sort();
    let before = notes.len();
    notes.dedup();
    assert_eq!(before, notes.len(), "an event was repeated: {all:?}");
    drop(fourth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_controller_replicas_only_the_leader_acts_and_killing_it_hands_over() {
    use weir_controller::kube::leader::{LeaderElector, Timings};
    let scene = Scene::new(
        "kube-leader",
        2,
        serde_json::json!({"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}),
    )
    .await;
    let Scene {
        env,
        deployments,
        canaries,
        ..
    } = &scene;
    let ns = env.namespace.as_str();
    let timings = Timings {
        lease_duration: std::time::Duration::from_secs(3),
        renew_deadline: std::time::Duration::from_secs(2),
        retry_period: std::time::Duration::from_millis(300),
    };
    let replica = |identity: &str| {
        let elector = LeaderElector::new(
            env.client.clone(),
            ns,
            weir_crds::names::LEASE,
            identity,
            timings,
        )
        .expect("elector");
        let settings = Settings {
            namespace: Some(ns.to_string()),
            identity: identity.into(),
            ..Settings::default()
        };
        Handle::spawn_elected(env.client.clone(), settings, elector)
    };
    let a = replica("replica-a");
    let b = replica("replica-b");
    let leader_of = || {
        let (la, lb) = (a.metrics.render(), b.metrics.render());
        let leads = |t: &str| t.lines().any(|l| l == "weir_controller_leader 1");
        (leads(&la), leads(&lb))
    };
    let first = until("one leader", PATIENCE, || async {
        match leader_of() {
            (true, false) => Some("replica-a"),
            (false, true) => Some("replica-b"),
            _ => None,
        }
    })
    .await;
    wait_phase(&env.client, ns, "chat", Phase::Idle).await;
    set_image(deployments, "sim:v2").await;
    wait_phase(&env.client, ns, "chat", Phase::Paused).await;
    assert_ne!(leader_of(), (true, true), "never two leaders");
    // The leader's last Events until promoted are the pause's and the
    // run's one NotMeasured warning (these replicas read no proxies),
    // which may be listed after it: once both are, nothing more of the
    // leader's can come in after `before`.
    stack::event_recorded_by(&env.client, ns, "chat", first, "NotMeasured").await;
    let before = stack::event_recorded_by(&env.client, ns, "chat", first, "Paused").await;
    assert!(!before.is_empty());
    assert!(
        before.iter().all(|(who, _)| who == first),
        "only the leader acts: {before:?}"
    );
    // Kill the leader (no release): the other takes over once the Lease
    // expires, and finishes the run.
    let (survivor, survivor_name) = if first == "replica-a" {
        a.kill();
        (b, "replica-b")
    } else {
        b.kill();
        (a, "replica-a")
    };
    until("the survivor leads", PATIENCE, || async {
        survivor
            .metrics
            .render()
            .lines()
            .any(|l| l == "weir_controller_leader 1")
            .then_some(())
    })
    .await;
    let promote = serde_json::json!({"metadata": {"annotations": {"weir.dev/promote": "p1;full"}}});
    canaries
        .patch("chat", &PatchParams::default(), &Patch::Merge(&promote))
        .await
        .expect("promote");
    wait_phase(&env.client, ns, "chat", Phase::Succeeded).await;
    let after = stack::event_recorded_by(&env.client, ns, "chat", survivor_name, "Promoted").await;
    let new: Vec<_> = after[before.len()..].to_vec();
    assert!(
        !new.is_empty() && new.iter().all(|(who, _)| who == survivor_name),
        "after the handover only {survivor_name} acts: {new:?}"
    );
    drop(survivor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_promote_full_abort_and_undo_do_what_they_say() {
    let scene = Scene::new(
        "kube-cli",
        2,
        serde_json::json!({"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}),
    )
    .await;
    let Scene {
        env,
        deployments,
        canaries: _,
        ..
    } = &scene;
    let ns = env.namespace.as_str();
    let _controller = controller(env, "cli-test");
    wait_phase(&env.client, ns, "chat", Phase::Idle).await;
    let stable_image = || async {
        let d = deployments
            .get("chat-frontend-stable")
            .await
            .expect("stable");
        image_of(&d)
    };

    // weir promote --full: the paused run is promoted at once.
    set_image(deployments, "sim:v2").await;
    wait_phase(&env.client, ns, "chat", Phase::Paused).await;
    let (code, out, err) = weir(env, &["promote", "chat", "-n", ns, "--full", "--wait"]).await;
    assert_eq!(code, 0, "{out}{err}");
    wait_phase(&env.client, ns, "chat", Phase::Succeeded).await;
    assert_eq!(stable_image().await.as_deref(), Some("sim:v2"));

    // weir abort: traffic back on stable, the canary scaled down.
    set_image(deployments, "sim:v3").await;
    wait_phase(&env.client, ns, "chat", Phase::Paused).await;
    let (code, out, err) = weir(env, &["abort", "chat", "-n", ns, "--wait"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let aborted = wait_phase(&env.client, ns, "chat", Phase::Aborted).await;
    assert_eq!(aborted.canary_weight, 0.0);
    assert_eq!(
        aborted.abort.map(|a| a.reason).as_deref(),
        Some("AbortedByRequest")
    );
    until("the aborted canary scaled down", PATIENCE, || async {
        let t = deployments.get("chat-frontend").await.ok()?;
        (t.spec?.replicas == Some(0)).then_some(())
    })
    .await;
    assert_eq!(
        stable_image().await.as_deref(),
        Some("sim:v2"),
        "stable untouched"
    );

    // weir undo after an abort: the target gets stable's template back and
    // the aborted version is withdrawn.
    let (code, out, err) = weir(env, &["undo", "chat", "-n", ns]).await;
    assert_eq!(code, 0, "{out}{err}");
    let target = deployments.get("chat-frontend").await.expect("target");
    assert_eq!(image_of(&target).as_deref(), Some("sim:v2"));
    wait_phase(&env.client, ns, "chat", Phase::Idle).await;

    // weir undo --to-revision 1: v1 goes back through the steps, and once
    // promoted is the newest revision.
    let (code, out, err) = weir(env, &["undo", "chat", "-n", ns, "--to-revision", "1"]).await;
    assert_eq!(code, 0, "{out}{err}");
    wait_phase(&env.client, ns, "chat", Phase::Paused).await;
    let (code, out, err) = weir(env, &["promote", "chat", "-n", ns, "--full", "--wait"]).await;
    assert_eq!(code, 0, "{out}{err}");
    wait_phase(&env.client, ns, "chat", Phase::Succeeded).await;
    assert_eq!(stable_image().await.as_deref(), Some("sim:v1"));
    let (code, history, err) = weir(env, &["history", "chat", "-n", ns]).await;
    assert_eq!(code, 0, "{err}");
    let newest = history
        .lines()
        .rfind(|l| l.contains("sim:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        newest.contains("sim:v1"),
        "v1 is the newest revision now:\n{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_canary_mid_run_gives_the_target_the_stable_version_back() {
    let scene = Scene::new(
        "kube-revert",
        3,
        serde_json::json!({"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}),
    )
    .await;
    let (_controller, _) = scene.paused_on_v2("revert-test").await;
    let Scene {
        env,
        deployments,
        canaries,
        ..
    } = &scene;
    let ns = env.namespace.as_str();

    canaries
        .delete("chat", &kube::api::DeleteParams::default())
        .await
        .expect("delete");
    until("the Canary gone (finalizer removed)", PATIENCE, || async {
        canaries.get_opt("chat").await.ok()?.is_none().then_some(())
    })
    .await;
    let target = deployments.get("chat-frontend").await.expect("target");
    assert_eq!(
        image_of(&target).as_deref(),
        Some("sim:v1"),
        "stable's template back"
    );
    assert_eq!(
        target.spec.as_ref().and_then(|s| s.replicas),
        Some(3),
        "the user's replica count back"
    );
    let labels = target
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.labels)
        .unwrap_or_default();
    assert_eq!(
        labels.get("app").map(String::as_str),
        Some("chat"),
        "no -stable labels: {labels:?}"
    );
    assert!(
        !labels.contains_key(weir_crds::names::COHORT_LABEL),
        "{labels:?}"
    );
    let evs = events(&env.client, ns, "chat").await;
    assert!(
        evs.iter().any(|(r, _)| r == "RevertedOnDeletion"),
        "{evs:?}"
    );
}

/// Steps edited under a running canary: the fingerprint of the steps taken
/// survives the API server (a field missing from the CRD schema would be
/// pruned and no edit ever seen), and an edit before the current step
/// restarts the run under the new plan instead of skipping ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_steps_taken_mid_run_restarts_it_from_the_first_step() {
    let scene = Scene::new(
        "kube-steps-edit",
        2,
        serde_json::json!({"canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}]}}),
    )
    .await;
    let (_controller, paused) = scene.paused_on_v2("steps-edit-test").await;
    let Scene { env, canaries, .. } = &scene;
    let ns = env.namespace.as_str();
    assert_eq!((paused.current_step, paused.canary_weight), (1, 20.0));
    assert!(
        paused.steps_hash.is_some(),
        "status.stepsHash kept by the API server"
    );

    // The first step changes while the run waits at the second: without
    // the restart the run would go on to 50% with 30% never set.
    canaries
        .patch(
            "chat",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"strategy": {"canary": {
                "steps": [{"setWeight": 30}, {"pause": {}}, {"setWeight": 50}]
            }}}})),
        )
        .await
        .expect("edit the steps");
    let restarted = until(
        "the run restarted under the new steps",
        PATIENCE,
        || async {
            let s = canary(&env.client, ns, "chat").await.status?;
            (s.phase == Phase::Paused && s.canary_weight == 30.0).then_some(s)
        },
    )
    .await;
    assert_eq!(restarted.current_step, 1, "at the pause again");
    assert_ne!(restarted.steps_hash, paused.steps_hash);
    let evs = stack::event_recorded(&env.client, ns, "chat", "StepsChanged").await;
    assert_eq!(
        evs.iter().filter(|(r, _)| r == "StepsChanged").count(),
        1,
        "{evs:?}"
    );
    assert!(
        !evs.iter().any(|(r, _)| r == "Promoting"),
        "nothing skipped ahead: {evs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_controller_leads_serves_health_and_metrics_and_hands_the_lease_back_on_sigterm() {
    use k8s_openapi::api::coordination::v1::Lease;
    let env = TestEnv::on_cluster("kube-controller-process").await;
    let ns = env.namespace.clone();
    let metrics_addr = common::free_addr();
    let cmd = common::controller_process::controller(
        &env,
        metrics_addr,
        &[
            "--identity",
            "process-under-test",
            "--retry-period",
            "500ms",
            "--renew-deadline",
            "2s",
            "--lease-duration",
            "3s",
        ],
    );
    let mut proc = common::spawn_command("weir controller", cmd);
    proc.stderr
        .wait_for(common::STARTUP, |t| {
            t.contains("campaigning for Lease").then_some(())
        })
        .unwrap_or_else(|| panic!("no start line:\n{}", proc.stderr.text()));
    let get = |path: &'static str| {
        let url = format!("http://{metrics_addr}{path}");
        async move {
            let r = reqwest::get(url).await.ok()?;
            Some((r.status().as_u16(), r.text().await.ok()?))
        }
    };
    let metrics = until("the replica leads", PATIENCE, || async {
        let (code, text) = get("/metrics").await?;
        (code == 200 && text.lines().any(|l| l == "weir_controller_leader 1")).then_some(text)
    })
    .await;
    assert!(metrics.contains("# TYPE weir_reconcile_duration_seconds histogram"));
    assert_eq!(get("/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(get("/readyz").await.map(|r| r.0), Some(200));
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &ns);
    let lease = leases
        .get(weir_crds::names::LEASE)
        .await
        .expect("the Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("process-under-test")
    );
    // SIGTERM: stop, release the Lease, exit 0.
    proc.signal(nix::sys::signal::Signal::SIGTERM);
    let status = proc
        .wait_exit(std::time::Duration::from_secs(20))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{}", proc.stderr.text());
    let lease = leases
        .get(weir_crds::names::LEASE)
        .await
        .expect("the Lease");
    assert!(
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .is_none_or(|h| h.is_empty()),
        "the Lease is released for a successor"
    );
}

#[tokio::test]
async fn weir_controller_gives_up_on_an_unreachable_api_server_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("weir-unreachable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'https://{closed}', insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{token: x}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
    .expect("kubeconfig");
    let out = tokio::task::spawn_blocking(move || {
        common::command(&["controller", "--api-timeout", "2s", "--no-leader-election"])
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .expect("runs")
    })
    .await
    .expect("joins");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the Kubernetes API") && err.contains(&closed.to_string()),
        "{err}"
    );
}
