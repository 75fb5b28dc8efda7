//! The bodies a webhook receives: weir's JSON document, or a Slack
//! incoming-webhook message (`text` for notifications and clients without
//! blocks, `blocks` for the channel).

use serde_json::{Value, json};

use super::config::Format;
use super::{EventKind, Notification};

/// The body for `format`.
pub fn body(n: &Notification, format: Format) -> Value {
    match format {
        Format::Json => serde_json::to_value(n).unwrap_or(Value::Null),
        Format::Slack => slack(n),
    }
}

fn headline(n: &Notification) -> String {
    let what = match n.event {
        EventKind::Started => "rollout started",
        EventKind::StepReached => "step reached",
        EventKind::Paused => "paused",
        EventKind::AnalysisPassed => "analysis passed",
        EventKind::AnalysisFailed => "analysis failed",
        EventKind::Inconclusive => "analysis inconclusive",
        EventKind::Promoted => "promoted",
        EventKind::Aborted => "aborted",
    };
    let mark = match n.severity {
        "warning" => ":warning: ",
        _ => "",
    };
    format!(
        "{mark}*{}/{}*: {what} ({}, step {}, canary {}%)",
        n.canary.namespace,
        n.canary.name,
        n.reason,
        n.step + 1,
        n.canary_weight
    )
}

fn slack(n: &Notification) -> Value {
    let mut lines = vec![n.message.clone()];
    lines.extend(
        n.effects
            .iter()
            .map(|e| format!("• `{}` {}", e.finding, e.summary)),
    );
    if let Some(r) = &n.abort_reason {
        lines.push(format!("abort reason: {r}"));
    }
    let revisions = match (&n.stable_revision, &n.canary_revision) {
        (Some(s), Some(c)) => format!("stable `{s}` → canary `{c}`"),
        (Some(s), None) => format!("stable `{s}`"),
        _ => String::new(),
    };
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": headline(n)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": lines.join("\n")}}),
    ];
    if !revisions.is_empty() {
        blocks
            .push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": revisions}]}));
    }
    json!({
        "text": format!("{}: {}", headline(n), n.message),
        "blocks": blocks,
    })
}
