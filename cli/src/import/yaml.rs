//! Writes a JSON value as block YAML with comments on chosen fields: the
//! one thing a serializer cannot do. Comments are keyed by the path of the
//! field they precede (`spec.strategy.canary.steps[2]`; "" is the top of
//! the document). Strings that YAML would read as something else (numbers,
//! booleans, `null`, anything with syntax characters) are written quoted,
//! as JSON strings, which YAML reads back unchanged.

use std::collections::BTreeMap;

use serde_json::Value;

/// Comment lines per path, in the order they are written.
pub type Comments = BTreeMap<String, Vec<String>>;

/// Longest comment line before it is wrapped.
const WIDTH: usize = 100;

/// `value` (a map) as a YAML document, with `comments`.
pub fn render(value: &Value, comments: &Comments) -> String {
    let mut out = String::new();
    comment(&mut out, 0, comments.get(""));
    match value {
        Value::Object(_) => node(&mut out, "", value, 0, comments),
        other => out.push_str(&format!("{}\n", scalar(other))),
    }
    out
}

fn comment(out: &mut String, indent: usize, lines: Option<&Vec<String>>) {
    for line in lines.into_iter().flatten() {
        for wrapped in wrap(line, WIDTH.saturating_sub(indent + 2)) {
            out.push_str(&format!("{:indent$}# {wrapped}\n", ""));
        }
    }
}

/// Splits `text` at spaces into lines of at most `width` (a longer word
/// stays whole); continuation lines are indented by two.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
            line.push_str("  ");
        } else if !line.is_empty() && line != "  " {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.trim().is_empty() {
        lines.push(line);
    }
    lines
}

/// The entries of map or list `value` at `path`, at `indent`.
fn node(out: &mut String, path: &str, value: &Value, indent: usize, comments: &Comments) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                comment(out, indent, comments.get(&child_path));
                out.push_str(&format!("{:indent$}{key}:", ""));
                entry(out, &child_path, child, indent, comments);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let child_path = format!("{path}[{i}]");
                comment(out, indent, comments.get(&child_path));
                match child {
                    Value::Object(m) if !m.is_empty() => {
                        item_map(out, &child_path, child, indent, comments)
                    }
                    _ => {
                        out.push_str(&format!("{:indent$}-", ""));
                        entry(out, &child_path, child, indent, comments);
                    }
                }
            }
        }
        _ => {}
    }
}

/// A map in a list, its first key on the dash's line (`- setWeight: 10`).
/// Comments on that first key go above the dash.
fn item_map(out: &mut String, path: &str, value: &Value, indent: usize, comments: &Comments) {
    let mut body = String::new();
    node(&mut body, path, value, indent + 2, comments);
    let mut dashed = false;
    for line in body.lines() {
        let content = &line[(indent + 2).min(line.len())..];
        if !dashed && content.starts_with('#') {
            out.push_str(&format!("{:indent$}{content}\n", ""));
        } else if !dashed {
            out.push_str(&format!("{:indent$}- {content}\n", ""));
            dashed = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
}

/// What follows `key:` or `-`: a scalar or empty collection on the same
/// line, else the children on the next lines, two deeper.
fn entry(out: &mut String, path: &str, value: &Value, indent: usize, comments: &Comments) {
    match value {
        Value::Object(m) if m.is_empty() => out.push_str(" {}\n"),
        Value::Array(a) if a.is_empty() => out.push_str(" []\n"),
        Value::Object(_) | Value::Array(_) => {
            out.push('\n');
            node(out, path, value, indent + 2, comments);
        }
        scalar_value => out.push_str(&format!(" {}\n", scalar(scalar_value))),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            // 10.0 from an f64 weight reads better as 10.
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        Value::String(s) if plain(s) => s.clone(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

/// Whether `s` reads back as the same string without quotes.
fn plain(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let reserved = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "null" | "~" | "yes" | "no" | "on" | "off" | "y" | "n"
    );
    !reserved
        && s.parse::<f64>().is_err()
        && !s.starts_with("0x")
        && !s.starts_with("0o")
        && (first.is_ascii_alphanumeric() || first == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./%+=@".contains(c))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn comments_precede_their_field_and_list_item() {
        let v = json!({"spec": {"steps": [{"setWeight": 10.0}, {"pause": {}}], "port": 8000}});
        let mut c = Comments::new();
        c.insert("".into(), vec!["top".into()]);
        c.insert("spec.steps[1]".into(), vec!["second step".into()]);
        c.insert("spec.port".into(), vec!["the port".into()]);
        let got = render(&v, &c);
        let back: Value = serde_saphyr::from_str(&got).expect("valid YAML");
        assert_eq!(back["spec"]["steps"][0]["setWeight"], json!(10));
        assert_eq!(back["spec"]["steps"][1]["pause"], json!({}));
        assert!(
            got.starts_with("# top\nspec:\n  # the port\n  port: 8000\n"),
            "{got}"
        );
        assert!(
            got.contains("    - setWeight: 10\n    # second step\n    - pause: {}\n"),
            "{got}"
        );
    }

    #[test]
    fn strings_that_would_change_type_are_quoted() {
        for s in [
            "600", "true", "No", "", "a: b", "#x", "1e3", "{a}", "- x", "x\ny",
        ] {
            let yaml = render(&json!({ "k": s }), &Comments::new());
            let back: Value = serde_saphyr::from_str(&yaml).expect("valid YAML");
            assert_eq!(back["k"], json!(s), "{yaml}");
        }
        let yaml = render(
            &json!({"k": "10%", "d": "30s", "p": "/v1"}),
            &Comments::new(),
        );
        assert_eq!(yaml, "d: 30s\nk: 10%\np: /v1\n");
    }

    #[test]
    fn long_comments_wrap_at_spaces() {
        let text = "word ".repeat(40);
        let lines = wrap(text.trim(), 30);
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|l| l.len() <= 30), "{lines:?}");
        assert!(lines[1].starts_with("  word"), "{lines:?}");
    }
}
