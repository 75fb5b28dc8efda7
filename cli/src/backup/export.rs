//! `weir export [-n NS | -A] [-o FILE] [--include-secrets]`: reads each
//! Canary and what its run depends on, strips what the server manages
//! and writes one bundle (see [`super`]).
//!
//! Least privilege: without `--include-secrets` the export never reads a
//! Secret (the templates name them; the names are enough).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, ResourceExt as _};
use serde_json::Value;
use weir_crds::{Cohort, names};

use super::bundle::{Bundle, Reference, Secrets};
use super::refs::{self, RefKind};
use super::strip::strip;
use super::{Key, Kind};
use crate::cluster::{self, ApiCall, Cluster, Target, block_on};
use crate::exit::Code;
use crate::run::Output;

/// Arguments of `weir export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub target: Target,
    /// Export the Canaries of every namespace.
    #[arg(long = "all-namespaces", short = 'A', conflicts_with = "namespace")]
    pub all: bool,
    /// Write the bundle to FILE (default: standard output).
    #[arg(short = 'o', long = "output-file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Put Secrets in the bundle in full (default: their names only; a
    /// restore then checks that they exist).
    #[arg(long)]
    pub include_secrets: bool,
    /// `text`: progress and a summary for people (on stderr when the
    /// bundle goes to stdout); `json`: one JSON object per line on stdout
    /// (needs -o FILE).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Runs `weir export`.
///
/// # Errors
/// No cluster, no permission, or the file cannot be written.
pub fn run(args: &ExportArgs) -> Result<Code> {
    if let Some(file) = &args.file
        && matches!(file.to_str(), Some("json" | "text" | "yaml"))
    {
        bail!(
            "-o names the bundle file, not a format: `-o {}` would write a file called {0}; \
             give a path such as -o bundle.yaml (--output json prints JSON progress)",
            file.display()
        );
    }
    if args.output == Output::Json && args.file.is_none() {
        bail!(
            "--output json prints progress on stdout: give the bundle a file with -o bundle.yaml"
        );
    }
    block_on(export(args))
}

/// What one Canary contributed.
#[derive(Debug, Default)]
struct Found {
    objects: Vec<Value>,
    references: Vec<Reference>,
    warnings: Vec<String>,
}

async fn export(args: &ExportArgs) -> Result<Code> {
    let cluster = cluster::connect(&args.target).await?;
    let namespace = (!args.all).then(|| cluster.namespace.clone());
    let canaries = list(&cluster, Kind::Canary, namespace.as_deref(), None).await?;
    let secrets = if args.include_secrets {
        Secrets::Included
    } else {
        Secrets::Names
    };
    let mut objects: BTreeMap<Key, Value> = BTreeMap::new();
    let mut references = Vec::new();
    let mut hpas: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let total = canaries.len();
    for (i, canary) in canaries.into_iter().enumerate() {
        let Some(key) = Key::of(&canary) else {
            continue;
        };
        let ns = key.namespace.clone();
        if !hpas.contains_key(&ns) {
            let list = list(&cluster, Kind::HorizontalPodAutoscaler, Some(&ns), None).await?;
            hpas.insert(ns.clone(), list);
        }
        let found = collect(
            &cluster,
            canary,
            secrets,
            hpas.get(&ns).map(Vec::as_slice).unwrap_or_default(),
        )
        .await?;
        for w in &found.warnings {
            eprintln!("warning: {w}");
        }
        // A ConfigMap both templates use is found twice.
        let n = found
            .objects
            .iter()
            .filter_map(Key::of)
            .collect::<BTreeSet<_>>()
            .len();
        for o in found.objects {
            if let Some(k) = Key::of(&o) {
                objects.insert(k, o);
            }
        }
        references.extend(found.references);
        match args.output {
            Output::Text => eprintln!("[{}/{total}] {}/{}: {n} objects", i + 1, ns, key.name),
            Output::Json => println!(
                "{}",
                serde_json::json!({"event": "canary", "namespace": ns, "name": key.name,
                                   "index": i + 1, "of": total, "objects": n})
            ),
        }
    }
    let exported_at = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .ok()
        .map(|t| t.to_string());
    let bundle = Bundle::new(
        objects.into_values().collect(),
        references,
        secrets,
        exported_at,
    );
    let text = bundle.to_yaml()?;
    match &args.file {
        Some(path) => write_file(path, &text, secrets == Secrets::Included)?,
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .context("cannot write the bundle to stdout")?,
    }
    let where_to = args
        .file
        .as_ref()
        .map_or_else(|| "stdout".to_string(), |p| p.display().to_string());
    let summary = format!(
        "exported {total} Canaries: {} objects, {} referenced by name only, to {where_to} ({})",
        bundle.objects.len(),
        bundle.references.len(),
        bundle.checksum()
    );
    match (args.output, &args.file) {
        (Output::Json, _) => println!(
            "{}",
            serde_json::json!({"event": "done", "file": where_to, "canaries": total,
                               "objects": bundle.objects.len(), "references": bundle.references.len(),
                               "namespaces": bundle.namespaces(), "checksum": bundle.checksum()})
        ),
        (Output::Text, Some(_)) => println!("{summary}"),
        (Output::Text, None) => eprintln!("{summary}"),
    }
    if secrets == Secrets::Included {
        eprintln!(
            "warning: the bundle holds Secrets (base64, not encrypted): keep it where you keep Secrets"
        );
    }
    Ok(Code::Success)
}

/// Writes the bundle next to `path` and renames it there, so a failed
/// export never leaves half a bundle; owner-only when it holds Secrets.
fn write_file(path: &Path, text: &str, private: bool) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}

/// The dynamic API of `kind` in `namespace` (None: all namespaces).
fn api(cluster: &Cluster, kind: Kind, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = kind.api_resource();
    match namespace {
        Some(ns) => Api::namespaced_with(cluster.client.clone(), ns, &ar),
        None => Api::all_with(cluster.client.clone(), &ar),
    }
}

/// `object` as the bundle stores it: typed, stripped.
fn stored(kind: Kind, object: DynamicObject) -> Result<Value> {
    let mut value = serde_json::to_value(object).context("cannot encode an object as JSON")?;
    if let Some(o) = value.as_object_mut() {
        o.insert("apiVersion".into(), Value::String(kind.api_version()));
        o.insert("kind".into(), Value::String(kind.as_str().into()));
    }
    strip(kind, &mut value);
    Ok(value)
}

/// Every `kind` in `namespace` (matching `labels`), stored form, sorted by
/// namespace and name.
async fn list(
    cluster: &Cluster,
    kind: Kind,
    namespace: Option<&str>,
    labels: Option<&str>,
) -> Result<Vec<Value>> {
    let params = labels.map_or_else(ListParams::default, |l| ListParams::default().labels(l));
    let items = match api(cluster, kind, namespace).list(&params).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(s)) if s.code == 404 && kind == Kind::Canary => {
            cluster.require_crd().await?;
            Vec::new()
        }
        Err(e) => {
            return Err(cluster.explain(
                e,
                ApiCall {
                    verb: "list",
                    resource: kind.resource(),
                    name: None,
                    namespace,
                },
            ));
        }
    };
    let mut out: Vec<Value> = items
        .into_iter()
        .map(|o| stored(kind, o))
        .collect::<Result<_>>()?;
    out.sort_by_key(|o| Key::of(o).map(|k| (k.namespace, k.name)));
    Ok(out)
}

/// One object, stored form; None when it does not exist.
async fn get(cluster: &Cluster, kind: Kind, namespace: &str, name: &str) -> Result<Option<Value>> {
    match api(cluster, kind, Some(namespace)).get_opt(name).await {
        Ok(Some(o)) => Ok(Some(stored(kind, o)?)),
        Ok(None) => Ok(None),
        Err(e) => Err(cluster.explain(
            e,
            ApiCall {
                verb: "get",
                resource: kind.resource(),
                name: Some(name),
                namespace: Some(namespace),
            },
        )),
    }
}

/// What Canary `canary` depends on: see the module docs of [`super`].
async fn collect(
    cluster: &Cluster,
    canary: Value,
    secrets: Secrets,
    hpas: &[Value],
) -> Result<Found> {
    let mut found = Found::default();
    let Some(key) = Key::of(&canary) else {
        return Ok(found);
    };
    let (ns, name) = (key.namespace.as_str(), key.name.as_str());
    let target = canary
        .pointer("/spec/targetRef/name")
        .and_then(Value::as_str)
        .map(String::from);
    found.objects.push(canary);

    let mut deployments = Vec::new();
    if let Some(target) = &target {
        for d in [target.clone(), names::stable_deployment(target)] {
            match get(cluster, Kind::Deployment, ns, &d).await? {
                Some(o) => deployments.push(o),
                None if d == *target => found.warnings.push(format!(
                    "Canary {ns}/{name}: its target Deployment {d} does not exist; exported without it"
                )),
                None => {}
            }
        }
    }
    let services = [
        names::service(name, Cohort::Stable),
        names::service(name, Cohort::Canary),
        names::preview_service(name),
    ];
    for s in services {
        if let Some(o) = get(cluster, Kind::Service, ns, &s).await? {
            found.objects.push(o);
        }
    }
    let selector = format!("{}={name}", names::CANARY_LABEL);
    for r in list(cluster, Kind::ControllerRevision, Some(ns), Some(&selector)).await? {
        if super::plan::canary_owner(&r) == Some(name) {
            found.objects.push(r);
        }
    }
    let deployment_names: BTreeSet<String> = deployments
        .iter()
        .filter_map(|d| d.pointer("/metadata/name")?.as_str().map(String::from))
        .collect();
    for h in hpas {
        let scaled = h.pointer("/spec/scaleTargetRef");
        let kind = scaled.and_then(|s| s.get("kind")).and_then(Value::as_str);
        let target = scaled.and_then(|s| s.get("name")).and_then(Value::as_str);
        if kind == Some("Deployment") && target.is_some_and(|t| deployment_names.contains(t)) {
            found.objects.push(h.clone());
        }
    }
    for d in &deployments {
        template_needs(cluster, ns, d, secrets, &mut found).await?;
    }
    found.objects.extend(deployments);
    Ok(found)
}

/// The ConfigMaps (in full), Secrets (in full or by name) and other
/// objects (by name) Deployment `d`'s pod template uses.
async fn template_needs(
    cluster: &Cluster,
    ns: &str,
    d: &Value,
    secrets: Secrets,
    found: &mut Found,
) -> Result<()> {
    let deployment: Deployment =
        serde_json::from_value(d.clone()).context("cannot read a Deployment's pod template")?;
    let user = format!("Deployment/{}", deployment.name_any());
    let Some(spec) = deployment.spec else {
        return Ok(());
    };
    for used in refs::used_by(&spec.template) {
        let held = match used.kind {
            // Published into every namespace by Kubernetes itself.
            RefKind::ConfigMap if used.name == "kube-root-ca.crt" => None,
            RefKind::ConfigMap => Some(Kind::ConfigMap),
            RefKind::Secret if secrets == Secrets::Included => Some(Kind::Secret),
            _ => None,
        };
        let Some(kind) = held else {
            found.references.push(Reference {
                kind: used.kind,
                namespace: ns.to_string(),
                name: used.name,
                optional: used.optional,
                used_by: vec![user.clone()],
            });
            continue;
        };
        match get(cluster, kind, ns, &used.name).await? {
            Some(o) => found.objects.push(o),
            None if used.optional => {}
            None => found.warnings.push(format!(
                "{user} in {ns} uses {kind} {} which does not exist; its pods cannot start \
                 until it does, and the bundle does not hold it",
                used.name
            )),
        }
    }
    Ok(())
}
