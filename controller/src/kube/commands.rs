//! `weir promote/abort/retry` reach the controller as annotations on the
//! Canary (see `weir_crds::annotations`), never as edits to status. This
//! reads them into the engine's [`Commands`].

use std::collections::BTreeMap;

use weir_crds::annotations;

use crate::engine::Commands;

/// The commands carried by a Canary's annotations. A promote value is
/// `<id>` or `<id>;full`; ids are opaque (the CLI writes a timestamp) and
/// acted on once each.
pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Commands {
    let id = |key: &str| {
        annotations
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    Commands {
        promote: id(annotations::PROMOTE).map(|v| match v.split_once(';') {
            Some((id, mode)) => (id.to_string(), mode.trim() == "full"),
            None => (v, false),
        }),
        abort: id(annotations::ABORT),
        retry: id(annotations::RETRY),
    }
}

/// The annotation value `weir promote [--full]` writes for request `id`.
pub fn promote_value(id: &str, full: bool) -> String {
    if full {
        format!("{id};full")
    } else {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_become_commands() {
        let a = BTreeMap::from([
            (
                annotations::PROMOTE.to_string(),
                promote_value("1700000000", true),
            ),
            (annotations::ABORT.to_string(), "  ".to_string()),
            (annotations::RETRY.to_string(), "r7".to_string()),
            ("unrelated".to_string(), "x".to_string()),
        ]);
        let c = from_annotations(&a);
        assert_eq!(c.promote, Some(("1700000000".into(), true)));
        assert_eq!(c.abort, None, "a blank value is no request");
        assert_eq!(c.retry.as_deref(), Some("r7"));
        let step = from_annotations(&BTreeMap::from([(
            annotations::PROMOTE.to_string(),
            promote_value("p2", false),
        )]));
        assert_eq!(step.promote, Some(("p2".into(), false)));
        assert_eq!(from_annotations(&BTreeMap::new()), Commands::default());
    }
}
