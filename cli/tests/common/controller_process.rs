//! `weir controller` as a process against a test's API server
//! (weir-envtest), serving `/metrics` on a free loopback port.

use std::net::SocketAddr;
use std::process::Command;

/// `weir controller` watching `env`'s namespace and leading on a Lease
/// there, with its metrics on `metrics_addr`; `extra` are more flags. The
/// command's `KUBECONFIG` is that of `env`'s API server.
pub fn controller(
    env: &weir_envtest::TestEnv,
    metrics_addr: SocketAddr,
    extra: &[&str],
) -> Command {
    let namespace = env.namespace.as_str();
    let metrics_addr = metrics_addr.to_string();
    let mut args = vec![
        "controller",
        "--namespace",
        namespace,
        "--lease-namespace",
        namespace,
        "--metrics-addr",
        &metrics_addr,
    ];
    args.extend_from_slice(extra);
    let mut cmd = super::command(&args);
    cmd.env("KUBECONFIG", env.kubeconfig());
    cmd
}
