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
//! (`θ = 0`). The controller's zero at `Kp / (Kp + Ki)` adds some overshoot of its own;
//! [`crate::sim::check_robust`] reports the real figures.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
