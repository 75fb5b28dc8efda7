//! An Argo Rollouts `Rollout` (canary or blue-green, with its
//! `AnalysisTemplate`s) as a weir `Canary`.
//!
//! The shapes match closely: Argo's steps (`setWeight`, `pause`,
//! `analysis`) are weir's steps, blue-green's pre/post-promotion analyses
//! are weir's. What differs is who moves traffic (weir's own proxies, not
//! a mesh or ingress; weir's own `<canary>-stable`/`-canary` Services) and
//! how a check passes (a margin against stable, not a fixed threshold):
//! those fields are carried over with a note, and the rest is listed as
//! not carried over with the weir alternative.

use std::time::Duration;

use weir_controller::engine::spec::{format_duration, parse_duration};
use weir_crds::{
    AnalysisStep, BlueGreenStrategy, CanaryStrategy, PauseStep, ReplicaPolicy, Step, Strategy,
};

use super::notes::{Notes, Severity};
use super::source::{Document, Obj};
use super::{Draft, ImportError, Input};

mod analysis;
use analysis::{Analyses, bounds};

const GROUP: &str = "argoproj.io";

/// Whether `doc` is a Rollout this module converts.
pub fn is_rollout(doc: &Document) -> bool {
    doc.is(GROUP, "Rollout")
}

/// An Argo duration: seconds as a number, or text such as `30s`, `5m`, `1h`.
fn duration(obj: &Obj<'_>, key: &str) -> Result<Option<Duration>, ImportError> {
    let Some(text) = obj.str(key)? else {
        return Ok(None);
    };
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Some(Duration::from_secs(secs)));
    }
    parse_duration(text)
        .map(Some)
        .map_err(|problem| ImportError::Field {
            field: obj.at(key),
            problem,
        })
}

/// The longer of two run lengths; `None` (runs until stopped) is longest.
fn longer(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    Some(a?.max(b?))
}

/// Converts the Rollout `doc`.
///
/// # Errors
/// A field of the wrong type or shape, naming it and the fix.
pub fn convert(doc: &Document, input: &Input<'_>, notes: &mut Notes) -> Result<Draft, ImportError> {
    let root = Obj::new("", &doc.value)?;
    let spec = root.obj("spec")?.ok_or_else(|| ImportError::Field {
        field: "spec".into(),
        problem: "is missing; a Rollout has spec.strategy".into(),
    })?;
    let mut draft = Draft::new(doc);
    target(&spec, &mut draft, input, notes)?;
    subscriptions(doc, notes);

    if let Some(d) = spec.count("progressDeadlineSeconds")? {
        draft.spec.progress_deadline_seconds = d.max(1);
    }
    notes.on(
        &spec,
        "progressDeadlineAbort",
        Severity::Changed,
        "spec.progressDeadlineSeconds",
        "weir always aborts a run that makes no progress for progressDeadlineSeconds",
    );
    if let Some(p) = spec.bool("paused")? {
        draft.spec.paused = p;
    }
    for (key, why) in [
        (
            "minReadySeconds",
            "set it on the Deployment: weir's cohorts copy its template and settings",
        ),
        (
            "revisionHistoryLimit",
            "set it on the Deployment; weir keeps each promoted template as a ControllerRevision \
             (weir history)",
        ),
    ] {
        notes.on(&spec, key, Severity::Changed, "spec.targetRef", why);
    }
    for (key, why) in [
        (
            "restartAt",
            "restart the Deployment with kubectl rollout restart",
        ),
        (
            "rollbackWindow",
            "weir undo puts any promoted version back, through the steps",
        ),
    ] {
        notes.on(&spec, key, Severity::Dropped, "spec.targetRef", why);
    }
    notes.on(
        &spec,
        "analysis",
        Severity::Changed,
        "spec.analysis",
        "weir keeps the last verdict in status.analysis and the history in Events, not \
         AnalysisRuns",
    );

    let strategy = spec.obj("strategy")?.ok_or_else(|| ImportError::Field {
        field: spec.at("strategy"),
        problem: "is missing; give canary: {steps: [...]} or blueGreen: {...}".into(),
    })?;
    let mut analyses = Analyses::default();
    match (strategy.obj("canary")?, strategy.obj("blueGreen")?) {
        (Some(c), None) => canary(&c, &mut draft, &mut analyses, input, notes)?,
        (None, Some(b)) => blue_green(&b, &mut draft, &mut analyses, input, notes)?,
        (Some(_), Some(_)) => {
            return Err(ImportError::Field {
                field: strategy.path().into(),
                problem: "has both canary and blueGreen; Argo Rollouts accepts one".into(),
            });
        }
        (None, None) => {
            return Err(ImportError::Field {
                field: strategy.at("canary"),
                problem: "is missing; weir import converts canary and blueGreen strategies".into(),
            });
        }
    }
    notes.unread("spec.strategy", &strategy);
    notes.unread("spec", &spec);
    analyses.checks.default_if_empty("spec.strategy", notes);
    draft.spec.analysis.metrics = std::mem::take(&mut analyses.checks.metrics);
    if let Some(i) = analyses.interval {
        draft.spec.analysis.interval = format_duration(i);
    }
    Ok(draft)
}

/// Argo Rollouts notification subscriptions live in annotations
/// (`notifications.argoproj.io/subscribe.<trigger>.<service>: <recipient>`);
/// their services and recipients are in argo-rollouts-notification-cm,
/// which weir does not read.
fn subscriptions(doc: &Document, notes: &mut Notes) {
    let Some(annotations) = doc.value["metadata"]["annotations"].as_object() else {
        return;
    };
    for key in annotations
        .keys()
        .filter(|k| k.starts_with("notifications.argoproj.io/"))
    {
        notes.dropped(
            "spec.notify",
            &format!("metadata.annotations.{key}"),
            "list the webhook in the controller's notifications Secret and name it in \
             spec.notify (docs/notifications.md)",
        );
    }
}

/// `workloadRef` or the Rollout's own template → `targetRef` and the port.
fn target(
    spec: &Obj<'_>,
    draft: &mut Draft,
    input: &Input<'_>,
    notes: &mut Notes,
) -> Result<(), ImportError> {
    let name = draft.name.clone();
    if let Some(w) = spec.obj("workloadRef")? {
        let kind = w.str("kind")?.unwrap_or_else(|| "Deployment".into());
        if kind != "Deployment" {
            return Err(ImportError::Field {
                field: w.at("kind"),
                problem: format!(
                    "is {kind:?}; weir rolls out Deployments: refer to the Deployment instead"
                ),
            });
        }
        w.get("apiVersion");
        let target = w.str("name")?.ok_or_else(|| ImportError::Field {
            field: w.at("name"),
            problem: "is missing; name the Deployment".into(),
        })?;
        notes.on(
            &w,
            "scaleDown",
            Severity::Changed,
            "spec.targetRef",
            "weir adopts the \
                      Deployment: its current template becomes the <target>-stable copy, and the \
                      Deployment itself carries the canary, scaled with the weight (to zero \
                      between runs)",
        );
        notes.unread("spec.targetRef", &w);
        if let Some(port) = input.deployment_port(&target) {
            draft.port = Some(port);
        }
        draft.target(&target);
        notes.on(
            spec,
            "replicas",
            Severity::Changed,
            "spec.targetRef",
            "the Deployment's replicas count",
        );
        spec.get("selector");
        return Ok(());
    }
    let template = spec.obj("template")?.ok_or_else(|| ImportError::Field {
        field: spec.at("workloadRef"),
        problem: "is missing, and so is spec.template: a Rollout needs one of them".into(),
    })?;
    draft.port = container_port(&template);
    spec.get("selector");
    spec.get("replicas");
    notes.changed(
        "spec.targetRef",
        "spec.template",
        format!(
            "weir rolls out a Deployment: create Deployment {name} with this Rollout's selector, \
             replicas and template (weir adopts it: the Deployment is the desired version), then \
             delete the Rollout"
        ),
    );
    draft.target(&name);
    Ok(())
}

/// The first container's first port, from a pod template.
fn container_port(template: &Obj<'_>) -> Option<u16> {
    let spec = template.get("spec")?;
    let port = spec["containers"][0]["ports"][0]["containerPort"].as_u64()?;
    u16::try_from(port).ok()
}

fn canary(
    c: &Obj<'_>,
    draft: &mut Draft,
    analyses: &mut Analyses,
    input: &Input<'_>,
    notes: &mut Notes,
) -> Result<(), ImportError> {
    let mut steps = Vec::new();
    let mut replicas = ReplicaPolicy::MatchWeight;
    let mut weight = 0.0_f64;
    let at_steps = "spec.strategy.canary.steps";
    // The interval analysis steps are bounded with: known once every
    // template is read, so the bounds are set after the loop.
    let mut pending: Vec<(usize, Option<Duration>, String)> = Vec::new();
    if let Some(bg) = c.obj("analysis")? {
        notes.on(
            &bg,
            "startingStep",
            Severity::Changed,
            "spec.analysis",
            "weir watches the evidence from the first step on",
        );
        analyses.reference(&bg, "spec.analysis", input, notes)?;
        notes.changed(
            "spec.analysis",
            bg.path(),
            "weir watches the evidence during every step and aborts wherever a regression is \
             shown, like a background analysis; its checks are the metrics below",
        );
    }
    for s in c.objs("steps")? {
        let at = format!("{at_steps}[{}]", steps.len());
        if let Some(w) = s.num("setWeight")? {
            if !(0.0..=100.0).contains(&w) {
                return Err(ImportError::Field {
                    field: s.at("setWeight"),
                    problem: format!("is {w}; a weight is a percentage between 0 and 100"),
                });
            }
            weight = w;
            steps.push(Step::SetWeight(w));
        } else if s.has_key("pause") {
            let empty = serde_json::Value::Object(serde_json::Map::new());
            let p = Obj::new(s.at("pause"), s.get("pause").unwrap_or(&empty))?;
            let d = duration(&p, "duration")?;
            notes.unread(&at, &p);
            steps.push(Step::Pause(PauseStep {
                duration: d.map(format_duration),
            }));
        } else if let Some(a) = s.obj("analysis")? {
            let run = analyses.reference(&a, &at, input, notes)?;
            if weight <= 0.0 || weight >= 100.0 {
                notes.changed(
                    at_steps,
                    a.path(),
                    format!(
                        "an analysis at {weight}% has {} to compare: its checks watch the whole \
                         run (the metrics below) and the step is left out",
                        if weight <= 0.0 {
                            "no canary traffic"
                        } else {
                            "no stable traffic"
                        }
                    ),
                );
            } else {
                pending.push((steps.len(), run, a.path().to_string()));
                steps.push(Step::Analysis(AnalysisStep::default()));
            }
        } else if let Some(scale) = s.obj("setCanaryScale")? {
            if let Some(n) = scale.count("replicas")? {
                replicas = ReplicaPolicy::Fixed(n.max(1));
                notes.changed(
                    "spec.strategy.canary.replicas",
                    &scale.at("replicas"),
                    "Argo rescaled the canary at this step; weir keeps one replica policy for the \
                     whole run (here: the last one the steps set)",
                );
            } else if scale.bool("matchTrafficWeight")? == Some(true) {
                replicas = ReplicaPolicy::MatchWeight;
            } else {
                notes.on(
                    &scale,
                    "weight",
                    Severity::Changed,
                    "spec.strategy.canary.replicas",
                    "weir sizes the canary to its traffic weight (matchWeight), so each replica \
                     carries the load of a stable one and the comparison is fair",
                );
            }
            notes.unread(at_steps, &scale);
        } else {
            // A step weir has no counterpart for: at most one of these.
            for (key, why) in [
                (
                    "setHeaderRoute",
                    "weir routes by weight; a request with header x-weir-cohort: canary goes to \
                     the canary when the proxy's overrideHeader is on",
                ),
                ("setMirrorRoute", "weir does not mirror traffic"),
                (
                    "experiment",
                    "weir compares the canary with stable on live traffic; a side-by-side \
                     experiment is a second Canary",
                ),
                ("plugin", "weir has no step plugins"),
            ] {
                notes.on(&s, key, Severity::Dropped, at_steps, why);
            }
        }
        notes.unread(at_steps, &s);
    }
    if steps.is_empty() {
        return Err(ImportError::Field {
            field: c.at("steps"),
            problem: "has no step weir can run; give at least a setWeight".into(),
        });
    }
    let interval = analyses
        .interval
        .unwrap_or_else(|| parse_duration(&draft.spec.analysis.interval).unwrap_or_default());
    for (i, run, source) in pending {
        steps[i] = Step::Analysis(bounds(
            run,
            interval,
            &format!("{at_steps}[{i}]"),
            &source,
            notes,
        ));
    }
    for (key, why) in [
        (
            "canaryService",
            "weir creates and owns the Services <canary>-stable and <canary>-canary",
        ),
        (
            "stableService",
            "weir creates and owns the Services <canary>-stable and <canary>-canary",
        ),
    ] {
        notes.on(c, key, Severity::Changed, "spec.route", why);
    }
    if let Some(tr) = c.obj("trafficRouting")? {
        let routers: Vec<String> = tr.unread();
        notes.changed(
            "spec.route",
            &routers.join(", "),
            "weir's proxies split the traffic themselves, request by request: point the ingress or \
             mesh route at the weir proxy Service instead of the canary and stable Services; \
             route.hosts and route.pathPrefix choose the requests",
        );
    }
    promotion_fields(c, draft, notes)?;
    for (key, why) in [
        (
            "dynamicStableScale",
            "spec.gpuBudget scales stable down as the canary scales up",
        ),
        (
            "scaleDownDelaySeconds",
            "weir scales the canary down as soon as stable is ready on the new version",
        ),
        (
            "abortScaleDownDelaySeconds",
            "an abort moves traffic to stable first, then scales the canary down",
        ),
        (
            "antiAffinity",
            "set pod anti-affinity in the Deployment's template; both cohorts copy it",
        ),
        (
            "canaryMetadata",
            "weir labels the cohorts' pods itself (weir.dev/cohort)",
        ),
        (
            "stableMetadata",
            "weir labels the cohorts' pods itself (weir.dev/cohort)",
        ),
        (
            "pingPong",
            "weir's stable and canary Services are fixed; promotion updates stable in place",
        ),
    ] {
        notes.on(c, key, Severity::Dropped, "spec.strategy.canary", why);
    }
    notes.unread("spec.strategy.canary", c);
    draft.spec.strategy = Strategy {
        canary: Some(CanaryStrategy { replicas, steps }),
        blue_green: None,
    };
    Ok(())
}

/// `maxSurge` / `maxUnavailable` → how stable takes the new version.
fn promotion_fields(c: &Obj<'_>, draft: &mut Draft, notes: &mut Notes) -> Result<(), ImportError> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let intstr = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map(IntOrString::Int),
        serde_json::Value::String(s) => Some(IntOrString::String(s.clone())),
        _ => None,
    };
    for key in ["maxSurge", "maxUnavailable"] {
        if let Some(v) = c.get(key) {
            let value = intstr(v).ok_or_else(|| ImportError::Field {
                field: c.at(key),
                problem: "is neither a number nor a percentage such as 25%".into(),
            })?;
            if key == "maxSurge" {
                draft.spec.promotion.max_surge = Some(value);
            } else {
                draft.spec.promotion.max_unavailable = Some(value);
            }
            let meaning = if key == "maxSurge" {
                "in weir it bounds the pods of both cohorts while stable takes the promoted \
                 version (the canary keeps its size and covers the surge that does not fit)"
            } else {
                "in weir it paces stable's rolling update to the promoted version"
            };
            notes.changed(&format!("spec.promotion.{key}"), &c.at(key), meaning);
        }
    }
    Ok(())
}

fn blue_green(
    b: &Obj<'_>,
    draft: &mut Draft,
    analyses: &mut Analyses,
    input: &Input<'_>,
    notes: &mut Notes,
) -> Result<(), ImportError> {
    let at = "spec.strategy.blueGreen";
    for key in ["activeService", "previewService"] {
        notes.on(
            b,
            key,
            Severity::Changed,
            "spec.route",
            "weir creates and owns the Services \
                                             <canary>-stable and <canary>-canary; the preview is \
                                             reached through the weir proxy with header \
                                             x-weir-cohort: canary",
        );
    }
    let auto_promote = b.bool("autoPromotionEnabled")?.unwrap_or(true);
    let preview_replicas = b.count("previewReplicaCount")?.filter(|n| *n > 0);
    let mut scale_down = b
        .count("scaleDownDelaySeconds")?
        .map(|s| Duration::from_secs(u64::from(s)));
    let mut analysis =
        |key: &str, notes: &mut Notes| -> Result<Option<(Option<Duration>, String)>, ImportError> {
            match b.obj(key)? {
                Some(a) => {
                    let run = analyses.reference(&a, &format!("{at}.{key}"), input, notes)?;
                    Ok(Some((run, a.path().to_string())))
                }
                None => Ok(None),
            }
        };
    let pre = analysis("prePromotionAnalysis", notes)?;
    let post = analysis("postPromotionAnalysis", notes)?;
    let interval = analyses
        .interval
        .unwrap_or_else(|| parse_duration(&draft.spec.analysis.interval).unwrap_or_default());
    let pre = pre.map(|(run, source)| {
        bounds(
            run,
            interval,
            &format!("{at}.prePromotionAnalysis"),
            &source,
            notes,
        )
    });
    let post = post.map(|(run, source)| {
        bounds(
            run,
            interval,
            &format!("{at}.postPromotionAnalysis"),
            &source,
            notes,
        )
    });
    // A rollback after cutover needs the old side warm for the whole
    // post-promotion analysis.
    if let Some(max) = post
        .as_ref()
        .map(|p| {
            p.max_duration
                .as_deref()
                .map_or(Some(Duration::from_secs(15 * 60)), |m| {
                    parse_duration(m).ok()
                })
        })
        .and_then(|m| m)
    {
        let warm = scale_down.unwrap_or(Duration::from_secs(10 * 60));
        if warm < max {
            notes.changed(
                &format!("{at}.scaleDownDelay"),
                &b.at("scaleDownDelaySeconds"),
                format!(
                    "raised to the post-promotion analysis's {}: weir rolls back to the old side, \
                     which must still be running",
                    format_duration(max)
                ),
            );
            scale_down = Some(max);
        }
    }
    notes.on(
        b,
        "autoPromotionSeconds",
        Severity::Dropped,
        at,
        "weir cuts over when the pre-promotion analysis passes (autoPromote: true) or on weir \
         promote",
    );
    for (key, why) in [
        (
            "abortScaleDownDelaySeconds",
            "an abort moves traffic to stable first, then scales the preview down",
        ),
        (
            "scaleDownDelayRevisionLimit",
            "weir runs one old side at most",
        ),
        (
            "antiAffinity",
            "set pod anti-affinity in the Deployment's template; both cohorts copy it",
        ),
        (
            "previewMetadata",
            "weir labels the cohorts' pods itself (weir.dev/cohort)",
        ),
        (
            "activeMetadata",
            "weir labels the cohorts' pods itself (weir.dev/cohort)",
        ),
    ] {
        notes.on(b, key, Severity::Dropped, at, why);
    }
    notes.unread(at, b);
    draft.spec.strategy = Strategy {
        canary: None,
        blue_green: Some(BlueGreenStrategy {
            preview_replicas,
            auto_promote,
            scale_down_delay: scale_down.map(format_duration),
            pre_promotion_analysis: pre,
            post_promotion_analysis: post,
        }),
    };
    Ok(())
}
