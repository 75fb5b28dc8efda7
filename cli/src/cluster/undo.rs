//! `weir undo NAME [--to-revision N]` and `weir history NAME`: the
//! promoted versions of a Canary, and going back to one of them.
//!
//! The controller keeps every promoted pod template as an `apps/v1`
//! ControllerRevision labelled with the Canary, numbered in promotion
//! order. Undo writes the chosen template into the *target* Deployment
//! (a JSON patch replacing `/spec/template`), like `kubectl rollout undo`:
//! the controller then treats it like any other change of the target, so
//! an older version goes through the Canary's steps and analysis again
//! rather than replacing stable behind its back. [`choose`] picks the
//! revision from the ControllerRevisions and the status alone.

use std::io::Write as _;

use anyhow::{Context as _, Result, anyhow, bail};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt as _};
use weir_controller::kube::builders::{template_of, template_revision};
use weir_crds::{Canary, CanaryStatus, Phase, names};

use super::{Cluster, Target, age, program, table};
use crate::exit::Code;

/// Arguments of `weir undo`.
#[derive(Debug, clap::Args)]
pub struct UndoArgs {
    /// The Canary.
    pub name: String,
    /// The revision to go back to (see `--list`); default: the stable
    /// version while a run is in progress or aborted, else the version
    /// promoted before the current stable.
    #[arg(long, value_name = "N")]
    pub to_revision: Option<i64>,
    /// List the revisions instead (same as `weir history NAME`).
    #[arg(long, conflicts_with = "to_revision")]
    pub list: bool,
    #[command(flatten)]
    pub target: Target,
}

/// Arguments of `weir history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The Canary.
    pub name: String,
    #[command(flatten)]
    pub target: Target,
}

/// One promoted version, as read from its ControllerRevision.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    /// `.revision`: 1, 2, … in promotion order.
    pub number: i64,
    /// The ControllerRevision's name.
    pub object: String,
    /// The pod-template revision (`weir.dev/revision`).
    pub hash: Option<String>,
    /// The template as the target had it (None: `.data` unreadable).
    pub template: Option<PodTemplateSpec>,
    /// When it was first recorded.
    pub created: Option<Timestamp>,
}

impl From<&ControllerRevision> for Revision {
    fn from(cr: &ControllerRevision) -> Self {
        Revision {
            number: cr.revision,
            object: cr.name_any(),
            hash: cr.annotations().get(names::REVISION_ANNOTATION).cloned(),
            template: template_of(cr),
            created: cr.metadata.creation_timestamp.as_ref().map(|t| t.0),
        }
    }
}

/// The images of a template's containers, comma-separated.
pub fn images(template: Option<&PodTemplateSpec>) -> String {
    let images: Vec<&str> = template
        .and_then(|t| t.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .map(|c| c.image.as_deref().unwrap_or("?"))
                .collect()
        })
        .unwrap_or_default();
    if images.is_empty() {
        "?".into()
    } else {
        images.join(",")
    }
}

/// The revisions as a table, the one stable runs marked: a template's hash
/// and images, or a model canary's model.
pub fn history(
    revisions: &[Revision],
    stable: Option<&str>,
    now: Timestamp,
    what: Recorded,
) -> String {
    let header: &[&str] = match what {
        Recorded::Templates => &["REVISION", "HASH", "IMAGES", "PROMOTED", ""],
        Recorded::Models => &["REVISION", "MODEL", "PROMOTED", ""],
    };
    let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for r in revisions {
        let promoted = r.created.map_or_else(
            || "-".into(),
            |t| format!("{} ({} ago)", t.strftime("%Y-%m-%d %H:%M:%SZ"), age(t, now)),
        );
        let current = r.hash.is_some() && r.hash.as_deref() == stable;
        let mut row = vec![
            r.number.to_string(),
            r.hash.clone().unwrap_or_else(|| "-".into()),
        ];
        if what == Recorded::Templates {
            row.push(images(r.template.as_ref()));
        }
        row.push(promoted);
        row.push(if current {
            "stable".into()
        } else {
            String::new()
        });
        rows.push(row);
    }
    table(&rows)
}

/// Where a Canary's promoted versions are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Pod templates, as ControllerRevisions.
    Templates,
    /// A model canary's model names, in its status.
    Models,
}

impl Recorded {
    fn one(self) -> &'static str {
        match self {
            Recorded::Templates => "ControllerRevision",
            Recorded::Models => "promoted model",
        }
    }
}

/// A model canary's versions, numbered in promotion order: the model that
/// served when it was created (`spec.models.stable`), then each one
/// promoted since (`status.history`, its latest entries), each model once,
/// where it was promoted last. Empty for a Canary of pod templates.
pub fn model_revisions(canary: &Canary) -> Vec<Revision> {
    let Some(models) = &canary.spec.models else {
        return Vec::new();
    };
    let first = (
        models.stable.clone(),
        canary.metadata.creation_timestamp.as_ref().map(|t| t.0),
    );
    let promoted = canary
        .status
        .iter()
        .flat_map(|s| &s.history)
        .filter(|h| h.event == weir_crds::HistoryEvent::Promoted)
        .filter_map(|h| Some((h.revision.clone()?, Some(h.at.0))));
    let mut all: Vec<(String, Option<Timestamp>)> =
        std::iter::once(first).chain(promoted).collect();
    // Each model where it was promoted last.
    let mut seen = std::collections::BTreeSet::new();
    all.reverse();
    all.retain(|(model, _)| seen.insert(model.clone()));
    all.reverse();
    all.into_iter()
        .zip(1..)
        .map(|((model, created), number)| Revision {
            number,
            object: String::new(),
            hash: Some(model),
            template: None,
            created,
        })
        .collect()
}

/// The revision `undo` writes back, and what the controller will make of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice<'a> {
    /// The chosen revision.
    pub revision: &'a Revision,
    /// Whether it is the version stable runs: the run in progress (or the
    /// aborted one) is withdrawn instead of a new run starting.
    pub is_stable: bool,
}

/// Picks the revision to go back to (`revisions` sorted by number): `to`,
/// else stable's while a run is in progress or aborted, else the one
/// promoted before stable.
///
/// # Errors
/// A sentence naming what is missing, with the revisions there are.
pub fn choose<'a>(
    name: &str,
    revisions: &'a [Revision],
    status: &CanaryStatus,
    to: Option<i64>,
    what: Recorded,
) -> Result<Choice<'a>, String> {
    let one = what.one();
    let stable = status.stable_revision.as_deref();
    let numbers = || {
        revisions
            .iter()
            .map(|r| r.number.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if revisions.is_empty() {
        return Err(format!(
            "canary {name} has no {one}s yet: the controller records one for each \
             version it promotes (and for the first stable)"
        ));
    }
    let choice = |r: &'a Revision| Choice {
        revision: r,
        is_stable: r.hash.is_some() && r.hash.as_deref() == stable,
    };
    if let Some(n) = to {
        return revisions
            .iter()
            .find(|r| r.number == n)
            .map(choice)
            .ok_or_else(|| {
                format!(
                    "no {one} {n} for canary {name}; revisions are {}",
                    numbers()
                )
            });
    }
    if status.phase == Phase::Promoting {
        return Err(format!(
            "canary {name} is promoting revision {}; undo once it is done (`{} status {name} --watch`)",
            status.canary_revision.as_deref().unwrap_or("?"),
            program()
        ));
    }
    let current = revisions
        .iter()
        .find(|r| r.hash.is_some() && r.hash.as_deref() == stable)
        .ok_or_else(|| {
            format!(
                "no {one} holds stable revision {} of canary {name}; revisions are {}: \
                 pick one with --to-revision N",
                stable.unwrap_or("(none yet)"),
                numbers()
            )
        })?;
    if matches!(
        status.phase,
        Phase::Progressing | Phase::Paused | Phase::Aborted
    ) {
        return Ok(choice(current));
    }
    revisions
        .iter()
        .filter(|r| r.number < current.number)
        .max_by_key(|r| r.number)
        .map(choice)
        .ok_or_else(|| {
            format!(
                "revision {} (stable) is the oldest {one} of canary {name}: there is \
                 no earlier version to undo to",
                current.number
            )
        })
}

/// What the controller does once the target has `choice`'s template.
pub fn consequence(name: &str, choice: &Choice<'_>, status: &CanaryStatus) -> String {
    let cli = program();
    if choice.is_stable {
        match status.phase {
            Phase::Progressing | Phase::Paused => format!(
                "the target is back on the stable version: the controller withdraws canary revision \
                 {} (traffic goes to stable first) and {name} goes Idle; no new run starts",
                status.canary_revision.as_deref().unwrap_or("?")
            ),
            Phase::Aborted => format!(
                "the target is back on the stable version: {name} goes Idle and the aborted \
                 revision can no longer be retried"
            ),
            _ => "the target asks for the version stable runs: nothing is rolled out".into(),
        }
    } else {
        format!(
            "the controller rolls it out like any other change: a canary run through {name}'s \
             steps and analysis (the safe default; `{cli} promote {name} --full` skips the steps \
             once it runs). Follow it with `{cli} status {name} --watch`"
        )
    }
}

/// Runs `weir history` (and `weir undo --list`).
pub fn list(args: &HistoryArgs) -> Result<Code> {
    super::block_on(async {
        let cluster = super::connect(&args.target).await?;
        let canary = cluster.canary(&args.name).await?;
        let (revisions, what) = match canary.spec.models {
            Some(_) => (model_revisions(&canary), Recorded::Models),
            None => (revisions(&cluster, &args.name).await?, Recorded::Templates),
        };
        if revisions.is_empty() {
            eprintln!(
                "No revisions recorded for canary {} yet: the controller records one for each \
                 version it promotes.",
                args.name
            );
            return Ok(Code::Success);
        }
        let stable = canary
            .status
            .as_ref()
            .and_then(|s| s.stable_revision.as_deref());
        let text = history(&revisions, stable, Timestamp::now(), what);
        std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("writing to stdout")?;
        Ok(Code::Success)
    })
}

/// Runs `weir undo`.
pub fn undo(args: &UndoArgs) -> Result<Code> {
    if args.list {
        return list(&HistoryArgs {
            name: args.name.clone(),
            target: args.target.clone(),
        });
    }
    super::block_on(async {
        let cluster = super::connect(&args.target).await?;
        let canary = cluster.canary(&args.name).await?;
        if canary.spec.models.is_some() {
            return undo_model(&cluster, &canary, args.to_revision).await;
        }
        if let Some(graph) = &canary.spec.graph {
            // Its history would be one template per component; weir keeps
            // single templates only.
            let names: Vec<&str> = graph.components.iter().map(|c| c.name.as_str()).collect();
            bail!(
                "canary {} rolls out a graph ({} and {}): weir undo keeps no history of graphs yet; \
                 put the previous templates back on those Deployments (kubectl rollout undo on each, \
                 or your manifests) and weir starts a run of them",
                args.name,
                target_name(&canary)?,
                names.join(", ")
            );
        }
        let target = target_name(&canary)?;
        let revisions = revisions(&cluster, &args.name).await?;
        let status = canary.status.clone().unwrap_or_default();
        let choice = choose(
            &args.name,
            &revisions,
            &status,
            args.to_revision,
            Recorded::Templates,
        )
        .map_err(|e| anyhow!(e))?;
        let chosen = choice.revision;
        let Some(template) = &chosen.template else {
            bail!(
                "ControllerRevision {} (revision {}) has no readable pod template in .data",
                chosen.object,
                chosen.number
            );
        };
        let Some(deployment) = cluster.deployment(&target).await? else {
            bail!(
                "the target Deployment {target} of canary {} is not in namespace {}",
                args.name,
                cluster.namespace
            );
        };
        let current = deployment
            .spec
            .as_ref()
            .map(|s| template_revision(&s.template));
        let what = format!(
            "revision {} ({}, {})",
            chosen.number,
            chosen.hash.as_deref().unwrap_or("?"),
            images(Some(template))
        );
        if current.as_deref() == Some(template_revision(template).as_str()) {
            println!("{target} already has the template of {what}: nothing to undo");
            return Ok(Code::Success);
        }
        set_template(&cluster, &target, template).await?;
        println!("{target}: pod template set to {what}");
        println!("{}", consequence(&args.name, &choice, &status));
        Ok(Code::Success)
    })
}

/// `weir undo` of a model canary: the chosen model goes into
/// `spec.models.canary`, which the controller rolls out like any new model
/// (or, when it is stable's, withdraws the run for).
async fn undo_model(cluster: &Cluster, canary: &Canary, to: Option<i64>) -> Result<Code> {
    let name = canary.name_any();
    let revisions = model_revisions(canary);
    let status = canary.status.clone().unwrap_or_default();
    let choice =
        choose(&name, &revisions, &status, to, Recorded::Models).map_err(|e| anyhow!(e))?;
    let model = choice.revision.hash.clone().unwrap_or_default();
    let asked = canary.spec.models.as_ref().map(|m| m.canary.as_str());
    if asked == Some(model.as_str()) {
        println!("canary {name} already asks for model {model}: nothing to undo");
        return Ok(Code::Success);
    }
    let api: Api<Canary> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let patch = serde_json::json!({"spec": {"models": {"canary": model}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| cluster.explain(e, cluster.call("patch", "canaries.weir.dev", Some(&name))))?;
    println!(
        "canary {name}: spec.models.canary set to {model} (revision {})",
        choice.revision.number
    );
    let cli = program();
    println!(
        "{}",
        if choice.is_stable {
            format!(
                "it is the model stable serves: the controller withdraws any run in progress \
                 (traffic goes to stable first) and {name} goes Idle"
            )
        } else {
            format!(
                "the controller rolls it out like any new model: a run through {name}'s steps and \
                 analysis (`{cli} promote {name} --full` skips the steps once it runs). Follow it \
                 with `{cli} status {name} --watch`"
            )
        }
    );
    Ok(Code::Success)
}

fn target_name(canary: &Canary) -> Result<String> {
    canary
        .spec
        .target_ref
        .as_ref()
        .map(|t| t.name.clone())
        .ok_or_else(|| {
            anyhow!(
                "canary {} has no spec.targetRef: undo rolls back a target Deployment (Kubernetes mode)",
                canary.name_any()
            )
        })
}

/// The Canary's ControllerRevisions, by number.
async fn revisions(cluster: &Cluster, name: &str) -> Result<Vec<Revision>> {
    let api: Api<ControllerRevision> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let selector = format!("{}={name}", names::CANARY_LABEL);
    let listed = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| cluster.explain(e, cluster.call("list", "controllerrevisions.apps", None)))?;
    let mut revisions: Vec<Revision> = listed.items.iter().map(Revision::from).collect();
    revisions.sort_by_key(|r| r.number);
    Ok(revisions)
}

/// Replaces the target's pod template, as `kubectl rollout undo` does.
async fn set_template(
    cluster: &Cluster,
    target: &str,
    template: &PodTemplateSpec,
) -> Result<Deployment> {
    let ops = serde_json::json!([
        {"op": "replace", "path": "/spec/template", "value": template}
    ]);
    let patch: json_patch::Patch =
        serde_json::from_value(ops).context("building the JSON patch")?;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    api.patch(target, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(|e| cluster.explain(e, cluster.call("patch", "deployments.apps", Some(target))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{at, progressing};
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn revision(number: i64, image: &str) -> Revision {
        let template = PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "vllm".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        };
        Revision {
            number,
            object: format!("chat-{number}"),
            hash: Some(template_revision(&template)),
            created: Some(at(number * 3600).0),
            template: Some(template),
        }
    }

    fn status(phase: Phase, stable: &Revision) -> CanaryStatus {
        let mut s: CanaryStatus = serde_json::from_value(progressing()).expect("status");
        s.phase = phase;
        s.stable_revision = stable.hash.clone();
        s
    }

    #[test]
    fn without_a_number_undo_goes_to_the_version_before_the_current() {
        let revs = vec![revision(1, "v1"), revision(2, "v2"), revision(4, "v4")];
        let done = status(Phase::Succeeded, &revs[2]);
        let c = choose("chat", &revs, &done, None, Recorded::Templates).expect("chosen");
        assert_eq!((c.revision.number, c.is_stable), (2, false));
        // While a run is on (or aborted), the stable version drops the canary.
        for phase in [Phase::Progressing, Phase::Paused, Phase::Aborted] {
            let c = choose(
                "chat",
                &revs,
                &status(phase, &revs[2]),
                None,
                Recorded::Templates,
            )
            .expect("chosen");
            assert_eq!((c.revision.number, c.is_stable), (4, true), "{phase}");
        }
        let oldest = choose(
            "chat",
            &revs,
            &status(Phase::Idle, &revs[0]),
            None,
            Recorded::Templates,
        )
        .expect_err("none before");
        assert!(oldest.contains("no earlier version"), "{oldest}");
        let promoting = choose(
            "chat",
            &revs,
            &status(Phase::Promoting, &revs[2]),
            None,
            Recorded::Templates,
        )
        .expect_err("wait");
        assert!(promoting.contains("is promoting"), "{promoting}");
    }

    #[test]
    fn a_missing_number_is_named_with_the_numbers_there_are() {
        let revs = vec![revision(1, "v1"), revision(2, "v2"), revision(4, "v4")];
        let s = status(Phase::Idle, &revs[2]);
        assert_eq!(
            choose("chat", &revs, &s, Some(3), Recorded::Templates).expect_err("missing"),
            "no ControllerRevision 3 for canary chat; revisions are 1, 2, 4"
        );
        assert_eq!(
            choose("chat", &revs, &s, Some(1), Recorded::Templates)
                .expect("found")
                .revision
                .number,
            1
        );
        let none = choose("chat", &[], &s, Some(1), Recorded::Templates).expect_err("empty");
        assert!(none.contains("no ControllerRevisions yet"), "{none}");
    }

    /// A model canary created with v7, promoted to v8, then to v7 again,
    /// then to v9: each model once, where it was promoted last.
    fn model_canary(phase: Phase) -> Canary {
        let mut c = crate::cluster::fixtures::canary(progressing());
        c.spec.route.model = Some("chat".into());
        c.spec.models = Some(weir_crds::ModelVersions {
            stable: "chat-lora-v7".into(),
            canary: "chat-lora-v9".into(),
        });
        c.metadata.creation_timestamp = Some(at(0));
        let status = c.status.as_mut().expect("status");
        status.phase = phase;
        status.stable_revision = Some("chat-lora-v9".into());
        status.history = ["chat-lora-v8", "chat-lora-v7", "chat-lora-v9"]
            .iter()
            .zip(1..)
            .map(|(model, hour)| weir_crds::HistoryEntry {
                event: weir_crds::HistoryEvent::Promoted,
                revision: Some((*model).into()),
                reason: "every step passed".into(),
                at: at(hour * 3600),
            })
            .collect();
        c
    }

    #[test]
    fn a_model_canary_goes_back_through_its_promoted_models() {
        let c = model_canary(Phase::Succeeded);
        let revs = model_revisions(&c);
        let models: Vec<(i64, &str)> = revs
            .iter()
            .map(|r| (r.number, r.hash.as_deref().unwrap_or("?")))
            .collect();
        assert_eq!(
            models,
            [
                (1, "chat-lora-v8"),
                (2, "chat-lora-v7"),
                (3, "chat-lora-v9")
            ]
        );
        let status = c.status.clone().expect("status");
        let back = choose("chat", &revs, &status, None, Recorded::Models).expect("chosen");
        assert_eq!(
            (back.revision.hash.as_deref(), back.is_stable),
            (Some("chat-lora-v7"), false)
        );
        let err = choose("chat", &revs, &status, Some(9), Recorded::Models).expect_err("none");
        assert_eq!(
            err,
            "no promoted model 9 for canary chat; revisions are 1, 2, 3"
        );
        let text = history(
            &revs,
            Some("chat-lora-v9"),
            at(4 * 3600).0,
            Recorded::Models,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["REVISION", "MODEL", "PROMOTED"],
            "{text}"
        );
        assert!(
            lines[3].contains("chat-lora-v9") && lines[3].ends_with("stable"),
            "{text}"
        );
        // Mid-run, undo drops the canary for the stable model.
        let running = model_canary(Phase::Progressing);
        let status = running.status.clone().expect("status");
        let back = choose("chat", &revs, &status, None, Recorded::Models).expect("chosen");
        assert_eq!(
            (back.revision.hash.as_deref(), back.is_stable),
            (Some("chat-lora-v9"), true)
        );
        // Not a model canary: nothing from status.
        assert!(model_revisions(&crate::cluster::fixtures::canary(progressing())).is_empty());
    }

    #[test]
    fn history_lists_number_hash_images_and_marks_stable() {
        let revs = vec![revision(1, "vllm:v1"), revision(2, "vllm:v2")];
        let text = history(
            &revs,
            revs[1].hash.as_deref(),
            at(3 * 3600).0,
            Recorded::Templates,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].starts_with("1 ") && lines[1].contains("vllm:v1"),
            "{text}"
        );
        assert!(lines[1].contains("2023-11-14 23:13:20Z (2h ago)"), "{text}");
        assert!(!lines[1].ends_with("stable"), "{text}");
        assert!(
            lines[2].contains("vllm:v2") && lines[2].ends_with("stable"),
            "{text}"
        );
        let hash = revs[0].hash.as_deref().expect("hash");
        assert!(lines[1].contains(hash), "{text}");
    }
}
