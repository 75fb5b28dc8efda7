//! A running pod's state as the agent tracks it, and the Pod status a
//! kubelet would report for it. Pure: the agent updates a [`PodState`] from
//! what its process and probes do, and patches [`pod_status`]'s result.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Counts probe results against the thresholds: ready after
/// `success_threshold` successes in a row, unready after `failure_threshold`
/// failures in a row (the kubelet's rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeCounter {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    ready: bool,
}

impl ProbeCounter {
    /// A counter that starts unready.
    pub fn new(success_threshold: u32, failure_threshold: u32) -> ProbeCounter {
        ProbeCounter {
            success_threshold: success_threshold.max(1),
            failure_threshold: failure_threshold.max(1),
            successes: 0,
            failures: 0,
            ready: false,
        }
    }

    /// Records one probe; returns the readiness after it.
    pub fn observe(&mut self, ok: bool) -> bool {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= self.success_threshold {
                self.ready = true;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.failure_threshold {
                self.ready = false;
            }
        }
        self.ready
    }
}

/// The container's process as the agent last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Process {
    /// Running since then.
    Running {
        /// When it started.
        since: Timestamp,
    },
    /// Exited; the agent restarts it after a back-off.
    Exited {
        /// Its exit code (128 + signal when killed by one).
        code: i32,
        /// When it exited.
        at: Timestamp,
    },
    /// Could not be started (the reason, for `waiting.message`).
    Failed(String),
}

/// What the agent knows of one pod it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodState {
    /// The pod's IP.
    pub ip: Ipv4Addr,
    /// The node's address.
    pub host_ip: Ipv4Addr,
    /// When the agent took the pod (`startTime`, Initialized).
    pub started: Timestamp,
    /// The container's name and image.
    pub container: (String, String),
    /// The process.
    pub process: Process,
    /// The last termination, for `lastState`.
    pub last_exit: Option<(i32, Timestamp)>,
    /// Restarts so far.
    pub restarts: i32,
    /// Whether the readiness probe passes (or, with none, the process runs).
    pub ready: bool,
    /// When `ready` last changed.
    pub ready_changed: Timestamp,
}

fn condition(type_: &str, ok: bool, at: Timestamp) -> PodCondition {
    PodCondition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        last_transition_time: Some(Time(at)),
        ..PodCondition::default()
    }
}

/// The status to patch (strategic merge: conditions merge by type, so the
/// scheduler's PodScheduled is kept; it is repeated here all the same).
pub fn pod_status(state: &PodState) -> PodStatus {
    let ready = state.ready && matches!(state.process, Process::Running { .. });
    let (name, image) = state.container.clone();
    let terminated = |code: i32, at: Timestamp| ContainerStateTerminated {
        exit_code: code,
        finished_at: Some(Time(at)),
        reason: Some(if code == 0 { "Completed" } else { "Error" }.to_string()),
        ..ContainerStateTerminated::default()
    };
    let container_state = match &state.process {
        Process::Running { since } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*since)),
            }),
            ..ContainerState::default()
        },
        Process::Exited { .. } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".to_string()),
                message: Some("the process exited; the node agent restarts it".to_string()),
            }),
            ..ContainerState::default()
        },
        Process::Failed(why) => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("RunContainerError".to_string()),
                message: Some(why.clone()),
            }),
            ..ContainerState::default()
        },
    };
    let running = matches!(state.process, Process::Running { .. });
    // No address was allocated (the pod could not be set up): report none.
    let ip = (!state.ip.is_unspecified()).then(|| state.ip.to_string());
    PodStatus {
        phase: Some(
            if running || state.restarts > 0 {
                "Running"
            } else {
                "Pending"
            }
            .to_string(),
        ),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        host_ip: Some(state.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: state.host_ip.to_string(),
        }]),
        start_time: Some(Time(state.started)),
        conditions: Some(vec![
            condition("PodScheduled", true, state.started),
            condition("Initialized", true, state.started),
            condition("ContainersReady", ready, state.ready_changed),
            condition("Ready", ready, state.ready_changed),
        ]),
        container_statuses: Some(vec![ContainerStatus {
            name,
            image: image.clone(),
            image_id: format!("weir-node-agent://{image}"),
            container_id: None,
            ready,
            started: Some(running),
            restart_count: state.restarts,
            state: Some(container_state),
            last_state: state.last_exit.map(|(code, at)| ContainerState {
                terminated: Some(terminated(code, at)),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }]),
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> PodState {
        PodState {
            ip: Ipv4Addr::new(10, 244, 1, 2),
            host_ip: Ipv4Addr::new(10, 244, 0, 1),
            started: Timestamp::UNIX_EPOCH,
            container: ("sim".into(), "weir/sim:v1".into()),
            process: Process::Running {
                since: Timestamp::UNIX_EPOCH,
            },
            last_exit: None,
            restarts: 0,
            ready: true,
            ready_changed: Timestamp::UNIX_EPOCH,
        }
    }

    fn cond(status: &PodStatus, type_: &str) -> String {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .map(|c| c.status.clone())
            .unwrap_or_default()
    }

    #[test]
    fn probe_counter_follows_the_thresholds() {
        let mut p = ProbeCounter::new(2, 3);
        assert!(!p.observe(true), "one success of two");
        assert!(p.observe(true));
        assert!(
            p.observe(false) && p.observe(false),
            "two failures of three"
        );
        assert!(!p.observe(false));
        assert!(!p.observe(true), "successes count again from zero");
        assert!(p.observe(true));
    }

    #[test]
    fn a_running_ready_pod_reports_ip_running_and_ready() {
        let s = pod_status(&state());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.1.2"));
        assert_eq!(cond(&s, "Ready"), "True");
        assert_eq!(cond(&s, "ContainersReady"), "True");
        assert_eq!(cond(&s, "PodScheduled"), "True");
        let c = &s.container_statuses.unwrap_or_default()[0];
        assert!(c.ready && c.restart_count == 0);
        assert!(c.state.as_ref().is_some_and(|s| s.running.is_some()));
    }

    #[test]
    fn an_exited_process_is_not_ready_and_shows_its_exit() {
        let mut st = state();
        st.process = Process::Exited {
            code: 137,
            at: Timestamp::UNIX_EPOCH,
        };
        st.last_exit = Some((137, Timestamp::UNIX_EPOCH));
        st.restarts = 1;
        let s = pod_status(&st);
        assert_eq!(cond(&s, "Ready"), "False", "ready flag alone is not enough");
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let c = &s.container_statuses.unwrap_or_default()[0];
        assert_eq!(c.restart_count, 1);
        let last = c.last_state.as_ref().and_then(|l| l.terminated.as_ref());
        assert_eq!(last.map(|t| t.exit_code), Some(137));
    }

    #[test]
    fn a_process_that_never_started_is_pending_with_the_reason() {
        let mut st = state();
        st.process = Process::Failed("no such file: /nope/weir".into());
        st.ready = false;
        st.ip = Ipv4Addr::UNSPECIFIED;
        let s = pod_status(&st);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(
            (s.pod_ip, s.pod_ips),
            (None, None),
            "no address, none reported"
        );
        let c = &s.container_statuses.unwrap_or_default()[0];
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        assert_eq!(
            waiting.and_then(|w| w.message.as_deref()),
            Some("no such file: /nope/weir")
        );
    }
}
