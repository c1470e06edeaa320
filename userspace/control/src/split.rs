// SPDX-License-Identifier: GPL-2.0

//! Split-range actuation: one controller output drives several actuators in sequence.
//!
//! The output `v` runs from 0 to 1 and is cut into as many equal ranges as there are
//! stages. Stage `i` moves its actuator from `from` to `to` while `v` crosses its range,
//! and holds it at `from` below the range and at `to` above it: the first actuator goes
//! all the way before the second starts, and they come back in reverse order when `v`
//! falls. (The paper's CPU control: first send more clients to degraded content, share
//! 0 to 100 %, and only then lower the degraded instance's accept rate.) A stage may run
//! downwards (`from > to`).

/// One actuator of a [`SplitRange`]: the values it takes at the start and at the end of
/// its range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stage {
    /// Value below and at the start of the stage's range.
    pub from: f64,
    /// Value at the end of the stage's range and above.
    pub to: f64,
}

/// Why a split range is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitError {
    /// No stage.
    Empty,
    /// A stage whose ends are equal or not finite.
    BadStage,
}

impl core::fmt::Display for SplitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            SplitError::Empty => "a split range needs at least one stage",
            SplitError::BadStage => "a stage needs two different finite ends",
        })
    }
}

impl std::error::Error for SplitError {}

/// Several actuators driven in sequence by one output in `[0, 1]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitRange {
    stages: Vec<Stage>,
}

impl SplitRange {
    /// A split range over `stages`, in the order they act.
    pub fn new(stages: Vec<Stage>) -> Result<Self, SplitError> {
        if stages.is_empty() {
            return Err(SplitError::Empty);
        }
        if stages
            .iter()
            .any(|s| !s.from.is_finite() || !s.to.is_finite() || s.from == s.to)
        {
            return Err(SplitError::BadStage);
        }
        Ok(Self { stages })
    }

    /// The stages.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The actuator values for output `v` (clamped to `[0, 1]`), one per stage.
    pub fn apply(&self, v: f64) -> Vec<f64> {
        let n = self.stages.len() as f64;
        let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
        self.stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let t = (v * n - i as f64).clamp(0.0, 1.0);
                s.from + (s.to - s.from) * t
            })
            .collect()
    }

    /// The output that gives `values` (for a bumpless start from the actuators' current
    /// settings): the first stage not at its end says where the output is. Values out of
    /// a stage's range are clamped to it.
    pub fn invert(&self, values: &[f64]) -> f64 {
        let n = self.stages.len() as f64;
        for (i, s) in self.stages.iter().enumerate() {
            let Some(v) = values.get(i) else {
                return i as f64 / n;
            };
            let t = ((v - s.from) / (s.to - s.from)).clamp(0.0, 1.0);
            if t < 1.0 {
                return (i as f64 + t) / n;
            }
        }
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cpu() -> SplitRange {
        // Share sent to degraded content 0 -> 100 %, then its accept rate 500 -> 10/s.
        SplitRange::new(vec![
            Stage {
                from: 0.0,
                to: 100.0,
            },
            Stage {
                from: 500.0,
                to: 10.0,
            },
        ])
        .unwrap()
    }

    #[test]
    fn in_sequence() {
        let s = cpu();
        assert_eq!(s.apply(0.0), vec![0.0, 500.0]);
        assert_eq!(s.apply(0.25), vec![50.0, 500.0]);
        assert_eq!(s.apply(0.5), vec![100.0, 500.0]);
        assert_eq!(s.apply(0.75), vec![100.0, 255.0]);
        assert_eq!(s.apply(1.0), vec![100.0, 10.0]);
        assert_eq!(s.apply(7.0), vec![100.0, 10.0]);
        assert_eq!(SplitRange::new(vec![]), Err(SplitError::Empty));
        assert_eq!(
            SplitRange::new(vec![Stage { from: 1.0, to: 1.0 }]),
            Err(SplitError::BadStage)
        );
    }

    proptest! {
        #[test]
        fn monotonic_and_invertible(v in 0.0f64..=1.0, w in 0.0f64..=1.0) {
            let s = cpu();
            let (lo, hi) = if v <= w { (v, w) } else { (w, v) };
            let (a, b) = (s.apply(lo), s.apply(hi));
            // Stage 1 rises, stage 2 falls, each monotonically in the output.
            prop_assert!(a[0] <= b[0] + 1e-9);
            prop_assert!(a[1] + 1e-9 >= b[1]);
            // Only one stage is strictly inside its range at a time.
            let inside = |x: &[f64]| (x[0] > 0.0 && x[0] < 100.0) as u8 + (x[1] < 500.0 && x[1] > 10.0) as u8;
            prop_assert!(inside(&a) <= 1);
            prop_assert!((s.invert(&s.apply(v)) - v).abs() < 1e-9);
        }
    }
}
