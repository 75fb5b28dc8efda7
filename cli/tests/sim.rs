//! `weir sim` serving several models and `weir load` sending a mix of
//! them, as processes: the command lines of issue 17's canaries of a model
//! name, and the usage errors a mistyped `--model` gets.

use std::time::Duration;

use serde_json::Value;

mod common;
use common::{sim, spawn};

const EXIT: Duration = Duration::from_secs(60);

/// Runs `weir ARGS` to its end: exit code, stdout, stderr.
fn weir(args: &[&str]) -> (i32, String, String) {
    let mut proc = spawn(&format!("weir {}", args[0]), args);
    let status = proc
        .wait_exit(EXIT)
        .unwrap_or_else(|| panic!("weir {args:?} still running after {EXIT:?}"));
    (
        status.code().expect("exited, not killed"),
        proc.stdout.when_closed(EXIT),
        proc.stderr.when_closed(EXIT),
    )
}

#[test]
fn a_mistyped_model_is_a_usage_error_naming_the_model_and_the_key() {
    for (args, wants) in [
        (
            &[
                "--model",
                "chat-lora-v7",
                "--model",
                "chat-lora-v8:itll=13ms",
            ][..],
            &["chat-lora-v8", "unknown key \"itll\"", "keys: ttft"][..],
        ),
        (
            &["--model", "chat-lora-v8:length-share=1.3"],
            &["chat-lora-v8", "length-share", "fraction"],
        ),
        (
            &[
                "--length-share",
                "0.8",
                "--model",
                "a",
                "--model",
                "b:empty-share=0.3",
            ],
            &["model \"b\"", "empty-share", "--model b:"],
        ),
        (&["--model", "a", "--model", "a"], &["declared twice"]),
    ] {
        let argv = [&["sim", "--listen", "127.0.0.1:0"][..], args].concat();
        let (code, _, stderr) = weir(&argv);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        for want in wants {
            assert!(
                stderr.contains(want),
                "{args:?}: {want:?} missing from {stderr}"
            );
        }
    }
    let (code, _, stderr) = weir(&["load", "--url", "http://127.0.0.1:9", "--model", "a=-1"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("positive"), "{stderr}");
}

#[test]
fn one_sim_serves_two_adapters_and_load_reports_each() {
    let pool = sim(
        "pool",
        &[
            "--ttft",
            "5ms",
            "--itl",
            "1ms",
            "--tokens",
            "4",
            "--model",
            "chat-lora-v7",
            "--model",
            "chat-lora-v8:tokens=8,length-share=0.5",
        ],
    );
    let (code, stdout, stderr) = weir(&[
        "load",
        "--url",
        &format!("http://{}", pool.addr),
        "--rate",
        "200",
        "--duration",
        "1s",
        "--seed",
        "5",
        "--model",
        "chat-lora-v7=1",
        "--model",
        "chat-lora-v8=1",
        "--prompt-tokens",
        "50..500",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    let sent = report["sent"].as_u64().expect("sent");
    assert_eq!(report["outcomes"]["ok"], sent, "{report}");
    let models = &report["models"];
    let (v7, v8) = (&models["chat-lora-v7"], &models["chat-lora-v8"]);
    let requests = |m: &Value| m["requests"].as_u64().expect("requests");
    assert_eq!(requests(v7) + requests(v8), sent);
    // Binomial(200, 0.5): sd 7.1; 4.5 sd either side of 100.
    assert!(
        (requests(v8) as f64 - sent as f64 / 2.0).abs() <= 4.5 * (sent as f64 / 4.0).sqrt(),
        "{report}"
    );
    assert_eq!(v7["tokens"].as_u64(), Some(4 * requests(v7)));
    assert_eq!(v7["finished_length"], 0);
    assert_eq!(v8["tokens"].as_u64(), Some(8 * requests(v8)));
    assert!(v8["finished_length"].as_u64() > Some(0), "{report}");

    // A name the pool does not serve is refused with 404s.
    let (code, stdout, stderr) = weir(&[
        "load",
        "--url",
        &format!("http://{}", pool.addr),
        "--rate",
        "20",
        "--duration",
        "500ms",
        "--model",
        "chat-lora-v9",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    assert_eq!(report["http_statuses"]["404"], report["sent"], "{report}");
}

/// `GET /health` on a new connection: whether it was answered 200.
fn healthy(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(EXIT));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

#[test]
fn a_shutdown_delay_keeps_answering_after_sigterm_as_a_prestop_sleep_does() {
    use nix::sys::signal::Signal;
    let mut proc = spawn(
        "sim",
        &["sim", "--listen", "127.0.0.1:0", "--shutdown-delay", "20s"],
    );
    let addr = proc
        .stderr
        .wait_for(EXIT, |t| {
            common::between(t, " on http://", "/v1").map(String::from)
        })
        .expect("the sim starts");
    assert!(healthy(&addr), "answers before the signal");
    proc.signal(Signal::SIGTERM);
    // The signal was taken (the line it prints then), and a new
    // connection is still answered: callers that resolved this pod just
    // before it left its Service's endpoints still reach it.
    proc.stderr
        .wait_for(EXIT, |t| {
            t.contains("still accepting for 20s").then_some(())
        })
        .unwrap_or_else(|| panic!("the signal was not taken: {}", proc.stderr.text()));
    assert!(healthy(&addr), "a new connection after SIGTERM is answered");
    // Once the delay is over it stops accepting and exits.
    let status = proc.wait_exit(EXIT).expect("exits after the delay");
    assert!(status.success(), "{status:?}");
    assert!(!healthy(&addr), "nothing answers once it exited");
}
