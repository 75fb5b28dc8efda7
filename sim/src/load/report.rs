//! What a load run measured: [`LoadReport`] and its parts, serializable as
//! the one JSON object `weir load --output json` prints.

use std::collections::BTreeMap;

use serde::Serialize;

/// How one request ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 2xx, and the stream ended with `finish_reason` and `[DONE]`.
    Ok,
    /// A non-2xx status.
    HttpError,
    /// An error event mid-stream, or data that is not a chunk.
    StreamError,
    /// The response ended (or the connection broke) before `finish_reason`
    /// and `[DONE]`, without an error event.
    Incomplete,
    /// No connection could be made.
    ConnectError,
    /// The request took longer than the timeout.
    Timeout,
}

/// Requests by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    /// See [`Outcome::Ok`].
    pub ok: u64,
    /// See [`Outcome::HttpError`].
    pub http_error: u64,
    /// See [`Outcome::StreamError`].
    pub stream_error: u64,
    /// See [`Outcome::Incomplete`].
    pub incomplete: u64,
    /// See [`Outcome::ConnectError`].
    pub connect_error: u64,
    /// See [`Outcome::Timeout`].
    pub timeout: u64,
}

impl Outcomes {
    /// Counts one outcome.
    pub fn add(&mut self, outcome: Outcome) {
        *match outcome {
            Outcome::Ok => &mut self.ok,
            Outcome::HttpError => &mut self.http_error,
            Outcome::StreamError => &mut self.stream_error,
            Outcome::Incomplete => &mut self.incomplete,
            Outcome::ConnectError => &mut self.connect_error,
            Outcome::Timeout => &mut self.timeout,
        } += 1;
    }

    /// Every outcome but `ok`.
    pub fn errors(&self) -> u64 {
        self.http_error + self.stream_error + self.incomplete + self.connect_error + self.timeout
    }

    /// All requests that finished.
    pub fn total(&self) -> u64 {
        self.ok + self.errors()
    }
}

/// Percentiles of a latency, seconds. Empty when nothing was measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Measurements.
    pub count: u64,
    /// Mean.
    pub mean: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl Percentiles {
    /// Percentiles of `values` (sorted in place), nearest-rank: the
    /// q-quantile is the smallest value with at least q·n values at or
    /// below it.
    pub fn of(values: &mut [f64]) -> Self {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let rank = |q: f64| values[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Percentiles {
            count: n as u64,
            mean: Some(values.iter().sum::<f64>() / n as f64),
            p50: Some(rank(0.5)),
            p90: Some(rank(0.9)),
            p99: Some(rank(0.99)),
            max: values.last().copied(),
        }
    }
}

/// One cohort's share, keyed by the `x-weir-cohort` response header.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CohortReport {
    /// Requests answered by this cohort.
    pub requests: u64,
    /// Of which ended `ok`.
    pub ok: u64,
    /// Of which did not.
    pub errors: u64,
    /// Their time to first token.
    pub ttft_seconds: Percentiles,
}

/// One model's share of a run that sent several.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelReport {
    /// Requests that asked for it.
    pub requests: u64,
    /// Of which ended `ok`.
    pub ok: u64,
    /// Of which did not.
    pub errors: u64,
    /// Their content events (tokens, for one token per event).
    pub tokens: u64,
    /// Their streams that finished with `finish_reason: "length"`.
    pub finished_length: u64,
    /// Their time to first token.
    pub ttft_seconds: Percentiles,
}

/// Stickiness as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionReport {
    /// The header that carried the session id.
    pub header: String,
    /// Size of the session pool.
    pub pool: u32,
    /// Sessions that made at least one request.
    pub seen: u64,
    /// Sessions answered by more than one cohort (0 when routing is sticky).
    pub on_several_cohorts: u64,
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// The URL requests went to.
    pub url: String,
    /// The configured rate, requests per second.
    pub rate: f64,
    /// The configured sending window, seconds.
    pub duration_seconds: f64,
    /// From the first send to the last response, seconds.
    pub elapsed_seconds: f64,
    /// Requests the schedule called for.
    pub scheduled: u64,
    /// Requests sent.
    pub sent: u64,
    /// Requests not sent because the concurrency limit was reached.
    pub dropped: u64,
    /// Sent requests by outcome.
    pub outcomes: Outcomes,
    /// Non-2xx responses by status code.
    pub http_statuses: BTreeMap<u16, u64>,
    /// Requests sent per second of the sending window.
    pub sent_per_second: f64,
    /// `ok` requests per second of elapsed time.
    pub ok_per_second: f64,
    /// Content events received (tokens, for one token per event).
    pub tokens: u64,
    /// Content events per second of elapsed time.
    pub tokens_per_second: f64,
    /// Streams that finished with `finish_reason: "length"`.
    pub finished_length: u64,
    /// Time to first non-empty content event.
    pub ttft_seconds: Percentiles,
    /// Gaps between consecutive content events.
    pub itl_seconds: Percentiles,
    /// Per cohort, when responses carried `x-weir-cohort`.
    pub cohorts: BTreeMap<String, CohortReport>,
    /// Per model, when the run sent more than one.
    pub models: BTreeMap<String, ModelReport>,
    /// Stickiness, when a session header was sent.
    pub sessions: Option<SessionReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!(
            (p.count, p.p50, p.p90, p.p99, p.max),
            (100, Some(50.0), Some(90.0), Some(99.0), Some(100.0))
        );
        assert_eq!(p.mean, Some(50.5));
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
        assert_eq!(Percentiles::of(&mut [3.0]).p99, Some(3.0));
    }

    #[test]
    fn outcomes_add_up() {
        let mut o = Outcomes::default();
        for outcome in [
            Outcome::Ok,
            Outcome::Ok,
            Outcome::Timeout,
            Outcome::HttpError,
        ] {
            o.add(outcome);
        }
        assert_eq!((o.ok, o.errors(), o.total()), (2, 2, 4));
    }
}
