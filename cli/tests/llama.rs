//! weir against a real inference server: llama.cpp's OpenAI server
//! (`llama-cpp-python`, compiled from PyPI by tests/run's venv) serving tiny
//! seeded LLaMA models that tests/llama/models.py writes.
//!
//! What they show, every token really computed by llama.cpp:
//! - the real `openai` client streams through `weir proxy`, and for every
//!   request the proxy's record (outcome, output tokens, TTFT) agrees with
//!   what the client saw and with the server's own count;
//! - real failures (the server not yet listening, a prompt beyond the
//!   context window, the client hanging up, the server killed mid-stream)
//!   are each classified as DESIGN.md says, none as a success, and the
//!   proxy lives on;
//! - `weir run` between two real servers: the same model is promoted; the
//!   larger model as canary is aborted on TTFT; a canary whose context is
//!   too small for a share of the prompts is aborted on errors.
//!
//! Load stays within what 2 cores serve: each server has one thread, the
//! runs take one at a time, and nothing asserts on wall-clock speed: the
//! verdicts come from weir's statistics on what the streams did.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use weir_test_kit::poll;

mod common;
mod llama_server;
use common::proxy_process::proxy;
use common::run_process::{weir_run, weir_run_with};
use common::{Proc, scratch, spawn};
use llama_server::{ALIAS, Llama, client, get, get_json, llama, models};

/// Longest a `weir run` may take here (its own maxDuration is shorter).
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// Latency comparisons and loads take the machine one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A `weir proxy` config sending everything to one backend (cohort stable).
fn proxy_config(dir: &Path, backend: SocketAddr) -> PathBuf {
    let text = format!(
        "listen: 127.0.0.1:1\nadmin: 127.0.0.1:2\nroutes:\n  - name: chat\n    match: {{pathPrefix: /}}\n    backends:\n      - {{cohort: stable, url: http://{backend}, weight: 100}}\n"
    );
    let path = dir.join("proxy.yaml");
    std::fs::write(&path, text).expect("write proxy config");
    path
}

// ---------------------------------------------------------------------------
// The proxy's observations

/// One cohort's cumulative figures, from `/v1/observations`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Figures {
    requests: u64,
    ok: u64,
    output_tokens: u64,
    ttft_count: u64,
    ttft_sum: f64,
}

/// The figures of cohort `stable` in an observations document (zeros
/// before its first request).
fn figures(doc: &Value) -> Figures {
    let Some(c) = doc["cohorts"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["cohort"] == "stable"))
    else {
        return Figures::default();
    };
    let requests = c["requests"]
        .as_object()
        .map_or(0, |r| r.values().filter_map(Value::as_u64).sum());
    let ttft = &c["ttftSeconds"];
    let ttft_count = ttft["zero"].as_u64().unwrap_or(0)
        + ttft["bins"].as_array().map_or(0, |bins| {
            bins.iter().filter_map(|b| b[1].as_u64()).sum::<u64>()
        });
    Figures {
        requests,
        ok: c["requests"]["ok"].as_u64().unwrap_or(0),
        output_tokens: c["outputTokens"].as_u64().unwrap_or(0),
        ttft_count,
        ttft_sum: ttft["sum"].as_f64().unwrap_or(0.0),
    }
}

/// Outcome counts of cohort `stable`.
fn outcomes(admin: SocketAddr) -> Value {
    let doc = get_json(admin, "/v1/observations");
    doc["cohorts"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["cohort"] == "stable"))
        .map_or(Value::Null, |c| c["requests"].clone())
}

fn count(outcomes: &Value, outcome: &str) -> u64 {
    outcomes[outcome].as_u64().unwrap_or(0)
}

#[test]
fn the_openai_client_the_proxy_and_the_server_agree_on_every_request() {
    let _one = one_at_a_time();
    let dir = scratch("agree");
    let server = llama("llama", &models().small, 512);
    let proxy = proxy(&proxy_config(&dir, server.addr));
    let n: usize = 20;
    let seen = client(
        &[
            "agree",
            &format!("http://{}/v1", proxy.listen),
            &format!("http://{}", proxy.admin),
            &server.v1(),
            &n.to_string(),
        ],
        Duration::from_secs(300),
    );
    let requests = seen["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), n);
    let mut before = figures(&seen["before"]);
    let (mut tokens, mut partial) = (0, 0);
    for (i, r) in requests.iter().enumerate() {
        let after = figures(&r["after"]);
        let usage = r["usage"].as_u64().expect("the server's usage");
        assert_eq!(after.requests - before.requests, 1, "request {i}: {r}");
        assert_eq!(after.ok - before.ok, 1, "request {i} is ok: {r}");
        assert!(r["finish"].is_string(), "request {i} finished: {r}");
        // The server's count (usage of the same greedy completion), the
        // client's (one chunk per token) and the proxy's agree.
        assert_eq!(r["token_events"], usage, "request {i}: {r}");
        assert_eq!(
            after.output_tokens - before.output_tokens,
            usage,
            "request {i}: the proxy counts the tokens the server generated: {r}"
        );
        // The proxy's TTFT lies inside the client's: it starts later (the
        // request reaches it after leaving the client) and ends earlier (the
        // first chunk passes it before reaching the client).
        assert_eq!(after.ttft_count - before.ttft_count, 1, "request {i}");
        let proxy_ttft = after.ttft_sum - before.ttft_sum;
        let client_ttft = r["ttft"].as_f64().expect("client ttft");
        assert!(
            proxy_ttft > 0.0 && proxy_ttft <= client_ttft + 1e-6,
            "request {i}: proxy TTFT {proxy_ttft}s, client {client_ttft}s"
        );
        tokens += usage;
        partial += usage - r["content_events"].as_u64().expect("content events");
        before = after;
    }
    eprintln!(
        "{n} requests, {tokens} tokens by usage, {partial} of them streamed as empty content (partial UTF-8)"
    );
    // The byte-level models emit partial characters: counting non-empty
    // content events would have missed these.
    assert!(partial > 0, "no partial-character tokens in {tokens}");
}

// ---------------------------------------------------------------------------
// Real failures

/// Sends a chat completion request through `addr` on a new connection
/// (`Connection: close`) and returns the connection to read the answer.
fn send_chat(addr: SocketAddr, prompt: &str, max_tokens: u32, stream: bool) -> TcpStream {
    let body = serde_json::json!({
        "model": ALIAS,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": stream,
    })
    .to_string();
    let mut s = TcpStream::connect(addr).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    s
}

/// The status code of an HTTP/1.1 status line (0 when it is not one).
fn status_of(line: &str) -> u16 {
    line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A streamed chat request through `addr`; returns the stream once the
/// status line and the first SSE data line have arrived, or the status
/// when it is not 200.
fn open_stream(
    addr: SocketAddr,
    prompt: &str,
    max_tokens: u32,
) -> Result<BufReader<TcpStream>, u16> {
    let mut r = BufReader::new(send_chat(addr, prompt, max_tokens, true));
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = status_of(&line);
    if status != 200 {
        return Err(status);
    }
    loop {
        line.clear();
        let n = r.read_line(&mut line).expect("a line of the stream");
        assert!(n > 0, "the stream ended before its first event");
        if line.contains("data: {") {
            return Ok(r);
        }
    }
}

/// A chat completion through `addr` (8 tokens at most); the status and
/// the body as sent (chunked framing included).
fn post_chat(addr: SocketAddr, prompt: &str, stream: bool) -> (u16, String) {
    let mut text = String::new();
    let _ = send_chat(addr, prompt, 8, stream).read_to_string(&mut text);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status_of(&text), body.to_string())
}

/// Waits until the proxy's counts of cohort stable satisfy `holds`.
fn wait_outcomes(admin: SocketAddr, what: &str, holds: impl Fn(&Value) -> bool) -> Value {
    poll::until_blocking(what, Duration::from_secs(60), || {
        let now = outcomes(admin);
        if holds(&now) { Ok(now) } else { Err(now) }
    })
}

#[test]
fn real_failures_are_classified_none_as_success_and_the_proxy_lives_on() {
    let _one = one_at_a_time();
    let dir = scratch("failures");
    let models = models();
    let addr = common::free_addr();
    let proxy = proxy(&proxy_config(&dir, addr));

    // Not yet ready: llama_cpp.server loads its model before it listens,
    // so until then a request finds nothing on the port. Poll through the
    // proxy while it loads: every look before the first 200 is a 502 the
    // proxy counts as connect_error.
    let mut cmd = llama_server::command(&models.large, addr, 512);
    cmd.env("WEIR_TEST", "llama");
    let mut server = Llama {
        proc: common::spawn_command("llama (loading)", cmd),
        addr,
    };
    let mut refused = 0;
    poll::until_blocking(
        "the server to answer through the proxy",
        llama_server::LOADING,
        || match get(proxy.listen, "/v1/models") {
            Some((200, _)) => Some(()),
            Some((502, _)) => {
                refused += 1;
                None
            }
            other => panic!("while loading, the proxy answered {other:?}"),
        },
    );
    llama_server::ready("llama", &mut server.proc, addr);
    // The poll can read the answer before the proxy has recorded it (the
    // record follows the last write).
    let seen = wait_outcomes(proxy.admin, "the answer recorded", |o| count(o, "ok") >= 1);
    assert!(refused > 0, "the first look came after the server was up");
    assert_eq!(count(&seen, "connect_error"), refused, "{seen}");
    assert_eq!(count(&seen, "ok"), 1, "{seen}");

    // A prompt beyond the context window (one token per byte, 512
    // tokens), not streamed: llama.cpp answers 400 context_length_exceeded,
    // the client's error, neutral to the cohort.
    let long = "canary ".repeat(100);
    let (status, body) = post_chat(proxy.listen, &long, false);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("context_length_exceeded"), "{body}");
    wait_outcomes(proxy.admin, "the overflow's client_error", |o| {
        count(o, "client_error") == 1
    });

    // The client hangs up mid-stream: client_abort, neutral too.
    let stream = open_stream(proxy.listen, "Tell a long story.", 2000).expect("a stream");
    drop(stream);
    wait_outcomes(proxy.admin, "the hang-up's client_abort", |o| {
        count(o, "client_abort") == 1
    });

    // Streamed, the same prompt gets 200 and an empty body: no event, no
    // finish, a stream_error. Other tools see a success here.
    let (status, body) = post_chat(proxy.listen, &long, true);
    assert_eq!(
        (status, body.as_str()),
        (200, "0\r\n\r\n"),
        "an empty chunked body"
    );
    wait_outcomes(proxy.admin, "the streamed overflow's stream_error", |o| {
        count(o, "stream_error") == 1
    });

    // The server is killed mid-stream: the stream ends without a finish.
    // After the empty stream above the server closed its connection,
    // though it had said keep-alive; a request the proxy sends on it before
    // it notices gets a 502 (a server_error). Those are counted here.
    let mut bad_gateways = 0;
    let mut stream = loop {
        match open_stream(proxy.listen, "Tell a long story.", 2000) {
            Ok(stream) => break stream,
            Err(502) if bad_gateways < 3 => bad_gateways += 1,
            Err(status) => panic!("a stream through the proxy got {status}"),
        }
    };
    server.proc.signal(Signal::SIGKILL);
    let mut rest = String::new();
    let _ = stream.read_to_string(&mut rest);
    assert!(!rest.contains("[DONE]"), "{rest}");
    let seen = wait_outcomes(proxy.admin, "the killed stream's stream_error", |o| {
        count(o, "stream_error") == 2
    });
    eprintln!("outcomes: {seen}; 502s on a connection the server had closed: {bad_gateways}");
    assert_eq!(count(&seen, "server_error"), bad_gateways, "{seen}");
    assert_eq!(count(&seen, "ok"), 1, "none of the failures is ok: {seen}");
    assert_eq!(count(&seen, "connect_error"), refused, "{seen}");

    // The meter lives on: the proxy still serves and reports.
    assert_eq!(get(proxy.admin, "/healthz").map(|(s, _)| s), Some(200));
    drop(server);
}

// ---------------------------------------------------------------------------
// weir run between two real servers

/// A Canary for two local backends judged on TTFT (p50) and errors, both
/// servers warmed by hand: a 5 s warm-up.
fn canary_file(dir: &Path, stable: &Llama, canary: &Llama) -> PathBuf {
    canary_file_with(dir, stable, canary, "    warmup: 5s\n", VERSION_METRICS)
}

/// What the version runs judge: TTFT's median and errors within a point.
const VERSION_METRICS: &str =
    "      - {name: ttft, kind: latency, quantiles: [0.5], maxIncrease: 20%}
      - {name: errors, kind: errorRate, maxIncrease: 1pp, hardLimit: 5%}
";

/// The same Canary with `warmup` (lines under `analysis:`, empty for the
/// defaults) and `metrics` (the list's lines).
fn canary_file_with(
    dir: &Path,
    stable: &Llama,
    canary: &Llama,
    warmup: &str,
    metrics: &str,
) -> PathBuf {
    let text = format!(
        r#"apiVersion: weir.dev/v1alpha1
kind: Canary
metadata: {{name: chat}}
spec:
  backends:
    stable: {{url: "http://{}"}}
    canary: {{url: "http://{}"}}
  strategy:
    canary:
      steps:
        - setWeight: 50
        - analysis: {{minDuration: 10s, maxDuration: 150s}}
  analysis:
    interval: 2s
{warmup}    minSamples: 150
    metrics:
{metrics}"#,
        stable.addr, canary.addr
    );
    let path = dir.join("canary.yaml");
    std::fs::write(&path, text).expect("write canary file");
    path
}

/// `weir load` with llama-sized requests through `proxy`.
fn weir_load(proxy: SocketAddr, rate: u32, seconds: u32) -> Proc {
    spawn(
        "weir load",
        &[
            "load",
            "--url",
            &format!("http://{proxy}"),
            "--model",
            ALIAS,
            "--max-tokens",
            "16",
            "--rate",
            &rate.to_string(),
            "--duration",
            &format!("{seconds}s"),
        ],
    )
}

/// How a run ended: its exit code and its `finished` line.
fn finish(run: &mut Proc) -> (i32, Value) {
    let status = run
        .wait_exit(RUN_LIMIT)
        .unwrap_or_else(|| panic!("weir run still running after {RUN_LIMIT:?}"));
    let finished = run
        .stdout
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "finished")
        .unwrap_or_else(|| panic!("no finished line:\n{}", run.stdout.text()));
    (status.code().expect("exited, not killed"), finished)
}

/// The metrics the decision found beyond their margins.
fn exceeded(finished: &Value) -> Vec<String> {
    finished["decision"]["metrics"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| m["finding"] == "exceeds")
                .filter_map(|m| m["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Both servers answered 20 requests before the run: item 4 of issue 16
/// is about a cold canary; these runs are about versions.
fn warm(servers: &[&Llama]) {
    for s in servers {
        client(&["warm", &s.v1(), "20"], Duration::from_secs(120));
    }
}

#[test]
fn weir_run_promotes_the_same_model_and_aborts_the_larger_one_on_ttft() {
    let _one = one_at_a_time();
    let models = models();
    // (canary model, exit code, metric named on abort)
    let cases = [
        ("same model", &models.small, 0, None),
        ("8x256 model", &models.large, 3, Some("ttft")),
    ];
    for (what, canary_model, code, metric) in cases {
        let dir = scratch(&format!("run-{}", what.replace(' ', "-")));
        let stable = llama("stable", &models.small, 512);
        let canary = llama("canary", canary_model, 512);
        warm(&[&stable, &canary]);
        let (mut run, listen, _admin) = weir_run(&canary_file(&dir, &stable, &canary));
        let _load = weir_load(listen, 20, 170);
        let (exit, finished) = finish(&mut run);
        eprintln!("{what}: exit {exit}: {finished}");
        assert_eq!(exit, code, "{what}:\n{}", run.stdout.text());
        let decision = &finished["decision"];
        assert!(
            decision["metrics"].is_array(),
            "{what}: numbers: {finished}"
        );
        match metric {
            None => assert_eq!(decision["verdict"], "promote", "{what}: {finished}"),
            Some(m) => {
                assert_eq!(decision["verdict"], "abort", "{what}: {finished}");
                let names = exceeded(&finished);
                assert!(names.iter().any(|n| n.starts_with(m)), "{what}: {names:?}");
                let message = finished["message"].as_str().unwrap_or_default();
                assert!(message.contains(m), "{what}: {message}");
            }
        }
    }
}

#[test]
fn weir_run_aborts_a_canary_whose_context_is_too_small_for_some_prompts() {
    let _one = one_at_a_time();
    let models = models();
    let dir = scratch("run-context");
    // A request needs ~36 tokens of chat template, one per prompt byte and
    // up to 27 generated (llama.cpp overshoots max_tokens 24). Prompts of
    // 8..100 bytes: those over ~65 bytes (~38%) do not fit the canary's
    // 128-token window (over 92 the prompt alone: 200 and an empty stream;
    // below, the server fails when generation reaches the window's end);
    // all fit the stable's 512.
    let stable = llama("stable", &models.small, 512);
    let canary = llama("canary", &models.small, 128);
    warm(&[&stable, &canary]);
    let (mut run, listen, _admin) = weir_run(&canary_file(&dir, &stable, &canary));
    // Streamed chats with prompts of varied length, by the openai client
    // (killed when the test ends).
    let mut load = Command::new(weir_test_kit::python::openai());
    load.arg(llama_server::script("client.py")).args([
        "load",
        &format!("http://{listen}/v1"),
        "20",
        "170",
        "8",
        "100",
    ]);
    let _load = common::spawn_command("load", load);
    let (exit, finished) = finish(&mut run);
    eprintln!("small context: exit {exit}: {finished}");
    assert_eq!(exit, 3, "{}", run.stdout.text());
    assert_eq!(finished["decision"]["verdict"], "abort", "{finished}");
    let names = exceeded(&finished);
    assert!(names.iter().any(|n| n.starts_with("errors")), "{names:?}");
    let errors = finished["decision"]["metrics"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == "errors"))
        .unwrap_or_else(|| panic!("the errors metric's numbers: {finished}"));
    assert!(errors["canary_n"].as_u64() > Some(0), "{errors}");
    assert!(errors["canary_value"].as_f64() > Some(0.05), "{errors}");
    let message = finished["message"].as_str().unwrap_or_default();
    assert!(message.contains("errors"), "{message}");
}

// ---------------------------------------------------------------------------
// A cold canary is not a slow canary (issue 16, item 4)

/// Cold-canary runs: enough that an abort would show, few enough for the
/// suite's time (each waits out the default 60 s warm-up).
const COLD_RUNS: usize = 5;

/// What the cold-canary runs judge: TTFT's shift (the typical request) and
/// p95 (a cold start lives in the tail: the issue's abort was on p95), and
/// errors with a margin wide enough to settle quickly (a cold start is not
/// an error; the hard limit still catches a broken canary).
///
/// Not p50: this server's TTFTs have two modes (about 5 and 10 ms; the
/// median of each 2 s interval jumps between them), and the median falls
/// between them, where few values lie. The interval of the ratio of
/// medians stayed about ±40% wide after 90 s of evidence while the
/// shift's and p95's were within ±6% (on 2026-12-06, 4 of 5 runs judging
/// p50 ended undecided at `maxDuration`, 150 s each, on p50 alone). It
/// could not have caught a cold start the shift and p95 miss, and cost the
/// suite about 6 minutes.
const COLD_METRICS: &str =
    "      - {name: ttft, kind: latency, quantiles: [0.95], maxIncrease: 20%}
      - {name: errors, kind: errorRate, maxIncrease: 5pp, hardLimit: 5%}
";

/// The decision's TTFT effects, one line each: `ttft.p50 +3.1%
/// [-2.0%, +8.3%] within`.
fn ttft_effects(finished: &Value) -> Vec<String> {
    finished["decision"]["metrics"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| m["role"] != "reference")
                .filter(|m| m["name"].as_str().is_some_and(|n| n.starts_with("ttft.")))
                .map(|m| {
                    let pct = |v: &Value| {
                        v.as_f64()
                            .map_or_else(|| "?".into(), |v| format!("{:+.1}%", v * 100.0))
                    };
                    format!(
                        "{} {} [{}, {}] {}",
                        m["name"].as_str().unwrap_or_default(),
                        pct(&m["estimate"]),
                        pct(&m["ci_low"]),
                        pct(&m["ci_high"]),
                        m["finding"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_freshly_started_canary_is_never_aborted_at_the_default_warmup() {
    let _one = one_at_a_time();
    let models = models();
    // Stable's server is warm, like pods that have served for a while;
    // each canary is started fresh and gets its first requests from the
    // run, like a new pod. No warm-up is written: the defaults hold.
    let stable = llama("stable", &models.small, 512);
    warm(&[&stable]);
    let mut outcomes = Vec::new();
    for i in 1..=COLD_RUNS {
        let dir = scratch(&format!("cold-{i}"));
        let canary = llama("canary", &models.small, 512);
        let record = dir.join("run.json");
        let (mut run, listen, _admin) = weir_run_with(
            &canary_file_with(&dir, &stable, &canary, "", COLD_METRICS),
            &["--record", record.to_str().expect("utf-8 path")],
        );
        let _load = weir_load(listen, 20, 230);
        let (exit, finished) = finish(&mut run);
        let ttft = ttft_effects(&finished);
        eprintln!("cold canary, run {i}: exit {exit}: {ttft:?}");
        assert!(
            exit == 0 || exit == 4,
            "run {i}: a cold canary of the same model must be promoted or undecided, never aborted (exit {exit}): {finished}"
        );
        // The report shows the cold start: the intervals before the window
        // opened, the canary's warm-up count, and where evidence began.
        let rec: Value =
            serde_json::from_str(&std::fs::read_to_string(&record).expect("the run's record"))
                .expect("the record is JSON");
        let samples = rec["samples"].as_array().expect("samples");
        let warming = samples.iter().filter(|s| s["warmup"].is_object()).count();
        assert!(warming > 0, "run {i}: no sample shows the warm-up: {rec}");
        let opened = rec["events"]
            .as_array()
            .and_then(|es| es.iter().find(|e| e["reason"] == "WarmedUp"))
            .unwrap_or_else(|| panic!("run {i}: no WarmedUp event: {rec}"));
        let p95: Vec<String> = samples
            .iter()
            .filter_map(|s| s["cohorts"]["canary"]["ttftP95"].as_f64())
            .take(12)
            .map(|v| format!("{:.0}", v * 1000.0))
            .collect();
        eprintln!(
            "  canary TTFT p95 per interval (ms), first 12: {p95:?}; {}",
            opened["message"]
        );
        let html = dir.join("report.html");
        let out = common::command(&[
            "report",
            "--from",
            record.to_str().expect("utf-8 path"),
            "-o",
            html.to_str().expect("utf-8 path"),
        ])
        .output()
        .expect("weir report runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let page = std::fs::read_to_string(&html).expect("the report");
        assert!(
            page.contains("Canary warmed up at"),
            "run {i}: the report says where evidence began"
        );
        outcomes.push((exit, ttft));
    }
    eprintln!("{COLD_RUNS} cold canaries: {outcomes:?}");
}
