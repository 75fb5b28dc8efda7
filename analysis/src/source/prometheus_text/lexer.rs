//! The lexer in front of `prometheus-parse` (see the parent module for
//! why): it reads every exposition line itself, reports a malformed one
//! with its line number, and rewrites the text so that the crate cannot
//! misread it (colons in names and awkward label values encoded); the
//! decoders undo the encoding on the way out.

use std::collections::HashSet;

use crate::source::{excerpt, parse_float};

/// Stands in for `:` in metric names while `prometheus-parse` reads them.
const COLON: char = '\u{02D0}';

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn encode_name(name: &str) -> String {
    name.replace(':', &COLON.to_string())
}

pub(super) fn decode_name(name: &str) -> String {
    name.replace(COLON, ":")
}

fn encode_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '%' => out.push_str("%25"),
            ',' => out.push_str("%2C"),
            '=' => out.push_str("%3D"),
            '}' => out.push_str("%7D"),
            '"' => out.push_str("%22"),
            '\\' => out.push_str("%5C"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn decode_value(value: &str) -> String {
    if !value.contains('%') {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match code {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Rewrites exposition text so that `prometheus-parse` reads every line
/// correctly (see the module docs), and collects the families declared as
/// counters. Errors are `(1-based line, reason)`.
pub(super) fn sanitize(text: &str) -> Result<(String, HashSet<String>), (usize, String)> {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut counters = HashSet::new();
    let mut histograms = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            out.push('\n');
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            out.push_str(&sanitize_comment(comment, &mut counters, &mut histograms));
        } else {
            out.push_str(&sanitize_sample(line, &histograms).map_err(|reason| (i + 1, reason))?);
        }
        out.push('\n');
    }
    Ok((out, counters))
}

fn sanitize_comment(
    comment: &str,
    counters: &mut HashSet<String>,
    histograms: &mut HashSet<String>,
) -> String {
    let body = comment.trim_start();
    let (keyword, rest) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
    if keyword != "HELP" && keyword != "TYPE" {
        return format!("#{comment}");
    }
    let rest = rest.trim_start();
    let (name, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    match (keyword, tail.trim()) {
        ("TYPE", "counter") => {
            counters.insert(name.to_string());
        }
        ("TYPE", "histogram") => {
            histograms.insert(name.to_string());
        }
        _ => {}
    }
    format!("# {keyword} {} {}", encode_name(name), tail.trim())
}

fn sanitize_sample(line: &str, histograms: &HashSet<String>) -> Result<String, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("{name:?} is not a metric name"));
    }
    let mut rest = line[name_end..].trim_start();
    let mut labels: Vec<(&str, String)> = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let label = &rest[..end];
            if !is_label_name(label) {
                return Err(format!("expected a label name in {}", excerpt(rest, 40)));
            }
            if labels.iter().any(|(l, _)| *l == label) {
                return Err(format!("label {label} appears twice"));
            }
            rest = rest[end..].trim_start();
            rest = rest
                .strip_prefix('=')
                .ok_or_else(|| format!("expected '=' after label {label}"))?
                .trim_start();
            rest = rest
                .strip_prefix('"')
                .ok_or_else(|| format!("expected a quoted value for label {label}"))?;
            let (value, after) =
                read_quoted(rest).ok_or_else(|| format!("label {label}: unterminated value"))?;
            if label == "le" || label == "quantile" {
                parse_float(&value).map_err(|e| format!("label {label}: {e}"))?;
            }
            labels.push((label, value));
            rest = after.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err(format!("expected ',' or '}}' after label {label}"));
            }
        }
    }
    let is_bucket = name
        .strip_suffix("_bucket")
        .is_some_and(|family| histograms.contains(family));
    if is_bucket && !labels.iter().any(|(l, _)| *l == "le") {
        return Err(format!("histogram bucket {name} has no le label"));
    }
    let mut tokens = rest.split_whitespace();
    let value = tokens.next().ok_or("missing sample value")?;
    parse_float(value)?;
    let timestamp = tokens.next();
    if let Some(ts) = timestamp {
        ts.parse::<i64>()
            .map_err(|_| format!("timestamp {ts:?} is not an integer (milliseconds)"))?;
    }
    if tokens.next().is_some() {
        return Err("unexpected text after the timestamp".to_string());
    }
    let mut out = encode_name(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            out.push_str(&encode_value(value));
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    if let Some(ts) = timestamp {
        out.push(' ');
        out.push_str(ts);
    }
    Ok(out)
}

/// Reads a label value after its opening quote, unescaping `\\`, `\"` and
/// `\n`; returns the value and the text after the closing quote.
fn read_quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other @ ('\\' | '"') => value.push(other),
                // Not a valid escape: keep it as written, like Prometheus.
                other => {
                    value.push('\\');
                    value.push(other);
                }
            },
            c => value.push(c),
        }
    }
    None
}
