//! `weir analyze`: the offline interface to the analysis.
//!
//! Two files of numbers in, a verdict out, with the same statistics the
//! controller uses. Useful to compare two benchmark runs, and the interface
//! other tools call. `--looks N` replays the samples in order as N equal
//! looks and stops at the first decisive one, which is how a rollout sees
//! its data arrive.

use std::fmt::Write as _;
use std::io::{BufRead, Read as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use serde::Serialize;
use weir_analysis::compare::GaugeInterval;
use weir_analysis::decision::{Finding, Role};
use weir_analysis::stats::rank::mann_whitney;
use weir_analysis::{
    Bounds, Counts, Decision, Distribution, Margin, MetricKind, MetricResult, MetricSpec,
    Observations, Policy, Verdict, decide,
};
use weir_core::Excerpt;

use crate::exit::Code;

/// Kind of numbers in the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Latencies (seconds or any unit > 0), compared on a log scale.
    Latency,
    /// One outcome per line: 1 = error, 0 = success.
    Errors,
    /// One gauge value per interval (e.g. GPU utilization).
    Gauge,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table for people.
    Text,
    /// One JSON object.
    Json,
}

/// Arguments of `weir analyze`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 promote, 3 abort, 4 continue (inconclusive), 1 error, 2 usage."
)]
pub struct Args {
    /// The baseline (stable) cohort: one number per line.
    #[arg(long, value_name = "FILE")]
    baseline: PathBuf,
    /// The canary cohort: one number per line.
    #[arg(long, value_name = "FILE")]
    canary: PathBuf,
    /// What the numbers are.
    #[arg(long, value_enum, default_value_t = Kind::Latency)]
    kind: Kind,
    /// How much worse the canary may be: relative (10%) or absolute (0.5pp
    /// for errors, a bare number for gauges). Default: 10% for latency and
    /// gauges, 0.5pp for errors.
    #[arg(long, value_name = "MARGIN")]
    max_increase: Option<String>,
    /// Probability that the verdict is not wrong, however many looks.
    #[arg(long, default_value_t = 0.95)]
    confidence: f64,
    /// Latency quantiles to compare besides the shift.
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.99")]
    quantiles: Vec<f64>,
    /// Samples per cohort before latency and error effects are judged.
    #[arg(long, default_value_t = Policy::default().min_samples)]
    min_samples: u64,
    /// Hard limit on the canary's own error rate (errors only), e.g. 5%.
    #[arg(long, value_name = "RATE")]
    hard_limit: Option<String>,
    /// Replay the samples in order as N equal looks; stop at the first
    /// decisive look.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    looks: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// The JSON document `--output json` prints.
#[derive(Debug, Serialize)]
struct Report<'a> {
    verdict: Verdict,
    decided_at_look: Option<u32>,
    looks: u32,
    rule: &'a str,
    confidence: f64,
    sides: weir_analysis::sequential::Sides,
    metrics: &'a [MetricResult],
}

/// Runs `weir analyze`.
pub fn run(args: &Args) -> Result<Code> {
    let spec = spec(args)?;
    let policy = Policy {
        confidence: args.confidence,
        min_samples: args.min_samples,
        ..Policy::default()
    };
    let baseline = read_numbers(&args.baseline, args.kind)?;
    let canary = read_numbers(&args.canary, args.kind)?;

    let mut decided_at = None;
    let mut last: Option<Decision> = None;
    for look in 1..=args.looks {
        let b = prefix(&baseline, look, args.looks);
        let c = prefix(&canary, look, args.looks);
        let observations = observations(args.kind, b, c)?;
        let mut decision = decide(&policy, &[(spec.clone(), observations)], None)?;
        if args.kind == Kind::Latency {
            exact_mann_whitney(&mut decision, b, c)?;
        }
        let decisive = decision.verdict != Verdict::Continue;
        last = Some(decision);
        if decisive {
            decided_at = Some(look);
            break;
        }
    }
    let Some(decision) = last else {
        bail!("no look was evaluated")
    };
    match args.output {
        Output::Json => {
            let report = Report {
                verdict: decision.verdict,
                decided_at_look: decided_at,
                looks: args.looks,
                rule: &decision.rule,
                confidence: args.confidence,
                sides: decision.sides,
                metrics: &decision.metrics,
            };
            println!("{}", serde_json::to_string(&report)?);
        }
        Output::Text => print!("{}", render_text(&decision, decided_at, args)),
    }
    Ok(decision.verdict.into())
}

/// The analysis works on binned distributions (values in one bin tie);
/// here the raw samples are at hand, so the reference Mann-Whitney entry is
/// recomputed on them exactly (exact null distribution for small samples
/// without ties, otherwise the tie- and continuity-corrected normal
/// approximation), matching scipy's `mannwhitneyu`.
fn exact_mann_whitney(decision: &mut Decision, baseline: &[f64], canary: &[f64]) -> Result<()> {
    let Some(entry) = decision
        .metrics
        .iter_mut()
        .find(|m| m.test == "mann-whitney")
    else {
        return Ok(());
    };
    let mw = mann_whitney(baseline, canary)?;
    entry.statistic = Some(mw.u_canary);
    entry.p_value = Some(mw.p_value);
    entry.estimate = Some(mw.u_canary / (baseline.len() as f64 * canary.len() as f64));
    Ok(())
}

fn spec(args: &Args) -> Result<MetricSpec> {
    let kind = match args.kind {
        Kind::Latency => MetricKind::Latency,
        Kind::Errors => MetricKind::ErrorRate,
        Kind::Gauge => MetricKind::Gauge,
    };
    let default_margin = match args.kind {
        Kind::Errors => "0.5pp",
        Kind::Latency | Kind::Gauge => "10%",
    };
    let max_increase: Margin = args
        .max_increase
        .as_deref()
        .unwrap_or(default_margin)
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--max-increase: {e}"))?;
    let hard_limit = match &args.hard_limit {
        None => None,
        Some(_) if args.kind != Kind::Errors => bail!("--hard-limit applies to --kind errors only"),
        Some(s) => match s.parse::<Margin>() {
            Ok(Margin::Relative(r)) => Some(r),
            Ok(Margin::Absolute(a)) if s.trim().ends_with("pp") => Some(a),
            _ => bail!(
                "--hard-limit {s:?}: write the canary's error-rate limit as a percentage, e.g. 5%"
            ),
        },
    };
    let name = match args.kind {
        Kind::Latency => "latency",
        Kind::Errors => "errors",
        Kind::Gauge => "gauge",
    };
    let spec = MetricSpec {
        name: name.into(),
        kind,
        bounds: Bounds::max_increase(max_increase),
        quantiles: if args.kind == Kind::Latency {
            args.quantiles.clone()
        } else {
            Vec::new()
        },
        hard_limit,
    };
    // Let the analysis validate now so a bad flag is reported before any
    // file is read.
    let empty = observations(args.kind, &[], &[])?;
    let policy = Policy {
        confidence: args.confidence,
        ..Policy::default()
    };
    decide(&policy, &[(spec.clone(), empty)], None)
        .map_err(|e| anyhow::anyhow!("{}", flag_names(&e.to_string())))?;
    Ok(spec)
}

/// Maps the analysis's field names to this command's flags.
fn flag_names(message: &str) -> String {
    let message = message
        .replace("metrics[latency].", "--")
        .replace("metrics[errors].", "--")
        .replace("metrics[gauge].", "--")
        .replace("maxIncrease", "max-increase")
        .replace("hardLimit", "hard-limit");
    if message.starts_with("confidence") {
        format!("--{message}")
    } else {
        message
    }
}

/// The first `look/looks` of `values` (rounded up, so the last look has all).
fn prefix(values: &[f64], look: u32, looks: u32) -> &[f64] {
    let n = (values.len() as u64 * u64::from(look)).div_ceil(u64::from(looks)) as usize;
    &values[..n.min(values.len())]
}

fn observations(kind: Kind, baseline: &[f64], canary: &[f64]) -> Result<Observations> {
    Ok(match kind {
        Kind::Latency => Observations::Latency {
            baseline: Distribution::from_values(baseline)?,
            canary: Distribution::from_values(canary)?,
        },
        Kind::Errors => Observations::Errors {
            baseline: counts(baseline),
            canary: counts(canary),
        },
        Kind::Gauge => Observations::Gauge {
            baseline: gauge_points(baseline),
            canary: gauge_points(canary),
            per_unit: false,
        },
    })
}

fn counts(values: &[f64]) -> Counts {
    Counts {
        errors: values.iter().filter(|v| **v == 1.0).count() as u64,
        total: values.len() as u64,
    }
}

fn gauge_points(values: &[f64]) -> Vec<GaugeInterval> {
    values
        .iter()
        .map(|&value| GaugeInterval {
            value,
            throughput: None,
        })
        .collect()
}

/// Longest line `weir analyze` reads: a number takes a few dozen
/// characters, so anything longer is not one (a binary file, a file with
/// one huge line) and is refused at once instead of being held whole.
const MAX_LINE: usize = 4096;
/// Most numbers read from one file. Every value is held in memory (the
/// rank test needs them all); past this a file is better sampled than
/// analyzed whole, and the limit says so instead of failing on allocation.
const MAX_VALUES: usize = 10_000_000;

/// Reads one number per line. Blank lines are skipped; anything else that
/// is not a valid number for `kind` is an error naming the file and line.
/// The file is read line by line (a pipe or `<(...)` works; a 2 GB file
/// is not loaded before the first bad line is found).
fn read_numbers(path: &Path, kind: Kind) -> Result<Vec<f64>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_numbers(std::io::BufReader::new(file), path, kind)
}

fn parse_numbers(mut reader: impl BufRead, path: &Path, kind: Kind) -> Result<Vec<f64>> {
    let mut values = Vec::new();
    let mut line = Vec::new();
    let mut line_no = 0usize;
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let where_ = || format!("{}:{line_no}", path.display());
        if line.len() > MAX_LINE && line.last() != Some(&b'\n') {
            bail!(
                "{}: the line is longer than {MAX_LINE} bytes ({}), so it is not a number; write one number per line",
                where_(),
                Excerpt::quoted(&String::from_utf8_lossy(&line)).max(40)
            );
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            bail!("{}: not UTF-8 text; write one number per line", where_());
        };
        let t = text.trim();
        if t.is_empty() {
            continue;
        }
        let quoted = || Excerpt::quoted(t).max(40);
        let v: f64 = t
            .parse()
            .map_err(|_| anyhow::anyhow!("{}: {} is not a number", where_(), quoted()))?;
        if !v.is_finite() {
            bail!("{}: {} is not a finite number", where_(), quoted());
        }
        match kind {
            Kind::Latency if v < 0.0 => bail!("{}: latency {v} is negative", where_()),
            Kind::Errors if v != 0.0 && v != 1.0 => {
                bail!(
                    "{}: {} is not an outcome: write 1 for an error and 0 for a success",
                    where_(),
                    quoted()
                )
            }
            _ => {}
        }
        if values.len() == MAX_VALUES {
            bail!(
                "{}: more than {MAX_VALUES} numbers; weir analyze holds every value in memory, so sample the file first (e.g. shuf -n 1000000 {})",
                path.display(),
                path.display()
            );
        }
        values.push(v);
    }
    if values.is_empty() {
        bail!(
            "{}: no numbers in the file (write one number per line)",
            path.display()
        );
    }
    Ok(values)
}

fn render_text(decision: &Decision, decided_at: Option<u32>, args: &Args) -> String {
    let mut out = String::new();
    let at = match decided_at {
        Some(look) if args.looks > 1 => format!(" at look {look} of {}", args.looks),
        None if args.looks > 1 => format!(" after {} looks", args.looks),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "verdict: {}{at}",
        decision.verdict.to_string().to_uppercase()
    );
    let _ = writeln!(out, "{}", decision.rule);
    let _ = writeln!(
        out,
        "\nintervals hold at every look: lower ends err with probability ≤ {:.4} each (abort), upper ends ≤ {:.4} \
         (promote); no verdict is wrong with probability ≥ {:.0}%\n",
        decision.sides.lower,
        decision.sides.upper,
        args.confidence * 100.0
    );
    let _ = writeln!(
        out,
        "{:<18} {:<22} {:>12} {:>26} {:>10} {:>12}",
        "metric", "test", "estimate", "interval", "margin", "finding"
    );
    for m in &decision.metrics {
        let relative = m.relative;
        let rate = m.kind == MetricKind::ErrorRate && !relative;
        let fmt = |v: Option<f64>| match v {
            None => "-".to_string(),
            Some(v) if v.is_infinite() => {
                if v > 0.0 {
                    "+inf".into()
                } else {
                    "-inf".into()
                }
            }
            Some(v) if relative => format!("{:+.2}%", v * 100.0),
            Some(v) if rate => format!("{:+.3}pp", v * 100.0),
            Some(v) => format!("{v:+.4}"),
        };
        let (estimate, interval) = if m.role == Role::Reference {
            let stat = match m.test.as_str() {
                "mann-whitney" => format!("U={:.0}", m.statistic.unwrap_or(f64::NAN)),
                "welch-t" => format!("t={:.3}", m.statistic.unwrap_or(f64::NAN)),
                _ => format!("OR={:.3}", m.statistic.unwrap_or(f64::NAN)),
            };
            (
                stat,
                format!("p={:.4} (fixed-sample)", m.p_value.unwrap_or(f64::NAN)),
            )
        } else {
            (
                fmt(m.estimate),
                format!("[{}, {}]", fmt(m.ci_low), fmt(m.ci_high)),
            )
        };
        let margin = match (m.role, m.margin) {
            (Role::Guard, Some(limit)) => format!("<{:.2}%", limit * 100.0),
            (_, margin) => margin.map_or("-".into(), |v| fmt(Some(v))),
        };
        let finding = match m.finding {
            Finding::None => "reference".to_string(),
            f => serde_json::to_value(f)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        };
        let _ = writeln!(
            out,
            "{:<18} {:<22} {:>12} {:>26} {:>10} {:>12}",
            m.name, m.test, estimate, interval, margin, finding
        );
        if let (Some(b), Some(c)) = (m.baseline_value, m.canary_value) {
            let unit = if m.kind == MetricKind::ErrorRate {
                100.0
            } else {
                1.0
            };
            let suffix = if m.kind == MetricKind::ErrorRate {
                "%"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{:<18} baseline {:.4}{suffix}  canary {:.4}{suffix}  (n = {} / {})",
                "",
                b * unit,
                c * unit,
                m.baseline_n,
                m.canary_n
            );
        }
        if let Some(note) = &m.note {
            let _ = writeln!(out, "{:<18} {note}", "");
        }
    }
    out
}
