//! The HTTP paths of the metric sources, against a loopback server.
//!
//! The server is a raw tokio `TcpListener` writing HTTP/1.1 responses: it
//! replays real Prometheus and inference-server bodies from `shared/fixtures`
//! verbatim, with the status codes Prometheus uses for them (503 for
//! `timeout`, 406 for `not_acceptable`), and records every request so the
//! tests can check what was asked. The real-Prometheus test arrives with the
//! Prometheus integration (issue 7).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weir_analysis::names::vllm;
use weir_analysis::source::{
    GaugePoint, MetricSource, PrometheusApi, PrometheusText, Query, Reading, Selector, SourceError,
};

fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEIR_FIXTURES") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}

fn fixture(name: &str) -> String {
    let path = fixtures_dir().join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    /// Decoded query parameters.
    params: Vec<(String, String)>,
    /// Raw request head (request line and headers).
    head: String,
}

impl Seen {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
enum Answer {
    /// Status, content type, body.
    Respond(u16, &'static str, String),
    /// Read the request, then never answer.
    Hang,
}

type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// A loopback HTTP/1.1 server; returns its address and the requests seen.
async fn serve(handler: Handler) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let handler = Arc::clone(&handler);
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let request = Seen {
                    path: path.to_string(),
                    params: url::form_urlencoded::parse(query.as_bytes())
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    head: head.clone(),
                };
                log.lock().expect("log lock").push(request.clone());
                match handler(&request) {
                    Answer::Hang => std::future::pending::<()>().await,
                    Answer::Respond(status, content_type, body) => {
                        let response = format!(
                            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            reason(status),
                            body.len()
                        );
                        let _ = socket.write_all(response.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        406 => "Not Acceptable",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the same body for every request.
fn always(status: u16, content_type: &'static str, body: String) -> Handler {
    Arc::new(move |_| Answer::Respond(status, content_type, body.clone()))
}

/// An address nothing listens on.
async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    drop(listener);
    addr
}

/// Any source, through the trait.
async fn read_via(source: &impl MetricSource, query: &Query) -> Result<Reading, SourceError> {
    source.read(query).await
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("valid selector")
}

#[tokio::test]
async fn instant_query_replays_the_documented_vector() {
    let (addr, seen) = serve(always(200, JSON, fixture("prometheus-query-vector.json"))).await;
    let api = PrometheusApi::new(&format!("http://{addr}"))
        .expect("valid URL")
        .at(1435781451.781);
    let reading = read_via(&api, &Query::promql("up")).await.expect("answers");
    // up = 1 and 0 at the same instant: averaged to 0.5.
    assert_eq!(
        reading,
        Reading::Gauge(vec![GaugePoint {
            at_seconds: 1435781451.781,
            value: 0.5
        }])
    );
    let seen = seen.lock().expect("log lock");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/api/v1/query");
    assert_eq!(seen[0].param("query"), Some("up"));
    assert_eq!(seen[0].param("time"), Some("1435781451.781"));
    assert!(
        seen[0]
            .head
            .to_lowercase()
            .contains("accept: application/json")
    );
}

#[tokio::test]
async fn gauge_queries_use_a_range_over_the_window() {
    let (addr, seen) = serve(always(
        200,
        JSON,
        fixture("prometheus-query-range-matrix.json"),
    ))
    .await;
    let api = PrometheusApi::new(&format!("http://{addr}/prom"))
        .expect("valid URL")
        .with_window(Duration::from_secs(30))
        .with_step(Duration::from_secs(15))
        .at(1435781460.781);
    let reading = read_via(
        &api,
        &Query::gauge("up", sel(r#"{job=~"prometheus|node"}"#)),
    )
    .await
    .expect("answers");
    // Two series × 3 points, averaged per timestamp: 0.5, 0.5, 1.
    let values: Vec<f64> = match reading {
        Reading::Gauge(points) => points.iter().map(|p| p.value).collect(),
        other => panic!("expected gauge points, got {other:?}"),
    };
    assert_eq!(values, [0.5, 0.5, 1.0]);
    let seen = seen.lock().expect("log lock");
    assert_eq!(seen[0].path, "/prom/api/v1/query_range");
    assert_eq!(
        seen[0].param("query"),
        Some(r#"avg(up{job=~"prometheus|node"})"#)
    );
    assert_eq!(seen[0].param("start"), Some("1435781430.781"));
    assert_eq!(seen[0].param("end"), Some("1435781460.781"));
    assert_eq!(seen[0].param("step"), Some("15"));
}

#[tokio::test]
async fn histogram_queries_ask_for_bucket_and_sum_increases() {
    // Synthetic answer bodies (no fixture holds a `sum by (le)` result),
    // in the compact form Prometheus's encoder writes.
    let handler: Handler = Arc::new(|req: &Seen| {
        let query = req.param("query").unwrap_or_default();
        let body = if query.contains("_bucket") {
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"le":"0.25"},"value":[1700000000,"3"]},{"metric":{"le":"0.5"},"value":[1700000000,"8"]},{"metric":{"le":"+Inf"},"value":[1700000000,"10"]}]}}"#
        } else {
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"3.3"]}]}}"#
        };
        Answer::Respond(200, JSON, body.to_string())
    });
    let (addr, seen) = serve(handler).await;
    let api = PrometheusApi::new(&format!("http://{addr}"))
        .expect("valid URL")
        .with_window(Duration::from_secs(300))
        .at(1_700_000_000.0);
    let query = Query::histogram(vllm::TTFT, sel(r#"{pod=~"chat-canary-.*"}"#));
    let reading = read_via(&api, &query).await.expect("answers");
    let Reading::Distribution(d) = reading else {
        panic!("expected a distribution, got {reading:?}");
    };
    // 3 ≤ 0.25, 5 in (0.25, 0.5], 2 above 0.5; sum 3.3.
    assert_eq!(d.count(), 10);
    assert_eq!(d.sum(), 3.3);
    let seen = seen.lock().expect("log lock");
    let asked: Vec<&str> = seen.iter().filter_map(|s| s.param("query")).collect();
    assert_eq!(
        asked,
        [
            r#"sum by (le) (increase(vllm:time_to_first_token_seconds_bucket{pod=~"chat-canary-.*"}[5m]))"#,
            r#"sum(increase(vllm:time_to_first_token_seconds_sum{pod=~"chat-canary-.*"}[5m]))"#,
        ]
    );
    assert!(
        seen.iter()
            .all(|s| s.param("time") == Some("1700000000.000"))
    );
}

#[tokio::test]
async fn empty_results_are_no_data_with_the_query() {
    let (addr, seen) = serve(always(
        200,
        JSON,
        r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.to_string(),
    ))
    .await;
    let api = PrometheusApi::new(&format!("http://{addr}"))
        .expect("valid URL")
        .with_window(Duration::from_secs(60));
    let query = Query::counter(
        vllm::REQUEST_SUCCESS,
        sel(r#"{pod=~"x",finished_reason="error"}"#),
    );
    let reading = read_via(&api, &query).await.expect("answers");
    assert_eq!(
        reading,
        Reading::no_data(
            r#"Prometheus returned no series for sum(increase(vllm:request_success_total{pod=~"x",finished_reason="error"}[1m]))"#
        )
    );
    // An empty bucket vector stops before asking for the sum.
    let reading = read_via(&api, &Query::histogram(vllm::TTFT, Selector::any()))
        .await
        .expect("answers");
    assert!(reading.is_no_data(), "{reading:?}");
    assert_eq!(seen.lock().expect("log lock").len(), 2);
}

#[tokio::test]
async fn prometheus_error_bodies_become_api_errors() {
    for (file, status, error_type, message) in [
        ("prometheus-error-timeout.json", 503, "timeout", "message"),
        (
            "prometheus-error-not-acceptable.json",
            406,
            "not_acceptable",
            "cannot encode response as application/default-format",
        ),
    ] {
        let (addr, _) = serve(always(status, JSON, fixture(file))).await;
        let api = PrometheusApi::new(&format!("http://{addr}")).expect("valid URL");
        match read_via(&api, &Query::promql("up")).await {
            Err(SourceError::Api {
                error_type: t,
                message: m,
            }) => {
                assert_eq!(t, error_type, "{file}");
                assert_eq!(m, message, "{file}");
            }
            other => panic!("{file}: expected an API error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn non_envelope_error_bodies_are_http_errors() {
    let (addr, _) = serve(always(
        502,
        "text/html",
        "<html><body>502 Bad Gateway: upstream prometheus-0 is down</body></html>".to_string(),
    ))
    .await;
    let api = PrometheusApi::new(&format!("http://{addr}")).expect("valid URL");
    match read_via(&api, &Query::promql("up")).await {
        Err(SourceError::Http {
            url,
            status,
            body_excerpt,
        }) => {
            assert_eq!(status, 502);
            assert_eq!(url, format!("http://{addr}/api/v1/query"));
            assert!(
                body_excerpt.contains("upstream prometheus-0 is down"),
                "{body_excerpt}"
            );
        }
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

#[tokio::test]
async fn native_histograms_are_refused_not_a_panic() {
    let (addr, _) = serve(always(
        200,
        JSON,
        fixture("prometheus-codec-matrix-native-histogram.json"),
    ))
    .await;
    let api = PrometheusApi::new(&format!("http://{addr}")).expect("valid URL");
    match read_via(&api, &Query::promql("foo[1m]")).await {
        Err(SourceError::Unsupported { what }) => {
            assert!(what.contains("native histograms"), "{what}");
        }
        other => panic!("expected unsupported, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_refused_names_the_url() {
    let addr = refused_addr().await;
    let api = PrometheusApi::new(&format!("http://{addr}")).expect("valid URL");
    match read_via(&api, &Query::promql("up")).await {
        Err(SourceError::Unreachable { url, reason }) => {
            assert_eq!(url, format!("http://{addr}/api/v1/query"));
            assert!(reason.to_lowercase().contains("refused"), "{reason}");
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
    let scrape_url = format!("http://{addr}/metrics");
    match PrometheusText::scrape(&scrape_url, Duration::from_secs(2)).await {
        Err(e @ SourceError::Unreachable { .. }) => {
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("{scrape_url} is unreachable")),
                "{text}"
            );
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let (addr, seen) = serve(Arc::new(|_: &Seen| Answer::Hang)).await;
    let timeout = Duration::from_millis(300);
    let api = PrometheusApi::new(&format!("http://{addr}"))
        .expect("valid URL")
        .with_timeout(timeout);
    match read_via(&api, &Query::promql("up")).await {
        Err(SourceError::Timeout { url, after }) => {
            assert_eq!(url, format!("http://{addr}/api/v1/query"));
            assert_eq!(after, timeout);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    match PrometheusText::scrape(&format!("http://{addr}/metrics"), timeout).await {
        Err(SourceError::Timeout { after, .. }) => assert_eq!(after, timeout),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The requests did arrive: it is the answer that never came.
    assert_eq!(seen.lock().expect("log lock").len(), 2);
}

#[tokio::test]
async fn scraping_a_vllm_endpoint() {
    let (addr, seen) = serve(always(200, TEXT, fixture("vllm-metrics.txt"))).await;
    let url = format!("http://{addr}/metrics");
    let scrape = PrometheusText::scrape(&url, Duration::from_secs(5))
        .await
        .expect("scrapes");
    // TTFT: 2 requests, _sum 0.4143967628479004 (fixture lines 228-229).
    let reading = read_via(&scrape, &Query::histogram(vllm::TTFT, Selector::any()))
        .await
        .expect("answers");
    let Reading::Distribution(d) = reading else {
        panic!("expected a distribution, got {reading:?}");
    };
    assert_eq!(d.count(), 2);
    assert_eq!(d.sum(), 0.4143967628479004);
    // Gauges are dated at the scrape (a Unix time after 2020).
    let Reading::Gauge(points) = read_via(
        &scrape,
        &Query::gauge(vllm::REQUESTS_WAITING, Selector::any()),
    )
    .await
    .expect("answers") else {
        panic!("expected gauge points");
    };
    assert!(points[0].at_seconds > 1.6e9, "{points:?}");
    let reason = match read_via(&scrape, &Query::histogram(vllm::TTFT, sel(r#"{pod=~"x"}"#))).await
    {
        Ok(Reading::NoData { reason }) => reason,
        other => panic!("expected no data, got {other:?}"),
    };
    assert!(
        reason.starts_with(r#"no series of vllm:time_to_first_token_seconds match {pod=~"x"}"#),
        "{reason}"
    );
    let seen = seen.lock().expect("log lock");
    assert_eq!(seen[0].path, "/metrics");
    assert!(
        seen[0].head.contains("text/plain;version=0.0.4"),
        "{}",
        seen[0].head
    );
}

#[tokio::test]
async fn scrape_errors_carry_status_and_body() {
    let (addr, _) = serve(always(
        500,
        "text/plain",
        "engine core crashed: CUDA error: out of memory".to_string(),
    ))
    .await;
    let url = format!("http://{addr}/metrics");
    match PrometheusText::scrape(&url, Duration::from_secs(5)).await {
        Err(SourceError::Http {
            url: shown,
            status,
            body_excerpt,
        }) => {
            assert_eq!(shown, url);
            assert_eq!(status, 500);
            assert_eq!(
                body_excerpt,
                "engine core crashed: CUDA error: out of memory"
            );
        }
        other => panic!("expected an HTTP error, got {other:?}"),
    }
    // A body that is not exposition text is a parse error with its line.
    let (addr, _) = serve(always(200, TEXT, "# ok\n<html>\n".to_string())).await;
    match PrometheusText::scrape(&format!("http://{addr}/metrics"), Duration::from_secs(5)).await {
        Err(SourceError::Parse { line, .. }) => assert_eq!(line, Some(2)),
        other => panic!("expected a parse error, got {other:?}"),
    }
}
