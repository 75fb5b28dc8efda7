//! Logs: `tracing` for weir's own events, with pingora's `log` records
//! bridged in. Human-readable by default, one JSON object per line with
//! `--log-format json` (for clusters). The filter comes from `WEIR_LOG`
//! (`info` by default, `warn` for the commands that print their own
//! progress; e.g. `WEIR_LOG=debug,pingora=info`). Request and
//! response bodies and credentials are never logged by weir.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people at a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber (once, at startup). Logs go to stderr so
/// that `--output json` on stdout stays machine-readable.
pub fn init(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // `try_init` also bridges the `log` crate (pingora) into tracing.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
