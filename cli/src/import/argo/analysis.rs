//! The analyses a Rollout references: Argo's `AnalysisTemplate` metrics
//! as weir checks, and how long a run of them lasts as a step's bounds.

use std::collections::BTreeMap;
use std::time::Duration;

use weir_controller::engine::spec::{format_duration, parse_duration};
use weir_crds::AnalysisStep;

use super::super::checks::{Check, Checks, Unit, argo_bound, classify};
use super::super::notes::{Notes, Severity};
use super::super::source::Obj;
use super::super::{ImportError, Input, WARMUP};
use super::{GROUP, duration, longer};

/// What the analyses referenced so far contributed: each template's
/// metrics are added once, however many steps use it.
#[derive(Debug, Default)]
pub(super) struct Analyses {
    pub(super) checks: Checks,
    /// Per template: how long one run of it lasts (`None`: until stopped).
    runs: BTreeMap<String, Option<Duration>>,
    /// The shortest metric interval seen: weir has one interval.
    pub(super) interval: Option<Duration>,
}

impl Analyses {
    /// Reads an analysis reference (`templates`, `args`, ...) at `obj`,
    /// adds the templates' metrics, and returns how long a run lasts
    /// (the longest template; `None` when one runs until stopped).
    pub(super) fn reference(
        &mut self,
        obj: &Obj<'_>,
        at: &str,
        input: &Input<'_>,
        notes: &mut Notes,
    ) -> Result<Option<Duration>, ImportError> {
        if obj.has("args") {
            obj.get("args");
            notes.changed(
                at,
                &obj.at("args"),
                "weir fills $pods, $namespace and $cohort into its own queries; the args \
                 parametrized the templates' queries",
            );
        }
        notes.on(
            obj,
            "dryRun",
            Severity::Dropped,
            at,
            "weir has no dry-run metrics: every metric decides",
        );
        notes.on(
            obj,
            "analysisRunMetadata",
            Severity::Dropped,
            at,
            "weir creates no AnalysisRuns: the verdicts are in the Canary's status and Events",
        );
        let mut longest = Some(Duration::ZERO);
        for t in obj.objs("templates")? {
            let name = t.str("templateName")?.ok_or_else(|| ImportError::Field {
                field: t.at("templateName"),
                problem: "is missing; name the AnalysisTemplate, e.g. templateName: success-rate"
                    .into(),
            })?;
            let cluster = t.bool("clusterScope")?.unwrap_or(false);
            notes.unread(at, &t);
            let run = match self.runs.get(&name) {
                Some(run) => *run,
                None => {
                    let run = self.template(&name, cluster, t.path(), input, notes)?;
                    self.runs.insert(name.clone(), run);
                    run
                }
            };
            longest = longer(longest, run);
        }
        notes.unread(at, obj);
        Ok(longest)
    }

    /// Adds the metrics of (Cluster)AnalysisTemplate `name` found in the input.
    fn template(
        &mut self,
        name: &str,
        cluster: bool,
        reference: &str,
        input: &Input<'_>,
        notes: &mut Notes,
    ) -> Result<Option<Duration>, ImportError> {
        let kind = if cluster {
            "ClusterAnalysisTemplate"
        } else {
            "AnalysisTemplate"
        };
        let Some(doc) = input.find(GROUP, kind, name) else {
            notes.dropped(
                "spec.analysis.metrics",
                reference,
                format!(
                    "{kind} {name} is not in the input: run weir import on the file or directory \
                     that holds it too"
                ),
            );
            return Ok(Some(Duration::ZERO));
        };
        let root = Obj::new(format!("{kind}/{name}"), &doc.value)?;
        let spec = root.obj("spec")?.ok_or_else(|| ImportError::Field {
            field: root.at("spec"),
            problem: "is missing; an AnalysisTemplate has spec.metrics".into(),
        })?;
        let at = "spec.analysis";
        spec.get("args");
        notes.on(
            &spec,
            "dryRun",
            Severity::Dropped,
            at,
            "weir has no dry-run metrics: every metric decides",
        );
        notes.on(
            &spec,
            "measurementRetention",
            Severity::Dropped,
            at,
            "weir keeps the effects of the last verdict in status.analysis and the history in \
             Events",
        );
        let mut longest = Some(Duration::ZERO);
        for m in spec.objs("metrics")? {
            let run = self.metric(&m, notes)?;
            longest = longer(longest, run);
        }
        notes.unread(at, &spec);
        Ok(longest)
    }

    /// One metric of a template.
    fn metric(&mut self, m: &Obj<'_>, notes: &mut Notes) -> Result<Option<Duration>, ImportError> {
        let name = m.str("name")?.unwrap_or_default();
        let interval = duration(m, "interval")?;
        let count = m.count("count")?;
        let delay = duration(m, "initialDelay")?.unwrap_or_default();
        if let Some(i) = interval {
            self.interval = Some(self.interval.map_or(i, |s| s.min(i)));
        }
        let at = "spec.analysis";
        let success = m.str("successCondition")?;
        let failure = m.str("failureCondition")?;
        let bound = success
            .as_deref()
            .and_then(|c| argo_bound(c, false))
            .or_else(|| failure.as_deref().and_then(|c| argo_bound(c, true)));
        let threshold = success
            .as_deref()
            .map(|c| format!("successCondition {c}"))
            .or_else(|| failure.as_deref().map(|c| format!("failureCondition {c}")))
            .unwrap_or_default();
        for (key, why) in [
            (
                "failureLimit",
                "a verdict is taken only when the evidence shows it, so no failures need \
                 tolerating",
            ),
            (
                "inconclusiveLimit",
                "weir's onInconclusive says what an undecided analysis does at its maxDuration",
            ),
            (
                "consecutiveErrorLimit",
                "a metric source that fails leaves the verdict undecided (continue), never passed",
            ),
        ] {
            notes.on(m, key, Severity::Changed, at, why);
        }
        if m.has("initialDelay") {
            notes.changed(
                at,
                &m.at("initialDelay"),
                format!(
                    "weir ignores the evidence for warmup ({WARMUP}) after every weight change \
                     instead"
                ),
            );
        }
        if m.has("count") {
            notes.changed(
                at,
                &m.at("count"),
                "count × interval bounds the analysis step's maxDuration; weir decides as soon as \
                 the evidence shows a verdict",
            );
        }
        let provider = m.obj("provider")?;
        let source = m.path().to_string();
        match provider.as_ref().map(|p| (p, p.obj("prometheus"))) {
            Some((p, Ok(Some(prom)))) => {
                let address = prom.str("address")?.unwrap_or_default();
                let query = prom.str("query")?.unwrap_or_default();
                notes.unread(at, &prom);
                notes.unread(at, p);
                self.checks.add(
                    Check {
                        name: &name,
                        source: &source,
                        measure: classify(&name, &query),
                        bound,
                        threshold_text: &threshold,
                        prometheus: Some((&address, &query)),
                        unit: Unit::Ratio,
                    },
                    notes,
                );
            }
            Some((_, Err(e))) => return Err(e),
            Some((p, Ok(None))) => {
                let kinds: Vec<String> = p.unread();
                notes.dropped(
                    "spec.analysis.metrics",
                    &kinds.join(", "),
                    format!(
                        "metric {name:?}: only Prometheus queries are read; weir measures latency \
                         and errors in its proxy and reads gauges from Prometheus or a scrape: add \
                         the weir metric it stands for"
                    ),
                );
            }
            None => {
                return Err(ImportError::Field {
                    field: m.at("provider"),
                    problem:
                        "is missing; a metric needs a provider, e.g. provider: {prometheus: {...}}"
                            .into(),
                });
            }
        }
        notes.unread(at, m);
        Ok(match (interval, count) {
            (Some(i), Some(c)) => Some(delay.saturating_add(i.saturating_mul(c))),
            (None, Some(_)) | (None, None) => Some(delay),
            (Some(_), None) => None,
        })
    }
}

/// An analysis step's bounds from how long Argo's run lasts: a run that
/// ends becomes maxDuration (at least warmup plus one interval, or no
/// evidence would count); one that runs until stopped gets weir's default.
pub(super) fn bounds(
    run: Option<Duration>,
    interval: Duration,
    at: &str,
    source: &str,
    notes: &mut Notes,
) -> AnalysisStep {
    let warmup = parse_duration(WARMUP).unwrap_or_default();
    let max = match run {
        Some(d) if d > warmup => Some(d),
        Some(d) => {
            let raised = warmup + d.max(interval);
            notes.changed(
                at,
                source,
                format!(
                    "Argo's run lasts {}; weir ignores the first {WARMUP} after a weight change, \
                     so the analysis may last {}",
                    format_duration(d),
                    format_duration(raised)
                ),
            );
            Some(raised)
        }
        None => {
            notes.changed(
                at,
                source,
                "the analysis had no count (it ran until the rollout moved on); weir's analysis \
                 ends with a verdict or at maxDuration (default 15m)",
            );
            None
        }
    };
    AnalysisStep {
        min_duration: None,
        max_duration: max.map(format_duration),
    }
}
