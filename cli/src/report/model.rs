//! The report's data model: the run record with what every chart needs
//! computed once (samples and events in time order, the end of the run,
//! the outcome), so that the drawing code only reads.

use weir_controller::local::record::{RecordedEvent, RunRecord, Sample};

use super::palette::{BAD, GOOD, UNDECIDED};
use super::scale::TimeAxis;

pub(super) fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

/// The record with what every chart needs computed once.
pub(super) struct RunView<'a> {
    pub(super) record: &'a RunRecord,
    /// Samples with a finite time, in time order.
    pub(super) samples: Vec<&'a Sample>,
    /// Events with a finite time, in time order, with their number in the
    /// events table.
    pub(super) events: Vec<(usize, &'a RecordedEvent)>,
    /// Seconds from the start to the last thing recorded.
    pub(super) end: f64,
}

impl<'a> RunView<'a> {
    pub(super) fn new(record: &'a RunRecord) -> Self {
        let mut samples: Vec<&Sample> = record.samples.iter().filter(|s| s.t.is_finite()).collect();
        samples.sort_by(|a, b| a.t.total_cmp(&b.t));
        let mut events: Vec<(usize, &RecordedEvent)> = record
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| (i + 1, e))
            .filter(|(_, e)| e.t.is_finite())
            .collect();
        events.sort_by(|a, b| a.1.t.total_cmp(&b.1.t));
        let end = samples
            .iter()
            .map(|s| s.t)
            .chain(events.iter().map(|(_, e)| e.t))
            .chain(record.outcome.iter().map(|o| o.t).filter(|t| t.is_finite()))
            .fold(0.0_f64, f64::max);
        Self {
            record,
            samples,
            events,
            end,
        }
    }

    pub(super) fn outcome_badge(&self) -> (&'static str, &'static str) {
        match &self.record.outcome {
            None => ("UNFINISHED", "neutral"),
            Some(o) => match o.exit_code {
                0 => ("PROMOTED", "ok"),
                3 => ("ABORTED", "bad"),
                4 => ("INCONCLUSIVE", "warn"),
                _ if o.phase.eq_ignore_ascii_case("aborted") => ("ABORTED", "bad"),
                _ if o.phase.eq_ignore_ascii_case("succeeded") => ("PROMOTED", "ok"),
                _ => ("ENDED", "warn"),
            },
        }
    }

    /// Where the run ended, for the marker on the time charts.
    pub(super) fn outcome_marker(&self) -> Option<(f64, &'static str, &'static str)> {
        let o = self.record.outcome.as_ref()?;
        if !o.t.is_finite() {
            return None;
        }
        let (label, tone) = self.outcome_badge();
        let color = match tone {
            "ok" => GOOD,
            "bad" => BAD,
            _ => UNDECIDED,
        };
        Some((o.t, label, color))
    }

    /// The x axis every time chart shares.
    pub(super) fn time_axis(&self) -> TimeAxis {
        TimeAxis::new(self.end)
    }

    /// Runs of one cohort's value, split where it is missing.
    pub(super) fn segments(&self, value: impl Fn(&Sample) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
        let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut current = Vec::new();
        for s in &self.samples {
            match finite(value(s)) {
                Some(v) => current.push((s.t, v)),
                None => {
                    if !current.is_empty() {
                        out.push(std::mem::take(&mut current));
                    }
                }
            }
        }
        if !current.is_empty() {
            out.push(current);
        }
        out
    }
}
