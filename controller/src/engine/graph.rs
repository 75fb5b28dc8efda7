//! A graph canary: several Deployments (a frontend, prefill and decode
//! workers) rolled out as one version. Pure: the validated shape of
//! `spec.graph` and the replica arithmetic that maps the engine's counts,
//! which are the serving component's, onto every component.
//!
//! The engine itself never sees the graph. It decides replicas and
//! traffic for the component that serves (the target), as for any
//! Canary; the Kubernetes shell scales every other component in
//! proportion, in order, and reports the graph's readiness back as the
//! serving component's replicas the whole graph can carry
//! ([`carried`]): a weight moves only once every component is ready.

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
        Ok(Graph { parts, isolation })
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

/// The isolation value of one version: `<base>-<revision>`.
pub fn generation(base: &str, revision: &str) -> String {
    format!("{base}-{revision}")
}

/// The replicas a component of `part_total` runs for `n` of the serving
/// component's `total`: in proportion, so each component of a cohort
/// carries the same load per replica as the other cohort's (what
/// `matchWeight` makes fair for the serving component holds for each),
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

/// The serving component's replicas a component with `ready` replicas can
/// carry: the most `n <= total` whose [`scaled`] count it has ready.
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
