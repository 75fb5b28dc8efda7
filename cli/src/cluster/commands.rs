//! `weir promote`, `abort`, `retry`, `pause` and `resume`: requests to the
//! controller, never edits of status.
//!
//! Promote, abort and retry set one annotation of `weir_crds::annotations`
//! to a fresh request id (a merge patch on `metadata.annotations`); the
//! controller acts once per id and records it in `status.acknowledged`,
//! which `--wait` watches for. Pause and resume set and clear
//! `spec.paused`. [`check`] decides, from the Canary alone, whether a
//! request means anything in the current phase and what it will do, so a
//! meaningless one is refused before anything is written.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::await_condition;
use weir_controller::engine::step_label;
use weir_controller::kube::commands::promote_value;
use weir_crds::{Canary, CanaryStatus, PausedReason, Phase, annotations};

use super::{CANARIES, Cluster, Target, percent, program, rollout_of};
use crate::exit::Code;

/// `--wait` and its `--timeout`.
#[derive(Debug, Clone, clap::Args)]
pub struct Wait {
    /// Wait until the controller acknowledges the request.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 30s or 2m.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Arguments of `weir promote`.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// The Canary.
    pub name: String,
    /// Skip every remaining step: the canary's version becomes stable now
    /// (without it: end the current step only).
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: Wait,
}

/// Arguments of `weir abort` and `weir retry`.
#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// The Canary.
    pub name: String,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: Wait,
}

/// Arguments of `weir pause` and `weir resume`.
#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// The Canary.
    pub name: String,
    #[command(flatten)]
    pub target: Target,
}

/// A request carried by an annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// End the current step (`full`: skip every remaining one).
    Promote {
        /// Skip every remaining step.
        full: bool,
    },
    /// Traffic back to stable.
    Abort,
    /// Restart an aborted run.
    Retry,
}

impl Request {
    /// The annotation that carries it.
    pub fn annotation(self) -> &'static str {
        match self {
            Request::Promote { .. } => annotations::PROMOTE,
            Request::Abort => annotations::ABORT,
            Request::Retry => annotations::RETRY,
        }
    }

    /// The annotation's value for request `id`.
    pub fn value(self, id: &str) -> String {
        match self {
            Request::Promote { full } => promote_value(id, full),
            Request::Abort | Request::Retry => id.to_string(),
        }
    }

    /// The id of this kind the controller acted on last.
    pub fn acknowledged(self, status: &CanaryStatus) -> Option<&str> {
        let ack = &status.acknowledged;
        match self {
            Request::Promote { .. } => ack.promote.as_deref(),
            Request::Abort => ack.abort.as_deref(),
            Request::Retry => ack.retry.as_deref(),
        }
        .map(str::trim)
    }

    fn verb(self) -> &'static str {
        match self {
            Request::Promote { .. } => "promote",
            Request::Abort => "abort",
            Request::Retry => "retry",
        }
    }
}

/// A fresh request id: the time to the nanosecond (RFC 3339), unique for
/// one person's requests and readable in `kubectl describe`.
pub fn request_id(now: Timestamp) -> String {
    format!("{now:.9}")
}

/// What `request` will do to `canary`, in a sentence; or why it means
/// nothing in the Canary's phase (the engine would ignore it).
pub fn check(request: Request, canary: &Canary) -> Result<String, String> {
    let name = canary.metadata.name.as_deref().unwrap_or_default();
    let status = canary.status.clone().unwrap_or_default();
    let phase = status.phase;
    let stable = status.stable_revision.as_deref().unwrap_or("?");
    let candidate = status.canary_revision.as_deref().unwrap_or("?");
    let cli = program();
    let refuse = |why: String| Err(format!("cannot {} {name}: {why}", request.verb()));
    match request {
        Request::Promote { full } => match phase {
            Phase::Progressing | Phase::Paused if full => Ok(format!(
                "promoting {name} fully: the remaining steps are skipped and revision {candidate} \
                 becomes stable (traffic stays on the canary until stable runs it)"
            )),
            Phase::Progressing | Phase::Paused => {
                let step = rollout_of(canary)
                    .map(|r| step_label(&r, &status))
                    .unwrap_or_else(|_| format!("step {}", status.current_step + 1));
                Ok(format!(
                    "promoting {name} by one step: {step} ends now and the run goes on \
                     (`{cli} promote {name} --full` skips every remaining step)"
                ))
            }
            Phase::Promoting => refuse(format!("it is already promoting revision {candidate}")),
            Phase::Aborted => refuse(format!(
                "it is Aborted; `{cli} retry {name}` restarts the run of {candidate}"
            )),
            _ => refuse(format!(
                "it is {phase}: promote acts on a run in progress (Progressing or Paused)"
            )),
        },
        Request::Abort => match phase {
            Phase::Progressing | Phase::Paused | Phase::Promoting => Ok(format!(
                "aborting {name}: all traffic goes back to stable ({stable}) first, then the canary \
                 ({candidate}) scales down once its open streams drain"
            )),
            Phase::Aborted => refuse("it is already Aborted, traffic is on stable".into()),
            _ => refuse(format!("it is {phase}, no run is in progress")),
        },
        Request::Retry => match phase {
            Phase::Aborted
                if status.canary_revision.is_some()
                    && status.canary_revision != status.stable_revision =>
            {
                Ok(format!(
                    "retrying {name}: revision {candidate} starts again from its first step"
                ))
            }
            Phase::Aborted => refuse("the aborted run has no canary revision left to retry".into()),
            _ => refuse(format!("it is {phase}; retry restarts an Aborted run")),
        },
    }
}

/// Runs `weir promote`.
pub fn promote(args: &PromoteArgs) -> Result<Code> {
    send(
        &args.name,
        &args.target,
        &args.wait,
        Request::Promote { full: args.full },
    )
}

/// Runs `weir abort`.
pub fn abort(args: &RequestArgs) -> Result<Code> {
    send(&args.name, &args.target, &args.wait, Request::Abort)
}

/// Runs `weir retry`.
pub fn retry(args: &RequestArgs) -> Result<Code> {
    send(&args.name, &args.target, &args.wait, Request::Retry)
}

fn send(name: &str, target: &Target, wait: &Wait, request: Request) -> Result<Code> {
    super::block_on(async {
        let cluster = super::connect(target).await?;
        let canary = cluster.canary(name).await?;
        let plan = check(request, &canary).map_err(|e| anyhow!(e))?;
        println!("{plan}");
        let id = request_id(Timestamp::now());
        let body = serde_json::json!({
            "metadata": {"annotations": {request.annotation(): request.value(&id)}}
        });
        patch(&cluster, name, &body).await?;
        println!("requested: {}={}", request.annotation(), request.value(&id));
        if wait.wait {
            let status = acknowledgement(&cluster, name, request, &id, wait.timeout).await?;
            let message = if status.message.is_empty() {
                String::new()
            } else {
                format!(": {}", status.message)
            };
            println!(
                "acknowledged by the controller; {name} is {}{message}",
                status.phase
            );
        } else {
            println!(
                "the controller acts on it at its next reconcile: `{} status {name}` shows it",
                program()
            );
        }
        Ok(Code::Success)
    })
}

/// Waits until the controller records `id` as acted on; the status then.
async fn acknowledgement(
    cluster: &Cluster,
    name: &str,
    request: Request,
    id: &str,
    timeout: Duration,
) -> Result<CanaryStatus> {
    let acknowledged = move |c: Option<&Canary>| {
        c.and_then(|c| c.status.as_ref())
            .is_some_and(|s| request.acknowledged(s) == Some(id))
    };
    let waited = tokio::time::timeout(
        timeout,
        await_condition(cluster.canaries(), name, acknowledged),
    )
    .await;
    match waited {
        Ok(Ok(Some(canary))) => Ok(canary.status.unwrap_or_default()),
        Ok(Ok(None)) => bail!("Canary {name} disappeared while waiting"),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("watching Canary {name}"))),
        Err(_) => bail!(
            "the controller did not acknowledge the {} request within {}: is it running? \
             (its pods log every reconcile; the request stays set and is acted on when it runs)",
            request.verb(),
            humantime::format_duration(timeout)
        ),
    }
}

/// Merge-patches Canary `name`.
async fn patch(cluster: &Cluster, name: &str, body: &serde_json::Value) -> Result<Canary> {
    cluster
        .canaries()
        .patch(name, &PatchParams::default(), &Patch::Merge(body))
        .await
        .map_err(|e| cluster.explain(e, cluster.call("patch", CANARIES, Some(name))))
}

/// Runs `weir pause`.
pub fn pause(args: &PauseArgs) -> Result<Code> {
    set_paused(args, true)
}

/// Runs `weir resume`.
pub fn resume(args: &PauseArgs) -> Result<Code> {
    set_paused(args, false)
}

/// What setting `spec.paused` to `paused` does to `canary`: Ok(None) when
/// it is set so already, Err when resuming cannot help.
pub fn pause_plan(canary: &Canary, paused: bool) -> Result<Option<String>, String> {
    let name = canary.metadata.name.as_deref().unwrap_or_default();
    let status = canary.status.clone().unwrap_or_default();
    let cli = program();
    let running = matches!(status.phase, Phase::Progressing | Phase::Paused);
    let held_otherwise =
        status.phase == Phase::Paused && status.paused_reason != Some(PausedReason::Manual);
    match (paused, canary.spec.paused) {
        (true, true) => Ok(None),
        (false, false) if held_otherwise => Err(format!(
            "cannot resume {name}: it is not paused by `{cli} pause` but by {}; `{cli} promote {name}` \
             ends it (or `{cli} abort {name}`)",
            match status.paused_reason {
                Some(PausedReason::Inconclusive) => "an inconclusive analysis",
                Some(PausedReason::AwaitingPromotion) => "blue-green awaiting promotion",
                _ => "a pause step",
            }
        )),
        (false, false) => Ok(None),
        (true, false) if running => {
            let step = rollout_of(canary)
                .map(|r| step_label(&r, &status))
                .unwrap_or_else(|_| status.phase.to_string());
            Ok(Some(format!(
                "pausing {name} at {step}: traffic stays at {} canary until `{cli} resume {name}`",
                percent(status.canary_weight)
            )))
        }
        (true, false) => Ok(Some(format!(
            "pausing {name}: no run is in progress ({}); the next one holds as soon as it starts, \
             until `{cli} resume {name}`",
            status.phase
        ))),
        (false, true) if running => Ok(Some(format!(
            "resuming {name}: the current step starts over (its timers and evidence do not span the pause)"
        ))),
        (false, true) => Ok(Some(format!("resuming {name}: runs will no longer hold"))),
    }
}

fn set_paused(args: &PauseArgs, paused: bool) -> Result<Code> {
    super::block_on(async {
        let cluster = super::connect(&args.target).await?;
        let canary = cluster.canary(&args.name).await?;
        let Some(plan) = pause_plan(&canary, paused).map_err(|e| anyhow!(e))? else {
            println!(
                "{} is already {} (spec.paused is {})",
                args.name,
                if paused { "paused" } else { "not paused" },
                if paused { "set" } else { "unset" }
            );
            return Ok(Code::Success);
        };
        println!("{plan}");
        // Resuming removes the field: `paused` is false when absent.
        let value = if paused {
            serde_json::Value::Bool(true)
        } else {
            serde_json::Value::Null
        };
        patch(
            &cluster,
            &args.name,
            &serde_json::json!({"spec": {"paused": value}}),
        )
        .await?;
        Ok(Code::Success)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{canary, progressing};
    use std::collections::BTreeMap;
    use weir_controller::kube::commands::from_annotations;

    fn in_phase(phase: Phase) -> Canary {
        let mut status = progressing();
        status["phase"] = phase.as_str().into();
        canary(status)
    }

    #[test]
    fn each_request_is_refused_where_the_engine_would_ignore_it() {
        let allowed = |request: Request| -> Vec<Phase> {
            Phase::ALL
                .into_iter()
                .filter(|p| check(request, &in_phase(*p)).is_ok())
                .collect()
        };
        assert_eq!(
            allowed(Request::Promote { full: true }),
            [Phase::Progressing, Phase::Paused]
        );
        assert_eq!(
            allowed(Request::Promote { full: false }),
            [Phase::Progressing, Phase::Paused]
        );
        assert_eq!(
            allowed(Request::Abort),
            [Phase::Progressing, Phase::Paused, Phase::Promoting]
        );
        assert_eq!(allowed(Request::Retry), [Phase::Aborted]);
        let refusal = check(Request::Abort, &in_phase(Phase::Idle)).expect_err("refused");
        assert_eq!(
            refusal,
            "cannot abort chat: it is Idle, no run is in progress"
        );
        let refusal = check(Request::Retry, &in_phase(Phase::Progressing)).expect_err("refused");
        assert!(
            refusal.contains("retry restarts an Aborted run"),
            "{refusal}"
        );
    }

    #[test]
    fn the_plan_says_what_happens() {
        let step = check(
            Request::Promote { full: false },
            &in_phase(Phase::Progressing),
        )
        .expect("allowed");
        assert!(step.contains("step 2/4: analysis ends now"), "{step}");
        let abort = check(Request::Abort, &in_phase(Phase::Paused)).expect("allowed");
        assert!(
            abort.contains("back to stable (5d8f9c0a11) first"),
            "{abort}"
        );
        let mut status = progressing();
        status["phase"] = "Aborted".into();
        status["canaryRevision"] = "5d8f9c0a11".into();
        let nothing = check(Request::Retry, &canary(status)).expect_err("same as stable");
        assert!(nothing.contains("no canary revision left"), "{nothing}");
    }

    #[test]
    fn values_are_what_the_controller_reads() {
        let id = request_id(Timestamp::from_second(1_700_000_000).expect("valid"));
        assert_eq!(id, "2023-11-14T22:13:20.000000000Z");
        for request in [
            Request::Promote { full: true },
            Request::Promote { full: false },
            Request::Abort,
            Request::Retry,
        ] {
            let annotations =
                BTreeMap::from([(request.annotation().to_string(), request.value(&id))]);
            let commands = from_annotations(&annotations);
            let read = match request {
                Request::Promote { .. } => commands.promote.map(|(i, full)| (i, Some(full))),
                Request::Abort => commands.abort.map(|i| (i, None)),
                Request::Retry => commands.retry.map(|i| (i, None)),
            };
            let full = match request {
                Request::Promote { full } => Some(full),
                _ => None,
            };
            assert_eq!(read, Some((id.clone(), full)), "{request:?}");
        }
    }

    #[test]
    fn pause_and_resume_are_idempotent_and_resume_points_at_promote() {
        let running = in_phase(Phase::Progressing);
        let plan = pause_plan(&running, true).expect("ok").expect("a change");
        assert!(plan.contains("at step 2/4: analysis"), "{plan}");
        assert!(plan.contains("20% canary"), "{plan}");
        assert_eq!(
            pause_plan(&running, false),
            Ok(None),
            "not paused: nothing to resume"
        );
        let mut held = running.clone();
        held.spec.paused = true;
        assert_eq!(pause_plan(&held, true), Ok(None));
        assert!(pause_plan(&held, false).expect("ok").is_some());
        let mut step = progressing();
        step["phase"] = "Paused".into();
        step["pausedReason"] = "Step".into();
        let refusal = pause_plan(&canary(step), false).expect_err("promote, not resume");
        assert!(refusal.contains("promote chat"), "{refusal}");
    }
}
