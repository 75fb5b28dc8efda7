//! Traffic weights: the one type for "how much of a route's traffic".
//!
//! A weight is an integer number of basis points (1/100 of a percent) from
//! 0 to 10000, so every part of weir agrees on it exactly: the CRD and the
//! proxy's YAML write percentages as `f64` with at most two decimals, the
//! engine computes shares, the proxy lays weights out on its selection line
//! in integers. The `f64` percent crosses into this type in one place,
//! [`Weight::from_percent`], which refuses anything that is not a multiple
//! of 0.01 between 0 and 100 with [`WeightError`].
//!
//! Weights are relative where several backends share a route (the proxy
//! gives a backend its weight over the sum of the route's weights: 80/20 and
//! 4/1 split alike); the engine, which always splits two cohorts to 100%,
//! uses them as absolute shares ([`Weight::complement`], [`Weight::fraction`]).

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// A traffic weight: a percentage from 0 to 100 with a resolution of 0.01
/// (one basis point). Serialized as the percentage (`80`, `12.5`); shown
/// the same way, without a `%` sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Weight(u32);

/// A percentage that is not a weight.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value} is not a weight; use a number between 0 and 100 (percent, resolution 0.01)")]
pub struct WeightError {
    /// The value as a person would have written it (`-5`, `33.333`).
    pub value: String,
}

impl Weight {
    /// No traffic (a backend reachable only through the proxy's override
    /// header; a canary before its first step).
    pub const NONE: Weight = Weight(0);
    /// All traffic, 100%: the largest weight.
    pub const ALL: Weight = Weight(BASIS_POINTS);

    /// A weight from basis points (1/100 of a percent), `None` above 10000.
    pub const fn from_basis_points(bp: u32) -> Option<Weight> {
        if bp <= BASIS_POINTS {
            Some(Weight(bp))
        } else {
            None
        }
    }

    /// A weight from a percentage (the CRD's and the YAML's `f64`).
    ///
    /// # Errors
    /// [`WeightError`] unless `percent` is finite, in `[0, 100]` and a
    /// multiple of 0.01 (up to float noise: `33.33` is fine, `33.333` is not).
    pub fn from_percent(percent: f64) -> Result<Weight, WeightError> {
        // `f64`'s `Display` writes integers without `.0`: `-5`, as written.
        let bad = || WeightError {
            value: percent.to_string(),
        };
        if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
            return Err(bad());
        }
        let bp = percent * f64::from(PER_PERCENT);
        let rounded = bp.round();
        if (bp - rounded).abs() > 1e-6 {
            return Err(bad());
        }
        Ok(Weight(rounded as u32))
    }

    /// The weight nearest to a fraction of 1 (clamped to `0..=1`; not a
    /// number counts as 0).
    pub fn from_fraction(fraction: f64) -> Weight {
        let f = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Weight((f * f64::from(BASIS_POINTS)).round() as u32)
    }

    /// The weight in basis points, `0..=10000`.
    pub const fn basis_points(self) -> u32 {
        self.0
    }

    /// The weight in percent, `0.0..=100.0` (exactly the decimal it was
    /// written as: `f64` division by 100 is correctly rounded).
    pub fn percent(self) -> f64 {
        f64::from(self.0) / f64::from(PER_PERCENT)
    }

    /// The weight as a fraction of 1.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / f64::from(BASIS_POINTS)
    }

    /// What is left of 100% for the other cohort.
    pub const fn complement(self) -> Weight {
        Weight(BASIS_POINTS - self.0)
    }

    /// Whether the weight is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// Basis points in 100%.
const BASIS_POINTS: u32 = 10_000;
/// Basis points per percent.
const PER_PERCENT: u32 = 100;

/// Prints the percentage without trailing zeros or a `%` sign: `80`,
/// `12.5`, `0.01`.
impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / PER_PERCENT;
        let frac = self.0 % PER_PERCENT;
        match (frac, frac % 10) {
            (0, _) => write!(f, "{whole}"),
            (_, 0) => write!(f, "{whole}.{}", frac / 10),
            _ => write!(f, "{whole}.{frac:02}"),
        }
    }
}

impl Serialize for Weight {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.percent())
    }
}

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let percent = f64::deserialize(deserializer)?;
        Weight::from_percent(percent).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_percent_at_basis_point_resolution() {
        assert_eq!(Weight::from_percent(80.0), Ok(Weight(8000)));
        assert_eq!(Weight::from_percent(0.01), Ok(Weight(1)));
        assert_eq!(Weight::from_percent(33.33), Ok(Weight(3333)));
        assert_eq!(Weight::from_percent(100.0), Ok(Weight::ALL));
        for bad in [-5.0, -1.0, 100.01, 100.5, 33.333, f64::NAN, f64::INFINITY] {
            assert!(Weight::from_percent(bad).is_err(), "{bad}");
        }
        let err = Weight::from_percent(-5.0).expect_err("negative");
        assert_eq!(
            err.to_string(),
            "-5 is not a weight; use a number between 0 and 100 (percent, resolution 0.01)"
        );
        assert_eq!(Weight(8000).to_string(), "80");
        assert_eq!(Weight(1250).to_string(), "12.5");
        assert_eq!(Weight(1).to_string(), "0.01");
        assert_eq!(Weight(1205).to_string(), "12.05");
    }

    #[test]
    fn every_weight_shows_and_serializes_as_the_percent_it_parses_from() {
        for bp in 0..=BASIS_POINTS {
            let w = Weight::from_basis_points(bp).expect("in range");
            let shown = w.to_string();
            assert_eq!(shown, w.percent().to_string(), "{bp}");
            assert_eq!(Weight::from_percent(w.percent()), Ok(w));
            let json = serde_json::to_string(&w).expect("serializes");
            assert_eq!(serde_json::from_str::<Weight>(&json).expect("parses"), w);
        }
        assert_eq!(Weight::from_basis_points(BASIS_POINTS + 1), None);
    }

    #[test]
    fn shares_complement_and_come_from_fractions() {
        let w = Weight::from_percent(12.5).expect("weight");
        assert_eq!(w.complement(), Weight(8750));
        assert_eq!(w.fraction(), 0.125);
        assert_eq!(Weight::NONE.complement(), Weight::ALL);
        assert_eq!(Weight::from_fraction(0.25), Weight(2500));
        assert_eq!(Weight::from_fraction(1.5), Weight::ALL);
        assert_eq!(Weight::from_fraction(-1.0), Weight::NONE);
        assert_eq!(Weight::from_fraction(f64::NAN), Weight::NONE);
        assert!(Weight::NONE.is_zero() && !Weight(1).is_zero());
    }

    #[test]
    fn deserializing_validates() {
        let err = serde_json::from_str::<Weight>("100.5").expect_err("above 100");
        assert!(
            err.to_string().starts_with("100.5 is not a weight"),
            "{err}"
        );
        assert_eq!(
            serde_json::from_str::<Weight>("12.5").expect("weight"),
            Weight(1250)
        );
    }
}
