//! The simulation model, as pure functions: what one request will do
//! ([`RequestPlan::draw`]) and what the simulated GPU reports
//! ([`gpu_util`], [`power_watts`], [`kv_cache_usage`]).
//!
//! Nothing here touches a clock or a socket, so the distributions are
//! tested directly with statistical bands, and the server only executes a
//! plan.

use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

use crate::config::{GpuModel, SimConfig};

/// What goes wrong with a request, decided before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: the request runs to its end.
    None,
    /// HTTP 500 with an OpenAI error body, before any token.
    Http500,
    /// A streaming request sends this many tokens, then an SSE error event,
    /// and ends without `finish_reason` or `[DONE]`.
    StreamError {
        /// Tokens sent before the error event.
        after_tokens: u32,
    },
}

/// One request's fate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestPlan {
    /// Time from arrival to the first token.
    pub ttft: Duration,
    /// Whether the TTFT was drawn from the slow tail.
    pub tail: bool,
    /// Tokens the response will have (unless a fault cuts it).
    pub tokens: u32,
    /// Why the response is `length`-limited: `max_tokens` was below the
    /// configured token count.
    pub capped: bool,
    /// What goes wrong, if anything.
    pub fault: Fault,
}

/// The RNG of request number `index` under `seed`: independent streams per
/// request, so a request's draws do not depend on how many other requests
/// ran concurrently. Xoshiro256++ is portable: the same seed gives the same
/// draws on every platform and rand version that keeps the algorithm.
pub fn request_rng(seed: u64, index: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(mix(seed, index))
}

/// A well-mixed 64-bit value of `(seed, index)` (SplitMix64 finalizer).
pub fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl RequestPlan {
    /// Draws request number `index`'s plan. `max_tokens` is the request's
    /// cap, `streaming` whether it asked for a stream (mid-stream errors
    /// only happen to streams).
    ///
    /// The draws are made in a fixed order whatever the configuration, so
    /// changing one rate does not reshuffle the other draws of a seed.
    pub fn draw(
        config: &SimConfig,
        seed: u64,
        index: u64,
        max_tokens: Option<u32>,
        streaming: bool,
    ) -> Self {
        let mut rng = request_rng(seed, index);
        let z: f64 = rng.sample(StandardNormal);
        let u_tail: f64 = rng.random();
        let u_error: f64 = rng.random();
        let u_stream: f64 = rng.random();
        let u_position: f64 = rng.random();

        let tail = u_tail < config.tail_prob;
        let mut seconds = config.ttft.as_secs_f64() * (config.ttft_sigma * z).exp();
        if tail {
            seconds *= config.tail_factor;
        }
        let ttft = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::from_secs(3600));

        let capped = max_tokens.is_some_and(|m| m < config.tokens);
        let tokens = max_tokens.map_or(config.tokens, |m| m.min(config.tokens));
        let fault = if u_error < config.error_rate {
            Fault::Http500
        } else if streaming && u_stream < config.stream_error_rate {
            // Mid-stream: after at least one token and before the last, when
            // the response has room for that.
            let after_tokens = if tokens >= 2 {
                1 + ((u_position * f64::from(tokens - 1)) as u32).min(tokens - 2)
            } else {
                0
            };
            Fault::StreamError { after_tokens }
        } else {
            Fault::None
        };
        RequestPlan {
            ttft,
            tail,
            tokens,
            capped,
            fault,
        }
    }
}

/// Simulated GPU utilization, percent: see [`GpuModel`].
pub fn gpu_util(gpu: &GpuModel, load: f64) -> f64 {
    (gpu.base_util + gpu.util_per_request * load.max(0.0)).clamp(0.0, 100.0)
}

/// Idle power of the simulated board, watts.
pub const IDLE_WATTS: f64 = 70.0;
/// Board power limit of the simulated board (an H100 SXM), watts.
pub const MAX_WATTS: f64 = 700.0;
/// Total framebuffer of the simulated GPU, MiB (an 80 GB H100).
pub const FB_TOTAL_MIB: u64 = 81_559;
/// Framebuffer in use, MiB: vLLM preallocates weights and KV cache up to
/// `gpu_memory_utilization` (0.9 by default) at start, so it does not move.
pub const FB_USED_MIB: u64 = FB_TOTAL_MIB * 9 / 10;
/// KV-cache capacity in tokens (5943 blocks of 16, as in the vLLM fixture).
pub const KV_CAPACITY_TOKENS: u64 = 5943 * 16;

/// Power draw at `util` percent, watts: linear between idle and the limit.
pub fn power_watts(util: f64) -> f64 {
    IDLE_WATTS + (MAX_WATTS - IDLE_WATTS) * util.clamp(0.0, 100.0) / 100.0
}

/// KV-cache usage in `[0, 1]` with `tokens` held by requests in flight
/// (their prompt plus what they generated so far).
pub fn kv_cache_usage(tokens: u64) -> f64 {
    (tokens as f64 / KV_CAPACITY_TOKENS as f64).min(1.0)
}

/// One step of the load average behind [`gpu_util`]: the exponentially
/// weighted mean of in-flight requests with time constant `tau`, after
/// `dt` at `inflight`.
pub fn smooth_load(previous: f64, inflight: f64, dt: Duration, tau: Duration) -> f64 {
    let alpha = 1.0 - (-dt.as_secs_f64() / tau.as_secs_f64().max(1e-9)).exp();
    previous + (inflight - previous) * alpha
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SimConfig {
        SimConfig {
            ttft: Duration::from_millis(100),
            ttft_sigma: 0.5,
            ..SimConfig::default()
        }
    }

    fn plans(config: &SimConfig, n: u64) -> Vec<RequestPlan> {
        (0..n)
            .map(|i| RequestPlan::draw(config, 7, i, None, true))
            .collect()
    }

    /// Binomial band: `k` successes in `n` trials at `p`, within 4.5 sd
    /// (false failure about 1 in 150,000 per check).
    fn within_binomial(k: usize, n: usize, p: f64) -> bool {
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        (k as f64 - n as f64 * p).abs() <= 4.5 * sd + 1.0
    }

    #[test]
    fn same_seed_and_index_give_the_same_plan() {
        let c = config();
        assert_eq!(
            RequestPlan::draw(&c, 1, 42, None, true),
            RequestPlan::draw(&c, 1, 42, None, true)
        );
        assert_ne!(
            RequestPlan::draw(&c, 1, 42, None, true).ttft,
            RequestPlan::draw(&c, 1, 43, None, true).ttft
        );
    }

    #[test]
    fn ttft_median_and_log_sd_match_the_config() {
        let n = 20_000;
        let mut logs: Vec<f64> = plans(&config(), n)
            .iter()
            .map(|p| p.ttft.as_secs_f64().ln())
            .collect();
        logs.sort_by(f64::total_cmp);
        let median = logs[logs.len() / 2].exp();
        let mean = logs.iter().sum::<f64>() / n as f64;
        let sd = (logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        // The sample median of log TTFT has sd ≈ 1.2533·σ/√n = 0.0044.
        assert!((median - 0.1).abs() < 0.1 * 0.025, "median {median}");
        assert!((sd - 0.5).abs() < 0.02, "sd {sd}");
    }

    #[test]
    fn tail_fraction_is_binomial_and_scales_ttft() {
        let c = SimConfig {
            tail_prob: 0.1,
            tail_factor: 4.0,
            ttft_sigma: 0.0,
            ..config()
        };
        let all = plans(&c, 10_000);
        let tails = all.iter().filter(|p| p.tail).count();
        assert!(within_binomial(tails, all.len(), 0.1), "{tails}");
        for p in &all {
            let want = if p.tail { 0.4 } else { 0.1 };
            assert!((p.ttft.as_secs_f64() - want).abs() < 1e-9, "{p:?}");
        }
    }

    #[test]
    fn faults_follow_their_rates_and_stream_errors_land_mid_stream() {
        let c = SimConfig {
            error_rate: 0.05,
            stream_error_rate: 0.2,
            tokens: 10,
            ..config()
        };
        let all = plans(&c, 10_000);
        let http = all.iter().filter(|p| p.fault == Fault::Http500).count();
        let stream: Vec<u32> = all
            .iter()
            .filter_map(|p| match p.fault {
                Fault::StreamError { after_tokens } => Some(after_tokens),
                _ => None,
            })
            .collect();
        assert!(within_binomial(http, 10_000, 0.05), "{http}");
        assert!(
            within_binomial(stream.len(), 10_000, 0.95 * 0.2),
            "{}",
            stream.len()
        );
        // After at least one token and before the tenth (last) one.
        assert!(stream.iter().all(|&k| (1..=9).contains(&k)));
        assert!(stream.contains(&1) && stream.contains(&9));
    }

    #[test]
    fn non_streaming_requests_never_get_stream_errors() {
        let c = SimConfig {
            stream_error_rate: 1.0,
            ..config()
        };
        let plan = RequestPlan::draw(&c, 3, 0, None, false);
        assert_eq!(plan.fault, Fault::None);
    }

    #[test]
    fn max_tokens_caps_and_marks_length() {
        let c = config();
        let p = RequestPlan::draw(&c, 0, 0, Some(5), true);
        assert_eq!((p.tokens, p.capped), (5, true));
        let p = RequestPlan::draw(&c, 0, 0, Some(500), true);
        assert_eq!((p.tokens, p.capped), (32, false));
        let p = RequestPlan::draw(&c, 0, 0, None, true);
        assert_eq!((p.tokens, p.capped), (32, false));
    }

    #[test]
    fn gpu_model_rises_with_load_and_saturates() {
        let gpu = GpuModel {
            base_util: 50.0,
            util_per_request: 2.0,
        };
        assert_eq!(gpu_util(&gpu, 0.0), 50.0);
        assert_eq!(gpu_util(&gpu, 10.0), 70.0);
        assert_eq!(gpu_util(&gpu, 1000.0), 100.0);
        assert_eq!(power_watts(0.0), IDLE_WATTS);
        assert_eq!(power_watts(100.0), MAX_WATTS);
        assert_eq!(kv_cache_usage(KV_CAPACITY_TOKENS * 2), 1.0);
    }

    #[test]
    fn smoothing_approaches_the_level_with_its_time_constant() {
        let tau = Duration::from_secs(1);
        let dt = Duration::from_millis(100);
        let mut load = 0.0;
        for _ in 0..10 {
            load = smooth_load(load, 10.0, dt, tau);
        }
        // One time constant: 1 - 1/e of the way.
        assert!(
            (load - 10.0 * (1.0 - (-1.0f64).exp())).abs() < 1e-9,
            "{load}"
        );
    }
}
