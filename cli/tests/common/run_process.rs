//! `weir run --output json` as a process, with its proxy and admin
//! listeners on free ports.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::Value;

use super::{Proc, STARTUP, spawn};

/// Starts `weir run -f FILE --output json` on free ports and waits for its
/// `started` line; returns it, its proxy address and its admin address.
pub fn weir_run(file: &Path) -> (Proc, SocketAddr, SocketAddr) {
    weir_run_with(file, &[])
}

/// [`weir_run`] with `extra` arguments (e.g. `--record FILE`).
pub fn weir_run_with(file: &Path, extra: &[&str]) -> (Proc, SocketAddr, SocketAddr) {
    let file = file.to_str().expect("utf-8 path");
    let mut args = vec![
        "run",
        "-f",
        file,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    let proc = spawn("weir run", &args);
    let started = proc
        .stdout
        .wait_for(STARTUP, |t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["type"] == "started")
        })
        .unwrap_or_else(|| panic!("weir run did not start:\n{}", proc.stderr.text()));
    let addr = |key: &str| -> SocketAddr {
        started[key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("an address")
    };
    (proc, addr("listen"), addr("admin"))
}
