//! [`connect`] against the real API server (tests/envtest), which answers
//! at once, and against a closed local port, where it gives up at the
//! deadline with a message a person can act on.

use std::time::Duration;

use kube::{Client, Config};
use tokio::time::Instant;
use weir_controller::kube::backoff::{Error, connect};
use weir_envtest::{TestEnv, server};

#[tokio::test]
async fn connect_returns_at_once_when_the_api_server_answers() {
    let env = TestEnv::new("connect-answers").await;
    let url = server().config().await.expect("config").cluster_url;
    let deadline = Duration::from_secs(30);
    let started = Instant::now();
    let info = connect(&env.client, &url, deadline)
        .await
        .expect("the API server answers");
    assert_eq!(info.major, "1", "{info:?}");
    assert!(
        info.git_version.starts_with("v1."),
        "a real server's version: {info:?}"
    );
    assert!(
        started.elapsed() < deadline / 10,
        "returned after {:?}: it should not have retried",
        started.elapsed()
    );
}

#[tokio::test]
async fn connect_to_a_closed_port_gives_up_at_the_deadline_with_an_actionable_error() {
    // A port that was just free: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let config = Config::new(url.parse().expect("a URL"));
    // One crypto provider for the process (see the workspace's rustls).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = Client::try_from(config).expect("a client");
    let deadline = Duration::from_secs(2);

    let started = Instant::now();
    let err = connect(&client, &url, deadline)
        .await
        .expect_err("nothing listens");
    let took = started.elapsed();
    let message = err.to_string();
    eprintln!("after {took:?}: {message}");

    assert!(
        took >= deadline && took < deadline + Duration::from_secs(1),
        "gave up after {took:?}"
    );
    let Error::Unreachable { attempts, .. } = err else {
        panic!("not Unreachable: {err:?}");
    };
    // Full jitter from 200 ms: the first three delays sum to at most
    // 1.4 s, so at least four attempts fit in 2 s.
    assert!(attempts >= 4, "{attempts} attempts");
    let prefix = format!("cannot reach the Kubernetes API at {url}: ");
    assert!(message.starts_with(&prefix), "{message}");
    assert!(
        message.to_lowercase().contains("connection refused"),
        "the cause is named: {message}"
    );
    assert!(
        message.ends_with(&format!("; tried {attempts} times over 2.0 s")),
        "{message}"
    );
}
