//! The whole of Kubernetes mode on a real control plane: the controller
//! and two proxies in this process, each version's pods run by the node
//! agent with their own IPs, `weir load` streaming chat completions through
//! the proxies to the pod IPs the EndpointSlice controller lists. The
//! verdicts come from real streams measured by the real proxies and judged
//! by the production statistics (see tests/stack for the one stand-in).

use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{Api, ListParams};
use weir_crds::{Cohort, Phase};

mod common;
mod stack;

use stack::{PATIENCE, Stack, event_recorded, image_of, wait_phase};
use weir_test_kit::poll::until;
use weir_test_kit::sim::{FAST, SLOW};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_revision_goes_through_every_step_and_is_promoted() {
    let stack = Stack::new(
        "fullstack-promote",
        serde_json::json!({"canary": {"steps": [
            {"setWeight": 50},
            {"analysis": {"minDuration": "3s", "maxDuration": "60s"}}
        ]}}),
        FAST,
    )
    .await;
    let ns = stack.ns().to_string();
    stack.every_proxy_serves(0.0).await;
    let _load = stack.load(30, 90);
    stack.release("sim:v2").await;
    let done = wait_phase(&stack.env.client, &ns, "chat", Phase::Succeeded).await;
    let analysis = done
        .history
        .iter()
        .find(|h| h.event == weir_crds::HistoryEvent::Promoted);
    assert!(analysis.is_some(), "{done:#?}");
    // The verdict was taken on real streams: both cohorts measured.
    let evs = event_recorded(&stack.env.client, &ns, "chat", "AnalysisPassed").await;
    let passed = evs
        .iter()
        .find(|(r, _)| r == "AnalysisPassed")
        .unwrap_or_else(|| panic!("no AnalysisPassed event: {evs:?}"));
    assert!(passed.1.contains("ttft"), "{passed:?}");
    // The notification carries the deciding effects, every one within.
    let bodies = stack.notified("promoted").await;
    let passed = bodies
        .iter()
        .find(|b| b["event"] == "analysisPassed")
        .unwrap_or_else(|| panic!("no analysisPassed notification: {bodies:#?}"));
    let effects = passed["effects"].as_array().expect("effects");
    assert!(
        !effects.is_empty() && effects.iter().all(|e| e["finding"] == "within"),
        "{passed:#}"
    );

    let stable = stack
        .deployments()
        .get("chat-frontend-stable")
        .await
        .expect("stable");
    assert_eq!(
        image_of(&stable).as_deref(),
        Some("sim:v2"),
        "stable template updated"
    );
    let revisions: Api<ControllerRevision> = Api::namespaced(stack.env.client.clone(), &ns);
    let recorded = until("the promoted revision recorded", PATIENCE, || async {
        let l = revisions.list(&ListParams::default()).await.ok()?;
        l.items.iter().find(|r| r.revision == 2).cloned()
    })
    .await;
    let template = weir_controller::kube::builders::template_of(&recorded).expect("template");
    assert_eq!(
        template
            .spec
            .and_then(|s| s.containers[0].image.clone())
            .as_deref(),
        Some("sim:v2")
    );
    until("the canary scaled to zero", PATIENCE, || async {
        let t = stack.deployments().get("chat-frontend").await.ok()?;
        (t.spec?.replicas == Some(0)).then_some(())
    })
    .await;
    let traffic = done.traffic.expect("traffic");
    let stable_backend = traffic
        .backends
        .iter()
        .find(|b| b.cohort == Cohort::Stable)
        .expect("stable");
    assert_eq!(
        (stable_backend.weight, stable_backend.revision.as_deref()),
        (100.0, done.stable_revision.as_deref())
    );
    stack.every_proxy_serves(0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_canary_is_aborted_during_analysis_and_every_proxy_goes_back_to_stable() {
    let stack = Stack::new(
        "fullstack-abort",
        serde_json::json!({"canary": {"steps": [
            {"setWeight": 50},
            {"analysis": {"minDuration": "3s", "maxDuration": "60s"}}
        ]}}),
        SLOW,
    )
    .await;
    let ns = stack.ns().to_string();
    let _load = stack.load(30, 90);
    stack.release("sim:v2").await;
    stack.every_proxy_serves(50.0).await;
    let aborted = wait_phase(&stack.env.client, &ns, "chat", Phase::Aborted).await;
    let abort = aborted.abort.expect("abort recorded");
    assert_eq!(abort.reason, "AnalysisFailed");
    assert!(
        abort.message.contains("ttft"),
        "names the metric: {}",
        abort.message
    );
    assert!(
        abort.message.contains('%'),
        "with its numbers: {}",
        abort.message
    );
    assert!(aborted.message.contains("ttft"), "{}", aborted.message);
    // Traffic back on stable in every proxy, then the canary scaled down.
    stack.every_proxy_serves(0.0).await;
    until("the canary scaled to zero", PATIENCE, || async {
        let t = stack.deployments().get("chat-frontend").await.ok()?;
        (t.spec?.replicas == Some(0)).then_some(())
    })
    .await;
    let evs = event_recorded(&stack.env.client, &ns, "chat", "AnalysisFailed").await;
    let failed = evs
        .iter()
        .find(|(r, _)| r == "AnalysisFailed")
        .unwrap_or_else(|| panic!("no AnalysisFailed event: {evs:?}"));
    assert!(
        failed.1.contains("ttft") && failed.1.contains("margin"),
        "{failed:?}"
    );
    // Notified: the failure with the effect that decided it, then the abort.
    let bodies = stack.notified("aborted").await;
    let failed = bodies
        .iter()
        .find(|b| b["event"] == "analysisFailed")
        .unwrap_or_else(|| panic!("no analysisFailed notification: {bodies:#?}"));
    let effects = failed["effects"].as_array().expect("effects");
    assert!(
        effects.iter().any(|e| e["finding"] == "exceeds"
            && e["name"].as_str().is_some_and(|n| n.starts_with("ttft"))),
        "{failed:#}"
    );
    let aborted = bodies
        .iter()
        .find(|b| b["event"] == "aborted")
        .expect("aborted");
    assert_eq!(aborted["abortReason"], "AnalysisFailed");
    let stable = stack
        .deployments()
        .get("chat-frontend-stable")
        .await
        .expect("stable");
    assert_eq!(
        image_of(&stable).as_deref(),
        Some("sim:v1"),
        "stable untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_previews_cuts_over_and_rolls_back_when_the_new_side_turns_bad() {
    let stack = Stack::new(
        "fullstack-bluegreen",
        serde_json::json!({"blueGreen": {
            "previewReplicas": 1,
            "autoPromote": true,
            "scaleDownDelay": "90s",
            "prePromotionAnalysis": {"minDuration": "3s", "maxDuration": "60s"},
            "postPromotionAnalysis": {"minDuration": "3s", "maxDuration": "60s"}
        }}),
        FAST,
    )
    .await;
    let ns = stack.ns().to_string();
    // Live traffic through both proxies; preview traffic, carrying the
    // override header, through the first.
    let _live = stack.load(30, 120);
    let _preview = stack::load(
        &stack.proxies[0].url(),
        30,
        120,
        &["--header", "x-weir-cohort: canary"],
    );
    stack.release("sim:v2").await;

    // The preview: live traffic stays on stable, the header reaches it.
    until("the preview", PATIENCE, || async {
        let s = stack::canary(&stack.env.client, &ns, "chat").await.status?;
        let t = s.traffic?;
        (t.override_header && s.canary_revision.is_some() && s.canary_weight == 0.0).then_some(())
    })
    .await;
    stack.every_proxy_serves(0.0).await;
    for p in &stack.proxies {
        let routes = p.routes().await.expect("routes");
        // Per route: this Canary's preview only.
        assert_eq!(
            routes["table"]["routes"][0]["overrideHeader"], true,
            "{routes}"
        );
    }

    // Pre-promotion analysis passes on the preview's traffic, then one
    // cutover moves everything.
    stack.every_proxy_serves(100.0).await;
    // The proxies follow the status; its Event is recorded after it.
    let evs = event_recorded(&stack.env.client, &ns, "chat", "CutOver").await;
    assert!(
        evs.iter().any(|(r, _)| r == "CutOver"),
        "cut over after the preview passed: {evs:?}"
    );
    // The new side turns bad right after the cutover: its running pods
    // answer 2.5 times slower to first token (as SLOW does).
    stack::slow_down(&stack.env.client, &ns, "chat-canary", 2.5).await;

    let rolled_back = wait_phase(&stack.env.client, &ns, "chat", Phase::Aborted).await;
    assert_eq!(
        rolled_back.history.last().map(|h| h.event),
        Some(weir_crds::HistoryEvent::RolledBack),
        "{rolled_back:#?}"
    );
    let abort = rolled_back.abort.expect("why");
    assert_eq!(abort.reason, "RolledBack");
    // Named for what turned bad: time to first token, against stable's
    // evidence from before the cutover.
    assert!(
        abort.message.starts_with("post-promotion analysis:") && abort.message.contains("ttft"),
        "{}",
        abort.message
    );
    stack.every_proxy_serves(0.0).await;
    let stable = stack
        .deployments()
        .get("chat-frontend-stable")
        .await
        .expect("stable");
    assert_eq!(
        image_of(&stable).as_deref(),
        Some("sim:v1"),
        "the old side kept serving"
    );
    let evs = event_recorded(&stack.env.client, &ns, "chat", "RolledBack").await;
    assert!(evs.iter().any(|(r, _)| r == "RolledBack"), "{evs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_during_analysis_resumes_the_same_window() {
    let mut stack = Stack::new(
        "fullstack-restart",
        serde_json::json!({"canary": {"steps": [
            {"setWeight": 50},
            {"analysis": {"minDuration": "8s", "maxDuration": "60s"}}
        ]}}),
        FAST,
    )
    .await;
    let ns = stack.ns().to_string();
    let trail = stack::Trail::start(&stack.env.client, &ns, "chat");
    let _load = stack.load(30, 90);
    stack.release("sim:v2").await;
    // Killed once the analysis has taken a verdict (not yet a promotion:
    // minDuration is 8 s).
    let window = until("a verdict in the analysis step", PATIENCE, || async {
        let s = stack::canary(&stack.env.client, &ns, "chat").await.status?;
        (s.current_step == 1 && s.last_analysis.is_some()).then_some(s.window?.id)
    })
    .await;
    if let Some(c) = stack.controller.take() {
        c.kill();
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    stack.start_controller("second");
    let s = stack::canary(&stack.env.client, &ns, "chat")
        .await
        .status
        .expect("status");
    assert_eq!(
        (s.current_step, s.window.map(|w| w.id)),
        (1, Some(window)),
        "the same step and window after the restart"
    );
    wait_phase(&stack.env.client, &ns, "chat", Phase::Succeeded).await;
    let seen = trail.seen();
    let steps: Vec<u32> = seen
        .iter()
        .filter(|(p, _, _)| *p == Phase::Progressing)
        .map(|(_, s, _)| *s)
        .collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    let evs = event_recorded(&stack.env.client, &ns, "chat", "Promoted").await;
    for reason in ["WeightSet", "AnalysisPassed", "Promoted"] {
        assert!(
            evs.iter().filter(|(r, _)| r == reason).count() <= 1,
            "{reason} repeated: {evs:?}"
        );
    }
    assert!(evs.iter().any(|(r, _)| r == "AnalysisPassed"), "{evs:?}");
}
