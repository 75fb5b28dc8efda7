//! The command line of `weir`: the top-level options and one subcommand per
//! module of this crate. `main.rs` parses it and dispatches; tests can
//! parse an argument list with [`Cli`] as clap does for the binary.

use clap::{Parser, Subcommand};

use crate::{
    analyze, backup, cluster, controller, crds_cmd, demo, import, load, logging, preflight, proxy,
    report, run, sim,
};

/// Progressive delivery for LLM inference.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log line format (logs go to stderr; filter with WEIR_LOG, e.g. debug).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    pub log_format: logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands; each lives in its own module.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compare two cohorts' samples offline and print the verdict.
    Analyze(analyze::Args),
    /// Run a simulated OpenAI-compatible inference server.
    Sim(sim::Args),
    /// Send streaming chat completions at a constant rate and measure them.
    Load(load::Args),
    /// Run the L7 proxy: routes from a YAML config file, or from the
    /// Canaries of a Kubernetes cluster (--kube).
    Proxy(proxy::Args),
    /// Roll out a canary between two local frontends (proxy in-process).
    Run(run::Args),
    /// See weir work end to end: two simulated servers, load, a canary run.
    Demo(demo::Args),
    /// Write the HTML report of a recorded run (the JSON of `weir run --record FILE`).
    Report(report::Args),
    /// Print the Canary CRD as YAML (`weir crds | kubectl apply -f -`).
    Crds(crds_cmd::Args),
    /// Run the Kubernetes controller (reconciles Canaries while it leads).
    Controller(controller::Args),
    /// List the Canaries of a namespace (-A: all): phase, step, weight, last verdict.
    Get(cluster::get::Args),
    /// Show a Canary's run: steps, traffic, replicas, analysis, Events (--watch follows it).
    Status(cluster::status::Args),
    /// Ask the controller to end the current step, or with --full to promote now.
    Promote(cluster::commands::PromoteArgs),
    /// Ask the controller to abort the run: all traffic back to stable first.
    Abort(cluster::commands::RequestArgs),
    /// Ask the controller to restart an aborted run from its first step.
    Retry(cluster::commands::RequestArgs),
    /// Hold a Canary's run where it is (sets spec.paused).
    Pause(cluster::commands::PauseArgs),
    /// Let a held run go on (clears spec.paused).
    Resume(cluster::commands::PauseArgs),
    /// Put an earlier promoted version back into the target Deployment.
    Undo(cluster::undo::UndoArgs),
    /// List the promoted versions `undo` can go back to.
    History(cluster::undo::HistoryArgs),
    /// Check that the cluster is ready for weir; prints each failing check with its fix.
    Preflight(preflight::Args),
    /// Write Canaries with their Deployments, Services, history and
    /// configuration to a bundle file (spec and status).
    Export(backup::export::ExportArgs),
    /// Put a bundle from `export` back (server-side apply; --dry-run shows what would change).
    Restore(backup::restore::RestoreArgs),
    /// Convert an Argo Rollouts Rollout or a Flagger Canary into a weir Canary (YAML on stdout).
    Import(import::Args),
}

impl Command {
    /// The log level when `WEIR_LOG` does not set one. `weir run` and
    /// `weir demo` print progress lines of their own; the in-process
    /// proxy's info lines would bury them. The cluster commands print what
    /// they did; their logs are only warnings.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Run(_) | Command::Demo(_) => "warn",
            Command::Get(_)
            | Command::Status(_)
            | Command::Promote(_)
            | Command::Abort(_)
            | Command::Retry(_)
            | Command::Pause(_)
            | Command::Resume(_)
            | Command::Undo(_)
            | Command::History(_)
            | Command::Preflight(_)
            | Command::Export(_)
            | Command::Restore(_)
            | Command::Import(_) => "warn",
            _ => "info",
        }
    }
}
