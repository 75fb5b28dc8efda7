//! A graph canary: several Deployments (a frontend, prefill and decode
//! workers) rolled out as one version. Pure: the validated shape of
//! `spec.graph` and the replica arithmetic that maps the engine's counts,
//! which are in the graph's units, onto every component.
//!
//! The engine itself never sees the graph. It decides replicas and
//! traffic in the graph's unit ([`unit`]: replicas of its largest
//! component), as for any Canary; the Kubernetes shell scales every
//! component in proportion, in order, and reports the graph's readiness
//! back as the units the whole graph can carry ([`carried`]): a weight
//! moves only once every component is ready.
//!
//! The unit is the largest component's replicas so that one unit is at
//! most one pod of every component: `matchWeight` gives each component
//! about its own share (a frontend of 1 in front of 8 decode workers gets
//! 2 canary decode workers at 20%, not 8), and a GPU budget moves capacity
//! one pod of each component at a time. A GPU budget counts GPUs, not
//! pods ([`Graph::budget`]).

use weir_crds as crds;
use weir_crds::names;

use super::spec::SpecError;

/// One component, in start order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The user's Deployment (the canary cohort; stable is its copy).
    pub name: String,
    /// Whether it is the target, the component the proxies split.
    pub serves: bool,
    /// The port its per-cohort Services serve on (none: no Services).
    pub port: Option<u16>,
    /// The variable set on every component to this one's Service URL.
    pub url_env: Option<String>,
}

/// A validated `spec.graph`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// Every component, the target included, in start order.
    pub parts: Vec<Part>,
    /// `isolation.env` and the value's prefix.
    pub isolation: Option<(String, String)>,
    /// `gpuBudget`: the `nvidia.com/gpu` both cohorts may hold.
    pub gpu_budget: Option<u32>,
}

/// One component's size, in [`Graph::parts`] order, for a GPU budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSize {
    /// The replicas the user asked of it.
    pub total: u32,
    /// `nvidia.com/gpu` one of its pods holds.
    pub gpus_per_pod: u32,
}

/// A graph's GPU budget in the terms the engine and the shell count in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// The engine's budget, in units: both cohorts together hold at most
    /// this many (`Rollout::gpu_budget` for a graph).
    pub units: u32,
    /// Each component's share, in its pods, in [`Graph::parts`] order
    /// (`None`: its pods hold no GPUs, nothing to bound). While both
    /// cohorts hold `units` or fewer, no component needs more; the shell
    /// grows a component only into its share.
    pub pods: Vec<Option<u32>>,
    /// The GPUs the shares hold together (at most the budget).
    pub gpus: u32,
}

/// The most components a graph holds (the schema's limit, target included).
const MAX_PARTS: usize = 16;

impl Graph {
    /// Validates `spec.graph` of Canary `canary` whose target is `target`.
    ///
    /// # Errors
    /// The first problem, naming the field and the fix.
    pub fn new(canary: &str, target: &str, spec: &crds::GraphSpec) -> Result<Graph, SpecError> {
        let bad = |field: String, problem: String| SpecError { field, problem };
        if spec.components.is_empty() {
            return Err(bad(
                "spec.graph.components".into(),
                "list the Deployments behind the target, e.g. [{name: decode}, {name: prefill}]"
                    .into(),
            ));
        }
        if spec.components.len() + 1 > MAX_PARTS {
            return Err(bad(
                "spec.graph.components".into(),
                format!("at most {} components besides the target", MAX_PARTS - 1),
            ));
        }
        for (i, c) in spec.components.iter().enumerate() {
            let at = format!("spec.graph.components[{i}].name");
            if c.name == target {
                return Err(bad(
                    at,
                    format!(
                        "{target:?} is the target (the serving component); list only the Deployments behind it"
                    ),
                ));
            }
            if spec.components[..i].iter().any(|o| o.name == c.name) {
                return Err(bad(at, format!("{:?} is listed twice", c.name)));
            }
            if c.url_env.is_some() && c.port.is_none() {
                return Err(bad(
                    format!("spec.graph.components[{i}].port"),
                    "urlEnv needs the port the component serves on: add port: 8000".into(),
                ));
            }
            if c.port.is_some() {
                let longest = names::component_service(canary, &c.name, crds::Cohort::Canary);
                if longest.len() > 63 {
                    return Err(bad(
                        at,
                        format!(
                            "its Service name {longest:?} is longer than 63 characters: shorten the Canary's or the Deployment's name"
                        ),
                    ));
                }
            }
        }
        let names_given: Vec<&str> = match &spec.order {
            Some(order) => order.iter().map(String::as_str).collect(),
            None => spec
                .components
                .iter()
                .map(|c| c.name.as_str())
                .chain([target])
                .collect(),
        };
        let known = |n: &str| n == target || spec.components.iter().any(|c| c.name == n);
        for (i, n) in names_given.iter().enumerate() {
            let at = format!("spec.graph.order[{i}]");
            if !known(n) {
                return Err(bad(
                    at,
                    format!(
                        "{n:?} is not a component: name targetRef.name ({target:?}) or one of graph.components"
                    ),
                ));
            }
            if names_given[..i].contains(n) {
                return Err(bad(
                    at,
                    format!(
                        "{n:?} comes twice, which would start it both before and after the components between: name each component once"
                    ),
                ));
            }
        }
        if let Some(missing) = std::iter::once(target)
            .chain(spec.components.iter().map(|c| c.name.as_str()))
            .find(|n| !names_given.contains(n))
        {
            return Err(bad(
                "spec.graph.order".into(),
                format!("does not name {missing:?}: name every component once"),
            ));
        }
        let isolation = spec.isolation.as_ref().map(|iso| {
            let base = iso.base.clone().unwrap_or_else(|| canary.to_string());
            (iso.env.clone(), base)
        });
        let mut seen: Vec<&str> = isolation.iter().map(|(env, _)| env.as_str()).collect();
        for (i, c) in spec.components.iter().enumerate() {
            if let Some(env) = &c.url_env {
                if seen.contains(&env.as_str()) {
                    return Err(bad(
                        format!("spec.graph.components[{i}].urlEnv"),
                        format!("{env:?} is already set by another graph field: use another name"),
                    ));
                }
                seen.push(env);
            }
        }
        let parts = names_given
            .iter()
            .map(|&n| {
                let c = spec.components.iter().find(|c| c.name == n);
                Part {
                    name: n.to_string(),
                    serves: n == target,
                    port: c.and_then(|c| c.port),
                    url_env: c.and_then(|c| c.url_env.clone()),
                }
            })
            .collect();
        Ok(Graph {
            parts,
            isolation,
            gpu_budget: spec.gpu_budget,
        })
    }

    /// `gpuBudget` in the engine's and each component's terms, for
    /// components of `sizes` (in [`Graph::parts`] order): the most units both cohorts may hold together
    /// such that, however they are split, the pods every component then
    /// needs hold no more GPUs than the budget ([`held_at_most`]).
    /// `Ok(None)`: no budget, or no component's pods hold a GPU.
    ///
    /// # Errors
    /// `spec.graph.gpuBudget` when it cannot hold even one unit of the
    /// graph (one pod of each component), with what it would take.
    pub fn budget(&self, sizes: &[PartSize]) -> Result<Option<Budget>, SpecError> {
        let Some(gpus) = self.gpu_budget else {
            return Ok(None);
        };
        if sizes.iter().all(|p| p.gpus_per_pod == 0) {
            return Ok(None);
        }
        let unit = unit(sizes.iter().map(|p| p.total));
        let held = |units: u32| -> u32 {
            sizes
                .iter()
                .map(|p| p.gpus_per_pod * held_at_most(units, unit, p.total))
                .sum()
        };
        // Both cohorts at full size is the most there is to hold.
        let Some(units) = (1..=unit.saturating_mul(2))
            .rev()
            .find(|&u| held(u) <= gpus)
        else {
            let each: Vec<String> = self
                .parts
                .iter()
                .zip(sizes)
                .filter(|(_, p)| p.gpus_per_pod > 0)
                .map(|(part, p)| {
                    format!(
                        "{} {}×{}",
                        part.name,
                        held_at_most(1, unit, p.total),
                        p.gpus_per_pod
                    )
                })
                .collect();
            return Err(SpecError {
                field: "spec.graph.gpuBudget".into(),
                problem: format!(
                    "{gpus} GPUs cannot hold even the smallest share of the graph, {} GPUs ({}): \
                     raise it to at least {} (a canary beside stable needs about twice that)",
                    held(1),
                    each.join(", "),
                    held(1)
                ),
            });
        };
        Ok(Some(Budget {
            units,
            pods: sizes
                .iter()
                .map(|p| (p.gpus_per_pod > 0).then(|| held_at_most(units, unit, p.total)))
                .collect(),
            gpus: held(units),
        }))
    }

    /// The environment every container of `cohort`'s components gets:
    /// the isolation variable for `revision`, and each component's
    /// Service URL of that cohort. Sorted by name.
    pub fn env(&self, canary: &str, cohort: crds::Cohort, revision: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .isolation
            .iter()
            .map(|(var, base)| (var.clone(), generation(base, revision)))
            .collect();
        for p in &self.parts {
            if let (Some(var), Some(port)) = (&p.url_env, p.port) {
                let service = names::component_service(canary, &p.name, cohort);
                env.push((var.clone(), format!("http://{service}:{port}")));
            }
        }
        env.sort();
        env
    }

    /// The variables weir sets (and so leaves out of a revision).
    pub fn managed_env(&self) -> Vec<&str> {
        self.isolation
            .iter()
            .map(|(var, _)| var.as_str())
            .chain(self.parts.iter().filter_map(|p| p.url_env.as_deref()))
            .collect()
    }
}

/// Refuses a spec that no longer names Deployments weir holds for a graph
/// (`recorded`: the names `status.components` records, each with its pods
/// in a stable copy). Going on would leave those copies serving with
/// nothing managing them and the Deployments at what weir gave them; the
/// spec is refused until it names them again or the Canary is deleted
/// (`revertOnDeletion` gives each its stable version and replicas back).
///
/// # Errors
/// `spec.graph` when the graph was taken out, `spec.graph.components` when
/// some were left out (or `targetRef` moved off one), naming the
/// Deployments, their copies and both ways out.
pub fn still_held<'a>(
    recorded: impl IntoIterator<Item = &'a str>,
    graph: Option<&Graph>,
) -> Result<(), SpecError> {
    let dropped: Vec<&str> = recorded
        .into_iter()
        .filter(|r| graph.is_none_or(|g| g.parts.iter().all(|p| p.name != *r)))
        .collect();
    if dropped.is_empty() {
        return Ok(());
    }
    let copies: Vec<String> = dropped
        .iter()
        .map(|d| names::stable_deployment(d))
        .collect();
    let (field, what) = match graph {
        None => ("spec.graph", "the graph was taken out of the spec"),
        Some(_) => (
            "spec.graph.components",
            "neither graph.components nor targetRef names it any more",
        ),
    };
    Err(SpecError {
        field: field.into(),
        problem: format!(
            "{what}, but weir holds the pods of {} in {}: put it back as it was, or delete \
             the Canary (with revertOnDeletion each component gets its stable version and \
             replicas back) and create it anew",
            dropped.join(", "),
            copies.join(", "),
        ),
    })
}

/// The isolation value of one version: `<base>-<revision>`.
pub fn generation(base: &str, revision: &str) -> String {
    format!("{base}-{revision}")
}

/// The replicas a component of `part_total` runs for `n` of the graph's
/// `total` units: in proportion, so each component of a cohort
/// carries the same load per replica as the other cohort's (what
/// `matchWeight` makes fair for the unit holds for each),
/// at least one while `n` is, and all of it at `n >= total`.
pub fn scaled(n: u32, total: u32, part_total: u32) -> u32 {
    let total = total.max(1);
    if n == 0 {
        return 0;
    }
    if n >= total {
        return part_total;
    }
    let x = (f64::from(n) * f64::from(part_total) / f64::from(total)).round();
    // Small whole numbers: within 0..=part_total.
    (x as u32).clamp(1, part_total.max(1))
}

/// The graph's unit: the replicas of its largest component (at least 1).
/// The engine counts both cohorts in it; every component gets its
/// proportion ([`scaled`]).
pub fn unit(totals: impl IntoIterator<Item = u32>) -> u32 {
    totals.into_iter().max().unwrap_or(1).max(1)
}

/// The most pods a component of `part_total` holds over both cohorts
/// while they hold `units` of `unit` together, however split: each
/// cohort's count is rounded on its own ([`scaled`]), so two halves can
/// hold one pod more than the whole.
pub fn held_at_most(units: u32, unit: u32, part_total: u32) -> u32 {
    let unit = unit.max(1);
    (0..=units.min(unit))
        .map(|s| scaled(s, unit, part_total) + scaled((units - s).min(unit), unit, part_total))
        .max()
        .unwrap_or(0)
}

/// The units a component with `ready` replicas can carry: the most
/// `n <= total` whose [`scaled`] count it has ready.
pub fn carried(ready: u32, total: u32, part_total: u32) -> u32 {
    (0..=total.max(1))
        .rev()
        .find(|&n| scaled(n, total, part_total) <= ready)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> crds::GraphSpec {
        serde_saphyr::from_str(yaml).expect("graph yaml")
    }

    #[test]
    fn the_order_is_taken_from_the_resource_else_components_then_the_target() {
        let given = spec(
            "components: [{name: prefill}, {name: decode}]\norder: [decode, prefill, frontend]",
        );
        let g = Graph::new("chat", "frontend", &given).expect("valid");
        let names: Vec<&str> = g.parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["decode", "prefill", "frontend"]);
        assert!(g.parts[2].serves && !g.parts[0].serves);

        let default = spec("components: [{name: prefill}, {name: decode}]");
        let g = Graph::new("chat", "frontend", &default).expect("valid");
        let names: Vec<&str> = g.parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["prefill", "decode", "frontend"]);
    }

    #[test]
    fn a_spec_that_drops_a_component_weir_holds_is_refused_naming_it() {
        let g =
            Graph::new("chat", "frontend", &spec("components: [{name: decode}]")).expect("valid");
        // Everything recorded still named; nothing recorded yet.
        assert_eq!(still_held(["decode", "frontend"], Some(&g)), Ok(()));
        assert_eq!(still_held([], None), Ok(()));
        // prefill left graph.components; its copy still serves.
        let e = still_held(["prefill", "decode", "frontend"], Some(&g)).expect_err("dropped");
        assert_eq!(e.field, "spec.graph.components");
        assert!(
            e.problem.contains("pods of prefill in prefill-stable"),
            "{e}"
        );
        assert!(e.problem.contains("put it back"), "{e}");
        // targetRef moved to another Deployment: the old one is held.
        let moved =
            Graph::new("chat", "router", &spec("components: [{name: decode}]")).expect("valid");
        let e = still_held(["decode", "frontend"], Some(&moved)).expect_err("moved");
        assert!(
            e.problem.contains("pods of frontend in frontend-stable"),
            "{e}"
        );
        // The whole graph taken out.
        let e = still_held(["decode", "frontend"], None).expect_err("taken out");
        assert_eq!(e.field, "spec.graph");
        assert!(
            e.problem
                .contains("decode, frontend in decode-stable, frontend-stable"),
            "{e}"
        );
        assert!(e.problem.contains("delete the Canary"), "{e}");
    }

    #[test]
    fn a_cycle_an_unknown_or_a_missing_component_names_the_field() {
        for (yaml, field, says) in [
            (
                "components: [{name: decode}, {name: prefill}]\norder: [decode, prefill, decode]",
                "spec.graph.order[2]",
                "comes twice",
            ),
            (
                "components: [{name: decode}]\norder: [decode, router]",
                "spec.graph.order[1]",
                "\"router\" is not a component",
            ),
            (
                "components: [{name: decode}, {name: prefill}]\norder: [decode, frontend]",
                "spec.graph.order",
                "does not name \"prefill\"",
            ),
            (
                "components: [{name: decode}, {name: decode}]",
                "spec.graph.components[1].name",
                "listed twice",
            ),
            (
                "components: [{name: frontend}]",
                "spec.graph.components[0].name",
                "is the target",
            ),
            (
                "components: [{name: decode, urlEnv: URL}]",
                "spec.graph.components[0].port",
                "needs the port",
            ),
            (
                "components: [{name: decode, port: 8000, urlEnv: NS}]\nisolation: {env: NS}",
                "spec.graph.components[0].urlEnv",
                "already set",
            ),
        ] {
            let err = Graph::new("chat", "frontend", &spec(yaml)).expect_err(yaml);
            assert_eq!(err.field, field, "{yaml}");
            assert!(err.problem.contains(says), "{yaml}: {}", err.problem);
        }
        let long = "d".repeat(55);
        let err = Graph::new(
            "chat",
            "frontend",
            &spec(&format!("components: [{{name: {long}, port: 8000}}]")),
        )
        .expect_err("long service name");
        assert!(err.problem.contains("longer than 63"), "{}", err.problem);
    }

    #[test]
    fn a_graph_refuses_what_it_cannot_keep_apart() {
        let base = r#"
targetRef: {name: frontend}
service: {port: 8000}
graph: {components: [{name: decode}]}
strategy: {canary: {steps: [{setWeight: 50}]}}
analysis: {metrics: [{name: ttft, kind: latency, maxIncrease: 10%}]}
"#;
        let rollout = |extra: &str| {
            let spec: crds::CanarySpec =
                serde_saphyr::from_str(&format!("{base}{extra}")).expect("spec");
            super::super::Rollout::new("chat", &spec)
        };
        assert!(rollout("").expect("valid").graph.is_some());
        for (extra, field) in [
            ("promotion: {maxSurge: 1}\n", "spec.promotion.maxSurge"),
            ("gpuBudget: 4\n", "spec.gpuBudget"),
            (
                "route: {model: chat}\nmodels: {stable: a, canary: b}\n",
                "spec.graph",
            ),
        ] {
            let err = rollout(extra).expect_err(extra);
            assert_eq!(err.field, field, "{extra}: {err}");
        }
    }

    #[test]
    fn the_unit_is_the_largest_component_so_each_gets_about_its_own_share() {
        assert_eq!(unit([1, 8, 4]), 8);
        assert_eq!(unit([0]), 1);
        // A frontend of 1 before 8 decode and 4 prefill workers, canary at
        // 2 of 8 units (matchWeight at 20%): 2 decode, 1 prefill, 1
        // frontend; the stable graph keeps all of each.
        let u = unit([1, 8, 4]);
        assert_eq!(
            [1, 8, 4].map(|t| scaled(2, u, t)),
            [1, 2, 1],
            "canary at 2 units"
        );
        assert_eq!([1, 8, 4].map(|t| scaled(u, u, t)), [1, 8, 4]);
    }

    fn sized(yaml: &str) -> Graph {
        Graph::new("chat", "frontend", &spec(yaml)).expect("valid")
    }

    fn size(total: u32, gpus_per_pod: u32) -> PartSize {
        PartSize {
            total,
            gpus_per_pod,
        }
    }

    #[test]
    fn a_gpu_budget_holds_the_most_units_whose_every_split_fits() {
        // Worked by hand: decode 2 pods of 2 GPUs, prefill 2 of 1, a
        // frontend of 1 without GPUs (stable holds 6 GPUs; unit 2).
        let g = sized(
            "components: [{name: decode}, {name: prefill}]\norder: [decode, prefill, frontend]\ngpuBudget: 6",
        );
        let sizes = [size(2, 2), size(2, 1), size(1, 0)];
        let b = g.budget(&sizes).expect("fits").expect("a budget");
        // 2 units split 1/1 or 2/0: 2 pods of each worker, 6 GPUs.
        assert_eq!(b.units, 2);
        assert_eq!(b.pods, [Some(2), Some(2), None]);
        assert_eq!(b.gpus, 6);
        // 9 GPUs: 3 units (decode 3 pods = 6, prefill 3 = 3).
        let g9 = Graph {
            gpu_budget: Some(9),
            ..g.clone()
        };
        assert_eq!(g9.budget(&sizes).expect("fits").expect("a budget").units, 3);
        // Too small for one pod of each worker: the field and what it takes.
        let g2 = Graph {
            gpu_budget: Some(2),
            ..g.clone()
        };
        let err = g2.budget(&sizes).expect_err("too small");
        assert_eq!(err.field, "spec.graph.gpuBudget");
        assert!(
            err.problem.contains("3 GPUs (decode 1×2, prefill 1×1)"),
            "{}",
            err.problem
        );
        // No budget, or nothing holds a GPU: nothing to bound.
        let none = Graph {
            gpu_budget: None,
            ..g.clone()
        };
        assert_eq!(none.budget(&sizes), Ok(None));
        assert_eq!(g.budget(&[size(2, 0), size(2, 0), size(1, 0)]), Ok(None));

        // Every shape: the units found are the most for which every split
        // of them between the cohorts, each component rounded on its own,
        // holds no more than the budget.
        let three = sized("components: [{name: decode}, {name: prefill}]\ngpuBudget: 1");
        for d in 1..=5 {
            for p in 1..=5 {
                for f in 1..=3 {
                    for (gd, gp) in [(1, 1), (2, 1), (4, 2), (8, 0)] {
                        let sizes = [size(d, gd), size(p, gp), size(f, 0)];
                        let u = unit([d, p, f]);
                        let gpus_of = |s: u32, c: u32| -> u32 {
                            sizes
                                .iter()
                                .map(|z| {
                                    z.gpus_per_pod * (scaled(s, u, z.total) + scaled(c, u, z.total))
                                })
                                .sum()
                        };
                        let worst = |units: u32| {
                            (0..=units.min(u))
                                .map(|s| gpus_of(s, (units - s).min(u)))
                                .max()
                                .unwrap_or(0)
                        };
                        for budget in 1..=(2 * (d * gd + p * gp)) {
                            let g = Graph {
                                gpu_budget: Some(budget),
                                ..three.clone()
                            };
                            match g.budget(&sizes) {
                                Ok(Some(b)) => {
                                    assert!(worst(b.units) <= budget, "{sizes:?} {budget}: {b:?}");
                                    assert_eq!(worst(b.units), b.gpus);
                                    assert!(
                                        b.units == 2 * u || worst(b.units + 1) > budget,
                                        "{sizes:?} {budget}: {b:?} is not the most"
                                    );
                                    for (z, pods) in sizes.iter().zip(&b.pods) {
                                        for s in 0..=b.units.min(u) {
                                            let c = (b.units - s).min(u);
                                            if let Some(pods) = pods {
                                                assert!(
                                                    scaled(s, u, z.total) + scaled(c, u, z.total)
                                                        <= *pods
                                                );
                                            }
                                        }
                                    }
                                }
                                Ok(None) => assert_eq!(gd + gp, 8, "{sizes:?}"),
                                Err(e) => assert!(worst(1) > budget, "{sizes:?} {budget}: {e}"),
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn each_cohort_gets_its_generation_and_its_own_services() {
        let g = Graph::new(
            "chat",
            "frontend",
            &spec(
                "components: [{name: decode, port: 9000, urlEnv: DECODE_URL}, {name: prefill}]\nisolation: {env: DYN_NAMESPACE}",
            ),
        )
        .expect("valid");
        assert_eq!(
            g.env("chat", crds::Cohort::Canary, "abc"),
            [
                (
                    "DECODE_URL".to_string(),
                    "http://chat-decode-canary:9000".to_string()
                ),
                ("DYN_NAMESPACE".to_string(), "chat-abc".to_string()),
            ]
        );
        assert_eq!(
            g.env("chat", crds::Cohort::Stable, "old")[0].1,
            "http://chat-decode-stable:9000"
        );
        assert_eq!(g.managed_env(), ["DYN_NAMESPACE", "DECODE_URL"]);
    }

    #[test]
    fn components_scale_in_proportion_and_carry_what_they_have_ready() {
        // (n of total, part_total) -> replicas
        for ((n, total, part), want) in [
            ((0, 4, 8), 0),
            ((1, 4, 8), 2),
            ((2, 4, 8), 4),
            ((4, 4, 8), 8),
            ((1, 4, 1), 1),
            ((3, 4, 1), 1),
            ((1, 10, 3), 1),
            ((5, 10, 3), 2),
            ((9, 10, 3), 3),
            ((12, 10, 3), 3),
        ] {
            assert_eq!(scaled(n, total, part), want, "{n} of {total} for {part}");
        }
        // Carried is the inverse: the most n whose count is ready.
        for total in 1..=8 {
            for part in 1..=8 {
                for ready in 0..=part {
                    let c = carried(ready, total, part);
                    assert!(scaled(c, total, part) <= ready);
                    if c < total {
                        assert!(scaled(c + 1, total, part) > ready);
                    }
                }
            }
        }
        assert_eq!(carried(8, 4, 8), 4);
        assert_eq!(carried(7, 4, 8), 3);
        assert_eq!(carried(0, 4, 8), 0);
    }
}
