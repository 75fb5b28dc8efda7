//! The commands that act on Canaries in a cluster: `get`, `status`,
//! `promote`, `abort`, `retry`, `pause`, `resume`, `undo` and `history`.
//!
//! They speak to the controller the way DESIGN.md fixes it: through the
//! Canary's annotations (promote, abort, retry), its spec (`paused`) and the
//! target Deployment (undo), never by editing status behind the
//! controller's back. Each module keeps its logic in pure functions of the
//! objects it read (tested here without a cluster) and its I/O thin.
//!
//! This module holds what they share: finding the cluster like kubectl
//! (`--context`, `KUBECONFIG`, `~/.kube/config`, in-cluster), the namespace
//! default, errors a person can act on (no config, Canary or CRD missing,
//! forbidden), and small text helpers (tables, ages).

use std::fmt;

use anyhow::{Context as _, Result, anyhow};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use weir_controller::engine::{Rollout, SpecError};
use weir_crds::Canary;

pub mod commands;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod get;
pub mod status;
pub mod undo;

/// Where a command looks: kubectl's `-n` and `--context`.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Namespace of the Canary (default: the kubeconfig context's, else
    /// `default`).
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long, value_name = "CONTEXT")]
    pub context: Option<String>,
}

/// A connected client and the namespace the command acts in.
#[derive(Clone)]
pub struct Cluster {
    /// The API client.
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
    /// The API server's URL, for messages.
    server: String,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// How the binary was invoked: `kubectl weir` through kubectl's plugin
/// mechanism (`kubectl-weir` on PATH), else `weir`. Hints in messages use
/// it so that the command they suggest is one the user can type.
pub fn program() -> &'static str {
    static NAME: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    NAME.get_or_init(|| program_of(std::env::args_os().next().as_deref()))
}

/// `kubectl weir` when `argv0`'s file name is `kubectl-weir`, else `weir`.
pub fn program_of(argv0: Option<&std::ffi::OsStr>) -> &'static str {
    let file = argv0
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .and_then(|f| f.to_str());
    match file {
        Some(f) if f.strip_suffix(".exe").unwrap_or(f) == "kubectl-weir" => "kubectl weir",
        _ => "weir",
    }
}

/// Runs a cluster command's future on a runtime of its own: these commands
/// are a few API calls (or one watch), a thread is plenty.
pub fn block_on<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(work)
}

/// Finds the cluster like kubectl does: `--context` in the kubeconfig
/// (`KUBECONFIG`, else `~/.kube/config`), else its current context, else
/// the in-cluster ServiceAccount.
///
/// # Errors
/// No usable configuration, with where weir looked.
pub async fn connect(target: &Target) -> Result<Cluster> {
    Cluster::new(config(target).await?, target)
}

/// The client configuration [`connect`] uses, for a command that adjusts
/// it (timeouts) before connecting with [`Cluster::new`].
///
/// # Errors
/// See [`connect`].
pub async fn config(target: &Target) -> Result<Config> {
    match &target.context {
        Some(context) => {
            let options = KubeConfigOptions {
                context: Some(context.clone()),
                ..KubeConfigOptions::default()
            };
            // Read first, so that a missing file and a missing context get
            // different messages.
            let kubeconfig = Kubeconfig::read().map_err(|e| {
                anyhow!("no cluster config: cannot read the kubeconfig for --context {context}: {e}")
            })?;
            if !kubeconfig.contexts.iter().any(|c| &c.name == context) {
                let known: Vec<&str> = kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect();
                return Err(anyhow!(
                    "no context {context} in the kubeconfig; its contexts are: {}",
                    if known.is_empty() { "(none)".to_string() } else { known.join(", ") }
                ));
            }
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| anyhow!("cannot use kubeconfig context {context}: {e}"))
        }
        None => Config::infer().await.map_err(|e| {
            anyhow!(
                "no cluster config: {e}. {} finds the cluster like kubectl: set KUBECONFIG or write \
                 ~/.kube/config (pass --context to pick one), or run it in a pod",
                program()
            )
        }),
    }
}

/// One API call, for error messages: `get canaries.weir.dev chat`.
#[derive(Debug, Clone, Copy)]
pub struct ApiCall<'a> {
    /// The API verb (`get`, `list`, `patch`, `watch`).
    pub verb: &'a str,
    /// The resource with its group (`canaries.weir.dev`, `deployments.apps`).
    pub resource: &'a str,
    /// The object's name, when there is one.
    pub name: Option<&'a str>,
    /// The namespace (None: all namespaces).
    pub namespace: Option<&'a str>,
}

/// The resource name of the Canary in requests and messages.
pub const CANARIES: &str = "canaries.weir.dev";

impl Cluster {
    /// A client for `config`, in `target`'s namespace (else the
    /// configuration's).
    ///
    /// # Errors
    /// The client cannot be built (e.g. an unreadable certificate).
    pub fn new(config: Config, target: &Target) -> Result<Cluster> {
        let namespace = target
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).context("cannot build the Kubernetes client")?;
        Ok(Cluster {
            client,
            namespace,
            server,
        })
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A call in this cluster's namespace.
    pub fn call<'a>(
        &'a self,
        verb: &'a str,
        resource: &'a str,
        name: Option<&'a str>,
    ) -> ApiCall<'a> {
        ApiCall {
            verb,
            resource,
            name,
            namespace: Some(&self.namespace),
        }
    }

    /// The Canaries of the namespace.
    pub fn canaries(&self) -> Api<Canary> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Reads Canary `name`.
    ///
    /// # Errors
    /// A message naming what is missing: the Canary (with how to list
    /// them), the CRD (with how to install it), or the permission.
    pub async fn canary(&self, name: &str) -> Result<Canary> {
        match self.canaries().get(name).await {
            Ok(c) => Ok(c),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                self.require_crd().await?;
                Err(anyhow!(
                    "no Canary {name} in namespace {}; `{} get -A` lists them",
                    self.namespace,
                    program()
                ))
            }
            Err(e) => Err(self.explain(e, self.call("get", CANARIES, Some(name)))),
        }
    }

    /// Succeeds when the API server serves the Canary type.
    ///
    /// # Errors
    /// The CRD is not installed (with the command that installs it), or
    /// discovery failed.
    pub async fn require_crd(&self) -> Result<()> {
        let group_version = format!("{}/{}", weir_crds::GROUP, weir_crds::VERSION);
        let served = match self.client.list_api_group_resources(&group_version).await {
            Ok(list) => list.resources.iter().any(|r| r.name == "canaries"),
            Err(kube::Error::Api(s)) if s.code == 404 => false,
            Err(e) => {
                return Err(self.explain(
                    e,
                    ApiCall {
                        verb: "get",
                        resource: "API discovery",
                        name: Some(&group_version),
                        namespace: None,
                    },
                ));
            }
        };
        if served { Ok(()) } else { Err(crd_missing()) }
    }

    /// Reads Deployment `name`, None when it does not exist.
    ///
    /// # Errors
    /// Any other failure, explained.
    pub async fn deployment(&self, name: &str) -> Result<Option<Deployment>> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        api.get_opt(name)
            .await
            .map_err(|e| self.explain(e, self.call("get", "deployments.apps", Some(name))))
    }

    /// Turns a failed call into a message a person can act on.
    pub fn explain(&self, err: kube::Error, call: ApiCall<'_>) -> anyhow::Error {
        explain(err, call, &self.server)
    }
}

/// The message for a cluster without the Canary CRD.
pub fn crd_missing() -> anyhow::Error {
    anyhow!(
        "the Canary CRD is not installed: {} crds | kubectl apply -f -",
        program()
    )
}

/// See [`Cluster::explain`]; `server` is the API server's URL.
pub fn explain(err: kube::Error, call: ApiCall<'_>, server: &str) -> anyhow::Error {
    let ApiCall {
        verb,
        resource,
        name,
        namespace,
    } = call;
    let object = match name {
        Some(n) => format!("{resource} {n}"),
        None => resource.to_string(),
    };
    let place = match namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "in all namespaces".to_string(),
    };
    match err {
        kube::Error::Api(s) if s.code == 403 => anyhow!(
            "forbidden: you may not {verb} {resource} {place} ({}); ask for a Role that allows \
             \"{verb}\" on {resource}",
            s.message
        ),
        kube::Error::Api(s) if s.code == 401 => anyhow!(
            "unauthorized: the API server at {server} did not accept the kubeconfig's credentials \
             ({}); log in again or pick another --context",
            s.message
        ),
        kube::Error::Api(s) => anyhow!(
            "cannot {verb} {object} {place}: {} ({})",
            s.message,
            s.reason
        ),
        e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => anyhow::Error::new(e)
            .context(format!(
                "cannot reach the API server at {server} to {verb} {object}"
            )),
        e => anyhow::Error::new(e).context(format!("cannot {verb} {object} {place}")),
    }
}

/// The Canary's spec as the engine reads it: the one place the CLI turns a
/// spec into steps.
///
/// # Errors
/// The spec cannot run as written (the controller reports the same).
pub fn rollout_of(canary: &Canary) -> Result<Rollout, SpecError> {
    let name = canary.metadata.name.as_deref().unwrap_or_default();
    Rollout::new(name, &canary.spec)
}

/// How long ago `then` was, kubectl-style: `45s`, `12m`, `3h`, `5d`.
pub fn age(then: Timestamp, now: Timestamp) -> String {
    let secs = now.as_second().saturating_sub(then.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A percentage without trailing zeros: `20%`, `12.5%`.
pub fn percent(value: f64) -> String {
    format!("{value}%")
}

/// Rows as left-aligned columns separated by three spaces (the first row
/// is the header). Widths count characters, so `▶` and `−` line up.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_plugin_name_selects_kubectl_weir() {
        assert_eq!(
            program_of(Some(OsStr::new("/usr/local/bin/kubectl-weir"))),
            "kubectl weir"
        );
        assert_eq!(program_of(Some(OsStr::new("kubectl-weir"))), "kubectl weir");
        assert_eq!(program_of(Some(OsStr::new("/usr/bin/weir"))), "weir");
        assert_eq!(program_of(Some(OsStr::new("kubectl-weirdo"))), "weir");
        assert_eq!(program_of(None), "weir");
    }

    #[test]
    fn ages_read_like_kubectls() {
        let t = Timestamp::from_second(1_700_000_000).expect("valid");
        let later = |s: i64| Timestamp::from_second(1_700_000_000 + s).expect("valid");
        assert_eq!(age(t, later(5)), "5s");
        assert_eq!(age(t, later(119)), "119s");
        assert_eq!(age(t, later(600)), "10m");
        assert_eq!(age(t, later(3 * 3600)), "3h");
        assert_eq!(age(t, later(3 * 86_400)), "3d");
        assert_eq!(
            age(later(10), t),
            "0s",
            "clock skew never shows a negative age"
        );
    }

    #[test]
    fn tables_align_on_characters() {
        let rows = vec![
            vec!["NAME".to_string(), "WEIGHT".to_string(), "AGE".to_string()],
            vec!["▶ chat".to_string(), "20%".to_string(), "5m".to_string()],
        ];
        assert_eq!(
            table(&rows),
            "NAME     WEIGHT   AGE\n▶ chat   20%      5m\n"
        );
        assert_eq!(percent(12.5), "12.5%");
        assert_eq!(percent(20.0), "20%");
    }
}
