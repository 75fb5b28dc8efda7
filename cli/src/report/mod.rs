//! The HTML report of a run: one self-contained file that `weir run
//! --report` and `weir demo --report` write, and `weir report` writes from
//! a recorded run's JSON.
//!
//! Everything is inline (CSS in a `<style>` block, charts as SVG drawn
//! here), with no script, font or network fetch, so the file opens the
//! same offline, attached to a ticket, or years later.
//!
//! The parts: `model` (the record with what the charts need computed
//! once), `scale` (values to pixels, ticks, number formats), `svg` (the
//! drawing primitives and palette), `chart` (the charts), `decision` (the
//! verdict card) and `html` (the page, its styles and tables).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use weir_controller::local::record::RunRecord;
use weir_proxy::config::file::read_bounded_text;

use crate::exit::Code;

// Writing to a String cannot fail; this keeps the `fmt::Result`s out of
// the drawing code.
macro_rules! w {
    ($dst:expr, $($arg:tt)*) => {
        let _ = write!($dst, $($arg)*);
    };
}

mod chart;
mod decision;
mod html;
mod model;
mod palette;
mod scale;
mod svg;

use chart::{error_chart, gpu_chart, ttft_cdf_chart, ttft_time_chart, weights_chart};
use decision::decision_section;
use html::{CSS, esc, events_section, header, section};
use model::RunView;

/// Arguments of `weir report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A recorded run: the JSON that `weir run --record FILE` writes (a path or a pipe).
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// Where to write the HTML report.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: PathBuf,
}

/// Largest recorded run read: a sample is under 1 KiB, so a day sampled
/// every 2 s is about 40 MiB; past this the path is the wrong file (or
/// `/dev/zero`), refused before it fills memory.
const MAX_RECORD_BYTES: u64 = 256 << 20;

/// Reads a recorded run and writes its report.
pub fn run(args: &Args) -> Result<Code> {
    let text = read_bounded_text(&args.from, MAX_RECORD_BYTES, "any recorded run")
        .with_context(|| format!("cannot read {}", args.from.display()))?;
    let record: RunRecord = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a recorded run", args.from.display()))?;
    std::fs::write(&args.output, render(&record))
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(Code::Success)
}

/// The whole report.
pub fn render(record: &RunRecord) -> String {
    let run = RunView::new(record);
    let mut out = String::with_capacity(128 * 1024);
    let (badge, tone) = run.outcome_badge();
    w!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>weir · {} · {badge}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc(&record.name)
    );
    header(&mut out, &run, badge, tone);
    decision_section(&mut out, record);
    section(
        &mut out,
        "Traffic weights",
        "The canary's share of traffic over the run; the ribbon shows the phase, \
         the numbered markers the events listed below.",
        |out| weights_chart(out, &run),
    );
    section(
        &mut out,
        "Time to first token: distribution",
        "Cumulative distribution of TTFT over the whole run: a curve further right \
         is slower. Dashed lines mark the median and the 95th percentile.",
        |out| ttft_cdf_chart(out, record),
    );
    section(
        &mut out,
        "Time to first token over time",
        "Per analysis interval: p95 solid, p50 dashed. A cold canary's first requests \
         show as a fall; the WarmedUp event marks where its evidence began to count.",
        |out| ttft_time_chart(out, &run),
    );
    section(
        &mut out,
        "Error rate",
        "Failed fraction of requests per analysis interval.",
        |out| error_chart(out, &run),
    );
    section(
        &mut out,
        "GPU utilization",
        "Mean GPU utilization of each cohort's backends, as scraped from their metrics.",
        |out| gpu_chart(out, &run),
    );
    events_section(&mut out, &run);
    w!(
        out,
        "<footer>Written by weir {} from the run's record.</footer>\n</main>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    out
}

#[cfg(test)]
mod tests {
    use weir_analysis::decision::{Decision, Direction, Finding, Role};
    use weir_analysis::sequential::Sides;
    use weir_analysis::{MetricKind, MetricResult, Verdict};
    use weir_controller::local::record::{
        CohortSample, Cohorts, RecordedEvent, RecordedOutcome, Sample,
    };

    use super::*;

    fn effect(name: &str, est: f64, lo: f64, hi: f64, finding: Finding) -> MetricResult {
        MetricResult {
            name: name.into(),
            kind: MetricKind::Latency,
            test: "quantile-ratio".into(),
            statistic: None,
            p_value: None,
            estimate: Some(est),
            ci_low: Some(lo),
            ci_high: Some(hi),
            baseline_n: 1200,
            canary_n: 300,
            baseline_value: None,
            canary_value: None,
            margin: Some(0.1),
            direction: Some(Direction::Increase),
            relative: true,
            role: Role::Decision,
            finding,
            note: None,
        }
    }

    fn full() -> RunRecord {
        let samples = (0..30)
            .map(|i| {
                let t = f64::from(i) * 2.0;
                let cohort = |base: f64| CohortSample {
                    requests: 40,
                    rate: 20.0,
                    ttft_p50: Some(base),
                    ttft_p95: Some(base * 2.0),
                    error_rate: Some(0.01),
                    gpu_util: Some(60.0 + f64::from(i % 5)),
                };
                Sample {
                    t,
                    phase: "Progressing".into(),
                    step: "step 1/2: setWeight 20".into(),
                    canary_weight: if i < 10 { 10.0 } else { 50.0 },
                    cohorts: Cohorts {
                        stable: cohort(0.1),
                        canary: cohort(0.15),
                    },
                    verdict: None,
                    rule: None,
                    warmup: None,
                }
            })
            .collect();
        let cdf = |scale: f64| -> Vec<[f64; 2]> {
            (1..=100)
                .map(|i| [scale * (1.0 + f64::from(i) / 10.0), f64::from(i) / 100.0])
                .collect()
        };
        RunRecord {
            name: "chat-canary".into(),
            started_at: "2025-01-01T00:00:00Z".into(),
            steps: vec!["setWeight 10".into(), "setWeight 50".into()],
            metrics: vec!["ttft latency p50,p95 ≤ +10%".into()],
            samples,
            events: vec![RecordedEvent {
                t: 58.0,
                reason: "AnalysisFailed".into(),
                message: "ttft.p95 exceeds".into(),
                warning: true,
            }],
            ttft_cdf: Cohorts {
                stable: cdf(0.05),
                canary: cdf(0.08),
            },
            decision: Some(Decision {
                verdict: Verdict::Abort,
                rule: "ttft.p95 +50% beyond margin".into(),
                sides: Sides {
                    lower: 0.025,
                    upper: 0.05,
                },
                load: None,
                metrics: vec![
                    effect("ttft", 0.4, 0.3, 0.5, Finding::Exceeds),
                    effect("ttft.p95", 0.5, 0.2, f64::INFINITY, Finding::Exceeds),
                ],
            }),
            outcome: Some(RecordedOutcome {
                phase: "Aborted".into(),
                exit_code: 3,
                message: "aborted: ttft.p95 +50% beyond margin".into(),
                t: 58.0,
            }),
        }
    }

    /// Every attribute value in the document.
    fn attributes(html: &str) -> Vec<&str> {
        html.split("=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect()
    }

    #[test]
    fn escapes_every_string_from_the_record() {
        let mut r = full();
        r.name = "<b>name</b>".into();
        r.events[0].message = "<script>alert('x')</script>".into();
        r.events[0].reason = "R&D\"".into();
        r.metrics = vec!["<img src=x>".into()];
        if let Some(d) = r.decision.as_mut() {
            d.metrics[0].name = "<svg onload=x>".into();
        }
        let html = render(&r);
        assert!(!html.contains("<script>"), "script tag leaked");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(!html.contains("<b>name"));
        assert!(!html.contains("<img src=x>"));
        assert!(!html.contains("<svg onload"));
        assert!(html.contains("R&amp;D&quot;"));
    }

    #[test]
    fn degenerate_data_never_puts_nan_or_inf_in_the_output() {
        let mut r = full();
        for (i, s) in r.samples.iter_mut().enumerate() {
            s.cohorts.canary = CohortSample::default();
            s.cohorts.stable.ttft_p95 = Some(f64::NAN);
            s.cohorts.stable.error_rate = Some(f64::INFINITY);
            s.canary_weight = if i % 2 == 0 { f64::NAN } else { 50.0 };
            if i == 3 {
                s.t = f64::NAN;
            }
        }
        r.ttft_cdf.canary.clear();
        r.ttft_cdf.stable = vec![
            [f64::NAN, 0.5],
            [0.0, 0.0],
            [f64::INFINITY, 1.0],
            [0.2, 1.0],
        ];
        r.events[0].t = f64::NEG_INFINITY;
        if let Some(d) = r.decision.as_mut() {
            d.metrics[0].estimate = Some(f64::NAN);
            d.metrics[0].ci_low = Some(f64::NEG_INFINITY);
            d.metrics[0].margin = None;
            d.metrics[1].ci_low = None;
            d.metrics[1].ci_high = None;
            d.metrics[1].estimate = None;
        }
        let html = render(&r);
        assert!(!html.contains("NaN"), "NaN in output");
        for value in attributes(&html) {
            assert!(
                !value.contains("inf") && !value.contains("NaN"),
                "non-finite attribute value {value:?}"
            );
        }

        let empty = RunRecord {
            name: String::new(),
            started_at: String::new(),
            steps: vec![],
            metrics: vec![],
            samples: vec![],
            events: vec![],
            ttft_cdf: Cohorts::default(),
            decision: None,
            outcome: None,
        };
        let html = render(&empty);
        assert!(!html.contains("NaN"));
        assert!(html.contains("UNFINISHED"));
        assert!(!html.contains("<svg "), "no chart without data");
    }

    #[test]
    fn a_full_record_has_every_chart() {
        let html = render(&full());
        for id in [
            "chart-weights",
            "chart-ttft-cdf",
            "chart-ttft-time",
            "chart-errors",
            "chart-gpu",
            "chart-decision",
        ] {
            assert!(html.contains(&format!("<svg id=\"{id}\"")), "{id} missing");
        }
        assert!(!html.contains("class=\"note\""), "no fallback note");
        assert!(html.contains("ABORTED"));
        assert!(!html.contains("NaN"));
    }

    #[test]
    fn no_gpu_values_show_a_note_instead_of_a_chart() {
        let mut r = full();
        for s in &mut r.samples {
            s.cohorts.stable.gpu_util = None;
            s.cohorts.canary.gpu_util = None;
        }
        let html = render(&r);
        assert!(!html.contains("<svg id=\"chart-gpu\""));
        assert!(html.contains("id=\"chart-gpu-note\""));
        assert!(html.contains("No GPU metrics configured"));
    }
}
