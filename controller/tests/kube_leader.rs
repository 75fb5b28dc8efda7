//! Leader election against the real API server (tests/envtest): candidates
//! with short timings share one Lease; exactly one leads, a dead leader is
//! replaced once its Lease expires, a leader that shuts down hands over at
//! once, and `leaseTransitions` counts every handover.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use weir_controller::kube::leader::{LeaderElector, Timings};
use weir_envtest::TestEnv;
use weir_test_kit::poll::until;

const LEASE_DURATION: Duration = Duration::from_secs(2);
const RETRY_PERIOD: Duration = Duration::from_millis(200);
const TIMINGS: Timings = Timings {
    lease_duration: LEASE_DURATION,
    renew_deadline: Duration::from_millis(1500),
    retry_period: RETRY_PERIOD,
};
/// Room for API round trips on a machine shared with other builds.
const SLACK: Duration = Duration::from_millis(500);
const LEASE: &str = "weir-controller";

/// One running candidate.
struct Candidate {
    identity: &'static str,
    leading: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

fn start(env: &TestEnv, identity: &'static str) -> Candidate {
    let elector = LeaderElector::new(env.client.clone(), &env.namespace, LEASE, identity, TIMINGS)
        .expect("valid settings");
    let (tx, leading) = watch::channel(false);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(tx, async move {
        // A dropped sender is a stop too.
        let _ = stopped.await;
    }));
    Candidate {
        identity,
        leading,
        stop: Some(stop),
        task,
    }
}

impl Candidate {
    fn leads(&self) -> bool {
        *self.leading.borrow()
    }

    /// Graceful shutdown; returns once `run` has returned.
    async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap_or_else(|_| panic!("{} did not stop within 5 s", self.identity))
            .expect("run returned");
    }

    /// Waits until this candidate leads; returns how long that took.
    async fn until_leading(&mut self, within: Duration) -> Duration {
        let started = Instant::now();
        timeout(within, self.leading.wait_for(|l| *l))
            .await
            .unwrap_or_else(|_| panic!("{} did not lead within {within:?}", self.identity))
            .expect("the elector is running");
        started.elapsed()
    }
}

/// Waits until one of `candidates` leads; returns its index.
async fn leader_of(candidates: &[Candidate], within: Duration) -> usize {
    until("a leader", within, || async {
        let leading: Vec<usize> = (0..candidates.len())
            .filter(|i| candidates[*i].leads())
            .collect();
        match leading.as_slice() {
            [one] => Some(*one),
            [] => None,
            many => panic!("{} lead at once", many.len()),
        }
    })
    .await
}

/// The Lease's holder and `leaseTransitions`.
async fn lease(env: &TestEnv) -> (Option<String>, i32) {
    let lease = Api::<Lease>::namespaced(env.client.clone(), &env.namespace)
        .get(LEASE)
        .await
        .expect("the Lease exists");
    let spec = lease.spec.unwrap_or_default();
    (spec.holder_identity, spec.lease_transitions.unwrap_or(0))
}

/// Checks, every 10 ms for `period`, that `leader` and nobody else leads.
async fn only_leader_for(candidates: &[Candidate], leader: usize, period: Duration) -> usize {
    let end = Instant::now() + period;
    let mut samples = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while Instant::now() < end {
        tick.tick().await;
        let leading: Vec<&str> = candidates
            .iter()
            .filter(|c| c.leads())
            .map(|c| c.identity)
            .collect();
        assert_eq!(
            leading,
            [candidates[leader].identity],
            "sample {samples}: exactly the leader leads"
        );
        samples += 1;
    }
    samples
}

/// Two candidates, once one of them leads steadily: (leader, follower).
async fn settled_pair(env: &TestEnv) -> (Candidate, Candidate) {
    let mut candidates = vec![start(env, "weir-a"), start(env, "weir-b")];
    let leader = leader_of(&candidates, Duration::from_secs(10)).await;
    only_leader_for(&candidates, leader, 2 * RETRY_PERIOD).await;
    let leader = candidates.remove(leader);
    (leader, candidates.remove(0))
}

#[tokio::test]
async fn exactly_one_of_two_candidates_leads() {
    let env = TestEnv::new("leader-exactly-one").await;
    let candidates = [start(&env, "weir-a"), start(&env, "weir-b")];
    let leader = leader_of(&candidates, Duration::from_secs(10)).await;

    // Longer than a lease: the leader's renewals keep the other out.
    let samples = only_leader_for(&candidates, leader, 3 * LEASE_DURATION / 2).await;
    assert!(samples > 100, "{samples} samples");
    assert_eq!(
        lease(&env).await,
        (Some(candidates[leader].identity.to_owned()), 0),
        "the creator holds the Lease; it never changed hands"
    );
    for c in candidates {
        assert!(!c.task.is_finished(), "{} is still campaigning", c.identity);
        c.shut_down().await;
    }
}

#[tokio::test]
async fn an_aborted_leader_is_replaced_once_its_lease_expires() {
    let env = TestEnv::new("leader-aborted").await;
    let (dead, mut successor) = settled_pair(&env).await;
    dead.task.abort();
    let aborted = Instant::now();
    assert!(
        dead.task.await.is_err_and(|e| e.is_cancelled()),
        "the leader's task was aborted"
    );
    successor
        .until_leading(LEASE_DURATION + RETRY_PERIOD + SLACK)
        .await;
    let took = aborted.elapsed();
    eprintln!("handover after abort: {took:?}");
    // The dead leader renewed at most one retry period before its abort;
    // the successor may take over only a lease duration after it saw that.
    assert!(
        took >= LEASE_DURATION - 2 * RETRY_PERIOD,
        "took over after {took:?}, before the Lease could have expired"
    );
    assert_eq!(lease(&env).await, (Some(successor.identity.to_owned()), 1));
    successor.shut_down().await;
}

#[tokio::test]
async fn a_leader_that_shuts_down_hands_over_within_a_retry_period() {
    let env = TestEnv::new("leader-shutdown").await;
    let (old, mut successor) = settled_pair(&env).await;
    let old_leading = old.leading.clone();
    let stopping = tokio::spawn(old.shut_down());
    let took = successor.until_leading(RETRY_PERIOD + SLACK).await;
    assert!(
        !*old_leading.borrow(),
        "the old leader stopped before the new one started"
    );
    eprintln!("handover after shutdown: {took:?}");
    // Waiting for expiry would have taken at least this long.
    assert!(took < LEASE_DURATION - 2 * RETRY_PERIOD);
    stopping.await.expect("the old leader's run returned");
    assert_eq!(lease(&env).await, (Some(successor.identity.to_owned()), 1));
    successor.shut_down().await;
}

#[tokio::test]
async fn lease_transitions_count_every_handover() {
    let env = TestEnv::new("leader-transitions").await;
    let (first, mut second) = settled_pair(&env).await;
    assert_eq!(lease(&env).await.1, 0);

    // Handover 1: graceful.
    first.shut_down().await;
    second.until_leading(LEASE_DURATION).await;
    assert_eq!(lease(&env).await, (Some(second.identity.to_owned()), 1));

    // A newcomer does not take a Lease that is being renewed.
    let mut candidates = vec![second, start(&env, "weir-c")];
    only_leader_for(&candidates, 0, LEASE_DURATION + SLACK).await;

    // Handover 2: the leader dies.
    let mut newcomer = candidates.remove(1);
    candidates.remove(0).task.abort();
    newcomer
        .until_leading(LEASE_DURATION + RETRY_PERIOD + SLACK)
        .await;
    assert_eq!(lease(&env).await, (Some("weir-c".to_owned()), 2));

    // Handover 3: graceful again, to nobody; the next candidate takes it.
    newcomer.shut_down().await;
    assert_eq!(lease(&env).await, (None, 2), "released");
    let mut last = start(&env, "weir-d");
    last.until_leading(RETRY_PERIOD + SLACK).await;
    assert_eq!(lease(&env).await, (Some("weir-d".to_owned()), 3));
    last.shut_down().await;
}
