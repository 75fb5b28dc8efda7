//! Traffic and replicas: the table every proxy serves, and the replicas
//! each cohort should have.
//!
//! Both are state, not actions: the table is `status.traffic` (published
//! to the proxies with a [`Action::SetTraffic`](super::Action::SetTraffic)
//! when it changes) and the replicas are `status.replicas`, which the
//! Kubernetes shell converges the Deployments to on every reconcile.

use weir_crds::{Cohort, CohortReplicas, Traffic, TrafficBackend};

use super::spec::Mode;
use super::{Action, Cx, Flow, Share, replicas};

impl Cx<'_> {
    /// Kubernetes, no run in progress: stable serves alone at the user's
    /// replica count (which changes when the user scales the target).
    pub(super) fn follow_target_replicas(&mut self) {
        let Some(r) = self.s.replicas else { return };
        if !self.r.manages_pods()
            || r.canary > 0
            || self.traffic_share(Cohort::Canary) > Share::NONE
        {
            return;
        }
        let total = self.obs.target_replicas.max(1);
        let want = self.r.gpu_budget.map_or(total, |b| total.min(b.max(1)));
        if r.stable != want {
            self.scale(Cohort::Stable, want);
        }
    }

    /// Kubernetes: once the proxies serve the current table, the canary
    /// has no open streams and stable is ready to carry everything, scale
    /// the canary to zero.
    pub(super) fn scale_down_when_drained(&mut self) {
        if !self.r.manages_pods() || self.traffic_share(Cohort::Canary) > Share::NONE {
            return;
        }
        let canary = self.s.replicas.map_or(0, |r| r.canary);
        if canary == 0 {
            return;
        }
        let generation = self.s.traffic.as_ref().map_or(0, |t| t.generation);
        let applied = self.obs.applied_generation.is_some_and(|g| g >= generation);
        let drained = self.obs.open_streams.is_none_or(|o| o.canary == 0);
        let stable_ready = self.obs.ready.stable >= self.s.replicas.map_or(0, |r| r.stable);
        if applied && drained && stable_ready {
            self.scale(Cohort::Canary, 0);
            self.scale(Cohort::Stable, self.obs.target_replicas.max(1));
        }
    }

    /// The share a cohort has in the published table.
    pub(super) fn traffic_share(&self, cohort: Cohort) -> Share {
        let Some(t) = &self.s.traffic else {
            return if cohort == Cohort::Stable {
                Share::ALL
            } else {
                Share::NONE
            };
        };
        t.backends
            .iter()
            .find(|b| b.cohort == cohort)
            .and_then(|b| Share::from_percent(b.weight).ok())
            .unwrap_or(Share::NONE)
    }

    pub(super) fn route_all_to(&mut self, cohort: Cohort) {
        let canary = if cohort == Cohort::Canary {
            Share::ALL
        } else {
            Share::NONE
        };
        self.set_traffic(canary, false);
    }

    /// Publishes a table giving the canary `canary`; no-op when unchanged.
    pub(super) fn set_traffic(&mut self, canary: Share, override_header: bool) {
        let backends = Cohort::BOTH
            .into_iter()
            .map(|cohort| {
                let share = if cohort == Cohort::Canary {
                    canary
                } else {
                    canary.complement()
                };
                let revision = match cohort {
                    Cohort::Stable => self.s.stable_revision.clone(),
                    Cohort::Canary => self.s.canary_revision.clone(),
                };
                let (service, port, url) = match &self.r.mode {
                    Mode::Kubernetes { canary, port, .. } => (
                        Some(weir_crds::names::service(canary, cohort)),
                        Some(*port),
                        None,
                    ),
                    Mode::Local { stable, canary } => {
                        let b = if cohort == Cohort::Stable {
                            stable
                        } else {
                            canary
                        };
                        (None, None, Some(b.url.clone()))
                    }
                };
                TrafficBackend {
                    cohort,
                    service,
                    port,
                    url,
                    weight: share.percent(),
                    // A model canary's revisions are its model names: the
                    // stable cohort's is the last promoted one.
                    model: if self.r.is_model() {
                        revision.clone()
                    } else {
                        None
                    },
                    revision,
                }
            })
            .collect();
        let next = Traffic {
            generation: self.s.traffic.as_ref().map_or(1, |t| t.generation + 1),
            route: self.r.route.clone(),
            sticky: self.r.sticky.clone(),
            override_header,
            backends,
        };
        if let Some(cur) = &self.s.traffic
            && (Traffic {
                generation: cur.generation,
                ..next.clone()
            }) == *cur
        {
            return;
        }
        self.s.canary_weight = canary.percent();
        self.s.traffic = Some(next.clone());
        self.actions.push(Action::SetTraffic(next));
    }

    /// Kubernetes: asks for `replicas` of a cohort; no-op when unchanged.
    pub(super) fn scale(&mut self, cohort: Cohort, replicas: u32) {
        if !self.r.manages_pods() {
            return;
        }
        let mut current = self.s.replicas.unwrap_or(CohortReplicas {
            stable: self.obs.target_replicas,
            canary: 0,
        });
        let slot = current.get_mut(cohort);
        if *slot == replicas && self.s.replicas.is_some() {
            return;
        }
        *slot = replicas;
        self.s.replicas = Some(current);
    }

    /// The step waits for `cohort` to have `wanted` ready replicas: the
    /// status message says so, with what its pods say of the rest, and an
    /// Event when that changes (see `finish`). Waiting is not progress: the
    /// progress deadline runs on, and its abort message says what was
    /// missing.
    pub(super) fn wait_for_ready(&mut self, cohort: Cohort, wanted: u32) -> Flow {
        self.waiting = Some(super::Waiting { cohort, wanted });
        Flow::Wait
    }

    /// What the step waits for, as said in status and the Event.
    pub(super) fn waiting_for(&self) -> Option<String> {
        let w = self.waiting?;
        let ready = self.obs.ready.get(w.cohort);
        let mut text = format!(
            "waiting for {} replicas: {ready}/{} ready",
            w.cohort.as_str(),
            w.wanted
        );
        if let Some(why) = self.obs.unready.get(w.cohort).as_deref() {
            text.push_str("; ");
            text.push_str(why);
        }
        Some(text)
    }

    /// Replicas per cohort for a canary share (see [`replicas`]).
    pub(super) fn replicas_for(&self, canary: Share, fixed: Option<u32>) -> CohortReplicas {
        replicas::for_share(self.obs.target_replicas, canary, fixed, self.r.gpu_budget)
    }
}
