//! Notification delivery against local HTTP receivers: one that is down at
//! first, one that answers 500 then 200, one that never answers, one that
//! refuses; the webhooks read from a Secret on a real API server. Waits are
//! on the receivers' and the notifier's counts, never on time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use weir_controller::notify::config::{Format, Webhook};
use weir_controller::notify::deliver::{Notifier, Policy, Source, Stats};
use weir_controller::notify::{API_VERSION, CanaryRef, EventKind, Notification};
use weir_envtest::TestEnv;
use weir_test_kit::poll::until;
use weir_test_kit::webhook::{self, Answer, Log};

/// Long enough for a loaded CI machine; the waits end when the condition holds.
const PATIENCE: Duration = Duration::from_secs(30);

fn receiver(listener: tokio::net::TcpListener, answer: Answer) -> Log {
    webhook::serve(listener, answer)
}

async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

fn hook(name: &str, addr: SocketAddr, format: Format) -> Webhook {
    Webhook {
        name: name.into(),
        url: format!("http://{addr}/hooks/{name}"),
        format,
        headers: BTreeMap::from([("Authorization".to_string(), "Bearer t0ken".to_string())]),
        all_canaries: false,
        events: Vec::new(),
    }
}

/// Quick retries, so a test sees several attempts.
fn quick() -> Policy {
    Policy {
        first_retry: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        attempts: 1000,
        timeout: Duration::from_secs(5),
        queue: 64,
        reload: Duration::from_secs(60),
    }
}

fn notification(i: usize, event: EventKind) -> Notification {
    Notification {
        api_version: API_VERSION,
        id: format!("key-{i}"),
        event,
        reason: "WeightSet".into(),
        severity: "info",
        message: format!("canary weight {i}%"),
        canary: CanaryRef {
            namespace: "llm".into(),
            name: "chat".into(),
            uid: "uid-1".into(),
        },
        phase: "Progressing".into(),
        step: 0,
        canary_weight: 10.0,
        stable_revision: Some("rev-a".into()),
        canary_revision: Some("rev-b".into()),
        effects: Vec::new(),
        abort_reason: None,
        time: "2026-12-04T10:00:00Z".into(),
    }
}

fn named(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn count(what: &str, counter: impl Fn() -> u64, at_least: u64) {
    until(what, PATIENCE, || async {
        let n = counter();
        if n >= at_least { Ok(n) } else { Err(n) }
    })
    .await;
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_every_notification_once_it_is_up() {
    // A port nothing listens on yet.
    let (l, addr) = listen().await;
    drop(l);
    let notifier = Notifier::start(
        Source::Static(vec![hook("team", addr, Format::Json)]),
        quick(),
    );
    let kinds = [
        EventKind::Started,
        EventKind::StepReached,
        EventKind::Promoted,
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        notifier.send(notification(i, kind), &named(&["team"]));
    }
    let stats = notifier.stats();
    count(
        "attempts while the receiver is down",
        || Stats::get(&stats.failed_attempts),
        3,
    )
    .await;
    assert_eq!(Stats::get(&stats.delivered), 0);

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("the same port again");
    let log = receiver(listener, Answer::Ok);
    count(
        "every notification delivered",
        || Stats::get(&stats.delivered),
        3,
    )
    .await;
    let got = log.all();
    let keys: Vec<&str> = got.iter().map(|r| r.header("idempotency-key")).collect();
    assert_eq!(keys, ["key-0", "key-1", "key-2"], "each once, in order");
    let events: Vec<&str> = got.iter().map(|r| r.header("x-weir-event")).collect();
    assert_eq!(events, ["started", "stepReached", "promoted"]);
    assert_eq!(got[0].body["apiVersion"], API_VERSION);
    assert_eq!(got[0].body["id"], "key-0");
    assert_eq!(
        got[0].headers.get("authorization").map(String::as_str),
        Some("Bearer t0ken")
    );
    assert_eq!(Stats::get(&stats.given_up), 0);
}

#[tokio::test]
async fn a_500_is_retried_with_the_same_key_until_a_200() {
    let (l, addr) = listen().await;
    let log = receiver(l, Answer::FailFirst);
    let notifier = Notifier::start(
        Source::Static(vec![hook("team", addr, Format::Slack)]),
        quick(),
    );
    notifier.send(notification(7, EventKind::Aborted), &named(&["team"]));
    let stats = notifier.stats();
    count("delivery", || Stats::get(&stats.delivered), 1).await;
    let got = log.all();
    assert_eq!(got.len(), 2, "a 500, then the retry: {got:#?}");
    assert!(
        got.iter().all(|r| r.header("idempotency-key") == "key-7"),
        "one key for both attempts"
    );
    assert_eq!(Stats::get(&stats.failed_attempts), 1);
    let text = got[1].body["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("llm/chat") && text.contains("aborted"),
        "a Slack message: {text}"
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_holds_up_neither_the_sender_nor_other_webhooks() {
    let (hanging, hanging_addr) = listen().await;
    let stuck = receiver(hanging, Answer::Hang);
    let (ok, ok_addr) = listen().await;
    let fine = receiver(ok, Answer::Ok);
    let mut policy = quick();
    policy.timeout = Duration::from_secs(600);
    policy.queue = 4;
    let notifier = Notifier::start(
        Source::Static(vec![
            hook("stuck", hanging_addr, Format::Json),
            hook("fine", ok_addr, Format::Json),
        ]),
        policy,
    );
    // send() only queues: these return while "stuck" holds its first
    // request open, and once its queue is full its notifications are
    // dropped rather than waited for.
    for i in 0..20 {
        notifier.send(
            notification(i, EventKind::StepReached),
            &named(&["stuck", "fine"]),
        );
        // The dispatcher's own queue holds 4: let it drain as a reconcile
        // loop would, between transitions.
        let stats = notifier.stats();
        let before = Stats::get(&stats.delivered);
        count(
            "the healthy webhook's delivery",
            || Stats::get(&stats.delivered),
            before + 1,
        )
        .await;
    }
    let stats = notifier.stats();
    assert_eq!(
        fine.all().len(),
        20,
        "the healthy webhook got every notification"
    );
    assert_eq!(stuck.all().len(), 1, "the stuck one is still on its first");
    // Its queue holds 4 behind the request in flight (or 4 in all, if its
    // worker had not taken the first yet): the rest is dropped.
    let dropped = Stats::get(&stats.dropped);
    assert!((15..=16).contains(&dropped), "dropped: {dropped}");
}

#[tokio::test]
async fn a_4xx_is_not_retried() {
    let (l, addr) = listen().await;
    let log = receiver(l, Answer::Refuse);
    let notifier = Notifier::start(
        Source::Static(vec![hook("team", addr, Format::Json)]),
        quick(),
    );
    notifier.send(notification(1, EventKind::Paused), &named(&["team"]));
    let stats = notifier.stats();
    count("the refusal", || Stats::get(&stats.given_up), 1).await;
    assert_eq!(log.all().len(), 1);
    assert_eq!(Stats::get(&stats.delivered), 0);
}

#[tokio::test]
async fn the_webhooks_come_from_a_secret_and_go_to_the_canaries_that_name_them() {
    let env = TestEnv::new("notify-secret").await;
    let (l, addr) = listen().await;
    let log = receiver(l, Answer::Ok);
    let webhooks = format!(
        "webhooks:\n\
         - {{name: team, url: 'http://{addr}/team', headers: {{X-Token: s3cret}}}}\n\
         - {{name: audit, url: 'http://{addr}/audit', allCanaries: true, events: [promoted]}}\n"
    );
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("weir-notifications".into()),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([("webhooks.yaml".to_string(), webhooks)])),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("Secret created");
    let source = Source::Secret {
        client: env.client.clone(),
        namespace: env.namespace.clone(),
        name: "weir-notifications".into(),
    };
    let notifier = Notifier::start(source, quick());
    // Named by the Canary: "team"; "audit" takes every Canary's promotions.
    notifier.send(notification(1, EventKind::Paused), &named(&["team"]));
    notifier.send(notification(2, EventKind::Promoted), &named(&["team"]));
    notifier.send(notification(3, EventKind::Promoted), &[]);
    let stats = notifier.stats();
    count("deliveries", || Stats::get(&stats.delivered), 4).await;
    let mut got: Vec<(String, String)> = log
        .all()
        .iter()
        .map(|r| {
            (
                r.header("idempotency-key").to_string(),
                r.headers.get("x-token").cloned().unwrap_or_default(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("key-1".to_string(), "s3cret".to_string()),
            ("key-2".to_string(), String::new()),
            ("key-2".to_string(), "s3cret".to_string()),
            ("key-3".to_string(), String::new()),
        ],
        "team: its Canary's events with its header; audit: every promotion"
    );
}
