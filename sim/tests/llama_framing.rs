//! The simulator's `Framing::LlamaCpp` against recorded llama.cpp server
//! responses (tests/fixtures/llama): the same chunk shapes in the same
//! order, so what weir's meter meets in a simulated stream is what it
//! meets in a real one.

use serde_json::Value;
use weir_sim::{Framing, SimConfig};

mod common;
use common::{client, fast, post, start};

/// The shape of one SSE event: `[DONE]`, or the sorted keys of the chunk's
/// first choice's delta (`text` for completions, `""` marking an empty
/// string), whether it finishes, and whether it carries usage.
fn shapes(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|data| {
            if data == "[DONE]" {
                return "[DONE]".to_string();
            }
            let chunk: Value = serde_json::from_str(data).expect("a JSON chunk");
            let choice = &chunk["choices"][0];
            let piece = |v: &Value| match v.as_str() {
                Some("") => "\"\"",
                Some(_) => "text",
                None => "-",
            };
            let mut keys: Vec<String> = match choice["delta"].as_object() {
                Some(delta) => delta
                    .iter()
                    .map(|(k, v)| match k.as_str() {
                        "content" => format!("content:{}", piece(v)),
                        other => other.to_string(),
                    })
                    .collect(),
                None => vec![format!("text:{}", piece(&choice["text"]))],
            };
            keys.sort();
            let finish = if choice["finish_reason"].is_null() {
                ""
            } else {
                " finish"
            };
            let usage = if chunk.get("usage").is_some() {
                " usage"
            } else {
                ""
            };
            format!("{{{}}}{finish}{usage}", keys.join(","))
        })
        .collect()
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../tests/fixtures/llama/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture JSON")
}

/// The shapes with runs of token chunks folded: the real server's text
/// is random bytes, so which tokens are partial differs; that some are,
/// and where the role, finish and `[DONE]` stand, must not.
fn folded(shapes: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in shapes {
        let token = s.contains(":text}") || s.contains(":\"\"}");
        let s = if token && !s.contains("finish") {
            "{token}".to_string()
        } else {
            s.clone()
        };
        if out.last() != Some(&s) || s != "{token}" {
            out.push(s);
        }
    }
    out
}

#[tokio::test]
async fn llama_cpp_framing_has_the_real_servers_chunk_shapes() {
    let sim = start(SimConfig {
        framing: Framing::LlamaCpp,
        tokens: 16,
        ..fast()
    })
    .await;
    let c = client();
    // (fixture, path, request body): include_usage asked, as in the fixtures.
    let cases = [
        (
            "chat-stream-usage-length",
            "/v1/chat/completions",
            r#"{"model":"tiny","messages":[{"role":"user","content":"Say something."}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":16}"#,
        ),
        (
            "completions-stream-usage-length",
            "/v1/completions",
            r#"{"model":"tiny","prompt":"Say something.","stream":true,"stream_options":{"include_usage":true},"max_tokens":16}"#,
        ),
    ];
    for (name, path, body) in cases {
        let real = fixture(name);
        let ex = post(&c, &sim, path, body).await;
        let simulated = shapes(ex.text());
        let recorded = shapes(real["body"].as_str().expect("body"));
        assert_eq!(
            folded(&simulated),
            folded(&recorded),
            "{name}:\nsim  {simulated:?}\nreal {recorded:?}"
        );
        for (what, shapes) in [("sim", &simulated), ("real", &recorded)] {
            assert!(
                shapes
                    .iter()
                    .any(|s| s.contains(":\"\"}") && !s.contains("finish")),
                "{name}: {what} streams empty token chunks: {shapes:?}"
            );
            assert!(
                !shapes.iter().any(|s| s.contains("usage")),
                "{name}: {what} sends no usage: {shapes:?}"
            );
        }
        // The same content type, up to the charset parameter.
        let real_type = real["content_type"].as_str().expect("content type");
        let sim_type = ex.headers["content-type"].to_str().expect("ascii");
        assert!(real_type.starts_with(sim_type), "{real_type} vs {sim_type}");
    }
}
