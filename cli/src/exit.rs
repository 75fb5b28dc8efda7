//! Exit codes, as DESIGN.md fixes them for every subcommand.

use std::process::ExitCode;

use weir_analysis::Verdict;

/// What the process tells its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Success, or the canary was promoted.
    Success = 0,
    /// Something went wrong; the message says what.
    Error = 1,
    /// The canary was (or would be) aborted.
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
