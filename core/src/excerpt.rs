//! Values quoted in messages, bounded.
//!
//! An error names the value it refuses, and the value comes from whoever
//! wrote the input: a 50 MB host name in a config file, a 1 MB line in a
//! data file, a huge string echoed back by a YAML parser. Quoting it whole
//! turns one mistake into megabytes of stderr or log lines, so every
//! message that echoes input goes through [`Excerpt`]: short values appear
//! whole, long ones as their start and end with the length between.

use std::fmt;

/// A value as shown in a message: whole when short, otherwise its first and
/// last characters around `…` and the full length in bytes.
///
/// ```
/// use weir_core::Excerpt;
/// assert_eq!(Excerpt::quoted("chat").to_string(), "\"chat\"");
/// let long = "x".repeat(1_000_000);
/// assert!(Excerpt::quoted(&long).to_string().ends_with("(1000000 bytes)"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Excerpt<'a> {
    text: &'a str,
    max: usize,
    quoted: bool,
}

impl<'a> Excerpt<'a> {
    /// Longest value shown whole by default, in bytes: a long URL or host
    /// name fits, a pasted document does not.
    pub const MAX: usize = 160;

    /// The value in double quotes with escapes (like `{:?}`), so blanks and
    /// control characters show.
    pub fn quoted(text: &'a str) -> Self {
        Excerpt {
            text,
            max: Self::MAX,
            quoted: true,
        }
    }

    /// The value as it is (for messages that already read as prose, such as
    /// a parser's).
    pub fn plain(text: &'a str) -> Self {
        Excerpt {
            text,
            max: Self::MAX,
            quoted: false,
        }
    }

    /// Shows up to `max` bytes whole instead of [`Excerpt::MAX`].
    pub fn max(self, max: usize) -> Self {
        Excerpt { max, ..self }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, part: &str) -> fmt::Result {
        if self.quoted {
            write!(f, "{}", part.escape_debug())
        } else {
            f.write_str(part)
        }
    }
}

/// The longest prefix of `s` of at most `n` bytes that ends on a character
/// boundary.
fn head(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The longest suffix of `s` of at most `n` bytes that starts on a
/// character boundary.
fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quote = if self.quoted { "\"" } else { "" };
        f.write_str(quote)?;
        if self.text.len() <= self.max {
            self.write(f, self.text)?;
            return f.write_str(quote);
        }
        // Two thirds of the room for the start, which says what the value
        // is; the rest for the end, where a parser puts "at line 3 column 7".
        let first = self.max * 2 / 3;
        self.write(f, head(self.text, first))?;
        f.write_str("…")?;
        self.write(f, tail(self.text, self.max - first))?;
        write!(f, "{quote} ({} bytes)", self.text.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_shown_whole_and_quoted_like_debug() {
        for s in ["", "chat", "a b", "tab\there", "quote\"d", "ünïcödé"] {
            assert_eq!(Excerpt::quoted(s).to_string(), format!("{s:?}"));
            assert_eq!(Excerpt::plain(s).to_string(), s);
        }
    }

    #[test]
    fn long_values_keep_start_and_end_within_the_bound() {
        let long = format!("{}{}{}", "start", "m".repeat(50 << 20), "end at line 3");
        let shown = Excerpt::plain(&long).to_string();
        assert!(shown.starts_with("startmmm"), "{shown}");
        assert!(shown.contains("mmm…mmm"), "{shown}");
        assert!(shown.ends_with(&format!("end at line 3 ({} bytes)", long.len())));
        assert!(
            shown.len() < Excerpt::MAX + 40,
            "{} bytes shown",
            shown.len()
        );
        let quoted = Excerpt::quoted(&long).max(20).to_string();
        assert_eq!(
            quoted,
            format!("\"startmmmmmmmm… line 3\" ({} bytes)", long.len())
        );
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        // Four-byte characters: no cut may split one.
        let long = "🦀".repeat(1000);
        for max in [1, 2, 3, 5, 7, 8, 159, 160, 161] {
            let shown = Excerpt::plain(&long).max(max).to_string();
            assert!(shown.contains('…'), "max {max}: {shown}");
            assert!(shown.ends_with("(4000 bytes)"));
        }
    }
}
