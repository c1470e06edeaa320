// SPDX-License-Identifier: GPL-2.0

//! A closed-loop simulator and the robustness check of a design.
//!
//! The simulator runs the first-order plant `y(k+1) = a y(k) + b u(k) + c` (plus
//! optional noise `n(k)`, uniform in `[-noise, noise)`, added to `y(k+1)`) under a
//! [`Pi`] with its limits. [`check_robust`] runs a design against the nominal plant and
//! against the plant with its gain `b` halved and doubled, and reports, for each, the
//! closed-loop poles' largest modulus (stable below 1, ignoring the limits), whether
//! the simulated error settles, the settling time and the overshoot of a set-point
//! step; and the whole interval of factors of `b` that keep the poles inside the unit
//! circle.

use crate::{
    design::{spectral_radius, stable_b_range, Gains},
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
    Ok(run_pi(plant, Pi::new(cfg, u0)?, r, periods, noise, seed))
}

/// [`run`] with a controller built by the caller (a set-point weight, say): from the
/// plant's steady state under the controller's output (0 if the plant is not stable,
/// `a ≥ 1`).
pub fn run_pi(
    plant: Plant,
    pi: Pi,
    r: impl Fn(usize) -> f64,
    periods: usize,
    noise: f64,
    seed: u64,
) -> Vec<Sample> {
    let mut n = Noise::new(seed);
    let y0 = if plant.a < 1.0 {
        plant.steady(pi.output())
    } else {
        0.0
    };
    closed_loop(pi, r, periods, y0, |y, u| {
        plant.a * y + plant.b * u + plant.c + noise * n.sample()
    })
}

/// Runs `pi` for `periods` periods from the measurement `y0`; `plant(y, u)` is the
/// next measurement after `y` under the output `u`.
pub fn closed_loop(
    mut pi: Pi,
    r: impl Fn(usize) -> f64,
    periods: usize,
    y0: f64,
    mut plant: impl FnMut(f64, f64) -> f64,
) -> Vec<Sample> {
    let mut y = y0;
    let mut out = Vec::with_capacity(periods);
    for k in 0..periods {
        let s = pi.step(r(k), y);
        out.push(Sample {
            r: r(k),
            y,
            u: s.output,
        });
        y = plant(y, s.output);
    }
    out
}

/// Behaviour of a loop after a set-point step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepResponse {
    /// Periods until the measurement stays within 2 % of the step from the set point
    /// (`None`: it is still outside at the last sample, or there are no samples).
    pub settling: Option<usize>,
    /// Largest excursion past the set point, as a fraction of the step.
    pub overshoot: f64,
}

/// The settling time and overshoot of `samples`, a step from `from` to `to` at period 0.
pub fn step_response(samples: &[Sample], from: f64, to: f64) -> StepResponse {
    let h = to - from;
    let band = 0.02 * h.abs();
    let last_out = samples.iter().rposition(|s| {
        let d = (s.y - to).abs();
        d.is_nan() || d > band
    });
    let settling = match last_out {
        None if samples.is_empty() => None,
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
    /// The open interval of factors of `b` for which the closed-loop poles are inside
    /// the unit circle ([`stable_b_range`]); `None` if there is none.
    pub b_range: Option<(f64, f64)>,
}

impl Report {
    /// Whether every case is stable.
    pub fn robust(&self) -> bool {
        self.cases.iter().all(|c| c.stable)
    }
}

/// Runs the design `g` on the plant `(a, b)` and on the plant with `b` halved and
/// doubled: a set-point step from 0 to 1 at the loop's first period (so without a
/// proportional kick, as when the manager starts or reloads a loop), without output
/// limits or noise, for `periods` periods (the loop is linear: the size of the step
/// and the operating point do not matter). A case is stable if its poles are inside the
/// unit circle and the simulated step settles within `periods`: give slow designs
/// enough periods (a few times the settling time).
pub fn check_robust(a: f64, b: f64, g: Gains, periods: usize) -> Report {
    let cases = cases(
        g,
        |f| spectral_radius(a, b * f, g),
        |f, pi| {
            let plant = Plant {
                a,
                b: b * f,
                c: 0.0,
            };
            run_pi(plant, pi, |_| 1.0, periods, 0.0, 0)
        },
    );
    Report {
        cases,
        b_range: stable_b_range(a, b, g),
    }
}

/// The three cases of a robustness check (`b`, `b / 2`, `2 b`) of the gains `g`:
/// `radius(f)` is the closed loop's spectral radius with the plant's gain times `f`,
/// and `step(f, pi)` simulates a set-point step from 0 to 1 at the first period under
/// `pi` (unlimited) on that plant, from 0.
pub fn cases(
    g: Gains,
    radius: impl Fn(f64) -> f64,
    step: impl Fn(f64, Pi) -> Vec<Sample>,
) -> Vec<Case> {
    [1.0, 0.5, 2.0]
        .into_iter()
        .map(|f| {
            let rho = radius(f);
            let cfg = PiConfig {
                kp: g.kp,
                ki: g.ki,
                min: f64::MIN,
                max: f64::MAX,
                slew: f64::INFINITY,
                deadband: 0.0,
            };
            let response = Pi::new(cfg, 0.0)
                .map(|pi| step_response(&step(f, pi), 0.0, 1.0))
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
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::design::pi_gains;
    use proptest::prelude::*;

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

    /// The step response of the design `(ks, mp)` on the nominal plant `(a, b, c)`: a
    /// step of 10 from the steady state under `u0 = 10`, at the loop's first period.
    fn designed_step(a: f64, b: f64, ks: f64, mp: f64) -> (StepResponse, Vec<Sample>) {
        let (g, _) = pi_gains(a, b, ks, mp).unwrap();
        let plant = Plant { a, b, c: 5.0 };
        let u0 = 10.0;
        let y0 = plant.steady(u0);
        let to = y0 + 10.0;
        let s = run(plant, cfg(g, -1e9, 1e9), u0, |_| to, 200, 0.0, 0).unwrap();
        (step_response(&s, y0, to), s)
    }

    #[test]
    fn designed_step_response() {
        // Settling within Ks + 1 periods, never more than 2 early, overshoot within
        // the bound of the design module's documentation, for every plant.
        for (a, b) in [
            (0.0, 1.0),
            (0.6, 2.0),
            (0.9, 0.5),
            (0.3, -3.0),
            (0.97, 0.01),
        ] {
            for ks in [4.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 30.0] {
                for mp in [0.02, 0.05, 0.1, 0.2, 0.3] {
                    let (resp, s) = designed_step(a, b, ks, mp);
                    let settled = resp.settling.expect("settles") as f64;
                    let slack = if ks >= 20.0 {
                        1.02
                    } else if ks >= 10.0 {
                        1.12
                    } else {
                        1.34
                    };
                    assert!(
                        settled <= ks + 1.0,
                        "{a} {b} Ks {ks} Mp {mp}: settled in {settled}"
                    );
                    assert!(
                        resp.overshoot <= mp * slack,
                        "{a} {b} Ks {ks} Mp {mp}: overshoot {}",
                        resp.overshoot
                    );
                    // Settling early only for long, well-damped designs (the 2 % band
                    // is met before the envelope e^(-4 k / Ks) reaches it).
                    if ks <= 15.0 {
                        assert!(settled >= ks - 3.0, "{a} {b} Ks {ks} Mp {mp}: {settled}");
                    }
                    // No steady-state error (integral action, despite the offset c).
                    let last = s[s.len() - 1];
                    assert!((last.y - last.r).abs() < 1e-6);
                }
            }
        }
        let (resp, _) = designed_step(0.6, 2.0, 10.0, 0.1);
        eprintln!(
            "step: Ks 10, Mp 0.1 -> settled in {:?} periods, overshoot {:.3}",
            resp.settling, resp.overshoot
        );
        assert_eq!(resp.settling, Some(9));
        assert!((resp.overshoot - 0.105).abs() < 0.001);
    }

    #[test]
    fn set_point_change_while_running() {
        // A slow plant; the set point moves from 0 to 1 at period 20 of a running loop.
        let (a, b, ks, mp) = (0.95, 1.0, 20.0, 0.1);
        let (g, _) = pi_gains(a, b, ks, mp).unwrap();
        let plant = Plant { a, b, c: 0.0 };
        let step = |w: f64| {
            let pi = Pi::new(cfg(g, -1e9, 1e9), 0.0)
                .unwrap()
                .with_set_point_weight(w)
                .unwrap();
            let s = run_pi(plant, pi, |k| if k < 20 { 0.0 } else { 1.0 }, 300, 0.0, 0);
            step_response(&s[20..], 0.0, 1.0)
        };
        let (kick, weighted) = (step(1.0), step(0.0));
        eprintln!("set point changed while running: overshoot {:.3} with the proportional term on the error, {:.3} with set-point weight 0 (asked {mp})", kick.overshoot, weighted.overshoot);
        // Weight 0: the designed response (as at the loop's first period).
        let (first, _) = designed_step(a, b, ks, mp);
        assert!((weighted.overshoot - first.overshoot).abs() < 1e-9);
        assert_eq!(weighted.settling, first.settling);
        assert!(weighted.overshoot <= mp * 1.02);
        // Weight 1: the controller's zero at Kp / (Kp + Ki) = 0.75 more than doubles it.
        assert!(kick.overshoot > 2.0 * mp, "{kick:?}");
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
        let ks = 8.0;
        let (g, _) = pi_gains(plant.a, plant.b, ks, 0.1).unwrap();
        // The output is limited to [0, 50], so the measurement to [0, 100]: 100 periods
        // asking for 1000 (unreachable), then 40.
        let max = 50.0;
        let r = |k: usize| if k < 100 { 1000.0 } else { 40.0 };
        let n = 3000;
        let ours = run(plant, cfg(g, 0.0, max), 0.0, r, n, 0.0, 0).unwrap();
        let theirs = naive(plant, g, max, r, n);
        for s in [&ours, &theirs] {
            assert!(s[50..100].iter().all(|x| x.u == max), "saturated");
            assert!((s[99].y - 100.0).abs() < 1e-6);
        }
        // After the set point becomes reachable: periods until the output leaves the
        // limit, and until the measurement settles within 2 % of the step (100 -> 40).
        let leaves = |s: &[Sample]| s[100..].iter().position(|x| x.u < max);
        let settles = |s: &[Sample]| step_response(&s[100..], 100.0, 40.0).settling;
        let (ours_leave, ours_settle) = (leaves(&ours), settles(&ours));
        let (naive_leave, naive_settle) = (leaves(&theirs), settles(&theirs));
        eprintln!(
            "windup: after 100 periods saturated, the velocity form leaves the limit in {ours_leave:?} and settles in {ours_settle:?} periods; the positional PI leaves in {naive_leave:?} and settles in {naive_settle:?}"
        );
        // Ours: off the limit at once, settled within the designed time.
        assert_eq!(ours_leave, Some(0));
        assert!(ours_settle.expect("settles") as f64 <= ks + 1.0);
        // The positional PI first unwinds its integral: over a hundred times slower.
        let naive_settle = naive_settle.expect("the positional PI settles within 2900");
        assert!(naive_leave.expect("leaves") > 1000);
        assert!(naive_settle > 100 * ours_settle.unwrap_or(0).max(1));
    }

    #[test]
    fn robust_to_b_halved_and_doubled() {
        // Plants from nearly static to slow, gains of either sign and over four
        // decades, settling in 8 to 15 periods with up to 20 % overshoot. (Outside this,
        // robustness depends on the plant: see the design module; with Ks = 6 and
        // Mp = 0.2, 2 b is unstable for a > 0.54.)
        let mut n = 0;
        for a in [0.2, 0.4, 0.6, 0.8, 0.9, 0.95] {
            for b in [0.01, 1.0, 50.0, -0.3, -20.0] {
                for ks in [8.0, 10.0, 12.0, 15.0] {
                    for mp in [0.02, 0.05, 0.1, 0.2] {
                        let (g, _) = pi_gains(a, b, ks, mp).unwrap();
                        let rep = check_robust(a, b, g, 400);
                        assert!(rep.robust(), "{a} {b} {ks} {mp}: {rep:?}");
                        assert_eq!(rep.cases.len(), 3);
                        let (low, high) = rep.b_range.expect("a stable range");
                        assert!(low < 0.5 && high > 2.0, "{rep:?}");
                        n += 1;
                    }
                }
            }
        }
        assert_eq!(n, 480);
        // And where it must fail: an aggressive design (settling in 2 periods) breaks
        // with b doubled; so does a slow design on a static plant (Kp < 0).
        for (a, ks, mp) in [
            (0.9, 2.0, 0.05),
            (0.0, 15.0, 0.1),
            (0.5, 4.0, 0.3),
            (0.6, 6.0, 0.2),
        ] {
            let (g, _) = pi_gains(a, 1.0, ks, mp).unwrap();
            let rep = check_robust(a, 1.0, g, 400);
            assert!(!rep.robust(), "{a} {ks} {mp}: {rep:?}");
            assert!(rep.cases[0].stable && rep.cases[1].stable, "{rep:?}");
            assert!(rep.cases[2].spectral_radius >= 1.0);
            assert!(rep.cases[2].response.settling.is_none());
            assert!(rep.b_range.expect("nominal stable").1 < 2.0);
        }
    }

    proptest! {
        #[test]
        fn simulation_agrees_with_the_poles(
            a in 0.0f64..0.95,
            b in prop_oneof![0.01f64..100.0, -100.0f64..-0.01],
            ks in 3.0f64..30.0,
            mp in 0.0f64..0.3,
            f in 0.2f64..3.0,
        ) {
            // For any factor f of b away from the stability boundary, the simulated
            // step settles exactly when the poles are inside the unit circle.
            let (g, _) = pi_gains(a, b, ks, mp).unwrap();
            let rho = spectral_radius(a, f * b, g);
            prop_assume!((rho - 1.0).abs() > 0.02);
            let plant = Plant { a, b: f * b, c: 0.0 };
            let s = run(plant, cfg(g, f64::MIN, f64::MAX), 0.0, |_| 1.0, 1000, 0.0, 0).unwrap();
            let settled = step_response(&s, 0.0, 1.0).settling.is_some();
            prop_assert_eq!(settled, rho < 1.0, "rho {}", rho);
        }
    }

    #[test]
    fn step_response_edges() {
        assert_eq!(step_response(&[], 0.0, 1.0).settling, None);
        let at = |y: f64| Sample { r: 1.0, y, u: 0.0 };
        let s = [at(0.0), at(1.5), at(1.0)];
        let resp = step_response(&s, 0.0, 1.0);
        assert_eq!(resp.settling, Some(2));
        assert!((resp.overshoot - 0.5).abs() < 1e-12);
        assert_eq!(
            step_response(&[at(0.5), at(f64::NAN)], 0.0, 1.0).settling,
            None
        );
    }

    #[test]
    fn noise_is_deterministic_and_bounded() {
        let (mut a, mut b) = (Noise::new(3), Noise::new(3));
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let v = a.sample();
            assert_eq!(v, b.sample());
            assert!((-1.0..1.0).contains(&v));
            sum += v;
        }
        // Centred: the mean of 10,000 uniform samples has a standard deviation of 0.006.
        assert!((sum / 10_000.0f64).abs() < 0.03);
    }
}
