// SPDX-License-Identifier: GPL-2.0

//! A closed-loop simulator and the robustness check of a design.
//!
//! The simulator runs the first-order plant `y(k+1) = a y(k) + b u(k) + c` (plus
//! optional noise) under a [`Pi`] with its limits. [`check_robust`] runs a design
//! against the nominal plant and against the plant with its gain `b` halved and
//! doubled, and reports, for each, the closed-loop poles' largest modulus (stable below
//! 1, ignoring the limits), whether the simulated error settles, the settling time and
//! the overshoot of a set-point step.

use crate::{
    design::{spectral_radius, Gains},
    pi::{Pi, PiConfig},
};

/// A deterministic noise source (xorshift64*), uniform in `[-1, 1)`.
#[derive(Clone, Debug)]
pub struct Noise(u64);

impl Noise {
    /// A source from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next value.
    pub fn sample(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        v as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// A first-order plant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plant {
    /// Pole.
    pub a: f64,
    /// Gain.
    pub b: f64,
    /// Offset.
    pub c: f64,
}

impl Plant {
    /// The measurement in steady state under a constant `u`.
    pub fn steady(&self, u: f64) -> f64 {
        (self.b * u + self.c) / (1.0 - self.a)
    }
}

/// One simulated period.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Set point.
    pub r: f64,
    /// Measurement.
    pub y: f64,
    /// Output applied.
    pub u: f64,
}

/// Simulates `periods` periods from the plant's steady state under `u0`, with set point
/// `r(k)` and noise of amplitude `noise` (seeded).
pub fn run(
    plant: Plant,
    cfg: PiConfig,
    u0: f64,
    r: impl Fn(usize) -> f64,
    periods: usize,
    noise: f64,
    seed: u64,
) -> Result<Vec<Sample>, crate::pi::ConfigError> {
    let mut pi = Pi::new(cfg, u0)?;
    let mut n = Noise::new(seed);
    let mut y = if plant.a < 1.0 {
        plant.steady(pi.output())
    } else {
        0.0
    };
    let mut out = Vec::with_capacity(periods);
    for k in 0..periods {
        let s = pi.step(r(k), y);
        out.push(Sample {
            r: r(k),
            y,
            u: s.output,
        });
        y = plant.a * y + plant.b * s.output + plant.c + noise * n.sample();
    }
    Ok(out)
}

/// Behaviour of a loop after a set-point step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepResponse {
    /// Periods until the error stays within 2 % of the step (`None`: never).
    pub settling: Option<usize>,
    /// Largest excursion past the set point, as a fraction of the step.
    pub overshoot: f64,
}

/// The settling time and overshoot of `samples`, a step from `from` to `to` at period 0.
pub fn step_response(samples: &[Sample], from: f64, to: f64) -> StepResponse {
    let h = to - from;
    let band = 0.02 * h.abs();
    let last_out = samples.iter().rposition(|s| (s.y - to).abs() > band);
    let settling = match last_out {
        None => Some(0),
        Some(i) if i + 1 < samples.len() => Some(i + 1),
        Some(_) => None,
    };
    let overshoot = samples
        .iter()
        .map(|s| (s.y - to) * h.signum())
        .fold(0.0, f64::max)
        / h.abs().max(f64::MIN_POSITIVE);
    StepResponse {
        settling,
        overshoot,
    }
}

/// One case of the robustness check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Case {
    /// The factor applied to `b`.
    pub b_factor: f64,
    /// Largest modulus of the closed-loop poles (stable below 1).
    pub spectral_radius: f64,
    /// The poles are inside the unit circle and the simulated step settles.
    pub stable: bool,
    /// The simulated step.
    pub response: StepResponse,
}

/// The robustness check of a design: the nominal plant, `b / 2` and `2 b`.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The cases, nominal first.
    pub cases: Vec<Case>,
}

impl Report {
    /// Whether every case is stable.
    pub fn robust(&self) -> bool {
        self.cases.iter().all(|c| c.stable)
    }
}

/// Runs the design `g` on the plant `(a, b)` and on the plant with `b` halved and
/// doubled: a set-point step of 10 % of the operating point (or 1 if that is 0),
/// without output limits, for `periods` periods.
pub fn check_robust(a: f64, b: f64, g: Gains, periods: usize) -> Report {
    let cases = [1.0, 0.5, 2.0]
        .into_iter()
        .map(|f| {
            let bf = b * f;
            let rho = spectral_radius(a, bf, g);
            let plant = Plant { a, b: bf, c: 0.0 };
            let cfg = PiConfig {
                kp: g.kp,
                ki: g.ki,
                min: f64::MIN,
                max: f64::MAX,
                slew: f64::INFINITY,
                deadband: 0.0,
            };
            let from = 0.0;
            let to = 1.0;
            let response = run(plant, cfg, 0.0, |_| to, periods, 0.0, 0)
                .map(|s| step_response(&s, from, to))
                .unwrap_or(StepResponse {
                    settling: None,
                    overshoot: f64::INFINITY,
                });
            Case {
                b_factor: f,
                spectral_radius: rho,
                stable: rho < 1.0 && response.settling.is_some(),
                response,
            }
        })
        .collect();
    Report { cases }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::design::pi_gains;

    fn cfg(g: Gains, min: f64, max: f64) -> PiConfig {
        PiConfig {
            kp: g.kp,
            ki: g.ki,
            min,
            max,
            slew: f64::INFINITY,
            deadband: 0.0,
        }
    }

    #[test]
    fn designed_step_response() {
        for (a, b, ks, mp) in [
            (0.6, 2.0, 10.0, 0.1),
            (0.9, 0.5, 15.0, 0.05),
            (0.3, -3.0, 8.0, 0.2),
        ] {
            let (g, _) = pi_gains(a, b, ks, mp).unwrap();
            let plant = Plant { a, b, c: 5.0 };
            let u0 = 10.0;
            let y0 = plant.steady(u0);
            let to = y0 + 10.0;
            let s = run(plant, cfg(g, -1e9, 1e9), u0, |_| to, 100, 0.0, 0).unwrap();
            let resp = step_response(&s, y0, to);
            let settled = resp.settling.expect("settles");
            // The PI's zero makes it somewhat slower or faster than the poles alone;
            // within half the asked time either way.
            assert!(
                (settled as f64) <= ks * 1.5 + 1.0,
                "{a} {b}: settled in {settled}, asked {ks}"
            );
            assert!(
                resp.overshoot <= mp + 0.25,
                "{a} {b}: overshoot {}",
                resp.overshoot
            );
            // No steady-state error (integral action, despite the offset c).
            assert!((s[99].y - to).abs() < 1e-6);
        }
    }

    /// A positional PI, `u = Kp e + Ki Σe`, clamped, whose integral keeps growing while
    /// the output is saturated: the comparison for the windup test.
    fn naive(plant: Plant, g: Gains, max: f64, r: impl Fn(usize) -> f64, n: usize) -> Vec<Sample> {
        let (mut y, mut sum, mut out) = (plant.steady(0.0), 0.0, Vec::new());
        for k in 0..n {
            let e = r(k) - y;
            sum += e;
            let u = (g.kp * e + g.ki * sum).clamp(0.0, max);
            out.push(Sample { r: r(k), y, u });
            y = plant.a * y + plant.b * u + plant.c;
        }
        out
    }

    #[test]
    fn no_windup_after_saturation() {
        let plant = Plant {
            a: 0.5,
            b: 1.0,
            c: 0.0,
        };
        let (g, _) = pi_gains(plant.a, plant.b, 8.0, 0.1).unwrap();
        let max = 50.0; // steady state at most 100
                        // 100 periods asking for 1000 (unreachable), then 40.
        let r = |k: usize| if k < 100 { 1000.0 } else { 40.0 };
        let ours = run(plant, cfg(g, 0.0, max), 0.0, r, 200, 0.0, 0).unwrap();
        let theirs = naive(plant, g, max, r, 200);
        let back = |s: &[Sample]| {
            s[100..]
                .iter()
                .position(|x| (x.y - 40.0).abs() < 0.8)
                .unwrap_or(usize::MAX)
        };
        let (b_ours, b_naive) = (back(&ours), back(&theirs));
        eprintln!("windup: velocity form back in {b_ours} periods, positional PI in {b_naive}");
        assert!(ours[99].u == max && theirs[99].u == max);
        assert!(b_ours <= 10, "velocity form back within {b_ours} periods");
        assert!(
            b_naive > 5 * b_ours.max(1),
            "naive {b_naive}, ours {b_ours}"
        );
    }

    #[test]
    fn robust_to_b_halved_and_doubled() {
        for (a, b) in [(0.6, 2.0), (0.9, 0.5), (0.3, -3.0), (0.0, 1.0)] {
            let (g, _) = pi_gains(a, b, 10.0, 0.1).unwrap();
            let rep = check_robust(a, b, g, 200);
            assert!(rep.robust(), "{a} {b}: {rep:?}");
            assert_eq!(rep.cases.len(), 3);
        }
        // An aggressive design (settling in 2 periods) breaks with b doubled.
        let (g, _) = pi_gains(0.9, 1.0, 2.0, 0.05).unwrap();
        let rep = check_robust(0.9, 1.0, g, 200);
        assert!(!rep.robust(), "{rep:?}");
        assert!(rep.cases[2].spectral_radius >= 1.0);
    }

    #[test]
    fn noise_is_deterministic_and_bounded() {
        let (mut a, mut b) = (Noise::new(3), Noise::new(3));
        for _ in 0..1000 {
            let v = a.sample();
            assert_eq!(v, b.sample());
            assert!((-1.0..1.0).contains(&v));
        }
    }
}
