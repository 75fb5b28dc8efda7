//! Margins in a direction: metrics where lower is worse (decode speed),
//! where either way is worse (output tokens), and the distribution kind
//! that judges such per-request quantities. Each test states a situation
//! and the findings and verdict a person should get.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution as _, LogNormal};
use weir_analysis::compare::GaugeInterval;
use weir_analysis::decision::{AnalysisError, Decision, Finding, Role};
use weir_analysis::{
    Bounds, Counts, Direction, Distribution, Margin, MetricKind, MetricSpec, Observations, Policy,
    Verdict, decide,
};

const ALPHA: f64 = 0.05;

fn spec(name: &str, kind: MetricKind, bounds: Bounds, quantiles: &[f64]) -> MetricSpec {
    MetricSpec {
        name: name.into(),
        kind,
        bounds,
        quantiles: quantiles.to_vec(),
        hard_limit: None,
    }
}

/// Twenty intervals around `mean`, ±2% in a fixed pattern (no randomness:
/// the findings below are far from their boundaries either way).
fn gauge(mean: f64) -> Vec<GaugeInterval> {
    (0..20)
        .map(|i| GaugeInterval {
            value: mean * (1.0 + 0.01 * (f64::from(i % 5) - 2.0)),
            throughput: None,
        })
        .collect()
}

fn gauges(baseline: f64, canary: f64) -> Observations {
    Observations::Gauge {
        baseline: gauge(baseline),
        canary: gauge(canary),
        per_unit: false,
    }
}

fn rates(baseline: (u64, u64), canary: (u64, u64)) -> Observations {
    Observations::Errors {
        baseline: Counts {
            errors: baseline.0,
            total: baseline.1,
        },
        canary: Counts {
            errors: canary.0,
            total: canary.1,
        },
    }
}

/// `n` lognormal values with median `median` and log-sd `sigma`, times
/// `scale`, rounded to whole numbers when `round`, with a share `zeros` of
/// exact zeros (empty answers).
fn values(seed: u64, n: usize, median: f64, sigma: f64, scale: f64, zeros: f64) -> Distribution {
    let mut rng = StdRng::seed_from_u64(seed);
    let d = LogNormal::new(median.ln(), sigma).expect("valid");
    let mut dist = Distribution::new();
    for _ in 0..n {
        let x = if rng.random::<f64>() < zeros {
            0.0
        } else {
            (d.sample(&mut rng) * scale).round()
        };
        dist.record(x).expect("finite");
    }
    dist
}

fn tokens(seed: u64, n: usize, scale: f64, zeros: f64) -> Distribution {
    values(seed, n, 180.0, 0.5, scale, zeros)
}

fn distributions(baseline: Distribution, canary: Distribution) -> Observations {
    Observations::Distribution { baseline, canary }
}

/// Every deciding entry as `(name, finding)`, in order.
fn findings(d: &Decision) -> Vec<(String, Finding)> {
    d.metrics
        .iter()
        .filter(|m| m.role != Role::Reference)
        .map(|m| (m.name.clone(), m.finding))
        .collect()
}

fn judge(spec: MetricSpec, obs: Observations) -> Decision {
    decide(&Policy::default(), &[(spec, obs)], None).expect("valid")
}

/// A situation, the margins, the observations, each deciding entry's
/// finding and the verdict.
type Case = (
    &'static str,
    Bounds,
    Observations,
    Vec<(&'static str, Finding)>,
    Verdict,
);

/// Findings of one-direction and two-direction margins on both scales: the
/// log scale (a relative margin on a gauge's ratio of means) and the raw
/// scale (an absolute margin on a gauge's difference, and on a share of
/// requests with the exact evidence).
#[test]
fn findings_for_decrease_and_both_margins_on_both_scales() {
    use Finding::{Exceeds, Within};
    let rel = Margin::Relative;
    let abs = Margin::Absolute;
    let both = |up, down| Bounds {
        increase: Some(up),
        decrease: Some(down),
    };
    #[rustfmt::skip]
    let table: Vec<Case> = vec![
        // Log scale: maxDecrease 25% on a ratio of means.
        ("40% lower", Bounds::max_decrease(rel(0.25)), gauges(50.0, 30.0),
            vec![("g.mean", Exceeds)], Verdict::Abort),
        ("5% lower", Bounds::max_decrease(rel(0.25)), gauges(50.0, 47.5),
            vec![("g.mean", Within)], Verdict::Promote),
        ("50% higher: a decrease margin allows it", Bounds::max_decrease(rel(0.25)),
            gauges(50.0, 75.0), vec![("g.mean", Within)], Verdict::Promote),
        // Log scale, both ways, different margins (+10%, −30%).
        ("20% higher", both(rel(0.10), rel(0.30)), gauges(50.0, 60.0),
            vec![("g.mean.up", Exceeds), ("g.mean.down", Within)], Verdict::Abort),
        ("20% lower", both(rel(0.10), rel(0.30)), gauges(50.0, 40.0),
            vec![("g.mean.up", Within), ("g.mean.down", Within)], Verdict::Promote),
        ("40% lower", both(rel(0.10), rel(0.30)), gauges(50.0, 30.0),
            vec![("g.mean.up", Within), ("g.mean.down", Exceeds)], Verdict::Abort),
        // Raw scale, both ways: at most 5 units higher or 3 units lower.
        ("8 higher", both(abs(5.0), abs(3.0)), gauges(50.0, 58.0),
            vec![("g.mean.up", Exceeds), ("g.mean.down", Within)], Verdict::Abort),
        ("2 lower", both(abs(5.0), abs(3.0)), gauges(50.0, 48.0),
            vec![("g.mean.up", Within), ("g.mean.down", Within)], Verdict::Promote),
        ("6 lower", both(abs(5.0), abs(3.0)), gauges(50.0, 44.0),
            vec![("g.mean.up", Within), ("g.mean.down", Exceeds)], Verdict::Abort),
        // Raw scale, exact evidence on a share where lower is worse (say
        // answers that cite a source): at most 5pp lower.
        ("90% → 80%", Bounds::max_decrease(abs(0.05)), rates((9_000, 10_000), (8_000, 10_000)),
            vec![("g.difference", Exceeds)], Verdict::Abort),
        ("90% → 90%", Bounds::max_decrease(abs(0.05)), rates((9_000, 10_000), (9_010, 10_000)),
            vec![("g.difference", Within)], Verdict::Promote),
        // The same share with a relative margin: at most 10% lower.
        ("90% → 72%", Bounds::max_decrease(rel(0.10)), rates((9_000, 10_000), (7_200, 10_000)),
            vec![("g.difference", Exceeds)], Verdict::Abort),
        // A share judged both ways by 3pp: 20% → 30% and 20% → 10%.
        ("20% → 30%", Bounds::max_change(abs(0.03)), rates((2_000, 10_000), (3_000, 10_000)),
            vec![("g.difference.up", Exceeds), ("g.difference.down", Within)], Verdict::Abort),
        ("20% → 10%", Bounds::max_change(abs(0.03)), rates((2_000, 10_000), (1_000, 10_000)),
            vec![("g.difference.up", Within), ("g.difference.down", Exceeds)], Verdict::Abort),
    ];
    for (case, bounds, obs, expected, verdict) in table {
        let kind = match obs {
            Observations::Errors { .. } => MetricKind::ErrorRate,
            _ => MetricKind::Gauge,
        };
        let d = judge(spec("g", kind, bounds, &[]), obs);
        let expected: Vec<(String, Finding)> =
            expected.into_iter().map(|(n, f)| (n.into(), f)).collect();
        assert_eq!(findings(&d), expected, "{case}: {}", d.rule);
        assert_eq!(d.verdict, verdict, "{case}: {}", d.rule);
    }
}

/// The entries of a decrease effect carry its direction and a signed
/// margin; the rule reads as the bound the interval is held against.
#[test]
fn a_slower_decode_is_aborted_against_a_negative_margin() {
    let speed = |seed, scale| values(seed, 5_000, 60.0, 0.2, scale, 0.0);
    let d = judge(
        spec(
            "decode_speed",
            MetricKind::Distribution,
            Bounds::max_decrease(Margin::Relative(0.25)),
            &[0.05, 0.5],
        ),
        distributions(speed(1, 1.0), speed(2, 0.65)),
    );
    assert_eq!(d.verdict, Verdict::Abort, "{}", d.rule);
    let shift = &d.metrics[0];
    assert_eq!(shift.name, "decode_speed.shift");
    assert_eq!(shift.direction, Some(Direction::Decrease));
    assert_eq!(shift.margin, Some(-0.25));
    let est = shift.estimate.expect("judged");
    assert!((est + 0.35).abs() < 0.02, "estimate {est}");
    assert!(
        shift.ci_high.expect("judged") < -0.25,
        "{}",
        shift.describe()
    );
    assert!(
        shift.describe().starts_with("decode_speed.shift -3")
            && shift.describe().ends_with("vs margin -25.0%"),
        "{}",
        shift.describe()
    );
    assert!(
        d.rule
            .starts_with("abort: regression beyond the margin: decode_speed.shift -"),
        "{}",
        d.rule
    );
    // Three effect-directions, one direction each: m = 3.
    assert!((d.sides.lower - ALPHA / 3.0).abs() < 1e-12);

    // 10% slower is within a 25% decrease margin.
    let d = judge(
        spec(
            "decode_speed",
            MetricKind::Distribution,
            Bounds::max_decrease(Margin::Relative(0.25)),
            &[0.05, 0.5],
        ),
        distributions(speed(3, 1.0), speed(4, 0.90)),
    );
    assert_eq!(d.verdict, Verdict::Promote, "{}", d.rule);
}

/// Output length judged both ways: a rambling canary and a truncating one
/// are both caught, each on the right side, and an unchanged one promotes.
#[test]
fn output_length_is_judged_both_ways() {
    let metric = || {
        spec(
            "tokens",
            MetricKind::Distribution,
            Bounds::max_change(Margin::Relative(0.20)),
            &[0.5, 0.99],
        )
    };
    let names = |d: &Decision| -> Vec<String> { findings(d).into_iter().map(|(n, _)| n).collect() };

    let same = judge(
        metric(),
        distributions(tokens(1, 10_000, 1.0, 0.01), tokens(2, 10_000, 1.0, 0.01)),
    );
    assert_eq!(same.verdict, Verdict::Promote, "{}", same.rule);
    assert_eq!(
        names(&same),
        [
            "tokens.shift.up",
            "tokens.shift.down",
            "tokens.p50.up",
            "tokens.p50.down",
            "tokens.p99.up",
            "tokens.p99.down"
        ]
    );
    // Both directions of three effects: m = 6.
    assert!((same.sides.lower - ALPHA / 6.0).abs() < 1e-12);

    let rambling = judge(
        metric(),
        distributions(tokens(3, 5_000, 1.0, 0.01), tokens(4, 5_000, 2.0, 0.01)),
    );
    assert_eq!(rambling.verdict, Verdict::Abort, "{}", rambling.rule);
    let shown: Vec<String> = rambling
        .metrics
        .iter()
        .filter(|m| m.finding == Finding::Exceeds)
        .map(|m| m.name.clone())
        .collect();
    assert!(
        shown.iter().all(|n| n.ends_with(".up")) && shown.contains(&"tokens.shift.up".to_string()),
        "{shown:?}"
    );

    let truncating = judge(
        metric(),
        distributions(tokens(5, 5_000, 1.0, 0.01), tokens(6, 5_000, 0.5, 0.01)),
    );
    assert_eq!(truncating.verdict, Verdict::Abort, "{}", truncating.rule);
    let shown: Vec<String> = truncating
        .metrics
        .iter()
        .filter(|m| m.finding == Finding::Exceeds)
        .map(|m| m.name.clone())
        .collect();
    assert!(
        shown.iter().all(|n| n.ends_with(".down"))
            && shown.contains(&"tokens.shift.down".to_string()),
        "{shown:?}"
    );
    assert!(
        truncating.rule.contains("vs margin -20.0%"),
        "{}",
        truncating.rule
    );
}

/// The abort-side end is the wider one: the lower end of an `.up` effect,
/// the upper end of a `.down` effect (levels α/m and α swapped).
#[test]
fn each_direction_spends_the_small_level_on_its_abort_side() {
    let d = judge(
        spec(
            "tokens",
            MetricKind::Distribution,
            Bounds::max_change(Margin::Relative(0.20)),
            &[],
        ),
        distributions(tokens(7, 3_000, 1.0, 0.0), tokens(8, 3_000, 1.0, 0.0)),
    );
    let half_widths = |name: &str| {
        let m = d.metrics.iter().find(|m| m.name == name).expect("entry");
        let (est, lo, hi) = (
            m.statistic.expect("judged"),
            m.ci_low.expect("judged").ln_1p(),
            m.ci_high.expect("judged").ln_1p(),
        );
        (est - lo, hi - est)
    };
    let (up_low, up_high) = half_widths("tokens.shift.up");
    let (down_low, down_high) = half_widths("tokens.shift.down");
    assert!(up_low > up_high * 1.05, "{up_low} vs {up_high}");
    assert!(down_high > down_low * 1.05, "{down_high} vs {down_low}");
    assert!((d.sides.lower - ALPHA / 2.0).abs() < 1e-12 && (d.sides.upper - ALPHA).abs() < 1e-12);
}

/// Empty answers have 0 output tokens: they are counted, rank lowest and
/// move the low quantiles, and neither cohort being all zeros panics.
#[test]
fn zeros_are_kept_as_the_smallest_values() {
    let metric = || {
        spec(
            "tokens",
            MetricKind::Distribution,
            Bounds::max_change(Margin::Relative(0.20)),
            &[0.1, 0.5],
        )
    };
    // 20% empty answers in the canary, 1% in the baseline.
    let (b, c) = (tokens(9, 5_000, 1.0, 0.01), tokens(10, 5_000, 1.0, 0.20));
    let zeros = |d: &Distribution| d.bins().find(|b| b.index.is_none()).map_or(0, |b| b.count);
    assert!(zeros(&c) > 900, "{}", zeros(&c));
    let d = judge(metric(), distributions(b, c));
    let entry = |name: &str| d.metrics.iter().find(|m| m.name == name).expect("entry");
    // Nothing vanished: every sample is counted, zeros included.
    assert_eq!(
        (
            entry("tokens.shift.down").baseline_n,
            entry("tokens.shift.down").canary_n
        ),
        (5_000, 5_000)
    );
    // The canary's p10 is an empty answer: a drop to nothing.
    let p10 = entry("tokens.p10.down");
    assert_eq!(p10.canary_value, Some(0.0));
    assert_eq!(p10.finding, Finding::Exceeds, "{}", p10.describe());
    assert!(p10.estimate.expect("judged") < -0.99, "{}", p10.describe());
    // The median of the answers that are not empty did not move.
    assert_ne!(entry("tokens.p50.up").finding, Finding::Exceeds);
    // The rank statistics see the zeros: the shift is pulled down.
    assert!(entry("tokens.shift.down").estimate.expect("judged") < -0.05);
    assert_eq!(d.verdict, Verdict::Abort, "{}", d.rule);

    // A canary that answers nothing at all.
    let all_zero = values(11, 1_000, 1.0, 0.1, 1.0, 1.0);
    assert_eq!(all_zero.count(), 1_000);
    let d = judge(
        metric(),
        distributions(tokens(12, 1_000, 1.0, 0.0), all_zero.clone()),
    );
    assert_eq!(d.verdict, Verdict::Abort, "{}", d.rule);
    assert!(d.rule.contains("tokens.shift.down"), "{}", d.rule);
    // Both cohorts all zeros: identical, nothing to hold against them.
    let d = judge(metric(), distributions(all_zero.clone(), all_zero));
    assert_eq!(d.verdict, Verdict::Promote, "{}", d.rule);
}

/// The share of `finish_reason: length` (or of empty answers) is a
/// proportion where higher is worse: the error-rate machinery as it is.
#[test]
fn finish_length_share_is_judged_like_an_error_rate() {
    let metric = || {
        spec(
            "finish_length",
            MetricKind::ErrorRate,
            Bounds::max_increase(Margin::Absolute(0.03)),
            &[],
        )
    };
    let d = judge(metric(), rates((200, 10_000), (205, 10_000)));
    assert_eq!(d.verdict, Verdict::Promote, "{}", d.rule);
    let d = judge(metric(), rates((200, 10_000), (1_000, 10_000)));
    assert_eq!(d.verdict, Verdict::Abort, "{}", d.rule);
    assert!(
        d.rule.contains("finish_length.difference +8.00pp") && d.rule.contains("vs margin +3.00pp"),
        "{}",
        d.rule
    );
}

#[test]
fn a_metric_needs_a_margin_and_a_decrease_below_everything() {
    let obs = || distributions(Distribution::new(), Distribution::new());
    let err = decide(
        &Policy::default(),
        &[(
            spec("tokens", MetricKind::Distribution, Bounds::default(), &[]),
            obs(),
        )],
        None,
    )
    .expect_err("no margin");
    match err {
        AnalysisError::InvalidPolicy { field, reason } => {
            assert_eq!(field, "metrics[tokens].maxIncrease");
            assert!(
                reason.contains("maxDecrease") && reason.contains("maxChange"),
                "{reason}"
            );
        }
        other => panic!("{other}"),
    }

    let err = decide(
        &Policy::default(),
        &[(
            spec(
                "speed",
                MetricKind::Distribution,
                Bounds::max_decrease(Margin::Relative(1.0)),
                &[],
            ),
            obs(),
        )],
        None,
    )
    .expect_err("a 100% decrease");
    assert!(
        err.to_string()
            .starts_with("metrics[speed].maxDecrease: 100%"),
        "{err}"
    );

    // A distribution is compared as ratios, and says so without calling
    // itself a latency.
    let err = decide(
        &Policy::default(),
        &[(
            spec(
                "tokens",
                MetricKind::Distribution,
                Bounds::max_change(Margin::Absolute(20.0)),
                &[],
            ),
            obs(),
        )],
        None,
    )
    .expect_err("absolute distribution margin");
    let text = err.to_string();
    assert!(
        text.starts_with("metrics[tokens].maxIncrease: distribution margins are relative"),
        "{text}"
    );
    assert!(!text.contains("latency"), "{text}");

    // The decrease side is validated too.
    let err = decide(
        &Policy::default(),
        &[(
            spec(
                "ttft",
                MetricKind::Latency,
                Bounds {
                    increase: Some(Margin::Relative(0.1)),
                    decrease: Some(Margin::Absolute(0.1)),
                },
                &[],
            ),
            Observations::Latency {
                baseline: Distribution::new(),
                canary: Distribution::new(),
            },
        )],
        None,
    )
    .expect_err("absolute latency decrease");
    assert!(
        err.to_string()
            .starts_with("metrics[ttft].maxDecrease: latency margins are relative"),
        "{err}"
    );

    // A distribution metric takes distribution observations.
    let err = decide(
        &Policy::default(),
        &[(
            spec(
                "tokens",
                MetricKind::Distribution,
                Bounds::max_change(Margin::Relative(0.2)),
                &[],
            ),
            Observations::Latency {
                baseline: Distribution::new(),
                canary: Distribution::new(),
            },
        )],
        None,
    )
    .expect_err("mismatch");
    assert_eq!(
        err,
        AnalysisError::MismatchedObservations {
            metric: "tokens".into(),
            expected: "distribution",
            found: "latency",
        }
    );
}

#[test]
fn kinds_and_directions_serialize_as_status_shows_them() {
    assert_eq!(
        serde_json::to_value(MetricKind::Distribution).ok(),
        Some("distribution".into())
    );
    assert_eq!(
        serde_json::to_value(Direction::Decrease).ok(),
        Some("decrease".into())
    );
    let d = judge(
        spec(
            "speed",
            MetricKind::Distribution,
            Bounds::max_decrease(Margin::Relative(0.25)),
            &[],
        ),
        distributions(
            values(13, 300, 60.0, 0.2, 1.0, 0.0),
            values(14, 300, 60.0, 0.2, 1.0, 0.0),
        ),
    );
    let json = serde_json::to_value(&d).expect("serializes");
    assert_eq!(json["metrics"][0]["direction"], "decrease");
    assert_eq!(json["metrics"][0]["kind"], "distribution");
    // Reference entries have no direction, and documents without one (from
    // before directions) still read.
    assert!(json["metrics"][1].get("direction").is_none());
    let back: Decision = serde_json::from_value(json).expect("reads back");
    assert_eq!(back, d);
}
