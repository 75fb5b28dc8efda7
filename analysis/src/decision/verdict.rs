//! How the effects' findings combine into one verdict: a breached guard or
//! an exceeded margin aborts, every decision effect within its margin
//! promotes (unless the cohorts' load differs too much to judge), anything
//! else continues and names what is still open.

use super::{Finding, Load, MetricResult, Policy, Role, Verdict};

pub(super) fn verdict(
    policy: &Policy,
    results: &[MetricResult],
    load: Option<Load>,
) -> (Verdict, String) {
    let exceeded: Vec<&MetricResult> = results
        .iter()
        .filter(|r| r.finding == Finding::Exceeds)
        .collect();
    let guard_breached: Vec<&MetricResult> = exceeded
        .iter()
        .copied()
        .filter(|r| r.role == Role::Guard)
        .collect();
    if !guard_breached.is_empty() {
        return (
            Verdict::Abort,
            format!("abort: hard limit breached: {}", join(&guard_breached)),
        );
    }
    if let Some(load) = load.filter(|l| l.imbalance() > policy.max_load_imbalance) {
        return (
            Verdict::Continue,
            format!(
                "continue: not judging while per-replica load differs by {:.0}% (baseline {:.2}/s, canary {:.2}/s; \
                 limit {:.0}%)",
                load.imbalance() * 100.0,
                load.baseline_per_replica,
                load.canary_per_replica,
                policy.max_load_imbalance * 100.0
            ),
        );
    }
    if !exceeded.is_empty() {
        return (
            Verdict::Abort,
            format!("abort: regression beyond the margin: {}", join(&exceeded)),
        );
    }
    let deciding: Vec<&MetricResult> = results
        .iter()
        .filter(|r| r.role == Role::Decision)
        .collect();
    if deciding.iter().all(|r| r.finding == Finding::Within) {
        return (
            Verdict::Promote,
            format!(
                "promote: every effect is within its margin: {}",
                join(&deciding)
            ),
        );
    }
    let open: Vec<String> = deciding
        .iter()
        .filter(|r| r.finding != Finding::Within)
        .map(|r| match (&r.finding, &r.note) {
            (Finding::Insufficient, Some(note)) => format!("{} ({note})", r.name),
            _ => r.describe(),
        })
        .collect();
    (
        Verdict::Continue,
        format!("continue: undecided: {}", open.join("; ")),
    )
}

fn join(results: &[&MetricResult]) -> String {
    results
        .iter()
        .map(|r| r.describe())
        .collect::<Vec<_>>()
        .join("; ")
}
