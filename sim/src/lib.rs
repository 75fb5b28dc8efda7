//! weir-sim: a simulated OpenAI-compatible inference server and a streaming
//! load generator, for the demo, tests and benchmarks.
//!
//! # The server
//!
//! [`spawn`] (or [`serve`]) answers `POST /v1/chat/completions` and
//! `POST /v1/completions` like vLLM's OpenAI frontend: SSE streams with one
//! chunk per token, or one JSON body with `usage`. Latency, errors and GPU
//! load follow a [`SimConfig`]: a lognormal time to first token with an
//! optional slow tail, a fixed inter-token gap, output lengths drawn per
//! request with shares of `length`-cut and empty answers, error and
//! mid-stream error rates, and a GPU-utilization model that rises with
//! load. One server can serve several models by name, each with its own
//! [`Profile`] (LoRA adapters behind one pool). `/metrics`
//! exposes the vLLM and dcgm-exporter families the analysis reads, in their
//! exposition style, so the same queries work against the sim and against a
//! real deployment.
//!
//! With [`SimConfig::forward`] the server answers nothing itself: it
//! relays every API request to an upstream and streams the answer back
//! ([`forward`]), a frontend of an inference graph. With
//! [`SimConfig::generation`] it stamps its generation on what it relays
//! and counts, by sender, the generations of the requests it receives.
//!
//! Every random draw of a request comes from an RNG seeded with the
//! configured seed and the request's arrival index ([`model::RequestPlan`]),
//! so a seeded run is reproducible request by request.
//!
//! It is built to never be the bottleneck in front of which a proxy is
//! measured: hyper 1.x on the multi-threaded tokio runtime, a hand-written
//! body that emits each pre-rendered chunk from a timer (no task or channel
//! per stream), and metrics as plain atomics.
//!
//! # The load generator
//!
//! [`load::run`] sends streaming chat completions at a constant rate (open
//! loop: a request that would exceed the concurrency limit is dropped and
//! counted, never queued), optionally over a weighted mix of models and
//! drawn prompt lengths, and measures time to first token, inter-token
//! gaps, finish reasons and outcomes on the client side, per model when
//! it sends several.

pub mod config;
pub mod forward;
pub mod load;
pub mod metrics;
pub mod model;
pub mod openai;
pub mod profile;
mod server;
pub mod text;

pub use config::{ConfigError, Framing, GpuModel, SimConfig};
pub use forward::{Forward, ForwardUrlError, GENERATION_HEADER, Resolve};
pub use profile::{ModelSpecError, Override, Profile, ServedModel};
pub use server::{ServeSummary, SimError, SimHandle, bind, serve, spawn};

/// Response header naming the simulator that answered (its `--name`).
pub const SIM_HEADER: &str = "x-weir-sim";

/// Response header a weir proxy sets to the cohort that served a request.
pub const COHORT_HEADER: &str = "x-weir-cohort";
