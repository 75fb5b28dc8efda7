//! `weir status NAME [--watch]`: where a Canary's run stands and why.
//!
//! The I/O reads the Canary, its two Deployments and its Events into an
//! [`Observed`]; [`View::new`] turns that into everything shown, and
//! [`render`] into text (or the view is printed as one JSON object per
//! line). Both are pure, so what a person reads is tested from a Canary
//! value alone.
//!
//! `--watch` follows a kube watch of the Canary (not polling): one frame
//! per change, until the run ends (exit code as DESIGN.md fixes it) or
//! Ctrl-C.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};

use anyhow::{Context as _, Result, anyhow};
use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, ResourceExt as _};
use serde::Serialize;
use weir_controller::engine::spec::{Step, Strategy, format_duration};
use weir_controller::engine::{BLUE_GREEN_STAGES, reasons, step_label};
use weir_crds::{
    AbortStatus, AnalysisStatus, Canary, CanaryStatus, Cohort, HistoryEntry, PausedReason, Phase,
    TrafficBackend, names,
};

use super::{Cluster, Target, age, percent, program, rollout_of, table};
use crate::exit::Code;
use crate::run::Output;
use crate::signals::Shutdown;

/// Events shown: the most recent ones.
const RECENT_EVENTS: usize = 12;

/// Arguments of `weir status`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "With --watch, exit codes: 0 promoted, 3 aborted, 4 aborted as \
    inconclusive (or interrupted before the run ended), 1 error."
)]
pub struct Args {
    /// The Canary.
    pub name: String,
    #[command(flatten)]
    pub target: Target,
    /// Redraw on every change of the Canary until the run ends or Ctrl-C.
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// `text` for people; `json`: one JSON object per line (per change with --watch).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Everything `status` reads about one Canary.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The Canary.
    pub canary: Canary,
    /// Its stable copy (`<target>-stable`), if it exists.
    pub stable: Option<Deployment>,
    /// The target Deployment (the canary cohort), if it exists.
    pub target: Option<Deployment>,
    /// core/v1 Events about the Canary, any order.
    pub events: Vec<Event>,
}

/// What `status` shows, as printed with `-o json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    /// The Canary's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Where the run is.
    pub phase: Phase,
    /// The controller's one line.
    pub message: String,
    /// Why it is paused (phase Paused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<PausedReason>,
    /// `spec.paused` (`weir pause`).
    pub paused_by_spec: bool,
    /// The current step for people (`step 2/4: analysis`), or the phase.
    pub step: String,
    /// The steps of the strategy.
    pub steps: Vec<StepView>,
    /// Why the spec cannot run, when it cannot (then `steps` is empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec_error: Option<String>,
    /// The version stable serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// The version on trial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,
    /// The canary's share of traffic, in percent.
    pub canary_weight: f64,
    /// The traffic table's generation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_generation: Option<u64>,
    /// Weights per cohort with their Services and revisions.
    pub traffic: Vec<TrafficBackend>,
    /// Replicas per cohort.
    pub replicas: Vec<CohortReplicasView>,
    /// The latest verdict with every effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,
    /// Why the run was aborted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortStatus>,
    /// Ready, Progressing, AnalysisPassing.
    pub conditions: Vec<Condition>,
    /// Promotions, aborts, rollbacks; newest last.
    pub history: Vec<HistoryEntry>,
    /// Recent Events about the Canary; newest last.
    pub events: Vec<EventView>,
}

/// One step and where the run stands on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    /// 1-based.
    pub number: usize,
    /// e.g. `setWeight 20%`, `analysis (min 1m, max 15m)`.
    pub step: String,
    /// Where the run is relative to it.
    pub state: StepState,
}

/// Where the run stands on one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StepState {
    /// Behind the run.
    Done,
    /// The run is on it.
    Current,
    /// The run was aborted on it.
    Aborted,
    /// Ahead.
    Pending,
}

/// One cohort's replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CohortReplicasView {
    /// stable or canary.
    pub cohort: Cohort,
    /// The Deployment that runs it (Kubernetes mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// What the controller wants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wanted: Option<u32>,
    /// Ready now (from the Deployment's status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<u32>,
}

/// One Event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// When it (last) happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub kind: String,
    /// A reason constant, e.g. `WeightSet`.
    pub reason: String,
    /// What happened.
    pub message: String,
    /// How many times (a series counts more than one).
    pub count: u32,
}

impl View {
    /// Everything shown about `observed`.
    pub fn new(observed: &Observed) -> View {
        let canary = &observed.canary;
        let status = canary.status.clone().unwrap_or_default();
        let (steps, spec_error, step) = match rollout_of(canary) {
            Ok(rollout) => (
                steps(&rollout.strategy, &status),
                None,
                step_label(&rollout, &status),
            ),
            Err(e) => (Vec::new(), Some(e.to_string()), status.phase.to_string()),
        };
        let target_name = canary.spec.target_ref.as_ref().map(|t| t.name.clone());
        let replicas = Cohort::BOTH
            .into_iter()
            .map(|cohort| {
                let (deployment, object) = match cohort {
                    Cohort::Stable => (
                        target_name.as_deref().map(names::stable_deployment),
                        observed.stable.as_ref(),
                    ),
                    Cohort::Canary => (target_name.clone(), observed.target.as_ref()),
                };
                CohortReplicasView {
                    cohort,
                    deployment,
                    wanted: status.replicas.map(|r| r.get(cohort)),
                    ready: object
                        .and_then(|d| d.status.as_ref())
                        .map(|s| s.ready_replicas.unwrap_or(0).max(0).unsigned_abs()),
                }
            })
            .filter(|r| r.deployment.is_some() || r.wanted.is_some())
            .collect();
        // A graph: each component's two Deployments, in start order, as
        // the controller last saw them.
        let replicas = if status.components.is_empty() {
            replicas
        } else {
            status
                .components
                .iter()
                .flat_map(|c| {
                    [
                        CohortReplicasView {
                            cohort: Cohort::Stable,
                            deployment: Some(names::stable_deployment(&c.name)),
                            wanted: Some(c.replicas.stable),
                            ready: Some(c.ready.stable),
                        },
                        CohortReplicasView {
                            cohort: Cohort::Canary,
                            deployment: Some(c.name.clone()),
                            wanted: Some(c.replicas.canary),
                            ready: Some(c.ready.canary),
                        },
                    ]
                })
                .collect()
        };
        let uid = canary.metadata.uid.as_deref();
        let mut events: Vec<EventView> = observed
            .events
            .iter()
            .filter(|e| match (uid, e.involved_object.uid.as_deref()) {
                (Some(mine), Some(theirs)) => mine == theirs,
                _ => true,
            })
            .map(EventView::from)
            .collect();
        events.sort_by_key(|e| e.at);
        let skip = events.len().saturating_sub(RECENT_EVENTS);
        events.drain(..skip);
        View {
            name: canary.name_any(),
            namespace: canary.namespace().unwrap_or_default(),
            phase: status.phase,
            message: status.message.clone(),
            paused_reason: status.paused_reason,
            paused_by_spec: canary.spec.paused,
            step,
            steps,
            spec_error,
            stable_revision: status.stable_revision.clone(),
            canary_revision: status.canary_revision.clone(),
            canary_weight: status.canary_weight,
            traffic_generation: status.traffic.as_ref().map(|t| t.generation),
            traffic: status
                .traffic
                .as_ref()
                .map(|t| t.backends.clone())
                .unwrap_or_default(),
            replicas,
            analysis: status.last_analysis.clone(),
            abort: status.abort.clone(),
            conditions: status.conditions.clone(),
            history: status.history.clone(),
            events,
        }
    }
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        // events.k8s.io Events (what the controller writes) carry eventTime
        // and a series; core/v1 writers use the timestamps and count.
        let at = e
            .series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
            .or(e.event_time.as_ref().map(|t| t.0))
            .or(e.last_timestamp.as_ref().map(|t| t.0))
            .or(e.first_timestamp.as_ref().map(|t| t.0))
            .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let count = e
            .series
            .as_ref()
            .and_then(|s| s.count)
            .or(e.count)
            .unwrap_or(1)
            .max(1)
            .unsigned_abs();
        EventView {
            at,
            kind: e.type_.clone().unwrap_or_else(|| "Normal".into()),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            count,
        }
    }
}

/// The strategy's steps (blue-green: its stages) and where the run is.
fn steps(strategy: &Strategy, status: &CanaryStatus) -> Vec<StepView> {
    let texts: Vec<String> = match strategy {
        Strategy::Canary { steps, .. } => steps.iter().map(describe).collect(),
        Strategy::BlueGreen(_) => BLUE_GREEN_STAGES.iter().map(|s| s.to_string()).collect(),
    };
    let current = status.current_step as usize;
    texts
        .into_iter()
        .enumerate()
        .map(|(i, step)| {
            let state = match status.phase {
                Phase::Progressing | Phase::Paused if i == current => StepState::Current,
                Phase::Aborted if i == current => StepState::Aborted,
                Phase::Progressing | Phase::Paused | Phase::Aborted if i < current => {
                    StepState::Done
                }
                Phase::Promoting | Phase::Succeeded => StepState::Done,
                _ => StepState::Pending,
            };
            StepView {
                number: i + 1,
                step,
                state,
            }
        })
        .collect()
}

/// One canary step for people.
fn describe(step: &Step) -> String {
    match step {
        Step::SetWeight(w) => format!("setWeight {w}%"),
        Step::Pause(Some(d)) => format!("pause {}", format_duration(*d)),
        Step::Pause(None) => format!("pause (until `{} promote`)", program()),
        Step::Analysis(b) if b.min.is_zero() => {
            format!("analysis (max {})", format_duration(b.max))
        }
        Step::Analysis(b) => format!(
            "analysis (min {}, max {})",
            format_duration(b.min),
            format_duration(b.max)
        ),
    }
}

/// The exit code of a run that has ended, None while it goes on.
pub fn outcome(status: &CanaryStatus) -> Option<Code> {
    match status.phase {
        Phase::Succeeded => Some(Code::Success),
        Phase::Aborted => Some(match status.abort.as_ref().map(|a| a.reason.as_str()) {
            Some(reasons::INCONCLUSIVE) => Code::Inconclusive,
            _ => Code::Aborted,
        }),
        _ => None,
    }
}

/// The view as text for people; times relative to `now`.
pub fn render(view: &View, now: Timestamp) -> String {
    let mut out = String::new();
    let ago = |t: Timestamp| format!("{} ago", age(t, now));
    let _ = writeln!(out, "Canary {} (namespace {})", view.name, view.namespace);
    let mut phase = view.phase.to_string();
    if let Some(reason) = view.paused_reason {
        let _ = write!(phase, " ({reason:?})");
    }
    if !view.message.is_empty() {
        let _ = write!(phase, ": {}", view.message);
    }
    let _ = writeln!(out, "Phase:      {phase}");
    if view.paused_by_spec && view.phase != Phase::Paused {
        let _ = writeln!(
            out,
            "            spec.paused is set: the run holds until `{} resume {}`",
            program(),
            view.name
        );
    }
    let _ = writeln!(
        out,
        "Revisions:  stable {}, canary {}",
        view.stable_revision.as_deref().unwrap_or("-"),
        view.canary_revision.as_deref().unwrap_or("-")
    );

    let _ = writeln!(out, "\nSteps:");
    if let Some(e) = &view.spec_error {
        let _ = writeln!(out, "  the spec cannot run: {e}");
    }
    for s in &view.steps {
        let mark = match s.state {
            StepState::Done => "✓",
            StepState::Current => "▶",
            StepState::Aborted => "✗",
            StepState::Pending => " ",
        };
        let _ = writeln!(out, "  {mark} {}. {}", s.number, s.step);
    }

    if !view.traffic.is_empty() {
        let generation = view
            .traffic_generation
            .map(|g| format!(" (generation {g})"))
            .unwrap_or_default();
        let _ = writeln!(out, "\nTraffic{generation}:");
        let mut rows = vec![cells(["COHORT", "WEIGHT", "SERVICE", "REVISION"])];
        for b in &view.traffic {
            let service = match (&b.service, b.port, &b.url) {
                (Some(s), Some(p), _) => format!("{s}:{p}"),
                (Some(s), None, _) => s.clone(),
                (None, _, Some(u)) => u.clone(),
                _ => "-".into(),
            };
            rows.push(vec![
                b.cohort.to_string(),
                percent(b.weight),
                service,
                b.revision.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        push_indented(&mut out, &table(&rows));
    }

    if !view.replicas.is_empty() {
        let _ = writeln!(out, "\nReplicas:");
        let mut rows = vec![cells(["COHORT", "DEPLOYMENT", "WANTED", "READY"])];
        let show = |n: Option<u32>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
        for r in &view.replicas {
            rows.push(vec![
                r.cohort.to_string(),
                r.deployment.clone().unwrap_or_else(|| "-".into()),
                show(r.wanted),
                show(r.ready),
            ]);
        }
        push_indented(&mut out, &table(&rows));
    }

    if let Some(a) = &view.analysis {
        let _ = writeln!(out, "\nAnalysis:   {:?}, {}", a.verdict, ago(a.at.0));
        if !a.rule.is_empty() {
            let _ = writeln!(out, "  {}", a.rule);
        }
        if !a.metrics.is_empty() {
            let mut rows = vec![cells([
                "EFFECT",
                "FINDING",
                "ESTIMATE [INTERVAL] vs MARGIN",
                "STABLE N",
                "CANARY N",
            ])];
            for m in &a.metrics {
                rows.push(vec![
                    m.name.clone(),
                    m.finding.clone(),
                    effect_numbers(m),
                    m.stable_n.to_string(),
                    m.canary_n.to_string(),
                ]);
            }
            push_indented(&mut out, &table(&rows));
        }
    }

    if let Some(a) = &view.abort {
        let _ = writeln!(
            out,
            "\nAborted:    {}: {} ({})",
            a.reason,
            a.message,
            ago(a.at.0)
        );
    }

    if !view.conditions.is_empty() {
        let _ = writeln!(out, "\nConditions:");
        let mut rows = vec![cells(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"])];
        for c in &view.conditions {
            rows.push(vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                age(c.last_transition_time.0, now),
                c.message.clone(),
            ]);
        }
        push_indented(&mut out, &table(&rows));
    }

    if !view.history.is_empty() {
        let _ = writeln!(out, "\nHistory:");
        let mut rows = vec![cells(["EVENT", "REVISION", "AGE", "REASON"])];
        for h in &view.history {
            rows.push(vec![
                h.event.as_str().to_string(),
                h.revision.clone().unwrap_or_else(|| "-".into()),
                age(h.at.0, now),
                h.reason.clone(),
            ]);
        }
        push_indented(&mut out, &table(&rows));
    }

    let _ = writeln!(out, "\nEvents:");
    if view.events.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let mut rows = vec![cells(["AGE", "TYPE", "REASON", "MESSAGE"])];
        for e in &view.events {
            let when = e.at.map_or_else(|| "-".to_string(), |t| age(t, now));
            let when = if e.count > 1 {
                format!("{when} (x{})", e.count)
            } else {
                when
            };
            rows.push(vec![
                when,
                e.kind.clone(),
                e.reason.clone(),
                e.message.clone(),
            ]);
        }
        push_indented(&mut out, &table(&rows));
    }
    out
}

/// An effect's estimate, interval and margin. The analysis wrote them
/// formatted in its units (`+4.1% [−1.2%, +9.8%] vs margin +10%`) into the
/// summary, after the effect's name; the raw numbers stand in when it did
/// not.
fn effect_numbers(m: &weir_crds::EffectStatus) -> String {
    let summary = m
        .summary
        .strip_prefix(m.name.as_str())
        .unwrap_or(&m.summary)
        .trim();
    if !summary.is_empty() {
        return summary.to_string();
    }
    let show = |v: Option<f64>| v.map_or_else(|| "?".to_string(), |v| format!("{v:+.4}"));
    let mut text = format!("{} [{}, {}]", show(m.estimate), show(m.low), show(m.high));
    if m.margin.is_some() {
        let _ = write!(text, " vs margin {}", show(m.margin));
    }
    text
}

fn cells<const N: usize>(header: [&str; N]) -> Vec<String> {
    header.iter().map(|s| s.to_string()).collect()
}

fn push_indented(out: &mut String, block: &str) {
    for line in block.lines() {
        let _ = writeln!(out, "  {line}");
    }
}

/// Runs `weir status`.
pub fn run(args: &Args) -> Result<Code> {
    super::block_on(async {
        let cluster = super::connect(&args.target).await?;
        let canary = cluster.canary(&args.name).await?;
        let mut printer = Printer::new(args.output);
        let code = canary.status.as_ref().and_then(outcome);
        let shown = canary.resource_version();
        printer.frame(&observe(&cluster, canary).await)?;
        if !args.watch {
            return Ok(Code::Success);
        }
        if let Some(code) = code {
            return Ok(code);
        }
        let mut interrupted = Shutdown::listen()?;
        tokio::select! {
            watched = watch(&cluster, &args.name, shown, &mut printer) => watched,
            () = interrupted.recv() => Ok(Code::Inconclusive),
        }
    })
}

/// Follows the Canary until its run ends; one frame per change.
/// `shown` is the resourceVersion of the frame already printed.
async fn watch(
    cluster: &Cluster,
    name: &str,
    mut shown: Option<String>,
    printer: &mut Printer,
) -> Result<Code> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher(cluster.canaries(), config).default_backoff());
    while let Some(event) = stream.next().await {
        let canary = match event {
            Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => c,
            Ok(watcher::Event::Delete(_)) => {
                return Err(anyhow!(
                    "Canary {name} was deleted in namespace {}",
                    cluster.namespace
                ));
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
            Err(e) => {
                if let Some(kube::Error::Api(s)) = watch_cause(&e)
                    && s.code == 403
                {
                    return Err(cluster.explain(
                        kube::Error::Api(s.clone()),
                        cluster.call("watch", super::CANARIES, Some(name)),
                    ));
                }
                // The API server went away for a moment; the watcher
                // reconnects (with backoff) and re-lists.
                tracing::warn!("watching Canary {name}: {e}; retrying");
                continue;
            }
        };
        if shown == canary.resource_version() {
            continue;
        }
        shown = canary.resource_version();
        let code = canary.status.as_ref().and_then(outcome);
        printer.frame(&observe(cluster, canary).await)?;
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(anyhow!("the watch of Canary {name} ended"))
}

fn watch_cause(e: &watcher::Error) -> Option<&kube::Error> {
    match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => Some(e),
        _ => None,
    }
}

/// Reads what belongs to `canary`: its Deployments and Events. They only
/// add to the picture, so one that cannot be read (a user allowed to read
/// Canaries only) is left out with a warning rather than failing `status`.
async fn observe(cluster: &Cluster, canary: Canary) -> Observed {
    let (stable, target) = match canary.spec.target_ref.as_ref().map(|t| t.name.clone()) {
        Some(target) => (
            optional(cluster.deployment(&names::stable_deployment(&target)).await).flatten(),
            optional(cluster.deployment(&target).await).flatten(),
        ),
        None => (None, None),
    };
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let selector = format!(
        "involvedObject.kind=Canary,involvedObject.name={}",
        canary.name_any()
    );
    let events = events
        .list(&ListParams::default().fields(&selector))
        .await
        .map(|l| l.items)
        .map_err(|e| cluster.explain(e, cluster.call("list", "events", None)));
    Observed {
        canary,
        stable,
        target,
        events: optional(events).unwrap_or_default(),
    }
}

fn optional<T>(read: Result<T>) -> Option<T> {
    read.map_err(|e| tracing::warn!("{e:#}; shown without it"))
        .ok()
}

/// Prints frames: text redrawn in place on a terminal, appended otherwise;
/// JSON one object per line.
struct Printer {
    output: Output,
    terminal: bool,
    frames: usize,
}

impl Printer {
    fn new(output: Output) -> Printer {
        Printer {
            output,
            terminal: std::io::stdout().is_terminal(),
            frames: 0,
        }
    }

    fn frame(&mut self, observed: &Observed) -> Result<()> {
        let view = View::new(observed);
        let text = match self.output {
            Output::Json => {
                let mut line = serde_json::to_string(&view).context("serializing the status")?;
                line.push('\n');
                line
            }
            Output::Text if self.terminal => {
                format!("\x1b[H\x1b[2J{}", render(&view, Timestamp::now()))
            }
            Output::Text if self.frames > 0 => format!("\n{}", render(&view, Timestamp::now())),
            Output::Text => render(&view, Timestamp::now()),
        };
        self.frames += 1;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .context("writing to stdout")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{at, canary, progressing};
    use k8s_openapi::api::core::v1::{EventSeries, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    fn observed(canary: Canary) -> Observed {
        Observed {
            canary,
            stable: None,
            target: None,
            events: Vec::new(),
        }
    }

    fn event(reason: &str, message: &str, second: i64, series: Option<i32>) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(format!("chat.{second}")),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                kind: Some("Canary".into()),
                name: Some("chat".into()),
                uid: Some("u-1".into()),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Normal".into()),
            event_time: Some(MicroTime(at(second).0)),
            series: series.map(|n| EventSeries {
                count: Some(n),
                last_observed_time: Some(MicroTime(at(second + 30).0)),
            }),
            ..Event::default()
        }
    }

    #[test]
    fn the_current_step_is_marked_and_the_analysis_explained() {
        let observed = Observed {
            events: vec![
                event("WeightSet", "canary weight 20%", 50, None),
                event("RolloutStarted", "new revision 7c1a02bb33", 10, None),
            ],
            ..observed(canary(progressing()))
        };
        let view = View::new(&observed);
        let states: Vec<StepState> = view.steps.iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            [
                StepState::Done,
                StepState::Current,
                StepState::Pending,
                StepState::Pending
            ]
        );
        assert_eq!(view.step, "step 2/4: analysis");
        let text = render(&view, at(130).0);
        assert!(
            text.contains("  ▶ 2. analysis (min 1m, max 10m)\n"),
            "{text}"
        );
        assert!(text.contains("  ✓ 1. setWeight 20%\n"), "{text}");
        assert!(
            text.contains("    3. pause (until `weir promote`)\n"),
            "{text}"
        );
        assert!(text.contains("Analysis:   Continue, 30s ago"), "{text}");
        let effect = text
            .lines()
            .find(|l| l.trim_start().starts_with("ttft.p95"))
            .expect("effect row");
        for part in [
            "undecided",
            "+4.1% [−1.2%, +9.8%] vs margin +10%",
            "3130",
            "812",
        ] {
            assert!(effect.contains(part), "{part} missing from {effect:?}");
        }
        let canary_row = text
            .lines()
            .find(|l| l.trim_start().starts_with("canary ") && l.contains("chat-canary"))
            .expect("traffic row");
        assert!(
            canary_row.contains("20%") && canary_row.contains("7c1a02bb33"),
            "{canary_row}"
        );
        // Events newest last, whatever order the API returned them in.
        let started = text.find("RolloutStarted").expect("event");
        let weight = text.find("WeightSet").expect("event");
        assert!(started < weight, "{text}");
        let replicas = text
            .lines()
            .find(|l| l.contains("chat-frontend-stable"))
            .expect("replicas row");
        assert!(replicas.contains('4'), "{replicas}");
    }

    #[test]
    fn a_series_counts_and_dates_from_its_last_observation() {
        let e = EventView::from(&event("WeightSet", "w", 0, Some(3)));
        assert_eq!(e.count, 3);
        assert_eq!(e.at, Some(at(30).0));
        let other = Event {
            involved_object: ObjectReference {
                uid: Some("someone-else".into()),
                ..ObjectReference::default()
            },
            ..event("Old", "of a deleted Canary of the same name", 1, None)
        };
        let view = View::new(&Observed {
            events: vec![other],
            ..observed(canary(progressing()))
        });
        assert!(view.events.is_empty(), "events of another uid are not ours");
    }

    #[test]
    fn an_aborted_run_shows_where_and_why_and_its_exit_code() {
        let mut status = progressing();
        status["phase"] = "Aborted".into();
        status["abort"] = serde_json::json!({
            "reason": "AnalysisFailed", "message": "ttft.p95 +31% above margin +10%", "at": at(120).0
        });
        let c = canary(status);
        let view = View::new(&observed(c.clone()));
        assert_eq!(view.steps[1].state, StepState::Aborted);
        let text = render(&view, at(180).0);
        assert!(
            text.contains("Aborted:    AnalysisFailed: ttft.p95 +31% above margin +10% (60s ago)"),
            "{text}"
        );
        let status = c.status.expect("status");
        assert_eq!(outcome(&status), Some(Code::Aborted));
        let inconclusive = CanaryStatus {
            abort: Some(AbortStatus {
                reason: reasons::INCONCLUSIVE.into(),
                ..status.abort.clone().expect("abort")
            }),
            ..status.clone()
        };
        assert_eq!(outcome(&inconclusive), Some(Code::Inconclusive));
        let done = CanaryStatus {
            phase: Phase::Succeeded,
            ..status.clone()
        };
        assert_eq!(outcome(&done), Some(Code::Success));
        for phase in [
            Phase::Progressing,
            Phase::Paused,
            Phase::Promoting,
            Phase::Idle,
        ] {
            let going = CanaryStatus {
                phase,
                ..status.clone()
            };
            assert_eq!(outcome(&going), None, "{phase}");
        }
    }

    #[test]
    fn a_spec_that_cannot_run_is_said_instead_of_the_steps() {
        let mut c = canary(progressing());
        c.spec.analysis.interval = "soon".into();
        let view = View::new(&observed(c));
        assert!(view.steps.is_empty());
        let text = render(&view, at(200).0);
        assert!(
            text.contains("the spec cannot run: spec.analysis.interval"),
            "{text}"
        );
    }

    #[test]
    fn a_graph_shows_each_component_in_start_order() {
        let mut status = progressing();
        status["components"] = serde_json::json!([
            {"name": "decode", "targetReplicas": 2,
             "replicas": {"stable": 2, "canary": 1}, "ready": {"stable": 2, "canary": 1}},
            {"name": "frontend", "targetReplicas": 2,
             "replicas": {"stable": 2, "canary": 1}, "ready": {"stable": 2, "canary": 0}},
        ]);
        let text = render(&View::new(&observed(canary(status))), at(200).0);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip_while(|l| !l.starts_with("Replicas:"))
            .skip(2)
            .take(4)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            [
                ["stable", "decode-stable", "2", "2"],
                ["canary", "decode", "1", "1"],
                ["stable", "frontend-stable", "2", "2"],
                ["canary", "frontend", "1", "0"],
            ],
            "{text}"
        );
    }

    #[test]
    fn json_is_one_line_with_the_numbers() {
        let view = View::new(&observed(canary(progressing())));
        let line = serde_json::to_string(&view).expect("json");
        assert!(!line.contains('\n'));
        let back: serde_json::Value = serde_json::from_str(&line).expect("parses");
        assert_eq!(back["phase"], "Progressing");
        assert_eq!(back["steps"][1]["state"], "current");
        assert_eq!(back["analysis"]["metrics"][0]["canaryN"], 812);
        assert_eq!(back["traffic"][1]["service"], "chat-canary");
    }
}
