//! Reading a Canary file for `weir run`: the same YAML as the Kubernetes
//! resource, with `spec.backends` instead of `spec.targetRef`.
//!
//! Parsing goes through a JSON value so that a type error names its full
//! path (`spec.strategy.canary.steps[1].setWeight`), then the spec is
//! validated by the engine's `Rollout::new`. Nothing here starts
//! anything: a refused file moves no traffic.

use weir_core::is_dns_label;
use weir_crds::{CanarySpec, GROUP, VERSION};

use crate::engine::{Rollout, SpecError};

/// A Canary file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// Not YAML.
    #[error("not valid YAML: {0}")]
    Yaml(String),
    /// A field is missing, misspelt or of the wrong type.
    #[error("{field}: {problem}")]
    Field {
        /// The path, e.g. `spec.analysis.metrics[0].maxIncrease`.
        field: String,
        /// What serde found.
        problem: String,
    },
    /// The spec parses but cannot run.
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// A parsed, validated Canary file.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryFile {
    /// `metadata.name` (default: `canary`).
    pub name: String,
    /// The spec as written.
    pub spec: CanarySpec,
    /// The validated rollout.
    pub rollout: Rollout,
}

const TOP_LEVEL: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

/// Parses and validates a Canary file's text.
///
/// # Errors
/// [`FileError`] naming the field and the fix.
pub fn parse(text: &str) -> Result<CanaryFile, FileError> {
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| FileError::Yaml(e.to_string()))?;
    let field = |field: &str, problem: String| FileError::Field {
        field: field.into(),
        problem,
    };
    let Some(top) = value.as_object() else {
        return Err(field(
            "(document)",
            "expected a Canary resource: apiVersion, kind, metadata and spec".into(),
        ));
    };
    if let Some(unknown) = top.keys().find(|k| !TOP_LEVEL.contains(&k.as_str())) {
        return Err(field(
            unknown,
            format!("unknown field; a Canary has {}", TOP_LEVEL.join(", ")),
        ));
    }
    let api_version = format!("{GROUP}/{VERSION}");
    match top.get("apiVersion").and_then(|v| v.as_str()) {
        Some(v) if v == api_version => {}
        other => {
            return Err(field(
                "apiVersion",
                format!("{other:?} is not supported; write apiVersion: {api_version}"),
            ));
        }
    }
    match top.get("kind").and_then(|v| v.as_str()) {
        Some("Canary") => {}
        other => return Err(field("kind", format!("{other:?}: write kind: Canary"))),
    }
    let name = top
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("canary")
        .to_string();
    if !is_dns_label(&name) {
        return Err(field(
            "metadata.name",
            format!("{name:?} must be a DNS label: lower-case letters, digits and '-', up to 63"),
        ));
    }
    let Some(spec) = top.get("spec") else {
        return Err(field("spec", "missing: a Canary needs a spec".into()));
    };
    let spec: CanarySpec = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            "spec".to_string()
        } else {
            format!("spec.{path}")
        };
        field(&at, e.into_inner().to_string())
    })?;
    let rollout = Rollout::new(&name, &spec)?;
    Ok(CanaryFile {
        name,
        spec,
        rollout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Canary
metadata: {name: chat}
spec:
  backends:
    stable: {url: "http://127.0.0.1:8001"}
    canary: {url: "http://127.0.0.1:8002"}
  strategy:
    canary:
      steps:
        - setWeight: 50
        - analysis: {maxDuration: 2m}
  analysis:
    metrics:
      - {name: ttft, kind: latency, maxIncrease: 10%}
"#;

    #[test]
    fn a_good_file_parses() {
        let f = parse(GOOD).expect("valid");
        assert_eq!(f.name, "chat");
        assert!(f.rollout.is_local());
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/canary-local.yaml");
        let text = std::fs::read_to_string(path).expect("examples/canary-local.yaml");
        let f = parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(f.rollout.analysis.metrics.len(), 4);
    }

    #[test]
    fn bad_files_name_the_field() {
        let table = [
            (
                "setWeight: 50",
                "setWeight: fifty",
                "spec.strategy.canary.steps[0]",
            ),
            (
                "maxIncrease: 10%}",
                "maxIncrese: 10%}",
                "spec.analysis.metrics[0]",
            ),
            ("kind: Canary", "kind: Rollout", "kind"),
            (
                "apiVersion: weir.dev/v1alpha1",
                "apiVersion: argoproj.io/v1alpha1",
                "apiVersion",
            ),
            (
                "metadata: {name: chat}",
                "metadata: {name: Chat_1}",
                "metadata.name",
            ),
            (
                "metadata: {name: chat}",
                "metadata: {name: chat}\nextra: 1",
                "extra",
            ),
            ("  strategy:", "  strategey:", "spec"),
        ];
        for (from, to, path) in table {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD);
            let e = parse(&text).expect_err(to);
            let FileError::Field { field, problem } = &e else {
                panic!("{to}: expected a field error, got {e}");
            };
            assert!(field.starts_with(path), "{to}: {field}: {problem}");
            assert!(!problem.is_empty());
        }
        assert!(matches!(
            parse("a: [").expect_err("yaml"),
            FileError::Yaml(_)
        ));
        let e = parse(&GOOD.replace("setWeight: 50", "setWeight: 0")).expect_err("no traffic");
        assert!(e.to_string().contains("steps[1].analysis"), "{e}");
    }

    #[test]
    fn latency_and_errors_come_from_the_proxy_only() {
        // A latency or error metric read from elsewhere would be judged on
        // the proxy's data anyway: refused, naming the source and the fix.
        for source in [
            "{prometheus: {address: \"http://127.0.0.1:9090\", query: \"x\"}}",
            "{scrape: {metric: vllm:time_to_first_token_seconds}}",
        ] {
            for metric in [
                "{name: ttft, kind: latency, maxIncrease: 10%}",
                "{name: errors, kind: errorRate, maxIncrease: 1pp}",
            ] {
                let with_source = metric.replacen('{', &format!("{{source: {source}, "), 1);
                let text = GOOD.replace(
                    "{name: ttft, kind: latency, maxIncrease: 10%}",
                    &with_source,
                );
                let e = parse(&text).expect_err(&with_source).to_string();
                assert!(e.starts_with("spec.analysis.metrics[0].source: "), "{e}");
                assert!(e.contains("use source: proxy"), "{e}");
            }
        }
        let gauge = "{name: gpu, kind: gauge, maxIncrease: 15%, source: {prometheus: {address: \"http://127.0.0.1:9090\", query: \"avg(DCGM_FI_DEV_GPU_UTIL)\"}}}";
        let text = GOOD.replace("{name: ttft, kind: latency, maxIncrease: 10%}", gauge);
        parse(&text).expect("a gauge may come from prometheus");
    }
}
