//! `weir report` end to end: a realistic recorded run (a canary aborted
//! for a TTFT regression, with a decision computed by the real analysis)
//! goes through the binary, and the HTML is rendered by headless Chromium,
//! which must show every chart with its series in the cohorts' colours.
//!
//! Chromium comes from `WEIR_CHROMIUM` or `/usr/bin/chromium`; without it
//! the test fails (set `WEIR_SKIP_BROWSER=1` to skip the browser part on
//! purpose). The screenshot stays in the target directory to look at:
//! `<target>/tmp/weir-report/report.png`.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use weir_analysis::{
    Bounds, Counts, Distribution, Margin, MetricKind, MetricSpec, Observations, Policy, decide,
};
use weir_controller::local::record::{
    CohortSample, Cohorts, RecordedEvent, RecordedOutcome, RunRecord, Sample,
};

/// The series colours of `cli/src/report.rs`.
const STABLE_RGB: [u8; 3] = [0x21, 0x66, 0xac];
const CANARY_RGB: [u8; 3] = [0xe6, 0x61, 0x01];

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 3000;

/// Deterministic noise, so the record (and the picture) is the same on
/// every run.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 11) as f64 + 0.5) / (1_u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// A log-normal latency with the given median, in seconds.
    fn latency(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }
}

/// `[seconds, fraction ≤]` at `points` evenly spaced ranks.
fn cdf(values: &[f64], points: usize) -> Vec<[f64; 2]> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (1..=points)
        .map(|k| {
            let frac = k as f64 / points as f64;
            let i = ((frac * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            [sorted[i], frac]
        })
        .collect()
}

fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

/// Five minutes of a canary at 10, 25 then 50% whose TTFT is ~45% slower,
/// aborted by the analysis at the end.
fn record() -> RunRecord {
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let interval = 5.0;
    let total_rate = 40.0;
    let mut all = Cohorts::<Vec<f64>>::default();
    let none = Counts {
        errors: 0,
        total: 0,
    };
    let mut errors = Cohorts {
        stable: none,
        canary: none,
    };
    let mut samples = Vec::new();
    for i in 0..60 {
        let t = f64::from(i) * interval;
        let aborted = i >= 58;
        let weight = match i {
            _ if aborted => 0.0,
            0..20 => 10.0,
            20..40 => 25.0,
            _ => 50.0,
        };
        let mut cohort = |canary: bool, share: f64| -> CohortSample {
            let n = (total_rate * interval * share / 100.0).round() as u64;
            let (median, error_p) = if canary {
                (0.175, 0.012)
            } else {
                (0.12, 0.004)
            };
            let ttft: Vec<f64> = (0..n).map(|_| rng.latency(median, 0.45)).collect();
            let failed = (0..n).filter(|_| rng.uniform() < error_p).count() as u64;
            let (pool, counts) = if canary {
                (&mut all.canary, &mut errors.canary)
            } else {
                (&mut all.stable, &mut errors.stable)
            };
            pool.extend(&ttft);
            counts.errors += failed;
            counts.total += n;
            // Busier with more traffic; the canary works harder per request.
            let load = if n == 0 {
                3.0
            } else if canary {
                30.0 + 0.75 * share
            } else {
                22.0 + 0.45 * share
            };
            CohortSample {
                requests: n,
                rate: n as f64 / interval,
                ttft_p50: percentile(&ttft, 0.5),
                ttft_p95: percentile(&ttft, 0.95),
                error_rate: (n > 0).then(|| failed as f64 / n as f64),
                gpu_util: Some((load + 4.0 * rng.normal()).clamp(0.0, 100.0)),
            }
        };
        let stable = cohort(false, 100.0 - weight);
        let canary = cohort(true, weight);
        let step = match i {
            0..20 => "step 1/3: setWeight 10",
            20..40 => "step 2/3: setWeight 25",
            _ => "step 3/3: setWeight 50",
        };
        samples.push(Sample {
            t,
            phase: if aborted { "Aborted" } else { "Progressing" }.into(),
            step: step.into(),
            canary_weight: weight,
            cohorts: Cohorts { stable, canary },
            verdict: Some(if aborted { "abort" } else { "continue" }.into()),
            rule: None,
            warmup: None,
        });
    }

    let policy = Policy::default();
    let metrics = vec![
        (
            MetricSpec {
                name: "ttft".into(),
                kind: MetricKind::Latency,
                bounds: Bounds::max_increase(Margin::Relative(0.10)),
                quantiles: vec![0.5, 0.95],
                hard_limit: None,
            },
            Observations::Latency {
                baseline: Distribution::from_values(&all.stable).expect("latencies are valid"),
                canary: Distribution::from_values(&all.canary).expect("latencies are valid"),
            },
        ),
        (
            MetricSpec {
                name: "errors".into(),
                kind: MetricKind::ErrorRate,
                bounds: Bounds::max_increase(Margin::Absolute(0.005)),
                quantiles: vec![],
                hard_limit: Some(0.05),
            },
            Observations::Errors {
                baseline: errors.stable,
                canary: errors.canary,
            },
        ),
    ];
    let decision = decide(&policy, &metrics, None).expect("the analysis runs");
    assert_eq!(
        decision.verdict,
        weir_analysis::Verdict::Abort,
        "the record shows an abort: {}",
        decision.rule
    );

    let event = |t: f64, reason: &str, message: &str, warning: bool| RecordedEvent {
        t,
        reason: reason.into(),
        message: message.into(),
        warning,
    };
    RunRecord {
        name: "llama-3-8b-int4".into(),
        started_at: "2025-06-03T14:02:11Z".into(),
        steps: vec![
            "setWeight 10".into(),
            "analysis 100s".into(),
            "setWeight 25".into(),
            "analysis 100s".into(),
            "setWeight 50".into(),
            "analysis 100s".into(),
        ],
        metrics: vec![
            "ttft latency p50,p95 ≤ +10%".into(),
            "errors errorRate ≤ +0.5pp, hard limit 5%".into(),
        ],
        samples,
        events: vec![
            event(
                0.0,
                "RolloutStarted",
                "canary llama-3-8b-int4 started",
                false,
            ),
            event(0.0, "WeightSet", "canary weight set to 10%", false),
            event(100.0, "WeightSet", "canary weight set to 25%", false),
            event(200.0, "WeightSet", "canary weight set to 50%", false),
            event(290.0, "AnalysisFailed", &decision.rule, true),
            event(290.0, "Aborted", "traffic returned to stable", true),
            event(295.0, "RolledBack", "canary weight set to 0%", true),
        ],
        ttft_cdf: Cohorts {
            stable: cdf(&all.stable, 400),
            canary: cdf(&all.canary, 300),
        },
        outcome: Some(RecordedOutcome {
            phase: "Aborted".into(),
            exit_code: 3,
            message: decision.rule.clone(),
            t: 295.0,
        }),
        decision: Some(decision),
    }
}

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WEIR_CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "WEIR_CHROMIUM={} does not exist",
            path.display()
        );
        return Some(path);
    }
    let default = PathBuf::from("/usr/bin/chromium");
    default.exists().then_some(default)
}

/// Runs a browser command, killing it if it hangs.
fn run_browser(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let started = Instant::now();
    // Read stdout on a thread: a DOM larger than the pipe buffer would
    // otherwise block the browser before it exits.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut buf).expect("read stdout");
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut buf).expect("read stderr");
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().expect("kill chromium");
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn browser_args(cmd: &mut Command, profile: &Path) {
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
}

/// The markup of `<svg id="{id}" ...>...</svg>` in `dom`.
fn svg_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("<svg id=\"{id}\"");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("chart {id} missing from the rendered DOM"));
    let len = dom[start..]
        .find("</svg>")
        .unwrap_or_else(|| panic!("chart {id} is not closed"));
    &dom[start..start + len]
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn the_report_renders_in_a_browser() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weir-report");
    // A fresh directory each time: a stale screenshot must not pass.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let json = dir.join("run.json");
    let html = dir.join("report.html");
    let record = record();
    let effects = record
        .decision
        .as_ref()
        .map(|d| {
            d.metrics
                .iter()
                .filter(|m| m.role != weir_analysis::decision::Role::Reference)
                .count()
        })
        .unwrap_or_default();
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&record).expect("serialize"),
    )
    .expect("write run.json");

    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["report", "--from"])
        .arg(&json)
        .arg("-o")
        .arg(&html)
        .output()
        .expect("weir runs");
    assert!(
        out.status.success(),
        "weir report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&html).expect("report written");
    assert!(text.contains("ABORTED"));
    assert!(text.contains("llama-3-8b-int4"));
    for forbidden in ["<script", "http://", "https://", "@import", "url("] {
        assert!(
            !text.contains(forbidden),
            "the report must be self-contained, found {forbidden}"
        );
    }

    let Some(chromium) = chromium() else {
        if std::env::var("WEIR_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("WEIR_SKIP_BROWSER=1: not rendering {}", html.display());
            return;
        }
        panic!(
            "no Chromium at /usr/bin/chromium and WEIR_CHROMIUM is not set: \
             run `apt-get install chromium` (or set WEIR_SKIP_BROWSER=1 to skip on purpose)"
        );
    };
    let url = format!("file://{}", html.display());

    let mut dump = Command::new(&chromium);
    browser_args(&mut dump, &dir.join("profile-dom"));
    let dom = run_browser(dump.arg("--dump-dom").arg(&url));
    assert!(
        dom.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8(dom.stdout).expect("DOM is UTF-8");
    assert_eq!(
        count(&dom, "<svg id=\"chart-"),
        6,
        "weights, TTFT CDF, TTFT over time, errors, GPU and decision"
    );
    for id in [
        "chart-ttft-cdf",
        "chart-weights",
        "chart-errors",
        "chart-gpu",
    ] {
        let svg = svg_of(&dom, id);
        assert!(svg.contains("<title"), "{id} has a title");
        for cohort in ["series stable", "series canary"] {
            let group = svg
                .split(&format!("<g class=\"{cohort}\""))
                .nth(1)
                .map(|g| g.split("</g>").next().unwrap_or_default());
            let plotted = match group {
                Some(g) => count(g, "<path") + count(g, "<circle"),
                // The weights chart draws its series as classed paths.
                None => count(svg, &format!("class=\"{cohort}")),
            };
            assert!(plotted > 0, "{id}: nothing plotted for {cohort}");
        }
        assert!(count(svg, "class=\"tick\"") >= 6, "{id} has tick labels");
        assert!(svg.contains("class=\"legend\""), "{id} has a legend");
    }
    let decision = svg_of(&dom, "chart-decision");
    assert_eq!(
        count(decision, "class=\"interval\""),
        effects,
        "one interval per effect"
    );
    assert!(
        count(decision, "<circle") >= effects,
        "estimates are plotted"
    );
    assert!(!dom.contains("NaN"));

    let shot = dir.join("report.png");
    let mut screenshot = Command::new(&chromium);
    browser_args(&mut screenshot, &dir.join("profile-shot"));
    let out = run_browser(
        screenshot
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("--window-size={WIDTH},{HEIGHT}"))
            .arg(&url),
    );
    assert!(
        out.status.success(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let file = std::fs::File::open(&shot).expect("screenshot written");
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a valid PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("buffer size fits")];
    let frame = reader.next_frame(&mut buf).expect("decodes");
    assert_eq!((frame.width, frame.height), (WIDTH, HEIGHT));
    let channels = match frame.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected colour type {other:?}"),
    };
    let pixels = &buf[..frame.buffer_size()];
    let mut colours = std::collections::HashSet::new();
    let (mut stable, mut canary) = (0_usize, 0_usize);
    let near = |p: &[u8], c: [u8; 3]| {
        p.iter()
            .zip(c)
            .map(|(&a, b)| (i32::from(a) - i32::from(b)).pow(2))
            .sum::<i32>()
            < 20 * 20
    };
    for p in pixels.chunks_exact(channels) {
        colours.insert([p[0], p[1], p[2]]);
        stable += usize::from(near(&p[..3], STABLE_RGB));
        canary += usize::from(near(&p[..3], CANARY_RGB));
    }
    eprintln!(
        "screenshot {}: {} colours, {stable} stable-blue and {canary} canary-orange pixels",
        shot.display(),
        colours.len()
    );
    assert!(
        colours.len() > 500,
        "the page looks blank: {} colours",
        colours.len()
    );
    assert!(stable > 2_000, "too few stable-blue pixels: {stable}");
    assert!(canary > 2_000, "too few canary-orange pixels: {canary}");
}
