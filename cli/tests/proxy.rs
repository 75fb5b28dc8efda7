//! `weir proxy` as an operator runs it: real `weir sim` and `weir proxy`
//! processes on loopback, spoken to over raw TCP and by the real Python
//! `openai` client.
//!
//! What only whole processes can show: SIGTERM drains open streams and then
//! exits 0 (at once when idle), two processes given one table send every
//! session to the same cohort, hostile bytes neither kill nor hang it, and
//! a bad config is refused at startup and ignored on reload. What the proxy
//! adds to latency is a benchmark's to measure (bench/proxy, side by side
//! with nginx and HAProxy), not a test's: a test asserting on wall-clock
//! time fails whenever the machine is busy.
//!
//! Every process listens on port 0 and the test reads the address it got
//! from the process's startup line, so tests never race for ports. A child
//! is killed when its guard drops, also when an assertion fails (its stderr
//! is printed then). Waits are on conditions (a line on stderr, a metric, a
//! refused connection), each with a deadline.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use weir_proxy::metrics::INFLIGHT_REQUESTS;
use weir_proxy::route::COHORT_HEADER;
use weir_sim::text::completion_text;

mod common;
use common::proxy_process::{Proxy, proxy, proxy_in_env, proxy_with};
use common::{Sim, between, scratch, sim, spawn};
use weir_test_kit::poll::until_blocking;
use weir_test_kit::python;

/// Longest wait for one socket read or write before calling it a hang.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes read from one connection: a runaway response ends the read.
const MAX_RESPONSE: u64 = 16 << 20;
/// Sims that answer at once: for tests about routing, not timing.
const FAST: &[&str] = &["--ttft", "1ms", "--ttft-sigma", "0", "--itl", "1ms"];

// ---------------------------------------------------------------------------
// Config files

/// A config file with these routes. `listen` and `admin` are placeholders:
/// [`proxy`] overrides both with port 0.
fn config(routes: &str) -> String {
    format!("listen: 127.0.0.1:1\nadmin: 127.0.0.1:2\nroutes:\n{routes}")
}

/// Writes `dir/proxy.yaml` with the one `chat` route over these backends.
fn write_chat_config(dir: &Path, sticky: bool, backends: &[(&str, SocketAddr, f64)]) -> PathBuf {
    let cfg = dir.join("proxy.yaml");
    std::fs::write(&cfg, config(&chat_route(sticky, backends))).expect("write config");
    cfg
}

/// One route named `chat` taking everything, over these backends.
fn chat_route(sticky: bool, backends: &[(&str, SocketAddr, f64)]) -> String {
    let mut out = String::from("  - name: chat\n    match: {pathPrefix: /}\n");
    if sticky {
        out.push_str("    sticky: {header: x-session-id}\n");
    }
    out.push_str("    backends:\n");
    for (cohort, addr, weight) in backends {
        out.push_str(&format!(
            "      - {{cohort: {cohort}, url: http://{addr}, weight: {weight}}}\n"
        ));
    }
    out
}

/// Replaces `path` by renaming a complete file over it, as editors and
/// ConfigMap updates do, so the proxy never reads half a file.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

// ---------------------------------------------------------------------------
// HTTP/1.1 over a plain TcpStream

/// One response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

/// Reads one response: status line, headers, and the body framed by
/// `transfer-encoding: chunked`, `content-length` or the end of stream.
fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let status_line = read_line(r)?;
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("not a status line: {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("not a header: {line:?}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    if reply
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = read_line(r)?;
            let hex = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(hex, 16)
                .map_err(|_| invalid(format!("not a chunk size: {size_line:?}")))?;
            if size == 0 {
                while !read_line(r)?.is_empty() {}
                break;
            }
            let start = reply.body.len();
            reply.body.resize(start + size, 0);
            r.read_exact(&mut reply.body[start..])?;
            read_line(r)?;
        }
    } else if let Some(len) = reply.header("content-length") {
        let len: usize = len.parse().map_err(|_| invalid("content-length"))?;
        reply.body.resize(len, 0);
        r.read_exact(&mut reply.body)?;
    } else if reply.status != 204 && reply.status != 304 {
        r.read_to_end(&mut reply.body)?;
    }
    Ok(reply)
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Sends `request` on a new connection and reads the response.
fn exchange(addr: SocketAddr, request: &[u8]) -> io::Result<Reply> {
    let mut stream = connect(addr)?;
    stream.write_all(request)?;
    read_reply(&mut BufReader::new(stream.take(MAX_RESPONSE)))
}

fn get(path: &str, host: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}\r\n")
        .into_bytes()
}

/// A streaming chat completion.
fn chat(host: &str) -> Vec<u8> {
    let body = r#"{"model":"weir-sim","messages":[{"role":"user","content":"Say something."}],"stream":true}"#;
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Tokens in an SSE chat stream (one content delta per token).
fn content_deltas(body: &str) -> usize {
    body.matches(r#""delta":{"content":"#).count()
        + body.matches(r#""role":"assistant","content":"#).count()
}

fn admin(proxy: &Proxy, path: &str) -> Reply {
    exchange(proxy.admin, &get(path, "admin", ""))
        .unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
}

/// Requests in flight in the proxy, summed over routes and cohorts.
fn inflight(proxy: &Proxy) -> f64 {
    let metrics = admin(proxy, "/metrics").text();
    metrics
        .lines()
        .filter(|l| l.starts_with(INFLIGHT_REQUESTS) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn routes(proxy: &Proxy) -> Value {
    let reply = admin(proxy, "/v1/routes");
    serde_json::from_slice(&reply.body).expect("/v1/routes is JSON")
}

/// The weights of route `chat`, in backend order.
fn weights(routes: &Value) -> Vec<f64> {
    routes["table"]["routes"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["weight"].as_f64().expect("weight"))
        .collect()
}

/// The cohort of each of `n` sessions, as the proxy's header reports it,
/// checked against the sim that actually answered (sims are named after
/// their cohort).
fn cohorts(listen: SocketAddr, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let session = format!("x-session-id: session-{i}\r\n");
            let reply = exchange(listen, &get("/v1/models", "chat", &session))
                .unwrap_or_else(|e| panic!("session-{i}: {e}"));
            assert_eq!(reply.status, 200, "session-{i}: {}", reply.text());
            let cohort = reply.header(COHORT_HEADER).expect("cohort header");
            assert_eq!(reply.header("x-weir-sim"), Some(cohort), "session-{i}");
            cohort.to_string()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Python

/// Runs `cli/tests/proxy_openai.py ARGS` with the real `openai` client
/// (killed after `timeout`) and returns the JSON it prints.
fn openai_script(args: &[&str], timeout: Duration) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proxy_openai.py");
    let script = script.to_str().expect("a UTF-8 path");
    let all: Vec<&str> = std::iter::once(script)
        .chain(args.iter().copied())
        .collect();
    python::run_json(&python::openai(), &all, timeout)
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn sigterm_with_fifty_open_streams_drains_them_refuses_new_connections_and_exits_0() {
    let dir = scratch("drain");
    // ~2 s streams: 50 ms to the first token, then 49 gaps of 40 ms.
    let tokens = 50;
    let long = [
        "--ttft",
        "50ms",
        "--ttft-sigma",
        "0",
        "--itl",
        "40ms",
        "--tokens",
        "50",
    ];
    let (stable, canary) = (sim("stable", &long), sim("canary", &long));
    // No gracePeriod: the default 30 s, far beyond the streams' 2 s.
    let cfg = write_chat_config(
        &dir,
        false,
        &[("stable", stable.addr, 50.0), ("canary", canary.addr, 50.0)],
    );
    let mut proxy = proxy(&cfg);

    let listen = proxy.listen;
    let clients: Vec<JoinHandle<io::Result<(Reply, Instant)>>> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let reply = exchange(listen, &chat("chat"))?;
                Ok((reply, Instant::now()))
            })
        })
        .collect();
    until_blocking(
        "50 streams open in the proxy",
        Duration::from_secs(20),
        || (inflight(&proxy) >= 50.0).then_some(()),
    );

    let signalled = Instant::now();
    proxy.proc.signal(Signal::SIGTERM);
    let draining: usize = proxy
        .proc
        .stderr
        .wait_for(IO_TIMEOUT, |t| {
            between(t, "draining ", " open request").map(String::from)
        })
        .expect("the proxy says it drains")
        .parse()
        .expect("a count");
    // New connections are refused while the old streams still run.
    until_blocking("the listener to refuse connections", IO_TIMEOUT, || {
        match TcpStream::connect_timeout(&listen, IO_TIMEOUT) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    });
    let open_when_refused = inflight(&proxy);
    assert!(
        open_when_refused > 0.0 && proxy.proc.alive(),
        "connections must be refused during the drain, not only after it"
    );
    assert_eq!(
        admin(&proxy, "/readyz").status,
        503,
        "/readyz while draining"
    );

    let mut last_end = signalled;
    for (i, client) in clients.into_iter().enumerate() {
        let (reply, ended) = client
            .join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("stream {i} failed: {e}"));
        let body = reply.text();
        assert_eq!(reply.status, 200, "stream {i}: {body}");
        assert!(reply.header(COHORT_HEADER).is_some(), "stream {i}");
        assert_eq!(content_deltas(&body), tokens, "stream {i}: {body}");
        assert!(body.contains(r#""finish_reason":"stop""#), "stream {i}");
        assert!(body.contains("data: [DONE]"), "stream {i}: {body}");
        last_end = last_end.max(ended);
    }
    let status = proxy
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("the proxy exits after the drain");
    let exit_after_last = last_end.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        exit_after_last < Duration::from_secs(5),
        "exited {exit_after_last:?} after the last stream ended"
    );
    let stderr = proxy.proc.stderr.when_closed(IO_TIMEOUT);
    assert!(!stderr.contains("cut"), "{stderr}");
    eprintln!(
        "drain: {draining} open at SIGTERM, {open_when_refused} still open when connections \
         were refused, last stream ended {:.2}s after SIGTERM, exit 0 {:.0}ms after it",
        (last_end - signalled).as_secs_f64(),
        exit_after_last.as_secs_f64() * 1000.0
    );
}

#[test]
fn sigterm_when_idle_exits_0_without_waiting_out_the_grace_period() {
    let dir = scratch("idle");
    let backend = sim("stable", FAST);
    // The default gracePeriod, 30 s: exiting within 10 s shows it was not waited out.
    let cfg = write_chat_config(&dir, false, &[("stable", backend.addr, 100.0)]);
    let mut proxy = proxy(&cfg);

    // One request served, its keep-alive connection left open and idle,
    // as load balancers leave them.
    let mut idle = connect(proxy.listen).expect("connect");
    idle.write_all(b"GET /v1/models HTTP/1.1\r\nHost: chat\r\n\r\n")
        .expect("send");
    let mut reader = BufReader::new(idle.try_clone().expect("clone"));
    let reply = read_reply(&mut reader).expect("reply");
    assert_eq!(reply.status, 200);
    assert_ne!(reply.header("connection"), Some("close"));

    let signalled = Instant::now();
    proxy.proc.signal(Signal::SIGTERM);
    let status = proxy
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("an idle proxy exits within 10 s of SIGTERM (grace period: 30 s)");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    // The idle connection was closed, not left to hang.
    let mut byte = [0u8; 1];
    assert!(matches!(reader.read(&mut byte), Ok(0) | Err(_)));
    eprintln!(
        "idle: exit 0 {:.0}ms after SIGTERM",
        took.as_secs_f64() * 1000.0
    );
}

#[test]
fn the_grace_period_flag_cuts_a_stream_still_open_when_it_runs_out() {
    let dir = scratch("grace-flag");
    // A 20 s stream: 100 tokens 200 ms apart.
    let slow = [
        "--ttft",
        "50ms",
        "--ttft-sigma",
        "0",
        "--itl",
        "200ms",
        "--tokens",
        "100",
    ];
    let backend = sim("stable", &slow);
    // The file says 30 s (the default); the flag (what the Helm chart
    // passes) says 300 ms and wins.
    let cfg = write_chat_config(&dir, false, &[("stable", backend.addr, 100.0)]);
    let mut proxy = proxy_with(&cfg, &["--grace-period", "300ms"]);
    let listen = proxy.listen;
    let client = std::thread::spawn(move || exchange(listen, &chat("chat")));
    until_blocking("a stream open in the proxy", IO_TIMEOUT, || {
        (inflight(&proxy) >= 1.0).then_some(())
    });
    proxy.proc.signal(Signal::SIGTERM);
    let status = proxy
        .proc
        .wait_exit(Duration::from_secs(20))
        .expect("the proxy exits");
    assert_eq!(status.code(), Some(0), "{status}");
    let stderr = proxy.proc.stderr.when_closed(IO_TIMEOUT);
    assert!(
        stderr.contains("grace period over, 1 request(s) cut"),
        "{stderr}"
    );
    // The client saw its stream end early, not a whole answer.
    let whole = client
        .join()
        .expect("the client thread")
        .is_ok_and(|reply| reply.text().contains("[DONE]"));
    assert!(!whole, "the stream was cut, not finished");
}

#[test]
fn two_proxy_processes_with_one_table_send_each_session_to_the_same_cohort() {
    let dir = scratch("sticky");
    let (stable, canary) = (sim("stable", FAST), sim("canary", FAST));
    let cfg = write_chat_config(
        &dir,
        true,
        &[("stable", stable.addr, 80.0), ("canary", canary.addr, 20.0)],
    );
    let (a, b) = (proxy(&cfg), proxy(&cfg));
    let sessions = 200;
    let via_a = cohorts(a.listen, sessions);
    let via_b = cohorts(b.listen, sessions);
    for (i, (x, y)) in via_a.iter().zip(&via_b).enumerate() {
        assert_eq!(
            x, y,
            "session-{i} went to {x} via one proxy, {y} via the other"
        );
    }
    // The sessions are spread by the weights, not all sent to one cohort:
    // 20% of 200 is 40, the band is about ±4.5 standard deviations.
    let on_canary = via_a.iter().filter(|c| *c == "canary").count();
    assert!(
        (15..=65).contains(&on_canary),
        "{on_canary} of {sessions} sessions on the 20% canary"
    );
    eprintln!("sticky: {sessions} sessions, {on_canary} on canary via both proxies, all equal");
}

#[test]
fn the_python_openai_client_streams_every_token_through_the_proxy() {
    let dir = scratch("openai");
    let (_sims, cfg) = openai_backends(&dir);
    let proxy = proxy(&cfg);
    assert_openai_streams(&format!("http://{}/v1", proxy.listen), None, false);
}

#[test]
fn the_python_openai_client_streams_over_h2c_with_prior_knowledge() {
    let dir = scratch("openai-h2c");
    let (_sims, cfg) = openai_backends(&dir);
    let proxy = proxy(&cfg);
    assert_openai_streams(&format!("http://{}/v1", proxy.listen), None, true);
}

/// h2load, from Debian's nghttp2-client (tests/run installs it;
/// `WEIR_H2LOAD` names another binary).
fn h2load() -> PathBuf {
    let path = PathBuf::from(std::env::var("WEIR_H2LOAD").unwrap_or("/usr/bin/h2load".into()));
    assert!(
        path.is_file(),
        "{} not found: install nghttp2-client (tests/run does) or set WEIR_H2LOAD",
        path.display()
    );
    path
}

/// A load generator built for HTTP/2: 200 streamed completions over 2
/// h2c connections, 10 streams at a time on each. Every stream is answered
/// 200 with its whole stream, and the proxy records each as a request of
/// its own.
#[test]
fn h2load_multiplexes_streamed_completions_over_h2c() {
    let dir = scratch("h2load");
    let (_sims, cfg) = openai_backends(&dir);
    let proxy = proxy(&cfg);
    let body = dir.join("body.json");
    std::fs::write(
        &body,
        r#"{"model":"weir-sim","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .expect("write body");
    let run = Command::new(h2load())
        .args([
            "-n",
            "200",
            "-c",
            "2",
            "-m",
            "10",
            "-H",
            "content-type: application/json",
            "-d",
        ])
        .arg(&body)
        .arg(format!("http://{}/v1/chat/completions", proxy.listen))
        .output()
        .expect("h2load runs");
    let report = String::from_utf8_lossy(&run.stdout);
    eprintln!("{report}");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(report.contains("Application protocol: h2c"), "{report}");
    assert!(
        report.contains("requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed"),
        "{report}"
    );
    assert!(report.contains("status codes: 200 2xx"), "{report}");
    // h2load can see the last stream end before the proxy has recorded it
    // (the record follows the last write).
    let ok_of = |observed: &Value| -> u64 {
        observed["cohorts"]
            .as_array()
            .expect("cohorts")
            .iter()
            .map(|c| c["requests"]["ok"].as_u64().unwrap_or(0))
            .sum()
    };
    let observed = until_blocking("every stream recorded", Duration::from_secs(30), || {
        let observed: Value =
            serde_json::from_slice(&admin(&proxy, "/v1/observations").body).expect("JSON");
        (ok_of(&observed) >= 200).then_some(observed)
    });
    let cohorts = observed["cohorts"].as_array().expect("cohorts");
    let ok = ok_of(&observed);
    let tokens: u64 = cohorts
        .iter()
        .map(|c| c["outputTokens"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(ok, 200, "{observed}");
    assert_eq!(tokens, 200 * u64::from(OPENAI_TOKENS), "{observed}");
}

#[test]
fn the_python_openai_client_and_curl_stream_through_tls_with_a_test_ca() {
    let dir = scratch("openai-tls");
    weir_test_kit::tls::make_ca(&dir);
    weir_test_kit::tls::make_leaf(&dir, "tls", "weir-proxy");
    let (_sims, cfg) = openai_backends(&dir);
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let proxy = proxy_with(
        &cfg,
        &[
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ],
    );
    let ca = dir.join("ca.crt");
    let base = format!("https://127.0.0.1:{}/v1", proxy.listen.port());
    // The openai client offers only HTTP/1.1 by default; with h2 allowed it
    // gets h2 by ALPN.
    assert_openai_streams(&base, Some(&ca), false);
    assert_openai_streams(&base, Some(&ca), true);
    // curl offers h2 and then HTTP/1.1 by ALPN, and gets h2; told to speak
    // HTTP/1.1 only, it gets that.
    for (flags, status) in [
        (&[][..], "HTTP/2 200"),
        (&["--http1.1"][..], "HTTP/1.1 200"),
    ] {
        let curl = Command::new("curl")
            .args(["-sS", "-i", "--cacert"])
            .arg(&ca)
            .args(flags)
            .arg(format!("{base}/models"))
            .output()
            .expect("curl runs");
        let reply = String::from_utf8_lossy(&curl.stdout);
        assert!(
            curl.status.success(),
            "{}",
            String::from_utf8_lossy(&curl.stderr)
        );
        assert!(reply.starts_with(status), "{flags:?}: {reply}");
        assert!(reply.contains("x-weir-cohort: "), "{reply}");
    }
}

/// Two sims of 12 tokens and a 50/50 config over them in `dir`.
fn openai_backends(dir: &Path) -> ((Sim, Sim), PathBuf) {
    let tokens = OPENAI_TOKENS.to_string();
    let flags = [FAST, &["--tokens", &tokens]].concat();
    let (stable, canary) = (sim("stable", &flags), sim("canary", &flags));
    let cfg = write_chat_config(
        dir,
        false,
        &[("stable", stable.addr, 50.0), ("canary", canary.addr, 50.0)],
    );
    ((stable, canary), cfg)
}

/// Tokens per completion of [`openai_backends`].
const OPENAI_TOKENS: u32 = 12;

/// The real openai client streams one completion from `url` (trusting
/// only `ca` for https, speaking only HTTP/2 with `http2`) and gets every
/// token, the finish and the usage, over the HTTP version it asked for.
fn assert_openai_streams(url: &str, ca: Option<&Path>, http2: bool) {
    let mut args = vec!["stream", url];
    if let Some(ca) = ca {
        args.push(ca.to_str().expect("utf-8"));
    }
    if http2 {
        args.push("--http2");
    }
    let seen = openai_script(&args, Duration::from_secs(60));
    eprintln!("openai client saw: {seen}");
    let version = if http2 { "HTTP/2" } else { "HTTP/1.1" };
    assert_eq!(seen["http_version"], version, "{seen}");
    let tokens = OPENAI_TOKENS;
    // One chunk per token, the finish chunk and the usage chunk.
    assert_eq!(seen["chunks"], tokens + 2);
    assert_eq!(
        seen["contents"].as_array().map(Vec::len),
        Some(tokens as usize)
    );
    assert_eq!(seen["text"], completion_text(tokens));
    assert_eq!(seen["finish"], "stop");
    assert_eq!(seen["usage"], tokens);
    assert!(
        seen["cohort"] == "stable" || seen["cohort"] == "canary",
        "{seen}"
    );
}

/// What a connection got for a hostile request.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Status(u16),
    Closed,
}

/// Sends `bytes` on a new connection and reads the answer;
/// an error when the proxy neither answers nor closes within the timeout,
/// or answers with something that is not HTTP.
fn answer(addr: SocketAddr, bytes: &[u8]) -> Result<Answer, String> {
    let mut stream = connect(addr).map_err(|e| format!("connect: {e}"))?;
    // The proxy may answer and close before reading everything: a failed
    // write is then expected, the answer is what counts.
    let _ = stream.write_all(bytes);
    match read_reply(&mut BufReader::new(stream.take(MAX_RESPONSE))) {
        Ok(reply) => Ok(Answer::Status(reply.status)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(format!("hung: nothing within {IO_TIMEOUT:?}"))
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(format!("not HTTP: {e}")),
        Err(_) => Ok(Answer::Closed),
    }
}

/// Deterministic bytes of every value (xorshift64).
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn hostile_requests_get_4xx_or_a_closed_connection_and_the_proxy_lives_on() {
    let dir = scratch("hostile");
    let backend = sim("stable", FAST);
    let cfg = dir.join("proxy.yaml");
    let route = format!(
        "  - name: chat\n    match: {{hosts: [chat.example.com], pathPrefix: /v1}}\n    backends:\n      \
         - {{cohort: stable, url: http://{}, weight: 100}}\n",
        backend.addr
    );
    std::fs::write(&cfg, config(&route)).expect("write config");
    let mut proxy = proxy(&cfg);
    let host = "chat.example.com";

    let header = |name: &str, len: usize| {
        format!(
            "GET /v1/models HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{name}: {}\r\n\r\n",
            "a".repeat(len)
        )
        .into_bytes()
    };
    let many_headers = {
        let lines: String = (0..300).map(|i| format!("x-h{i}: v\r\n")).collect();
        get("/v1/models", host, &lines)
    };
    let mut garbage = noise(4096, 0x9e37_79b9_7f4a_7c15);
    garbage.extend_from_slice(b"\r\n\r\n");
    let mut tls_hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    tls_hello.extend(noise(508, 7));
    let smuggle = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
    );
    let bad_length = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Length: -1\r\n\r\n{{}}"
    );
    let refused: Vec<(&str, Vec<u8>)> = vec![
        ("a malformed request line", b"GARBAGE\r\n\r\n".to_vec()),
        ("binary garbage", garbage),
        ("a TLS ClientHello", tls_hello),
        (
            "a 2 MiB header (pingora's limit is 1 MiB)",
            header("x-big", 2 << 20),
        ),
        ("300 headers (pingora's limit is 256)", many_headers),
        (
            "Content-Length with Transfer-Encoding",
            smuggle.into_bytes(),
        ),
        ("Content-Length -1", bad_length.into_bytes()),
    ];
    for (what, bytes) in &refused {
        let got = answer(proxy.listen, bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            matches!(got, Answer::Closed | Answer::Status(400..=499)),
            "{what}: {got:?}"
        );
        eprintln!("hostile: {what}: {got:?}");
    }
    // Requests no route takes: the proxy's own 404.
    for (what, bytes) in [
        (
            "an unknown host",
            get("/v1/models", "other.example.com", ""),
        ),
        ("an unknown path", get("/admin", host, "")),
        (
            "no Host header",
            b"GET /v1/models HTTP/1.0\r\n\r\n".to_vec(),
        ),
    ] {
        let got = answer(proxy.listen, &bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(got, Answer::Status(404), "{what}");
    }
    // A 64 KiB header is within the proxy's 128 KiB limit on a request
    // head: a legal request, proxied like any other, and answered in full.
    let got = answer(proxy.listen, &header("x-big", 64 << 10)).expect("64 KiB header");
    assert_eq!(got, Answer::Status(200), "64 KiB header");

    let normal = exchange(proxy.listen, &get("/v1/models", host, "")).expect("normal request");
    assert_eq!(normal.status, 200, "{}", normal.text());
    assert_eq!(normal.header(COHORT_HEADER), Some("stable"));
    assert!(proxy.proc.alive(), "the proxy died");
    assert_eq!(admin(&proxy, "/healthz").status, 200);
    let stderr = proxy.proc.stderr.text();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `weir proxy --config PATH` listening on a free loopback port, its
/// admin API on `admin`.
fn spawn_proxy(name: &str, path: &Path, admin: &str) -> common::Proc {
    spawn(
        name,
        &[
            "proxy",
            "--config",
            path.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            admin,
        ],
    )
}

/// `weir proxy --config PATH` on loopback ports; returns its exit status
/// and stderr, or `None` if it was still running after 30 s.
fn proxy_start_fails(name: &str, path: &Path) -> Option<(Option<i32>, String)> {
    let mut proc = spawn_proxy(name, path, "127.0.0.1:0");
    let status = proc.wait_exit(Duration::from_secs(30))?;
    Some((status.code(), proc.stderr.when_closed(IO_TIMEOUT)))
}

#[test]
fn hostile_config_paths_and_values_are_refused_with_a_short_message() {
    let dir = scratch("hostile");
    let fifo = dir.join("fifo.yaml");
    let _ = std::fs::remove_file(&fifo);
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let huge = dir.join("huge-host.yaml");
    let host = "h".repeat(8 << 20);
    std::fs::write(
        &huge,
        config(&format!(
            "  - name: chat\n    match: {{hosts: [{host}]}}\n    backends:\n      - {{cohort: stable, url: http://127.0.0.1:9, weight: 100}}\n"
        )),
    )
    .expect("write");
    let cases = [
        (fifo.as_path(), "it is a FIFO; give the path of a YAML file"),
        (
            Path::new("/dev/zero"),
            "it is a device; give the path of a YAML file",
        ),
        (huge.as_path(), "is not a host name"),
    ];
    for (path, want) in cases {
        let (code, stderr) = proxy_start_fails("hostile", path)
            .unwrap_or_else(|| panic!("{}: the proxy hung or started", path.display()));
        assert_eq!(code, Some(1), "{}: {stderr}", path.display());
        assert!(stderr.contains(want), "{}: {stderr}", path.display());
        assert!(
            stderr.len() < 2048,
            "{}: {} bytes of stderr",
            path.display(),
            stderr.len()
        );
    }
}

#[test]
fn an_admin_api_beyond_loopback_is_warned_about_at_startup() {
    let dir = scratch("exposed-admin");
    let path = write_chat_config(
        &dir,
        false,
        &[("stable", "127.0.0.1:9".parse().expect("addr"), 100.0)],
    );
    let proc = spawn_proxy("proxy", &path, "0.0.0.0:0");
    let warning = proc
        .stderr
        .wait_for(common::STARTUP, |t| {
            between(t, "weir proxy: warning: ", "\n").map(String::from)
        })
        .unwrap_or_else(|| panic!("no warning:\n{}", proc.stderr.text()));
    assert!(
        warning.starts_with("the admin API listens on 0.0.0.0:"),
        "{warning}"
    );
    assert!(
        warning.contains("can move traffic between cohorts"),
        "{warning}"
    );
}

#[test]
fn invalid_configs_are_refused_at_startup_with_the_field_and_the_fix() {
    let dir = scratch("invalid");
    let backend = |cohort: &str, field: &str| {
        format!("      - {{cohort: {cohort}, url: http://127.0.0.1:9, {field}}}\n")
    };
    let route = |name: &str, prefix: &str, second: &str| {
        format!(
            "  - name: {name}\n    match: {{pathPrefix: {prefix}}}\n    backends:\n{}{second}",
            backend("stable", "weight: 80")
        )
    };
    let cases: Vec<(&str, Option<String>, Vec<&str>)> = vec![
        (
            "unknown-field",
            Some(config(&route(
                "chat",
                "/",
                &backend("canary", "wieght: 20"),
            ))),
            vec![
                "unknown field `wieght`",
                "expected one of",
                "weight",
                "line 8",
            ],
        ),
        (
            "negative-weight",
            Some(config(&route(
                "chat",
                "/",
                &backend("canary", "weight: -5"),
            ))),
            vec![
                "routes[0].backends[1].weight",
                "-5 is not a weight",
                "use a number between 0 and 100",
            ],
        ),
        (
            "duplicate-route",
            Some(config(
                &(route("chat", "/a", "") + &route("chat", "/b", "")),
            )),
            vec![
                "routes[1].name",
                "\"chat\" is used twice",
                "give each route its own name",
            ],
        ),
        (
            "missing-file",
            None,
            vec!["cannot read", "missing-file.yaml"],
        ),
    ];
    for (name, text, wanted) in cases {
        let path = dir.join(format!("{name}.yaml"));
        match text {
            Some(text) => std::fs::write(&path, text).expect("write config"),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        let (code, stderr) = proxy_start_fails(name, &path)
            .unwrap_or_else(|| panic!("{name}: the proxy started on an invalid config"));
        assert_eq!(code, Some(1), "{name}: {stderr}");
        for want in wanted {
            assert!(
                stderr.contains(want),
                "{name}: {want:?} missing from\n{stderr}"
            );
        }
        assert!(
            !stderr.contains("serving"),
            "{name}: it listened:\n{stderr}"
        );
        eprintln!(
            "invalid config {name}: exit 1: {}",
            stderr.lines().next().unwrap_or_default()
        );
    }
}

#[test]
fn kube_mode_without_a_cluster_config_says_where_it_looked() {
    let dir = scratch("no-cluster");
    let weir = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .env("KUBECONFIG", dir.join("no-such-kubeconfig"))
            .env("HOME", &dir)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .stdin(Stdio::null())
            .output()
            .expect("weir runs")
    };
    let out = weir(&[
        "proxy",
        "--kube",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for want in [
        "no Kubernetes cluster config found",
        "no-such-kubeconfig",
        "$KUBECONFIG or ~/.kube/config",
        "--config FILE",
    ] {
        assert!(stderr.contains(want), "{want:?} missing from\n{stderr}");
    }
    assert!(!stderr.contains("serving"), "it listened:\n{stderr}");
    // Exactly one route source; the Kubernetes flags only with --kube.
    for args in [
        &["proxy", "--kube", "--config", "proxy.yaml"][..],
        &["proxy", "--namespace", "llm"],
        &["proxy", "--config", "proxy.yaml", "--selector", "team=llm"],
        &["proxy"],
    ] {
        let out = weir(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn an_invalid_reload_keeps_the_last_good_table_and_reports_last_error() {
    let dir = scratch("reload");
    let (stable, canary) = (sim("stable", FAST), sim("canary", FAST));
    let cfg = dir.join("proxy.yaml");
    let with = |stable_weight: f64, canary_weight: f64| {
        config(&chat_route(
            true,
            &[
                ("stable", stable.addr, stable_weight),
                ("canary", canary.addr, canary_weight),
            ],
        ))
    };
    std::fs::write(&cfg, with(80.0, 20.0)).expect("write config");
    let proxy = proxy(&cfg);
    let sessions = 100;
    let before = cohorts(proxy.listen, sessions);
    assert!(before.iter().any(|c| c == "canary") && before.iter().any(|c| c == "stable"));

    replace(&cfg, &with(100.0, -5.0));
    let error = until_blocking("lastError in /v1/routes", Duration::from_secs(10), || {
        routes(&proxy)["lastError"].as_str().map(String::from)
    });
    assert!(
        error.contains("routes[0].backends[1].weight") && error.contains("between 0 and 100"),
        "{error}"
    );
    assert_eq!(weights(&routes(&proxy)), [80.0, 20.0]);
    assert_eq!(cohorts(proxy.listen, sessions), before, "the split changed");

    // A good file is applied again, so the reload path is live and the
    // check above is not vacuous.
    replace(&cfg, &with(0.0, 100.0));
    until_blocking("the new weights", Duration::from_secs(10), || {
        let r = routes(&proxy);
        (r["lastError"].is_null() && weights(&r) == [0.0, 100.0]).then_some(())
    });
    let after = cohorts(proxy.listen, sessions);
    assert!(after.iter().all(|c| c == "canary"), "{after:?}");
    eprintln!(
        "reload: refused with lastError {error:?}; split kept ({} of {sessions} on canary); \
         a good file then applied",
        before.iter().filter(|c| *c == "canary").count()
    );
}

#[test]
fn at_trace_level_no_credential_header_value_or_body_reaches_the_log() {
    let dir = scratch("logs");
    let (stable, canary) = (sim("stable", FAST), sim("canary", FAST));
    let cfg = write_chat_config(
        &dir,
        false,
        &[("stable", stable.addr, 50.0), ("canary", canary.addr, 50.0)],
    );
    let mut proxy = proxy_in_env(&cfg, &[], &[("WEIR_LOG", "trace")]);
    let body = r#"{"model":"weir-sim","messages":[{"role":"user","content":"BODY-MARK-7"}],"max_tokens":2}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: chat\r\n\
         authorization: Bearer sk-SECRET-7\r\ncookie: session=COOKIE-MARK-7\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let reply = exchange(proxy.listen, request.as_bytes()).expect("an answer");
    assert_eq!(reply.status, 200, "{reply:?}");
    // Malformed (two lengths): refused, its raw bytes never echoed.
    let _ = answer(
        proxy.listen,
        b"POST /v1/x HTTP/1.1\r\nhost: chat\r\nx-key: HEADER-MARK-7\r\n\
content-length: 5\r\ncontent-length: 6\r\n\r\nRAW-MARK-7",
    );
    proxy.proc.signal(Signal::SIGTERM);
    proxy
        .proc
        .wait_exit(Duration::from_secs(30))
        .expect("the proxy exits on SIGTERM");
    // The whole log: the reader of the pipe may still be behind the exit.
    let log = proxy.proc.stderr.when_closed(IO_TIMEOUT);
    assert!(log.contains("proxy drained"), "the log was written: {log}");
    for mark in [
        "sk-SECRET-7",
        "COOKIE-MARK-7",
        "BODY-MARK-7",
        "HEADER-MARK-7",
        "RAW-MARK-7",
    ] {
        assert!(!log.contains(mark), "{mark} reached the log:\n{log}");
    }
}
