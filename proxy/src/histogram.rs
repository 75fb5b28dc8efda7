//! A latency histogram kept two ways: a fine [`Distribution`] for the
//! analysis (`/v1/observations`) and exact counts over fixed Prometheus
//! bucket bounds (`/metrics`), so `/metrics` never misplaces a value that
//! sits near a bucket bound.
//!
//! The meter records one request's inter-token gaps into one, and the
//! observations add them up per cohort; it sits apart from both so neither
//! imports the other for it.

use weir_analysis::Distribution;

/// A latency histogram kept two ways: a fine [`Distribution`] for the
/// analysis and exact counts over fixed Prometheus bucket bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    fine: Distribution,
    bounds: &'static [f64],
    /// `counts[i]`: observations in `(bounds[i-1], bounds[i]]`; the last
    /// entry counts those above every bound.
    counts: Vec<u64>,
}

impl Histogram {
    /// An empty histogram over `bounds` (strictly increasing).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            fine: Distribution::new(),
            bounds,
            counts: vec![0; bounds.len() + 1],
        }
    }

    /// Records one value in seconds; negative or non-finite values are
    /// dropped (they cannot come from `Instant` arithmetic).
    pub fn record(&mut self, seconds: f64) {
        if self.fine.record(seconds).is_ok() {
            let i = self.bounds.partition_point(|b| *b < seconds);
            self.counts[i] += 1;
        }
    }

    /// Adds `other`'s observations. Histograms over other bounds merge only
    /// their fine distributions.
    pub fn merge(&mut self, other: &Histogram) {
        self.fine.merge(&other.fine);
        if self.bounds == other.bounds {
            for (a, b) in self.counts.iter_mut().zip(&other.counts) {
                *a += b;
            }
        }
    }

    /// The fine distribution.
    pub fn distribution(&self) -> &Distribution {
        &self.fine
    }

    /// The fine distribution, taken.
    pub fn into_distribution(self) -> Distribution {
        self.fine
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.fine.count()
    }

    /// Sum of the observations.
    pub fn sum(&self) -> f64 {
        self.fine.sum()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.fine.is_empty()
    }

    /// `(le, cumulative count)` pairs, `+Inf` last.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut running = 0;
        self.bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.counts)
            .map(move |(le, c)| {
                running += c;
                (le, running)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_exactly_at_bucket_bounds() {
        let mut h = Histogram::new(&[0.1, 0.2]);
        for v in [0.05, 0.1, 0.1000001, 0.2, 5.0] {
            h.record(v);
        }
        h.record(f64::NAN);
        assert_eq!(
            h.cumulative().collect::<Vec<_>>(),
            vec![(0.1, 2), (0.2, 4), (f64::INFINITY, 5)]
        );
        let mut other = Histogram::new(&[0.1, 0.2]);
        other.record(0.15);
        h.merge(&other);
        assert_eq!(
            h.cumulative().collect::<Vec<_>>(),
            vec![(0.1, 2), (0.2, 5), (f64::INFINITY, 6)]
        );
        assert_eq!(h.count(), 6);
    }
}
