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

    /// The actuator values for output `v` (clamped to `[0, 1]`; NaN counts as 0, every
    /// actuator at its `from`), one per stage, in the stages' order.
    pub fn apply(&self, v: f64) -> Vec<f64> {
        let mut out = vec![0.0; self.stages.len()];
        self.apply_into(v, &mut out);
        out
    }

    /// [`SplitRange::apply`] without allocation: writes the value of stage `i` into
    /// `out[i]`, for as many stages as `out` holds.
    pub fn apply_into(&self, v: f64, out: &mut [f64]) {
        let n = self.stages.len() as f64;
        let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
        for (i, (s, o)) in self.stages.iter().zip(out.iter_mut()).enumerate() {
            let t = (v * n - i as f64).clamp(0.0, 1.0);
            *o = s.from + (s.to - s.from) * t;
        }
    }

    /// The output that gives `values`, one per stage (for a bumpless start from the
    /// actuators' current settings): the first stage not at its end says where the
    /// output is, the later ones are not read. Values out of a stage's range count as
    /// its nearer end. `None` if the number of values is not the number of stages or
    /// a value that is read is not finite.
    pub fn invert(&self, values: &[f64]) -> Option<f64> {
        if values.len() != self.stages.len() {
            return None;
        }
        let n = self.stages.len() as f64;
        for (i, (s, v)) in self.stages.iter().zip(values).enumerate() {
            if !v.is_finite() {
                return None;
            }
            let t = ((v - s.from) / (s.to - s.from)).clamp(0.0, 1.0);
            if t < 1.0 {
                return Some((i as f64 + t) / n);
            }
        }
        Some(1.0)
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

    /// One to five stages, each rising or falling, over ranges from 0.001 to 1000.
    fn stages() -> impl Strategy<Value = Vec<Stage>> {
        prop::collection::vec(
            (-1000.0f64..1000.0, 0.001f64..1000.0, any::<bool>()).prop_map(|(from, len, up)| {
                Stage {
                    from,
                    to: if up { from + len } else { from - len },
                }
            }),
            1..=5,
        )
    }

    /// Where `x` lies in `s`'s range: 0 at `from`, 1 at `to`.
    fn progress(s: &Stage, x: f64) -> f64 {
        (x - s.from) / (s.to - s.from)
    }

    proptest! {
        #[test]
        fn monotonic_in_sequence_and_invertible(
            stages in stages(),
            v in 0.0f64..=1.0,
            w in 0.0f64..=1.0,
        ) {
            let s = SplitRange::new(stages).unwrap();
            let (lo, hi) = if v <= w { (v, w) } else { (w, v) };
            let (a, b) = (s.apply(lo), s.apply(hi));
            let eps = 1e-9;
            for (i, st) in s.stages().iter().enumerate() {
                // Every actuator moves in its own direction as the output rises.
                prop_assert!(progress(st, a[i]) <= progress(st, b[i]) + eps, "stage {}", i);
                // In sequence: a stage moves only when every earlier one is at its end
                // and every later one at its start.
                let t = progress(st, b[i]);
                if t > eps {
                    for (j, sj) in s.stages()[..i].iter().enumerate() {
                        prop_assert!((progress(sj, b[j]) - 1.0).abs() < eps, "stage {} before {}", j, i);
                    }
                }
                if t < 1.0 - eps {
                    for (j, sj) in s.stages().iter().enumerate().skip(i + 1) {
                        prop_assert!(progress(sj, b[j]).abs() < eps, "stage {} after {}", j, i);
                    }
                }
            }
            // Invertible: apply then invert gives the output back.
            let back = s.invert(&s.apply(v)).unwrap();
            prop_assert!((back - v).abs() < 1e-9, "{} -> {}", v, back);
        }
    }

    #[test]
    fn invert_refuses_what_it_cannot_read() {
        let s = cpu();
        assert_eq!(s.invert(&[50.0]), None);
        assert_eq!(s.invert(&[50.0, 500.0, 1.0]), None);
        assert_eq!(s.invert(&[f64::NAN, 500.0]), None);
        // Out of range: the nearer end. Stage 1 beyond its end, stage 2 above its start.
        assert_eq!(s.invert(&[150.0, 600.0]), Some(0.5));
        assert_eq!(s.invert(&[-5.0, 123.0]), Some(0.0));
        let mut out = [0.0; 2];
        s.apply_into(0.75, &mut out);
        assert_eq!(out, [100.0, 255.0]);
        assert_eq!(s.apply(f64::NAN), vec![0.0, 500.0]);
    }
}
