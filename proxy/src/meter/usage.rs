//! Output tokens of a non-streaming JSON body, and whether it was cut at
//! the token limit, without parsing it.
//!
//! A streaming matcher looks for the key `"completion_tokens"` followed by a
//! number. Inside a JSON string every `"` is escaped, so the quoted key (not
//! preceded by a backslash) can only be a real key; no body is held in
//! memory.

/// Finds the last `"completion_tokens": N` in a JSON body fed in pieces.
#[derive(Debug, Default)]
pub(super) struct UsageScanner {
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
    /// The next bytes of the body.
    pub(super) fn feed(&mut self, bytes: &[u8]) {
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

    /// The body ended: the last count found, if any.
    pub(super) fn finish(&mut self) -> Option<u64> {
        if self.after_key == Some(2) {
            self.found = Some(self.number);
        }
        self.found
    }
}

/// Finds `"finish_reason": "length"` in a JSON body fed in pieces.
#[derive(Debug, Default)]
pub(super) struct LengthScanner {
    /// Bytes of [`FINISH_KEY`] matched so far.
    matched: usize,
    /// After the key: `Some(0)` expecting `:`, `Some(1 + i)` having matched
    /// `i` bytes of [`LENGTH_VALUE`].
    after_key: Option<usize>,
    previous: u8,
    /// Seen in the body.
    pub(super) found: bool,
}

const FINISH_KEY: &[u8] = b"\"finish_reason\"";
const LENGTH_VALUE: &[u8] = b"\"length\"";

impl LengthScanner {
    /// The next bytes of the body.
    pub(super) fn feed(&mut self, bytes: &[u8]) {
        if self.found {
            return;
        }
        for &b in bytes {
            self.step(b);
            self.previous = b;
        }
    }

    fn step(&mut self, b: u8) {
        if let Some(phase) = self.after_key {
            let whitespace = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
            match phase {
                0 | 1 if whitespace => return,
                0 if b == b':' => {
                    self.after_key = Some(1);
                    return;
                }
                1.. if LENGTH_VALUE.get(phase - 1) == Some(&b) => {
                    if phase == LENGTH_VALUE.len() {
                        self.found = true;
                        self.after_key = None;
                    } else {
                        self.after_key = Some(phase + 1);
                    }
                    return;
                }
                _ => self.after_key = None,
            }
        }
        if self.matched > 0 && FINISH_KEY.get(self.matched) == Some(&b) {
            self.matched += 1;
            if self.matched == FINISH_KEY.len() {
                self.matched = 0;
                self.after_key = Some(0);
            }
            return;
        }
        self.matched = usize::from(b == b'"' && self.previous != b'\\');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_scanner_finds_a_real_length_finish_in_any_pieces() {
        let scan = |s: &str, size: usize| {
            let mut l = LengthScanner::default();
            for piece in s.as_bytes().chunks(size) {
                l.feed(piece);
            }
            l.found
        };
        for size in [1, 2, 5, 1000] {
            assert!(scan(r#"{"choices":[{"finish_reason":"length"}]}"#, size));
            assert!(scan(r#"{"finish_reason" :  "length"}"#, size));
            assert!(!scan(r#"{"finish_reason":"stop"}"#, size));
            assert!(!scan(r#"{"finish_reason":"lengthy"}"#, size));
            assert!(!scan(r#"{"text":"\"finish_reason\":\"length\""}"#, size));
            assert!(!scan(r#"{"finish_reason":null,"x":"length"}"#, size));
        }
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
}
