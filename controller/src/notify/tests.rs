//! Plans into notifications, and the bodies.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_crds::{
    AbortStatus, AnalysisStatus, Canary, CanaryStatus, EffectStatus, Phase, VerdictStatus,
};

use super::config::Format;
use super::payload::body;
use super::*;
use crate::engine::{Action, Outcome, Plan};

fn canary() -> Canary {
    let mut c: Canary = serde_json::from_value(serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": "chat", "namespace": "llm", "uid": "uid-1"},
        "spec": {
            "targetRef": {"name": "chat-frontend"},
            "service": {"port": 8000},
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"analysis": {}}]}},
            "analysis": {"metrics": [{"name": "ttft", "kind": "latency", "maxIncrease": "10%"}]},
            "notify": ["llm-team"],
        },
    }))
    .expect("a Canary");
    c.status = None;
    c
}

fn time(s: &str) -> Time {
    Time(s.parse().expect("a timestamp"))
}

fn status(phase: Phase, step: u32) -> CanaryStatus {
    CanaryStatus {
        phase,
        current_step: step,
        canary_weight: 50.0,
        stable_revision: Some("rev-a".into()),
        canary_revision: Some("rev-b".into()),
        step_started_at: Some(time("2026-12-04T10:00:00Z")),
        last_analysis: Some(AnalysisStatus {
            verdict: VerdictStatus::Abort,
            at: time("2026-12-04T10:05:00Z"),
            rule: "abort".into(),
            metrics: vec![EffectStatus {
                name: "ttft.p95".into(),
                finding: "exceeds".into(),
                summary: "ttft.p95 +200.9% [+116.3%, +288.9%] vs margin +10.0%".into(),
                estimate: Some(2.009),
                low: Some(1.163),
                high: Some(2.889),
                margin: Some(0.1),
                stable_n: 900,
                canary_n: 880,
            }],
        }),
        ..CanaryStatus::default()
    }
}

fn event(reason: &'static str, message: &str) -> Action {
    Action::Event {
        warning: false,
        reason,
        message: message.into(),
    }
}

fn plan(status: CanaryStatus, actions: Vec<Action>) -> Plan {
    Plan {
        actions,
        status,
        requeue_after: None,
        decision: None,
    }
}

#[test]
fn an_analysis_abort_notifies_the_failure_with_its_effects_and_the_abort() {
    let mut s = status(Phase::Aborted, 1);
    s.abort = Some(AbortStatus {
        reason: reasons::ANALYSIS_FAILED.into(),
        message: "regression beyond the margin: ttft.p95".into(),
        at: time("2026-12-04T10:05:00Z"),
    });
    let p = plan(
        s,
        vec![
            event(
                reasons::ANALYSIS_FAILED,
                "regression beyond the margin: ttft.p95",
            ),
            Action::Finish(Outcome::Aborted),
        ],
    );
    let out = from_plan(&canary(), &p, "2026-12-04T10:05:00Z");
    let kinds: Vec<_> = out.iter().map(|n| n.event).collect();
    assert_eq!(kinds, [EventKind::AnalysisFailed, EventKind::Aborted]);
    assert_eq!(out[0].effects.len(), 1);
    assert_eq!(out[0].effects[0].finding, "exceeds");
    assert_eq!(out[1].abort_reason.as_deref(), Some("AnalysisFailed"));
    assert!(out[1].effects.is_empty());
    assert_ne!(out[0].id, out[1].id, "one key per notification");
    assert!(out.iter().all(|n| n.severity == "warning"));
}

#[test]
fn keys_are_stable_for_a_transition_and_differ_between_transitions() {
    let p = plan(
        status(Phase::Progressing, 0),
        vec![event(reasons::WEIGHT_SET, "canary weight 50%")],
    );
    let a = from_plan(&canary(), &p, "2026-12-04T10:00:00Z");
    // The same transition seen again later (another replica, a retry)
    // keeps its key: the time of sending is not part of it.
    let b = from_plan(&canary(), &p, "2026-12-04T11:00:00Z");
    assert_eq!(a[0].id, b[0].id);
    let mut next = status(Phase::Progressing, 1);
    next.step_started_at = Some(time("2026-12-04T10:02:00Z"));
    let c = from_plan(
        &canary(),
        &plan(next, vec![event(reasons::WEIGHT_SET, "canary weight 50%")]),
        "t",
    );
    assert_ne!(a[0].id, c[0].id, "another step");
    let mut other = canary();
    other.metadata.uid = Some("uid-2".into());
    assert_ne!(a[0].id, from_plan(&other, &p, "t")[0].id, "another Canary");
}

#[test]
fn bookkeeping_reasons_do_not_notify() {
    let p = plan(
        status(Phase::Progressing, 0),
        vec![
            event(reasons::RESUMED, "resumed"),
            event(reasons::STEPS_CHANGED, "steps changed"),
            event(reasons::SUPERSEDED, "superseded"),
        ],
    );
    assert!(from_plan(&canary(), &p, "t").is_empty());
    for kind in EventKind::ALL {
        let name = serde_json::to_value(kind).expect("json");
        assert_eq!(name, kind.as_str(), "wire name of {kind:?}");
    }
}

#[test]
fn the_json_document_is_versioned_and_slack_gets_text_and_blocks() {
    let mut s = status(Phase::Succeeded, 1);
    s.last_analysis = None;
    let p = plan(s, vec![event(reasons::PROMOTED, "revision rev-b promoted")]);
    let n = &from_plan(&canary(), &p, "2026-12-04T10:09:00Z")[0];
    let json = body(n, Format::Json);
    assert_eq!(json["apiVersion"], API_VERSION);
    assert_eq!(json["event"], "promoted");
    assert_eq!(json["canary"]["name"], "chat");
    assert_eq!(json["canaryRevision"], "rev-b");
    assert_eq!(json["id"], n.id.as_str());
    assert!(json.get("effects").is_none(), "no effects on a promotion");
    let slack = body(n, Format::Slack);
    let text = slack["text"].as_str().expect("text");
    assert!(
        text.contains("llm/chat") && text.contains("promoted"),
        "{text}"
    );
    assert!(
        slack["blocks"].as_array().is_some_and(|b| b.len() == 3),
        "{slack}"
    );
}
