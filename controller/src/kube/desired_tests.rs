//! Table tests of [`desired`]: scaling, adoption, promotion (RollingUpdate,
//! Recreate, GPU budget), abort and blue-green cutover, with no API
//! server. The last tests drive the engine's `plan` and feed its status
//! here, so the engine's tables and what the shell writes describe the
//! same behaviour.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use weir_crds::{Canary, CanarySpec, CanaryStatus, CohortReplicas, Phase, names};

use super::{Cluster, Desired, DesiredError, PodCount, StableChange, desired};
use crate::engine::{self, Cohorts, Observed, Rollout};
use crate::kube::builders;
use crate::kube::fixtures::{owner, selector, target, template};

const CANARY: &str = r#"
targetRef: {name: chat-frontend}
service: {port: 8000}
strategy:
  canary:
    steps:
      - setWeight: 20
      - pause: {}
analysis:
  metrics:
    - {name: ttft, kind: latency, maxIncrease: 10%}
"#;

const BLUE_GREEN: &str = r#"
targetRef: {name: chat-frontend}
service: {port: 8000}
strategy:
  blueGreen:
    scaleDownDelay: 0s
analysis:
  metrics:
    - {name: ttft, kind: latency, maxIncrease: 10%}
"#;

/// A Canary of `yaml`, with `extra` lines appended to the spec.
fn canary(yaml: &str, extra: &str) -> (Canary, Rollout) {
    let spec: CanarySpec =
        serde_saphyr::from_str(&format!("{yaml}{extra}")).expect("test spec parses");
    let rollout = Rollout::new("chat", &spec).expect("test spec is valid");
    let mut c = Canary::new("chat", spec);
    c.metadata.namespace = Some("llm".into());
    c.metadata.uid = Some("uid-1".into());
    c.metadata.generation = Some(1);
    (c, rollout)
}

fn revision(image: &str) -> String {
    builders::template_revision(&template(image))
}

/// The stable copy as weir built it: `image` at `replicas`.
fn stable(image: &str, replicas: u32) -> Deployment {
    builders::stable_deployment(
        &owner(),
        &target(image, Some(10)),
        &template(image),
        &revision(image),
        replicas,
        builders::promotion_strategy(&weir_crds::Promotion::default(), replicas, None, 0),
    )
    .expect("the target selects with labels")
}

fn status(phase: Phase, stable: u32, canary: u32) -> CanaryStatus {
    CanaryStatus {
        phase,
        stable_revision: Some(revision("v1")),
        canary_revision: Some(revision("v2")),
        replicas: Some(CohortReplicas { stable, canary }),
        ..CanaryStatus::default()
    }
}

/// Runs [`desired`] on a world of `spec`, the target and the stable copy.
fn run(
    spec: (&Canary, &Rollout),
    target: &Deployment,
    stable: Option<&Deployment>,
    status: &CanaryStatus,
) -> Desired {
    let selector = selector();
    let cluster = Cluster {
        canary: spec.0,
        rollout: spec.1,
        target,
        stable,
        selector: &selector,
        pods: None,
        parts: &[],
        stable_idle: true,
    };
    desired(&cluster, status, 10).expect("buildable")
}

/// The applied stable copy: (image, revision annotation, replicas,
/// strategy type, maxSurge, maxUnavailable).
fn applied(
    d: &Desired,
) -> (
    String,
    String,
    i32,
    String,
    Option<IntOrString>,
    Option<IntOrString>,
) {
    let Some(StableChange::Apply(copy)) = &d.stable else {
        panic!("expected the stable copy to be applied: {:?}", d.stable);
    };
    let spec = copy.spec.as_ref().expect("spec");
    let image = spec.template.spec.as_ref().expect("pod spec").containers[0]
        .image
        .clone()
        .expect("image");
    let strategy = spec.strategy.clone().expect("strategy");
    let rolling = strategy.rolling_update.unwrap_or_default();
    (
        image,
        copy.annotations()[names::REVISION_ANNOTATION].clone(),
        spec.replicas.expect("replicas"),
        strategy.type_.expect("type"),
        rolling.max_surge,
        rolling.max_unavailable,
    )
}

#[test]
fn a_settled_canary_whose_objects_match_changes_nothing() {
    let (c, r) = canary(CANARY, "");
    let mut s = status(Phase::Idle, 10, 0);
    s.canary_revision = None;
    let d = run(
        (&c, &r),
        &target("v1", Some(0)),
        Some(&stable("v1", 10)),
        &s,
    );
    assert_eq!(d.stable, None);
    assert_eq!(d.target_replicas, None);
    let kept = d.keep.expect("stable's version is kept for undo");
    assert_eq!(kept.revision, revision("v1"));
    assert_eq!(kept.template, template("v1"), "as the target had it");
}

#[test]
fn replicas_follow_status_for_each_cohort() {
    let (c, r) = canary(CANARY, "");
    /// Status asks (stable, canary); the cluster has (stable, target);
    /// the stable copy and the target must change like so.
    type Row = (
        (u32, u32),
        (u32, Option<i32>),
        Option<StableChange>,
        Option<u32>,
    );
    let table: [Row; 5] = [
        ((8, 3), (10, Some(0)), Some(StableChange::Scale(8)), Some(3)),
        ((10, 3), (10, Some(0)), None, Some(3)),
        ((10, 0), (10, Some(3)), None, Some(0)),
        ((10, 3), (10, Some(3)), None, None),
        // A target without `replicas` runs one pod: the number is said.
        ((10, 1), (10, None), None, Some(1)),
    ];
    for ((want_s, want_c), (has_s, has_c), stable_change, target_change) in table {
        let s = status(Phase::Progressing, want_s, want_c);
        let d = run(
            (&c, &r),
            &target("v2", has_c),
            Some(&stable("v1", has_s)),
            &s,
        );
        let case = format!("status {want_s}/{want_c}, has {has_s}/{has_c:?}");
        assert_eq!(d.stable, stable_change, "{case}");
        assert_eq!(d.target_replicas, target_change, "{case}");
        assert_eq!(d.stable_name, "chat-frontend-stable");
        assert_eq!(d.target_name, "chat-frontend");
    }
}

#[test]
fn first_sight_copies_the_target_as_stable_and_leaves_its_pods() {
    let (c, r) = canary(CANARY, "");
    let s = CanaryStatus {
        phase: Phase::Idle,
        stable_revision: Some(revision("v1")),
        replicas: Some(CohortReplicas {
            stable: 10,
            canary: 10,
        }),
        ..CanaryStatus::default()
    };
    let d = run((&c, &r), &target("v1", Some(10)), None, &s);
    let (image, rev, replicas, kind, ..) = applied(&d);
    assert_eq!(
        (image.as_str(), rev, replicas, kind.as_str()),
        ("v1", revision("v1"), 10, "RollingUpdate")
    );
    assert_eq!(
        d.target_replicas, None,
        "the target serves until the stable copy is ready"
    );
}

#[test]
fn promotion_gives_stable_the_canarys_template_with_the_promotion_strategy() {
    // (spec.promotion lines, gpuBudget, status replicas) →
    // (strategy, maxSurge, maxUnavailable)
    let int = |i| Some(IntOrString::Int(i));
    let table = [
        // RollingUpdate defaults: 25% of 10 rounded up, none unavailable.
        ("", (10, 10), "RollingUpdate", int(3), int(0)),
        // Percentages: a surge rounded up, an unavailability down (no
        // canary pod beside stable, so the 15 pods allowed leave room).
        (
            "promotion: {strategy: RollingUpdate, maxSurge: 50%, maxUnavailable: 20%}\n",
            (10, 0),
            "RollingUpdate",
            int(5),
            int(2),
        ),
        (
            "promotion: {strategy: Recreate}\n",
            (10, 10),
            "Recreate",
            None,
            None,
        ),
        // A maxSurge the user set bounds both cohorts: 10 + 1 pods at
        // most, and stable and the canary already hold 11. The canary's 3
        // pods cover the surge of 1: one of stable's at a time is replaced.
        (
            "promotion: {maxSurge: 1, maxUnavailable: 0}\n",
            (10, 3),
            "RollingUpdate",
            int(0),
            int(1),
        ),
        // 10 + 5 at most: room for 2 beside 13; the 3 cut are covered.
        (
            "promotion: {maxSurge: 5}\n",
            (10, 3),
            "RollingUpdate",
            int(2),
            int(3),
        ),
        // No canary pod to cover and no room: one unavailable, or
        // nothing could move.
        (
            "promotion: {maxSurge: 0}\n",
            (10, 0),
            "RollingUpdate",
            int(0),
            int(1),
        ),
    ];
    for (extra, (rs, rc), kind, surge, unavailable) in table {
        let (c, r) = canary(CANARY, extra);
        let s = status(Phase::Promoting, rs, rc);
        let d = run(
            (&c, &r),
            &target("v2", Some(i32::try_from(rc).expect("small"))),
            Some(&stable("v1", rs)),
            &s,
        );
        let got = applied(&d);
        assert_eq!(
            got,
            (
                "v2".to_string(),
                revision("v2"),
                i32::try_from(rs).expect("small"),
                kind.to_string(),
                surge,
                unavailable
            ),
            "{extra:?}"
        );
        assert_eq!(d.keep, None, "nothing is kept while stable changes");
    }
}

#[test]
fn a_stable_copy_that_carries_the_promoted_revision_is_only_scaled() {
    let (c, r) = canary(CANARY, "");
    let s = status(Phase::Promoting, 10, 10);
    let d = run(
        (&c, &r),
        &target("v2", Some(10)),
        Some(&stable("v2", 10)),
        &s,
    );
    assert_eq!(d.stable, None, "no second rollout of the same template");
    let d = run(
        (&c, &r),
        &target("v2", Some(10)),
        Some(&stable("v2", 7)),
        &s,
    );
    assert_eq!(d.stable, Some(StableChange::Scale(10)));
}

#[test]
fn abort_scales_the_target_down_once_status_says_so_and_keeps_stable() {
    let (c, r) = canary(CANARY, "");
    // Aborted, the canary still draining: status keeps its replicas.
    let s = status(Phase::Aborted, 10, 3);
    let d = run(
        (&c, &r),
        &target("v2", Some(3)),
        Some(&stable("v1", 10)),
        &s,
    );
    assert_eq!((d.stable.clone(), d.target_replicas), (None, None));
    // Drained: the engine set the canary to zero.
    let s = status(Phase::Aborted, 10, 0);
    let d = run(
        (&c, &r),
        &target("v2", Some(3)),
        Some(&stable("v1", 10)),
        &s,
    );
    assert_eq!(d.target_replicas, Some(0));
    assert_eq!(d.stable, None, "stable keeps its version and size");
    let kept = d.keep.expect("kept");
    assert_eq!(kept.revision, revision("v1"));
    assert_eq!(
        kept.template,
        template("v1"),
        "the target runs v2: the template comes from the stable copy, unlabelled"
    );
}

#[test]
fn blue_green_has_a_preview_service_and_cuts_over_on_traffic_alone() {
    let (c, r) = canary(BLUE_GREEN, "");
    let (plain, plain_rollout) = canary(CANARY, "");
    let s = status(Phase::Progressing, 10, 10);
    let names_of = |d: &Desired| {
        d.services
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
    };
    let d = run(
        (&c, &r),
        &target("v2", Some(10)),
        Some(&stable("v1", 10)),
        &s,
    );
    assert_eq!(names_of(&d), ["chat-stable", "chat-canary", "chat-preview"]);
    // The cutover moves traffic only: no object changes while both sides
    // run at full size.
    assert_eq!((d.stable.clone(), d.target_replicas), (None, None));
    let d = run(
        (&plain, &plain_rollout),
        &target("v2", Some(10)),
        Some(&stable("v1", 10)),
        &s,
    );
    assert_eq!(names_of(&d), ["chat-stable", "chat-canary"]);
    // The services select one cohort each.
    let selectors: Vec<BTreeMap<String, String>> = d
        .services
        .iter()
        .map(|(_, svc)| {
            svc.spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        selectors,
        [builders::stable_labels(&selector()), selector()]
    );
}

#[test]
fn a_target_selecting_with_expressions_only_is_refused_with_its_name() {
    let (c, r) = canary(CANARY, "");
    let mut t = target("v1", Some(10));
    if let Some(spec) = t.spec.as_mut() {
        spec.selector.match_labels = None;
    }
    let selector = selector();
    let cluster = Cluster {
        canary: &c,
        rollout: &r,
        target: &t,
        stable: None,
        selector: &selector,
        pods: None,
        parts: &[],
        stable_idle: true,
    };
    let err = desired(&cluster, &status(Phase::Idle, 10, 10), 10).expect_err("refused");
    let DesiredError::Selector { target, .. } = &err;
    assert_eq!(target, "chat-frontend");
    assert!(err.to_string().contains("has no matchLabels"), "{err}");
}

/// The engine and the shell together, as production runs them: each
/// plan's status goes through [`desired`], and a kubelet stand-in makes
/// every Deployment what was asked at once.
struct Loop {
    canary: Canary,
    rollout: Rollout,
    status: CanaryStatus,
    observed: Observed,
    target: Deployment,
    stable: Option<Deployment>,
    now: Timestamp,
}

impl Loop {
    fn new(extra: &str) -> Loop {
        let (canary, rollout) = canary(CANARY, extra);
        let mut observed = Observed {
            desired_revision: revision("v1"),
            target_replicas: 10,
            applied_generation: Some(0),
            ..Observed::default()
        };
        observed.ready.canary = 10;
        Loop {
            canary,
            rollout,
            status: CanaryStatus::default(),
            observed,
            target: target("v1", Some(10)),
            stable: None,
            now: Timestamp::from_second(1_800_000_000).expect("valid time"),
        }
    }

    /// One reconcile: plan, converge, then the cluster settles.
    fn reconcile(&mut self) -> Desired {
        let p = engine::plan(&self.rollout, &self.status, &self.observed, self.now);
        self.status = p.status;
        if let Some(t) = &self.status.traffic {
            self.observed.applied_generation = Some(t.generation);
        }
        let selector = selector();
        // A kubelet that removes pods at once: each cohort holds what its
        // Deployment asks for.
        let holds = |d: Option<&Deployment>| {
            let n = d
                .and_then(|d| d.spec.as_ref()?.replicas)
                .map_or(0, |r| u32::try_from(r).unwrap_or(0));
            PodCount { held: n, live: n }
        };
        let cluster = Cluster {
            canary: &self.canary,
            rollout: &self.rollout,
            target: &self.target,
            stable: self.stable.as_ref(),
            selector: &selector,
            pods: Some(Cohorts {
                stable: holds(self.stable.as_ref()),
                canary: holds(Some(&self.target)),
            }),
            parts: &[],
            stable_idle: true,
        };
        let d = desired(&cluster, &self.status, self.observed.target_replicas).expect("buildable");
        match &d.stable {
            Some(StableChange::Apply(copy)) => self.stable = Some((**copy).clone()),
            Some(StableChange::Scale(n)) => set_replicas(self.stable.as_mut(), *n),
            None => {}
        }
        if let Some(n) = d.target_replicas {
            set_replicas(Some(&mut self.target), n);
        }
        let has = |d: Option<&Deployment>| {
            d.and_then(|d| d.spec.as_ref()?.replicas)
                .map_or(0, |r| u32::try_from(r).unwrap_or(0))
        };
        self.observed.ready = CohortReplicas {
            stable: has(self.stable.as_ref()),
            canary: has(Some(&self.target)),
        };
        self.observed.stable_rolled_out = self
            .stable
            .as_ref()
            .and_then(|s| s.annotations().get(names::REVISION_ANNOTATION).cloned());
        self.observed.stable_carries = self.observed.stable_rolled_out.clone();
        self.now = Timestamp::from_second(self.now.as_second() + 1).expect("valid time");
        d
    }

    fn replicas(&self) -> (u32, u32) {
        let r = self.status.replicas.expect("recorded");
        (r.stable, r.canary)
    }
}

fn set_replicas(d: Option<&mut Deployment>, n: u32) {
    if let Some(spec) = d.and_then(|d| d.spec.as_mut()) {
        spec.replicas = Some(i32::try_from(n).expect("small"));
    }
}

#[test]
fn engine_and_shell_adopt_run_and_promote_the_same_way() {
    let mut l = Loop::new("");
    // Adoption: the stable copy appears at 10 with the target's template;
    // the target keeps its pods until stable is ready, then scales to 0.
    let d = l.reconcile();
    assert!(matches!(d.stable, Some(StableChange::Apply(_))));
    assert_eq!(d.target_replicas, None);
    let d = l.reconcile();
    assert_eq!(d.target_replicas, Some(0), "{}", l.status.message);
    assert_eq!(l.replicas(), (10, 0));
    // A new version: the canary grows to its share first (matchWeight:
    // 20% beside 10 stable takes 3), with the user's template.
    l.target = target("v2", Some(0));
    l.observed.desired_revision = revision("v2");
    let d = l.reconcile();
    assert_eq!(l.status.phase, Phase::Progressing);
    assert_eq!(d.target_replicas, Some(3));
    // At the pause, a full promotion: stable takes v2's template.
    l.reconcile();
    l.observed.commands.promote = Some(("p1".into(), true));
    let d = l.reconcile();
    assert_eq!(l.status.phase, Phase::Promoting, "{}", l.status.message);
    assert_eq!(d.target_replicas, Some(10), "the canary carries everything");
    let (image, rev, ..) = applied(&d);
    assert_eq!((image.as_str(), rev), ("v2", revision("v2")));
    // Stable rolled out v2: promoted, and the canary goes back to zero.
    for _ in 0..5 {
        l.reconcile();
    }
    assert_eq!(l.status.phase, Phase::Succeeded, "{}", l.status.message);
    assert_eq!(l.replicas(), (10, 0));
    assert_eq!(
        l.stable
            .as_ref()
            .map(|s| s.annotations()[names::REVISION_ANNOTATION].clone()),
        Some(revision("v2"))
    );
}

#[test]
fn engine_and_shell_abort_puts_traffic_on_stable_before_the_canary_goes() {
    let mut l = Loop::new("");
    l.reconcile();
    l.reconcile();
    l.target = target("v2", Some(0));
    l.observed.desired_revision = revision("v2");
    l.reconcile();
    l.reconcile();
    assert_eq!(l.replicas(), (10, 3));
    l.observed.commands.abort = Some("a1".into());
    // The proxies still serve the old table and streams are open: the
    // abort writes traffic to stable and nothing scales yet.
    l.observed.open_streams = Some(CohortReplicas {
        stable: 4,
        canary: 2,
    });
    let d = l.reconcile();
    assert_eq!(l.status.phase, Phase::Aborted);
    let traffic = l.status.traffic.as_ref().expect("a table");
    let canary_weight = traffic
        .backends
        .iter()
        .find(|b| b.cohort == weir_crds::Cohort::Canary)
        .map(|b| b.weight);
    assert_eq!(canary_weight, Some(0.0), "traffic to stable first");
    assert_eq!(d.target_replicas, None, "the proxies have not applied it");
    // Applied now (the stand-in proxies take each table at once), but the
    // canary still has open streams.
    let d = l.reconcile();
    assert_eq!(d.target_replicas, None, "streams still open on the canary");
    l.observed.open_streams = Some(CohortReplicas {
        stable: 4,
        canary: 0,
    });
    let d = l.reconcile();
    assert_eq!(d.target_replicas, Some(0), "drained: the canary goes");
    assert_eq!(d.stable, None);
}

#[test]
fn under_a_gpu_budget_stable_takes_the_promoted_template_only_at_zero_replicas() {
    let (c, r) = canary(CANARY, "gpuBudget: 12\n");
    let stable_copy = stable("v1", 6);
    // Capacity is still moving to the canary: stable keeps v1.
    let d = run(
        (&c, &r),
        &target("v2", Some(6)),
        Some(&stable_copy),
        &status(Phase::Promoting, 6, 6),
    );
    assert!(
        !matches!(d.stable, Some(StableChange::Apply(_))),
        "{:?}",
        d.stable
    );
    // Stable at zero: it takes v2 with no pod to replace.
    let d = run(
        (&c, &r),
        &target("v2", Some(10)),
        Some(&stable_copy),
        &status(Phase::Promoting, 0, 10),
    );
    let (image, rev, replicas, ..) = applied(&d);
    assert_eq!((image.as_str(), rev, replicas), ("v2", revision("v2"), 0));
}

#[test]
fn engine_and_shell_stay_within_the_budget_from_adoption_to_promotion() {
    let mut l = Loop::new("gpuBudget: 12\n");
    // The Deployments (what the scheduler is asked for) within the budget
    // after every reconcile, pods included.
    let within = |l: &Loop| {
        let spec = |d: Option<&Deployment>| {
            d.and_then(|d| d.spec.as_ref()?.replicas)
                .map_or(0, |r| u32::try_from(r).unwrap_or(0))
        };
        let (s, c) = (spec(l.stable.as_ref()), spec(Some(&l.target)));
        assert!(s + c <= 12, "over the GPU budget: {s} + {c}");
    };
    // Adoption: no room for a copy of 10 beside the target's 10, so the
    // target's replicas move to the copy as the budget allows.
    for _ in 0..40 {
        l.reconcile();
        within(&l);
        if l.replicas() == (10, 0) {
            break;
        }
    }
    assert_eq!(l.replicas(), (10, 0), "{}", l.status.message);
    l.target = target("v2", Some(0));
    l.observed.desired_revision = revision("v2");
    l.reconcile();
    l.reconcile();
    l.observed.commands.promote = Some(("p1".into(), true));
    let mut stable_when_promoted = None;
    for _ in 0..60 {
        l.reconcile();
        within(&l);
        let carries = l
            .stable
            .as_ref()
            .map(|s| s.annotations()[names::REVISION_ANNOTATION].clone());
        if stable_when_promoted.is_none() && carries == Some(revision("v2")) {
            stable_when_promoted = Some(l.replicas());
        }
        if l.status.phase == Phase::Succeeded {
            break;
        }
    }
    assert_eq!(l.status.phase, Phase::Succeeded, "{}", l.status.message);
    assert_eq!(
        stable_when_promoted,
        Some((0, 10)),
        "stable took v2 with no pod to replace, the canary carrying all"
    );
    // The canary scales down once the proxies serve the all-stable table.
    for _ in 0..3 {
        l.reconcile();
    }
    assert_eq!(l.replicas(), (10, 0));
}

#[test]
fn under_a_gpu_budget_a_cohort_grows_only_into_gpus_no_pod_holds() {
    let r = |stable, canary| CohortReplicas { stable, canary };
    let pods = |held_s, live_s, held_c, live_c| Cohorts {
        stable: PodCount {
            held: held_s,
            live: live_s,
        },
        canary: PodCount {
            held: held_c,
            live: live_c,
        },
    };
    // (asked, spec now, pods, budget) -> applied
    let table = [
        // No budget: as asked.
        (r(4, 4), r(4, 0), None, None, r(4, 4)),
        // Stable gave one up, its pod still terminating: the canary waits.
        (r(3, 1), r(4, 0), Some(pods(4, 3, 0, 0)), Some(4), r(3, 0)),
        // Gone: the canary takes its GPU.
        (r(3, 1), r(3, 0), Some(pods(3, 3, 0, 0)), Some(4), r(3, 1)),
        // Shrinking applies at once, whatever the pods.
        (r(2, 2), r(3, 1), Some(pods(3, 3, 1, 1)), Some(4), r(2, 1)),
        // Both grow (after an abort): stable first, into what is free.
        (r(4, 2), r(2, 1), Some(pods(2, 2, 1, 1)), Some(5), r(4, 1)),
        // Pods could not be listed: nothing grows.
        (r(4, 1), r(3, 0), None, Some(8), r(3, 0)),
        // Never below what the Deployment already has.
        (r(4, 2), r(4, 2), Some(pods(4, 4, 2, 2)), Some(4), r(4, 2)),
        // Stable was just scaled to 0 and its pod is not marked for
        // deletion yet: that pod frees nothing, so stable, asked for 1
        // again (a promotion handing capacity back), waits for it to go
        // instead of keeping it (its Deployment, on a new template, would
        // replace it at once: 5 GPUs asked for).
        (r(1, 3), r(0, 3), Some(pods(1, 1, 3, 3)), Some(4), r(0, 3)),
        // A pod stable's Deployment has yet to create is spoken for: the
        // canary does not grow into its GPU.
        (r(2, 2), r(2, 1), Some(pods(1, 1, 1, 1)), Some(3), r(2, 1)),
        (r(2, 2), r(2, 1), Some(pods(1, 1, 1, 1)), Some(4), r(2, 2)),
    ];
    for (asked, spec, held, budget, want) in table {
        assert_eq!(
            super::within_budget(asked, spec, held, budget),
            want,
            "asked {asked:?}, spec {spec:?}, pods {held:?}, budget {budget:?}"
        );
    }
}

/// A model canary: both cohort Services select the target's own pods;
/// nothing is copied, scaled or kept, in any phase.
#[test]
fn a_model_canary_wants_two_services_on_the_targets_pods_and_nothing_else() {
    let (c, r) = canary(
        CANARY,
        "route: {model: chat}\nmodels: {stable: chat-lora-v7, canary: chat-lora-v8}\n",
    );
    for phase in [
        Phase::Initializing,
        Phase::Progressing,
        Phase::Promoting,
        Phase::Aborted,
    ] {
        let mut s = status(phase, 0, 0);
        s.replicas = None;
        let d = run((&c, &r), &target("v1", Some(3)), None, &s);
        assert_eq!(
            (&d.stable, d.target_replicas, &d.keep, d.held_back),
            (&None, None, &None, false),
            "{phase:?}"
        );
        let selectors: Vec<_> = d
            .services
            .iter()
            .map(|(name, svc)| {
                let selector = svc.spec.as_ref().and_then(|s| s.selector.clone());
                (name.clone(), selector)
            })
            .collect();
        assert_eq!(
            selectors,
            [
                ("chat-stable".to_string(), Some(selector())),
                ("chat-canary".to_string(), Some(selector())),
            ],
            "{phase:?}"
        );
    }
}
