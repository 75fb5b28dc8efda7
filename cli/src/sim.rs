//! `weir sim`: a simulated OpenAI-compatible inference server, for demos,
//! tests and benchmarks.
//!
//! The flags map one to one onto [`weir_sim::SimConfig`]. Values are
//! checked while parsing, so a bad one is a usage error (exit 2) naming
//! the flag. Ctrl-C or SIGTERM stops accepting connections and exits once
//! open streams have finished, or after `--shutdown-grace`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use weir_sim::{Framing, GpuModel, SimConfig};

use crate::exit::Code;

/// Arguments of `weir sim`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Endpoints: POST /v1/chat/completions, POST /v1/completions (streaming or not), \
GET /v1/models, GET /health, GET /metrics (vLLM and dcgm-exporter families), \
GET and POST /control with --control.

GPU model: utilization = min(100, --gpu-util + --gpu-util-per-request × in-flight \
requests averaged over ~1 s); power follows utilization; framebuffer use is constant.

Exit codes: 0 stopped cleanly, 1 error, 2 usage.")]
pub struct Args {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Which simulator this is: the `x-weir-sim` response header,
    /// `system_fingerprint` in bodies and the DCGM `Hostname` label.
    #[arg(long, default_value = "sim", value_parser = header_value)]
    name: String,
    /// The model served (`/v1/models`, the `model_name` metric label).
    #[arg(long, default_value = "weir-sim")]
    model: String,
    /// Median time to first token (200ms, 1.5s).
    #[arg(long, default_value = "200ms", value_parser = duration)]
    ttft: Duration,
    /// Spread of the time to first token: log-space standard deviation of
    /// the lognormal (0 = always the median).
    #[arg(long, default_value_t = 0.3, value_parser = sigma)]
    ttft_sigma: f64,
    /// Gap between consecutive tokens.
    #[arg(long, default_value = "15ms", value_parser = duration)]
    itl: Duration,
    /// Tokens per response, unless the request's max_tokens is lower.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    tokens: u32,
    /// Fraction of requests answered with HTTP 500 before any token.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    error_rate: f64,
    /// Fraction of streams that send an error event mid-stream and end
    /// without finish_reason or [DONE].
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    stream_error_rate: f64,
    /// Fraction of requests whose TTFT is multiplied by --tail-factor.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    tail_prob: f64,
    /// TTFT multiplier of the slow tail.
    #[arg(long, default_value_t = 3.0, value_parser = tail_factor)]
    tail_factor: f64,
    /// GPU utilization with nothing in flight, percent.
    #[arg(long, default_value_t = 50.0, value_parser = percent)]
    gpu_util: f64,
    /// GPU utilization added per request in flight, percentage points.
    #[arg(long, default_value_t = 2.0, value_parser = non_negative)]
    gpu_util_per_request: f64,
    /// Seed of every random draw (request N always draws the same fate).
    #[arg(long)]
    seed: Option<u64>,
    /// How long open streams may run after Ctrl-C/SIGTERM.
    #[arg(long, default_value = "30s", value_parser = duration)]
    shutdown_grace: Duration,
    /// Idle keep-alive connections are closed after this (vLLM: 5s).
    #[arg(long, default_value = "5s", value_parser = duration)]
    keep_alive: Duration,
    /// Whose stream framing to copy: `openai` (role in the first token's
    /// chunk, a usage chunk when asked) or `llama-cpp` (llama.cpp's server:
    /// a role-only first chunk, every fourth token as "", never a usage
    /// chunk).
    #[arg(long, value_enum, default_value_t = FramingArg::Openai)]
    framing: FramingArg,
    /// Accept `POST /control` with `{"ttftFactor": F}`: the time to first
    /// token of every later request is multiplied by F (a running version
    /// that turns slow). Off, /control does not exist.
    #[arg(long)]
    control: bool,
}

/// `--framing`: [`Framing`] as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FramingArg {
    /// The OpenAI API's.
    Openai,
    /// llama.cpp's server's.
    LlamaCpp,
}

impl Args {
    fn config(&self) -> SimConfig {
        SimConfig {
            name: self.name.clone(),
            model: self.model.clone(),
            models: Vec::new(),
            ttft: self.ttft,
            ttft_sigma: self.ttft_sigma,
            itl: self.itl,
            tokens: self.tokens,
            tokens_sigma: 0.0,
            length_share: 0.0,
            empty_share: 0.0,
            error_rate: self.error_rate,
            stream_error_rate: self.stream_error_rate,
            tail_prob: self.tail_prob,
            tail_factor: self.tail_factor,
            gpu: GpuModel {
                base_util: self.gpu_util,
                util_per_request: self.gpu_util_per_request,
            },
            seed: self.seed,
            shutdown_grace: self.shutdown_grace,
            keep_alive: self.keep_alive,
            framing: match self.framing {
                FramingArg::Openai => Framing::OpenAi,
                FramingArg::LlamaCpp => Framing::LlamaCpp,
            },
            control: self.control,
        }
    }
}

/// Runs `weir sim` until Ctrl-C or SIGTERM.
pub fn run(args: &Args) -> Result<Code> {
    let config = args.config();
    config.validate().context("invalid simulator settings")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr().context("cannot read the bound address")?;
        eprintln!(
            "weir sim {:?}: serving {:?} on http://{addr}/v1 (TTFT median {} σ {}, ITL {}, {} tokens, \
             errors {}, stream errors {}, tail {} ×{})",
            config.name,
            config.model,
            humantime::format_duration(config.ttft),
            config.ttft_sigma,
            humantime::format_duration(config.itl),
            config.tokens,
            config.error_rate,
            config.stream_error_rate,
            config.tail_prob,
            config.tail_factor,
        );
        let grace = config.shutdown_grace;
        let summary = weir_sim::serve(config, listener, async move {
            shutdown_signal().await;
            eprintln!(
                "weir sim: shutting down; open streams may finish within {}",
                humantime::format_duration(grace)
            );
        })
        .await?;
        if summary.drained {
            eprintln!(
                "weir sim: stopped after {} requests ({} were open at shutdown and finished)",
                summary.requests, summary.open_at_shutdown
            );
        } else {
            eprintln!(
                "weir sim: stopped after {} requests; streams still open after {} were cut",
                summary.requests,
                humantime::format_duration(grace)
            );
        }
        Ok(Code::Success)
    })
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// A duration such as `200ms`, `1.5s`, `2m`.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (write a duration such as 200ms, 1.5s or 2m)"))
}

fn number(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{s:?} is not a finite number"))
    }
}

fn in_range(s: &str, low: f64, high: f64, what: &str) -> Result<f64, String> {
    let v = number(s)?;
    if (low..=high).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not {what}"))
    }
}

fn fraction(s: &str) -> Result<f64, String> {
    in_range(s, 0.0, 1.0, "a fraction between 0 and 1")
}

fn percent(s: &str) -> Result<f64, String> {
    in_range(s, 0.0, 100.0, "a percentage between 0 and 100")
}

fn sigma(s: &str) -> Result<f64, String> {
    in_range(
        s,
        0.0,
        5.0,
        "a log-space standard deviation between 0 and 5",
    )
}

fn tail_factor(s: &str) -> Result<f64, String> {
    in_range(s, 0.0, 1000.0, "a factor between 0 and 1000")
}

fn non_negative(s: &str) -> Result<f64, String> {
    in_range(s, 0.0, f64::MAX, "zero or more")
}

fn header_value(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} must be non-empty printable ASCII (it is sent as a header)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_numbers_parse_or_say_why() {
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("200ms"), Ok(Duration::from_millis(200)));
        assert!(duration("fast").is_err());
        assert_eq!(fraction("0.25"), Ok(0.25));
        assert!(
            fraction("1.5")
                .expect_err("out of range")
                .contains("fraction")
        );
        assert!(percent("NaN").is_err());
        assert!(header_value("a\tb").is_err());
    }
}
