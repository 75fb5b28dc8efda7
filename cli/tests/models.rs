//! A model canary with `weir run`: one `weir sim` serving two LoRA
//! adapters, `chat-lora-v7` and `chat-lora-v8`, behind the name `chat`,
//! as one vLLM pool does. Real processes on loopback: the sim, `weir load`
//! asking for `chat`, and `weir run` in between.
//!
//! What they show: an adapter with the same profile is promoted; one that
//! rambles (~2× output tokens), one that truncates (a quarter of its
//! answers cut at the token limit) and one that decodes 25% slower are each
//! aborted on the effect that measures it. TTFT is the same in all of them,
//! so only the answer-shape signals can tell. The real Python `openai`
//! client, asking for `chat` through the proxy, never reads the adapter's
//! name; an adapter the pool has not loaded stops the run before any
//! traffic moves.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;
use weir_test_kit::python;

mod common;
use common::run_process::weir_run_with;
use common::{Proc, scratch, sim, spawn};

/// Longest a run may take here (its own maxDuration is shorter).
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// The runs compare timings: one at a time on two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A model canary on one pool: requests for `chat` split between the two
/// adapters, judged on latency, errors and what the answers look like.
fn canary_file(dir: &Path, pool: std::net::SocketAddr) -> PathBuf {
    let text = format!(
        r#"apiVersion: weir.dev/v1alpha1
kind: Canary
metadata: {{name: chat-adapter}}
spec:
  backends:
    stable: {{url: "http://{pool}"}}
    canary: {{url: "http://{pool}"}}
  route: {{pathPrefix: /v1, model: chat}}
  models: {{stable: chat-lora-v7, canary: chat-lora-v8}}
  strategy:
    canary:
      steps:
        - setWeight: 50
        - analysis: {{minDuration: 5s, maxDuration: 100s}}
  analysis:
    interval: 1s
    warmup: 1s
    minSamples: 200
    metrics:
      - {{name: ttft, kind: latency, maxIncrease: 25%}}
      - {{name: errors, kind: errorRate, maxIncrease: 2pp}}
      - {{name: tokens, kind: outputTokens, maxChange: 20%}}
      - {{name: truncated, kind: truncationRate, maxIncrease: 5pp}}
      - {{name: decode, kind: decodeSpeed, maxDecrease: 10%}}
"#
    );
    let path = dir.join("canary.yaml");
    std::fs::write(&path, text).expect("write canary file");
    path
}

/// Streaming load asking for `chat` through `proxy`.
fn load(proxy: std::net::SocketAddr) -> Proc {
    spawn(
        "weir load",
        &[
            "load",
            "--url",
            &format!("http://{proxy}"),
            "--model",
            "chat",
            "--rate",
            "100",
            "--duration",
            "120s",
        ],
    )
}

fn finished(run: &mut Proc) -> (i32, Value) {
    let status = run
        .wait_exit(RUN_LIMIT)
        .unwrap_or_else(|| panic!("weir run still running after {RUN_LIMIT:?}"));
    let text = run.stdout.text();
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "finished")
        .unwrap_or_else(|| panic!("no finished line:\n{text}"));
    (status.code().expect("exited, not killed"), line)
}

/// The effects that were shown beyond their margins.
fn exceeded(finished: &Value) -> Vec<String> {
    finished["decision"]["metrics"]
        .as_array()
        .map(|metrics| {
            metrics
                .iter()
                .filter(|m| m["finding"] == "exceeds")
                .filter_map(|m| m["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The pool every scenario shares: TTFT 60 ms, 10 ms between tokens, 24
/// tokens on average (lognormal), with `canary` keys for chat-lora-v8.
fn pool(scenario: &str, canary: &str) -> common::Sim {
    let v8 = if canary.is_empty() {
        "chat-lora-v8".to_string()
    } else {
        format!("chat-lora-v8:{canary}")
    };
    sim(
        scenario,
        &[
            "--ttft",
            "60ms",
            "--ttft-sigma",
            "0.25",
            "--itl",
            "10ms",
            "--tokens",
            "24",
            "--tokens-sigma",
            "0.4",
            "--model",
            "chat-lora-v7",
            "--model",
            &v8,
        ],
    )
}

/// Asks for `chat` through the proxy with the Python `openai` client,
/// streamed and not, and returns every `model` it read.
fn models_seen_by_openai(proxy: std::net::SocketAddr) -> Value {
    let script = r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
seen = []
for _ in range(6):
    r = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    seen.append(r.model)
    for chunk in client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True):
        seen.append(chunk.model)
print(json.dumps(sorted(set(seen))))
"#;
    python::run_json(
        &python::openai(),
        &["-c", script, &format!("http://{proxy}")],
        Duration::from_secs(60),
    )
}

#[test]
fn adapters_are_promoted_or_aborted_on_the_shape_of_their_answers() {
    let _one = one_at_a_time();
    // (scenario, chat-lora-v8's keys, exit code, effect that must exceed)
    let scenarios = [
        ("same", "", 0, None),
        ("rambles", "tokens=48", 3, Some("tokens.shift.up")),
        ("truncates", "length-share=0.25", 3, Some("truncated")),
        ("slow-decode", "itl=13333us", 3, Some("decode.shift")),
    ];
    for (scenario, keys, code, effect) in scenarios {
        let dir = scratch(&format!("adapter-{scenario}"));
        let pool = pool(scenario, keys);
        let file = canary_file(&dir, pool.addr);
        let record = dir.join("record.json");
        let (mut run, proxy, _admin) =
            weir_run_with(&file, &["--record", record.to_str().expect("utf-8 path")]);
        if scenario == "same" {
            // Both adapters answer through the proxy; the client only ever
            // reads the name it asked for.
            assert_eq!(models_seen_by_openai(proxy), serde_json::json!(["chat"]));
        }
        let _load = load(proxy);
        let (exit, end) = finished(&mut run);
        let shown = exceeded(&end);
        eprintln!("{scenario}: exit {exit}: {}", end["message"]);
        assert_eq!(exit, code, "{scenario}: {shown:?}\n{}", run.stdout.text());
        // The record says what the tokens were counted from: weir load
        // does not ask for usage, so the sim's streams carry none; the
        // openai client's whole answers (in "same") do.
        let record: Value =
            serde_json::from_str(&std::fs::read_to_string(&record).expect("the record"))
                .expect("JSON");
        let tokens = record["metrics"]
            .as_array()
            .and_then(|m| m.iter().find_map(|l| l.as_str()?.strip_prefix("tokens: ")))
            .unwrap_or_default()
            .to_string();
        let counted = if scenario == "same" {
            "canary answers, from stream events in the rest"
        } else {
            "tokens counted from stream events (the server sent no usage; a server that sends several tokens per event is undercounted, the same way in both cohorts)"
        };
        assert!(
            tokens.starts_with("output tokens per answer") && tokens.ends_with(counted),
            "{scenario}: {tokens}"
        );
        match effect {
            None => assert!(shown.is_empty(), "{scenario}: {shown:?}"),
            Some(effect) => {
                assert!(
                    shown.iter().any(|s| s.starts_with(effect)),
                    "{scenario}: aborted on {shown:?}, not {effect}"
                );
                // TTFT is the same: it is not what caught it.
                assert!(
                    !shown.iter().any(|s| s.starts_with("ttft")),
                    "{scenario}: {shown:?}"
                );
            }
        }
    }
}

#[test]
fn an_adapter_the_pool_has_not_loaded_stops_the_run_before_traffic_moves() {
    let dir = scratch("adapter-missing");
    let pool = sim("missing", &["--model", "chat-lora-v7", "--model", "other"]);
    let file = canary_file(&dir, pool.addr);
    let listen = common::free_addr();
    let mut run = spawn(
        "weir run",
        &[
            "run",
            "-f",
            file.to_str().expect("utf-8 path"),
            "--listen",
            &listen.to_string(),
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let status = run
        .wait_exit(Duration::from_secs(30))
        .expect("weir run stops at once");
    assert_eq!(status.code(), Some(1));
    let said = run.stderr.when_closed(Duration::from_secs(5));
    assert!(
        said.contains("spec.models.canary")
            && said.contains("does not list chat-lora-v8 (it lists: chat-lora-v7, other)"),
        "{said}"
    );
    // The proxy never listened: no traffic could have moved.
    assert!(std::net::TcpStream::connect(listen).is_err());
}
