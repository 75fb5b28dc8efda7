//! Canaries for the unit tests of the cluster commands: one spec with four
//! steps and a status in the middle of its analysis step.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_crds::Canary;

/// 1_700_000_000 + `second`, as Kubernetes writes times.
pub fn at(second: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + second).expect("valid"))
}

/// Canary `llm/chat` with four steps and `status`.
pub fn canary(status: serde_json::Value) -> Canary {
    let mut c: Canary = serde_json::from_value(serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": "chat", "namespace": "llm", "uid": "u-1"},
        "spec": {
            "targetRef": {"name": "chat-frontend"},
            "service": {"port": 8000},
            "strategy": {"canary": {"steps": [
                {"setWeight": 20},
                {"analysis": {"minDuration": "1m", "maxDuration": "10m"}},
                {"pause": {}},
                {"setWeight": 50}
            ]}},
            "analysis": {"metrics": [{"name": "ttft", "kind": "latency", "maxIncrease": "10%"}]}
        }
    }))
    .expect("canary");
    c.status = Some(serde_json::from_value(status).expect("status"));
    c
}

/// Step 2 (analysis) at 20%, a Continue verdict, one promotion in history.
pub fn progressing() -> serde_json::Value {
    serde_json::json!({
        "phase": "Progressing",
        "message": "step 2/4: analysis, 812/1000 samples",
        "currentStep": 1,
        "canaryWeight": 20.0,
        "stableRevision": "5d8f9c0a11",
        "canaryRevision": "7c1a02bb33",
        "replicas": {"stable": 4, "canary": 1},
        "traffic": {"generation": 12, "route": {"pathPrefix": "/v1"}, "backends": [
            {"cohort": "stable", "service": "chat-stable", "port": 8000, "weight": 80.0, "revision": "5d8f9c0a11"},
            {"cohort": "canary", "service": "chat-canary", "port": 8000, "weight": 20.0, "revision": "7c1a02bb33"}
        ]},
        "lastAnalysis": {
            "verdict": "Continue",
            "at": at(100).0,
            "rule": "continue: ttft.p95 undecided",
            "metrics": [{
                "name": "ttft.p95", "finding": "undecided",
                "summary": "ttft.p95 +4.1% [−1.2%, +9.8%] vs margin +10%",
                "estimate": 0.041, "low": -0.012, "high": 0.098, "margin": 0.1,
                "stableN": 3130, "canaryN": 812
            }]
        },
        "history": [{"event": "Promoted", "revision": "5d8f9c0a11", "reason": "all steps passed", "at": at(0).0}]
    })
}

