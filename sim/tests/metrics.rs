//! `/metrics` reads like vLLM and dcgm-exporter, parses with the analysis's
//! own parser, and counts what was served.

mod common;

use std::time::Duration;

use common::{chat, client, fast, get, post, start, wait_for};
use tokio::task::JoinSet;
use weir_analysis::source::{PrometheusText, Query, Reading, Selector};
use weir_sim::SimConfig;
use weir_sim::metrics as m;

async fn scrape(c: &common::HttpClient, sim: &weir_sim::SimHandle) -> (String, PrometheusText) {
    let ex = get(c, sim, "/metrics").await;
    assert_eq!(ex.status, http::StatusCode::OK);
    assert!(
        ex.headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = ex.text().to_string();
    let parsed = PrometheusText::from_text(&text)
        .unwrap_or_else(|e| panic!("the analysis cannot parse the sim's scrape: {e}\n{text}"));
    (text, parsed)
}

fn count(scrape: &PrometheusText, query: Query) -> f64 {
    match scrape.read_now(&query).expect("readable") {
        Reading::Distribution(d) => d.count() as f64,
        Reading::Count(c) => c,
        Reading::Gauge(points) => points.last().expect("a point").value,
        Reading::NoData { reason } => panic!("no data for {query}: {reason}"),
    }
}

#[tokio::test]
async fn metrics_parse_and_count_every_served_request() {
    let sim = start(SimConfig {
        model: "org/model".into(),
        ..fast()
    })
    .await;
    let c = client();
    let (text, idle) = scrape(&c, &sim).await;
    assert_eq!(
        count(&idle, Query::histogram(m::TTFT, Selector::any())),
        0.0
    );

    let (streams, bodies, capped) = (20, 6, 4);
    for _ in 0..streams {
        post(&c, &sim, "/v1/chat/completions", &chat(true)).await;
    }
    for _ in 0..bodies {
        post(&c, &sim, "/v1/chat/completions", &chat(false)).await;
    }
    let short = r#"{"model":"m","prompt":"x","stream":true,"max_tokens":2}"#;
    for _ in 0..capped {
        post(&c, &sim, "/v1/completions", short).await;
    }
    post(&c, &sim, "/v1/completions", "{not json").await;
    let served = streams + bodies + capped;

    let (text_after, after) = scrape(&c, &sim).await;
    let model = Selector::any().eq(m::MODEL_NAME_LABEL, "org/model");
    let ttft = count(&after, Query::histogram(m::TTFT, model.clone()));
    eprintln!("served {served}, TTFT histogram count {ttft}");
    assert_eq!(ttft, served as f64);
    assert_eq!(
        count(&after, Query::histogram(m::E2E, model.clone())),
        served as f64
    );
    // Every token after the first is one gap.
    let gaps = (streams + bodies) * 4 + capped;
    assert_eq!(
        count(&after, Query::histogram(m::INTER_TOKEN, model.clone())),
        gaps as f64
    );
    let success = |reason: &str| {
        count(
            &after,
            Query::counter(
                m::REQUEST_SUCCESS,
                Selector::any().eq(m::FINISHED_REASON_LABEL, reason),
            ),
        )
    };
    assert_eq!(success("stop"), (streams + bodies) as f64);
    assert_eq!(success("length"), capped as f64);
    assert_eq!(success("abort") + success("error"), 0.0);
    assert_eq!(
        count(&after, Query::counter(m::GENERATION_TOKENS, model.clone())),
        ((streams + bodies) * 5 + capped * 2) as f64
    );
    assert_eq!(
        count(&after, Query::gauge(m::REQUESTS_RUNNING, model.clone())),
        0.0
    );

    // DCGM gauges, labelled like dcgm-exporter with the sim as the host.
    let host = Selector::any()
        .eq(m::HOSTNAME_LABEL, "test-sim")
        .eq("gpu", "0");
    // Just after the requests the load average has not decayed to 0 yet.
    let util = count(&after, Query::gauge(m::GPU_UTIL, host.clone()));
    assert!((50.0..=60.0).contains(&util), "{util}");
    let active = count(&after, Query::gauge(m::GR_ENGINE_ACTIVE, host.clone()));
    assert!((active * 100.0 - util).abs() <= 0.5, "{active} vs {util}");
    assert!(count(&after, Query::gauge(m::FB_USED, host.clone())) > 0.0);
    assert!(count(&after, Query::gauge(m::POWER_USAGE, host.clone())) > 0.0);

    // Every family has HELP and TYPE lines, as in the real scrapes.
    for family in [
        m::TTFT,
        m::INTER_TOKEN,
        m::E2E,
        m::REQUEST_SUCCESS,
        m::REQUESTS_RUNNING,
        m::REQUESTS_WAITING,
        m::KV_CACHE_USAGE,
        m::GPU_UTIL,
        m::GR_ENGINE_ACTIVE,
        m::FB_USED,
        m::POWER_USAGE,
    ] {
        for text in [&text, &text_after] {
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
        }
    }
    assert!(text_after.contains(
        "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"2560.0\",model_name=\"org/model\"}"
    ));
    assert!(text_after.contains("DCGM_FI_DEV_POWER_USAGE{gpu=\"0\",UUID=\"GPU-"));
    // The in-process rendering is the same document.
    assert_eq!(
        PrometheusText::from_text(&sim.metrics_text())
            .expect("parses")
            .names(),
        after.names()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_utilization_rises_under_concurrent_load() {
    let sim = start(SimConfig {
        ttft: Duration::from_millis(50),
        itl: Duration::from_millis(50),
        tokens: 100, // 5 s per request
        ..fast()
    })
    .await;
    let c = client();
    let util = |text: &PrometheusText| {
        count(
            text,
            Query::gauge(m::GPU_UTIL, Selector::any().eq("gpu", "0")),
        )
    };
    let idle = util(&scrape(&c, &sim).await.1);
    assert_eq!(idle, 50.0);

    let mut load = JoinSet::new();
    for _ in 0..20 {
        let c = c.clone();
        let url = format!("{}/v1/chat/completions", sim.base_url());
        load.spawn(async move { common::send(&c, http::Method::POST, &url, &chat(true)).await });
    }
    // 20 in flight average in over ~1 s: 50 + 2 × 20 × (1 − e^−t).
    let mut busy = idle;
    let rose = wait_for(Duration::from_secs(4), async || {
        busy = util(&scrape(&c, &sim).await.1);
        busy >= 70.0
    })
    .await;
    eprintln!("GPU util idle {idle}, under 20 concurrent streams {busy}");
    assert!(rose, "util stayed at {busy}");
    let (_, busy_scrape) = scrape(&c, &sim).await;
    assert_eq!(
        count(
            &busy_scrape,
            Query::gauge(m::REQUESTS_RUNNING, Selector::any())
        ),
        20.0
    );
    let kv = count(
        &busy_scrape,
        Query::gauge(m::KV_CACHE_USAGE, Selector::any()),
    );
    assert!(kv > 0.0 && kv < 1.0, "{kv}");
    load.abort_all();
}

#[tokio::test]
async fn a_client_hanging_up_is_an_abort() {
    let sim = start(SimConfig {
        itl: Duration::from_millis(200),
        tokens: 50,
        ..fast()
    })
    .await;
    let c = client();
    let request = http::Request::post(format!("{}/v1/chat/completions", sim.base_url()))
        .body(http_body_util::Full::new(bytes::Bytes::from(chat(true))))
        .expect("request");
    let response = c.request(request).await.expect("response");
    let mut body = response.into_body();
    let first = http_body_util::BodyExt::frame(&mut body).await;
    assert!(first.is_some());
    assert_eq!(sim.running(), 1);
    drop(body);
    assert!(wait_for(Duration::from_secs(5), async || sim.running() == 0).await);
    let (_, after) = scrape(&c, &sim).await;
    let aborted = count(
        &after,
        Query::counter(
            m::REQUEST_SUCCESS,
            Selector::any().eq(m::FINISHED_REASON_LABEL, "abort"),
        ),
    );
    assert_eq!(aborted, 1.0);
}
