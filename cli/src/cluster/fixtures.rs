//! Canaries for the unit tests of the cluster commands, from the files the
//! process tests use too (`cli/tests/fixtures/`): one spec with four steps
//! and a status in the middle of its analysis step.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_crds::Canary;

/// 1_700_000_000 + `second`, as Kubernetes writes times. The analysis in
/// [`progressing`] is at `at(100)`.
pub fn at(second: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + second).expect("valid"))
}

/// Canary `llm/chat` with four steps and `status`.
pub fn canary(status: serde_json::Value) -> Canary {
    let mut c: Canary =
        serde_json::from_str(include_str!("../../tests/fixtures/canary.json")).expect("canary");
    c.metadata.namespace = Some("llm".into());
    c.metadata.uid = Some("u-1".into());
    c.status = Some(serde_json::from_value(status).expect("status"));
    c
}

/// Step 2 (analysis) at 20%, a Continue verdict, one promotion in history.
pub fn progressing() -> serde_json::Value {
    serde_json::from_str(include_str!("../../tests/fixtures/progressing.json")).expect("status")
}
