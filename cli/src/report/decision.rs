//! The decision card: the verdict, a forest plot of every deciding effect
//! against its margin, and the table of effects with their tests.

use std::fmt::Write as _;

use weir_analysis::MetricKind;
use weir_analysis::MetricResult;
use weir_analysis::decision::{Finding, Role};
use weir_controller::local::record::RunRecord;

use super::html::{esc, note};
use super::model::finite;
use super::palette::{BAD, GOOD, MUTED, UNDECIDED, W};
use super::scale::{Scale, group_digits};
use super::svg::{P, svg_open, text};

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

pub(super) fn decision_section(out: &mut String, record: &RunRecord) {
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
