//! `weir load` against a sim: counts, latencies and outcomes as configured.

mod common;

use std::time::Duration;

use common::{fast, start};
use weir_sim::load::{self, LoadConfig, LoadError, LoadReport, ModelWeight, PromptTokens};
use weir_sim::model::RequestPlan;
use weir_sim::{ServedModel, SimConfig};

async fn run(config: &LoadConfig) -> LoadReport {
    load::run(config, Duration::from_secs(60), |_| {})
        .await
        .expect("the run completes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_every_request_and_the_configured_latency() {
    let sim_config = SimConfig {
        ttft: Duration::from_millis(50),
        ttft_sigma: 0.1,
        itl: Duration::from_millis(5),
        tokens: 4,
        seed: Some(30),
        ..fast()
    };
    let sim = start(sim_config.clone()).await;
    let report = run(&LoadConfig {
        url: sim.base_url(),
        rate: 50.0,
        duration: Duration::from_secs(2),
        seed: Some(1),
        ..LoadConfig::default()
    })
    .await;
    eprintln!("{}", serde_json::to_string(&report).expect("json"));
    assert_eq!(report.scheduled, 100);
    assert_eq!(report.sent, 100);
    assert_eq!(report.outcomes.ok, 100);
    assert_eq!(report.outcomes.errors(), 0);
    assert_eq!(sim.requests(), 100);
    assert_eq!(report.tokens, 400);
    assert_eq!(report.ttft_seconds.count, 100);
    assert_eq!(report.itl_seconds.count, 300);

    // The planned median of these 100 requests, and the measured one up to
    // timer, loopback and scheduling overhead (15 ms, see tests/latency.rs).
    let mut planned: Vec<f64> = (0..100)
        .map(|i| {
            RequestPlan::draw(&sim_config.profile(), 30, i, None, true)
                .ttft
                .as_secs_f64()
        })
        .collect();
    planned.sort_by(f64::total_cmp);
    let p50 = report.ttft_seconds.p50.expect("measured");
    // Nearest-rank p50 is the 50th value.
    let want = planned[49];
    assert!(
        p50 >= want - 0.0005 && p50 <= want + 0.015,
        "TTFT p50 {p50}, planned {want}"
    );
    // Gaps: 5 ms deadlines on a 1 ms timer; deadlines are absolute, so a
    // late token is followed by a short gap and the median stays near 5 ms.
    let itl = report.itl_seconds.p50.expect("measured");
    assert!((0.003..=0.010).contains(&itl), "ITL p50 {itl}");
    assert!(report.sent_per_second > 45.0 && report.sent_per_second <= 50.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_drops_instead_of_queueing() {
    let sim = start(SimConfig {
        ttft: Duration::from_millis(300),
        tokens: 1,
        ..fast()
    })
    .await;
    let report = run(&LoadConfig {
        url: sim.base_url(),
        rate: 100.0,
        duration: Duration::from_secs(1),
        concurrency_limit: Some(5),
        ..LoadConfig::default()
    })
    .await;
    eprintln!(
        "sent {} dropped {} of {}",
        report.sent, report.dropped, report.scheduled
    );
    assert_eq!(report.scheduled, 100);
    assert_eq!(report.sent + report.dropped, 100);
    // At most 5 in flight, each 300 ms: about 5 per 300 ms get through
    // (fewer when the machine is busy and requests take longer).
    assert!((5..=35).contains(&report.sent), "{}", report.sent);
    assert_eq!(report.outcomes.ok, report.sent);
    assert_eq!(sim.requests(), report.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_by_kind() {
    let http_errors = start(SimConfig {
        error_rate: 1.0,
        ..fast()
    })
    .await;
    let stream_errors = start(SimConfig {
        stream_error_rate: 1.0,
        ..fast()
    })
    .await;
    let config = |url: String| LoadConfig {
        url,
        rate: 40.0,
        duration: Duration::from_millis(500),
        session_header: Some("x-session-id".into()),
        sessions: 3,
        ..LoadConfig::default()
    };
    let report = run(&config(http_errors.base_url())).await;
    assert_eq!(report.outcomes.http_error, 20);
    assert_eq!(report.http_statuses.get(&500), Some(&20));
    assert_eq!(report.ttft_seconds.count, 0);
    let sessions = report.sessions.expect("session header sent");
    assert!((1..=3).contains(&sessions.seen));
    assert_eq!(sessions.on_several_cohorts, 0);

    let report = run(&config(stream_errors.base_url())).await;
    assert_eq!(report.outcomes.stream_error, 20);
    assert_eq!(report.outcomes.ok, 0);
    // The tokens before the failure were still measured.
    assert_eq!(report.ttft_seconds.count, 20);
}

/// The sim's `vllm:prompt_tokens_total`.
fn prompt_tokens_total(sim: &weir_sim::SimHandle) -> f64 {
    let text = sim.metrics_text();
    let line = text
        .lines()
        .find(|l| l.starts_with(weir_sim::metrics::PROMPT_TOKENS))
        .unwrap_or_else(|| panic!("no prompt tokens in\n{text}"));
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_mix_of_models_and_prompt_lengths_is_sent_and_reported_per_model() {
    let sim = start(SimConfig {
        ttft: Duration::from_millis(2),
        itl: Duration::ZERO,
        tokens: 4,
        models: vec![
            ServedModel::new("chat-lora-v7"),
            "chat-lora-v8:tokens=8,length-share=0.5"
                .parse()
                .expect("valid"),
        ],
        ..fast()
    })
    .await;
    let config = LoadConfig {
        url: sim.base_url(),
        rate: 400.0,
        duration: Duration::from_secs(1),
        models: vec![
            ModelWeight::new("chat-lora-v7", 3.0),
            ModelWeight::new("chat-lora-v8", 1.0),
        ],
        prompt_tokens: Some(PromptTokens::Range { min: 50, max: 2000 }),
        seed: Some(4),
        ..LoadConfig::default()
    };
    let report = run(&config).await;
    eprintln!("{}", serde_json::to_string(&report.models).expect("json"));
    let n = report.sent;
    assert_eq!(n, 400);
    // Both names are served: nothing is refused.
    assert_eq!(report.outcomes.ok, n, "{:?}", report.outcomes);
    let (v7, v8) = (
        &report.models["chat-lora-v7"],
        &report.models["chat-lora-v8"],
    );
    assert_eq!(v7.requests + v8.requests, n);
    // Weights 3:1. Binomial(400, 0.25): mean 100, sd 8.7; 4.5 sd.
    let sd = (n as f64 * 0.25 * 0.75).sqrt();
    assert!(
        (v8.requests as f64 - 100.0).abs() <= 4.5 * sd,
        "{} of {n} asked for chat-lora-v8",
        v8.requests
    );
    // What each model answers shows under its name.
    assert_eq!(v7.tokens, 4 * v7.requests);
    assert_eq!(v7.finished_length, 0);
    let p = 0.5;
    let k = v8.requests as f64;
    assert!(
        (v8.finished_length as f64 - k * p).abs() <= 4.5 * (k * p * (1.0 - p)).sqrt(),
        "{} of {k} cut by length",
        v8.finished_length
    );
    assert_eq!(report.finished_length, v8.finished_length);
    assert_eq!(v8.tokens, 8 * v8.requests);
    // Prompt lengths: uniform on 50..=2000 (mean 1025, sd 563); the sim
    // counts exactly the tokens drawn.
    let mean = prompt_tokens_total(&sim) / n as f64;
    assert!(
        (mean - 1025.0).abs() < 4.5 * 563.0 / (n as f64).sqrt(),
        "mean prompt {mean}"
    );

    // The same seed sends the same mix.
    let again = run(&config).await;
    assert_eq!(
        again.models["chat-lora-v8"].requests, v8.requests,
        "seeded draws"
    );
}

#[tokio::test]
async fn an_unreachable_url_is_an_error_naming_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let err = load::run(
        &LoadConfig {
            url: url.clone(),
            duration: Duration::from_millis(100),
            ..LoadConfig::default()
        },
        Duration::from_secs(1),
        |_| {},
    )
    .await
    .expect_err("nothing listens");
    assert!(matches!(err, LoadError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
}
