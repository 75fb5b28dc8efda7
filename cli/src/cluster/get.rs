//! `weir get [-A | -n NS]`: the Canaries of a namespace (or all) in a
//! table, one line each: where the run is and the last verdict in a few
//! words. [`Row::new`] and [`render`] are pure; `run` only lists.

use std::io::Write as _;

use anyhow::{Context as _, Result};
use jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt as _};
use serde::Serialize;
use weir_controller::engine::step_label;
use weir_crds::{AnalysisStatus, Canary, Phase, VerdictStatus};

use super::{ApiCall, CANARIES, Target, age, percent, rollout_of, table};
use crate::exit::Code;
use crate::run::Output;

/// Arguments of `weir get`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// List the Canaries of every namespace.
    #[arg(long = "all-namespaces", short = 'A', conflicts_with = "namespace")]
    pub all: bool,
    /// `text`: a table; `json`: one JSON object per Canary and line.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// One Canary's line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Where the run is.
    pub phase: Phase,
    /// The current step (`2/4: analysis`), `-` outside a run.
    pub step: String,
    /// The canary's share of traffic in percent.
    pub canary_weight: f64,
    /// The version stable serves.
    pub stable_revision: Option<String>,
    /// The version on trial.
    pub canary_revision: Option<String>,
    /// The last verdict in a few words, `-` before the first.
    pub verdict: String,
    /// When the Canary was created.
    pub created: Option<Timestamp>,
}

impl Row {
    /// The line of `canary`.
    pub fn new(canary: &Canary) -> Row {
        let status = canary.status.clone().unwrap_or_default();
        let step = match rollout_of(canary) {
            Err(_) => "invalid spec".to_string(),
            Ok(_) if !matches!(status.phase, Phase::Progressing | Phase::Paused) => "-".into(),
            Ok(rollout) => {
                let label = step_label(&rollout, &status);
                label.strip_prefix("step ").unwrap_or(&label).to_string()
            }
        };
        Row {
            namespace: canary.namespace().unwrap_or_default(),
            name: canary.name_any(),
            phase: status.phase,
            step,
            canary_weight: status.canary_weight,
            stable_revision: status.stable_revision.clone(),
            canary_revision: status.canary_revision.clone(),
            verdict: status
                .last_analysis
                .as_ref()
                .map_or_else(|| "-".to_string(), verdict),
            created: canary.metadata.creation_timestamp.as_ref().map(|t| t.0),
        }
    }
}

/// A verdict in a few words: the verdict and the effect that decided it
/// (`Abort: ttft.p95 exceeds`, `Continue: errors insufficient`).
pub fn verdict(analysis: &AnalysisStatus) -> String {
    let telling = |findings: &[&str]| {
        analysis
            .metrics
            .iter()
            .find(|m| findings.contains(&m.finding.as_str()))
    };
    let effect = match analysis.verdict {
        VerdictStatus::Abort => telling(&["exceeds"]),
        VerdictStatus::Continue => telling(&["undecided", "insufficient"]),
        VerdictStatus::Promote => None,
    };
    match effect {
        Some(m) => format!("{}: {} {}", analysis.verdict.as_str(), m.name, m.finding),
        None => analysis.verdict.as_str().to_string(),
    }
}

/// The table, with a NAMESPACE column when listing all namespaces.
pub fn render(rows: &[Row], all_namespaces: bool, now: Timestamp) -> String {
    let mut header = vec![
        "NAME", "PHASE", "STEP", "WEIGHT", "STABLE", "CANARY", "VERDICT", "AGE",
    ];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut lines = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for r in rows {
        let mut line = vec![
            r.name.clone(),
            r.phase.to_string(),
            r.step.clone(),
            percent(r.canary_weight),
            r.stable_revision.clone().unwrap_or_else(|| "-".into()),
            r.canary_revision.clone().unwrap_or_else(|| "-".into()),
            r.verdict.clone(),
            r.created.map_or_else(|| "-".into(), |t| age(t, now)),
        ];
        if all_namespaces {
            line.insert(0, r.namespace.clone());
        }
        lines.push(line);
    }
    table(&lines)
}

/// Runs `weir get`.
pub fn run(args: &Args) -> Result<Code> {
    super::block_on(async {
        let cluster = super::connect(&args.target).await?;
        let (api, namespace): (Api<Canary>, _) = if args.all {
            (Api::all(cluster.client.clone()), None)
        } else {
            (cluster.canaries(), Some(cluster.namespace.as_str()))
        };
        let listed = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            // Listing a type the server knows never answers 404.
            Err(kube::Error::Api(s)) if s.code == 404 => return Err(super::crd_missing()),
            Err(e) => {
                let call = ApiCall {
                    verb: "list",
                    resource: CANARIES,
                    name: None,
                    namespace,
                };
                return Err(cluster.explain(e, call));
            }
        };
        let mut rows: Vec<Row> = listed.iter().map(Row::new).collect();
        rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        if rows.is_empty() {
            match namespace {
                Some(ns) => eprintln!("No Canaries in namespace {ns}."),
                None => eprintln!("No Canaries in any namespace."),
            }
            return Ok(Code::Success);
        }
        let text = match args.output {
            Output::Text => render(&rows, args.all, Timestamp::now()),
            Output::Json => rows.iter().try_fold(String::new(), |mut out, r| {
                out.push_str(&serde_json::to_string(r)?);
                out.push('\n');
                Ok::<_, serde_json::Error>(out)
            })?,
        };
        std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("writing to stdout")?;
        Ok(Code::Success)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{at, canary, progressing};

    #[test]
    fn a_line_says_phase_step_weight_and_verdict() {
        let mut c = canary(progressing());
        c.metadata.creation_timestamp = Some(at(0));
        let row = Row::new(&c);
        assert_eq!(row.step, "2/4: analysis");
        assert_eq!(row.verdict, "Continue: ttft.p95 undecided");
        let text = render(std::slice::from_ref(&row), false, at(600).0);
        let mut lines = text.lines();
        let header = lines.next().expect("header");
        assert!(
            header.starts_with("NAME") && header.ends_with("AGE"),
            "{header}"
        );
        let line: Vec<&str> = lines
            .next()
            .expect("row")
            .split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            line,
            [
                "chat",
                "Progressing",
                "2/4: analysis",
                "20%",
                "5d8f9c0a11",
                "7c1a02bb33",
                "Continue: ttft.p95 undecided",
                "10m"
            ]
        );
        let all = render(&[row], true, at(600).0);
        assert!(all.starts_with("NAMESPACE"), "{all}");
        assert!(
            all.lines().nth(1).is_some_and(|l| l.starts_with("llm ")),
            "{all}"
        );
    }

    #[test]
    fn outside_a_run_there_is_no_step() {
        let mut status = progressing();
        status["phase"] = "Succeeded".into();
        status["lastAnalysis"]["verdict"] = "Promote".into();
        let row = Row::new(&canary(status));
        assert_eq!(row.step, "-");
        assert_eq!(row.verdict, "Promote");
    }

    #[test]
    fn an_abort_names_the_effect_beyond_its_margin() {
        let mut status = progressing();
        status["lastAnalysis"]["verdict"] = "Abort".into();
        status["lastAnalysis"]["metrics"][0]["finding"] = "exceeds".into();
        assert_eq!(Row::new(&canary(status)).verdict, "Abort: ttft.p95 exceeds");
    }
}
