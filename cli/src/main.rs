//! `weir`: the one binary. It parses the command line ([`weir::args`]) and
//! dispatches to the subcommand's module in the `weir` library, which
//! returns an exit code from DESIGN.md's table.
//!
//! Installed (or symlinked) as `kubectl-weir` on PATH, it is also the
//! kubectl plugin `kubectl weir`: the same commands, with usage and hints
//! spelled `kubectl weir`.

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};
use weir::args::{Cli, Command};
use weir::{
    analyze, backup, cluster, controller, crds_cmd, demo, exit, import, load, logging, preflight,
    proxy, report, run, sim,
};

// pingora makes about 80 heap allocations per proxied request, and under
// load glibc's malloc fell through its per-thread cache to the slow paths:
// 22% of `weir proxy`'s instructions. jemalloc cuts the proxy's instructions
// per request by 10% (callgrind) and holds memory per open stream at 61 KiB
// (glibc: 64). mimalloc was faster still but doubled memory per stream.
// The `system-alloc` feature leaves glibc's malloc in, for heap profilers
// that hook it (heaptrack).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let matches = Cli::command().bin_name(cluster::program()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    logging::init(cli.log_format, cli.command.default_log_level());
    // One TLS crypto provider for the process: the Kubernetes client and
    // reqwest are built for aws-lc-rs, pingora's TLS listener brings ring,
    // and with both compiled in rustls picks neither by itself.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
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
        Command::Import(args) => import::run(&args),
    };
    match result {
        Ok(code) => code.into(),
        Err(err) => {
            eprintln!("error: {}", exit::render(&err));
            exit::Code::Error.into()
        }
    }
}
