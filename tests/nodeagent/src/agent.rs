//! The agent's I/O: registers the Nodes and renews their Leases, watches
//! the pods bound to them, and runs each pod in a task of its own (network
//! namespace, `weir sim` process, readiness probe, status, termination).
//! What to do is decided by the pure modules ([`crate::plan`],
//! [`crate::status`], [`crate::net`], [`crate::node`]); this file does it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::net::{Ip, Names, PodRange};
use crate::node::{self, NodeSpec};
use crate::plan::{ContainerPlan, ReadinessProbe};
use crate::status::{PodState, ProbeCounter, Process, pod_status};

/// The field manager of everything the agent writes.
const MANAGER: &str = "weir-node-agent";
/// How often Leases and Node status are renewed (the kubelet: 10 s).
const HEARTBEAT: Duration = Duration::from_secs(5);
/// The pods' kubeconfig (through the API server relay, see
/// [`crate::apiserver`]), as a kubelet points pods at the `kubernetes`
/// Service.
const KUBECONFIG: &str = "KUBECONFIG";
/// The pod's namespace, as the downward API convention names it.
const POD_NAMESPACE: &str = "POD_NAMESPACE";
/// Back-off before a process that exited is started again (the kubelet
/// doubles from 10 s; short here, since tests wait on restarts).
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

macro_rules! log {
    ($($arg:tt)*) => { eprintln!("weir-node-agent: {}", format_args!($($arg)*)) };
}

/// What a pod's task is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Keep running.
    Run,
    /// The pod is being deleted: preStop, SIGTERM, grace, SIGKILL, then
    /// delete the pod object (grace 0) as a kubelet finishes it.
    Terminate(Option<Duration>),
    /// The agent is stopping or the pod object is gone: SIGKILL and clean
    /// up, leave the API alone.
    Kill,
}

/// Everything a pod task needs.
pub struct Agent {
    client: Client,
    nodes: Vec<NodeSpec>,
    weir_bin: PathBuf,
    log_dir: PathBuf,
    pod_kubeconfig: PathBuf,
    names: Names,
    ip: Ip,
    range: Mutex<PodRange>,
    next: AtomicU32,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("nodes", &self.nodes)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent for `nodes`, whose pods' network is `range` on the bridge
    /// of `names` and whose pods' `KUBECONFIG` is `pod_kubeconfig`.
    pub fn new(
        client: Client,
        nodes: Vec<NodeSpec>,
        weir_bin: PathBuf,
        log_dir: PathBuf,
        pod_kubeconfig: PathBuf,
        names: Names,
        range: PodRange,
    ) -> Agent {
        Agent {
            client,
            nodes,
            weir_bin,
            log_dir,
            pod_kubeconfig,
            names,
            ip: Ip,
            range: Mutex::new(range),
            next: AtomicU32::new(0),
        }
    }

    /// The host's address on the pods' bridge.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        self.range
            .lock()
            .map_or(Ipv4Addr::UNSPECIFIED, |r| r.bridge_ip())
    }

    /// Registers the Nodes, then runs their pods until `shutdown` turns
    /// true; then kills every pod process and removes its namespace.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let since = Timestamp::now();
        self.register(since).await?;
        let heartbeat = tokio::spawn(Arc::clone(&self).heartbeat(since));

        let pods = Api::<Pod>::all(self.client.clone());
        let streams = self.nodes.iter().map(|n| {
            let config = watcher::Config::default().fields(&format!("spec.nodeName={}", n.name));
            watcher::watcher(pods.clone(), config)
                .default_backoff()
                .boxed()
        });
        let mut events = futures::stream::select_all(streams);
        let mut running: HashMap<String, (watch::Sender<Stop>, JoinHandle<()>)> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                event = events.next() => match event {
                    Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => self.on_pod(pod, &mut running).await,
                    Some(Ok(Event::Delete(pod))) => {
                        if let Some((stop, _)) = pod.metadata.uid.as_ref().and_then(|u| running.get(u)) {
                            let _ = stop.send(Stop::Kill);
                        }
                    }
                    Some(Ok(Event::Init | Event::InitDone)) => {}
                    Some(Err(e)) => log!("watching pods: {e}"),
                    None => break,
                },
            }
            running.retain(|_, (_, task)| !task.is_finished());
        }

        heartbeat.abort();
        running.retain(|_, (_, task)| !task.is_finished());
        log!("stopping: killing {} pods' processes", running.len());
        for (stop, _) in running.values() {
            let _ = stop.send(Stop::Kill);
        }
        for (_, (_, task)) in running {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        Ok(())
    }

    async fn register(&self, since: Timestamp) -> anyhow::Result<()> {
        let nodes = Api::<Node>::all(self.client.clone());
        let range = self
            .range
            .lock()
            .map_err(|_| anyhow::anyhow!("pod range lock poisoned"))?
            .clone();
        for (i, spec) in self.nodes.iter().enumerate() {
            let object = node::node(spec);
            nodes
                .patch(
                    &spec.name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&object),
                )
                .await
                .map_err(|e| anyhow::anyhow!("registering Node {}: {e}", spec.name))?;
            log!("registered Node {} ({})", spec.name, range.node_cidr(i));
        }
        self.beat(since).await
    }

    /// One heartbeat: every Lease renewed, every Node's status posted.
    async fn beat(&self, since: Timestamp) -> anyhow::Result<()> {
        let now = Timestamp::now();
        let nodes = Api::<Node>::all(self.client.clone());
        let leases = Api::<Lease>::namespaced(self.client.clone(), node::LEASE_NAMESPACE);
        let address = self.bridge_ip();
        for spec in &self.nodes {
            let status = node::node_status(spec, address, since, now);
            nodes
                .patch_status(
                    &spec.name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "status": status })),
                )
                .await
                .map_err(|e| anyhow::anyhow!("posting status of Node {}: {e}", spec.name))?;
            leases
                .patch(
                    &spec.name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&node::lease(&spec.name, now)),
                )
                .await
                .map_err(|e| anyhow::anyhow!("renewing Lease of Node {}: {e}", spec.name))?;
        }
        Ok(())
    }

    async fn heartbeat(self: Arc<Self>, since: Timestamp) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = self.beat(since).await {
                log!("heartbeat: {e}");
            }
        }
    }

    async fn on_pod(
        self: &Arc<Self>,
        pod: Pod,
        running: &mut HashMap<String, (watch::Sender<Stop>, JoinHandle<()>)>,
    ) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if let Some((stop, _)) = running.get(&uid) {
            if deleting && *stop.borrow() == Stop::Run {
                let grace = pod
                    .metadata
                    .deletion_grace_period_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .map(Duration::from_secs);
                let _ = stop.send(Stop::Terminate(grace));
            }
            return;
        }
        let finished = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if deleting {
            // Deleted before it ran here (or after the agent restarted):
            // nothing to stop, only the object to finish.
            self.finish(&pod).await;
            return;
        }
        if finished {
            return;
        }
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let Some(node_index) = self
            .nodes
            .iter()
            .position(|n| Some(&n.name) == node_name.as_ref())
        else {
            return;
        };
        let (stop_tx, stop_rx) = watch::channel(Stop::Run);
        let task = tokio::spawn(Arc::clone(self).run_pod(pod, node_index, stop_rx));
        running.insert(uid, (stop_tx, task));
    }

    /// Deletes the pod object with grace 0: what a kubelet does once the
    /// containers are gone.
    async fn finish(&self, pod: &Pod) {
        let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
            return;
        };
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match Api::<Pod>::namespaced(self.client.clone(), ns)
            .delete(name, &params)
            .await
        {
            Ok(_) => log!("pod {ns}/{name}: deleted"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => log!("pod {ns}/{name}: deleting: {e}"),
        }
    }

    async fn patch_status(&self, pod: &Pod, state: &PodState) {
        let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
            return;
        };
        let patch = serde_json::json!({ "status": pod_status(state) });
        if let Err(e) = Api::<Pod>::namespaced(self.client.clone(), ns)
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            match e {
                kube::Error::Api(s) if s.code == 404 => {}
                e => log!("pod {ns}/{name}: posting status: {e}"),
            }
        }
    }

    /// Runs one pod until it is deleted or the agent stops.
    async fn run_pod(
        self: Arc<Self>,
        pod: Pod,
        node_index: usize,
        mut stop: watch::Receiver<Stop>,
    ) {
        let id = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (netns, veth) = (self.names.netns(n), self.names.veth(n));
        let allocated = self
            .range
            .lock()
            .map_err(|_| "pod range lock poisoned".to_string())
            .and_then(|mut r| r.allocate(node_index).map_err(|e| e.to_string()));
        let started = Timestamp::now();
        let mut state = PodState {
            ip: Ipv4Addr::UNSPECIFIED,
            host_ip: self.bridge_ip(),
            started,
            container: Default::default(),
            process: Process::Failed(String::new()),
            last_exit: None,
            restarts: 0,
            ready: false,
            ready_changed: started,
        };

        let setup = match allocated {
            Ok(ip) => {
                state.ip = ip;
                match self
                    .ip
                    .add_pod(&netns, &veth, &self.names.bridge(), ip)
                    .await
                {
                    Ok(()) => ContainerPlan::for_pod(&pod, ip).map_err(|e| e.to_string()),
                    Err(e) => Err(format!("pod network: {e}")),
                }
            }
            Err(e) => Err(e),
        };
        let plan = match setup {
            Ok(plan) => plan,
            Err(why) => {
                log!("pod {id}: cannot run it: {why}");
                if let Some(c) = pod.spec.as_ref().and_then(|s| s.containers.first()) {
                    state.container = (c.name.clone(), c.image.clone().unwrap_or_default());
                }
                state.process = Process::Failed(why);
                self.patch_status(&pod, &state).await;
                let end = wait_stop(&mut stop).await;
                self.cleanup(&pod, node_index, state.ip, &netns, &veth, end)
                    .await;
                return;
            }
        };
        state.container = (plan.name.clone(), plan.image.clone());
        log!(
            "pod {id}: {} on {}, weir sim {}",
            state.ip,
            self.nodes[node_index].name,
            plan.sim_args.join(" ")
        );

        let end = loop {
            let mut child = match self.spawn(&netns, &plan, &id) {
                Ok(child) => child,
                Err(why) => {
                    state.process = Process::Failed(why);
                    self.patch_status(&pod, &state).await;
                    break wait_stop(&mut stop).await;
                }
            };
            state.process = Process::Running {
                since: Timestamp::now(),
            };
            state.ready = plan.readiness.is_none();
            state.ready_changed = Timestamp::now();
            self.patch_status(&pod, &state).await;

            // The probe runs in a task of its own, so that it goes on while
            // the pod terminates (as the kubelet's does): after SIGTERM the
            // sim stops answering and the pod turns unready, which is what
            // the EndpointSlice's `serving` condition shows.
            let (ready_tx, mut ready_rx) = watch::channel(state.ready);
            let prober = plan
                .readiness
                .clone()
                .map(|probe| tokio::spawn(probe_loop(state.ip, probe, ready_tx)));

            let exited = loop {
                tokio::select! {
                    status = child.wait() => break status.ok().map_or(-1, exit_code),
                    Ok(()) = ready_rx.changed() => {
                        let ready = *ready_rx.borrow_and_update();
                        self.set_ready(&pod, &mut state, ready, &id).await;
                    }
                    end = wait_stop(&mut stop) => {
                        self.terminate(&mut child, &plan, end, &pod, &mut state, &mut ready_rx).await;
                        if let Some(prober) = prober {
                            prober.abort();
                        }
                        self.cleanup(&pod, node_index, state.ip, &netns, &veth, end).await;
                        return;
                    }
                }
            };
            if let Some(prober) = prober {
                prober.abort();
            }
            let now = Timestamp::now();
            log!("pod {id}: process exited with {exited}; restarting it");
            state.process = Process::Exited {
                code: exited,
                at: now,
            };
            state.last_exit = Some((exited, now));
            state.ready = false;
            state.ready_changed = now;
            self.patch_status(&pod, &state).await;
            tokio::select! {
                () = tokio::time::sleep(RESTART_BACKOFF) => {}
                end = wait_stop(&mut stop) => break end,
            }
            state.restarts += 1;
        };
        self.cleanup(&pod, node_index, state.ip, &netns, &veth, end)
            .await;
    }

    fn spawn(
        &self,
        netns: &str,
        plan: &ContainerPlan,
        id: &str,
    ) -> Result<tokio::process::Child, String> {
        let log_path = self.log_dir.join(format!("{}.log", id.replace('/', "_")));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let stderr = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let namespace = id.split_once('/').map_or("", |(ns, _)| ns);
        let injected = [
            (
                KUBECONFIG,
                self.pod_kubeconfig.to_string_lossy().into_owned(),
            ),
            (POD_NAMESPACE, namespace.to_string()),
        ];
        sim_command(&self.weir_bin, netns, &injected, plan)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {} sim in {netns}: {e}", self.weir_bin.display()))
    }

    /// Records a readiness change and posts it.
    async fn set_ready(&self, pod: &Pod, state: &mut PodState, ready: bool, id: &str) {
        if ready == state.ready {
            return;
        }
        state.ready = ready;
        state.ready_changed = Timestamp::now();
        log!("pod {id}: ready={ready}");
        self.patch_status(pod, state).await;
    }

    /// The kubelet's order: preStop hook, SIGTERM, then SIGKILL once the
    /// grace period (which the hook's time counts against) is over. The
    /// readiness probe's results are still posted meanwhile.
    async fn terminate(
        &self,
        child: &mut tokio::process::Child,
        plan: &ContainerPlan,
        end: Stop,
        pod: &Pod,
        state: &mut PodState,
        ready_rx: &mut watch::Receiver<bool>,
    ) {
        let id = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let grace = match end {
            Stop::Terminate(grace) => grace.unwrap_or(plan.grace),
            Stop::Run | Stop::Kill => Duration::ZERO,
        };
        let start = tokio::time::Instant::now();
        let deadline = start + grace;
        if let (Stop::Terminate(_), Some(pre_stop)) = (end, plan.pre_stop) {
            log!("pod {id}: preStop sleep {pre_stop:?}");
            let hook_end = start + pre_stop.min(grace);
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(hook_end) => break,
                    _ = child.wait() => return,
                    Ok(()) = ready_rx.changed() => {
                        let ready = *ready_rx.borrow_and_update();
                        self.set_ready(pod, state, ready, &id).await;
                    }
                }
            }
        }
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        loop {
            tokio::select! {
                _ = child.wait() => return,
                () = tokio::time::sleep_until(deadline) => {
                    log!("pod {id}: still running after the {grace:?} grace period; SIGKILL");
                    let _ = child.kill().await;
                    return;
                }
                Ok(()) = ready_rx.changed() => {
                    let ready = *ready_rx.borrow_and_update();
                    self.set_ready(pod, state, ready, &id).await;
                }
            }
        }
    }

    async fn cleanup(
        &self,
        pod: &Pod,
        node_index: usize,
        ip: Ipv4Addr,
        netns: &str,
        veth: &str,
        end: Stop,
    ) {
        self.ip.remove_pod(netns, veth).await;
        if ip != Ipv4Addr::UNSPECIFIED
            && let Ok(mut range) = self.range.lock()
        {
            range.release(node_index, ip);
        }
        if let Stop::Terminate(_) = end {
            self.finish(pod).await;
        }
    }
}

/// Waits until the pod is to stop; a dropped sender means the agent is gone.
async fn wait_stop(stop: &mut watch::Receiver<Stop>) -> Stop {
    loop {
        let now = *stop.borrow_and_update();
        if now != Stop::Run {
            return now;
        }
        if stop.changed().await.is_err() {
            return Stop::Kill;
        }
    }
}

/// A process's exit code, 128 + the signal when a signal ended it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Probes `ip` every period (after the initial delay) and publishes the
/// readiness the thresholds give, until aborted.
async fn probe_loop(ip: Ipv4Addr, probe: ReadinessProbe, ready: watch::Sender<bool>) {
    let mut counter = ProbeCounter::new(probe.success_threshold, probe.failure_threshold);
    // interval_at panics on a zero period; the API server defaults
    // periodSeconds to 10 and refuses 0, so this is only a guard.
    let period = probe.period.max(Duration::from_millis(100));
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + probe.initial_delay, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = counter.observe(http_probe(ip, &probe).await);
        ready.send_if_modified(|r| std::mem::replace(r, now) != now);
    }
}

/// One readiness probe: `GET path` on `ip:port`; 200–399 within the
/// timeout is a success, as for the kubelet.
async fn http_probe(ip: Ipv4Addr, probe: &ReadinessProbe) -> bool {
    let attempt = async {
        let mut conn = tokio::net::TcpStream::connect((ip, probe.port))
            .await
            .ok()?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {ip}:{}\r\nUser-Agent: kube-probe/1.34\r\nConnection: close\r\n\r\n",
            probe.path, probe.port
        );
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 64];
        let mut len = 0;
        while len < 12 {
            let n = conn.read(&mut head[len..]).await.ok()?;
            if n == 0 {
                break;
            }
            len += n;
        }
        let line = std::str::from_utf8(&head[..len]).ok()?;
        line.split_whitespace().nth(1)?.parse::<u16>().ok()
    };
    matches!(
        tokio::time::timeout(probe.timeout, attempt).await,
        Ok(Some(200..=399))
    )
}

/// `ip netns exec NETNS WEIR sim ARGS` with the env vars the agent
/// injects, then the pod's (which win over them). `ip netns exec` enters
/// the namespace and execs the command, so the child's pid is the sim's
/// own (signals reach it directly) and its environment, the agent's plus
/// those, is the sim's.
fn sim_command(
    weir_bin: &std::path::Path,
    netns: &str,
    injected: &[(&str, String)],
    plan: &ContainerPlan,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("ip");
    command
        .args(["netns", "exec", netns])
        .arg(weir_bin)
        .arg("sim")
        .args(&plan.sim_args)
        .envs(injected.iter().map(|(k, v)| (k, v)))
        .envs(plan.env.iter().map(|(k, v)| (k, v)));
    command
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_sim_runs_in_the_namespace_with_the_pods_env_over_the_agents() {
        let plan = ContainerPlan {
            name: "frontend".into(),
            image: "weir/sim:v2".into(),
            sim_args: vec!["--forward-env".into(), "DECODE_URL".into()],
            env: vec![
                ("DECODE_URL".into(), "http://chat-decode-canary:8000".into()),
                ("DYN_NAMESPACE".into(), "chat-rev2".into()),
                ("KUBECONFIG".into(), "/pod/own".into()),
            ],
            port: 8000,
            readiness: None,
            pre_stop: None,
            grace: Duration::from_secs(1),
        };
        let injected = [
            (KUBECONFIG, "/tmp/agent.kubeconfig".to_string()),
            (POD_NAMESPACE, "team-a".to_string()),
        ];
        let command = sim_command(
            std::path::Path::new("/bin/weir"),
            "wn1f-p0",
            &injected,
            &plan,
        );
        let command = command.as_std();
        assert_eq!(command.get_program(), "ip");
        assert_eq!(
            command.get_args().collect::<Vec<_>>(),
            [
                "netns",
                "exec",
                "wn1f-p0",
                "/bin/weir",
                "sim",
                "--forward-env",
                "DECODE_URL"
            ]
            .map(OsStr::new)
        );
        // get_envs lists each variable once, sorted, with its last value.
        assert_eq!(
            command.get_envs().collect::<Vec<_>>(),
            [
                (
                    OsStr::new("DECODE_URL"),
                    Some(OsStr::new("http://chat-decode-canary:8000"))
                ),
                (OsStr::new("DYN_NAMESPACE"), Some(OsStr::new("chat-rev2"))),
                (OsStr::new("KUBECONFIG"), Some(OsStr::new("/pod/own"))),
                (OsStr::new("POD_NAMESPACE"), Some(OsStr::new("team-a"))),
            ]
        );
    }
}
