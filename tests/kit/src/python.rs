//! The real Python `openai` client, driven from Rust tests.
//!
//! The interpreter is `$WEIR_PYTHON` (tests/run sets it to its cached
//! venv, which has `tests/requirements.txt`), else `python3`. A missing
//! `openai` package fails the test instead of skipping it: a skipped
//! compatibility test protects nothing.
//!
//! Scripts print one JSON document on stdout; [`run_json`] runs one with
//! a deadline and returns that document.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::poll;

/// The interpreter tests use: `$WEIR_PYTHON`, else `python3`.
pub fn interpreter() -> String {
    std::env::var("WEIR_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// The interpreter, once `import openai` works in it; panics saying how
/// to get one otherwise.
pub fn openai() -> String {
    let python = interpreter();
    let probe = Command::new(&python)
        .args(["-c", "import openai"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python:?} ({e}); tests/run sets WEIR_PYTHON to its venv")
        });
    assert!(
        probe.status.success(),
        "`import openai` failed with {python:?}: {}\n\
         tests/run installs the openai package into its venv and sets WEIR_PYTHON; \
         run the suite through tests/run, or point WEIR_PYTHON at a Python with openai",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    python
}

/// Runs `python ARGS` (a script path or `-c CODE`, then its arguments),
/// killing it if it runs longer than `within`, and parses the one JSON
/// document it prints. Panics, with its stderr, when it fails, outlives
/// `within` or prints something else.
pub fn run_json(python: &str, args: &[&str], within: Duration) -> serde_json::Value {
    let mut child = Command::new(python)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {python:?}: {e}"));
    // Drained by threads: a child blocked on a full pipe would never exit.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let exited = poll::try_until_blocking(&format!("{python} {args:?} to exit"), within, || {
        child.try_wait().expect("try_wait")
    });
    let status = match exited {
        Ok(status) => status,
        Err(timed_out) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{timed_out}\n{}", stderr.join().unwrap_or_default())
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    assert!(
        status.success(),
        "{python} {args:?} failed ({status}):\n{stderr}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout}\n{stderr}"))
}
