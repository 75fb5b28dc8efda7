//! What one request did: time to first token, inter-token gaps, output
//! tokens and its outcome, measured from the bytes the proxy passes through.
//!
//! A [`Meter`] is fed by the proxy's callbacks (`on_response` from the
//! upstream response header, `on_body_chunk` from the body filter, `finish`
//! from `logging`) with the time of each call injected, so it is a plain
//! state machine that tests drive byte by byte. It never changes, buffers
//! beyond one SSE event, logs or keeps a body.
//!
//! # What is measured
//!
//! - **TTFT**: time from the request's start to the first non-empty body
//!   chunk (DESIGN.md). vLLM sends its first chunk, the assistant role, only
//!   once the first token exists, so this is time to first token as a client
//!   sees it.
//! - **ITL**: the gap between consecutive SSE *content* events, one sample
//!   per gap. Events that arrive in one chunk have a gap of 0: that is what
//!   the client saw, and it keeps the mean gap equal to the stream's
//!   duration over its tokens.
//! - **Content events**: an OpenAI-style chunk with a non-empty
//!   `choices[].delta.content`, `delta.reasoning_content`, `delta.reasoning`,
//!   `delta.tool_calls` or `choices[].text`. A `data:` payload that is not
//!   JSON at all (a generic SSE stream) counts as content too.
//! - **Output tokens**: `usage.completion_tokens` when the upstream reports
//!   it (the last value seen): the server's own count is the only exact
//!   one. Else the number of *token events*: content events, plus chunks
//!   whose `delta.content` or `text` is the empty string outside the first
//!   (`role`) and last (`finish_reason`) chunk. llama.cpp's server sends no
//!   usage in streams, even with `stream_options.include_usage`, and sends
//!   one chunk per token with `""` for a token that ends inside a UTF-8
//!   character: counting only non-empty content missed 40% of its tokens.
//!   A server that batches several tokens per event (SGLang's
//!   `--stream-interval`) is still undercounted without usage;
//!   [`RequestRecord::tokens_from_usage`] says which count a record has.
//! - **Outcome**: see [`Outcome`] and [`classify`].
//!
//! # Shape
//!
//! One private submodule per concern, each small enough to read alone:
//!
//! - `sse`: the SSE wire format, parsed incrementally (a line split across
//!   chunks, `\r\n` split between two chunks, lone `\r`, several events per
//!   chunk), with one reused buffer bounded by [`MAX_EVENT_BYTES`];
//! - `chunk`: each event's `data` read with serde_json into a view of the
//!   few fields above, never a substring scan (a JSON string can contain
//!   `"content"`, exactly when a model talks about JSON);
//! - `usage`: non-streaming JSON bodies are not parsed at all; a streaming
//!   matcher finds the last `"completion_tokens"` key;
//! - `outcome`: [`classify`], the outcome from how the request ended, its
//!   status and what its stream said.

use std::time::{Duration, Instant};

use weir_core::Outcome;

use crate::histogram::Histogram;
use crate::metrics;

mod chunk;
mod outcome;
mod sse;
mod usage;

pub use outcome::{End, StreamEnd, classify};
pub use sse::MAX_EVENT_BYTES;
use sse::{SseEvent, SseParser};
use usage::{LengthScanner, UsageScanner};

/// Everything the proxy keeps about one finished request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// The outcome.
    pub outcome: Outcome,
    /// How it ended.
    pub end: End,
    /// The upstream's status, when a response header arrived.
    pub status: Option<u16>,
    /// Whether the response was an SSE stream.
    pub streamed: bool,
    /// Time from start to the upstream's response header.
    pub time_to_headers: Option<Duration>,
    /// Time from start to the first non-empty body chunk.
    pub ttft: Option<Duration>,
    /// Gaps between consecutive content events, seconds, one per gap.
    pub inter_token: Histogram,
    /// Time from start to `finish`.
    pub duration: Duration,
    /// Output tokens: usage when reported, else token events.
    pub output_tokens: u64,
    /// Whether `output_tokens` came from the upstream's `usage`.
    pub tokens_from_usage: bool,
    /// SSE content events seen (non-empty text).
    pub content_events: u64,
    /// SSE token events seen: content events and empty-text token chunks
    /// (see the module documentation).
    pub token_events: u64,
    /// The answer was cut at the token limit (`finish_reason: "length"`).
    pub finish_length: bool,
    /// Decode speed, tokens per second after the first: the output tokens
    /// but the first over the time from the first content event to the
    /// last. `None` for fewer than two tokens, or all of them in one
    /// instant (a non-streamed body).
    pub decode_rate: Option<f64>,
}

/// The per-request meter. See the module documentation.
#[derive(Debug)]
pub struct Meter {
    start: Instant,
    status: Option<u16>,
    response_at: Option<Instant>,
    streamed: bool,
    first_chunk: Option<Instant>,
    sse: SseParser,
    stats: StreamStats,
    usage_scan: UsageScanner,
    length_scan: LengthScanner,
}

#[derive(Debug)]
struct StreamStats {
    first_content: Option<Instant>,
    last_content: Option<Instant>,
    inter_token: Histogram,
    content_events: u64,
    token_events: u64,
    usage_tokens: Option<u64>,
    end: StreamEnd,
}

impl Meter {
    /// A meter for a request that started at `start` (when its header
    /// arrived at the proxy).
    pub fn new(start: Instant) -> Self {
        Meter {
            start,
            status: None,
            response_at: None,
            streamed: false,
            first_chunk: None,
            sse: SseParser::default(),
            stats: StreamStats {
                first_content: None,
                last_content: None,
                inter_token: Histogram::new(metrics::INTER_TOKEN_BUCKETS),
                content_events: 0,
                token_events: 0,
                usage_tokens: None,
                end: StreamEnd::default(),
            },
            usage_scan: UsageScanner::default(),
            length_scan: LengthScanner::default(),
        }
    }

    /// The upstream's response header arrived. Informational (1xx) statuses
    /// are ignored; the final one counts.
    pub fn on_response(&mut self, status: u16, content_type: Option<&str>, now: Instant) {
        if status < 200 {
            return;
        }
        self.status = Some(status);
        self.response_at = Some(now);
        self.streamed = content_type.is_some_and(is_event_stream);
    }

    /// A chunk of the response body passed through (in order).
    pub fn on_body_chunk(&mut self, chunk: &[u8], now: Instant) {
        if chunk.is_empty() {
            return;
        }
        self.first_chunk.get_or_insert(now);
        if self.streamed {
            let stats = &mut self.stats;
            self.sse
                .feed(chunk, &mut |event| stats.on_event(event, now));
        } else {
            self.usage_scan.feed(chunk);
            self.length_scan.feed(chunk);
        }
    }

    /// The request is over; `now` is when its last byte went out (or it failed).
    pub fn finish(mut self, end: End, now: Instant) -> RequestRecord {
        if self.streamed {
            let stats = &mut self.stats;
            self.sse.flush(&mut |event| stats.on_event(event, now));
        }
        let usage = if self.streamed {
            self.stats.usage_tokens
        } else {
            self.usage_scan.finish()
        };
        let sse = self.streamed.then_some(self.stats.end);
        let output_tokens = usage.unwrap_or(self.stats.token_events);
        let decode_rate = match (self.stats.first_content, self.stats.last_content) {
            (Some(first), Some(last)) if output_tokens >= 2 && last > first => {
                Some((output_tokens - 1) as f64 / (last - first).as_secs_f64())
            }
            _ => None,
        };
        RequestRecord {
            outcome: classify(end, self.status, sse),
            end,
            status: self.status,
            streamed: self.streamed,
            time_to_headers: self
                .response_at
                .map(|t| t.saturating_duration_since(self.start)),
            ttft: self
                .first_chunk
                .map(|t| t.saturating_duration_since(self.start)),
            inter_token: self.stats.inter_token,
            duration: now.saturating_duration_since(self.start),
            output_tokens,
            tokens_from_usage: usage.is_some(),
            content_events: self.stats.content_events,
            token_events: self.stats.token_events,
            finish_length: self.stats.end.length || self.length_scan.found,
            decode_rate,
        }
    }
}

fn is_event_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
}

impl StreamStats {
    fn on_event(&mut self, event: SseEvent<'_>, now: Instant) {
        if event.error_type {
            self.end.error_event = true;
            return;
        }
        if event.overflow {
            return;
        }
        let data = event.data.trim_ascii();
        if data == b"[DONE]" {
            self.end.done = true;
            return;
        }
        if data.is_empty() {
            return;
        }
        let content = match chunk::read(data) {
            Some(chunk) => {
                if chunk.error {
                    self.end.error_event = true;
                }
                if chunk.finished {
                    self.end.finished = true;
                }
                if chunk.length {
                    self.end.length = true;
                }
                if let Some(tokens) = chunk.completion_tokens {
                    self.usage_tokens = Some(tokens);
                }
                self.token_events += chunk.tokens;
                chunk.content
            }
            // JSON we cannot read says nothing; plain text is a token.
            None => {
                let text = !matches!(data.first(), Some(b'{' | b'['));
                self.token_events += u64::from(text);
                text
            }
        };
        if content {
            if let Some(previous) = self.last_content {
                self.inter_token
                    .record(now.saturating_duration_since(previous).as_secs_f64());
            }
            self.first_content.get_or_insert(now);
            self.last_content = Some(now);
            self.content_events += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A realistic vLLM chat stream: role chunk, three tokens, finish, usage, DONE.
    fn vllm_stream() -> Vec<String> {
        let chunk = |delta: &str, finish: &str| {
            format!(
                "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
            )
        };
        vec![
            chunk(r#"{"role":"assistant","content":""}"#, "null"),
            chunk(r#"{"content":"Hello"}"#, "null"),
            chunk(r#"{"content":" \"content\": world"}"#, "null"),
            chunk(r#"{"content":"!"}"#, "null"),
            chunk(r#"{"content":""}"#, r#""stop""#),
            "data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":9,\"completion_tokens\":4}}\n\n".into(),
            "data: [DONE]\n\n".into(),
        ]
    }

    /// Feeds `events` one per chunk at 10 ms intervals after a 100 ms TTFT.
    fn run(events: &[String], end: End) -> RequestRecord {
        let t0 = Instant::now();
        let mut m = Meter::new(t0);
        m.on_response(200, Some("text/event-stream; charset=utf-8"), t0 + ms(50));
        let mut t = t0 + ms(100);
        for e in events {
            m.on_body_chunk(e.as_bytes(), t);
            t += ms(10);
        }
        m.finish(end, t)
    }

    #[test]
    fn a_complete_vllm_stream_is_ok_with_usage_tokens_and_gaps() {
        let r = run(&vllm_stream(), End::Complete);
        assert_eq!(r.outcome, Outcome::Ok);
        assert!(r.streamed);
        assert_eq!(r.ttft, Some(ms(100)));
        assert_eq!(r.time_to_headers, Some(ms(50)));
        assert_eq!(r.content_events, 3);
        assert_eq!((r.output_tokens, r.tokens_from_usage), (4, true));
        // Content at 110, 120, 130 ms: two gaps of 10 ms.
        assert_eq!(r.inter_token.count(), 2);
        assert!((r.inter_token.sum() - 0.020).abs() < 1e-9);
        assert_eq!(r.duration, ms(170));
        // Tokens 2 to 4 (usage says 4) between the first content event at
        // 110 ms and the last at 130 ms.
        let rate = r.decode_rate.expect("a decode rate");
        assert!((rate - 3.0 / 0.020).abs() < 1e-6, "{rate}");
        assert!(!r.finish_length);
    }

    #[test]
    fn an_answer_cut_at_the_token_limit_is_marked_streamed_or_not() {
        let mut events = vllm_stream();
        events[4] = events[4].replace(r#""stop""#, r#""length""#);
        let r = run(&events, End::Complete);
        assert_eq!(r.outcome, Outcome::Ok);
        assert!(r.finish_length);

        let body = r#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"finish_reason: \"length\""},"finish_reason":"length"}],"usage":{"completion_tokens":16}}"#;
        let whole = |body: &str| {
            let t0 = Instant::now();
            let mut m = Meter::new(t0);
            m.on_response(200, Some("application/json"), t0);
            for piece in body.as_bytes().chunks(7) {
                m.on_body_chunk(piece, t0 + ms(5));
            }
            m.finish(End::Complete, t0 + ms(6))
        };
        let r = whole(body);
        assert!(r.finish_length);
        assert_eq!((r.output_tokens, r.decode_rate), (16, None));
        let stopped = body.replace(r#""finish_reason":"length""#, r#""finish_reason":"stop""#);
        assert!(
            !whole(&stopped).finish_length,
            "the text's quote is not the field"
        );
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let whole: String = vllm_stream().concat();
        let crlf = whole.replace('\n', "\r\n");
        let cr = whole.replace('\n', "\r");
        for text in [&whole, &crlf, &cr] {
            let bytes = text.as_bytes();
            for size in [1, 2, 3, 7, 64, bytes.len()] {
                let t0 = Instant::now();
                let mut m = Meter::new(t0);
                m.on_response(200, Some("text/event-stream"), t0);
                for piece in bytes.chunks(size) {
                    m.on_body_chunk(piece, t0 + ms(1));
                }
                let r = m.finish(End::Complete, t0 + ms(2));
                assert_eq!(
                    (r.outcome, r.content_events, r.output_tokens),
                    (Outcome::Ok, 3, 4),
                    "chunk size {size}"
                );
                // All in one instant: gaps of zero, still one per gap.
                assert_eq!(r.inter_token.count(), 2);
            }
        }
    }

    #[test]
    fn a_byte_order_mark_split_across_chunks_is_still_skipped() {
        let stream = "\u{feff}data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: [DONE]\n\n";
        for size in [1, 2, 3, 4] {
            let t0 = Instant::now();
            let mut m = Meter::new(t0);
            m.on_response(200, Some("text/event-stream"), t0);
            for piece in stream.as_bytes().chunks(size) {
                m.on_body_chunk(piece, t0);
            }
            let r = m.finish(End::Complete, t0);
            assert_eq!(
                (r.content_events, r.outcome),
                (1, Outcome::Ok),
                "chunk size {size}"
            );
        }
        // Found by fuzzing: a partial BOM is content, however it is split.
        let odd: &[u8] = b"\xEF\xBBdata: x\n\n";
        let count = |size: usize| {
            let t0 = Instant::now();
            let mut m = Meter::new(t0);
            m.on_response(200, Some("text/event-stream"), t0);
            for piece in odd.chunks(size) {
                m.on_body_chunk(piece, t0);
            }
            m.finish(End::Complete, t0).content_events
        };
        assert_eq!(count(1), count(odd.len()));
    }

    #[test]
    fn a_stream_without_done_or_finish_reason_is_a_stream_error() {
        let mut events = vllm_stream();
        events.truncate(4); // role + 3 tokens
        let r = run(&events, End::Complete);
        assert_eq!(r.outcome, Outcome::StreamError);
        assert_eq!((r.output_tokens, r.tokens_from_usage), (3, false));
        assert_eq!(
            run(&events, End::UpstreamReset).outcome,
            Outcome::StreamError
        );
        assert_eq!(run(&events, End::ClientAbort).outcome, Outcome::ClientAbort);
        assert_eq!(run(&events, End::Timeout).outcome, Outcome::Timeout);
        // finish_reason without [DONE] is complete.
        let mut finished = vllm_stream();
        finished.truncate(5);
        assert_eq!(run(&finished, End::Complete).outcome, Outcome::Ok);
        // [DONE] seen, then the client went away: the client had it all.
        assert_eq!(run(&vllm_stream(), End::ClientAbort).outcome, Outcome::Ok);
    }

    #[test]
    fn without_usage_empty_token_chunks_count_as_tokens_but_not_as_content() {
        // llama.cpp's server: role chunk without content, one chunk per
        // token ("" for a partial UTF-8 character), an empty delta with the
        // finish, no usage even when asked.
        let chunk = |delta: &str, finish: &str| {
            format!(
                "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\r\n\r\n"
            )
        };
        let events = vec![
            chunk(r#"{"role":"assistant"}"#, "null"),
            chunk(r#"{"content":"a"}"#, "null"),
            chunk(r#"{"content":""}"#, "null"),
            chunk(r#"{"content":"\u00e9"}"#, "null"),
            chunk(r#"{"content":""}"#, "null"),
            chunk(r#"{}"#, r#""length""#),
            "data: [DONE]\r\n\r\n".into(),
        ];
        let r = run(&events, End::Complete);
        assert_eq!(r.outcome, Outcome::Ok);
        assert_eq!((r.content_events, r.token_events), (2, 4));
        assert_eq!((r.output_tokens, r.tokens_from_usage), (4, false));
        // The same for legacy completions: `text` "" per partial token.
        let text = |t: &str, finish: &str| {
            format!("data: {{\"choices\":[{{\"text\":\"{t}\",\"finish_reason\":{finish}}}]}}\n\n")
        };
        let events = vec![
            text("a", "null"),
            text("", "null"),
            text("b", "null"),
            text("", r#""stop""#),
        ];
        let r = run(&events, End::Complete);
        assert_eq!(
            (r.content_events, r.token_events, r.output_tokens),
            (2, 3, 3)
        );
        // vLLM's first and last chunks carry no token; usage wins anyway.
        let r = run(&vllm_stream(), End::Complete);
        assert_eq!((r.token_events, r.output_tokens), (3, 4));
    }

    /// A recorded llama.cpp response (tests/fixtures/llama), fed read by
    /// read as the socket delivered it.
    fn replay(fixture: &str) -> RequestRecord {
        let doc: serde_json::Value = serde_json::from_str(fixture).expect("fixture JSON");
        let t0 = Instant::now();
        let mut m = Meter::new(t0);
        let status = u16::try_from(doc["status"].as_u64().expect("status")).expect("u16");
        m.on_response(status, doc["content_type"].as_str(), t0 + ms(1));
        let mut t = t0 + ms(10);
        for read in doc["reads"].as_array().expect("reads") {
            m.on_body_chunk(read.as_str().expect("text").as_bytes(), t);
            t += ms(1);
        }
        m.finish(End::Complete, t)
    }

    #[test]
    fn recorded_llama_cpp_streams_are_metered_as_the_server_counts() {
        let fixture = |name| match name {
            "chat-stream-length" => {
                include_str!("../../../tests/fixtures/llama/chat-stream-length.json")
            }
            "chat-stream-usage-length" => {
                include_str!("../../../tests/fixtures/llama/chat-stream-usage-length.json")
            }
            "chat-stream-stop" => {
                include_str!("../../../tests/fixtures/llama/chat-stream-stop.json")
            }
            "completions-stream-length" => {
                include_str!("../../../tests/fixtures/llama/completions-stream-length.json")
            }
            "chat-length" => include_str!("../../../tests/fixtures/llama/chat-length.json"),
            "chat-stop" => include_str!("../../../tests/fixtures/llama/chat-stop.json"),
            "completions-length" => {
                include_str!("../../../tests/fixtures/llama/completions-length.json")
            }
            "chat-stream-overflow" => {
                include_str!("../../../tests/fixtures/llama/chat-stream-overflow.json")
            }
            "chat-overflow" => include_str!("../../../tests/fixtures/llama/chat-overflow.json"),
            other => panic!("no fixture {other}"),
        };
        // Streamed: the token chunks, as many as the same greedy request's
        // non-streamed usage says (16, 3 and 17: llama.cpp's completions
        // go one past max_tokens 16).
        for (stream, body) in [
            ("chat-stream-length", "chat-length"),
            ("chat-stream-usage-length", "chat-length"),
            ("chat-stream-stop", "chat-stop"),
            ("completions-stream-length", "completions-length"),
        ] {
            let streamed = replay(fixture(stream));
            let whole = replay(fixture(body));
            assert_eq!(streamed.outcome, Outcome::Ok, "{stream}");
            assert!(
                !streamed.tokens_from_usage,
                "{stream}: llama.cpp streams no usage"
            );
            assert!(whole.tokens_from_usage, "{body}");
            assert_eq!(
                streamed.output_tokens, whole.output_tokens,
                "{stream} vs {body}"
            );
            assert!(
                streamed.content_events < streamed.token_events,
                "{stream}: partial characters"
            );
        }
        assert_eq!(replay(fixture("chat-stream-length")).output_tokens, 16);
        // Beyond the context window: 200 and an empty stream is a
        // stream_error; the non-streamed 400 a client_error.
        let overflow = replay(fixture("chat-stream-overflow"));
        assert_eq!(
            (overflow.outcome, overflow.ttft),
            (Outcome::StreamError, None)
        );
        assert_eq!(
            replay(fixture("chat-overflow")).outcome,
            Outcome::ClientError
        );
    }

    #[test]
    fn error_events_mid_stream_are_stream_errors_even_after_done() {
        let mut events = vllm_stream();
        events.insert(
            2,
            "data: {\"error\":{\"message\":\"engine died\",\"type\":\"InternalServerError\",\"code\":500}}\n\n".into(),
        );
        assert_eq!(run(&events, End::Complete).outcome, Outcome::StreamError);
        let mut typed = vllm_stream();
        typed.insert(2, "event: error\ndata: overloaded\n\n".into());
        let r = run(&typed, End::Complete);
        assert_eq!(r.outcome, Outcome::StreamError);
        assert_eq!(r.content_events, 3, "the error event is not content");
        // `"error": null` is no error.
        let mut null = vllm_stream();
        null.insert(2, "data: {\"choices\":[],\"error\":null}\n\n".into());
        assert_eq!(run(&null, End::Complete).outcome, Outcome::Ok);
    }

    #[test]
    fn completions_text_reasoning_and_tool_calls_are_content() {
        let events: Vec<String> = [
            r#"{"choices":[{"text":"Hi","finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[]}}]}"#,
            r#"{"choices":[{"text":"","finish_reason":"length"}]}"#,
        ]
        .iter()
        .map(|d| format!("data: {d}\n\n"))
        .collect();
        let r = run(&events, End::Complete);
        assert_eq!((r.content_events, r.outcome), (3, Outcome::Ok));
    }

    #[test]
    fn sse_fields_comments_and_multiline_data_follow_the_spec() {
        let stream = "\u{feff}: keep-alive\n\nid: 1\nretry: 10\ndata:{\"choices\":\ndata: [{\"text\":\"a\"}]}\n\nevent: message\ndata\n\ndata: [DONE]";
        let t0 = Instant::now();
        let mut m = Meter::new(t0);
        m.on_response(200, Some("TEXT/EVENT-STREAM"), t0);
        m.on_body_chunk(stream.as_bytes(), t0);
        // No trailing blank line: [DONE] is still read at the end.
        let r = m.finish(End::Complete, t0);
        assert_eq!((r.content_events, r.outcome), (1, Outcome::Ok));
    }

    #[test]
    fn oversized_events_are_skipped_not_buffered() {
        let big = format!(
            "data: {{\"choices\":[{{\"text\":\"{}\"}}]}}\n\n",
            "x".repeat(MAX_EVENT_BYTES)
        );
        let events = vec![
            big,
            "data: {\"choices\":[{\"text\":\"y\"}]}\n\n".into(),
            "data: [DONE]\n\n".into(),
        ];
        let r = run(&events, End::Complete);
        assert_eq!((r.content_events, r.outcome), (1, Outcome::Ok));
    }

    #[test]
    fn non_streaming_responses_are_judged_by_status() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"say \"completion_tokens\": 99"}}],"usage":{"prompt_tokens":3,"completion_tokens": 12,"total_tokens":15}}"#;
        let table = [
            (200, End::Complete, Outcome::Ok),
            (200, End::UpstreamReset, Outcome::StreamError),
            (200, End::ClientAbort, Outcome::ClientAbort),
            (200, End::Timeout, Outcome::Timeout),
            (302, End::Complete, Outcome::Ok),
            (400, End::Complete, Outcome::ClientError),
            (404, End::ClientAbort, Outcome::ClientError),
            (429, End::Complete, Outcome::RateLimited),
            (500, End::Complete, Outcome::ServerError),
            (503, End::UpstreamReset, Outcome::ServerError),
        ];
        for (status, end, want) in table {
            let t0 = Instant::now();
            let mut m = Meter::new(t0);
            m.on_response(status, Some("application/json"), t0 + ms(5));
            for piece in body.chunks(5) {
                m.on_body_chunk(piece, t0 + ms(900));
            }
            let r = m.finish(end, t0 + ms(901));
            assert_eq!(r.outcome, want, "{status} {end:?}");
            assert!(!r.streamed);
            assert_eq!(
                (r.output_tokens, r.tokens_from_usage),
                (12, true),
                "escaped key in content is skipped"
            );
            assert_eq!(r.ttft, Some(ms(900)));
            assert!(r.inter_token.is_empty());
        }
    }

    #[test]
    fn requests_without_a_response() {
        let t0 = Instant::now();
        let r = Meter::new(t0).finish(End::ConnectError, t0 + ms(3));
        assert_eq!(
            (r.outcome, r.status, r.ttft),
            (Outcome::ConnectError, None, None)
        );
        assert_eq!(r.duration, ms(3));
        assert_eq!(
            Meter::new(t0).finish(End::Timeout, t0).outcome,
            Outcome::Timeout
        );
        assert_eq!(
            Meter::new(t0).finish(End::ClientAbort, t0).outcome,
            Outcome::ClientAbort
        );
        assert_eq!(
            Meter::new(t0).finish(End::UpstreamReset, t0).outcome,
            Outcome::ServerError
        );
        // A 100 Continue is not the response.
        let mut m = Meter::new(t0);
        m.on_response(100, None, t0);
        assert_eq!(
            m.finish(End::UpstreamReset, t0).outcome,
            Outcome::ServerError
        );
    }

    #[test]
    fn debug_output_never_shows_body_bytes() {
        let t0 = Instant::now();
        let mut m = Meter::new(t0);
        m.on_response(200, Some("text/event-stream"), t0);
        m.on_body_chunk(b"data: {\"secret-prompt-text\"", t0);
        let shown = format!("{m:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("buffered_bytes"), "{shown}");
    }

    proptest! {
        /// Any split of the stream into chunks gives the same record.
        #[test]
        fn any_chunking_gives_the_same_counts(cuts in prop::collection::vec(0usize..2000, 0..40), crlf in any::<bool>()) {
            let mut text: String = vllm_stream().concat();
            if crlf {
                text = text.replace('\n', "\r\n");
            }
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let t0 = Instant::now();
            let mut m = Meter::new(t0);
            m.on_response(200, Some("text/event-stream"), t0);
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                m.on_body_chunk(&bytes[at..c], t0);
                at = c;
            }
            let r = m.finish(End::Complete, t0);
            prop_assert_eq!((r.outcome, r.content_events, r.output_tokens), (Outcome::Ok, 3, 4));
        }
    }
}
