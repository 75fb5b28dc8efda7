//! Forward mode in process: a frontend sim relays to a worker sim, streams
//! pass through event by event, the frontend meters what it relays, and an
//! injected resolver picks the worker (or finds none: 503). The `weir sim`
//! processes, the environment flags and the generation counts between
//! them are tested in cli/tests/sim_forward.rs.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::{chat, client, fast, get, post, start};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use weir_sim::metrics::{self as m, FinishedReason};
use weir_sim::{Forward, Resolve, SimConfig};

/// Longest wait for anything that should happen at once.
const PATIENCE: Duration = Duration::from_secs(30);

/// A resolver whose answer the test sets.
#[derive(Debug)]
struct Fixed(Mutex<Result<SocketAddr, String>>);

impl Fixed {
    fn set(&self, answer: Result<SocketAddr, String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = answer;
    }
}

impl Resolve for Fixed {
    fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, String> {
        assert_eq!((host, port), ("chat-decode-canary", 8000));
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn frontend(forward: Forward) -> SimConfig {
    SimConfig {
        name: "frontend".into(),
        // Not the worker's: /v1/models shows whose list it is.
        model: "frontend-model".into(),
        forward: Some(forward),
        ..fast()
    }
}

fn finished(sim: &weir_sim::SimHandle, reason: FinishedReason) -> String {
    let line = format!(
        "{}{{engine=\"0\",{}=\"{}\",",
        m::REQUEST_SUCCESS,
        m::FINISHED_REASON_LABEL,
        reason.as_str()
    );
    let text = sim.metrics_text();
    text.lines()
        .find(|l| l.starts_with(&line))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no {line} in\n{text}"))
        .to_string()
}

#[tokio::test]
async fn a_frontend_relays_the_workers_answers_and_meters_them() {
    let worker = start(SimConfig {
        name: "worker".into(),
        ..fast()
    })
    .await;
    let front = start(frontend(
        Forward::parse(&worker.base_url()).expect("the worker's URL"),
    ))
    .await;
    let c = client();

    let whole = post(&c, &front, "/v1/chat/completions", &chat(false)).await;
    assert_eq!(whole.status, StatusCode::OK, "{}", whole.text());
    assert_eq!(whole.json()["system_fingerprint"], "worker");
    assert_eq!(whole.headers[weir_sim::SIM_HEADER], "frontend");

    let stream = post(&c, &front, "/v1/chat/completions", &chat(true)).await;
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    let events = stream.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    // Five tokens and the finish, each the worker's.
    assert_eq!(events.len(), 7, "{events:?}");
    assert!(
        events[..6]
            .iter()
            .all(|e| e.contains("\"system_fingerprint\":\"worker\""))
    );

    // The frontend's own endpoints stay its own; /v1/models is relayed.
    let models = get(&c, &front, "/v1/models").await;
    assert_eq!(models.json()["data"][0]["id"], "weir-sim");
    assert!(get(&c, &front, "/metrics").await.text().contains(m::TTFT));
    let missing = post(&c, &front, "/v1/embeddings", "{}").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing.text().contains("/v1/embeddings"),
        "{}",
        missing.text()
    );

    // Both completions were the frontend's requests, finished whole; the
    // worker saw them and the rest.
    assert_eq!(front.requests(), 2);
    assert_eq!(finished(&front, FinishedReason::Stop), "2.0");
    assert_eq!(front.running(), 0);
    assert_eq!(worker.requests(), 2);

    // An error status relayed is an error of the frontend's.
    let bad = post(&c, &front, "/v1/completions", "{\"model\": 3}").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("JSON body"), "{}", bad.text());
    assert_eq!(finished(&front, FinishedReason::Error), "1.0");
}

#[tokio::test]
async fn events_pass_through_as_the_worker_sends_them() {
    // The second token is an hour away: only a relay that streams lets the
    // first one through.
    let worker = start(SimConfig {
        name: "worker".into(),
        itl: Duration::from_secs(3600),
        tokens: 2,
        ..fast()
    })
    .await;
    let front = start(frontend(
        Forward::parse(&worker.base_url()).expect("the worker's URL"),
    ))
    .await;
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/v1/chat/completions", front.base_url()))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(chat(true))))
        .expect("request");
    let response = tokio::time::timeout(PATIENCE, client().request(request))
        .await
        .expect("headers come at once")
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = tokio::time::timeout(PATIENCE, body.frame())
        .await
        .expect("the first event comes long before the second")
        .expect("a frame")
        .expect("not an error");
    let first = first.into_data().expect("data");
    let text = std::str::from_utf8(&first).expect("utf-8");
    assert!(
        text.starts_with("data: {") && text.ends_with("\n\n"),
        "{text:?}"
    );
    assert!(text.contains("\"system_fingerprint\":\"worker\""), "{text}");
    assert_eq!(front.running(), 1);
    // The client leaves: the frontend counts an abort and lets go.
    drop(body);
    assert!(
        common::wait_for(PATIENCE, async || front.running() == 0).await,
        "the relay still runs"
    );
    assert_eq!(finished(&front, FinishedReason::Abort), "1.0");
}

#[tokio::test]
async fn the_resolver_picks_the_address_or_finds_none() {
    let worker = start(SimConfig {
        name: "worker".into(),
        ..fast()
    })
    .await;
    let resolver = Arc::new(Fixed(Mutex::new(Err(
        "Service ns/chat-decode-canary has no ready endpoint".into(),
    ))));
    let forward = Forward::parse("http://chat-decode-canary:8000")
        .expect("valid")
        .with_resolver(Arc::clone(&resolver) as Arc<dyn Resolve>);
    let front = start(frontend(forward)).await;
    let c = client();

    let none = post(&c, &front, "/v1/chat/completions", &chat(false)).await;
    assert_eq!(none.status, StatusCode::SERVICE_UNAVAILABLE);
    let message = none.json()["error"]["message"].to_string();
    assert!(message.contains("no ready endpoint"), "{message}");
    assert_eq!(finished(&front, FinishedReason::Error), "1.0");

    resolver.set(Ok(worker.addr()));
    let answered = post(&c, &front, "/v1/chat/completions", &chat(false)).await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.text());
    assert_eq!(answered.json()["system_fingerprint"], "worker");

    // Nothing listens there: a 502 that says where it tried.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    resolver.set(Ok(gone));
    let refused = post(&c, &front, "/v1/completions", "{}").await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY);
    let message = refused.json()["error"]["message"].to_string();
    assert!(message.contains(&gone.to_string()), "{message}");
    assert_eq!(finished(&front, FinishedReason::Error), "2.0");
}
