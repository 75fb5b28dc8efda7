//! `status.traffic`: the route every proxy replica builds from a Canary,
//! and the [`Cohort`]s it splits traffic between. This is the contract
//! between the controller, which writes it, and the proxies, which watch it.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{RouteSpec, StickySpec};

/// The route every proxy replica builds from this Canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// Increases with every change; proxies ignore older ones.
    pub generation: u64,
    /// Which requests.
    pub route: RouteSpec,
    /// Session affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickySpec>,
    /// Whether `x-weir-cohort` may pick the cohort (blue-green preview).
    #[serde(default)]
    pub override_header: bool,
    /// The cohorts and their weights.
    pub backends: Vec<TrafficBackend>,
}

/// One cohort of a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficBackend {
    /// stable or canary.
    pub cohort: Cohort,
    /// Kubernetes mode: the cohort's Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Kubernetes mode: its port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Local mode: the upstream URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Share of traffic in percent (resolution 0.01).
    pub weight: f64,
    /// The version this cohort serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// A model canary: the model this cohort asks the upstream for (the
    /// request body's `model` is rewritten to it, and back in responses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A cohort of a Canary: the two of [`weir_core::Cohort`] a Canary has (the
/// schema allows exactly these), converted with `From` where the proxy and
/// the analysis take the open `weir_core::Cohort`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Cohort {
    /// The version serving now.
    Stable,
    /// The version on trial.
    Canary,
}

impl Cohort {
    /// Both cohorts.
    pub const BOTH: [Cohort; 2] = [Cohort::Stable, Cohort::Canary];

    /// `stable` or `canary` ([`weir_core::STABLE`], [`weir_core::CANARY`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Cohort::Stable => weir_core::STABLE,
            Cohort::Canary => weir_core::CANARY,
        }
    }
}

impl From<Cohort> for weir_core::Cohort {
    fn from(c: Cohort) -> Self {
        match c {
            Cohort::Stable => weir_core::Cohort::Stable,
            Cohort::Canary => weir_core::Cohort::Canary,
        }
    }
}

impl fmt::Display for Cohort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
