//! Latency as a client measures it follows the configured model.
//!
//! Each test checks two things: the seeded plan itself is within a
//! statistical band of the configuration (so the model is right), and the
//! measured latencies match that plan up to timer and scheduling overhead
//! (so the server executes it). Tokio timers fire at or after their
//! deadline, rounded up to the millisecond; loopback, a debug build and a
//! two-core test machine shared with other builds add more. So
//! measurements may be up to [`OVERHEAD`] later than planned and never
//! meaningfully earlier.

mod common;

use std::time::Duration;

use common::{chat, client, fast, start};
use tokio::task::JoinSet;
use weir_sim::SimConfig;
use weir_sim::model::RequestPlan;

/// Allowed lateness of a measured TTFT over the planned one.
const OVERHEAD: f64 = 0.015;

/// Sends `n` streaming requests, `batch` at a time; returns each one's time
/// to first byte, seconds.
async fn ttfts(sim: &weir_sim::SimHandle, n: usize, batch: usize) -> Vec<f64> {
    let c = client();
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(batch) {
        let mut set = JoinSet::new();
        for _ in chunk {
            let c = c.clone();
            let url = sim.base_url();
            set.spawn(async move {
                let ex = common::send(
                    &c,
                    http::Method::POST,
                    &format!("{url}/v1/chat/completions"),
                    &chat(true),
                )
                .await;
                assert_eq!(ex.status, http::StatusCode::OK);
                ex.first_frame().as_secs_f64()
            });
        }
        while let Some(t) = set.join_next().await {
            out.push(t.expect("request task"));
        }
    }
    out
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn planned(config: &SimConfig, n: u64) -> Vec<RequestPlan> {
    let seed = config.seed.expect("seeded");
    (0..n)
        .map(|i| RequestPlan::draw(&config.profile(), seed, i, None, true))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttft_median_matches_the_configured_median() {
    let config = SimConfig {
        ttft: Duration::from_millis(100),
        ttft_sigma: 0.1,
        tokens: 2,
        seed: Some(20),
        ..fast()
    };
    let n = 200;
    // The model: the sample median of n lognormal draws has a log-scale
    // sd of sqrt(pi/2)·sigma/sqrt(n) = 0.0089; 4.5 sd is ±4.1%.
    let mut plan: Vec<f64> = planned(&config, n as u64)
        .iter()
        .map(|p| p.ttft.as_secs_f64())
        .collect();
    let plan_median = median(&mut plan);
    let band = 4.5 * (std::f64::consts::PI / 2.0).sqrt() * 0.1 / (n as f64).sqrt();
    assert!(
        (plan_median / 0.1).ln().abs() < band,
        "planned median {plan_median}"
    );

    let sim = start(config).await;
    let mut measured = ttfts(&sim, n, 10).await;
    let measured_median = median(&mut measured);
    eprintln!("TTFT median: planned {plan_median:.4}s, measured {measured_median:.4}s");
    assert!(
        measured_median >= plan_median - 0.0005 && measured_median <= plan_median + OVERHEAD,
        "measured {measured_median}, planned {plan_median}"
    );
    assert_eq!(sim.requests(), n as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prob_slows_the_right_fraction() {
    let config = SimConfig {
        ttft: Duration::from_millis(10),
        ttft_sigma: 0.0,
        tail_prob: 0.2,
        tail_factor: 20.0,
        tokens: 1,
        seed: Some(21),
        ..fast()
    };
    let n = 400;
    let planned_tails = planned(&config, n as u64).iter().filter(|p| p.tail).count();
    // Binomial(400, 0.2): mean 80, sd 8; 4.5 sd either side.
    assert!(
        (planned_tails as f64 - 80.0).abs() <= 4.5 * 8.0,
        "{planned_tails}"
    );

    let sim = start(config).await;
    let measured = ttfts(&sim, n, 25).await;
    // Normal requests take 10 ms, tail ones 200 ms (a timer never fires
    // early): split at 100 ms, which leaves normal requests 90 ms of
    // scheduling slack on a busy machine.
    let slow = measured.iter().filter(|t| **t > 0.100).count();
    eprintln!("tail: planned {planned_tails}/{n}, measured {slow}/{n}");
    assert_eq!(slow, planned_tails);
    let fastest_slow = measured
        .iter()
        .copied()
        .filter(|t| *t > 0.100)
        .fold(f64::INFINITY, f64::min);
    assert!(fastest_slow >= 0.1995, "tail TTFT {fastest_slow}");
}
