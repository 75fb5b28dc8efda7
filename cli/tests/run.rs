//! `weir run` and `weir demo` as a user runs them: real `weir sim`, `weir
//! load` and `weir run` processes on loopback.
//!
//! What they show: a canary 30% slower at the median is aborted and one 3%
//! slower under a 10% margin is promoted; Ctrl-C mid-run puts stable back on
//! 100% before the process exits; invalid Canary files are refused before
//! the proxy even listens; the demo promotes a healthy canary and aborts
//! each regression, naming the metric.
//!
//! Each run's verdict comes from real streams through the real proxy, so
//! the test plans are short but the statistics are the production ones:
//! nothing here is stubbed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

mod common;
use common::run_process::weir_run;
use common::{POLL, Proc, scratch, sim, spawn};

/// Longest a run may take here (its own maxDuration is shorter).
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// The runs compare latencies: one at a time, so two runs do not share
/// two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A Canary file for two local backends.
fn canary_file(dir: &Path, stable: SocketAddr, canary: SocketAddr, steps: &str) -> PathBuf {
    let text = format!(
        r#"apiVersion: weir.dev/v1alpha1
kind: Canary
metadata: {{name: chat}}
spec:
  backends:
    stable: {{url: "http://{stable}"}}
    canary: {{url: "http://{canary}"}}
  strategy:
    canary:
      steps:
{steps}
  analysis:
    interval: 1s
    warmup: 1s
    minSamples: 200
    metrics:
      - {{name: ttft, kind: latency, quantiles: [0.5], maxIncrease: 10%}}
      - {{name: errors, kind: errorRate, maxIncrease: 1pp}}
"#
    );
    let path = dir.join("canary.yaml");
    std::fs::write(&path, text).expect("write canary file");
    path
}

/// Streaming load through `proxy` for up to `seconds`.
fn load(proxy: SocketAddr, rate: u32, seconds: u32) -> Proc {
    spawn(
        "weir load",
        &[
            "load",
            "--url",
            &format!("http://{proxy}"),
            "--rate",
            &rate.to_string(),
            "--duration",
            &format!("{seconds}s"),
        ],
    )
}

/// The JSON lines `weir run` printed.
fn events(proc: &Proc) -> Vec<Value> {
    proc.stdout
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn exit_code(proc: &mut Proc) -> i32 {
    let status = proc
        .wait_exit(RUN_LIMIT)
        .unwrap_or_else(|| panic!("weir run still running after {RUN_LIMIT:?}"));
    status.code().expect("exited, not killed")
}

#[test]
fn a_30_percent_slower_canary_aborts_and_a_3_percent_slower_one_promotes() {
    let _one = one_at_a_time();
    let steps = "        - setWeight: 50\n        - analysis: {minDuration: 5s, maxDuration: 90s}";
    // (canary median TTFT, expected exit code, what the end says)
    for (ttft, code, says) in [("130ms", 3, "ttft"), ("103ms", 0, "promote")] {
        let dir = scratch(&format!("slow-{ttft}"));
        let shape = ["--ttft-sigma", "0.25", "--itl", "5ms", "--tokens", "8"];
        let stable = sim("stable", &[&["--ttft", "100ms"][..], &shape[..]].concat());
        let canary = sim("canary", &[&["--ttft", ttft][..], &shape[..]].concat());
        let file = canary_file(&dir, stable.addr, canary.addr, steps);
        let (mut run, proxy, _admin) = weir_run(&file);
        let _load = load(proxy, 200, 120);
        assert_eq!(
            exit_code(&mut run),
            code,
            "canary at {ttft}:\n{}",
            run.stdout.text()
        );
        let all = events(&run);
        let finished = all
            .iter()
            .find(|v| v["type"] == "finished")
            .unwrap_or_else(|| panic!("no finished line:\n{}", run.stdout.text()));
        let message = finished["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "canary at {ttft}: {message}");
        let last = all
            .iter()
            .rev()
            .find(|v| v["type"] == "sample")
            .expect("samples");
        let weight = last["canaryWeight"].as_f64().expect("weight");
        assert_eq!(
            weight,
            if code == 0 { 100.0 } else { 0.0 },
            "canary at {ttft}"
        );
        if code == 3 {
            // The abort names the metric and its numbers.
            let decision = &finished["decision"];
            assert_eq!(decision["verdict"], "abort");
            let exceeded: Vec<&str> = decision["metrics"]
                .as_array()
                .expect("metrics")
                .iter()
                .filter(|m| m["finding"] == "exceeds")
                .filter_map(|m| m["name"].as_str())
                .collect();
            assert!(
                exceeded.iter().any(|n| n.starts_with("ttft")),
                "{exceeded:?}"
            );
        }
    }
}

/// `GET path` on the admin listener; `None` once it no longer answers.
fn admin_get(admin: SocketAddr, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// The stable weight of the admin's route table, in percent.
fn stable_weight(routes: &Value) -> Option<f64> {
    let backends = routes["table"]["routes"][0]["backends"].as_array()?;
    backends
        .iter()
        .find(|b| b["cohort"] == "stable")
        .and_then(|b| b["weight"].as_f64())
}

#[test]
fn ctrl_c_mid_run_puts_stable_back_on_100_percent_before_exit() {
    let _one = one_at_a_time();
    // Ctrl-C at a terminal; SIGTERM from systemd or `docker stop`.
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        interrupt_mid_run(signal);
    }
}

fn interrupt_mid_run(signal: Signal) {
    let dir = scratch(&format!("interrupt-{signal}"));
    // Streams long enough that the drain keeps the admin API up a while.
    let stable = sim(
        "stable",
        &["--ttft", "50ms", "--itl", "20ms", "--tokens", "40"],
    );
    let canary = sim(
        "canary",
        &["--ttft", "50ms", "--itl", "20ms", "--tokens", "40"],
    );
    let file = canary_file(
        &dir,
        stable.addr,
        canary.addr,
        "        - setWeight: 50\n        - pause: {}",
    );
    let (mut run, proxy, admin) = weir_run(&file);
    let _load = load(proxy, 50, 60);
    let paused = run.stdout.wait_for(Duration::from_secs(30), |t| {
        t.contains("\"reason\":\"Paused\"").then_some(())
    });
    assert!(
        paused.is_some(),
        "the run never reached its pause:\n{}",
        run.stdout.text()
    );
    // Streams must be open when the signal comes, as in production.
    let flowing = (0..400).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        admin_get(admin, "/v1/observations").is_some_and(|o| {
            o["cohorts"].as_array().is_some_and(|c| {
                c.iter()
                    .filter(|c| c["inflight"].as_u64().unwrap_or(0) > 0)
                    .count()
                    == 2
            })
        })
    });
    assert!(flowing, "no streams open on both cohorts");
    let before = admin_get(admin, "/v1/routes").expect("admin answers");
    assert_eq!(stable_weight(&before), Some(50.0), "{before}");

    run.signal(signal);
    // Watch the table until the admin API goes away with the process.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.alive() && Instant::now() < deadline {
        if let Some(w) = admin_get(admin, "/v1/routes")
            .as_ref()
            .and_then(stable_weight)
        {
            seen.push(w);
        }
        std::thread::sleep(POLL);
    }
    assert_eq!(
        exit_code(&mut run),
        3,
        "an interrupted run is an aborted run"
    );
    assert!(
        seen.contains(&100.0),
        "{signal}: stable 100% was never observed before exit (saw {seen:?})"
    );
    // Once stable has everything, it never goes back.
    let first = seen.iter().position(|w| *w == 100.0).expect("seen");
    assert!(seen[first..].iter().all(|w| *w == 100.0), "{seen:?}");
    let all = events(&run);
    assert!(
        all.iter().any(|v| v["reason"] == "Interrupted"),
        "{}",
        run.stdout.text()
    );
}

#[test]
fn a_signal_the_moment_the_proxy_serves_still_ends_the_run_as_an_abort() {
    // The window between the proxy serving and the run's first wait on
    // the signal is its first scrape and table swap: a SIGTERM there (a
    // pod deleted just after start) once killed the process outright.
    let _one = one_at_a_time();
    let dir = scratch("signal-at-start");
    let stable = sim("stable", &["--ttft", "1ms"]);
    let canary = sim("canary", &["--ttft", "1ms"]);
    let file = canary_file(
        &dir,
        stable.addr,
        canary.addr,
        "        - setWeight: 50\n        - pause: {}",
    );
    for round in 0..5 {
        let (mut run, _, _) = weir_run(&file);
        run.signal(Signal::SIGTERM);
        let status = run
            .wait_exit(RUN_LIMIT)
            .unwrap_or_else(|| panic!("round {round}: weir run still running"));
        assert_eq!(
            status.code(),
            Some(3),
            "round {round}: {status} (a SIGTERM right after start must abort the run, not kill it)\n{}",
            run.stderr.text()
        );
    }
}

/// `weir ARGS` to its end: its exit code and stderr.
fn weir_once(args: &[&str]) -> (Option<i32>, String) {
    let out = common::command(args).output().expect("weir runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`weir_once`], with `writes` fed into `fifo` meanwhile (as the shell
/// does for `<(…)`).
fn weir_with_pipe(args: &[&str], fifo: &Path, writes: Option<String>) -> (Option<i32>, String) {
    let writer = writes.map(|text| {
        let fifo = fifo.to_path_buf();
        std::thread::spawn(move || {
            // Blocks until a reader opens the FIFO.
            std::fs::write(&fifo, text).is_ok()
        })
    });
    let out = weir_once(args);
    if let Some(w) = writer {
        // A weir that never opened the FIFO leaves the writer blocked:
        // a reader here releases it (and the assertions then say why).
        use std::os::unix::fs::OpenOptionsExt as _;
        let _release = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(fifo);
        w.join().expect("writer");
    }
    out
}

#[test]
fn files_read_once_may_be_pipes_and_are_bounded() {
    // `weir run -f <(envsubst < canary.yaml)`, `weir import -f <(kubectl get
    // rollout -o yaml)`: a pipe is read like a file. What is never a file
    // of its kind (`/dev/zero`, a wrong path to something huge) is refused
    // at a bound, in a short message, before it fills memory.
    let dir = scratch("pipes");
    let fifo = dir.join("in.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let f = fifo.to_str().expect("utf-8");

    // Read through the pipe: the error is about what it held.
    let canary = std::fs::read_to_string(canary_file(
        &dir,
        free_port(),
        free_port(),
        "        - setWeight: 150",
    ))
    .expect("read back");
    let (code, stderr) = weir_with_pipe(&["run", "-f", f], &fifo, Some(canary));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("steps[0].setWeight"), "{stderr}");
    let record = serde_json::json!({
        "name": "piped", "startedAt": "2026-12-06 17:00:00 UTC", "steps": [], "metrics": [],
        "samples": [], "events": [], "ttftCdf": {"stable": [], "canary": []},
        "decision": null, "outcome": null,
    });
    let html = dir.join("piped.html");
    let h = html.to_str().expect("utf-8");
    let (code, stderr) = weir_with_pipe(
        &["report", "--from", f, "-o", h],
        &fifo,
        Some(record.to_string()),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        std::fs::read_to_string(&html)
            .expect("the report")
            .contains("piped"),
        "the report of the piped record"
    );

    // (command, what its bound is far above)
    let cases: [(&[&str], &str); 4] = [
        (
            &["run", "-f", "/dev/zero"],
            "larger than 16 MiB, far more than any config",
        ),
        (
            &["import", "/dev/zero"],
            "larger than 16 MiB, far more than any manifest",
        ),
        (
            &["report", "--from", "/dev/zero", "-o", h],
            "larger than 256 MiB, far more than any recorded run",
        ),
        (
            &["restore", "-f", "/dev/zero"],
            "larger than 256 MiB, far more than any bundle",
        ),
    ];
    for (args, want) in cases {
        let (code, stderr) = weir_with_pipe(args, &fifo, None);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(stderr.len() < 1024, "{args:?}: {} bytes", stderr.len());
    }
}

#[test]
fn record_and_report_paths_are_checked_before_the_run_and_kept_when_it_fails() {
    let dir = scratch("outputs");
    // Nobody listens at either URL: the run fails at preflight.
    let file = canary_file(&dir, free_port(), free_port(), "        - setWeight: 50");
    let f = file.to_str().expect("utf-8");
    let weir = |extra: &[&str]| weir_once(&[&["run", "-f", f][..], extra].concat());
    // A path that cannot be written is refused before anything runs (not
    // after a run it was to record): the error is the flag's, not the
    // backends'.
    let missing = dir.join("no-such-dir/run.json");
    let (code, stderr) = weir(&["--record", missing.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("--record {}: cannot write it", missing.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("does not answer"), "{stderr}");

    // A run that fails leaves an earlier report as it was and no new file.
    let earlier = dir.join("earlier.html");
    std::fs::write(&earlier, "the last run's report").expect("write");
    let new = dir.join("new.json");
    let (code, stderr) = weir(&[
        "--report",
        earlier.to_str().expect("utf-8"),
        "--record",
        new.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("does not answer"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&earlier).expect("still there"),
        "the last run's report"
    );
    assert!(!new.exists(), "a record of a run that never ran");
    assert_eq!(leftovers(&dir), Vec::<String>::new(), "temporary files");
}

/// Hidden files weir left in `dir` (its temporary files start with a dot).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read the scratch directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with('.'))
        .collect()
}

#[test]
fn a_record_that_cannot_be_written_whole_leaves_the_earlier_one_as_it_was() {
    let dir = scratch("full-disk");
    let stable = sim("stable", &["--ttft", "1ms"]);
    let canary = sim("canary", &["--ttft", "1ms"]);
    // No analysis: the canary is promoted as soon as the proxy serves.
    let file = canary_file(&dir, stable.addr, canary.addr, "        - setWeight: 100");
    let earlier = dir.join("run.json");
    std::fs::write(&earlier, "the last run's record").expect("write");
    // The disk fills while the record is written: a file-size limit of one
    // block (512 bytes in dash, 1,024 in bash), below the ~1.6 KB of even
    // this run's record, with SIGXFSZ ignored, so the write fails with
    // EFBIG as on a full disk instead of killing the process.
    let out = std::process::Command::new("sh")
        .args(["-c", r#"ulimit -f 1 && trap '' XFSZ && exec "$@""#, "sh"])
        .arg(env!("CARGO_BIN_EXE_weir"))
        .args([
            "run",
            "-f",
            file.to_str().expect("utf-8"),
            "--output",
            "json",
        ])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--record", earlier.to_str().expect("utf-8")])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let promoted = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|v| v["type"] == "finished" && v["exitCode"] == 0);
    assert!(promoted, "the run itself ended: {stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot write {} (an earlier file there is as it was)",
            earlier.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("too large"), "the cause, EFBIG: {stderr}");
    assert_eq!(
        std::fs::read_to_string(&earlier).expect("still there"),
        "the last run's record"
    );
    assert_eq!(leftovers(&dir), Vec::<String>::new(), "temporary files");

    // Without the limit the record replaces the earlier one, through a
    // symlink (the link stays a link) and with the earlier file's mode.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&earlier, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let link = dir.join("latest.json");
    std::os::unix::fs::symlink(&earlier, &link).expect("symlink");
    let (code, stderr) = weir_once(&[
        "run",
        "-f",
        file.to_str().expect("utf-8"),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--record",
        link.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(link.symlink_metadata().expect("the link").is_symlink());
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(&earlier).expect("the record"))
            .expect("the record is JSON");
    assert!(record["outcome"].is_object(), "{record}");
    let mode = std::fs::metadata(&earlier)
        .expect("the record")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    assert_eq!(leftovers(&dir), Vec::<String>::new(), "temporary files");
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address")
}

#[test]
fn invalid_canary_files_are_refused_before_any_traffic_moves() {
    let dir = scratch("invalid");
    let stable = sim("stable", &["--ttft", "1ms"]);
    let canary = sim("canary", &["--ttft", "1ms"]);
    let good_steps = "        - setWeight: 50\n        - analysis: {}";
    let good = std::fs::read_to_string(canary_file(&dir, stable.addr, canary.addr, good_steps))
        .expect("read back");
    let nobody = free_port();
    // (what is wrong, from, to, the field named, the fix offered)
    let table = [
        (
            "a weight above 100",
            "setWeight: 50",
            "setWeight: 150",
            "steps[0].setWeight",
            "between 0 and 100",
        ),
        (
            "an unknown field",
            "minSamples: 200",
            "minSampels: 200",
            "spec.analysis",
            "minSampels",
        ),
        (
            "analysis with no canary traffic",
            "setWeight: 50",
            "setWeight: 0",
            "steps[1].analysis",
            "setWeight above 0",
        ),
        (
            "a split that can never be judged",
            "setWeight: 50",
            "setWeight: 5",
            "steps[1].analysis",
            "setWeight 50",
        ),
        (
            "a bad duration",
            "analysis: {}",
            "analysis: {maxDuration: soon}",
            "maxDuration",
            "30s",
        ),
        (
            "an unreachable backend",
            &format!("http://{}", canary.addr),
            &format!("http://{nobody}"),
            "spec.backends.canary.url",
            "start the canary",
        ),
    ];
    for (what, from, to, field, fix) in table {
        let text = good.replace(from, to);
        assert_ne!(text, good, "{what}: {from} must occur");
        let path = dir.join("bad.yaml");
        std::fs::write(&path, text).expect("write");
        let listen = free_port();
        let mut run = spawn(
            "weir run (invalid)",
            &[
                "run",
                "-f",
                path.to_str().expect("utf-8"),
                "--listen",
                &listen.to_string(),
                "--admin",
                "127.0.0.1:0",
            ],
        );
        assert_eq!(exit_code(&mut run), 1, "{what}");
        let err = run.stderr.when_closed(Duration::from_secs(5));
        assert!(
            err.contains(field),
            "{what}: the message names {field}: {err}"
        );
        assert!(
            err.contains(fix),
            "{what}: the message says how to fix it ({fix}): {err}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
        // The proxy never listened: no traffic could have moved.
        assert!(
            TcpStream::connect(listen).is_err(),
            "{what}: something listened on {listen}"
        );
        assert!(!run.stdout.text().contains("proxy on"), "{what}");
    }
}

#[test]
fn demo_promotes_a_healthy_canary_and_aborts_every_regression() {
    let _one = one_at_a_time();
    // (scenario, exit code, the metric named on abort)
    let table = [
        ("healthy", 0, None),
        ("slow-ttft", 3, Some("ttft")),
        ("tail", 3, Some("ttft.p95")),
        ("errors", 3, Some("errors")),
        ("gpu-hungry", 3, Some("gpu")),
    ];
    for (scenario, code, metric) in table {
        let mut demo = spawn("weir demo", &["demo", "--scenario", scenario]);
        assert_eq!(
            exit_code(&mut demo),
            code,
            "{scenario}:\n{}",
            demo.stdout.text()
        );
        let out = demo.stdout.when_closed(Duration::from_secs(5));
        match metric {
            None => assert!(out.contains("PROMOTED"), "{scenario}: {out}"),
            Some(m) => {
                let failed = out
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("failed: "))
                    .unwrap_or_else(|| panic!("{scenario}: no failed line:\n{out}"));
                assert!(
                    failed.contains(m),
                    "{scenario}: failed {failed}, expected {m}"
                );
            }
        }
    }
}
