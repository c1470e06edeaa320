// SPDX-License-Identifier: GPL-2.0

//! Whole-number actuators: error diffusion.
//!
//! The kernel's actuators take whole numbers (an accept rate in connections per second,
//! a weight), while a controller's output is a real number. Rounding every period
//! throws the fraction away: an output of 1.5/s is applied as 2/s for ever, and when the
//! plant's balance lies between two whole values (a server that keeps up with a basic
//! class at 1/s and falls behind at 2/s) the loop can only swing between them. A
//! [`Quantizer`] carries the fraction it could not apply into the next period
//! (first-order error diffusion, a sigma-delta modulator):
//!
//! ```text
//! q(k) = clamp(round(u(k) + e(k-1)), min, max)
//! e(k) = clamp(u(k) + e(k-1) - q(k), -1/2, 1/2)
//! ```
//!
//! so the values applied average to the output: 1.5 becomes 1, 2, 1, 2, ... A plant that
//! integrates (a queue) sees the mean; the alternation itself is a disturbance of one
//! unit at half the sampling rate, which the integrator averages out. The carried error
//! is bounded by half a unit, so a saturated output (`u` beyond the limits, where
//! `q` cannot follow) leaves nothing behind to unwind.

/// Error diffusion of a real-valued output onto whole numbers (see the module's
/// documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Quantizer {
    carried: f64,
}

impl Quantizer {
    /// A quantizer with nothing carried.
    pub fn new() -> Self {
        Self::default()
    }

    /// The whole value to apply for output `u`, within `min..=max`. A NaN output
    /// applies `min` and carries nothing.
    pub fn apply(&mut self, u: f64, min: u64, max: u64) -> u64 {
        let want = u + self.carried;
        if !want.is_finite() {
            self.carried = 0.0;
            return min;
        }
        let q = want.round().clamp(min as f64, max as f64);
        self.carried = (want - q).clamp(-0.5, 0.5);
        q as u64
    }

    /// Forgets the carried fraction (the actuator was set from outside).
    pub fn reset(&mut self) {
        self.carried = 0.0;
    }

    /// The fraction carried into the next period.
    pub fn carried(&self) -> f64 {
        self.carried
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fraction_is_applied_on_average() {
        for u in [1.5, 1.25, 2.7, 7.1, 3.0] {
            let mut q = Quantizer::new();
            let n = 1000;
            let sum: u64 = (0..n).map(|_| q.apply(u, 1, 100)).sum();
            let mean = sum as f64 / n as f64;
            assert!((mean - u).abs() <= 1.0 / n as f64, "{u}: {mean}");
            assert!(q.carried().abs() <= 0.5);
        }
        // 1.5 alternates between its two neighbours.
        let mut q = Quantizer::new();
        let v: Vec<u64> = (0..6).map(|_| q.apply(1.5, 1, 10)).collect();
        assert!(v.iter().all(|&x| x == 1 || x == 2));
        assert_eq!(v.iter().sum::<u64>(), 9);
        // A whole output is applied as it is, every period.
        let mut q = Quantizer::new();
        assert!((0..10).all(|_| q.apply(4.0, 1, 10) == 4));
    }

    #[test]
    fn saturation_leaves_nothing_to_unwind() {
        let mut q = Quantizer::new();
        // Far below the floor for many periods.
        for _ in 0..100 {
            assert_eq!(q.apply(-20.0, 1, 10), 1);
        }
        assert_eq!(q.carried(), -0.5);
        // Back inside the range: the first value is the output's, give or take one.
        let v = q.apply(5.0, 1, 10);
        assert!((4..=5).contains(&v), "{v}");
        // Above the ceiling, then inside.
        for _ in 0..100 {
            assert_eq!(q.apply(50.0, 1, 10), 10);
        }
        assert_eq!(q.carried(), 0.5);
        let v = q.apply(5.0, 1, 10);
        assert!((5..=6).contains(&v), "{v}");
        // NaN: the floor, nothing carried.
        assert_eq!(q.apply(f64::NAN, 2, 10), 2);
        assert_eq!(q.carried(), 0.0);
        q.apply(2.4, 1, 10);
        q.reset();
        assert_eq!(q.carried(), 0.0);
    }
}
