//! Holds `weir_analysis::stats` to scipy's numbers.
//!
//! `scipy_reference.py` generates seeded datasets and prints scipy's results
//! for them as JSON; this test runs it, recomputes everything in Rust and
//! requires agreement to 1e-9 relative (or 1e-300 absolute, for p-values that
//! are zero for every practical purpose). Statistics that silently drift from
//! the reference implementation are the failure this guards against, so a
//! missing python3/scipy is a test *failure* with install instructions, never
//! a skip.
//!
//! Run with `-- --nocapture` to see the per-family summary (cases compared
//! and the largest relative difference observed).

use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use weir_analysis::stats::special::{
    beta_inc_reg, ln_beta, ln_gamma, normal_cdf, normal_quantile, normal_sf, student_t_quantile,
    student_t_sf,
};
use weir_analysis::stats::{
    Moments, MwMethod, fisher_exact, mann_whitney, mann_whitney_asymptotic, newcombe_difference_ci,
    welch_t, welch_t_from_moments,
};

/// Seed for the datasets; `WEIR_REFERENCE_SEED` overrides it to explore.
const SEED: &str = "20240521";
const RELATIVE_TOLERANCE: f64 = 1e-9;
const ABSOLUTE_TOLERANCE: f64 = 1e-300;
/// Agreement required with the 40-digit values (mpmath, when installed),
/// which are exact for this purpose: weir's own error, not the reference's.
const HIGH_PRECISION_TOLERANCE: f64 = 1e-12;
const MIN_CASES: usize = 60;

/// A JSON number, or one of the strings "inf", "-inf", "nan".
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "NumRepr")]
struct Num(f64);

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NumRepr {
    Number(f64),
    Text(String),
}

impl TryFrom<NumRepr> for Num {
    type Error = String;
    fn try_from(repr: NumRepr) -> Result<Num, String> {
        match repr {
            NumRepr::Number(v) => Ok(Num(v)),
            NumRepr::Text(t) => match t.as_str() {
                "inf" => Ok(Num(f64::INFINITY)),
                "-inf" => Ok(Num(f64::NEG_INFINITY)),
                "nan" => Ok(Num(f64::NAN)),
                other => Err(format!("not a number: {other:?}")),
            },
        }
    }
}

#[derive(Debug, Deserialize)]
struct Reference {
    scipy_version: String,
    seed: u64,
    mann_whitney: Vec<MannWhitneyCase>,
    fisher: Vec<FisherCase>,
    welch: Vec<WelchCase>,
    newcombe: Vec<NewcombeCase>,
    special: Special,
}

#[derive(Debug, Deserialize)]
struct MannWhitneyCase {
    name: String,
    baseline: Vec<f64>,
    canary: Vec<f64>,
    method: String,
    u_canary: Num,
    tie_term: f64,
    p_asymptotic: Num,
    p_exact: Option<Num>,
}

#[derive(Debug, Deserialize)]
struct FisherCase {
    name: String,
    table: [[u64; 2]; 2],
    odds_ratio: Num,
    p: Num,
    /// The same p in 40-digit arithmetic (absent without mpmath).
    p_high_precision: Option<Num>,
}

#[derive(Debug, Deserialize)]
struct MomentsJson {
    mean: f64,
    variance: f64,
    n: f64,
}

impl From<&MomentsJson> for Moments {
    fn from(m: &MomentsJson) -> Moments {
        Moments {
            mean: m.mean,
            variance: m.variance,
            n: m.n,
        }
    }
}

#[derive(Debug, Deserialize)]
struct WelchCase {
    name: String,
    baseline: Vec<f64>,
    canary: Vec<f64>,
    confidence: f64,
    baseline_moments: MomentsJson,
    canary_moments: MomentsJson,
    t: Num,
    df: Num,
    p: Num,
    difference: Num,
    ci_low: Num,
    ci_high: Num,
}

#[derive(Debug, Deserialize)]
struct NewcombeCase {
    name: String,
    canary_errors: u64,
    canary_n: u64,
    baseline_errors: u64,
    baseline_n: u64,
    confidence: f64,
    low: f64,
    high: f64,
}

/// Special-function points: the arguments, scipy's value and (when mpmath is
/// installed) a 40-digit value.
#[derive(Debug, Deserialize)]
struct Special {
    normal_sf: Vec<(f64, Num, Option<Num>)>,
    normal_cdf: Vec<(f64, Num, Option<Num>)>,
    normal_quantile: Vec<(f64, Num, Option<Num>)>,
    ln_gamma: Vec<(f64, Num, Option<Num>)>,
    ln_beta: Vec<(f64, f64, Num, Option<Num>)>,
    beta_inc_reg: Vec<(f64, f64, f64, Num, Option<Num>)>,
    student_t_sf: Vec<(f64, f64, Num, Option<Num>)>,
    student_t_quantile: Vec<(f64, f64, Num, Option<Num>)>,
}

/// Comparisons for one family of tests, with the worst agreement seen.
#[derive(Debug)]
struct Family {
    name: &'static str,
    tolerance: f64,
    cases: usize,
    comparisons: usize,
    max_relative: f64,
    worst: String,
    /// Agreements accepted only by the 1e-300 absolute bound (both values
    /// at or below the underflow range, e.g. scipy flushing Φ(-38) to 0).
    absolute_only: usize,
    failures: Vec<String>,
}

impl Family {
    fn new(name: &'static str) -> Family {
        Family::with_tolerance(name, RELATIVE_TOLERANCE)
    }

    fn with_tolerance(name: &'static str, tolerance: f64) -> Family {
        Family {
            name,
            tolerance,
            cases: 0,
            comparisons: 0,
            max_relative: 0.0,
            worst: String::new(),
            absolute_only: 0,
            failures: Vec::new(),
        }
    }

    /// Compares `actual` with scipy's `expected`; relative to the larger of
    /// the two magnitudes and `scale` (for quantities such as CI bounds that
    /// can sit near zero, `scale` is the size they are measured against).
    fn check(&mut self, case: &str, what: &str, actual: f64, expected: f64, scale: f64) {
        self.comparisons += 1;
        if (actual.is_nan() && expected.is_nan()) || actual == expected {
            return;
        }
        let difference = (actual - expected).abs();
        let magnitude = actual.abs().max(expected.abs()).max(scale.abs());
        let relative = if magnitude > 0.0 {
            difference / magnitude
        } else {
            f64::INFINITY
        };
        let relatively_close = relative <= self.tolerance;
        let within = relatively_close || difference <= ABSOLUTE_TOLERANCE;
        if relatively_close && relative > self.max_relative {
            self.max_relative = relative;
            self.worst = format!("{case}: {what}");
        }
        if within && !relatively_close {
            self.absolute_only += 1;
        }
        if !within {
            self.failures.push(format!(
                "{} / {case}: {what}: weir {actual:e}, scipy {expected:e} (relative difference {relative:e})",
                self.name
            ));
        }
    }

    fn fail(&mut self, case: &str, message: String) {
        self.failures
            .push(format!("{} / {case}: {message}", self.name));
    }
}

/// The Python with scipy: `WEIR_PYTHON` (set by `tests/run` to its cached
/// virtualenv), else `python3` on PATH.
fn python() -> String {
    std::env::var("WEIR_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn reference() -> Reference {
    let probe = Command::new(python())
        .args(["-c", "import scipy, numpy"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the scipy reference test needs python3 with scipy and numpy, and \
             `python3 -c \"import scipy, numpy\"` failed:\n{}\nInstall them with \
             `pip install scipy` (which brings numpy).",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "the scipy reference test needs python3 on PATH ({e}); install Python 3, then \
             `pip install scipy`."
        ),
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scipy_reference.py");
    let seed = std::env::var("WEIR_REFERENCE_SEED").unwrap_or_else(|_| SEED.to_owned());
    let out = Command::new(python())
        .arg(&script)
        .args(["--seed", &seed])
        .output()
        .expect("python3 ran a moment ago, so it should run the script");
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints the JSON layout parsed here")
}

fn check_mann_whitney(cases: &[MannWhitneyCase]) -> Family {
    let mut family = Family::new("mann_whitney");
    for case in cases {
        family.cases += 1;
        let name = case.name.as_str();
        let r = match mann_whitney(&case.baseline, &case.canary) {
            Ok(r) => r,
            Err(e) => {
                family.fail(name, format!("refused: {e}"));
                continue;
            }
        };
        let method = match r.method {
            MwMethod::Exact => "exact",
            MwMethod::Asymptotic => "asymptotic",
        };
        if method != case.method {
            family.fail(name, format!("method {method}, expected {}", case.method));
        }
        family.check(name, "U of canary", r.u_canary, case.u_canary.0, 0.0);
        family.check(name, "tie term", r.tie_term, case.tie_term, 0.0);
        let expected_p = case.p_exact.unwrap_or(case.p_asymptotic);
        family.check(name, "p", r.p_value, expected_p.0, 0.0);

        let nb = case.baseline.len() as u64;
        let nc = case.canary.len() as u64;
        let (z, p) = mann_whitney_asymptotic(r.u_canary, nb, nc, r.tie_term);
        family.check(name, "asymptotic p", p, case.p_asymptotic.0, 0.0);
        // z is signed by which cohort is larger.
        let centre = (nb * nc) as f64 / 2.0;
        let sign_ok = z == 0.0 || (z > 0.0) == (r.u_canary > centre);
        if !sign_ok {
            family.fail(
                name,
                format!("z = {z} has the wrong sign for U = {}", r.u_canary),
            );
        }
    }
    family
}

fn check_fisher(cases: &[FisherCase]) -> [Family; 2] {
    let mut family = Family::new("fisher");
    let mut exact = Family::with_tolerance("fisher-40dig", HIGH_PRECISION_TOLERANCE);
    for case in cases {
        family.cases += 1;
        let name = case.name.as_str();
        match fisher_exact(case.table) {
            Ok(r) => {
                family.check(name, "odds ratio", r.odds_ratio, case.odds_ratio.0, 0.0);
                family.check(name, "p", r.p_value, case.p.0, 0.0);
                if let Some(high) = case.p_high_precision {
                    exact.cases += 1;
                    exact.check(name, "p (40 digits)", r.p_value, high.0, 0.0);
                }
            }
            Err(e) => family.fail(name, format!("refused: {e}")),
        }
    }
    [family, exact]
}

fn check_welch(cases: &[WelchCase]) -> Family {
    let mut family = Family::new("welch");
    for case in cases {
        family.cases += 1;
        let half_width = (case.ci_high.0 - case.ci_low.0) / 2.0;
        let from_samples = welch_t(&case.baseline, &case.canary, case.confidence);
        let from_moments = welch_t_from_moments(
            (&case.baseline_moments).into(),
            (&case.canary_moments).into(),
            case.confidence,
        );
        for (how, result) in [("samples", from_samples), ("moments", from_moments)] {
            let name = format!("{} (from {how})", case.name);
            let w = match result {
                Ok(w) => w,
                Err(e) => {
                    family.fail(&name, format!("refused: {e}"));
                    continue;
                }
            };
            family.check(&name, "t", w.t, case.t.0, 0.0);
            family.check(&name, "df", w.df, case.df.0, 0.0);
            family.check(&name, "p", w.p_value, case.p.0, 0.0);
            family.check(
                &name,
                "difference",
                w.difference,
                case.difference.0,
                half_width,
            );
            family.check(&name, "ci low", w.ci_low, case.ci_low.0, half_width);
            family.check(&name, "ci high", w.ci_high, case.ci_high.0, half_width);
        }
    }
    family
}

fn check_newcombe(cases: &[NewcombeCase]) -> Family {
    let mut family = Family::new("newcombe");
    for case in cases {
        family.cases += 1;
        let (low, high) = newcombe_difference_ci(
            case.canary_errors,
            case.canary_n,
            case.baseline_errors,
            case.baseline_n,
            case.confidence,
        );
        let width = case.high - case.low;
        family.check(&case.name, "low", low, case.low, width);
        family.check(&case.name, "high", high, case.high, width);
    }
    family
}

fn check_special(special: &Special) -> [Family; 2] {
    let mut scipy = Family::new("special");
    let mut exact = Family::with_tolerance("special-40dig", HIGH_PRECISION_TOLERANCE);
    let mut point = |what: String, actual: f64, expected: Num, high: Option<Num>| {
        scipy.cases += 1;
        scipy.check(&what, "value", actual, expected.0, 0.0);
        if let Some(high) = high {
            exact.cases += 1;
            exact.check(&what, "value (40 digits)", actual, high.0, 0.0);
        }
    };
    for &(x, v, h) in &special.normal_sf {
        point(format!("normal_sf({x})"), normal_sf(x), v, h);
    }
    for &(x, v, h) in &special.normal_cdf {
        point(format!("normal_cdf({x})"), normal_cdf(x), v, h);
    }
    for &(p, v, h) in &special.normal_quantile {
        point(format!("normal_quantile({p})"), normal_quantile(p), v, h);
    }
    for &(x, v, h) in &special.ln_gamma {
        point(format!("ln_gamma({x})"), ln_gamma(x), v, h);
    }
    for &(a, b, v, h) in &special.ln_beta {
        point(format!("ln_beta({a}, {b})"), ln_beta(a, b), v, h);
    }
    for &(a, b, x, v, h) in &special.beta_inc_reg {
        let what = format!("beta_inc_reg({a}, {b}, {x})");
        point(what, beta_inc_reg(a, b, x), v, h);
    }
    for &(t, df, v, h) in &special.student_t_sf {
        point(
            format!("student_t_sf({t}, {df})"),
            student_t_sf(t, df),
            v,
            h,
        );
    }
    for &(p, df, v, h) in &special.student_t_quantile {
        let what = format!("student_t_quantile({p}, {df})");
        point(what, student_t_quantile(p, df), v, h);
    }
    [scipy, exact]
}

#[test]
fn stats_agree_with_scipy() {
    let reference = reference();
    let [fisher, fisher_high_precision] = check_fisher(&reference.fisher);
    let [special, special_high_precision] = check_special(&reference.special);
    let families = [
        check_mann_whitney(&reference.mann_whitney),
        fisher,
        fisher_high_precision,
        check_welch(&reference.welch),
        check_newcombe(&reference.newcombe),
        special,
        special_high_precision,
    ];

    println!(
        "scipy {} reference, seed {}:",
        reference.scipy_version, reference.seed
    );
    for f in &families {
        if f.cases == 0 && f.name.ends_with("40dig") {
            println!(
                "  {:<13} not run: mpmath is not installed (`pip install mpmath`)",
                f.name
            );
            continue;
        }
        println!(
            "  {:<13} {:>4} cases {:>5} comparisons  max relative difference {:.2e} ({}); {} below 1e-300 only",
            f.name, f.cases, f.comparisons, f.max_relative, f.worst, f.absolute_only
        );
    }
    let test_cases: usize = families
        .iter()
        .filter(|f| !f.name.starts_with("special") && !f.name.ends_with("40dig"))
        .map(|f| f.cases)
        .sum();
    println!("  {test_cases} test cases compared (plus special-function points)");

    let failures: Vec<&String> = families.iter().flat_map(|f| &f.failures).collect();
    assert!(
        failures.is_empty(),
        "{} disagreement(s) with scipy:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        test_cases >= MIN_CASES,
        "only {test_cases} test cases were compared; the reference script should produce at least {MIN_CASES}"
    );
}
