//! [`connect`] against the real API server (tests/envtest), which answers
//! the first attempt, and against a closed local port, where it gives up at
//! the deadline with a message a person can act on. The retry loop's timing
//! is tested on a paused clock (`backoff`'s unit tests); nothing here
//! asserts how long a real call took.

use std::time::Duration;

use kube::{Client, Config};
use tokio::time::Instant;
use weir_controller::kube::backoff::{Error, connect, connect_with};
use weir_envtest::{TestEnv, server};

#[tokio::test]
async fn connect_returns_the_first_answer_of_the_api_server_without_a_retry() {
    let env = TestEnv::new("connect-answers").await;
    let url = server().config().await.expect("config").cluster_url;
    let mut attempts = 0;
    let info = connect_with(&url, Duration::from_secs(30), || {
        attempts += 1;
        env.client.apiserver_version()
    })
    .await
    .expect("the API server answers");
    assert_eq!(info.major, "1", "{info:?}");
    assert!(
        info.git_version.starts_with("v1."),
        "a real server's version: {info:?}"
    );
    assert_eq!(attempts, 1, "an answer is not retried");
    // `connect` is the same loop with the client's call.
    let again = connect(&env.client, &url, Duration::from_secs(30))
        .await
        .expect("the API server answers");
    assert_eq!(again, info);
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

    // Not before the deadline: a refusal is retried, not final.
    assert!(took >= deadline, "gave up after {took:?}");
    let Error::Unreachable {
        attempts, elapsed, ..
    } = err
    else {
        panic!("not Unreachable: {err:?}");
    };
    assert!(
        elapsed >= deadline && elapsed <= took,
        "{elapsed:?} of {took:?}"
    );
    let prefix = format!("cannot reach the Kubernetes API at {url}: ");
    assert!(message.starts_with(&prefix), "{message}");
    assert!(
        message.to_lowercase().contains("connection refused"),
        "the cause is named: {message}"
    );
    // The time it says is the time it took, to a tenth of a second.
    let said = format!("{:.1}", elapsed.as_secs_f64());
    assert!(
        message.ends_with(&format!("; tried {attempts} times over {said} s")),
        "{message}"
    );
}
