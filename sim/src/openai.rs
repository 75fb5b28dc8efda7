//! The OpenAI wire format: reading completion requests and writing
//! responses, chunks and error bodies, with no I/O.
//!
//! Requests are parsed with serde into the few fields the simulator uses;
//! anything else is ignored, as vLLM does. Stream chunks are rendered by
//! concatenation: the per-request part (id, model, fingerprint) is
//! JSON-encoded once into a prefix, and each token chunk is that prefix plus
//! a token that needs no escaping ([`crate::text`]), in one allocation.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::json;

/// Which completion API a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions` (legacy text completions).
    Completions,
}

impl Endpoint {
    /// The `id` prefix OpenAI uses for this API.
    fn id_prefix(self) -> &'static str {
        match self {
            Endpoint::Chat => "chatcmpl-",
            Endpoint::Completions => "cmpl-",
        }
    }
}

/// What the simulator needs from a completion request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionRequest {
    /// The model asked for (echoed in responses).
    pub model: String,
    /// `"stream": true`.
    pub stream: bool,
    /// `"stream_options": {"include_usage": true}`.
    pub include_usage: bool,
    /// `max_tokens` (or chat's `max_completion_tokens`).
    pub max_tokens: Option<u32>,
    /// Estimated prompt tokens.
    pub prompt_tokens: u32,
}

/// Why a request was rejected with HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// For the client, in OpenAI's words where OpenAI has some.
    pub message: String,
    /// The offending parameter, if one is to blame.
    pub param: Option<&'static str>,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    messages: Option<Vec<Message<'a>>>,
    #[serde(default, borrow)]
    prompt: Option<Prompt<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[allow(dead_code)] // required by the API, not used here
    role: Cow<'a, str>,
    #[serde(default, borrow)]
    content: Option<Content<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<Part<'a>>),
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Texts(#[serde(borrow)] Vec<Cow<'a, str>>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

fn invalid(message: impl Into<String>, param: Option<&'static str>) -> RequestError {
    RequestError {
        message: message.into(),
        param,
    }
}

/// Parses a completion request body.
///
/// # Errors
/// A [`RequestError`] for malformed JSON, a missing `model`, `messages`
/// (chat) or `prompt` (completions), or a `max_tokens` below 1.
pub fn parse_request(endpoint: Endpoint, body: &[u8]) -> Result<CompletionRequest, RequestError> {
    let wire: Wire<'_> = serde_json::from_slice(body).map_err(|e| {
        invalid(
            format!(
                "We could not parse the JSON body of your request. ({e}) \
                 The OpenAI API expects a JSON payload."
            ),
            None,
        )
    })?;
    let model = match wire.model {
        Some(m) if !m.is_empty() => m.into_owned(),
        _ => {
            return Err(invalid("you must provide a model parameter", Some("model")));
        }
    };
    let prompt_tokens = match endpoint {
        Endpoint::Chat => {
            let messages = wire.messages.ok_or_else(|| {
                invalid("Missing required parameter: 'messages'.", Some("messages"))
            })?;
            if messages.is_empty() {
                return Err(invalid(
                    "Invalid 'messages': empty array. Expected an array with minimum length 1.",
                    Some("messages"),
                ));
            }
            messages
                .iter()
                .map(|m| match &m.content {
                    None => 0,
                    Some(Content::Text(t)) => crate::text::estimate_tokens(t),
                    Some(Content::Parts(parts)) => parts
                        .iter()
                        .filter_map(|p| p.text.as_deref())
                        .map(crate::text::estimate_tokens)
                        .fold(0u32, u32::saturating_add),
                })
                .fold(0u32, u32::saturating_add)
        }
        Endpoint::Completions => {
            match wire
                .prompt
                .ok_or_else(|| invalid("Missing required parameter: 'prompt'.", Some("prompt")))?
            {
                Prompt::Text(t) => crate::text::estimate_tokens(&t),
                Prompt::Texts(ts) => ts
                    .iter()
                    .map(|t| crate::text::estimate_tokens(t))
                    .fold(0u32, u32::saturating_add),
                Prompt::Tokens(ts) => u32::try_from(ts.len()).unwrap_or(u32::MAX),
                Prompt::TokenBatches(bs) => {
                    u32::try_from(bs.iter().map(Vec::len).sum::<usize>()).unwrap_or(u32::MAX)
                }
            }
        }
    };
    let max_tokens = match wire.max_completion_tokens.or(wire.max_tokens) {
        None => None,
        Some(m) if m >= 1 => Some(u32::try_from(m).unwrap_or(u32::MAX)),
        Some(m) => {
            return Err(invalid(
                format!("max_tokens must be at least 1, got {m}."),
                Some("max_tokens"),
            ));
        }
    };
    Ok(CompletionRequest {
        model,
        stream: wire.stream.unwrap_or(false),
        include_usage: wire
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        max_tokens,
        prompt_tokens,
    })
}

/// An OpenAI error body: `{"error":{"message":..,"type":..,"param":..,"code":..}}`.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<u16>) -> Bytes {
    let body = json!({
        "error": {"message": message, "type": kind, "param": param, "code": code}
    });
    Bytes::from(body.to_string())
}

/// The SSE event a stream ends with when it fails mid-way.
pub const STREAM_ERROR_EVENT: &[u8] = b"data: {\"error\":{\"message\":\"simulated failure mid-stream\",\"type\":\"server_error\",\"param\":null,\"code\":500}}\n\n";

/// The SSE event a complete stream ends with.
pub const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// What follows a chat chunk's content string.
const CONTENT_TAIL: &[u8] = b"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";

/// Why generation stopped, as OpenAI spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its answer.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

impl Finish {
    /// The `finish_reason` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// Token usage of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens (estimated).
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
}

/// Renders one response's pieces. Built once per request.
#[derive(Debug, Clone)]
pub struct Renderer {
    endpoint: Endpoint,
    /// `data: {"id":..,"object":..,"created":..,"model":..,"system_fingerprint":..,"choices":[`
    prefix: Vec<u8>,
    id: String,
    created: u64,
    model: String,
    fingerprint: String,
}

impl Renderer {
    /// A renderer for one response. `id_suffix` makes the response id
    /// unique; `created` is Unix seconds.
    pub fn new(
        endpoint: Endpoint,
        id_suffix: u64,
        created: u64,
        model: &str,
        fingerprint: &str,
    ) -> Self {
        let id = format!("{}{id_suffix:016x}", endpoint.id_prefix());
        let model_json = serde_json::Value::from(model).to_string();
        let fingerprint_json = serde_json::Value::from(fingerprint).to_string();
        let object = match endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completions => "text_completion",
        };
        let prefix = format!(
            "data: {{\"id\":\"{id}\",\"object\":\"{object}\",\"created\":{created},\"model\":{model_json},\
             \"system_fingerprint\":{fingerprint_json},\"choices\":["
        )
        .into_bytes();
        Renderer {
            endpoint,
            prefix,
            id,
            created,
            model: model.to_string(),
            fingerprint: fingerprint.to_string(),
        }
    }

    fn event(&self, body: &[&[u8]]) -> Bytes {
        let len = self.prefix.len() + body.iter().map(|b| b.len()).sum::<usize>();
        let mut out = BytesMut::with_capacity(len);
        out.put_slice(&self.prefix);
        for b in body {
            out.put_slice(b);
        }
        out.freeze()
    }

    /// The chunk carrying token `index` (from 0). `token` must need no JSON
    /// escaping. The first chat chunk also carries `"role":"assistant"`.
    pub fn token_chunk(&self, index: u32, token: &str) -> Bytes {
        match self.endpoint {
            Endpoint::Chat if index == 0 => self.event(&[
                b"{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"",
                token.as_bytes(),
                CONTENT_TAIL,
            ]),
            _ => self.piece_chunk(token),
        }
    }

    /// A chat chunk with only `"role":"assistant"` in its delta, as
    /// llama.cpp's server starts a stream; `None` for text completions,
    /// which have no role.
    pub fn role_chunk(&self) -> Option<Bytes> {
        match self.endpoint {
            Endpoint::Chat => Some(self.event(&[
                b"{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
            ])),
            Endpoint::Completions => None,
        }
    }

    /// A chunk carrying `token` (possibly `""`) and never the role.
    /// `token` must need no JSON escaping.
    pub fn piece_chunk(&self, token: &str) -> Bytes {
        match self.endpoint {
            Endpoint::Chat => self.event(&[
                b"{\"index\":0,\"delta\":{\"content\":\"",
                token.as_bytes(),
                CONTENT_TAIL,
            ]),
            Endpoint::Completions => self.event(&[
                b"{\"index\":0,\"text\":\"",
                token.as_bytes(),
                b"\",\"logprobs\":null,\"finish_reason\":null}]}\n\n",
            ]),
        }
    }

    /// The chunk with `finish_reason`, after the last token.
    pub fn finish_chunk(&self, finish: Finish) -> Bytes {
        let reason = finish.as_str().as_bytes();
        match self.endpoint {
            Endpoint::Chat => self.event(&[
                b"{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"",
                reason,
                b"\"}]}\n\n",
            ]),
            Endpoint::Completions => self.event(&[
                b"{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"",
                reason,
                b"\"}]}\n\n",
            ]),
        }
    }

    /// The usage chunk (`choices: []`) sent when `include_usage` is set.
    pub fn usage_chunk(&self, usage: Usage) -> Bytes {
        let tail = format!(
            "],\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\n",
            usage.prompt_tokens,
            usage.completion_tokens,
            u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens)
        );
        self.event(&[tail.as_bytes()])
    }

    /// The non-streaming response body.
    pub fn full_body(&self, text: &str, finish: Finish, usage: Usage) -> Bytes {
        let usage = json!({
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens),
        });
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish.as_str(),
            }),
            Endpoint::Completions => json!({
                "index": 0,
                "text": text,
                "logprobs": null,
                "finish_reason": finish.as_str(),
            }),
        };
        let object = match self.endpoint {
            Endpoint::Chat => "chat.completion",
            Endpoint::Completions => "text_completion",
        };
        let body = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": [choice],
            "usage": usage,
        });
        Bytes::from(body.to_string())
    }
}

/// The `/v1/models` body listing `models`, in vLLM's shape.
pub fn models_body<'a>(models: impl IntoIterator<Item = &'a str>, created: u64) -> Bytes {
    let data: Vec<serde_json::Value> = models
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "weir-sim"}))
        .collect();
    Bytes::from(json!({"object": "list", "data": data}).to_string())
}

/// The `type` of vLLM's answer to a request for a model it does not serve.
pub const NOT_FOUND_TYPE: &str = "NotFoundError";

/// vLLM's message for a request naming a model it does not serve (sent
/// with HTTP 404, [`NOT_FOUND_TYPE`], `param: null`, `code: 404`).
pub fn model_not_found_message(model: &str) -> String {
    format!("The model `{model}` does not exist.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip_sse(event: &[u8]) -> serde_json::Value {
        let text = std::str::from_utf8(event).expect("utf-8");
        let json = text
            .strip_prefix("data: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .expect("one SSE data event");
        serde_json::from_str(json).expect("chunk is JSON")
    }

    #[test]
    fn parses_chat_and_completions_requests() {
        let chat = br#"{"model":"m","messages":[{"role":"user","content":"Say something."}],
            "stream":true,"stream_options":{"include_usage":true},"max_tokens":5}"#;
        assert_eq!(
            parse_request(Endpoint::Chat, chat),
            Ok(CompletionRequest {
                model: "m".into(),
                stream: true,
                include_usage: true,
                max_tokens: Some(5),
                prompt_tokens: 4,
            })
        );
        let parts = br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"abcdefgh"}]}],
            "max_completion_tokens":3}"#;
        let req = parse_request(Endpoint::Chat, parts).expect("parts");
        assert_eq!(
            (req.prompt_tokens, req.max_tokens, req.stream),
            (2, Some(3), false)
        );
        let completions = br#"{"model":"m","prompt":[1,2,3]}"#;
        let req = parse_request(Endpoint::Completions, completions).expect("tokens");
        assert_eq!(req.prompt_tokens, 3);
    }

    #[test]
    fn rejects_what_openai_rejects() {
        let cases: [(Endpoint, &[u8], Option<&str>); 6] = [
            (Endpoint::Chat, b"{not json", None),
            (Endpoint::Chat, b"[1,2]", None),
            (
                Endpoint::Chat,
                br#"{"messages":[{"role":"user","content":"x"}]}"#,
                Some("model"),
            ),
            (Endpoint::Chat, br#"{"model":"m"}"#, Some("messages")),
            (
                Endpoint::Completions,
                br#"{"model":"m","messages":[]}"#,
                Some("prompt"),
            ),
            (
                Endpoint::Completions,
                br#"{"model":"m","prompt":"x","max_tokens":0}"#,
                Some("max_tokens"),
            ),
        ];
        for (endpoint, body, param) in cases {
            let err = parse_request(endpoint, body).expect_err("rejected");
            assert_eq!(err.param, param, "{err}");
        }
    }

    #[test]
    fn chunks_are_openai_shaped_json() {
        let r = Renderer::new(Endpoint::Chat, 1, 1_700_000_000, "we\"ird", "sim-a");
        let first = strip_sse(&r.token_chunk(0, "Hello"));
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["model"], "we\"ird");
        assert_eq!(first["system_fingerprint"], "sim-a");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(first["choices"][0]["delta"]["content"], "Hello");
        assert!(first["choices"][0]["finish_reason"].is_null());
        let second = strip_sse(&r.token_chunk(1, " there"));
        assert!(second["choices"][0]["delta"].get("role").is_none());
        let finish = strip_sse(&r.finish_chunk(Finish::Length));
        assert_eq!(finish["choices"][0]["finish_reason"], "length");
        let usage = strip_sse(&r.usage_chunk(Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
        }));
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 7);

        let c = Renderer::new(Endpoint::Completions, 2, 1, "m", "s");
        let tok = strip_sse(&c.token_chunk(0, "Hi"));
        assert_eq!(tok["object"], "text_completion");
        assert_eq!(tok["choices"][0]["text"], "Hi");
        assert!(tok["id"].as_str().expect("id").starts_with("cmpl-"));
    }

    #[test]
    fn full_body_has_usage() {
        let r = Renderer::new(Endpoint::Chat, 1, 5, "m", "s");
        let body: serde_json::Value = serde_json::from_slice(&r.full_body(
            "Hi there",
            Finish::Stop,
            Usage {
                prompt_tokens: 2,
                completion_tokens: 2,
            },
        ))
        .expect("json");
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["message"]["content"], "Hi there");
        assert_eq!(body["usage"]["completion_tokens"], 2);
        assert_eq!(body["system_fingerprint"], "s");
    }

    #[test]
    fn models_and_not_found_are_vllm_shaped() {
        let body: serde_json::Value =
            serde_json::from_slice(&models_body(["a", "b"], 7)).expect("json");
        assert_eq!(body["object"], "list");
        assert_eq!(body["data"][1]["id"], "b");
        assert_eq!(body["data"][1]["object"], "model");
        let err: serde_json::Value = serde_json::from_slice(&error_body(
            &model_not_found_message("x"),
            NOT_FOUND_TYPE,
            None,
            Some(404),
        ))
        .expect("json");
        assert_eq!(
            err,
            json!({"error": {
                "message": "The model `x` does not exist.",
                "type": "NotFoundError", "param": null, "code": 404,
            }})
        );
    }

    #[test]
    fn stream_error_event_is_an_openai_error() {
        let v = strip_sse(STREAM_ERROR_EVENT);
        assert_eq!(v["error"]["type"], "server_error");
    }
}
