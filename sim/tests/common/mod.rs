//! Helpers shared by the integration tests: start a sim on a free loopback
//! port, send requests with a plain hyper client, and record when each
//! body frame arrived.

#![allow(dead_code)] // each test file uses its own subset

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use weir_sim::{SimConfig, SimHandle};

/// A sim with fast defaults for tests: 10 ms TTFT without spread, 1 ms
/// gaps, 5 tokens, seeded.
pub fn fast() -> SimConfig {
    SimConfig {
        name: "test-sim".into(),
        ttft: Duration::from_millis(10),
        ttft_sigma: 0.0,
        itl: Duration::from_millis(1),
        tokens: 5,
        seed: Some(1),
        shutdown_grace: Duration::from_secs(5),
        ..SimConfig::default()
    }
}

pub async fn start(config: SimConfig) -> SimHandle {
    weir_sim::bind(config, "127.0.0.1:0".parse().expect("loopback address"))
        .await
        .expect("the sim starts")
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// One exchange: status, headers, the body, and when each frame arrived
/// (from just before the request was sent).
#[derive(Debug)]
pub struct Exchange {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub frames: Vec<(Duration, Bytes)>,
}

impl Exchange {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// The `data:` payloads of the SSE events, in order.
    pub fn sse_data(&self) -> Vec<String> {
        let text = self.text();
        assert!(
            text.is_empty() || text.ends_with("\n\n"),
            "stream ends mid-event: {text:?}"
        );
        text.split_terminator("\n\n")
            .map(|event| {
                event
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                    .to_string()
            })
            .collect()
    }

    /// The time of the first body frame.
    pub fn first_frame(&self) -> Duration {
        self.frames.first().expect("at least one frame").0
    }
}

pub async fn send(client: &HttpClient, method: Method, url: &str, body: &str) -> Exchange {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let start = Instant::now();
    let response = client.request(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let mut incoming = response.into_body();
    let mut frames = Vec::new();
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.expect("body frame");
        if let Some(data) = frame.data_ref() {
            body.extend_from_slice(data);
            frames.push((start.elapsed(), data.clone()));
        }
    }
    Exchange {
        status,
        headers,
        body,
        frames,
    }
}

pub async fn post(client: &HttpClient, sim: &SimHandle, path: &str, body: &str) -> Exchange {
    send(
        client,
        Method::POST,
        &format!("{}{path}", sim.base_url()),
        body,
    )
    .await
}

pub async fn get(client: &HttpClient, sim: &SimHandle, path: &str) -> Exchange {
    send(
        client,
        Method::GET,
        &format!("{}{path}", sim.base_url()),
        "",
    )
    .await
}

pub fn chat(stream: bool) -> String {
    serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Say something."}],
        "stream": stream,
    })
    .to_string()
}

/// Polls `check` every 20 ms until it returns true or `within` passes.
pub async fn wait_for(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
