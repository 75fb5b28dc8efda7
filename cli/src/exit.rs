//! Exit codes, as DESIGN.md fixes them for every subcommand, and the line
//! `weir` prints for an error.

use std::process::ExitCode;

use weir_analysis::Verdict;

/// What the process tells its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Success, or the canary was promoted.
    Success = 0,
    /// Something went wrong; the message says what.
    Error = 1,
    /// The command line cannot be used (clap exits with it for what it
    /// checks; commands return it for what only the whole set of flags
    /// can tell).
    Usage = 2,
    /// The canary was (or would be) aborted; for `weir import`, a field
    /// could not be carried over (the output says which).
    Aborted = 3,
    /// No decision yet (or the run ended inconclusive).
    Inconclusive = 4,
}

impl From<Verdict> for Code {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Promote => Code::Success,
            Verdict::Abort => Code::Aborted,
            Verdict::Continue => Code::Inconclusive,
        }
    }
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> Self {
        ExitCode::from(c as u8)
    }
}

/// The error and its causes, joined by `: `, skipping a cause whose text
/// the message before it already contains (many library errors, ours
/// included, print their source inline and also expose it as the source):
/// the line `weir` prints after `error: ` when a command fails.
pub fn render(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    let mut previous = out.clone();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !previous.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        previous = text;
    }
    out
}
