//! A Flagger `Canary` as a weir `Canary`.
//!
//! Flagger moves the weight by `stepWeight` (or through `stepWeights`) once
//! per `interval` while its checks pass, and promotes after `maxWeight`:
//! here that is a `setWeight` and a `pause` of one interval per weight, and
//! an analysis step at the last weight that decides the promotion. weir
//! watches the evidence at every step, so a regression aborts wherever it
//! is shown, as a failing Flagger check would. A/B testing (`iterations`
//! with `match`) and blue/green (`iterations` alone) become weir's
//! blue-green: a preview for requests that ask for the canary, analysed,
//! then one cutover.

use std::time::Duration;

use weir_controller::engine::spec::{format_duration, parse_duration};
use weir_crds::{
    AnalysisStep, BlueGreenStrategy, CanaryStrategy, PauseStep, ReplicaPolicy, Step, StickySpec,
    Strategy,
};

use super::checks::{Bound, Check, Checks, Measure, Unit, classify};
use super::notes::{Notes, Severity};
use super::source::{Document, Obj};
use super::{Draft, ImportError, Input, WARMUP};

const GROUP: &str = "flagger.app";

/// More weights than any rollout needs: a typo such as `stepWeight: 0.01`.
const MAX_STEPS: usize = 1000;

/// Whether `doc` is a Flagger Canary.
pub fn is_canary(doc: &Document) -> bool {
    doc.is(GROUP, "Canary")
}

fn duration(obj: &Obj<'_>, key: &str) -> Result<Option<Duration>, ImportError> {
    obj.str(key)?
        .map(|t| {
            parse_duration(&t).map_err(|problem| ImportError::Field {
                field: obj.at(key),
                problem,
            })
        })
        .transpose()
}

/// Converts the Flagger Canary `doc`.
///
/// # Errors
/// A field of the wrong type or shape, naming it and the fix.
pub fn convert(doc: &Document, input: &Input<'_>, notes: &mut Notes) -> Result<Draft, ImportError> {
    let root = Obj::new("", &doc.value)?;
    let spec = root.obj("spec")?.ok_or_else(|| ImportError::Field {
        field: "spec".into(),
        problem: "is missing; a Flagger Canary has spec.targetRef, spec.service and spec.analysis"
            .into(),
    })?;
    let mut draft = Draft::new(doc);

    let target = spec.obj("targetRef")?.ok_or_else(|| ImportError::Field {
        field: spec.at("targetRef"),
        problem: "is missing; name the Deployment: targetRef: {apiVersion: apps/v1, kind: \
                  Deployment, name: ...}"
            .into(),
    })?;
    let kind = target.str("kind")?.unwrap_or_else(|| "Deployment".into());
    if kind != "Deployment" {
        return Err(ImportError::Field {
            field: target.at("kind"),
            problem: format!("is {kind:?}; weir rolls out Deployments only"),
        });
    }
    target.get("apiVersion");
    let name = target.str("name")?.ok_or_else(|| ImportError::Field {
        field: target.at("name"),
        problem: "is missing; name the Deployment".into(),
    })?;
    draft.target(&name);
    notes.unread("spec.targetRef", &target);

    if let Some(p) = spec.str("provider")? {
        notes.changed(
            "spec.route",
            &spec.at("provider"),
            format!(
                "weir's proxies split the traffic themselves instead of {p}: point the ingress or \
                 mesh route at the weir proxy Service; route.hosts and route.pathPrefix choose the \
                 requests"
            ),
        );
    }
    for key in ["ingressRef", "routeRef", "upstreamRef"] {
        notes.on(
            &spec,
            key,
            Severity::Changed,
            "spec.route",
            "weir's proxies route the requests; point this route at the weir proxy Service",
        );
    }
    notes.on(
        &spec,
        "autoscalerRef",
        Severity::Dropped,
        "spec.strategy",
        "weir sets the replicas of both cohorts itself (the canary's follow its weight, replicas: \
         matchWeight); no HPA is copied to the cohorts",
    );
    if let Some(d) = spec.count("progressDeadlineSeconds")? {
        draft.spec.progress_deadline_seconds = d.max(1);
    }
    if let Some(r) = spec.bool("revertOnDeletion")? {
        draft.spec.revert_on_deletion = r;
    }
    if spec.bool("suspend")? == Some(true) {
        draft.spec.paused = true;
        notes.changed(
            "spec.paused",
            &spec.at("suspend"),
            "weir holds the run where it is (weir resume lets it go on)",
        );
    }
    if spec.bool("skipAnalysis")? == Some(true) {
        notes.dropped(
            "spec.analysis",
            &spec.at("skipAnalysis"),
            "weir always judges; weir promote --full promotes a run at once",
        );
    }
    if let Some(service) = spec.obj("service")? {
        service_fields(&service, &mut draft, notes)?;
    } else {
        return Err(ImportError::Field {
            field: spec.at("service"),
            problem: "is missing; Flagger needs service.port, and so does weir".into(),
        });
    }
    let analysis = spec
        .obj("analysis")?
        .or(spec.obj("canaryAnalysis")?)
        .ok_or_else(|| ImportError::Field {
            field: spec.at("analysis"),
            problem: "is missing; give interval and stepWeight (or iterations)".into(),
        })?;
    analysis_fields(&analysis, &mut draft, input, notes)?;
    notes.unread("spec", &spec);
    Ok(draft)
}

fn service_fields(s: &Obj<'_>, draft: &mut Draft, notes: &mut Notes) -> Result<(), ImportError> {
    let port = s.count("port")?.ok_or_else(|| ImportError::Field {
        field: s.at("port"),
        problem: "is missing; the port the Service exposes, e.g. port: 8000".into(),
    })?;
    let target_port = match s.get("targetPort") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(p)) => {
            notes.changed(
                "spec.service.port",
                &s.at("targetPort"),
                format!(
                    "weir's Services send to the same port number they expose; the named port \
                     {p:?} is not read"
                ),
            );
            None
        }
        _ => None,
    };
    let port = target_port.unwrap_or(u64::from(port));
    draft.port = Some(u16::try_from(port).map_err(|_| ImportError::Field {
        field: s.at("port"),
        problem: format!("is {port}; a port is at most 65535"),
    })?);
    s.get("portName");
    if let Some(hosts) = s.get("hosts") {
        let hosts: Vec<String> = hosts
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str())
            .filter(|h| *h != "*")
            .map(String::from)
            .collect();
        draft.spec.route.hosts = hosts;
    }
    notes.on(
        s,
        "gateways",
        Severity::Changed,
        "spec.route.hosts",
        "the gateways send these hosts to the weir proxy Service, which splits them",
    );
    if let Some(m) = s.get("match") {
        let prefix = m
            .as_array()
            .filter(|a| a.len() == 1)
            .and_then(|a| a[0]["uri"]["prefix"].as_str());
        match prefix {
            Some(p) if p.starts_with('/') => draft.spec.route.path_prefix = p.into(),
            _ => notes.dropped(
                "spec.route",
                &s.at("match"),
                "weir matches requests by hosts and one path prefix (route.pathPrefix)",
            ),
        }
    }
    for (key, why) in [
        (
            "retries",
            "weir's proxy retries a refused connection once on the other cohort (and counts it \
             against the one that failed)",
        ),
        (
            "timeout",
            "weir's proxy does not time requests out: streams last as long as generation does; set \
             timeouts in the client",
        ),
        (
            "trafficPolicy",
            "weir's proxy balances each request to the less busy of two pods; TLS to pods is not \
             configured here",
        ),
    ] {
        notes.on(s, key, Severity::Dropped, "spec.service", why);
    }
    notes.unread("spec.service", s);
    Ok(())
}

fn analysis_fields(
    a: &Obj<'_>,
    draft: &mut Draft,
    input: &Input<'_>,
    notes: &mut Notes,
) -> Result<(), ImportError> {
    let interval = duration(a, "interval")?.unwrap_or(Duration::from_secs(60));
    draft.spec.analysis.interval = format_duration(interval);
    notes.on(
        a,
        "threshold",
        Severity::Changed,
        "spec.analysis",
        "weir takes a verdict only when the evidence shows it, with the confidence held over all \
         checks, so no count of failed checks is needed",
    );
    let mut checks = Checks::default();
    for m in a.objs("metrics")? {
        metric(&m, &mut checks, input, notes)?;
    }
    checks.default_if_empty(&a.at("metrics"), notes);
    draft.spec.analysis.metrics = checks.metrics;

    let mut confirm_rollout = false;
    let mut confirm_promotion = false;
    for w in a.objs("webhooks")? {
        let (rollout, promotion) = webhook(&w, notes)?;
        confirm_rollout |= rollout;
        confirm_promotion |= promotion;
    }
    notes.on(
        a,
        "alerts",
        Severity::Dropped,
        "spec.analysis",
        "the alert providers are not read; weir sends rollout events to the webhooks of the \
         controller's notifications Secret (JSON or Slack): name them in spec.notify \
         (docs/notifications.md)",
    );
    if let Some(s) = a.obj("sessionAffinity")? {
        if let Some(cookie) = s.str("cookieName")? {
            draft.spec.sticky = Some(StickySpec {
                header: None,
                cookie: Some(cookie),
            });
            notes.changed(
                "spec.sticky",
                s.path(),
                "weir keeps a session on one cohort by hashing a cookie the client sends (raising \
                 the weight only moves sessions onto the canary); it sets no cookie itself: name \
                 your clients' session cookie",
            );
        }
        notes.unread("spec.sticky", &s);
    }
    if a.bool("mirror")? == Some(true) {
        notes.dropped(
            "spec.strategy",
            &a.at("mirror"),
            "weir does not mirror traffic",
        );
    }
    a.get("mirrorWeight");
    notes.on(
        a,
        "stepWeightPromotion",
        Severity::Changed,
        "spec.promotion",
        "weir promotes by rolling stable to the new version while traffic stays on the proven \
         canary",
    );
    if let Some(n) = a.count("iterations")?.filter(|n| *n > 0) {
        preview(a, n, interval, confirm_promotion, draft, notes)?;
    } else {
        steps(
            a,
            interval,
            confirm_rollout,
            confirm_promotion,
            draft,
            notes,
        )?;
    }
    notes.unread("spec.analysis", a);
    Ok(())
}

/// A check of `analysis.metrics`: a built-in metric, or a MetricTemplate
/// from the input.
fn metric(
    m: &Obj<'_>,
    checks: &mut Checks,
    input: &Input<'_>,
    notes: &mut Notes,
) -> Result<(), ImportError> {
    let name = m.str("name")?.unwrap_or_default();
    let range = m.obj("thresholdRange")?;
    let (min, max) = match &range {
        Some(r) => (r.num("min")?, r.num("max")?),
        None => (None, None),
    };
    let threshold = match (min, max) {
        (Some(lo), Some(hi)) => format!("thresholdRange min {lo}, max {hi}"),
        (Some(lo), None) => format!("thresholdRange min {lo}"),
        (None, Some(hi)) => format!("thresholdRange max {hi}"),
        (None, None) => String::new(),
    };
    let bound = min.map(Bound::AtLeast).or(max.map(Bound::AtMost));
    notes.on(
        m,
        "interval",
        Severity::Changed,
        "spec.analysis",
        "weir judges every request since the analysis window opened, not a trailing query window",
    );
    m.get("threshold");
    let source = m.path().to_string();
    let template = match m.obj("templateRef")? {
        Some(t) => {
            let tname = t.str("name")?.unwrap_or_default();
            t.get("namespace");
            Some(
                input
                    .find(GROUP, "MetricTemplate", &tname)
                    .map(|d| (tname.clone(), d))
                    .ok_or(tname),
            )
        }
        None => None,
    };
    let (measure, prometheus) = match template {
        None => match name.as_str() {
            "request-success-rate" => (Measure::SuccessRate, None),
            "request-duration" => (
                Measure::Latency {
                    quantile: Some(0.99),
                    signal: weir_crds::Signal::Duration,
                },
                None,
            ),
            _ => {
                let query = m.str("query")?.unwrap_or_default();
                (classify(&name, &query), None)
            }
        },
        Some(Err(tname)) => {
            notes.dropped(
                "spec.analysis.metrics",
                &m.at("templateRef"),
                format!(
                    "MetricTemplate {tname} is not in the input: run weir import on the file or \
                     directory that holds it too"
                ),
            );
            return Ok(());
        }
        Some(Ok((tname, doc))) => {
            let t = Obj::new(format!("MetricTemplate/{tname}"), &doc.value)?;
            let spec = t.obj("spec")?.ok_or_else(|| ImportError::Field {
                field: t.at("spec"),
                problem: "is missing; a MetricTemplate has spec.provider and spec.query".into(),
            })?;
            let query = spec.str("query")?.unwrap_or_default();
            let provider = spec.obj("provider")?;
            let kind = match &provider {
                Some(p) => p.str("type")?.unwrap_or_else(|| "prometheus".into()),
                None => "prometheus".into(),
            };
            if kind != "prometheus" {
                notes.dropped(
                    "spec.analysis.metrics",
                    &spec.at("provider.type"),
                    format!(
                        "metric {name:?} reads {kind}; weir measures latency and errors in its \
                         proxy and reads gauges from Prometheus or a scrape: add the weir metric \
                         it stands for"
                    ),
                );
                return Ok(());
            }
            let address = match &provider {
                Some(p) => p.str("address")?.unwrap_or_default(),
                None => String::new(),
            };
            (classify(&name, &query), Some((address, query)))
        }
    };
    checks.add(
        Check {
            name: &name,
            source: &source,
            measure,
            bound,
            threshold_text: &threshold,
            prometheus: prometheus.as_ref().map(|(a, q)| (a.as_str(), q.as_str())),
            unit: Unit::Percent,
        },
        notes,
    );
    notes.unread("spec.analysis.metrics", m);
    Ok(())
}

/// One webhook: `(confirm-rollout, confirm-promotion)` become pauses
/// waiting for `weir promote`; the rest has no counterpart.
fn webhook(w: &Obj<'_>, notes: &mut Notes) -> Result<(bool, bool), ImportError> {
    let name = w.str("name")?.unwrap_or_default();
    let kind = w.str("type")?.unwrap_or_else(|| "rollout".into());
    let cmd = w
        .get("metadata")
        .and_then(|m| m["cmd"].as_str())
        .unwrap_or_default()
        .to_string();
    for key in ["url", "timeout", "retries", "muteAlert"] {
        w.get(key);
    }
    let source = w.path().to_string();
    let load_test =
        name.contains("load") || ["hey ", "k6 ", "ghz "].iter().any(|t| cmd.starts_with(t));
    match kind.as_str() {
        "confirm-rollout" => {
            notes.changed(
                "spec.strategy.canary.steps[0]",
                &source,
                "the run waits at its first step until weir promote, instead of asking the webhook",
            );
            return Ok((true, false));
        }
        "confirm-promotion" => {
            notes.changed(
                "spec.strategy",
                &source,
                "the run waits before promotion until weir promote, instead of asking the webhook",
            );
            return Ok((false, true));
        }
        _ if load_test => notes.dropped(
            "spec.analysis",
            &source,
            "weir judges the live traffic through its proxies; for synthetic load, run weir load \
             --url http://<weir proxy>:8080 next to the rollout",
        ),
        "event" | "rollback" => notes.dropped(
            "spec.analysis",
            &source,
            "weir records a Kubernetes Event for every step and verdict; weir abort rolls back by \
             hand",
        ),
        _ => notes.dropped(
            "spec.analysis",
            &source,
            format!(
                "weir has no {kind} webhook gate: run acceptance tests before changing the \
                 Deployment's template, or hold the run with a pause step and weir promote"
            ),
        ),
    }
    Ok((false, false))
}

/// Progressive traffic shifting: a weight, a pause of one interval, and an
/// analysis at the last weight.
fn steps(
    a: &Obj<'_>,
    interval: Duration,
    confirm_rollout: bool,
    confirm_promotion: bool,
    draft: &mut Draft,
    notes: &mut Notes,
) -> Result<(), ImportError> {
    let weights: Vec<f64> = match (a.get("stepWeights"), a.num("stepWeight")?) {
        (Some(list), _) => list
            .as_array()
            .ok_or_else(|| ImportError::Field {
                field: a.at("stepWeights"),
                problem: "is not a list; write stepWeights: [1, 10, 50]".into(),
            })?
            .iter()
            .map(|w| w.as_f64())
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| ImportError::Field {
                field: a.at("stepWeights"),
                problem: "holds something that is not a number; write stepWeights: [1, 10, 50]"
                    .into(),
            })?,
        (None, Some(step)) if step > 0.0 => {
            let max = a.num("maxWeight")?.unwrap_or(100.0).min(100.0);
            // Flagger goes up by stepWeight and ends at maxWeight even when
            // it is not a multiple of the step.
            let n = (max / step).floor() as usize;
            if n > MAX_STEPS {
                return Err(ImportError::Field {
                    field: a.at("stepWeight"),
                    problem: format!(
                        "{step} makes {n} steps up to maxWeight {max}; give a larger stepWeight \
                         or stepWeights"
                    ),
                });
            }
            let mut weights: Vec<f64> = (1..=n).map(|i| i as f64 * step).collect();
            if weights.last().is_none_or(|w| *w < max) {
                weights.push(max);
            }
            weights
        }
        _ => {
            return Err(ImportError::Field {
                field: a.at("stepWeight"),
                problem:
                    "is missing; give stepWeight (with maxWeight), stepWeights, or iterations \
                          for A/B and blue/green"
                        .into(),
            });
        }
    };
    a.get("maxWeight");
    let weights: Vec<f64> = weights
        .into_iter()
        .filter(|w| *w > 0.0 && *w < 100.0)
        .collect();
    let Some(last) = weights.len().checked_sub(1) else {
        return Err(ImportError::Field {
            field: a.at("stepWeights"),
            problem: "has no weight between 0 and 100; weir needs one to compare the cohorts at"
                .into(),
        });
    };
    let mut out = Vec::new();
    if confirm_rollout {
        out.push(Step::Pause(PauseStep::default()));
    }
    for (i, w) in weights.iter().enumerate() {
        out.push(Step::SetWeight(*w));
        if i < last {
            out.push(Step::Pause(PauseStep {
                duration: Some(format_duration(interval)),
            }));
        }
    }
    let analysis_at = out.len();
    out.push(Step::Analysis(AnalysisStep::default()));
    if confirm_promotion {
        out.push(Step::Pause(PauseStep::default()));
    }
    notes.changed(
        &format!("spec.strategy.canary.steps[{analysis_at}]"),
        &a.at("interval"),
        format!(
            "Flagger checked its metrics once per {} at each weight; weir watches them at every \
             step (aborting as soon as a regression is shown) and decides the promotion here, at \
             the last weight",
            format_duration(interval)
        ),
    );
    draft.spec.strategy = Strategy {
        canary: Some(CanaryStrategy {
            replicas: ReplicaPolicy::MatchWeight,
            steps: out,
        }),
        blue_green: None,
    };
    Ok(())
}

/// A/B testing and blue/green: weir's blue-green with a pre-promotion
/// analysis at least as long as Flagger's iterations.
fn preview(
    a: &Obj<'_>,
    iterations: u32,
    interval: Duration,
    confirm_promotion: bool,
    draft: &mut Draft,
    notes: &mut Notes,
) -> Result<(), ImportError> {
    let at = "spec.strategy.blueGreen";
    let min = interval.saturating_mul(iterations);
    let warmup = parse_duration(WARMUP).unwrap_or_default();
    let max = min
        .saturating_mul(2)
        .max(min.saturating_add(warmup).saturating_add(interval));
    if let Some(m) = a.get("match") {
        notes.changed(
            at,
            &a.at("match"),
            format!(
                "the requests that matched {} went to the canary; in weir the preview gets the \
                 requests with header x-weir-cohort: canary (the proxy's overrideHeader): have \
                 those clients send it",
                serde_json::to_string(m).unwrap_or_default()
            ),
        );
    }
    notes.changed(
        &format!("{at}.prePromotionAnalysis"),
        &a.at("iterations"),
        format!(
            "{iterations} iterations of {} become the analysis's minDuration; weir cuts over once \
             the evidence shows the canary within its margins, and applies onInconclusive at \
             maxDuration",
            format_duration(interval)
        ),
    );
    draft.spec.strategy = Strategy {
        canary: None,
        blue_green: Some(BlueGreenStrategy {
            preview_replicas: None,
            auto_promote: !confirm_promotion,
            scale_down_delay: None,
            pre_promotion_analysis: Some(AnalysisStep {
                min_duration: Some(format_duration(min)),
                max_duration: Some(format_duration(max)),
            }),
            post_promotion_analysis: None,
        }),
    };
    Ok(())
}
