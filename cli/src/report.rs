//! The HTML report of a run: one self-contained file that `weir run
//! --report` and `weir demo --report` write, and `weir report` writes from
//! a recorded run's JSON.
//!
//! Everything is inline (CSS in a `<style>` block, charts as SVG drawn
//! here), with no script, font or network fetch, so the file opens the
//! same offline, attached to a ticket, or years later.

use std::fmt::{self, Write as _};
use std::path::PathBuf;

use anyhow::{Context, Result};
use weir_analysis::MetricKind;
use weir_analysis::MetricResult;
use weir_analysis::decision::{Finding, Role};
use weir_controller::local::record::{RecordedEvent, RunRecord, Sample};

use crate::exit::Code;

/// Arguments of `weir report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A recorded run: the JSON that `weir run --output json --record FILE` writes.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// Where to write the HTML report.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: PathBuf,
}

/// Reads a recorded run and writes its report.
pub fn run(args: &Args) -> Result<Code> {
    let text = std::fs::read_to_string(&args.from)
        .with_context(|| format!("cannot read {}", args.from.display()))?;
    let record: RunRecord = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a recorded run", args.from.display()))?;
    std::fs::write(&args.output, render(&record))
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(Code::Success)
}

// Writing to a String cannot fail; this keeps the `fmt::Result`s out of
// the drawing code.
macro_rules! w {
    ($dst:expr, $($arg:tt)*) => {
        let _ = write!($dst, $($arg)*);
    };
}

/// Stable in blue, canary in orange: a pair that stays distinct for the
/// common colour-vision deficiencies.
const STABLE: &str = "#2166ac";
const CANARY: &str = "#e66101";
const BAD: &str = "#c62828";
const GOOD: &str = "#2e7d32";
const UNDECIDED: &str = "#9a6700";
const MUTED: &str = "#8c959f";

/// Width of every chart's coordinate system, in CSS pixels at 1:1.
const W: f64 = 900.0;
/// Left margin of every chart: room for tick labels like `600 ms` beside
/// the rotated axis title, and the same on every chart so that the time
/// axes line up down the page.
const LEFT: f64 = 84.0;

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
        "Per analysis interval: p95 solid, p50 dashed.",
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

const CSS: &str = r#"
*{box-sizing:border-box}
body{margin:0;background:#f3f5f8;color:#1f2630;font:14px/1.45 system-ui,-apple-system,"Segoe UI","Liberation Sans","DejaVu Sans",sans-serif}
main{max-width:1000px;margin:0 auto;padding:24px 20px 40px}
.card{background:#fff;border:1px solid #dce1e7;border-radius:8px;padding:18px 20px;margin:0 0 16px}
h1{font-size:26px;margin:0;line-height:1.2;word-break:break-word}
h2{font-size:17px;margin:0 0 2px}
h3{font-size:13px;margin:0 0 6px;text-transform:uppercase;letter-spacing:.04em;color:#57606a}
.eyebrow{font-size:12px;text-transform:uppercase;letter-spacing:.08em;color:#57606a}
.caption{margin:0 0 10px;color:#57606a;font-size:13px}
.title-row{display:flex;justify-content:space-between;align-items:flex-start;gap:16px}
.badge{display:inline-block;padding:5px 12px;border-radius:6px;font-weight:700;letter-spacing:.06em;color:#fff;white-space:nowrap}
.badge.bad,.tone-bad{background:#c62828}.badge.ok{background:#2e7d32}.badge.warn{background:#9a6700}.badge.neutral{background:#6e7781}
.verdict{margin:12px 0 0;padding:10px 12px;border-radius:6px;border-left:4px solid;font-weight:600}
.verdict.bad{background:#fdecea;border-color:#c62828;color:#8e1c1c}
.verdict.ok{background:#e8f5e9;border-color:#2e7d32;color:#1b5e20}
.verdict.warn{background:#fff8e1;border-color:#9a6700;color:#6b4700}
.verdict.neutral{background:#f3f5f8;border-color:#6e7781;color:#3d444d}
.rule{margin:6px 0 0;color:#3d444d}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin:16px 0 0}
.facts div{background:#f6f8fa;border-radius:6px;padding:8px 10px}
.facts dt{font-size:12px;color:#57606a}.facts dd{margin:0;font-size:16px;font-weight:600}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:20px;margin-top:16px}
.cols ol,.cols ul{margin:0;padding-left:20px}.cols li{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px}
.note{padding:28px;text-align:center;color:#57606a;background:#f6f8fa;border:1px dashed #c9d1d9;border-radius:6px}
svg.chart{display:block;max-width:100%;height:auto;margin-top:6px}
svg.chart text{font-family:system-ui,"Liberation Sans","DejaVu Sans",sans-serif;font-size:12px;fill:#57606a}
svg.chart .axis-title{font-size:12px;fill:#3d444d;font-weight:600}
svg.chart .grid{stroke:#e7ebf0;stroke-width:1}
svg.chart .axis{stroke:#8c959f;stroke-width:1}
svg.chart .label-strong{fill:#1f2630;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:13px}
th{text-align:left;font-weight:600;color:#57606a;border-bottom:2px solid #dce1e7;padding:6px 8px;white-space:nowrap}
td{border-bottom:1px solid #eef1f4;padding:6px 8px;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
tr.warning td{background:#fff5f5}tr.warning td:first-child{box-shadow:inset 3px 0 0 #c62828}
tr.reference td{color:#6e7781}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;white-space:nowrap}
.pill.exceeds{background:#fdecea;color:#b71c1c}.pill.within{background:#e8f5e9;color:#1b5e20}
.pill.undecided{background:#fff8e1;color:#6b4700}.pill.insufficient,.pill.none{background:#eef1f4;color:#57606a}
footer{color:#8c959f;font-size:12px;text-align:center;margin-top:20px}
"#;

/// Escapes text for HTML content and attribute values alike.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An SVG coordinate: one decimal, and never `NaN` or `inf` even if a
/// non-finite value slipped through the scales.
struct P(f64);

impl fmt::Display for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_finite() {
            write!(f, "{:.1}", self.0)
        } else {
            f.write_str("0")
        }
    }
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

/// The record with what every chart needs computed once.
struct RunView<'a> {
    record: &'a RunRecord,
    /// Samples with a finite time, in time order.
    samples: Vec<&'a Sample>,
    /// Events with a finite time, in time order, with their number in the
    /// events table.
    events: Vec<(usize, &'a RecordedEvent)>,
    /// Seconds from the start to the last thing recorded.
    end: f64,
}

impl<'a> RunView<'a> {
    fn new(record: &'a RunRecord) -> Self {
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

    fn outcome_badge(&self) -> (&'static str, &'static str) {
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
    fn outcome_marker(&self) -> Option<(f64, &'static str, &'static str)> {
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
    fn time_axis(&self) -> TimeAxis {
        TimeAxis::new(self.end)
    }

    /// Runs of one cohort's value, split where it is missing.
    fn segments(&self, value: impl Fn(&Sample) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
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

fn header(out: &mut String, run: &RunView<'_>, badge: &str, tone: &str) {
    let record = run.record;
    w!(
        out,
        "<header class=\"card\" id=\"summary\">\n<div class=\"title-row\"><div>\
         <div class=\"eyebrow\">weir canary report</div><h1>{}</h1></div>\
         <span class=\"badge {tone}\" id=\"outcome\">{badge}</span></div>\n",
        esc(&record.name)
    );
    if let Some(o) = &record.outcome {
        w!(out, "<p class=\"verdict {tone}\">{}</p>\n", esc(&o.message));
    }
    if let Some(d) = &record.decision {
        let already = record
            .outcome
            .as_ref()
            .is_some_and(|o| o.message.contains(&d.rule));
        if !already {
            w!(
                out,
                "<p class=\"rule\"><strong>Analysis verdict: {}.</strong> {}</p>\n",
                esc(&d.verdict.to_string()),
                esc(&d.rule)
            );
        }
    }
    out.push_str("<dl class=\"facts\">");
    let mut fact = |name: &str, value: String| {
        w!(out, "<div><dt>{name}</dt><dd>{value}</dd></div>");
    };
    fact("Started", esc(&record.started_at.replacen('T', " ", 1)));
    fact("Duration", fmt_duration(run.end));
    if let Some(last) = run.samples.last()
        && last.canary_weight.is_finite()
    {
        fact(
            "Final canary weight",
            format!("{}%", trim(last.canary_weight, 1)),
        );
    }
    let requests = |canary: bool| -> u64 {
        run.samples
            .iter()
            .map(|s| {
                if canary {
                    s.cohorts.canary.requests
                } else {
                    s.cohorts.stable.requests
                }
            })
            .fold(0_u64, u64::saturating_add)
    };
    fact(
        "Requests stable / canary",
        format!(
            "{} / {}",
            group_digits(requests(false)),
            group_digits(requests(true))
        ),
    );
    if let Some(o) = &record.outcome {
        fact("Exit code", format!("{} ({})", o.exit_code, esc(&o.phase)));
    }
    out.push_str("</dl>\n<div class=\"cols\"><div><h3>Steps</h3>");
    list(out, "ol", &record.steps, "no steps recorded");
    out.push_str("</div><div><h3>Metrics</h3>");
    list(out, "ul", &record.metrics, "no metrics recorded");
    out.push_str("</div></div>\n</header>\n");
}

fn list(out: &mut String, tag: &str, items: &[String], empty: &str) {
    if items.is_empty() {
        w!(out, "<p class=\"caption\">{empty}</p>");
        return;
    }
    w!(out, "<{tag}>");
    for item in items {
        w!(out, "<li>{}</li>", esc(item));
    }
    w!(out, "</{tag}>");
}

fn section(out: &mut String, title: &str, caption: &str, body: impl FnOnce(&mut String)) {
    w!(
        out,
        "<section class=\"card\">\n<h2>{title}</h2>\n<p class=\"caption\">{caption}</p>\n"
    );
    body(out);
    out.push_str("</section>\n");
}

fn note(out: &mut String, id: &str, text: &str) {
    w!(out, "<div class=\"note\" id=\"{id}\">{text}</div>\n");
}

// ---------------------------------------------------------------- scales

/// Maps data values to pixels, linearly or on a log scale.
#[derive(Debug, Clone, Copy)]
struct Scale {
    d0: f64,
    d1: f64,
    r0: f64,
    r1: f64,
    log: bool,
}

impl Scale {
    fn linear(d0: f64, d1: f64, r0: f64, r1: f64) -> Self {
        let (d0, d1) = sane_domain(d0, d1);
        Self {
            d0,
            d1,
            r0,
            r1,
            log: false,
        }
    }

    /// `d0` and `d1` must be positive; anything else falls back to linear.
    fn log(d0: f64, d1: f64, r0: f64, r1: f64) -> Self {
        if d0 > 0.0 && d1 > d0 && d1.is_finite() {
            Self {
                d0,
                d1,
                r0,
                r1,
                log: true,
            }
        } else {
            Self::linear(d0, d1, r0, r1)
        }
    }

    /// The pixel of `v`, clamped to the range; None for values that have
    /// no place on the axis (non-finite, or ≤ 0 on a log scale).
    fn map(&self, v: f64) -> Option<f64> {
        if !v.is_finite() {
            return None;
        }
        let (a, b, v) = if self.log {
            if v <= 0.0 {
                return None;
            }
            (self.d0.ln(), self.d1.ln(), v.ln())
        } else {
            (self.d0, self.d1, v)
        };
        let px = self.r0 + (v - a) / (b - a) * (self.r1 - self.r0);
        let (lo, hi) = (self.r0.min(self.r1), self.r0.max(self.r1));
        px.is_finite().then(|| px.clamp(lo, hi))
    }

    /// Like `map`, for values known to be in the domain (ticks, bounds).
    fn px(&self, v: f64) -> f64 {
        self.map(v).unwrap_or(self.r0)
    }
}

fn sane_domain(d0: f64, d1: f64) -> (f64, f64) {
    let d0 = if d0.is_finite() { d0 } else { 0.0 };
    let d1 = if d1.is_finite() { d1 } else { d0 + 1.0 };
    if d1 > d0 { (d0, d1) } else { (d0, d0 + 1.0) }
}

/// A step of 1, 2 or 5 times a power of ten giving about `target` steps
/// over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = span / target;
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10_f64.powf(raw.log10().floor());
    let f = raw / mag;
    let n = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    n * mag
}

/// Multiples of `step` within `[lo, hi]`.
fn ticks_by(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    if !(step > 0.0 && lo.is_finite() && hi.is_finite()) {
        return Vec::new();
    }
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last)
        .take(100)
        .map(|i| {
            let v = i as f64 * step;
            if v.abs() < step * 1e-9 { 0.0 } else { v }
        })
        .collect()
}

/// The smallest multiple of a nice step at or above `v`: the top of an axis.
fn nice_ceil(v: f64, target: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let step = nice_step(v, target);
    (v / step - 1e-9).ceil() * step
}

/// Decimals needed to tell apart ticks `step` apart.
fn decimals(step: f64) -> usize {
    if !(step.is_finite() && step > 0.0) || step >= 1.0 {
        0
    } else {
        (-step.log10().floor()).clamp(0.0, 9.0) as usize
    }
}

/// `v` with at most `max` decimals, without trailing zeros.
fn trim(v: f64, max: usize) -> String {
    let s = format!("{v:.max$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" { "0".into() } else { s }
}

/// Seconds in the unit that reads best: `250 ms`, `1.5 s`.
fn fmt_seconds(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1.0 {
        format!("{} s", trim(v, 3))
    } else if v.abs() >= 1e-3 {
        format!("{} ms", trim(v * 1e3, 2))
    } else {
        format!("{} µs", trim(v * 1e6, 1))
    }
}

fn fmt_duration(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        "—".into()
    } else if s < 60.0 {
        format!("{} s", trim(s, 1))
    } else {
        let total = s.round() as u64;
        let (h, m, sec) = (total / 3600, total / 60 % 60, total % 60);
        if h > 0 {
            format!("{h} h {m:02} min")
        } else {
            format!("{m} min {sec:02} s")
        }
    }
}

fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// Seconds since the start, on every time chart: ticks at round seconds
/// or minutes, labelled `m:ss` once the run is long enough for it.
struct TimeAxis {
    end: f64,
    step: f64,
    clock: bool,
}

impl TimeAxis {
    fn new(end: f64) -> Self {
        let end = if end.is_finite() && end > 0.0 {
            end
        } else {
            1.0
        };
        const STEPS: [f64; 16] = [
            0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
            1800.0, 3600.0,
        ];
        let step = STEPS
            .iter()
            .copied()
            .find(|s| end / s <= 10.0)
            .unwrap_or_else(|| nice_step(end, 8.0));
        Self {
            end,
            step,
            clock: end >= 120.0,
        }
    }

    fn scale(&self, f: &Frame) -> Scale {
        Scale::linear(0.0, self.end, f.left(), f.right())
    }

    fn ticks(&self) -> Vec<(f64, String)> {
        ticks_by(0.0, self.end, self.step)
            .into_iter()
            .map(|t| (t, self.label(t)))
            .collect()
    }

    fn label(&self, t: f64) -> String {
        if self.clock {
            let s = t.round() as i64;
            format!("{}:{:02}", s / 60, s % 60)
        } else {
            trim(t, 1)
        }
    }

    fn title(&self) -> &'static str {
        if self.clock {
            "time since start (m:ss)"
        } else {
            "time since start (s)"
        }
    }
}

// ---------------------------------------------------------------- drawing

/// A chart's size and the margins around its plot area.
struct Frame {
    h: f64,
    l: f64,
    r: f64,
    t: f64,
    b: f64,
}

impl Frame {
    fn left(&self) -> f64 {
        self.l
    }
    fn right(&self) -> f64 {
        W - self.r
    }
    fn top(&self) -> f64 {
        self.t
    }
    fn bottom(&self) -> f64 {
        self.h - self.b
    }
}

fn svg_open(out: &mut String, id: &str, title: &str, h: f64) {
    w!(
        out,
        "<svg id=\"{id}\" class=\"chart\" \
         viewBox=\"0 0 {W} {h}\" width=\"{W}\" height=\"{h}\" role=\"img\" \
         aria-labelledby=\"{id}-title\"><title id=\"{id}-title\">{}</title>\n",
        esc(title),
        h = P(h)
    );
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, class: &str, s: &str) {
    w!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" class=\"{class}\">{}</text>",
        P(x),
        P(y),
        esc(s)
    );
}

/// About how wide `s` is at 12 px: enough to keep labels apart.
fn text_width(s: &str) -> f64 {
    s.chars().count() as f64 * 6.8
}

/// Grid, axis lines, tick labels and axis titles.
fn axes(
    out: &mut String,
    f: &Frame,
    x: (&Scale, &[(f64, String)], &str),
    y: (&Scale, &[(f64, String)], &str),
) {
    out.push_str("<g class=\"axes\">");
    for (v, label) in y.1 {
        let py = y.0.px(*v);
        w!(
            out,
            "<line class=\"grid\" x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\"/>",
            P(f.left()),
            P(f.right()),
            P(py),
            P(py)
        );
        text(out, f.left() - 8.0, py + 4.0, "end", "tick", label);
    }
    for (v, label) in x.1 {
        let px = x.0.px(*v);
        w!(
            out,
            "<line class=\"axis\" x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\"/>",
            P(px),
            P(px),
            P(f.bottom()),
            P(f.bottom() + 5.0)
        );
        text(out, px, f.bottom() + 19.0, "middle", "tick", label);
    }
    w!(
        out,
        "<line class=\"axis\" x1=\"{l}\" x2=\"{l}\" y1=\"{t}\" y2=\"{b}\"/>\
         <line class=\"axis\" x1=\"{l}\" x2=\"{r}\" y1=\"{b}\" y2=\"{b}\"/>",
        l = P(f.left()),
        r = P(f.right()),
        t = P(f.top()),
        b = P(f.bottom())
    );
    text(
        out,
        (f.left() + f.right()) / 2.0,
        f.bottom() + 38.0,
        "middle",
        "axis-title",
        x.2,
    );
    let cy = (f.top() + f.bottom()) / 2.0;
    w!(
        out,
        "<text x=\"16\" y=\"{}\" text-anchor=\"middle\" class=\"axis-title\" \
         transform=\"rotate(-90 16 {})\">{}</text>",
        P(cy),
        P(cy),
        esc(y.2)
    );
    out.push_str("</g>\n");
}

/// A legend entry: a line (solid or dashed), or a filled swatch.
struct Key {
    label: String,
    color: &'static str,
    dash: bool,
    area: bool,
}

impl Key {
    fn line(label: impl Into<String>, color: &'static str, dash: bool) -> Self {
        Self {
            label: label.into(),
            color,
            dash,
            area: false,
        }
    }
}

/// Keys in a row, right-aligned to `right`, centred on `y`.
fn legend(out: &mut String, right: f64, y: f64, keys: &[Key]) {
    let widths: Vec<f64> = keys
        .iter()
        .map(|k| 22.0 + 6.0 + text_width(&k.label))
        .collect();
    let total: f64 = widths.iter().sum::<f64>() + 18.0 * keys.len().saturating_sub(1) as f64;
    let mut x = right - total;
    out.push_str("<g class=\"legend\">");
    for (key, width) in keys.iter().zip(widths) {
        if key.area {
            w!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"22\" height=\"10\" fill=\"{}\" \
                 fill-opacity=\"0.3\" stroke=\"{}\" stroke-width=\"1.5\"/>",
                P(x),
                P(y - 5.0),
                key.color,
                key.color
            );
        } else {
            w!(
                out,
                "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2.5\"{}/>",
                P(x),
                P(x + 22.0),
                P(y),
                P(y),
                key.color,
                if key.dash {
                    " stroke-dasharray=\"5 3\""
                } else {
                    ""
                }
            );
        }
        text(out, x + 28.0, y + 4.0, "start", "label-strong", &key.label);
        x += width + 18.0;
    }
    out.push_str("</g>\n");
}

/// A polyline through pixel points, as path data.
fn path_data(points: impl IntoIterator<Item = (f64, f64)>) -> String {
    let mut d = String::new();
    for (i, (x, y)) in points.into_iter().enumerate() {
        w!(d, "{}{},{}", if i == 0 { "M" } else { " L" }, P(x), P(y));
    }
    d
}

/// One series' runs as lines, with dots where a run is a single point
/// (otherwise it would not show at all).
fn draw_series(
    out: &mut String,
    xs: &Scale,
    ys: &Scale,
    segments: &[Vec<(f64, f64)>],
    color: &str,
    dash: bool,
    class: &str,
) {
    w!(out, "<g class=\"series {class}\">");
    for seg in segments {
        let pts: Vec<(f64, f64)> = seg
            .iter()
            .filter_map(|&(x, y)| Some((xs.map(x)?, ys.map(y)?)))
            .collect();
        match pts.as_slice() {
            [] => {}
            [(x, y)] => {
                w!(
                    out,
                    "<circle cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{color}\"/>",
                    P(*x),
                    P(*y)
                );
            }
            _ => {
                w!(
                    out,
                    "<path d=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"{}\" \
                     stroke-linejoin=\"round\" stroke-linecap=\"round\"{}/>",
                    path_data(pts),
                    if dash { "1.75" } else { "2.25" },
                    if dash {
                        " stroke-dasharray=\"6 4\""
                    } else {
                        ""
                    }
                );
            }
        }
    }
    out.push_str("</g>\n");
}

/// Vertical lines where events happened (red for warnings) and where the
/// run ended, so the time charts line up with the events table.
fn event_lines(out: &mut String, run: &RunView<'_>, f: &Frame, xs: &Scale) {
    out.push_str("<g class=\"events\">");
    for (_, e) in &run.events {
        if let Some(x) = xs.map(e.t) {
            w!(
                out,
                "<line x1=\"{x}\" x2=\"{x}\" y1=\"{}\" y2=\"{}\" stroke=\"{}\" \
                 stroke-opacity=\"0.55\" stroke-dasharray=\"3 3\"/>",
                P(f.top()),
                P(f.bottom()),
                if e.warning { BAD } else { MUTED },
                x = P(x)
            );
        }
    }
    if let Some((t, _, color)) = run.outcome_marker()
        && let Some(x) = xs.map(t)
    {
        w!(
            out,
            "<line x1=\"{x}\" x2=\"{x}\" y1=\"{}\" y2=\"{}\" stroke=\"{color}\" stroke-width=\"2\"/>",
            P(f.top()),
            P(f.bottom()),
            x = P(x)
        );
    }
    out.push_str("</g>\n");
}

// ---------------------------------------------------------------- charts

fn weights_chart(out: &mut String, run: &RunView<'_>) {
    if run.samples.is_empty() {
        note(out, "chart-weights-note", "No samples were recorded.");
        return;
    }
    let axis = run.time_axis();
    // The x scale depends only on the side margins, so the event labels can
    // be laid out before the top margin (which holds them) is known.
    let (l, r) = (LEFT, 28.0);
    let xs = Scale::linear(0.0, axis.end, l, W - r);
    let labels = place_event_labels(run, &xs, l, W - r);
    let rows = labels.iter().map(|p| p.row + 1).max().unwrap_or(0) as f64;
    const ROW: f64 = 16.0;
    const RIBBON: f64 = 18.0;
    let label_top = 34.0;
    let ribbon_top = label_top + rows * ROW + 4.0;
    let f = Frame {
        h: ribbon_top + RIBBON + 4.0 + 220.0 + 48.0,
        l,
        r,
        t: ribbon_top + RIBBON + 4.0,
        b: 48.0,
    };
    let ys = Scale::linear(0.0, 100.0, f.bottom(), f.top());
    svg_open(
        out,
        "chart-weights",
        "Canary weight over time, with phases and events",
        f.h,
    );
    legend(
        out,
        f.right(),
        14.0,
        &[
            Key {
                label: "canary %".into(),
                color: CANARY,
                dash: false,
                area: true,
            },
            Key::line("stable %", STABLE, true),
        ],
    );

    // Phase ribbon: consecutive samples in the same phase form one band.
    let mut bands: Vec<(f64, f64, &str)> = Vec::new();
    for s in &run.samples {
        match bands.last_mut() {
            Some(last) if last.2 == s.phase => {}
            _ => {
                if let Some(last) = bands.last_mut() {
                    last.1 = s.t;
                }
                bands.push((s.t, axis.end, &s.phase));
            }
        }
    }
    out.push_str("<g class=\"phases\">");
    for (i, (t0, t1, phase)) in bands.iter().enumerate() {
        let x0 = xs.px(*t0);
        let x1 = xs.px(*t1).max(x0 + 1.0);
        let (fill, ink) = phase_colors(phase, i);
        w!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{RIBBON}\" fill=\"{fill}\"/>",
            P(x0),
            P(ribbon_top),
            P(x1 - x0)
        );
        if ink.is_some() {
            // Terminal phases also tint the plot behind the data.
            w!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\" fill-opacity=\"0.45\"/>",
                P(x0),
                P(f.top()),
                P(x1 - x0),
                P(f.bottom() - f.top())
            );
        }
        if text_width(phase) + 10.0 <= x1 - x0 {
            w!(
                out,
                "<text x=\"{}\" y=\"{}\" class=\"phase\" style=\"font-size:11px;fill:{}\">{}</text>",
                P(x0 + 5.0),
                P(ribbon_top + 13.0),
                ink.unwrap_or("#3d444d"),
                esc(phase)
            );
        }
    }
    out.push_str("</g>\n");

    let yticks: Vec<(f64, String)> = [0.0, 25.0, 50.0, 75.0, 100.0]
        .into_iter()
        .map(|v| (v, format!("{v}%")))
        .collect();
    let xticks = axis.ticks();
    axes(
        out,
        &f,
        (&xs, &xticks, axis.title()),
        (&ys, &yticks, "share of traffic"),
    );

    // Weights hold until the next sample: a step line, not a ramp.
    let mut steps: Vec<(f64, f64)> = Vec::new();
    for s in &run.samples {
        if !s.canary_weight.is_finite() {
            continue;
        }
        let w = s.canary_weight.clamp(0.0, 100.0);
        if let Some(&(_, prev)) = steps.last() {
            steps.push((s.t, prev));
        }
        steps.push((s.t, w));
    }
    if let Some(&(_, last)) = steps.last() {
        steps.push((axis.end, last));
    }
    let canary: Vec<(f64, f64)> = steps.iter().map(|&(t, v)| (xs.px(t), ys.px(v))).collect();
    if let (Some(first), Some(last)) = (canary.first(), canary.last()) {
        let base = ys.px(0.0);
        w!(
            out,
            "<path class=\"series canary-area\" d=\"{} L{},{} L{},{} Z\" fill=\"{CANARY}\" fill-opacity=\"0.22\"/>",
            path_data(canary.iter().copied()),
            P(last.0),
            P(base),
            P(first.0),
            P(base)
        );
        w!(
            out,
            "<path class=\"series canary\" d=\"{}\" fill=\"none\" stroke=\"{CANARY}\" stroke-width=\"2.5\"/>",
            path_data(canary.iter().copied())
        );
        let stable = steps.iter().map(|&(t, v)| (xs.px(t), ys.px(100.0 - v)));
        w!(
            out,
            "<path class=\"series stable\" d=\"{}\" fill=\"none\" stroke=\"{STABLE}\" \
             stroke-width=\"2\" stroke-dasharray=\"6 4\"/>",
            path_data(stable)
        );
    }

    event_lines(out, run, &f, &xs);
    // Leaders start below the last row of labels so they never cross one.
    let leader_top = label_top + rows * ROW + 2.0;
    for p in &labels {
        let y = label_top + p.row as f64 * ROW + 11.0;
        w!(
            out,
            "<line x1=\"{x}\" x2=\"{x}\" y1=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-opacity=\"0.45\" stroke-dasharray=\"1 2\"/>",
            P(leader_top),
            P(f.top()),
            p.color,
            x = P(p.x)
        );
        w!(
            out,
            "<text x=\"{}\" y=\"{}\" style=\"fill:{};font-size:11.5px;font-weight:600\">{}</text>",
            P(p.left),
            P(y),
            p.color,
            esc(&p.text)
        );
    }
    out.push_str("</svg>\n");
}

/// Band colour of a phase, and for terminal phases the ink that marks them.
fn phase_colors(phase: &str, index: usize) -> (&'static str, Option<&'static str>) {
    let p = phase.to_ascii_lowercase();
    if p.contains("abort") || p.contains("fail") || p.contains("rollback") {
        ("#fbdada", Some("#8e1c1c"))
    } else if p.contains("succeed") || p.contains("promot") {
        ("#d7eedb", Some("#1b5e20"))
    } else if index.is_multiple_of(2) {
        ("#e9eef4", None)
    } else {
        ("#f4f6f9", None)
    }
}

struct Placed {
    x: f64,
    left: f64,
    row: usize,
    text: String,
    color: &'static str,
}

/// Event labels above the weights chart, each in the first of a few rows
/// where it does not overlap the one before; when none has room the label
/// shrinks to its number, which the events table explains.
fn place_event_labels(run: &RunView<'_>, xs: &Scale, left: f64, right: f64) -> Vec<Placed> {
    const ROWS: usize = 4;
    let mut ends = [f64::NEG_INFINITY; ROWS];
    let mut out = Vec::new();
    let mut marks: Vec<(f64, String, String, &'static str)> = run
        .events
        .iter()
        .map(|(n, e)| {
            (
                e.t,
                format!("{n} {}", e.reason),
                n.to_string(),
                if e.warning { BAD } else { "#3d444d" },
            )
        })
        .collect();
    if let Some((t, label, color)) = run.outcome_marker() {
        marks.push((t, label.to_string(), label.to_string(), color));
    }
    marks.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (t, long, short, color) in marks {
        let Some(x) = xs.map(t) else { continue };
        let placed = [long, short].into_iter().find_map(|text| {
            let width = text_width(&text);
            let start = (x - width / 2.0).clamp(left - 40.0, (right - width).max(left - 40.0));
            let row = (0..ROWS).find(|&r| start >= ends[r] + 6.0)?;
            Some((row, start, width, text))
        });
        if let Some((row, start, width, text)) = placed {
            ends[row] = start + width;
            out.push(Placed {
                x,
                left: start,
                row,
                text,
                color,
            });
        }
    }
    out
}

/// The x axis of the TTFT distribution. Log when the observations span
/// more than about a decade: latency is right-skewed, and on a log axis
/// the bulk and the tail are both readable and a relative regression (how
/// the margins are written) is the same horizontal shift wherever it
/// happens. Over a narrow range a log axis would have too few ticks to
/// read, so it stays linear.
fn ttft_x_scale(lo: f64, hi: f64, left: f64, right: f64) -> (Scale, Vec<(f64, String)>, bool) {
    if lo > 0.0 && hi / lo >= 8.0 {
        let d0 = floor_125(lo);
        let d1 = ceil_125(hi);
        let decades = (d1 / d0).log10();
        let mantissas: &[f64] = if decades > 4.5 {
            &[1.0]
        } else {
            &[1.0, 2.0, 5.0]
        };
        let mut ticks = Vec::new();
        let mut exp = d0.log10().floor() as i32;
        while ticks.len() < 60 {
            let base = 10_f64.powi(exp);
            if base > d1 * 1.0001 {
                break;
            }
            for m in mantissas {
                let v = m * base;
                if v >= d0 * 0.9999 && v <= d1 * 1.0001 {
                    ticks.push((v, fmt_seconds(v)));
                }
            }
            exp += 1;
        }
        (Scale::log(d0, d1, left, right), ticks, true)
    } else {
        let lo = if lo.is_finite() { lo.min(0.0) } else { 0.0 };
        let top = nice_ceil(hi, 8.0);
        let step = nice_step(top - lo, 8.0);
        let ticks = ticks_by(lo, top, step)
            .into_iter()
            .map(|v| (v, fmt_seconds(v)))
            .collect();
        (Scale::linear(lo, top, left, right), ticks, false)
    }
}

/// The largest value of the form {1, 2, 5} × 10ᵏ at or below `v` (> 0).
fn floor_125(v: f64) -> f64 {
    let base = 10_f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * base)
        .find(|&c| c <= v * 1.000_001)
        .unwrap_or(base)
}

/// The smallest value of the form {1, 2, 5} × 10ᵏ at or above `v` (> 0).
fn ceil_125(v: f64) -> f64 {
    let base = 10_f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * base)
        .find(|&c| c >= v * 0.999_999)
        .unwrap_or(10.0 * base)
}

fn ttft_cdf_chart(out: &mut String, record: &RunRecord) {
    let clean = |points: &[[f64; 2]]| -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = points
            .iter()
            .filter(|[x, y]| x.is_finite() && y.is_finite() && *x >= 0.0)
            .map(|[x, y]| (*x, y.clamp(0.0, 1.0)))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        v
    };
    let stable = clean(&record.ttft_cdf.stable);
    let canary = clean(&record.ttft_cdf.canary);
    let xs_all = || stable.iter().chain(&canary).map(|p| p.0);
    let Some(hi) = xs_all().reduce(f64::max) else {
        note(
            out,
            "chart-ttft-cdf-note",
            "No TTFT observations were recorded for either cohort.",
        );
        return;
    };
    let lo = xs_all()
        .filter(|&x| x > 0.0)
        .reduce(f64::min)
        .unwrap_or(0.0);
    let f = Frame {
        h: 340.0,
        l: LEFT,
        r: 28.0,
        t: 34.0,
        b: 48.0,
    };
    let (xs, xticks, log) = ttft_x_scale(lo, hi, f.left(), f.right());
    let ys = Scale::linear(0.0, 1.0, f.bottom(), f.top());
    let yticks: Vec<(f64, String)> = [0.0, 0.25, 0.5, 0.75, 1.0]
        .into_iter()
        .map(|v| (v, format!("{}%", v * 100.0)))
        .collect();
    svg_open(
        out,
        "chart-ttft-cdf",
        "TTFT distribution per cohort (cumulative)",
        f.h,
    );
    let mut keys = Vec::new();
    for (name, color, pts) in [("stable", STABLE, &stable), ("canary", CANARY, &canary)] {
        let label = if pts.is_empty() {
            format!("{name} (no data)")
        } else {
            name.to_string()
        };
        keys.push(Key::line(label, color, false));
    }
    legend(out, f.right(), 14.0, &keys);
    let title = if log {
        "time to first token (log scale)"
    } else {
        "time to first token"
    };
    axes(
        out,
        &f,
        (&xs, &xticks, title),
        (&ys, &yticks, "fraction of requests ≤ x"),
    );
    for (q, label) in [(0.5, "p50"), (0.95, "p95")] {
        let y = ys.px(q);
        w!(
            out,
            "<line x1=\"{}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#57606a\" stroke-dasharray=\"2 4\"/>",
            P(f.left()),
            P(f.right()),
            y = P(y)
        );
        text(out, f.left() + 6.0, y - 5.0, "start", "tick", label);
    }
    for (pts, color, class) in [(&stable, STABLE, "stable"), (&canary, CANARY, "canary")] {
        draw_series(
            out,
            &xs,
            &ys,
            std::slice::from_ref(pts),
            color,
            false,
            class,
        );
    }
    out.push_str("</svg>\n");
}

/// Runs of `(seconds, value)` points, split where a value is missing.
type Runs = Vec<Vec<(f64, f64)>>;

/// The options of a chart of per-interval values over time.
struct TimeChart<'a> {
    id: &'a str,
    title: &'a str,
    y_title: &'a str,
    unit: Unit,
    /// The y axis reaches at least this, so a flat line at zero does not
    /// fill the plot with noise-sized ticks.
    min_top: f64,
    /// Each line's legend key, its runs of points and its CSS class.
    lines: Vec<(Key, Runs, &'a str)>,
}

#[derive(Debug, Clone, Copy)]
enum Unit {
    /// A fraction shown in percent.
    Fraction,
    /// Already in percent.
    Percent,
    Seconds,
}

impl Unit {
    fn label(self, v: f64, step: f64) -> String {
        match self {
            Unit::Fraction => format!("{:.*}%", decimals(step * 100.0), v * 100.0),
            Unit::Percent => format!("{:.*}%", decimals(step), v),
            Unit::Seconds => fmt_seconds(v),
        }
    }
}

fn time_chart(out: &mut String, run: &RunView<'_>, chart: TimeChart<'_>) {
    let f = Frame {
        h: 300.0,
        l: LEFT,
        r: 28.0,
        t: 34.0,
        b: 48.0,
    };
    let axis = run.time_axis();
    let xs = axis.scale(&f);
    let max = chart
        .lines
        .iter()
        .flat_map(|(_, segs, _)| segs.iter().flatten())
        .map(|p| p.1)
        .fold(0.0_f64, f64::max);
    let top = nice_ceil(max.max(chart.min_top), 5.0);
    let step = nice_step(top, 5.0);
    let ys = Scale::linear(0.0, top, f.bottom(), f.top());
    let yticks: Vec<(f64, String)> = ticks_by(0.0, top, step)
        .into_iter()
        .map(|v| (v, chart.unit.label(v, step)))
        .collect();
    let xticks = axis.ticks();
    svg_open(out, chart.id, chart.title, f.h);
    axes(
        out,
        &f,
        (&xs, &xticks, axis.title()),
        (&ys, &yticks, chart.y_title),
    );
    event_lines(out, run, &f, &xs);
    let mut keys = Vec::new();
    for (key, segs, class) in chart.lines {
        draw_series(out, &xs, &ys, &segs, key.color, key.dash, class);
        keys.push(key);
    }
    legend(out, f.right(), 14.0, &keys);
    out.push_str("</svg>\n");
}

fn ttft_time_chart(out: &mut String, run: &RunView<'_>) {
    let lines = vec![
        (
            Key::line("stable p95", STABLE, false),
            run.segments(|s| s.cohorts.stable.ttft_p95),
            "stable",
        ),
        (
            Key::line("canary p95", CANARY, false),
            run.segments(|s| s.cohorts.canary.ttft_p95),
            "canary",
        ),
        (
            Key::line("stable p50", STABLE, true),
            run.segments(|s| s.cohorts.stable.ttft_p50),
            "stable",
        ),
        (
            Key::line("canary p50", CANARY, true),
            run.segments(|s| s.cohorts.canary.ttft_p50),
            "canary",
        ),
    ];
    if lines.iter().all(|(_, segs, _)| segs.is_empty()) {
        note(
            out,
            "chart-ttft-time-note",
            "No TTFT percentiles were recorded.",
        );
        return;
    }
    time_chart(
        out,
        run,
        TimeChart {
            id: "chart-ttft-time",
            title: "TTFT percentiles per cohort over time",
            y_title: "time to first token",
            unit: Unit::Seconds,
            min_top: 0.01,
            lines,
        },
    );
}

fn error_chart(out: &mut String, run: &RunView<'_>) {
    let lines = vec![
        (
            Key::line("stable", STABLE, false),
            run.segments(|s| s.cohorts.stable.error_rate),
            "stable",
        ),
        (
            Key::line("canary", CANARY, false),
            run.segments(|s| s.cohorts.canary.error_rate),
            "canary",
        ),
    ];
    if lines.iter().all(|(_, segs, _)| segs.is_empty()) {
        note(
            out,
            "chart-errors-note",
            "No error rates were recorded (no requests completed).",
        );
        return;
    }
    time_chart(
        out,
        run,
        TimeChart {
            id: "chart-errors",
            title: "Error rate per cohort over time",
            y_title: "failed requests",
            unit: Unit::Fraction,
            min_top: 0.01,
            lines,
        },
    );
}

fn gpu_chart(out: &mut String, run: &RunView<'_>) {
    let lines = vec![
        (
            Key::line("stable", STABLE, false),
            run.segments(|s| s.cohorts.stable.gpu_util),
            "stable",
        ),
        (
            Key::line("canary", CANARY, false),
            run.segments(|s| s.cohorts.canary.gpu_util),
            "canary",
        ),
    ];
    if lines.iter().all(|(_, segs, _)| segs.is_empty()) {
        note(
            out,
            "chart-gpu-note",
            "No GPU metrics configured: the backends' GPU utilization was not scraped in this run.",
        );
        return;
    }
    time_chart(
        out,
        run,
        TimeChart {
            id: "chart-gpu",
            title: "GPU utilization per cohort over time",
            y_title: "GPU utilization",
            unit: Unit::Percent,
            min_top: 100.0,
            lines,
        },
    );
}

// ---------------------------------------------------------------- decision

/// An effect's value as the analysis states it (see `MetricResult::describe`).
fn fmt_effect(m: &MetricResult, v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v.is_nan() => "—".into(),
        Some(v) if v.is_infinite() => if v > 0.0 { "+∞" } else { "−∞" }.into(),
        Some(v) if m.role == Role::Guard => format!("{:.2}%", v * 100.0),
        Some(v) if m.relative => format!("{:+.1}%", v * 100.0),
        Some(v) if m.kind == MetricKind::ErrorRate => format!("{:+.2}pp", v * 100.0),
        Some(v) => format!("{v:+.4}"),
    }
}

fn finding_name(f: Finding) -> &'static str {
    match f {
        Finding::Within => "within",
        Finding::Exceeds => "exceeds",
        Finding::Undecided => "undecided",
        Finding::Insufficient => "insufficient",
        Finding::None => "none",
    }
}

fn finding_color(f: Finding) -> &'static str {
    match f {
        Finding::Within => GOOD,
        Finding::Exceeds => BAD,
        Finding::Undecided => UNDECIDED,
        Finding::Insufficient | Finding::None => MUTED,
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Decision => "decision",
        Role::Guard => "guard",
        Role::Reference => "reference",
    }
}

fn decision_section(out: &mut String, record: &RunRecord) {
    out.push_str("<section class=\"card\" id=\"decision\">\n<h2>Decision</h2>\n");
    let Some(d) = &record.decision else {
        out.push_str("<p class=\"caption\">The run recorded no analysis.</p>\n");
        note(
            out,
            "chart-decision-note",
            "No decision was recorded for this run.",
        );
        out.push_str("</section>\n");
        return;
    };
    // The rule itself is in the header already.
    w!(
        out,
        "<p class=\"caption\">Verdict <strong>{}</strong>. Each effect's interval (anytime-valid, so it holds however often the \
         run looked) against its margin: entirely above the margin aborts, every \
         decision effect entirely below promotes. Each row has its own scale.</p>\n",
        esc(&d.verdict.to_string())
    );
    forest_plot(out, &d.metrics);
    out.push_str(
        "<table class=\"effects\"><thead><tr><th>effect</th><th>role</th><th>finding</th>\
         <th class=\"num\">estimate</th><th class=\"num\">interval</th><th class=\"num\">margin</th>\
         <th class=\"num\">n stable</th><th class=\"num\">n canary</th><th>test</th></tr></thead><tbody>\n",
    );
    for m in &d.metrics {
        let interval = if m.ci_low.is_some() || m.ci_high.is_some() {
            format!(
                "[{}, {}]",
                fmt_effect(m, m.ci_low),
                fmt_effect(m, m.ci_high)
            )
        } else {
            "—".into()
        };
        let margin = match (m.role, finite(m.margin)) {
            (_, None) => "—".to_string(),
            (Role::Guard, v) => format!("limit {}", fmt_effect(m, v)),
            (_, v) => fmt_effect(m, v),
        };
        let finding = finding_name(m.finding);
        let note = m
            .note
            .as_deref()
            .map(|n| format!("<br><small>{}</small>", esc(n)))
            .unwrap_or_default();
        w!(
            out,
            "<tr class=\"{}\"><td class=\"mono\">{}{note}</td><td>{}</td>\
             <td><span class=\"pill {finding}\">{finding}</span></td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"mono\">{}</td></tr>\n",
            role_name(m.role),
            esc(&m.name),
            role_name(m.role),
            esc(&fmt_effect(m, m.estimate)),
            esc(&interval),
            esc(&margin),
            group_digits(m.baseline_n),
            group_digits(m.canary_n),
            esc(&m.test)
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
}

/// One row per deciding effect: its interval as a bar, the estimate as a
/// dot, zero and the margin as vertical lines. Effects are in different
/// units (relative shifts, percentage points, gauge units), so a shared
/// axis would mislead; each row gets its own scale spanning zero, the
/// margin and the interval.
fn forest_plot(out: &mut String, metrics: &[MetricResult]) {
    let rows: Vec<&MetricResult> = metrics
        .iter()
        .filter(|m| m.role != Role::Reference)
        .collect();
    if rows.is_empty() {
        note(
            out,
            "chart-decision-note",
            "The decision has no effects to plot.",
        );
        return;
    }
    const ROW: f64 = 50.0;
    const TOP: f64 = 30.0;
    let (plot_l, plot_r) = (220.0, 640.0);
    let h = TOP + ROW * rows.len() as f64 + 34.0;
    svg_open(
        out,
        "chart-decision",
        "Decision: each effect's interval against its margin",
        h,
    );
    text(out, 12.0, 18.0, "start", "axis-title", "effect");
    text(
        out,
        (plot_l + plot_r) / 2.0,
        18.0,
        "middle",
        "axis-title",
        "interval vs margin",
    );
    text(
        out,
        660.0,
        18.0,
        "start",
        "axis-title",
        "estimate [interval]",
    );
    for (i, m) in rows.iter().enumerate() {
        let y0 = TOP + ROW * i as f64;
        let cy = y0 + 22.0;
        if i.is_multiple_of(2) {
            w!(
                out,
                "<rect x=\"0\" y=\"{}\" width=\"{W}\" height=\"{ROW}\" fill=\"#f6f8fa\"/>",
                P(y0)
            );
        }
        let color = finding_color(m.finding);
        text(out, 12.0, cy - 2.0, "start", "label-strong", &m.name);
        w!(
            out,
            "<text x=\"12\" y=\"{}\" style=\"font-size:11px;fill:{color}\">{} · {}</text>",
            P(cy + 13.0),
            role_name(m.role),
            finding_name(m.finding)
        );
        let summary = format!(
            "{} [{}, {}]",
            fmt_effect(m, m.estimate),
            fmt_effect(m, m.ci_low),
            fmt_effect(m, m.ci_high)
        );
        text(out, 660.0, cy - 2.0, "start", "label-strong", &summary);
        let what = if m.role == Role::Guard {
            "limit"
        } else {
            "margin"
        };
        if finite(m.margin).is_some() {
            text(
                out,
                660.0,
                cy + 13.0,
                "start",
                "tick",
                &format!("{what} {}", fmt_effect(m, m.margin)),
            );
        }

        let values: Vec<f64> = [Some(0.0), m.margin, m.ci_low, m.ci_high, m.estimate]
            .into_iter()
            .filter_map(finite)
            .collect();
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let span = if hi > lo { hi - lo } else { lo.abs().max(1e-3) };
        let xs = Scale::linear(lo - span * 0.08, hi + span * 0.08, plot_l, plot_r);
        w!(
            out,
            "<line class=\"grid\" x1=\"{}\" x2=\"{}\" y1=\"{cy}\" y2=\"{cy}\"/>",
            P(plot_l),
            P(plot_r),
            cy = P(cy)
        );
        let zero = xs.px(0.0);
        w!(
            out,
            "<line x1=\"{x}\" x2=\"{x}\" y1=\"{}\" y2=\"{}\" stroke=\"#8c959f\"/>",
            P(cy - 12.0),
            P(cy + 12.0),
            x = P(zero)
        );
        text(out, zero, cy + 24.0, "middle", "tick", "0");
        if let Some(margin) = finite(m.margin) {
            let x = xs.px(margin);
            w!(
                out,
                "<line x1=\"{x}\" x2=\"{x}\" y1=\"{}\" y2=\"{}\" stroke=\"{BAD}\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/>",
                P(cy - 14.0),
                P(cy + 14.0),
                x = P(x)
            );
            text(out, x, cy - 17.0, "middle", "tick", what);
        }
        // An end at ±∞ (too little data on that side) runs to the edge
        // and ends in an arrow.
        let end = |v: Option<f64>, edge: f64| match v {
            Some(v) if v.is_infinite() => Some((edge, true)),
            v => finite(v).map(|v| (xs.px(v), false)),
        };
        let low = end(m.ci_low, plot_l);
        let high = end(m.ci_high, plot_r);
        if let (Some((x0, open0)), Some((x1, open1))) = (low, high) {
            w!(
                out,
                "<rect class=\"interval\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"8\" rx=\"3\" fill=\"{color}\" fill-opacity=\"0.8\"/>",
                P(x0),
                P(cy - 4.0),
                P((x1 - x0).max(2.0))
            );
            for (x, open, dir) in [(x0, open0, -1.0), (x1, open1, 1.0)] {
                if open {
                    w!(
                        out,
                        "<path d=\"M{},{} L{},{} L{},{} Z\" fill=\"{color}\"/>",
                        P(x + dir * 8.0),
                        P(cy),
                        P(x),
                        P(cy - 7.0),
                        P(x),
                        P(cy + 7.0)
                    );
                }
            }
        }
        if let Some(est) = finite(m.estimate) {
            w!(
                out,
                "<circle cx=\"{}\" cy=\"{}\" r=\"5.5\" fill=\"#fff\" stroke=\"{color}\" stroke-width=\"2.5\"/>",
                P(xs.px(est)),
                P(cy)
            );
        } else if low.is_none() && high.is_none() {
            text(
                out,
                (plot_l + plot_r) / 2.0,
                cy + 4.0,
                "middle",
                "tick",
                "not enough data yet",
            );
        }
    }
    // Legend of the marks.
    let y = TOP + ROW * rows.len() as f64 + 20.0;
    let mut x = plot_l;
    w!(
        out,
        "<rect x=\"{}\" y=\"{}\" width=\"24\" height=\"8\" rx=\"3\" fill=\"{MUTED}\"/>",
        P(x),
        P(y - 4.0)
    );
    text(out, x + 30.0, y + 4.0, "start", "tick", "interval");
    x += 100.0;
    w!(
        out,
        "<circle cx=\"{}\" cy=\"{}\" r=\"5\" fill=\"#fff\" stroke=\"{MUTED}\" stroke-width=\"2.5\"/>",
        P(x + 6.0),
        P(y)
    );
    text(out, x + 18.0, y + 4.0, "start", "tick", "estimate");
    x += 100.0;
    w!(
        out,
        "<line x1=\"{x}\" x2=\"{x}\" y1=\"{}\" y2=\"{}\" stroke=\"{BAD}\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/>",
        P(y - 8.0),
        P(y + 8.0),
        x = P(x + 4.0)
    );
    text(out, x + 14.0, y + 4.0, "start", "tick", "margin / limit");
    x += 130.0;
    for (f, label) in [
        (Finding::Within, "within"),
        (Finding::Exceeds, "exceeds"),
        (Finding::Undecided, "undecided"),
    ] {
        w!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" rx=\"2\" fill=\"{}\"/>",
            P(x),
            P(y - 5.0),
            finding_color(f)
        );
        text(out, x + 15.0, y + 4.0, "start", "tick", label);
        x += 85.0;
    }
    out.push_str("</svg>\n");
}

// ---------------------------------------------------------------- events

fn events_section(out: &mut String, run: &RunView<'_>) {
    out.push_str("<section class=\"card\" id=\"events\">\n<h2>Events</h2>\n");
    let events = &run.record.events;
    if events.is_empty() {
        out.push_str("<p class=\"caption\">No events were recorded.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<p class=\"caption\">Transitions and their reasons; warnings in red. \
         The numbers match the markers on the weights chart.</p>\n\
         <table class=\"events\"><thead><tr><th class=\"num\">#</th><th class=\"num\">time</th>\
         <th>reason</th><th>message</th></tr></thead><tbody>\n",
    );
    let clock = run.time_axis();
    for (i, e) in events.iter().enumerate() {
        let t = if e.t.is_finite() {
            clock.label(e.t)
        } else {
            "—".into()
        };
        let unit = if clock.clock || !e.t.is_finite() {
            ""
        } else {
            " s"
        };
        w!(
            out,
            "<tr{}><td class=\"num\">{}</td><td class=\"num\">{t}{unit}</td>\
             <td class=\"mono\">{}</td><td>{}</td></tr>\n",
            if e.warning { " class=\"warning\"" } else { "" },
            i + 1,
            esc(&e.reason),
            esc(&e.message)
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
}

#[cfg(test)]
mod tests {
    use weir_analysis::Verdict;
    use weir_analysis::decision::Decision;
    use weir_analysis::sequential::Sides;
    use weir_controller::local::record::{CohortSample, Cohorts, RecordedOutcome};

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

    #[test]
    fn ticks_are_nice_numbers() {
        assert_eq!(nice_step(1.0, 5.0), 0.2);
        assert_eq!(nice_step(73.0, 5.0), 20.0);
        assert_eq!(ticks_by(0.0, 1.0, 0.25), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(nice_ceil(0.037, 5.0), 0.04);
        assert_eq!(floor_125(0.037), 0.02);
        assert_eq!(ceil_125(0.37), 0.5);
        assert_eq!(fmt_seconds(0.05), "50 ms");
        assert_eq!(fmt_seconds(2.0), "2 s");
        assert_eq!(TimeAxis::new(150.0).label(90.0), "1:30");
    }
}
