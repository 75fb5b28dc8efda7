//! What a local run looked like over time: the data behind the live
//! progress lines, `--output json` and the HTML report.
//!
//! Plain serializable values (no live handles), so a report can be written
//! from a finished run, or from a JSON file of one.

use serde::{Deserialize, Serialize};
use weir_analysis::Decision;

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The Canary's name.
    pub name: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// The steps as written, one line each (e.g. `setWeight 50`).
    pub steps: Vec<String>,
    /// The metrics as configured, one line each (e.g. `ttft latency p50,p95 ≤ +10%`).
    pub metrics: Vec<String>,
    /// One sample per analysis interval (and at every transition).
    pub samples: Vec<Sample>,
    /// Transitions and their reasons.
    pub events: Vec<RecordedEvent>,
    /// Cumulative TTFT distribution of each cohort over the run, as
    /// `[seconds, fraction ≤]` points.
    pub ttft_cdf: Cohorts<Vec<[f64; 2]>>,
    /// The last verdict with all its numbers.
    pub decision: Option<Decision>,
    /// How the run ended (None while running).
    pub outcome: Option<RecordedOutcome>,
}

pub use crate::evidence::Cohorts;

/// The state of the run at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    /// Phase (`Progressing`, ...).
    pub phase: String,
    /// The step, e.g. `step 2/4: analysis`.
    pub step: String,
    /// The canary's share of traffic in percent.
    pub canary_weight: f64,
    /// Per-cohort figures over the last interval.
    pub cohorts: Cohorts<CohortSample>,
    /// The running verdict (`promote`, `continue`, `abort`), if one was taken.
    pub verdict: Option<String>,
    /// The rule behind it.
    pub rule: Option<String>,
    /// While the analysis window waits for the canary's warm-up requests:
    /// how far it has come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<weir_crds::WarmupProgress>,
}

/// One cohort's figures over the last interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CohortSample {
    /// Requests completed in the interval.
    pub requests: u64,
    /// Requests per second in the interval.
    pub rate: f64,
    /// TTFT median in seconds.
    pub ttft_p50: Option<f64>,
    /// TTFT 95th percentile in seconds.
    pub ttft_p95: Option<f64>,
    /// Failed fraction of requests in the interval.
    pub error_rate: Option<f64>,
    /// GPU utilization in percent (from the backend's metrics), if scraped.
    pub gpu_util: Option<f64>,
}

/// A transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedEvent {
    /// Seconds since the run started.
    pub t: f64,
    /// A reason constant, e.g. `AnalysisFailed`.
    pub reason: String,
    /// What happened.
    pub message: String,
    /// A warning (abort, rollback, inconclusive).
    pub warning: bool,
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedOutcome {
    /// `Succeeded` or `Aborted`.
    pub phase: String,
    /// The process exit code (0 promoted, 3 aborted, 4 inconclusive).
    pub exit_code: i32,
    /// One line: what decided it.
    pub message: String,
    /// Seconds since the run started.
    pub t: f64,
}
