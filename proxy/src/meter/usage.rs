//! Output tokens of a non-streaming JSON body, without parsing it.
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

#[cfg(test)]
mod tests {
    use super::*;

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
