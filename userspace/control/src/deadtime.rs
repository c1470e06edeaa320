// SPDX-License-Identifier: GPL-2.0

//! Plants with a dead time of whole periods, `y(k+1) = a y(k) + b u(k-d) + c`.
//!
//! A queue's mean delay measured over a period reacts to the actuator a period late:
//! the connections accepted in a period waited through the period before, and the rate
//! set at a period's start changes the queue only over that period. Fitted without the
//! dead time, such a plant looks slower and weaker than it is (on fig6's relay data a
//! first-order fit gave `a = 0.53`, `b = 31`, R² 0.28; with one period of dead time
//! `a = 0.92`, `b = 101`, R² 0.88), and gains placed for that model oscillate on the
//! real plant. [`crate::ident::fit_pairs`] fits the model for a given `d` when the
//! pairs are built as `(y(k), u(k-d), y(k+1))`.
//!
//! With the velocity-form PI of [`crate::pi`] the closed loop's characteristic
//! polynomial has degree `d + 2`:
//!
//! ```text
//! z^d (z - a)(z - 1) + b ((Kp + Ki) z - Kp)
//! ```
//!
//! Two gains cannot place `d + 2` poles. [`gains_for`] places the dominant pair
//! `p = r e^{±jθ}` (from the settling time and overshoot, as in [`crate::design`]): the
//! polynomial is linear in `Kp` and `Ki`, so `P(p) = 0` is two real linear equations,
//!
//! ```text
//! b (Kp + Ki) = Im(Q) / Im(p),   b Kp = Re(p) Im(Q) / Im(p) - Re(Q),
//! Q = -p^d (p - a)(p - 1)
//! ```
//!
//! which for `d = 0` are [`crate::design::gains_for`]'s. The other `d` poles land where
//! they land; [`design`] accepts a placement only if none of them is slower than the
//! pair (so the asked settling time holds) and the loop stays stable with `b` halved and
//! doubled, and otherwise lengthens the settling time until both hold: a dead time
//! bounds how fast a loop can be. [`check_robust`] simulates the plant with its dead
//! time, and [`stable_b_range`] finds the interval of gain factors numerically (the
//! closed form of [`crate::design::stable_b_range`] is for `d = 0`).

use crate::{
    design::{self, DesignError, Gains, Poles},
    pi::Pi,
    sim::{self, Report, Sample},
};

/// The longest dead time, in periods, that identification tries and design accepts.
pub const MAX_DEAD_TIME: usize = 3;

type C = (f64, f64);

fn mul(x: C, y: C) -> C {
    (x.0 * y.0 - x.1 * y.1, x.0 * y.1 + x.1 * y.0)
}

fn sub(x: C, y: C) -> C {
    (x.0 - y.0, x.1 - y.1)
}

fn div(x: C, y: C) -> C {
    let n = y.0 * y.0 + y.1 * y.1;
    ((x.0 * y.0 + x.1 * y.1) / n, (x.1 * y.0 - x.0 * y.1) / n)
}

/// The closed loop's characteristic polynomial, highest power first (monic, degree
/// `d + 2`).
pub fn char_poly(a: f64, b: f64, d: usize, g: Gains) -> Vec<f64> {
    let mut p = vec![0.0; d + 3];
    p[0] = 1.0;
    p[1] = -(1.0 + a);
    p[2] = a;
    p[d + 1] += b * (g.kp + g.ki);
    p[d + 2] -= b * g.kp;
    p
}

/// The roots of a monic polynomial (highest power first), by the Durand-Kerner
/// iteration, as `(re, im)` pairs.
pub fn roots(poly: &[f64]) -> Vec<(f64, f64)> {
    let n = poly.len().saturating_sub(1);
    let eval = |z: C| {
        poly.iter()
            .fold((0.0, 0.0), |acc, &c| (mul(acc, z).0 + c, mul(acc, z).1))
    };
    // Starting points on a circle past the roots' bound, off the real axis.
    let bound = 1.0 + poly.iter().skip(1).map(|c| c.abs()).fold(0.0, f64::max);
    let mut z: Vec<C> = (0..n)
        .map(|i| {
            let t = 0.4 + 2.0 * core::f64::consts::PI * i as f64 / n as f64;
            (bound * t.cos(), bound * t.sin())
        })
        .collect();
    for _ in 0..500 {
        let mut moved = 0.0f64;
        for i in 0..n {
            let mut den = (1.0, 0.0);
            for j in 0..n {
                if j != i {
                    den = mul(den, sub(z[i], z[j]));
                }
            }
            if den.0 == 0.0 && den.1 == 0.0 {
                den = (1e-12, 0.0);
            }
            let step = div(eval(z[i]), den);
            z[i] = sub(z[i], step);
            moved = moved.max(step.0.hypot(step.1));
        }
        if moved < 1e-14 {
            break;
        }
    }
    z
}

/// The largest modulus of the closed-loop poles: stable below 1.
pub fn spectral_radius(a: f64, b: f64, d: usize, g: Gains) -> f64 {
    if d == 0 {
        return design::spectral_radius(a, b, g);
    }
    roots(&char_poly(a, b, d, g))
        .iter()
        .map(|(re, im)| re.hypot(*im))
        .fold(0.0, f64::max)
}

/// The gains that put a pair of closed-loop poles of the plant `(a, b, d)` at `p` (for
/// `θ = 0`, a double real pole, at `r e^{±j 0.001}`).
pub fn gains_for(a: f64, b: f64, d: usize, p: Poles) -> Result<Gains, DesignError> {
    if d == 0 {
        return design::gains_for(a, b, p);
    }
    if !a.is_finite() {
        return Err(DesignError::BadModel);
    }
    if !b.is_finite() || b.abs() < f64::EPSILON {
        return Err(DesignError::NoGain);
    }
    let theta = p.theta.max(1e-3);
    let z = (p.r * theta.cos(), p.r * theta.sin());
    let mut zd = (1.0, 0.0);
    for _ in 0..d {
        zd = mul(zd, z);
    }
    let q = mul(
        (-1.0, 0.0),
        mul(zd, mul(sub(z, (a, 0.0)), sub(z, (1.0, 0.0)))),
    );
    let s = q.1 / z.1;
    let bkp = z.0 * s - q.0;
    Ok(Gains {
        kp: bkp / b,
        ki: (s - bkp) / b,
    })
}

/// Simulates the plant `(a, b, c, d)` under `pi` for `periods` periods from `y = 0` with
/// the controller's output in force before the start.
pub fn run_pi(
    a: f64,
    b: f64,
    d: usize,
    pi: Pi,
    r: impl Fn(usize) -> f64,
    periods: usize,
) -> Vec<Sample> {
    let mut past = std::collections::VecDeque::from(vec![pi.output(); d]);
    sim::closed_loop(pi, r, periods, 0.0, |y, u| {
        past.push_back(u);
        a * y + b * past.pop_front().unwrap_or(u)
    })
}

/// The open interval of factors `f > 0` of `b` around which the gains keep the plant
/// `(a, f b, d)` stable, found on a logarithmic grid from 1/1000 to 1000 and refined by
/// bisection: the interval that holds 1 if the nominal loop is stable, else the first.
/// `None` if no factor on the grid is stable.
pub fn stable_b_range(a: f64, b: f64, d: usize, g: Gains) -> Option<(f64, f64)> {
    if d == 0 {
        return design::stable_b_range(a, b, g);
    }
    let stable = |f: f64| spectral_radius(a, f * b, d, g) < 1.0;
    let grid: Vec<f64> = (0..=240)
        .map(|i| 10f64.powf(-3.0 + i as f64 / 40.0))
        .collect();
    let start = if stable(1.0) {
        120
    } else {
        grid.iter().position(|&f| stable(f))?
    };
    let refine = |mut inside: f64, mut outside: f64| {
        for _ in 0..50 {
            let m = (inside * outside).sqrt();
            if stable(m) {
                inside = m;
            } else {
                outside = m;
            }
        }
        inside
    };
    let mut lo = start;
    while lo > 0 && stable(grid[lo - 1]) {
        lo -= 1;
    }
    let mut hi = start;
    while hi < grid.len() - 1 && stable(grid[hi + 1]) {
        hi += 1;
    }
    let low = if lo == 0 {
        0.0
    } else {
        refine(grid[lo], grid[lo - 1])
    };
    let high = if hi == grid.len() - 1 {
        f64::INFINITY
    } else {
        refine(grid[hi], grid[hi + 1])
    };
    Some((low, high))
}

/// [`sim::check_robust`] for a plant with `d` periods of dead time.
pub fn check_robust(a: f64, b: f64, d: usize, g: Gains, periods: usize) -> Report {
    if d == 0 {
        return sim::check_robust(a, b, g, periods);
    }
    let cases = sim::cases(
        g,
        |f| spectral_radius(a, f * b, d, g),
        |f, pi| run_pi(a, f * b, d, pi, |_| 1.0, periods),
    );
    Report {
        cases,
        b_range: stable_b_range(a, b, d, g),
    }
}

/// A design for the plant `(a, b, d)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Design {
    /// The gains.
    pub gains: Gains,
    /// The dominant pair placed.
    pub poles: Poles,
    /// The settling time the pair was placed for: the one asked, or longer if the dead
    /// time did not allow it.
    pub settling: f64,
}

/// Why [`design`] found no design.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Refused {
    /// The asked values are wrong (see [`DesignError`]).
    Design(DesignError),
    /// The dead time is longer than [`MAX_DEAD_TIME`].
    DeadTime,
    /// No settling time up to ten times the asked one gives a loop whose placed pair
    /// dominates and which stays stable with `b` halved and doubled.
    NotRobust,
}

impl core::fmt::Display for Refused {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Refused::Design(e) => e.fmt(f),
            Refused::DeadTime => write!(f, "a dead time of more than {MAX_DEAD_TIME} periods: use a longer period"),
            Refused::NotRobust => f.write_str(
                "no settling time up to ten times the one asked keeps the loop stable with b halved and doubled",
            ),
        }
    }
}

impl std::error::Error for Refused {}

/// PI gains for the plant `(a, b, d)`: the dominant pair for `settling` periods and a
/// largest overshoot `mp`, the settling time lengthened in steps of half a period (up
/// to ten times) until the placed pair dominates the other poles and the loop is stable
/// with `b` halved and doubled (poles and a simulated step of `4 x settling + 100`
/// periods).
pub fn design(a: f64, b: f64, d: usize, settling: f64, mp: f64) -> Result<Design, Refused> {
    if d > MAX_DEAD_TIME {
        return Err(Refused::DeadTime);
    }
    // The asked values are checked here: a NaN settling time would skip the loop.
    design::poles(settling, mp).map_err(Refused::Design)?;
    let mut ks = settling;
    while ks <= 10.0 * settling {
        let p = design::poles(ks, mp).map_err(Refused::Design)?;
        let g = gains_for(a, b, d, p).map_err(Refused::Design)?;
        let dominant = spectral_radius(a, b, d, g) <= p.r * (1.0 + 1e-6);
        if dominant && check_robust(a, b, d, g, (4.0 * ks) as usize + 100).robust() {
            return Ok(Design {
                gains: g,
                poles: p,
                settling: ks,
            });
        }
        ks += 0.5;
    }
    Err(Refused::NotRobust)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pi::PiConfig;

    #[test]
    fn roots_of_known_polynomials() {
        // (z - 0.5)(z + 0.25)(z^2 - z + 0.5): roots 0.5, -0.25, 0.5 +- 0.5j.
        let p = [1.0, -1.25, 0.625, 0.0, -0.0625];
        let mut r = roots(&p);
        r.sort_by(|x, y| {
            x.0.partial_cmp(&y.0)
                .unwrap()
                .then(x.1.partial_cmp(&y.1).unwrap())
        });
        let want = [(-0.25, 0.0), (0.5, -0.5), (0.5, 0.0), (0.5, 0.5)];
        for (g, w) in r.iter().zip(want) {
            assert!(
                (g.0 - w.0).abs() < 1e-9 && (g.1 - w.1).abs() < 1e-9,
                "{r:?}"
            );
        }
    }

    #[test]
    fn placed_pair_is_a_pair_of_roots() {
        for d in 0..=MAX_DEAD_TIME {
            for (a, b) in [(1.0, 100.0), (0.9, 40.0), (0.5, -2.0)] {
                let p = design::poles(16.0, 0.1).unwrap();
                let g = gains_for(a, b, d, p).unwrap();
                let z = (p.r * p.theta.cos(), p.r * p.theta.sin());
                let v = char_poly(a, b, d, g)
                    .iter()
                    .fold((0.0, 0.0), |acc, &c| (mul(acc, z).0 + c, mul(acc, z).1));
                assert!(v.0.hypot(v.1) < 1e-9, "d {d} a {a} b {b}: P(p) = {v:?}");
                if d == 0 {
                    assert_eq!(g, design::gains_for(a, b, p).unwrap());
                }
            }
        }
    }

    #[test]
    fn dead_time_design_is_stable_and_honest() {
        // An integrating queue with one period of dead time (fig6's plant): gains placed
        // without the dead time oscillate on it; the dead-time design is robust, and
        // its simulated step settles in about the settling time it reports.
        let (a, b) = (1.0, 100.0);
        let naive = design::pi_gains(a, b, 8.0, 0.1).unwrap().0;
        assert!(spectral_radius(a, 2.0 * b, 1, naive) > 1.0);
        let dz = design(a, b, 1, 8.0, 0.1).unwrap();
        assert!(dz.settling >= 8.0);
        let rep = check_robust(a, b, 1, dz.gains, 400);
        assert!(rep.robust(), "{rep:?}");
        let (lo, hi) = rep.b_range.unwrap();
        assert!(lo < 0.5 && hi > 2.0, "{lo} {hi}");
        let s = rep.cases[0].response.settling.unwrap() as f64;
        assert!(
            s <= dz.settling + 2.0,
            "settled in {s}, designed for {}",
            dz.settling
        );
        // The range is where the poles cross the unit circle.
        assert!(spectral_radius(a, hi * 0.999 * b, 1, dz.gains) < 1.0);
        assert!(spectral_radius(a, hi * 1.001 * b, 1, dz.gains) > 1.0);
        // d = 0 is the first-order design.
        let d0 = design(0.6, 2.0, 0, 8.0, 0.1).unwrap();
        assert_eq!(d0.gains, design::pi_gains(0.6, 2.0, 8.0, 0.1).unwrap().0);
        assert_eq!(
            design(a, b, MAX_DEAD_TIME + 1, 8.0, 0.1),
            Err(Refused::DeadTime)
        );
    }

    #[test]
    fn simulated_loop_matches_poles() {
        // A stable design's simulated error decays like its spectral radius.
        for d in 1..=MAX_DEAD_TIME {
            let dz = design(0.9, 40.0, d, 10.0, 0.1).unwrap();
            let pi = Pi::new(
                PiConfig {
                    kp: dz.gains.kp,
                    ki: dz.gains.ki,
                    min: f64::MIN,
                    max: f64::MAX,
                    slew: f64::INFINITY,
                    deadband: 0.0,
                },
                0.0,
            )
            .unwrap();
            let s = run_pi(0.9, 40.0, d, pi, |_| 1.0, 300);
            assert!((s[299].y - 1.0).abs() < 1e-6, "d {d}: {:?}", s[299]);
        }
    }

    #[test]
    fn a_negative_gain_is_designed_like_a_positive_one() {
        // A utilization loop's plant: more of the split range's output, less CPU (b <
        // 0). The characteristic polynomial has b only in b Kp and b Ki, so the design
        // for -b is the one for b with the gains' signs turned: same poles, same
        // robustness, same spread, and the loop reaches its set point.
        for (a, b) in [(0.3, -40.0), (0.0, -25.0), (0.8, -2.0), (1.0, -0.5)] {
            for d in 0..=2 {
                let neg = design(a, b, d, 10.0, 0.1).unwrap();
                let pos = design(a, -b, d, 10.0, 0.1).unwrap();
                assert_eq!((neg.settling, neg.poles), (pos.settling, pos.poles));
                assert!(neg.gains.ki < 0.0, "{a} {b} {d}: {neg:?}");
                assert!((neg.gains.kp + pos.gains.kp).abs() < 1e-12);
                assert!((neg.gains.ki + pos.gains.ki).abs() < 1e-12);
                let rep = check_robust(a, b, d, neg.gains, 400);
                assert!(rep.robust(), "{a} {b} {d}: {rep:?}");
                assert_eq!(rep.b_range, check_robust(a, -b, d, pos.gains, 400).b_range);
                let pi = Pi::new(
                    PiConfig {
                        kp: neg.gains.kp,
                        ki: neg.gains.ki,
                        min: f64::MIN,
                        max: f64::MAX,
                        slew: f64::INFINITY,
                        deadband: 0.0,
                    },
                    0.0,
                )
                .unwrap();
                let s = run_pi(a, b, d, pi, |_| 1.0, 300);
                assert!((s[299].y - 1.0).abs() < 1e-6, "{a} {b} {d}: {:?}", s[299]);
                // In steady state y = (a y + b u): u = (1 - a) y / b, below 0 for a
                // plant that is not an integrator (less output, more CPU).
                assert!((s[299].u - (1.0 - a) / b).abs() < 1e-6, "{:?}", s[299]);
            }
        }
        // `design --settling auto` picks the same settling time for -b.
        let (ln, wn) = crate::noise::least_spread(0.3, -40.0, 1, 0.1, 20.0).unwrap();
        let (lp, wp) = crate::noise::least_spread(0.3, 40.0, 1, 0.1, 20.0).unwrap();
        assert_eq!(ln.settling, lp.settling);
        assert!((wn - wp).abs() < 1e-12);
    }
}
