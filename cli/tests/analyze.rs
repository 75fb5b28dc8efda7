//! `weir analyze` as a user and as another tool call it: exit codes, JSON
//! shape, errors that name the file and line, and the Mann-Whitney entry
//! checked against scipy on the same files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .expect("weir runs")
}

/// A scratch directory unique to one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-analyze-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn write(dir: &Path, name: &str, lines: &[String]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    path.to_string_lossy().into_owned()
}

/// Deterministic pseudo-random lognormal-ish samples (no RNG dependency):
/// a Weyl sequence through the inverse normal of a logistic approximation.
fn latencies(n: usize, seed: f64, scale: f64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let u = ((i as f64 + 1.0) * 0.618_033_988_749_895 + seed)
                .fract()
                .clamp(1e-6, 1.0 - 1e-6);
            let z = (u / (1.0 - u)).ln() / 1.702;
            format!("{:.6}", 0.2 * scale * (0.3 * z).exp())
        })
        .collect()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The metrics entry of the report with this `test`.
fn entry<'a>(report: &'a Value, test: &str) -> &'a Value {
    let metrics = report["metrics"].as_array().expect("metrics is a list");
    metrics
        .iter()
        .find(|m| m["test"] == test)
        .unwrap_or_else(|| panic!("no {test} entry in {report}"))
}

#[test]
fn the_quick_start_example_aborts_on_p99_with_exit_3() {
    let r = repo();
    let (b, c) = (
        r.join("examples/ttft-stable.txt"),
        r.join("examples/ttft-canary.txt"),
    );
    let out = weir(&[
        "analyze",
        "--baseline",
        b.to_str().expect("utf-8"),
        "--canary",
        c.to_str().expect("utf-8"),
        "--looks",
        "10",
        "--output",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["verdict"], "abort");
    assert_eq!(v["looks"], 10);
    let look = v["decided_at_look"].as_u64().expect("decided");
    assert!((1..=10).contains(&look));
    let metrics = v["metrics"].as_array().expect("list");
    for m in metrics {
        for field in [
            "name",
            "kind",
            "test",
            "statistic",
            "p_value",
            "estimate",
            "ci_low",
            "ci_high",
            "baseline_n",
            "canary_n",
        ] {
            assert!(m.get(field).is_some(), "entry {m} lacks {field}");
        }
    }
    let p99 = metrics
        .iter()
        .find(|m| m["name"] == "latency.p99")
        .expect("p99 entry");
    assert_eq!(p99["finding"], "exceeds");
    assert!(v["rule"].as_str().expect("rule").contains("latency.p99"));
}

#[test]
fn identical_cohorts_promote_and_a_slow_canary_aborts() {
    let dir = scratch("verdicts");
    let b = write(&dir, "b.txt", &latencies(6000, 0.1, 1.0));
    let same = write(&dir, "same.txt", &latencies(6000, 0.37, 1.0));
    let slow = write(&dir, "slow.txt", &latencies(6000, 0.37, 1.3));
    let out = weir(&["analyze", "--baseline", &b, "--canary", &same]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("verdict: PROMOTE"));
    let out = weir(&[
        "analyze",
        "--baseline",
        &b,
        "--canary",
        &slow,
        "--quantiles",
        "0.5",
    ]);
    assert_eq!(out.status.code(), Some(3));
    // Too few samples to decide: exit 4 and the reason.
    let few_b = write(&dir, "few_b.txt", &latencies(50, 0.1, 1.0));
    let few_c = write(&dir, "few_c.txt", &latencies(50, 0.2, 1.0));
    let out = weir(&["analyze", "--baseline", &few_b, "--canary", &few_c]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("needs 200 samples per cohort, has 50"));
}

#[test]
fn error_outcomes_are_judged_with_the_exact_test() {
    let dir = scratch("errors");
    let outcomes = |n: usize, every: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                if i % every == every - 1 {
                    "1".into()
                } else {
                    "0".into()
                }
            })
            .collect()
    };
    let b = write(&dir, "b.txt", &outcomes(20_000, 200)); // 0.5%
    let c = write(&dir, "c.txt", &outcomes(20_000, 40)); // 2.5%
    let out = weir(&[
        "analyze",
        "--kind",
        "errors",
        "--baseline",
        &b,
        "--canary",
        &c,
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let v = json(&out);
    let fisher = entry(&v, "fisher-exact");
    assert!(fisher["p_value"].as_f64().expect("p") < 1e-10);
    let out = weir(&[
        "analyze",
        "--kind",
        "errors",
        "--baseline",
        &b,
        "--canary",
        &b,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn bad_files_name_the_file_and_line() {
    let dir = scratch("bad");
    let good = write(&dir, "good.txt", &latencies(300, 0.1, 1.0));
    let good_outcomes = write(&dir, "good-outcomes.txt", &vec!["0".to_string(); 300]);
    let cases: [(&str, &str, &[&str], &str); 5] = [
        (
            "word.txt",
            "latency",
            &["0.1", "0.2", "fast"],
            "word.txt:3: \"fast\" is not a number",
        ),
        (
            "nan.txt",
            "latency",
            &["0.1", "NaN"],
            "nan.txt:2: \"NaN\" is not a finite number",
        ),
        (
            "negative.txt",
            "latency",
            &["0.1", "-0.2"],
            "negative.txt:2: latency -0.2 is negative",
        ),
        (
            "empty.txt",
            "latency",
            &["", "  "],
            "empty.txt: no numbers in the file",
        ),
        (
            "two.txt",
            "errors",
            &["0", "1", "2"],
            "two.txt:3: \"2\" is not an outcome",
        ),
    ];
    for (name, kind, lines, expected) in cases {
        let lines: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        let bad = write(&dir, name, &lines);
        let baseline = if kind == "errors" {
            &good_outcomes
        } else {
            &good
        };
        let out = weir(&[
            "analyze",
            "--kind",
            kind,
            "--baseline",
            baseline,
            "--canary",
            &bad,
        ]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{name}: nothing on stdout when the input is bad"
        );
    }
    let out = weir(&[
        "analyze",
        "--baseline",
        &good,
        "--canary",
        &dir.join("missing.txt").to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn bad_flags_are_usage_errors_or_name_the_flag() {
    let out = weir(&["analyze", "--baseline", "x"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --canary is a usage error"
    );
    let out = weir(&[
        "analyze",
        "--baseline",
        "x",
        "--canary",
        "y",
        "--kind",
        "speed",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let r = repo().join("examples/ttft-stable.txt");
    let f = r.to_str().expect("utf-8");
    for (flag, value, expected) in [
        ("--max-increase", "lots", "--max-increase"),
        (
            "--max-increase",
            "0.5pp",
            "--max-increase: latency margins are relative",
        ),
        ("--confidence", "95", "--confidence"),
        ("--quantiles", "0.5,1.5", "--quantiles"),
    ] {
        let out = weir(&["analyze", "--baseline", f, "--canary", f, flag, value]);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{flag} {value}: {stderr}");
    }
}

/// The Mann-Whitney entry equals scipy's `mannwhitneyu(canary, baseline)`
/// on the very same files: U exactly, p to 1e-9 relative.
#[test]
fn mann_whitney_entry_matches_scipy_on_the_same_files() {
    let python = weir_test_kit::python::interpreter();
    let dir = scratch("scipy");
    // Large with ties (values rounded to 1 ms), and small without ties.
    let rounded = |v: Vec<String>| -> Vec<String> {
        v.iter()
            .map(|s| format!("{:.3}", s.parse::<f64>().expect("number")))
            .collect()
    };
    let cases = [
        (
            rounded(latencies(700, 0.1, 1.0)),
            rounded(latencies(400, 0.3, 1.05)),
            "asymptotic",
        ),
        (latencies(12, 0.1, 1.0), latencies(9, 0.3, 1.2), "exact"),
    ];
    for (i, (b, c, method)) in cases.iter().enumerate() {
        let bf = write(&dir, &format!("b{i}.txt"), b);
        let cf = write(&dir, &format!("c{i}.txt"), c);
        let out = weir(&[
            "analyze",
            "--baseline",
            &bf,
            "--canary",
            &cf,
            "--output",
            "json",
            "--min-samples",
            "1",
        ]);
        let v = json(&out);
        let mw = entry(&v, "mann-whitney");
        let script = format!(
            "import numpy as np, scipy.stats as s\n\
             b = np.loadtxt({bf:?}); c = np.loadtxt({cf:?})\n\
             r = s.mannwhitneyu(c, b, alternative='two-sided', method={method:?})\n\
             print(repr(float(r.statistic)), repr(float(r.pvalue)))"
        );
        let py = Command::new(&python).args(["-c", &script]).output().unwrap_or_else(|e| {
            panic!("cannot run {python}: {e}; run tests/run, which installs scipy, or set WEIR_PYTHON")
        });
        assert!(
            py.status.success(),
            "scipy is required for this test (tests/run installs it): {}",
            String::from_utf8_lossy(&py.stderr)
        );
        let text = String::from_utf8_lossy(&py.stdout);
        let nums: Vec<f64> = text
            .split_whitespace()
            .map(|t| t.parse().expect("float"))
            .collect();
        let (u, p) = (
            mw["statistic"].as_f64().expect("U"),
            mw["p_value"].as_f64().expect("p"),
        );
        assert_eq!(u, nums[0], "case {i}: U");
        assert!(
            (p - nums[1]).abs() <= 1e-9 * nums[1].abs().max(1e-300),
            "case {i}: p {p} vs scipy {}",
            nums[1]
        );
    }
}

#[test]
fn a_huge_line_is_refused_with_a_short_message_that_names_the_line() {
    let dir = scratch("huge");
    let good = write(&dir, "good.txt", &latencies(300, 0.1, 1.0));
    // One 1 MB line of digits: the old reader echoed it whole.
    let huge = write(&dir, "huge.txt", &["0.1".to_string(), "7".repeat(1 << 20)]);
    let out = weir(&["analyze", "--baseline", &good, "--canary", &huge]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("huge.txt:2: the line is longer than 4096 bytes"),
        "{stderr}"
    );
    assert!(
        stderr.len() < 1024,
        "the message quotes an excerpt, not the line: {} bytes",
        stderr.len()
    );
}

#[test]
fn a_bad_line_in_a_pipe_is_reported_without_waiting_for_the_end_of_the_input() {
    use std::io::Write as _;
    use std::process::Stdio;
    let dir = scratch("pipe");
    let good = write(&dir, "good.txt", &latencies(300, 0.1, 1.0));
    // The canary is read from weir's stdin, a pipe this test keeps open:
    // a reader that loads the whole input before parsing it would wait
    // for an end that never comes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["analyze", "--baseline", &good, "--canary", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"0.1\nfast\n").expect("write");
    stdin.flush().expect("flush");
    let exited = weir_test_kit::poll::try_until_blocking(
        "weir analyze to exit",
        std::time::Duration::from_secs(120),
        || child.try_wait().expect("wait"),
    )
    .is_ok();
    drop(stdin);
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("output");
    assert!(exited, "weir analyze waited for the end of its input");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/dev/stdin:2: \"fast\" is not a number"),
        "{stderr}"
    );
}
