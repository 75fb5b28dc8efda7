//! `weir sim` flags of the versions the rollout tests release: a healthy
//! one and a regression, both with a tight time to first token so that a
//! few hundred requests decide (the Canary's side is
//! `weir_envtest::CanaryBuilder::judged_fast`).

/// A healthy version: 60 ms to first token (σ 0.1), 8 tokens 3 ms apart.
pub const FAST: &[&str] = &[
    "--ttft",
    "60ms",
    "--ttft-sigma",
    "0.1",
    "--itl",
    "3ms",
    "--tokens",
    "8",
];

/// A regression: 2.5 times slower to first token, the rest as [`FAST`].
pub const SLOW: &[&str] = &[
    "--ttft",
    "150ms",
    "--ttft-sigma",
    "0.1",
    "--itl",
    "3ms",
    "--tokens",
    "8",
];
