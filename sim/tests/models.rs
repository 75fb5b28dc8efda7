//! One sim serving several models by name, each with its own profile (LoRA
//! adapters behind one pool): listing, routing by `model`, vLLM's 404 for
//! a model not served, exact usage, output lengths and finish-reason
//! shares as a client sees them, and `/control` aimed at one model.

mod common;

use std::time::Duration;

use common::{client, fast, get, post, start};
use http::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use weir_sim::text::completion_text;
use weir_sim::{Override, ServedModel, SimConfig, SimHandle};

/// What one streamed answer carried.
#[derive(Debug)]
struct Streamed {
    model: String,
    /// Chunks with non-empty content.
    content_chunks: u64,
    text: String,
    finish: String,
    /// `usage.completion_tokens` of the usage chunk.
    usage: Option<u64>,
}

fn streamed(data: &[String]) -> Streamed {
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let mut s = Streamed {
        model: String::new(),
        content_chunks: 0,
        text: String::new(),
        finish: String::new(),
        usage: None,
    };
    for d in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(d).unwrap_or_else(|e| panic!("{d:?}: {e}"));
        s.model = chunk["model"].as_str().expect("model").to_string();
        if let Some(usage) = chunk.get("usage") {
            s.usage = usage["completion_tokens"].as_u64();
        }
        for choice in chunk["choices"].as_array().expect("choices") {
            let piece = choice["delta"]["content"]
                .as_str()
                .or(choice["text"].as_str())
                .unwrap_or("");
            if !piece.is_empty() {
                s.content_chunks += 1;
                s.text.push_str(piece);
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                s.finish = f.to_string();
            }
        }
    }
    s
}

fn chat_to(model: &str, stream: bool) -> String {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say something."}],
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
    .to_string()
}

/// The must-show pair: a stable adapter, and a canary adapter with twice
/// the output, 30% of answers cut by length and spread lengths.
fn lora_pair() -> SimConfig {
    SimConfig {
        model: "chat-lora-v7".into(),
        ttft: Duration::from_millis(2),
        itl: Duration::ZERO,
        tokens: 8,
        tokens_sigma: 0.5,
        models: vec![
            ServedModel::new("chat-lora-v7"),
            "chat-lora-v8:tokens=16,length-share=0.3"
                .parse()
                .expect("a valid model"),
        ],
        ..fast()
    }
}

/// `n` streamed chat requests for `model`, `batch` at a time.
async fn stream_many(sim: &SimHandle, model: &str, n: usize, batch: usize) -> Vec<Streamed> {
    let c = client();
    let mut out = Vec::with_capacity(n);
    for start_at in (0..n).step_by(batch) {
        let mut set = JoinSet::new();
        for _ in start_at..(start_at + batch).min(n) {
            let (c, url, body) = (
                c.clone(),
                format!("{}/v1/chat/completions", sim.base_url()),
                chat_to(model, true),
            );
            set.spawn(async move {
                let ex = common::send(&c, http::Method::POST, &url, &body).await;
                assert_eq!(ex.status, StatusCode::OK, "{}", ex.text());
                streamed(&ex.sse_data())
            });
        }
        while let Some(s) = set.join_next().await {
            out.push(s.expect("request task"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_model_is_listed_and_answered_under_its_name() {
    let sim = start(lora_pair()).await;
    let c = client();
    let models = get(&c, &sim, "/v1/models").await.json();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["chat-lora-v7", "chat-lora-v8"]);

    for model in ids {
        let ex = post(&c, &sim, "/v1/chat/completions", &chat_to(model, true)).await;
        assert_eq!(ex.status, StatusCode::OK);
        let s = streamed(&ex.sse_data());
        assert_eq!(s.model, model);
        assert_eq!(s.usage, Some(s.content_chunks), "{s:?}");
        assert_eq!(s.text, completion_text(s.content_chunks as u32));

        let whole = post(&c, &sim, "/v1/chat/completions", &chat_to(model, false)).await;
        let body = whole.json();
        assert_eq!(body["model"], model);
        let tokens = body["usage"]["completion_tokens"].as_u64().expect("usage");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            completion_text(tokens as u32)
        );
    }
    assert_eq!(sim.requests(), 4);
}

#[tokio::test]
async fn a_model_not_served_gets_vllms_404_and_a_missing_one_a_400() {
    let sim = start(lora_pair()).await;
    let c = client();
    for path in ["/v1/chat/completions", "/v1/completions"] {
        let body = json!({"model": "chat-lora-v9", "messages": [{"role": "user", "content": "x"}],
                          "prompt": "x"});
        let ex = post(&c, &sim, path, &body.to_string()).await;
        assert_eq!(ex.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(ex.headers["content-type"], "application/json");
        assert_eq!(ex.headers["x-weir-sim"], "test-sim");
        assert_eq!(
            ex.json(),
            json!({"error": {
                "message": "The model `chat-lora-v9` does not exist.",
                "type": "NotFoundError", "param": null, "code": 404,
            }})
        );
    }
    // Without `model`: the 400 it always was.
    let ex = post(
        &c,
        &sim,
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(ex.status, StatusCode::BAD_REQUEST);
    assert_eq!(ex.json()["error"]["param"], "model");
    assert_eq!(sim.requests(), 0, "refused requests are not served");

    // One model and no declared ones: any name is answered, as before.
    let legacy = start(fast()).await;
    let ex = post(
        &c,
        &legacy,
        "/v1/chat/completions",
        &chat_to("anything", true),
    )
    .await;
    assert_eq!(ex.status, StatusCode::OK);
    assert_eq!(streamed(&ex.sse_data()).model, "anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_length_share_and_the_longer_output_show_over_hundreds_of_requests() {
    let sim = start(lora_pair()).await;
    let n = 400;
    let canary = stream_many(&sim, "chat-lora-v8", n, 50).await;
    let stable = stream_many(&sim, "chat-lora-v7", n, 50).await;
    for s in canary.iter().chain(&stable) {
        // Usage counts exactly the content tokens streamed.
        assert_eq!(s.usage, Some(s.content_chunks), "{s:?}");
        assert!(s.finish == "stop" || s.finish == "length", "{s:?}");
    }
    let cut = canary.iter().filter(|s| s.finish == "length").count();
    // Binomial(400, 0.3): mean 120, sd 9.2; 4.5 sd either side.
    let sd = (n as f64 * 0.3 * 0.7).sqrt();
    assert!(
        (cut as f64 - 120.0).abs() <= 4.5 * sd,
        "{cut} of {n} cut by length"
    );
    assert!(stable.iter().all(|s| s.finish == "stop"));

    // Mean output: 16 against 8 (lognormal, σ = 0.5: sd 8.5 and 4.3; the
    // mean of 400 within 4.5 of its sd/√400, plus half a token of rounding).
    let mean = |all: &[Streamed]| {
        all.iter().map(|s| s.content_chunks as f64).sum::<f64>() / all.len() as f64
    };
    let band = |m: f64| 4.5 * m * (0.25f64.exp() - 1.0).sqrt() / (n as f64).sqrt() + 0.5;
    let (canary_mean, stable_mean) = (mean(&canary), mean(&stable));
    eprintln!(
        "canary: {cut}/{n} cut by length, mean {canary_mean:.2} tokens; \
         stable: mean {stable_mean:.2} tokens"
    );
    assert!(
        (canary_mean - 16.0).abs() < band(16.0),
        "canary mean {canary_mean}"
    );
    assert!(
        (stable_mean - 8.0).abs() < band(8.0),
        "stable mean {stable_mean}"
    );
    // Lengths vary from answer to answer.
    assert!(stable.iter().any(|s| s.content_chunks != 8));
    assert!(sim.metrics_text().contains("finished_reason=\"length\""));
}

#[tokio::test]
async fn max_tokens_cuts_long_answers_with_length_and_exact_usage() {
    let sim = start(SimConfig {
        tokens: 20,
        ..fast()
    })
    .await;
    let c = client();
    for stream in [true, false] {
        let body = json!({
            "model": "m", "prompt": "x", "max_tokens": 6, "stream": stream,
            "stream_options": {"include_usage": true},
        });
        let ex = post(&c, &sim, "/v1/completions", &body.to_string()).await;
        let (tokens, finish) = if stream {
            let s = streamed(&ex.sse_data());
            assert_eq!(s.usage, Some(6));
            (s.content_chunks, s.finish)
        } else {
            let b = ex.json();
            assert_eq!(b["choices"][0]["text"], completion_text(6));
            (
                b["usage"]["completion_tokens"].as_u64().expect("usage"),
                b["choices"][0]["finish_reason"]
                    .as_str()
                    .expect("finish")
                    .to_string(),
            )
        };
        assert_eq!((tokens, finish.as_str()), (6, "length"));
    }
}

#[tokio::test]
async fn empty_answers_are_well_formed_with_zero_usage() {
    let sim = start(SimConfig {
        models: vec![ServedModel::new("quiet").with(Override::EmptyShare(1.0))],
        ..fast()
    })
    .await;
    let c = client();
    let ex = post(&c, &sim, "/v1/chat/completions", &chat_to("quiet", true)).await;
    let data = ex.sse_data();
    let s = streamed(&data);
    assert_eq!(
        (s.content_chunks, s.usage, s.finish.as_str()),
        (0, Some(0), "stop")
    );
    // The role still comes, in a chunk without text.
    let first: Value = serde_json::from_str(&data[0]).expect("json");
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );

    let whole = post(&c, &sim, "/v1/chat/completions", &chat_to("quiet", false))
        .await
        .json();
    assert_eq!(whole["choices"][0]["message"]["content"], "");
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    assert_eq!(whole["usage"]["completion_tokens"], 0);

    let legacy = json!({"model": "quiet", "prompt": "x", "stream": true});
    let ex = post(&c, &sim, "/v1/completions", &legacy.to_string()).await;
    let s = streamed(&ex.sse_data());
    assert_eq!((s.content_chunks, s.finish.as_str()), (0, "stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_can_slow_one_model() {
    let sim = start(SimConfig {
        ttft: Duration::from_millis(20),
        ttft_sigma: 0.0,
        control: true,
        ..lora_pair()
    })
    .await;
    let c = client();
    let state = get(&c, &sim, "/control").await.json();
    assert_eq!(
        state,
        json!({"ttftFactor": 1.0, "models": {"chat-lora-v7": 1.0, "chat-lora-v8": 1.0}})
    );
    let refused = post(
        &c,
        &sim,
        "/control",
        r#"{"ttftFactor": 10, "model": "chat-lora-v9"}"#,
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.json()["error"]["param"], "model");

    let set = post(
        &c,
        &sim,
        "/control",
        r#"{"ttftFactor": 10, "model": "chat-lora-v8"}"#,
    )
    .await;
    assert_eq!(
        set.json(),
        json!({"ttftFactor": null, "models": {"chat-lora-v7": 1.0, "chat-lora-v8": 10.0}})
    );
    // Timers never fire early: the slowed model's first frame comes no
    // sooner than 10 × 20 ms.
    let slowed = post(
        &c,
        &sim,
        "/v1/chat/completions",
        &chat_to("chat-lora-v8", true),
    )
    .await;
    assert!(
        slowed.first_frame() >= Duration::from_millis(200),
        "{:?}",
        slowed.first_frame()
    );
    let other = post(
        &c,
        &sim,
        "/v1/chat/completions",
        &chat_to("chat-lora-v7", true),
    )
    .await;
    assert!(
        other.first_frame() < Duration::from_millis(200),
        "the other model keeps its TTFT: {:?}",
        other.first_frame()
    );
    // Without `model`, every model.
    let all = post(&c, &sim, "/control", r#"{"ttftFactor": 2}"#).await;
    assert_eq!(all.json()["ttftFactor"], 2.0);
}
