//! The page's palette and geometry, shared by the model (a verdict's
//! colour), the scales (a frame's plot area) and the SVG primitives, so
//! none of them depends on another for its constants.

/// Stable in blue, canary in orange: a pair that stays distinct for the
/// common colour-vision deficiencies.
pub(super) const STABLE: &str = "#2166ac";
pub(super) const CANARY: &str = "#e66101";
pub(super) const BAD: &str = "#c62828";
pub(super) const GOOD: &str = "#2e7d32";
pub(super) const UNDECIDED: &str = "#9a6700";
pub(super) const MUTED: &str = "#8c959f";

/// Width of every chart's coordinate system, in CSS pixels at 1:1.
pub(super) const W: f64 = 900.0;
/// Left margin of every chart: room for tick labels like `600 ms` beside
/// the rotated axis title, and the same on every chart so that the time
/// axes line up down the page.
pub(super) const LEFT: f64 = 84.0;

/// A chart's size and the margins around its plot area.
pub(super) struct Frame {
    pub(super) h: f64,
    pub(super) l: f64,
    pub(super) r: f64,
    pub(super) t: f64,
    pub(super) b: f64,
}

impl Frame {
    pub(super) fn left(&self) -> f64 {
        self.l
    }
    pub(super) fn right(&self) -> f64 {
        W - self.r
    }
    pub(super) fn top(&self) -> f64 {
        self.t
    }
    pub(super) fn bottom(&self) -> f64 {
        self.h - self.b
    }
}
