//! An incremental parser of OpenAI-style SSE streams, as a client sees them.
//!
//! Bytes arrive in arbitrary pieces (a TCP read may hold half an event or
//! ten of them); [`SseParser::push`] buffers until a line is complete and
//! reports each complete event, classified by [`classify`]. Lines may end
//! with `\n` or `\r\n`; `data:` lines of one event are joined with `\n`;
//! comments and other fields are ignored, as the SSE specification says.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// One SSE event, as it matters to a load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A completion chunk.
    Chunk {
        /// Whether it carries non-empty text (`delta.content` or `text`).
        content: bool,
        /// Its `finish_reason`, if it carries one.
        finish: Option<FinishReason>,
    },
    /// `data: [DONE]`.
    Done,
    /// An error event: `{"error": ...}` data or `event: error`.
    Error,
    /// Data that is neither `[DONE]` nor a JSON chunk.
    Malformed,
}

/// A chunk's `finish_reason`, as far as a load report tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// `"stop"`: the model ended its answer.
    Stop,
    /// `"length"`: `max_tokens` (or the context) cut it.
    Length,
    /// Anything else (`"tool_calls"`, `"content_filter"`, ...).
    Other,
}

impl FinishReason {
    fn of(reason: &str) -> Self {
        match reason {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            _ => FinishReason::Other,
        }
    }
}

#[derive(Deserialize)]
struct ChunkView<'a> {
    #[serde(default)]
    error: Option<IgnoredAny>,
    #[serde(default, borrow)]
    choices: Vec<ChoiceView<'a>>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(default, borrow)]
    delta: Option<DeltaView<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DeltaView<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

/// Classifies one event's joined `data`, given its `event:` type if any.
pub fn classify(event_type: Option<&[u8]>, data: &[u8]) -> Event {
    if event_type == Some(b"error") {
        return Event::Error;
    }
    if data == b"[DONE]" {
        return Event::Done;
    }
    let Ok(chunk) = serde_json::from_slice::<ChunkView<'_>>(data) else {
        return Event::Malformed;
    };
    if chunk.error.is_some() {
        return Event::Error;
    }
    let mut content = false;
    let mut finish = None;
    for choice in &chunk.choices {
        let delta = choice.delta.as_ref().and_then(|d| d.content.as_deref());
        content |= delta.is_some_and(|t| !t.is_empty());
        content |= choice.text.as_deref().is_some_and(|t| !t.is_empty());
        if let Some(reason) = choice.finish_reason.as_deref() {
            finish = Some(FinishReason::of(reason));
        }
    }
    Event::Chunk { content, finish }
}

/// Splits a byte stream into events.
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    event_type: Option<Vec<u8>>,
}

impl SseParser {
    /// Feeds `bytes`; calls `on_event` for every event they complete.
    pub fn push(&mut self, bytes: &[u8], mut on_event: impl FnMut(Event)) {
        self.pending.extend_from_slice(bytes);
        let mut consumed = 0;
        while let Some(newline) = self.pending[consumed..].iter().position(|&b| b == b'\n') {
            let end = consumed + newline;
            let mut line = &self.pending[consumed..end];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            if line.is_empty() {
                if self.has_data || self.event_type.is_some() {
                    on_event(classify(self.event_type.as_deref(), &self.data));
                }
                self.data.clear();
                self.has_data = false;
                self.event_type = None;
            } else if let Some(value) = field(line, b"data") {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            } else if let Some(value) = field(line, b"event") {
                self.event_type = Some(value.to_vec());
            }
            consumed = end + 1;
        }
        self.pending.drain(..consumed);
    }

    /// Whether bytes of an unfinished event are buffered.
    pub fn has_partial_event(&self) -> bool {
        !self.pending.is_empty() || self.has_data
    }
}

/// The value of `name: value` (one optional space after the colon).
fn field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(pieces: &[&[u8]]) -> Vec<Event> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for p in pieces {
            parser.push(p, |e| out.push(e));
        }
        out
    }

    #[test]
    fn classifies_chunks_done_and_errors() {
        let content = Event::Chunk {
            content: true,
            finish: None,
        };
        assert_eq!(
            classify(None, br#"{"choices":[{"delta":{"content":"hi"}}]}"#),
            content
        );
        assert_eq!(classify(None, br#"{"choices":[{"text":"hi"}]}"#), content);
        assert_eq!(
            classify(
                None,
                br#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#
            ),
            Event::Chunk {
                content: false,
                finish: None
            }
        );
        for (reason, want) in [
            ("stop", FinishReason::Stop),
            ("length", FinishReason::Length),
            ("tool_calls", FinishReason::Other),
        ] {
            let data = format!(r#"{{"choices":[{{"delta":{{}},"finish_reason":"{reason}"}}]}}"#);
            assert_eq!(
                classify(None, data.as_bytes()),
                Event::Chunk {
                    content: false,
                    finish: Some(want)
                }
            );
        }
        assert_eq!(classify(None, b"[DONE]"), Event::Done);
        assert_eq!(
            classify(None, br#"{"error":{"message":"x"}}"#),
            Event::Error
        );
        assert_eq!(classify(Some(b"error"), b"whatever"), Event::Error);
        assert_eq!(classify(None, b"{oops"), Event::Malformed);
    }

    #[test]
    fn events_split_anywhere_are_reassembled() {
        let stream: &[u8] =
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n: comment\n\ndata: [DONE]\n\n";
        let whole = events(&[stream]);
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[1], Event::Done);
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(events(&[a, b]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn multi_line_data_is_joined() {
        let got = events(&[b"data: {\"choices\":\ndata: []}\n\n"]);
        assert_eq!(
            got,
            vec![Event::Chunk {
                content: false,
                finish: None
            }]
        );
    }

    #[test]
    fn partial_events_are_reported() {
        let mut parser = SseParser::default();
        parser.push(b"data: [DO", |_| {});
        assert!(parser.has_partial_event());
        parser.push(b"NE]\n\n", |_| {});
        assert!(!parser.has_partial_event());
    }
}
