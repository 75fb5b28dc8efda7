//! An incremental parser of the SSE wire format (WHATWG HTML, "Server-sent
//! events"), keeping only `data` and `event`.
//!
//! A line split across chunks, `\r\n` split between two chunks, lone `\r`,
//! several events per chunk all work, with no per-event allocation (one
//! reused buffer, bounded by [`MAX_EVENT_BYTES`]).

/// The largest SSE event (its joined `data` lines) the meter reads; a larger
/// event is counted as unreadable rather than buffered.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// One dispatched SSE event.
#[derive(Debug)]
pub(super) struct SseEvent<'a> {
    /// The joined `data` lines.
    pub(super) data: &'a [u8],
    /// `event: error`.
    pub(super) error_type: bool,
    /// The data was larger than [`MAX_EVENT_BYTES`] and was not kept.
    pub(super) overflow: bool,
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
pub(super) struct SseParser {
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
    /// Parses `input`, the next bytes of the stream; `sink` gets every event
    /// completed.
    pub(super) fn feed(&mut self, mut input: &[u8], sink: &mut dyn FnMut(SseEvent<'_>)) {
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
            match memchr::memchr2(b'\n', b'\r', input) {
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
                    let (name, rest) = match memchr::memchr(b':', bytes) {
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
    pub(super) fn flush(&mut self, sink: &mut dyn FnMut(SseEvent<'_>)) {
        if self.state != LineState::Start {
            self.end_line(sink);
        }
        self.dispatch(sink);
    }
}
