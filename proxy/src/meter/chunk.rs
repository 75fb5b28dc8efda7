//! What one SSE `data` payload says, read by a small JSON scanner that
//! looks only at the handful of fields the meter needs and skips the rest
//! without building anything.
//!
//! A JSON string can contain `"content"` or `"finish_reason"` inside
//! generated text, so a substring search would be wrong exactly when a
//! model talks about JSON: the scanner follows the JSON grammar (strings,
//! escapes, nesting) and knows at which depth a key sits. It replaced a
//! serde_json view of the same fields because it does the same in less
//! than half the instructions (bench/RESULTS.md, instructions per SSE
//! event); the tests check it against a `serde_json::Value` reading of
//! generated chunks.
//!
//! What counts as readable: valid JSON (UTF-8, at most [`MAX_DEPTH`]
//! levels), an object at the top, `choices` a list of objects (or null),
//! `delta` and `usage` objects (or null), `usage.completion_tokens` an
//! unsigned integer (or null). Anything else is unreadable (`None`), and
//! the meter says nothing about it. A key given twice counts once, the
//! last one, as in `serde_json::Value`.

use std::borrow::Cow;

/// What an OpenAI-style stream chunk says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChunkFacts {
    /// It carries content: a non-empty `choices[].delta.content`,
    /// `delta.reasoning_content`, `delta.reasoning`, `delta.tool_calls` or
    /// `choices[].text`.
    pub(super) content: bool,
    /// Generated tokens it carries, as far as the chunk can tell: one per
    /// choice with content (above), or with a `delta.content` / `text`
    /// that is the empty string while the choice neither finishes nor
    /// announces the role. Servers that stream every token send an empty
    /// string for a token that ends inside a UTF-8 character (llama.cpp's
    /// server with byte-level vocabularies, half of all tokens); vLLM's
    /// first chunk (`role` and `""`) and last (`""` with `finish_reason`)
    /// carry no token.
    pub(super) tokens: u64,
    /// Some choice has a non-null `finish_reason`.
    pub(super) finished: bool,
    /// Some choice has `finish_reason: "length"`: the answer was cut at
    /// the token limit.
    pub(super) length: bool,
    /// It has a non-null `error` field.
    pub(super) error: bool,
    /// `usage.completion_tokens`, when present.
    pub(super) completion_tokens: Option<u64>,
}

/// Nesting deeper than this is unreadable (serde_json's own limit), so a
/// hostile upstream cannot make the scanner recurse without bound.
pub(super) const MAX_DEPTH: usize = 128;

/// Reads one `data` payload; `None` when it is not a JSON object of the
/// expected shape.
pub(super) fn read(data: &[u8]) -> Option<ChunkFacts> {
    // Checked once for the whole payload, so the scanner below can work on
    // bytes: every byte it treats specially is ASCII.
    std::str::from_utf8(data).ok()?;
    let mut scan = Scanner { bytes: data, at: 0 };
    let mut chunk = Chunk::default();
    scan.object(1, |scan, key| {
        match &*key {
            b"choices" => chunk.choices = scan.choices()?,
            b"usage" => chunk.completion_tokens = scan.usage()?,
            b"error" => chunk.error = scan.skip(1)? != Shape::Null,
            _ => {
                scan.skip(1)?;
            }
        }
        Some(())
    })?;
    scan.whitespace();
    (scan.at == data.len()).then_some(ChunkFacts {
        content: chunk.choices.content,
        tokens: chunk.choices.tokens,
        finished: chunk.choices.finished,
        length: chunk.choices.length,
        error: chunk.error,
        completion_tokens: chunk.completion_tokens,
    })
}

#[derive(Default)]
struct Chunk {
    choices: Choices,
    error: bool,
    completion_tokens: Option<u64>,
}

/// `choices`, folded while it is read.
#[derive(Default)]
struct Choices {
    content: bool,
    tokens: u64,
    finished: bool,
    length: bool,
}

/// The fields of one choice, as the shapes of their values (`None`: the
/// key is absent).
#[derive(Default)]
struct Choice {
    /// `None` when `delta` is absent or null.
    delta: Option<Delta>,
    text: Option<Shape>,
    finish_reason: Option<Shape>,
    /// `finish_reason` is `"length"`.
    length: bool,
}

#[derive(Default)]
struct Delta {
    role: Option<Shape>,
    content: Option<Shape>,
    reasoning_content: Option<Shape>,
    reasoning: Option<Shape>,
    tool_calls: Option<Shape>,
}

impl Choice {
    fn fold_into(&self, out: &mut Choices) {
        // Present and not null.
        let set = |s: Option<Shape>| s.is_some_and(|s| s != Shape::Null);
        let full = |s: Option<Shape>| s == Some(Shape::Full);
        let content = full(self.text)
            || self.delta.as_ref().is_some_and(|d| {
                full(d.content)
                    || full(d.reasoning_content)
                    || full(d.reasoning)
                    || full(d.tool_calls)
            });
        // An empty piece of text, outside the first and last chunks, is a
        // token that decoded to nothing yet.
        let empty_piece = !set(self.finish_reason)
            && match &self.delta {
                Some(d) => !set(d.role) && set(d.content),
                None => set(self.text),
            };
        out.content |= content;
        out.tokens += u64::from(content || empty_piece);
        out.finished |= set(self.finish_reason);
        out.length |= self.length;
    }
}

/// What a skipped value held, as much as the meter asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Null,
    /// `""`, `[]` or `{}`.
    Empty,
    /// Anything else: a non-empty string, list or object, a number, a bool.
    Full,
}

/// The first byte of `bytes` that ends a run of plain string content: a
/// quote, a backslash or a control character. Eight bytes at a time (the
/// "has a zero byte" bit trick on each test): string content is most of
/// what a chunk holds, a test per byte cost more than the rest of the
/// scan, and the strings are too short for memchr's setup to pay off
/// (measured: bench/RESULTS.md).
fn special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let is_special = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
    let mut at = 0;
    while let Some(word) = bytes.get(at..at + 8) {
        let w = u64::from_le_bytes(word.try_into().ok()?);
        // Non-zero when some byte is below 0x20, a quote or a backslash
        // (which byte, the loop over the word decides).
        let hit = (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
            | zero_in(w ^ (ONES * u64::from(b'"')))
            | zero_in(w ^ (ONES * u64::from(b'\\')));
        if hit != 0
            && let Some(i) = word.iter().position(|&b| is_special(b))
        {
            return Some(at + i);
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| is_special(b))
        .map(|i| at + i)
}

/// A cursor over one payload. Every method returns `None` on anything that
/// is not JSON, leaving the cursor wherever it stopped.
struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.whitespace();
        self.bytes.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// An object's members, each key handed to `member`, which must consume
    /// the value. `depth` is the object's own nesting level.
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, Cow<'a, [u8]>) -> Option<()>,
    ) -> Option<Shape> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(Shape::Empty);
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.key()?;
            self.expect(b':')?;
            member(self, key)?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(Shape::Full);
                }
                _ => return None,
            }
        }
    }

    /// A list's elements, each handed to `element`, which must consume it.
    fn array(
        &mut self,
        depth: usize,
        mut element: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<Shape> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.expect(b'[')?;
        if self.peek()? == b']' {
            self.at += 1;
            return Some(Shape::Empty);
        }
        loop {
            element(self)?;
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(Shape::Full);
                }
                _ => return None,
            }
        }
    }

    /// A string (the cursor on its opening quote); its raw contents, and
    /// whether they hold an escape.
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        self.expect(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            let rest = self.bytes.get(self.at..)?;
            let i = special(rest)?;
            self.at += i;
            match rest[i] {
                b'"' => {
                    let raw = &self.bytes[start..self.at];
                    self.at += 1;
                    return Some((raw, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match *self.bytes.get(self.at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 2,
                        b'u' => {
                            let unit = self.hex_escape(self.at)?;
                            self.at += 6;
                            // UTF-16 surrogates come in pairs, as
                            // serde_json requires.
                            match unit {
                                0xD800..=0xDBFF => {
                                    let low = self.hex_escape(self.at)?;
                                    if !(0xDC00..=0xDFFF).contains(&low) {
                                        return None;
                                    }
                                    self.at += 6;
                                }
                                0xDC00..=0xDFFF => return None,
                                _ => {}
                            }
                        }
                        _ => return None,
                    }
                }
                // A control character.
                _ => return None,
            }
        }
    }

    /// The code unit of a `\uXXXX` escape starting at `at`.
    fn hex_escape(&self, at: usize) -> Option<u16> {
        let escape = self.bytes.get(at..at + 6)?;
        if &escape[..2] != b"\\u" {
            return None;
        }
        let hex = std::str::from_utf8(&escape[2..]).ok()?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u16::from_str_radix(hex, 16).ok()
    }

    /// An object key, as bytes: UTF-8 was checked for the whole payload,
    /// so comparing bytes is comparing text. Servers do not escape key
    /// names; the escaped case goes through serde_json, which also checks
    /// that the escapes decode.
    fn key(&mut self) -> Option<Cow<'a, [u8]>> {
        let start = self.at;
        let (raw, escaped) = self.string()?;
        if escaped {
            let quoted = &self.bytes[start..self.at];
            let key = serde_json::from_slice::<String>(quoted).ok()?;
            return Some(Cow::Owned(key.into_bytes()));
        }
        Some(Cow::Borrowed(raw))
    }

    /// A number, checked against JSON's grammar; its value when it is an
    /// integer that fits in a `u64`.
    fn number(&mut self) -> Option<Option<u64>> {
        let digits = |scan: &mut Self| {
            let start = scan.at;
            while scan.bytes.get(scan.at).is_some_and(u8::is_ascii_digit) {
                scan.at += 1;
            }
            scan.at - start
        };
        let negative = self.bytes.get(self.at) == Some(&b'-');
        self.at += usize::from(negative);
        let int_start = self.at;
        match digits(self) {
            0 => return None,
            1 => {}
            _ if self.bytes[int_start] == b'0' => return None,
            _ => {}
        }
        let int_end = self.at;
        let mut integer = !negative;
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            if digits(self) == 0 {
                return None;
            }
            integer = false;
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return None;
            }
            integer = false;
        }
        Some(
            integer
                .then(|| {
                    self.bytes[int_start..int_end]
                        .iter()
                        .try_fold(0u64, |n, d| {
                            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                        })
                })
                .flatten(),
        )
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// Skips one value; `depth` is the level it sits at.
    fn skip(&mut self, depth: usize) -> Option<Shape> {
        match self.peek()? {
            b'{' => self.object(depth + 1, |scan, _| scan.skip(depth + 1).map(drop)),
            b'[' => self.array(depth + 1, |scan| scan.skip(depth + 1).map(drop)),
            b'"' => {
                let (raw, _) = self.string()?;
                Some(if raw.is_empty() {
                    Shape::Empty
                } else {
                    Shape::Full
                })
            }
            b'n' => self.literal(b"null").map(|()| Shape::Null),
            b't' => self.literal(b"true").map(|()| Shape::Full),
            b'f' => self.literal(b"false").map(|()| Shape::Full),
            b'-' | b'0'..=b'9' => self.number().map(|_| Shape::Full),
            _ => None,
        }
    }

    /// `choices`: a list of choice objects, or null.
    fn choices(&mut self) -> Option<Choices> {
        let mut out = Choices::default();
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(out);
        }
        self.array(2, |scan| {
            let mut choice = Choice::default();
            scan.object(3, |scan, key| {
                match &*key {
                    b"delta" => choice.delta = scan.delta()?,
                    b"text" => choice.text = Some(scan.skip(3)?),
                    b"finish_reason" => {
                        choice.length = scan.peek()? == b'"'
                            && scan.bytes[scan.at..].starts_with(b"\"length\"");
                        choice.finish_reason = Some(scan.skip(3)?);
                    }
                    _ => {
                        scan.skip(3)?;
                    }
                }
                Some(())
            })?;
            choice.fold_into(&mut out);
            Some(())
        })?;
        Some(out)
    }

    /// A choice's `delta`: an object, or null (read as absent).
    fn delta(&mut self) -> Option<Option<Delta>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(None);
        }
        let mut delta = Delta::default();
        self.object(4, |scan, key| {
            let slot = match &*key {
                b"role" => &mut delta.role,
                b"content" => &mut delta.content,
                b"reasoning_content" => &mut delta.reasoning_content,
                b"reasoning" => &mut delta.reasoning,
                b"tool_calls" => &mut delta.tool_calls,
                _ => {
                    scan.skip(4)?;
                    return Some(());
                }
            };
            *slot = Some(scan.skip(4)?);
            Some(())
        })?;
        Some(Some(delta))
    }

    /// `usage`: an object (its `completion_tokens` an unsigned integer or
    /// null), or null.
    fn usage(&mut self) -> Option<Option<u64>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(None);
        }
        let mut tokens = None;
        self.object(2, |scan, key| {
            if &*key != b"completion_tokens" {
                return scan.skip(2).map(drop);
            }
            tokens = match scan.peek()? {
                b'n' => scan.literal(b"null").map(|()| None)?,
                b'0'..=b'9' => Some(scan.number()??),
                _ => return None,
            };
            Some(())
        })?;
        Some(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// The reference reading: the same rules, written over a parsed
    /// `serde_json::Value`, where they are plain to see.
    fn reference(data: &[u8]) -> Option<ChunkFacts> {
        let value: Value = serde_json::from_slice(data).ok()?;
        let chunk = value.as_object()?;
        let set = |v: Option<&Value>| v.is_some_and(|v| !v.is_null());
        let full = |v: Option<&Value>| match v {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(_) => true,
        };
        let mut out = Choices::default();
        let choices: &[Value] = match chunk.get("choices") {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(_) => return None,
        };
        for choice in choices {
            let choice = choice.as_object()?;
            let delta = match choice.get("delta") {
                None | Some(Value::Null) => None,
                Some(Value::Object(d)) => Some(d),
                Some(_) => return None,
            };
            let content = full(choice.get("text"))
                || delta.is_some_and(|d| {
                    ["content", "reasoning_content", "reasoning", "tool_calls"]
                        .iter()
                        .any(|k| full(d.get(*k)))
                });
            let empty_piece = !set(choice.get("finish_reason"))
                && match delta {
                    Some(d) => !set(d.get("role")) && set(d.get("content")),
                    None => set(choice.get("text")),
                };
            out.content |= content;
            out.tokens += u64::from(content || empty_piece);
            out.finished |= set(choice.get("finish_reason"));
            out.length |= choice.get("finish_reason") == Some(&json!("length"));
        }
        let completion_tokens = match chunk.get("usage") {
            None | Some(Value::Null) => None,
            Some(Value::Object(u)) => match u.get("completion_tokens") {
                None | Some(Value::Null) => None,
                Some(n) => Some(n.as_u64()?),
            },
            Some(_) => return None,
        };
        Some(ChunkFacts {
            content: out.content,
            tokens: out.tokens,
            finished: out.finished,
            length: out.length,
            error: set(chunk.get("error")),
            completion_tokens,
        })
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            Just(json!("")),
            Just(json!("Hi")),
            Just(json!("length")),
            Just(json!(
                "she wrote {\"content\": \"x\", \"finish_reason\": \"stop\"}"
            )),
            Just(json!("tab\tnewline\nquote\"backslash\\ é 🦀 \u{1}")),
            Just(json!(0)),
            Just(json!(17)),
            Just(json!(-3)),
            Just(json!(2.5)),
            Just(json!(true)),
            Just(json!([])),
            Just(json!([{"id": "call_1", "function": {"arguments": "{\"a\":[1]}"}}])),
            Just(json!({})),
            Just(json!({"content": "nested, not a delta"})),
        ]
    }

    fn object_of(fields: Vec<(&'static str, Value)>, present: Vec<bool>) -> Value {
        Value::Object(
            fields
                .into_iter()
                .zip(present)
                .filter(|(_, keep)| *keep)
                .map(|((k, v), _)| (k.to_string(), v))
                .collect(),
        )
    }

    fn delta() -> impl Strategy<Value = Value> {
        let keys = [
            "role",
            "content",
            "reasoning_content",
            "reasoning",
            "tool_calls",
            "refusal",
        ];
        (
            prop::collection::vec(leaf(), keys.len()),
            prop::collection::vec(any::<bool>(), keys.len()),
        )
            .prop_map(move |(values, present)| {
                object_of(keys.into_iter().zip(values).collect(), present)
            })
    }

    fn choice() -> impl Strategy<Value = Value> {
        (
            prop_oneof![delta(), leaf()],
            leaf(),
            prop_oneof![Just(json!("stop")), Just(json!("length")), leaf()],
            prop::collection::vec(any::<bool>(), 4),
        )
            .prop_map(|(delta, text, finish, present)| {
                object_of(
                    vec![
                        ("index", json!(0)),
                        ("delta", delta),
                        ("text", text),
                        ("finish_reason", finish),
                    ],
                    present,
                )
            })
    }

    fn chunk() -> impl Strategy<Value = Value> {
        (
            prop_oneof![
                prop::collection::vec(choice(), 0..3).prop_map(Value::Array),
                leaf()
            ],
            prop_oneof![
                (prop_oneof![Just(json!(41)), leaf()], leaf())
                    .prop_map(|(n, other)| json!({"prompt_tokens": other, "completion_tokens": n})),
                leaf()
            ],
            leaf(),
            prop::collection::vec(any::<bool>(), 5),
        )
            .prop_map(|(choices, usage, error, present)| {
                object_of(
                    vec![
                        ("id", json!("chatcmpl-1")),
                        ("choices", choices),
                        ("usage", usage),
                        ("error", error),
                        ("model", json!("m")),
                    ],
                    present,
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn the_fast_search_finds_what_a_byte_search_finds(
            bytes in prop::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..=0xFF, 0x20u8..0x80],
                0..40,
            ),
        ) {
            let naive = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(special(&bytes), naive);
        }

        #[test]
        fn generated_chunks_read_as_the_reference_reads_them(chunk in chunk(), pretty in any::<bool>()) {
            let data = if pretty {
                serde_json::to_vec_pretty(&chunk).expect("a Value serialises")
            } else {
                serde_json::to_vec(&chunk).expect("a Value serialises")
            };
            prop_assert_eq!(read(&data), reference(&data), "{}", String::from_utf8_lossy(&data));
        }

        /// Damaged chunks (a byte changed, or the payload cut short) are
        /// unreadable exactly when serde_json cannot read them either.
        #[test]
        fn damaged_chunks_agree_with_the_reference(
            chunk in chunk(),
            at in any::<prop::sample::Index>(),
            byte in prop_oneof![
                Just(b'"'), Just(b'\\'), Just(b'{'), Just(b'}'), Just(b'['), Just(b']'),
                Just(b','), Just(b':'), Just(b'-'), Just(b'0'), Just(b'e'), Just(b'.'),
                Just(b'u'), Just(b' '), Just(0x01), Just(0xC3), any::<u8>(),
            ],
            cut in any::<bool>(),
        ) {
            let mut data = serde_json::to_vec(&chunk).expect("a Value serialises");
            let at = at.index(data.len());
            if cut {
                data.truncate(at);
            } else {
                data[at] = byte;
            }
            prop_assert_eq!(read(&data), reference(&data), "{}", String::from_utf8_lossy(&data));
        }
    }

    #[test]
    fn a_vllm_token_chunk_is_one_token_of_content() {
        let data = br#"{"id":"cmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" the"},"logprobs":null,"finish_reason":null}]}"#;
        let facts = read(data).expect("readable");
        assert!(facts.content && !facts.finished && !facts.error);
        assert_eq!((facts.tokens, facts.completion_tokens), (1, None));
    }

    #[test]
    fn keys_inside_strings_and_nested_objects_are_not_fields() {
        let data = br#"{"choices":[{"delta":{"content":""},"logprobs":{"finish_reason":"stop","content":[{"token":"x"}]},"x":"\"finish_reason\":\"stop\""}],"metadata":{"error":"not this one","usage":{"completion_tokens":9}}}"#;
        assert_eq!(
            read(data),
            Some(ChunkFacts {
                content: false,
                tokens: 1,
                finished: false,
                length: false,
                error: false,
                completion_tokens: None
            })
        );
        assert_eq!(read(data), reference(data));
    }

    #[test]
    fn a_key_given_twice_counts_once_the_last() {
        let data = br#"{"choices":[{"delta":{"content":"a"}}],"choices":[],"usage":{"completion_tokens":3,"completion_tokens":4}}"#;
        let facts = read(data).expect("readable");
        assert!(!facts.content);
        assert_eq!((facts.tokens, facts.completion_tokens), (0, Some(4)));
        assert_eq!(read(data), reference(data));
    }

    #[test]
    fn escaped_key_names_are_decoded() {
        let data = br#"{"choices":[{"delta":{"cont\u0065nt":"x"},"finish_re\u0061son":"stop"}]}"#;
        let facts = read(data).expect("readable");
        assert!(facts.content && facts.finished);
    }

    #[test]
    fn hostile_payloads_are_unreadable_without_unbounded_work() {
        let deep = "[".repeat(100_000);
        assert_eq!(read(format!(r#"{{"x":{deep}"#).as_bytes()), None);
        let just_deep_enough = format!(
            r#"{{"x":{}1{}}}"#,
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(read(just_deep_enough.as_bytes()).is_some());
        let too_deep = format!(
            r#"{{"x":{}1{}}}"#,
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert_eq!(read(too_deep.as_bytes()), None);
        for bad in [
            &b""[..],
            b"[]",
            b"\"choices\"",
            b"{\"choices\":[]} x",
            b"{\"choices\":[1]}",
            b"{\"usage\":{\"completion_tokens\":-1}}",
            b"{\"usage\":{\"completion_tokens\":18446744073709551616}}",
            b"{\"usage\":{\"completion_tokens\":1.0}}",
            b"{\"x\":\"\\ud800\"}",
            b"{\"x\":\"\\udc00\\ud800\"}",
            b"{\"x\":\"\xff\"}",
            b"{\"x\":01}",
            b"{\"x\":1.}",
            b"{\"x\":tru}",
            b"{\"x\":1,}",
        ] {
            assert_eq!(read(bad), None, "{}", String::from_utf8_lossy(bad));
            assert_eq!(reference(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            read(b"{\"x\":\"\\ud83e\\udd80\"}").map(|f| f.tokens),
            Some(0)
        );
    }
}
