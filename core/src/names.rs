//! Kubernetes object names as weir reads them from files and flags: the
//! rule local Canary files and `weir sim`'s Service names both check.

/// Whether `s` is an RFC 1123 label, as namespace and Service names are:
/// 1 to 63 lowercase letters, digits and `-`, not starting or ending
/// with `-`.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short_lowercase_and_hyphenated_inside() {
        assert!(is_dns_label("chat-decode-canary"));
        assert!(is_dns_label(&"a".repeat(63)));
        for bad in ["", "Chat", "-chat", "chat-", "chat.llm", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
    }
}
