//! The Canary every Kubernetes test starts from, as a builder chain (the
//! shape of kube-rs controller-rs `fixtures.rs`): the defaults are a
//! valid Kubernetes-mode Canary, and each test says only what it changes.
//!
//! ```no_run
//! use serde_json::json;
//! let chat = weir_envtest::canary("chat")
//!     .steps(json!([{"setWeight": 50}, {"pause": {}}]))
//!     .spec(json!({"progressDeadlineSeconds": 120}))
//!     .build();
//! ```
//!
//! Built as JSON, so that a test of the API server's validation can send
//! what the Rust types could not hold ([`CanaryBuilder::json`]); `null` in
//! a [`CanaryBuilder::spec`] patch removes a field.

use serde_json::{Value, json};
use weir_crds::Canary;

/// A Canary `name` with the defaults: target Deployment `chat-frontend`,
/// Service port 8000, steps `setWeight 20` then an analysis, and one
/// metric (time to first token, at most 10% slower).
pub fn canary(name: &str) -> CanaryBuilder {
    CanaryBuilder(json!({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "targetRef": {"name": "chat-frontend"},
            "service": {"port": 8000},
            "strategy": {"canary": {"steps": [{"setWeight": 20}, {"analysis": {}}]}},
            "analysis": {"metrics": [{"name": "ttft", "kind": "latency", "maxIncrease": "10%"}]}
        }
    }))
}

/// A Canary being built: see [`canary`].
#[derive(Debug, Clone)]
pub struct CanaryBuilder(Value);

impl CanaryBuilder {
    /// The canary strategy's steps (`spec.strategy.canary.steps`).
    pub fn steps(self, steps: Value) -> Self {
        self.strategy(json!({"canary": {"steps": steps}}))
    }

    /// The whole strategy (`spec.strategy`), e.g. `{"blueGreen": {...}}`.
    pub fn strategy(mut self, strategy: Value) -> Self {
        self.0["spec"]["strategy"] = strategy;
        self
    }

    /// The analysis's metrics (`spec.analysis.metrics`).
    pub fn metrics(mut self, metrics: Value) -> Self {
        self.0["spec"]["analysis"]["metrics"] = metrics;
        self
    }

    /// Judged fast, for rollouts of `weir sim` versions
    /// (`weir_test_kit::sim`): 1 s intervals and warmup, 100 samples, TTFT
    /// p50 within 25% and errors within 5 points, a 120 s progress
    /// deadline.
    pub fn judged_fast(self) -> Self {
        self.spec(json!({
            "analysis": {
                "interval": "1s",
                "warmup": "1s",
                "minSamples": 100,
                "metrics": [
                    {"name": "ttft", "kind": "latency", "quantiles": [0.5], "maxIncrease": "25%"},
                    {"name": "errors", "kind": "errorRate", "maxIncrease": "5pp"}
                ]
            },
            "progressDeadlineSeconds": 120
        }))
    }

    /// Merges `patch` into `spec` (a JSON merge patch: objects merge,
    /// anything else replaces, `null` removes).
    pub fn spec(mut self, patch: Value) -> Self {
        merge(&mut self.0["spec"], patch);
        self
    }

    /// The Canary as JSON, as a user would send it.
    pub fn json(self) -> Value {
        self.0
    }

    /// The Canary; panics when the JSON is not one (a test's mistake).
    pub fn build(self) -> Canary {
        serde_json::from_value(self.0).unwrap_or_else(|e| panic!("not a valid Canary: {e}"))
    }
}

/// RFC 7386 merge of `patch` into `target`.
fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in fields {
                if v.is_null() {
                    if let Some(t) = target.as_object_mut() {
                        t.remove(&k);
                    }
                } else {
                    merge(&mut target[k.as_str()], v);
                }
            }
        }
        other => *target = other,
    }
}

/// The target Deployment every Canary here names: `chat-frontend`,
/// selecting `app: chat`, with `replicas` pods whose spec is `pod_spec`.
pub fn target(replicas: i32, pod_spec: Value) -> k8s_openapi::api::apps::v1::Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "chat-frontend"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "chat"}},
            "template": {
                "metadata": {"labels": {"app": "chat"}},
                "spec": pod_spec
            }
        }
    }))
    .expect("a valid Deployment")
}

/// The port of [`sim_container`], named `http` (the Canary's Services,
/// port 8000, target it by name).
pub const SIM_PORT: u16 = 8000;

/// The container `vllm` that the node agent runs as `weir sim ARGS`
/// (`tests/nodeagent`): the image only names the version; it listens on
/// [`SIM_PORT`] and is ready when `/health` answers, probed every second.
pub fn sim_container(image: &str, args: &[&str]) -> Value {
    json!({
        "name": "vllm",
        "image": image,
        "args": args,
        "ports": [{"name": "http", "containerPort": SIM_PORT}],
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 1,
            "failureThreshold": 1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_a_valid_canary_and_each_call_changes_one_part() {
        let plain = canary("chat").build();
        assert_eq!(plain.metadata.name.as_deref(), Some("chat"));
        let built = canary("chat")
            .steps(json!([{"setWeight": 50}, {"pause": {}}]))
            .metrics(json!([]))
            .spec(json!({"progressDeadlineSeconds": 120, "service": null}))
            .json();
        assert_eq!(
            built["spec"]["strategy"],
            json!({"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}})
        );
        assert_eq!(built["spec"]["analysis"], json!({"metrics": []}));
        assert_eq!(built["spec"]["progressDeadlineSeconds"], 120);
        assert!(built["spec"].get("service").is_none(), "null removes");
        assert_eq!(built["spec"]["targetRef"], json!({"name": "chat-frontend"}));
    }
}
