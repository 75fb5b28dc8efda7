//! A real inference server for weir's tests: llama.cpp's OpenAI server
//! (`python -m llama_cpp.server`, from tests/requirements.txt) serving the
//! tiny seeded models tests/llama/models.py writes.
//!
//! Each server runs with one thread, so two of them (stable and canary)
//! share the 2 cores of a CI box with the proxy and the load instead of
//! fighting over them.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use weir_test_kit::{poll, python};

use crate::common::{Proc, free_addr, spawn_command};

/// Longest wait for a server to load its model and answer.
pub const LOADING: Duration = Duration::from_secs(120);
/// The model name the servers answer to.
pub const ALIAS: &str = "tiny";

/// A script under tests/llama/.
pub fn script(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/llama")
        .join(name);
    path.to_str().expect("a UTF-8 path").to_string()
}

/// The tiny models' files: (2 layers x 64 wide, 8 layers x 256 wide).
#[derive(Debug, Clone)]
pub struct Models {
    pub small: PathBuf,
    pub large: PathBuf,
}

/// The interpreter, once it has llama.cpp's server and `gguf`; panics
/// saying how to get one otherwise (a skipped test protects nothing).
pub fn interpreter() -> String {
    let python = python::interpreter();
    let probe = Command::new(&python)
        .args(["-c", "import gguf, llama_cpp.server"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python:?} ({e}); tests/run sets WEIR_PYTHON"));
    assert!(
        probe.status.success(),
        "`import gguf, llama_cpp.server` failed with {python:?}: {}\n\
         tests/run installs llama-cpp-python[server] and gguf (tests/requirements.txt) \
         into its venv and sets WEIR_PYTHON; run the suite through tests/run, or point \
         WEIR_PYTHON at `tests/python-env`'s interpreter",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    python
}

/// Writes the models once (cached by tests/llama/models.py) and returns
/// their paths.
pub fn models() -> Models {
    let out = python::run_json(
        &interpreter(),
        &[&script("models.py")],
        Duration::from_secs(300),
    );
    let path = |name: &str| {
        PathBuf::from(
            out["models"][name]
                .as_str()
                .unwrap_or_else(|| panic!("models.py wrote no {name}: {out}")),
        )
    };
    Models {
        small: path("tiny-2x64"),
        large: path("tiny-8x256"),
    }
}

/// A running `python -m llama_cpp.server`.
#[derive(Debug)]
pub struct Llama {
    /// The process (killed when dropped).
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Llama {
    /// Its OpenAI base URL.
    pub fn v1(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// The command that serves `model` as [`ALIAS`] on `addr` with a context
/// window of `n_ctx` tokens, one thread.
pub fn command(model: &Path, addr: SocketAddr, n_ctx: u32) -> Command {
    let mut cmd = Command::new(python::interpreter());
    cmd.args(["-m", "llama_cpp.server", "--model"])
        .arg(model)
        .args(["--model_alias", ALIAS, "--host"])
        .arg(addr.ip().to_string())
        .args(["--port", &addr.port().to_string()])
        .args(["--n_ctx", &n_ctx.to_string(), "--n_threads", "1"])
        .args(["--seed", "7"])
        .stdin(std::process::Stdio::null());
    cmd
}

/// Starts a server (see [`command`]) and waits until it answers
/// `GET /v1/models`.
pub fn llama(name: &str, model: &Path, n_ctx: u32) -> Llama {
    let addr = free_addr();
    let mut proc = spawn_command(name, command(model, addr, n_ctx));
    ready(name, &mut proc, addr);
    Llama { proc, addr }
}

/// Waits until the server on `addr` answers `GET /v1/models` with 200;
/// panics with its output if it exits first or takes longer than
/// [`LOADING`].
pub fn ready(name: &str, proc: &mut Proc, addr: SocketAddr) {
    let what = format!("{name} (llama_cpp.server on {addr}) to answer /v1/models");
    let answered = poll::try_until_blocking(&what, LOADING, || {
        if !proc.alive() {
            return Ok(false);
        }
        match get(addr, "/v1/models") {
            Some((200, _)) => Ok(true),
            other => Err(other.map(|(status, _)| status)),
        }
    });
    match answered {
        Ok(true) => {}
        Ok(false) => panic!("{name} exited before it answered:\n{}", proc.stderr.text()),
        Err(timed_out) => panic!("{timed_out}\n{}", proc.stderr.text()),
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`: status and body, or
/// `None` when nothing answers.
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// `GET path` on an admin listener, as JSON.
pub fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get(addr, path).unwrap_or_else(|| panic!("GET {path} on {addr}"));
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Runs tests/llama/client.py with ARGS (the real openai client).
pub fn client(args: &[&str], within: Duration) -> Value {
    let script = script("client.py");
    let all: Vec<&str> = std::iter::once(script.as_str())
        .chain(args.iter().copied())
        .collect();
    python::run_json(&python::openai(), &all, within)
}
