//! The simulation model, as pure functions: what one request will do
//! ([`RequestPlan::draw`]: its latency, its length and how it ends, its
//! failure) and what the simulated GPU reports ([`gpu_util`],
//! [`power_watts`], [`kv_cache_usage`]).
//!
//! Nothing here touches a clock or a socket, so the distributions are
//! tested directly with statistical bands, and the server only executes a
//! plan.

use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

use crate::config::GpuModel;
use crate::openai::Finish;
use crate::profile::Profile;

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
    /// Content tokens the response will have (unless a fault cuts it);
    /// 0 for an empty answer.
    pub tokens: u32,
    /// Its `finish_reason`: [`Finish::Length`] when its drawn length ran
    /// past `max_tokens` or it is one of the profile's `length_share`.
    pub finish: Finish,
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
    /// Draws request number `index`'s plan under `profile`. `max_tokens`
    /// is the request's cap, `streaming` whether it asked for a stream
    /// (mid-stream errors only happen to streams).
    ///
    /// The draws are made in a fixed order whatever the profile, so
    /// changing one rate does not reshuffle the other draws of a seed.
    ///
    /// # Length and finish reason
    ///
    /// The answer's own length is `round(tokens · e^(σz − σ²/2))`, at
    /// least 1, for a standard normal `z` and `σ = tokens_sigma`: a
    /// lognormal with mean `tokens` (exactly `tokens` when `σ = 0`). One
    /// uniform `u` then picks how it ends:
    ///
    /// - `u < length_share`: cut, `finish_reason: "length"`, at
    ///   `max_tokens` when the request set one, else at its own length
    ///   (standing for a limit of the server's that the sim does not model);
    /// - then, for the next `empty_share`: empty, 0 tokens, `"stop"`;
    /// - otherwise its own length, `"stop"`, unless that is more than
    ///   `max_tokens`: then `max_tokens` tokens and `"length"`.
    ///
    /// So without `max_tokens` the share of `length` answers is exactly
    /// `length_share` in expectation, and with one it is
    /// `length_share + (1 − length_share − empty_share) · P(length >
    /// max_tokens)`.
    pub fn draw(
        profile: &Profile,
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
        let z_length: f64 = rng.sample(StandardNormal);
        let u_finish: f64 = rng.random();

        let tail = u_tail < profile.tail_prob;
        let mut seconds = profile.ttft.as_secs_f64() * (profile.ttft_sigma * z).exp();
        if tail {
            seconds *= profile.tail_factor;
        }
        let ttft = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::from_secs(3600));

        let own = output_length(profile.tokens, profile.tokens_sigma, z_length);
        let (tokens, finish) = if u_finish < profile.length_share {
            (max_tokens.unwrap_or(own), Finish::Length)
        } else if u_finish < profile.length_share + profile.empty_share {
            (0, Finish::Stop)
        } else {
            match max_tokens {
                Some(max) if own > max => (max, Finish::Length),
                _ => (own, Finish::Stop),
            }
        };
        let fault = if u_error < profile.error_rate {
            Fault::Http500
        } else if streaming && u_stream < profile.stream_error_rate {
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
            finish,
            fault,
        }
    }
}

/// An answer's own length for a standard normal draw `z`: the lognormal
/// with mean `mean` and log-space sd `sigma`, rounded, at least 1 (and at
/// most `u32::MAX`).
pub fn output_length(mean: u32, sigma: f64, z: f64) -> u32 {
    if sigma == 0.0 {
        return mean;
    }
    let drawn = f64::from(mean) * (sigma * z - sigma * sigma / 2.0).exp();
    // `as` saturates: a draw beyond u32::MAX becomes u32::MAX.
    drawn.round().max(1.0) as u32
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

    fn config() -> Profile {
        Profile {
            ttft: Duration::from_millis(100),
            ttft_sigma: 0.5,
            ..Profile::default()
        }
    }

    fn plans(config: &Profile, n: u64) -> Vec<RequestPlan> {
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
        let c = Profile {
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
        let c = Profile {
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
        let c = Profile {
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
        assert_eq!((p.tokens, p.finish), (5, Finish::Length));
        let p = RequestPlan::draw(&c, 0, 0, Some(500), true);
        assert_eq!((p.tokens, p.finish), (32, Finish::Stop));
        let p = RequestPlan::draw(&c, 0, 0, None, true);
        assert_eq!((p.tokens, p.finish), (32, Finish::Stop));
    }

    /// The lognormal with mean `m` and log-space sd `s`: its sd.
    fn lognormal_sd(m: f64, s: f64) -> f64 {
        m * ((s * s).exp() - 1.0).sqrt()
    }

    #[test]
    fn output_lengths_are_lognormal_around_the_mean() {
        let p = Profile {
            tokens: 200,
            tokens_sigma: 0.5,
            ..config()
        };
        let n = 2_000;
        let lengths: Vec<f64> = plans(&p, n).iter().map(|p| f64::from(p.tokens)).collect();
        assert!(lengths.iter().all(|&l| l >= 1.0));
        let mean = lengths.iter().sum::<f64>() / n as f64;
        // The sample mean's sd is sd/√n = 106.6/44.7 = 2.4; 4.5 of them,
        // plus half a token of rounding.
        let band = 4.5 * lognormal_sd(200.0, 0.5) / (n as f64).sqrt() + 0.5;
        assert!((mean - 200.0).abs() < band, "mean {mean}, band ±{band}");
        // The log-space sd: its sample sd has sd about σ/√(2n) = 0.008.
        let logs: Vec<f64> = lengths.iter().map(|l| l.ln()).collect();
        let log_mean = logs.iter().sum::<f64>() / n as f64;
        let log_sd = (logs.iter().map(|l| (l - log_mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        assert!((log_sd - 0.5).abs() < 0.04, "log sd {log_sd}");
        // They vary: not all equal, as they were before tokens-sigma.
        assert!(lengths.iter().any(|&l| l != lengths[0]));
        // σ = 0 keeps today's fixed length.
        assert!(plans(&config(), 100).iter().all(|p| p.tokens == 32));
    }

    #[test]
    fn the_length_share_ends_that_fraction_with_length() {
        let p = Profile {
            tokens: 50,
            tokens_sigma: 0.5,
            length_share: 0.3,
            ..config()
        };
        let n = 2_000;
        let all = plans(&p, n);
        let cut = all.iter().filter(|p| p.finish == Finish::Length).count();
        assert!(within_binomial(cut, n as usize, 0.3), "{cut} of {n}");
        assert!(all.iter().all(|p| p.tokens >= 1));
    }

    #[test]
    fn max_tokens_caps_drawn_lengths_and_forced_cuts_run_to_it() {
        // Mean chosen so the median is 1000: half the answers would run
        // past max_tokens = 1000 on their own.
        let sigma: f64 = 0.5;
        let p = Profile {
            tokens: (1000.0 * (sigma * sigma / 2.0).exp()).round() as u32,
            tokens_sigma: sigma,
            length_share: 0.3,
            ..config()
        };
        let n = 2_000;
        let all: Vec<RequestPlan> = (0..n)
            .map(|i| RequestPlan::draw(&p, 9, i, Some(1000), true))
            .collect();
        for plan in &all {
            match plan.finish {
                Finish::Length => assert_eq!(plan.tokens, 1000, "{plan:?}"),
                Finish::Stop => assert!((1..=1000).contains(&plan.tokens), "{plan:?}"),
            }
        }
        // 0.3 forced, and about half of the other 0.7 (P(X ≥ 1000.5) =
        // 0.4996 for this lognormal).
        let cut = all.iter().filter(|p| p.finish == Finish::Length).count();
        assert!(
            within_binomial(cut, n as usize, 0.3 + 0.7 * 0.4996),
            "{cut} of {n}"
        );
    }

    #[test]
    fn empty_answers_have_no_tokens_and_stop() {
        let p = Profile {
            tokens_sigma: 0.3,
            length_share: 0.2,
            empty_share: 0.1,
            ..config()
        };
        let n = 4_000;
        let all = plans(&p, n);
        let empty: Vec<&RequestPlan> = all.iter().filter(|p| p.tokens == 0).collect();
        assert!(
            within_binomial(empty.len(), n as usize, 0.1),
            "{}",
            empty.len()
        );
        assert!(empty.iter().all(|p| p.finish == Finish::Stop));
        let cut = all.iter().filter(|p| p.finish == Finish::Length).count();
        assert!(within_binomial(cut, n as usize, 0.2), "{cut}");
    }

    #[test]
    fn new_draws_leave_the_old_ones_of_a_seed_alone() {
        // Spreading lengths must not move a seed's TTFTs or faults.
        let before = config();
        let after = Profile {
            tokens_sigma: 1.0,
            length_share: 0.5,
            ..config()
        };
        for i in 0..100 {
            let (a, b) = (
                RequestPlan::draw(&before, 3, i, None, true),
                RequestPlan::draw(&after, 3, i, None, true),
            );
            assert_eq!((a.ttft, a.tail), (b.ttft, b.tail));
        }
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
