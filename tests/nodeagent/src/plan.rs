//! What the agent runs for a pod, decided from the Pod alone: the `weir sim`
//! command line, the port, the readiness probe and the termination timings.
//!
//! The mapping from a container to `weir sim` (the README repeats it):
//! - the pod's first container is run; others are ignored (no sidecars);
//! - its `args` are passed to `weir sim` as they are; `command` and the
//!   image are ignored (any image "is" a sim: a test says what a version
//!   does through args or env, not through an image that cannot run here);
//! - each env var `WEIR_SIM_<FLAG>=<value>` with a literal value becomes
//!   `--<flag> <value>` (`WEIR_SIM_TTFT=50ms` → `--ttft 50ms`);
//! - every env var with a literal `value` (those too) is in the process's
//!   environment, as a kubelet passes it to the container (a missing value
//!   is `""`, the API's default), so `weir sim --forward-env DECODE_URL
//!   --generation-env DYN_NAMESPACE` reads what weir's controller set on
//!   the pod; `valueFrom` entries (Secrets, ConfigMaps, the downward API)
//!   are skipped, and `$(VAR)` references are not expanded (the agent adds
//!   `KUBECONFIG` and `POD_NAMESPACE` beneath them: [`crate::apiserver`]);
//! - `--listen <podIP>:<port>` (the first declared container port, else
//!   8000) and `--name <pod name>` are added unless the args have them.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Env vars with this prefix become `weir sim` flags.
pub const ENV_PREFIX: &str = "WEIR_SIM_";
/// The port a container with no declared port listens on.
pub const DEFAULT_PORT: u16 = 8000;
/// The grace period of a pod that sets none (the API server's default).
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// A pod the agent cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The pod has no containers.
    #[error("pod has no containers")]
    NoContainer,
    /// A port is out of range or names no declared port.
    #[error("container {container}: port {port:?} is not a port number or a declared port name")]
    Port {
        /// The container.
        container: String,
        /// The port as written.
        port: String,
    },
    /// The readiness probe is not an httpGet (the only kind the agent runs).
    #[error(
        "container {0}: readinessProbe must be httpGet (exec and tcpSocket are not run by the node agent)"
    )]
    Probe(String),
}

/// An HTTP readiness probe, as declared (timings from the Probe, with the
/// kubelet's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessProbe {
    /// The request path.
    pub path: String,
    /// The port on the pod IP.
    pub port: u16,
    /// Before the first probe.
    pub initial_delay: Duration,
    /// Between probes.
    pub period: Duration,
    /// Per probe.
    pub timeout: Duration,
    /// Consecutive successes to become ready.
    pub success_threshold: u32,
    /// Consecutive failures to become unready.
    pub failure_threshold: u32,
}

/// How the agent runs one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    /// The container's name (for `containerStatuses`).
    pub name: String,
    /// The container's image (reported, never pulled).
    pub image: String,
    /// Arguments after `weir sim`.
    pub sim_args: Vec<String>,
    /// Environment variables of the process, in the container's order.
    pub env: Vec<(String, String)>,
    /// The port the sim listens on.
    pub port: u16,
    /// `None`: ready as soon as the process runs (the kubelet's rule).
    pub readiness: Option<ReadinessProbe>,
    /// `lifecycle.preStop` sleep (the `sleep` action, or an exec of
    /// `sleep N` / `sh -c "sleep N"`), run before SIGTERM.
    pub pre_stop: Option<Duration>,
    /// `terminationGracePeriodSeconds`.
    pub grace: Duration,
}

impl ContainerPlan {
    /// The plan for `pod`, whose IP is `ip`.
    pub fn for_pod(pod: &Pod, ip: Ipv4Addr) -> Result<ContainerPlan, PlanError> {
        let spec = pod.spec.as_ref().ok_or(PlanError::NoContainer)?;
        let container = spec.containers.first().ok_or(PlanError::NoContainer)?;
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let port = container
            .ports
            .as_ref()
            .and_then(|ports| ports.first())
            .map(|p| port_number(container, &p.container_port.to_string()))
            .transpose()?
            .unwrap_or(DEFAULT_PORT);

        let mut sim_args = container.args.clone().unwrap_or_default();
        let env = container
            .env
            .iter()
            .flatten()
            .filter(|var| var.value_from.is_none())
            .map(|var| (var.name.clone(), var.value.clone().unwrap_or_default()))
            .collect();
        for var in container.env.iter().flatten() {
            let (Some(flag), Some(value)) = (var.name.strip_prefix(ENV_PREFIX), &var.value) else {
                continue;
            };
            sim_args.push(format!("--{}", flag.to_ascii_lowercase().replace('_', "-")));
            sim_args.push(value.clone());
        }
        if !has_flag(&sim_args, "--listen") {
            sim_args.extend(["--listen".to_string(), format!("{ip}:{port}")]);
        }
        if !has_flag(&sim_args, "--name") {
            sim_args.extend(["--name".to_string(), pod_name]);
        }

        let readiness = container
            .readiness_probe
            .as_ref()
            .map(|probe| readiness(container, probe))
            .transpose()?;
        let grace = spec
            .termination_grace_period_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(DEFAULT_GRACE, Duration::from_secs);
        Ok(ContainerPlan {
            name: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            sim_args,
            env,
            port,
            readiness,
            pre_stop: pre_stop(container),
            grace,
        })
    }
}

/// Whether `args` set `flag` (`--flag value` or `--flag=value`).
fn has_flag(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| {
        a == flag
            || a.strip_prefix(flag)
                .is_some_and(|rest| rest.starts_with('='))
    })
}

/// A port as a number, or the number of a declared port of that name.
fn port_number(container: &Container, port: &str) -> Result<u16, PlanError> {
    let bad = || PlanError::Port {
        container: container.name.clone(),
        port: port.to_string(),
    };
    if let Ok(n) = port.parse::<u16>() {
        return if n == 0 { Err(bad()) } else { Ok(n) };
    }
    container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(port))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .filter(|n| *n != 0)
        .ok_or_else(bad)
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
}

fn readiness(container: &Container, probe: &Probe) -> Result<ReadinessProbe, PlanError> {
    let http = probe
        .http_get
        .as_ref()
        .ok_or_else(|| PlanError::Probe(container.name.clone()))?;
    let port = match &http.port {
        IntOrString::Int(n) => port_number(container, &n.to_string())?,
        IntOrString::String(name) => port_number(container, name)?,
    };
    let threshold = |v: Option<i32>, default: u32| {
        v.and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(default)
    };
    Ok(ReadinessProbe {
        path: http.path.clone().unwrap_or_else(|| "/".to_string()),
        port,
        initial_delay: seconds(probe.initial_delay_seconds, 0),
        period: seconds(probe.period_seconds, 10),
        timeout: seconds(probe.timeout_seconds, 1),
        success_threshold: threshold(probe.success_threshold, 1),
        failure_threshold: threshold(probe.failure_threshold, 3),
    })
}

/// The preStop hook's sleep: the `sleep` action, or an exec whose command
/// is `sleep N` (also through `sh -c`). Other hooks are not run (the agent
/// has no container to exec in); they count as no delay.
fn pre_stop(container: &Container) -> Option<Duration> {
    let hook = container.lifecycle.as_ref()?.pre_stop.as_ref()?;
    if let Some(sleep) = &hook.sleep {
        return u64::try_from(sleep.seconds).ok().map(Duration::from_secs);
    }
    let command = hook.exec.as_ref()?.command.as_ref()?;
    let words: Vec<&str> = match command.as_slice() {
        [shell, flag, script] if shell.ends_with("sh") && flag == "-c" => {
            script.split_whitespace().collect()
        }
        other => other.iter().map(String::as_str).collect(),
    };
    match words.as_slice() {
        [sleep, n] if sleep.ends_with("sleep") => n
            .parse::<f64>()
            .ok()
            .filter(|s| *s >= 0.0)
            .map(Duration::from_secs_f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerPort, EnvVar, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, PodSpec,
        SleepAction,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 7);

    fn pod(container: Container) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![container],
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn sim() -> Container {
        Container {
            name: "sim".into(),
            image: Some("weir/sim:v2".into()),
            ..Container::default()
        }
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn args_pass_through_and_listen_and_name_are_added() {
        let c = Container {
            args: Some(strings(&["--ttft", "50ms"])),
            ports: Some(vec![ContainerPort {
                container_port: 9000,
                name: Some("http".into()),
                ..ContainerPort::default()
            }]),
            ..sim()
        };
        let plan = ContainerPlan::for_pod(&pod(c), IP).expect("plan");
        assert_eq!(
            plan.sim_args,
            strings(&[
                "--ttft",
                "50ms",
                "--listen",
                "10.244.1.7:9000",
                "--name",
                "web-abc"
            ])
        );
        assert_eq!(plan.port, 9000);
        assert_eq!(plan.image, "weir/sim:v2");
        assert_eq!(plan.readiness, None);
        assert_eq!(plan.grace, Duration::from_secs(30));
    }

    #[test]
    fn env_becomes_flags_and_given_listen_and_name_are_kept() {
        let env = |name: &str, value: &str| EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        };
        let c = Container {
            args: Some(strings(&["--name=mine", "--listen", "0.0.0.0:8000"])),
            env: Some(vec![
                env("WEIR_SIM_ERROR_RATE", "0.5"),
                env("OTHER", "x"),
                EnvVar {
                    name: "WEIR_SIM_SEED".into(),
                    value: None,
                    value_from: None,
                },
            ]),
            ..sim()
        };
        let plan = ContainerPlan::for_pod(&pod(c), IP).expect("plan");
        assert_eq!(
            plan.sim_args,
            strings(&[
                "--name=mine",
                "--listen",
                "0.0.0.0:8000",
                "--error-rate",
                "0.5"
            ])
        );
        assert_eq!(plan.port, DEFAULT_PORT);
        assert_eq!(
            plan.env,
            [
                ("WEIR_SIM_ERROR_RATE", "0.5"),
                ("OTHER", "x"),
                ("WEIR_SIM_SEED", "")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn literal_env_is_the_processs_and_value_from_is_skipped() {
        use k8s_openapi::api::core::v1::{EnvVarSource, ObjectFieldSelector};
        let c = Container {
            args: Some(strings(&[
                "--forward-env",
                "DECODE_URL",
                "--generation-env",
                "DYN_NAMESPACE",
            ])),
            env: Some(vec![
                EnvVar {
                    name: "DYN_NAMESPACE".into(),
                    value: Some("chat-rev2".into()),
                    value_from: None,
                },
                EnvVar {
                    name: "POD_IP".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            api_version: None,
                        }),
                        ..EnvVarSource::default()
                    }),
                },
                EnvVar {
                    name: "DECODE_URL".into(),
                    value: Some("http://chat-decode-canary:8000".into()),
                    value_from: None,
                },
            ]),
            ..sim()
        };
        let plan = ContainerPlan::for_pod(&pod(c), IP).expect("plan");
        assert_eq!(
            plan.env,
            [
                ("DYN_NAMESPACE", "chat-rev2"),
                ("DECODE_URL", "http://chat-decode-canary:8000")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        // Not flags: only WEIR_SIM_* are.
        assert_eq!(
            plan.sim_args[..4],
            strings(&[
                "--forward-env",
                "DECODE_URL",
                "--generation-env",
                "DYN_NAMESPACE"
            ])
        );
        assert_eq!(plan.sim_args.len(), 8, "{:?}", plan.sim_args);
    }

    #[test]
    fn readiness_probe_resolves_a_named_port_and_keeps_timings() {
        let c = Container {
            ports: Some(vec![ContainerPort {
                container_port: 8080,
                name: Some("http".into()),
                ..ContainerPort::default()
            }]),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/health".into()),
                    port: IntOrString::String("http".into()),
                    ..HTTPGetAction::default()
                }),
                period_seconds: Some(1),
                failure_threshold: Some(1),
                ..Probe::default()
            }),
            ..sim()
        };
        let probe = ContainerPlan::for_pod(&pod(c), IP)
            .expect("plan")
            .readiness
            .expect("probe");
        assert_eq!(probe.port, 8080);
        assert_eq!(probe.path, "/health");
        assert_eq!(probe.period, Duration::from_secs(1));
        assert_eq!(probe.failure_threshold, 1);
        assert_eq!(probe.success_threshold, 1);
        assert_eq!(probe.timeout, Duration::from_secs(1));
    }

    #[test]
    fn unknown_port_names_and_exec_probes_are_refused() {
        let c = Container {
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    port: IntOrString::String("metrics".into()),
                    ..HTTPGetAction::default()
                }),
                ..Probe::default()
            }),
            ..sim()
        };
        assert_eq!(
            ContainerPlan::for_pod(&pod(c), IP),
            Err(PlanError::Port {
                container: "sim".into(),
                port: "metrics".into()
            })
        );
        let c = Container {
            readiness_probe: Some(Probe {
                exec: Some(ExecAction { command: None }),
                ..Probe::default()
            }),
            ..sim()
        };
        assert_eq!(
            ContainerPlan::for_pod(&pod(c), IP),
            Err(PlanError::Probe("sim".into()))
        );
        let mut empty = pod(sim());
        if let Some(spec) = empty.spec.as_mut() {
            spec.containers.clear();
        }
        assert_eq!(
            ContainerPlan::for_pod(&empty, IP),
            Err(PlanError::NoContainer)
        );
    }

    #[test]
    fn pre_stop_sleep_from_the_sleep_action_or_an_exec_of_sleep() {
        let with_hook = |hook: LifecycleHandler| Container {
            lifecycle: Some(Lifecycle {
                pre_stop: Some(hook),
                ..Lifecycle::default()
            }),
            ..sim()
        };
        let exec = |cmd: &[&str]| LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(strings(cmd)),
            }),
            ..LifecycleHandler::default()
        };
        let cases = [
            (
                LifecycleHandler {
                    sleep: Some(SleepAction { seconds: 5 }),
                    ..LifecycleHandler::default()
                },
                Some(Duration::from_secs(5)),
            ),
            (exec(&["sleep", "3"]), Some(Duration::from_secs(3))),
            (
                exec(&["/bin/sh", "-c", "sleep 2"]),
                Some(Duration::from_secs(2)),
            ),
            (
                exec(&["/bin/sleep", "0.5"]),
                Some(Duration::from_millis(500)),
            ),
            (exec(&["nginx", "-s", "quit"]), None),
        ];
        for (hook, want) in cases {
            let plan = ContainerPlan::for_pod(&pod(with_hook(hook.clone())), IP).expect("plan");
            assert_eq!(plan.pre_stop, want, "{hook:?}");
        }
    }

    #[test]
    fn grace_comes_from_the_pod() {
        let mut p = pod(sim());
        if let Some(spec) = p.spec.as_mut() {
            spec.termination_grace_period_seconds = Some(3);
        }
        let plan = ContainerPlan::for_pod(&p, IP).expect("plan");
        assert_eq!(plan.grace, Duration::from_secs(3));
    }
}
