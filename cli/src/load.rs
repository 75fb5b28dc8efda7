//! `weir load`: open-loop streaming load against any OpenAI-compatible URL
//! (a sim, a weir proxy, a real server), measured as a client sees it.
//!
//! Prints percentiles of time to first token and inter-token latency,
//! throughput, outcome counts and, when a weir proxy answers, counts per
//! cohort; with several `--model`s, counts, tokens, `length` finishes and
//! TTFT per model. A status line goes to stderr every few seconds of long runs.
//! Exit 0 when the run happened (whatever the requests' outcomes), 1 when
//! it could not (the URL is unreachable), 2 for usage errors.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ValueEnum;
use weir_sim::load::{
    LoadConfig, LoadReport, ModelMix, ModelWeight, Percentiles, Progress, PromptTokens,
};

use crate::exit::Code;
use crate::sim::duration;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A summary for people.
    Text,
    /// One JSON object on one line.
    Json,
}

/// Arguments of `weir load`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Requests are open loop: request i is sent at i/rate seconds whatever happened to \
the others; one that would exceed --concurrency-limit is dropped and counted.

A mix: --model chat-lora-v7=3 --model chat-lora-v8=1 asks for each model by weight \
(the report then breaks results down per model); --prompt-tokens 50..2000 (or a \
list 100,500,2000, or one number) draws each prompt's length, sent as generated \
text of about 4 bytes per token. Both draws follow --seed.

Exit codes: 0 the run happened, 1 error (e.g. unreachable URL), 2 usage.")]
pub struct Args {
    /// Base URL (http://host:port or .../v1); requests go to
    /// /v1/chat/completions under it.
    #[arg(long, value_parser = url)]
    url: String,
    /// Requests per second.
    #[arg(long, default_value_t = 10.0, value_parser = rate)]
    rate: f64,
    /// How long to send requests; open responses are awaited after.
    #[arg(long, default_value = "30s", value_parser = duration)]
    duration: Duration,
    /// Requests in flight beyond which new ones are dropped, not queued.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    concurrency_limit: Option<u64>,
    /// Send a session id from a fixed random pool in this header (to check
    /// sticky routing).
    #[arg(long, value_name = "NAME")]
    session_header: Option<String>,
    /// An extra header on every request, `NAME: VALUE` (repeatable), e.g.
    /// `x-weir-cohort: canary` to reach a blue-green preview.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = header)]
    headers: Vec<(String, String)>,
    /// Size of the session pool.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    sessions: u32,
    /// The model of the requests, `NAME` or `NAME=WEIGHT` (repeatable:
    /// each request asks for one, drawn by weight; default weight 1).
    #[arg(
        long = "model",
        value_name = "NAME[=WEIGHT]",
        default_value = "weir-sim",
        value_parser = model_weight
    )]
    models: Vec<ModelWeight>,
    /// The user message of every request (unless --prompt-tokens).
    #[arg(
        long,
        default_value = "Say something.",
        conflicts_with = "prompt_tokens"
    )]
    prompt: String,
    /// Prompt length in tokens, drawn per request: `N`, `MIN..MAX`
    /// (uniform) or `A,B,C` (one of them); the message is generated text
    /// of that many tokens.
    #[arg(long, value_name = "N|MIN..MAX|A,B,...", value_parser = prompt_tokens)]
    prompt_tokens: Option<PromptTokens>,
    /// max_tokens of every request.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_tokens: Option<u32>,
    /// Longest time one request may take.
    #[arg(long, default_value = "60s", value_parser = duration)]
    timeout: Duration,
    /// Seed of the session, model and prompt-length draws.
    #[arg(long)]
    seed: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// Seconds between progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

impl Args {
    fn config(&self) -> LoadConfig {
        // One model is today's run: every request asks for it.
        let (model, models) = match self.models.as_slice() {
            [one] => (one.name.clone(), Vec::new()),
            all => (
                all.first().map_or_else(String::new, |m| m.name.clone()),
                all.to_vec(),
            ),
        };
        LoadConfig {
            url: self.url.clone(),
            rate: self.rate,
            duration: self.duration,
            concurrency_limit: self.concurrency_limit,
            session_header: self.session_header.clone(),
            headers: self.headers.clone(),
            sessions: self.sessions,
            model,
            models,
            prompt: self.prompt.clone(),
            prompt_tokens: self.prompt_tokens.clone(),
            max_tokens: self.max_tokens,
            request_timeout: self.timeout,
            seed: self.seed,
        }
    }
}

/// Runs `weir load`.
pub fn run(args: &Args) -> Result<Code> {
    let config = args.config();
    // Each --model is checked while parsing; only a name given twice is not.
    if !config.models.is_empty()
        && let Err(reason) = ModelMix::new(&config.models)
    {
        eprintln!("error: --model: {reason}");
        eprintln!("  give each --model NAME[=WEIGHT] once");
        return Ok(Code::Usage);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let long_run = args.duration > PROGRESS_EVERY;
    let report = runtime.block_on(weir_sim::load::run(&config, PROGRESS_EVERY, |p| {
        if long_run && p.elapsed >= PROGRESS_EVERY / 2 {
            eprintln!("{}", progress_line(p));
        }
    }))?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&report)?),
        Output::Text => print!("{}", render_text(&report)),
    }
    Ok(Code::Success)
}

fn progress_line(p: &Progress) -> String {
    format!(
        "weir load: {:>4.0}s/{:.0}s  sent {}  ok {}  errors {}  dropped {}  in flight {}",
        p.elapsed.as_secs_f64(),
        p.duration.as_secs_f64(),
        p.sent,
        p.ok,
        p.errors,
        p.dropped,
        p.inflight
    )
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |s| format!("{:.1}ms", s * 1000.0))
}

fn latency_line(name: &str, p: &Percentiles) -> String {
    format!(
        "{name:<11}p50 {}  p90 {}  p99 {}  max {}  (n = {})\n",
        ms(p.p50),
        ms(p.p90),
        ms(p.p99),
        ms(p.max),
        p.count
    )
}

fn render_text(r: &LoadReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "weir load: {}  {} req/s for {}s",
        r.url, r.rate, r.duration_seconds
    );
    let _ = writeln!(
        out,
        "{:<11}scheduled {}  sent {}  dropped {}",
        "requests", r.scheduled, r.sent, r.dropped
    );
    let o = &r.outcomes;
    let _ = writeln!(
        out,
        "{:<11}ok {}  http_error {}  stream_error {}  incomplete {}  connect_error {}  timeout {}",
        "outcomes", o.ok, o.http_error, o.stream_error, o.incomplete, o.connect_error, o.timeout
    );
    if !r.http_statuses.is_empty() {
        let statuses: Vec<String> = r
            .http_statuses
            .iter()
            .map(|(status, n)| format!("{status} ×{n}"))
            .collect();
        let _ = writeln!(out, "{:<11}{}", "statuses", statuses.join("  "));
    }
    let _ = writeln!(
        out,
        "{:<11}sent {:.1} req/s  ok {:.1} req/s  {:.0} tokens/s  (elapsed {:.2}s)",
        "throughput", r.sent_per_second, r.ok_per_second, r.tokens_per_second, r.elapsed_seconds
    );
    if r.finished_length > 0 {
        let _ = writeln!(
            out,
            "{:<11}{} streams ended with finish_reason \"length\"",
            "length", r.finished_length
        );
    }
    out.push_str(&latency_line("TTFT", &r.ttft_seconds));
    out.push_str(&latency_line("ITL", &r.itl_seconds));
    for (name, m) in &r.models {
        let _ = writeln!(
            out,
            "{:<11}{name}: requests {}  ok {}  errors {}  tokens {}  length {}  TTFT p50 {}",
            "model",
            m.requests,
            m.ok,
            m.errors,
            m.tokens,
            m.finished_length,
            ms(m.ttft_seconds.p50)
        );
    }
    for (name, c) in &r.cohorts {
        let _ = writeln!(
            out,
            "{:<11}{name}: requests {}  ok {}  errors {}  TTFT p50 {}",
            "cohort",
            c.requests,
            c.ok,
            c.errors,
            ms(c.ttft_seconds.p50)
        );
    }
    if let Some(s) = &r.sessions {
        let _ = writeln!(
            out,
            "{:<11}{}: pool {}  seen {}  on several cohorts {}",
            "sessions", s.header, s.pool, s.seen, s.on_several_cohorts
        );
    }
    out
}

fn url(s: &str) -> Result<String, String> {
    weir_sim::load::endpoint(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number of requests per second"
        )),
    }
}

fn model_weight(s: &str) -> Result<ModelWeight, String> {
    s.parse()
}

fn prompt_tokens(s: &str) -> Result<PromptTokens, String> {
    s.parse()
}

fn header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!(
            "{s:?}: write NAME: VALUE, e.g. x-weir-cohort: canary"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::Parser as _;
    use weir_sim::load::{CohortReport, ModelReport, Outcomes};

    use super::*;
    use crate::args::{Cli, Command};

    fn parse(flags: &[&str]) -> Result<Args, clap::Error> {
        let argv = ["weir", "load", "--url", "http://127.0.0.1:1"]
            .iter()
            .chain(flags);
        match Cli::try_parse_from(argv)?.command {
            Command::Load(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn one_model_is_todays_run_and_several_are_a_mix() {
        let config = parse(&[]).expect("defaults").config();
        assert_eq!(
            (config.model.as_str(), config.models.len()),
            ("weir-sim", 0)
        );
        assert_eq!(config.prompt_tokens, None);
        let config = parse(&["--model", "tiny"]).expect("one").config();
        assert_eq!((config.model.as_str(), config.models.len()), ("tiny", 0));
        let config = parse(&[
            "--model",
            "chat-lora-v7=3",
            "--model",
            "chat-lora-v8",
            "--prompt-tokens",
            "50..2000",
        ])
        .expect("a mix")
        .config();
        assert_eq!(
            config.models,
            vec![
                ModelWeight::new("chat-lora-v7", 3.0),
                ModelWeight::new("chat-lora-v8", 1.0)
            ]
        );
        assert_eq!(
            config.prompt_tokens,
            Some(PromptTokens::Range { min: 50, max: 2000 })
        );
        for bad in [
            &["--model", "a=0"][..],
            &["--model", "a=x"],
            &["--prompt-tokens", "9..3"],
            &["--prompt-tokens", "100", "--prompt", "hi"],
        ] {
            let err = parse(bad).expect_err(&bad.join(" "));
            assert_eq!(err.exit_code(), 2, "{err}");
        }
    }

    #[test]
    fn text_summary_names_every_number() {
        let p = |v: f64| Percentiles {
            count: 10,
            mean: Some(v),
            p50: Some(v),
            p90: Some(v),
            p99: Some(v),
            max: Some(v),
        };
        let report = LoadReport {
            url: "http://x".into(),
            rate: 5.0,
            duration_seconds: 2.0,
            elapsed_seconds: 2.1,
            scheduled: 10,
            sent: 10,
            dropped: 0,
            outcomes: Outcomes {
                ok: 9,
                http_error: 1,
                ..Outcomes::default()
            },
            http_statuses: BTreeMap::from([(503, 1)]),
            sent_per_second: 5.0,
            ok_per_second: 4.3,
            tokens: 90,
            tokens_per_second: 43.0,
            finished_length: 4,
            ttft_seconds: p(0.05),
            itl_seconds: p(0.005),
            cohorts: BTreeMap::from([(
                "canary".to_string(),
                CohortReport {
                    requests: 3,
                    ok: 3,
                    errors: 0,
                    ttft_seconds: p(0.06),
                },
            )]),
            models: BTreeMap::from([(
                "chat-lora-v8".to_string(),
                ModelReport {
                    requests: 5,
                    ok: 5,
                    errors: 0,
                    tokens: 60,
                    finished_length: 4,
                    ttft_seconds: p(0.07),
                },
            )]),
            sessions: None,
        };
        let text = render_text(&report);
        for want in [
            "sent 10",
            "ok 9",
            "503 ×1",
            "TTFT       p50 50.0ms",
            "ITL        p50 5.0ms",
            "canary: requests 3",
            "4 streams ended with finish_reason \"length\"",
            "chat-lora-v8: requests 5  ok 5  errors 0  tokens 60  length 4  TTFT p50 70.0ms",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        assert!(url("https://x").is_err());
        assert!(rate("0").is_err());
    }
}
