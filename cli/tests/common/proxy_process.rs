//! A `weir proxy --config FILE` process with both listeners on free ports,
//! for the tests that drive the proxy as an operator runs it.

use std::net::SocketAddr;
use std::path::Path;

use super::{Proc, STARTUP, between, command, spawn_command};

/// A running `weir proxy`.
#[derive(Debug)]
pub struct Proxy {
    /// The process (killed when dropped).
    pub proc: Proc,
    /// Where it serves traffic.
    pub listen: SocketAddr,
    /// Its admin listener (`/metrics`, `/v1/observations`, ...).
    pub admin: SocketAddr,
}

/// Starts `weir proxy --config FILE` with both listeners on free ports.
pub fn proxy(config: &Path) -> Proxy {
    proxy_with(config, &[])
}

/// [`proxy`] with more flags.
pub fn proxy_with(config: &Path, extra: &[&str]) -> Proxy {
    proxy_in_env(config, extra, &[])
}

/// [`proxy_with`] with environment variables set.
pub fn proxy_in_env(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> Proxy {
    let path = config.to_str().expect("utf-8 path");
    let mut args = vec![
        "proxy",
        "--config",
        path,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let mut cmd = command(&args);
    cmd.envs(env.iter().copied());
    let proc = spawn_command("proxy", cmd);
    // weir proxy: serving file F on ADDR; admin on ADDR (/metrics, ...)
    let line = proc
        .stderr
        .wait_for(STARTUP, |t| {
            between(t, "weir proxy: serving", "\n").map(String::from)
        })
        .unwrap_or_else(|| panic!("the proxy did not start:\n{}", proc.stderr.text()));
    let (left, right) = line.split_once("; admin on ").expect("startup line");
    let listen = left.rsplit(" on ").next().expect("listen address");
    let admin = right.split(' ').next().expect("admin address");
    Proxy {
        listen: listen.parse().expect("listen ip:port"),
        admin: admin.parse().expect("admin ip:port"),
        proc,
    }
}
