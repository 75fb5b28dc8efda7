//! `weir`: the one binary. Subcommands wire the crates together; each lives
//! in its own module and returns an [`ExitCode`] from DESIGN.md's table.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod analyze;
mod exit;
mod proxy;

/// Progressive delivery for LLM inference.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compare two cohorts' samples offline and print the verdict.
    Analyze(analyze::Args),
    /// Run the L7 proxy from a YAML config file.
    Proxy(proxy::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Analyze(args) => analyze::run(&args),
        Command::Proxy(args) => proxy::run(&args),
    };
    match result {
        Ok(code) => code.into(),
        Err(err) => {
            eprintln!("error: {err:#}");
            exit::Code::Error.into()
        }
    }
}
