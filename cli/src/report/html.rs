//! The page around the charts: the stylesheet, escaping, the header card
//! (outcome, facts, steps, metrics), the section cards and the events
//! table.

use std::fmt::Write as _;

use super::model::RunView;
use super::scale::{fmt_duration, group_digits, trim};

pub(super) const CSS: &str = r#"
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
pub(super) fn esc(s: &str) -> String {
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

pub(super) fn header(out: &mut String, run: &RunView<'_>, badge: &str, tone: &str) {
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
    // Where evidence began to count after the canary's request warm-up:
    // what came before is the cold start the analysis left out.
    if let Some(e) = record
        .events
        .iter()
        .find(|e| e.reason == weir_controller::engine::reasons::WARMED_UP && e.t.is_finite())
    {
        fact("Canary warmed up at", format!("{} s", trim(e.t, 1)));
    }
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

pub(super) fn section(
    out: &mut String,
    title: &str,
    caption: &str,
    body: impl FnOnce(&mut String),
) {
    w!(
        out,
        "<section class=\"card\">\n<h2>{title}</h2>\n<p class=\"caption\">{caption}</p>\n"
    );
    body(out);
    out.push_str("</section>\n");
}

pub(super) fn note(out: &mut String, id: &str, text: &str) {
    w!(out, "<div class=\"note\" id=\"{id}\">{text}</div>\n");
}

pub(super) fn events_section(out: &mut String, run: &RunView<'_>) {
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
