//! `weir sim` as the frontend of an inference graph, as processes: a
//! frontend forwarding to the worker its environment names, each with a
//! generation from its environment, and the worker counting which
//! generation sent each request: the signal a graph canary's generation
//! isolation test reads. Usage errors for unset variables, and the 502 of
//! an upstream that is not there.

use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::{Sim, command, free_addr, sim_in_env, spawn_command};
use weir_test_kit::sim::generation_counts;

const EXIT: Duration = Duration::from_secs(60);
/// Longest wait for one answer.
const PATIENCE: Duration = Duration::from_secs(30);

/// A worker of generation `generation`: fast, 4 tokens per answer.
fn worker(generation: &str) -> Sim {
    sim_in_env(
        "worker",
        &[
            "--generation-env",
            "G",
            "--ttft",
            "5ms",
            "--itl",
            "1ms",
            "--tokens",
            "4",
            "--model",
            "chat-decode",
        ],
        &[("G", generation)],
    )
}

/// A frontend of generation `generation` forwarding to `upstream`.
fn frontend(name: &str, generation: &str, upstream: &str) -> Sim {
    sim_in_env(
        name,
        &[
            "--forward-env",
            "URL_VAR",
            "--generation-env",
            "G",
            "--model",
            "frontend-model",
        ],
        &[("URL_VAR", upstream), ("G", generation)],
    )
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .expect("a client")
}

async fn chat(client: &reqwest::Client, sim: &Sim, stream: bool) -> reqwest::Response {
    client
        .post(format!("http://{}/v1/chat/completions", sim.addr))
        .json(&json!({
            "model": "chat-decode",
            "messages": [{"role": "user", "content": "Say something."}],
            "stream": stream,
        }))
        .send()
        .await
        .expect("a response")
}

/// The value of `weir_sim_generation_requests_total{from="FROM",own="OWN"}`
/// in `sim`'s scrape, if the sample is there.
async fn generation_count(
    client: &reqwest::Client,
    sim: &Sim,
    from: &str,
    own: &str,
) -> Option<f64> {
    let text = client
        .get(format!("http://{}/metrics", sim.addr))
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("a scrape");
    generation_counts(&text)
        .into_iter()
        .find(|(f, o, _)| f == from && o == own)
        .map(|(.., n)| n)
}

/// Every `weir_sim_generation_requests_total` sample of `sim`: (from, own).
async fn generation_samples(client: &reqwest::Client, sim: &Sim) -> Vec<(String, String)> {
    let text = client
        .get(format!("http://{}/metrics", sim.addr))
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("a scrape");
    generation_counts(&text)
        .into_iter()
        .map(|(from, own, _)| (from, own))
        .collect()
}

#[tokio::test]
async fn a_frontend_relays_to_its_worker_and_the_worker_counts_its_generation() {
    let worker = worker("gen-a");
    let front_a = frontend("front-a", "gen-a", &format!("http://{}", worker.addr));
    let client = http();

    // Non-streamed: the worker's body, through the frontend.
    let response = chat(&client, &front_a, false).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-weir-sim"], "front-a");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["system_fingerprint"], "worker", "{body}");
    assert_eq!(body["model"], "chat-decode");
    assert_eq!(body["usage"]["completion_tokens"], 4, "{body}");

    // Streamed: the worker's events, read as they arrive.
    let mut response = chat(&client, &front_a, true).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while let Some(chunk) = response.chunk().await.expect("a chunk") {
        text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    let events: Vec<&str> = text
        .split_terminator("\n\n")
        .map(|e| e.strip_prefix("data: ").expect("a data event"))
        .collect();
    // Four tokens, the finish, [DONE].
    assert_eq!(events.len(), 6, "{text}");
    assert_eq!(events[5], "[DONE]");
    for event in &events[..5] {
        let chunk: Value = serde_json::from_str(event).expect("a JSON chunk");
        assert_eq!(chunk["system_fingerprint"], "worker", "{chunk}");
    }

    // /v1/models is the worker's list.
    let models: Value = client
        .get(format!("http://{}/v1/models", front_a.addr))
        .send()
        .await
        .expect("a response")
        .json()
        .await
        .expect("JSON");
    assert_eq!(models["data"][0]["id"], "chat-decode", "{models}");

    // The worker counted both completions as gen-a's, and nothing else;
    // the frontend counted them as sent with no generation.
    assert_eq!(
        generation_count(&client, &worker, "gen-a", "gen-a").await,
        Some(2.0)
    );
    assert_eq!(
        generation_samples(&client, &worker).await,
        [("gen-a".to_string(), "gen-a".to_string())]
    );
    assert_eq!(
        generation_count(&client, &front_a, "", "gen-a").await,
        Some(2.0)
    );

    // A frontend of another generation reaching the same worker shows.
    let front_b = frontend("front-b", "gen-b", &format!("http://{}", worker.addr));
    assert_eq!(chat(&client, &front_b, false).await.status(), 200);
    assert_eq!(
        generation_count(&client, &worker, "gen-b", "gen-a").await,
        Some(1.0)
    );
    assert_eq!(
        generation_count(&client, &worker, "gen-a", "gen-a").await,
        Some(2.0)
    );
}

#[tokio::test]
async fn an_upstream_that_is_not_there_is_a_502() {
    let nowhere = format!("http://{}", free_addr());
    let front = frontend("front", "gen-a", &nowhere);
    let client = http();
    let response = chat(&client, &front, true).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.expect("a JSON error");
    let message = body["error"]["message"].as_str().expect("a message");
    assert!(message.contains(&nowhere), "{message}");
    let scrape = client
        .get(format!("http://{}/metrics", front.addr))
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("a scrape");
    assert!(
        scrape.contains(
            "vllm:request_success_total{engine=\"0\",finished_reason=\"error\",model_name=\"frontend-model\"} 1.0\n"
        ),
        "{scrape}"
    );
}

#[test]
fn an_unset_variable_is_a_usage_error_naming_it() {
    for (flags, var) in [
        (
            &["--forward-env", "WEIR_TEST_NO_SUCH_URL"][..],
            "WEIR_TEST_NO_SUCH_URL",
        ),
        (
            &[
                "--forward",
                "http://127.0.0.1:9",
                "--generation-env",
                "WEIR_TEST_NO_SUCH_GENERATION",
            ],
            "WEIR_TEST_NO_SUCH_GENERATION",
        ),
    ] {
        let argv = [&["sim", "--listen", "127.0.0.1:0"][..], flags].concat();
        let mut cmd = command(&argv);
        cmd.env_remove(var);
        let mut proc = spawn_command("weir sim", cmd);
        let status = proc
            .wait_exit(EXIT)
            .unwrap_or_else(|| panic!("weir sim {flags:?} still running after {EXIT:?}"));
        let stderr = proc.stderr.when_closed(EXIT);
        assert_eq!(status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(
            stderr.contains(var),
            "{flags:?}: {var} missing from {stderr}"
        );
    }
}
