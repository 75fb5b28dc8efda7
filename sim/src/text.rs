//! The text the simulator "generates": a fixed cycle of words, one per
//! token, so a client can check it received every token in order.
//!
//! Words are plain ASCII letters with a leading space: nothing in them
//! needs JSON escaping, so chunks are rendered by concatenation.

/// Words after the first token, each with its leading space.
const WORDS: [&str; 24] = [
    " weir",
    " streams",
    " one",
    " token",
    " at",
    " a",
    " time",
    " so",
    " every",
    " gap",
    " between",
    " chunks",
    " can",
    " be",
    " measured",
    " by",
    " the",
    " proxy",
    " and",
    " its",
    " analysis",
    " while",
    " canaries",
    " roll",
];

/// The first token of every response.
const FIRST: &str = "Simulated";

/// Token number `i` (from 0) of a response.
pub fn token(i: u32) -> &'static str {
    if i == 0 {
        FIRST
    } else {
        WORDS[(i as usize - 1) % WORDS.len()]
    }
}

/// The whole text of a response with `tokens` tokens.
pub fn completion_text(tokens: u32) -> String {
    (0..tokens).map(token).collect()
}

/// Words of generated prompts: three letters and a space, four bytes each.
const PROMPT_WORDS: [&str; 8] = [
    "the ", "dam ", "and ", "its ", "new ", "one ", "can ", "run ",
];

/// A prompt of `tokens` tokens as [`estimate_tokens`] counts them (four
/// bytes each): `tokens` four-byte words.
pub fn prompt_text(tokens: u32) -> String {
    let mut out = String::with_capacity(tokens as usize * 4);
    for i in 0..tokens as usize {
        out.push_str(PROMPT_WORDS[i % PROMPT_WORDS.len()]);
    }
    out
}

/// A rough token count of prompt text: about four bytes per token, at
/// least one token for non-empty text, like tokenizers on English.
pub fn estimate_tokens(text: &str) -> u32 {
    if text.is_empty() {
        0
    } else {
        u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_the_tokens_in_order_and_needs_no_escaping() {
        assert_eq!(completion_text(3), "Simulated weir streams");
        assert_eq!(token(25), " weir");
        for i in 0..30 {
            let t = token(i);
            assert!(
                t.bytes().all(|b| b == b' ' || b.is_ascii_alphabetic()),
                "{t:?}"
            );
        }
    }

    #[test]
    fn generated_prompts_have_the_tokens_asked_for() {
        for n in [0, 1, 7, 100, 2000] {
            assert_eq!(estimate_tokens(&prompt_text(n)), n);
        }
    }

    #[test]
    fn estimates_tokens_from_bytes() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("hi"), 1);
        assert_eq!(estimate_tokens("Say something."), 4);
    }
}
