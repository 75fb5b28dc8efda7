//! The OpenAI surface: stream and body shapes, validation, faults, headers.

mod common;

use std::time::Duration;

use common::{chat, client, fast, get, post, start};
use http::StatusCode;
use serde_json::{Value, json};
use weir_sim::SimConfig;
use weir_sim::text::completion_text;

fn parse_chunks(data: &[String]) -> Vec<Value> {
    data.iter()
        .take_while(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("chunk {d:?}: {e}")))
        .collect()
}

#[tokio::test]
async fn chat_stream_is_well_formed_sse_with_finish_and_done() {
    let sim = start(fast()).await;
    let c = client();
    let ex = post(&c, &sim, "/v1/chat/completions", &chat(true)).await;
    assert_eq!(ex.status, StatusCode::OK);
    assert_eq!(ex.headers["content-type"], "text/event-stream");
    assert_eq!(ex.headers["x-weir-sim"], "test-sim");

    let data = ex.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks = parse_chunks(&data);
    // 5 tokens, then the finish chunk; no usage unless asked.
    assert_eq!(chunks.len(), 6, "{data:?}");
    let mut text = String::new();
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "m");
        assert_eq!(chunk["system_fingerprint"], "test-sim");
        assert_eq!(chunk["id"], chunks[0]["id"]);
        let choice = &chunk["choices"][0];
        if i < 5 {
            assert!(choice["finish_reason"].is_null());
            text.push_str(choice["delta"]["content"].as_str().expect("content"));
        } else {
            assert_eq!(choice["finish_reason"], "stop");
        }
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(text, completion_text(5));
}

#[tokio::test]
async fn completions_stream_with_usage_and_max_tokens() {
    let sim = start(fast()).await;
    let c = client();
    let body = json!({
        "model": "m", "prompt": "Once upon a time", "stream": true,
        "stream_options": {"include_usage": true}, "max_tokens": 3,
    });
    let ex = post(&c, &sim, "/v1/completions", &body.to_string()).await;
    let data = ex.sse_data();
    let chunks = parse_chunks(&data);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    // 3 tokens, the finish chunk, the usage chunk.
    assert_eq!(chunks.len(), 5, "{data:?}");
    let text: String = chunks[..3]
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().expect("text").to_string())
        .collect();
    assert_eq!(text, completion_text(3));
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"]["completion_tokens"], 3);
    assert_eq!(chunks[4]["usage"]["prompt_tokens"], 4);
    assert_eq!(chunks[0]["object"], "text_completion");
}

#[tokio::test]
async fn non_streaming_body_has_usage() {
    let sim = start(fast()).await;
    let c = client();
    let ex = post(&c, &sim, "/v1/chat/completions", &chat(false)).await;
    assert_eq!(ex.status, StatusCode::OK);
    assert_eq!(ex.headers["content-type"], "application/json");
    let body = ex.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], completion_text(5));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["usage"]["total_tokens"], 9);
    assert_eq!(body["system_fingerprint"], "test-sim");
    // The answer waits for the whole generation: TTFT + 4 gaps.
    assert!(ex.first_frame() >= Duration::from_millis(14), "{ex:?}");
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let sim = start(fast()).await;
    let c = client();
    for (path, body, param) in [
        ("/v1/chat/completions", "{oops", Value::Null),
        (
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            json!("model"),
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"m"}"#,
            json!("messages"),
        ),
        ("/v1/completions", r#"{"model":"m"}"#, json!("prompt")),
    ] {
        let ex = post(&c, &sim, path, body).await;
        assert_eq!(ex.status, StatusCode::BAD_REQUEST, "{body}");
        let err = ex.json();
        assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert_eq!(err["error"]["param"], param, "{body}");
        assert_eq!(ex.headers["x-weir-sim"], "test-sim");
    }
    assert_eq!(sim.requests(), 0, "rejected requests are not served");
}

#[tokio::test]
async fn models_health_and_unknown_paths() {
    let sim = start(SimConfig {
        model: "org/served".into(),
        ..fast()
    })
    .await;
    let c = client();
    let models = get(&c, &sim, "/v1/models").await;
    assert_eq!(models.json()["data"][0]["id"], "org/served");
    assert_eq!(get(&c, &sim, "/health").await.status, StatusCode::OK);
    let missing = get(&c, &sim, "/v2/nothing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.headers["x-weir-sim"], "test-sim");
    let wrong_method = get(&c, &sim, "/v1/chat/completions").await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn error_rate_one_answers_500_before_any_token() {
    let sim = start(SimConfig {
        error_rate: 1.0,
        ..fast()
    })
    .await;
    let c = client();
    for stream in [true, false] {
        let ex = post(&c, &sim, "/v1/chat/completions", &chat(stream)).await;
        assert_eq!(ex.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(ex.json()["error"]["type"], "server_error");
        assert_eq!(ex.headers["x-weir-sim"], "test-sim");
    }
}

#[tokio::test]
async fn stream_errors_end_without_finish_or_done() {
    let sim = start(SimConfig {
        stream_error_rate: 1.0,
        tokens: 8,
        ..fast()
    })
    .await;
    let c = client();
    for _ in 0..5 {
        let ex = post(&c, &sim, "/v1/chat/completions", &chat(true)).await;
        assert_eq!(ex.status, StatusCode::OK, "the failure is mid-stream");
        let data = ex.sse_data();
        let last: Value = serde_json::from_str(data.last().expect("events")).expect("json");
        assert_eq!(last["error"]["type"], "server_error", "{data:?}");
        assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
        let chunks = parse_chunks(&data[..data.len() - 1]);
        assert!(
            (1..8).contains(&chunks.len()),
            "some tokens first: {data:?}"
        );
        assert!(
            chunks
                .iter()
                .all(|c| c["choices"][0]["finish_reason"].is_null())
        );
    }
    // Non-streaming requests are not affected.
    let ex = post(&c, &sim, "/v1/chat/completions", &chat(false)).await;
    assert_eq!(ex.status, StatusCode::OK);
}

#[tokio::test]
async fn control_slows_later_requests_and_exists_only_when_asked_for() {
    let c = client();
    let off = start(fast()).await;
    let post_off = post(&c, &off, "/control", r#"{"ttftFactor": 2}"#).await;
    assert_eq!(post_off.status, StatusCode::NOT_FOUND, "off by default");

    let sim = start(SimConfig {
        ttft: Duration::from_millis(20),
        ttft_sigma: 0.0,
        control: true,
        ..fast()
    })
    .await;
    assert_eq!(get(&c, &sim, "/control").await.json()["ttftFactor"], 1.0);
    for bad in [
        r#"{"ttftFactor": 0}"#,
        r#"{"ttftFactor": -1}"#,
        r#"{"ttftFactor": 1e9}"#,
        r#"{"ttft": 2}"#,
        "slow",
    ] {
        let refused = post(&c, &sim, "/control", bad).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            refused.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("ttftFactor")),
            "names the field: {}",
            refused.text()
        );
    }
    assert_eq!(get(&c, &sim, "/control").await.json()["ttftFactor"], 1.0);

    let set = post(&c, &sim, "/control", r#"{"ttftFactor": 15}"#).await;
    assert_eq!(set.status, StatusCode::OK);
    assert_eq!(set.json()["ttftFactor"], 15.0);
    // The sim sleeps until each token's deadline, so the first frame can
    // come no sooner than 15 × 20 ms after the request.
    let slowed = post(&c, &sim, "/v1/chat/completions", &chat(true)).await;
    assert!(
        slowed.first_frame() >= Duration::from_millis(300),
        "first token after {:?}",
        slowed.first_frame()
    );
    assert!(
        sim.metrics_text()
            .contains("vllm:time_to_first_token_seconds"),
        "still metered"
    );
}
