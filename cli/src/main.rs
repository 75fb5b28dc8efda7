//! `weir`: the one binary. Subcommands wire the crates together; each lives
//! in its own module and returns an [`ExitCode`] from DESIGN.md's table.
//!
//! Installed (or symlinked) as `kubectl-weir` on PATH, it is also the
//! kubectl plugin `kubectl weir`: the same commands, with usage and hints
//! spelled `kubectl weir`.

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

mod analyze;
mod backup;
mod cluster;
mod controller;
mod crds_cmd;
mod demo;
mod exit;
mod load;
mod logging;
mod preflight;
mod proxy;
mod report;
mod run;
mod sim;

// pingora makes about 80 heap allocations per proxied request, and under
// load glibc's malloc fell through its per-thread cache to the slow paths:
// 22% of `weir proxy`'s instructions. jemalloc cuts the proxy's instructions
// per request by 10% (callgrind) and holds memory per open stream at 61 KiB
// (glibc: 64). mimalloc was faster still but doubled memory per stream.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Progressive delivery for LLM inference.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log line format (logs go to stderr; filter with WEIR_LOG, e.g. debug).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// Write the HTML report of a recorded run (JSON from `weir run --output json --record FILE`).
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
}

fn main() -> ExitCode {
    let matches = Cli::command().bin_name(cluster::program()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `weir run` and `weir demo` print progress lines of their own; the
    // in-process proxy's info lines would bury them. The cluster commands
    // print what they did; their logs are only warnings.
    let default_level = match cli.command {
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
        | Command::Restore(_) => "warn",
        _ => "info",
    };
    logging::init(cli.log_format, default_level);
    let result = match cli.command {
        Command::Analyze(args) => analyze::run(&args),
        Command::Sim(args) => sim::run(&args),
        Command::Load(args) => load::run(&args),
        Command::Proxy(args) => proxy::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Crds(args) => crds_cmd::run(&args),
        Command::Controller(args) => controller::run(&args),
        Command::Get(args) => cluster::get::run(&args),
        Command::Status(args) => cluster::status::run(&args),
        Command::Promote(args) => cluster::commands::promote(&args),
        Command::Abort(args) => cluster::commands::abort(&args),
        Command::Retry(args) => cluster::commands::retry(&args),
        Command::Pause(args) => cluster::commands::pause(&args),
        Command::Resume(args) => cluster::commands::resume(&args),
        Command::Undo(args) => cluster::undo::undo(&args),
        Command::History(args) => cluster::undo::list(&args),
        Command::Preflight(args) => preflight::run(&args),
        Command::Export(args) => backup::export::run(&args),
        Command::Restore(args) => backup::restore::run(&args),
    };
    match result {
        Ok(code) => code.into(),
        Err(err) => {
            eprintln!("error: {}", render(&err));
            exit::Code::Error.into()
        }
    }
}

/// The error and its causes, joined by `: `, skipping a cause whose text
/// the message before it already contains (many library errors, ours
/// included, print their source inline and also expose it as the source).
fn render(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    let mut previous = out.clone();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !previous.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        previous = text;
    }
    out
}
