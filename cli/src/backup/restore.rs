//! `weir restore -f FILE [--dry-run] [-n NS]`: puts a bundle back with
//! server-side apply, in the order and under the field managers
//! [`super::plan`] decides.
//!
//! Each object is first compared with what is live: a dry-run apply
//! (`dryRun=All`) says what the write would leave, and an object it would
//! not change is not written at all. So restoring the same bundle twice
//! writes nothing the second time, and `--dry-run` stops after this step
//! with the list of what would be created and changed.
//!
//! A Canary is created (or changed) with the annotation
//! `weir.dev/restoring`, which holds a running controller off it until
//! its status and the objects it owns are back; the annotation goes last.
//! Without it a controller would see a Canary without status, adopt the
//! target's template as stable and start over.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Secret, ServiceAccount,
};
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use serde_json::Value;
use weir_crds::annotations::RESTORING;
use weir_proxy::config::file::read_bounded_text;

use super::bundle::{Bundle, Reference};
use super::plan::{self, CONTROLLER, RESTORE};
use super::refs::RefKind;
use super::{Key, Kind};
use crate::cluster::{self, ApiCall, Cluster, Target, block_on, program};
use crate::exit::Code;
use crate::run::Output;

/// Arguments of `weir restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The bundle `weir export` wrote.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Apply nothing: say what would be created and changed (every write
    /// is checked by the API server with dryRun=All).
    #[arg(long)]
    pub dry_run: bool,
    /// Take fields another field manager set since the export (default:
    /// such a conflict stops the restore and names the fields).
    #[arg(long)]
    pub force: bool,
    /// `text`: one line per object and a summary; `json`: one JSON object
    /// per line.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// `-n NS` restores a one-namespace bundle into NS instead of the
    /// namespace it was exported from.
    #[command(flatten)]
    pub target: Target,
}

/// What a restore does (or would do) to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Create,
    Update,
    Unchanged,
}

impl Change {
    fn word(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (Change::Create, false) => "created",
            (Change::Update, false) => "changed",
            (Change::Create, true) => "would create",
            (Change::Update, true) => "would change",
            (Change::Unchanged, _) => "unchanged",
        }
    }
}

/// Largest bundle read: the API server keeps an object under 1.5 MiB and
/// a bundle holds the Canaries of a namespace or cluster with what they
/// name; past this the path is the wrong file (or `/dev/zero`), refused
/// before it fills memory.
const MAX_BUNDLE_BYTES: u64 = 256 << 20;

/// Runs `weir restore`.
///
/// # Errors
/// A bad bundle (naming the line and field), missing objects it names, a
/// refused write (naming the object), no cluster.
pub fn run(args: &RestoreArgs) -> Result<Code> {
    let text = read_bounded_text(&args.file, MAX_BUNDLE_BYTES, "any bundle")
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let bundle = Bundle::parse(&text).with_context(|| args.file.display().to_string())?;
    let into = args.target.namespace.clone();
    if let Some(ns) = &into {
        let from = bundle.namespaces();
        if from.len() > 1 {
            bail!(
                "-n {ns}: the bundle holds objects of {} namespaces ({}); -n can only move a \
                 one-namespace bundle. Restore without -n, or export one namespace at a time",
                from.len(),
                from.join(", ")
            );
        }
    }
    block_on(restore(args, bundle, into))
}

/// The restore's running state.
struct Restore<'a> {
    cluster: Cluster,
    args: &'a RestoreArgs,
    /// Uids of the bundle's objects as they exist (or will, in a dry run).
    uids: HashMap<Key, String>,
    counts: [usize; 3],
}

async fn restore(args: &RestoreArgs, bundle: Bundle, into: Option<String>) -> Result<Code> {
    let cluster = cluster::connect(&args.target).await?;
    let mut r = Restore {
        cluster,
        args,
        uids: HashMap::new(),
        counts: [0; 3],
    };
    let objects: Vec<Value> = bundle
        .objects
        .iter()
        .map(|o| {
            into.as_deref()
                .map_or_else(|| o.clone(), |ns| plan::retarget(o, ns))
        })
        .collect();
    if objects
        .iter()
        .any(|o| Key::of(o).is_some_and(|k| k.kind == Kind::Canary))
    {
        r.cluster.require_crd().await?;
    }
    let missing = r.missing(&bundle.references, into.as_deref()).await?;
    if !missing.is_empty() && !args.dry_run {
        bail!("{}", missing_message(&missing));
    }
    let mut namespaces: Vec<String> = objects
        .iter()
        .filter_map(Key::of)
        .map(|k| k.namespace)
        .collect();
    namespaces.sort();
    namespaces.dedup();
    for ns in &namespaces {
        r.namespace(ns).await?;
    }
    let mut guarded = Vec::new();
    for i in plan::restore_order(&objects) {
        let (object, dropped) = plan::prepare(&objects[i], &r.uids_with_placeholders(&objects));
        let Some(key) = Key::of(&object) else {
            continue;
        };
        for owner in dropped {
            eprintln!("warning: {key}: owner reference to {owner} dropped (not in the bundle)");
        }
        if let Some(canary) = r.object(&key, object).await? {
            guarded.push(canary);
        }
    }
    if !args.dry_run {
        for key in guarded {
            r.unguard(&key).await?;
        }
    }
    let [created, changed, unchanged] = r.counts;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"summary": {"created": created, "changed": changed, "unchanged": unchanged,
                               "missing": missing.iter().map(|m| format!("{} {}/{}", m.kind, m.namespace, m.name)).collect::<Vec<_>>(),
                               "dryRun": args.dry_run, "checksum": bundle.checksum()}})
        ),
        Output::Text if args.dry_run => println!(
            "dry run: would create {created}, change {changed}, leave {unchanged} unchanged; nothing was written"
        ),
        Output::Text => println!(
            "restored {}: {created} created, {changed} changed, {unchanged} unchanged",
            args.file.display()
        ),
    }
    if !missing.is_empty() {
        bail!("{}", missing_message(&missing));
    }
    Ok(Code::Success)
}

fn missing_message(missing: &[Reference]) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|m| {
            format!(
                "{} {}/{} (used by {})",
                m.kind,
                m.namespace,
                m.name,
                m.used_by.join(", ")
            )
        })
        .collect();
    let secrets = missing.iter().any(|m| m.kind == RefKind::Secret);
    format!(
        "the bundle names objects it does not hold and that do not exist: {}. Create them first{}, \
         then restore again",
        list.join("; "),
        if secrets {
            " (Secrets from where you keep them, or export with --include-secrets)"
        } else {
            ""
        }
    )
}

impl Restore<'_> {
    fn call<'a>(&self, verb: &'a str, key: &'a Key) -> ApiCall<'a> {
        ApiCall {
            verb,
            resource: key.kind.resource(),
            name: Some(&key.name),
            namespace: Some(&key.namespace),
        }
    }

    fn api(&self, key: &Key) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.cluster.client.clone(),
            &key.namespace,
            &key.kind.api_resource(),
        )
    }

    /// The uids known so far, with a stand-in for bundled owners a dry run
    /// would create (the API server wants an owner reference to carry one).
    fn uids_with_placeholders(&self, objects: &[Value]) -> HashMap<Key, String> {
        let mut uids = self.uids.clone();
        if self.args.dry_run {
            for key in objects.iter().filter_map(Key::of) {
                uids.entry(key)
                    .or_insert_with(|| "00000000-0000-0000-0000-000000000000".into());
            }
        }
        uids
    }

    /// The references that do not exist (optional ones never count).
    async fn missing(
        &self,
        references: &[Reference],
        into: Option<&str>,
    ) -> Result<Vec<Reference>> {
        let mut missing = Vec::new();
        for r in references.iter().filter(|r| !r.optional) {
            let ns = into.unwrap_or(&r.namespace);
            let client = self.cluster.client.clone();
            let found = match r.kind {
                RefKind::ConfigMap => Api::<ConfigMap>::namespaced(client, ns)
                    .get_opt(&r.name)
                    .await
                    .map(|o| o.is_some()),
                RefKind::Secret => Api::<Secret>::namespaced(client, ns)
                    .get_metadata_opt(&r.name)
                    .await
                    .map(|o| o.is_some()),
                RefKind::ServiceAccount => Api::<ServiceAccount>::namespaced(client, ns)
                    .get_opt(&r.name)
                    .await
                    .map(|o| o.is_some()),
                RefKind::PersistentVolumeClaim => {
                    Api::<PersistentVolumeClaim>::namespaced(client, ns)
                        .get_opt(&r.name)
                        .await
                        .map(|o| o.is_some())
                }
            };
            let resource = match r.kind {
                RefKind::ConfigMap => "configmaps",
                RefKind::Secret => "secrets",
                RefKind::ServiceAccount => "serviceaccounts",
                RefKind::PersistentVolumeClaim => "persistentvolumeclaims",
            };
            let found = found.map_err(|e| {
                self.cluster.explain(
                    e,
                    ApiCall {
                        verb: "get",
                        resource,
                        name: Some(&r.name),
                        namespace: Some(ns),
                    },
                )
            })?;
            if !found {
                missing.push(Reference {
                    namespace: ns.to_string(),
                    ..r.clone()
                });
            }
        }
        Ok(missing)
    }

    /// Creates namespace `ns` when it does not exist (a restore after the
    /// namespace was deleted); refuses one being deleted.
    async fn namespace(&mut self, ns: &str) -> Result<()> {
        let api: Api<Namespace> = Api::all(self.cluster.client.clone());
        let call = ApiCall {
            verb: "get",
            resource: "namespaces",
            name: Some(ns),
            namespace: None,
        };
        match api.get_opt(ns).await {
            Ok(Some(n)) if n.metadata.deletion_timestamp.is_some() => bail!(
                "namespace {ns} is being deleted; wait until it is gone, then restore (it is created anew)"
            ),
            Ok(Some(_)) => Ok(()),
            // Not allowed to read namespaces: the writes will say if it is missing.
            Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
            Err(e) => Err(self.cluster.explain(e, call)),
            Ok(None) => {
                self.report(Change::Create, &format!("Namespace {ns}"), &[]);
                if self.args.dry_run {
                    return Ok(());
                }
                let namespace = Namespace {
                    metadata: kube::api::ObjectMeta {
                        name: Some(ns.to_string()),
                        ..Default::default()
                    },
                    ..Namespace::default()
                };
                api.create(&PostParams::default(), &namespace)
                    .await
                    .map_err(|e| {
                        self.cluster.explain(
                            e,
                            ApiCall {
                                verb: "create",
                                ..call
                            },
                        )
                    })?;
                Ok(())
            }
        }
    }

    /// Restores one object; the key of a Canary it guarded.
    async fn object(&mut self, key: &Key, object: Value) -> Result<Option<Key>> {
        let api = self.api(key);
        let live = api
            .get_opt(&key.name)
            .await
            .map_err(|e| self.cluster.explain(e, self.call("get", key)))?;
        let live = live.map(|l| serde_json::to_value(l).unwrap_or_default());
        let (mut main, status) = if key.kind == Kind::Canary {
            plan::split_status(&object)
        } else {
            (object, None)
        };
        let (manager, force) = if plan::canary_owner(&main).is_some() {
            (CONTROLLER, true)
        } else {
            (RESTORE, self.args.force)
        };
        let params = |dry_run: bool, manager: &str| {
            let mut p = PatchParams::apply(manager);
            p.force = force || manager == CONTROLLER;
            p.dry_run = dry_run;
            p
        };
        // What the writes would change, checked by the API server.
        let mut fields = Vec::new();
        let change = match &live {
            None => {
                if self.args.dry_run {
                    self.apply(&api, key, &main, &params(true, manager), false)
                        .await?;
                }
                Change::Create
            }
            Some(live) => {
                let after = self
                    .apply(&api, key, &main, &params(true, manager), false)
                    .await?;
                fields = plan::diff(live, &after);
                if let Some(body) = &status {
                    let after = self
                        .apply(&api, key, body, &params(true, CONTROLLER), true)
                        .await?;
                    fields.extend(
                        plan::diff(live, &after)
                            .into_iter()
                            .filter(|f| f.starts_with("status")),
                    );
                }
                if fields.is_empty() {
                    Change::Unchanged
                } else {
                    Change::Update
                }
            }
        };
        let uid_of = |v: &Value| {
            v.pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(String::from)
        };
        if let Some(uid) = live.as_ref().and_then(uid_of) {
            self.uids.insert(key.clone(), uid);
        }
        let mut guarded = None;
        if change != Change::Unchanged && !self.args.dry_run {
            if key.kind == Kind::Canary {
                main["metadata"]["annotations"][RESTORING] =
                    Value::String(jiff::Timestamp::now().to_string());
                guarded = Some(key.clone());
            }
            let written = self
                .apply(&api, key, &main, &params(false, manager), false)
                .await?;
            if let Some(uid) = uid_of(&written) {
                self.uids.insert(key.clone(), uid);
            }
            if let Some(body) = &status {
                self.apply(&api, key, body, &params(false, CONTROLLER), true)
                    .await?;
            }
        }
        let what = match (&status, change) {
            (Some(s), Change::Create) => format!(
                "{key} (status: {}, step {})",
                s.pointer("/status/phase")
                    .and_then(Value::as_str)
                    .unwrap_or("-"),
                s.pointer("/status/currentStep")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    + 1
            ),
            _ => key.to_string(),
        };
        self.report(change, &what, &fields);
        Ok(guarded)
    }

    /// A server-side apply of `body` to the object (`status`: to its
    /// status subresource); the object as the API server answered.
    async fn apply(
        &self,
        api: &Api<DynamicObject>,
        key: &Key,
        body: &Value,
        params: &PatchParams,
        status: bool,
    ) -> Result<Value> {
        let patch = Patch::Apply(body);
        let written = if status {
            api.patch_status(&key.name, params, &patch).await
        } else {
            api.patch(&key.name, params, &patch).await
        }
        .map_err(|e| self.refused(e, key, if status { "apply status of" } else { "apply" }))?;
        serde_json::to_value(written).context("cannot read the API server's answer")
    }

    fn refused(&self, e: kube::Error, key: &Key, verb: &str) -> anyhow::Error {
        match e {
            kube::Error::Api(s) if s.code == 409 => anyhow!(
                "cannot restore {key}: {}. Another field manager changed these fields since the \
                 export; `{} restore --force` takes them back",
                s.message,
                program()
            ),
            kube::Error::Api(s) if s.code == 422 || s.code == 400 => anyhow!(
                "the API server refused {key} from the bundle: {}",
                s.message
            ),
            e => self.cluster.explain(e, self.call(verb, key)),
        }
    }

    /// Lets the controller act on Canary `key` again.
    async fn unguard(&self, key: &Key) -> Result<()> {
        let body = serde_json::json!({"metadata": {"annotations": {RESTORING: null}}});
        self.api(key)
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map_err(|e| self.cluster.explain(e, self.call("patch", key)))?;
        Ok(())
    }

    fn report(&mut self, change: Change, what: &str, fields: &[String]) {
        self.counts[match change {
            Change::Create => 0,
            Change::Update => 1,
            Change::Unchanged => 2,
        }] += 1;
        match self.args.output {
            Output::Json => println!(
                "{}",
                serde_json::json!({"action": change.word(self.args.dry_run), "object": what,
                                   "fields": fields, "dryRun": self.args.dry_run})
            ),
            Output::Text => {
                let shown: BTreeSet<&String> = fields.iter().take(6).collect();
                let more = fields.len().saturating_sub(shown.len());
                let detail = if fields.is_empty() {
                    String::new()
                } else {
                    let list: Vec<&str> = shown.iter().map(|s| s.as_str()).collect();
                    let tail = if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    };
                    format!(": {}{tail}", list.join(", "))
                };
                println!("{:<13} {what}{detail}", change.word(self.args.dry_run));
            }
        }
    }
}
