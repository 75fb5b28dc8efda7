//! Rollout notifications end to end: the controller on a real control
//! plane, each version's pods run by the node agent, a promoted and an
//! aborted run. One webhook is down for the whole of both runs: once it comes up it
//! gets every event, each once (by idempotency key), in order. Another
//! never answers: both runs finish while it still holds its first request,
//! so a dead receiver holds up no rollout.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use weir_controller::kube::run::{Handle, Settings};
use weir_controller::notify::EventKind;
use weir_controller::notify::config::{Format, Webhook};
use weir_controller::notify::deliver::{Notifier, Policy, Source, Stats};
use weir_crds::{Canary, Phase};
use weir_envtest::TestEnv;
use weir_test_kit::poll::until;
use weir_test_kit::webhook::{self, Answer};

mod common;
mod stack;

use stack::{PATIENCE, create_target, event_recorded, set_image, target, wait_phase, weir};

fn hook(name: &str, addr: SocketAddr, all_canaries: bool) -> Webhook {
    Webhook {
        name: name.into(),
        url: format!("http://{addr}/{name}"),
        format: Format::Json,
        headers: Default::default(),
        all_canaries,
        events: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_a_promoted_and_an_aborted_run_reaches_a_webhook_that_was_down() {
    let env = TestEnv::on_cluster("kube-notify").await;
    let ns = env.namespace.clone();
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &ns);
    create_target(&deployments, &target("sim:v1", 2)).await;
    let mut canary = stack::canary_spec(
        serde_json::json!({"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}),
    );
    canary.spec.notify = vec!["team".into()];
    Api::<Canary>::namespaced(env.client.clone(), &ns)
        .create(&PostParams::default(), &canary)
        .await
        .expect("canary");

    // "team": named by the Canary, and down (nothing listens on its port
    // yet). "stuck": every Canary's events, and never answers.
    let down = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let team_addr = down.local_addr().expect("addr");
    drop(down);
    let stuck_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stuck_addr = stuck_listener.local_addr().expect("addr");
    let stuck = webhook::serve(stuck_listener, Answer::Hang);
    let notifier = Notifier::start(
        Source::Static(vec![
            hook("team", team_addr, false),
            hook("stuck", stuck_addr, true),
        ]),
        Policy {
            first_retry: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            attempts: u32::MAX,
            // Longer than the test: "stuck" keeps its first request open.
            timeout: Duration::from_secs(3600),
            ..Policy::default()
        },
    );
    let (_lead, leading) = watch::channel(true);
    let settings = Settings {
        namespace: Some(ns.clone()),
        identity: "notify-test".into(),
        notifier: Some(notifier.clone()),
        ..Settings::default()
    };
    let _controller = Handle::spawn(env.client.clone(), settings, leading);
    wait_phase(&env.client, &ns, "chat", Phase::Idle).await;

    // A promoted run, then an aborted one.
    set_image(&deployments, "sim:v2").await;
    wait_phase(&env.client, &ns, "chat", Phase::Paused).await;
    let (code, out, err) = weir(&env, &["promote", "chat", "-n", &ns, "--full", "--wait"]).await;
    assert_eq!(code, 0, "{out}{err}");
    wait_phase(&env.client, &ns, "chat", Phase::Succeeded).await;
    set_image(&deployments, "sim:v3").await;
    wait_phase(&env.client, &ns, "chat", Phase::Paused).await;
    let (code, out, err) = weir(&env, &["abort", "chat", "-n", &ns, "--wait"]).await;
    assert_eq!(code, 0, "{out}{err}");
    wait_phase(&env.client, &ns, "chat", Phase::Aborted).await;

    // Both runs went through with "stuck" on its first request and "team"
    // unreachable throughout.
    assert_eq!(
        stuck.all().len(),
        1,
        "the stuck receiver never answered its first request"
    );
    let stats = notifier.stats();
    assert_eq!(
        Stats::get(&stats.delivered),
        0,
        "nothing delivered while team was down"
    );
    assert!(Stats::get(&stats.failed_attempts) > 0);

    // What should have been sent: one notification per Event of a kind
    // that notifies, in order.
    let events = event_recorded(&env.client, &ns, "chat", "AbortedByRequest").await;
    let expected: Vec<&str> = events
        .iter()
        .filter_map(|(reason, _)| EventKind::of_reason(reason))
        .map(EventKind::as_str)
        .collect();
    assert_eq!(
        expected,
        [
            "started",
            "stepReached",
            "paused",
            "stepReached",
            "promoted",
            "started",
            "stepReached",
            "paused",
            "aborted",
        ],
        "the runs' Events: {events:?}"
    );

    // Team comes up.
    let listener = tokio::net::TcpListener::bind(team_addr)
        .await
        .expect("team's port");
    let team = webhook::serve(listener, Answer::Ok);
    let got = until("every notification at team", PATIENCE, || async {
        let got = team.all();
        if got.len() >= expected.len() {
            Ok(got)
        } else {
            Err(got.len())
        }
    })
    .await;
    let kinds: Vec<&str> = got.iter().map(|r| r.header("x-weir-event")).collect();
    assert_eq!(kinds, expected, "every event, in order");
    let mut keys: Vec<&str> = got.iter().map(|r| r.header("idempotency-key")).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), got.len(), "each delivered once");
    assert!(
        got.iter()
            .all(|r| r.body["canary"]["namespace"] == ns.as_str())
    );
    let aborted = got.last().expect("the abort");
    assert_eq!(aborted.body["abortReason"], "AbortedByRequest");
    assert_eq!(aborted.body["severity"], "warning");
}
