//! weir-envtest: a real kube-apiserver for tests, no mock.
//!
//! [`server`] starts one API server (etcd + kube-apiserver, built from their
//! Go modules by `tests/envtest/build`) per test binary, on first use, by
//! running `tests/envtest/up`. [`TestEnv::new`] gives each test an admin
//! [`Client`] and a fresh namespace of its own, deleted when the `TestEnv` is
//! dropped.
//!
//! Stopping the server: the Rust test harness has no hook that runs when the
//! test binary exits, and statics are never dropped. So the binary's pid is
//! handed to `up` as `WEIR_ENVTEST_WATCH_PID`, and `up` leaves a watchdog
//! that runs `tests/envtest/down` within half a second of that pid being
//! gone, whether the tests passed, panicked or were killed.
//!
//! `WEIR_ENVTEST_KUBECONFIG=<path>` reuses a running server instead (e.g.
//! one from `eval "$(tests/envtest/up)"`); it is then neither started nor
//! stopped here.
//!
//! [`control_plane`] starts a second server per test binary with
//! kube-controller-manager and kube-scheduler beside it (`up
//! --control-plane`), and [`TestEnv::on_cluster`] a namespace there with
//! pods that run: the node agent of `tests/nodeagent` ([`cluster`]).
//! What follows is about [`server`], for tests that need no pods.
//!
//! The server has no kubelet and no controller-manager: pods never run,
//! Deployment status is whatever a test writes, and a deleted namespace
//! stays `Terminating` (nothing empties it). Each test gets a new one, so
//! that does not matter.
//!
//! Nor is there an EndpointSlice controller: tests that need a Service's
//! pods write its slices with [`endpoint_slice`], pointing at simulators on
//! [`host_ip`] (the API server refuses loopback endpoint addresses).
//!
//! Outage tests stop and start kube-apiserver with [`stop_apiserver`] and
//! [`start_apiserver`]. Every test's Canary starts from [`canary`], a
//! builder chain. The helpers that need no API server (bounded polls, the
//! Python `openai` client) are in `weir-test-kit` (`tests/kit`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config};
use weir_crds::names;

pub mod cluster;
mod fixtures;

pub use fixtures::{CanaryBuilder, SIM_PORT, canary, sim_container, target};

/// What went wrong while starting or reaching the test API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `tests/envtest/up` could not be run or failed.
    #[error("tests/envtest/up failed: {0}")]
    Up(String),
    /// The kubeconfig could not be read.
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// A request to the API server failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// The committed CRD YAML could not be read or parsed.
    #[error("crds/yaml/canary.yaml: {0}")]
    CrdYaml(String),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The chart's RBAC could not be rendered or applied.
    #[error("the chart's RBAC: {0}")]
    Chart(String),
    /// A binary of this workspace (the node agent, `weir`) is missing or
    /// would not start.
    #[error("{0}")]
    Binary(String),
    /// The host has no address other than loopback.
    #[error(
        "no non-loopback IPv4 address on this host ({0}); EndpointSlices cannot point at 127.0.0.0/8"
    )]
    NoHostIp(String),
}

/// The repository root (this crate lives in `tests/envtest/rust`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

/// A running test API server.
#[derive(Debug)]
pub struct Server {
    kubeconfig: PathBuf,
    bin_dir: PathBuf,
    /// `up`'s state directory (None for a reused server).
    state: Option<PathBuf>,
}

/// The test binary's API server, started on first call (which blocks, for
/// about 4 s; the first ever build of the binaries takes several minutes and
/// prints its progress). Panics with `up`'s error when it cannot start: no
/// test can run without it.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    match SERVER.get_or_init(|| Server::start(Mode::ApiServer).map_err(|e| e.to_string())) {
        Ok(server) => server,
        Err(e) => panic!("no test API server: {e}"),
    }
}

/// A second API server of the test binary, with the control plane on
/// (`tests/envtest/up --control-plane`: kube-controller-manager and
/// kube-scheduler beside it), started on first call. [`server`] is not
/// affected: its tests write Deployment status and EndpointSlices by hand,
/// which real controllers would overwrite. Nothing runs pods until a test
/// starts a node agent (`tests/nodeagent`) against [`Server::kubeconfig`].
/// Never a reused server (`WEIR_ENVTEST_KUBECONFIG`), which may have no
/// control plane. Panics with `up`'s error when it cannot start.
pub fn control_plane() -> &'static Server {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    match SERVER.get_or_init(|| Server::start(Mode::ControlPlane).map_err(|e| e.to_string())) {
        Ok(server) => server,
        Err(e) => panic!("no test control plane: {e}"),
    }
}

/// What `up` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// etcd and kube-apiserver (or a reused server).
    ApiServer,
    /// Those, kube-controller-manager and kube-scheduler.
    ControlPlane,
}

impl Server {
    fn start(mode: Mode) -> Result<Server, Error> {
        let envtest = repo_root().join("tests/envtest");
        // kubectl and helm: `build` only prints the cached directory once built.
        let bin_dir = PathBuf::from(run_script(Command::new(envtest.join("build")))?.trim());
        if let Some(kubeconfig) =
            std::env::var_os("WEIR_ENVTEST_KUBECONFIG").filter(|_| mode == Mode::ApiServer)
        {
            return Ok(Server {
                kubeconfig: kubeconfig.into(),
                bin_dir,
                state: std::env::var_os("WEIR_ENVTEST_DIR").map(PathBuf::from),
            });
        }
        let mut up = Command::new(envtest.join("up"));
        up.env("WEIR_ENVTEST_WATCH_PID", std::process::id().to_string());
        if mode == Mode::ControlPlane {
            up.arg("--control-plane");
        }
        let exports = run_script(up)?;
        let kubeconfig = exports
            .lines()
            .find_map(|l| l.strip_prefix("export KUBECONFIG="))
            .ok_or_else(|| Error::Up(format!("no KUBECONFIG in its output: {exports:?}")))?;
        let state = exports
            .lines()
            .find_map(|l| l.strip_prefix("export WEIR_ENVTEST_DIR="))
            .map(PathBuf::from);
        Ok(Server {
            // `up` quotes with printf %q; its temp paths need no quoting.
            kubeconfig: PathBuf::from(kubeconfig),
            bin_dir,
            state,
        })
    }

    /// Stops kube-apiserver (etcd keeps running, with everything in it),
    /// for tests of an API-server outage. Every test of the binary loses
    /// the server until [`Server::start_apiserver`]: keep such tests in a
    /// test binary of their own.
    pub fn stop_apiserver(&self) -> Result<(), Error> {
        self.apiserver("stop")
    }

    /// Starts kube-apiserver again on the same port and etcd; returns once
    /// it is ready.
    pub fn start_apiserver(&self) -> Result<(), Error> {
        self.apiserver("start")
    }

    fn apiserver(&self, what: &str) -> Result<(), Error> {
        let state = self.state.as_ref().ok_or_else(|| {
            Error::Up("this server was not started by tests/envtest/up (no state directory)".into())
        })?;
        let mut cmd = Command::new(repo_root().join("tests/envtest/apiserver"));
        cmd.arg(what).arg(state);
        run_script(cmd).map(|_| ())
    }

    /// The admin kubeconfig (client certificate in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A command for one of the built tools (`kubectl`, `helm`), with
    /// `KUBECONFIG` pointing at this server.
    pub fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(tool));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Runs a built tool with `args` and `stdin` written to it (`kubectl
    /// apply -f -`); returns its output, whatever its exit status.
    ///
    /// # Panics
    /// When the tool cannot be started or read.
    pub fn run_with_stdin(&self, tool: &str, args: &[&str], stdin: &str) -> std::process::Output {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = self
            .command(tool)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {tool}: {e}"));
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(stdin.as_bytes())
            .unwrap_or_else(|e| panic!("write to {tool}: {e}"));
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait for {tool}: {e}"))
    }

    /// An admin client (system:masters).
    pub async fn client(&self) -> Result<Client, Error> {
        Ok(client(self.config().await?)?)
    }

    /// A client that acts as ServiceAccount `namespace/name`, with the
    /// groups the API server gives a ServiceAccount token (impersonation:
    /// every request is authorized as that account, with its RBAC alone).
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Client, Error> {
        Ok(as_service_account(self.config().await?, namespace, name)?)
    }

    /// Installs the chart's ServiceAccounts, Roles and RoleBindings in
    /// `namespace` at namespace scope, serving that namespace (the least
    /// privilege the chart grants; rendered by `helm template` from
    /// `charts/weir`, applied with kubectl), and returns a client for each
    /// account. Nothing else of the chart is created: its Deployments would
    /// be scheduled onto the node agent, which runs only `weir sim`.
    pub async fn chart_accounts(&self, namespace: &str) -> Result<ChartAccounts, Error> {
        let chart = repo_root().join("charts/weir");
        let scope = format!("rbac.watchNamespace={namespace}");
        let out = self
            .command("helm")
            .args(["template", "weir"])
            .arg(&chart)
            .args(["--namespace", namespace, "--set", "rbac.scope=namespace"])
            .args(["--set", &scope])
            .args(["--show-only", "templates/serviceaccounts.yaml"])
            .args(["--show-only", "templates/controller-rbac.yaml"])
            .args(["--show-only", "templates/proxy-rbac.yaml"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Chart(format!("running helm: {e}")))?;
        if !out.status.success() {
            return Err(Error::Chart(format!(
                "helm template: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
        let applied = self.run_with_stdin("kubectl", &["apply", "-f", "-"], &yaml);
        if !applied.status.success() {
            return Err(Error::Chart(format!(
                "kubectl apply: {}",
                String::from_utf8_lossy(&applied.stderr)
            )));
        }
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml)
            .map_err(|e| Error::Chart(format!("helm's output is not YAML: {e}")))?;
        let account = |component: &str| {
            docs.iter()
                .find(|d| {
                    d["kind"] == "ServiceAccount"
                        && d["metadata"]["labels"]["app.kubernetes.io/component"] == component
                })
                .and_then(|d| d["metadata"]["name"].as_str())
                .map(str::to_owned)
                .ok_or_else(|| Error::Chart(format!("no ServiceAccount for the {component}")))
        };
        let config = self.config().await?;
        Ok(ChartAccounts {
            controller: as_service_account(config.clone(), namespace, &account("controller")?)?,
            proxy: as_service_account(config, namespace, &account("proxy")?)?,
        })
    }

    /// The admin client configuration.
    pub async fn config(&self) -> Result<Config, Error> {
        let kubeconfig =
            Kubeconfig::read_from(&self.kubeconfig).map_err(|source| Error::Kubeconfig {
                path: self.kubeconfig.clone(),
                source,
            })?;
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|source| Error::Kubeconfig {
                path: self.kubeconfig.clone(),
                source,
            })
    }
}

/// Stops the test binary's kube-apiserver ([`Server::stop_apiserver`]),
/// off the async runtime (the call blocks until the server is down);
/// panics when it cannot. Every test of the binary loses the server until
/// [`start_apiserver`]: keep outage tests in a test binary of their own.
pub async fn stop_apiserver() {
    apiserver_blocking("stopping", server(), Server::stop_apiserver).await;
}

/// Starts the test binary's kube-apiserver again
/// ([`Server::start_apiserver`]) and returns once it is ready; panics
/// when it cannot.
pub async fn start_apiserver() {
    apiserver_blocking("starting", server(), Server::start_apiserver).await;
}

async fn apiserver_blocking(
    what: &'static str,
    server: &'static Server,
    call: fn(&Server) -> Result<(), Error>,
) {
    tokio::task::spawn_blocking(move || call(server))
        .await
        .unwrap_or_else(|e| panic!("{what} kube-apiserver: {e}"))
        .unwrap_or_else(|e| panic!("{what} kube-apiserver: {e}"));
}

/// Runs an envtest script; its stderr (progress) goes straight to ours.
fn run_script(mut cmd: Command) -> Result<String, Error> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::Up(format!("running {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Up(format!("{cmd:?} exited with {}", out.status)));
    }
    String::from_utf8(out.stdout).map_err(|e| Error::Up(format!("output of {cmd:?}: {e}")))
}

/// Clients for the chart's two ServiceAccounts ([`Server::chart_accounts`]).
pub struct ChartAccounts {
    /// As the controller's account.
    pub controller: Client,
    /// As the proxies' account.
    pub proxy: Client,
}

impl std::fmt::Debug for ChartAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartAccounts").finish_non_exhaustive()
    }
}

/// `config` (an admin's) acting as `user` in `groups`: the admin asks the
/// API server to authorize each request as that user.
fn impersonating(mut config: Config, user: &str, groups: &[&str]) -> Result<Client, kube::Error> {
    config.auth_info.impersonate = Some(user.to_owned());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    client(config)
}

/// `config` acting as ServiceAccount `namespace/name`, with the groups the
/// API server gives a ServiceAccount token.
fn as_service_account(config: Config, namespace: &str, name: &str) -> Result<Client, kube::Error> {
    let ns_group = format!("system:serviceaccounts:{namespace}");
    impersonating(
        config,
        &format!("system:serviceaccount:{namespace}:{name}"),
        &["system:serviceaccounts", &ns_group, "system:authenticated"],
    )
}

/// One test's view of the server: an admin client and a namespace nobody
/// else uses. Dropping it deletes the namespace.
pub struct TestEnv {
    /// Admin client (system:masters).
    pub client: Client,
    /// The test's own namespace.
    pub namespace: String,
    config: Config,
    /// On the control plane with pods running ([`TestEnv::on_cluster`]).
    on_cluster: bool,
}

/// A client for `config`. The workspace builds rustls with two crypto
/// providers (aws-lc-rs for kube and reqwest, ring for pingora's TLS), and
/// then rustls picks neither by itself: the kube client needs a process
/// default, installed here as the `weir` binary installs it.
fn client(config: Config) -> Result<Client, kube::Error> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Client::try_from(config)
}

impl TestEnv {
    /// Starts the server if needed and creates a namespace named after
    /// `test` (lowercased, cut to fit) plus a per-binary counter.
    pub async fn new(test: &str) -> TestEnv {
        Self::try_new(test)
            .await
            .unwrap_or_else(|e| panic!("setting up test {test}: {e}"))
    }

    /// [`TestEnv::new`] on the [`control_plane`] with the binary's node
    /// agent running ([`cluster`]): Deployments roll out through real
    /// ReplicaSets to pods that run, with their own IPs, and Services get
    /// their EndpointSlices from the EndpointSlice controller. Installs the
    /// Canary CRD. Dropping it deletes the namespace, which the namespace
    /// controller then empties.
    pub async fn on_cluster(test: &str) -> TestEnv {
        async {
            let env = Self::try_on_control_plane(test).await?;
            cluster::shared(&env.client).await?;
            Ok::<_, Error>(env)
        }
        .await
        .unwrap_or_else(|e| panic!("setting up test {test} on the control plane: {e}"))
    }

    /// [`TestEnv::on_cluster`] without the binary's shared node agent: for
    /// a test that starts an agent with Nodes of its own shape
    /// ([`cluster::start_agent`]) and may stop it. Installs the Canary CRD.
    pub async fn on_control_plane(test: &str) -> TestEnv {
        Self::try_on_control_plane(test)
            .await
            .unwrap_or_else(|e| panic!("setting up test {test} on the control plane: {e}"))
    }

    async fn try_on_control_plane(test: &str) -> Result<TestEnv, Error> {
        let mut env = Self::try_new_on(control_plane(), test).await?;
        env.on_cluster = true;
        install_canary_crd(&env.client).await?;
        Ok(env)
    }

    async fn try_new(test: &str) -> Result<TestEnv, Error> {
        Self::try_new_on(server(), test).await
    }

    async fn try_new_on(server: &Server, test: &str) -> Result<TestEnv, Error> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let config = server.config().await?;
        let client = client(config.clone())?;
        let stem: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let namespaces = Api::<Namespace>::all(client.clone());
        // A reused server may still hold a namespace of an earlier run whose
        // pid was the same: on a clash, take the next number.
        let namespace = loop {
            let name = format!(
                "{}-{}-{}",
                stem.trim_matches('-'),
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            match namespaces.create(&PostParams::default(), &ns).await {
                Ok(_) => break name,
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        };
        Ok(TestEnv {
            client,
            namespace,
            config,
            on_cluster: false,
        })
    }

    /// The server this namespace is on.
    pub fn server(&self) -> &'static Server {
        if self.on_cluster {
            control_plane()
        } else {
            server()
        }
    }

    /// The admin kubeconfig of the server this namespace is on (for `weir`
    /// and kubectl run as processes).
    pub fn kubeconfig(&self) -> &'static Path {
        self.server().kubeconfig()
    }

    /// Stops the kube-apiserver this namespace is on, as [`stop_apiserver`]
    /// does (on the control plane, its controllers, scheduler and node
    /// agent lose it too, as in a real outage).
    pub async fn stop_apiserver(&self) {
        apiserver_blocking("stopping", self.server(), Server::stop_apiserver).await;
    }

    /// Starts it again, as [`start_apiserver`] does.
    pub async fn start_apiserver(&self) {
        apiserver_blocking("starting", self.server(), Server::start_apiserver).await;
    }

    /// A client that acts as `user` in `groups` (impersonation: the admin
    /// asks the API server to authorize each request as that user).
    pub fn impersonating(&self, user: &str, groups: &[&str]) -> Client {
        impersonating(self.config.clone(), user, groups)
            .unwrap_or_else(|e| panic!("impersonating {user}: {e}"))
    }

    /// A client that acts as ServiceAccount `name` of this test's namespace,
    /// with the groups the API server gives a ServiceAccount token.
    pub fn as_service_account(&self, name: &str) -> Client {
        as_service_account(self.config.clone(), &self.namespace, name)
            .unwrap_or_else(|e| panic!("as ServiceAccount {name}: {e}"))
    }
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // The test's runtime may be single-threaded and is blocked here, and
        // `self.client` needs it; a fresh client on a runtime of its own in
        // another thread deletes the namespace instead.
        let config = self.config.clone();
        let namespace = self.namespace.clone();
        let on_cluster = self.on_cluster;
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let client = client(config).map_err(|e| e.to_string())?;
                if on_cluster {
                    release_canaries(&client, &namespace).await;
                }
                Api::<Namespace>::all(client)
                    .delete(&namespace, &DeleteParams::default())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(e)) = deleted {
            eprintln!("weir-envtest: deleting namespace {}: {e}", self.namespace);
        }
    }
}

/// Removes the finalizer of every Canary in `namespace`: the test's
/// controller is gone with the test, and nothing else would remove it, so
/// the namespace controller could never finish emptying the namespace.
async fn release_canaries(client: &Client, namespace: &str) {
    let canaries = Api::<weir_crds::Canary>::namespaced(client.clone(), namespace);
    let Ok(list) = canaries.list(&kube::api::ListParams::default()).await else {
        return;
    };
    let none = serde_json::json!({"metadata": {"finalizers": null}});
    for c in list.items {
        let name = c.metadata.name.unwrap_or_default();
        let _ = canaries
            .patch(&name, &PatchParams::default(), &Patch::Merge(&none))
            .await;
    }
}

/// Installs `crds/yaml/canary.yaml` (server-side apply, so every test may
/// call it) and waits until the API server serves the type.
pub async fn install_canary_crd(client: &Client) -> Result<(), Error> {
    let path = repo_root().join("crds/yaml/canary.yaml");
    let yaml = std::fs::read_to_string(&path)
        .map_err(|e| Error::CrdYaml(format!("reading {}: {e}", path.display())))?;
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&yaml).map_err(|e| Error::CrdYaml(e.to_string()))?;
    let name = crd.metadata.name.clone().unwrap_or_default();
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply("weir-envtest").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(api, &name, conditions::is_crd_established()),
    )
    .await
    .map_err(|_| Error::Timeout(format!("CRD {name} not Established within 30 s")))?
    .map_err(|e| Error::Timeout(format!("waiting for CRD {name}: {e}")))?;
    Ok(())
}

/// The host's first non-loopback IPv4 address (`hostname -I`), for test
/// servers that EndpointSlices point at: the API server refuses endpoint
/// addresses in 127.0.0.0/8 ("may not be in the loopback range"), so
/// simulators bind this address instead.
pub fn host_ip() -> Result<Ipv4Addr, Error> {
    let out = Command::new("hostname")
        .arg("-I")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::NoHostIp(format!("running hostname -I: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .filter_map(|word| word.parse::<IpAddr>().ok())
        .find_map(|ip| match ip {
            IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() => Some(v4),
            _ => None,
        })
        .ok_or_else(|| Error::NoHostIp(format!("hostname -I said {:?}", text.trim())))
}

/// An EndpointSlice of Service `service` with one endpoint, `ip:port`,
/// ready or not: what the EndpointSlice controller writes for one pod of a
/// Service whose named target port (`http`) resolves to `port` on that pod.
/// One slice per endpoint lets pods on one IP (simulators on the host)
/// differ by port. Labelled like the slices of weir's Services (service
/// name, `managed-by: weir`); named `<service>-<port>`.
pub fn endpoint_slice(
    namespace: &str,
    service: &str,
    ip: IpAddr,
    port: u16,
    ready: bool,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{service}-{port}")),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (names::SERVICE_NAME_LABEL.to_string(), service.to_string()),
                (names::MANAGED_BY.to_string(), names::MANAGER.to_string()),
            ])),
            ..ObjectMeta::default()
        },
        address_type: if ip.is_ipv4() { "IPv4" } else { "IPv6" }.to_string(),
        endpoints: vec![Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some(names::SERVICE_PORT.to_string()),
            port: Some(i32::from(port)),
            protocol: Some("TCP".to_string()),
            ..EndpointPort::default()
        }]),
    }
}
