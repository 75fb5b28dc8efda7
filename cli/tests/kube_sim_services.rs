//! `weir sim --forward http://<service>:<port> --services-kubeconfig` (and
//! `--services-from-cluster`, as a pod runs it) on the test API server: the frontend finds its worker through the
//! Service's EndpointSlices, as cluster DNS and kube-proxy would find it,
//! and follows the slice when the endpoint turns unready (503). The
//! slice is written by hand (this server has no EndpointSlice
//! controller), pointing at a worker sim on the host's address (the API
//! server refuses loopback endpoints).

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use weir_envtest::TestEnv;
use weir_test_kit::poll::until;

mod common;
use common::{Proc, STARTUP, between, command, spawn_command};

/// Longest wait for the frontend to see a change of the slice.
const PATIENCE: Duration = Duration::from_secs(30);

/// `weir sim ARGS` with `env`, and the address it printed.
fn sim(name: &str, args: &[&str], env: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let argv = [&["sim", "--name", name][..], args].concat();
    let mut cmd = command(&argv);
    cmd.envs(env.iter().copied());
    let proc = spawn_command(name, cmd);
    let addr = proc
        .stderr
        .wait_for(STARTUP, |t| {
            between(t, " on http://", "/v1").map(String::from)
        })
        .unwrap_or_else(|| panic!("{name} did not start:\n{}", proc.stderr.text()));
    (proc, addr.parse().expect("the sim prints ip:port"))
}

async fn chat(client: &reqwest::Client, at: SocketAddr) -> (u16, Value) {
    let response = client
        .post(format!("http://{at}/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "Hi."}]}))
        .send()
        .await
        .expect("a response");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn a_frontend_reaches_its_worker_through_the_services_endpoint_slices() {
    let env = TestEnv::new("sim-services").await;
    let host = weir_envtest::host_ip().expect("the host's address");
    let (_worker, worker) = sim(
        "worker",
        &[
            "--listen",
            &format!("{host}:0"),
            "--generation-env",
            "G",
            "--ttft",
            "5ms",
            "--itl",
            "1ms",
            "--tokens",
            "3",
        ],
        &[("G", "gen-a")],
    );
    let slices = Api::<EndpointSlice>::namespaced(env.client.clone(), &env.namespace);
    let slice = weir_envtest::endpoint_slice(
        &env.namespace,
        "chat-decode",
        host.into(),
        worker.port(),
        true,
    );
    slices
        .create(&PostParams::default(), &slice)
        .await
        .expect("the slice");

    // The URL's port is the Service's; the slice's port named http is the
    // worker's.
    let kubeconfig = env.kubeconfig().to_str().expect("a UTF-8 path");
    let (_front, front) = sim(
        "front",
        &[
            "--listen",
            "127.0.0.1:0",
            "--forward",
            "http://chat-decode:8000",
            "--services-kubeconfig",
            kubeconfig,
            "--services-namespace",
            &env.namespace,
            "--generation-env",
            "G",
        ],
        &[("G", "gen-a")],
    );
    let client = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .expect("a client");
    let (status, body) = chat(&client, front).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["system_fingerprint"], "worker", "{body}");
    let scrape = client
        .get(format!("http://{worker}/metrics"))
        .send()
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("a scrape");
    assert!(
        scrape.contains("weir_sim_generation_requests_total{from=\"gen-a\",own=\"gen-a\"} 1.0\n"),
        "{scrape}"
    );

    // As a pod runs it: the client config kube infers ($KUBECONFIG) and
    // the namespace from $POD_NAMESPACE, no path or namespace in the args.
    let (_pod_front, pod_front) = sim(
        "pod-front",
        &[
            "--listen",
            "127.0.0.1:0",
            "--forward",
            "http://chat-decode:8000",
            "--services-from-cluster",
        ],
        &[
            ("KUBECONFIG", kubeconfig),
            ("POD_NAMESPACE", &env.namespace),
        ],
    );
    let (status, body) = chat(&client, pod_front).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["system_fingerprint"], "worker", "{body}");

    // The endpoint turns unready: the frontend has nowhere to go.
    let unready = json!({"endpoints": [{
        "addresses": [host.to_string()],
        "conditions": {"ready": false},
    }]});
    slices
        .patch(
            slice.metadata.name.as_deref().expect("named"),
            &PatchParams::default(),
            &Patch::Merge(&unready),
        )
        .await
        .expect("the slice patched");
    let body = until("the frontend answers 503", PATIENCE, || {
        let client = client.clone();
        async move {
            let (status, body) = chat(&client, front).await;
            (status == 503).then_some(body)
        }
    })
    .await;
    let message = body["error"]["message"].as_str().expect("a message");
    assert!(
        message.contains("chat-decode") && message.contains("no ready endpoint"),
        "{message}"
    );
}
