//! The request body's `model`: found, rewritten per cohort, and rewritten
//! back in the response, so one pool can serve a model name whose cohorts
//! are different adapters (`chat` → `chat-lora-v7` or `chat-lora-v8`).
//!
//! Pure byte work, no I/O: the proxy hands [`find`] the start of a request
//! body it read ahead anyway (bounded by its read-ahead), and feeds each
//! response chunk through a [`Rewrite`].
//!
//! # Finding the field
//!
//! [`find`] walks the body as JSON without building a value: it tracks
//! nesting and strings, and reads only the top-level `model` member's
//! string. An OpenAI-style request is one small object whose `model` comes
//! in its first bytes, but the walk goes on to the end of what it was given,
//! because a name given twice is ambiguous (Python's `json` keeps the last,
//! a router that took the first would send a request for one model to the
//! cohort of another): [`Lookup::Duplicate`] is refused. What it was given
//! is bounded, so a body longer than that whose `model` comes after the
//! bound is [`Lookup::Beyond`], and a duplicate after the bound is not
//! seen (documented).
//!
//! # Rewriting the response
//!
//! Servers echo the model they served (`"model":"chat-lora-v8"` in every
//! stream chunk and in a whole JSON body). [`Rewrite`] replaces exactly the
//! value of a `"model"` member whose value is the upstream name's JSON
//! string, across chunk boundaries. Inside a JSON string every `"` is
//! escaped, so the unescaped `"model"` + `:` + value it looks for only
//! occurs as a member: a model that writes `"model":"chat-lora-v8"` in its
//! answer streams it as `\"model\":\"chat-lora-v8\"`, which stays. A chunk
//! that ends inside a possible match keeps those few bytes until the next
//! chunk; an SSE event ends with a blank line, which cannot be part of one,
//! so no event is held back.

use std::ops::Range;

use memchr::memmem;

/// What [`find`] found in a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A top-level `model` string: its value, unescaped, and where its
    /// JSON string (quotes included) is in the body.
    Found {
        /// The name asked for.
        name: String,
        /// The value's bytes, quotes included.
        at: Range<usize>,
    },
    /// A JSON object without a top-level `model`.
    Missing,
    /// A top-level `model` that is not a string.
    NotString,
    /// Not a JSON object (or broken JSON).
    NotJson,
    /// `model` named twice at the top level.
    Duplicate,
    /// The body goes on past what was read and `model` was not in it.
    Beyond,
}

impl Lookup {
    /// Every outcome's name in metrics (`weir_proxy_model_lookups_total`),
    /// in [`Lookup::index`] order.
    pub const NAMES: [&'static str; 6] = [
        "found",
        "missing",
        "not_string",
        "not_json",
        "duplicate",
        "beyond_read_ahead",
    ];

    /// The outcome's place in [`Lookup::NAMES`] (and in its counters).
    pub const fn index(&self) -> usize {
        match self {
            Lookup::Found { .. } => 0,
            Lookup::Missing => 1,
            Lookup::NotString => 2,
            Lookup::NotJson => 3,
            Lookup::Duplicate => 4,
            Lookup::Beyond => 5,
        }
    }

    /// The outcome's name in metrics.
    pub const fn as_str(&self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

/// Looks for the top-level `model` in `body`, the start of a request body;
/// `whole` says whether it is all of it.
pub fn find(body: &[u8], whole: bool) -> Lookup {
    let mut walk = Walk { body, at: 0 };
    match walk.object() {
        Ok(found) => found.unwrap_or(Lookup::Missing),
        Err(Stop::Invalid) => Lookup::NotJson,
        Err(Stop::Duplicate) => Lookup::Duplicate,
        // The body stops inside the JSON: the rest was not read.
        Err(Stop::End(found)) if !whole => found.unwrap_or(Lookup::Beyond),
        Err(Stop::End(_)) => Lookup::NotJson,
    }
}

/// Why a walk stopped early; `End` carries what was found before the end.
enum Stop {
    Invalid,
    Duplicate,
    End(Option<Lookup>),
}

/// Deepest nesting walked: deeper bodies are not inference requests, and
/// the walk's own state stays a counter.
const MAX_DEPTH: usize = 128;

struct Walk<'a> {
    body: &'a [u8],
    at: usize,
}

impl Walk<'_> {
    fn object(&mut self) -> Result<Option<Lookup>, Stop> {
        let mut found: Option<Lookup> = None;
        let end = |found: &Option<Lookup>| Stop::End(found.clone());
        // A UTF-8 byte order mark is allowed before JSON text by Python's
        // `json.loads` on bytes; nothing else is.
        if self.body.starts_with(b"\xEF\xBB\xBF") {
            self.at = 3;
        }
        match self.next_token().ok_or_else(|| end(&found))? {
            b'{' => self.at += 1,
            _ => return Err(Stop::Invalid),
        }
        if self.next_token().ok_or_else(|| end(&found))? == b'}' {
            self.at += 1;
            return self.trailing(found);
        }
        loop {
            if self.next_token().ok_or_else(|| end(&found))? != b'"' {
                return Err(Stop::Invalid);
            }
            let key = self.string().map_err(|s| s.or_end(&found))?;
            if self.next_token().ok_or_else(|| end(&found))? != b':' {
                return Err(Stop::Invalid);
            }
            self.at += 1;
            let first = self.next_token().ok_or_else(|| end(&found))?;
            if key.is_model(self.body) {
                if found.is_some() {
                    return Err(Stop::Duplicate);
                }
                if first == b'"' {
                    let start = self.at;
                    let name = self.string().map_err(|s| s.or_end(&found))?;
                    let name = name.text(self.body).ok_or(Stop::Invalid)?;
                    found = Some(Lookup::Found {
                        name,
                        at: start..self.at,
                    });
                } else {
                    found = Some(Lookup::NotString);
                    self.value().map_err(|s| s.or_end(&found))?;
                }
            } else {
                self.value().map_err(|s| s.or_end(&found))?;
            }
            match self.next_token().ok_or_else(|| end(&found))? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return self.trailing(found);
                }
                _ => return Err(Stop::Invalid),
            }
        }
    }

    /// Only whitespace may follow the object.
    fn trailing(&mut self, found: Option<Lookup>) -> Result<Option<Lookup>, Stop> {
        match self.next_token() {
            None => Ok(found),
            Some(_) => Err(Stop::Invalid),
        }
    }

    /// Skips whitespace; the next byte, not consumed.
    fn next_token(&mut self) -> Option<u8> {
        while let Some(&b) = self.body.get(self.at) {
            if !matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    /// A string starting at the current `"`; leaves `at` after its closing
    /// quote.
    fn string(&mut self) -> Result<Str, Partial> {
        let start = self.at + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            let rest = self.body.get(i..).ok_or(Partial::End)?;
            let Some(stop) = memchr::memchr2(b'"', b'\\', rest) else {
                if rest.iter().any(|&b| b < 0x20) {
                    return Err(Partial::Invalid);
                }
                return Err(Partial::End);
            };
            if rest[..stop].iter().any(|&b| b < 0x20) {
                return Err(Partial::Invalid);
            }
            i += stop;
            if self.body[i] == b'"' {
                self.at = i + 1;
                return Ok(Str {
                    inner: start..i,
                    escaped,
                });
            }
            // A backslash: the escaped byte is skipped (a `\uXXXX` is
            // checked when the string is read as text).
            escaped = true;
            match self.body.get(i + 1) {
                None => return Err(Partial::End),
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' | b'u') => i += 2,
                Some(_) => return Err(Partial::Invalid),
            }
        }
    }

    /// Skips one value of any kind.
    fn value(&mut self) -> Result<(), Partial> {
        let mut depth = 0usize;
        loop {
            let b = self.next_token().ok_or(Partial::End)?;
            match b {
                b'"' => {
                    self.string()?;
                }
                b'{' | b'[' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(Partial::Invalid);
                    }
                    self.at += 1;
                    continue;
                }
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    self.at += 1;
                }
                b',' | b':' if depth > 0 => {
                    self.at += 1;
                    continue;
                }
                b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                    let len = self.body[self.at..]
                        .iter()
                        .position(
                            |c| !matches!(c, b'0'..=b'9' | b'a'..=b'z' | b'E' | b'.' | b'+' | b'-'),
                        )
                        .ok_or(Partial::End)?;
                    let word = &self.body[self.at..self.at + len];
                    let literal = matches!(word, b"true" | b"false" | b"null");
                    if !literal
                        && !word
                            .iter()
                            .all(|c| matches!(c, b'0'..=b'9' | b'e' | b'E' | b'.' | b'+' | b'-'))
                    {
                        return Err(Partial::Invalid);
                    }
                    self.at += len;
                }
                _ => return Err(Partial::Invalid),
            }
            if depth == 0 {
                return Ok(());
            }
        }
    }
}

/// Why reading a string or skipping a value stopped.
enum Partial {
    Invalid,
    End,
}

impl Partial {
    fn or_end(self, found: &Option<Lookup>) -> Stop {
        match self {
            Partial::Invalid => Stop::Invalid,
            Partial::End => Stop::End(found.clone()),
        }
    }
}

/// A string's place in the body.
struct Str {
    inner: Range<usize>,
    escaped: bool,
}

impl Str {
    fn is_model(&self, body: &[u8]) -> bool {
        if self.escaped {
            // `"mod\u0065l"` is `model` too, to a JSON parser.
            self.text(body).as_deref() == Some("model")
        } else {
            &body[self.inner.clone()] == b"model"
        }
    }

    fn text(&self, body: &[u8]) -> Option<String> {
        let raw = &body[self.inner.clone()];
        if !self.escaped {
            return std::str::from_utf8(raw).ok().map(str::to_owned);
        }
        let quoted = &body[self.inner.start - 1..self.inner.end + 1];
        serde_json::from_slice(quoted).ok()
    }
}

/// Replaces a streamed response's `"model": "<from>"` values with `to`.
/// See the module documentation.
#[derive(Debug)]
pub struct Rewrite {
    /// The upstream's name as a JSON string, quotes included.
    from: Vec<u8>,
    /// The client's name as a JSON string, quotes included.
    to: Vec<u8>,
    /// Bytes held back: the start of a possible match at a chunk's end.
    held: Vec<u8>,
    finder: memmem::Finder<'static>,
}

/// The member name looked for.
const KEY: &[u8] = b"\"model\"";
/// Whitespace allowed around the member's `:` (each side), more than any
/// server writes.
const MAX_SPACE: usize = 16;

impl Rewrite {
    /// A rewrite of the upstream's `from` into the client's `to`.
    pub fn new(from: &str, to: &str) -> Rewrite {
        let json = |s: &str| serde_json::to_vec(s).unwrap_or_default();
        Rewrite {
            from: json(from),
            to: json(to),
            held: Vec::new(),
            finder: memmem::Finder::new(KEY).into_owned(),
        }
    }

    /// Appends `chunk`, rewritten, to `out` (possibly minus a few bytes
    /// held for the next call).
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.held.is_empty() {
            let keep = self.scan(chunk, out);
            self.held.extend_from_slice(&chunk[keep..]);
        } else {
            let mut data = std::mem::take(&mut self.held);
            data.extend_from_slice(chunk);
            let keep = self.scan(&data, out);
            data.drain(..keep);
            self.held = data;
        }
    }

    /// The response ended: what was held goes out as it is.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.held);
    }

    /// Writes `data` rewritten to `out` up to the returned index; what is
    /// after it may be the start of a match.
    fn scan(&self, data: &[u8], out: &mut Vec<u8>) -> usize {
        let mut done = 0;
        let mut from = 0;
        while let Some(i) = self.finder.find(&data[from..]).map(|i| i + from) {
            match self.value_at(data, i + KEY.len()) {
                Match::Yes(value) => {
                    out.extend_from_slice(&data[done..value]);
                    out.extend_from_slice(&self.to);
                    done = value + self.from.len();
                    from = done;
                }
                Match::No => from = i + 1,
                Match::Undecided => {
                    out.extend_from_slice(&data[done..i]);
                    return i;
                }
            }
        }
        // A tail that could start `"model"` waits for the next chunk.
        let tail = (1..KEY.len())
            .rev()
            .find(|&n| n <= data.len() - done && data.ends_with(&KEY[..n]))
            .unwrap_or(0);
        let keep = data.len() - tail;
        out.extend_from_slice(&data[done..keep]);
        keep
    }

    /// Whether `data` at `at` (just after `"model"`) is `: "<from>"`; the
    /// value's index when it is.
    fn value_at(&self, data: &[u8], at: usize) -> Match {
        let space = |from: usize| {
            data[from.min(data.len())..]
                .iter()
                .take(MAX_SPACE + 1)
                .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                .count()
        };
        let mut i = at + space(at);
        if i >= data.len() {
            return if i - at > MAX_SPACE {
                Match::No
            } else {
                Match::Undecided
            };
        }
        if i - at > MAX_SPACE || data[i] != b':' {
            return Match::No;
        }
        i += 1;
        let after = space(i);
        if after > MAX_SPACE {
            return Match::No;
        }
        i += after;
        let have = &data[i.min(data.len())..];
        if have.len() < self.from.len() {
            return if self.from.starts_with(have) {
                Match::Undecided
            } else {
                Match::No
            };
        }
        if have.starts_with(&self.from) {
            Match::Yes(i)
        } else {
            Match::No
        }
    }
}

enum Match {
    Yes(usize),
    No,
    Undecided,
}

/// `body` with the JSON string at `at` replaced by `name`.
pub fn rewrite_request(body: &[u8], at: Range<usize>, name: &str) -> Vec<u8> {
    let value = serde_json::to_vec(name).unwrap_or_default();
    let mut out = Vec::with_capacity(body.len() + value.len());
    out.extend_from_slice(&body[..at.start]);
    out.extend_from_slice(&value);
    out.extend_from_slice(&body[at.end..]);
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn found(body: &str) -> Option<String> {
        match find(body.as_bytes(), true) {
            Lookup::Found { name, at } => {
                // The range is the value's JSON string.
                let value: String = serde_json::from_str(&body[at]).expect("a JSON string");
                assert_eq!(value, name);
                Some(name)
            }
            _ => None,
        }
    }

    #[test]
    fn the_top_level_model_is_found_wherever_it_is() {
        let body = r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        assert_eq!(found(body).as_deref(), Some("chat"));
        let late = r#" {"messages":[{"role":"user","content":"{\"model\":\"x\"}","model":"nested"}],
            "max_tokens": 1e3, "stream": false, "n": null, "model" : "chat" } "#;
        assert_eq!(found(late).as_deref(), Some("chat"));
        let escaped = r#"{"mod\u0065l":"ch\u0061t\/v1"}"#;
        assert_eq!(found(escaped).as_deref(), Some("chat/v1"));
        assert_eq!(found("\u{feff}{\"model\":\"m\"}").as_deref(), Some("m"));
    }

    #[test]
    fn each_kind_of_body_has_its_outcome() {
        let lookup = |body: &str, whole: bool| find(body.as_bytes(), whole);
        assert_eq!(lookup(r#"{"messages":[]}"#, true), Lookup::Missing);
        assert_eq!(lookup("{}", true), Lookup::Missing);
        assert_eq!(lookup(r#"{"model":7}"#, true), Lookup::NotString);
        assert_eq!(lookup(r#"{"model":null,"a":1}"#, true), Lookup::NotString);
        assert_eq!(lookup(r#"{"model":["chat"]}"#, true), Lookup::NotString);
        assert_eq!(
            lookup(r#"{"model":"a","model":"b"}"#, true),
            Lookup::Duplicate
        );
        assert_eq!(
            lookup(r#"{"model":1,"model":"b"}"#, true),
            Lookup::Duplicate
        );
        for bad in [
            "",
            "model=chat",
            r#"["model","chat"]"#,
            r#"{"model":"chat""#,
            r#"{"model":"chat"} x"#,
            r#"{"model":"ch	at"}"#,
            r#"{"model":"chat",}"#,
            r#"{"model" "chat"}"#,
            r#"{"a":tru}"#,
            r#"{"a":"\q"}"#,
        ] {
            assert_eq!(lookup(bad, true), Lookup::NotJson, "{bad:?}");
        }
        // Cut off by the read-ahead: the model is in the part read, or not.
        let start = r#"{"model":"chat","messages":[{"content":"a very long"#;
        assert!(matches!(lookup(start, false), Lookup::Found { .. }));
        assert_eq!(
            lookup(r#"{"messages":[{"content":"a very"#, false),
            Lookup::Beyond
        );
        assert_eq!(lookup(r#"{"model":"ch"#, false), Lookup::Beyond);
        // ... but a body cut off when it is whole is broken JSON.
        assert_eq!(lookup(start, true), Lookup::NotJson);
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(find(deep.as_bytes(), true), Lookup::NotJson);
    }

    #[test]
    fn the_request_rewrite_replaces_only_the_value() {
        let body = br#"{"model" : "chat", "messages":[]}"#;
        let Lookup::Found { at, .. } = find(body, true) else {
            panic!("found")
        };
        let out = rewrite_request(body, at, "chat-lora-v8");
        assert_eq!(out, br#"{"model" : "chat-lora-v8", "messages":[]}"#);
        let odd = rewrite_request(body, 10..16, "a\"b");
        assert_eq!(&odd[10..16], br#""a\"b""#);
    }

    fn rewritten(pieces: &[&[u8]], from: &str, to: &str) -> Vec<u8> {
        let mut rewrite = Rewrite::new(from, to);
        let mut out = Vec::new();
        for piece in pieces {
            rewrite.feed(piece, &mut out);
        }
        rewrite.finish(&mut out);
        out
    }

    const STREAM: &str = concat!(
        "data: {\"id\":\"1\",\"model\":\"chat-lora-v8\",\"choices\":[{\"delta\":{\"content\":\"",
        "say \\\"model\\\":\\\"chat-lora-v8\\\" \"}}]}\n\n",
        "data: {\"model\": \"chat-lora-v8x\",\"choices\":[]}\n\n",
        "data: {\"model\" :\n \"chat-lora-v8\"}\n\n",
        "data: {\"modelx\":\"chat-lora-v8\",\"m\":\"\\\"model\\\"\"}\n\n",
        "data: [DONE]\n\n",
    );

    const EXPECTED: &str = concat!(
        "data: {\"id\":\"1\",\"model\":\"chat\",\"choices\":[{\"delta\":{\"content\":\"",
        "say \\\"model\\\":\\\"chat-lora-v8\\\" \"}}]}\n\n",
        "data: {\"model\": \"chat-lora-v8x\",\"choices\":[]}\n\n",
        "data: {\"model\" :\n \"chat\"}\n\n",
        "data: {\"modelx\":\"chat-lora-v8\",\"m\":\"\\\"model\\\"\"}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn the_response_rewrite_takes_members_not_text() {
        let out = rewritten(&[STREAM.as_bytes()], "chat-lora-v8", "chat");
        assert_eq!(String::from_utf8(out).expect("utf-8"), EXPECTED);
    }

    #[test]
    fn whole_events_are_never_held_back() {
        let mut rewrite = Rewrite::new("chat-lora-v8", "chat");
        for event in STREAM.split_inclusive("\n\n") {
            let mut out = Vec::new();
            rewrite.feed(event.as_bytes(), &mut out);
            assert!(out.ends_with(b"\n\n"), "{event:?} came out whole");
        }
    }

    #[test]
    fn a_held_partial_match_that_never_completes_comes_out_at_the_end() {
        assert_eq!(rewritten(&[b"{\"mod"], "a", "b"), b"{\"mod");
        assert_eq!(
            rewritten(&[b"{\"model\": \"a"], "ab", "c"),
            b"{\"model\": \"a"
        );
        assert_eq!(
            rewritten(&[b"{\"model\":", b"\"a\"}"], "a", "bc"),
            b"{\"model\":\"bc\"}"
        );
    }

    proptest! {
        /// However the stream is cut into chunks, the output is the same.
        #[test]
        fn chunk_boundaries_do_not_matter(cuts in proptest::collection::vec(0usize..STREAM.len(), 0..12)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let bytes = STREAM.as_bytes();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts {
                pieces.push(&bytes[last..c]);
                last = c;
            }
            pieces.push(&bytes[last..]);
            let out = rewritten(&pieces, "chat-lora-v8", "chat");
            prop_assert_eq!(String::from_utf8(out).expect("utf-8"), EXPECTED);
        }

        /// Any bytes: never a panic, and with nothing to replace the output
        /// is the input.
        #[test]
        fn arbitrary_bytes_pass_through(data in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..300) {
            let cut = cut.min(data.len());
            let out = rewritten(&[&data[..cut], &data[cut..]], "never\u{1}", "x");
            prop_assert_eq!(out, data.clone());
            let _ = find(&data, true);
            let _ = find(&data, false);
        }
    }
}
