//! Speed of comparing two cohorts of 1,000,000 requests each.
//!
//! `decide` is what the controller runs every interval; `from_values` is
//! the cost of building the distributions from raw samples (the proxy
//! records as it goes, so in production this is paid per request, not per
//! look). `bench/analysis/run` prints these beside scipy's Mann-Whitney on
//! the same data.

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution as _, LogNormal};
use weir_analysis::compare::compare_latency;
use weir_analysis::{
    Bounds, Distribution, Margin, MetricKind, MetricSpec, Observations, Policy, decide,
};

const N: usize = 1_000_000;

fn samples(seed: u64, scale: f64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let d = LogNormal::new(0.2f64.ln(), 0.3).expect("valid lognormal");
    (0..N).map(|_| d.sample(&mut rng) * scale).collect()
}

fn bench(c: &mut Criterion) {
    let (b, k) = (samples(1, 1.0), samples(2, 1.03));
    let (db, dc) = (
        Distribution::from_values(&b).expect("finite samples"),
        Distribution::from_values(&k).expect("finite samples"),
    );
    let spec = MetricSpec {
        name: "ttft".into(),
        kind: MetricKind::Latency,
        bounds: Bounds::max_increase(Margin::Relative(0.10)),
        quantiles: vec![0.5, 0.99],
        hard_limit: None,
    };
    let policy = Policy::default();
    let mut group = c.benchmark_group("1M vs 1M");
    group.sample_size(20);
    group.bench_function("decide (latency: shift, p50, p99)", |bench| {
        bench.iter(|| {
            let obs = Observations::Latency {
                baseline: db.clone(),
                canary: dc.clone(),
            };
            decide(&policy, &[(spec.clone(), obs)], None).expect("valid policy")
        })
    });
    group.bench_function("compare_latency", |bench| {
        bench.iter(|| compare_latency(&db, &dc, &[0.5, 0.99], 0.95).expect("non-empty"))
    });
    group.bench_function("from_values (both cohorts) + decide", |bench| {
        bench.iter(|| {
            let obs = Observations::Latency {
                baseline: Distribution::from_values(&b).expect("finite"),
                canary: Distribution::from_values(&k).expect("finite"),
            };
            decide(&policy, &[(spec.clone(), obs)], None).expect("valid policy")
        })
    });
    group.bench_function("mann_whitney on raw samples (sort + ranks)", |bench| {
        bench.iter(|| weir_analysis::stats::rank::mann_whitney(&b, &k).expect("valid samples"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
