//! Pods reach the API server the way a kubelet's pods reach the
//! `kubernetes` Service.
//!
//! The API server of the test control plane listens on the host's
//! 127.0.0.1, which a pod's network namespace cannot reach (see
//! [`crate::net`]: pods reach each other and the host's bridge address,
//! nothing else). So the agent runs a TCP relay on the bridge address
//! (never on 0.0.0.0: test traffic stays on this machine) that splices each
//! connection to the API server's host:port from the agent's own
//! kubeconfig, and writes a kubeconfig for the pods: the agent's current
//! context, with its cluster's `server` pointing at the relay and
//! `tls-server-name` set to the host the agent's kubeconfig names, so the
//! serving certificate (issued for 127.0.0.1, localhost and
//! kubernetes.default.svc) verifies end to end through the relay. Every
//! pod process gets `KUBECONFIG=<that file>` (a pod's own env var of that
//! name wins), as a kubelet injects `KUBERNETES_SERVICE_HOST`.
//!
//! Pure: [`api_server`] reads the relay's upstream from the agent's
//! kubeconfig and [`ApiServer::for_pods`] derives the pods' one. I/O: [`Relay`] accepts and splices until dropped.

use std::net::{Ipv4Addr, SocketAddr};

use kube::config::Kubeconfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The port the relay takes on the bridge address when it is free (the
/// `kubernetes` Service's); else the kernel picks one.
pub const PREFERRED_PORT: u16 = 443;

/// A kubeconfig the pods' one cannot be derived from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiServerError {
    /// No current context, or it names a context or cluster that is not
    /// there.
    #[error("the agent's kubeconfig has no usable current context: {0}")]
    Context(String),
    /// The cluster's server is not an http(s) URL with a host.
    #[error("the agent's kubeconfig server {0:?} is not an http(s) URL with a host")]
    Server(String),
}

/// The API server of the agent's kubeconfig, and what the pods' kubeconfig
/// is made from.
#[derive(Debug, Clone)]
pub struct ApiServer {
    /// The agent's current context, user and cluster, nothing else.
    current: Kubeconfig,
    /// `host:port`, as the agent reaches it.
    upstream: String,
    /// The host of the server URL, brackets off: the certificate's name.
    host: String,
    scheme: String,
    path: String,
}

/// The API server `agent`'s current context names.
///
/// # Errors
/// No current context (or a dangling one), or a server that is not an
/// http(s) URL with a host.
pub fn api_server(agent: &Kubeconfig) -> Result<ApiServer, ApiServerError> {
    let current = agent
        .current_context
        .as_deref()
        .ok_or_else(|| ApiServerError::Context("none set".into()))?;
    let context = agent
        .contexts
        .iter()
        .find(|c| c.name == current)
        .ok_or_else(|| ApiServerError::Context(format!("no context {current:?}")))?;
    let cluster_name = context
        .context
        .as_ref()
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let cluster = agent
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .cloned()
        .ok_or_else(|| ApiServerError::Context(format!("no cluster {cluster_name:?}")))?;
    let user = context.context.as_ref().and_then(|c| c.user.clone());
    let auth_infos = agent
        .auth_infos
        .iter()
        .filter(|a| Some(&a.name) == user.as_ref())
        .cloned()
        .collect();

    let server = cluster
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .unwrap_or_default();
    let bad = || ApiServerError::Server(server.clone());
    let url = url::Url::parse(&server).map_err(|_| bad())?;
    let (Some(host), Some(port), "https" | "http") =
        (url.host_str(), url.port_or_known_default(), url.scheme())
    else {
        return Err(bad());
    };
    Ok(ApiServer {
        current: Kubeconfig {
            clusters: vec![cluster],
            auth_infos,
            contexts: vec![context.clone()],
            current_context: Some(current.to_string()),
            ..Kubeconfig::default()
        },
        upstream: format!("{host}:{port}"),
        host: host.trim_matches(['[', ']']).to_string(),
        scheme: url.scheme().to_string(),
        path: url.path().trim_end_matches('/').to_string(),
    })
}

impl ApiServer {
    /// Where the relay connects: the server URL's `host:port`.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The pods' kubeconfig: the agent's current context, user and
    /// cluster, the cluster's server at `relay` (scheme and path kept) and
    /// its `tls-server-name` the host the agent's server URL names (unless
    /// one is set), the name the certificate was checked against.
    pub fn for_pods(&self, relay: SocketAddr) -> Kubeconfig {
        let mut out = self.current.clone();
        for cluster in &mut out.clusters {
            let fields = cluster.cluster.get_or_insert_with(Default::default);
            fields.server = Some(format!("{}://{relay}{}", self.scheme, self.path));
            if fields.tls_server_name.is_none() {
                fields.tls_server_name = Some(self.host.clone());
            }
        }
        out
    }
}

/// The TCP relay to the API server: accepts on the bridge address and
/// splices each connection to the upstream (TLS passes through untouched).
/// Dropping it stops the listener and every open connection.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Relay {
    /// Binds `ip`:[`PREFERRED_PORT`], else `ip`:0, and starts relaying to
    /// `upstream` (`host:port`, resolved for each connection).
    ///
    /// # Errors
    /// Neither port can be bound on `ip`.
    pub async fn start(ip: Ipv4Addr, upstream: String) -> std::io::Result<Relay> {
        let listener = match TcpListener::bind((ip, PREFERRED_PORT)).await {
            Ok(l) => l,
            Err(_) => TcpListener::bind((ip, 0)).await?,
        };
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Owned by the accept loop: aborting it drops the set, which
            // aborts every open connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((inbound, _)) => {
                            connections.spawn(splice(inbound, upstream.clone()));
                        }
                        Err(e) => eprintln!("weir-node-agent: API server relay: accepting: {e}"),
                    },
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        Ok(Relay { addr, task })
    }

    /// The address pods connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn splice(mut inbound: TcpStream, upstream: String) {
    match TcpStream::connect(&upstream).await {
        Ok(mut outbound) => {
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        }
        Err(e) => eprintln!("weir-node-agent: API server relay: connecting to {upstream}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn agent_kubeconfig(server: &str, tls_server_name: Option<&str>) -> Kubeconfig {
        let tls = tls_server_name.map_or(String::new(), |n| format!("\n    tls-server-name: {n}"));
        Kubeconfig::from_yaml(&format!(
            "
apiVersion: v1
kind: Config
clusters:
- name: other
  cluster:
    server: https://10.9.9.9:6443
- name: envtest
  cluster:
    server: {server}
    certificate-authority-data: Q0E={tls}
users:
- name: admin
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
- name: someone-else
  user:
    token: t
contexts:
- name: envtest
  context:
    cluster: envtest
    user: admin
current-context: envtest
"
        ))
        .expect("a kubeconfig")
    }

    fn relay() -> SocketAddr {
        SocketAddr::from(([10, 244, 0, 1], 443))
    }

    #[test]
    fn pods_get_the_current_context_pointed_at_the_relay() {
        let server =
            api_server(&agent_kubeconfig("https://127.0.0.1:38211", None)).expect("usable");
        assert_eq!(server.upstream(), "127.0.0.1:38211");
        let k = &server.for_pods(relay());
        assert_eq!(k.current_context.as_deref(), Some("envtest"));
        assert_eq!(k.contexts.len(), 1);
        assert_eq!(
            k.auth_infos.iter().map(|a| &a.name).collect::<Vec<_>>(),
            ["admin"]
        );
        let [cluster] = k.clusters.as_slice() else {
            panic!("one cluster: {:?}", k.clusters);
        };
        let fields = cluster.cluster.as_ref().expect("cluster fields");
        assert_eq!(fields.server.as_deref(), Some("https://10.244.0.1:443"));
        assert_eq!(fields.tls_server_name.as_deref(), Some("127.0.0.1"));
        assert_eq!(fields.certificate_authority_data.as_deref(), Some("Q0E="));
        // Written and read back as kube reads a file (JSON is YAML).
        let text = serde_json::to_string(k).expect("serializes");
        let back = Kubeconfig::from_yaml(&text).expect("reads back");
        let user = back.auth_infos[0].auth_info.as_ref().expect("user");
        assert!(user.client_key_data.is_some(), "the key survives: {text}");
    }

    #[test]
    fn names_and_default_ports_and_a_given_tls_server_name_are_kept() {
        for (server, tls, upstream, name) in [
            (
                "https://localhost:6443/",
                None,
                "localhost:6443",
                "localhost",
            ),
            (
                "https://api.example",
                None,
                "api.example:443",
                "api.example",
            ),
            ("https://[::1]:6443", None, "[::1]:6443", "::1"),
            (
                "https://127.0.0.1:6443",
                Some("kubernetes.default.svc"),
                "127.0.0.1:6443",
                "kubernetes.default.svc",
            ),
        ] {
            let api = api_server(&agent_kubeconfig(server, tls)).expect("usable");
            assert_eq!(api.upstream(), upstream, "{server}");
            let fields = api.for_pods(relay()).clusters[0]
                .cluster
                .clone()
                .expect("fields");
            assert_eq!(fields.tls_server_name.as_deref(), Some(name), "{server}");
            assert_eq!(
                fields.server.as_deref(),
                Some("https://10.244.0.1:443"),
                "{server}"
            );
        }
    }

    #[test]
    fn unusable_kubeconfigs_say_why() {
        let mut none = agent_kubeconfig("https://127.0.0.1:1", None);
        none.current_context = None;
        assert!(matches!(api_server(&none), Err(ApiServerError::Context(_))));
        let mut dangling = agent_kubeconfig("https://127.0.0.1:1", None);
        dangling.current_context = Some("gone".into());
        assert!(matches!(
            api_server(&dangling),
            Err(ApiServerError::Context(_))
        ));
        for server in ["127.0.0.1:6443", "unix:///run/k8s.sock", ""] {
            assert!(
                matches!(
                    api_server(&agent_kubeconfig(server, None)),
                    Err(ApiServerError::Server(_))
                ),
                "{server:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_relay_splices_both_ways_and_stops_when_dropped() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = upstream.local_addr().expect("addr").to_string();
        let echo = tokio::spawn(async move {
            let (mut conn, _) = upstream.accept().await.expect("accept");
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).await.expect("read");
            conn.write_all(&buf).await.expect("write");
        });
        let relay = Relay::start(Ipv4Addr::LOCALHOST, target)
            .await
            .expect("relay");
        assert_eq!(relay.addr().ip(), Ipv4Addr::LOCALHOST);
        let mut conn = TcpStream::connect(relay.addr()).await.expect("connect");
        conn.write_all(b"hello").await.expect("write");
        let mut back = [0u8; 5];
        conn.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"hello");
        echo.await.expect("echo");

        let addr = relay.addr();
        drop(relay);
        // Aborting the task drops the listener; wait until the port refuses.
        weir_test_kit::poll::until(
            "the relay's port to close",
            std::time::Duration::from_secs(5),
            || async {
                match TcpStream::connect(addr).await {
                    Err(_) => Ok(()),
                    Ok(_) => Err("still accepting"),
                }
            },
        )
        .await;
    }
}
