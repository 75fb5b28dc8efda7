//! A mergeable, high-resolution distribution of non-negative values
//! (latencies in seconds, token counts, ...).
//!
//! The layout is log-linear, as in HdrHistogram: every power of two
//! `[2^e, 2^(e+1))` is split into [`SUB_BUCKETS`] equal sub-buckets. A bin's
//! width is at most 1/64 of its lower bound, so reporting a bin by its
//! midpoint is off by at most 1/128 ≈ 0.78% of the value: the "about 1%"
//! resolution the analysis needs, at 64 bins per octave.
//!
//! Why this shape:
//! - the bin index is read straight off the bits of an `f64` (exponent and the
//!   top six mantissa bits), so recording is a few instructions, which matters
//!   on the proxy's per-request path;
//! - bins are fixed by the scheme, not by the data, so two distributions from
//!   two proxy replicas (or two scrapes) merge by adding counts, and a delta
//!   between two cumulative snapshots is a subtraction;
//! - the whole layout is described by one index, so the JSON form (sparse
//!   `[index, count]` pairs) is stable across versions and languages.
//!
//! Values below [`MIN_VALUE`] (including exact zeros) are counted in a zero
//! bin; values at or above [`MAX_VALUE`] land in the last bin. Negative and
//! non-finite values are refused by [`Distribution::record`].

use serde::{Deserialize, Serialize};

/// Linear sub-buckets per power of two. 64 gives ≤ 0.78% relative error.
pub const SUB_BUCKETS: u32 = 64;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();
/// Smallest exponent tracked: 2^-30 s ≈ 0.93 ns.
pub const MIN_EXPONENT: i32 = -30;
/// One past the largest exponent tracked: values up to 2^34 ≈ 1.7e10.
pub const MAX_EXPONENT: i32 = 34;
/// Values below this are counted as zero.
pub const MIN_VALUE: f64 = 1.0 / (1u64 << 30) as f64;
/// Values at or above this are clamped into the last bin.
pub const MAX_VALUE: f64 = (1u64 << 34) as f64;
/// Number of bins in the scheme.
pub const BIN_COUNT: usize = ((MAX_EXPONENT - MIN_EXPONENT) as u32 * SUB_BUCKETS) as usize;

/// Errors from building or combining distributions.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DistError {
    /// A value was negative, NaN or infinite.
    #[error("value {0} is not a finite, non-negative number")]
    InvalidValue(f64),
    /// A later cumulative snapshot had fewer observations in some bin than an
    /// earlier one: the source restarted (counter reset).
    #[error("bin {bin} went down from {earlier} to {later}: the source was reset")]
    Reset {
        /// The bin index that decreased.
        bin: usize,
        /// Count in the earlier snapshot.
        earlier: u64,
        /// Count in the later snapshot.
        later: u64,
    },
    /// Prometheus histogram buckets were malformed.
    #[error("histogram buckets: {0}")]
    Buckets(String),
    /// A serialized distribution used another bin layout.
    #[error("distribution layout {found} is not {expected}")]
    Layout {
        /// The layout this build understands.
        expected: String,
        /// The layout found in the input.
        found: String,
    },
}

/// The bin a positive, finite value falls into.
#[inline]
fn bin_index(value: f64) -> usize {
    if value < MIN_VALUE {
        return 0; // callers route these to the zero bin before asking
    }
    if value >= MAX_VALUE {
        return BIN_COUNT - 1;
    }
    let bits = value.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let sub = ((bits >> (52 - SUB_BITS)) & (u64::from(SUB_BUCKETS) - 1)) as usize;
    (exponent - MIN_EXPONENT) as usize * SUB_BUCKETS as usize + sub
}

/// Lower and upper bound of bin `index`.
#[inline]
pub fn bin_bounds(index: usize) -> (f64, f64) {
    let exponent = MIN_EXPONENT + (index / SUB_BUCKETS as usize) as i32;
    let sub = (index % SUB_BUCKETS as usize) as f64;
    let base = 2f64.powi(exponent);
    let width = base / f64::from(SUB_BUCKETS);
    (base + sub * width, base + (sub + 1.0) * width)
}

/// A histogram over the fixed log-linear layout.
///
/// Counts are exact integers; `sum` is the exact sum of recorded values (or,
/// for distributions built from Prometheus buckets, the source's `_sum` when
/// given), so means are exact even though quantiles are binned.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Distribution {
    zero: u64,
    /// Counts for bins `offset .. offset + counts.len()`.
    offset: usize,
    counts: Vec<u64>,
    total: u64,
    sum: f64,
}

/// One occupied bin, in ascending value order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    /// Bin index in the layout (`None` for the zero bin).
    pub index: Option<usize>,
    /// Inclusive lower bound of the values in the bin.
    pub lower: f64,
    /// Exclusive upper bound of the values in the bin.
    pub upper: f64,
    /// Observations in the bin.
    pub count: u64,
}

impl Bin {
    /// The value that represents the bin (its midpoint; 0 for the zero bin).
    pub fn midpoint(&self) -> f64 {
        if self.index.is_none() {
            0.0
        } else {
            0.5 * (self.lower + self.upper)
        }
    }
}

impl Distribution {
    /// An empty distribution.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a distribution from raw values.
    ///
    /// # Errors
    /// [`DistError::InvalidValue`] for a negative or non-finite value, with
    /// nothing recorded.
    pub fn from_values(values: &[f64]) -> Result<Self, DistError> {
        if let Some(bad) = values.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
            return Err(DistError::InvalidValue(*bad));
        }
        let mut dist = Self::new();
        // Find the occupied range first so the counts vector is sized once.
        let (mut lo, mut hi) = (usize::MAX, 0);
        for &v in values {
            if v >= MIN_VALUE {
                let i = bin_index(v);
                lo = lo.min(i);
                hi = hi.max(i);
            }
        }
        if lo <= hi {
            dist.offset = lo;
            dist.counts = vec![0; hi - lo + 1];
        }
        for &v in values {
            dist.record_unchecked(v, 1);
        }
        Ok(dist)
    }

    /// Records one value.
    ///
    /// # Errors
    /// [`DistError::InvalidValue`] for a negative or non-finite value.
    pub fn record(&mut self, value: f64) -> Result<(), DistError> {
        self.record_n(value, 1)
    }

    /// Records `count` observations of `value`.
    ///
    /// # Errors
    /// [`DistError::InvalidValue`] for a negative or non-finite value.
    pub fn record_n(&mut self, value: f64, count: u64) -> Result<(), DistError> {
        if !(value.is_finite() && value >= 0.0) {
            return Err(DistError::InvalidValue(value));
        }
        self.record_unchecked(value, count);
        Ok(())
    }

    fn record_unchecked(&mut self, value: f64, count: u64) {
        if count == 0 {
            return;
        }
        self.total += count;
        self.sum += value * count as f64;
        if value < MIN_VALUE {
            self.zero += count;
        } else {
            let index = bin_index(value);
            *self.slot(index) += count;
        }
    }

    /// Mutable count for `index`, growing the stored range as needed.
    fn slot(&mut self, index: usize) -> &mut u64 {
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(0);
        } else if index < self.offset {
            let grow = self.offset - index;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = index;
        } else if index >= self.offset + self.counts.len() {
            self.counts.resize(index - self.offset + 1, 0);
        }
        &mut self.counts[index - self.offset]
    }

    /// Adds every observation of `other` (merging replicas or intervals).
    pub fn merge(&mut self, other: &Distribution) {
        self.zero += other.zero;
        self.total += other.total;
        self.sum += other.sum;
        for (i, &c) in other.counts.iter().enumerate() {
            if c > 0 {
                *self.slot(other.offset + i) += c;
            }
        }
    }

    /// The observations in `self` that are not in `earlier`, where both are
    /// cumulative snapshots of the same source (`self` taken later).
    ///
    /// # Errors
    /// [`DistError::Reset`] when some bin decreased: the source restarted and
    /// the caller should treat `self` as the whole delta.
    pub fn delta_since(&self, earlier: &Distribution) -> Result<Distribution, DistError> {
        let mut out = self.clone();
        out.zero = self
            .zero
            .checked_sub(earlier.zero)
            .ok_or(DistError::Reset {
                bin: 0,
                earlier: earlier.zero,
                later: self.zero,
            })?;
        for (i, &c) in earlier.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let index = earlier.offset + i;
            let later = self.count_at(index);
            let slot = out.slot(index);
            *slot = later.checked_sub(c).ok_or(DistError::Reset {
                bin: index,
                earlier: c,
                later,
            })?;
        }
        out.total = self.total - earlier.total;
        out.sum = (self.sum - earlier.sum).max(0.0);
        Ok(out)
    }

    fn count_at(&self, index: usize) -> u64 {
        index
            .checked_sub(self.offset)
            .and_then(|i| self.counts.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Sum of the observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Mean of the observations, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum / self.total as f64)
    }

    /// Occupied bins in ascending order, the zero bin first.
    pub fn bins(&self) -> impl Iterator<Item = Bin> + '_ {
        let zero = (self.zero > 0).then_some(Bin {
            index: None,
            lower: 0.0,
            upper: MIN_VALUE,
            count: self.zero,
        });
        zero.into_iter()
            .chain(self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(
                move |(i, &count)| {
                    let index = self.offset + i;
                    let (lower, upper) = bin_bounds(index);
                    Bin {
                        index: Some(index),
                        lower,
                        upper,
                        count,
                    }
                },
            ))
    }

    /// The value at 1-based fractional `rank` in `[0, count]`, interpolating
    /// linearly inside the bin that holds it (observations are taken to be
    /// spread evenly across their bin). `None` when empty.
    pub fn value_at_rank(&self, rank: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = rank.clamp(0.0, self.total as f64);
        let mut below = 0.0;
        let mut last = None;
        for bin in self.bins() {
            let count = bin.count as f64;
            if rank <= below + count {
                if bin.index.is_none() {
                    return Some(0.0);
                }
                let frac = ((rank - below) / count).clamp(0.0, 1.0);
                return Some(bin.lower + frac * (bin.upper - bin.lower));
            }
            below += count;
            last = Some(bin);
        }
        last.map(|b| b.upper)
    }

    /// The `p`-quantile (`0 ≤ p ≤ 1`), `None` when empty.
    pub fn quantile(&self, p: f64) -> Option<f64> {
        self.value_at_rank(p.clamp(0.0, 1.0) * self.total as f64)
    }

    /// Builds a distribution from Prometheus histogram buckets.
    ///
    /// `buckets` are `(le, cumulative count)` pairs as scraped (any order; the
    /// `+Inf` bucket may be included). Each bucket's observations are spread
    /// over the fine bins it covers in proportion to overlap, the same linear
    /// interpolation `histogram_quantile` uses, so the result is only as fine
    /// as the source's buckets. The first bucket starts at 0; observations
    /// above the last finite bound are placed at that bound, as
    /// `histogram_quantile` reports them. `sum` is the source's `_sum`.
    ///
    /// # Errors
    /// [`DistError::Buckets`] when bounds repeat, are NaN, or the cumulative
    /// counts decrease or are negative.
    pub fn from_prometheus_buckets(
        buckets: &[(f64, f64)],
        sum: Option<f64>,
    ) -> Result<Self, DistError> {
        let mut sorted: Vec<(f64, f64)> = buckets.to_vec();
        if let Some((le, c)) = sorted
            .iter()
            .find(|(le, c)| le.is_nan() || !(c.is_finite() && *c >= 0.0))
        {
            return Err(DistError::Buckets(format!(
                "bucket le={le} has count {c}, want a finite count ≥ 0"
            )));
        }
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(DistError::Buckets(format!(
                "bucket le={} appears twice",
                w[0].0
            )));
        }
        if let Some(w) = sorted.windows(2).find(|w| w[1].1 < w[0].1) {
            return Err(DistError::Buckets(format!(
                "cumulative count goes down from {} (le={}) to {} (le={})",
                w[0].1, w[0].0, w[1].1, w[1].0
            )));
        }
        let mut dist = Self::new();
        let mut previous_bound = 0.0_f64;
        let mut previous_count = 0.0_f64;
        let last_finite = sorted
            .iter()
            .rev()
            .find(|(le, _)| le.is_finite())
            .map(|(le, _)| *le);
        for &(le, cumulative) in &sorted {
            let count = (cumulative - previous_count).round().max(0.0) as u64;
            previous_count = cumulative;
            if le.is_infinite() {
                if count > 0 {
                    let at = last_finite.unwrap_or(0.0).max(0.0);
                    dist.record_unchecked(at, count);
                }
                continue;
            }
            let lower = previous_bound.max(0.0);
            let upper = le.max(0.0);
            previous_bound = le;
            if count > 0 {
                dist.spread(lower, upper, count);
            }
        }
        if let Some(sum) = sum.filter(|s| s.is_finite()) {
            dist.sum = sum;
        }
        Ok(dist)
    }

    /// Spreads `count` observations evenly over `[lower, upper]`.
    fn spread(&mut self, lower: f64, upper: f64, count: u64) {
        if upper <= lower || upper < MIN_VALUE {
            self.record_unchecked(upper, count);
            return;
        }
        let width = upper - lower;
        let mut placed = 0u64;
        let mut sum = 0.0;
        // Zero-bin share first, then each fine bin the bucket overlaps.
        let mut pieces: Vec<(Option<usize>, f64, f64)> = Vec::new();
        if lower < MIN_VALUE {
            pieces.push((None, lower, MIN_VALUE.min(upper)));
        }
        let first = bin_index(lower.max(MIN_VALUE));
        let last = bin_index(upper.min(MAX_VALUE * (1.0 - f64::EPSILON)));
        for index in first..=last {
            let (lo, hi) = bin_bounds(index);
            let (lo, hi) = (lo.max(lower), hi.min(upper));
            if hi > lo {
                pieces.push((Some(index), lo, hi));
            }
        }
        let mut covered = 0.0;
        for (index, lo, hi) in pieces {
            covered += hi - lo;
            // Cumulative rounding keeps the total exact.
            let target = ((covered / width) * count as f64).round() as u64;
            let n = target.min(count) - placed;
            placed += n;
            if n == 0 {
                continue;
            }
            sum += 0.5 * (lo + hi) * n as f64;
            match index {
                None => self.zero += n,
                Some(i) => *self.slot(i) += n,
            }
        }
        if placed < count {
            *self.slot(bin_index(upper.max(MIN_VALUE))) += count - placed;
            sum += upper * (count - placed) as f64;
        }
        self.total += count;
        self.sum += sum;
    }
}

/// The JSON form: the layout name and sparse `[index, count]` pairs.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    layout: String,
    zero: u64,
    sum: f64,
    bins: Vec<(usize, u64)>,
}

const LAYOUT: &str = "log-linear/64/-30";

impl Serialize for Distribution {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire {
            layout: LAYOUT.to_string(),
            zero: self.zero,
            sum: self.sum,
            bins: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, &c)| (self.offset + i, c))
                .collect(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Distribution {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let wire = Wire::deserialize(deserializer)?;
        if wire.layout != LAYOUT {
            return Err(D::Error::custom(DistError::Layout {
                expected: LAYOUT.into(),
                found: wire.layout,
            }));
        }
        let mut dist = Distribution {
            zero: wire.zero,
            total: wire.zero,
            sum: wire.sum,
            ..Default::default()
        };
        for (index, count) in wire.bins {
            if index >= BIN_COUNT {
                return Err(D::Error::custom(format!(
                    "bin index {index} is outside the layout (< {BIN_COUNT})"
                )));
            }
            *dist.slot(index) += count;
            dist.total += count;
        }
        Ok(dist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_tile_the_line_with_bounded_relative_width() {
        for index in 0..BIN_COUNT - 1 {
            let (lo, hi) = bin_bounds(index);
            let (next_lo, _) = bin_bounds(index + 1);
            assert_eq!(hi, next_lo, "bin {index} and the next do not touch");
            assert!((hi - lo) / lo <= 1.0 / 64.0 + 1e-15);
            // Both ends of the bin map back to it.
            assert_eq!(bin_index(lo), index);
            assert_eq!(bin_index(hi * (1.0 - 1e-15)), index);
        }
    }

    #[test]
    fn midpoint_is_within_one_percent_of_any_value_in_the_bin() {
        let mut x = MIN_VALUE;
        while x < 1e9 {
            let i = bin_index(x);
            let (lo, hi) = bin_bounds(i);
            let mid = 0.5 * (lo + hi);
            assert!(
                (mid - x).abs() / x <= 1.0 / 128.0 + 1e-12,
                "x={x} mid={mid}"
            );
            x *= 1.0137;
        }
    }

    #[test]
    fn quantiles_of_a_uniform_grid_are_within_resolution() {
        let values: Vec<f64> = (1..=100_000).map(|i| f64::from(i) * 1e-5).collect();
        let d = Distribution::from_values(&values).expect("valid values");
        assert_eq!(d.count(), 100_000);
        for p in [0.01, 0.1, 0.5, 0.9, 0.99, 0.999] {
            let q = d.quantile(p).expect("not empty");
            assert!((q - p).abs() / p < 0.008, "p={p} q={q}");
        }
        assert!((d.mean().expect("not empty") - 0.500005).abs() < 1e-9);
    }

    #[test]
    fn merge_equals_building_from_the_union() {
        let a: Vec<f64> = (0..1000).map(|i| 0.001 * f64::from(i)).collect();
        let b: Vec<f64> = (0..500).map(|i| 3.0 + 0.01 * f64::from(i)).collect();
        let mut merged = Distribution::from_values(&a).expect("valid");
        merged.merge(&Distribution::from_values(&b).expect("valid"));
        let union = Distribution::from_values(&[a, b].concat()).expect("valid");
        assert_eq!(merged.count(), union.count());
        assert_eq!(
            merged.bins().collect::<Vec<_>>(),
            union.bins().collect::<Vec<_>>()
        );
    }

    #[test]
    fn delta_between_snapshots_recovers_the_new_observations_and_detects_resets() {
        let mut snapshot = Distribution::from_values(&[0.1, 0.2, 0.2]).expect("valid");
        let earlier = snapshot.clone();
        snapshot.record(0.2).expect("valid");
        snapshot.record(5.0).expect("valid");
        let delta = snapshot.delta_since(&earlier).expect("monotone");
        assert_eq!(delta.count(), 2);
        let bins: Vec<_> = delta.bins().collect();
        assert_eq!(bins.len(), 2);
        assert!(matches!(
            earlier.delta_since(&snapshot),
            Err(DistError::Reset { .. })
        ));
    }

    #[test]
    fn invalid_values_are_refused_and_nothing_is_recorded() {
        assert!(
            matches!(Distribution::from_values(&[1.0, f64::NAN]), Err(DistError::InvalidValue(v)) if v.is_nan())
        );
        let mut d = Distribution::new();
        assert!(d.record(-1.0).is_err());
        assert!(d.record(f64::INFINITY).is_err());
        assert!(d.is_empty());
    }

    #[test]
    fn zeros_and_extremes_are_kept() {
        let d = Distribution::from_values(&[0.0, 1e-12, 1e12, 1e30]).expect("valid");
        assert_eq!(d.count(), 4);
        assert_eq!(d.quantile(0.0), Some(0.0));
        let top = d.quantile(1.0).expect("not empty");
        assert!(top >= 1e10);
    }

    #[test]
    fn prometheus_buckets_spread_like_histogram_quantile() {
        // 100 observations in (0.1, 0.2], 100 in (0.2, 0.4], 10 above 0.4.
        let buckets = [
            (0.1, 0.0),
            (0.2, 100.0),
            (0.4, 200.0),
            (f64::INFINITY, 210.0),
        ];
        let d = Distribution::from_prometheus_buckets(&buckets, Some(60.0)).expect("valid");
        assert_eq!(d.count(), 210);
        assert_eq!(d.sum(), 60.0);
        // histogram_quantile(0.25) = 0.1 + 0.1 * (52.5/100) = 0.1525
        let q = d.quantile(0.25).expect("not empty");
        assert!((q - 0.1525).abs() / 0.1525 < 0.01, "q={q}");
        // The +Inf bucket sits at the last finite bound.
        assert!((d.quantile(1.0).expect("not empty") - 0.4).abs() / 0.4 < 0.01);
    }

    #[test]
    fn prometheus_buckets_with_le_zero_and_bad_input() {
        let d = Distribution::from_prometheus_buckets(
            &[(0.0, 3.0), (1.0, 3.0), (f64::INFINITY, 3.0)],
            None,
        )
        .expect("valid");
        assert_eq!(d.count(), 3);
        assert_eq!(d.quantile(1.0), Some(0.0));
        let err = Distribution::from_prometheus_buckets(&[(0.1, 5.0), (0.2, 4.0)], None)
            .expect_err("decreasing");
        assert!(err.to_string().contains("goes down"), "{err}");
        let err = Distribution::from_prometheus_buckets(&[(0.1, 5.0), (0.1, 5.0)], None)
            .expect_err("repeated");
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn json_round_trip_and_layout_check() {
        let d = Distribution::from_values(&[0.0, 0.01, 0.02, 0.02, 7.5]).expect("valid");
        let json = serde_json::to_string(&d).expect("serializes");
        let back: Distribution = serde_json::from_str(&json).expect("parses");
        assert_eq!(
            back.bins().collect::<Vec<_>>(),
            d.bins().collect::<Vec<_>>()
        );
        assert_eq!(back.count(), 5);
        let other = json.replace(LAYOUT, "log-linear/32/-30");
        let err = serde_json::from_str::<Distribution>(&other).expect_err("other layout");
        assert!(err.to_string().contains("layout"), "{err}");
    }
}
