//! One check's result: what was looked at, PASS/WARN/FAIL/SKIP, what was
//! found, and for anything short of PASS the change that fixes it.

use serde::Serialize;

/// A check's verdict. Only [`Status::Fail`] makes `weir preflight` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Ready for weir.
    Pass,
    /// Works, but something deserves a look (or could not be checked).
    Warn,
    /// weir will not work until this is fixed.
    Fail,
    /// Not checked: it depends on something that failed, or was not asked
    /// for (`--canary`).
    Skip,
}

impl Status {
    /// `PASS`, `WARN`, `FAIL`, `SKIP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// The checks' names, as the table and the JSON lines spell them.
pub mod names {
    /// The API server answers.
    pub const API: &str = "api";
    /// Its version is one this binary supports.
    pub const VERSION: &str = "version";
    /// The Canary CRD is installed and matches this binary.
    pub const CRD: &str = "crd";
    /// The current identity holds the controller's permissions.
    pub const RBAC: &str = "rbac";
    /// `--canary`: the Canary exists and its spec is valid.
    pub const CANARY: &str = "canary";
    /// The target Deployment exists, with readiness probes.
    pub const TARGET: &str = "target";
    /// The proxies' Service has ready replicas that answer.
    pub const PROXY: &str = "proxy";
    /// A graph canary's other components (each found and probed).
    pub const GRAPH: &str = "graph";
    /// Nodes with allocatable `nvidia.com/gpu`.
    pub const GPU_NODES: &str = "gpu-nodes";
    /// Spare GPUs for the rollout's peak.
    pub const GPU_CAPACITY: &str = "gpu-capacity";

    /// The check of the Canary's metric `name` (a Prometheus or scrape
    /// source).
    pub fn metric(name: &str) -> String {
        format!("metric/{name}")
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Which check (see [`names`]).
    pub check: String,
    /// Its verdict.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to change (empty for PASS and SKIP).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

impl Check {
    /// A passed check.
    pub fn pass(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check::new(check, Status::Pass, detail, "")
    }

    /// A warning, with what to look at.
    pub fn warn(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(check, Status::Warn, detail, fix)
    }

    /// A failure, with the change that fixes it.
    pub fn fail(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(check, Status::Fail, detail, fix)
    }

    /// A check that did not run, and why.
    pub fn skip(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check::new(check, Status::Skip, detail, "")
    }

    pub fn new(
        check: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            check: check.into(),
            status,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
}

/// Why something the checks need could not be read from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unread {
    /// The identity may not read it (the message names the verb).
    Forbidden(String),
    /// Any other failure, explained.
    Failed(String),
}

impl Unread {
    /// A WARN for check `check`: it could not look.
    pub fn warn(&self, check: &str, what: &str) -> Check {
        match self {
            Unread::Forbidden(m) => Check::warn(
                check,
                format!("cannot read {what}: {m}"),
                "run preflight as an identity that may read it (e.g. a cluster admin's --context)",
            ),
            Unread::Failed(m) => Check::warn(
                check,
                format!("cannot read {what}: {m}"),
                "run preflight again; if it persists, check the API server's health",
            ),
        }
    }
}

impl std::fmt::Display for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unread::Forbidden(m) | Unread::Failed(m) => f.write_str(m),
        }
    }
}

/// A value read from the cluster, or why not.
pub type Read<T> = Result<T, Unread>;
