// SPDX-License-Identifier: GPL-2.0

//! PI gains by pole placement for a first-order plant.
//!
//! Plant (per period): `y(k+1) = a y(k) + b u(k) + c`, that is `P(z) = b / (z - a)` (the
//! constant `c` is an operating-point offset, which the integral action removes).
//! Controller: the velocity-form PI of [`crate::pi`],
//! `u(k) = u(k-1) + Kp (e(k) - e(k-1)) + Ki e(k)`, that is
//! `C(z) = ((Kp + Ki) z - Kp) / (z - 1)`.
//!
//! The closed loop's characteristic polynomial is `(z - 1)(z - a) + b((Kp + Ki) z - Kp)`:
//!
//! ```text
//! z^2 + (b (Kp + Ki) - 1 - a) z + (a - b Kp)
//! ```
//!
//! Matching it with `z^2 - 2 r cos(θ) z + r^2`, whose roots are the chosen poles
//! `r e^{±jθ}`, gives
//!
//! ```text
//! Kp = (a - r^2) / b
//! Ki = (1 - 2 r cos(θ) + r^2) / b
//! ```
//!
//! The poles come from the wanted behaviour, by the usual mapping of a damped second-order
//! system sampled once a period: the envelope `r^k` of the error falls to 2 % (`e^-4`)
//! after `Ks` periods, so `r = e^(-4 / Ks)`; a largest overshoot `Mp` gives the damping
//! `ζ = -ln(Mp) / sqrt(π^2 + ln(Mp)^2)`, and with `ζ ωn T = 4 / Ks` the pole angle is
//! `θ = ωn T sqrt(1 - ζ^2) = 4 π / (Ks (-ln Mp))`. `Mp = 0` asks for a double real pole
//! (`θ = 0`). The angle is capped at a quarter turn (`θ ≤ π/2`).
//!
//! The mapping is the continuous-time one; the sampled loop follows it closely but not
//! exactly. When the set point steps at the loop's first period (no proportional kick,
//! see [`crate::pi`]), the response from set point to measurement is
//! `b Ki z / (z^2 - 2 r cos(θ) z + r^2)` and depends on `Ks` and `Mp` only, not on the
//! plant: for overshoots up to 0.3 it settles within `Ks + 1` periods and overshoots
//! by up to a third more than asked for `Ks` of 4 to 8 (0.133 for 0.1 at `Ks = 4`), up
//! to 12 % more for `Ks` of 10 to 15 and 2 % more from 20 on. A set-point change while a PI with the proportional
//! term on the error runs adds the zero `Kp / (Kp + Ki)` and more overshoot; a
//! set-point weight of 0 removes it ([`crate::pi::Pi::with_set_point_weight`]).
//! [`crate::sim::check_robust`] reports the real figures of a design.
//!
//! # Robustness to the plant's gain
//!
//! The real gain of the actuator differs from the identified `b` (the load moves it),
//! so a design is checked against `f b`. With `P = b Kp` and `I = b Ki` the loop on the
//! plant `(a, f b)` has the characteristic polynomial `z^2 + α1 z + α0`,
//! `α1 = f (P + I) - 1 - a`, `α0 = a - f P`, whose roots are inside the unit circle if
//! and only if (Jury) `|α0| < 1`, `1 + α1 + α0 > 0` and `1 - α1 + α0 > 0`:
//!
//! ```text
//! f I > 0,   f (2 P + I) < 2 (1 + a),   a - 1 < f P < a + 1
//! ```
//!
//! Each is linear in `f`, so the factors that keep the loop stable form one interval,
//! [`stable_b_range`]. For the gains placed above (`P = a - r^2`,
//! `I = 1 - 2 r cos(θ) + r^2`), halving `b` is always stable for `-1 < a < 2 - r^2`,
//! and doubling it is stable if and only if
//!
//! ```text
//! 2 r^2 - 1 < a < 2 r cos(θ) + r^2
//! ```
//!
//! Two consequences for the manager. A nearly static plant (`a ≈ 0`, utilization
//! sampled slowly) gets a `Kp` of the sign opposite to `Ki` (`Kp < 0` for `b > 0`),
//! and designed for a settling time of `8 / ln 2 ≈ 11.5` periods or more it goes
//! unstable when `b` doubles (ask for a shorter settling time, or use an I controller). A short settling time with a large overshoot (`θ` near
//! `π/2`) leaves no margin for slow plants (`Ks = 4`, `Mp = 0.3`: `θ` is capped at
//! `π/2` and `2 b` is unstable for `a > r^2 = 0.135`).

/// The gains of a PI controller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gains {
    /// Proportional gain.
    pub kp: f64,
    /// Integral gain.
    pub ki: f64,
}

/// The closed-loop poles chosen: `r e^{±jθ}`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Poles {
    /// Radius.
    pub r: f64,
    /// Angle, radians.
    pub theta: f64,
}

/// Why a design is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DesignError {
    /// `b` is 0 (or not finite): the actuator does not move the measurement.
    NoGain,
    /// `a` is not finite.
    BadModel,
    /// The settling time is under 2 periods (or not finite).
    SettlingTooShort,
    /// The overshoot is not in `[0, 1)`.
    Overshoot,
}

impl core::fmt::Display for DesignError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DesignError::NoGain => "the model's b is 0: the actuator does not move the measurement",
            DesignError::BadModel => "the model's a is not a finite number",
            DesignError::SettlingTooShort => "the settling time must be at least 2 periods",
            DesignError::Overshoot => "the overshoot must be from 0 to less than 1",
        })
    }
}

impl std::error::Error for DesignError {}

/// The poles for a settling time of `settling` periods and a largest overshoot `mp`
/// (a fraction: 0.1 is 10 %).
pub fn poles(settling: f64, mp: f64) -> Result<Poles, DesignError> {
    if !settling.is_finite() || settling < 2.0 {
        return Err(DesignError::SettlingTooShort);
    }
    if !(0.0..1.0).contains(&mp) {
        return Err(DesignError::Overshoot);
    }
    let r = (-4.0 / settling).exp();
    let theta = if mp == 0.0 {
        0.0
    } else {
        // At most a quarter turn: beyond, the "overshoot" would be an oscillation.
        (4.0 * core::f64::consts::PI / (settling * -mp.ln())).min(core::f64::consts::FRAC_PI_2)
    };
    Ok(Poles { r, theta })
}

/// The PI gains that put the closed-loop poles of the plant `(a, b)` at `p`.
pub fn gains_for(a: f64, b: f64, p: Poles) -> Result<Gains, DesignError> {
    if !a.is_finite() {
        return Err(DesignError::BadModel);
    }
    if !b.is_finite() || b.abs() < f64::EPSILON {
        return Err(DesignError::NoGain);
    }
    let r2 = p.r * p.r;
    Ok(Gains {
        kp: (a - r2) / b,
        ki: (1.0 - 2.0 * p.r * p.theta.cos() + r2) / b,
    })
}

/// The PI gains for the plant `(a, b)`, a settling time of `settling` periods and a
/// largest overshoot `mp`.
pub fn pi_gains(a: f64, b: f64, settling: f64, mp: f64) -> Result<(Gains, Poles), DesignError> {
    let p = poles(settling, mp)?;
    Ok((gains_for(a, b, p)?, p))
}

/// The roots of the closed loop's characteristic polynomial for the plant `(a, b)` and
/// `g`, as `(re, im)` pairs.
pub fn closed_loop_poles(a: f64, b: f64, g: Gains) -> [(f64, f64); 2] {
    // z^2 + a1 z + a0
    let a1 = b * (g.kp + g.ki) - 1.0 - a;
    let a0 = a - b * g.kp;
    let disc = a1 * a1 - 4.0 * a0;
    if disc >= 0.0 {
        let s = disc.sqrt();
        [((-a1 + s) / 2.0, 0.0), ((-a1 - s) / 2.0, 0.0)]
    } else {
        let im = (-disc).sqrt() / 2.0;
        [(-a1 / 2.0, im), (-a1 / 2.0, -im)]
    }
}

/// The largest modulus of the closed-loop poles: the loop is stable below 1.
pub fn spectral_radius(a: f64, b: f64, g: Gains) -> f64 {
    closed_loop_poles(a, b, g)
        .iter()
        .map(|(re, im)| re.hypot(*im))
        .fold(0.0, f64::max)
}

/// The open interval of factors `f > 0` for which the gains `g` keep the plant
/// `(a, f b)` stable (every closed-loop pole strictly inside the unit circle), from the
/// Jury conditions in the module documentation: `(low, high)`, `high` possibly
/// infinite. `None` if no positive factor is stable (in particular when `g` has the
/// wrong sign for `b`) or a value is not finite.
pub fn stable_b_range(a: f64, b: f64, g: Gains) -> Option<(f64, f64)> {
    let (p, i) = (b * g.kp, b * g.ki);
    if ![a, p, i].iter().all(|v| v.is_finite()) {
        return None;
    }
    // Each condition is `k f < m`; f > 0 is one of them.
    let conditions = [
        (-1.0, 0.0),
        (-i, 0.0),
        (2.0 * p + i, 2.0 * (1.0 + a)),
        (p, 1.0 + a),
        (-p, 1.0 - a),
    ];
    let (mut low, mut high) = (0.0f64, f64::INFINITY);
    for (k, m) in conditions {
        if k > 0.0 {
            high = high.min(m / k);
        } else if k < 0.0 {
            low = low.max(m / k);
        } else if m <= 0.0 {
            return None;
        }
    }
    (low < high).then_some((low, high))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn poles_land_where_asked() {
        for (a, b) in [(0.5, 2.0), (0.9, -0.3), (0.0, 1.0), (1.2, 0.5)] {
            let (g, p) = pi_gains(a, b, 10.0, 0.1).unwrap();
            let got = closed_loop_poles(a, b, g);
            for (re, im) in got {
                assert!((re.hypot(im) - p.r).abs() < 1e-9, "{a} {b}: {got:?}");
                assert!(
                    (im.atan2(re).abs() - p.theta).abs() < 1e-9,
                    "{a} {b}: {got:?}"
                );
            }
            assert!(spectral_radius(a, b, g) < 1.0);
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(pi_gains(0.5, 0.0, 10.0, 0.1), Err(DesignError::NoGain));
        assert_eq!(
            pi_gains(0.5, 1.0, 1.0, 0.1),
            Err(DesignError::SettlingTooShort)
        );
        assert_eq!(pi_gains(0.5, 1.0, 10.0, 1.0), Err(DesignError::Overshoot));
        assert_eq!(
            pi_gains(f64::NAN, 1.0, 10.0, 0.1),
            Err(DesignError::BadModel)
        );
        // No overshoot asked: a double real pole.
        let (_, p) = pi_gains(0.5, 1.0, 8.0, 0.0).unwrap();
        assert_eq!(p.theta, 0.0);
    }

    #[test]
    fn doubling_and_halving_in_closed_form() {
        // The closed-form condition of the module documentation agrees with the
        // interval, over a grid that has plants on both sides of it.
        let (mut stable, mut unstable) = (0, 0);
        for ks in [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 30.0] {
            for mp in [0.0, 0.02, 0.05, 0.1, 0.2, 0.3] {
                for k in 0..=19 {
                    let a = k as f64 * 0.05;
                    let (g, p) = pi_gains(a, 0.7, ks, mp).unwrap();
                    let (low, high) = stable_b_range(a, 0.7, g).unwrap();
                    assert!(low < 0.5 && 1.0 < high, "{a} {ks} {mp}");
                    let r2 = p.r * p.r;
                    let predicted = 2.0 * r2 - 1.0 < a && a < 2.0 * p.r * p.theta.cos() + r2;
                    assert_eq!(high > 2.0, predicted, "{a} {ks} {mp}: {low} {high}");
                    if predicted {
                        stable += 1;
                    } else {
                        unstable += 1;
                    }
                }
            }
        }
        // Both outcomes occur on the grid.
        assert!(stable > 500 && unstable > 100, "{stable} {unstable}");
        // A static plant with a slow design: Kp < 0, unstable once b doubles.
        let (g, _) = pi_gains(0.0, 1.0, 15.0, 0.1).unwrap();
        assert!(g.kp < 0.0);
        assert!(stable_b_range(0.0, 1.0, g).unwrap().1 < 2.0);
        assert!(spectral_radius(0.0, 2.0, g) > 1.0);
        // Wrong sign: the gains for b push the plant with -b the wrong way.
        let (g, _) = pi_gains(0.5, 1.0, 10.0, 0.1).unwrap();
        assert_eq!(stable_b_range(0.5, -1.0, g), None);
    }

    proptest! {
        #[test]
        fn stable_b_range_matches_the_poles(
            a in -0.9f64..1.2,
            b in prop_oneof![0.01f64..100.0, -100.0f64..-0.01],
            kp in -3.0f64..3.0,
            ki in -3.0f64..3.0,
            f in 0.01f64..5.0,
        ) {
            // Gains scaled by 1 / b, so b Kp and b Ki cover the same range whatever b.
            let g = Gains { kp: kp / b, ki: ki / b };
            let rho = spectral_radius(a, f * b, g);
            match stable_b_range(a, b, g) {
                Some((low, high)) => {
                    let inside = low < f && f < high;
                    let near = (f - low).abs() < 1e-3 * f || (f - high).abs() < 1e-3 * f;
                    if !near {
                        prop_assert_eq!(rho < 1.0, inside, "f {} in ({}, {}): rho {}", f, low, high, rho);
                    }
                    // The ends are where a pole crosses the unit circle.
                    let rho_at = |x: f64| spectral_radius(a, x * b, g);
                    if high.is_finite() {
                        prop_assert!(rho_at(high * (1.0 - 1e-4)) < 1.0, "below {}", high);
                        prop_assert!(rho_at(high * (1.0 + 1e-4)) > 1.0, "above {}", high);
                    }
                    if low > 0.0 {
                        prop_assert!(rho_at(low * (1.0 - 1e-4)) > 1.0, "below {}", low);
                        prop_assert!(rho_at(low * (1.0 + 1e-4)) < 1.0, "above {}", low);
                    }
                }
                None => prop_assert!(rho >= 1.0 - 1e-9, "no range, rho {}", rho),
            }
        }
    }
}
