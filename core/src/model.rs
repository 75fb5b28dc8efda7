//! Model names as inference servers take them in a request's `model`: the
//! rule the proxy's route table and the Canary's spec both check.

/// Whether `s` can be a model name: 1 to 256 characters, none of them a
/// control character (`meta-llama/Llama-3.1-8B-Instruct`, `chat-lora-v8`,
/// `adapter:v2`).
pub fn is_model_name(s: &str) -> bool {
    (1..=256).contains(&s.len()) && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_printable_and_bounded() {
        assert!(is_model_name("meta-llama/Llama-3.1-8B-Instruct"));
        assert!(is_model_name(&"m".repeat(256)));
        assert!(!is_model_name(""));
        assert!(!is_model_name(&"m".repeat(257)));
        assert!(!is_model_name("chat\nlora"));
    }
}
