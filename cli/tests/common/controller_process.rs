//! `weir controller` as a process against the test API server
//! (weir-envtest), serving `/metrics` on a free loopback port.

use std::net::SocketAddr;
use std::process::Command;

/// `weir controller` watching `namespace` and leading on a Lease there,
/// with its metrics on `metrics_addr`; `extra` are more flags. The
/// command's `KUBECONFIG` is the test API server's.
pub fn controller(namespace: &str, metrics_addr: SocketAddr, extra: &[&str]) -> Command {
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
    cmd.env("KUBECONFIG", weir_envtest::server().kubeconfig());
    cmd
}
