//! What one SSE `data` payload says, read with serde_json into a view that
//! borrows and ignores everything but the handful of fields the meter needs,
//! without building a `Value`.
//!
//! A JSON string can contain `"content"` or `"finish_reason"` inside
//! generated text, so a substring scan would be wrong exactly when a model
//! talks about JSON, and serde_json skipping the rest costs about what a
//! scan would.

use serde::Deserialize;
use serde::de::IgnoredAny;

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
    /// It has an `error` field.
    pub(super) error: bool,
    /// `usage.completion_tokens`, when present.
    pub(super) completion_tokens: Option<u64>,
}

/// Reads one `data` payload; `None` when it is not a JSON object of the
/// expected shape.
pub(super) fn read(data: &[u8]) -> Option<ChunkFacts> {
    let chunk = serde_json::from_slice::<ChunkView>(data).ok()?;
    Some(ChunkFacts {
        content: chunk.choices.content,
        tokens: chunk.choices.tokens,
        finished: chunk.choices.finished,
        error: chunk.error.is_some(),
        completion_tokens: chunk.usage.and_then(|u| u.completion_tokens),
    })
}

/// The fields of an OpenAI-style stream chunk the meter needs; everything
/// else is skipped by serde without allocating.
#[derive(Deserialize)]
struct ChunkView {
    #[serde(default)]
    choices: Choices,
    #[serde(default)]
    usage: Option<UsageView>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct UsageView {
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// `choices`, folded while it is read instead of collected into a `Vec`.
#[derive(Default)]
struct Choices {
    content: bool,
    tokens: u64,
    finished: bool,
}

#[derive(Deserialize)]
struct ChoiceView {
    #[serde(default)]
    delta: Option<DeltaView>,
    #[serde(default)]
    text: Option<NonEmpty>,
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct DeltaView {
    #[serde(default)]
    role: Option<IgnoredAny>,
    #[serde(default)]
    content: Option<NonEmpty>,
    #[serde(default)]
    reasoning_content: Option<NonEmpty>,
    #[serde(default)]
    reasoning: Option<NonEmpty>,
    #[serde(default)]
    tool_calls: Option<NonEmpty>,
}

impl<'de> Deserialize<'de> for Choices {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Choices;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_unit<E>(self) -> Result<Choices, E> {
                Ok(Choices::default())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Choices, A::Error> {
                let mut out = Choices::default();
                while let Some(choice) = seq.next_element::<ChoiceView>()? {
                    let has = |v: &Option<NonEmpty>| v.as_ref().is_some_and(|n| n.0);
                    let content = has(&choice.text)
                        || choice.delta.as_ref().is_some_and(|d| {
                            has(&d.content)
                                || has(&d.reasoning_content)
                                || has(&d.reasoning)
                                || has(&d.tool_calls)
                        });
                    // An empty piece of text, outside the first and last
                    // chunks, is a token that decoded to nothing yet.
                    let empty_piece = choice.finish_reason.is_none()
                        && match &choice.delta {
                            Some(d) => d.role.is_none() && d.content.is_some(),
                            None => choice.text.is_some(),
                        };
                    out.content |= content;
                    out.tokens += u64::from(content || empty_piece);
                    out.finished |= choice.finish_reason.is_some();
                }
                Ok(out)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Whether a value carries anything: a non-empty string, list or object.
struct NonEmpty(bool);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NonEmpty;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E>(self, v: &str) -> Result<NonEmpty, E> {
                Ok(NonEmpty(!v.is_empty()))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<NonEmpty, E> {
                Ok(NonEmpty(!v.is_empty()))
            }
            fn visit_unit<E>(self) -> Result<NonEmpty, E> {
                Ok(NonEmpty(false))
            }
            fn visit_bool<E>(self, _: bool) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_i64<E>(self, _: i64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_u64<E>(self, _: u64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_f64<E>(self, _: f64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<NonEmpty, A::Error> {
                let mut any = false;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    any = true;
                }
                Ok(NonEmpty(any))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<NonEmpty, A::Error> {
                let mut any = false;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
                    any = true;
                }
                Ok(NonEmpty(any))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
