//! The charts: traffic weights with phases and events, the TTFT
//! distribution, and the per-interval time charts (TTFT percentiles, error
//! rate, GPU utilization).

use std::fmt::Write as _;

use weir_controller::local::record::RunRecord;

use super::html::{esc, note};
use super::model::RunView;
use super::palette::{BAD, CANARY, Frame, LEFT, STABLE, W};
use super::scale::{
    Scale, ceil_125, decimals, floor_125, fmt_seconds, nice_ceil, nice_step, ticks_by,
};
use super::svg::{
    Key, P, axes, draw_series, event_lines, legend, path_data, svg_open, text, text_width,
};

pub(super) fn weights_chart(out: &mut String, run: &RunView<'_>) {
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

pub(super) fn ttft_cdf_chart(out: &mut String, record: &RunRecord) {
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

pub(super) fn ttft_time_chart(out: &mut String, run: &RunView<'_>) {
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

pub(super) fn error_chart(out: &mut String, run: &RunView<'_>) {
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

pub(super) fn gpu_chart(out: &mut String, run: &RunView<'_>) {
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
