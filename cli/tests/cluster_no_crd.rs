//! The cluster commands on an API server without the Canary CRD. A test
//! binary of its own: each binary gets its own API server, and the other
//! cluster tests install the CRD in theirs.

mod common;

use weir_envtest::{TestEnv, server};

#[tokio::test]
async fn a_missing_crd_is_named_with_the_command_that_installs_it() {
    let env = TestEnv::new("cli-no-crd").await;
    for args in [
        &["get", "-n", env.namespace.as_str()][..],
        &["get", "-A"],
        &["status", "chat", "-n", env.namespace.as_str()],
        &["promote", "chat", "-n", env.namespace.as_str()],
    ] {
        let out = common::command(args)
            .env("KUBECONFIG", server().kubeconfig())
            .output()
            .expect("weir runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("the Canary CRD is not installed: weir crds | kubectl apply -f -"),
            "{args:?}: {stderr}"
        );
    }
}
