//! Label selectors, with Prometheus semantics, for every source.
//!
//! One selector type serves the text scrape (matched here, in memory), the
//! Prometheus API (rendered back into PromQL) and in-memory samples, so a
//! cohort is described once: `{pod=~"chat-canary-.*",namespace="llm"}`.
//!
//! Semantics follow Prometheus: regexes are fully anchored (`^(?s:re)$`), and
//! a label a series does not carry has the value `""`, so `{pod!="x"}` matches
//! a series without `pod` and `{pod=""}` matches only such series.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use regex::Regex;

/// Why a selector could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The text is not `{name<op>"value", ...}`.
    #[error("selector `{input}`: bad matcher `{matcher}`: {reason}")]
    Syntax {
        /// The whole selector text.
        input: String,
        /// The matcher that could not be read (as far as it goes).
        matcher: String,
        /// What was expected.
        reason: String,
    },
    /// A `=~` / `!~` value is not a valid regular expression.
    #[error("bad matcher `{matcher}`: invalid regex: {reason}")]
    Regex {
        /// The matcher, as PromQL.
        matcher: String,
        /// The regex engine's message.
        reason: String,
    },
    /// A label name is not `[a-zA-Z_][a-zA-Z0-9_]*`.
    #[error("bad matcher `{matcher}`: {name:?} is not a label name")]
    LabelName {
        /// The matcher as given.
        matcher: String,
        /// The offending name.
        name: String,
    },
}

/// How a matcher compares a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`: equal.
    Equal,
    /// `!=`: not equal.
    NotEqual,
    /// `=~`: the whole value matches the regex.
    Regex,
    /// `!~`: the whole value does not match the regex.
    NotRegex,
}

impl MatchOp {
    /// The PromQL operator.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One `name<op>"value"` condition.
#[derive(Debug, Clone)]
pub struct Matcher {
    name: String,
    op: MatchOp,
    value: String,
    /// Anchored form of `value`, for the regex operators.
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    /// Builds a matcher, compiling the regex for `=~` / `!~`.
    ///
    /// # Errors
    /// [`SelectorError::LabelName`] for a bad label name,
    /// [`SelectorError::Regex`] for a bad regex.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, SelectorError> {
        if !is_label_name(name) {
            return Err(SelectorError::LabelName {
                matcher: format!("{name}{}{}", op.as_str(), quote(value)),
                name: name.to_string(),
            });
        }
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?s:{value})$")).map_err(|e| SelectorError::Regex {
                    matcher: format!("{name}{}{}", op.as_str(), quote(value)),
                    reason: e.to_string(),
                })?,
            ),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Self {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// The label name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operator.
    pub fn op(&self) -> MatchOp {
        self.op
    }

    /// The value (for regex operators, the regex as written, unanchored).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether a label value (`""` when the label is absent) satisfies this.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            // `new` always compiles a regex for the regex operators.
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.name, self.op.as_str(), quote(&self.value))
    }
}

/// A conjunction of label matchers; the empty selector matches every series.
///
/// Build it from PromQL text with [`Selector::parse`] (or `str::parse`), or
/// with the builder methods:
///
/// ```
/// use weir_analysis::source::Selector;
/// let a = Selector::parse(r#"{pod=~"chat-canary-.*",namespace="llm"}"#).expect("valid");
/// let b = Selector::any().regex("pod", "chat-canary-.*").expect("valid").eq("namespace", "llm");
/// assert_eq!(a, b);
/// assert_eq!(a.to_string(), r#"{pod=~"chat-canary-.*",namespace="llm"}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    matchers: Vec<Matcher>,
}

impl Selector {
    /// The selector that matches every series (`{}`).
    pub fn any() -> Self {
        Self::default()
    }

    /// Parses `{name="v", name!="v", name=~"re", name!~"re"}`. Braces are
    /// optional; values may be in double quotes, single quotes (both with
    /// `\` escapes) or backticks (raw); a trailing comma is allowed.
    ///
    /// # Errors
    /// A [`SelectorError`] naming the matcher that could not be read.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        Parser { input, pos: 0 }.selector()
    }

    /// Adds `name="value"`. The label name is not checked (a name that no
    /// series can carry just reads as `""`); use [`Selector::try_with`] for
    /// names that come from outside.
    #[must_use]
    pub fn eq(self, name: &str, value: &str) -> Self {
        self.push_literal(name, MatchOp::Equal, value)
    }

    /// `{name="value", ...}` for every label of `labels`: picks the series
    /// with these values (and any other labels).
    pub fn exact(labels: &BTreeMap<String, String>) -> Self {
        labels.iter().fold(Self::any(), |s, (k, v)| s.eq(k, v))
    }

    /// Adds `name!="value"`.
    #[must_use]
    pub fn ne(self, name: &str, value: &str) -> Self {
        self.push_literal(name, MatchOp::NotEqual, value)
    }

    /// Adds `name=~"regex"` (anchored).
    ///
    /// # Errors
    /// [`SelectorError::Regex`] when `regex` does not compile.
    pub fn regex(self, name: &str, regex: &str) -> Result<Self, SelectorError> {
        self.try_with(name, MatchOp::Regex, regex)
    }

    /// Adds `name!~"regex"` (anchored).
    ///
    /// # Errors
    /// [`SelectorError::Regex`] when `regex` does not compile.
    pub fn not_regex(self, name: &str, regex: &str) -> Result<Self, SelectorError> {
        self.try_with(name, MatchOp::NotRegex, regex)
    }

    /// Adds any matcher, checking the label name and regex.
    ///
    /// # Errors
    /// See [`Matcher::new`].
    pub fn try_with(mut self, name: &str, op: MatchOp, value: &str) -> Result<Self, SelectorError> {
        self.matchers.push(Matcher::new(name, op, value)?);
        Ok(self)
    }

    fn push_literal(mut self, name: &str, op: MatchOp, value: &str) -> Self {
        // Literal matchers cannot fail on the value; a bad name is kept as
        // written and simply matches like Prometheus would treat an unknown
        // label (value ""), so the builder stays infallible.
        self.matchers.push(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex: None,
        });
        self
    }

    /// The matchers, in the order given.
    pub fn matchers(&self) -> &[Matcher] {
        &self.matchers
    }

    /// Whether a series with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|name| labels.get(name).map(String::as_str))
    }

    /// Whether a series is selected, reading label values through `get`.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches(get(m.name()).unwrap_or("")))
    }

    /// The PromQL selector for `metric`: `metric{...}` (or just `metric`).
    pub fn promql(&self, metric: &str) -> String {
        if self.matchers.is_empty() {
            metric.to_string()
        } else {
            format!("{metric}{self}")
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, m) in self.matchers.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{m}")?;
        }
        f.write_str("}")
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A PromQL double-quoted string literal.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str(r"\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.input[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.input.len() - trimmed.len();
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// The matcher text from `start` to the next `,` or `}` (for errors).
    fn fragment(&self, start: usize) -> String {
        let tail = &self.input[start..];
        let end = tail.find([',', '}']).unwrap_or(tail.len());
        tail[..end].trim().to_string()
    }

    fn error(&self, start: usize, reason: impl Into<String>) -> SelectorError {
        SelectorError::Syntax {
            input: self.input.to_string(),
            matcher: self.fragment(start),
            reason: reason.into(),
        }
    }

    fn selector(mut self) -> Result<Selector, SelectorError> {
        self.skip_ws();
        let braced = self.eat("{");
        let mut selector = Selector::any();
        loop {
            self.skip_ws();
            if self.rest().is_empty() {
                if braced {
                    return Err(self.error(self.pos, "missing closing '}'"));
                }
                break;
            }
            if braced && self.eat("}") {
                self.skip_ws();
                if !self.rest().is_empty() {
                    return Err(self.error(self.pos, "unexpected text after '}'"));
                }
                break;
            }
            let start = self.pos;
            let matcher = self.matcher(start)?;
            selector.matchers.push(matcher);
            self.skip_ws();
            if self.eat(",") {
                continue;
            }
            let at_end = self.rest().is_empty() || (braced && self.rest().starts_with('}'));
            if !at_end {
                return Err(self.error(start, "expected ',' or '}' after the value"));
            }
        }
        Ok(selector)
    }

    fn matcher(&mut self, start: usize) -> Result<Matcher, SelectorError> {
        let name_len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.rest().len());
        let name = &self.input[self.pos..self.pos + name_len];
        if !is_label_name(name) {
            return Err(self.error(start, "expected a label name"));
        }
        self.pos += name_len;
        self.skip_ws();
        let op = if self.eat("=~") {
            MatchOp::Regex
        } else if self.eat("!~") {
            MatchOp::NotRegex
        } else if self.eat("!=") {
            MatchOp::NotEqual
        } else if self.eat("=") {
            MatchOp::Equal
        } else {
            return Err(self.error(start, "expected one of =, !=, =~, !~"));
        };
        self.skip_ws();
        let value = self.string(start)?;
        Matcher::new(name, op, &value)
    }

    /// A quoted string: "..." or '...' with escapes, or `...` raw.
    fn string(&mut self, start: usize) -> Result<String, SelectorError> {
        let Some(quote) = self
            .rest()
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '\'' | '`'))
        else {
            return Err(self.error(start, "expected a quoted value"));
        };
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                self.pos += i + 1;
                return Ok(out);
            }
            if c == '\\' && quote != '`' {
                let escaped = match chars.next() {
                    Some((_, 'n')) => '\n',
                    Some((_, 't')) => '\t',
                    Some((_, 'r')) => '\r',
                    Some((_, c @ ('\\' | '"' | '\''))) => c,
                    Some((_, other)) => {
                        return Err(self.error(start, format!("unknown escape \\{other}")));
                    }
                    None => break,
                };
                out.push(escaped);
            } else {
                out.push(c);
            }
        }
        Err(self.error(start, format!("unterminated {quote}-quoted value")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_all_four_operators_and_renders_them_back() {
        let s = Selector::parse(
            r#" { pod=~"chat-canary-.*", namespace = "llm" ,zone!="b", gpu!~"1|2",} "#,
        )
        .expect("valid");
        assert_eq!(s.matchers().len(), 4);
        assert_eq!(
            s.to_string(),
            r#"{pod=~"chat-canary-.*",namespace="llm",zone!="b",gpu!~"1|2"}"#
        );
        let hit = labels(&[
            ("pod", "chat-canary-7f9"),
            ("namespace", "llm"),
            ("gpu", "0"),
        ]);
        assert!(s.matches(&hit));
        // `zone` is absent, so it is "" and `!="b"` holds.
        let miss_gpu = labels(&[
            ("pod", "chat-canary-7f9"),
            ("namespace", "llm"),
            ("gpu", "2"),
        ]);
        assert!(!s.matches(&miss_gpu));
    }

    #[test]
    fn regexes_are_anchored_like_prometheus() {
        let s = Selector::parse(r#"{pod=~"canary"}"#).expect("valid");
        assert!(s.matches(&labels(&[("pod", "canary")])));
        assert!(!s.matches(&labels(&[("pod", "chat-canary-1")])));
        let s = Selector::parse(r#"{pod!~"chat-.*"}"#).expect("valid");
        assert!(!s.matches(&labels(&[("pod", "chat-x")])));
        assert!(s.matches(&labels(&[("pod", "other-chat-x")])));
        // (?s): `.` matches a newline inside a value.
        let s = Selector::parse(r#"{msg=~"a.b"}"#).expect("valid");
        assert!(s.matches(&labels(&[("msg", "a\nb")])));
    }

    #[test]
    fn absent_labels_are_empty_strings() {
        let s = Selector::parse(r#"{pod=""}"#).expect("valid");
        assert!(s.matches(&labels(&[("namespace", "llm")])));
        assert!(!s.matches(&labels(&[("pod", "x")])));
        assert!(Selector::any().matches(&labels(&[])));
        assert_eq!(Selector::parse("{}").expect("valid"), Selector::any());
        assert_eq!(Selector::parse("").expect("valid"), Selector::any());
    }

    #[test]
    fn quoting_and_escapes_round_trip() {
        let s = Selector::parse(r#"{a="x\"y\\z", b='it''s', c=`raw\n`}"#);
        // 'it''s' is two strings back to back, which PromQL does not allow.
        assert!(s.is_err());
        let s = Selector::parse(r#"{a="x\"y\\z", b='it\'s', c=`raw\n`}"#).expect("valid");
        let values: Vec<&str> = s.matchers().iter().map(Matcher::value).collect();
        assert_eq!(values, ["x\"y\\z", "it's", "raw\\n"]);
        let again = Selector::parse(&s.to_string()).expect("rendered form parses");
        assert_eq!(again, s);
    }

    #[test]
    fn errors_name_the_bad_matcher() {
        let cases = [
            (r#"{pod=~"chat-(", namespace="llm"}"#, "pod=~\"chat-(\""),
            (r#"{namespace="llm", pod~"x"}"#, "pod~\"x\""),
            (r#"{namespace="llm", pod=x}"#, "pod=x"),
            (r#"{namespace="llm", 1pod="x"}"#, "1pod=\"x\""),
            (r#"{namespace="llm""#, "missing closing '}'"),
            (r#"{pod="x" zone="y"}"#, "pod=\"x\" zone=\"y\""),
            (r#"{pod="x}"#, "pod=\"x"),
        ];
        for (input, matcher) in cases {
            let err = Selector::parse(input).expect_err(input);
            let text = err.to_string();
            assert!(text.contains(matcher), "{input}: {text}");
        }
        let err = Selector::parse(r#"{pod=~"chat-("}"#).expect_err("bad regex");
        assert!(matches!(err, SelectorError::Regex { .. }), "{err:?}");
        assert!(err.to_string().contains("invalid regex"), "{err}");
    }

    #[test]
    fn builder_equals_parsed_form_and_renders_promql() {
        let built = Selector::any()
            .eq("namespace", "llm")
            .ne("zone", "b")
            .regex("pod", "chat-canary-.*")
            .expect("valid")
            .not_regex("gpu", "1|2")
            .expect("valid");
        let parsed =
            Selector::parse(r#"{namespace="llm",zone!="b",pod=~"chat-canary-.*",gpu!~"1|2"}"#)
                .expect("valid");
        assert_eq!(built, parsed);
        assert_eq!(
            built.promql("vllm:time_to_first_token_seconds_bucket"),
            r#"vllm:time_to_first_token_seconds_bucket{namespace="llm",zone!="b",pod=~"chat-canary-.*",gpu!~"1|2"}"#
        );
        assert_eq!(Selector::any().promql("up"), "up");
        assert!(Selector::any().regex("pod", "(").is_err());
        assert!(matches!(
            Selector::any().try_with("bad-name", MatchOp::Equal, "x"),
            Err(SelectorError::LabelName { .. })
        ));
    }
}
