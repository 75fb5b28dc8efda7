//! `weir demo`: the whole of local mode on one machine in about a minute.
//! Two simulated inference servers (the canary with the scenario's
//! regression), streaming load from a built-in client, and `weir run`'s
//! engine and proxy with a short canary plan.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use weir_controller::local::file;
use weir_sim::load::LoadConfig;
use weir_sim::{GpuModel, SimConfig};

use crate::exit::Code;
use crate::run::{Output, RunOptions, code_of, drive};

/// Arguments of `weir demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What is wrong with the canary (healthy: nothing).
    #[arg(long, value_enum, default_value_t = Scenario::Healthy)]
    scenario: Scenario,
    /// Write a self-contained HTML report of the run here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Requests per second of the built-in load.
    #[arg(long, default_value_t = 160.0)]
    rate: f64,
    /// Where the demo's proxy listens (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// `text` or `json` progress.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Print the Canary file the demo runs, and exit.
    #[arg(long)]
    print_canary: bool,
}

/// The canary's regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Same as stable: promoted.
    Healthy,
    /// Time to first token 30% slower.
    SlowTtft,
    /// 8% of requests 4× slower: the median holds, p95 does not.
    Tail,
    /// 6% of requests fail (HTTP 500 or a broken stream).
    Errors,
    /// The same latency for 60% more GPU per request.
    GpuHungry,
}

impl Scenario {
    fn canary(self, stable: &SimConfig) -> SimConfig {
        let mut c = stable.clone();
        c.name = "canary".into();
        c.seed = stable.seed.map(|s| s + 1);
        match self {
            Scenario::Healthy => {}
            Scenario::SlowTtft => c.ttft = stable.ttft.mul_f64(1.3),
            Scenario::Tail => {
                c.tail_prob = 0.08;
                c.tail_factor = 4.0;
            }
            Scenario::Errors => {
                c.error_rate = 0.04;
                c.stream_error_rate = 0.02;
            }
            Scenario::GpuHungry => {
                c.gpu = GpuModel {
                    base_util: stable.gpu.base_util * 1.6,
                    util_per_request: stable.gpu.util_per_request * 1.6,
                };
            }
        }
        c
    }

    fn describe(self) -> &'static str {
        match self {
            Scenario::Healthy => "the canary is as good as stable",
            Scenario::SlowTtft => "the canary's time to first token is 30% slower",
            Scenario::Tail => "8% of the canary's requests take 4× longer (median unchanged)",
            Scenario::Errors => "6% of the canary's requests fail (HTTP 500 or a broken stream)",
            Scenario::GpuHungry => "the canary needs 60% more GPU per request",
        }
    }
}

/// The demo's Canary: a short plan that still shows every step kind.
fn canary_yaml(stable: SocketAddr, canary: SocketAddr) -> String {
    format!(
        r#"apiVersion: weir.dev/v1alpha1
kind: Canary
metadata: {{name: demo}}
spec:
  backends:
    stable: {{url: "http://{stable}", metrics: "http://{stable}/metrics"}}
    canary: {{url: "http://{canary}", metrics: "http://{canary}/metrics"}}
  strategy:
    canary:
      steps:
        - setWeight: 10
        - pause: {{duration: 4s}}
        - setWeight: 50
        - analysis: {{minDuration: 10s, maxDuration: 80s}}
  analysis:
    interval: 2s
    warmup: 2s
    confidence: 0.95
    minSamples: 200
    onInconclusive: abort
    metrics:
      - {{name: ttft, kind: latency, signal: ttft, quantiles: [0.5, 0.95], maxIncrease: 10%}}
      - {{name: errors, kind: errorRate, maxIncrease: 1pp, hardLimit: 5%}}
      - name: gpu
        kind: gauge
        source: {{scrape: {{metric: DCGM_FI_DEV_GPU_UTIL}}}}
        perRequest: true
        maxIncrease: 15%
  progressDeadlineSeconds: 120
"#
    )
}

/// Runs the demo.
pub fn run(args: &Args) -> Result<Code> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weir-demo")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(demo(args))
}

async fn demo(args: &Args) -> Result<Code> {
    let stable_cfg = SimConfig {
        name: "stable".into(),
        ttft: Duration::from_millis(120),
        ttft_sigma: 0.25,
        itl: Duration::from_millis(10),
        tokens: 24,
        seed: Some(7),
        // Near zero at idle, like DCGM_FI_DEV_GPU_UTIL on a real GPU, and
        // about 55% at the demo's load: the gauge is compared per request,
        // which is fair only for a gauge proportional to load (an idle floor
        // favours the cohort with less traffic in each interval), and the
        // headroom keeps both cohorts off the 100% ceiling on a loaded
        // machine, where gpu-hungry's +60% would otherwise be clipped.
        gpu: GpuModel {
            base_util: 5.0,
            util_per_request: 1.8,
        },
        ..SimConfig::default()
    };
    let canary_cfg = args.scenario.canary(&stable_cfg);
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let stable = weir_sim::bind(stable_cfg, any).await?;
    let canary = weir_sim::bind(canary_cfg, any).await?;
    let yaml = canary_yaml(stable.addr(), canary.addr());
    if args.print_canary {
        print!("{yaml}");
        return Ok(Code::Success);
    }
    let parsed =
        file::parse(&yaml).map_err(|e| anyhow!("the demo's own Canary is invalid: {e}"))?;

    // The proxy must be listening before the load starts: bind it here
    // when asked for port 0, so the load knows where to go.
    let listen = if args.listen.port() == 0 {
        let probe =
            std::net::TcpListener::bind(args.listen).context("no free port for the demo")?;
        probe.local_addr()?
    } else {
        args.listen
    };
    let admin = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").context("no free admin port")?;
        probe.local_addr()?
    };
    if args.output == Output::Text {
        println!(
            "weir demo: scenario {:?} — {}.\n  Load: {:.0} streaming chat completions/s through the proxy. Plan: 10% → pause 4s → 50% → analysis (10s–80s).",
            args.scenario,
            args.scenario.describe(),
            args.rate
        );
    }
    let options = RunOptions {
        listen,
        admin,
        output: args.output,
        report: args.report.clone(),
        record: None,
    };
    let load = LoadConfig {
        url: format!("http://{listen}"),
        rate: args.rate,
        duration: Duration::from_secs(150),
        concurrency_limit: Some(2000),
        session_header: None,
        sessions: 1,
        model: "weir-sim".into(),
        models: Vec::new(),
        prompt: "Tell me about weirs.".into(),
        prompt_tokens: None,
        max_tokens: None,
        request_timeout: Duration::from_secs(30),
        seed: Some(11),
        headers: Vec::new(),
    };
    let load_task = tokio::spawn(async move {
        // Wait for the proxy to listen, then stream until stopped.
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        weir_sim::load::run(&load, Duration::from_secs(3600), |_| {}).await
    });
    let record = drive(&parsed, &options).await;
    load_task.abort();
    // The sims' summaries add nothing to the verdict.
    let _ = stable.shutdown().await;
    let _ = canary.shutdown().await;
    let record = record?;
    if args.output == Output::Text {
        let failed: Vec<&str> = record
            .decision
            .iter()
            .flat_map(|d| d.metrics.iter())
            .filter(|m| m.finding == weir_analysis::decision::Finding::Exceeds)
            .map(|m| m.name.as_str())
            .collect();
        if !failed.is_empty() {
            println!("  failed: {}", failed.join(", "));
        }
        if let Some(path) = &args.report {
            println!("  open {} in a browser for the plots", path.display());
        }
    }
    Ok(code_of(&record))
}
