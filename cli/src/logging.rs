//! Logs: `tracing` for weir's own events, with pingora's `log` records
//! bridged in. Human-readable by default, one JSON object per line with
//! `--log-format json` (for clusters). The filter comes from `WEIR_LOG`
//! (`info` by default, `warn` for the commands that print their own
//! progress; e.g. `WEIR_LOG=debug,pingora=info`). Request and
//! response bodies and credentials are never logged by weir.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing::Level;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people at a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// The most pingora may log, whatever `WEIR_LOG` asks. Its debug and trace
/// records print request and response headers (`Authorization`, cookies),
/// body chunks and a malformed request's raw bytes, and some of its
/// warnings quote a header value; a log is no place for any of them. Its
/// errors name what failed without request content.
const PINGORA_MOST: Level = Level::ERROR;

/// Whether a record may reach the log: anything of weir's, pingora's only
/// up to [`PINGORA_MOST`] (records bridged from `log` keep their module
/// path as target).
fn allowed(target: &str, level: Level) -> bool {
    !target.starts_with("pingora") || level <= PINGORA_MOST
}

/// Installs the global subscriber (once, at startup). Logs go to stderr so
/// that `--output json` on stdout stays machine-readable.
pub fn init(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let cap = filter_fn(|meta| allowed(meta.target(), *meta.level()));
    let layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry();
    // `try_init` also bridges the `log` crate (pingora) into tracing.
    let _ = match format {
        LogFormat::Text => registry
            .with(layer.with_filter(cap).with_filter(filter))
            .try_init(),
        LogFormat::Json => registry
            .with(layer.json().with_filter(cap).with_filter(filter))
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingora_records_below_error_never_pass() {
        for level in [Level::TRACE, Level::DEBUG, Level::INFO, Level::WARN] {
            assert!(!allowed("pingora_core::protocols::http::v1::server", level));
            assert!(allowed("weir_proxy::server", level));
        }
        assert!(allowed("pingora_core::apps", Level::ERROR));
    }
}
