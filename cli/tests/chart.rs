//! The Helm chart (charts/weir) against a real API server, with the helm
//! and kubectl the harness builds: it lints, the server accepts what it
//! renders in every mode, `helm install` creates each object as configured
//! (pod templates that pass the `restricted` Pod Security Standard), bad
//! values are refused naming the value, and the `weir` binary, started with
//! exactly the installed Deployments' arguments and a token of the chart's
//! ServiceAccounts, rolls out a Canary.
//!
//! Tokens: the harness's API server signs ServiceAccount tokens
//! (`--service-account-signing-key-file` in tests/envtest/up), so the
//! processes get a real token from the TokenRequest API, not impersonation:
//! the API server authenticates them as the ServiceAccount and authorizes
//! every call with the chart's RBAC alone.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use weir_crds::{Canary, Phase, names};
use weir_envtest::{TestEnv, install_canary_crd, repo_root, server};

mod common;
mod stack;

use stack::{PATIENCE, image_of, target, wait_phase};
use weir_test_kit::poll::until;
use weir_test_kit::webhook::{self, Answer};

fn chart() -> PathBuf {
    repo_root().join("charts/weir")
}

/// Every optional part on: autoscaling, NetworkPolicies, the dashboard,
/// the alert rules, notifications (the chart's Secret with one webhook),
/// and `monitor` (serviceMonitor or podMonitor; the chart refuses both at
/// once).
fn every_part(monitor: &str) -> Vec<String> {
    [
        "proxy.autoscaling.enabled=true",
        "networkPolicy.enabled=true",
        "grafanaDashboard.enabled=true",
        "prometheusRule.enabled=true",
        "notifications.enabled=true",
        "notifications.webhooks[0].name=team",
        "notifications.webhooks[0].url=https://hooks.example.com/T/B/x",
        "notifications.webhooks[0].format=slack",
        &format!("metrics.{monitor}.enabled=true"),
        "proxy.tls.secretName=chat-tls",
        "proxy.upstreamCA.secretName=vllm-ca",
    ]
    .iter()
    .flat_map(|s| ["--set".to_string(), s.to_string()])
    .collect()
}

#[test]
fn tls_secrets_become_read_only_mounts_and_the_proxys_flags() {
    let proxy_of = |extra: &[String]| -> Deployment {
        objects(&template("weir", "llm", extra))
            .into_iter()
            .filter(|o| o["kind"] == "Deployment")
            .map(|o| serde_json::from_value::<Deployment>(o).expect("a Deployment"))
            .find(|d| args_of(d).first().is_some_and(|a| a == "proxy"))
            .expect("the proxy Deployment")
    };
    let plain = proxy_of(&[]);
    let args = args_of(&plain);
    for name in ["--tls-cert", "--tls-key", "--upstream-ca"] {
        assert_eq!(flag(&args, name), None, "{name} by default");
    }
    let secure = proxy_of(&every_part("serviceMonitor"));
    let args = args_of(&secure);
    assert_eq!(flag(&args, "--tls-cert"), Some("/etc/weir/tls/tls.crt"));
    assert_eq!(flag(&args, "--tls-key"), Some("/etc/weir/tls/tls.key"));
    assert_eq!(
        flag(&args, "--upstream-ca"),
        Some("/etc/weir/upstream-ca/ca.crt")
    );
    let pod = secure
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("a pod template");
    for (volume, secret, path) in [
        ("tls", "chat-tls", "/etc/weir/tls"),
        ("upstream-ca", "vllm-ca", "/etc/weir/upstream-ca"),
    ] {
        let source = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == volume)
            .and_then(|v| v.secret.as_ref())
            .unwrap_or_else(|| panic!("no Secret volume {volume}"));
        assert_eq!(source.secret_name.as_deref(), Some(secret));
        let mount = container(&secure)
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume)
            .unwrap_or_else(|| panic!("{volume} not mounted"));
        assert_eq!(
            (
                mount.mount_path.as_str(),
                mount.read_only,
                mount.sub_path.as_deref()
            ),
            (path, Some(true), None),
            "{volume}: a whole read-only directory, so renewals reach it"
        );
    }
}

/// `--set` arguments for namespace scope, serving `watched` only.
fn namespace_scope(watched: &str) -> Vec<String> {
    vec![
        "--set".into(),
        "rbac.scope=namespace".into(),
        "--set".into(),
        format!("rbac.watchNamespace={watched}"),
    ]
}

/// Runs the harness's helm against the API server.
fn helm<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    helm_on(server().kubeconfig(), args)
}

/// Runs the harness's helm against the API server of `kubeconfig`.
fn helm_on<S: AsRef<std::ffi::OsStr>>(kubeconfig: &Path, args: &[S]) -> Output {
    server()
        .command("helm")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run helm")
}

/// Runs helm and returns its stdout; panics with its stderr on failure.
fn helm_ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = helm(args);
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// `helm template RELEASE charts/weir -n NAMESPACE EXTRA...`: the YAML.
fn template(release: &str, namespace: &str, extra: &[String]) -> String {
    let mut args: Vec<String> = vec!["template".into(), release.into()];
    args.push(chart().display().to_string());
    args.extend(["--namespace".into(), namespace.into()]);
    args.extend(extra.iter().cloned());
    helm_ok(&args)
}

/// The objects of a rendering, one JSON value each.
fn objects(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("helm renders YAML");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// A release name of its own per test (ClusterRoles are named after it).
fn release_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "weir-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An installed release, uninstalled when dropped (its ClusterRoles outlive
/// the test's namespace otherwise).
struct Release {
    name: String,
    namespace: String,
    kubeconfig: &'static Path,
}

impl Release {
    /// Installs the chart into `env`'s namespace.
    fn install(env: &TestEnv, extra: &[String]) -> Release {
        let name = release_name();
        let mut args: Vec<String> = vec!["install".into(), name.clone()];
        args.push(chart().display().to_string());
        args.extend(["--namespace".into(), env.namespace.clone()]);
        args.extend(extra.iter().cloned());
        let out = helm_on(env.kubeconfig(), &args);
        assert!(
            out.status.success(),
            "helm {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr),
        );
        Release {
            name,
            namespace: env.namespace.clone(),
            kubeconfig: env.kubeconfig(),
        }
    }

    /// The chart's object name for a part: `<release>-controller`.
    fn object(&self, part: &str) -> String {
        format!("{}-{part}", self.name)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let out = helm_on(
            self.kubeconfig,
            &["uninstall", &self.name, "--namespace", &self.namespace],
        );
        if !out.status.success() {
            eprintln!(
                "helm uninstall {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Rendering

#[test]
fn the_charts_crd_is_the_committed_one() {
    let committed = repo_root().join("crds/yaml/canary.yaml");
    let in_chart = chart().join("crds/canary.yaml");
    let read = |p: &Path| {
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    };
    assert!(
        read(&committed) == read(&in_chart),
        "charts/weir/crds/canary.yaml differs from crds/yaml/canary.yaml; copy it:\n  \
         cp crds/yaml/canary.yaml charts/weir/crds/canary.yaml"
    );
}

#[tokio::test]
async fn helm_lint_passes_with_defaults_and_with_every_optional_part_on() {
    let chart = chart().display().to_string();
    let mut configurations = vec![
        ("defaults", vec![]),
        ("every part, ServiceMonitor", every_part("serviceMonitor")),
        ("every part, PodMonitor", every_part("podMonitor")),
    ];
    let mut namespaced = every_part("podMonitor");
    namespaced.extend(namespace_scope("llm"));
    namespaced.extend(["--set".into(), "rbac.dcgmExporters=true".into()]);
    configurations.push(("every part, namespace scope", namespaced));
    for (what, extra) in configurations {
        let mut args = vec!["lint".to_string(), "--strict".into(), chart.clone()];
        args.extend(extra);
        let out = helm_ok(&args);
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{what}: {out}"
        );
    }
}

#[tokio::test]
async fn bad_values_are_refused_naming_the_value_and_the_fix() {
    let chart = chart().display().to_string();
    // (values, what the error must say). values.schema.json: helm lint,
    // template and install refuse these.
    let schema: &[(&[&str], &[&str])] = &[
        (
            &["controller.replicas=-1"],
            &["/controller/replicas", "minimum"],
        ),
        (&["proxy.replicas=0"], &["/proxy/replicas", "minimum"]),
        (
            &["rbac.scope=everywhere"],
            &["/rbac/scope", "cluster", "namespace"],
        ),
        (&["controller.replica=2"], &["/controller", "replica"]),
        (&["proxy.adminPort=70000"], &["/proxy/adminPort", "maximum"]),
        (
            &["controller.leaderElection.leaseDuration=15 seconds"],
            &["/controller/leaderElection/leaseDuration"],
        ),
    ];
    // Values that contradict each other (templates/validate.yaml): helm
    // template and install refuse these; helm lint only reports a template's
    // `fail` as [INFO], by design, so it is not asked.
    let contradictions: &[(&[&str], &[&str])] = &[
        (
            &["controller.leaderElection.enabled=false"],
            &[
                "controller.leaderElection.enabled=false",
                "controller.replicas=1",
            ],
        ),
        (
            &[
                "metrics.serviceMonitor.enabled=true",
                "metrics.podMonitor.enabled=true",
            ],
            &[
                "metrics.serviceMonitor.enabled",
                "metrics.podMonitor.enabled",
                "enable one",
            ],
        ),
        (
            &["proxy.podDisruptionBudget.minAvailable=1"],
            &["proxy.podDisruptionBudget", "not both"],
        ),
        (
            &[
                "proxy.autoscaling.enabled=true",
                "proxy.autoscaling.minReplicas=5",
                "proxy.autoscaling.maxReplicas=3",
            ],
            &["proxy.autoscaling.minReplicas (5)", "maxReplicas (3)"],
        ),
        (
            &["rbac.watchNamespace=llm"],
            &["rbac.watchNamespace", "rbac.scope=namespace"],
        ),
    ];
    let cases = schema
        .iter()
        .map(|c| (c, &["template", "lint"][..]))
        .chain(contradictions.iter().map(|c| (c, &["template"][..])));
    for ((values, expected), commands) in cases {
        let sets: Vec<String> = values
            .iter()
            .flat_map(|v| ["--set".to_string(), v.to_string()])
            .collect();
        for command in commands {
            let mut args = vec![command.to_string(), chart.clone()];
            args.extend(sets.iter().cloned());
            let out = helm(&args);
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                !out.status.success(),
                "helm {command} accepted {values:?}:\n{said}"
            );
            for e in *expected {
                assert!(
                    said.contains(e),
                    "helm {command} with {values:?} does not say {e:?}:\n{said}"
                );
            }
        }
    }
}

/// Minimal stand-ins for the Prometheus operator's CRDs: they are not
/// available offline, and the dry run needs the kinds to exist. The schema
/// accepts anything, so this checks that the objects reach the server and
/// are well-formed Kubernetes objects, not the operator's field rules.
fn monitoring_crds() -> String {
    let crd = |kind: &str| {
        let singular = kind.to_lowercase();
        format!(
            "apiVersion: apiextensions.k8s.io/v1\n\
             kind: CustomResourceDefinition\n\
             metadata: {{name: {singular}s.monitoring.coreos.com}}\n\
             spec:\n  \
               group: monitoring.coreos.com\n  \
               names: {{kind: {kind}, plural: {singular}s, singular: {singular}, listKind: {kind}List}}\n  \
               scope: Namespaced\n  \
               versions:\n  \
               - name: v1\n    \
                 served: true\n    \
                 storage: true\n    \
                 schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n"
        )
    };
    ["ServiceMonitor", "PodMonitor", "PrometheusRule"]
        .map(crd)
        .join("---\n")
}

/// Runs kubectl with `stdin`; returns stdout, panics with stderr on failure.
fn kubectl(args: &[&str], stdin: &str) -> String {
    let out = server().run_with_stdin("kubectl", args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn install_monitoring_crds() {
    kubectl(
        &[
            "apply",
            "--server-side",
            "--field-manager=weir-chart-test",
            "-f",
            "-",
        ],
        &monitoring_crds(),
    );
    kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/podmonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ],
        "",
    );
}

/// How kubectl names an object in its output: `kind.group/name`.
fn kubectl_name(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind").to_lowercase();
    let name = object["metadata"]["name"].as_str().expect("name");
    match api_version.split_once('/') {
        Some((group, _)) => format!("{kind}.{group}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_accepts_what_the_chart_renders_in_every_mode() {
    let env = TestEnv::new("chart-dry-run").await;
    let watched = TestEnv::new("chart-dry-run-watched").await;
    install_canary_crd(&env.client).await.expect("the CRD");
    install_monitoring_crds();
    let ns = env.namespace.as_str();
    let mut namespaced = namespace_scope(&watched.namespace);
    namespaced.extend(every_part("podMonitor"));
    namespaced.extend(["--set".into(), "rbac.dcgmExporters=true".into()]);
    let configurations = [
        ("defaults", vec![]),
        ("every part, ServiceMonitor", every_part("serviceMonitor")),
        ("every part, PodMonitor, namespace scope", namespaced),
    ];
    for (what, extra) in configurations {
        let yaml = template("weir", ns, &extra);
        let rendered = objects(&yaml);
        // No -n: every namespaced object names its namespace (in namespace
        // scope they are in two), so `helm template | kubectl apply -f -`
        // puts each where it belongs.
        for object in &rendered {
            let kind = object["kind"].as_str().unwrap_or_default();
            assert!(
                kind.starts_with("Cluster") || object["metadata"]["namespace"].is_string(),
                "{what}: {} has no namespace",
                kubectl_name(object)
            );
        }
        let applied = kubectl(&["apply", "--dry-run=server", "-f", "-"], &yaml);
        for object in &rendered {
            let line = format!("{} created (server dry run)", kubectl_name(object));
            assert!(applied.contains(&line), "{what}: no {line:?} in\n{applied}");
        }
        assert_eq!(
            applied.matches("(server dry run)").count(),
            rendered.len(),
            "{what}: {applied}"
        );
    }
}

// ---------------------------------------------------------------------------
// helm install

/// The one container of a Deployment's pods.
fn container(d: &Deployment) -> &k8s_openapi::api::core::v1::Container {
    let spec = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let containers = &spec.expect("a pod template").containers;
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

/// What every workload of the chart must be: the chart's ServiceAccount,
/// non-root, no privilege, read-only root, the default seccomp profile,
/// requests, and probes on ports the container declares.
fn check_workload(d: &Deployment, account: &str) {
    let name = d.metadata.name.clone().unwrap_or_default();
    let pod = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("a pod template");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(account),
        "{name}: ServiceAccount"
    );
    let pod_sc = pod
        .security_context
        .as_ref()
        .expect("a pod security context");
    assert_eq!(pod_sc.run_as_non_root, Some(true), "{name}: runAsNonRoot");
    assert!(
        pod_sc.run_as_user.is_some_and(|u| u > 0),
        "{name}: runAsUser"
    );
    assert_eq!(
        pod_sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "{name}: seccomp"
    );
    let c = container(d);
    let sc = c
        .security_context
        .as_ref()
        .expect("a container security context");
    assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()]),
        "{name}: capabilities"
    );
    let requests = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("resource requests");
    assert!(
        requests.contains_key("cpu") && requests.contains_key("memory"),
        "{name}: {requests:?}"
    );
    let ports: Vec<&str> = c
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.as_deref())
        .collect();
    for (kind, probe, path) in [
        ("liveness", &c.liveness_probe, "/healthz"),
        ("readiness", &c.readiness_probe, "/readyz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{name}: no {kind} probe"));
        assert_eq!(get.path.as_deref(), Some(path), "{name}: {kind}");
        let port = match &get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.as_str(),
            other => panic!("{name}: {kind} probe on {other:?}, not a named port"),
        };
        assert!(
            ports.contains(&port),
            "{name}: {kind} port {port} not in {ports:?}"
        );
    }
}

/// The value of `--flag=value` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    args.iter().find_map(|a| a.strip_prefix(prefix.as_str()))
}

fn args_of(d: &Deployment) -> Vec<String> {
    container(d).args.clone().unwrap_or_default()
}

/// A Pod with the Deployment's template, created as a dry run: the
/// PodSecurity admission of the namespace judges it.
async fn pod_of(
    pods: &Api<Pod>,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    name: &str,
) -> Result<Pod, kube::Error> {
    let mut metadata = template.metadata.clone().unwrap_or_default();
    metadata.name = Some(name.to_string());
    let pod = Pod {
        metadata,
        spec: template.spec.clone(),
        ..Pod::default()
    };
    pods.create(
        &PostParams {
            dry_run: true,
            ..PostParams::default()
        },
        &pod,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_creates_every_object_with_its_account_security_context_and_probes() {
    let env = TestEnv::new("chart-install").await;
    install_monitoring_crds();
    let ns = env.namespace.clone();
    // The restricted Pod Security Standard, enforced on the namespace.
    Api::<Namespace>::all(env.client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}})),
        )
        .await
        .expect("label the namespace");
    let release = Release::install(&env, &every_part("serviceMonitor"));
    let client = env.client.clone();
    let controller_name = release.object("controller");
    let proxy_name = release.object("proxy");

    // The CRD (helm installs crds/ unless it is there already).
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get("canaries.weir.dev")
        .await
        .expect("the Canary CRD is installed");
    assert_eq!(crd.spec.group, "weir.dev");

    // ServiceAccounts, one per part.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    for account in [&controller_name, &proxy_name] {
        accounts.get(account).await.expect("a ServiceAccount");
    }

    // The Deployments.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let controller = deployments
        .get(&controller_name)
        .await
        .expect("the controller");
    let proxy = deployments.get(&proxy_name).await.expect("the proxies");
    check_workload(&controller, &controller_name);
    check_workload(&proxy, &proxy_name);
    assert_eq!(controller.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let controller_args = args_of(&controller);
    assert_eq!(
        controller_args.first().map(String::as_str),
        Some("controller")
    );
    assert_eq!(
        flag(&controller_args, "--lease-name"),
        Some(controller_name.as_str())
    );
    assert_eq!(
        flag(&controller_args, "--proxy-service"),
        Some(format!("{ns}/{}", release.object("proxy-admin")).as_str())
    );
    assert!(!controller_args.iter().any(|a| a == "--no-leader-election"));
    // With autoscaling, the HPA owns the proxies' replica count: the
    // release's manifest leaves it out (the API server defaults it to 1).
    let manifest = objects(&helm_ok(&[
        "get",
        "manifest",
        &release.name,
        "--namespace",
        &ns,
    ]));
    let proxy_manifest = manifest
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == proxy_name.as_str())
        .expect("the proxies' Deployment in the manifest");
    assert!(proxy_manifest["spec"].get("replicas").is_none());
    // The kubelet waits out the preStop sleep and the drain.
    let proxy_args = args_of(&proxy);
    let grace: u64 = flag(&proxy_args, "--grace-period")
        .and_then(|g| g.strip_suffix('s'))
        .and_then(|g| g.parse().ok())
        .expect("--grace-period=<N>s");
    let pod_spec = proxy
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod");
    let pre_stop = container(&proxy)
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|p| p.sleep.as_ref())
        .map_or(0, |s| s.seconds);
    let termination = pod_spec
        .termination_grace_period_seconds
        .expect("terminationGracePeriodSeconds");
    assert!(pre_stop > 0, "a preStop sleep while endpoints update");
    assert!(
        u64::try_from(termination).unwrap_or(0) > u64::try_from(pre_stop).unwrap_or(0) + grace,
        "terminationGracePeriodSeconds {termination} must exceed preStop {pre_stop} s + drain {grace} s"
    );

    // The pod templates pass the restricted Pod Security Standard; a pod
    // that allows privilege escalation does not (the check is on).
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for d in [&controller, &proxy] {
        let template = &d.spec.as_ref().expect("spec").template;
        pod_of(&pods, template, "pss-check")
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", d.metadata.name));
    }
    let mut lax = controller.spec.as_ref().expect("spec").template.clone();
    if let Some(spec) = lax.spec.as_mut() {
        for c in &mut spec.containers {
            if let Some(sc) = c.security_context.as_mut() {
                sc.allow_privilege_escalation = Some(true);
            }
        }
    }
    let refused = pod_of(&pods, &lax, "pss-check").await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("allowPrivilegeEscalation")),
        "{refused:?}"
    );

    // Services: the clients' (traffic only) and the headless admin one.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let port_names = |s: &Service| -> Vec<String> {
        s.spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| p.name)
            .collect()
    };
    let clients = services
        .get(&proxy_name)
        .await
        .expect("the proxies' Service");
    assert_eq!(port_names(&clients), ["http"]);
    let admin = services
        .get(&release.object("proxy-admin"))
        .await
        .expect("the admin Service");
    assert_eq!(port_names(&admin), ["admin"]);
    assert_eq!(
        admin.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None")
    );
    let metrics = services
        .get(&release.object("controller-metrics"))
        .await
        .expect("the controller's metrics Service");
    assert_eq!(port_names(&metrics), ["metrics"]);

    // Disruption budget and autoscaler.
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
        .get(&proxy_name)
        .await
        .expect("the PodDisruptionBudget");
    assert!(pdb.spec.and_then(|s| s.max_unavailable).is_some());
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns)
        .get(&proxy_name)
        .await
        .expect("the HPA");
    let hpa = hpa.spec.expect("spec");
    assert_eq!(hpa.scale_target_ref.name, proxy_name);
    assert!(hpa.min_replicas.unwrap_or(0) <= hpa.max_replicas);

    // RBAC: cluster scope by default.
    for name in [&controller_name, &proxy_name] {
        Api::<ClusterRole>::all(client.clone())
            .get(name)
            .await
            .expect("a ClusterRole");
    }
    Api::<Role>::namespaced(client.clone(), &ns)
        .get(&format!("{controller_name}-local"))
        .await
        .expect("the controller's Role for its Lease");

    // NetworkPolicies: the admin port admits the controller and monitoring.
    let policy = Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .get(&proxy_name)
        .await
        .expect("the proxies' NetworkPolicy");
    let rules = policy.spec.and_then(|s| s.ingress).expect("ingress rules");
    let admin_rule = rules
        .iter()
        .find(|r| {
            r.ports.iter().flatten().any(|p| {
                p.port
                    == Some(
                        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                            "admin".into(),
                        ),
                    )
            })
        })
        .expect("a rule for the admin port");
    assert_eq!(admin_rule.from.as_ref().map(Vec::len), Some(2));
    Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .get(&controller_name)
        .await
        .expect("the controller's NetworkPolicy");

    // The dashboard ConfigMap, labelled for Grafana's sidecar, with the
    // dashboard file as it is.
    let dashboard = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get(&format!("{}-dashboard", release.name))
        .await
        .expect("the dashboard ConfigMap");
    assert_eq!(
        dashboard
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("grafana_dashboard"))
            .map(String::as_str),
        Some("1")
    );
    let file = std::fs::read_to_string(chart().join("files/grafana-dashboard.json"))
        .expect("the dashboard file");
    let data = dashboard.data.expect("data");
    let stored = data.get("weir.json").expect("weir.json");
    let parsed: Value = serde_json::from_str(stored).expect("the dashboard is JSON");
    assert_eq!(
        parsed,
        serde_json::from_str::<Value>(&file).expect("the file is JSON")
    );

    // The Prometheus-operator objects.
    let dynamic = |kind: &str| {
        let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind);
        let resource = ApiResource::from_gvk(&gvk);
        Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &resource)
    };
    for (kind, name, port) in [
        ("ServiceMonitor", &controller_name, "metrics"),
        ("ServiceMonitor", &proxy_name, "admin"),
    ] {
        let monitor = dynamic(kind).get(name).await.expect("a ServiceMonitor");
        assert_eq!(monitor.data["spec"]["endpoints"][0]["port"], port, "{name}");
    }
    let rule = dynamic("PrometheusRule")
        .get(&release.name)
        .await
        .expect("the PrometheusRule");
    let file: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart().join("files/prometheus-rules.yaml"))
            .expect("the rules file"),
    )
    .expect("the rules file is YAML");
    assert_eq!(rule.data["spec"]["groups"], file["groups"]);
}

// ---------------------------------------------------------------------------
// The chart's processes

/// A kubeconfig that authenticates as ServiceAccount `account` of
/// `namespace` with a token from the TokenRequest API (one hour), written
/// to `dir` (owner-only).
async fn service_account_kubeconfig(
    env: &TestEnv,
    namespace: &str,
    account: &str,
    dir: &Path,
) -> PathBuf {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(env.client.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("a token for the ServiceAccount")
        .status
        .expect("the token")
        .token;
    let admin = Kubeconfig::read_from(env.kubeconfig()).expect("the admin kubeconfig");
    let cluster = admin.clusters[0].cluster.as_ref().expect("a cluster");
    let url = cluster.server.as_deref().expect("its URL");
    let ca = cluster
        .certificate_authority_data
        .as_deref()
        .expect("its CA");
    let text = format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: envtest\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\n\
         users:\n- name: {account}\n  user:\n    token: {token}\n\
         contexts:\n- name: sa\n  context: {{cluster: envtest, user: {account}, namespace: {namespace}}}\n\
         current-context: sa\n"
    );
    let path = dir.join(format!("{account}.kubeconfig"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .expect("create the kubeconfig");
    file.write_all(text.as_bytes())
        .expect("write the kubeconfig");
    path
}

/// The Deployment's container as a local `weir` process, as the kubelet
/// would start it: its command (`weir`, here the binary under test) and
/// args, with `overrides` replacing the values of `--flag=value` args that
/// name pod addresses (each must be in the chart's args), and its env with
/// the downward API's fields filled in.
fn as_process(d: &Deployment, pod_name: &str, overrides: &[(&str, String)]) -> Command {
    let c = container(d);
    assert_eq!(c.command.as_deref(), Some(&["weir".to_string()][..]));
    let mut args = c.args.clone().unwrap_or_default();
    for (name, value) in overrides {
        let prefix = format!("{name}=");
        let arg = args
            .iter_mut()
            .find(|a| a.starts_with(&prefix))
            .unwrap_or_else(|| panic!("the chart does not pass {name}: {:?}", c.args));
        *arg = format!("{prefix}{value}");
    }
    let mut cmd = common::command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    cmd.env_clear();
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for var in c.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), None) => v.clone(),
            (None, Some(from)) => {
                let field = from.field_ref.as_ref().expect("a fieldRef");
                match field.field_path.as_str() {
                    "metadata.name" => pod_name.to_string(),
                    "metadata.namespace" => d.metadata.namespace.clone().expect("namespace"),
                    other => panic!("the test cannot fill in {other} for {}", var.name),
                }
            }
            other => panic!("env {}: {other:?}", var.name),
        };
        cmd.env(&var.name, value);
    }
    cmd
}

/// GETs `http://addr{path}` until it answers `code`.
async fn answers(addr: &str, path: &str, code: u16) {
    let url = format!("http://{addr}{path}");
    until(&format!("{url} answers {code}"), PATIENCE, || async {
        let r = reqwest::get(&url).await.ok()?;
        (r.status().as_u16() == code).then_some(())
    })
    .await;
}

/// The probe paths of the Deployment's container, readiness first.
fn probe_paths(d: &Deployment) -> [String; 2] {
    let c = container(d);
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|g| g.path.clone())
            .expect("an HTTP probe")
    };
    [path(&c.readiness_probe), path(&c.liveness_probe)]
}

/// Installs the chart into one namespace serving Canaries of another
/// (namespace scope: the least privilege there is), starts a proxy and the
/// controller exactly as the installed Deployments say (each with a token
/// of its own ServiceAccount, nothing else), and rolls a Canary out from v1
/// to v2: adoption, the stable copy, the Services, the proxy's route, a
/// promotion with its ControllerRevisions, Events, and the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_controller_and_proxy_with_its_accounts_and_args_roll_out_a_canary() {
    let system = TestEnv::on_cluster("chart-system").await;
    let apps = TestEnv::on_cluster("chart-apps").await;
    let (sys, app) = (system.namespace.clone(), apps.namespace.clone());
    // Notifications on, with one webhook (a local receiver) in the chart's
    // Secret: the controller reads it with its own token.
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a receiver port");
    let hook_addr = hook_listener.local_addr().expect("its address");
    let hooks = webhook::serve(hook_listener, Answer::Ok);
    let mut values = namespace_scope(&app);
    for v in [
        "notifications.enabled=true".to_string(),
        "notifications.webhooks[0].name=deploys".into(),
        format!("notifications.webhooks[0].url=http://{hook_addr}/weir"),
        "notifications.webhooks[0].allCanaries=true".into(),
        "notifications.webhooks[0].headers.X-Token=s3cret".into(),
        // Stand-in: the node agent runs only `weir sim`, so the chart's
        // own pods are left unscheduled (no Node has this label) and the
        // test starts weir exactly as their pod specs say, below.
        "controller.nodeSelector.weir-test=parked".into(),
        "proxy.nodeSelector.weir-test=parked".into(),
    ] {
        values.extend(["--set".to_string(), v]);
    }
    let release = Release::install(&system, &values);
    let admin = system.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &sys);
    let controller = deployments
        .get(&release.object("controller"))
        .await
        .expect("the controller Deployment");
    let proxy = deployments
        .get(&release.object("proxy"))
        .await
        .expect("the proxy Deployment");
    let account = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.service_account_name.clone())
            .expect("a ServiceAccount")
    };
    let dir = std::env::temp_dir().join(format!("weir-chart-{}", release.name));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let controller_kubeconfig =
        service_account_kubeconfig(&system, &sys, &account(&controller), &dir).await;
    let proxy_kubeconfig = service_account_kubeconfig(&system, &sys, &account(&proxy), &dir).await;

    // The user's side, in the served namespace: the target on v1, ready,
    // and the Canary.
    let targets: Api<Deployment> = Api::namespaced(admin.clone(), &app);
    stack::create_target(&targets, &target("sim:v1", 2)).await;
    Api::<Canary>::namespaced(admin.clone(), &app)
        .create(
            &PostParams::default(),
            &stack::canary_spec(json!({"canary": {"steps": [
                {"setWeight": 50}, {"pause": {"duration": "1s"}}
            ]}})),
        )
        .await
        .expect("the Canary");

    // The proxy, on the host's address (the controller polls it there).
    let host = weir_envtest::host_ip().expect("the host's address");
    let mut cmd = as_process(
        &proxy,
        "weir-proxy-test-0",
        &[
            ("--listen", "127.0.0.1:0".into()),
            ("--admin", format!("{host}:0")),
        ],
    );
    cmd.env("KUBECONFIG", &proxy_kubeconfig);
    let proxy_proc = common::spawn_command("weir proxy (chart)", cmd);
    let proxy_admin: std::net::SocketAddr = proxy_proc
        .stderr
        .wait_for(common::STARTUP, |t| {
            common::between(t, "; admin on ", " (").map(String::from)
        })
        .unwrap_or_else(|| panic!("the proxy did not start:\n{}", proxy_proc.stderr.text()))
        .parse()
        .expect("the admin address");
    let [ready, live] = probe_paths(&proxy);
    answers(&proxy_admin.to_string(), &ready, 200).await;
    answers(&proxy_admin.to_string(), &live, 200).await;
    // Stand-in: the slice the EndpointSlice controller would write for
    // the proxy pod this process stands for.
    weir_envtest::cluster::proxy_admin_endpoints(
        &admin,
        &sys,
        &release.object("proxy-admin"),
        &[proxy_admin],
    )
    .await
    .expect("the admin Service's EndpointSlice");

    // The controller.
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("its address").to_string()
    };
    let identity = "weir-controller-test-0";
    let mut cmd = as_process(
        &controller,
        identity,
        &[("--metrics-addr", metrics_addr.clone())],
    );
    cmd.env("KUBECONFIG", &controller_kubeconfig);
    let controller_proc = common::spawn_command("weir controller (chart)", cmd);
    let lease_name = release.object("controller");
    controller_proc
        .stderr
        .wait_for(common::STARTUP, |t| {
            t.contains(&format!("campaigning for Lease {sys}/{lease_name}"))
                .then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "the controller did not campaign for Lease {sys}/{lease_name}:\n{}",
                controller_proc.stderr.text()
            )
        });
    let [ready, live] = probe_paths(&controller);
    answers(&metrics_addr, &ready, 200).await;
    answers(&metrics_addr, &live, 200).await;

    // Adoption: the stable copy ready, every proxy on the table, the
    // target scaled to zero.
    until("adoption", PATIENCE, || async {
        let c = stack::canary(&admin, &app, "chat").await;
        let s = c.status?;
        let t = targets.get("chat-frontend").await.ok()?;
        (s.phase == Phase::Idle && t.spec?.replicas == Some(0)).then_some(())
    })
    .await;
    let services: Api<Service> = Api::namespaced(admin.clone(), &app);
    for name in ["chat-stable", "chat-canary"] {
        services.get(name).await.expect("a cohort Service");
    }
    let stable = targets
        .get("chat-frontend-stable")
        .await
        .expect("the stable copy");
    assert_eq!(image_of(&stable).as_deref(), Some("sim:v1"));
    // The proxy process follows the Canary through its own watch, which
    // may lag the read above.
    let route = names::route(&app, "chat");
    until(&format!("the proxy to serve {route}"), PATIENCE, || async {
        let routes: Value = reqwest::get(format!("http://{proxy_admin}/v1/routes"))
            .await
            .expect("GET /v1/routes")
            .json()
            .await
            .expect("JSON");
        if routes["table"]["routes"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["name"] == route.as_str()))
        {
            Ok(())
        } else {
            Err(routes)
        }
    })
    .await;

    // A new version: weight, pause, promotion.
    targets
        .patch(
            "chat-frontend",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "vllm", "image": "sim:v2"}
            ]}}}})),
        )
        .await
        .expect("the new template");
    wait_phase(&admin, &app, "chat", Phase::Succeeded).await;
    let stable = targets
        .get("chat-frontend-stable")
        .await
        .expect("the stable copy");
    assert_eq!(image_of(&stable).as_deref(), Some("sim:v2"));
    let revisions = until("two ControllerRevisions", PATIENCE, || async {
        let l = Api::<ControllerRevision>::namespaced(admin.clone(), &app)
            .list(&ListParams::default())
            .await
            .ok()?;
        (l.items.len() == 2).then_some(l.items.len())
    })
    .await;
    assert_eq!(revisions, 2);
    let reasons: Vec<String> = stack::event_recorded(&admin, &app, "chat", "Promoted")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(reasons.iter().any(|r| r == "Promoted"), "{reasons:?}");

    // The run's notifications reached the webhook of the chart's Secret,
    // with its header; neither its URL nor the header's value is logged.
    let got = until("the promoted notification", PATIENCE, || async {
        let got = hooks.all();
        let events: Vec<String> = got
            .iter()
            .map(|r| r.header("x-weir-event").to_string())
            .collect();
        if events.iter().any(|e| e == "promoted") {
            Ok(got)
        } else {
            Err(events)
        }
    })
    .await;
    let events: Vec<&str> = got.iter().map(|r| r.header("x-weir-event")).collect();
    assert_eq!(events[0], "started", "{events:?}");
    assert!(events.contains(&"stepReached"), "{events:?}");
    assert!(got.iter().all(|r| r.header("x-token") == "s3cret"));
    let logs = controller_proc.stderr.text();
    assert!(
        !logs.contains(&hook_addr.to_string()) && !logs.contains("s3cret"),
        "the controller logged a webhook secret:\n{logs}"
    );

    // Leadership on the chart's Lease, in the release's namespace.
    let lease = Api::<Lease>::namespaced(admin.clone(), &sys)
        .get(&lease_name)
        .await
        .expect("the Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(identity)
    );
    // Nothing was refused along the way.
    for (what, text) in [
        ("controller", controller_proc.stderr.text()),
        ("proxy", proxy_proc.stderr.text()),
    ] {
        assert!(
            !text.contains("is forbidden"),
            "the {what} was refused something:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
