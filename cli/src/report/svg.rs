//! SVG drawing primitives every chart uses: the palette, the frame and its
//! margins, coordinates that are never `NaN`, axes, legends, series lines
//! and the event lines that tie the time charts to the events table.

use std::fmt::{self, Write as _};

use super::html::esc;
use super::model::RunView;
use super::palette::{BAD, Frame, MUTED, W};
use super::scale::Scale;

/// An SVG coordinate: one decimal, and never `NaN` or `inf` even if a
/// non-finite value slipped through the scales.
pub(super) struct P(pub(super) f64);

impl fmt::Display for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_finite() {
            write!(f, "{:.1}", self.0)
        } else {
            f.write_str("0")
        }
    }
}

pub(super) fn svg_open(out: &mut String, id: &str, title: &str, h: f64) {
    w!(
        out,
        "<svg id=\"{id}\" class=\"chart\" \
         viewBox=\"0 0 {W} {h}\" width=\"{W}\" height=\"{h}\" role=\"img\" \
         aria-labelledby=\"{id}-title\"><title id=\"{id}-title\">{}</title>\n",
        esc(title),
        h = P(h)
    );
}

pub(super) fn text(out: &mut String, x: f64, y: f64, anchor: &str, class: &str, s: &str) {
    w!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" class=\"{class}\">{}</text>",
        P(x),
        P(y),
        esc(s)
    );
}

/// About how wide `s` is at 12 px: enough to keep labels apart.
pub(super) fn text_width(s: &str) -> f64 {
    s.chars().count() as f64 * 6.8
}

/// Grid, axis lines, tick labels and axis titles.
pub(super) fn axes(
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
pub(super) struct Key {
    pub(super) label: String,
    pub(super) color: &'static str,
    pub(super) dash: bool,
    pub(super) area: bool,
}

impl Key {
    pub(super) fn line(label: impl Into<String>, color: &'static str, dash: bool) -> Self {
        Self {
            label: label.into(),
            color,
            dash,
            area: false,
        }
    }
}

/// Keys in a row, right-aligned to `right`, centred on `y`.
pub(super) fn legend(out: &mut String, right: f64, y: f64, keys: &[Key]) {
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
pub(super) fn path_data(points: impl IntoIterator<Item = (f64, f64)>) -> String {
    let mut d = String::new();
    for (i, (x, y)) in points.into_iter().enumerate() {
        w!(d, "{}{},{}", if i == 0 { "M" } else { " L" }, P(x), P(y));
    }
    d
}

/// One series' runs as lines, with dots where a run is a single point
/// (otherwise it would not show at all).
pub(super) fn draw_series(
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
pub(super) fn event_lines(out: &mut String, run: &RunView<'_>, f: &Frame, xs: &Scale) {
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
