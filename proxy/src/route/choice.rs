//! Choosing a backend of a route: the selection line.
//!
//! Every request is mapped to a point `u` in `[0, 2^64)` and the backends are
//! laid out on that line in a fixed order, each taking a share proportional
//! to its weight. The order puts `canary` first, other named cohorts next
//! (by name) and `stable` last. The point comes from, in order:
//!
//! 1. the override header (`x-weir-cohort: NAME`, when the table enables it
//!    and the name is a cohort of the route): that backend, whatever its
//!    weight (blue-green previews have weight 0);
//! 2. the sticky key (a header or cookie named by the route), hashed with
//!    XXH64, seed 0 ([`sticky_point`]). XXH64 is a published, frozen
//!    algorithm with implementations in every language, so every replica,
//!    every version and any external tool agree on where a session lands.
//!    Because the canary comes first, a key is on the canary exactly when
//!    `u / 2^64 < canary share`: raising the canary's share only ever moves
//!    sessions *onto* it (DESIGN.md's `[0, 10000)` rule, at full precision);
//! 3. otherwise the caller's uniform random `draw`.
//!
//! The point is scaled exactly (`u * total >> 64`, in 128-bit integers), so a
//! backend's chance is its weight over the sum of weights with no rounding
//! bias, and a backend of weight 0 is never chosen by 2 or 3.
//!
//! [`Split`] is that line for one route's backends, computed once when the
//! route is built; it knows weights and cohorts, not routes or requests.

use serde::Serialize;
use weir_core::{Cohort, Weight};

use super::backend::Backend;

/// The selection line of one route: its backends in selection order with
/// their weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Split {
    /// `(backend index, weight)` in selection order (canary first, stable
    /// last).
    line: Vec<(usize, Weight)>,
    /// Sum of weights, basis points; > 0.
    total: u64,
}

impl Split {
    /// The line of `backends`; `None` when every weight is zero.
    pub(super) fn new(backends: &[Backend]) -> Option<Split> {
        let mut line: Vec<(usize, Weight)> =
            backends.iter().map(|b| b.weight).enumerate().collect();
        line.sort_by(|&(a, _), &(b, _)| rank(&backends[a].cohort).cmp(&rank(&backends[b].cohort)));
        let total: u64 = line.iter().map(|(_, w)| u64::from(w.basis_points())).sum();
        (total > 0).then_some(Split { line, total })
    }

    /// The share of traffic backend `index` gets, in `[0, 1]`.
    pub(super) fn share(&self, index: usize) -> f64 {
        self.line
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(0.0, |(_, w)| {
                f64::from(w.basis_points()) / self.total as f64
            })
    }

    /// The backend at point `u` of `[0, 2^64)`.
    pub(super) fn pick(&self, u: u64) -> usize {
        // floor(u * total / 2^64) < cumulative  ⟺  u / 2^64 < cumulative / total.
        let target = ((u128::from(u) * u128::from(self.total)) >> 64) as u64;
        let mut cumulative = 0u64;
        for &(i, w) in &self.line {
            cumulative += u64::from(w.basis_points());
            if target < cumulative {
                return i;
            }
        }
        // Unreachable for total > 0 (target < total); the last positive
        // backend is the right answer if it ever were.
        self.line
            .iter()
            .rev()
            .find(|(_, w)| !w.is_zero())
            .map_or(0, |&(i, _)| i)
    }

    /// The backend a connect failure on `chosen` is retried on: the other
    /// backend with the largest positive weight (ties: later in selection
    /// order, so stable before canary).
    pub(super) fn fallback(&self, chosen: usize) -> Option<usize> {
        self.line
            .iter()
            .enumerate()
            .filter(|&(_, &(i, w))| i != chosen && !w.is_zero())
            .max_by_key(|&(rank, &(_, w))| (w, rank))
            .map(|(_, &(i, _))| i)
    }
}

/// Position in the selection order: canary first, stable last.
fn rank(cohort: &Cohort) -> (u8, &str) {
    match cohort {
        Cohort::Canary => (0, ""),
        Cohort::Other(name) => (1, name),
        Cohort::Stable => (2, ""),
    }
}

/// Why the backend was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Selected {
    /// The override header named the cohort.
    Override,
    /// The sticky key hashed to it.
    Sticky,
    /// The random draw landed on it.
    Weighted,
}

/// Where a sticky key lands on `[0, 2^64)`: XXH64 of its UTF-8 bytes, seed 0.
/// Stable across processes, versions and languages; the key is on the canary
/// exactly when `sticky_point(key) / 2^64 < canary share`.
pub fn sticky_point(key: &str) -> u64 {
    xxhash_rust::xxh64::xxh64(key.as_bytes(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh64_matches_the_published_test_vectors() {
        // From the xxHash reference implementation: the hash must never change.
        assert_eq!(sticky_point(""), 0xEF46_DB37_51D8_E999);
        assert_eq!(sticky_point("a"), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(sticky_point("abc"), 0x44BC_2CF5_AD77_0999);
    }
}
