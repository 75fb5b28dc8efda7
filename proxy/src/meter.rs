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
//!   it (the last value seen), else the number of content events.
//! - **Outcome**: see [`Outcome`] and [`classify`].
//!
//! # Why parse this way
//!
//! The SSE parser is incremental: a line split across chunks, `\r\n` split
//! between two chunks, lone `\r`, several events per chunk all work, with no
//! per-event allocation (one reused buffer, bounded by
//! [`MAX_EVENT_BYTES`]). Each event's `data` is then read with serde_json
//! into a view that borrows and ignores everything but the handful of fields
//! above, without building a `Value`: a JSON string can contain `"content"`
//! or `"finish_reason"` inside generated text, so a substring scan would be
//! wrong exactly when a model talks about JSON, and serde_json skipping the
//! rest costs about what a scan would.
//!
//! Non-streaming JSON bodies are not parsed at all: a streaming matcher
//! looks for the key `"completion_tokens"` followed by a number. Inside a
//! JSON string every `"` is escaped, so the quoted key (not preceded by a
//! backslash) can only be a real key; no body is held in memory.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::metrics::{self, outcome};
use crate::observe::Histogram;

/// The largest SSE event (its joined `data` lines) the meter reads; a larger
/// event is counted as unreadable rather than buffered.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// How a request ended, as the proxy saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum End {
    /// The upstream finished the response and it was delivered.
    Complete,
    /// The client closed the connection first.
    ClientAbort,
    /// The upstream closed or reset the connection mid-response (or before
    /// answering).
    UpstreamReset,
    /// The upstream was silent for longer than the read timeout.
    Timeout,
    /// No connection to the upstream could be made (refused, unreachable,
    /// connect timeout); nothing was sent.
    ConnectError,
}

/// The outcome of a request, exported as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Succeeded: a complete stream, or a 1xx-3xx response.
    Ok,
    /// 4xx other than 429: the request was at fault.
    ClientError,
    /// 5xx, or the upstream closed before answering.
    ServerError,
    /// 429: the upstream shed load.
    RateLimited,
    /// No connection to the upstream.
    ConnectError,
    /// The upstream went silent past the read timeout.
    Timeout,
    /// A 2xx stream with an error event, without `[DONE]` or
    /// `finish_reason`, or cut by the upstream: the errors a status code
    /// hides.
    StreamError,
    /// The client left before the response was complete.
    ClientAbort,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::ClientError,
        Outcome::ServerError,
        Outcome::RateLimited,
        Outcome::ConnectError,
        Outcome::Timeout,
        Outcome::StreamError,
        Outcome::ClientAbort,
    ];

    /// The label value (`ok`, `server_error`, ...), from [`crate::metrics::outcome`].
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => outcome::OK,
            Outcome::ClientError => outcome::CLIENT_ERROR,
            Outcome::ServerError => outcome::SERVER_ERROR,
            Outcome::RateLimited => outcome::RATE_LIMITED,
            Outcome::ConnectError => outcome::CONNECT_ERROR,
            Outcome::Timeout => outcome::TIMEOUT,
            Outcome::StreamError => outcome::STREAM_ERROR,
            Outcome::ClientAbort => outcome::CLIENT_ABORT,
        }
    }

    /// The outcome with label value `s`.
    pub fn from_label(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Index in [`Outcome::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What the stream said about how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamEnd {
    /// `data: [DONE]` arrived.
    pub done: bool,
    /// Some choice had a non-null `finish_reason`.
    pub finished: bool,
    /// An error event arrived (`data: {"error": ...}` or `event: error`).
    pub error_event: bool,
}

/// The outcome of a request from how it ended, the upstream's status (if a
/// response header arrived) and, for SSE responses, what the stream said.
///
/// In order: a connect error is a connect error; an upstream status of 429,
/// 5xx or 4xx decides; then an error event makes a `stream_error`; an SSE
/// stream that reached `[DONE]` or a `finish_reason` is `ok` however the
/// connection closed afterwards; otherwise timeout, client abort, or an
/// upstream reset (`server_error` before a response, `stream_error` after)
/// decide; a completed SSE stream without `[DONE]`/`finish_reason` is a
/// `stream_error`.
pub fn classify(end: End, status: Option<u16>, sse: Option<StreamEnd>) -> Outcome {
    if end == End::ConnectError {
        return Outcome::ConnectError;
    }
    match status {
        Some(429) => return Outcome::RateLimited,
        Some(s) if s >= 500 => return Outcome::ServerError,
        Some(s) if s >= 400 => return Outcome::ClientError,
        _ => {}
    }
    if let Some(stream) = sse {
        if stream.error_event {
            return Outcome::StreamError;
        }
        if stream.done || stream.finished {
            return Outcome::Ok;
        }
    }
    match (end, status) {
        (End::Timeout, _) => Outcome::Timeout,
        (End::ClientAbort, _) => Outcome::ClientAbort,
        (End::UpstreamReset | End::Complete, None) => Outcome::ServerError,
        (End::UpstreamReset, Some(_)) => Outcome::StreamError,
        (End::Complete, Some(_)) if sse.is_some() => Outcome::StreamError,
        (End::Complete, Some(_)) => Outcome::Ok,
        (End::ConnectError, _) => Outcome::ConnectError,
    }
}

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
    /// Output tokens: usage when reported, else content events.
    pub output_tokens: u64,
    /// Whether `output_tokens` came from the upstream's `usage`.
    pub tokens_from_usage: bool,
    /// SSE content events seen.
    pub content_events: u64,
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
}

#[derive(Debug)]
struct StreamStats {
    last_content: Option<Instant>,
    inter_token: Histogram,
    content_events: u64,
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
                last_content: None,
                inter_token: Histogram::new(metrics::INTER_TOKEN_BUCKETS),
                content_events: 0,
                usage_tokens: None,
                end: StreamEnd::default(),
            },
            usage_scan: UsageScanner::default(),
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
            output_tokens: usage.unwrap_or(self.stats.content_events),
            tokens_from_usage: usage.is_some(),
            content_events: self.stats.content_events,
        }
    }
}

fn is_event_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// One dispatched SSE event.
#[derive(Debug)]
struct SseEvent<'a> {
    data: &'a [u8],
    /// `event: error`.
    error_type: bool,
    /// The data was larger than [`MAX_EVENT_BYTES`] and was not kept.
    overflow: bool,
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
        let content = match serde_json::from_slice::<ChunkView>(data) {
            Ok(chunk) => {
                if chunk.error.is_some() {
                    self.end.error_event = true;
                }
                if chunk.choices.finished {
                    self.end.finished = true;
                }
                if let Some(tokens) = chunk.usage.and_then(|u| u.completion_tokens) {
                    self.usage_tokens = Some(tokens);
                }
                chunk.choices.content
            }
            // JSON we cannot read says nothing; plain text is a token.
            Err(_) => !matches!(data.first(), Some(b'{' | b'[')),
        };
        if content {
            if let Some(previous) = self.last_content {
                self.inter_token
                    .record(now.saturating_duration_since(previous).as_secs_f64());
            }
            self.last_content = Some(now);
            self.content_events += 1;
        }
    }
}

/// The fields of an OpenAI-style stream chunk the meter needs; everything
/// else is skipped by serde without allocating.
#[derive(Deserialize)]
struct ChunkView {
    #[serde(default)]
    choices: Choices,
    #[serde(default)]
    usage: Option<UsageView>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct UsageView {
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// `choices`, folded while it is read instead of collected into a `Vec`.
#[derive(Default)]
struct Choices {
    content: bool,
    finished: bool,
}

#[derive(Deserialize)]
struct ChoiceView {
    #[serde(default)]
    delta: Option<DeltaView>,
    #[serde(default)]
    text: Option<NonEmpty>,
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct DeltaView {
    #[serde(default)]
    content: Option<NonEmpty>,
    #[serde(default)]
    reasoning_content: Option<NonEmpty>,
    #[serde(default)]
    reasoning: Option<NonEmpty>,
    #[serde(default)]
    tool_calls: Option<NonEmpty>,
}

impl<'de> Deserialize<'de> for Choices {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Choices;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_unit<E>(self) -> Result<Choices, E> {
                Ok(Choices::default())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Choices, A::Error> {
                let mut out = Choices::default();
                while let Some(choice) = seq.next_element::<ChoiceView>()? {
                    let has = |v: &Option<NonEmpty>| v.as_ref().is_some_and(|n| n.0);
                    out.content |= has(&choice.text)
                        || choice.delta.as_ref().is_some_and(|d| {
                            has(&d.content)
                                || has(&d.reasoning_content)
                                || has(&d.reasoning)
                                || has(&d.tool_calls)
                        });
                    out.finished |= choice.finish_reason.is_some();
                }
                Ok(out)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Whether a value carries anything: a non-empty string, list or object.
struct NonEmpty(bool);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NonEmpty;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E>(self, v: &str) -> Result<NonEmpty, E> {
                Ok(NonEmpty(!v.is_empty()))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<NonEmpty, E> {
                Ok(NonEmpty(!v.is_empty()))
            }
            fn visit_unit<E>(self) -> Result<NonEmpty, E> {
                Ok(NonEmpty(false))
            }
            fn visit_bool<E>(self, _: bool) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_i64<E>(self, _: i64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_u64<E>(self, _: u64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_f64<E>(self, _: f64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<NonEmpty, A::Error> {
                let mut any = false;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    any = true;
                }
                Ok(NonEmpty(any))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<NonEmpty, A::Error> {
                let mut any = false;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
                    any = true;
                }
                Ok(NonEmpty(any))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Where the parser is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum LineState {
    /// Nothing of the line read yet.
    #[default]
    Start,
    /// Reading a field name (up to `:`).
    Name,
    /// Reading a field value; `first` until the first value byte (an
    /// initial space is dropped).
    Value { field: Field, first: bool },
    /// A `:` comment line.
    Comment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Data,
    Event,
    Other,
}

/// An incremental parser of the SSE wire format (WHATWG HTML, "Server-sent
/// events"), keeping only `data` and `event`.
#[derive(Default)]
struct SseParser {
    state: LineState,
    /// The field name so far; names longer than this are not ones we read.
    name: [u8; 8],
    name_len: usize,
    /// The previous chunk ended with `\r`: a `\n` first in the next one
    /// belongs to the same line break.
    skip_lf: bool,
    /// Whether the stream's start (and a byte-order mark) was handled.
    started: bool,
    /// Bytes of a byte-order mark seen at the very start (it may be split
    /// across chunks too).
    bom_seen: usize,
    data: Vec<u8>,
    has_data: bool,
    overflow: bool,
    /// The `event` field value, if short enough to matter.
    event: [u8; 8],
    event_len: usize,
}

/// Shows the parser's state but never the body bytes it holds.
impl std::fmt::Debug for SseParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseParser")
            .field("state", &self.state)
            .field("buffered_bytes", &self.data.len())
            .field("has_data", &self.has_data)
            .field("overflow", &self.overflow)
            .finish_non_exhaustive()
    }
}

impl SseParser {
    fn feed(&mut self, mut input: &[u8], sink: &mut dyn FnMut(SseEvent<'_>)) {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        while !self.started {
            let Some((&first, rest)) = input.split_first() else {
                return;
            };
            if BOM.get(self.bom_seen) == Some(&first) {
                self.bom_seen += 1;
                self.started = self.bom_seen == BOM.len();
                input = rest;
            } else {
                // Not a BOM after all: what looked like one is line content.
                self.started = true;
                self.take(&BOM[..self.bom_seen]);
            }
        }
        if self.skip_lf && !input.is_empty() {
            self.skip_lf = false;
            input = input.strip_prefix(b"\n").unwrap_or(input);
        }
        while !input.is_empty() {
            match input.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.take(input);
                    return;
                }
                Some(i) => {
                    self.take(&input[..i]);
                    let cr = input[i] == b'\r';
                    input = &input[i + 1..];
                    if cr {
                        if input.is_empty() {
                            self.skip_lf = true;
                        } else {
                            input = input.strip_prefix(b"\n").unwrap_or(input);
                        }
                    }
                    self.end_line(sink);
                }
            }
        }
    }

    /// Bytes of the current line (no line break in `bytes`).
    fn take(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                LineState::Start => {
                    if bytes[0] == b':' {
                        self.state = LineState::Comment;
                        return;
                    }
                    self.state = LineState::Name;
                    self.name_len = 0;
                }
                LineState::Name => {
                    let (name, rest) = match bytes.iter().position(|&b| b == b':') {
                        Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
                        None => (bytes, None),
                    };
                    self.push_name(name);
                    let Some(rest) = rest else { return };
                    self.start_value();
                    bytes = rest;
                }
                LineState::Value { field, first } => {
                    if first {
                        bytes = bytes.strip_prefix(b" ").unwrap_or(bytes);
                        self.state = LineState::Value {
                            field,
                            first: false,
                        };
                    }
                    match field {
                        Field::Data => self.push_data(bytes),
                        Field::Event => {
                            for &b in bytes {
                                if let Some(slot) = self.event.get_mut(self.event_len) {
                                    *slot = b;
                                }
                                self.event_len += 1;
                            }
                        }
                        Field::Other => {}
                    }
                    return;
                }
                LineState::Comment => return,
            }
        }
    }

    fn push_name(&mut self, name: &[u8]) {
        for &b in name {
            if let Some(slot) = self.name.get_mut(self.name_len) {
                *slot = b;
            }
            self.name_len += 1;
        }
    }

    /// The `:` after a field name was read.
    fn start_value(&mut self) {
        let field = match self.name.get(..self.name_len) {
            Some(b"data") => Field::Data,
            Some(b"event") => Field::Event,
            _ => Field::Other,
        };
        match field {
            Field::Data => {
                if self.has_data {
                    self.push_data(b"\n");
                }
                self.has_data = true;
            }
            Field::Event => self.event_len = 0,
            Field::Other => {}
        }
        self.state = LineState::Value { field, first: true };
    }

    fn push_data(&mut self, bytes: &[u8]) {
        if self.overflow {
            return;
        }
        if self.data.len() + bytes.len() > MAX_EVENT_BYTES {
            self.overflow = true;
            self.data.clear();
            return;
        }
        self.data.extend_from_slice(bytes);
    }

    fn end_line(&mut self, sink: &mut dyn FnMut(SseEvent<'_>)) {
        match self.state {
            LineState::Start => self.dispatch(sink),
            // A field name without a colon has an empty value.
            LineState::Name => self.start_value(),
            _ => {}
        }
        self.state = LineState::Start;
    }

    fn dispatch(&mut self, sink: &mut dyn FnMut(SseEvent<'_>)) {
        let error_type = self.event.get(..self.event_len) == Some(b"error");
        if self.has_data || error_type {
            sink(SseEvent {
                data: &self.data,
                error_type,
                overflow: self.overflow,
            });
        }
        self.data.clear();
        self.has_data = false;
        self.overflow = false;
        self.event_len = 0;
    }

    /// The stream ended: dispatch an event that lacked its final blank line
    /// (lenient, so a missing trailing newline is not a missing `[DONE]`).
    fn flush(&mut self, sink: &mut dyn FnMut(SseEvent<'_>)) {
        if self.state != LineState::Start {
            self.end_line(sink);
        }
        self.dispatch(sink);
    }
}

/// Finds the last `"completion_tokens": N` in a JSON body fed in pieces.
#[derive(Debug, Default)]
struct UsageScanner {
    /// Bytes of [`KEY`] matched so far.
    matched: usize,
    /// After the key: 0 = expecting `:`, 1 = expecting digits, 2 = in digits.
    after_key: Option<u8>,
    number: u64,
    found: Option<u64>,
    previous: u8,
}

const KEY: &[u8] = b"\"completion_tokens\"";

impl UsageScanner {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.step(b);
            self.previous = b;
        }
    }

    fn step(&mut self, b: u8) {
        if let Some(phase) = self.after_key {
            match (phase, b) {
                (0 | 1, b' ' | b'\t' | b'\n' | b'\r') => return,
                (0, b':') => {
                    self.after_key = Some(1);
                    return;
                }
                (1 | 2, b'0'..=b'9') => {
                    self.number = self
                        .number
                        .saturating_mul(10)
                        .saturating_add(u64::from(b - b'0'));
                    self.after_key = Some(2);
                    return;
                }
                (2, _) => self.found = Some(self.number),
                _ => {}
            }
            self.after_key = None;
        }
        if self.matched > 0 && KEY.get(self.matched) == Some(&b) {
            self.matched += 1;
            if self.matched == KEY.len() {
                self.matched = 0;
                self.after_key = Some(0);
                self.number = 0;
            }
            return;
        }
        // Start (or restart) on an unescaped quote.
        self.matched = usize::from(b == b'"' && self.previous != b'\\');
    }

    fn finish(&mut self) -> Option<u64> {
        if self.after_key == Some(2) {
            self.found = Some(self.number);
        }
        self.found
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
    fn the_usage_scanner_takes_the_last_real_key() {
        let scan = |s: &str| {
            let mut u = UsageScanner::default();
            u.feed(s.as_bytes());
            u.finish()
        };
        assert_eq!(scan(r#"{"usage":{"completion_tokens":7}}"#), Some(7));
        assert_eq!(scan(r#"{"completion_tokens" :	 42"#), Some(42));
        assert_eq!(scan(r#"{"completion_tokens_details":{"x":1}}"#), None);
        assert_eq!(scan(r#"{"a":"\"completion_tokens\": 5"}"#), None);
        assert_eq!(scan(r#"{"completion_tokens":"5"}"#), None);
        assert_eq!(
            scan(r#"[{"completion_tokens":1},{"completion_tokens":2}]"#),
            Some(2)
        );
        assert_eq!(scan(r#"""completion_tokens":3"#), Some(3));
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

    #[test]
    fn outcome_labels_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_label(o.as_str()), Some(o));
            assert_eq!(Outcome::ALL[o.index()], o);
        }
        assert_eq!(Outcome::from_label("nope"), None);
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
