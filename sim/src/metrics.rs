//! The simulator's `/metrics`: vLLM (V1) and dcgm-exporter families, named
//! and labelled as the real servers do, so the analysis's queries work
//! unchanged against the sim.
//!
//! Every name lives here once (the vLLM and DCGM ones are
//! [`weir_analysis::names`] constants, so the sim cannot drift from what the
//! analysis reads). Recording is lock-free: histograms are arrays of
//! [`AtomicU64`] bucket counters plus a nanosecond sum, updated with relaxed
//! `fetch_add`s; a scrape reads them and renders text.
//!
//! Exposition style follows the fixtures in `shared/fixtures/`: vLLM's
//! labels `engine="0"` and `model_name`, `le` between them (alphabetical,
//! as `prometheus_client` writes them), values as Python floats (`2.0`);
//! dcgm-exporter's `gpu`, `UUID`, `pci_bus_id`, `device`, `modelName`,
//! `Hostname`, `DCGM_FI_DRIVER_VERSION` labels and six-decimal floats.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use weir_analysis::names::{dcgm, vllm};

use crate::config::GpuModel;
use crate::model;

/// Histogram: time to first token, seconds.
pub const TTFT: &str = vllm::TTFT;
/// Histogram: gap between consecutive tokens, seconds.
pub const INTER_TOKEN: &str = vllm::INTER_TOKEN;
/// Histogram: whole request, seconds.
pub const E2E: &str = vllm::E2E;
/// Counter: finished requests by [`FINISHED_REASON_LABEL`].
pub const REQUEST_SUCCESS: &str = vllm::REQUEST_SUCCESS;
/// Label of [`REQUEST_SUCCESS`].
pub const FINISHED_REASON_LABEL: &str = vllm::FINISHED_REASON_LABEL;
/// Counter: prompt tokens processed.
pub const PROMPT_TOKENS: &str = "vllm:prompt_tokens_total";
/// Counter: tokens generated.
pub const GENERATION_TOKENS: &str = "vllm:generation_tokens_total";
/// Gauge: requests running.
pub const REQUESTS_RUNNING: &str = vllm::REQUESTS_RUNNING;
/// Gauge: requests waiting (always 0: the sim runs every request at once).
pub const REQUESTS_WAITING: &str = vllm::REQUESTS_WAITING;
/// Gauge: KV-cache usage, 0..=1.
pub const KV_CACHE_USAGE: &str = vllm::KV_CACHE_USAGE;
/// Label: the served model, on every vLLM family.
pub const MODEL_NAME_LABEL: &str = "model_name";
/// Label: the engine index, on every vLLM family (always `"0"`).
pub const ENGINE_LABEL: &str = "engine";

/// Gauge: GPU utilization, percent.
pub const GPU_UTIL: &str = dcgm::GPU_UTIL;
/// Gauge: graphics engine active ratio, 0..=1.
pub const GR_ENGINE_ACTIVE: &str = dcgm::GR_ENGINE_ACTIVE;
/// Gauge: framebuffer used, MiB.
pub const FB_USED: &str = dcgm::FB_USED;
/// Gauge: framebuffer free, MiB.
pub const FB_FREE: &str = "DCGM_FI_DEV_FB_FREE";
/// Gauge: power draw, watts.
pub const POWER_USAGE: &str = dcgm::POWER_USAGE;
/// Label: node name (the sim's name), in dcgm-exporter's spelling.
pub const HOSTNAME_LABEL: &str = dcgm::HOSTNAME_LABELS[0];

/// Counter: completion requests received, by the generation that sent
/// them ([`FROM_LABEL`], the `x-weir-generation` request header, empty
/// when absent) and the sim's own ([`OWN_LABEL`]). Exposed only by a sim
/// that has a generation: a graph canary's isolation test asserts that
/// `from == own` on every sample of every worker.
pub const GENERATION_REQUESTS: &str = "weir_sim_generation_requests_total";
/// Label of [`GENERATION_REQUESTS`]: the sender's generation.
pub const FROM_LABEL: &str = "from";
/// Label of [`GENERATION_REQUESTS`]: this sim's generation.
pub const OWN_LABEL: &str = "own";
/// Most distinct senders [`GENERATION_REQUESTS`] keeps apart (the header
/// comes from clients); later ones are counted together as
/// [`OTHER_GENERATIONS`].
pub const MAX_GENERATIONS: usize = 64;
/// The `from` value of senders past [`MAX_GENERATIONS`].
pub const OTHER_GENERATIONS: &str = "~other";

/// The GPU the sim pretends to have.
pub const GPU_MODEL_NAME: &str = "NVIDIA H100 80GB HBM3";
/// The driver version label value.
pub const DRIVER_VERSION: &str = "580.95.05";

/// vLLM's TTFT bucket bounds, seconds.
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's inter-token latency bucket bounds, seconds.
pub const INTER_TOKEN_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's request latency bucket bounds, seconds.
pub const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// Why a request finished: the values of [`FINISHED_REASON_LABEL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishedReason {
    /// The response ended normally.
    Stop,
    /// The response hit `max_tokens`.
    Length,
    /// The client went away first.
    Abort,
    /// The request failed (HTTP 500 or a mid-stream error).
    Error,
}

impl FinishedReason {
    /// Every reason, in vLLM's exposition order.
    pub const ALL: [FinishedReason; 4] = [
        FinishedReason::Stop,
        FinishedReason::Length,
        FinishedReason::Abort,
        FinishedReason::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishedReason::Stop => "stop",
            FinishedReason::Length => "length",
            FinishedReason::Abort => "abort",
            FinishedReason::Error => "error",
        }
    }
}

/// A cumulative histogram with fixed bounds, recorded with atomics.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per-bucket (not cumulative) counts; the last is `+Inf`.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these (increasing) upper bounds.
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let i = self.bounds.partition_point(|b| *b < seconds);
        self.counts[i].fetch_add(1, Relaxed);
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// `(le, cumulative count)` per bound, then `+Inf`, and the sum in
    /// seconds. The `+Inf` count is the total of the buckets read, so it is
    /// consistent with them even while requests are recorded.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64) {
        let mut cumulative = 0;
        let mut out = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Relaxed);
            let le = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            out.push((le, cumulative));
        }
        (out, self.sum_nanos.load(Relaxed) as f64 / 1e9)
    }
}

/// Everything the simulator records.
#[derive(Debug)]
pub struct Metrics {
    /// Time to first token.
    pub ttft: Histogram,
    /// Gaps between tokens.
    pub inter_token: Histogram,
    /// Whole requests.
    pub e2e: Histogram,
    finished: [AtomicU64; 4],
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    running: AtomicU64,
    kv_tokens: AtomicU64,
    /// Smoothed in-flight requests, as `f64` bits (written by one sampler).
    load_bits: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            ttft: Histogram::new(TTFT_BUCKETS),
            inter_token: Histogram::new(INTER_TOKEN_BUCKETS),
            e2e: Histogram::new(E2E_BUCKETS),
            finished: Default::default(),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            running: AtomicU64::new(0),
            kv_tokens: AtomicU64::new(0),
            load_bits: AtomicU64::new(0f64.to_bits()),
        }
    }
}

impl Metrics {
    /// A request started, holding `prompt_tokens` of KV cache.
    pub fn started(&self, prompt_tokens: u32) {
        self.running.fetch_add(1, Relaxed);
        self.prompt_tokens
            .fetch_add(u64::from(prompt_tokens), Relaxed);
        self.kv_tokens.fetch_add(u64::from(prompt_tokens), Relaxed);
    }

    /// A running request generated `n` tokens.
    pub fn tokens(&self, n: u64) {
        self.generation_tokens.fetch_add(n, Relaxed);
        self.kv_tokens.fetch_add(n, Relaxed);
    }

    /// A started request ended, releasing `kv_tokens` (its prompt plus its
    /// generated tokens).
    pub fn ended(&self, kv_tokens: u64) {
        self.running.fetch_sub(1, Relaxed);
        self.kv_tokens.fetch_sub(kv_tokens, Relaxed);
    }

    /// A request finished for `reason`.
    pub fn finished(&self, reason: FinishedReason) {
        self.finished[reason as usize].fetch_add(1, Relaxed);
    }

    /// Requests finished for `reason` so far.
    pub fn finished_count(&self, reason: FinishedReason) -> u64 {
        self.finished[reason as usize].load(Relaxed)
    }

    /// Requests running now.
    pub fn running(&self) -> u64 {
        self.running.load(Relaxed)
    }

    /// The smoothed load behind the GPU gauges.
    pub fn load(&self) -> f64 {
        f64::from_bits(self.load_bits.load(Relaxed))
    }

    /// Sets the smoothed load (the sampler's job).
    pub fn set_load(&self, load: f64) {
        self.load_bits.store(load.to_bits(), Relaxed);
    }
}

/// [`GENERATION_REQUESTS`]: counts by sender, for one own generation. A
/// few senders at most (a stable and a canary generation), so a short
/// list behind a mutex.
#[derive(Debug)]
pub struct GenerationCounter {
    /// Escaped for the exposition.
    own: String,
    seen: Mutex<Vec<(String, u64)>>,
}

impl GenerationCounter {
    /// A counter of a sim whose generation is `own`.
    pub fn new(own: &str) -> Self {
        GenerationCounter {
            own: escape_label(own),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// One request from generation `from` (empty: the request named none).
    pub fn count(&self, from: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, n)) = seen.iter_mut().find(|(f, _)| f == from) {
            *n += 1;
            return;
        }
        let from = if seen.len() < MAX_GENERATIONS {
            from
        } else {
            OTHER_GENERATIONS
        };
        match seen.iter_mut().find(|(f, _)| f == from) {
            Some((_, n)) => *n += 1,
            None => seen.push((from.to_string(), 1)),
        }
    }

    /// Requests counted from `from` so far.
    pub fn get(&self, from: &str) -> u64 {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.iter().find(|(f, _)| f == from).map_or(0, |(_, n)| *n)
    }

    /// Appends the family to a scrape (its header even before any request,
    /// so a scrape shows the sim counts).
    pub fn render(&self, out: &mut String) {
        header(
            out,
            GENERATION_REQUESTS,
            "Completion requests received, by the sender's generation (x-weir-generation) and this sim's own.",
            "counter",
        );
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        for (from, n) in seen.iter() {
            let _ = writeln!(
                out,
                "{GENERATION_REQUESTS}{{{FROM_LABEL}=\"{}\",{OWN_LABEL}=\"{}\"}} {}",
                escape_label(from),
                self.own,
                py_float(*n as f64)
            );
        }
    }
}

/// Label sets rendered once per server.
#[derive(Debug, Clone)]
pub struct Labels {
    /// `engine="0",model_name="..."`.
    vllm: String,
    /// `model_name="..."`.
    model: String,
    /// `{engine="0",le="` — histogram bucket lines continue with the bound.
    bucket_open: String,
    /// `",model_name="..."}`.
    bucket_close: String,
    /// The dcgm-exporter label set, without braces.
    dcgm: String,
}

/// Escapes a label value for the text exposition format.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Labels {
    /// Labels for a server named `name` serving `model`.
    pub fn new(name: &str, model: &str) -> Self {
        let model = escape_label(model);
        let host = escape_label(name);
        let uuid = gpu_uuid(name);
        Labels {
            vllm: format!("{ENGINE_LABEL}=\"0\",{MODEL_NAME_LABEL}=\"{model}\""),
            model: format!("{MODEL_NAME_LABEL}=\"{model}\""),
            bucket_open: format!("{{{ENGINE_LABEL}=\"0\",le=\""),
            bucket_close: format!("\",{MODEL_NAME_LABEL}=\"{model}\"}}"),
            dcgm: format!(
                "gpu=\"0\",UUID=\"{uuid}\",pci_bus_id=\"00000000:00:02.0\",device=\"nvidia0\",\
                 modelName=\"{GPU_MODEL_NAME}\",{HOSTNAME_LABEL}=\"{host}\",\
                 DCGM_FI_DRIVER_VERSION=\"{DRIVER_VERSION}\""
            ),
        }
    }
}

/// A stable GPU UUID derived from the sim's name, in NVIDIA's format.
pub fn gpu_uuid(name: &str) -> String {
    // FNV-1a, then mixed: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let a = model::mix(h, 1);
    let b = model::mix(h, 2);
    format!(
        "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// A value as Python's `repr(float)` would write it for the magnitudes
/// seen here (`2.0`, `0.25`).
fn py_float(v: f64) -> String {
    format!("{v:?}")
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, labels: &Labels, name: &str, help: &str, h: &Histogram) {
    header(out, name, help, "histogram");
    let (buckets, sum) = h.snapshot();
    let mut count = 0;
    for (le, c) in buckets {
        let le = if le.is_infinite() {
            "+Inf".to_string()
        } else {
            py_float(le)
        };
        let _ = writeln!(
            out,
            "{name}_bucket{}{le}{} {}",
            labels.bucket_open,
            labels.bucket_close,
            py_float(c as f64)
        );
        count = c;
    }
    let _ = writeln!(
        out,
        "{name}_count{{{}}} {}",
        labels.vllm,
        py_float(count as f64)
    );
    let _ = writeln!(out, "{name}_sum{{{}}} {}", labels.vllm, py_float(sum));
}

impl Metrics {
    /// Renders the whole scrape.
    pub fn render(&self, labels: &Labels, gpu: &GpuModel) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let l = &labels.vllm;
        let running = self.running();
        header(
            &mut out,
            REQUESTS_RUNNING,
            "Number of requests in model execution batches.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "{REQUESTS_RUNNING}{{{l}}} {}",
            py_float(running as f64)
        );
        header(
            &mut out,
            REQUESTS_WAITING,
            "Number of requests waiting to be processed.",
            "gauge",
        );
        let _ = writeln!(out, "{REQUESTS_WAITING}{{{l}}} 0.0");
        header(
            &mut out,
            KV_CACHE_USAGE,
            "KV-cache usage. 1 means 100 percent usage.",
            "gauge",
        );
        let kv = model::kv_cache_usage(self.kv_tokens.load(Relaxed));
        let _ = writeln!(out, "{KV_CACHE_USAGE}{{{l}}} {}", py_float(kv));
        header(
            &mut out,
            PROMPT_TOKENS,
            "Number of prefill tokens processed.",
            "counter",
        );
        let _ = writeln!(
            out,
            "{PROMPT_TOKENS}{{{l}}} {}",
            py_float(self.prompt_tokens.load(Relaxed) as f64)
        );
        header(
            &mut out,
            GENERATION_TOKENS,
            "Number of generation tokens processed.",
            "counter",
        );
        let _ = writeln!(
            out,
            "{GENERATION_TOKENS}{{{l}}} {}",
            py_float(self.generation_tokens.load(Relaxed) as f64)
        );
        header(
            &mut out,
            REQUEST_SUCCESS,
            "Count of successfully processed requests.",
            "counter",
        );
        for reason in FinishedReason::ALL {
            let _ = writeln!(
                out,
                "{REQUEST_SUCCESS}{{{ENGINE_LABEL}=\"0\",{FINISHED_REASON_LABEL}=\"{}\",{}}} {}",
                reason.as_str(),
                labels.model,
                py_float(self.finished_count(reason) as f64)
            );
        }
        histogram(
            &mut out,
            labels,
            TTFT,
            "Histogram of time to first token in seconds.",
            &self.ttft,
        );
        histogram(
            &mut out,
            labels,
            INTER_TOKEN,
            "Histogram of inter-token latency in seconds.",
            &self.inter_token,
        );
        histogram(
            &mut out,
            labels,
            E2E,
            "Histogram of e2e request latency in seconds.",
            &self.e2e,
        );

        let util = model::gpu_util(gpu, self.load());
        let d = &labels.dcgm;
        header(&mut out, GPU_UTIL, "GPU utilization (in %).", "gauge");
        let _ = writeln!(out, "{GPU_UTIL}{{{d}}} {}", util.round() as u64);
        header(
            &mut out,
            GR_ENGINE_ACTIVE,
            "Ratio of time the graphics engine is active.",
            "gauge",
        );
        let _ = writeln!(out, "{GR_ENGINE_ACTIVE}{{{d}}} {:.6}", util / 100.0);
        header(
            &mut out,
            FB_FREE,
            "Framebuffer memory free (in MiB).",
            "gauge",
        );
        let _ = writeln!(
            out,
            "{FB_FREE}{{{d}}} {}",
            model::FB_TOTAL_MIB - model::FB_USED_MIB
        );
        header(
            &mut out,
            FB_USED,
            "Framebuffer memory used (in MiB).",
            "gauge",
        );
        let _ = writeln!(out, "{FB_USED}{{{d}}} {}", model::FB_USED_MIB);
        header(&mut out, POWER_USAGE, "Power draw (in W).", "gauge");
        let _ = writeln!(out, "{POWER_USAGE}{{{d}}} {:.6}", model::power_watts(util));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_le_inclusive() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(100));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(2));
        let (buckets, sum) = h.snapshot();
        assert_eq!(buckets, vec![(0.1, 1), (1.0, 2), (f64::INFINITY, 3)]);
        assert!((sum - 2.6).abs() < 1e-9);
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn bucket_bounds_are_vllms() {
        // The first and last bounds as they appear in the real scrape.
        assert_eq!((TTFT_BUCKETS[0], TTFT_BUCKETS[21]), (0.001, 2560.0));
        assert_eq!(INTER_TOKEN_BUCKETS.len(), 19);
        assert_eq!(E2E_BUCKETS.len(), 21);
        for b in [TTFT_BUCKETS, INTER_TOKEN_BUCKETS, E2E_BUCKETS] {
            assert!(b.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn uuid_is_stable_and_nvidia_shaped() {
        let u = gpu_uuid("stable");
        assert_eq!(u, gpu_uuid("stable"));
        assert_ne!(u, gpu_uuid("canary"));
        assert_eq!(u.len(), "GPU-a8394b51-c086-568a-9f1a-c1e1c934c44c".len());
    }

    #[test]
    fn generations_are_counted_by_sender_and_bounded() {
        let counter = GenerationCounter::new("chat-rev2");
        counter.count("chat-rev2");
        counter.count("chat-rev2");
        counter.count("");
        let mut text = String::new();
        counter.render(&mut text);
        assert!(text.contains(
            "weir_sim_generation_requests_total{from=\"chat-rev2\",own=\"chat-rev2\"} 2.0\n"
        ));
        assert!(
            text.contains("weir_sim_generation_requests_total{from=\"\",own=\"chat-rev2\"} 1.0\n")
        );
        for i in 0..2 * MAX_GENERATIONS {
            counter.count(&format!("g{i}"));
        }
        counter.count("chat-rev2");
        assert_eq!(counter.get("chat-rev2"), 3);
        assert_eq!(
            counter.get(OTHER_GENERATIONS),
            // Two senders were seen before; the rest past the bound.
            (2 * MAX_GENERATIONS - (MAX_GENERATIONS - 2)) as u64
        );
    }

    #[test]
    fn renders_vllm_style_lines() {
        let m = Metrics::default();
        m.ttft.observe(Duration::from_millis(30));
        m.finished(FinishedReason::Stop);
        let text = m.render(&Labels::new("sim-a", "org/m"), &GpuModel::default());
        assert!(text.contains(
            "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.04\",model_name=\"org/m\"} 1.0\n"
        ));
        assert!(text.contains(
            "vllm:request_success_total{engine=\"0\",finished_reason=\"stop\",model_name=\"org/m\"} 1.0\n"
        ));
        assert!(text.contains("# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"));
        assert!(text.contains("Hostname=\"sim-a\""));
        assert!(text.contains("DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-"));
    }
}
