//! `weir sim`: a simulated OpenAI-compatible inference server, for demos,
//! tests and benchmarks.
//!
//! The flags map one to one onto [`weir_sim::SimConfig`]; a repeated
//! `--model NAME:key=value,...` declares the models served, each key
//! overriding the server-wide flag of the same name for that model
//! ([`weir_sim::ServedModel`]). Values are checked while parsing, so a bad
//! one is a usage error (exit 2) naming the flag (or the model and key);
//! what only the whole set can tell (a model declared twice, shares that
//! add up to more than 1) is checked before the server starts, also exit
//! 2. Ctrl-C or SIGTERM stops accepting connections (after
//! `--shutdown-delay`, which a pod uses as a preStop sleep: its callers
//! learn it is going before it stops answering) and exits once open
//! streams have finished, or after `--shutdown-grace`.
//!
//! `--forward` / `--forward-env` make the sim a frontend that relays every
//! API request to a worker ([`weir_sim::forward`]); `--generation-env`
//! gives it a generation to stamp and count by. Both read the environment
//! a pod's controller sets (`DECODE_URL`, `DYN_NAMESPACE`), once at start:
//! a variable that is unset or empty is a usage error naming it. Kubernetes
//! Service names in the URL are resolved by [`services`] when
//! `--services-kubeconfig` or `--services-from-cluster` is given.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use weir_sim::{Forward, Framing, GpuModel, ServedModel, SimConfig};

use crate::exit::Code;

mod services;

/// Arguments of `weir sim`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Endpoints: POST /v1/chat/completions, POST /v1/completions (streaming or not), \
GET /v1/models, GET /health, GET /metrics (vLLM and dcgm-exporter families), \
GET and POST /control with --control.

Forwarding (--forward URL or --forward-env VAR): the sim answers nothing \
itself. Every request but its own endpoints (/health, /metrics, /control) \
is relayed to URL (http://HOST[:PORT][/PREFIX], the request's path and \
query appended) with its method, body, content-type and accept, and the \
upstream's status, content-type and body come back as they arrive (SSE \
events pass through one by one). /v1/models is relayed too: a frontend \
lists what its workers serve. An unreachable upstream is a 502, a Service \
with no ready endpoint a 503, both with an OpenAI error body and counted \
as finished_reason=\"error\"; relayed completions are counted and timed \
end to end, without TTFT. The latency, length and failure flags (--ttft, \
--itl, --tokens, --error-rate, ...) do not apply; --model only names the \
metrics' model_name.

Generations (--generation-env VAR, e.g. DYN_NAMESPACE): the sim's \
generation is that variable's value. It is sent upstream as the \
x-weir-generation header, and every completion request the sim receives, \
answered or relayed, is counted as \
weir_sim_generation_requests_total{from=\"<its x-weir-generation, empty \
if none>\",own=\"<generation>\"} in /metrics.

Services (--services-kubeconfig PATH or --services-from-cluster, \
[--services-namespace NS]): stands in for cluster DNS and kube-proxy in \
test clusters. A forward URL host that reads as a Service (svc, svc.ns, \
svc.ns.svc, svc.ns.svc.cluster.local) is resolved for each request to a \
random ready endpoint of the Service's EndpointSlices \
(kubernetes.io/service-name=svc, watched), at the slice port equal to the \
URL's port, else the one named http, else the first. The API server is \
PATH's current context's, or with --services-from-cluster the one kube \
infers: $KUBECONFIG (the test node agent sets it in every pod, to its relay \
to the API server), else ~/.kube/config, else the in-cluster config. The \
namespace is the host's, else NS, else the kubeconfig context's, else \
$POD_NAMESPACE (the node agent sets it to the pod's), else default (in a \
cluster: the pod's own). Other hosts (IP literals, localhost, other names) \
use the system resolver.

Models: one --model NAME answers requests for any model name (echoing it). \
Several --model flags, or one with keys, serve exactly those names, as LoRA \
adapters behind one vLLM pool; another name gets vLLM's 404 (NotFoundError). \
Keys override the server-wide flag of the same name for that model: ttft, \
ttft-sigma, itl, tokens, tokens-sigma, length-share, empty-share, error-rate, \
stream-error-rate, tail-prob, tail-factor. Example: \
--model chat-lora-v7 --model chat-lora-v8:tokens=200,itl=13ms,length-share=0.3. \
Metrics carry the first model's name as model_name (vLLM labels adapters' \
requests with the base model).

Output length: each answer draws its own length, lognormal with mean --tokens and \
log-space sd --tokens-sigma (0: always --tokens). An answer whose length exceeds \
the request's max_tokens stops there with finish_reason \"length\"; --length-share \
of answers end with \"length\" whatever they drew (at max_tokens, or at their \
drawn length without it); --empty-share have no content token at all.

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
    /// A model served, `NAME` or `NAME:KEY=VALUE,...` (repeatable; keys
    /// as the flags below: ttft, ttft-sigma, itl, tokens, tokens-sigma,
    /// length-share, empty-share, error-rate, stream-error-rate, tail-prob,
    /// tail-factor). One plain NAME answers any requested model.
    #[arg(
        long = "model",
        value_name = "NAME[:KEY=VALUE,...]",
        default_value = "weir-sim",
        value_parser = served_model
    )]
    models: Vec<ServedModel>,
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
    /// Tokens per response (their mean with --tokens-sigma), unless the
    /// request's max_tokens is lower.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    tokens: u32,
    /// Spread of the output length: log-space standard deviation of the
    /// lognormal with mean --tokens (0 = always --tokens).
    #[arg(long, default_value_t = 0.0, value_parser = tokens_sigma)]
    tokens_sigma: f64,
    /// Fraction of answers that end with finish_reason "length" whatever
    /// length they drew.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    length_share: f64,
    /// Fraction of answers with no content token (finish_reason "stop",
    /// completion_tokens 0).
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    empty_share: f64,
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
    /// Keep accepting requests this long after SIGTERM, as a pod's preStop
    /// sleep does: a terminating pod leaves its Service's ready endpoints
    /// at once, but callers that resolved it just before still connect.
    #[arg(long, default_value = "0s", value_parser = duration)]
    shutdown_delay: Duration,
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
    /// that turns slow); with `"model": NAME` only that model's. Off,
    /// /control does not exist.
    #[arg(long)]
    control: bool,
    /// Relay every API request to this upstream base URL instead of
    /// answering it (see Forwarding below); the latency and answer flags
    /// then do not apply.
    #[arg(long, value_name = "URL", value_parser = forward_url, group = "upstream")]
    forward: Option<Forward>,
    /// As --forward, with the URL read from this environment variable at
    /// start (unset or empty: a usage error).
    #[arg(long, value_name = "VAR", group = "upstream")]
    forward_env: Option<String>,
    /// The sim's generation is this environment variable's value (unset or
    /// empty: a usage error): sent upstream as x-weir-generation, and the
    /// `own` label of weir_sim_generation_requests_total.
    #[arg(long, value_name = "VAR")]
    generation_env: Option<String>,
    /// Resolve a Service name in the forward URL through the Kubernetes
    /// API at this kubeconfig (see Services below): a stand-in for cluster
    /// DNS and kube-proxy in test clusters.
    #[arg(long, value_name = "PATH", requires = "upstream", group = "services")]
    services_kubeconfig: Option<PathBuf>,
    /// As --services-kubeconfig, with the client config kube infers
    /// ($KUBECONFIG, else ~/.kube/config, else in-cluster): what a pod
    /// uses, no path needed.
    #[arg(long, requires = "upstream", group = "services")]
    services_from_cluster: bool,
    /// The namespace of a Service named without one (default: the
    /// kubeconfig context's, else $POD_NAMESPACE, else default).
    #[arg(long, value_name = "NS", requires = "services")]
    services_namespace: Option<String>,
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
    /// Where Services are resolved from, if they are.
    fn services(&self) -> Option<services::Source> {
        match (&self.services_kubeconfig, self.services_from_cluster) {
            (Some(path), _) => Some(services::Source::Kubeconfig(path.clone())),
            (None, true) => Some(services::Source::Inferred),
            (None, false) => None,
        }
    }

    /// The configuration, with `env` looking up the variables that
    /// `--forward-env` and `--generation-env` name.
    ///
    /// # Errors
    /// A usage error in words: a variable unset or empty, or holding an
    /// unusable URL or generation.
    fn config(&self, env: impl Fn(&str) -> Option<String>) -> Result<SimConfig, String> {
        let read = |var: &str, flag: &str| {
            env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                format!("{flag} {var}: the environment variable {var} is unset or empty")
            })
        };
        let forward = match (&self.forward, &self.forward_env) {
            (Some(forward), _) => Some(forward.clone()),
            (None, Some(var)) => {
                let url = read(var, "--forward-env")?;
                Some(Forward::parse(&url).map_err(|e| format!("--forward-env {var}: {e}"))?)
            }
            (None, None) => None,
        };
        let generation = self
            .generation_env
            .as_deref()
            .map(|var| {
                let value = read(var, "--generation-env")?;
                header_value(&value).map_err(|e| format!("--generation-env {var}: {e}"))
            })
            .transpose()?;
        // One plain --model is today's server: any name answered. Several,
        // or one with keys, are the names served; the first one labels
        // the metrics.
        let (model, models) = match self.models.as_slice() {
            [one] if one.overrides.is_empty() => (one.name.clone(), Vec::new()),
            all => (
                all.first().map_or_else(String::new, |m| m.name.clone()),
                all.to_vec(),
            ),
        };
        Ok(SimConfig {
            name: self.name.clone(),
            model,
            models,
            ttft: self.ttft,
            ttft_sigma: self.ttft_sigma,
            itl: self.itl,
            tokens: self.tokens,
            tokens_sigma: self.tokens_sigma,
            length_share: self.length_share,
            empty_share: self.empty_share,
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
            forward,
            generation,
        })
    }
}

/// Runs `weir sim` until Ctrl-C or SIGTERM.
pub fn run(args: &Args) -> Result<Code> {
    let mut config = match args.config(|var| std::env::var(var).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Code::Usage);
        }
    };
    if let Err(e) = config.validate() {
        eprintln!("error: invalid simulator settings: {e}");
        eprintln!("  {}", fix(&e));
        return Ok(Code::Usage);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        if let Some(source) = args.services()
            && let Some(forward) = &mut config.forward
            && let Some(service) = services::service_of(forward.host())
        {
            let pod_namespace = std::env::var(services::POD_NAMESPACE).ok();
            let endpoints = services::watch(
                &source,
                args.services_namespace.as_deref(),
                pod_namespace.as_deref(),
                &service,
            )
            .await?;
            *forward = forward.clone().with_resolver(Arc::new(endpoints));
        }
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        if let Some(forward) = &config.forward {
            let by = if forward.resolves() {
                "a ready endpoint of its Service per request"
            } else {
                "the system resolver"
            };
            eprintln!(
                "weir sim {:?}: forwarding on http://{addr}/v1 to {forward} (resolved by {by})",
                config.name
            );
        }
        let served = if config.models.is_empty() {
            format!("{:?}", config.model)
        } else {
            let specs: Vec<String> = config
                .models
                .iter()
                .map(|m| format!("{:?}", m.to_string()))
                .collect();
            specs.join(", ")
        };
        if config.forward.is_none() {
            eprintln!(
                "weir sim {:?}: serving {served} on http://{addr}/v1 (TTFT median {} σ {}, ITL {}, \
             {} tokens σ {}, length share {}, empty share {}, errors {}, stream errors {}, \
             tail {} ×{})",
                config.name,
                humantime::format_duration(config.ttft),
                config.ttft_sigma,
                humantime::format_duration(config.itl),
                config.tokens,
                config.tokens_sigma,
                config.length_share,
                config.empty_share,
                config.error_rate,
                config.stream_error_rate,
                config.tail_prob,
                config.tail_factor,
            );
        }
        if let Some(generation) = &config.generation {
            eprintln!("weir sim {:?}: generation {generation:?}", config.name);
        }
        let grace = config.shutdown_grace;
        let delay = args.shutdown_delay;
        let summary = weir_sim::serve(config, listener, async move {
            shutdown_signal().await;
            if !delay.is_zero() {
                eprintln!(
                    "weir sim: terminating; still accepting for {}",
                    humantime::format_duration(delay)
                );
                tokio::time::sleep(delay).await;
            }
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

/// How to fix a configuration that only the whole set of flags can get
/// wrong.
fn fix(e: &weir_sim::ConfigError) -> String {
    match (e.field, &e.model) {
        ("model", _) => "drop the repeated --model".into(),
        (_, Some(model)) => format!(
            "fix it in --model {model}:KEY=VALUE,... or in the server-wide flags that model \
             inherits (--length-share, --empty-share, ...)"
        ),
        (field, None) => format!("change --{field}"),
    }
}

/// `--forward URL`.
fn forward_url(s: &str) -> Result<Forward, String> {
    Forward::parse(s).map_err(|e| e.to_string())
}

/// `--model NAME[:KEY=VALUE,...]`.
fn served_model(s: &str) -> Result<ServedModel, String> {
    s.parse()
        .map_err(|e: weir_sim::ModelSpecError| e.to_string())
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

fn tokens_sigma(s: &str) -> Result<f64, String> {
    in_range(
        s,
        0.0,
        3.0,
        "a log-space standard deviation between 0 and 3",
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
    use clap::Parser as _;
    use weir_sim::Override;

    use super::*;
    use crate::args::{Cli, Command};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(flags: &[&str]) -> Result<Args, clap::Error> {
        let argv = ["weir", "sim"].iter().chain(flags);
        match Cli::try_parse_from(argv)?.command {
            Command::Sim(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn one_plain_model_is_todays_server() {
        let config = parse(&[])
            .expect("defaults")
            .config(no_env)
            .expect("config");
        assert_eq!(
            (config.model.as_str(), config.models.len()),
            ("weir-sim", 0)
        );
        let config = parse(&["--model", "org/m"])
            .expect("one model")
            .config(no_env)
            .expect("config");
        assert_eq!(config.model, "org/m");
        assert!(config.answers_any_name());
        assert_eq!(
            config,
            SimConfig {
                model: "org/m".into(),
                ..parse(&[])
                    .expect("defaults")
                    .config(no_env)
                    .expect("config")
            }
        );
    }

    #[test]
    fn several_models_with_keys_are_served_by_name() {
        let config = parse(&[
            "--tokens-sigma",
            "0.4",
            "--model",
            "chat-lora-v7",
            "--model",
            "chat-lora-v8:tokens=200,itl=13ms,length-share=0.3,ttft=80ms",
        ])
        .expect("valid")
        .config(no_env)
        .expect("config");
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.model, "chat-lora-v7");
        assert_eq!(
            config.models,
            vec![
                ServedModel::new("chat-lora-v7"),
                ServedModel::new("chat-lora-v8")
                    .with(Override::Tokens(200))
                    .with(Override::Itl(Duration::from_millis(13)))
                    .with(Override::LengthShare(0.3))
                    .with(Override::Ttft(Duration::from_millis(80))),
            ]
        );
        let served = config.served();
        assert_eq!(
            served[1].1.tokens_sigma, 0.4,
            "server-wide flags are the base"
        );
        // One model with keys is served by name alone.
        let one = parse(&["--model", "m:tokens=3"])
            .expect("valid")
            .config(no_env)
            .expect("config");
        assert!(!one.answers_any_name());
    }

    #[test]
    fn a_bad_model_is_a_usage_error_naming_model_and_key() {
        for (spec, wants) in [
            (
                "chat-lora-v8:itll=13ms",
                &["chat-lora-v8", "itll", "keys: ttft"][..],
            ),
            (
                "chat-lora-v8:length-share=2",
                &["chat-lora-v8", "length-share", "fraction"],
            ),
            ("chat-lora-v8:ttft=soon", &["chat-lora-v8", "ttft", "80ms"]),
        ] {
            let err = parse(&["--model", "a", "--model", spec]).expect_err(spec);
            assert_eq!(err.exit_code(), 2, "{spec}");
            let text = err.to_string();
            for want in wants {
                assert!(text.contains(want), "{spec}: {want:?} missing from {text}");
            }
        }
        // Only the whole set can tell: checked before the server starts.
        let config = parse(&[
            "--length-share",
            "0.6",
            "--model",
            "a",
            "--model",
            "b:empty-share=0.5",
        ])
        .expect("each flag is fine")
        .config(no_env)
        .expect("config");
        let err = config.validate().expect_err("0.6 + 0.5 > 1");
        assert_eq!(err.model.as_deref(), Some("b"));
        assert!(fix(&err).contains("--model b:"), "{}", fix(&err));
        let twice = parse(&["--model", "a", "--model", "a"])
            .expect("parses")
            .config(no_env)
            .expect("config");
        assert!(fix(&twice.validate().expect_err("twice")).contains("repeated"));
    }

    #[test]
    fn forward_and_generation_come_from_the_environment() {
        let env = |var: &str| match var {
            "DECODE_URL" => Some("http://chat-decode-canary:8000".to_string()),
            "DYN_NAMESPACE" => Some("chat-rev2".to_string()),
            "EMPTY" => Some(String::new()),
            "BAD_URL" => Some("https://worker".to_string()),
            _ => None,
        };
        let config = parse(&[
            "--forward-env",
            "DECODE_URL",
            "--generation-env",
            "DYN_NAMESPACE",
        ])
        .expect("valid")
        .config(env)
        .expect("set");
        assert_eq!(
            config.forward.map(|f| f.to_string()).as_deref(),
            Some("http://chat-decode-canary:8000")
        );
        assert_eq!(config.generation.as_deref(), Some("chat-rev2"));
        let config = parse(&["--forward", "http://127.0.0.1:9/x"])
            .expect("valid")
            .config(no_env)
            .expect("no variable needed");
        assert_eq!(config.forward.map(|f| f.port()), Some(9));

        for (flags, wants) in [
            (
                &["--forward-env", "DECODE"][..],
                &["--forward-env DECODE", "unset or empty"][..],
            ),
            (&["--forward-env", "EMPTY"], &["EMPTY", "unset or empty"]),
            (&["--forward-env", "BAD_URL"], &["BAD_URL", "only http://"]),
            (&["--generation-env", "G"], &["--generation-env G", "unset"]),
        ] {
            let err = parse(flags)
                .expect("parses")
                .config(env)
                .expect_err("usage");
            for want in wants {
                assert!(err.contains(want), "{flags:?}: {want:?} missing from {err}");
            }
        }
    }

    #[test]
    fn forward_flags_are_checked_by_the_parser() {
        for flags in [
            &["--forward", "http://a", "--forward-env", "A"][..],
            &["--services-kubeconfig", "/k"],
            &["--services-from-cluster"],
            &["--forward", "http://a", "--services-namespace", "ns"],
            &[
                "--forward",
                "http://a",
                "--services-kubeconfig",
                "/k",
                "--services-from-cluster",
            ],
            &["--forward", "https://a"],
        ] {
            let err = parse(flags).expect_err("refused");
            assert_eq!(err.exit_code(), 2, "{flags:?}: {err}");
        }
        parse(&[
            "--forward",
            "http://chat-decode:8000",
            "--services-kubeconfig",
            "/k",
            "--services-namespace",
            "ns",
        ])
        .expect("valid");
        let args = parse(&[
            "--forward-env",
            "DECODE_URL",
            "--services-from-cluster",
            "--services-namespace",
            "ns",
        ])
        .expect("valid");
        assert_eq!(args.services(), Some(services::Source::Inferred));
        let args = parse(&["--forward", "http://a", "--services-kubeconfig", "/k"]).expect("valid");
        assert_eq!(
            args.services(),
            Some(services::Source::Kubeconfig("/k".into()))
        );
        assert_eq!(
            parse(&["--forward", "http://a"]).expect("valid").services(),
            None
        );
    }

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
