//! What an OpenAI-compatible server says it serves (`GET /v1/models`),
//! read once for every check that a model canary's names are loaded before
//! traffic moves (local mode's preflight; Kubernetes mode per pod).
//!
//! Pure: the caller fetches the body.

use serde::Deserialize;

/// The models a `/v1/models` body lists, in its order.
///
/// # Errors
/// What the body is instead of a model list, in words.
pub fn listed(body: &str) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    struct List {
        data: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        id: String,
    }
    serde_json::from_str::<List>(body)
        .map(|l| l.data.into_iter().map(|e| e.id).collect())
        .map_err(|e| format!("not an OpenAI model list ({e})"))
}

/// Why `model` cannot be served by a server whose `/v1/models` said
/// `body`: `None` when it is listed.
pub fn missing(body: &str, model: &str) -> Option<String> {
    match listed(body) {
        Ok(ids) if ids.iter().any(|id| id == model) => None,
        Ok(ids) => {
            let shown: Vec<&str> = ids.iter().take(8).map(String::as_str).collect();
            let more = if ids.len() > shown.len() { ", …" } else { "" };
            Some(format!(
                "does not list {model} (it lists: {}{more}); load it first (vLLM: --lora-modules {model}=PATH, or POST /v1/load_lora_adapter with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True; SGLang: --lora-paths {model}=PATH)",
                if shown.is_empty() {
                    "nothing".to_string()
                } else {
                    shown.join(", ")
                }
            ))
        }
        Err(e) => Some(format!(
            "cannot tell whether it serves {model}: /v1/models is {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vLLM 0.6's answer with a base model and one LoRA adapter.
    const VLLM: &str = r#"{"object":"list","data":[
        {"id":"meta-llama/Llama-3.1-8B-Instruct","object":"model","created":1,"owned_by":"vllm","root":"meta-llama/Llama-3.1-8B-Instruct","parent":null,"max_model_len":8192},
        {"id":"chat-lora-v7","object":"model","created":1,"owned_by":"vllm","root":"/adapters/v7","parent":"meta-llama/Llama-3.1-8B-Instruct"}]}"#;

    #[test]
    fn a_listed_model_passes_and_a_missing_one_is_named_with_the_fix() {
        assert_eq!(
            listed(VLLM).expect("a list"),
            ["meta-llama/Llama-3.1-8B-Instruct", "chat-lora-v7"]
        );
        assert_eq!(missing(VLLM, "chat-lora-v7"), None);
        let why = missing(VLLM, "chat-lora-v8").expect("missing");
        assert!(
            why.starts_with("does not list chat-lora-v8 (it lists: meta-llama/Llama-3.1-8B-Instruct, chat-lora-v7)")
                && why.contains("--lora-modules chat-lora-v8=PATH"),
            "{why}"
        );
        let why = missing("Not Found", "x").expect("not a list");
        assert!(why.contains("not an OpenAI model list"), "{why}");
        assert!(
            missing(r#"{"data":[]}"#, "x")
                .expect("empty")
                .contains("lists: nothing")
        );
    }
}
