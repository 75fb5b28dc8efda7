//! The real Python `openai` client against the sim: it must parse every
//! chunk we send, see every token, and raise on a mid-stream error; with
//! two models served, list both, get each one's answers under its name,
//! and raise `NotFoundError` for a model not served.
//!
//! The interpreter is the test kit's (`weir_test_kit::python`):
//! `$WEIR_PYTHON` (set by `tests/run` to its venv), else `python3`. A
//! missing `openai` package fails the test: a silently skipped
//! compatibility test protects nothing.

mod common;

use std::time::Duration;

use common::{fast, start};
use weir_sim::text::completion_text;
use weir_sim::{Override, ServedModel, SimConfig};
use weir_test_kit::python;

const SCRIPT: &str = r#"
import json, sys
import openai

ok_url, failing_url = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=ok_url, api_key="x", max_retries=0)
messages = [{"role": "user", "content": "Say something."}]

chunks, text, finish, usage = 0, "", None, None
stream = client.chat.completions.create(
    model="weir-sim", messages=messages, stream=True,
    stream_options={"include_usage": True})
for chunk in stream:
    chunks += 1
    if chunk.usage is not None:
        usage = chunk.usage.completion_tokens
    for choice in chunk.choices:
        text += choice.delta.content or ""
        finish = choice.finish_reason or finish

whole = client.chat.completions.create(model="weir-sim", messages=messages, max_tokens=3)

adapter = {"chunks": 0, "text": "", "model": None, "usage": None}
for chunk in client.chat.completions.create(
        model="weir-sim-v8", messages=messages, stream=True,
        stream_options={"include_usage": True}):
    adapter["model"] = chunk.model
    if chunk.usage is not None:
        adapter["usage"] = chunk.usage.completion_tokens
    for choice in chunk.choices:
        if choice.delta.content:
            adapter["chunks"] += 1
            adapter["text"] += choice.delta.content
adapter_whole = client.chat.completions.create(model="weir-sim-v8", messages=messages)
models = [m.id for m in client.models.list()]

not_found = None
try:
    client.chat.completions.create(model="weir-sim-v9", messages=messages)
except openai.NotFoundError as e:
    not_found = {"status": e.status_code, "type": e.type, "message": e.message}

legacy = "".join(
    c.choices[0].text for c in client.completions.create(
        model="weir-sim", prompt="Once", stream=True) if c.choices)

raised = None
try:
    failing = openai.OpenAI(base_url=failing_url, api_key="x", max_retries=0)
    for _ in failing.chat.completions.create(model="weir-sim", messages=messages, stream=True):
        pass
except openai.APIError as e:
    raised = type(e).__name__

print(json.dumps({
    "version": openai.__version__,
    "chunks": chunks, "text": text, "finish": finish, "usage": usage,
    "whole_text": whole.choices[0].message.content,
    "whole_finish": whole.choices[0].finish_reason,
    "whole_usage": whole.usage.completion_tokens,
    "fingerprint": whole.system_fingerprint,
    "legacy": legacy,
    "raised": raised,
    "adapter": adapter,
    "adapter_whole": {"model": adapter_whole.model,
                      "text": adapter_whole.choices[0].message.content,
                      "usage": adapter_whole.usage.completion_tokens},
    "models": models,
    "not_found": not_found,
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_openai_client_streams_every_token() {
    let python = python::openai();

    let tokens = 12;
    // Two adapters behind one server; the second answers 7 tokens.
    let sim = start(SimConfig {
        tokens,
        models: vec![
            ServedModel::new("weir-sim"),
            ServedModel::new("weir-sim-v8").with(Override::Tokens(7)),
        ],
        ..fast()
    })
    .await;
    let failing = start(SimConfig {
        stream_error_rate: 1.0,
        ..fast()
    })
    .await;
    let (ok_url, failing_url) = (
        format!("{}/v1", sim.base_url()),
        format!("{}/v1", failing.base_url()),
    );
    let seen = tokio::task::spawn_blocking(move || {
        python::run_json(
            &python,
            &["-c", SCRIPT, &ok_url, &failing_url],
            Duration::from_secs(60),
        )
    })
    .await
    .expect("the script ran");
    eprintln!("openai client saw: {seen}");

    // One chunk per token, the finish chunk and the usage chunk.
    assert_eq!(seen["chunks"], tokens + 2);
    assert_eq!(seen["text"], completion_text(tokens));
    assert_eq!(seen["finish"], "stop");
    assert_eq!(seen["usage"], tokens);
    assert_eq!(seen["whole_text"], completion_text(3));
    assert_eq!(seen["whole_finish"], "length");
    assert_eq!(seen["whole_usage"], 3);
    assert_eq!(seen["fingerprint"], "test-sim");
    assert_eq!(seen["legacy"], completion_text(tokens));
    assert!(
        seen["raised"].is_string(),
        "a mid-stream error event must raise in the client: {seen}"
    );

    assert_eq!(
        seen["models"],
        serde_json::json!(["weir-sim", "weir-sim-v8"])
    );
    let adapter = &seen["adapter"];
    assert_eq!(adapter["model"], "weir-sim-v8");
    assert_eq!(adapter["chunks"], 7);
    assert_eq!(adapter["usage"], 7);
    assert_eq!(adapter["text"], completion_text(7));
    assert_eq!(
        seen["adapter_whole"],
        serde_json::json!({"model": "weir-sim-v8", "text": completion_text(7), "usage": 7})
    );
    // vLLM's 404 for a model not served, as the client reads it.
    assert_eq!(
        seen["not_found"],
        serde_json::json!({
            "status": 404, "type": "NotFoundError",
            "message": "Error code: 404 - The model `weir-sim-v9` does not exist.",
        }),
        "{seen}"
    );
}
