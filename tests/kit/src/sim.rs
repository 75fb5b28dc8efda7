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

/// Each sample of `weir_sim_generation_requests_total` in a `weir sim`
/// scrape (`--generation-env`): (the sender's generation, the sim's own,
/// requests). A request without a generation (from outside the graph,
/// e.g. a proxy) is counted from `""`.
pub fn generation_counts(scrape: &str) -> Vec<(String, String, f64)> {
    let label = |labels: &str, name: &str| -> Option<String> {
        let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
        let rest = &labels[start..];
        Some(rest[..rest.find('"')?].to_string())
    };
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("weir_sim_generation_requests_total{"))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once("} ")?;
            Some((
                label(labels, "from")?,
                label(labels, "own")?,
                value.trim().parse().ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_samples_are_read_with_their_labels() {
        let scrape = "# TYPE weir_sim_generation_requests_total counter\n\
            weir_sim_generation_requests_total{from=\"\",own=\"g1\"} 3\n\
            weir_sim_generation_requests_total{from=\"g0\",own=\"g1\"} 2.0\n\
            weir_sim_requests_total 9\n";
        assert_eq!(
            generation_counts(scrape),
            [
                (String::new(), "g1".to_string(), 3.0),
                ("g0".to_string(), "g1".to_string(), 2.0),
            ]
        );
    }
}
