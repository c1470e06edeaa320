// SPDX-License-Identifier: GPL-2.0

//! How closely a loop can hold its measurement: the spread a design leaves.
//!
//! A real plant is disturbed every period by what no model of the actuator explains (a
//! server's pace varies, clients arrive in bursts):
//!
//! ```text
//! y(k+1) = a y(k) + b u(k-d) + c + w(k)
//! ```
//!
//! with `w` white, of standard deviation `σ_w`: the residuals of the identification
//! ([`crate::ident::Model::sigma`]). A loop cannot undo a disturbance before it has seen
//! it, so the measurement spreads around the set point by at least `σ_w` whatever the
//! gains (the minimum-variance bound of Åström); a loop that reacts slowly lets the
//! disturbances pile up, and one that reacts hard amplifies them, most of all when the
//! plant's real gain is above the model's. For the velocity-form PI of [`crate::pi`],
//! the disturbance reaches the output through
//!
//! ```text
//! H(z) = z^d (z - 1) / (z^d (z - a)(z - 1) + b ((Kp + Ki) z - Kp))
//! ```
//!
//! (the denominator is [`crate::deadtime::char_poly`]), so the output's standard
//! deviation is `σ_w` times the 2-norm of `H`'s impulse response, [`spread`]. It is
//! `sqrt(2)` for the deadbeat PI of an integrator (`H = z^-1 - z^-2`): the integral
//! action that removes the offset costs spread, and a pure P gain would reach 1.
//!
//! [`least_spread`] turns that into a design rule: among the settling times whose
//! pole placement [`crate::deadtime::design`] accepts (dominant, stable with `b` halved
//! and doubled), the one whose worst spread over `b` halved, as modelled, and doubled is
//! least. Settling times are a choice between following set-point changes and
//! amplifying noise; this picks it from the model and the disturbance that was
//! measured, not by hand.

use crate::{
    deadtime::{self, Design, Refused},
    design::Gains,
};

/// The factors of `b` [`least_spread`] weighs: the plant's gain halved, as modelled,
/// doubled (the robustness check's range).
pub const B_FACTORS: [f64; 3] = [0.5, 1.0, 2.0];

/// The 2-norm of the impulse response from a disturbance `w(k)` (entering as in the
/// module's model) to the output, for the plant `(a, b, d)` under gains `g`: the
/// output's standard deviation per unit of the disturbance's. `None` if the loop is not
/// stable (no finite spread).
pub fn spread(a: f64, b: f64, d: usize, g: Gains) -> Option<f64> {
    let rho = deadtime::spectral_radius(a, b, d, g);
    if !rho.is_finite() || rho >= 1.0 {
        return None;
    }
    // Enough periods for the response to fall below 1e-9 of its start (at least 100).
    let periods = if rho <= 1e-3 {
        100
    } else {
        ((-9.0 * 10f64.ln() / rho.ln()) as usize + 100).min(1_000_000)
    };
    // y(k+1) = a y(k) + b u(k-d) + w(k); u(k) = u(k-1) - Kp (y(k) - y(k-1)) - Ki y(k)
    // (set point 0); w(0) = 1.
    let mut past_u = std::collections::VecDeque::from(vec![0.0; d + 1]);
    let (mut y, mut u, mut sum) = (0.0f64, 0.0f64, 0.0f64);
    for k in 0..periods {
        let w = if k == 0 { 1.0 } else { 0.0 };
        let applied = past_u.pop_front().unwrap_or(0.0);
        let y_prev = y;
        y = a * y + b * applied + w;
        sum += y * y;
        u = u - g.kp * (y - y_prev) - g.ki * y;
        past_u.push_back(u);
    }
    Some(sum.sqrt())
}

/// The worst [`spread`] over [`B_FACTORS`]; `None` if one of them is unstable.
pub fn worst_spread(a: f64, b: f64, d: usize, g: Gains) -> Option<f64> {
    B_FACTORS
        .iter()
        .map(|f| spread(a, f * b, d, g))
        .try_fold(0.0f64, |w, s| s.map(|s| w.max(s)))
}

/// The accepted design (see [`deadtime::design`]) for a largest overshoot `mp` whose
/// [`worst_spread`] is least, over settling times from 2 to `longest` periods in steps
/// of half a period; with its worst spread.
pub fn least_spread(
    a: f64,
    b: f64,
    d: usize,
    mp: f64,
    longest: f64,
) -> Result<(Design, f64), Refused> {
    let mut best: Option<(Design, f64)> = None;
    let mut last = None;
    let mut ks = 2.0;
    while ks <= longest {
        match deadtime::design(a, b, d, ks, mp) {
            Ok(des) => {
                if let Some(w) = worst_spread(a, b, d, des.gains) {
                    if best.as_ref().is_none_or(|(_, bw)| w < *bw) {
                        best = Some((des, w));
                    }
                }
            }
            Err(e @ (Refused::Design(_) | Refused::DeadTime)) => return Err(e),
            Err(e) => last = Some(e),
        }
        ks += 0.5;
    }
    best.ok_or(last.unwrap_or(Refused::NotRobust))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        design,
        pi::{Pi, PiConfig},
        sim::Noise,
    };

    #[test]
    fn deadbeat_pi_of_an_integrator_spreads_by_sqrt_2() {
        // Both poles at 0: H = z^-1 - z^-2.
        let b = 40.0;
        let g = design::gains_for(1.0, b, design::Poles { r: 0.0, theta: 0.0 }).unwrap();
        let s = spread(1.0, b, 0, g).unwrap();
        assert!((s - 2f64.sqrt()).abs() < 1e-9, "{s}");
        // Unstable: no spread.
        assert_eq!(spread(1.0, 3.0 * b, 0, g), None);
    }

    #[test]
    fn spread_is_what_a_simulated_loop_shows() {
        // The PI of qosmgr on a disturbed integrating plant with one period of dead
        // time: the output's standard deviation over 200,000 periods against the 2-norm.
        let (a, b, d) = (1.0, 40.0, 1);
        let des = deadtime::design(a, b, d, 10.0, 0.1).unwrap();
        let want = spread(a, b, d, des.gains).unwrap();
        let cfg = PiConfig {
            kp: des.gains.kp,
            ki: des.gains.ki,
            min: -1e9,
            max: 1e9,
            slew: f64::INFINITY,
            deadband: 0.0,
        };
        let mut pi = Pi::new(cfg, 0.0).unwrap();
        let mut noise = Noise::new(3);
        // Uniform in [-h, h): a standard deviation of h / sqrt(3) = 1.
        let h = 3f64.sqrt();
        let (mut y, mut past) = (0.0, std::collections::VecDeque::from(vec![0.0; d]));
        let (mut sum, mut sq, n) = (0.0, 0.0, 200_000);
        for _ in 0..n {
            let u = pi.step(0.0, y).output;
            past.push_back(u);
            y = a * y + b * past.pop_front().unwrap() + h * noise.sample();
            sum += y;
            sq += y * y;
        }
        let sd = (sq / n as f64 - (sum / n as f64).powi(2)).sqrt();
        assert!(
            (sd - want).abs() < 0.03 * want,
            "simulated {sd}, 2-norm {want}"
        );
    }

    #[test]
    fn least_spread_is_robust_and_beats_the_neighbours() {
        for (a, b, d) in [(1.0, 40.0, 0), (1.0, 40.0, 1), (0.8, -2.0, 0)] {
            let (des, w) = least_spread(a, b, d, 0.0, 40.0).unwrap();
            assert!(crate::deadtime::check_robust(a, b, d, des.gains, 400).robust());
            // No accepted settling time half a period either side does better.
            for ks in [des.settling - 0.5, des.settling + 0.5] {
                if let Ok(other) = deadtime::design(a, b, d, ks, 0.0) {
                    if let Some(o) = worst_spread(a, b, d, other.gains) {
                        assert!(o >= w - 1e-12, "{a} {b} {d}: {ks} gives {o} < {w}");
                    }
                }
            }
            // Never below the minimum-variance bound.
            assert!(spread(a, b, d, des.gains).unwrap() >= 1.0);
        }
        assert_eq!(
            least_spread(1.0, 40.0, 0, 1.5, 40.0).map(|_| ()),
            Err(Refused::Design(design::DesignError::Overshoot))
        );
    }
}
