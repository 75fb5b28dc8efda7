//! What the import could not carry over as it was: one [`Note`] per source
//! field that changes meaning or has no counterpart, attached to the weir
//! field it concerns, and written as a YAML comment there.

use super::source::Obj;

/// How far a source field survives the import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Carried over, but weir reads it differently (a fixed threshold
    /// became a margin relative to stable, say). Exit code unaffected.
    Changed,
    /// Not carried over: weir has no counterpart. `weir import` exits 3.
    Dropped,
}

/// One comment for the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The weir field the comment goes on, as a path of the output
    /// (`spec.strategy.canary.steps[2]`); "" is the top of the document.
    pub at: String,
    /// The source field, e.g. `spec.strategy.canary.antiAffinity`.
    pub source: String,
    /// Changed or dropped.
    pub severity: Severity,
    /// What happened and the weir alternative.
    pub text: String,
}

impl Note {
    /// The comment's text, without `# `.
    pub fn comment(&self) -> String {
        let label = match self.severity {
            Severity::Changed => "changed",
            Severity::Dropped => "not carried over",
        };
        format!("{label}: {}: {}", self.source, self.text)
    }
}

/// The notes of one conversion.
#[derive(Debug, Default)]
pub struct Notes(pub Vec<Note>);

impl Notes {
    /// `source` is carried over at `at`, but means something else in weir.
    pub fn changed(&mut self, at: &str, source: &str, text: impl Into<String>) {
        self.push(at, source, Severity::Changed, text.into());
    }

    /// `source` has no counterpart; `text` says the weir alternative.
    pub fn dropped(&mut self, at: &str, source: &str, text: impl Into<String>) {
        self.push(at, source, Severity::Dropped, text.into());
    }

    fn push(&mut self, at: &str, source: &str, severity: Severity, text: String) {
        self.0.push(Note {
            at: at.to_string(),
            source: source.to_string(),
            severity,
            text,
        });
    }

    /// When `obj` has `key`: reads it and notes it at `at` with `text`.
    pub fn on(
        &mut self,
        obj: &Obj<'_>,
        key: &str,
        severity: Severity,
        at: &str,
        text: impl Into<String>,
    ) {
        if obj.get(key).is_some() {
            self.push(at, &obj.at(key), severity, text.into());
        }
    }

    /// Every field of `obj` the mapping did not read: no counterpart that
    /// `weir import` knows of.
    pub fn unread(&mut self, at: &str, obj: &Obj<'_>) {
        for source in obj.unread() {
            self.dropped(
                at,
                &source,
                "weir import does not know this field; see docs/migrating.md for what weir offers",
            );
        }
    }

    /// Whether anything could not be carried over.
    pub fn any_dropped(&self) -> bool {
        self.0.iter().any(|n| n.severity == Severity::Dropped)
    }
}
