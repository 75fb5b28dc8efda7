//! Helpers shared by the process tests: `weir` children whose output is
//! collected by reader threads, and waits on that output with deadlines.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use weir_test_kit::poll::try_until_blocking;

pub mod controller_process;
pub mod proxy_process;
pub mod run_process;
use nix::unistd::Pid;

/// Longest wait for a process to print its startup line.
pub const STARTUP: Duration = Duration::from_secs(20);
/// Interval between two looks at a polled condition.
pub const POLL: Duration = Duration::from_millis(5);

/// What a child wrote to one of its pipes so far, filled by a reader thread.
#[derive(Debug, Default)]
pub struct Pipe {
    /// The text, and whether the pipe has closed.
    state: Mutex<(String, bool)>,
    changed: Condvar,
}

impl Pipe {
    pub fn text(&self) -> String {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    /// Waits until `find` returns something for the text so far; `None`
    /// when the pipe closes or `timeout` passes first.
    pub fn wait_for<T>(&self, timeout: Duration, find: impl Fn(&str) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(found) = find(&state.0) {
                return Some(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state.1 || left.is_zero() {
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The whole text once the pipe has closed (the process exited).
    pub fn when_closed(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while !state.1 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "stderr still open after {timeout:?}");
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.0.clone()
    }
}

/// A `weir` child process, killed when dropped.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    /// What it wrote to stderr.
    pub stderr: Arc<Pipe>,
    /// What it wrote to stdout.
    pub stdout: Arc<Pipe>,
}

pub fn spawn(name: &str, args: &[&str]) -> Proc {
    spawn_command(name, command(args))
}

/// `weir ARGS` with stdin closed, for tests that set its environment.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// Starts `cmd` with its output collected.
pub fn spawn_command(name: &str, mut cmd: Command) -> Proc {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stderr = Pipe::follow(child.stderr.take().expect("stderr is piped"));
    let stdout = Pipe::follow(child.stdout.take().expect("stdout is piped"));
    Proc {
        name: name.to_string(),
        child,
        stderr,
        stdout,
    }
}

impl Pipe {
    /// A pipe filled from `source` by a reader thread.
    fn follow(source: impl Read + Send + 'static) -> Arc<Pipe> {
        let pipe = Arc::new(Pipe::default());
        let sink = Arc::clone(&pipe);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(source);
            let mut line = Vec::new();
            loop {
                line.clear();
                let more = matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0);
                let mut state = sink.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.0.push_str(&String::from_utf8_lossy(&line));
                state.1 = !more;
                sink.changed.notify_all();
                if !more {
                    return;
                }
            }
        });
        pipe
    }
}

impl Proc {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"))
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap_or_else(|e| panic!("cannot signal {}: {e}", self.name));
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its exit status, once it exits within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let what = format!("{} to exit", self.name);
        try_until_blocking(&what, timeout, || self.child.try_wait().expect("try_wait")).ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- stderr of {} ---\n{}", self.name, self.stderr.text());
            eprintln!("--- stdout of {} ---\n{}", self.name, self.stdout.text());
        }
    }
}

/// A free loopback address (bound, then released for a child to take).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// The text between `start` and the next `end`.
pub fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// A running `weir sim`.
#[derive(Debug)]
pub struct Sim {
    /// Held for its `Drop`, which stops the sim.
    _proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Starts `weir sim --name NAME` on a free port; `extra` are more flags.
pub fn sim(name: &str, extra: &[&str]) -> Sim {
    sim_in_env(name, extra, &[])
}

/// [`sim`] with `env` added to its environment.
pub fn sim_in_env(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Sim {
    let mut args = vec![
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--name",
        name,
        "--seed",
        "7",
    ];
    args.extend_from_slice(extra);
    let mut cmd = command(&args);
    cmd.envs(env.iter().copied());
    let proc = spawn_command(&format!("sim {name}"), cmd);
    let addr = proc
        .stderr
        .wait_for(STARTUP, |t| {
            between(t, " on http://", "/v1").map(String::from)
        })
        .unwrap_or_else(|| panic!("sim {name} did not start:\n{}", proc.stderr.text()));
    let addr = addr.parse().expect("the sim prints ip:port");
    Sim { _proc: proc, addr }
}

/// A scratch directory for one test, unique to this test binary's process:
/// `weir-<binary>-<pid>-<name>` under the system's temporary directory.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weir-{}-{}-{name}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
