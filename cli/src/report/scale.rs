//! Scales and ticks: data values to pixels (linear or log), nice tick
//! steps, the shared time axis, and the number formats on the axes.

use super::palette::Frame;

/// Maps data values to pixels, linearly or on a log scale.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scale {
    d0: f64,
    d1: f64,
    r0: f64,
    r1: f64,
    log: bool,
}

impl Scale {
    pub(super) fn linear(d0: f64, d1: f64, r0: f64, r1: f64) -> Self {
        let (d0, d1) = sane_domain(d0, d1);
        Self {
            d0,
            d1,
            r0,
            r1,
            log: false,
        }
    }

    /// `d0` and `d1` must be positive; anything else falls back to linear.
    pub(super) fn log(d0: f64, d1: f64, r0: f64, r1: f64) -> Self {
        if d0 > 0.0 && d1 > d0 && d1.is_finite() {
            Self {
                d0,
                d1,
                r0,
                r1,
                log: true,
            }
        } else {
            Self::linear(d0, d1, r0, r1)
        }
    }

    /// The pixel of `v`, clamped to the range; None for values that have
    /// no place on the axis (non-finite, or ≤ 0 on a log scale).
    pub(super) fn map(&self, v: f64) -> Option<f64> {
        if !v.is_finite() {
            return None;
        }
        let (a, b, v) = if self.log {
            if v <= 0.0 {
                return None;
            }
            (self.d0.ln(), self.d1.ln(), v.ln())
        } else {
            (self.d0, self.d1, v)
        };
        let px = self.r0 + (v - a) / (b - a) * (self.r1 - self.r0);
        let (lo, hi) = (self.r0.min(self.r1), self.r0.max(self.r1));
        px.is_finite().then(|| px.clamp(lo, hi))
    }

    /// Like `map`, for values known to be in the domain (ticks, bounds).
    pub(super) fn px(&self, v: f64) -> f64 {
        self.map(v).unwrap_or(self.r0)
    }
}

fn sane_domain(d0: f64, d1: f64) -> (f64, f64) {
    let d0 = if d0.is_finite() { d0 } else { 0.0 };
    let d1 = if d1.is_finite() { d1 } else { d0 + 1.0 };
    if d1 > d0 { (d0, d1) } else { (d0, d0 + 1.0) }
}

/// A step of 1, 2 or 5 times a power of ten giving about `target` steps
/// over `span`.
pub(super) fn nice_step(span: f64, target: f64) -> f64 {
    let raw = span / target;
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10_f64.powf(raw.log10().floor());
    let f = raw / mag;
    let n = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    n * mag
}

/// Multiples of `step` within `[lo, hi]`.
pub(super) fn ticks_by(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    if !(step > 0.0 && lo.is_finite() && hi.is_finite()) {
        return Vec::new();
    }
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last)
        .take(100)
        .map(|i| {
            let v = i as f64 * step;
            if v.abs() < step * 1e-9 { 0.0 } else { v }
        })
        .collect()
}

/// The smallest multiple of a nice step at or above `v`: the top of an axis.
pub(super) fn nice_ceil(v: f64, target: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let step = nice_step(v, target);
    (v / step - 1e-9).ceil() * step
}

/// Decimals needed to tell apart ticks `step` apart.
pub(super) fn decimals(step: f64) -> usize {
    if !(step.is_finite() && step > 0.0) || step >= 1.0 {
        0
    } else {
        (-step.log10().floor()).clamp(0.0, 9.0) as usize
    }
}

/// `v` with at most `max` decimals, without trailing zeros.
pub(super) fn trim(v: f64, max: usize) -> String {
    let s = format!("{v:.max$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" { "0".into() } else { s }
}

/// Seconds in the unit that reads best: `250 ms`, `1.5 s`.
pub(super) fn fmt_seconds(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1.0 {
        format!("{} s", trim(v, 3))
    } else if v.abs() >= 1e-3 {
        format!("{} ms", trim(v * 1e3, 2))
    } else {
        format!("{} µs", trim(v * 1e6, 1))
    }
}

pub(super) fn fmt_duration(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        "—".into()
    } else if s < 60.0 {
        format!("{} s", trim(s, 1))
    } else {
        let total = s.round() as u64;
        let (h, m, sec) = (total / 3600, total / 60 % 60, total % 60);
        if h > 0 {
            format!("{h} h {m:02} min")
        } else {
            format!("{m} min {sec:02} s")
        }
    }
}

pub(super) fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// Seconds since the start, on every time chart: ticks at round seconds
/// or minutes, labelled `m:ss` once the run is long enough for it.
pub(super) struct TimeAxis {
    pub(super) end: f64,
    step: f64,
    pub(super) clock: bool,
}

impl TimeAxis {
    pub(super) fn new(end: f64) -> Self {
        let end = if end.is_finite() && end > 0.0 {
            end
        } else {
            1.0
        };
        const STEPS: [f64; 16] = [
            0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
            1800.0, 3600.0,
        ];
        let step = STEPS
            .iter()
            .copied()
            .find(|s| end / s <= 10.0)
            .unwrap_or_else(|| nice_step(end, 8.0));
        Self {
            end,
            step,
            clock: end >= 120.0,
        }
    }

    pub(super) fn scale(&self, f: &Frame) -> Scale {
        Scale::linear(0.0, self.end, f.left(), f.right())
    }

    pub(super) fn ticks(&self) -> Vec<(f64, String)> {
        ticks_by(0.0, self.end, self.step)
            .into_iter()
            .map(|t| (t, self.label(t)))
            .collect()
    }

    pub(super) fn label(&self, t: f64) -> String {
        if self.clock {
            let s = t.round() as i64;
            format!("{}:{:02}", s / 60, s % 60)
        } else {
            trim(t, 1)
        }
    }

    pub(super) fn title(&self) -> &'static str {
        if self.clock {
            "time since start (m:ss)"
        } else {
            "time since start (s)"
        }
    }
}

/// The largest value of the form {1, 2, 5} × 10ᵏ at or below `v` (> 0).
pub(super) fn floor_125(v: f64) -> f64 {
    let base = 10_f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * base)
        .find(|&c| c <= v * 1.000_001)
        .unwrap_or(base)
}

/// The smallest value of the form {1, 2, 5} × 10ᵏ at or above `v` (> 0).
pub(super) fn ceil_125(v: f64) -> f64 {
    let base = 10_f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * base)
        .find(|&c| c >= v * 0.999_999)
        .unwrap_or(10.0 * base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_numbers() {
        assert_eq!(nice_step(1.0, 5.0), 0.2);
        assert_eq!(nice_step(73.0, 5.0), 20.0);
        assert_eq!(ticks_by(0.0, 1.0, 0.25), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(nice_ceil(0.037, 5.0), 0.04);
        assert_eq!(floor_125(0.037), 0.02);
        assert_eq!(ceil_125(0.37), 0.5);
        assert_eq!(fmt_seconds(0.05), "50 ms");
        assert_eq!(fmt_seconds(2.0), "2 s");
        assert_eq!(TimeAxis::new(150.0).label(90.0), "1:30");
    }
}
