// SPDX-License-Identifier: GPL-2.0

//! Split-range actuation: one controller output drives several actuators in sequence.
//!
//! The output `v` runs from 0 to 1 and is cut into as many equal ranges as there are
//! stages. Stage `i` moves its actuator from `from` to `to` while `v` crosses its range,
//! and holds it at `from` below the range and at `to` above it: the first actuator goes
//! all the way before the second starts, and they come back in reverse order when `v`
//! falls. (The paper's CPU control: first send more clients to degraded content, share
//! 0 to 100 %, and only then lower the degraded instance's accept rate.) A stage may run
//! downwards (`from > to`). [`SplitRange::invert`] goes the other way, from the
//! actuators' values to the output that gives them (or comes nearest), so that a loop
//! starts from the actuators as it finds them.

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

    /// The output whose actuator values come nearest to `values`, one per stage: the
    /// inverse of [`SplitRange::apply`], for a bumpless start from the actuators' current
    /// settings. `None` if the number of values is not the number of stages or a value
    /// is not finite.
    ///
    /// Each value is read as its stage's progress `t` (0 at `from`, 1 at `to`; a value
    /// beyond an end counts as that end). Values that [`SplitRange::apply`] can give
    /// (every stage before one at its end, every stage after it at its start) give
    /// their output back exactly. Others (the actuators were set by hand, or a stage's
    /// value was restored while another's was not) give the output that is nearest in
    /// progress, in the least-squares sense: for the output inside stage `i`, the
    /// earlier stages would have to move to their ends and the later ones to their
    /// starts, at a cost of
    ///
    /// ```text
    /// sum over j < i of (1 - t_j)^2  +  sum over j > i of t_j^2
    /// ```
    ///
    /// while stage `i` itself stays where it is. The stage of least cost is taken; a
    /// tie goes to the lower output (the stages' starts, where the safe values usually
    /// are).
    pub fn invert(&self, values: &[f64]) -> Option<f64> {
        if values.len() != self.stages.len() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let t: Vec<f64> = self
            .stages
            .iter()
            .zip(values)
            .map(|(s, v)| ((v - s.from) / (s.to - s.from)).clamp(0.0, 1.0))
            .collect();
        // after[i]: the cost of the stages from i on being at their starts.
        let mut after = vec![0.0; t.len() + 1];
        for i in (0..t.len()).rev() {
            after[i] = after[i + 1] + t[i] * t[i];
        }
        let n = t.len() as f64;
        let (mut before, mut best) = (0.0, (f64::INFINITY, 0.0));
        for (i, ti) in t.iter().enumerate() {
            let cost = before + after[i + 1];
            // Strictly less: a tie keeps the lower output.
            if cost < best.0 {
                best = (cost, (i as f64 + ti) / n);
            }
            before += (1.0 - ti) * (1.0 - ti);
        }
        Some(best.1)
    }

    /// Where the output `v` should continue from when stage `i`'s actuator has no
    /// effect on the `from` side of `edge` (a dead zone: an accept-rate limit above the
    /// rate the clients arrive at admits them all, whatever it is). If `v` lies in that
    /// part of stage `i`, it is moved out of it in the direction the controller is
    /// about to move it: to the output at which the actuator reaches `edge` if the
    /// output is to rise (`raise`), else to the start of stage `i` (the previous stage
    /// at its end, where the output acts again). Otherwise `v` is returned unchanged.
    /// A dead-zone inverse: a controller whose output crosses a dead zone by
    /// integrating winds up for as many periods as the crossing takes, while the plant
    /// sees no change. An `edge` outside the stage's range, or an `i` past the stages,
    /// leaves `v` alone.
    pub fn skip_dead(&self, v: f64, i: usize, edge: f64, raise: bool) -> f64 {
        let Some(s) = self.stages.get(i) else {
            return v;
        };
        let t_edge = (edge - s.from) / (s.to - s.from);
        if !(t_edge > 0.0 && t_edge < 1.0) {
            return v;
        }
        let n = self.stages.len() as f64;
        let (start, at_edge) = (i as f64 / n, (i as f64 + t_edge) / n);
        if v > start && v < at_edge {
            if raise {
                at_edge
            } else {
                start
            }
        } else {
            v
        }
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
    fn a_dead_zone_is_skipped_in_the_direction_of_travel() {
        let s = cpu();
        // Clients arrive at 255/s: any rate limit from 500 down to 255 admits them all,
        // the outputs 0.5 to 0.75.
        assert_eq!(s.skip_dead(0.6, 1, 255.0, true), 0.75);
        assert_eq!(s.skip_dead(0.6, 1, 255.0, false), 0.5);
        // Outside the dead part, in the stage before, or at its ends: unchanged.
        for v in [0.3, 0.5, 0.75, 0.9, 1.0] {
            assert_eq!(s.skip_dead(v, 1, 255.0, true), v);
            assert_eq!(s.skip_dead(v, 1, 255.0, false), v);
        }
        // An edge outside the stage's range, or no such stage: unchanged.
        assert_eq!(s.skip_dead(0.6, 1, 600.0, false), 0.6);
        assert_eq!(s.skip_dead(0.6, 1, 5.0, false), 0.6);
        assert_eq!(s.skip_dead(0.6, 2, 255.0, false), 0.6);
        // Applied, the skipped-to outputs give the edge and the stage's start.
        assert_eq!(
            s.apply(s.skip_dead(0.6, 1, 255.0, true)),
            vec![100.0, 255.0]
        );
        assert_eq!(
            s.apply(s.skip_dead(0.6, 1, 255.0, false)),
            vec![100.0, 500.0]
        );
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

        #[test]
        fn invert_is_the_nearest_output(
            stages in stages(),
            at in prop::collection::vec(-0.2f64..1.2, 5),
        ) {
            // Any values, in or a little out of their ranges, consistent or not.
            let s = SplitRange::new(stages).unwrap();
            let values: Vec<f64> = s
                .stages()
                .iter()
                .zip(&at)
                .map(|(st, t)| st.from + (st.to - st.from) * t)
                .collect();
            let v = s.invert(&values).unwrap();
            prop_assert!((0.0..=1.0).contains(&v), "{}", v);
            let target: Vec<f64> = s
                .stages()
                .iter()
                .zip(&values)
                .map(|(st, x)| progress(st, *x).clamp(0.0, 1.0))
                .collect();
            let distance = |w: f64| -> f64 {
                s.stages()
                    .iter()
                    .zip(s.apply(w))
                    .zip(&target)
                    .map(|((st, x), t)| (progress(st, x) - t).powi(2))
                    .sum()
            };
            let best = distance(v);
            for k in 0..=2000 {
                let w = k as f64 / 2000.0;
                prop_assert!(best <= distance(w) + 1e-9, "{} ({}) beaten by {} ({})", v, best, w, distance(w));
            }
        }
    }

    /// The stage that moved from `a` to `b` (the values of two outputs), if one did.
    fn moved(s: &SplitRange, a: &[f64], b: &[f64]) -> Option<usize> {
        let changed: Vec<usize> = (0..s.stages().len()).filter(|&i| a[i] != b[i]).collect();
        assert!(
            changed.len() <= 1,
            "two stages moved at once: {a:?} -> {b:?}"
        );
        changed.first().copied()
    }

    #[test]
    fn first_stage_first_and_back_in_reverse_order() {
        let s = cpu();
        let up: Vec<Vec<f64>> = (0..=100).map(|k| s.apply(k as f64 / 100.0)).collect();
        let down: Vec<Vec<f64>> = (0..=100).rev().map(|k| s.apply(k as f64 / 100.0)).collect();
        for (path, rising) in [(&up, true), (&down, false)] {
            let order: Vec<usize> = path
                .windows(2)
                .filter_map(|w| moved(&s, &w[0], &w[1]))
                .collect();
            // Rising: the share all the way, then the rate; falling: the rate back to
            // its start, then the share.
            let mut want = order.clone();
            want.sort_unstable();
            if !rising {
                want.reverse();
            }
            assert_eq!(order, want, "rising {rising}");
            assert!(order.contains(&0) && order.contains(&1));
            for x in path {
                // The rate below its start only with everything sent to degraded content.
                assert!(x[1] == 500.0 || x[0] == 100.0, "{x:?}");
            }
        }
        // Falling, the share starts back only once the rate is back at its start.
        let first_share = down.iter().position(|x| x[0] < 100.0).unwrap();
        assert_eq!(down[first_share - 1][1], 500.0);
        assert!(down[..first_share].iter().any(|x| x[1] < 500.0));
    }

    #[test]
    fn invert_finds_the_nearest_output() {
        let s = cpu();
        // Values apply gives: exactly their output.
        for v in [0.0, 0.1, 0.5, 0.6, 1.0] {
            assert!((s.invert(&s.apply(v)).unwrap() - v).abs() < 1e-12, "{v}");
        }
        // Inconsistent values: 20 % sent to degraded content but the rate 90 % of the
        // way down. Moving the share to its end (cost 0.8^2) is nearer than moving the
        // rate back to its start (0.9^2): the rate stays, the share goes to 100 %.
        let v = s.invert(&[20.0, 500.0 - 0.9 * 490.0]).unwrap();
        assert!((v - 0.95).abs() < 1e-12, "{v}");
        // 60 % and a rate 30 % of the way down: the rate goes back instead.
        let v = s.invert(&[60.0, 500.0 - 0.3 * 490.0]).unwrap();
        assert!((v - 0.3).abs() < 1e-12, "{v}");
        // Nothing sent to degraded content but the rate at its end: either way moves
        // one stage all the way; the tie goes to the lower output.
        assert_eq!(s.invert(&[0.0, 10.0]), Some(0.0));
        // Three stages: the middle one says where the output is.
        let three = SplitRange::new(vec![
            Stage { from: 0.0, to: 1.0 },
            Stage { from: 0.0, to: 1.0 },
            Stage { from: 0.0, to: 1.0 },
        ])
        .unwrap();
        let v = three.invert(&[1.0, 0.5, 0.0]).unwrap();
        assert!((v - 0.5).abs() < 1e-12, "{v}");
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
