//! Behaviour of `decide` on seeded data: each test states a situation a
//! rollout meets and the verdict (and rule) a person should get.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution as _, LogNormal};
use weir_analysis::compare::GaugeInterval;
use weir_analysis::decision::{AnalysisError, Finding, Load, Role};
use weir_analysis::{
    Bounds, Counts, Distribution, Margin, MetricKind, MetricSpec, Observations, Policy, Verdict,
    decide,
};

fn lognormal(seed: u64, n: usize, scale: f64, tail_p: f64) -> Distribution {
    let mut rng = StdRng::seed_from_u64(seed);
    let d = LogNormal::new(0.2f64.ln(), 0.3).expect("valid");
    let mut dist = Distribution::new();
    for _ in 0..n {
        let mut x = d.sample(&mut rng) * scale;
        if rng.random::<f64>() < tail_p {
            x *= 3.0;
        }
        dist.record(x).expect("finite");
    }
    dist
}

fn ttft(quantiles: &[f64]) -> MetricSpec {
    MetricSpec {
        name: "ttft".into(),
        kind: MetricKind::Latency,
        bounds: Bounds::max_increase(Margin::Relative(0.10)),
        quantiles: quantiles.to_vec(),
        hard_limit: None,
    }
}

fn errors(hard_limit: Option<f64>) -> MetricSpec {
    MetricSpec {
        name: "errors".into(),
        kind: MetricKind::ErrorRate,
        bounds: Bounds::max_increase(Margin::Absolute(0.005)),
        quantiles: vec![],
        hard_limit,
    }
}

fn latency(baseline: Distribution, canary: Distribution) -> Observations {
    Observations::Latency { baseline, canary }
}

#[test]
fn identical_cohorts_are_promoted_with_every_effect_within() {
    let obs = latency(
        lognormal(1, 10_000, 1.0, 0.0),
        lognormal(2, 10_000, 1.0, 0.0),
    );
    let d = decide(&Policy::default(), &[(ttft(&[0.5, 0.99]), obs)], None).expect("valid");
    assert_eq!(d.verdict, Verdict::Promote, "{}", d.rule);
    let deciding: Vec<_> = d
        .metrics
        .iter()
        .filter(|m| m.role == Role::Decision)
        .collect();
    assert_eq!(deciding.len(), 3);
    assert!(deciding.iter().all(|m| m.finding == Finding::Within));
    // Each interval holds zero and stays inside ±10%.
    for m in deciding {
        let (lo, hi) = (m.ci_low.expect("judged"), m.ci_high.expect("judged"));
        assert!(
            lo < 0.0 && hi > 0.0 && hi < 0.10,
            "{}: [{lo}, {hi}]",
            m.name
        );
    }
    // Bonferroni over three effects on the abort side only.
    assert!((d.sides.lower - 0.05 / 3.0).abs() < 1e-12);
    assert!((d.sides.upper - 0.05).abs() < 1e-12);
}

#[test]
fn a_thirty_percent_slower_canary_is_aborted_naming_the_shift() {
    let obs = latency(lognormal(3, 2_000, 1.0, 0.0), lognormal(4, 2_000, 1.3, 0.0));
    let d = decide(&Policy::default(), &[(ttft(&[0.5]), obs)], None).expect("valid");
    assert_eq!(d.verdict, Verdict::Abort);
    assert!(d.rule.contains("ttft.shift"), "{}", d.rule);
    let shift = d
        .metrics
        .iter()
        .find(|m| m.name == "ttft.shift")
        .expect("shift entry");
    let est = shift.estimate.expect("judged");
    assert!((est - 0.3).abs() < 0.05, "estimate {est}");
    assert!(shift.ci_low.expect("judged") > 0.10);
}

#[test]
fn a_tail_only_regression_is_caught_by_p99_while_the_median_holds() {
    let obs = latency(
        lognormal(5, 10_000, 1.0, 0.0),
        lognormal(6, 10_000, 1.0, 0.05),
    );
    let d = decide(&Policy::default(), &[(ttft(&[0.5, 0.99]), obs)], None).expect("valid");
    assert_eq!(d.verdict, Verdict::Abort, "{}", d.rule);
    let p99 = d
        .metrics
        .iter()
        .find(|m| m.name == "ttft.p99")
        .expect("p99 entry");
    assert_eq!(p99.finding, Finding::Exceeds);
    let p50 = d
        .metrics
        .iter()
        .find(|m| m.name == "ttft.p50")
        .expect("p50 entry");
    assert_ne!(p50.finding, Finding::Exceeds, "the median did not move");
    assert!(
        d.rule.contains("ttft.p99") && !d.rule.contains("ttft.p50"),
        "{}",
        d.rule
    );
}

#[test]
fn too_few_samples_continue_and_say_how_many_are_needed() {
    let obs = latency(lognormal(7, 150, 1.0, 0.0), lognormal(8, 150, 2.0, 0.0));
    let d = decide(&Policy::default(), &[(ttft(&[0.99]), obs)], None).expect("valid");
    assert_eq!(d.verdict, Verdict::Continue);
    assert!(
        d.rule.contains("needs 200 samples per cohort, has 150"),
        "{}",
        d.rule
    );
    // p99 needs 10 tail observations per cohort: 1000 samples.
    assert!(d.rule.contains("p99 needs 1000"), "{}", d.rule);
}

#[test]
fn no_errors_seen_is_not_proof_of_health() {
    // 0 errors in 300 requests cannot exclude a canary rate of 1%+.
    let obs = Observations::Errors {
        baseline: Counts {
            errors: 0,
            total: 300,
        },
        canary: Counts {
            errors: 0,
            total: 300,
        },
    };
    let d = decide(&Policy::default(), &[(errors(None), obs)], None).expect("valid");
    assert_eq!(d.verdict, Verdict::Continue, "{}", d.rule);
    let diff = &d.metrics[0];
    assert!(diff.ci_high.expect("judged") > 0.005, "{diff:?}");
}

#[test]
fn error_rate_jump_aborts_and_equal_rates_promote() {
    let up = Observations::Errors {
        baseline: Counts {
            errors: 50,
            total: 10_000,
        },
        canary: Counts {
            errors: 200,
            total: 10_000,
        },
    };
    let d = decide(&Policy::default(), &[(errors(None), up)], None).expect("valid");
    assert_eq!(d.verdict, Verdict::Abort, "{}", d.rule);
    assert!(d.rule.contains("errors.difference"), "{}", d.rule);

    let equal = Observations::Errors {
        baseline: Counts {
            errors: 100,
            total: 100_000,
        },
        canary: Counts {
            errors: 95,
            total: 100_000,
        },
    };
    let d = decide(&Policy::default(), &[(errors(None), equal)], None).expect("valid");
    assert_eq!(d.verdict, Verdict::Promote, "{}", d.rule);
    // The Fisher reference entry is there, with a large p-value.
    let fisher = d
        .metrics
        .iter()
        .find(|m| m.test == "fisher-exact")
        .expect("reference");
    assert!(fisher.p_value.expect("computed") > 0.5);
}

#[test]
fn hard_limit_aborts_before_min_samples() {
    let obs = Observations::Errors {
        baseline: Counts {
            errors: 0,
            total: 50,
        },
        canary: Counts {
            errors: 30,
            total: 50,
        },
    };
    let d = decide(&Policy::default(), &[(errors(Some(0.05)), obs)], None).expect("valid");
    assert_eq!(d.verdict, Verdict::Abort);
    assert!(d.rule.contains("hard limit"), "{}", d.rule);
}

#[test]
fn unequal_per_replica_load_is_not_judged() {
    let obs = latency(
        lognormal(9, 5_000, 1.0, 0.0),
        lognormal(10, 5_000, 1.5, 0.0),
    );
    let load = Load {
        baseline_per_replica: 10.0,
        canary_per_replica: 14.0,
    };
    let d = decide(&Policy::default(), &[(ttft(&[]), obs.clone())], Some(load)).expect("valid");
    assert_eq!(d.verdict, Verdict::Continue);
    assert!(
        d.rule.contains("per-replica load differs by 29%"),
        "{}",
        d.rule
    );
    let fair = Load {
        baseline_per_replica: 10.0,
        canary_per_replica: 11.0,
    };
    let d = decide(&Policy::default(), &[(ttft(&[]), obs)], Some(fair)).expect("valid");
    assert_eq!(d.verdict, Verdict::Abort);
}

#[test]
fn gauge_per_unit_of_throughput_forgives_a_busier_canary() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut points = |util: f64, rps: f64| -> Vec<GaugeInterval> {
        (0..20)
            .map(|_| GaugeInterval {
                value: util * (1.0 + 0.02 * (rng.random::<f64>() - 0.5)),
                throughput: Some(rps),
            })
            .collect()
    };
    let (baseline, canary) = (points(50.0, 10.0), points(60.0, 12.0));
    let spec = MetricSpec {
        name: "gpu".into(),
        kind: MetricKind::Gauge,
        bounds: Bounds::max_increase(Margin::Relative(0.15)),
        quantiles: vec![],
        hard_limit: None,
    };
    let raw = Observations::Gauge {
        baseline: baseline.clone(),
        canary: canary.clone(),
        per_unit: false,
    };
    let per_unit = Observations::Gauge {
        baseline,
        canary,
        per_unit: true,
    };
    // +20% raw utilization is beyond a 15% margin...
    let d = decide(&Policy::default(), &[(spec.clone(), raw)], None).expect("valid");
    assert_eq!(d.verdict, Verdict::Abort, "{}", d.rule);
    // ...but per request served it is the same.
    let d = decide(&Policy::default(), &[(spec, per_unit)], None).expect("valid");
    assert_eq!(d.verdict, Verdict::Promote, "{}", d.rule);
}

#[test]
fn invalid_settings_name_the_field_and_the_fix() {
    let obs = latency(Distribution::new(), Distribution::new());
    let mut spec = ttft(&[0.5]);
    spec.bounds = Bounds::max_increase(Margin::Absolute(0.05));
    let err = decide(&Policy::default(), &[(spec, obs.clone())], None)
        .expect_err("absolute latency margin");
    assert!(
        err.to_string().contains("metrics[ttft].maxIncrease") && err.to_string().contains("10%"),
        "{err}"
    );

    let err =
        decide(&Policy::default(), &[(ttft(&[1.5]), obs.clone())], None).expect_err("bad quantile");
    assert!(err.to_string().contains("quantiles"), "{err}");

    let policy = Policy {
        confidence: 95.0,
        ..Policy::default()
    };
    let err = decide(&policy, &[(ttft(&[]), obs.clone())], None).expect_err("bad confidence");
    assert!(err.to_string().starts_with("confidence:"), "{err}");

    let err = decide(&Policy::default(), &[(errors(None), obs)], None).expect_err("mismatch");
    assert!(
        matches!(err, AnalysisError::MismatchedObservations { .. }),
        "{err}"
    );
    assert_eq!(
        decide(&Policy::default(), &[], None),
        Err(AnalysisError::NoMetrics)
    );
}

#[test]
fn margins_parse_from_what_users_write() {
    assert_eq!("10%".parse::<Margin>(), Ok(Margin::Relative(0.10)));
    assert_eq!(" 0.5pp ".parse::<Margin>(), Ok(Margin::Absolute(0.005)));
    assert_eq!("3".parse::<Margin>(), Ok(Margin::Absolute(3.0)));
    let err = "ten%".parse::<Margin>().expect_err("not a number");
    assert!(err.contains("10%") && err.contains("0.5pp"), "{err}");
    assert!("-5%".parse::<Margin>().is_err());
}
