//! The webhooks, as the notifications Secret lists them (key
//! `webhooks.yaml`), and which of them a Canary's event goes to.
//!
//! ```yaml
//! webhooks:
//!   - name: llm-team                # what a Canary's spec.notify names
//!     url: https://hooks.slack.com/services/...
//!     format: slack                 # json (default: weir's document) or slack
//!     headers: {Authorization: Bearer ...}
//!     allCanaries: false            # true: every Canary's events, named or not
//!     events: [started, analysisFailed, promoted, aborted]   # default: all
//! ```
//!
//! URLs and header values are secrets (a Slack webhook URL is a
//! credential): they are never logged, and neither `Debug` nor an error
//! message of this module shows them.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::EventKind;

/// The key of the Secret that holds the list.
pub const SECRET_KEY: &str = "webhooks.yaml";

/// How a webhook's body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    /// weir's JSON document (`weir.dev/notification/v1`).
    #[default]
    Json,
    /// A Slack incoming-webhook message (`text` and `blocks`).
    Slack,
}

/// One receiver.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Webhook {
    /// Its name: what `spec.notify` lists, and what logs show.
    pub name: String,
    /// Where to POST (secret).
    pub url: String,
    /// The body's format.
    #[serde(default)]
    pub format: Format,
    /// Extra request headers (secret values).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Every Canary's events, not only those of Canaries that name it.
    #[serde(default)]
    pub all_canaries: bool,
    /// Only these events (empty: all).
    #[serde(default)]
    pub events: Vec<EventKind>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &"<redacted>")
            .field("format", &self.format)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("all_canaries", &self.all_canaries)
            .field("events", &self.events)
            .finish()
    }
}

impl Webhook {
    /// Whether an event of `kind` from a Canary whose `spec.notify` is
    /// `named` goes here.
    pub fn wants(&self, named: &[String], kind: EventKind) -> bool {
        (self.all_canaries || named.contains(&self.name))
            && (self.events.is_empty() || self.events.contains(&kind))
    }
}

/// The notifications Secret cannot be used as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    /// e.g. `webhooks.yaml: webhooks[1].url`.
    pub field: String,
    /// What is wrong and how to fix it (never the secret value).
    pub problem: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    webhooks: Vec<Webhook>,
}

/// Reads `webhooks.yaml`.
///
/// # Errors
/// The first problem, naming the field. Parse errors name the path only:
/// the parser's own message could quote a URL.
pub fn parse(text: &str) -> Result<Vec<Webhook>, ConfigError> {
    let de = serde_saphyr::from_str::<serde_json::Value>(text).map_err(|_| ConfigError {
        field: SECRET_KEY.into(),
        problem: "is not YAML; write webhooks: [{name: ..., url: https://...}]".into(),
    })?;
    let file: File = serde_path_to_error::deserialize(de).map_err(|e| ConfigError {
        field: format!("{SECRET_KEY}: {}", e.path()),
        problem: match e.inner().to_string() {
            // serde's messages name the field or the variant, not the value
            // of a string: safe to show.
            m if m.starts_with("unknown") || m.starts_with("missing") => m,
            _ => "has the wrong type".into(),
        },
    })?;
    let mut seen = std::collections::BTreeSet::new();
    for (i, w) in file.webhooks.iter().enumerate() {
        let at = |f: &str| format!("{SECRET_KEY}: webhooks[{i}].{f}");
        if w.name.trim().is_empty() {
            return Err(ConfigError {
                field: at("name"),
                problem: "is empty; name the webhook, e.g. llm-team".into(),
            });
        }
        if !seen.insert(w.name.as_str()) {
            return Err(ConfigError {
                field: at("name"),
                problem: format!("{:?} is used twice; names must be unique", w.name),
            });
        }
        let scheme_ok = w.url.starts_with("https://") || w.url.starts_with("http://");
        if !scheme_ok || reqwest::Url::parse(&w.url).is_err() {
            return Err(ConfigError {
                field: at("url"),
                problem: "is not an http(s) URL".into(),
            });
        }
        for (name, value) in &w.headers {
            let valid = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && reqwest::header::HeaderValue::from_str(value).is_ok();
            if !valid {
                return Err(ConfigError {
                    field: at(&format!("headers.{name}")),
                    problem: "is not a valid HTTP header".into(),
                });
            }
        }
    }
    Ok(file.webhooks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_list_is_read_and_chosen_per_canary_and_event() {
        let hooks = parse(
            "webhooks:\n\
             - {name: team, url: 'https://hooks.example.com/T/B/secret', format: slack}\n\
             - {name: audit, url: 'http://audit:8080/weir', allCanaries: true, events: [promoted, aborted],\n\
                headers: {Authorization: Bearer s3cret}}\n",
        )
        .expect("valid");
        assert_eq!(hooks.len(), 2);
        assert_eq!(hooks[0].format, Format::Slack);
        let named = vec!["team".to_string()];
        assert!(hooks[0].wants(&named, EventKind::Paused));
        assert!(!hooks[0].wants(&[], EventKind::Paused), "not named");
        assert!(hooks[1].wants(&[], EventKind::Aborted), "every Canary");
        assert!(!hooks[1].wants(&named, EventKind::Paused), "not its event");
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let hooks = parse(
            "webhooks: [{name: a, url: 'https://x.example/secret-path', headers: {X-Token: hunter2}}]",
        )
        .expect("valid");
        let debug = format!("{hooks:?}");
        assert!(
            !debug.contains("secret-path") && !debug.contains("hunter2"),
            "{debug}"
        );
        for (yaml, field) in [
            (
                "webhooks: [{name: a, url: 'ftp://secret-host/x'}]",
                "webhooks[0].url",
            ),
            (
                "webhooks: [{name: a, url: 'https://h/x'}, {name: a, url: 'https://h/y'}]",
                "webhooks[1].name",
            ),
            (
                "webhooks: [{name: a, url: 'https://h/x', headers: {'bad header': v}}]",
                "headers.bad header",
            ),
            (
                "webhooks: [{name: a, url: 'https://h/x', events: [exploded]}]",
                "webhooks[0].events[0]",
            ),
            ("webhooks: [{name: a, url: {secret: 1}}]", "webhooks[0].url"),
            ("webhooks: [{name: a}]", "webhooks[0]"),
        ] {
            let e = parse(yaml).expect_err(yaml).to_string();
            assert!(e.starts_with("webhooks.yaml: "), "{e}");
            assert!(e.contains(field), "{yaml}: {e}");
            assert!(!e.contains("secret"), "{yaml}: {e}");
        }
    }
}
