//! `weir import` as a process, on files in Argo Rollouts' and Flagger's
//! documented formats (`tests/fixtures/import/`): what each field became,
//! a comment for every field that changed meaning or was not carried over
//! (and exit 3 exactly when one was not), clear errors for invalid input,
//! and every output accepted by a real API server's schema for the Canary
//! CRD (`kubectl apply --dry-run=server`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use weir_crds::{AnalysisStep, Canary, MetricKind, PauseStep, ReplicaPolicy, Signal, Step};
use weir_envtest::{TestEnv, install_canary_crd, server};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

/// One run of `weir import`.
#[derive(Debug)]
struct Imported {
    code: Option<i32>,
    yaml: String,
    stderr: String,
}

impl Imported {
    /// The printed Canary (the schema's types refuse unknown fields).
    fn canary(&self) -> Canary {
        serde_saphyr::from_str(&self.yaml)
            .unwrap_or_else(|e| panic!("output is not a weir Canary: {e}\n{}", self.yaml))
    }

    /// The comments of one kind (`changed` or `not carried over`), each
    /// with its wrapped lines joined.
    fn notes(&self, label: &str) -> Vec<String> {
        // A long source field may be wrapped onto the next line, leaving
        // the label alone on the first.
        let prefix = format!("# {label}:");
        let mut out: Vec<String> = Vec::new();
        let mut open = false;
        for line in self.yaml.lines().map(str::trim_start) {
            if let Some(text) = line.strip_prefix(&prefix) {
                out.push(text.trim().to_string());
                open = true;
            } else if let (true, Some(more)) = (open, line.strip_prefix("#   ")) {
                if let Some(last) = out.last_mut() {
                    if !last.is_empty() {
                        last.push(' ');
                    }
                    last.push_str(more.trim());
                }
            } else {
                open = false;
            }
        }
        out
    }

    /// The comment about source field `source` (the first one).
    fn note(&self, label: &str, source: &str) -> String {
        let notes = self.notes(label);
        notes
            .iter()
            .find(|n| n.starts_with(&format!("{source}:")) || n.starts_with(&format!("{source},")))
            .cloned()
            .unwrap_or_else(|| panic!("no {label:?} comment on {source} in {notes:#?}"))
    }
}

/// Runs `weir import ARGS` and checks what holds for every input: the
/// header's counts match the comments, and the exit code is 3 exactly when
/// something was not carried over.
fn import(args: &[&str]) -> Imported {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("import")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("weir runs");
    let imported = Imported {
        code: out.status.code(),
        yaml: String::from_utf8(out.stdout).expect("UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8"),
    };
    assert!(
        !imported.stderr.contains("panicked"),
        "{args:?}: {}",
        imported.stderr
    );
    if imported.code == Some(1) {
        return imported;
    }
    let header = imported
        .yaml
        .lines()
        .find_map(|l| {
            l.strip_prefix("# ")
                .filter(|l| l.contains("field(s) carried over"))
        })
        .unwrap_or_else(|| panic!("{args:?}: no header in\n{}", imported.yaml));
    let numbers: Vec<usize> = header
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (changed, dropped) = (
        imported.notes("changed"),
        imported.notes("not carried over"),
    );
    assert_eq!(
        numbers,
        [changed.len(), dropped.len()],
        "{args:?}: {header}\n{}",
        imported.yaml
    );
    let expected = if dropped.is_empty() { 0 } else { 3 };
    assert_eq!(
        imported.code,
        Some(expected),
        "{args:?}: {}",
        imported.stderr
    );
    imported
}

fn steps(c: &Canary) -> &[Step] {
    &c.spec
        .strategy
        .canary
        .as_ref()
        .expect("a canary strategy")
        .steps
}

fn pause(d: Option<&str>) -> Step {
    Step::Pause(PauseStep {
        duration: d.map(String::from),
    })
}

fn analysis(min: Option<&str>, max: Option<&str>) -> AnalysisStep {
    AnalysisStep {
        min_duration: min.map(String::from),
        max_duration: max.map(String::from),
    }
}

/// The six anchor-format inputs of the issue.
const ANCHORS: [&str; 6] = [
    "argo-canary-analysis.yaml",
    "argo-bluegreen",
    "argo-workloadref.yaml",
    "argo-traffic-router.yaml",
    "flagger-canary.yaml",
    "flagger-ab.yaml",
];

#[test]
fn argo_canary_steps_and_analysis_carry_over() {
    let out = import(&[fixture("argo-canary-analysis.yaml").to_str().expect("path")]);
    let c = out.canary();
    assert_eq!(c.metadata.name.as_deref(), Some("guestbook"));
    assert_eq!(c.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(
        c.spec.target_ref.as_ref().map(|t| t.name.as_str()),
        Some("guestbook")
    );
    assert_eq!(
        c.spec.service.map(|s| s.port),
        Some(8080),
        "the template's containerPort"
    );
    assert_eq!(
        steps(&c),
        [
            Step::SetWeight(20.0),
            pause(Some("10m")),
            Step::SetWeight(40.0),
            pause(Some("10m")), // duration: 600 (seconds)
            Step::SetWeight(60.0),
            // success-rate: 3 × 5m outlasts latency-p95's 30s + 5 × 1m.
            Step::Analysis(analysis(None, Some("15m"))),
            Step::SetWeight(80.0),
            pause(None),
        ]
    );
    let a = &c.spec.analysis;
    assert_eq!(a.interval, "1m", "the shortest template interval");
    assert_eq!(
        a.metrics.len(),
        2,
        "success-rate is used twice and added once"
    );
    let success = &a.metrics[0];
    assert_eq!(success.kind, MetricKind::ErrorRate);
    assert_eq!(
        success.hard_limit.as_deref(),
        Some("5%"),
        "result[0] >= 0.95"
    );
    assert_eq!(success.max_increase.as_deref(), Some("0.5pp"));
    let latency = &a.metrics[1];
    assert_eq!(latency.kind, MetricKind::Latency);
    assert_eq!(latency.quantiles, [0.95], "histogram_quantile(0.95, ...)");
    assert_eq!(latency.signal, Some(Signal::Duration));
    assert!(
        out.note("changed", "spec.template")
            .contains("create Deployment guestbook")
    );
    assert!(
        out.note("changed", "AnalysisTemplate/latency-p95.spec.metrics[0]")
            .contains("at most 10% above stable")
    );
    assert!(
        out.note(
            "changed",
            "AnalysisTemplate/success-rate.spec.metrics[0].failureLimit"
        )
        .contains("no failures need tolerating")
    );
}

#[test]
fn argo_blue_green_with_templates_in_the_same_directory() {
    let out = import(&[fixture("argo-bluegreen").to_str().expect("path")]);
    let c = out.canary();
    let bg = c.spec.strategy.blue_green.as_ref().expect("blue-green");
    assert!(!bg.auto_promote, "autoPromotionEnabled: false");
    assert_eq!(bg.preview_replicas, Some(1));
    assert_eq!(bg.pre_promotion_analysis, Some(analysis(None, Some("5m"))));
    assert_eq!(
        bg.post_promotion_analysis,
        Some(analysis(None, Some("10m")))
    );
    // 30 s would scale the old side down before the post-promotion
    // analysis could roll back to it.
    assert_eq!(bg.scale_down_delay.as_deref(), Some("10m"));
    assert!(
        out.note("changed", "spec.strategy.blueGreen.scaleDownDelaySeconds")
            .contains("raised to the post-promotion analysis's 10m")
    );
    let limits: Vec<_> = c
        .spec
        .analysis
        .metrics
        .iter()
        .map(|m| (m.name.as_str(), m.kind, m.hard_limit.as_deref()))
        .collect();
    assert_eq!(
        limits,
        [
            ("success-rate", MetricKind::ErrorRate, Some("1%")),
            ("error-rate", MetricKind::ErrorRate, Some("2%")), // fails above 0.02
        ]
    );

    // The Rollout alone: its templates are missing, and the output says so.
    let alone = import(&[fixture("argo-bluegreen/rollout.yaml")
        .to_str()
        .expect("path")]);
    assert_eq!(alone.code, Some(3));
    let note = alone.note(
        "not carried over",
        "spec.strategy.blueGreen.prePromotionAnalysis.templates[0]",
    );
    assert!(
        note.contains("AnalysisTemplate smoke-tests is not in the input"),
        "{note}"
    );
}

#[test]
fn argo_workload_ref_takes_the_deployment_and_its_port() {
    let out = import(&[fixture("argo-workloadref.yaml").to_str().expect("path")]);
    assert_eq!(out.code, Some(0), "everything carries over: {}", out.yaml);
    let c = out.canary();
    assert_eq!(
        c.spec.target_ref.as_ref().map(|t| t.name.as_str()),
        Some("chat-frontend")
    );
    assert_eq!(
        c.spec.service.map(|s| s.port),
        Some(8000),
        "the Deployment's containerPort"
    );
    assert_eq!(c.spec.progress_deadline_seconds, 1200);
    assert_eq!(
        steps(&c),
        [
            Step::SetWeight(10.0),
            pause(Some("1h")),
            Step::SetWeight(50.0),
            pause(Some("30m")),
        ]
    );
    let p = &c.spec.promotion;
    assert_eq!(
        serde_json::to_value(p).expect("json"),
        serde_json::json!({"strategy": "RollingUpdate", "maxSurge": "25%", "maxUnavailable": 0})
    );
    let names: Vec<_> = c
        .spec
        .analysis
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["ttft", "errors"],
        "weir's usual checks when there were none"
    );
    assert!(
        out.note("changed", "spec.workloadRef.scaleDown")
            .contains("adopts the Deployment")
    );

    // --port wins over the Deployment.
    let path = fixture("argo-workloadref.yaml");
    let out = import(&[path.to_str().expect("path"), "--port", "9000"]);
    assert_eq!(out.canary().spec.service.map(|s| s.port), Some(9000));

    // Without the Deployment, the port is a guess, and the output says so.
    let text = std::fs::read_to_string(&path).expect("fixture");
    let rollout_only = text.split("---\n").nth(1).expect("the Rollout document");
    let dir = std::env::temp_dir().join(format!("weir-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("rollout.yaml");
    std::fs::write(&file, rollout_only).expect("write");
    let out = import(&[file.to_str().expect("path")]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.code, Some(3));
    assert_eq!(out.canary().spec.service.map(|s| s.port), Some(8000));
    assert!(
        out.note("not carried over", "spec")
            .contains("8000 is a guess")
    );
    assert!(
        out.stderr.contains("1 field(s) could not be carried over"),
        "{}",
        out.stderr
    );
}

#[test]
fn argo_traffic_router_is_replaced_by_weir_proxies() {
    let out = import(&[fixture("argo-traffic-router.yaml").to_str().expect("path")]);
    let c = out.canary();
    assert_eq!(
        steps(&c),
        [
            pause(None),
            Step::SetWeight(5.0),
            pause(Some("10m")),
            Step::SetWeight(25.0),
            pause(Some("10m")),
            Step::SetWeight(50.0),
            pause(Some("10m")),
        ]
    );
    assert_eq!(
        c.spec.strategy.canary.as_ref().map(|s| s.replicas),
        Some(ReplicaPolicy::MatchWeight),
        "the last setCanaryScale: matchTrafficWeight"
    );
    let router = out.note("changed", "spec.strategy.canary.trafficRouting.istio");
    assert!(
        router.contains("point the ingress or mesh route at the weir proxy Service"),
        "{router}"
    );
    let header = out.note(
        "not carried over",
        "spec.strategy.canary.steps[1].setHeaderRoute",
    );
    assert!(header.contains("x-weir-cohort: canary"), "{header}");
    let scale = out.note(
        "not carried over",
        "spec.strategy.canary.dynamicStableScale",
    );
    assert!(scale.contains("spec.gpuBudget"), "{scale}");
    let subscription = out.note(
        "not carried over",
        "metadata.annotations.notifications.argoproj.io/subscribe.on-rollout-aborted.slack",
    );
    assert!(subscription.contains("spec.notify"), "{subscription}");
    assert_eq!(out.notes("not carried over").len(), 3);
}

#[test]
fn flagger_canary_metrics_become_margins_and_hard_limits() {
    let out = import(&[fixture("flagger-canary.yaml").to_str().expect("path")]);
    let c = out.canary();
    let mut expected = Vec::new();
    for w in [10.0, 20.0, 30.0, 40.0] {
        expected.extend([Step::SetWeight(w), pause(Some("1m"))]);
    }
    expected.extend([
        Step::SetWeight(50.0),
        Step::Analysis(AnalysisStep::default()),
    ]);
    assert_eq!(
        steps(&c),
        expected,
        "stepWeight 10 up to maxWeight 50, one interval each"
    );
    assert_eq!(c.spec.analysis.interval, "1m");
    assert_eq!(c.spec.route.hosts, ["app.example.com"]);
    assert_eq!(c.spec.service.map(|s| s.port), Some(9898));
    assert_eq!(c.spec.progress_deadline_seconds, 60);
    let m = &c.spec.analysis.metrics;
    assert_eq!(
        (m[0].name.as_str(), m[0].kind),
        ("request-success-rate", MetricKind::ErrorRate)
    );
    assert_eq!(
        m[0].hard_limit.as_deref(),
        Some("1%"),
        "thresholdRange.min 99"
    );
    assert_eq!(
        (m[1].name.as_str(), m[1].kind),
        ("request-duration", MetricKind::Latency)
    );
    assert_eq!(
        m[1].quantiles,
        [0.99],
        "Flagger's request-duration is the p99"
    );
    assert_eq!(m[1].max_increase.as_deref(), Some("10%"));
    let dropped = out.notes("not carried over");
    assert_eq!(dropped.len(), 5, "{dropped:#?}");
    assert!(
        out.note("not carried over", "spec.analysis.webhooks[1]")
            .contains("weir load")
    );
    assert!(
        out.note("not carried over", "spec.analysis.webhooks[0]")
            .contains("pre-rollout")
    );
    assert!(
        out.note("not carried over", "spec.autoscalerRef")
            .contains("matchWeight")
    );
    assert!(
        out.stderr.contains("5 field(s) could not be carried over"),
        "{}",
        out.stderr
    );
}

#[test]
fn flagger_ab_test_becomes_a_header_previewed_blue_green() {
    let out = import(&[fixture("flagger-ab.yaml").to_str().expect("path")]);
    let c = out.canary();
    let bg = c.spec.strategy.blue_green.as_ref().expect("blue-green");
    assert!(
        !bg.auto_promote,
        "the confirm-promotion webhook: weir promote"
    );
    assert_eq!(
        bg.pre_promotion_analysis,
        Some(analysis(Some("10m"), Some("20m"))),
        "10 iterations of 1m at least"
    );
    let matched = out.note("changed", "spec.analysis.match");
    assert!(
        matched.contains("insider") && matched.contains("x-weir-cohort: canary"),
        "{matched}"
    );
    let m = &c.spec.analysis.metrics;
    assert_eq!(
        m[1].name, "error-percentage",
        "from the MetricTemplate's query"
    );
    assert_eq!(m[1].kind, MetricKind::ErrorRate);
    assert_eq!(
        m[1].hard_limit.as_deref(),
        Some("1%"),
        "thresholdRange.max 1 (percent)"
    );
}

#[test]
fn invalid_input_is_refused_naming_the_field() {
    for (file, expected) in [
        ("invalid/not-yaml.yaml", "not-yaml.yaml: "),
        ("invalid/wrong-weight.yaml", "Rollout wrong-weight in "),
        (
            "invalid/wrong-weight.yaml",
            "spec.strategy.canary.steps[0].setWeight: is \"ten\"; expected a number",
        ),
        (
            "invalid/daemonset.yaml",
            "spec.targetRef.kind: is \"DaemonSet\"; weir rolls out Deployments only",
        ),
        (
            "invalid/no-steps.yaml",
            "spec.analysis.stepWeight: is missing; give stepWeight (with maxWeight), stepWeights, or iterations",
        ),
        (
            "invalid/no-rollout.yaml",
            "no Argo Rollouts Rollout (argoproj.io) or Flagger Canary (flagger.app) found (found: Service)",
        ),
        ("invalid/missing.yaml", "reading "),
        (
            "invalid/tiny-step.yaml",
            "spec.analysis.stepWeight: 0.01 makes 5000 steps up to maxWeight 50",
        ),
        (
            "invalid/huge-count.yaml",
            "would be refused (spec.strategy.canary.steps[1].analysis.maxDuration: ",
        ),
    ] {
        let out = import(&[fixture(file).to_str().expect("path")]);
        assert_eq!(out.code, Some(1), "{file}: {}", out.stderr);
        assert!(out.yaml.is_empty(), "{file}: printed {}", out.yaml);
        assert!(
            out.stderr.contains(expected),
            "{file}: {:?} not in {}",
            expected,
            out.stderr
        );
    }
}

#[tokio::test]
async fn every_import_is_accepted_by_the_api_server() {
    let env = TestEnv::new("import-dry-run").await;
    install_canary_crd(&env.client)
        .await
        .expect("CRD installed");
    for name in ANCHORS {
        let out = import(&[fixture(name).to_str().expect("path")]);
        let canary = out.canary();
        // The fixtures' own namespaces (shop, llm, test) exist in no
        // cluster; this API server is the test binary's own.
        let namespace = match &canary.metadata.namespace {
            Some(ns) => {
                let ns_object = Namespace {
                    metadata: ObjectMeta {
                        name: Some(ns.clone()),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                };
                match Api::<Namespace>::all(env.client.clone())
                    .create(&PostParams::default(), &ns_object)
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => panic!("creating namespace {ns}: {e}"),
                }
                ns.clone()
            }
            None => env.namespace.clone(),
        };
        let applied = server().run_with_stdin(
            "kubectl",
            &["apply", "--dry-run=server", "-n", &namespace, "-f", "-"],
            &out.yaml,
        );
        let stdout = String::from_utf8_lossy(&applied.stdout);
        assert!(
            applied.status.success(),
            "{name}: the API server refused the import: {}\n{}",
            String::from_utf8_lossy(&applied.stderr),
            out.yaml
        );
        let line = format!(
            "canary.weir.dev/{} created (server dry run)",
            canary.metadata.name.as_deref().unwrap_or_default()
        );
        assert!(stdout.contains(&line), "{name}: {stdout}");
    }
}
