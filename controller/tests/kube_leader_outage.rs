//! An API-server outage (tests/envtest stops and restarts kube-apiserver;
//! this binary has that server to itself): the leader stops leading by its
//! renew deadline, before its Lease could expire for anyone else, and
//! leads again once the server is back; `connect` waits the outage out.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::Api;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use weir_controller::kube::backoff::connect;
use weir_controller::kube::leader::{LeaderElector, Timings};
use weir_envtest::{TestEnv, server};

const TIMINGS: Timings = Timings {
    lease_duration: Duration::from_secs(2),
    renew_deadline: Duration::from_millis(1500),
    retry_period: Duration::from_millis(200),
};
const LEASE: &str = "weir-controller";

#[tokio::test]
async fn an_outage_stops_the_leader_by_its_renew_deadline_and_connect_waits_it_out() {
    let env = TestEnv::new("leader-outage").await;
    let url = server().config().await.expect("config").cluster_url;
    let elector = LeaderElector::new(env.client.clone(), &env.namespace, LEASE, "weir-a", TIMINGS)
        .expect("valid settings");
    let (tx, mut leading) = watch::channel(false);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(tx, async move {
        let _ = stopped.await;
    }));
    timeout(Duration::from_secs(10), leading.wait_for(|l| *l))
        .await
        .expect("leads within 10 s")
        .expect("running");

    // Another candidate's view of the Lease: when its record last changed.
    // The leader must stop acting before a lease duration has passed since
    // then, as that candidate would take the Lease at that moment.
    let leases = Api::<Lease>::namespaced(env.client.clone(), &env.namespace);
    let mut watch_leading = leading.clone();
    let lost = tokio::spawn(async move {
        let _ = watch_leading.wait_for(|l| !*l).await;
        Instant::now()
    });
    let outage = tokio::spawn(weir_envtest::stop_apiserver());
    let mut last_change: Option<(Option<LeaseSpec>, Instant)> = None;
    let give_up = Instant::now() + Duration::from_secs(15);
    while !lost.is_finished() {
        assert!(
            Instant::now() < give_up,
            "still leading 15 s into the outage"
        );
        if let Ok(Ok(lease)) = timeout(Duration::from_millis(100), leases.get(LEASE)).await {
            let seen = Instant::now();
            if last_change
                .as_ref()
                .is_none_or(|(spec, _)| *spec != lease.spec)
            {
                last_change = Some((lease.spec, seen));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost = lost.await.expect("joined");
    let (_, changed) = last_change.expect("the Lease was read before the outage");
    let held = lost - changed;
    eprintln!("stopped leading {held:?} after its last renewal was seen");
    assert!(
        held < TIMINGS.lease_duration,
        "still leading {held:?} after its last renewal: another could have taken over"
    );
    // It kept leading through failed renewals until its deadline, counted
    // from when it sent the last good one (sent a round trip before it was
    // seen; a retry period earlier if its answer was lost in the shutdown).
    // Giving up at the first failure would show here as about 0.2 s.
    assert!(
        held >= TIMINGS.renew_deadline - 2 * TIMINGS.retry_period,
        "gave up {held:?} after its last renewal, before its renew deadline"
    );
    outage.await.expect("kube-apiserver stopped");

    // connect keeps trying while the server is down (its restart takes
    // seconds; a connect that gave up at the first refusal fails here).
    let client = env.client.clone();
    let url_text = url.to_string();
    let connecting =
        tokio::spawn(async move { connect(&client, &url_text, Duration::from_secs(60)).await });

    weir_envtest::start_apiserver().await;
    let info = timeout(Duration::from_secs(30), connecting)
        .await
        .expect("connect returned once the server was back")
        .expect("joined")
        .expect("connected");
    assert_eq!(info.major, "1");

    timeout(Duration::from_secs(30), leading.wait_for(|l| *l))
        .await
        .expect("leads again once the server is back")
        .expect("running");
    let spec = Api::<Lease>::namespaced(env.client.clone(), &env.namespace)
        .get(LEASE)
        .await
        .expect("the Lease")
        .spec
        .unwrap_or_default();
    assert_eq!(spec.holder_identity.as_deref(), Some("weir-a"));
    assert_eq!(
        spec.lease_transitions,
        Some(0),
        "the Lease never changed hands"
    );

    let _ = stop.send(());
    timeout(Duration::from_secs(5), task)
        .await
        .expect("stopped")
        .expect("run returned");
}
