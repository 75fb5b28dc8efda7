//! The built kubectl and helm against the test server.

use std::process::{Command, Stdio};

use serde_json::Value;
use weir_envtest::{TestEnv, repo_root, server};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[tokio::test]
async fn kubectl_version_reports_kubernetes_1_34() {
    let _env = TestEnv::new("kubectl-version").await;
    let out = run(server().command("kubectl").args(["version", "-o", "json"]));
    let version: Value = serde_json::from_str(&out).expect("kubectl version -o json");
    for side in ["clientVersion", "serverVersion"] {
        let git_version = version[side]["gitVersion"].as_str().unwrap_or_default();
        assert!(
            git_version.starts_with("v1.34."),
            "{side} is {git_version:?}, not v1.34.x (k8s-openapi's v1_34)"
        );
        assert_eq!(version[side]["minor"], "34", "{side}");
    }
}

#[tokio::test]
async fn the_chart_renders_and_the_server_accepts_it() {
    let env = TestEnv::new("helm-template").await;
    let mut helm = server()
        .command("helm")
        .args(["template", "weir"])
        .arg(repo_root().join("charts/weir"))
        .args(["--namespace", &env.namespace])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start helm template");
    let rendered = helm.stdout.take().expect("helm's stdout");
    let applied = run(server()
        .command("kubectl")
        .args(["apply", "--dry-run=server", "-n", &env.namespace, "-f", "-"])
        .stdin(rendered));
    let status = helm.wait().expect("wait for helm");
    assert!(status.success(), "helm template failed: {status}");
    for object in [
        "serviceaccount/weir-controller",
        "serviceaccount/weir-proxy",
        "clusterrole.rbac.authorization.k8s.io/weir-controller",
        "clusterrolebinding.rbac.authorization.k8s.io/weir-controller",
        "deployment.apps/weir-controller",
        "deployment.apps/weir-proxy",
        "service/weir-proxy",
    ] {
        assert!(
            applied.contains(&format!("{object} created (server dry run)")),
            "{object} not in kubectl's output:\n{applied}"
        );
    }
}
