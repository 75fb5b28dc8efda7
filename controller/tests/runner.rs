//! The local runner against a recording dataplane: the proxy is replaced
//! by a model that turns the weights it was given into observations
//! (requests split by weight, TTFT drawn per cohort), so these tests show
//! what the runner does with tables and evidence, on the clock, without
//! sockets. The real proxy is exercised by the weir binary's tests.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use weir_analysis::Distribution;
use weir_analysis::observations::{CohortSnapshot, Snapshot};
use weir_controller::local::file;
use weir_controller::local::runner::{self, Dataplane, Progress, Settings};
use weir_core::{Outcome, RequestCounts};
use weir_crds::{Cohort, Traffic};

/// Observations that grow with every look, split by the applied weights.
struct Model {
    state: Mutex<State>,
    /// Canary TTFT multiplier.
    slower: f64,
    /// Slow only once it carries all live traffic (a regression under
    /// full load that a preview cannot show).
    only_at_full_load: bool,
    /// The canary's first requests that are slow (3x): a cold start.
    cold: u64,
}

struct State {
    applied: Vec<Traffic>,
    cohorts: BTreeMap<&'static str, CohortSnapshot>,
    seed: u64,
}

impl Model {
    fn new(slower: f64) -> Model {
        Model {
            state: Mutex::new(State {
                applied: Vec::new(),
                cohorts: BTreeMap::new(),
                seed: 1,
            }),
            slower,
            only_at_full_load: false,
            cold: 0,
        }
    }

    fn shares(&self) -> Vec<f64> {
        let state = self.state.lock().expect("lock");
        state
            .applied
            .iter()
            .map(|t| {
                t.backends
                    .iter()
                    .find(|b| b.cohort == Cohort::Canary)
                    .map_or(0.0, |b| b.weight)
            })
            .collect()
    }
}

impl State {
    fn add(&mut self, cohort: &'static str, n: u64, scale: f64) {
        let entry = self
            .cohorts
            .entry(cohort)
            .or_insert_with(|| CohortSnapshot {
                route: "chat".into(),
                cohort: weir_core::Cohort::parse(cohort).expect("a cohort name"),
                revision: None,
                requests: RequestCounts::default(),
                ttft_seconds: Distribution::new(),
                inter_token_seconds: Distribution::new(),
                duration_seconds: Distribution::new(),
                output_tokens: 0,
                inflight: 0,
                output_tokens_per_request: Distribution::new(),
                decode_tokens_per_second: Distribution::new(),
                length_finishes: 0,
                empty_answers: 0,
                tokens_from_usage: 0,
            });
        entry.requests[Outcome::Ok] += n;
        for _ in 0..n {
            // Lognormal TTFT around 200 ms (LCG + Box-Muller, seeded).
            let mut u = || {
                self.seed = self
                    .seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.seed >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            };
            let z = (-2.0 * u().ln()).sqrt() * (std::f64::consts::TAU * u()).cos();
            entry
                .ttft_seconds
                .record(0.2 * scale * (0.25 * z).exp())
                .expect("finite");
        }
    }
}

impl Dataplane for Model {
    /// The model never fails.
    type Error = std::convert::Infallible;

    async fn apply(&self, traffic: &Traffic) -> Result<(), Self::Error> {
        self.state
            .lock()
            .expect("lock")
            .applied
            .push(traffic.clone());
        Ok(())
    }

    fn snapshot(&self) -> Result<Snapshot, Self::Error> {
        let mut state = self.state.lock().expect("lock");
        let (canary, preview) = state.applied.last().map_or((0.0, false), |t| {
            let w = t
                .backends
                .iter()
                .find(|b| b.cohort == Cohort::Canary)
                .map_or(0.0, |b| b.weight);
            (w / 100.0, t.override_header)
        });
        // 40 requests per look, split by weight; a blue-green preview gets
        // override-header traffic of its own on top.
        let to_canary = (40.0 * canary).round() as u64 + if preview { 20 } else { 0 };
        let to_stable = (40.0 * (1.0 - canary)).round() as u64;
        state.add("stable", to_stable, 1.0);
        let scale = if self.only_at_full_load && canary < 1.0 {
            1.0
        } else {
            self.slower
        };
        let served = state
            .cohorts
            .get("canary")
            .map_or(0, |c| c.requests.total());
        let cold = to_canary.min(self.cold.saturating_sub(served));
        state.add("canary", cold, 3.0 * scale);
        state.add("canary", to_canary - cold, scale);
        Ok(Snapshot {
            schema_version: 1,
            instance: "model".into(),
            cohorts: state.cohorts.values().cloned().collect(),
            routes: Default::default(),
        })
    }
}

fn canary(strategy: &str) -> file::CanaryFile {
    canary_with(strategy, "")
}

/// [`canary`] with more `analysis` lines.
fn canary_with(strategy: &str, analysis: &str) -> file::CanaryFile {
    let text = format!(
        r#"apiVersion: weir.dev/v1alpha1
kind: Canary
metadata: {{name: chat}}
spec:
  backends:
    stable: {{url: "http://127.0.0.1:1"}}
    canary: {{url: "http://127.0.0.1:2"}}
  strategy:
{strategy}
  analysis:
    interval: 100ms
    warmup: 0s
{analysis}    minSamples: 200
    metrics:
      - {{name: ttft, kind: latency, quantiles: [0.5], maxIncrease: 10%}}
"#
    );
    file::parse(&text).expect("valid canary")
}

async fn run(file: &file::CanaryFile, model: &Model) -> (i32, Vec<String>) {
    let settings = Settings {
        name: file.name.clone(),
        tick: Duration::from_millis(20),
    };
    let mut reasons = Vec::new();
    let record = runner::run(
        &file.rollout,
        &settings,
        model,
        std::future::pending(),
        |p| {
            if let Progress::Event(e) = p {
                reasons.push(e.reason.clone());
            }
        },
    )
    .await
    .expect("run");
    let outcome = record.outcome.expect("finished");
    assert!(!record.samples.is_empty());
    (outcome.exit_code, reasons)
}

const CANARY_STEPS: &str =
    "    canary:\n      steps:\n        - setWeight: 50\n        - analysis: {maxDuration: 60s}";

#[tokio::test]
async fn a_healthy_canary_is_promoted_and_a_slow_one_aborted() {
    let file = canary(CANARY_STEPS);
    let healthy = Model::new(1.0);
    let (code, reasons) = run(&file, &healthy).await;
    assert_eq!(code, 0, "{reasons:?}");
    assert_eq!(
        healthy.shares().last(),
        Some(&100.0),
        "promoted: all to the canary"
    );
    assert!(healthy.shares().contains(&50.0));

    let slow = Model::new(1.3);
    let (code, reasons) = run(&file, &slow).await;
    assert_eq!(code, 3, "{reasons:?}");
    assert_eq!(
        slow.shares().last(),
        Some(&0.0),
        "aborted: all back to stable"
    );
    assert!(
        reasons.contains(&"AnalysisFailed".to_string()),
        "{reasons:?}"
    );
}

const BLUE_GREEN: &str = "    blueGreen:\n      scaleDownDelay: 2s\n      prePromotionAnalysis: {maxDuration: 30s}\n      postPromotionAnalysis: {maxDuration: 2s}";

#[tokio::test]
async fn blue_green_compares_the_new_side_with_stable_before_the_cutover() {
    let file = canary(BLUE_GREEN);
    let healthy = Model::new(1.0);
    let (code, reasons) = run(&file, &healthy).await;
    assert_eq!(code, 0, "{reasons:?}");
    let shares = healthy.shares();
    // Preview (0% live, header only), then one atomic cutover.
    let first_preview = healthy
        .state
        .lock()
        .expect("lock")
        .applied
        .iter()
        .position(|t| t.override_header);
    assert!(first_preview.is_some(), "a preview table was published");
    assert!(
        shares.iter().all(|w| *w == 0.0 || *w == 100.0),
        "atomic: {shares:?}"
    );
    assert!(reasons.contains(&"CutOver".to_string()), "{reasons:?}");

    // A new side slow only under full load passes its preview, is cut
    // over, and is rolled back by the post-promotion analysis.
    let mut under_load = Model::new(1.3);
    under_load.only_at_full_load = true;
    let (code, reasons) = run(&file, &under_load).await;
    assert_eq!(code, 3, "{reasons:?}");
    assert!(reasons.contains(&"CutOver".to_string()), "{reasons:?}");
    assert!(reasons.contains(&"RolledBack".to_string()), "{reasons:?}");
    assert_eq!(
        under_load.shares().last(),
        Some(&0.0),
        "back on the warm old side"
    );

    // A slow new side fails its pre-promotion analysis: no cutover,
    // stable keeps everything.
    let slow = Model::new(1.3);
    let (code, reasons) = run(&file, &slow).await;
    assert_eq!(code, 3, "{reasons:?}");
    assert!(!reasons.contains(&"CutOver".to_string()), "{reasons:?}");
    assert!(slow.shares().iter().all(|w| *w == 0.0));
}

#[tokio::test]
async fn a_cold_canary_is_judged_only_after_its_warmup_requests() {
    // Its first 100 requests are 3x slower; the window waits for 100
    // requests per canary replica (the time warm-up is 0s), so none of
    // them is evidence: promoted, after a WarmedUp event.
    let file = canary_with(CANARY_STEPS, "    warmupRequests: 100\n");
    let mut cold = Model::new(1.0);
    cold.cold = 100;
    let (code, reasons) = run(&file, &cold).await;
    assert_eq!(code, 0, "{reasons:?}");
    let warmed = reasons.iter().position(|r| r == "WarmedUp");
    let passed = reasons.iter().position(|r| r == "AnalysisPassed");
    assert!(
        warmed.is_some() && warmed < passed,
        "the window opened after the warm-up, then passed: {reasons:?}"
    );
}
