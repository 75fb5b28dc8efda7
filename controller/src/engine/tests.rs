//! Table tests of `plan`: every phase, transition and abort path, driven
//! through a small world that applies plans and moves time by hand.

use std::time::Duration;

use jiff::Timestamp;
use weir_analysis::{Counts, Distribution, Observations};
use weir_crds::{CanarySpec, CanaryStatus, Cohort, HistoryEvent, PausedReason, Phase, Traffic};

use super::spec::{Rollout, SpecError};
use super::{Action, Evidence, Observed, Outcome, plan, reasons};

/// What one plan makes happen: the engine's actions, then the changes its
/// status asks the Kubernetes shell to converge to (replicas per cohort,
/// the stable copy's template while promoting). Those two are state in
/// `status`, not actions, because the shell converges to them on every
/// reconcile; the tables derive them here so they still say exactly when
/// each one happens.
#[derive(Debug, Clone, PartialEq)]
enum Effect {
    /// An action of the plan, as it is.
    Act(Action),
    /// `status.replicas` of a cohort changed to `replicas`.
    Scale { cohort: Cohort, replicas: u32 },
    /// Stable's copy takes `revision`'s template
    /// ([`super::stable_takes_template`]).
    PromoteStable { revision: String },
}

/// A plan as the tables read it.
#[derive(Debug, Clone)]
struct Planned {
    actions: Vec<Effect>,
    status: CanaryStatus,
    requeue_after: Option<Duration>,
}

/// Runs `plan` and derives its effects against `before`.
fn planned(
    rollout: &Rollout,
    before: &CanaryStatus,
    observed: &Observed,
    now: Timestamp,
) -> Planned {
    let p = plan(rollout, before, observed, now);
    let mut actions: Vec<Effect> = p.actions.into_iter().map(Effect::Act).collect();
    // Adoption (no replicas recorded yet) is not a scale: the target keeps
    // its pods until the stable copy is ready.
    if let (Some(b), Some(a)) = (before.replicas, p.status.replicas) {
        if a.canary != b.canary {
            actions.push(Effect::Scale {
                cohort: Cohort::Canary,
                replicas: a.canary,
            });
        }
        if a.stable != b.stable {
            actions.push(Effect::Scale {
                cohort: Cohort::Stable,
                replicas: a.stable,
            });
        }
    }
    if super::stable_takes_template(rollout, &p.status) {
        actions.push(Effect::PromoteStable {
            revision: p.status.canary_revision.clone().unwrap_or_default(),
        });
    }
    Planned {
        actions,
        status: p.status,
        requeue_after: p.requeue_after,
    }
}

const LOCAL: &str = r#"
backends:
  stable: {url: "http://127.0.0.1:8001"}
  canary: {url: "http://127.0.0.1:8002"}
strategy:
  canary:
    steps:
      - setWeight: 50
      - analysis: {minDuration: 40s, maxDuration: 5m}
analysis:
  interval: 10s
  warmup: 20s
  metrics:
    - {name: ttft, kind: latency, quantiles: [0.5], maxIncrease: 10%}
    - {name: errors, kind: errorRate, maxIncrease: 1pp, hardLimit: 20%}
"#;

const KUBE: &str = r#"
targetRef: {name: chat}
service: {port: 8000}
strategy:
  canary:
    steps:
      - setWeight: 20
      - pause: {duration: 1m}
      - setWeight: 50
      - analysis: {maxDuration: 5m}
      - pause: {}
analysis:
  interval: 10s
  warmup: 20s
  metrics:
    - {name: ttft, kind: latency, maxIncrease: 10%}
progressDeadlineSeconds: 600
"#;

const BLUE_GREEN: &str = r#"
targetRef: {name: chat}
service: {port: 8000}
strategy:
  blueGreen:
    scaleDownDelay: 5m
    prePromotionAnalysis: {maxDuration: 3m}
    postPromotionAnalysis: {maxDuration: 3m}
analysis:
  interval: 10s
  warmup: 10s
  metrics:
    - {name: ttft, kind: latency, maxIncrease: 10%}
"#;

fn spec(yaml: &str) -> CanarySpec {
    serde_saphyr::from_str(yaml).expect("test spec parses")
}

fn rollout(yaml: &str) -> Rollout {
    Rollout::new("chat", &spec(yaml)).expect("test spec is valid")
}

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("valid time")
}

/// Deterministic lognormal samples (LCG + Box-Muller): median 200 ms.
fn lognormal(n: usize, scale: f64, seed: u64) -> Distribution {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut uniform = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let values: Vec<f64> = (0..n)
        .map(|_| {
            let z = (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
            0.2 * scale * (0.3 * z).exp()
        })
        .collect();
    Distribution::from_values(&values).expect("finite samples")
}

/// Evidence for `window`: the canary's TTFT scaled by `slower`, its error
/// rate `canary_errors`, `n` requests per cohort.
fn evidence(window: u64, n: usize, slower: f64, canary_errors: f64) -> Evidence {
    let total = n as u64;
    Evidence {
        window,
        warmup_requests: total,
        metrics: vec![
            (
                "ttft".into(),
                Observations::Latency {
                    baseline: lognormal(n, 1.0, 1),
                    canary: lognormal(n, slower, 2),
                },
            ),
            (
                "errors".into(),
                Observations::Errors {
                    baseline: Counts { errors: 0, total },
                    canary: Counts {
                        errors: (canary_errors * n as f64) as u64,
                        total,
                    },
                },
            ),
        ],
        load: None,
        slices: Vec::new(),
    }
}

/// Applies plans to a status and moves time, like a shell would.
struct World {
    rollout: Rollout,
    status: CanaryStatus,
    observed: Observed,
    now: Timestamp,
    log: Vec<Effect>,
    /// When the last plan asked to be called again.
    requeue: Option<Duration>,
}

impl World {
    fn new(yaml: &str) -> World {
        let rollout = rollout(yaml);
        let mut observed = Observed {
            desired_revision: "v1".into(),
            target_replicas: 10,
            applied_generation: Some(0),
            ..Observed::default()
        };
        observed.ready.stable = 10;
        let mut status = CanaryStatus::default();
        if rollout.is_local() {
            // Local mode starts with both versions known.
            status.stable_revision = Some("v1".into());
            observed.desired_revision = "v2".into();
            observed.ready.canary = 1;
        }
        World {
            rollout,
            status,
            observed,
            now: t0(),
            log: Vec::new(),
            requeue: None,
        }
    }

    fn tick(&mut self) -> Planned {
        let p = planned(&self.rollout, &self.status, &self.observed, self.now);
        // Determinism: the same inputs give the same plan (compared as
        // text: reference tests may carry a NaN statistic).
        let again = planned(&self.rollout, &self.status, &self.observed, self.now);
        assert_eq!(format!("{p:?}"), format!("{again:?}"));
        self.status = p.status.clone();
        if let Some(t) = &self.status.traffic {
            self.observed.applied_generation = Some(t.generation);
        }
        self.log.extend(p.actions.iter().cloned());
        self.requeue = p.requeue_after;
        p
    }

    /// Moves time on by `secs` and plans. While a window warms up on
    /// requests, the world also calls when the plan asked to be called
    /// (as every shell does), so the window opens when a shell's would.
    fn wait(&mut self, secs: u64) -> Planned {
        let until = super::after(self.now, Duration::from_secs(secs));
        while self
            .status
            .window
            .as_ref()
            .is_some_and(|w| w.warmup.is_some())
        {
            let Some(next) = self
                .requeue
                .map(|r| super::after(self.now, r))
                .filter(|t| *t < until)
            else {
                break;
            };
            self.now = next;
            self.tick();
        }
        self.now = until;
        self.tick()
    }

    fn window(&self) -> u64 {
        self.status.window.as_ref().expect("a window is open").id
    }

    fn canary_share(&self) -> f64 {
        self.status
            .traffic
            .as_ref()
            .and_then(|t| t.backends.iter().find(|b| b.cohort == Cohort::Canary))
            .map_or(0.0, |b| b.weight)
    }
}

fn traffic_shares(actions: &[Effect]) -> Vec<f64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Effect::Act(Action::SetTraffic(t)) => t
                .backends
                .iter()
                .find(|b| b.cohort == Cohort::Canary)
                .map(|b| b.weight),
            _ => None,
        })
        .collect()
}

fn events(actions: &[Effect]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Effect::Act(Action::Event { reason, .. }) => Some(*reason),
            _ => None,
        })
        .collect()
}

/// On every abort path the first traffic action sends everything to stable
/// and nothing scales the canary down in the same plan.
fn assert_safe_abort(p: &Planned) {
    assert_eq!(p.status.phase, Phase::Aborted);
    let first = traffic_shares(&p.actions);
    assert_eq!(
        first.first().copied(),
        Some(0.0),
        "traffic to stable first: {:?}",
        p.actions
    );
    assert!(
        !p.actions.iter().any(|a| matches!(
            a,
            Effect::Scale {
                cohort: Cohort::Canary,
                replicas: 0
            }
        )),
        "the canary must not scale down before the proxies applied the table"
    );
    assert!(
        p.actions
            .contains(&Effect::Act(Action::Finish(Outcome::Aborted)))
    );
}

#[test]
fn kubernetes_first_sight_adopts_the_target_as_stable() {
    let mut w = World::new(KUBE);
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Idle);
    assert_eq!(p.status.stable_revision.as_deref(), Some("v1"));
    assert_eq!(w.canary_share(), 0.0);
    assert_eq!(
        p.requeue_after,
        Some(Duration::from_secs(1)),
        "the target's scale-down waits on the proxies, which no watch reports"
    );
    assert!(
        p.actions.iter().all(|a| !matches!(a, Effect::Scale { .. })),
        "the target's pods serve until the stable copy is ready: {:?}",
        p.actions
    );
    // The target is the canary cohort: once stable is ready and every
    // proxy serves the all-stable table, it scales to zero.
    w.observed.ready.stable = 9;
    assert!(w.tick().actions.is_empty(), "stable not ready yet");
    w.observed.ready.stable = 10;
    w.observed.applied_generation = Some(0);
    assert!(w.tick().actions.is_empty(), "proxies not on the table yet");
    // (`tick` marks the table applied again.)
    let p = w.tick();
    assert_eq!(
        p.actions,
        vec![Effect::Scale {
            cohort: Cohort::Canary,
            replicas: 0
        }]
    );
    // Nothing changes on the next call, and nothing is waited for.
    let p = w.tick();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.requeue_after, None);
}

#[test]
fn set_weight_scales_the_canary_before_moving_traffic() {
    let mut w = World::new(KUBE);
    w.tick();
    w.observed.desired_revision = "v2".into();
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Progressing);
    assert_eq!(p.status.canary_revision.as_deref(), Some("v2"));
    // matchWeight: 20% of the traffic beside 10 stable replicas takes 3
    // (engine::replicas).
    assert!(p.actions.contains(&Effect::Scale {
        cohort: Cohort::Canary,
        replicas: 3
    }));
    assert!(
        traffic_shares(&p.actions).is_empty(),
        "no traffic before the canary is ready"
    );
    assert_eq!(p.status.current_step, 0);
    w.observed.ready.canary = 3;
    let p = w.wait(5);
    assert_eq!(traffic_shares(&p.actions), vec![20.0]);
    assert_eq!(p.status.current_step, 1, "on to the pause");
    assert_eq!(p.status.canary_weight, 20.0);
    assert!(events(&p.actions).contains(&reasons::WEIGHT_SET));
}

#[test]
fn timed_pause_waits_exactly_its_duration() {
    let mut w = World::new(KUBE);
    w.tick();
    w.observed.desired_revision = "v2".into();
    w.observed.ready.canary = 10;
    let p = w.tick();
    assert_eq!(p.status.current_step, 1);
    assert_eq!(
        p.requeue_after,
        Some(Duration::from_secs(10)),
        "at most one interval"
    );
    assert_eq!(w.wait(59).status.current_step, 1);
    let p = w.wait(1);
    assert_eq!(
        p.status.current_step, 3,
        "pause over, 50% set, now analysing"
    );
    assert_eq!(traffic_shares(&p.actions), vec![50.0]);
}

#[test]
fn indefinite_pause_waits_for_promote_once_per_request() {
    let mut w = World::new(KUBE);
    w.tick();
    w.observed.desired_revision = "v2".into();
    w.observed.ready.canary = 10;
    w.tick();
    w.wait(60);
    // Pass the analysis with healthy evidence.
    let window = w.window();
    w.observed.evidence = Some(evidence(window, 3000, 1.0, 0.0));
    let p = w.wait(30);
    assert_eq!(p.status.current_step, 4, "{}", p.status.message);
    assert_eq!(p.status.phase, Phase::Paused);
    assert_eq!(p.status.paused_reason, Some(PausedReason::Step));
    assert_eq!(
        p.requeue_after,
        Some(Duration::from_secs(10)),
        "a pause with an open window is still watched every interval"
    );
    assert!(
        w.wait(3600).status.phase == Phase::Paused,
        "a pause without duration never ends by itself"
    );
    w.observed.commands.promote = Some(("req-1".into(), false));
    let p = w.tick();
    assert_eq!(
        p.status.phase,
        Phase::Promoting,
        "last step ended: promotion"
    );
    assert!(events(&p.actions).contains(&reasons::PROMOTED_BY_HAND));
    // The same request again does nothing more.
    let p = w.tick();
    assert!(!events(&p.actions).contains(&reasons::PROMOTED_BY_HAND));
}

#[test]
fn warmup_evidence_and_stale_windows_are_not_judged() {
    let mut w = World::new(LOCAL);
    let p = w.tick();
    assert_eq!(traffic_shares(&p.actions).last(), Some(&50.0));
    let window = w.window();
    assert_eq!(
        w.status.window.as_ref().map(|w| w.opens_at.0),
        Some(super::after(t0(), Duration::from_secs(20)))
    );
    // Evidence of another window (an older baseline) is ignored, however bad.
    w.observed.evidence = Some(evidence(window - 1, 3000, 2.0, 0.0));
    let p = w.wait(40);
    assert_eq!(p.status.phase, Phase::Progressing);
    assert!(p.status.last_analysis.is_none());
    // Before the window opens plus one interval, nothing is judged either.
    let mut w = World::new(LOCAL);
    w.tick();
    w.observed.evidence = Some(evidence(w.window(), 3000, 2.0, 0.0));
    assert!(w.wait(29).status.last_analysis.is_none());
    assert_safe_abort(&w.wait(1));
}

#[test]
fn analysis_verdicts_table() {
    // (canary slower by, canary error rate, seconds waited, expected phase, step)
    let table = [
        (1.0, 0.0, 30, Phase::Progressing, 1), // promote verdict, but minDuration 40s not reached
        (1.0, 0.0, 40, Phase::Succeeded, 2),   // promote after minDuration: local mode promotes
        (1.3, 0.0, 30, Phase::Aborted, 1),     // 30% slower: abort at the first verdict
        (1.0, 0.3, 30, Phase::Aborted, 1),     // 30% errors: hard limit
    ];
    for (slower, errors, secs, phase, step) in table {
        let mut w = World::new(LOCAL);
        w.tick();
        w.observed.evidence = Some(evidence(w.window(), 3000, slower, errors));
        let mut p = w.wait(30);
        if secs > 30 {
            p = w.wait(secs - 30);
        }
        assert_eq!(
            (p.status.phase, p.status.current_step),
            (phase, step),
            "slower {slower}, errors {errors}: {}",
            p.status.message
        );
        if phase == Phase::Aborted {
            assert_safe_abort(&p);
            let abort = p.status.abort.as_ref().expect("abort recorded");
            assert_eq!(abort.reason, reasons::ANALYSIS_FAILED);
            let metric = if slower > 1.0 { "ttft" } else { "errors" };
            assert!(
                abort.message.contains(metric),
                "names the metric: {}",
                abort.message
            );
            assert_eq!(w.canary_share(), 0.0);
        }
        if phase == Phase::Succeeded {
            assert_eq!(
                w.canary_share(),
                100.0,
                "local promotion sends everything to the canary"
            );
            assert!(
                p.actions
                    .contains(&Effect::Act(Action::Finish(Outcome::Promoted)))
            );
            assert_eq!(
                p.status.history.last().map(|h| h.event),
                Some(HistoryEvent::Promoted)
            );
        }
    }
}

#[test]
fn load_imbalance_holds_judgement_but_not_hard_limits() {
    for (errors, phase) in [(0.0, Phase::Progressing), (0.3, Phase::Aborted)] {
        let mut w = World::new(LOCAL);
        w.tick();
        let mut ev = evidence(w.window(), 3000, 1.5, errors);
        ev.load = Some(weir_analysis::decision::Load {
            baseline_per_replica: 10.0,
            canary_per_replica: 5.0,
        });
        w.observed.evidence = Some(ev);
        let p = w.wait(30);
        assert_eq!(p.status.phase, phase, "{}", p.status.message);
        if phase == Phase::Progressing {
            assert!(
                p.status.message.contains("per-replica load"),
                "{}",
                p.status.message
            );
        }
    }
}

#[test]
fn on_inconclusive_table() {
    for (policy, phase) in [
        ("abort", Phase::Aborted),
        ("promote", Phase::Succeeded),
        ("pause", Phase::Paused),
    ] {
        let yaml = LOCAL.replace(
            "  warmup: 20s",
            &format!("  warmup: 20s\n  onInconclusive: {policy}"),
        );
        let mut w = World::new(&yaml);
        w.tick();
        // Too few samples to decide anything.
        w.observed.evidence = Some(evidence(w.window(), 50, 1.0, 0.0));
        let p = w.wait(299);
        assert_eq!(p.status.phase, Phase::Progressing, "{policy}: not yet");
        let p = w.wait(1);
        assert_eq!(p.status.phase, phase, "{policy}: {}", p.status.message);
        assert!(events(&w.log).contains(&reasons::INCONCLUSIVE));
        if phase == Phase::Aborted {
            assert_safe_abort(&p);
        }
        if phase == Phase::Paused {
            assert_eq!(p.status.paused_reason, Some(PausedReason::Inconclusive));
        }
    }
}

/// Drives a Kubernetes canary into `phase`.
fn kube_in(phase: Phase) -> World {
    let mut w = World::new(KUBE);
    w.tick();
    w.observed.desired_revision = "v2".into();
    w.observed.ready.canary = 10;
    w.tick();
    match phase {
        Phase::Progressing => {}
        Phase::Paused => {
            w.rollout.paused = true;
            w.tick();
        }
        Phase::Promoting => {
            w.observed.commands.promote = Some(("full".into(), true));
            w.tick();
        }
        _ => unreachable!("only running phases"),
    }
    assert_eq!(w.status.phase, phase);
    w
}

#[test]
fn manual_abort_from_every_running_phase() {
    for phase in [Phase::Progressing, Phase::Paused, Phase::Promoting] {
        let mut w = kube_in(phase);
        w.observed.applied_generation = Some(0);
        w.observed.commands.abort = Some("a1".into());
        let p = w.tick();
        assert_safe_abort(&p);
        assert_eq!(
            p.status.abort.as_ref().map(|a| a.reason.as_str()),
            Some(reasons::MANUAL_ABORT),
            "{phase}"
        );
        // Proxies applied the table and the canary drained: now it scales down.
        w.observed.open_streams = Some(weir_crds::CohortReplicas {
            stable: 5,
            canary: 2,
        });
        let p = w.tick();
        assert!(
            p.actions.iter().all(|a| !matches!(a, Effect::Scale { .. })),
            "waits for open streams: {phase}"
        );
        w.observed.open_streams = Some(weir_crds::CohortReplicas {
            stable: 5,
            canary: 0,
        });
        let p = w.tick();
        assert!(
            p.actions.contains(&Effect::Scale {
                cohort: Cohort::Canary,
                replicas: 0
            }),
            "{phase}: {:?}",
            p.actions
        );
        assert!(w.tick().actions.is_empty(), "settled");
    }
}

#[test]
fn abort_waits_for_every_proxy_before_scaling_down() {
    let mut w = kube_in(Phase::Progressing);
    w.observed.commands.abort = Some("a1".into());
    let p = planned(&w.rollout, &w.status, &w.observed, w.now);
    w.status = p.status;
    // The proxies still serve the previous generation.
    let generation = w
        .status
        .traffic
        .as_ref()
        .map(|t| t.generation)
        .unwrap_or_default();
    w.observed.applied_generation = Some(generation - 1);
    let p = planned(&w.rollout, &w.status, &w.observed, w.now);
    assert!(!p.actions.iter().any(|a| matches!(a, Effect::Scale { .. })));
    w.observed.applied_generation = Some(generation);
    let p = planned(&w.rollout, &w.status, &w.observed, w.now);
    assert!(p.actions.contains(&Effect::Scale {
        cohort: Cohort::Canary,
        replicas: 0
    }));
}

#[test]
fn abort_when_nothing_runs_only_acknowledges() {
    let mut w = World::new(KUBE);
    w.tick();
    w.tick(); // adoption: the target scales to zero
    w.observed.commands.abort = Some("a1".into());
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Idle);
    assert!(p.actions.is_empty());
    assert_eq!(p.status.acknowledged.abort.as_deref(), Some("a1"));
}

#[test]
fn retry_restarts_an_aborted_run_once() {
    let mut w = kube_in(Phase::Progressing);
    w.observed.commands.abort = Some("a1".into());
    w.tick();
    // An aborted revision does not restart by itself.
    assert_eq!(w.wait(3600).status.phase, Phase::Aborted);
    w.observed.commands.retry = Some("r1".into());
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Progressing);
    assert_eq!(
        p.status.current_step, 1,
        "restarted at step 0, which set the weight at once"
    );
    assert!(events(&p.actions).contains(&reasons::RETRIED));
    assert!(p.status.abort.is_none());
}

#[test]
fn a_new_revision_supersedes_the_run() {
    let mut w = kube_in(Phase::Progressing);
    w.observed.desired_revision = "v3".into();
    let p = w.tick();
    assert_eq!(
        traffic_shares(&p.actions)[0],
        0.0,
        "traffic back to stable first"
    );
    assert_eq!(p.status.canary_revision.as_deref(), Some("v3"));
    assert_eq!(p.status.phase, Phase::Progressing);
    assert_eq!(
        p.status.history.last().map(|h| h.event),
        Some(HistoryEvent::Superseded)
    );
    // Reverting the target to stable ends the run.
    w.observed.desired_revision = "v1".into();
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Idle);
    assert_eq!(w.canary_share(), 0.0);
}

#[test]
fn manual_pause_and_resume_restart_the_step() {
    let mut w = kube_in(Phase::Paused);
    assert_eq!(w.status.paused_reason, Some(PausedReason::Manual));
    // Time passes while paused: the 1m pause step does not complete.
    assert_eq!(w.wait(600).status.current_step, 1);
    w.rollout.paused = false;
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Progressing);
    assert!(events(&p.actions).contains(&reasons::RESUMED));
    assert_eq!(
        w.wait(59).status.current_step,
        1,
        "the pause restarted on resume"
    );
    assert_eq!(w.wait(1).status.current_step, 3);
}

#[test]
fn progress_deadline_aborts_a_canary_that_never_becomes_ready() {
    let mut w = World::new(KUBE);
    w.tick();
    w.observed.desired_revision = "v2".into();
    w.tick();
    assert_eq!(w.wait(600).status.phase, Phase::Progressing);
    let p = w.wait(1);
    assert_safe_abort(&p);
    assert_eq!(
        p.status.abort.as_ref().map(|a| a.reason.as_str()),
        Some(reasons::PROGRESS_DEADLINE)
    );
}

/// The Events of one reason a plan recorded: (warning, message).
fn events_of(p: &Planned, wanted: &str) -> Vec<(bool, String)> {
    p.actions
        .iter()
        .filter_map(|e| match e {
            Effect::Act(Action::Event {
                warning,
                reason,
                message,
            }) if *reason == wanted => Some((*warning, message.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_step_waiting_on_replicas_says_what_is_missing_and_why_once_per_change() {
    let waiting_events = |p: &Planned| events_of(p, reasons::WAITING_FOR_REPLICAS);
    let mut w = World::new(KUBE);
    w.tick();
    w.observed.desired_revision = "v2".into();
    let p = w.tick();
    assert_eq!(
        p.status.message,
        "step 1/5: setWeight 20: waiting for canary replicas: 0/3 ready"
    );
    assert_eq!(
        waiting_events(&p),
        [(false, "waiting for canary replicas: 0/3 ready".to_string())],
        "said once, as a normal Event while the pods say nothing"
    );
    assert!(
        waiting_events(&w.wait(10)).is_empty(),
        "not again while nothing changed"
    );
    let why = "1 pod Unschedulable: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu.";
    w.observed.unready.canary = Some(why.into());
    w.observed.ready.canary = 1;
    let p = w.wait(10);
    let said = format!("waiting for canary replicas: 1/3 ready; {why}");
    assert_eq!(p.status.message, format!("step 1/5: setWeight 20: {said}"));
    assert_eq!(
        waiting_events(&p),
        [(true, said.clone())],
        "a warning once the pods say why"
    );
    assert_eq!(
        w.canary_share(),
        0.0,
        "no traffic before the replicas are ready"
    );
    // Waiting is not progress: the deadline aborts, saying what was missing.
    let p = w.wait(600);
    assert_safe_abort(&p);
    let abort = p.status.abort.as_ref().expect("aborted");
    assert_eq!(abort.reason, reasons::PROGRESS_DEADLINE);
    assert!(abort.message.contains(&said), "{}", abort.message);
    assert!(waiting_events(&p).is_empty(), "{:?}", p.actions);
}

#[test]
fn a_run_that_nothing_measures_says_so_from_its_first_step() {
    let not_measured = |p: &Planned| events_of(p, reasons::NOT_MEASURED);
    let mut w = World::new(KUBE);
    w.observed.unmeasured = Some("no proxies".into());
    let p = w.tick();
    assert!(
        !p.status.message.contains("not measured") && not_measured(&p).is_empty(),
        "outside a run there is nothing to measure: {}",
        p.status.message
    );
    w.observed.desired_revision = "v2".into();
    w.observed.ready.canary = 10;
    let p = w.tick();
    let said = "not measured: no proxies; its analysis cannot pass";
    assert!(
        p.status.message.starts_with("step ") && p.status.message.ends_with(&format!("; {said}")),
        "{}",
        p.status.message
    );
    assert_eq!(not_measured(&p), [(true, said.to_string())]);
    assert!(not_measured(&w.wait(10)).is_empty(), "said once");
    // Once something measures it, the message stops saying so.
    w.observed.unmeasured = None;
    assert!(!w.wait(10).status.message.contains("not measured"));
}

#[test]
fn ready_is_false_while_stable_has_no_ready_replica_and_a_new_revision_holds() {
    use super::conditions::{self, ConditionType};
    let mut w = World::new(KUBE);
    w.tick();
    let why = "10 pods ImagePullBackOff: Back-off pulling image \"vllm:v1\"";
    w.observed.ready.stable = 0;
    w.observed.unready.stable = Some(why.into());
    let p = w.tick();
    let ready = conditions::get(&p.status.conditions, ConditionType::Ready).expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "StableNotReady")
    );
    assert_eq!(
        ready.message,
        format!("the stable cohort has no ready replica: chat-stable 0/10 ready; {why}")
    );

    w.observed.desired_revision = "v2".into();
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Idle, "the run holds");
    assert_eq!(
        p.status.message,
        format!(
            "stable v1; new revision v2 holds until stable is ready: waiting for stable replicas: 0/10 ready; {why}"
        )
    );
    let reasons_of = |p: &Planned| -> Vec<&'static str> {
        p.actions
            .iter()
            .filter_map(|e| match e {
                Effect::Act(Action::Event { reason, .. }) => Some(*reason),
                _ => None,
            })
            .collect()
    };
    assert_eq!(reasons_of(&p), [reasons::WAITING_FOR_REPLICAS]);
    assert!(reasons_of(&w.wait(10)).is_empty(), "said once");

    w.observed.ready.stable = 10;
    w.observed.unready.stable = None;
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Progressing);
    assert!(reasons_of(&p).contains(&reasons::RUN_STARTED));
    let ready = conditions::get(&p.status.conditions, ConditionType::Ready).expect("Ready");
    assert_eq!(ready.status, "True");
}

#[test]
fn kubernetes_promotion_keeps_traffic_on_the_canary_until_stable_is_ready() {
    let mut w = kube_in(Phase::Promoting);
    assert_eq!(
        w.canary_share(),
        100.0,
        "canary at full size carries everything"
    );
    assert!(w.log.contains(&Effect::PromoteStable {
        revision: "v2".into()
    }));
    let p = w.wait(5);
    assert_eq!(p.status.phase, Phase::Promoting);
    w.observed.stable_rolled_out = Some("v2".into());
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Succeeded);
    assert_eq!(p.status.stable_revision.as_deref(), Some("v2"));
    assert_eq!(w.canary_share(), 0.0, "back on the updated stable");
    assert!(
        p.actions
            .contains(&Effect::Act(Action::Finish(Outcome::Promoted)))
    );
    let p = w.tick();
    assert!(p.actions.contains(&Effect::Scale {
        cohort: Cohort::Canary,
        replicas: 0
    }));
    // The promoted revision does not start another run.
    assert_eq!(w.wait(60).status.phase, Phase::Succeeded);
}

#[test]
fn blue_green_preview_cutover_and_promotion() {
    blue_green_to_promoting(BLUE_GREEN);
}

/// A blue-green run of `yaml` from the preview to the promotion, checking
/// each stage on the way: the preview reachable by header only, the
/// cutover, the post-promotion analysis, the wait for the old side's open
/// streams. Returns the world once `Promoting`.
fn blue_green_to_promoting(yaml: &str) -> World {
    let mut w = World::new(yaml);
    w.tick();
    w.observed.desired_revision = "v2".into();
    w.observed.ready.canary = 10;
    let p = w.tick();
    let t = p.status.traffic.as_ref().expect("traffic");
    assert!(
        t.override_header,
        "the preview is reachable through the header"
    );
    assert_eq!(w.canary_share(), 0.0, "but gets no live traffic");
    w.observed.evidence = Some(evidence(w.window(), 3000, 1.0, 0.0));
    let p = w.wait(20);
    assert_eq!(w.canary_share(), 100.0, "cut over: {}", p.status.message);
    assert!(events(&p.actions).contains(&reasons::CUTOVER));
    let post = w.window();
    w.observed.evidence = Some(evidence(post, 3000, 1.0, 0.0));
    let p = w.wait(20);
    assert_eq!(
        p.status.current_step, 4,
        "post-promotion passed; old side kept warm"
    );
    w.observed.open_streams = Some(weir_crds::CohortReplicas {
        stable: 3,
        canary: 40,
    });
    let p = w.wait(300);
    assert_eq!(
        p.status.phase,
        Phase::Progressing,
        "stable still has open streams"
    );
    w.observed.open_streams = Some(weir_crds::CohortReplicas {
        stable: 0,
        canary: 40,
    });
    let p = w.wait(1);
    assert_eq!(p.status.phase, Phase::Promoting, "{}", p.status.message);
    w
}

#[test]
fn blue_green_grows_a_small_preview_to_full_size_before_the_cutover() {
    let yaml = BLUE_GREEN.replace(
        "scaleDownDelay: 5m",
        "scaleDownDelay: 5m\n    previewReplicas: 1",
    );
    let mut w = World::new(&yaml);
    w.tick();
    w.observed.desired_revision = "v2".into();
    w.observed.ready.canary = 1;
    let p = w.tick();
    assert!(p.actions.contains(&Effect::Scale {
        cohort: Cohort::Canary,
        replicas: 1
    }));
    w.observed.evidence = Some(evidence(w.window(), 3000, 1.0, 0.0));
    let p = w.wait(20);
    assert!(
        p.actions.contains(&Effect::Scale {
            cohort: Cohort::Canary,
            replicas: 10
        }),
        "the preview grows to stable's size: {:?}",
        p.actions
    );
    assert_eq!(
        w.canary_share(),
        0.0,
        "one preview replica must not take all the traffic: {}",
        p.status.message
    );
    w.observed.ready.canary = 10;
    let p = w.wait(1);
    assert_eq!(w.canary_share(), 100.0, "cut over: {}", p.status.message);
    assert!(events(&p.actions).contains(&reasons::CUTOVER));
}

#[test]
fn blue_green_post_promotion_regression_rolls_back() {
    let mut w = World::new(BLUE_GREEN);
    w.tick();
    w.observed.desired_revision = "v2".into();
    w.observed.ready.canary = 10;
    w.tick();
    w.observed.evidence = Some(evidence(w.window(), 3000, 1.0, 0.0));
    w.wait(20);
    assert_eq!(w.canary_share(), 100.0);
    w.observed.evidence = Some(evidence(w.window(), 3000, 1.5, 0.0));
    let p = w.wait(20);
    assert_safe_abort(&p);
    assert_eq!(
        p.status.history.last().map(|h| h.event),
        Some(HistoryEvent::RolledBack)
    );
    assert!(events(&p.actions).contains(&reasons::ROLLED_BACK));
}

#[test]
fn blue_green_without_auto_promote_waits_for_a_person() {
    let yaml = BLUE_GREEN.replace(
        "scaleDownDelay: 5m",
        "scaleDownDelay: 5m\n    autoPromote: false",
    );
    let mut w = World::new(&yaml);
    w.tick();
    w.observed.desired_revision = "v2".into();
    w.observed.ready.canary = 10;
    w.tick();
    w.observed.evidence = Some(evidence(w.window(), 3000, 1.0, 0.0));
    let p = w.wait(20);
    assert_eq!(
        p.status.paused_reason,
        Some(PausedReason::AwaitingPromotion)
    );
    assert_eq!(w.canary_share(), 0.0);
    w.observed.commands.promote = Some(("p1".into(), false));
    w.tick();
    assert_eq!(w.canary_share(), 100.0);
}

#[test]
fn no_phase_leaves_traffic_half_applied_on_abort() {
    // Every running phase and every stage of both strategies, aborted: the
    // first traffic action is stable 100%.
    for yaml in [KUBE, BLUE_GREEN, LOCAL] {
        for ticks in 0..8u64 {
            let mut w = World::new(yaml);
            w.tick();
            w.observed.desired_revision = "v2".into();
            w.observed.ready.canary = 10;
            for i in 0..ticks {
                if w.status.window.is_some() {
                    w.observed.evidence = Some(evidence(w.window(), 3000, 1.0, 0.0));
                }
                w.wait(15 + i * 20);
            }
            if !matches!(
                w.status.phase,
                Phase::Progressing | Phase::Paused | Phase::Promoting
            ) {
                continue;
            }
            w.observed.commands.abort = Some(format!("abort-{ticks}"));
            assert_safe_abort(&w.tick());
        }
    }
}

fn invalid(yaml: &str) -> SpecError {
    let spec: CanarySpec = serde_saphyr::from_str(yaml).expect("parses");
    Rollout::new("chat", &spec).expect_err("must be refused")
}

#[test]
fn invalid_specs_name_the_field_and_the_fix() {
    let table: [(&str, &str, &str, &str); 9] = [
        (
            "setWeight: 50",
            "setWeight: 150",
            "spec.strategy.canary.steps[0].setWeight",
            "between 0 and 100",
        ),
        (
            "setWeight: 50",
            "setWeight: 12.345",
            "spec.strategy.canary.steps[0].setWeight",
            "two decimals",
        ),
        (
            "setWeight: 50",
            "setWeight: 0",
            "spec.strategy.canary.steps[1].analysis",
            "put a setWeight above 0",
        ),
        (
            "setWeight: 50",
            "setWeight: 10",
            "spec.strategy.canary.steps[1].analysis",
            "setWeight 50",
        ),
        (
            "maxDuration: 5m",
            "maxDuration: 10s",
            "spec.strategy.canary.steps[1].analysis.maxDuration",
            "minDuration",
        ),
        (
            "interval: 10s",
            "interval: soon",
            "spec.analysis.interval",
            "30s",
        ),
        (
            "maxIncrease: 10%}",
            "maxIncrease: 0.5pp}",
            "spec.analysis.metrics[0].maxIncrease",
            "relative",
        ),
        (
            "hardLimit: 20%",
            "hardLimit: lots",
            "spec.analysis.metrics[1].hardLimit",
            "5%",
        ),
        (
            "\"http://127.0.0.1:8002\"",
            "\"http://127.0.0.1:8001\"",
            "spec.backends.canary.url",
            "new version",
        ),
    ];
    for (from, to, field, fix) in table {
        let yaml = LOCAL.replace(from, to);
        assert_ne!(yaml, LOCAL, "{from} must occur in the spec");
        let e = invalid(&yaml);
        assert_eq!(e.field, field, "{to}: {e}");
        assert!(e.problem.contains(fix), "{to}: {e}");
    }
    let e = invalid(&format!("{LOCAL}targetRef: {{name: chat}}\n"));
    assert_eq!(e.field, "spec");
    let e = invalid(&LOCAL.replace(
        "    - {name: errors, kind: errorRate",
        "    - {name: gpu, kind: gauge, maxIncrease: 5%}\n    - {name: errors, kind: errorRate",
    ));
    assert_eq!(e.field, "spec.analysis.metrics[1].source", "{e}");
}

#[test]
fn pauses_and_smoke_weights_are_watched_but_never_promote() {
    // A timed pause at 20% (Kubernetes, matchWeight: load is balanced).
    // (canary slower, canary errors, expected phase after the first look)
    for (slower, errors, phase) in [
        (1.0, 0.0, Phase::Progressing),
        (1.5, 0.0, Phase::Aborted),
        (1.0, 0.3, Phase::Aborted),
    ] {
        let mut w = World::new(&KUBE.replace(
            "    - {name: ttft, kind: latency, maxIncrease: 10%}",
            "    - {name: ttft, kind: latency, maxIncrease: 10%}\n    - {name: errors, kind: errorRate, maxIncrease: 1pp, hardLimit: 20%}",
        ));
        w.tick();
        w.observed.desired_revision = "v2".into();
        w.observed.ready.canary = 10;
        let p = w.tick();
        assert_eq!(p.status.current_step, 1, "in the 1m pause");
        w.observed.evidence = Some(evidence(w.window(), 3000, slower, errors));
        let p = w.wait(30);
        assert_eq!(
            p.status.phase, phase,
            "slower {slower}, errors {errors}: {}",
            p.status.message
        );
        assert_eq!(
            p.status.current_step, 1,
            "healthy evidence does not end a pause early"
        );
        if phase == Phase::Aborted {
            assert_safe_abort(&p);
        }
    }
    // An indefinite pause in local mode at a 10% smoke weight: load differs,
    // so a latency regression is not judged, but a hard limit still aborts.
    let smoke = LOCAL.replace(
        "      - setWeight: 50\n      - analysis: {minDuration: 40s, maxDuration: 5m}",
        "      - setWeight: 10\n      - pause: {}\n      - setWeight: 50\n      - analysis: {}",
    );
    assert_ne!(smoke, LOCAL);
    for (slower, errors, phase) in [(1.5, 0.0, Phase::Paused), (1.0, 0.3, Phase::Aborted)] {
        let mut w = World::new(&smoke);
        w.tick();
        assert_eq!(w.status.phase, Phase::Paused);
        let mut ev = evidence(w.window(), 3000, slower, errors);
        ev.load = Some(weir_analysis::decision::Load {
            baseline_per_replica: 90.0,
            canary_per_replica: 10.0,
        });
        w.observed.evidence = Some(ev);
        let p = w.wait(30);
        assert_eq!(
            p.status.phase, phase,
            "slower {slower}, errors {errors}: {}",
            p.status.message
        );
    }
}

/// A Kubernetes-mode Canary of `yaml` (a `setWeight`, then `pause: {}`)
/// adopted at 10 replicas, v2 released, every cohort given what status
/// asked for at once, and the run paused at its first step.
fn paused_at_the_first_step(yaml: &str) -> World {
    let mut w = World::new(yaml);
    w.tick();
    w.observed.ready.stable = 10;
    w.tick(); // adoption: target to zero
    w.observed.desired_revision = "v2".into();
    w.tick();
    w.observed.ready = w.status.replicas.expect("replicas");
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Paused, "{}", p.status.message);
    w
}

#[test]
fn gpu_budget_promotion_moves_capacity_to_the_canary_and_back_replacing_no_pod() {
    const BUDGET: &str = r#"
targetRef: {name: chat}
service: {port: 8000}
gpuBudget: 12
strategy:
  canary:
    steps:
      - setWeight: 50
      - pause: {}
analysis:
  interval: 10s
  warmup: 20s
  metrics:
    - {name: ttft, kind: latency, maxIncrease: 10%}
"#;
    // A kubelet: every cohort gets what status asks for, at once.
    let settle = |w: &mut World| {
        let r = w.status.replicas.expect("replicas");
        assert!(r.stable + r.canary <= 12, "over the GPU budget: {r:?}");
        w.observed.ready = r;
    };
    let mut w = paused_at_the_first_step(BUDGET);
    settle(&mut w);
    assert_eq!(
        w.status.replicas.map(|r| (r.stable, r.canary)),
        Some((6, 6))
    );
    w.observed.commands.promote = Some(("p1".into(), true));
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Promoting);
    // Capacity moves to the proven canary one replica at a time, traffic
    // following; stable takes v2 only once it has no replica left.
    let mut shares = Vec::new();
    let mut promoted_at = None;
    for _ in 0..20 {
        let p = w.wait(1);
        settle(&mut w);
        shares.push(w.canary_share());
        if p.actions
            .iter()
            .any(|a| matches!(a, Effect::PromoteStable { .. }))
        {
            promoted_at = w.status.replicas.map(|r| (r.stable, r.canary));
            break;
        }
    }
    assert_eq!(promoted_at, Some((0, 10)), "{shares:?}");
    assert!(
        shares.windows(2).all(|s| s[1] >= s[0]),
        "the canary's share only rises: {shares:?}"
    );
    w.wait(1);
    assert_eq!(w.canary_share(), 100.0, "stable has no replica left");
    // Stable runs v2 on no replica; capacity goes back to it one GPU at a
    // time, traffic following each cohort's ready replicas. Each pod of
    // stable's is not rolled out until ready: stable carries v2 meanwhile.
    w.observed.stable_carries = Some("v2".into());
    let mut shares = Vec::new();
    for _ in 0..30 {
        // A new pod of stable's, not ready yet: not rolled out.
        w.observed.stable_rolled_out = None;
        let p = w.wait(1);
        assert_ne!(p.status.phase, Phase::Aborted, "{}", p.status.message);
        settle(&mut w);
        w.observed.stable_rolled_out = Some("v2".into());
        let p = w.tick();
        shares.push(w.canary_share());
        if p.status.phase == Phase::Succeeded {
            break;
        }
    }
    assert_eq!(w.status.phase, Phase::Succeeded, "{}", w.status.message);
    assert_eq!(w.status.stable_revision.as_deref(), Some("v2"));
    assert_eq!(w.canary_share(), 0.0);
    assert!(
        shares.windows(2).all(|s| s[1] <= s[0]),
        "the canary's share only falls: {shares:?}"
    );
    assert!(shares.len() > 3, "capacity moved in steps: {shares:?}");
}

#[test]
fn a_settled_stable_follows_the_users_replica_count() {
    let mut w = World::new(KUBE);
    w.tick();
    w.tick(); // adoption: the target to zero, stable at 10
    assert_eq!(
        w.status.replicas.map(|r| (r.stable, r.canary)),
        Some((10, 0))
    );
    // The user scaled the target to 6 while nothing ran.
    w.observed.target_replicas = 6;
    let p = w.tick();
    assert_eq!(
        p.actions,
        vec![Effect::Scale {
            cohort: Cohort::Stable,
            replicas: 6
        }]
    );
    assert!(w.tick().actions.is_empty(), "settled at 6");
}

#[test]
fn editing_the_steps_taken_restarts_the_run_and_later_edits_do_not() {
    let steps = "      - setWeight: 20\n      - pause: {duration: 1m}\n      - setWeight: 50\n      - analysis: {maxDuration: 5m}\n      - pause: {}\n";
    assert!(KUBE.contains(steps));
    let edited = |new: &str| rollout(&KUBE.replace(steps, new));

    // In the analysis (step 4 of 5), the two steps before it are deleted:
    // the old index now points past the end. Taken as is, that would
    // promote a canary no analysis passed.
    let mut w = kube_in(Phase::Progressing);
    w.wait(60);
    assert_eq!(w.status.current_step, 3, "in the analysis");
    w.rollout =
        edited("      - setWeight: 50\n      - analysis: {maxDuration: 5m}\n      - pause: {}\n");
    let p = w.tick();
    assert!(events(&p.actions).contains(&reasons::STEPS_CHANGED));
    assert_eq!(p.status.phase, Phase::Progressing, "{}", p.status.message);
    assert_eq!(
        p.status.current_step, 1,
        "step 1 set 50% again; now analysing"
    );
    assert_eq!(w.canary_share(), 50.0);
    assert!(p.status.window.is_some(), "a new evidence window");
    assert!(
        !p.actions
            .contains(&Effect::Act(Action::Finish(Outcome::Promoted)))
    );

    // Changing the current step restarts too; a person's pause survives it.
    let mut w = kube_in(Phase::Paused);
    w.rollout = edited(
        "      - setWeight: 20\n      - pause: {duration: 5m}\n      - setWeight: 50\n      - analysis: {maxDuration: 5m}\n      - pause: {}\n",
    );
    w.rollout.paused = true;
    let p = w.tick();
    assert!(events(&p.actions).contains(&reasons::STEPS_CHANGED));
    assert_eq!(p.status.phase, Phase::Paused);
    assert_eq!(p.status.paused_reason, Some(PausedReason::Manual));
    assert_eq!(p.status.current_step, 0);

    // Later steps edited and a step appended: the run goes on where it was.
    let mut w = kube_in(Phase::Progressing);
    assert_eq!(w.status.current_step, 1, "in the 1m pause");
    w.rollout = edited(
        "      - setWeight: 20\n      - pause: {duration: 1m}\n      - setWeight: 60\n      - analysis: {maxDuration: 10m}\n      - pause: {}\n      - setWeight: 80\n",
    );
    let p = w.tick();
    assert!(!events(&p.actions).contains(&reasons::STEPS_CHANGED));
    assert_eq!(p.status.current_step, 1);
    let p = w.wait(60);
    assert_eq!(p.status.current_step, 3, "the pause ran its minute");
    assert_eq!(w.canary_share(), 60.0, "the edited later step applies");

    // A status written before fingerprints existed is adopted, not restarted.
    let mut w = kube_in(Phase::Progressing);
    w.status.steps_hash = None;
    let p = w.tick();
    assert!(!events(&p.actions).contains(&reasons::STEPS_CHANGED));
    assert_eq!(p.status.current_step, 1);
    assert!(p.status.steps_hash.is_some());
}

/// Evidence of a window still warming up: only the canary's requests per
/// replica since the traffic change.
fn warming(window: u64, requests: u64) -> Evidence {
    Evidence {
        window,
        warmup_requests: requests,
        metrics: Vec::new(),
        load: None,
        slices: Vec::new(),
    }
}

#[test]
fn warmup_ends_when_both_time_and_requests_suffice() {
    // LOCAL: warmup 20s, warmupRequests at its default (50). Rows in
    // order within one run: (seconds after the weight change, canary
    // requests per replica so far, window open after the look).
    let table: [&[(u64, u64, bool)]; 2] = [
        // Requests come late: time alone does not open the window.
        &[
            (10, 20, false),
            (20, 49, false),
            (27, 49, false),
            (31, 50, true),
        ],
        // Requests come early: they wait for the time.
        &[(5, 80, false), (19, 500, false), (20, 500, true)],
    ];
    for rows in table {
        let mut w = World::new(LOCAL);
        w.tick();
        let id = w.window();
        for &(secs, requests, open) in rows {
            w.observed.evidence = Some(warming(id, requests));
            w.now = super::after(t0(), Duration::from_secs(secs));
            let p = w.tick();
            let window = p.status.window.as_ref().expect("a window");
            assert_eq!(window.id, id, "the same window throughout");
            assert_eq!(
                window.warmup.is_none(),
                open,
                "{secs}s, {requests}: {}",
                p.status.message
            );
            assert!(
                p.status.last_analysis.is_none(),
                "nothing judged while warming up"
            );
            if open {
                // Evidence counts from this look: the shell takes its
                // baseline now.
                assert_eq!(window.opens_at.0, w.now);
                assert!(events(&p.actions).contains(&reasons::WARMED_UP));
            } else {
                let shown = format!(
                    "warming up: {}/50 requests per canary replica",
                    requests.min(50)
                );
                assert!(p.status.message.contains(&shown), "{}", p.status.message);
                // The engine looks again before the next interval ends:
                // requests arrive between verdicts.
                assert!(
                    p.requeue_after <= Some(Duration::from_secs(10)),
                    "{:?}",
                    p.requeue_after
                );
            }
        }
    }
}

#[test]
fn warmup_by_requests_can_be_switched_off_and_bad_counts_name_the_field() {
    let yaml = LOCAL.replace("  warmup: 20s", "  warmup: 20s\n  warmupRequests: 0");
    let mut w = World::new(&yaml);
    w.tick();
    let window = w.status.window.clone().expect("a window");
    assert_eq!(window.warmup, None, "time alone");
    assert_eq!(
        window.opens_at.0,
        super::after(t0(), Duration::from_secs(20))
    );
    for (value, says) in [("-1", "negative"), ("1000000", "more than a warm-up needs")] {
        let yaml = LOCAL.replace(
            "  warmup: 20s",
            &format!("  warmup: 20s\n  warmupRequests: {value}"),
        );
        let e = invalid(&yaml).to_string();
        assert!(e.contains("spec.analysis.warmupRequests"), "{e}");
        assert!(e.contains(says), "{e}");
        assert!(e.contains("e.g. 50"), "says what to write: {e}");
    }
}

/// Evidence whose canary served `slices` (one median factor each, 400
/// requests apiece, oldest first) against a steady stable; `canary_errors`
/// as in [`evidence`].
fn sliced(window: u64, slices: &[f64], canary_errors: f64) -> Evidence {
    let parts: Vec<Distribution> = slices
        .iter()
        .enumerate()
        .map(|(i, &f)| lognormal(400, f, 100 + i as u64))
        .collect();
    let mut canary = Distribution::new();
    parts.iter().for_each(|p| canary.merge(p));
    let n = 400 * slices.len();
    let mut ev = evidence(window, n, 1.0, canary_errors);
    ev.metrics[0].1 = Observations::Latency {
        baseline: lognormal(n, 1.0, 1),
        canary,
    };
    ev.slices = vec![("ttft".into(), parts)];
    ev
}

/// Opens the LOCAL window (warm-up time and requests) and returns its id.
fn opened(w: &mut World) -> u64 {
    w.tick();
    let id = w.window();
    w.observed.evidence = Some(warming(id, 1000));
    w.wait(20);
    assert!(w.status.window.as_ref().is_some_and(|w| w.warmup.is_none()));
    id
}

#[test]
fn a_canary_still_getting_faster_is_held_a_steady_slow_one_is_not() {
    let cold = [1.6, 1.6, 1.6, 1.0, 1.0, 1.0];
    let steady = [1.3; 6];
    // (canary slices, canary error rate, phase after the first verdict,
    // what the status or the abort says)
    let table = [
        (&cold[..], 0.0, Phase::Progressing, "still falling"),
        (&steady[..], 0.0, Phase::Aborted, "ttft"),
        // An error abort is never held, whatever latency does.
        (&cold[..], 0.3, Phase::Aborted, "errors"),
    ];
    // A TTFT judged both ways (`ttft.shift.up`) is held the same.
    let both = LOCAL.replace(
        "{name: ttft, kind: latency, quantiles: [0.5], maxIncrease: 10%}",
        "{name: ttft, kind: latency, quantiles: [0.5], maxChange: 10%}",
    );
    assert_ne!(both, LOCAL);
    for ((slices, errors, phase, says), yaml) in table
        .into_iter()
        .flat_map(|row| [(row, LOCAL), (row, both.as_str())])
    {
        let mut w = World::new(yaml);
        let id = opened(&mut w);
        w.observed.evidence = Some(sliced(id, slices, errors));
        let p = w.wait(10);
        assert_eq!(p.status.phase, phase, "{slices:?}: {}", p.status.message);
        match phase {
            Phase::Aborted => {
                assert_safe_abort(&p);
                let abort = p.status.abort.as_ref().expect("abort recorded");
                assert_eq!(abort.reason, reasons::ANALYSIS_FAILED);
                assert!(abort.message.contains(says), "{}", abort.message);
            }
            _ => {
                let a = p.status.last_analysis.as_ref().expect("a verdict");
                // Held, never promoted: the verdict is continue.
                assert_eq!(a.verdict, weir_crds::VerdictStatus::Continue);
                assert!(a.rule.contains(says), "{}", a.rule);
                assert!(a.rule.contains("ttft."), "names the effect: {}", a.rule);
                assert_eq!(w.canary_share(), 50.0);
            }
        }
    }
}

#[test]
fn a_held_abort_still_ends_at_max_duration() {
    // A canary that keeps falling until maxDuration (5m) is undecided:
    // onInconclusive (abort by default) ends the step, named as such.
    let mut w = World::new(LOCAL);
    let id = opened(&mut w);
    w.observed.evidence = Some(sliced(id, &[1.6, 1.6, 1.6, 1.0, 1.0, 1.0], 0.0));
    let p = w.wait(10);
    assert_eq!(p.status.phase, Phase::Progressing, "{}", p.status.message);
    let p = w.wait(269);
    assert_eq!(p.status.phase, Phase::Progressing, "{}", p.status.message);
    let p = w.wait(1);
    assert_safe_abort(&p);
    let abort = p.status.abort.as_ref().expect("abort recorded");
    assert_eq!(abort.reason, reasons::INCONCLUSIVE);
    assert!(abort.message.contains("still falling"), "{}", abort.message);
}

#[test]
fn a_window_that_never_warms_up_ends_at_max_duration_saying_so() {
    let mut w = World::new(LOCAL);
    w.tick();
    w.observed.evidence = Some(warming(w.window(), 7));
    let p = w.wait(300);
    assert_safe_abort(&p);
    let abort = p.status.abort.as_ref().expect("abort recorded");
    assert_eq!(abort.reason, reasons::INCONCLUSIVE);
    assert!(
        abort.message.contains("warming up: 7/50"),
        "{}",
        abort.message
    );
}

#[test]
fn a_max_surge_the_user_set_keeps_the_canary_at_its_size_through_promotion() {
    const SURGE: &str = r#"
targetRef: {name: chat}
service: {port: 8000}
promotion: {maxSurge: 1, maxUnavailable: 0}
strategy:
  canary:
    steps:
      - setWeight: 20
      - pause: {}
analysis:
  interval: 10s
  warmup: 20s
  metrics:
    - {name: ttft, kind: latency, maxIncrease: 10%}
"#;
    let mut w = paused_at_the_first_step(SURGE);
    let at_step = w.status.replicas.map(|r| (r.stable, r.canary));
    assert_eq!(at_step, Some((10, 3)), "matchWeight at 20% of 10");
    w.observed.commands.promote = Some(("p1".into(), true));
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Promoting);
    assert!(
        p.actions.contains(&Effect::PromoteStable {
            revision: "v2".into()
        }),
        "stable is replaced in place"
    );
    // 10 + 1 pods at most: the canary does not grow to 10 beside stable
    // (that would be 20), and the split stays as the step left it.
    assert_eq!(w.status.replicas.map(|r| (r.stable, r.canary)), at_step);
    assert_eq!(w.canary_share(), 20.0);
    let p = w.wait(5);
    assert_eq!(p.status.phase, Phase::Promoting);
    assert_eq!(w.status.replicas.map(|r| (r.stable, r.canary)), at_step);
    // Stable rolled out v2: traffic back on it, the canary scaled down.
    w.observed.stable_rolled_out = Some("v2".into());
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Succeeded, "{}", p.status.message);
    assert_eq!(w.canary_share(), 0.0);
    assert_eq!(w.status.stable_revision.as_deref(), Some("v2"));
}

#[test]
fn blue_green_within_a_gpu_budget_keeps_all_traffic_on_the_new_side_while_stable_empties() {
    let yaml = BLUE_GREEN.replace(
        "targetRef: {name: chat}",
        "targetRef: {name: chat}\ngpuBudget: 20",
    );
    let mut w = blue_green_to_promoting(&yaml);
    // Stable's idle pods go one at a time; the new side keeps everything.
    let mut promoted_at = None;
    for _ in 0..30 {
        let p = w.wait(1);
        w.observed.ready = w.status.replicas.expect("replicas");
        assert_eq!(w.canary_share(), 100.0, "{}", p.status.message);
        if p.actions
            .iter()
            .any(|a| matches!(a, Effect::PromoteStable { .. }))
        {
            promoted_at = w.status.replicas.map(|r| (r.stable, r.canary));
            break;
        }
    }
    assert_eq!(promoted_at, Some((0, 10)));
}

/// A model canary: both cohorts on one pool, told apart by the model they
/// ask for. Every table names each cohort's model; nothing is scaled.
#[test]
fn a_model_canary_moves_weights_with_each_cohorts_model_and_scales_nothing() {
    let yaml = LOCAL
        .replace("http://127.0.0.1:8002", "http://127.0.0.1:8001")
        .replace(
            "strategy:",
            "route: {pathPrefix: /v1, model: chat}\nmodels: {stable: chat-lora-v7, canary: chat-lora-v8}\nstrategy:",
        );
    let mut w = World::new(&yaml);
    assert!(w.rollout.is_model());
    // As the local runner starts a model canary: its revisions are the
    // model names.
    w.status.stable_revision = Some("chat-lora-v7".into());
    w.observed.desired_revision = "chat-lora-v8".into();
    for _ in 0..3 {
        w.tick();
    }
    let tables: Vec<&Traffic> = w
        .log
        .iter()
        .filter_map(|a| match a {
            Effect::Act(Action::SetTraffic(t)) => Some(t),
            _ => None,
        })
        .collect();
    assert!(!tables.is_empty(), "{:?}", w.log);
    for t in tables {
        assert_eq!(t.route.model.as_deref(), Some("chat"));
        let model = |c: Cohort| {
            t.backends
                .iter()
                .find(|b| b.cohort == c)
                .and_then(|b| b.model.as_deref())
        };
        assert_eq!(model(Cohort::Stable), Some("chat-lora-v7"));
        // Before the run has a canary revision, the canary gets nothing.
        let weight = |c: Cohort| t.backends.iter().find(|b| b.cohort == c).map(|b| b.weight);
        if weight(Cohort::Canary) > Some(0.0) {
            assert_eq!(model(Cohort::Canary), Some("chat-lora-v8"));
        }
    }
    assert!(
        !w.log.iter().any(|a| matches!(a, Effect::Scale { .. })),
        "{:?}",
        w.log
    );
    assert_eq!(w.canary_share(), 50.0);
}

#[test]
fn model_canary_specs_name_the_field_and_the_fix() {
    let base = LOCAL.replace(
        "strategy:",
        "route: {model: chat}\nmodels: {stable: chat-lora-v7, canary: chat-lora-v8}\nstrategy:",
    );
    let cases = [
        (
            base.replace("route: {model: chat}\n", ""),
            "spec.models",
            "add route: {model: chat}",
        ),
        (
            base.replace("canary: chat-lora-v8", "canary: chat-lora-v7"),
            "spec.models.canary",
            "same as stable's",
        ),
        (
            base.replace("route: {model: chat}", "route: {model: \"\"}"),
            "spec.route.model",
            "not a model name",
        ),
        (
            KUBE.replace(
                "strategy:",
                "route: {model: chat}\nmodels: {stable: a, canary: b}\ngpuBudget: 4\nstrategy:",
            ),
            "spec.gpuBudget",
            "scales nothing",
        ),
    ];
    for (yaml, field, fix) in cases {
        let e = invalid(&yaml);
        let text = e.to_string();
        assert!(text.starts_with(field) && text.contains(fix), "{text}");
    }
    // One URL for both cohorts is the point of a model canary, and only
    // of one.
    let same = base.replace("http://127.0.0.1:8002", "http://127.0.0.1:8001");
    assert!(Rollout::new("chat", &spec(&same)).is_ok());
    let e = invalid(&LOCAL.replace("http://127.0.0.1:8002", "http://127.0.0.1:8001"));
    assert!(e.to_string().starts_with("spec.backends.canary.url"), "{e}");
}

#[test]
fn answer_shape_metrics_take_margins_in_their_directions() {
    let with = |metric: &str| {
        LOCAL.replace(
            "    - {name: errors, kind: errorRate, maxIncrease: 1pp, hardLimit: 20%}",
            &format!("    - {{name: errors, kind: errorRate, maxIncrease: 1pp, hardLimit: 20%}}\n    - {metric}"),
        )
    };
    let ok = rollout(&with(
        "{name: tokens, kind: outputTokens, maxChange: 20%}\n    - {name: decode, kind: decodeSpeed, maxDecrease: 15%}\n    - {name: cut, kind: truncationRate, maxIncrease: 3pp}\n    - {name: empty, kind: emptyRate, maxIncrease: 1pp}",
    ));
    let bounds: Vec<_> = ok.analysis.metrics[2..]
        .iter()
        .map(|m| {
            (
                m.spec.kind,
                m.spec.bounds.increase.is_some(),
                m.spec.bounds.decrease.is_some(),
            )
        })
        .collect();
    use weir_analysis::MetricKind as K;
    assert_eq!(
        bounds,
        [
            (K::Distribution, true, true),
            (K::Distribution, false, true),
            (K::ErrorRate, true, false),
            (K::ErrorRate, true, false),
        ]
    );
    for (metric, field, fix) in [
        (
            "{name: tokens, kind: outputTokens, maxChange: 20%, maxIncrease: 10%}",
            "spec.analysis.metrics[2].maxChange",
            "both ways already",
        ),
        (
            "{name: tokens, kind: outputTokens}",
            "spec.analysis.metrics[2].maxIncrease",
            "maxIncrease, maxDecrease or maxChange",
        ),
        (
            "{name: decode, kind: decodeSpeed, maxDecrease: 100%}",
            "spec.analysis.metrics[2].maxDecrease",
            "",
        ),
        (
            "{name: tokens, kind: outputTokens, maxChange: 2pp}",
            "spec.analysis.metrics[2].maxChange",
            "",
        ),
        (
            "{name: decode, kind: decodeSpeed, maxDecrease: 10%, source: {scrape: {metric: x}}}",
            "spec.analysis.metrics[2].source",
            "use source: proxy",
        ),
    ] {
        let text = invalid(&with(metric)).to_string();
        assert!(
            text.starts_with(field) && text.contains(fix),
            "{metric}: {text}"
        );
    }
}

/// Kubernetes: a model canary on one Deployment shared by both cohorts.
/// The first stable is the spec's model; a run moves weights only (no
/// replica is asked of either cohort, no template goes to a stable copy);
/// promotion makes the winner the stable cohort's model; the next run is
/// compared with it, and its abort puts traffic back on it.
#[test]
fn a_kubernetes_model_canary_scales_and_copies_nothing_and_promotes_by_name() {
    let yaml = KUBE
        .replace(
            "strategy:",
            "route: {model: chat}\nmodels: {stable: chat-lora-v7, canary: chat-lora-v8}\nstrategy:",
        )
        .replace(
            "      - setWeight: 20\n      - pause: {duration: 1m}\n      - setWeight: 50\n      - analysis: {maxDuration: 5m}\n      - pause: {}\n",
            "      - setWeight: 50\n      - analysis: {minDuration: 40s, maxDuration: 5m}\n",
        );
    let mut w = World::new(&yaml);
    assert!(!w.rollout.manages_pods());
    // What the reconciler observes for a model canary: the spec's model.
    w.observed.desired_revision = "chat-lora-v8".into();
    w.tick();
    assert_eq!(w.status.stable_revision.as_deref(), Some("chat-lora-v7"));
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Progressing, "{}", p.status.message);
    let models = |w: &World| {
        let t = w.status.traffic.as_ref().expect("a table");
        let of = |c: Cohort| {
            t.backends
                .iter()
                .find(|b| b.cohort == c)
                .and_then(|b| b.model.clone())
        };
        (of(Cohort::Stable), of(Cohort::Canary))
    };
    assert_eq!(
        models(&w),
        (Some("chat-lora-v7".into()), Some("chat-lora-v8".into()))
    );
    assert_eq!(w.canary_share(), 50.0);
    w.observed.evidence = Some(evidence(w.window(), 3000, 1.0, 0.0));
    w.wait(30);
    let p = w.wait(10);
    assert_eq!(p.status.phase, Phase::Succeeded, "{}", p.status.message);
    assert_eq!(p.status.stable_revision.as_deref(), Some("chat-lora-v8"));
    assert_eq!(w.canary_share(), 0.0, "the stable cohort serves the winner");
    assert_eq!(models(&w).0.as_deref(), Some("chat-lora-v8"));

    // The next adapter is compared with the promoted one.
    w.observed.desired_revision = "chat-lora-v9".into();
    w.observed.evidence = None;
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Progressing, "{}", p.status.message);
    assert_eq!(
        models(&w),
        (Some("chat-lora-v8".into()), Some("chat-lora-v9".into()))
    );
    w.observed.evidence = Some(evidence(w.window(), 3000, 1.3, 0.0));
    assert_safe_abort(&w.wait(30));
    assert_eq!(models(&w).0.as_deref(), Some("chat-lora-v8"));
    assert!(
        !w.log
            .iter()
            .any(|e| matches!(e, Effect::Scale { .. } | Effect::PromoteStable { .. })),
        "{:?}",
        w.log
    );
}

/// Kubernetes, a model canary whose new model a pod has not loaded: the
/// run holds, says why once (a warning), looks again soon, and starts
/// when every pod lists it.
#[test]
fn a_model_canary_holds_until_every_pod_lists_the_model() {
    let yaml = KUBE.replace(
        "strategy:",
        "route: {model: chat}\nmodels: {stable: chat-lora-v7, canary: chat-lora-v8}\nstrategy:",
    );
    let mut w = World::new(&yaml);
    w.observed.desired_revision = "chat-lora-v8".into();
    let why =
        "pod chat-frontend-1 (10.244.1.2) does not list chat-lora-v8 (it lists: chat-lora-v7)";
    w.observed.model_missing = Some(why.into());
    w.tick();
    let p = w.tick();
    assert_eq!(p.status.phase, Phase::Idle);
    assert_eq!(
        p.status.message,
        format!("stable chat-lora-v7; new revision chat-lora-v8 holds: {why}")
    );
    assert_eq!(events(&w.log), [reasons::MODEL_NOT_LOADED]);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(5)));
    assert!(events(&w.wait(5).actions).is_empty(), "said once");
    assert_eq!(w.canary_share(), 0.0);
    w.observed.model_missing = None;
    let p = w.wait(5);
    assert_eq!(p.status.phase, Phase::Progressing, "{}", p.status.message);
}
